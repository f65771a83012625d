"""Detection, video-level and attribution metrics, and bootstrap confidence intervals.

Pure functions on arrays: inputs are never modified (DeepfakeBench's ``get_test_metrics`` rewrites
``y_true`` in place, ``metrics/utils.py`` @8a4a7bf; here every input is copied by ``np.asarray(...,
dtype=...)`` or only read). Conventions (DESIGN.md): ``y`` (N,) int in {0, 1}, 1 = fake; ``s`` (N,)
float, P(fake), higher = more fake. Every value returned is a fraction in [0, 1], never a percentage.

Decision rule: a sample is predicted fake when ``s >= threshold``. AI-Face's ``acc_fairness`` uses
``>=`` as well; DeepfakeBench's ACC uses a strict ``>`` -- the two differ only for scores exactly equal
to the threshold.

A threshold tuned on the evaluated data is an *oracle*: :func:`oracle_threshold` and
:func:`oracle_accuracy` are named so and must never be reported as if chosen beforehand.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import metrics as skm

# ------------------------------------------------------------------------------------------------
# input checks


def check_binary(y, s, *, need_both: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Validated copies ``(y int64 (N,), s float64 (N,))``.

    Raises ValueError naming what is wrong: unequal lengths, empty input, labels outside {0, 1},
    non-finite scores, or (``need_both``) only one class present."""
    y = np.asarray(y)
    s = np.asarray(s, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D; got shapes {y.shape} and {s.shape}")
    if len(y) != len(s):
        raise ValueError(f"labels ({len(y)}) and scores ({len(s)}) differ in length")
    if len(y) == 0:
        raise ValueError("no samples: labels and scores are empty")
    if not np.isin(y, (0, 1)).all():
        bad = np.unique(y[~np.isin(y, (0, 1))])[:5]
        raise ValueError(f"labels must be 0 (real) or 1 (fake); found {bad.tolist()}. "
                         "Binarise multi-class labels first (e.g. y = (method != 'real')).")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} score(s) are NaN or infinite; "
                         "scores must be finite P(fake) values")
    y = y.astype(np.int64)
    if need_both and (y.min() == y.max()):
        raise ValueError(f"only one class present (all labels = {int(y[0])}); AUC, AP and EER need "
                         "both real (0) and fake (1) samples")
    return y, s


def _predict(s: np.ndarray, threshold: float) -> np.ndarray:
    return (s >= threshold).astype(np.int64)


# ------------------------------------------------------------------------------------------------
# ranking metrics (threshold-free)


def auc(y, s) -> float:
    """ROC AUC in [0, 1] (scikit-learn ``roc_auc_score``; ties count one half)."""
    y, s = check_binary(y, s)
    return float(skm.roc_auc_score(y, s))


def ap(y, s) -> float:
    """Average precision in [0, 1] with fake as the positive class (``average_precision_score``)."""
    y, s = check_binary(y, s)
    return float(skm.average_precision_score(y, s))


def roc(y, s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` of every distinct threshold (no points dropped)."""
    y, s = check_binary(y, s)
    return skm.roc_curve(y, s, drop_intermediate=False)


def eer_nearest(y, s) -> float:
    """DeepfakeBench's EER: the FPR of the ROC point where |FNR - FPR| is smallest, no interpolation.

    Exactly ``fpr[argmin |(1 - tpr) - fpr|]`` on ``roc_curve(y, s, pos_label=1)`` with scikit-learn's
    default ``drop_intermediate=True``, as in SCLBD/DeepfakeBench ``training/metrics/utils.py``
    @8a4a7bf. On small sets it can differ from :func:`eer_interpolated` by up to one ROC step."""
    y, s = check_binary(y, s)
    fpr, tpr, _ = skm.roc_curve(y, s, pos_label=1)
    return float(fpr[np.nanargmin(np.abs((1 - tpr) - fpr))])


def eer_interpolated(y, s) -> float:
    """EER where the piecewise-linear ROC crosses FNR = FPR (i.e. ``tpr = 1 - fpr``), in [0, 1].

    Hand-written (a linear crossing on the ROC polyline) because the common
    ``brentq(lambda x: 1 - x - interp1d(fpr, tpr)(x))`` recipe is ill-defined on vertical ROC
    segments; ``fpr + tpr`` is non-decreasing along the curve, so the crossing is unique."""
    y, s = check_binary(y, s)
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    g = fpr + tpr - 1.0  # < 0 before the crossing, >= 0 after; starts at -1 (fpr = tpr = 0)
    k = int(np.argmax(g >= 0))  # first point on or past the crossing (g[-1] = 1 always)
    if g[k] == 0:
        return float(fpr[k])
    t = -g[k - 1] / (g[k] - g[k - 1])
    return float(fpr[k - 1] + t * (fpr[k] - fpr[k - 1]))


def tpr_at_fpr(y, s, fpr: float = 1e-3) -> float:
    """Highest TPR among thresholds whose FPR is <= ``fpr`` (ROC step function, no interpolation).

    With fewer than ``1 / fpr`` real samples only thresholds with zero false positives qualify, so
    the value is resolution-limited; report ``n_real`` next to it."""
    if not 0 <= fpr <= 1:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    f, t, _ = roc(y, s)
    return float(t[f <= fpr + 1e-12].max())  # tolerance: k / n_real is not exact in floating point


# ------------------------------------------------------------------------------------------------
# metrics at a threshold


def binary_counts(y, s, threshold: float = 0.5) -> dict[str, int]:
    """``{"tn", "fp", "fn", "tp"}`` at ``threshold`` (fake = positive)."""
    y, s = check_binary(y, s, need_both=False)
    p = _predict(s, threshold)
    return {"tn": int(((p == 0) & (y == 0)).sum()), "fp": int(((p == 1) & (y == 0)).sum()),
            "fn": int(((p == 0) & (y == 1)).sum()), "tp": int(((p == 1) & (y == 1)).sum())}


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def accuracy(y, s, threshold: float = 0.5) -> float:
    """Fraction of samples classified correctly at ``threshold`` (unbalanced: a mostly-fake test
    set rewards predicting 'fake'; see :func:`balanced_accuracy`)."""
    c = binary_counts(y, s, threshold)
    return (c["tn"] + c["tp"]) / sum(c.values())


def fpr(y, s, threshold: float = 0.5) -> float:
    """False-positive rate FP / (FP + TN): reals called fake. NaN without real samples."""
    c = binary_counts(y, s, threshold)
    return _ratio(c["fp"], c["fp"] + c["tn"])


def tpr(y, s, threshold: float = 0.5) -> float:
    """True-positive rate TP / (TP + FN) = fake accuracy (recall). NaN without fake samples."""
    c = binary_counts(y, s, threshold)
    return _ratio(c["tp"], c["tp"] + c["fn"])


def real_accuracy(y, s, threshold: float = 0.5) -> float:
    """Accuracy on real samples (TNR = 1 - FPR), computed with a mask, never by slicing sorted
    lists (DeepfakeBench's ``get_respect_acc`` assumes reals come first; its test lists are shuffled)."""
    return 1.0 - fpr(y, s, threshold)


def fake_accuracy(y, s, threshold: float = 0.5) -> float:
    """Accuracy on fake samples (TPR)."""
    return tpr(y, s, threshold)


def balanced_accuracy(y, s, threshold: float = 0.5) -> float:
    """Mean of real and fake accuracy. Equals ``sklearn.metrics.balanced_accuracy_score`` when both classes
    are present; with one class only it is NaN (the other class's accuracy is undefined), where scikit-learn
    warns and returns the present class's accuracy."""
    return (real_accuracy(y, s, threshold) + fake_accuracy(y, s, threshold)) / 2


def predicted_fake_rate(y, s, threshold: float = 0.5) -> float:
    """(TP + FP) / N: the share of samples called fake (demographic parity compares this)."""
    c = binary_counts(y, s, threshold)
    return (c["tp"] + c["fp"]) / sum(c.values())


def f1(y, s, threshold: float = 0.5) -> float:
    """F1 of the fake class at ``threshold`` (0 when nothing is predicted fake)."""
    y, s = check_binary(y, s, need_both=False)
    return float(skm.f1_score(y, _predict(s, threshold), zero_division=0))


def oracle_threshold(y, s) -> float:
    """The threshold that maximises accuracy **on the evaluated data itself** (optimistic by
    construction; UnivFD's ``validate.py`` reports such "oracle" accuracies). Ties: the lowest
    such threshold among the ROC's distinct thresholds; ``inf`` when calling everything real wins."""
    y, s = check_binary(y, s)
    f, t, thr = skm.roc_curve(y, s, drop_intermediate=False)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    acc = (t * n_pos + (1 - f) * n_neg) / len(y)
    k = int(np.flatnonzero(acc == acc.max())[-1])
    return float(thr[k])


def oracle_accuracy(y, s) -> float:
    """Accuracy at :func:`oracle_threshold`: an upper bound, tuned on the evaluated data."""
    return accuracy(y, s, oracle_threshold(y, s))


def summary(y, s, threshold: float = 0.5) -> dict[str, float]:
    """All frame-level (or video-level, given video scores) headline metrics as one flat dict.

    Keys: ``n, n_real, n_fake, auc, ap, eer_nearest, eer_interpolated, tpr_at_fpr_1e-3,
    tpr_at_fpr_1e-2, threshold, accuracy, balanced_accuracy, real_accuracy, fake_accuracy, f1,
    tn, fp, fn, tp, oracle_threshold, oracle_accuracy``. With a single class present, the ranking
    metrics are NaN and a warning says so."""
    y, s = check_binary(y, s, need_both=False)
    c = binary_counts(y, s, threshold)
    out: dict[str, float] = {"n": len(y), "n_real": int((y == 0).sum()), "n_fake": int(y.sum())}
    ranking = ("auc", "ap", "eer_nearest", "eer_interpolated", "tpr_at_fpr_1e-3", "tpr_at_fpr_1e-2")
    if y.min() == y.max():
        warnings.warn(f"summary: only one class present (label {int(y[0])}, n={len(y)}); "
                      "AUC, AP, EER, TPR@FPR and oracle metrics are NaN", stacklevel=2)
        out.update({k: float("nan") for k in ranking})
    else:
        out.update({"auc": auc(y, s), "ap": ap(y, s), "eer_nearest": eer_nearest(y, s),
                    "eer_interpolated": eer_interpolated(y, s),
                    "tpr_at_fpr_1e-3": tpr_at_fpr(y, s, 1e-3), "tpr_at_fpr_1e-2": tpr_at_fpr(y, s, 1e-2)})
    out.update({"threshold": float(threshold), "accuracy": accuracy(y, s, threshold),
                "balanced_accuracy": balanced_accuracy(y, s, threshold),
                "real_accuracy": real_accuracy(y, s, threshold),
                "fake_accuracy": fake_accuracy(y, s, threshold), "f1": f1(y, s, threshold), **c})
    if y.min() == y.max():
        out.update({"oracle_threshold": float("nan"), "oracle_accuracy": float("nan")})
    else:
        out.update({"oracle_threshold": oracle_threshold(y, s), "oracle_accuracy": oracle_accuracy(y, s)})
    return out


# ------------------------------------------------------------------------------------------------
# video level


def video_scores(scores, keys, labels=None, *, agg: str = "mean", threshold: float = 0.5) -> pd.DataFrame:
    """Aggregate frame scores into one score per video.

    Args:
        scores: (N,) frame P(fake).
        keys: (N,) explicit video key per frame, e.g. ``dfbook.manifest.video_key(df)``
            (``dataset/method/video_id``). Never a folder name: FF++'s ``000_003`` exists under four
            manipulations, and DeepfakeBench's ``path.split('/')[-2]`` merges them into one video.
        labels: optional (N,) 0/1 frame labels; every video must have a single label.
        agg: ``"mean"`` -- mean frame P(fake) (DeepfakeBench's video AUC); ``"majority"`` -- the
            fraction of frames with ``score >= threshold``, so a video is called fake at 0.5 when at
            least half its frames are.

    Returns:
        DataFrame with one row per video in order of first appearance: ``key, score, frames``
        (+ ``label``).

    Raises ValueError for a NaN or infinite score (pandas' mean would skip it, giving the video the mean of
    its other frames) and for a missing key (None or NaN: pandas' groupby would drop the frame); drop such
    frames yourself, and count them, before aggregating.
    """
    s = np.asarray(scores, dtype=np.float64)
    k = np.asarray(keys)
    if len(s) != len(k):
        raise ValueError(f"scores ({len(s)}) and keys ({len(k)}) differ in length")
    no_key = pd.isna(pd.Series(k, dtype=object)).to_numpy()
    if no_key.any():
        raise ValueError(f"{int(no_key.sum())} of {len(k)} frame(s) have no video key (None or NaN), e.g. rows "
                         f"{np.flatnonzero(no_key)[:5].tolist()}; give every frame an explicit key "
                         "(dfbook.manifest.video_key)")
    bad = ~np.isfinite(s)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} frame score(s) are NaN or infinite, in video(s) "
                         f"{list(dict.fromkeys(k[bad].tolist()))[:3]}; a video's mean would silently skip them. "
                         "Drop those frames (and report how many) before aggregating")
    if agg not in ("mean", "majority"):
        raise ValueError(f"agg must be 'mean' or 'majority', got {agg!r}")
    frame = pd.DataFrame({"key": k, "score": s if agg == "mean" else (s >= threshold).astype(float)})
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != len(s):
            raise ValueError(f"labels ({len(labels)}) and scores ({len(s)}) differ in length")
        frame["label"] = labels
    g = frame.groupby("key", sort=False)
    out = g["score"].agg(["mean", "size"]).rename(columns={"mean": "score", "size": "frames"})
    if labels is not None:
        nlab = g["label"].nunique()
        if (nlab > 1).any():
            mixed = nlab.index[nlab > 1].tolist()
            raise ValueError(f"{len(mixed)} video key(s) hold both real and fake frames, e.g. {mixed[:3]}; "
                             "a video key must identify one video (include the method: manifest.video_key)")
        out["label"] = g["label"].first().astype(np.int64)
    return out.reset_index()


# ------------------------------------------------------------------------------------------------
# attribution (multi-class)


def confusion_matrix(y_true, y_pred, labels: Sequence | None = None, normalize: str | None = None) -> pd.DataFrame:
    """Confusion matrix as a DataFrame (rows = true, columns = predicted) in the order of
    ``labels`` (default: sorted union of both). ``normalize`` as in scikit-learn (``"true"`` gives
    per-class recall on the diagonal)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true ({len(y_true)}) and y_pred ({len(y_pred)}) differ in length")
    labels = list(labels) if labels is not None else sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    unknown = set(y_true.tolist()) - set(labels)
    if unknown:
        raise ValueError(f"true labels {sorted(map(str, unknown))[:5]} are not in labels={labels}")
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels, normalize=normalize)
    return pd.DataFrame(cm, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="predicted"))


def per_class_accuracy(y_true, y_pred, labels: Sequence | None = None) -> pd.DataFrame:
    """One row per true class (in ``labels`` order): ``label, n, correct, accuracy`` (= recall).
    Classes without samples get accuracy NaN."""
    cm = confusion_matrix(y_true, y_pred, labels)
    n = cm.sum(axis=1).to_numpy()
    correct = np.diag(cm.to_numpy())
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(n > 0, correct / np.maximum(n, 1), np.nan)
    return pd.DataFrame({"label": cm.index, "n": n, "correct": correct, "accuracy": acc})


def attribution_summary(y_true, y_pred, labels: Sequence | None = None) -> dict[str, float]:
    """``{n, classes, accuracy, balanced_accuracy}``; balanced = mean per-class recall over
    classes present in ``y_true``."""
    table = per_class_accuracy(y_true, y_pred, labels)
    present = table[table["n"] > 0]
    return {"n": int(table["n"].sum()), "classes": int(len(present)),
            "accuracy": float(present["correct"].sum() / present["n"].sum()),
            "balanced_accuracy": float(present["accuracy"].mean())}


def _missing(values: pd.Series) -> pd.Series:
    return values.isna() | (values.astype(str) == "")


def hierarchical_accuracy(true: pd.DataFrame, pred: pd.DataFrame, levels: Sequence[str]) -> pd.DataFrame:
    """Per-level accuracy of a hierarchical classifier (e.g. real/fake -> GAN/DM -> generator,
    Guarnera et al.).

    ``true`` and ``pred`` are row-aligned DataFrames with one column per level. A level is scored
    only on rows whose true value is defined (NaN or "" = not applicable, e.g. reals have no
    generator). ``chained_accuracy`` requires every level up to this one to be right (on rows
    defined at this level).

    Returns one row per level: ``level, n, accuracy, balanced_accuracy, chained_accuracy``."""
    if len(true) != len(pred):
        raise ValueError(f"true ({len(true)}) and pred ({len(pred)}) differ in length")
    missing = [c for c in levels if c not in true.columns or c not in pred.columns]
    if missing:
        raise ValueError(f"level column(s) {missing} missing from true or pred")
    rows, all_right = [], np.ones(len(true), dtype=bool)
    for level in levels:
        t = true[level].reset_index(drop=True)
        p = pred[level].reset_index(drop=True)
        defined = ~_missing(t).to_numpy()
        right = (t.astype(str) == p.astype(str)).to_numpy()
        all_right &= right | ~defined
        if defined.any():
            summ = attribution_summary(t[defined].astype(str), p[defined].astype(str))
            acc, bal, chained = summ["accuracy"], summ["balanced_accuracy"], float(all_right[defined].mean())
        else:
            acc = bal = chained = float("nan")
        rows.append({"level": level, "n": int(defined.sum()), "accuracy": acc, "balanced_accuracy": bal,
                     "chained_accuracy": chained})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# bootstrap


@dataclass(frozen=True)
class CI:
    """A point estimate with a percentile bootstrap interval (fractions)."""

    value: float
    lo: float
    hi: float
    level: float
    n_boot: int
    n_failed: int
    unit: str  # "video" when whole videos were resampled, else "frame"

    @property
    def interval(self) -> tuple[float, float]:
        return (self.lo, self.hi)


def _resample_indices(y: np.ndarray, keys, stratify: bool, n_boot: int, seed: int):
    """Yield ``n_boot`` index arrays. With ``keys``, whole clusters (videos) are drawn with
    replacement and all their frames kept; with ``stratify``, reals and fakes (videos of each
    label) are drawn separately so every resample keeps the test set's class counts."""
    rng = np.random.default_rng(seed)
    if keys is None:
        codes = np.arange(len(y))
    else:
        codes = pd.factorize(np.asarray(keys))[0]
    order = np.argsort(codes, kind="stable")
    n_clusters = codes.max() + 1
    sizes = np.bincount(codes, minlength=n_clusters)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    if stratify:
        y_codes, classes = pd.factorize(y)
        cluster_class = np.zeros(n_clusters, dtype=np.int64)
        cluster_class[codes] = y_codes  # callers check that a cluster holds one label
        strata = [np.flatnonzero(cluster_class == c) for c in range(len(classes))]
    else:
        strata = [np.arange(n_clusters)]
    for _ in range(n_boot):
        picked = np.concatenate([rng.choice(st, size=len(st), replace=True) for st in strata])
        lengths = sizes[picked]
        offsets = np.repeat(starts[picked] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        yield order[offsets + np.arange(lengths.sum())]


def _auc_resampled(y, s, resamples, chunk: int = 64) -> np.ndarray:
    """AUC of every resample, vectorised. Hand-written because 1000 calls of ``roc_auc_score`` on
    10k frames take ~4-6 s on one core; a resample is a vector of counts over the original samples, so
    one sort serves all resamples (Mann-Whitney with ties counted one half, as scikit-learn does;
    ``tests/test_metrics.py`` checks equality with the loop)."""
    y, s = check_binary(y, s)
    order = np.argsort(s, kind="stable")
    ys, ss = y[order], s[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])  # first index of each tie group
    out = []
    batch = []

    def flush():
        counts = np.stack(batch)[:, order].astype(np.float64)  # (B, N) in score order
        pos = np.add.reduceat(counts * ys, starts, axis=1)  # (B, T) fake weight per tie group
        neg = np.add.reduceat(counts * (1 - ys), starts, axis=1)
        below = np.cumsum(neg, axis=1) - neg
        num = (pos * (below + 0.5 * neg)).sum(axis=1)
        den = pos.sum(axis=1) * neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.where(den > 0, num / den, np.nan))
        batch.clear()

    for idx in resamples:
        batch.append(np.bincount(idx, minlength=len(y)))
        if len(batch) == chunk:
            flush()
    if batch:
        flush()
    return np.concatenate(out)


def bootstrap(fn: Callable[..., float | Mapping[str, float]], y, s, *extra, keys=None, stratify: bool = True,
              n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Percentile bootstrap of ``fn(y, s, *extra)`` (a float, or a dict of floats).

    Args:
        fn: metric, e.g. ``metrics.auc``, ``metrics.summary`` or
            ``lambda y, s, g: fairness.gaps(fairness.group_table(y, s, g))``.
        y, s: (N,) labels and scores; ``extra``: further (N,) arrays resampled with them.
        keys: (N,) video keys: whole videos are resampled (frames of a video are not independent).
        stratify: resample reals and fakes separately (class counts fixed, as the test set's are).
        n_boot, level, seed: resamples, interval coverage and the seed (same seed -> same CI).

    Returns:
        DataFrame indexed by metric name: ``value`` (on the full data), ``lo``, ``hi``, ``level``,
        ``n_boot``, ``n_failed`` (resamples where the metric was undefined, e.g. a group lost a
        class; excluded from the percentiles), ``unit``.
    """
    y = np.asarray(y)
    s = np.asarray(s)
    extra = tuple(np.asarray(e) for e in extra)
    if any(len(a) != len(y) for a in (s, *extra)):
        raise ValueError("all arrays passed to bootstrap must have the same length")
    if keys is not None:
        keys = np.asarray(keys)
        if len(keys) != len(y):
            raise ValueError(f"keys ({len(keys)}) and labels ({len(y)}) differ in length")
        mixed = pd.Series(y).groupby(pd.factorize(keys)[0]).nunique()
        if (mixed > 1).any():
            raise ValueError(f"{int((mixed > 1).sum())} video key(s) hold both labels; keys must identify videos")

    def as_dict(v) -> dict[str, float]:
        if isinstance(v, Mapping):
            return {k: float(x) for k, x in v.items()}
        return {getattr(fn, "__name__", "metric"): float(v)}

    point = as_dict(fn(y, s, *extra))
    names = list(point)
    samples = np.full((n_boot, len(names)), np.nan)
    resamples = _resample_indices(y, keys, stratify, n_boot, seed)
    if fn is auc and not extra:
        samples[:, 0] = _auc_resampled(y, s, resamples)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # undefined resamples are counted in n_failed instead
            for b, idx in enumerate(resamples):
                try:
                    v = as_dict(fn(y[idx], s[idx], *(e[idx] for e in extra)))
                except ValueError:
                    continue
                samples[b] = [v.get(k, np.nan) for k in names]
    alpha = (1 - level) / 2
    ok = np.isfinite(samples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN bounds
        lo, hi = np.nanquantile(samples, [alpha, 1 - alpha], axis=0)
    return pd.DataFrame({"value": [point[k] for k in names], "lo": lo, "hi": hi, "level": level,
                         "n_boot": n_boot, "n_failed": (~ok).sum(axis=0),
                         "unit": "video" if keys is not None else "frame"}, index=pd.Index(names, name="metric"))


def bootstrap_ci(fn: Callable[..., float], y, s, *extra, keys=None, stratify: bool = True, n_boot: int = 1000,
                 level: float = 0.95, seed: int = 0) -> CI:
    """:func:`bootstrap` for one float-valued metric, as a :class:`CI`
    (``run.metric("auc", ci.value, ci=ci.interval)``)."""
    row = bootstrap(fn, y, s, *extra, keys=keys, stratify=stratify, n_boot=n_boot, level=level, seed=seed).iloc[0]
    return CI(value=float(row["value"]), lo=float(row["lo"]), hi=float(row["hi"]), level=level, n_boot=n_boot,
              n_failed=int(row["n_failed"]), unit=str(row["unit"]))
