""""Does it learn?": each chapter's detectors on held-out data of their own training distribution, first.

A cross-dataset, unseen-generator or fairness comparison between detectors means something only when each
detector has learned what it was trained on. Every chapter therefore opens its results with one table: for each
detector, its in-distribution metric (recorded earlier in the run, with its interval), the number the paper
reports for the same in-distribution test (a row of ``paper_results.csv``), and the target a working replication
should reach on ``mini`` (issue 17: AUC >= 0.90 for real/fake detection, balanced accuracy >= 0.90 for the first
hierarchical levels, >= 0.80 for the finest level). The verdict reads the 95 % interval, not the point value alone:
``learns`` (interval above the target), ``below target`` (interval below it), ``cannot tell`` (interval straddles it).

:func:`does_it_learn` copies every number it shows into the record under ``in_distribution/<detector>/<metric>``,
so ``dfbook check`` and the Findings page read the same numbers as the reader.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from dfbook import compare

#: Targets on the mini profile (issue 17), by metric kind.
TARGETS = {"auc": 0.90, "ap": 0.90, "bacc": 0.90, "bacc_fine": 0.80}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def verdict(value: float, ci: Sequence[float] | None, target: float) -> str:
    """``learns`` / ``below target`` / ``cannot tell`` for a value and its 95 % interval against ``target``
    (without an interval the point value decides between the first two)."""
    lo, hi = (ci if ci is not None else (value, value))
    if lo >= target:
        return "learns"
    if hi < target:
        return "below target"
    return "cannot tell"


def _paper(paper: Mapping | None, table: pd.DataFrame) -> tuple[float, str]:
    if not paper:
        return np.nan, ""
    rows = compare.select(table, **paper)
    if len(rows) != 1:
        raise ValueError(f"does_it_learn: the paper filters {paper} match {len(rows)} rows of paper_results.csv "
                         f"({rows['test_set'].tolist()[:4]} ...); name one published number")
    row = rows.iloc[0]
    return float(row["value"]), f"{row['system']}: {row['test_set']} {row['metric']} ({row['evidence']})"


def does_it_learn(run, rows: Sequence[Mapping]) -> pd.DataFrame:
    """The chapter's "Does it learn?" table, recorded under ``in_distribution/...``.

    ``rows``: one mapping per detector with ``detector`` (display name), ``test`` (the in-distribution test set,
    in words), ``key`` (a metric this run already recorded), ``target`` (a float, or a key of :data:`TARGETS`) and
    optionally ``paper`` (``compare.select`` filters naming one published in-distribution number) and ``metric``
    (the display name; default: the key's last part). Raises naming the key when the run has not recorded it.
    """
    table = compare.load()
    out = []
    for spec in rows:
        key = spec["key"]
        entry = run.metrics.get(key)
        if entry is None:
            raise KeyError(f"does_it_learn: metric {key!r} is not recorded yet in chapter {run.chapter!r}; record it "
                           f"with run.metric before this cell (recorded: {sorted(run.metrics)[:8]}...)")
        value, ci = float(entry["value"]), entry.get("ci")
        target = spec["target"]
        target = TARGETS[target] if isinstance(target, str) else float(target)
        metric = spec.get("metric", key.rsplit("/", 1)[-1])
        run.metric(f"in_distribution/{_slug(spec['detector'])}/{_slug(metric)}", value, ci=ci)
        paper_value, paper_source = _paper(spec.get("paper"), table)
        out.append({"detector": spec["detector"], "in-distribution test": spec["test"], "metric": metric,
                    "this book": round(value, 4), "95% CI": "" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]",
                    "target": target, "verdict": verdict(value, ci, target),
                    "paper": "" if np.isnan(paper_value) else f"{paper_value:.4g}", "paper source": paper_source, "record key": key})
    return pd.DataFrame(out).set_index("detector")
