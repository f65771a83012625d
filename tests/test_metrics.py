import time
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from dfbook import manifest, metrics


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.clip(rng.normal(0.4 + 0.25 * y, 0.2), 0, 1).round(2)  # rounded: ties on purpose
    return y, s


def test_agrees_with_sklearn(data):
    y, s = data
    pred = (s >= 0.5).astype(int)
    assert metrics.auc(y, s) == pytest.approx(skm.roc_auc_score(y, s))
    assert metrics.ap(y, s) == pytest.approx(skm.average_precision_score(y, s))
    assert metrics.accuracy(y, s) == pytest.approx(skm.accuracy_score(y, pred))
    assert metrics.balanced_accuracy(y, s) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert metrics.real_accuracy(y, s) == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert metrics.fake_accuracy(y, s) == pytest.approx(skm.recall_score(y, pred, pos_label=1))
    assert metrics.f1(y, s, 0.6) == pytest.approx(skm.f1_score(y, (s >= 0.6).astype(int)))
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert metrics.binary_counts(y, s) == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}


def test_eer_variants_hand_computed():
    # descending scores: fake, real, real, fake, real -> ROC (0,0) (0,.5) (1/3,.5) (2/3,.5) (2/3,1) (1,1)
    y = np.array([1, 0, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    # the crossing with tpr = 1 - fpr lies halfway along the horizontal segment tpr = .5
    assert metrics.eer_interpolated(y, s) == pytest.approx(0.5)
    # DeepfakeBench: roc_curve drops (1/3, .5) as collinear, nearest remaining point is (2/3, .5)
    assert metrics.eer_nearest(y, s) == pytest.approx(2 / 3)
    # a separable set has EER 0 under both definitions
    assert metrics.eer_nearest([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 0
    assert metrics.eer_interpolated([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 0


def test_eer_interpolated_close_to_nearest_on_large_data(data):
    y, s = data
    assert abs(metrics.eer_interpolated(y, s) - metrics.eer_nearest(y, s)) < 0.02


def test_tpr_at_fpr_and_oracle_hand_computed():
    y = np.array([0, 0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.95, 0.9, 0.5])
    assert metrics.tpr_at_fpr(y, s, 1e-3) == 0.0  # the top score is a real: no fake caught at FPR 0
    assert metrics.tpr_at_fpr(y, s, 0.25) == 1.0
    y2, s2 = [0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]
    assert metrics.accuracy(y2, s2) == 0.5
    assert metrics.oracle_accuracy(y2, s2) == 1.0
    assert metrics.oracle_threshold(y2, s2) == 0.3


def test_threshold_rule_is_greater_or_equal():
    assert metrics.accuracy([1], [0.5]) == 1.0
    assert metrics.predicted_fake_rate([0, 1], [0.5, 0.49]) == 0.5


def test_summary_keys_and_no_mutation(data):
    y, s = data
    y_in, s_in = y.copy(), s.copy()
    out = metrics.summary(y, s)
    metrics.bootstrap(metrics.auc, y, s, n_boot=5)
    metrics.video_scores(s, np.arange(len(s)), y)
    np.testing.assert_array_equal(y, y_in)
    np.testing.assert_array_equal(s, s_in)
    for key in ("auc", "ap", "eer_nearest", "eer_interpolated", "tpr_at_fpr_1e-3", "tpr_at_fpr_1e-2", "accuracy",
                "balanced_accuracy", "real_accuracy", "fake_accuracy", "f1", "oracle_accuracy", "oracle_threshold"):
        assert 0 <= out[key] <= 1, key
    assert out["n_real"] + out["n_fake"] == out["n"] == out["tn"] + out["fp"] + out["fn"] + out["tp"]
    assert out["oracle_accuracy"] >= out["accuracy"]


def test_summary_single_class_warns():
    with pytest.warns(UserWarning, match="only one class"):
        out = metrics.summary([1, 1, 1], [0.2, 0.7, 0.9])
    assert np.isnan(out["auc"]) and out["fake_accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("y,s,match", [
    ([0, 2], [0.1, 0.2], "0 \\(real\\) or 1 \\(fake\\)"),
    ([0, 1], [0.1, np.nan], "NaN"),
    ([0, 1, 1], [0.1, 0.2], "differ in length"),
    ([1, 1], [0.1, 0.2], "only one class"),
])
def test_bad_input_is_named(y, s, match):
    with pytest.raises(ValueError, match=match):
        metrics.auc(y, s)


def test_video_scores_ffpp_shared_video_id():
    """FF++: four manipulations share the folder name 000_003 and must stay four videos."""
    methods = ["Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"]
    rows = [{"dataset": "ffpp", "method": m, "video_id": "000_003", "label": 1} for m in methods for _ in range(3)]
    rows += [{"dataset": "ffpp", "method": "real", "video_id": "000", "label": 0} for _ in range(3)]
    df = pd.DataFrame(rows)
    scores = np.repeat([0.9, 0.8, 0.3, 0.6, 0.1], 3)
    v = metrics.video_scores(scores, manifest.video_key(df), df["label"])
    assert len(v) == 5 and v["label"].sum() == 4
    assert v.set_index("key").loc["ffpp/FaceSwap/000_003", "score"] == pytest.approx(0.3)
    assert (v["frames"] == 3).all()
    # grouping by the folder name alone (DeepfakeBench) would merge them: 2 "videos"
    assert metrics.video_scores(scores, df["video_id"])["key"].nunique() == 2
    with pytest.raises(ValueError, match="both real and fake"):
        metrics.video_scores(scores, np.zeros(len(df)), df["label"])


def test_video_scores_refuse_nan_scores_and_missing_keys():
    # pandas' groupby mean would skip the NaN (video "a" = 0.5) and drop the None-keyed frame
    with pytest.raises(ValueError, match=r"1 frame score\(s\) are NaN.*\['a'\]"):
        metrics.video_scores([0.5, np.nan, 0.2], ["a", "a", "b"])
    with pytest.raises(ValueError, match=r"1 of 3 frame\(s\) have no video key.*rows \[1\]"):
        metrics.video_scores([0.5, 0.9, 0.2], ["a", None, "b"])
    with pytest.raises(ValueError, match="no video key"):
        metrics.video_scores([0.5, 0.9], np.array(["a", np.nan], dtype=object))


def test_balanced_accuracy_with_one_class_is_nan_not_sklearns():
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    y, s = np.array([1, 0, 1, 0]), np.array([0.9, 0.2, 0.4, 0.6])
    assert metrics.balanced_accuracy(y, s) == pytest.approx(balanced_accuracy_score(y, s >= 0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert balanced_accuracy_score([1, 1], [1, 0]) == 0.5  # scikit-learn: the one class's accuracy
    assert np.isnan(metrics.balanced_accuracy([1, 1], [0.9, 0.1]))  # as the docstring says


def test_video_scores_majority():
    v = metrics.video_scores([0.9, 0.6, 0.1, 0.2, 0.3, 0.7], ["a", "a", "a", "b", "b", "b"], agg="majority")
    assert v["score"].tolist() == pytest.approx([2 / 3, 1 / 3])


def test_attribution_confusion_keeps_label_order():
    y = ["gan", "gan", "dm", "real", "dm", "ar"]
    p = ["gan", "dm", "dm", "real", "gan", "ar"]
    labels = ["real", "gan", "dm", "ar"]
    cm = metrics.confusion_matrix(y, p, labels)
    assert list(cm.index) == labels and list(cm.columns) == labels
    assert cm.loc["gan", "dm"] == 1 and cm.to_numpy().sum() == 6
    per = metrics.per_class_accuracy(y, p, labels)
    assert per.set_index("label")["accuracy"].to_dict() == {"real": 1.0, "gan": 0.5, "dm": 0.5, "ar": 1.0}
    summ = metrics.attribution_summary(y, p, labels)
    assert summ["accuracy"] == pytest.approx(4 / 6)
    assert summ["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p))
    with pytest.raises(ValueError, match="not in labels"):
        metrics.confusion_matrix(y, p, ["real", "gan"])


def test_hierarchical_accuracy():
    true = pd.DataFrame({"realfake": ["real", "fake", "fake", "fake"], "family": [None, "gan", "gan", "dm"],
                         "generator": [None, "progan", "stylegan", "ldm"]})
    pred = pd.DataFrame({"realfake": ["real", "fake", "fake", "real"], "family": ["gan", "gan", "dm", "dm"],
                         "generator": ["x", "progan", "stylegan", "ldm"]})
    t = metrics.hierarchical_accuracy(true, pred, ["realfake", "family", "generator"]).set_index("level")
    assert t.loc["realfake", "accuracy"] == 0.75 and t.loc["realfake", "n"] == 4
    assert t.loc["family", "n"] == 3 and t.loc["family", "accuracy"] == pytest.approx(2 / 3)
    assert t.loc["generator", "accuracy"] == 1.0
    # chained: the generator is right for 3 rows but only row 1 got every level right
    assert t.loc["generator", "chained_accuracy"] == pytest.approx(1 / 3)


def test_bootstrap_seeded_and_fast_path_equals_loop(data):
    y, s = data
    a = metrics.bootstrap_ci(metrics.auc, y, s, n_boot=200, seed=3)
    b = metrics.bootstrap_ci(metrics.auc, y, s, n_boot=200, seed=3)
    c = metrics.bootstrap_ci(metrics.auc, y, s, n_boot=200, seed=4)
    slow = metrics.bootstrap_ci(lambda y, s: metrics.auc(y, s), y, s, n_boot=200, seed=3)
    assert a == b and a.interval != c.interval
    assert a.lo == pytest.approx(slow.lo, abs=1e-12) and a.hi == pytest.approx(slow.hi, abs=1e-12)
    assert a.lo < a.value < a.hi and a.unit == "frame"


def test_bootstrap_stratified_keeps_class_counts(data):
    y, s = data
    t = metrics.bootstrap(lambda y, s: {"n_fake": y.sum(), "acc": metrics.accuracy(y, s)}, y, s, n_boot=50)
    assert t.loc["n_fake", "lo"] == t.loc["n_fake", "hi"] == y.sum()
    assert t.loc["acc", "lo"] < t.loc["acc", "hi"]


def test_bootstrap_resamples_videos():
    """20 identical frames per video carry the information of one frame: the video bootstrap must
    give a wider interval than pretending the frames were independent."""
    rng = np.random.default_rng(1)
    yv = rng.integers(0, 2, 60)
    sv = np.clip(rng.normal(0.4 + 0.2 * yv, 0.2), 0, 1)
    y, s, keys = np.repeat(yv, 20), np.repeat(sv, 20), np.repeat(np.arange(60), 20)
    frame = metrics.bootstrap_ci(metrics.auc, y, s, n_boot=300)
    video = metrics.bootstrap_ci(metrics.auc, y, s, keys=keys, n_boot=300)
    assert video.unit == "video"
    assert (video.hi - video.lo) > 2 * (frame.hi - frame.lo)
    with pytest.raises(ValueError, match="both labels"):
        metrics.bootstrap(metrics.auc, y, s, keys=np.zeros(len(y)))


def test_bootstrap_counts_undefined_resamples():
    y = np.array([0, 0, 1, 1, 1])
    s = np.array([0.1, 0.6, 0.4, 0.7, 0.9])

    def fake_only_fpr(y, s):  # undefined whenever a resample has no reals
        return metrics.fpr(y[y == 0], s[y == 0]) if (y == 0).any() else float("nan")

    t = metrics.bootstrap(fake_only_fpr, y, s, stratify=False, n_boot=200, seed=0)
    assert 0 < t["n_failed"].iloc[0] < 200


def test_bootstrap_speed_1000_resamples_of_10k_frames():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 10_000)
    s = rng.random(10_000) * 0.7 + 0.3 * y
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics.bootstrap_ci(metrics.auc, y, s, n_boot=1000)
    assert time.perf_counter() - t0 < 5  # ~0.4 s on one free core
