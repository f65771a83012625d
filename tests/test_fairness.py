import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from dfbook import fairness


@pytest.fixture
def hand():
    """Two groups, 4 reals + 4 fakes each, decisions at 0.5 chosen by hand:
    A: reals 0.1 0.2 0.3 0.7 (1 FP)  fakes 0.8 0.9 0.6 0.4 (3 TP)
    B: reals 0.1 0.6 0.7 0.8 (3 FP)  fakes 0.9 0.2 0.3 0.4 (1 TP)"""
    s = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9, 0.6, 0.4, 0.1, 0.6, 0.7, 0.8, 0.9, 0.2, 0.3, 0.4]
    y = [0, 0, 0, 0, 1, 1, 1, 1] * 2
    g = ["A"] * 8 + ["B"] * 8
    return np.array(y), np.array(s), np.array(g)


def test_group_table_hand_computed(hand):
    y, s, g = hand
    t = fairness.group_table(y, s, g).set_index("group")
    assert t.loc["A", "fpr"] == 0.25 and t.loc["B", "fpr"] == 0.75
    assert t.loc["A", "tpr"] == 0.75 and t.loc["B", "tpr"] == 0.25
    assert t.loc["A", "accuracy"] == 0.75 and t.loc["B", "accuracy"] == 0.25
    assert t.loc["A", "pred_fake_rate"] == 0.5 and t.loc["B", "pred_fake_rate"] == 0.5
    assert t.loc["A", "error_rate"] == 0.25
    assert t.loc["B", "auc"] == pytest.approx(roc_auc_score(y[8:], s[8:]))
    assert (t["n"] == 8).all() and (t["n_real"] == 4).all() and not t["single_class"].any()
    gaps = fairness.gaps(t.reset_index())
    assert gaps["f_fpr"] == 0.5 and gaps["f_oae"] == 0.5 and gaps["f_eop"] == 0.5
    assert gaps["f_dp"] == 0.0  # equal predicted-fake rates despite opposite errors: DP alone is blind
    assert gaps["f_meo"] == 0.5 and gaps["groups_used"] == 2
    assert gaps["auc_gap"] == pytest.approx(abs(roc_auc_score(y[:8], s[:8]) - roc_auc_score(y[8:], s[8:])))


def test_meo_is_max_of_fpr_and_tpr_gaps(hand):
    y, s, g = hand
    s = s.copy()
    s[4:8] = 0.9  # group A now catches every fake: ΔTPR = .75, ΔFPR = .5
    gaps = fairness.gaps(fairness.group_table(y, s, g))
    assert gaps["f_eop"] == 0.75 and gaps["f_fpr"] == 0.5 and gaps["f_meo"] == 0.75


def test_single_class_group_warns_and_is_excluded(hand):
    y, s, g = hand
    y2 = np.r_[y, [1, 1]]
    s2 = np.r_[s, [0.1, 0.2]]
    g2 = np.r_[g, ["C", "C"]]
    with pytest.warns(UserWarning, match="only one class.*'C' \\(n_real=0, n_fake=2\\)"):
        t = fairness.group_table(y2, s2, g2)
    assert t.set_index("group").loc["C", "single_class"]
    assert np.isnan(t.set_index("group").loc["C", "auc"])
    gaps = fairness.gaps(t)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        base = fairness.gaps(fairness.group_table(y, s, g))
    assert gaps["groups_excluded"] == 1
    assert {k: gaps[k] for k in fairness.GAPS} == {k: base[k] for k in fairness.GAPS}


def test_audit_intersections():
    rng = np.random.default_rng(0)
    n = 400
    attrs = pd.DataFrame({"gender": rng.choice(["female", "male"], n), "skin_group": rng.choice(["dark", "light"], n)})
    y = rng.integers(0, 2, n)
    s = np.clip(rng.normal(0.35 + 0.3 * y + 0.1 * (attrs["skin_group"] == "dark"), 0.2), 0, 1)
    a = fairness.audit(y, s, attrs, intersections=[("gender", "skin_group")])
    assert set(a.gaps["attribute"]) == {"gender", "skin_group", "gender × skin_group"}
    inter = a.groups[a.groups["attribute"] == "gender × skin_group"]
    assert set(inter["group"]) == {"female × dark", "female × light", "male × dark", "male × light"}
    assert inter["n"].sum() == n
    skin = a.gaps.set_index("attribute").loc["skin_group"]
    assert skin["f_fpr"] > 0.05  # dark skin was given higher scores: more reals called fake
    with pytest.raises(ValueError, match="not in the table"):
        fairness.audit(y, s, attrs, columns=["age"])


def test_group_ci_seeded_and_brackets_value(hand):
    y, s, g = hand
    a = fairness.group_ci(y, s, g, metric="fpr", n_boot=100, seed=1)
    b = fairness.group_ci(y, s, g, metric="fpr", n_boot=100, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert ((a["lo"] <= a["value"]) & (a["value"] <= a["hi"])).all()
    assert a.set_index("group").loc["B", "value"] == 0.75
    with pytest.raises(ValueError, match="unknown metric"):
        fairness.group_ci(y, s, g, metric="n", n_boot=5)


def test_missing_group_values_raise():
    with pytest.raises(ValueError, match="no group value"):
        fairness.group_table([0, 1], [0.1, 0.9], pd.Series(["a", None]))


def _biased(n: int = 400, seed: int = 0):
    """Videos of 4 frames; dark skin gets higher scores, so its reals are called fake more often."""
    rng = np.random.default_rng(seed)
    n_vid = n // 4
    vid_skin = rng.choice(["dark", "light"], n_vid)
    vid_gender = rng.choice(["female", "male"], n_vid)
    vid_y = np.arange(n_vid) % 2
    attrs = pd.DataFrame({"gender": np.repeat(vid_gender, 4), "skin_group": np.repeat(vid_skin, 4)})
    y = np.repeat(vid_y, 4)
    keys = np.repeat([f"v{i}" for i in range(n_vid)], 4)
    s = np.clip(rng.normal(0.35 + 0.3 * y + 0.3 * (attrs["skin_group"] == "dark"), 0.2), 0, 1)
    return y, s, attrs, keys


def test_audit_ci_intervals_for_every_reported_metric_and_gap():
    y, s, attrs, keys = _biased()
    point = fairness.audit(y, s, attrs, intersections=[("gender", "skin_group")])
    a = fairness.audit_ci(y, s, attrs, intersections=[("gender", "skin_group")], keys=keys, n_boot=150, seed=2)
    # point values are audit()'s
    pd.testing.assert_frame_equal(a.groups[point.groups.columns], point.groups)
    pd.testing.assert_frame_equal(a.gaps[point.gaps.columns], point.gaps)
    for m in fairness.REPORTED_METRICS:
        lo, hi, v = a.groups[f"{m}_lo"], a.groups[f"{m}_hi"], a.groups[m]
        assert lo.notna().all() and (lo <= hi).all(), m
        assert ((lo <= v + 1e-12) & (v <= hi + 1e-12)).all(), m          # per-group rates: inside their CI
    for g in fairness.REPORTED_GAPS:
        assert (a.gaps[f"{g}_lo"] <= a.gaps[f"{g}_hi"]).all(), g
    skin = a.gaps.set_index("attribute").loc["skin_group"]
    assert skin["f_fpr"] > 0.3 and skin["f_fpr_lo"] > 0.2                   # the built-in bias is detected
    gender = a.gaps.set_index("attribute").loc["gender"]
    assert gender["f_fpr_lo"] < skin["f_fpr_lo"]                            # gender carries no bias
    # same resamples as group_ci: the FPR intervals agree exactly
    fpr = fairness.group_ci(y, s, attrs["skin_group"], metric="fpr", keys=keys, n_boot=150, seed=2).set_index("group")
    mine = a.groups[a.groups["attribute"] == "skin_group"].set_index("group")
    np.testing.assert_allclose(mine.loc[fpr.index, "fpr_lo"], fpr["lo"])
    np.testing.assert_allclose(mine.loc[fpr.index, "fpr_hi"], fpr["hi"])
    b = fairness.audit_ci(y, s, attrs, intersections=[("gender", "skin_group")], keys=keys, n_boot=150, seed=2)
    pd.testing.assert_frame_equal(a.groups, b.groups)
    c = fairness.audit_ci(y, s, attrs, keys=keys, n_boot=150, seed=3)
    assert not np.allclose(c.gaps["f_fpr_hi"], a.gaps["f_fpr_hi"].iloc[:2])  # the seed matters


def test_audit_ci_counts_undefined_resamples():
    y, s, attrs, keys = _biased(n=48, seed=1)
    attrs = attrs.assign(age_group=np.where(np.arange(48) < 4, "senior", "adult"))   # one 4-frame video: one class
    with pytest.warns(UserWarning, match="only one class"):
        a = fairness.audit_ci(y, s, attrs, columns=["age_group"], keys=keys, n_boot=50, seed=0)
    senior = a.groups.set_index("group").loc["senior"]
    assert senior["single_class"] and np.isnan(senior["auc"])
    assert senior["ci_failed"] > 0                                          # the group vanishes from resamples
    assert np.isnan(a.gaps.loc[0, "f_fpr"])                                 # one two-class group: no gap
