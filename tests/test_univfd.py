"""UnivFD helpers: exact nearest-neighbour search and scores, transforms, probe recipe, protocols, metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dfbook.methods import univfd as U


def _gauss(n, d, seed):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


# ----------------------------------------------------------------------------------------------- search

@pytest.mark.parametrize("k", [1, 5])
def test_exact_topk_equals_brute_force(k):
    bank, q = U.l2_normalise(_gauss(3000, 32, 0)), U.l2_normalise(_gauss(257, 32, 1))
    s1, i1 = U.exact_topk(bank, q, k, chunk=100)      # several query chunks, one partial
    s2, i2 = U.brute_topk(bank, q, k, chunk=64)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    assert (np.diff(s1, axis=1) <= 1e-7).all(), "best first"


def test_exact_topk_fp16_is_exact_for_the_rounded_bank():
    bank, q = U.l2_normalise(_gauss(2000, 48, 2)), U.l2_normalise(_gauss(100, 48, 3))
    s, i = U.exact_topk(bank, q, 3, fp16=True)
    s_ref, i_ref = U.brute_topk(bank.astype(np.float16).astype(np.float32), q, 3)
    assert (i == i_ref).mean() > 0.99  # float16 decode vs float32 upcast may swap exact near-ties only
    np.testing.assert_allclose(s, s_ref, atol=1e-3)


def test_exact_topk_rejects_bad_input():
    with pytest.raises(ValueError, match="same width"):
        U.exact_topk(_gauss(10, 4, 0), _gauss(3, 5, 0), 1)
    with pytest.raises(ValueError, match="k=11"):
        U.exact_topk(_gauss(10, 4, 0), _gauss(3, 4, 0), 11)


def test_nn_scores_follow_the_paper_rule_and_majority_vote():
    rng = np.random.default_rng(0)
    real, fake = _gauss(200, 16, 10), _gauss(200, 16, 11) + 1.5
    q = np.vstack([_gauss(50, 16, 12), _gauss(50, 16, 13) + 1.5])
    scores = U.nn_scores(real, fake, q, ks=(1, 2, 3, 9))
    r, f, qn = U.l2_normalise(real), U.l2_normalise(fake), U.l2_normalise(q)
    nearest_fake_closer = (qn @ f.T).max(1) > (qn @ r.T).max(1)          # the paper's k = 1 rule (§A5)
    np.testing.assert_array_equal(scores[1] > 0.5, nearest_fake_closer)
    _, idx = U.brute_topk(np.vstack([r, f]), qn, 9)
    votes = (idx >= len(r)).sum(1)
    np.testing.assert_array_equal(scores[9] > 0.5, votes >= 5)          # odd k: majority
    for s in scores.values():
        assert s.min() >= 0 and s.max() <= 1
    labels = np.r_[np.zeros(50), np.ones(50)]
    assert U.evaluate(labels, scores[3])["ap"] > 0.95
    assert rng is not None


# ----------------------------------------------------------------------------------------------- transforms

def _img(seed=0, size=40):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_data_augment_probabilities_and_determinism():
    img = _img()
    off = U.data_augment(img, np.random.default_rng(0), {"blur_prob": 0.0, "jpg_prob": 0.0})
    np.testing.assert_array_equal(off, img)
    on = U.data_augment(img, np.random.default_rng(0), {"blur_prob": 1.0, "jpg_prob": 1.0})
    assert on.shape == img.shape and on.dtype == np.uint8 and not np.array_equal(on, img)
    again = U.data_augment(img, np.random.default_rng(0), {"blur_prob": 1.0, "jpg_prob": 1.0})
    np.testing.assert_array_equal(on, again)
    with pytest.raises(ValueError, match="cv2' or 'pil"):
        U.jpeg(img, 80, "turbo")


def test_transform_modes_shapes_and_seeding():
    pil = Image.fromarray(_img(1, 48))
    kw = dict(size=32, load_size=40, mean=(0.5,) * 3, std=(0.5,) * 3)
    train = U.Transform("train", **kw)
    a, b = train(pil), train(pil)
    assert a.shape == (3, 32, 32) and torch.equal(a, b), "randomness depends on (seed, view, image) only"
    assert not torch.equal(a, U.Transform("train", view=1, **kw)(pil)), "another view, another draw"
    test = U.Transform("center_crop", **kw)(pil)
    np.testing.assert_allclose(test.numpy(), (np.asarray(pil)[8:40, 8:40].transpose(2, 0, 1) / 255 - 0.5) / 0.5,
                               atol=1e-6)
    small = U.Transform("center_crop", size=64, load_size=73, mean=(0,) * 3, std=(1,) * 3)(pil)
    assert small.shape == (3, 64, 64) and float(small[:, 0, 0].abs().sum()) == 0.0, "zero padding as the original"
    jp = U.Transform("center_crop", perturb=(("jpeg_quality", 30),), **kw)(pil)
    assert not torch.equal(jp, test)
    assert "perturb=(('jpeg_quality', 30),)" in repr(U.Transform("center_crop", perturb=(("jpeg_quality", 30),), **kw))
    with pytest.raises(ValueError, match="mode"):
        U.Transform("clip", **kw)


def test_mini_training_views_are_not_resampled():
    """The original's train-time resize to 256 is the identity on ProGAN's 256-px images; mini's LOAD_SIZE must be
    the identity on its own images too (a resize to 73 px resampled every training view and no test image: the
    probe's in-domain AP fell from 0.95 to 0.60, benchmarks/probe_regime.py). With augmentation off a training view
    is the test view or its mirror image."""
    import yaml

    from dfbook import params, paths, runner
    from dfbook.bench import images

    cell = next(c for c in runner.read_notebook("univfd").cells if "parameters" in c.metadata.get("tags", []))
    mini = {k: v["default"] for k, v in params.parse_parameters(cell.source).items()}
    assert mini["LOAD_SIZE"] == mini["CROP"] == images.DEFAULTS["size"], "mini views must keep the images' side"
    full = yaml.safe_load((paths.notebooks_dir() / "params" / "univfd.full.yaml").read_text())
    assert full["LOAD_SIZE"] == 256 and full["CROP"] == 224, "full keeps the paper's sizes"
    pil = Image.fromarray(_img(3, 64))
    kw = dict(size=64, load_size=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    test = U.Transform("center_crop", **kw)(pil)
    off = (("blur_prob", 0.0), ("jpg_prob", 0.0))
    views = [U.Transform("train", aug=off, view=v, **kw)(pil) for v in range(8)]
    assert all(torch.equal(v, test) or torch.equal(v, test.flip(-1)) for v in views)
    assert any(torch.equal(v, test.flip(-1)) for v in views) and any(torch.equal(v, test) for v in views)
    resized = U.Transform("train", aug=off, **{**kw, "load_size": 73})(pil)
    assert not (torch.equal(resized, test) or torch.equal(resized, test.flip(-1))), "73 px resamples"


def test_seed_preprocess_jpegs_everything_and_blurs_about_half():
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, 13:] = 255                                   # a step edge off the 8x8 JPEG grid; blur flattens it
    rng = np.random.default_rng(0)
    outs = [U.seed_preprocess(img, rng) for _ in range(200)]
    steepest = np.array([np.abs(np.diff(o.astype(int), axis=1)).max() for o in outs])
    assert all(not np.array_equal(o, img) for o in outs)
    assert 0.35 < (steepest < 150).mean() < 0.65


# ----------------------------------------------------------------------------------------------- heads

def test_linear_probe_has_769_parameters_on_768_d_and_the_original_init():
    head = U.linear_probe(768)
    assert sum(p.numel() for p in head.parameters()) == 769
    assert abs(float(head.weight.detach().std()) - 0.02) < 0.003


def test_fit_head_learns_and_stops_early():
    x = np.vstack([_gauss(100, 8, 0) - 1.5, _gauss(100, 8, 1) + 1.5])
    y = np.r_[np.zeros(100), np.ones(100)]
    cfg = U.probe_config(lr=3e-2, batch_size=50, epochs=40, seed=0)
    head, hist = U.fit_head(U.linear_probe(8), x, y, cfg, val=(x[::3], y[::3]))
    s = U.head_scores(head, x)
    assert U.evaluate(y, s)["acc"] > 0.97
    assert len(hist) < 40, "separable data: validation accuracy plateaus and the lr drops end training"
    assert hist["lr"].min() < 3e-2 - 1e-9
    head2, _ = U.fit_head(U.linear_probe(8), x, y, cfg, val=(x[::3], y[::3]))
    np.testing.assert_array_equal(U.head_scores(head2, x), s)  # same seed, same numbers


def test_fc_weights_round_trip_and_errors(tmp_path):
    head = U.linear_probe(16)
    torch.save(head.state_dict(), tmp_path / "fc_weights.pth")
    loaded = U.load_fc_weights(tmp_path / "fc_weights.pth", 16)
    x = torch.randn(4, 16)
    assert torch.equal(loaded(x), head(x))
    with pytest.raises(ValueError, match="Linear\\(32, 1\\)"):
        U.load_fc_weights(tmp_path / "fc_weights.pth", 32)
    with pytest.raises(FileNotFoundError, match="FC_WEIGHTS"):
        U.load_fc_weights(tmp_path / "missing.pth", 16)


def test_probe_trains_only_the_head():
    from dfbook import backbones

    probe = U.Probe(backbones.create("mini:clip", pretrained=False))
    trainable = sum(p.numel() for p in probe.parameters() if p.requires_grad)
    assert trainable == probe.backbone.dim + 1
    tower = sum(p.numel() for p in probe.backbone.image_tower.parameters())
    assert sum(p.numel() for p in probe.parameters()) == tower + trainable, "the frozen tower is counted"
    assert probe(torch.randn(2, 3, 64, 64)).shape == (2, 1)


# ----------------------------------------------------------------------------------------------- protocol + metrics

def _manifest():
    rows = []
    for split, n in (("train", 40), ("val", 10), ("test", 12)):
        for i in range(n):
            rows.append(dict(path=f"r_{split}_{i}.png", label=0, method="real", family="real", split=split,
                             content="face" if i % 4 == 0 else "ball", domain="mini_gen", identity=f"r{split}{i}"))
        for gen, content in (("progan", "ball"), ("ldm", "ball"), ("stargan", "face")):
            for i in range(n // 4):
                rows.append(dict(path=f"{gen}_{split}_{i}.png", label=1, method=gen, split=split, content=content,
                                 family="diffusion" if gen == "ldm" else "gan", domain="mini_gen",
                                 identity=f"{gen}{split}{i}"))
    rows += [dict(path=f"c_{i}.png", label=0, method="real", family="real", split="test", content="ball",
                  domain="format_control", identity=f"c{i}") for i in range(5)]
    return pd.DataFrame(rows).assign(dataset="mini_gen", video_id=lambda d: d["identity"], frame=0)


def test_mini_protocol_is_balanced_content_matched_and_split_clean():
    p = U.mini_protocol(_manifest(), "progan", seed=0)
    assert set(p.train["split"]) == {"train"} and set(p.val["split"]) == {"val"}
    assert set(p.val_published["split"]) == {"test"}, "as published: validate on the test split"
    for d in (p.train, p.val):
        assert (d["label"] == 1).sum() == (d["label"] == 0).sum()
        assert set(d.loc[d["label"] == 1, "method"]) == {"progan"}
    star = p.tests[p.tests["test_set"] == "stargan"]
    assert set(star.loc[star["label"] == 0, "content"]) == {"face"}, "face generator against face reals"
    assert set(p.tests["test_set"]) == {"progan", "ldm", "stargan", "format_control"}
    assert set(p.tests.loc[p.tests["test_set"] == "format_control", "label"]) == {0}
    with pytest.raises(ValueError, match="not in the corpus"):
        U.mini_protocol(_manifest(), "biggan")


def test_evaluate_and_per_test_set():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.45, 0.4, 0.44, 0.46, 0.9])  # ranking imperfect; threshold 0.5 calls 1 fake
    e = U.evaluate(y, s)
    assert e["real_acc"] == 1.0 and e["fake_acc"] == 0.25 and e["acc"] == 5 / 8
    assert e["oracle_acc"] >= e["acc"] and e["oracle_acc"] == 7 / 8
    tests = pd.DataFrame({"test_set": ["a"] * 8 + ["ctl"] * 2, "label": np.r_[y, 0, 0],
                          "family": ["real"] * 4 + ["gan"] * 4 + ["real"] * 2})
    t = U.per_test_set(tests, np.r_[s, 0.7, 0.2])
    assert t.loc["ctl", "family"] == "real only" and t.loc["ctl", "real_acc"] == 0.5 and np.isnan(t.loc["ctl", "ap"])
    summary = U.summarise(pd.concat([t, t.loc[["a"]].rename(index={"a": "b"})]), "a")
    assert summary["in_domain/acc"] == e["acc"] and summary["unseen/acc"] == e["acc"]


def test_evaluate_differs_from_validate_py_only_on_ties():
    # validate.py calls fake when p > 0.5 (the docstring says so); here p >= 0.5: one fake sits on the threshold
    y, s = np.array([1, 1, 0, 0]), np.array([0.5, 0.8, 0.2, 0.3])
    strict = float(np.mean((s > 0.5) == y))
    assert U.evaluate(y, s)["acc"] == 1.0 and strict == 0.75
    assert U.evaluate(y, s + 0.01)["acc"] == float(np.mean((s + 0.01 > 0.5) == y))  # no tie: the same number


def test_spectrum_features_separate_checkerboard_from_smooth(tmp_path):
    from dfbook.bench import camera

    rng = np.random.default_rng(0)
    paths, labels = [], []
    checker = (np.indices((32, 32)).sum(0) % 2 * 6).astype(np.int16)[:, :, None]
    for i in range(40):
        base = camera.blur(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), 2.0).astype(np.int16)
        img = np.clip(base + checker * (i % 2), 0, 255).astype(np.uint8)
        p = tmp_path / f"{i}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
        labels.append(i % 2)
    x = U.spectrum_features(paths, 32, out=16)
    assert x.shape == (40, 256)
    clf = U.spectrum_classifier().fit(x[::2][:10].tolist() + x[1::2][:10].tolist(), [0] * 10 + [1] * 10)
    assert clf.score(x[::2][10:].tolist() + x[1::2][10:].tolist(), [0] * 10 + [1] * 10) >= 0.9


def _touch(root, rel, n):
    for i in range(n):
        p = root / rel / f"{i:03d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_full_protocol_on_the_published_layouts(tmp_path):
    """CNNDetection + the UnivFD diffusion sets as laid out on disk (data/README.md): train/val balanced over the
    20 classes, every test set balanced against its own reals, each diffusion set against the reals UnivFD
    scores it with, sets capped at max_sample and used whole when smaller."""
    from dfbook import datasets

    cnn, diff = tmp_path / "cnndetection", tmp_path / "univfd_diffusion"
    for split, n_fake in (("train", 6), ("val", 3)):
        for cls in ("car", "cat"):
            _touch(cnn, f"{split}/{cls}/0_real", 5)
            _touch(cnn, f"{split}/{cls}/1_fake", n_fake)
    _touch(cnn, "test/progan/horse/0_real", 4)
    _touch(cnn, "test/progan/horse/1_fake", 4)
    _touch(cnn, "test/biggan/0_real", 30)
    _touch(cnn, "test/biggan/1_fake", 25)
    _touch(diff, "imagenet/0_real", 7)
    _touch(diff, "laion/0_real", 9)
    _touch(diff, "guided/1_fake", 12)
    _touch(diff, "dalle/1_fake", 3)
    p = U.full_protocol(datasets.cnndetection(cnn), datasets.univfd_diffusion(diff), seed=0, max_sample=20)
    assert len(p.train) == 2 * 10 and (p.train["label"] == 1).sum() == 10          # 6+6 fakes vs 10 reals: 10 each
    assert set(p.train["split"]) == {"train"} and set(p.val["split"]) == {"val"} and len(p.val) == 2 * 6
    assert set(p.val_published["domain"]) == {"progan"} and len(p.val_published) == 8
    sizes = p.tests.groupby(["test_set", "label"]).size().unstack()
    assert sizes.loc["biggan"].tolist() == [20, 20]        # capped at max_sample per class
    assert sizes.loc["guided"].tolist() == [7, 7]          # all 7 ImageNet reals: a smaller set is used whole
    assert sizes.loc["dalle"].tolist() == [3, 3]
    reals = p.tests[p.tests["label"] == 0].groupby("test_set")["domain"].unique()
    assert reals["guided"].tolist() == ["imagenet"] and reals["dalle"].tolist() == ["laion"]
    assert p.info == {"train_generator": "progan", "seed": 0}
    again = U.full_protocol(datasets.cnndetection(cnn), datasets.univfd_diffusion(diff), seed=0, max_sample=20)
    assert again.tests["path"].tolist() == p.tests["path"].tolist()


def test_per_generator_comparison_puts_paper_seed_and_book_side_by_side():
    tests = pd.DataFrame({"test_set": ["cyclegan"] * 4 + ["attgan"] * 4 + ["format_control"] * 2,
                          "label": [0, 0, 1, 1] * 2 + [0, 0], "family": ["gan"] * 8 + ["real"] * 2})
    ours = U.per_test_set(tests, np.array([0.1, 0.2, 0.8, 0.9, 0.6, 0.2, 0.3, 0.9, 0.1, 0.1]))
    t = U.per_generator_comparison({"book": ours})
    assert list(t.index) == ["cyclegan", "attgan"]                      # the reals-only control has no AP
    row = t.loc["cyclegan"]
    assert row["paper column"] == "CycleGAN" and row["paper probe AP"] == pytest.approx(0.9946)
    assert row["paper probe acc"] == pytest.approx(0.985) and row["seed NN acc"] == pytest.approx(0.629)
    assert row["book AP"] == 1.0 and row["book acc"] == 1.0
    assert "corroborated-recall" in row["evidence"] and "seed-quoted" in row["evidence"]
    assert t.loc["attgan", "paper column"] == "" and np.isnan(t.loc["attgan", "paper probe AP"])
    assert t.loc["attgan", "book acc"] == 0.5
