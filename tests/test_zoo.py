import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dfbook import backbones, zoo

SHAPES = ("disc", "square", "bar", "ring")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("DFBOOK_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)


def _draw(shape, colour, rng, size=zoo.SIZE):
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(0.45, 0.55, 2) * size
    r = rng.uniform(0.18, 0.28) * size
    d = np.hypot(yy - cy, xx - cx)
    mask = {"disc": d < r, "square": (abs(yy - cy) < r) & (abs(xx - cx) < r),
            "bar": (abs(yy - cy) < r / 3) & (abs(xx - cx) < r * 1.4), "ring": abs(d - r) < r / 4}[shape]
    img = rng.normal(128, 20, (size, size, 3))
    img[mask] = np.array(COLOURS[colour]) + rng.normal(0, 10, (mask.sum(), 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _pool(folder, n=300, seed=0):
    """A stand-in for the mini_pretrain pool: real-only rows with content classes and captions."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        shape, colour = SHAPES[i % 4], list(COLOURS)[(i // 4) % 3]
        p = folder / f"{i:04d}.png"
        Image.fromarray(_draw(shape, colour, rng)).save(p)
        rows.append({"path": str(p), "label": 0, "dataset": "mini_pretrain", "method": "real",
                     "video_id": f"p{i}", "frame": 0, "identity": f"p{i}", "split": "train",
                     "content": shape, "caption": f"a photo of a {colour} {shape}"})
    return pd.DataFrame(rows)


def test_pool_guard_rejects_fakes_and_other_datasets(tmp_path):
    df = _pool(tmp_path, n=8)
    assert zoo.check_pool(df) is df
    for change in ({"label": 1}, {"dataset": "mini_gen"}, {"method": "progan"}, {"caption": ""}):
        bad = df.copy()
        col, val = next(iter(change.items()))
        bad.loc[3, col] = val
        with pytest.raises(ValueError):
            zoo.check_pool(bad)
    # the guard runs inside pretrain, before any training
    bad = df.copy()
    bad.loc[0, "label"] = 1
    with pytest.raises(ValueError, match="only real"):
        zoo.pretrain("convnext", df=bad, out_dir=tmp_path)


@pytest.mark.parametrize("arch", sorted(zoo.ARCHS))
def test_mini_architectures(arch):
    bb = backbones.create(f"mini:{arch}", pretrained=False)
    x = torch.randn(2, 3, zoo.SIZE, zoo.SIZE)
    with torch.inference_mode():
        assert bb.encode_image(x).shape == (2, bb.dim)
        feats = bb.intermediates(x, list(range(bb.n_blocks)))
    assert len(feats) == bb.n_blocks and all(f.shape[0] == 2 for f in feats)
    assert bb.spec["size"] == [zoo.SIZE, zoo.SIZE] and bb.weights_id == "random-init:0"
    assert bb.params()["total"] < 4_000_000
    clf = backbones.create(f"mini:{arch}", pretrained=False, num_classes=3)
    with torch.inference_mode():
        assert clf.model(x).shape == (2, 3)
    if arch == "clip":
        assert bb.encode_text(["a photo of a red disc"]).shape == (1, bb.dim)


def test_key_tracks_recipe_seed_and_corpus():
    k = zoo.key("clip", corpus_key="c1")
    assert zoo.key("clip", corpus_key="c1") == k
    assert zoo.key("clip", corpus_key="c2") != k
    assert zoo.key("clip", corpus_key="c1", seed=1) != k
    assert zoo.key("clip", corpus_key="c1", recipe={**zoo.RECIPE["clip"], "steps": 1}) != k
    assert zoo.key("resnet", corpus_key="c1") != zoo.key("convnext", corpus_key="c1")


def test_edit_levels_match_words():
    rng = np.random.default_rng(0)
    imgs = np.full((64, 16, 16, 3), 128, np.uint8)
    out, levels = zoo._edit(imgs, rng, p=0.5)
    assert set(np.unique(levels)) == {0, 1, 2}
    untouched = (levels == 0).all(1)
    assert np.array_equal(out[untouched], imgs[untouched]) and not np.array_equal(out[~untouched], imgs[~untouched])
    words = zoo._edit_words(levels)
    assert all((w == "") == u for w, u in zip(words, untouched))
    assert any("heavy added noise" in w for w in words)


def test_spectrum_target_sees_band_energy():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 64, 64)
    x[:4] = torch.nn.functional.avg_pool2d(x[:4], 3, stride=1, padding=1)  # blur: less high-frequency energy
    s = zoo.spectrum(x).reshape(8, 8, 8)
    assert s.shape == (8, 8, 8)
    # after fftshift the highest frequencies are in the border cells, the lowest in the centre
    border = torch.cat([s[:, 0], s[:, -1], s[:, :, 0], s[:, :, -1]], 1).mean(1)
    assert border[:4].max() < 0 < border[4:].min()


@pytest.mark.slow
def test_cnn_pretraining_learns_content(tmp_path, monkeypatch):
    df = _pool(tmp_path / "pool")
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    path = zoo.pretrain("convnext", df=df, recipe={"steps": 60, "batch_size": 32}, out_dir=tmp_path)
    # a cold run (the zoo trained inside the chapter) must draw the same numbers as a warm one
    assert torch.equal(torch.get_rng_state(), rng_before)
    meta = pd.read_json(path.with_suffix(".json"), typ="series")
    held = meta["held_out_metrics"]
    # nearest-class-mean on frozen features: measured 1.0 after pretraining, 0.4 for random init
    assert held["n"] == 60 and held["content_acc"] > 0.8 > 3 * held["chance_content"]
    # create(pretrained=True) loads exactly these weights, with a fresh head when asked
    monkeypatch.setattr(zoo, "pretrain", lambda arch: path)
    bb = zoo.create("convnext", num_classes=2)
    state = torch.load(path, weights_only=True)
    assert all(torch.equal(v, bb.model.state_dict()[k]) for k, v in state.items())
    assert bb.weights_id == f"zoo:{path.stem}" and bb.model(torch.randn(1, 3, 64, 64)).shape == (1, 2)
    assert zoo.held_out(bb) == held and zoo.held_out(zoo.create("convnext", pretrained=False)) is None


@pytest.mark.slow
def test_clip_pretraining_learns_captions(tmp_path):
    df = _pool(tmp_path / "pool")
    path = zoo.pretrain("clip", df=df, recipe={"steps": 60, "batch_size": 48}, out_dir=tmp_path)
    held = pd.read_json(path.with_suffix(".json"), typ="series")["held_out_metrics"]
    # the recipe keeps the random patch projection (see zoo.RECIPE["clip"]["freeze_patch_embed"])
    state = torch.load(path, weights_only=True)
    init = zoo.create("clip", pretrained=False).clip.state_dict()
    assert torch.equal(state["visual.conv1.weight"], init["visual.conv1.weight"])
    assert not torch.equal(state["visual.proj"], init["visual.proj"])
    # 12 distinct captions: chance R@1 ~ 1/12 (measured 0.50 after 60 steps; 0.58 with the image tower at full lr)
    assert held["caption_r1"] > 0.4 > 3 * held["chance_caption_r1"]
    assert 0 <= held["zero_shot_content_acc"] <= 1  # reported; colour-less prompts are hard for a tiny CLIP


@pytest.mark.slow
@pytest.mark.parametrize("recipe, kept, trained", [
    ({"freeze_blocks": 1}, "visual.transformer.resblocks.0.", "visual.transformer.resblocks.1.mlp.c_fc.weight"),
    ({"visual_lr_scale": 0.0}, "visual.", "transformer.resblocks.0.mlp.c_fc.weight"),
])
def test_clip_recipe_levers_keep_the_image_tower_at_init(tmp_path, recipe, kept, trained):
    # the levers benchmarks/zoo_recipe.py measures (see the zoo module docstring)
    df = _pool(tmp_path / "pool")
    path = zoo.pretrain("clip", df=df, recipe={"steps": 3, "batch_size": 16, **recipe}, out_dir=tmp_path)
    state = torch.load(path, weights_only=True)
    init = zoo.create("clip", pretrained=False).clip.state_dict()
    kept_keys = [k for k in state if k.startswith(kept)]
    assert kept_keys and all(torch.equal(state[k], init[k]) for k in kept_keys)
    assert not torch.equal(state[trained], init[trained])


def test_an_entry_is_whole_or_retrained(tmp_path, monkeypatch, caplog):
    """A kill between the weights and their sidecar, a stale partial file, damaged weights: the next call
    retrains that member instead of failing on it for good."""
    import logging

    df = _pool(tmp_path / "pool", n=40)
    recipe = {"steps": 2, "batch_size": 16}
    path = zoo.pretrain("convnext", df=df, recipe=recipe, out_dir=tmp_path)
    sidecar, weights = path.with_suffix(".json"), path.read_bytes()
    calls = []
    monkeypatch.setattr(zoo, "_fit_cnn", lambda *a, **k: calls.append(1) or [0.0])
    sidecar.unlink()  # as a kill between the .pt and its sidecar left it
    (tmp_path / f"{path.stem}.pt.partial123").write_bytes(b"half")  # a write killed mid-way
    assert zoo.pretrain("convnext", df=df, recipe=recipe, out_dir=tmp_path) == path
    assert calls == [1] and sidecar.is_file() and not list(tmp_path.glob("*.partial*"))
    assert pd.read_json(sidecar, typ="series")["weights"]["bytes"] == path.stat().st_size

    path.write_bytes(weights[:100] + bytes(10) + weights[110:])  # same size, other bytes
    with caplog.at_level(logging.WARNING):
        zoo.pretrain("convnext", df=df, recipe=recipe, out_dir=tmp_path)
    assert calls == [1, 1] and "incomplete or damaged" in caplog.text
    assert zoo.pretrain("convnext", df=df, recipe=recipe, out_dir=tmp_path) == path and calls == [1, 1]  # a hit


def test_cache_keys_follow_the_generating_source(monkeypatch):
    from dfbook import paths
    from dfbook.bench import corpus

    before = corpus.key("images"), zoo.key("clip", corpus_key="c1")
    monkeypatch.setattr(paths, "source_digest", lambda *files: "edited")
    assert corpus.key("images") != before[0] and zoo.key("clip", corpus_key="c1") != before[1]
    monkeypatch.undo()
    assert paths.source_digest("bench/*.py") != paths.source_digest("bench/images.py")
    with pytest.raises(FileNotFoundError, match="no dfbook source file"):
        paths.source_digest("nope/*.py")
