"""Tests of the UCF re-implementation (dfbook.methods.ucf) against DeepfakeBench's structure and recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from dfbook.methods import ucf


def tiny_body() -> nn.Module:
    # (N, 3, 32, 32) -> (N, 16, 4, 4): stride 8, a 4x4 grid so AdaIN has a spatial variance
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, 2, 1))


def tiny_model(n_specific: int = 5) -> ucf.UCF:
    torch.manual_seed(0)
    return ucf.build(tiny_body, feat_dim=32, n_specific=n_specific, body_channels=16)


def paired_batch(b: int = 4, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(b, 3, size, size, generator=g) * 0.5 - 0.5          # darker reals
    fake = torch.rand(b, 3, size, size, generator=g) * 0.5                 # brighter fakes
    label_spe = torch.cat([torch.zeros(b), torch.arange(b) % 4 + 1]).long()
    return torch.cat([real, fake]).clamp(-1, 1), label_spe


def test_shapes_and_ranges():
    model = tiny_model()
    x, y_spe = paired_batch(b=3)
    out = model.train().forward_train(x, generator=torch.Generator().manual_seed(1))
    assert out["cls"].shape == (6, 2) and out["cls_spe"].shape == (6, 5)
    assert out["feat"].shape == (6, 16) and out["feat_spe"].shape == (6, 16)
    assert set(out["rec"]) == {"self_fake", "self_real", "cross_fake", "cross_real"}
    for rec in out["rec"].values():
        assert rec.shape == (3, 3, 32, 32)
        assert rec.min() >= -1 and rec.max() <= 1                           # tanh output, like the input scale
    model.eval()
    assert model(x).shape == (6, 2)
    score = model.score(x)
    assert score.shape == (6,) and bool(((score >= 0) & (score <= 1)).all())
    emb = model.embed(x)
    assert emb["forgery"].shape == (6, 32) and emb["common"].shape == (6, 16) and emb["specific"].shape == (6, 16)
    assert torch.allclose(emb["score"], score)


def test_full_model_shapes_and_decoder_at_256():
    torch.set_num_threads(1)
    model = ucf.build_full().eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        f = model.encoder_f.features(x)
        assert f.shape == (1, 512, 8, 8)
        rec = model.con_gan(torch.randn(1, 512, 8, 8), f, (256, 256))
    assert rec.shape == (1, 3, 256, 256)


def test_losses_finite_and_decrease_on_overfit_batch():
    torch.set_num_threads(1)
    model = tiny_model()
    x, y_spe = paired_batch(b=4)
    opt = ucf.optimizer(model, lr=2e-3)
    g = torch.Generator().manual_seed(0)
    history = []
    for _ in range(40):
        terms = ucf.losses(model.train().forward_train(x, generator=g), x, y_spe, generator=g)
        assert all(torch.isfinite(v) for v in terms.values())
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        history.append({k: v.item() for k, v in terms.items()})
    first, last = history[:5], history[-5:]
    for key in ("loss", "common", "specific", "reconstruction"):
        before, after = np.mean([h[key] for h in first]), np.mean([h[key] for h in last])
        assert after < 0.8 * before, (key, before, after)
    # the weighted sum is exactly the published combination
    h = history[-1]
    expected = h["common"] + 0.1 * h["specific"] + 0.3 * h["reconstruction"] + 0.05 * h["contrastive"]
    assert h["loss"] == pytest.approx(expected, rel=1e-5)
    assert h["reconstruction"] == pytest.approx(sum(h[k] for k in h if k.startswith("rec_")), rel=1e-5)


def test_same_seed_same_losses():
    def run():
        model = tiny_model()
        x, y_spe = paired_batch()
        torch.manual_seed(3)
        g = torch.Generator().manual_seed(5)
        return {k: v.item() for k, v in ucf.losses(model.train().forward_train(x, g), x, y_spe, generator=g).items()}

    assert run() == run()


def test_label_spe_must_match_pair_layout():
    model = tiny_model()
    x, y_spe = paired_batch(b=2)
    out = model.train().forward_train(x)
    with pytest.raises(ValueError, match="label_spe"):
        ucf.losses(out, x, torch.tensor([0, 1, 1, 2]))                       # a "real" labelled as a method


def test_shuffle_probability_and_halves():
    g = torch.Generator().manual_seed(0)
    z = torch.arange(8.0)[:, None]
    n, applied = 4000, 0
    for _ in range(n):
        out, shuffled = ucf.shuffle_halves(z, 0.7, g)
        applied += shuffled
        assert sorted(out[:4, 0].tolist()) == [0, 1, 2, 3]                   # reals stay among reals
        assert sorted(out[4:, 0].tolist()) == [4, 5, 6, 7]
        if not shuffled:
            assert torch.equal(out, z)
    # binomial sd = sqrt(0.21 / 4000) = 0.007; +-0.03 is > 4 sd
    assert abs(applied / n - 0.7) < 0.03
    assert ucf.shuffle_halves(z, 0.0, g)[1] is False
    with pytest.raises(ValueError, match="paired batch"):
        ucf.shuffle_halves(torch.zeros(5, 1))


def test_contrastive_zero_when_separated_and_positive_when_mixed():
    d = 8
    real, fake = torch.zeros(4, d), torch.zeros(4, d)
    fake[:, 0] = 10.0                                                        # distance 10 > margin 3
    common = torch.cat([real, fake])
    label_spe = torch.tensor([0, 0, 0, 0, 1, 2, 1, 2])
    assert float(ucf.contrastive_loss(common, common.clone(), label_spe)) == pytest.approx(0.0, abs=1e-4)
    mixed = torch.randn(8, d, generator=torch.Generator().manual_seed(0)) * 0.01
    # everything at one point: each of the four triplet terms is about the margin
    assert float(ucf.contrastive_loss(mixed, mixed, label_spe)) == pytest.approx(4 * 3.0, abs=0.2)


def test_permute_within_keeps_labels():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3])
    idx = ucf.permute_within(labels, torch.Generator().manual_seed(0))
    assert torch.equal(labels[idx], labels)
    assert sorted(idx.tolist()) == list(range(8))


def test_adain_transfers_condition_statistics():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 5, generator=g) * 4 + 1
    y = torch.randn(2, 3, 5, 5, generator=g) * 0.5 - 2
    out = ucf.AdaIN()(x, y)
    assert torch.allclose(out.mean((2, 3)), y.mean((2, 3)), atol=1e-4)
    assert torch.allclose(out.flatten(2).std(-1), y.flatten(2).std(-1), atol=1e-3)


# DeepfakeBench key names and shapes (networks/xception.py, detectors/ucf_detector.py @8a4a7bf)
DFB_KEYS = {
    "encoder_f.conv1.weight": (32, 3, 3, 3),
    "encoder_f.block1.rep.0.conv1.weight": (64, 1, 3, 3),                  # block1 starts without ReLU
    "encoder_f.block1.rep.0.pointwise.weight": (128, 64, 1, 1),
    "encoder_f.block1.skip.weight": (128, 64, 1, 1),
    "encoder_f.block4.rep.7.pointwise.weight": (728, 728, 1, 1),
    "encoder_f.block12.rep.4.pointwise.weight": (1024, 728, 1, 1),          # grow_first=False: widen last
    "encoder_f.conv3.pointwise.weight": (1536, 1024, 1, 1),
    "encoder_f.conv4.pointwise.weight": (2048, 1536, 1, 1),
    "encoder_f.bn4.running_var": (2048,),
    "encoder_f.last_linear.weight": (2, 2048),
    "encoder_f.adjust_channel.0.weight": (512, 2048, 1, 1),
    "encoder_f.adjust_channel.1.num_batches_tracked": (),
    "encoder_c.adjust_channel.1.running_mean": (512,),
    "con_gan.dconv_up3.0.weight": (256, 512, 3, 3),
    "con_gan.dconv_up3.2.weight": (256, 256, 3, 3),
    "con_gan.dconv_up1.2.weight": (64, 64, 3, 3),
    "con_gan.conv_last.weight": (3, 64, 1, 1),
    "head_spe.mlp.2.weight": (5, 512),
    "head_sha.mlp.0.weight": (512, 256),
    "head_sha.mlp.2.bias": (2,),
    "block_spe.conv2d.0.weight": (256, 512, 1, 1),
    "block_sha.conv2d.4.weight": (256, 256, 1, 1),
}


def test_full_model_has_deepfakebench_key_layout():
    state = ucf.build_full().state_dict()
    for key, shape in DFB_KEYS.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    tops = {k.split(".")[0] for k in state}
    assert tops == {"encoder_f", "encoder_c", "con_gan", "head_spe", "head_sha", "block_spe", "block_sha"}
    # 46.84 M parameters; the state dict is 187.8 MB, the size a third-party mirror lists for ucf_best.pth (188 MB)
    nbytes = sum(v.numel() * v.element_size() for v in state.values())
    assert 187e6 < nbytes < 189e6
    counts = ucf.param_counts(ucf.build_full())
    assert counts["total"] == sum(counts[k] for k in ("encoder_f", "encoder_c", "con_gan", "block_spe",
                                                      "block_sha", "head_spe", "head_sha"))


@pytest.mark.slow
def test_full_checkpoint_loads_strict(tmp_path):
    torch.set_num_threads(1)
    src = ucf.build_full()
    # a DDP-saved checkpoint (keys prefixed 'module.') of the same structure
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, tmp_path / "ucf_best.pth")
    dst = ucf.load_deepfakebench(ucf.build_full(), tmp_path / "ucf_best.pth")
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), k


def test_checkpoint_roundtrip_and_errors(tmp_path):
    src = tiny_model()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.1)
    torch.save({"state_dict": src.state_dict()}, tmp_path / "mini.pth")
    dst = ucf.load_deepfakebench(tiny_model(), tmp_path / "mini.pth")
    x, _ = paired_batch()
    assert torch.equal(src.eval()(x), dst.eval()(x))
    with pytest.raises(ValueError, match=r"2 with other shapes e.g. \['head_spe.mlp.2.weight"):
        ucf.load_deepfakebench(tiny_model(n_specific=3), tmp_path / "mini.pth")
    state = src.state_dict()
    state.pop("head_sha.mlp.2.bias")
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="1 missing"):
        ucf.load_deepfakebench(tiny_model(), tmp_path / "partial.pth")
    with pytest.raises(FileNotFoundError, match="ucf_best.pth"):
        ucf.load_deepfakebench(tiny_model(), tmp_path / "absent.pth")


def test_imagenet_xception_loading_cadene_layout(tmp_path):
    torch.set_num_threads(1)
    ref = ucf.XceptionEncoder()
    # Cadene's xception-b5690688.pth: 2-D pointwise weights, an ImageNet `fc`, no adjust_channel/last_linear
    cadene = {k: (v[:, :, 0, 0] if "pointwise" in k else v) for k, v in ref.state_dict().items()
              if not k.startswith(("adjust_channel", "last_linear")) and not k.endswith("num_batches_tracked")}
    cadene["fc.weight"], cadene["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    torch.save(cadene, tmp_path / "xception-b5690688.pth")
    enc = ucf.load_imagenet_xception(ucf.XceptionEncoder(), tmp_path / "xception-b5690688.pth")
    assert torch.equal(enc.conv4.pointwise.weight, ref.conv4.pointwise.weight)
    assert torch.equal(enc.block7.rep[1].conv1.weight, ref.block7.rep[1].conv1.weight)
    bad = dict(cadene)
    bad.pop("conv1.weight")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="conv1.weight"):
        ucf.load_imagenet_xception(ucf.XceptionEncoder(), tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match="xception-b5690688"):
        ucf.load_imagenet_xception(ucf.XceptionEncoder(), tmp_path / "nope.pth")


def test_gradcam_layer_and_cam():
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    full = ucf.build_full()
    assert ucf.gradcam_layer(full) is full.encoder_f.conv4                  # the seed's grad.py target
    model = tiny_model().eval()
    layer = ucf.gradcam_layer(model)
    assert layer is model.encoder_f.body[4]                                  # last conv of the mini body
    x, _ = paired_batch(b=2)
    with GradCAM(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(1)] * len(x))
    assert maps.shape == (4, 32, 32) and np.isfinite(maps).all()


def test_noise_float_clips_but_seed_version_wraps():
    rng = np.random.default_rng(0)
    for level in (5, 250):                                                  # near black, near white
        img = np.full((64, 64, 3), level, np.uint8)
        clipped = ucf.gaussian_noise(img, 15, np.random.default_rng(0))
        wrapped = ucf.gaussian_noise(img, 15, np.random.default_rng(0), wrap=True)
        assert np.abs(clipped.astype(int) - level).max() < 90                # saturates, never flips
        flipped = np.abs(wrapped.astype(int) - level) > 150                 # black <-> white
        assert 0.2 < flipped.mean() < 0.5, level                            # P(noise pushes out of range)
    grey = np.full((64, 64, 3), 128, np.uint8)
    d_float = ucf.gaussian_noise(grey, 15, np.random.default_rng(1)).astype(float) - 128
    d_wrap = ucf.gaussian_noise(grey, 15, np.random.default_rng(1), wrap=True).astype(float) - 128
    assert abs(d_float.std() - 15) < 1.0                                    # sigma-sized noise
    assert abs(d_wrap.std() - 15) < 1.5 and np.abs(d_wrap).max() < 90      # mid-tones: no wrap (truncated noise)
    # the wrap matches numpy's uint8 arithmetic of the seed: clip(img + noise.astype(uint8)), uint8 + uint8
    noise = np.random.default_rng(1).normal(0, 15, grey.shape)
    dark = np.full_like(grey, 8)
    seed_style = np.clip(dark + np.mod(np.trunc(noise).astype(np.int64), 256).astype(np.uint8), 0, 255)
    assert seed_style.dtype == np.uint8
    assert np.array_equal(ucf.gaussian_noise(dark, 15, np.random.default_rng(1), wrap=True), seed_style)
    with pytest.raises(ValueError, match="uint8"):
        ucf.gaussian_noise(grey.astype(float), 15, rng)


def test_augment_deterministic_and_pure():
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    before = img.copy()
    outs = [ucf.augment(img, np.random.default_rng(s), resolution=64) for s in range(8)]
    assert np.array_equal(img, before)
    assert all(o.shape == (64, 64, 3) and o.dtype == np.uint8 for o in outs)
    assert np.array_equal(outs[0], ucf.augment(img, np.random.default_rng(0), resolution=64))
    assert len({o.tobytes() for o in outs}) > 4                             # different draws, different images
    # isotropic resize to the working resolution (longest side), as DeepfakeBench's IsotropicResize
    assert ucf.augment(np.zeros((32, 32, 3), np.uint8), np.random.default_rng(0), resolution=64).shape == (64, 64, 3)
    with pytest.raises(ValueError, match="uint8 RGB"):
        ucf.augment(img[..., 0], np.random.default_rng(0))


def test_to_tensor_range():
    t = ucf.to_tensor(np.array([[[0, 255, 128]]], np.uint8))
    assert t.shape == (1, 3, 1, 1)
    assert t.flatten().tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1], abs=1e-6)


def test_pair_epoch():
    reals, fakes = ucf.pair_epoch(3, 10, np.random.default_rng(0))
    assert sorted(fakes.tolist()) == list(range(10))                        # every fake once
    assert reals.shape == (10,) and reals.min() >= 0 and reals.max() < 3
    with pytest.raises(ValueError, match="at least one real"):
        ucf.pair_epoch(0, 10, np.random.default_rng(0))


def test_specific_labels():
    labels, names = ucf.specific_labels(["real", "FaceSwap", "Deepfakes", "real"])
    assert names == ("real", "Deepfakes", "FaceSwap") and labels.tolist() == [0, 2, 1, 0]
    with pytest.raises(ValueError, match="Unknown|not in"):
        ucf.specific_labels(["real", "NeuralTextures"], order=["Deepfakes"])


def _arrays(n: int, level: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(level, 30, (n, 32, 32, 3)), 0, 255).astype(np.uint8)


def test_pair_dataset_with_train_fit_is_reproducible():
    from dfbook import train

    torch.set_num_threads(1)
    real, fake = _arrays(6, 90, 0), _arrays(8, 160, 1)
    spe = np.arange(8) % 4 + 1
    ds = ucf.PairDataset(real, fake, spe, noise_sigma=15.0)
    x_real, x_fake, s = ds[0]
    assert x_real.shape == x_fake.shape == (3, 32, 32) and int(s) == 1
    assert -1 <= float(x_real.min()) and float(x_real.max()) <= 1
    val_x = ucf.to_tensor(np.concatenate([real, fake]))
    val_y = torch.cat([torch.zeros(6), torch.ones(8)]).long()

    def run():
        model = tiny_model()
        cfg = train.TrainConfig(epochs=2, batch_size=4, optimizer="adam", lr=2e-3, weight_decay=5e-4,
                                monitor="val_auc", seed=0)
        hist = train.fit(model, ds, config=cfg, loss_fn=ucf.loss_fn, val=(val_x, val_y), progress=False)
        return hist, train.predict(model, val_x)

    (h1, p1), (h2, p2) = run(), run()
    for col in ("train_loss", "train_common", "train_specific", "train_reconstruction", "train_contrastive",
                "val_loss", "val_common", "val_auc"):
        assert col in h1 and np.isfinite(h1[col]).all(), col
    pd_testing = pytest.importorskip("pandas.testing")
    pd_testing.assert_frame_equal(h1.drop(columns="seconds"), h2.drop(columns="seconds"))
    assert np.array_equal(p1, p2) and p1.shape == (14,)
    with pytest.raises(ValueError, match="method id"):
        ucf.PairDataset(real, fake, np.zeros(8, int))


def test_body_normalisation_is_converted():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    enc = ucf.AdjustedEncoder(nn.Identity(), 4, body_channels=3, body_norm=(mean, std))
    img = torch.rand(1, 3, 2, 2)                                             # [0, 1] pixels
    ucf_input = (img - 0.5) / 0.5                                            # what UCF receives
    expected = (img - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(ucf_input * enc.in_scale + enc.in_shift, expected, atol=1e-5)
    assert "in_scale" not in enc.state_dict()                               # no extra checkpoint keys


def test_sample_frames_even_per_video():
    import pandas as pd

    df = pd.DataFrame({"dataset": "d", "method": "real", "video_id": np.repeat(["a", "b"], [16, 3]),
                       "frame": np.r_[np.arange(16)[::-1], np.arange(3)]})
    out = ucf.sample_frames(df, 4)
    assert sorted(out.loc[out["video_id"] == "a", "frame"]) == [0, 4, 8, 12]
    assert sorted(out.loc[out["video_id"] == "b", "frame"]) == [0, 1, 2]       # short video kept whole


def test_selection_table_corrected_vs_best_on_test():
    y = np.array([0, 0, 1, 1])
    per_epoch = {"cross": [np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.4, 0.3, 0.2, 0.1]),
                           np.array([0.3, 0.1, 0.2, 0.4])]}
    t = ucf.selection_table(per_epoch, {"cross": y}, val_epoch=2)
    row = t.iloc[0]
    assert row["corrected_auc"] == 0.0 and row["corrected_epoch"] == 2
    assert row["best_on_test_auc"] == 1.0 and row["best_on_test_epoch"] == 1
    assert row["optimism"] == 1.0


def test_read_tensorboard(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path)) as w:
        for step in range(3):
            w.add_scalar("epoch/val_auc", 0.5 + step / 10, step)
    logged = ucf.read_tensorboard(tmp_path)
    assert logged["value"].round(3).tolist() == [0.5, 0.6, 0.7] and set(logged["tag"]) == {"epoch/val_auc"}
    with pytest.raises(FileNotFoundError, match="no TensorBoard scalars"):
        ucf.read_tensorboard(tmp_path / "empty")


# ----------------------------------------------------------------------------------------------- full-profile data
def _aiface_layout(root):
    """A tiny AI-Face v2 release: CSVs + image files, FF++ frames under deepfakes/ff++/, one GAN image."""
    import pandas as pd

    rows = [  # Image Path, Gender (1 male), Age, Skin Tone, Intersection (3 male light, 4 male medium, ...), Target
        ("deepfakes/ff++/original/000/0000.png", 1, 1, 2, 3, 0),
        ("deepfakes/ff++/original/000/0010.png", 1, 1, 2, 3, 0),
        ("deepfakes/ff++/original/000/0020.png", 1, 1, 5, 4, 0),          # one annotator saw medium skin
        ("deepfakes/ff++/Deepfakes/000_003/0000.png", 1, 1, 9, 5, 1),     # the swapped-in face: not identity 000's
        ("deepfakes/ff++/FaceSwap/001_002/0000.png", 0, 0, 9, 2, 1),      # 001: no real frame annotated
        ("GANs/stylegan2/img_000.png", 0, 0, 1, 0, 1),
    ]
    table = pd.DataFrame(rows, columns=["Image Path", "Gender", "Age", "Skin Tone", "Intersection", "Target"])
    for rel in table["Image Path"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")                                     # the join reads CSVs, never pixels
    table.iloc[:4].to_csv(root / "train.csv", index=False)
    table.iloc[4:].to_csv(root / "test.csv", index=False)


def test_full_joins_aiface_demographics_by_identity(tmp_path):
    import pandas as pd

    from dfbook import datasets, fairness

    _aiface_layout(tmp_path / "aiface")
    people = ucf.aiface_identities(datasets.aiface(tmp_path / "aiface", version="v2"))
    p = people.set_index("identity")
    assert list(p.index) == ["ffpp_000", "ffpp_001"]                       # the GAN image is not FF++
    assert p.loc["ffpp_000", "skin_group"] == "light" and p.loc["ffpp_000", "gender"] == "male"
    assert p.loc["ffpp_000", "n_images"] == 3                              # real frames only: the fake is ignored
    assert p.loc["ffpp_000", "agreement"] == pytest.approx(2 / 3)
    assert p.loc["ffpp_001", "skin_group"] == "dark" and p.loc["ffpp_001", "gender"] == "female"
    faces = pd.DataFrame({
        "path": [f"f{i}.png" for i in range(6)], "label": [0, 1, 0, 1, 0, 0], "dataset": "ffpp",
        "method": ["real", "Deepfakes", "real", "FaceSwap", "real", "real"],
        "video_id": ["000", "000_003", "001", "001_002", "002", "id0"], "frame": 0,
        "identity": ["ffpp_000", "ffpp_000", "ffpp_001", "ffpp_001", "ffpp_002", "cdf_id0"],
        "split": "test", "domain": ["ffpp"] * 5 + ["celebdf_v2"]})
    joined = ucf.join_demographics(faces, people, domain="ffpp")
    assert joined["skin_group"].tolist()[:4] == ["light", "light", "dark", "dark"]   # fakes take their target's
    assert joined["skin_group"].iloc[4:].isna().all()                       # unannotated identity, other domain
    assert joined.attrs["demographics"] == {"domain": "ffpp", "rows": 5, "rows_with_demographics": 4,
                                            "identities": 3, "identities_with_demographics": 2}
    assert "skin_group" not in faces                                        # input untouched
    fair = joined[["gender", "skin_group"]].notna().all(axis=1)             # the chapter audits these rows
    result = fairness.audit(joined.loc[fair, "label"], np.array([0.2, 0.9, 0.6, 0.4]),
                            joined.loc[fair, ["gender", "skin_group"]])
    assert set(result.groups["group"]) == {"male", "female", "light", "dark"}
    with pytest.raises(ValueError, match="no AI-Face image under a source folder"):
        ucf.aiface_identities(datasets.aiface(tmp_path / "aiface", version="v2"), source="^dfdc")
    with pytest.raises(ValueError, match="none of the 5 ffpp rows"):
        ucf.join_demographics(faces.assign(identity="x"), people)


def test_full_needs_imagenet_weights(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setenv("DFBOOK_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"IMAGENET_WEIGHTS is empty.*xception-b5690688\.pth"):
        ucf.imagenet_weights("")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ucf.imagenet_weights(tmp_path / "nope.pth")
    # timm's legacy_xception file at the dfbook.backbones location is found and loads (safetensors)
    torch.set_num_threads(1)
    ref = ucf.XceptionEncoder()
    timm_file = tmp_path / "weights" / "timm" / "legacy_xception.tf_in1k.safetensors"
    timm_file.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()
               if not k.startswith(("adjust_channel", "last_linear")) and not k.endswith("num_batches_tracked")},
              str(timm_file))
    assert ucf.imagenet_weights("") == timm_file
    enc = ucf.load_imagenet_xception(ucf.XceptionEncoder(), ucf.imagenet_weights(""))
    assert torch.equal(enc.conv4.pointwise.weight, ref.conv4.pointwise.weight)
    cadene = tmp_path / "weights" / "xception-b5690688.pth"
    cadene.write_bytes(b"")
    assert ucf.imagenet_weights("") == cadene                              # DeepfakeBench's own file comes first


# ----------------------------------------------------------------------------------------------- streaming
def _write_frames(folder, n: int, size: int = 40) -> list:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = np.clip(rng.normal(90 if i % 2 == 0 else 160, 40, (size, size, 3)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i}.png"), img)
        out.append(folder / f"{i}.png")
    return out


def test_streamed_frames_equal_in_memory(tmp_path):
    from dfbook import imageio, train

    torch.set_num_threads(1)
    paths = _write_frames(tmp_path, 12)
    labels = np.arange(12) % 2                                              # odd frames are the (brighter) fakes
    memory = imageio.load_images([str(p) for p in paths], size=32)[0]
    files = ucf.ImageFiles(paths, 32)
    assert files.shape == memory.shape and np.array_equal(np.asarray(files), memory)
    assert np.array_equal(files[3], memory[3])
    assert np.array_equal(np.asarray(files[labels == 1]), memory[labels == 1])
    assert np.array_equal(np.asarray(files[np.array([5, 0])]), memory[[5, 0]])

    def pairs(imgs):   # augmentation on: the DeepfakeBench path
        return ucf.PairDataset(imgs[labels == 0], imgs[labels == 1], np.arange(6) % 4 + 1, train_augment=True,
                               resolution=32)

    for i in range(3):
        torch.manual_seed(i)
        a = pairs(memory)[i]
        torch.manual_seed(i)
        b = pairs(files)[i]
        assert all(torch.equal(u, v) for u, v in zip(a, b))

    mem_eval, disk_eval = ucf.eval_set(memory, labels), ucf.eval_set(files, labels, batch_size=5, num_workers=1)
    assert isinstance(mem_eval, tuple) and isinstance(disk_eval, torch.utils.data.DataLoader)

    def run(imgs, evalset):
        model = tiny_model()
        cfg = train.TrainConfig(epochs=2, batch_size=3, optimizer="adam", lr=2e-3, monitor="val_auc",
                                restore_best=True, seed=0)
        hist, scores = ucf.train_tracked(model, pairs(imgs), evalset, {"test": evalset}, config=cfg)
        return hist.drop(columns="seconds"), scores["test"], train.predict(model, evalset)

    (h1, s1, p1), (h2, s2, p2) = run(memory, mem_eval), run(files, disk_eval)
    import pandas.testing as pdt

    pdt.assert_frame_equal(h1, h2)
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(s1, s2)) and np.allclose(p1, p2, atol=1e-6)
    emb_mem, emb_disk = ucf.embed(tiny_model(), memory, batch_size=5), ucf.embed(tiny_model(), files, batch_size=5)
    assert emb_mem["common"].shape == (12, 16) and np.allclose(emb_mem["common"], emb_disk["common"], atol=1e-6)


# ----------------------------------------------------------------------------------------------- chapter workflow
def _faces_manifest():
    """Two domains: ffpp (train/val/test by identity, 4-frame videos, a swap donor in its target's split) and a
    cross domain with test videos only."""
    import pandas as pd

    rows = []
    for split, ids in (("train", ["a", "b"]), ("val", ["c", "d"]), ("test", ["e", "f"])):
        for k, ident in enumerate(ids):
            donor = ids[1 - k]
            for label, method, vid, src in ((0, "real", ident, ""), (1, "DF", f"{ident}_{donor}", donor)):
                rows += [dict(path=f"{vid}/{method}/{f}.png", label=label, dataset="ffpp", method=method, video_id=vid,
                              frame=f, identity=ident, source_identity=src, split=split, domain="ffpp")
                         for f in range(4)]
    for label, vid in ((0, "r1"), (1, "f1"), (0, "r2"), (1, "f2")):
        rows += [dict(path=f"cdf/{vid}/{f}.png", label=label, dataset="celebdf_v2", method=["real", "cdf"][label],
                      video_id=vid, frame=f, identity=f"p{vid}", source_identity="", split="test",
                      domain="celebdf_v2") for f in range(4)]
    return pd.DataFrame(rows)


def test_protocol_parts_frames_and_errors():
    from dfbook import manifest

    df = _faces_manifest()
    parts = ucf.protocol(df, train_domain="ffpp", test_domains=["celebdf_v2"], train_frames=2, test_frames=3)
    assert list(parts) == ["train", "val", "test", "celebdf_v2"]
    assert (parts["train"].groupby("video_id").size() == 2).all()            # train_frames per video
    assert (parts["test"].groupby("video_id").size() == 3).all()
    assert (parts["celebdf_v2"].groupby("video_id").size() == 3).all()
    assert set(parts["celebdf_v2"]["domain"]) == {"celebdf_v2"} and set(parts["test"]["domain"]) == {"ffpp"}
    assert {s: set(parts[s]["identity"]) for s in ("train", "val", "test")} == {
        "train": {"a", "b"}, "val": {"c", "d"}, "test": {"e", "f"}}
    with pytest.raises(ValueError, match="one-class"):
        ucf.protocol(df[~((df["domain"] == "celebdf_v2") & (df["label"] == 1))], test_domains=["celebdf_v2"])
    with pytest.raises(ValueError, match="'dfdc' is empty"):
        ucf.protocol(df, test_domains=["dfdc"])
    leaky = df.copy()
    leaky.loc[(leaky["identity"] == "e") & (leaky["method"] == "real"), "split"] = "train"   # e in train and test
    with pytest.raises(manifest.ManifestError):
        ucf.protocol(leaky, test_domains=["celebdf_v2"])


def test_evaluate_frame_and_video_metrics():
    import pandas as pd
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    n_videos, per = 30, 4
    y_vid = np.arange(n_videos) % 2
    df = pd.DataFrame({"dataset": "d", "method": np.where(np.repeat(y_vid, per) == 1, "fake", "real"),
                       "video_id": np.repeat([f"v{i}" for i in range(n_videos)], per),
                       "label": np.repeat(y_vid, per)})
    s = np.clip(0.35 + 0.3 * df["label"].to_numpy() + rng.normal(0, 0.25, len(df)), 0, 1)
    ev = ucf.evaluate(df, s, n_boot=200, seed=3)
    assert ev["frame_auc"] == pytest.approx(roc_auc_score(df["label"], s))
    assert ev["frame_ap"] == pytest.approx(average_precision_score(df["label"], s))
    assert ev["frame_acc"] == pytest.approx(np.mean((s >= 0.5) == df["label"]))
    video = pd.DataFrame({"y": df["label"], "s": s, "v": df["video_id"]}).groupby("v").mean()
    assert ev["video_auc"] == pytest.approx(roc_auc_score(video["y"], video["s"]))
    assert ev["n_frames"] == 120 and ev["n_videos"] == 30
    for key in ("frame_auc", "video_auc", "frame_ap", "frame_eer", "frame_acc", "frame_balanced_acc"):
        lo, hi = ev[f"{key}_ci"]
        assert 0 <= lo <= hi <= 1, key
        assert lo <= ev[key] <= hi, key                                     # a smooth statistic: inside its CI
    assert ev["video_auc_ci"][1] - ev["video_auc_ci"][0] > 0.01           # 30 videos: a real interval
    again = ucf.evaluate(df, s, n_boot=200, seed=3)
    assert all(np.array_equal(np.asarray(again[k]), np.asarray(v)) for k, v in ev.items())
    assert s.flags.writeable and df["label"].tolist() == np.repeat(y_vid, per).tolist()


def test_train_tracked_scores_every_epoch_and_restores_best(tmp_path):
    from dfbook import train

    torch.set_num_threads(1)
    real, fake = _arrays(8, 90, 0), _arrays(8, 160, 1)
    pairs = ucf.PairDataset(real, fake, np.arange(8) % 4 + 1, train_augment=False)
    val = (ucf.to_tensor(np.concatenate([real[:4], fake[:4]])), torch.tensor([0] * 4 + [1] * 4))
    test = (ucf.to_tensor(np.concatenate([real[4:], fake[4:]])), torch.tensor([0] * 4 + [1] * 4))
    model = tiny_model()
    cfg = train.TrainConfig(epochs=3, batch_size=4, optimizer="adam", lr=2e-3, monitor="val_auc",
                            restore_best=True, seed=0)
    hist, scores = ucf.train_tracked(model, pairs, val, {"test": test}, config=cfg, log_dir=tmp_path / "tb")
    assert len(hist) == 3 and hist["best"].sum() == 1 and len(scores["test"]) == 3
    assert all(s.shape == (8,) and ((s >= 0) & (s <= 1)).all() for s in scores["test"])
    best = int(hist.loc[hist["best"], "epoch"].iloc[0])
    # the model ends at the validation-selected epoch: its scores are that epoch's tracked scores
    np.testing.assert_allclose(train.predict(model, test), scores["test"][best - 1], atol=1e-6)
    table = ucf.selection_table(scores, {"test": test[1].numpy()}, best)
    assert table.loc[0, "best_on_test_auc"] >= table.loc[0, "corrected_auc"]
    logged = ucf.read_tensorboard(tmp_path / "tb")
    assert {"epoch/val_auc", "step/train_loss"} <= set(logged["tag"])
