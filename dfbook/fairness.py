"""Demographic fairness of a detector: per-group metrics and the gap metrics of the AI-Face / PG-FDD
line, with the formulas of ``training/fairness_metrics.py::acc_fairness`` in Purdue-M2/AI-Face-FairnessBench
@588f80c (reference/methods_ucf_fairness_deepfakebench.md §3.3). Purdue-M2/Fairness-Generalization (read
at 096cb67) ships a different copy of that file: its per-group quantities and gap formulas (max - min over
groups) are the same, but it also computes precision at 0.5, audits gender x race only (two attribute lists,
no age), and reads one ``.npy`` pair per intersection group.

Per group g (decision rule ``s >= threshold``, default 0.5 on P(fake)): AUC_g, ACC_g, FPR_g, TPR_g,
FNR_g = 1 - TPR_g, TNR_g = 1 - FPR_g, PR_g = (TP + FP) / n_g (predicted-fake rate) and
ER_g = 1 - (TPR_g + TNR_g) / 2 (balanced error). Gaps over the groups of one attribute:

==========  ==================================================================
auc_gap     max_g AUC_g - min_g AUC_g                         (paper: G_AUC)
f_fpr       max_g FPR_g - min_g FPR_g
f_oae       max_g ACC_g - min_g ACC_g                         (overall accuracy equality)
f_dp        max(ΔPR, ΔNR) = max_g PR_g - min_g PR_g           (demographic parity)
f_meo       max(ΔFPR, ΔFNR, ΔTNR, ΔTPR) = max(ΔFPR, ΔTPR)     (max equalized odds)
f_eop       max_g TPR_g - min_g TPR_g                         (equal opportunity; extra)
er_gap      max_g ER_g - min_g ER_g                           (balanced-error gap)
==========  ==================================================================

All values are fractions (the reference code prints them x100, "percentage points").
Deviation from the reference code: it skips a group holding only one class silently (try/except);
here such a group is kept in the table with ``single_class=True``, excluded from every gap, and a
``UserWarning`` names it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from dfbook import manifest, metrics

def _error_rate(y, s, threshold: float) -> float:
    return 1 - metrics.balanced_accuracy(y, s, threshold)


#: per-group metric -> function (y, s, threshold); AUC ignores the threshold.
GROUP_METRICS = {"auc": lambda y, s, t: metrics.auc(y, s), "accuracy": metrics.accuracy, "fpr": metrics.fpr,
                 "tpr": metrics.tpr, "pred_fake_rate": metrics.predicted_fake_rate, "error_rate": _error_rate}
GAPS = {"auc_gap": "auc", "f_fpr": "fpr", "f_oae": "accuracy", "f_dp": "pred_fake_rate", "f_eop": "tpr",
        "er_gap": "error_rate"}
SEP = " × "


def group_labels(groups) -> pd.Series:
    """One group name per row: a Series/array as is, or a DataFrame's columns joined with
    ``" × "`` (an intersection such as ``gender × skin_group``). Missing values raise."""
    if isinstance(groups, pd.DataFrame):
        if groups.isna().any().any():
            raise ValueError(f"missing group values in columns {groups.columns[groups.isna().any()].tolist()}; "
                             "fill or drop those rows explicitly before a fairness analysis")
        return groups.astype(str).agg(SEP.join, axis=1).reset_index(drop=True)
    g = pd.Series(np.asarray(groups))
    if g.isna().any():
        raise ValueError(f"{int(g.isna().sum())} row(s) have no group value; fill or drop them explicitly")
    return g.astype(str)


def group_table(y, s, groups, *, threshold: float = 0.5, warn: bool = True) -> pd.DataFrame:
    """Per-group metrics, one row per group (sorted by name).

    Args:
        y: (N,) 0/1 labels (1 = fake). s: (N,) P(fake).
        groups: (N,) group per row, or a DataFrame whose columns are intersected.
        threshold: decision threshold on ``s``.
        warn: emit the one-class warning (the bootstrap silences it).

    Returns:
        Columns ``group, n, n_real, n_fake, single_class, auc, accuracy, fpr, tpr, pred_fake_rate,
        error_rate, fnr, tnr``; metrics undefined for a group (e.g. FPR without reals) are NaN.
    """
    y, s = metrics.check_binary(y, s, need_both=False)
    g = group_labels(groups)
    if len(g) != len(y):
        raise ValueError(f"groups ({len(g)}) and labels ({len(y)}) differ in length")
    rows = []
    for name in sorted(g.unique()):
        m = (g == name).to_numpy()
        yg, sg = y[m], s[m]
        n_fake = int(yg.sum())
        single = n_fake in (0, len(yg))
        row = {"group": name, "n": int(m.sum()), "n_real": int(len(yg) - n_fake), "n_fake": n_fake,
               "single_class": single}
        for metric, fn in GROUP_METRICS.items():
            row[metric] = float("nan") if single and metric == "auc" else fn(yg, sg, threshold)
        row["fnr"], row["tnr"] = 1 - row["tpr"], 1 - row["fpr"]
        rows.append(row)
    table = pd.DataFrame(rows)
    flagged = table[table["single_class"]]
    if warn and len(flagged):
        desc = ", ".join(f"{r.group!r} (n_real={r.n_real}, n_fake={r.n_fake})" for r in flagged.itertuples())
        warnings.warn(f"FAIRNESS: {len(flagged)} group(s) hold only one class: {desc}. Their AUC/FPR/TPR are "
                      "undefined; they are flagged (single_class=True) and EXCLUDED from every gap.",
                      UserWarning, stacklevel=2)
    return table


def gaps(table: pd.DataFrame) -> dict[str, float]:
    """The §3.3 gap metrics over the two-class groups of a :func:`group_table`, plus
    ``groups_used`` and ``groups_excluded`` (one-class groups). NaN when fewer than two groups."""
    used = table[~table["single_class"]]
    out: dict[str, float] = {}
    for name, col in GAPS.items():
        v = used[col].dropna()
        out[name] = float(v.max() - v.min()) if len(v) >= 2 else float("nan")
    out["f_meo"] = max(out["f_fpr"], out["f_eop"]) if len(used) >= 2 else float("nan")
    out["groups_used"] = int(len(used))
    out["groups_excluded"] = int(len(table) - len(used))
    return out


class Audit(NamedTuple):
    groups: pd.DataFrame  # group_table rows with an ``attribute`` column
    gaps: pd.DataFrame  # one row per attribute: the gap metrics and the smallest group sizes


def audit(y, s, attributes: pd.DataFrame, *, columns: Sequence[str] | None = None,
          intersections: Sequence[Sequence[str]] = (), threshold: float = 0.5) -> Audit:
    """Group tables and gaps for several attributes and intersections at once.

    ``audit(y, s, df, columns=["gender", "skin_group"], intersections=[("gender", "skin_group")])``
    analyses gender, skin group and gender × skin group. ``attributes`` (e.g. the test manifest) is
    row-aligned with ``y``; ``columns`` defaults to the manifest's demographic columns it has."""
    if columns is None:
        columns = [c for c in manifest.DEMOGRAPHICS if c in attributes.columns]
    columns = list(columns)
    specs = [(c, [c]) for c in columns] + [(SEP.join(cols), list(cols)) for cols in intersections]
    missing = sorted({c for _, cols in specs for c in cols} - set(attributes.columns))
    if missing:
        raise ValueError(f"attribute column(s) {missing} not in the table; available: {list(attributes.columns)}")
    group_rows, gap_rows = [], []
    for name, cols in specs:
        table = group_table(y, s, attributes[cols].reset_index(drop=True), threshold=threshold)
        group_rows.append(table.assign(attribute=name))
        two = table[~table["single_class"]]
        gap_rows.append({"attribute": name, **gaps(table), "min_n": int(two["n"].min()) if len(two) else 0,
                         "min_n_real": int(two["n_real"].min()) if len(two) else 0,
                         "min_n_fake": int(two["n_fake"].min()) if len(two) else 0})
    groups = pd.concat(group_rows, ignore_index=True)
    groups = groups[["attribute"] + [c for c in groups.columns if c != "attribute"]]
    return Audit(groups=groups, gaps=pd.DataFrame(gap_rows))


def group_ci(y, s, groups, *, metric: str = "fpr", threshold: float = 0.5, keys=None, n_boot: int = 1000,
             level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per-group bootstrap CI of one metric (``auc``, ``accuracy``, ``fpr``, ``tpr``,
    ``pred_fake_rate``, ``error_rate``), for :func:`dfbook.plots.fairness_bars`.

    Resamples videos when ``keys`` are given. Returns ``group, value, lo, hi, n, n_real, n_fake,
    single_class, n_failed``."""
    if metric not in GROUP_METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {list(GROUP_METRICS)}")
    fn = GROUP_METRICS[metric]
    g = group_labels(groups).to_numpy()
    table = group_table(y, s, g, threshold=threshold)

    def per_group(yb, sb, gb):
        out = {}
        for name in table["group"]:
            m = gb == name
            try:
                out[name] = fn(yb[m], sb[m], threshold) if m.any() else float("nan")
            except ValueError:  # the resample left this group with one class: counted in n_failed
                out[name] = float("nan")
        return out

    ci = metrics.bootstrap(per_group, y, s, g, keys=keys, n_boot=n_boot, level=level, seed=seed)
    ci = ci.reset_index().rename(columns={"metric": "group"})
    out = table[["group", "n", "n_real", "n_fake", "single_class"]].merge(
        ci[["group", "value", "lo", "hi", "n_failed"]], on="group")
    return out[["group", "value", "lo", "hi", "n", "n_real", "n_fake", "single_class", "n_failed"]]


#: the per-group metrics and gaps a chapter reports; :func:`audit_ci` gives each an interval.
REPORTED_METRICS = ("auc", "accuracy", "fpr", "tpr", "pred_fake_rate")
REPORTED_GAPS = ("f_fpr", "f_oae", "f_dp", "f_meo", "auc_gap")


def audit_ci(y, s, attributes: pd.DataFrame, *, columns: Sequence[str] | None = None,
             intersections: Sequence[Sequence[str]] = (), threshold: float = 0.5, keys=None,
             n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Audit:
    """:func:`audit` with a percentile bootstrap interval for every reported per-group metric
    (:data:`REPORTED_METRICS`) and every gap (:data:`REPORTED_GAPS`).

    One set of resamples (whole videos when ``keys`` are given, reals and fakes drawn separately,
    ``dfbook.metrics.bootstrap``) serves every attribute, so the intervals of one run are comparable.
    Adds ``<name>_lo`` / ``<name>_hi`` columns to both tables and ``ci_failed``: the largest number of
    resamples in which one of the row's values was undefined (a group lost a class or vanished);
    those resamples are left out of that value's percentiles. Point values equal :func:`audit`'s."""
    point = audit(y, s, attributes, columns=columns, intersections=intersections, threshold=threshold)
    specs = list(dict.fromkeys(point.gaps["attribute"]))
    labels = [group_labels(attributes[name.split(SEP)].reset_index(drop=True)).to_numpy() for name in specs]

    def values(yb, sb, *groups) -> dict[str, float]:
        out = {}
        for name, g in zip(specs, groups):
            table = group_table(yb, sb, g, threshold=threshold, warn=False)
            for row in table.itertuples():
                out.update({f"{name}\t{row.group}\t{m}": getattr(row, m) for m in REPORTED_METRICS})
            out.update({f"{name}\t\t{gap}": v for gap, v in gaps(table).items() if gap in REPORTED_GAPS})
        return out

    ci = metrics.bootstrap(values, y, s, *labels, keys=keys, n_boot=n_boot, level=level, seed=seed)
    parts = ci.index.to_series().str.split("\t", expand=True)
    ci = ci.assign(attribute=parts[0].to_numpy(), group=parts[1].to_numpy(), name=parts[2].to_numpy())

    def widen(table: pd.DataFrame, rows: pd.DataFrame, on: list[str]) -> pd.DataFrame:
        wide = rows.pivot_table(index=on, columns="name", values=["lo", "hi"], aggfunc="first", dropna=False)
        wide.columns = [f"{name}_{bound}" for bound, name in wide.columns]
        failed = rows.groupby(on)["n_failed"].max().rename("ci_failed")
        return table.merge(wide.join(failed).reset_index(), on=on, how="left")

    groups = widen(point.groups, ci[ci["group"] != ""], ["attribute", "group"])
    gap_table = widen(point.gaps, ci[ci["group"] == ""].drop(columns="group"), ["attribute"])
    return Audit(groups=groups, gaps=gap_table)
