"""Unit tests of dfbook.methods.unsupervised_video (stages 1-4 of the unsupervised video chapter)."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from dfbook import train
from dfbook.methods import unsupervised_video as uv


# ------------------------------------------------------------------------------------------- synthetic face
def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int) -> np.ndarray:
    t = np.linspace(np.pi, -np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy - ry * np.sin(t)], 1)


def _face(eye_open: float = 0.35, mouth_open: float = 0.4, teeth: bool = True, seed: int = 0):
    """A 96x96 grey-ish face with dlib-68-ordered landmarks: eyes 36-47, inner mouth 60-67."""
    rng = np.random.default_rng(seed)
    lm = np.zeros((68, 2), np.float32)
    lm[:17] = _ellipse(48, 50, 36, 40, 17)             # jaw, only for the crop box
    lm[17:36] = np.stack([np.linspace(20, 76, 19), np.full(19, 30.0)], 1)
    for start, cx in ((36, 34), (42, 62)):             # corners at 0 and 3, lids 1-2 top, 4-5 bottom
        pts = _ellipse(cx, 40, 8, 8 * eye_open, 6)
        lm[start:start + 6] = pts
    lm[48:60] = _ellipse(48, 68, 16, 9, 12)
    lm[60:68] = _ellipse(48, 68, 12, 12 * mouth_open / 2, 8)
    img = np.clip(rng.normal(150, 12, (96, 96, 3)), 0, 255).astype(np.uint8)
    mouth = np.rint(lm[60:68]).astype(np.int32)
    cv2.fillConvexPoly(img, mouth, (40, 20, 20))
    if teeth:
        top = mouth[:, 1].min()
        img[top:top + 4, 38:58] = 235
    return img, lm


# ------------------------------------------------------------------------------------------- stage 1
def test_laws_filters_are_outer_products():
    f = uv.laws_filters()
    assert len(f) == 16
    np.testing.assert_array_equal(f["L5E5"], np.outer(uv.LAWS["E5"], uv.LAWS["L5"]))
    np.testing.assert_array_equal(f["L5E5"], f["E5L5"].T)


def test_laws_energy_constant_image_is_zero_and_uint8_wraps():
    flat = np.full((32, 32, 3), 90, np.uint8)
    for faithful in (True, False):
        assert np.abs(uv.laws_energy(flat, faithful_uint8=faithful)).max() == 0
    # a dark dot on a bright background: the uint8 subtraction wraps to ~200, the float one is negative
    dot = np.full((32, 32, 3), 200, np.uint8)
    dot[16, 16] = 0
    e8, e32 = uv.laws_energy(dot, faithful_uint8=True), uv.laws_energy(dot, faithful_uint8=False)
    assert e8.shape == e32.shape == (9, 32, 32)
    assert e8.max() <= 255 and not np.allclose(e8, e32)


def test_open_eyes_and_mouth_thresholds():
    _, lm = _face(eye_open=0.35, mouth_open=0.4)
    assert uv.eyes_open(lm) and uv.mouth_open(lm)
    _, closed = _face(eye_open=0.1, mouth_open=0.4)
    assert not uv.eyes_open(closed)
    _, shut = _face(eye_open=0.35, mouth_open=0.1)
    assert not uv.mouth_open(shut)


def test_vaf_reasons_and_shape():
    img, lm = _face()
    feats, why = uv.vaf(img, lm)
    assert why == "ok" and feats.shape == (18,) and np.isfinite(feats).all()
    assert uv.vaf(*_face(eye_open=0.1))[1] == "eyes_closed"
    assert uv.vaf(*_face(mouth_open=0.1))[1] == "mouth_closed"
    assert uv.vaf(img, np.full((68, 2), np.nan, np.float32))[1] == "no_landmarks"


def test_masked_energy_equals_whole_image_computation():
    img, lm = _face(seed=3)
    big = cv2.resize(img, (256, 256))
    mask = np.zeros((256, 256), bool)
    mask[150:190, 90:170] = True
    for faithful in (True, False):
        whole = np.array([e[mask].mean(dtype=np.float32) for e in uv.laws_energy(big, faithful_uint8=faithful)])
        np.testing.assert_allclose(uv.masked_energy(big, mask, faithful_uint8=faithful), whole, atol=1e-4)


def test_pseudo_labels_video_majority_and_unlabelled_videos():
    rng = np.random.default_rng(0)
    keys = np.repeat(["a", "b", "c"], 4)
    X = np.concatenate([rng.normal(0, 0.1, (4, 18)), rng.normal(5, 0.1, (4, 18)), np.full((4, 18), np.nan)])
    X[0] = 5.0                                    # one outlier frame in video a: the majority still wins
    X[5] = np.nan                                 # a dropped frame in video b still gets b's label
    out = uv.pseudo_labels(X.astype(np.float32), keys, seed=0)
    assert (out["pseudo"][:4] == out["cluster"][1]).all()
    assert (out["pseudo"][4:8] == out["cluster"][4]).all() and out["cluster"][5] == -1
    assert (out["pseudo"][8:] == -1).all()
    assert out["pseudo"][0] != out["pseudo"][4]
    with pytest.raises(ValueError, match="2-means"):
        uv.pseudo_labels(np.full((3, 18), np.nan, np.float32), keys[:3])


def test_purity_is_naming_invariant():
    truth = np.array([0, 0, 1, 1, 1, 1])
    assert uv.purity(1 - truth, truth) == 1.0 == uv.purity(truth, truth)
    assert uv.balanced_purity(np.ones(6, int), truth) == 0.5 < uv.purity(np.ones(6, int), truth)


def test_dlib_landmarks_missing_model_says_what_to_download(tmp_path):
    df = pd.DataFrame({"path": [str(tmp_path / "x.png")]})
    with pytest.raises(FileNotFoundError, match="shape_predictor_68_face_landmarks"):
        uv.dlib_landmarks(df, tmp_path / "missing.dat")
    with pytest.raises(FileNotFoundError, match="LANDMARK_MODEL"):
        uv.dlib_landmarks(df, "")


# ------------------------------------------------------------------------------------------- stage 2
def _supcon_reference(features, labels, t=0.07):
    """Khosla et al. eq. 2 written out with loops over anchors."""
    b, v, _ = features.shape
    z = torch.cat([features[:, i] for i in range(v)])
    lab = labels.repeat(v)
    losses = []
    for i in range(len(z)):
        others = [j for j in range(len(z)) if j != i]
        denom = torch.logsumexp(torch.stack([z[i] @ z[j] / t for j in others]), 0)
        pos = [j for j in others if lab[j] == lab[i]]
        losses.append(-torch.stack([z[i] @ z[j] / t - denom for j in pos]).mean())
    return torch.stack(losses).mean()


def test_supcon_matches_reference_and_rewards_aligned_classes():
    g = torch.Generator().manual_seed(0)
    f = nn.functional.normalize(torch.randn(6, 2, 8, generator=g), dim=2)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    torch.testing.assert_close(uv.supcon_loss(f, y), _supcon_reference(f, y), rtol=1e-5, atol=1e-5)
    aligned = nn.functional.normalize(torch.stack([torch.eye(8)[y.long()]] * 2, 1) + 0.01 * f, dim=2)
    assert uv.supcon_loss(aligned, y) < uv.supcon_loss(f, y)
    with pytest.raises(ValueError, match="views"):
        uv.supcon_loss(f[:, :1], y)


def test_augment_per_image_random_range_and_seeded():
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).repeat(4, 1, 1, 1)
    torch.manual_seed(0)
    a = uv.augment(x)
    torch.manual_seed(0)
    b = uv.augment(x)
    assert a.shape == (4, 3, 32, 32) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a[0], a[1])   # one draw per image, not one per batch


def test_select_confident_keeps_fraction_closest_per_cluster():
    rng = np.random.default_rng(0)
    a = rng.normal([1, 0], 0.05, (20, 2))
    b = rng.normal([0, 1], 0.05, (10, 2))
    a[0] = [0.9, 0.45]                         # the least confident member of cluster a
    z = np.concatenate([a, b])
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    rows, labels = uv.select_confident(z, 0.8, seed=0)
    assert len(rows) == 16 + 8 and 0 not in rows
    assert len(set(labels[rows < 20])) == 1 and len(set(labels[rows >= 20])) == 1
    with pytest.raises(ValueError):
        uv.select_confident(z, 0.0)


def test_cycles_follow_the_baseline_schedule():
    assert uv.cycles(6, None) == [(1, 6)]
    assert uv.cycles(6, 2) == [(1, 1), (2, 3), (4, 6)]
    assert uv.cycles(4, 2) == [(1, 1), (2, 4)]
    assert uv.cycles(5, 100) == [(1, 5)]


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.net(x)


def _tiny_setup(n=24):
    torch.manual_seed(0)
    model = uv.ECL(_Tiny(), 4, hidden=8, out_dim=6)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    frames = uv.Frames([f"f{i}.png" for i in range(n)], rng.integers(0, 2, n), 16, images)
    cfg = train.TrainConfig(epochs=4, batch_size=8, optimizer="adam", lr=1e-3, weight_decay=1e-4, ckpt_every=2,
                            seed=0)
    return model, frames, cfg


@pytest.mark.slow
def test_train_encoder_reselects_and_reinitialises(tmp_path):
    model, frames, cfg = _tiny_setup()
    res = uv.train_encoder(model, frames, config=cfg, reselect_every=2, keep=0.5, truth=frames.labels,
                           watch=np.arange(10), ckpt_dir=tmp_path, progress=False)
    assert res.history["epoch"].tolist() == [1, 2, 3, 4] and res.history["cycle"].tolist() == [0, 1, 1, 1]
    assert res.selection["iteration"].tolist() == [0, 1]
    assert res.selection["n"].tolist()[0] == 24 and res.selection["n"].tolist()[1] <= 12
    assert {"purity", "balanced_purity", "fake_fraction"} <= set(res.selection.columns)
    assert sorted(res.snapshots) == [0, 1, 2, 3, 4] and res.snapshots[4].shape == (10, 6)


@pytest.mark.slow
def test_stage2_resume_after_interruption_gives_the_same_result(tmp_path):
    model, frames, cfg = _tiny_setup()
    ref = uv.train_encoder(model, frames, config=cfg, reselect_every=2, keep=0.5, truth=frames.labels,
                           watch=np.arange(10), ckpt_dir=tmp_path / "a", progress=False)
    ref_state = {k: v.clone() for k, v in model.state_dict().items()}

    def interrupt(event, info):
        if event == "epoch" and info["epoch"] == 2:    # 2nd epoch of cycle 1 = global epoch 3, after the ckpt at 2
            raise KeyboardInterrupt

    model, frames, cfg = _tiny_setup()
    with pytest.raises(KeyboardInterrupt):
        uv.train_encoder(model, frames, config=cfg, reselect_every=2, keep=0.5, truth=frames.labels,
                         watch=np.arange(10), ckpt_dir=tmp_path / "b", progress=False, callbacks=[interrupt])
    model, frames, cfg = _tiny_setup()                  # a fresh process: new model, resume from disk
    res = uv.train_encoder(model, frames, config=cfg, reselect_every=2, keep=0.5, truth=frames.labels,
                           watch=np.arange(10), ckpt_dir=tmp_path / "b", progress=False)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ref_state[k], rtol=0, atol=0)
    pd.testing.assert_frame_equal(res.selection, ref.selection)
    np.testing.assert_array_equal(res.history["train_loss"], ref.history["train_loss"])
    for e in ref.snapshots:
        np.testing.assert_array_equal(res.snapshots[e], ref.snapshots[e])


def test_init_weights_is_seeded_and_changes_weights():
    model, _, _ = _tiny_setup()
    before = model.head[0].weight.clone()
    model.init_weights(5)
    w5 = model.head[0].weight.clone()
    model.init_weights(5)
    torch.testing.assert_close(model.head[0].weight, w5)
    assert not torch.allclose(before, w5) and (model.head[0].bias == 0.1).all()


def test_build_ecl_mini_shapes():
    m = uv.build_ecl("mini:convnext", pretrained=False)
    feat, z = m(torch.rand(2, 3, 64, 64))
    assert feat.shape == z.shape == (2, 128)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))
    assert m.features(torch.rand(2, 3, 64, 64)).shape[0] == 2


# ------------------------------------------------------------------------------------------- stage 3
def test_interframe_stats_match_scipy_and_drop_short_videos():
    rng = np.random.default_rng(0)
    feat = rng.normal(size=(9, 16))
    keys = np.array(["v"] * 5 + ["w"] * 4)
    frames = np.array([4, 0, 1, 2, 3, 0, 1, 2, 3])       # video v listed out of order
    stats = uv.interframe_stats(feat, keys, frames, min_pairs=4)
    order = [1, 2, 3, 4, 0]
    expect = np.mean([spearmanr(feat[order[i]], feat[order[i + 1]])[0] for i in range(4)])
    v = stats.set_index("key").loc["v"]
    assert v["spearman"] == pytest.approx(expect) and v["pairs"] == 4 and not v["skipped"]
    dist = np.mean([np.linalg.norm(feat[order[i + 1]] - feat[order[i]]) for i in range(4)])
    assert v["euclidean"] == pytest.approx(dist)
    assert stats.set_index("key").loc["w", "skipped"]


def test_direction_and_transductive_rule():
    rng = np.random.default_rng(0)
    keys = np.repeat([f"v{i}" for i in range(8)], 5)
    group = np.repeat([0, 0, 0, 0, 1, 1, 1, 1], 5)
    feat = rng.normal(0, 0.1, (40, 4)) + group[:, None] * 3
    cons = pd.Series([0.9, 0.8, 0.85, 0.9, 0.2, 0.3, 0.25, 0.1], index=[f"v{i}" for i in range(8)])
    fake_if_consistent = uv.transductive_rule(feat, keys, cons, direction="consistent_is_fake")
    real_if_consistent = uv.transductive_rule(feat, keys, cons, direction="consistent_is_real")
    assert fake_if_consistent["pred"].tolist() == [1] * 4 + [0] * 4
    assert (real_if_consistent["pred"] == 1 - fake_if_consistent["pred"]).all()
    assert uv.fit_direction(np.array([0.9, 0.8, 0.1, 0.2]), np.array([0, 0, 1, 1])) == "consistent_is_real"
    assert uv.fit_direction(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0])) == "consistent_is_fake"
    stats = pd.DataFrame({"spearman": [0.5], "euclidean": [2.0]})
    assert uv.consistency(stats, "euclidean")[0] == -2.0


@pytest.mark.slow
def test_classifier_learns_separable_features_and_orient():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    X = (rng.normal(0, 1, (200, 16)) + y[:, None] * 2.0).astype(np.float32)
    clf = uv.train_classifier(X, y, epochs=10, batch_size=64, lr=3e-3)
    s = train.predict(clf, torch.as_tensor(X))
    assert s.shape == (200,) and uv.orient(s, y) == 1 and uv.orient(-s, y) == -1
    assert ((s >= 0.5) == y).mean() > 0.9


# ------------------------------------------------------------------------------------------- stage 4
def test_evenly_spaced_frames_per_video():
    df = pd.DataFrame({"dataset": "d", "method": "real", "video_id": np.repeat(["a", "b"], [16, 3]),
                       "frame": np.r_[np.arange(16)[::-1], 0, 1, 2]})
    out = uv.evenly_spaced(df, 4)
    assert sorted(out[out.video_id == "a"]["frame"]) == [0, 5, 10, 15]
    assert sorted(out[out.video_id == "b"]["frame"]) == [0, 1, 2]


def test_authenticate_and_video_report():
    keys = np.repeat(["r", "f1", "f2"], 4)
    labels = np.repeat([0, 1, 1], 4)
    scores = np.r_[[0.1, 0.2, 0.9, 0.1], [0.9, 0.9, 0.2, 0.1], [0.6, 0.7, 0.8, 0.9]]
    v = uv.authenticate(scores, keys, labels).set_index("key")
    assert v.loc["f1", "pred_majority"] == 1 and v.loc["f1", "fake_votes"] == 0.5    # a tie is called fake
    assert v.loc["r", "pred_majority"] == 0 and v.loc["f1", "pred_mean"] == 1
    rep = uv.video_report(v["label"], v["pred_majority"], v["mean_prob"])
    assert rep["accuracy"] == 1.0 and rep["all_fake_accuracy"] == pytest.approx(2 / 3) and rep["auc"] == 1.0
    allfake = uv.video_report(v["label"], np.ones(3))
    assert allfake["accuracy"] == pytest.approx(allfake["all_fake_accuracy"]) and allfake["balanced_accuracy"] == 0.5
