"""What the paper reports, what the seed reports, what this book measures: the table every chapter
ends with.

The published numbers live in ``dfbook/data/paper_results.csv``, a verbatim copy of the research
table (``reference/paper_results.csv``; columns ``system, paper_or_repo, train_set, test_set, metric,
value, level, source``). :func:`load` adds three parsed columns and normalises the values:

``value``        always a **fraction** (the raw number is kept in ``value_raw``; ``unit`` says what it was:
                 ``"fraction"``, ``"percent"`` when a rate is > 1, ``"pp"`` for percentage-point gaps and
                 gains -- metrics named ``(pp)`` or ``*gain*`` -- both divided by 100).
``evidence``     how far the number was checked; first matching rule in :data:`EVIDENCE_RULES`.
``source_kind``  who reports it: ``paper`` (authors or the benchmark), ``seed`` (the repository the
                 chapter replicates) or ``third-party`` (someone else's re-run); :data:`KIND_RULES`.

This book's numbers never come from this file: :func:`comparison` takes them as arguments, read from a
run's result record (:func:`ours_from_record`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from dfbook.metrics import CI

COLUMNS = ("system", "paper_or_repo", "train_set", "test_set", "metric", "value", "level", "source")

#: Evidence vocabulary, most to least trustworthy (legends of the reference method cards).
EVIDENCE = ("verified", "verified-secondary", "third-party-repro", "derived", "seed-quoted",
            "corroborated-recall", "unverified")

# (pattern searched in "paper_or_repo | source", evidence). A bracketed tag in `source` ([verified],
# [seed-quoted], ...) wins over these; "[verified image]" (read off a figure in the repo) -> verified.
EVIDENCE_RULES: tuple[tuple[str, str], ...] = (
    (r"quoting", "seed-quoted"),                       # the seed repeating an author's number
    (r"origin unknown", "unverified"),
    (r"\bderived\b", "derived"),                       # recomputed from released result files (card C §1.4)
    (r"github\.com/[^ ]+/issues/\d+", "third-party-repro"),
    (r"press release", "verified-secondary"),
    (r"@[0-9a-f]{7}|README|\.json|\.png|demo", "verified"),  # read in a repo file at a commit ([V] in cards A/C)
)

# (pattern searched in "paper_or_repo", kind); first match wins, default "paper".
KIND_RULES: tuple[tuple[str, str], ...] = (
    (r"quoting", "paper"),                             # an author's number, quoted by the seed
    (r"seed repo|student repo", "seed"),
    (r"JohnPrice11|NYCUhsuchen|HighwayWu", "seed"),    # seed repos of chapters 000-002 (DESIGN.md); for
                                                       # DeepFakeDefenders the seed is the authors' own repo
    (r"issue #\d+|graydove", "third-party"),
)

SOURCE_KINDS = ("paper", "seed", "third-party", "this book")


def _evidence(paper_or_repo: str, source: str) -> str:
    tag = re.search(r"\[([a-z][a-z -]*)\]", source)
    if tag:
        name = tag.group(1).strip()
        name = "verified" if name == "verified image" else name
        if name not in EVIDENCE:
            raise ValueError(f"unknown evidence tag [{name}] in source {source!r}; known: {EVIDENCE}")
        return name
    text = f"{paper_or_repo} | {source}"
    for pattern, evidence in EVIDENCE_RULES:
        if re.search(pattern, text, flags=re.IGNORECASE):
            return evidence
    raise ValueError(f"no evidence rule matches source {source!r}; add a [tag] to the row or a rule to "
                     "dfbook.compare.EVIDENCE_RULES")


def _kind(paper_or_repo: str) -> str:
    for pattern, kind in KIND_RULES:
        if re.search(pattern, paper_or_repo, flags=re.IGNORECASE):
            return kind
    return "paper"


def _unit(metric: str, value: float) -> str:
    if "(pp)" in metric or "gain" in metric.lower():
        return "pp"
    return "percent" if value > 1 else "fraction"


def default_path() -> Path:
    return Path(str(resources.files("dfbook") / "data" / "paper_results.csv"))


def load(path: str | Path | None = None) -> pd.DataFrame:
    """The published numbers with ``value`` (fraction), ``value_raw``, ``unit``, ``evidence`` and
    ``source_kind`` columns. Raises naming the file when a column is missing or a row has no
    parseable evidence."""
    path = Path(path) if path is not None else default_path()
    if not path.is_file():
        raise FileNotFoundError(f"paper results table {path} not found (it ships with dfbook as "
                                "dfbook/data/paper_results.csv; reinstall with `pip install -e .`)")
    df = pd.read_csv(path, dtype={c: str for c in COLUMNS if c != "value"}, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(COLUMNS)}")
    raw = pd.to_numeric(df["value"], errors="coerce")
    if raw.isna().any():
        raise ValueError(f"{path}: non-numeric value in row(s) {df.index[raw.isna()].tolist()[:5]}")
    out = df.rename(columns={"value": "value_raw"}).assign(value_raw=raw)
    out["unit"] = [_unit(m, v) for m, v in zip(out["metric"], out["value_raw"])]
    out["value"] = np.where(out["unit"] == "fraction", out["value_raw"], out["value_raw"] / 100)
    out["evidence"] = [_evidence(p, s) for p, s in zip(out["paper_or_repo"], out["source"])]
    out["source_kind"] = [_kind(p) for p in out["paper_or_repo"]]
    return out[["system", "paper_or_repo", "train_set", "test_set", "metric", "level", "value", "value_raw",
                "unit", "evidence", "source_kind", "source"]]


Match = str | re.Pattern | Sequence[str] | None


def _mask(column: pd.Series, match: Match) -> pd.Series:
    if match is None:
        return pd.Series(True, index=column.index)
    if isinstance(match, re.Pattern):
        return column.str.contains(match)
    options = [match] if isinstance(match, str) else list(match)
    return column.str.strip().str.lower().isin([o.strip().lower() for o in options])


def select(table: pd.DataFrame, *, system: Match = None, paper_or_repo: Match = None, train_set: Match = None,
           test_set: Match = None, metric: Match = None, source_kind: Match = None,
           evidence: Match = None) -> pd.DataFrame:
    """Rows matching every given filter. A string matches exactly (case-insensitive), a list any of
    its strings, a compiled ``re`` pattern by search: ``select(t, system=re.compile("^UCF"),
    test_set="Celeb-DF-v2", metric="AUC")``. An empty selection raises, suggesting close values."""
    filters = {"system": system, "paper_or_repo": paper_or_repo, "train_set": train_set, "test_set": test_set,
               "metric": metric, "source_kind": source_kind, "evidence": evidence}
    mask = pd.Series(True, index=table.index)
    for col, match in filters.items():
        step = mask & _mask(table[col], match)
        if match is not None and not step.any():
            values = sorted(table.loc[mask, col].unique())
            hint = (difflib.get_close_matches(str(match), values, n=5, cutoff=0.3)
                    if isinstance(match, str) else values[:8])
            raise ValueError(f"no paper_results row with {col}={match!r} (after the other filters); "
                             f"close values: {hint}")
        mask = step
    return table[mask].copy()


def ours_from_record(record: Mapping, keys: Mapping[str, str]) -> dict[str, dict]:
    """``{quantity: {"value", "lo", "hi", "source"}}`` for :func:`comparison`, read from a result
    record (``dfbook.report.load(chapter)``); ``keys`` maps each quantity to a metric key."""
    out = {}
    for quantity, key in keys.items():
        entry = record.get("metrics", {}).get(key)
        if entry is None:
            raise KeyError(f"metric {key!r} not in the record of chapter {record.get('chapter')!r}; "
                           f"available: {sorted(record.get('metrics', {}))[:10]}")
        ci = entry.get("ci") or (None, None)
        out[quantity] = {"value": entry["value"], "lo": ci[0], "hi": ci[1],
                         "source": f"{record.get('chapter')} run {record.get('run_id')} ({record.get('profile')}"
                                   f" profile, commit {str((record.get('git') or {}).get('commit'))[:10]}): {key}"}
    return out


def _ours_row(quantity: str, value, label: str) -> dict:
    if isinstance(value, CI):
        v, lo, hi, src = value.value, value.lo, value.hi, f"{label} ({value.unit}-level bootstrap CI)"
    elif isinstance(value, Mapping):
        v, lo, hi, src = value["value"], value.get("lo"), value.get("hi"), value.get("source", label)
    else:
        v, lo, hi, src = value, None, None, label
    if v is None or not np.isfinite(float(v)):
        raise ValueError(f"this book's value for {quantity!r} is missing or not finite ({v!r})")
    return {"quantity": quantity, "source_kind": "this book", "value": float(v),
            "lo": np.nan if lo is None else float(lo), "hi": np.nan if hi is None else float(hi),
            "evidence": "measured", "source": src, "system": label, "level": ""}


def comparison(rows: pd.DataFrame, ours: Mapping[str, float | CI | Mapping] | None = None, *,
               quantity: str | Callable[[pd.Series], str] = "{metric} · {test_set}",
               ours_label: str = "this book") -> pd.DataFrame:
    """Paper, seed and this book side by side.

    Args:
        rows: a :func:`select` result (or several concatenated). If it has a ``quantity`` column it
            is used; otherwise ``quantity`` (a format string over the row's columns, or a function of
            the row) names each row.
        ours: this run's numbers by quantity: a float, a :class:`dfbook.metrics.CI`, or a mapping with
            ``value`` (+ ``lo``, ``hi``, ``source``) such as :func:`ours_from_record` returns. Values
            are fractions.
        ours_label: shown as the system/source of this book's rows (e.g. ``"this book (mini)"``).

    Returns:
        Columns ``quantity, source_kind, value, lo, hi, evidence, source, system, level``, sorted by
        quantity (in order of first appearance) then paper, seed, third-party, this book.
    """
    rows = rows.copy()
    if "quantity" not in rows.columns:
        name = quantity if callable(quantity) else (lambda r: quantity.format(**r.to_dict()))
        rows["quantity"] = rows.apply(name, axis=1) if len(rows) else pd.Series(dtype=str)
    published = rows.assign(lo=np.nan, hi=np.nan)[
        ["quantity", "source_kind", "value", "lo", "hi", "evidence", "source", "system", "level"]]
    mine = pd.DataFrame([_ours_row(q, v, ours_label) for q, v in (ours or {}).items()],
                        columns=published.columns)
    table = pd.concat([published, mine], ignore_index=True) if len(mine) else published.reset_index(drop=True)
    order = {q: i for i, q in enumerate(dict.fromkeys(table["quantity"]))}
    table["_q"] = table["quantity"].map(order)
    table["_k"] = table["source_kind"].map({k: i for i, k in enumerate(SOURCE_KINDS)})
    return table.sort_values(["_q", "_k"], kind="stable").drop(columns=["_q", "_k"]).reset_index(drop=True)
