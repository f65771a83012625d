"""DeepFakeDefenders: the released-weights format, EMA bake-in, preprocessing as infer.py, prediction,
face cropping, and the re-implemented training pieces. Tiny timm substitutes (``test_convnext``,
``test_efficientnet``: the same ConvNeXt / EfficientNet classes and heads as the real experts) keep
the file layout identical to the release while the tests stay fast."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dfbook import runtime
from dfbook.methods import defenders as d

# Same composition as the release (2 ConvNeXt + 5 EfficientNet experts), tiny widths.
TINY = ("test_convnext",) * 2 + ("test_efficientnet",) * 5
SIZE = 64


@pytest.fixture(autouse=True)
def _one_thread():
    with runtime.single_thread():
        yield


def _release_like(tmp_path, *, as_list=False, seed=0):
    """Write weight.pth + ema.state exactly as network.py's MFF_MoE.save does, with shadows that
    differ from the raw weights and non-trivial BatchNorm statistics. Returns (dir, raw state, shadows)."""
    torch.manual_seed(seed)
    experts = d.build(TINY).experts
    for name, buf in experts.named_buffers():
        if name.endswith("running_mean"):
            buf.normal_(0, 0.1)
        elif name.endswith("running_var"):
            buf.uniform_(0.5, 1.5)
    weights = experts.state_dict()
    shadows = [[p.detach() + 0.05 * torch.randn_like(p) for p in e.parameters()] for e in experts]
    states = [{"decay": 0.995, "num_updates": 1000 + i, "shadow_params": s, "collected_params": None}
              for i, s in enumerate(shadows)]
    torch.save(weights, tmp_path / "weight.pth")
    torch.save(states if as_list else dict(enumerate(states)), tmp_path / "ema.state")
    return tmp_path, weights, shadows


def _reference(weights, shadows):
    """The EMA model built independently: state_dict with each parameter entry replaced by its
    shadow (matched by name order), loaded into fresh experts."""
    model = d.build(TINY)
    state = dict(weights)
    for i, expert in enumerate(model.experts):
        for (name, _), s in zip(expert.named_parameters(), shadows[i]):
            state[f"{i}.{name}"] = s
    model.experts.load_state_dict(state)
    return model.eval()


@pytest.mark.parametrize("as_list", [False, True])
def test_load_released_bakes_ema(tmp_path, as_list):
    wdir, weights, shadows = _release_like(tmp_path, as_list=as_list)
    model = d.load_released(wdir, TINY)
    assert not model.training
    for i, expert in enumerate(model.experts):
        for p, s in zip(expert.parameters(), shadows[i]):
            assert torch.equal(p, s)
    buffers = dict(model.experts.named_buffers())
    assert all(torch.equal(buffers[k], weights[k]) for k in buffers)  # BN statistics from weight.pth
    assert [info["num_updates"] for info in model.ema_info] == [1000 + i for i in range(7)]

    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours = model(x)
        ref = _reference(weights, shadows)(x)
        raw = d.load_released(wdir, TINY, use_ema=False)(x)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    assert ours.shape == (2,) and ((ours >= 0) & (ours <= 1)).all()
    assert (ours - raw).abs().max() > 1e-4  # the EMA weights really are used


def test_forward_is_mean_of_expert_softmax(tmp_path):
    model = d.build(TINY).eval()
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.inference_mode():
        manual = torch.stack([F.softmax(e(x)[0], 1)[:, 1] for e in model.experts], 1).mean(1)
        torch.testing.assert_close(model(x), manual)
        logits, feat = model.experts[0](x)
    assert logits.shape == (3, 2) and feat.ndim == 2 and feat.shape[0] == 3


def test_save_released_round_trip(tmp_path):
    model = d.build(TINY)
    ema = d.build(TINY).experts  # stands in for the EMA copies of the experts
    d.save_released(model, tmp_path, ema_models=list(ema), num_updates=[5] * 7)
    loaded = d.load_released(tmp_path, TINY)
    for a, b in zip(loaded.parameters(), ema.parameters()):
        assert torch.equal(a, b)


def test_missing_files_and_mismatches_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="HighwayWu/DeepFakeDefenders"):
        d.load_released(tmp_path / "nowhere", TINY)
    wdir, weights, shadows = _release_like(tmp_path)
    with pytest.raises(ValueError, match="keys do not match"):
        d.load_released(wdir, ("test_efficientnet",) * 7)
    states = torch.load(wdir / "ema.state", weights_only=True)
    states[3]["shadow_params"] = states[3]["shadow_params"][:-1]
    torch.save(states, wdir / "ema.state")
    with pytest.raises(ValueError, match="expert 3 .*shadow tensors"):
        d.load_released(wdir, TINY)
    del states[3]
    torch.save(states, wdir / "ema.state")
    with pytest.raises(ValueError, match="no EMA state for expert 3"):
        d.load_released(wdir, TINY)


def test_preprocess_matches_infer_py():
    from torchvision import transforms

    rgb = np.random.default_rng(0).integers(0, 256, (90, 70, 3), dtype=np.uint8)
    original = transforms.Compose([  # infer.py, verbatim
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        transforms.Resize((512, 512), antialias=True),
    ])(Image.fromarray(rgb))
    ours = d.preprocess(rgb)
    assert ours.shape == (3, 512, 512) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, original, rtol=0, atol=0)
    with pytest.raises(ValueError, match="uint8 RGB"):
        d.preprocess(rgb.astype(np.float32))


def test_centre_crop_box_square_inside_and_centred():
    x0, y0, x1, y1 = d.centre_crop_box((40, 50, 20, 30), (200, 300, 3), scale=1.3)
    assert x1 - x0 == y1 - y0 == 39
    assert abs((x0 + x1) / 2 - 50) <= 1 and abs((y0 + y1) / 2 - 65) <= 1
    x0, y0, x1, y1 = d.centre_crop_box((0, 0, 30, 30), (100, 60, 3), scale=3.0)  # too big, at the corner
    assert (x0, y0) == (0, 0) and x1 - x0 == y1 - y0 == 60


def _write_images(folder):
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i, (h, w) in enumerate([(40, 40), (64, 48), (30, 90)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_predict_folder(tmp_path):
    folder = _write_images(tmp_path / "imgs")
    model = d.build(TINY).eval()
    table = d.predict(folder, model, size=SIZE, batch_size=2, progress=False)
    assert [p.rsplit("/", 1)[-1] for p in table["path"]] == ["im0.png", "im1.png", "im2.png"]
    experts = table[[f"p_{i}" for i in range(7)]].to_numpy()
    np.testing.assert_allclose(table["score"], experts.mean(1), rtol=1e-6)
    assert table["score"].between(0, 1).all()
    single = d.predict(folder / "im1.png", model, size=SIZE, progress=False)
    assert single["score"].iloc[0] == pytest.approx(table["score"].iloc[1], abs=1e-5)  # batching changes nothing
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        d.predict(tmp_path / "empty", model)


@pytest.mark.parametrize("detector", ["haar", "mtcnn"])
def test_face_crop_finds_the_astronaut_and_flags_noise(tmp_path, detector):
    from skimage import data

    folder = tmp_path / "faces"
    folder.mkdir()
    Image.fromarray(data.astronaut()).save(folder / "a_astronaut.png")
    Image.fromarray(np.full((128, 128, 3), 127, np.uint8)).save(folder / "b_grey.png")
    box = d.face_detector(detector)(data.astronaut())
    assert box is not None and 150 < box[0] + box[2] / 2 < 260 and 60 < box[1] + box[3] / 2 < 180
    table = d.predict(folder, d.build(TINY[:1]).eval(), face_crop=detector, size=SIZE, progress=False)
    assert table["face_found"].tolist() == [True, False]
    assert table["score"].notna().all()  # the face-less image is scored whole, not dropped


def test_main_prints_infer_py_lines(tmp_path, monkeypatch, capsys):
    folder = _write_images(tmp_path / "imgs")
    wdir, _, _ = _release_like(tmp_path)
    monkeypatch.setattr(d, "load_released", lambda w, **kw: d.build(TINY).eval() if w == wdir else None)
    out_csv = tmp_path / "out" / "scores.csv"
    assert d.main([str(folder), "--weights", str(wdir), "--out", str(out_csv)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("Prediction of [")]
    assert len(lines) == 3 and lines[0].endswith(tuple("0123456789"))
    assert len(pd.read_csv(out_csv)) == 3
    with pytest.raises(SystemExit):
        d.main([str(folder)])  # --weights missing
    from dfbook import cli  # the same through `dfbook predict-defenders`

    assert cli.main(["predict-defenders", str(folder / "im0.png"), "--weights", str(wdir)]) == 0
    assert sum(ln.startswith("Prediction of [") for ln in capsys.readouterr().out.splitlines()) == 1


def test_main_keeps_scores_and_names_an_unreadable_image(tmp_path, monkeypatch, capsys):
    folder = _write_images(tmp_path / "imgs")
    (folder / "im1_broken.png").write_bytes(b"\x89PNG not really")  # sorted between im1 and im2
    wdir, _, _ = _release_like(tmp_path)
    monkeypatch.setattr(d, "load_released", lambda w, **kw: d.build(TINY).eval())
    out_csv = tmp_path / "out" / "scores.csv"
    args = [str(folder), "--weights", str(wdir), "--out", str(out_csv)]
    assert d.main(args) == 2  # strict: stops at the bad file, in one line, without a traceback
    stderr = capsys.readouterr().err
    err = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("defenders:")]  # not the bar
    assert len(err) == 1 and "im1_broken.png cannot be decoded" in err[0] and "--lenient" in err[0]
    assert "Traceback" not in stderr and "scores.partial.csv" in err[0] and not out_csv.exists()
    assert len(pd.read_csv(tmp_path / "out" / "scores.partial.csv")) == 2  # im0, im1: scored before it
    assert d.main(["--lenient", *args]) == 0  # an option before the positional works too
    captured = capsys.readouterr()
    assert sum(ln.startswith("Prediction of [") for ln in captured.out.splitlines()) == 3
    assert len(pd.read_csv(out_csv)) == 3 and not (tmp_path / "out" / "scores.partial.csv").exists()
    skipped = pd.read_csv(tmp_path / "out" / "scores.skipped.csv")
    assert skipped["path"].tolist() == [str(folder / "im1_broken.png")] and "skipped 1 unreadable" in captured.err


@pytest.mark.parametrize("where", ["path", "weights"])
def test_main_missing_path_or_weights_is_one_line(tmp_path, capsys, where):
    folder = _write_images(tmp_path / "imgs")
    path, weights = (tmp_path / "nowhere", tmp_path) if where == "path" else (folder, tmp_path / "no_weights")
    assert d.main([str(path), "--weights", str(weights)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("nowhere: no such image or folder" if where == "path" else "weight.pth not found") in err[0]


def test_dry_run_tiny():
    table = d.dry_run(TINY[1:3], size=SIZE, batch_size=2)
    assert table["logits_shape"].tolist() == [(2, 2), (2, 2)]
    assert table["feat_shape"].iloc[1][0] == 2 and (table["params"] > 0).all()


# -- training pieces [inferred] -------------------------------------------------------------------
def test_cluster_splits_recovers_blobs_and_keeps_groups_whole():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    truth = np.repeat(np.arange(3), 40)
    feats = centres[truth] + rng.normal(size=(120, 16)) * 0.3
    cluster, splits = d.cluster_splits(feats, 3, seed=0)
    assert len(splits) == 3
    assert pd.crosstab(truth, cluster).gt(0).sum(axis=1).eq(1).all()  # each blob in one cluster
    for train, val in splits:
        assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 120
    again, _ = d.cluster_splits(feats, 3, seed=0)
    np.testing.assert_array_equal(cluster, again)

    groups = np.arange(120) // 4 + (np.arange(120) % 2) * 100  # groups mixing frames of different blobs
    gcl, _ = d.cluster_splits(feats, 3, groups=groups, seed=0)
    assert pd.Series(gcl).groupby(groups).nunique().eq(1).all()
    with pytest.raises(ValueError, match="cannot make 200 clusters"):
        d.cluster_splits(feats, 200)


def _supcon_loop(z, y, t):
    """Khosla et al. Eq. 2, written as loops."""
    z = F.normalize(z, dim=1)
    total, anchors = 0.0, 0
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        pos = [p for p in others if y[p] == y[i]]
        if not pos:
            continue
        denom = sum(math.exp(float(z[i] @ z[a]) / t) for a in others)
        total += -sum(float(z[i] @ z[p]) / t - math.log(denom) for p in pos) / len(pos)
        anchors += 1
    return total / anchors


def test_supcon_matches_definition_and_prefers_separated_classes():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(10, 8, generator=g), torch.tensor([0, 1] * 4 + [0, 2])
    assert float(d.supcon_loss(z, y, 0.5)) == pytest.approx(_supcon_loop(z, y, 0.5), rel=1e-5)
    y2 = torch.tensor([0] * 5 + [1] * 5)
    separated = torch.cat([torch.ones(5, 8), -torch.ones(5, 8)]) + 0.01 * torch.randn(10, 8, generator=g)
    assert d.supcon_loss(separated, y2) < d.supcon_loss(torch.randn(10, 8, generator=g), y2)
    assert float(d.supcon_loss(z[:3], torch.tensor([0, 1, 2]))) == 0.0  # no positives: no signal


def test_noise_kl():
    assert float(d.noise_kl_loss(torch.zeros(4, 2))) == pytest.approx(0.0, abs=1e-7)
    p = torch.tensor([0.9, 0.1])
    expected = float((p * (p / 0.5).log()).sum())
    assert float(d.noise_kl_loss(p.log()[None])) == pytest.approx(expected, rel=1e-5)


def test_expert_losses_backprop():
    expert = d.build_expert("test_efficientnet")
    x, y = torch.randn(4, 3, SIZE, SIZE), torch.tensor([0, 1, 0, 1])
    losses = d.expert_losses(expert, (x, y), noise_batch=2)
    assert set(losses) == {"loss", "ce", "nce", "kl"} and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert expert.baseline_extractor.get_classifier().weight.grad.abs().sum() > 0


def test_expert_trains_with_dfbook_fit_and_ema(tmp_path):
    """The losses plug into dfbook.train.fit (EMA 0.995 with torch-ema warm-up), and the result loads
    back through the released format."""
    import functools

    from dfbook import train

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32, generator=g), torch.tensor([0, 1] * 8)
    x[y == 1] += 0.5
    model = d.MixtureOfExperts([d.build_expert("test_efficientnet")])
    cfg = train.TrainConfig(epochs=2, batch_size=8, lr=1e-2, ema_decay=d.EMA_DECAY, seed=0)
    hist = train.fit(model.experts[0], (x, y), val=(x, y), config=cfg, progress=False,
                     loss_fn=functools.partial(d.expert_losses, noise_batch=2))
    assert {"train_ce", "train_nce", "train_kl", "val_auc"} <= set(hist.columns)
    assert np.isfinite(hist[["train_ce", "train_nce", "train_kl"]].to_numpy()).all()
    d.save_released(model, tmp_path, num_updates=[4])
    loaded = d.load_released(tmp_path, ("test_efficientnet",))
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model.eval()(x))


# -- chapter helpers ---------------------------------------------------------------------------------
def _frames(dataset, domain, method, n_videos, n_frames, split, label, start=0):
    return pd.DataFrame([{"path": f"{dataset}/{method}/{split}/{v}/{f}.png", "label": label, "dataset": dataset,
                          "domain": domain, "method": method, "video_id": f"{split}{v}", "frame": f,
                          "identity": f"{dataset}-{split}-{v}", "split": split}
                         for v in range(start, start + n_videos) for f in range(n_frames)])


def test_thin_frames_evenly_spaced():
    df = _frames("ffpp", "ffpp", "real", 2, 16, "train", 0)
    out = d._thin_frames(df, 4)
    assert out.groupby("video_id")["frame"].apply(list).tolist() == [[0, 4, 8, 12]] * 2
    assert len(d._thin_frames(df, 32)) == 32  # asking for more frames than exist keeps them all


def test_chapter_sets_disjoint_and_two_classed():
    faces = pd.concat([_frames("ffpp", "ffpp", m, 3, 8, s, int(m != "real"))
                       for m in ("real", "Deepfakes", "Face2Face") for s in ("train", "val", "test")]
                      + [_frames("celebdf_v2", "celebdf_v2", m, 2, 8, "test", int(m != "real"))
                         for m in ("real", "Celeb-synthesis")])
    images = pd.concat([_frames("mini_gen", "mini_gen", m, 10, 1, s, int(m != "real"))
                        for m in ("real", "progan", "adm") for s in ("train", "val", "test")]
                       + [_frames("mini_pretrain", "mini_pretrain", "real", 5, 1, "train", 0)])
    sets = d.chapter_sets(faces, images, seen_manipulations=["Deepfakes"], unseen_manipulations=["Face2Face"],
                          seen_generators=["progan"], unseen_generators=["adm"], cross_domains=["celebdf_v2"],
                          pool_frames=2, test_frames=4, max_per_method=6, seed=0)
    assert set(sets) == {"pool", "seen", "unseen_manipulations", "unseen_generators", "cross_dataset"}
    pool = sets["pool"]
    assert set(pool["split"]) == {"train", "val"} and "mini_pretrain" not in set(pool["dataset"])
    assert pool[pool["dataset"] == "ffpp"].groupby(["method", "video_id"]).size().eq(2).all()
    assert pool[pool["dataset"] == "mini_gen"].groupby(["method", "split"]).size().le(6).all()
    assert set(sets["unseen_generators"]["method"]) == {"real", "adm"}
    assert all(df["label"].nunique() == 2 for df in sets.values())
    with pytest.raises(ValueError, match="one class only"):
        d.chapter_sets(faces, images, seen_manipulations=["Deepfakes"], unseen_manipulations=["NoSuchMethod"],
                       seen_generators=["progan"], unseen_generators=["adm"])


def test_seen_generators_must_be_in_the_pool_and_the_full_parameters_are():
    """CNNDetection's layout: ProGAN in train/val/test, every other GAN in test only. A "seen" generator without
    train/val rows would be seen in name only; the shipped full parameters must respect that."""
    import yaml

    from dfbook import paths

    full = yaml.safe_load((paths.notebooks_dir() / "params" / "defenders.full.yaml").read_text())
    others = [g for g in full["SEEN_GENERATORS"] + full["UNSEEN_GENERATORS"] if g != "progan"]
    faces = pd.concat([_frames("ffpp", "ffpp", m, 3, 4, s, int(m != "real"))
                       for m in ("real", "Deepfakes", "Face2Face") for s in ("train", "val", "test")])
    images = pd.concat([_frames("cnndetection", "cnndetection", m, 4, 1, s, int(m != "real"))
                        for m in ("real", "progan") for s in ("train", "val", "test")]
                       + [_frames("cnndetection", "cnndetection", g, 4, 1, "test", 1) for g in others])
    kw = dict(seen_manipulations=["Deepfakes"], unseen_manipulations=["Face2Face"])
    sets = d.chapter_sets(faces, images, seen_generators=full["SEEN_GENERATORS"],
                          unseen_generators=full["UNSEEN_GENERATORS"], **kw)
    assert set(full["SEEN_GENERATORS"]) <= set(sets["pool"]["method"])
    assert set(sets["unseen_generators"]["method"]) == {"real", *full["UNSEEN_GENERATORS"]}
    with pytest.raises(ValueError, match=r"seen generator\(s\) \['stylegan2'\] have no train/val rows"):
        d.chapter_sets(faces, images, seen_generators=["progan", "stylegan2"], unseen_generators=["biggan"], **kw)


def test_load_inputs_normalises(tmp_path):
    folder = _write_images(tmp_path / "imgs")
    df = pd.DataFrame({"path": sorted(str(p) for p in folder.glob("*.png")), "label": [0, 1, 1]})
    x, y = d.load_inputs(df, size=32)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32 and y.tolist() == [0, 1, 1]
    assert -2.2 < float(x.min()) < 0 < float(x.max()) < 2.7  # ImageNet-normalised range


def test_streamed_inputs_train_and_score_like_in_memory(tmp_path, write_pngs):
    """InputFiles (full) reads the same pixels as load_inputs (mini); train_experts and expert_scores give the
    same experts, history and scores on either."""
    paths = write_pngs(tmp_path / "imgs", 24, size=40)
    df = pd.DataFrame({"path": paths, "label": [0, 1] * 12})
    memory, streamed = d.inputs(df, size=32), d.inputs(df, size=32, stream=True)
    assert isinstance(streamed, d.InputFiles) and len(streamed) == 24
    torch.testing.assert_close(torch.stack([streamed[i][0] for i in range(24)]), memory[0])
    assert [int(streamed[i][1]) for i in range(24)] == memory[1].tolist()

    from dfbook import train

    specs = {"a": ("mini:resnet", np.arange(16), np.arange(16, 24))}
    cfg = train.TrainConfig(epochs=2, batch_size=8, lr=1e-2, ema_decay=d.EMA_DECAY, seed=0)
    runs = [d.train_experts(specs, data, config=cfg, noise_batch=2, pretrained=False) for data in (memory, streamed)]
    pd.testing.assert_frame_equal(runs[0][1].drop(columns="seconds"), runs[1][1].drop(columns="seconds"))
    scores = [d.expert_scores(experts, data, batch_size=5) for (experts, _), data in zip(runs, (memory, streamed))]
    pd.testing.assert_frame_equal(scores[0], scores[1])
    assert scores[0].shape == (24, 1) and scores[0]["a"].between(0, 1).all()
    pd.testing.assert_frame_equal(d.expert_scores(runs[0][0], memory[0], batch_size=5), scores[0])  # a bare tensor


def test_streamed_inputs_report_missing_files(tmp_path):
    from dfbook import imageio

    with pytest.raises(imageio.ImageReadError, match=r"1 of 1 images are missing or empty.*nowhere\.png"):
        d.inputs(pd.DataFrame({"path": [str(tmp_path / "nowhere.png")], "label": [0]}), size=32, stream=True)


def test_load_corpora_reads_manifests_relative_to_their_folder(tmp_path, monkeypatch, write_pngs):
    monkeypatch.setenv("DFBOOK_DATA", str(tmp_path))
    (tmp_path / "prepared").mkdir()
    paths = write_pngs(tmp_path / "prepared" / "faces", 2, size=16)
    rows = [dict(path=f"faces/{p.rsplit('/', 1)[-1]}", label=i, dataset="ffpp", method=["real", "Deepfakes"][i],
                 video_id=f"v{i}", frame=0, identity=f"p{i}", split="test") for i, p in enumerate(paths)]
    pd.DataFrame(rows).to_csv(tmp_path / "prepared" / "manifest.csv", index=False)
    faces, images = d.load_corpora("prepared/manifest.csv", "prepared/manifest.csv")
    assert faces["path"].tolist() == [str(tmp_path / "prepared" / "faces" / p.rsplit("/", 1)[-1]) for p in paths]
    assert images.equals(faces)
    with pytest.raises(FileNotFoundError):
        d.load_corpora("prepared/absent.csv")


def test_released_scores_join_their_labels(tmp_path):
    scores = pd.DataFrame({"path": [str(tmp_path / "a.png"), str(tmp_path / "sub" / ".." / "b.png"),
                                    str(tmp_path / "c.png")], "score": [0.1, 0.9, 0.5]})
    df = pd.DataFrame({"path": [str(tmp_path / "b.png"), str(tmp_path / "a.png")], "label": [1, 0],
                       "method": ["Deepfakes", "real"]})
    out = d.with_labels(scores, df)
    assert out["label"].tolist()[:2] == [0, 1] and np.isnan(out["label"].iloc[2])  # "sub/../b.png" is b.png
    assert out.attrs["unlabelled"] == 1 and out["method"].iloc[1] == "Deepfakes"


def test_scores_tables_and_agreement():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    scores = pd.DataFrame({"good": np.clip(y * 0.6 + rng.random(100) * 0.5, 0, 1), "random": rng.random(100)})
    table = d.score_table(y, scores, n_boot=50, seed=0).set_index("model")
    assert table.loc["good", "auc"] > 0.9 > table.loc["random", "auc"]
    assert (table["auc_lo"] <= table["auc"]).all() and (table["auc"] <= table["auc_hi"]).all()
    assert table["n_real"].eq(50).all()
    agree = d.agreement(scores)
    assert agree.loc["good", "good"] == 1.0 and 0 < agree.loc["good", "random"] < 1
    motivation = d.motivation_table({"official": 0.99, "cluster_0": 0.8}, table.reset_index().assign(
        model=["official", "cluster_0"])).set_index("model")
    assert motivation.loc["official", "gap"] == pytest.approx(0.99 - table.loc["good", "auc"])
    assert motivation.loc["cluster_0", "validated_on"] == "held-out cluster"


def test_demo_check_reads_expected_from_file_names():
    table = pd.DataFrame({"path": ["x/img_1_should_be_0.0016829653177410.jpg", "x/other.jpg"], "score": [0.0017, 0.5]})
    out = d.demo_check(table)
    assert len(out) == 1 and out["abs_error"].iloc[0] == pytest.approx(abs(0.0017 - 0.0016829653177410))


def test_expert_archs_and_book_backbones():
    assert d.expert_archs(["a", "b"], 5) == ["a", "b", "a", "b", "a"]
    expert = d.build_expert("mini:convnext")  # lib:arch names go through dfbook.backbones (random init here)
    logits, feat = expert(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 2) and feat.shape[0] == 2 and expert.spec["size"] == [64, 64]
