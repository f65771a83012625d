"""Tests of dfbook.methods.clip_peft: architecture and parameter counts, prompt features, LoRA, protocols."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dfbook import backbones, runtime
from dfbook.methods import clip_peft as cp


@pytest.fixture(autouse=True)
def _threads():
    with runtime.single_thread():
        yield


def _count(m):
    return backbones.count_params(m)


def _manifest(n_ids=10, frames=4, methods=("FaceSwap", "NeuralTextures")) -> pd.DataFrame:
    """Toy FF++-like manifest: per identity one real video and one fake per method (donor = next identity
    of the same split); identities 0-5 train, 6-7 val, 8-9 test."""
    split = {i: "train" if i < 6 else "val" if i < 8 else "test" for i in range(n_ids)}
    rows = []
    for i in range(n_ids):
        same = [j for j in range(n_ids) if split[j] == split[i] and j != i]
        for method in ("real",) + tuple(methods):
            vid = f"id{i}" if method == "real" else f"id{i}_id{same[0]}"
            for f in range(frames):
                rows.append(dict(path=f"ffpp/{method}/{vid}/{f:03d}.png", label=int(method != "real"),
                                 dataset="ffpp", method=method, video_id=vid, frame=f, identity=f"id{i}",
                                 split=split[i], source_identity="" if method == "real" else f"id{same[0]}"))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- architecture
def test_seed_head_has_the_logged_parameter_count():
    head = cp.make_head("adapter", torch.randn(6, 512))
    assert _count(head)["trainable"] == cp.SEED_TRAINABLE == 215_362
    assert head.classifier[0].in_features == 134
    ablation = cp.make_head("no_prompts", torch.randn(6, 512))
    assert ablation.classifier[0].in_features == 128
    assert _count(ablation)["trainable"] == 215_362 - 6 * 256
    assert _count(cp.make_head("probe", torch.randn(6, 512)))["trainable"] == 2 * 512 + 2
    with pytest.raises(ValueError, match="unknown head"):
        cp.make_head("mlp", torch.randn(6, 512))


def test_prompt_features_match_a_hand_computation():
    text = torch.eye(6, 8)                          # prompt k = unit vector e_k
    emb = torch.tensor([[3.0, 1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]])   # norm sqrt(14)
    f = cp.prompt_features(emb, text)[0].numpy()
    sim = np.array([3, 1, 0, 2, 0, 0]) / np.sqrt(14)
    real, fake = sim[[0, 2, 4]].mean(), sim[[1, 3, 5]].mean()
    np.testing.assert_allclose(f, [real, fake, sim.mean(), real - fake, sim.std(ddof=1), sim.max()], rtol=1e-6)
    # raw cosines: scaling the embedding changes nothing
    np.testing.assert_allclose(cp.prompt_features(emb * 7, text), cp.prompt_features(emb, text), rtol=1e-6)
    np.testing.assert_allclose(cp.prompt_score(emb.numpy(), text), [fake - real], rtol=1e-6)


def test_head_forward_shapes_and_uses_prompts():
    text = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    torch.manual_seed(0)
    head = cp.make_head("adapter", text).eval()
    x = torch.randn(5, 16)
    assert head(x).shape == (5, 2)
    # the logits depend on the prompt embeddings only through the six scalars
    other = cp.PromptAdapterHead(torch.randn(6, 16)).eval()
    other.load_state_dict({k: v for k, v in head.state_dict().items() if k != "text"}, strict=False)
    assert not torch.allclose(head(x), other(x))


@pytest.fixture(scope="module")
def mini_clip():
    return backbones.create("mini:clip", pretrained=False)


def test_detector_freezes_clip_and_lora_adds_only_adapters(mini_clip):
    det = cp.build(mini_clip, "adapter")
    head = _count(det.head)["trainable"]
    assert _count(det)["trainable"] == head
    assert _count(det)["total"] == _count(mini_clip.clip)["total"] + head
    x = torch.randn(2, 3, 64, 64)
    assert det.eval()(x).shape == (2, 2)

    lora = cp.build(mini_clip, "adapter", lora_rank=4, lora_alpha=1)
    mlp = mini_clip.clip.visual.transformer.resblocks[0].mlp
    per_block = 2 * 4 * (mlp.c_fc.in_features + mlp.c_fc.out_features)   # c_fc + c_proj, rank 4
    blocks = len(mini_clip.clip.visual.transformer.resblocks)
    assert _count(lora)["trainable"] == head + blocks * per_block
    names = [n for n, p in lora.named_parameters() if p.requires_grad and not n.startswith("head.")]
    assert names and all("lora_" in n and n.startswith("clip.visual.") for n in names)
    # LoRA's B starts at zero (same embedding); the backbone's own CLIP is left untouched
    with torch.no_grad():
        torch.testing.assert_close(lora.clip.encode_image(x), mini_clip.clip.encode_image(x))
    assert not any("lora_" in n for n, _ in mini_clip.clip.named_parameters())


def test_lora_training_moves_adapters_not_clip(mini_clip, tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(p)   # non-square: squashed
        rows.append({"path": str(p), "label": i % 2})
    det = cp.build(mini_clip, "adapter", lora_rank=4)
    before = {n: p.detach().clone() for n, p in det.named_parameters()}
    hist = cp.train_detector(det, pd.DataFrame(rows), cp.squash_transform(64), epochs=1, seed=0, batch_size=4,
                             ckpt_dir=tmp_path / "ckpt")
    assert len(hist) == 1 and (tmp_path / "ckpt" / "last.pt").is_file()
    moved = {n for n, p in det.named_parameters() if not torch.equal(p, before[n])}
    assert any("lora_B" in n for n in moved) and any(n.startswith("head.") for n in moved)
    assert all("lora_" in n or n.startswith("head.") for n in moved)


@pytest.mark.slow
def test_vit_b32_detector_has_the_seed_counts():
    b = backbones.create("openclip:ViT-B-32.openai", pretrained=False)
    det = cp.build(b, "adapter")
    assert _count(det) == {"total": cp.SEED_CLIP_PARAMS + cp.SEED_TRAINABLE, "trainable": cp.SEED_TRAINABLE}
    with torch.inference_mode():
        assert det.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 2)


# ------------------------------------------------------------------------------------------- training
def test_train_head_learns_and_is_deterministic():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 256)
    X = rng.normal(size=(512, 16)).astype(np.float32)
    X[:, 0] += 3.0 * (2 * y - 1)                                  # one informative direction
    text = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    h1, hist = cp.train_head("adapter", text, X, y, epochs=4, seed=42)
    h2, _ = cp.train_head("adapter", text, X, y, epochs=4, seed=42)
    from dfbook import metrics, train

    s1, s2 = train.predict(h1, X), train.predict(h2, X)
    np.testing.assert_array_equal(s1, s2)
    assert metrics.auc(y, s1) > 0.95
    assert list(hist["epoch"]) == [1, 2, 3, 4] and hist["lr"].iloc[0] == pytest.approx(1e-4)
    assert hist["lr"].iloc[1] < hist["lr"].iloc[0]                # cosine, stepped per epoch
    h3, _ = cp.train_head("adapter", text, X, y, epochs=4, seed=0)
    assert not np.array_equal(train.predict(h3, X), s1)


# ------------------------------------------------------------------------------------------- protocols
def test_published_protocol_leaks_sorted_reals():
    df = _manifest().sample(frac=1.0, random_state=0)             # shuffled: the protocol must sort
    p = cp.published_protocol(df)
    reals = df[df["label"] == 0]
    n_leak = round(cp.LEAK_FRACTION * len(reals))
    test_reals = p["test"][p["test"]["label"] == 0]
    assert list(test_reals["path"]) == sorted(reals["path"])[:n_leak]
    assert set(p["train"]["method"]) == {"real", "FaceSwap"} and len(p["train"]) == 2 * len(reals)
    assert set(p["test"]["method"]) == {"real", "NeuralTextures"}
    ov = cp.overlap(p["train"], p["test"])
    assert ov["real_test_frames_trained_on"] == n_leak == ov["test_frames_trained_on"]
    assert ov["identities_seen_in_training"] == ov["test_identities"]
    with pytest.raises(KeyError, match="not in the manifest"):
        cp.published_protocol(df, train_method="Deepfakes")


def test_corrected_protocol_shares_nothing():
    df = _manifest()
    p = cp.corrected_protocol(df)
    assert set(p["train"]["split"]) == {"train"} and set(p["test"]["split"]) == {"test"}
    ov = cp.overlap(p["train"], p["test"])
    assert ov["test_frames_trained_on"] == ov["test_videos_trained_on"] == ov["identities_seen_in_training"] == 0
    assert ov["test_videos"] == 4                                 # 2 test identities x (real + NT)


# ------------------------------------------------------------------------------------------- evaluation
def test_evaluate_and_error_tables():
    df = _manifest()
    test = cp.corrected_protocol(df)["test"]
    y = test["label"].to_numpy()
    s = np.where(y == 1, 0.9, 0.1)
    s[0] = 0.95                                                    # one confident false positive (a real frame)
    table = cp.evaluate(test, s, n_boot=50)
    assert table.loc["video/auc", "value"] == 1.0 and table.loc["frame/real_accuracy", "value"] == 0.875
    assert table.loc["frame/auc", "lo"] <= table.loc["frame/auc", "value"] <= table.loc["frame/auc", "hi"]
    assert np.isnan(table.loc["frame/f1", "lo"])
    errs = cp.per_video_errors(test, s)
    assert errs.iloc[0]["errors"] == 1 and errs["errors"].sum() == 1 and errs.iloc[0]["label"] == 0
    worst = cp.confident_mistakes(test, s, k=3)
    assert len(worst) == 1 and worst.iloc[0]["score"] == 0.95


def test_comparison_maps_every_seed_number():
    rows = cp.seed_rows()
    assert set(rows["quantity"]) == set(cp.QUANTITIES)
    table = pd.DataFrame({"value": 0.5, "lo": 0.4, "hi": 0.6},
                         index=[key for _, _, key in cp.QUANTITIES.values()])
    t = cp.comparison(rows, {"this book, as published": cp.ours(table), "this book, corrected": cp.ours(table)})
    assert len(t) == len(rows) + 2 * len(cp.QUANTITIES)
    assert list(t["quantity"].drop_duplicates()) == list(cp.QUANTITIES)
    assert (t.groupby("quantity")["source_kind"].first() == "seed").all()


def test_squash_transform_ignores_aspect():
    img = Image.fromarray(np.full((30, 90, 3), 255, np.uint8))
    x = cp.squash_transform(64)(img)
    assert x.shape == (3, 64, 64)
    np.testing.assert_allclose(x[:, 0, 0], (1 - np.array(cp.CLIP_MEAN)) / np.array(cp.CLIP_STD), rtol=1e-5)


def test_load_frames_resolves_relative_paths(tmp_path, monkeypatch):
    from dfbook import manifest

    monkeypatch.setenv("DFBOOK_DATA", str(tmp_path))
    df = _manifest(frames=1).sample(frac=1.0, random_state=1)
    manifest.write(df, tmp_path / "prepared" / "manifest.csv")
    out = cp.load_frames("prepared/manifest.csv")
    assert list(out.index) == list(range(len(df)))
    assert list(out["path"]) == sorted(str(tmp_path / "prepared" / p) for p in df["path"])
    with pytest.raises(FileNotFoundError, match="dfbook prepare"):
        cp.load_frames("missing.csv")


def test_summaries_of_matrix_variants_and_errors():
    m = pd.DataFrame([[1.0, 0.6], [0.7, 0.9]], index=["A", "B"], columns=["A", "B"])
    assert cp.matrix_summary(m) == pytest.approx({"in_distribution_auc": 0.95, "cross_manipulation_auc": 0.65})
    errors = pd.DataFrame({"label": [1, 1, 0, 1], "errors": [0, 3, 0, 1]})
    assert cp.share_with_errors(errors, 1) == pytest.approx(2 / 3) and cp.share_with_errors(errors, 0) == 0
    with pytest.raises(ValueError, match="no video"):
        cp.share_with_errors(errors[errors["label"] == 1], 0)
    test = cp.corrected_protocol(_manifest())["test"]
    y = test["label"].to_numpy()
    protocols = {"corrected": {"test": test}}
    scores = {("corrected", "adapter"): y * 0.8 + 0.1, ("corrected", "zero_shot"): 1.0 - y}
    checked = pd.DataFrame({"model": ["adapter"], "params_trainable": [100]})
    t = cp.variants_table(protocols, scores, checked, n_boot=20)
    assert list(t["variant"]) == [cp.VARIANTS["adapter"], cp.VARIANTS["zero_shot"]]
    assert list(t["trainable_params"]) == [100, 0] and list(t["frame_auc"]) == [1.0, 0.0]


def test_frame_package_draws_each_class_independently():
    df = _manifest(n_ids=10)
    pkg = cp.frame_package(df, ("FaceSwap", "NeuralTextures"), videos_per_class=4, seed=0)
    per_class = pkg.groupby("method")["video_id"].nunique()
    assert per_class.to_dict() == {"FaceSwap": 4, "NeuralTextures": 4, "real": 4}
    again = cp.frame_package(df, ("FaceSwap", "NeuralTextures"), videos_per_class=4, seed=0)
    assert pkg.equals(again)
    assert not pkg.equals(cp.frame_package(df, ("FaceSwap", "NeuralTextures"), videos_per_class=4, seed=1))
    p = cp.published_protocol(df, videos_per_class=4, seed=0)
    assert set(p["train"]["path"]) == set(pkg.loc[pkg["method"] != "NeuralTextures", "path"])
    with pytest.raises(ValueError, match="fewer than"):
        cp.frame_package(df, ("FaceSwap",), videos_per_class=11, seed=0)
