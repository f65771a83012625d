"""Unit tests of dfbook.methods.unsupervised_video (stages 1-4 of the unsupervised video chapter)."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from dfbook import metrics, train
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


@pytest.mark.slow
def test_classify_names_the_pseudo_label_class_on_the_labelled_val_set():
    """Pseudo-labels whose class 1 is the *real* cluster: classify(orient_on="val") flips every set's scores."""
    rng = np.random.default_rng(1)
    feats = {}
    for name, n in (("train", 200), ("val", 60), ("test/x", 60)):
        y = rng.integers(0, 2, n)
        feats[name] = (y, (rng.normal(0, 1, (n, 16)) + y[:, None] * 2.0).astype(np.float32))
    run = uv.EncoderRun(None, None, None, None, {k: (None, x) for k, (_, x) in feats.items()})
    sets = {k: pd.DataFrame({"label": y}) for k, (y, _) in feats.items()}
    pseudo = 1 - feats["train"][0]
    raw = uv.classify(run, pseudo, sets, epochs=10, lr=3e-3, batch_size=64)
    named = uv.classify(run, pseudo, sets, epochs=10, lr=3e-3, batch_size=64, orient_on="val")
    assert set(raw) == {"val", "test/x"}
    y_test = feats["test/x"][0]
    assert metrics.auc(y_test, raw["test/x"]) < 0.1 and metrics.auc(y_test, named["test/x"]) > 0.9
    np.testing.assert_allclose(named["test/x"], 1.0 - raw["test/x"], atol=1e-6)


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


# ------------------------------------------------------------------------------------- chapter workflow
def _results():
    rep = lambda auc, acc: dict(auc=auc, accuracy=acc, balanced_accuracy=0.5, all_fake_accuracy=0.8,  # noqa: E731
                                real_accuracy=0.0, fake_accuracy=1.0, n_real=2, n_fake=8)
    return {("ffpp", "truth", "test/ffpp"): rep(0.9, 0.8), ("ffpp", "truth", "test/uadfv"): rep(0.7, 0.6),
            ("ffpp", "pseudo", "test/uadfv"): rep(0.5, 0.4)}


def test_results_table_and_fork_shape_with_published_rows():
    table = uv.results_table(_results())
    assert list(table[["train", "labels", "test"]].iloc[1]) == ["ffpp", "truth", "uadfv"]
    shape = uv.fork_shape(table, "accuracy", published=uv.comparison_rows())
    assert shape.loc["this book: ffpp (truth labels)", "uadfv"] == 0.6
    assert np.isnan(shape.loc["this book: ffpp (pseudo labels)", "ffpp"])
    published = uv.comparison_rows(["accuracy · ffpp → uadfv"])
    row = f"published: ffpp ({published['system'].iloc[0]}, {published['evidence'].iloc[0]})"
    assert shape.loc[row, "uadfv"] == published["value"].iloc[0]  # the fork's README row, from paper_results.csv
    assert len(uv.fork_shape(table, "auc", published=uv.comparison_rows())) == 2  # no published AUC: ours only


def test_comparison_rows_and_table_keep_quantities_both_sides_have():
    rows = uv.comparison_rows()
    assert {"accuracy · ffpp → uadfv", "accuracy · ffpp → celebdf_v2", "accuracy · celebdf_v2 → uadfv",
            "all_fake_accuracy · ffpp → celebdf_v2"} <= set(rows["quantity"])
    assert rows["system"].str.startswith("improved_unsup_df").all()
    ours = {"book truth": {"accuracy · ffpp → uadfv": 0.6, "accuracy · ffpp → nowhere": 0.1},
            "book pseudo": {"accuracy · ffpp → uadfv": 0.4}}
    table = uv.comparison_table(rows, ours)
    assert set(table["quantity"]) == {"accuracy · ffpp → uadfv"}
    assert {0.6, 0.4} <= set(table["value"])


def test_training_labels_drop_and_count_unlabelled_videos():
    train_df = pd.DataFrame({"dataset": "d", "method": "m", "video_id": ["a", "a", "b", "c"], "frame": [0, 1, 0, 0],
                             "label": [0, 0, 1, 1]})
    stage1 = pd.DataFrame({"key": uv.video_keys(train_df), "pseudo": [1, 1, -1, 0]})
    frames, y, dropped = uv.training_labels(train_df, stage1, "pseudo")
    assert list(frames["video_id"]) == ["a", "a", "c"] and list(y) == [1, 1, 0] and dropped == 1
    frames, y, dropped = uv.training_labels(train_df, stage1, "truth")
    assert list(y) == [0, 0, 1, 1] and dropped == 0
    with pytest.raises(ValueError, match="'pseudo' or 'truth'"):
        uv.training_labels(train_df, stage1, "gt")


def _frames(domain: str, split_of: dict[str, str], n_frames: int = 3) -> pd.DataFrame:
    rows = []
    for ident, split in split_of.items():
        for label, vid in ((0, ident), (1, f"{ident}_swap")):
            rows += [dict(path=f"{domain}/{vid}/{f}.png", label=label, dataset=domain, domain=domain,
                          method="deepfake" if label else "real", video_id=vid, frame=f, identity=ident,
                          source_identity="", split=split) for f in range(n_frames)]
    return pd.DataFrame(rows)


def test_chapter_sets_hold_out_val_when_the_training_domain_has_none():
    celeb = _frames("celebdf_v2", {f"c{i}": "train" if i < 8 else "test" for i in range(10)})
    uadfv = _frames("uadfv", {f"u{i}": "test" for i in range(3)})
    df = pd.concat([celeb, uadfv], ignore_index=True)
    sets = uv.chapter_sets(df, "celebdf_v2", ["uadfv"], vaf_frames=2, train_frames=1, eval_frames=3, seed=0)
    assert set(sets) == {"vaf", "train", "val", "test/celebdf_v2", "test/uadfv"}
    assert set(sets["val"]["label"]) == {0, 1} and not set(sets["val"]["identity"]) & set(sets["train"]["identity"])
    assert sets["train"].groupby("video_id").size().max() == 1 and sets["vaf"].groupby("video_id").size().max() == 2
    overview = uv.set_overview({"celebdf_v2": sets}).set_index("set")
    assert overview.loc["val", "split"] == "held out: 1 of 8 training identities"
    assert overview.loc["test/uadfv", "split"] == "official"
    official = uv.chapter_sets(df.assign(split=np.where(df["split"] == "test", "test", "val")).pipe(
        lambda d: d.assign(split=np.where(d["identity"].isin(["c0", "c1", "c2"]), "train", d["split"]))),
        "celebdf_v2", ["uadfv"], vaf_frames=2, train_frames=1, eval_frames=3)
    assert "hold_out" not in official["val"].attrs and len(official["val"]) == 5 * 2 * 3


def test_landmarks_are_cached_by_files_and_model(tmp_path, monkeypatch):
    monkeypatch.setenv("DFBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DFBOOK_DATA", str(tmp_path / "data"))
    calls = []

    def fake_dlib(df, model_file, progress=True):
        calls.append(str(model_file))
        return np.full((len(df), 68, 2), len(calls), np.float32)

    monkeypatch.setattr(uv, "dlib_landmarks", fake_dlib)
    (tmp_path / "data" / "weights").mkdir(parents=True)
    model = tmp_path / "data" / "weights" / "lm.dat"
    model.write_bytes(b"model one")
    df = pd.DataFrame({"path": ["a.png", "b.png"]})
    first = uv.landmarks_for(df, "weights/lm.dat")                  # relative to $DFBOOK_DATA
    assert calls == [str(model)] and (uv.landmarks_for(df, str(model)) == first).all() and len(calls) == 1
    uv.landmarks_for(df.iloc[:1], str(model))                         # other frames: computed
    model.write_bytes(b"model two, retrained")                        # other model: computed
    assert uv.landmarks_for(df, str(model))[0, 0, 0] == 3 and len(calls) == 3


def test_dlib_landmarks_with_a_locally_trained_predictor(tmp_path):
    """dlib's 68-point file cannot be downloaded here: a tiny predictor trained on scikit-image's astronaut (68
    points on an ellipse in the detection box) stands in, so dlib's detector + predictor code path runs for real."""
    import dlib
    from skimage import data

    face = np.ascontiguousarray(data.astronaut()[0:300, 100:400])
    detector = dlib.get_frontal_face_detector()
    box = detector.run(face, 0, 0)[0][0]
    angle = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    cx, cy = box.center().x, box.center().y
    points = [dlib.point(int(cx + 0.4 * box.width() * np.cos(a)), int(cy + 0.4 * box.height() * np.sin(a)))
              for a in angle]
    options = dlib.shape_predictor_training_options()
    options.tree_depth, options.cascade_depth, options.num_trees_per_cascade_level = 2, 2, 2
    predictor = dlib.train_shape_predictor([face], [[dlib.full_object_detection(box, points)]], options)
    predictor.save(str(tmp_path / "predictor.dat"))
    cv2.imwrite(str(tmp_path / "face.png"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((300, 300, 3), 128, np.uint8))

    lm = uv.dlib_landmarks(pd.DataFrame({"path": [str(tmp_path / "face.png"), str(tmp_path / "blank.png")]}),
                           tmp_path / "predictor.dat", progress=False)
    assert lm.shape == (2, 68, 2) and lm.dtype == np.float32
    assert np.isfinite(lm[0]).all() and np.isnan(lm[1]).all()          # no face found: a NaN row, not a guess
    inside = (lm[0, :, 0] >= box.left()) & (lm[0, :, 0] <= box.right()) & (lm[0, :, 1] >= box.top())
    assert inside.all()


def test_landmarks_without_a_model_say_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("DFBOOK_DATA", str(tmp_path))
    monkeypatch.setenv("DFBOOK_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="shape_predictor_68_face_landmarks.dat.bz2"):
        uv.landmarks_for(pd.DataFrame({"path": ["a.png"]}), "weights/missing.dat")


@pytest.mark.slow  # ~15 s: prepares 16 short videos with the Haar detector
def test_full_data_path_celebdf_v2_training_domain(tmp_path, monkeypatch):
    """Celeb-DF-v2 (train/test lists only) and UADFV layouts on disk -> `dfbook prepare` of each into one folder ->
    load_faces("full", FACES) -> chapter_sets with Celeb-DF-v2 as the training domain: the fork's second row, which
    needs a held-out val. The chapter reads the prepared crops and never detects a face itself (issue 19: the full
    path ran MTCNN over every frame inside a notebook cell)."""
    from test_prepare import N_BLANK, N_FACE, write_clip

    from dfbook import prepare

    clip = write_clip(tmp_path / "clip.avi")
    data = tmp_path / "data"
    celeb = {"Celeb-real": [f"id{i}_0000" for i in range(5)], "YouTube-real": ["00000", "00001"],
             "Celeb-synthesis": ["id0_id1_0000", "id1_id0_0000", "id2_id3_0000", "id3_id2_0000", "id4_id0_0000"]}
    for folder, stems in celeb.items():
        (data / "celebdf_v2" / folder).mkdir(parents=True)
        for stem in stems:
            (data / "celebdf_v2" / folder / f"{stem}.avi").write_bytes(clip.read_bytes())
    (data / "celebdf_v2" / "List_of_testing_videos.txt").write_text(
        "1 Celeb-real/id4_0000.mp4\n0 Celeb-synthesis/id4_id0_0000.mp4\n")
    for folder, stems in {"real": ["0000", "0001"], "fake": ["0000_fake", "0001_fake"]}.items():
        (data / "uadfv" / folder).mkdir(parents=True)
        for stem in stems:
            (data / "uadfv" / folder / f"{stem}.avi").write_bytes(clip.read_bytes())
    monkeypatch.setenv("DFBOOK_DATA", str(data))
    monkeypatch.setenv("DFBOOK_CACHE", str(tmp_path / "cache"))

    out = data / "prepared" / "faces_299"
    for d in ("celebdf_v2", "uadfv"):
        assert prepare.main([d, str(out), "--frames", "4", "--size", "32", "--detector", "haar"]) == 0

    def no_detection(*a, **kw):
        raise AssertionError("the chapter detected faces itself")

    monkeypatch.setattr(prepare, "make_detector", no_detection)
    faces = uv.load_faces("full", ["celebdf_v2", "uadfv"], "prepared/faces_299/manifest.csv")
    per_video = len(range(N_BLANK, N_BLANK + N_FACE, 4))  # frames 0, 3, 7, 11 sampled; the first is blank
    assert faces.groupby(["domain", "video_id"]).size().eq(3).all() and per_video == 3
    counts = faces.attrs["prepare"]
    assert counts["celebdf_v2"] == {"videos": 12, "faces": 36, "frames_without_face": 12}
    assert counts["uadfv"]["faces"] == 12

    sets = uv.chapter_sets(faces, "celebdf_v2", ["uadfv"], vaf_frames=3, train_frames=1, eval_frames=3,
                           cross_split="all")
    assert set(sets["val"]["label"]) == {0, 1}                                  # id0..id3 have fakes: one moves
    assert not set(sets["val"]["identity"]) & set(sets["train"]["identity"])
    assert sets["test/celebdf_v2"]["video_id"].nunique() == 2 and sets["test/uadfv"]["video_id"].nunique() == 4
    assert (uv.load_faces("full", ["uadfv"], "prepared/faces_299/manifest.csv")["path"]
            == faces[faces["domain"] == "uadfv"]["path"].to_numpy()).all()      # one manifest, any subset
    with pytest.raises(ValueError, match=r"holds no face crops of \['celebdf_v1'\].*dfbook prepare celebdf_v1"):
        uv.load_faces("full", ["celebdf_v1", "uadfv"], "prepared/faces_299/manifest.csv")
    with pytest.raises(ValueError, match=r"FACES is empty"):
        uv.load_faces("full", ["uadfv"])


@pytest.mark.slow  # ~15 s: builds ConvNeXt-B and Xception at 299 px with random weights
def test_full_dry_run_records_the_paper_sized_models(build_dir):
    from dfbook import report, runner

    res = runner.run_chapter("unsupervised_video", "full", dry_run=True, quiet=True)
    assert res.status == "dry-run", res.error
    models = report.load("unsupervised_video", "full", dry_run=True)["models"]
    fork, base = models["fork_ecl"], models["baseline_ecl"]
    assert fork["input_shape"] == [2, 3, 299, 299] and fork["output_shape"] == [[2, 128], [2, 128]]  # feat, z
    assert 85e6 < fork["params_total"] < 95e6             # ConvNeXt-B (88.6 M) + projection 1024 -> 2048 -> 128
    assert 20e6 < base["params_total"] < 30e6             # Xception (20.8 M without fc) + projection 2048 -> 2048 -> 128
    assert models["fork_mlp"]["input_shape"] == [2, 1024]  # ConvNeXt-B's pooled features


def test_stage4_reports_both_votes():
    df = pd.DataFrame({"dataset": "d", "method": "m", "video_id": np.repeat(["r", "f"], 3), "frame": [0, 1, 2] * 2,
                       "label": np.repeat([0, 1], 3)})
    # video f: two frames just under 0.5 and one at 1.0 -> majority says real, mean (0.66) says fake
    videos, rep = uv.stage4(np.array([0.1, 0.2, 0.1, 0.49, 0.49, 1.0]), df)
    assert list(videos["pred_majority"]) == [0, 0] and list(videos["pred_mean"]) == [0, 1]
    assert rep["accuracy"] == 0.5 and rep["mean_vote_accuracy"] == 1.0 and rep["mean_vote_balanced_accuracy"] == 1.0
    assert "mean_vote_accuracy" in uv.results_table({("d", "truth", "test/d"): rep}).columns
