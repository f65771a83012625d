"""Compare result records with each chapter's expected-results file (``dfbook check``), and measure
the run-to-run spread that justifies the bands (``dfbook spread``).

``notebooks/expected/<chapter>.yaml``::

    mini:
      bands:                      # metric key -> [low, high]
        corrected/auc: [0.62, 0.81]
      relations:                  # "<key> <op> <key or number> [+|- number]"
        - "leaky/auc >= corrected/auc"
      spread: {seeds: [0, 1, 2, 3, 4], coverage: 0.999, measured: {corrected/auc: [...]}}   # dfbook spread --write
    paper:                        # rows of paper_results.csv the chapter compares against (informational)
      - {system: ..., metric: AUC}
    claims:                       # the book's "Findings" page: never checked, judged (see claim_verdict)
      - claim: "what the paper says, in words"
        section: linear-probe-and-nearest-neighbour   # anchor of the chapter's section that shows it
        paper: {system: ..., test_set: ..., metric: ...}   # one row of paper_results.csv (optional)
        seed: {system: ..., test_set: ..., metric: ...}    # the seed's row (optional)
        book: lp/unseen/ap                                   # this book's number
        relation: "lp/unseen/ap >= 0.9"                      # what "the claim holds" means here
        requires: ["lp/in_domain/ap >= 0.9"]                 # the detector learns first; else "cannot tell"
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from dfbook import paths, report

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_REL = re.compile(r"^\s*(\S+)\s*(>=|<=|==|>|<)\s*(\S+)\s*(?:([+-])\s*([0-9.eE+-]+))?\s*$")
PAPER_COLUMNS = ["system", "train_set", "test_set", "metric", "value", "evidence", "source"]
COVERAGE = 0.999  # ~40 bands are checked per CI run: at 99.9 % each, a correct run fails about one CI run in 25
MIN_HALF_WIDTH = 0.01  # metrics that do not move with the seed still move with the platform's float kernels


def expected_path(chapter: str) -> Path:
    return paths.notebooks_dir() / "expected" / f"{chapter}.yaml"


def load_expected(chapter: str) -> dict:
    path = expected_path(chapter)
    if not path.is_file():
        raise FileNotFoundError(f"{chapter}: no expected-results file {path}")
    return yaml.safe_load(path.read_text()) or {}


def _operand(record: dict, token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return report.metric_value(record, token)


def check_record(chapter: str, record: dict, expected: dict, profile: str) -> pd.DataFrame:
    """One row per band or relation: ``check, expected, measured, ok``."""
    section = expected.get(profile) or {}
    rows = []
    for key, band in (section.get("bands") or {}).items():
        lo, hi = float(band[0]), float(band[1])
        value = report.metric_value(record, key)
        ok = value is not None and lo <= value <= hi
        rows.append({"chapter": chapter, "check": key, "expected": f"[{lo:.3f}, {hi:.3f}]",
                     "measured": "missing" if value is None else f"{value:.4f}", "ok": ok})
    for rel in section.get("relations") or []:
        m = _REL.match(rel)
        if not m:
            raise ValueError(f"{expected_path(chapter)}: cannot parse relation {rel!r} "
                             "(expected '<key> <op> <key or number> [+ number]')")
        lhs_key, op, rhs_key, sign, offset = m.groups()
        lhs, rhs = _operand(record, lhs_key), _operand(record, rhs_key)
        if rhs is not None and offset:
            rhs = rhs + float(offset) if sign == "+" else rhs - float(offset)
        ok = lhs is not None and rhs is not None and OPS[op](lhs, rhs)
        measured = "missing" if lhs is None or rhs is None else f"{lhs:.4f} {op} {rhs:.4f}"
        rows.append({"chapter": chapter, "check": rel, "expected": "holds", "measured": measured, "ok": ok})
    return pd.DataFrame(rows, columns=["chapter", "check", "expected", "measured", "ok"])


def _bounds(record: dict, token: str) -> tuple[float, float, float] | None:
    """(value, low, high) of a metric (its 95 % interval when recorded, else the value) or a number."""
    try:
        v = float(token)
        return v, v, v
    except ValueError:
        entry = record.get("metrics", {}).get(token)
    if entry is None or entry.get("value") is None:
        return None
    v = float(entry["value"])
    lo, hi = entry.get("ci") or (v, v)
    return v, float(lo if lo is not None else v), float(hi if hi is not None else v)


def relation_verdict(record: dict, relation: str) -> tuple[str, str]:
    """``(verdict, measured)`` of one relation with the intervals the record carries: ``"holds"`` when it
    holds for every value inside both 95 % intervals, ``"does not hold"`` when it fails for every one,
    ``"cannot tell"`` when the intervals straddle it, ``"missing"`` when a metric was not recorded. Metrics
    recorded without an interval count as exact."""
    m = _REL.match(relation)
    if not m:
        raise ValueError(f"cannot parse relation {relation!r} (expected '<key> <op> <key or number> [+ number]')")
    lhs_key, op, rhs_key, sign, offset = m.groups()
    lhs, rhs = _bounds(record, lhs_key), _bounds(record, rhs_key)
    if lhs is None or rhs is None:
        return "missing", f"{lhs_key if lhs is None else rhs_key} not recorded"
    shift = (float(offset) if sign == "+" else -float(offset)) if offset else 0.0
    (lv, llo, lhi), (rv, rlo, rhi) = lhs, (rhs[0] + shift, rhs[1] + shift, rhs[2] + shift)
    plain = rhs[0], rhs[1], rhs[2]
    if op in (">=", ">"):
        worst, best = OPS[op](llo, rhi), OPS[op](lhi, rlo)
    elif op in ("<=", "<"):
        worst, best = OPS[op](lhi, rlo), OPS[op](llo, rhi)
    else:
        worst = best = OPS[op](lv, rv)
    text = (f"{lv:.3f}" + (f" [{llo:.3f}, {lhi:.3f}]" if llo != lhi else "") + f" {op} {plain[0]:.3f}"
            + (f" [{plain[1]:.3f}, {plain[2]:.3f}]" if plain[1] != plain[2] else "")
            + (f" {sign} {float(offset):.3f}" if offset else ""))
    return ("holds" if worst else "does not hold" if not best else "cannot tell"), text


def claim_verdict(record: dict, claim: dict) -> tuple[str, str]:
    """``(verdict, why)`` of one claim of an expected-results file (its ``claims:`` list): ``"mini cannot
    tell"`` (or the profile's name) when one of its ``requires`` relations (the detector learns what it is
    trained on) does not hold, or when the intervals straddle the claim's ``relation``; otherwise
    ``"holds"`` or ``"does not hold"``."""
    profile = record.get("profile", "mini")
    for req in claim.get("requires") or []:
        verdict, measured = relation_verdict(record, req)
        if verdict != "holds":
            why = "not recorded" if verdict == "missing" else f"measured {measured}"
            return f"{profile} cannot tell", f"precondition `{req}` does not hold ({why})"
    verdict, measured = relation_verdict(record, claim["relation"])
    if verdict == "missing":
        return f"{profile} cannot tell", f"`{claim['relation']}`: {measured}"
    if verdict == "cannot tell":
        return f"{profile} cannot tell", f"`{claim['relation']}`: the 95 % intervals straddle it ({measured})"
    return verdict, f"`{claim['relation']}`: {measured}"


def check(chapters: Sequence[str] | None = None, profile: str = "mini") -> tuple[bool, pd.DataFrame]:
    """Check every chapter's record; a missing record or expected file is a failure."""
    from dfbook.runner import list_chapters

    frames = []
    for ch in chapters or list_chapters():
        try:
            record = report.load(ch, profile)
            frames.append(check_record(ch, record, load_expected(ch), profile))
        except FileNotFoundError as exc:
            frames.append(pd.DataFrame([{"chapter": ch, "check": "record", "expected": "present",
                                         "measured": str(exc), "ok": False}]))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return bool(len(table)) and bool(table["ok"].all()), table


def paper_rows(chapter: str) -> pd.DataFrame:
    """The published numbers the chapter's expected-results file points at (its ``paper:`` list of
    ``dfbook.compare.select`` filters), with value, evidence tag and source from ``paper_results.csv``.
    Which of them the chapter measures, and how close it gets, is the chapter's comparison table."""
    from dfbook import compare

    table = compare.load()
    try:
        rows = [compare.select(table, **sel) for sel in load_expected(chapter).get("paper") or []]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{expected_path(chapter)}: bad 'paper:' entry: {exc}") from None
    if not rows:
        return pd.DataFrame(columns=["chapter", *PAPER_COLUMNS])
    return pd.concat(rows, ignore_index=True).drop_duplicates().assign(chapter=chapter)[["chapter", *PAPER_COLUMNS]]


def format_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "no checks"
    shown = table.assign(ok=table["ok"].map({True: "ok", False: "FAIL"}))
    return shown.to_string(index=False)


def band(values: Sequence[float], coverage: float = COVERAGE) -> tuple[float, float]:
    """Prediction interval for one more run, from ``n`` runs that differ only in the seed:
    ``mean ± t_{(1+coverage)/2, n-1} · sd · sqrt(1 + 1/n)`` (Student t, normal runs assumed), at least
    ``±MIN_HALF_WIDTH``, clipped to [0, 1] when every value lies there. The seed reshuffles splits,
    initialisation and batches, which covers the smaller perturbation of running on another CPU."""
    from scipy import stats

    v = np.asarray(values, float)
    if len(v) < 3:
        raise ValueError(f"a band needs at least 3 runs, got {len(v)}")
    half = stats.t.ppf((1 + coverage) / 2, len(v) - 1) * v.std(ddof=1) * np.sqrt(1 + 1 / len(v))
    lo, hi = v.mean() - max(half, MIN_HALF_WIDTH), v.mean() + max(half, MIN_HALF_WIDTH)
    if v.min() >= 0 and v.max() <= 1:
        lo, hi = max(lo, 0.0), min(hi, 1.0)
    return round(float(lo), 3), round(float(hi), 3)


def spread(chapter: str, seeds: Sequence[int], profile: str = "mini", jobs: int = 1,
           write: bool = False) -> pd.DataFrame:
    """Run ``chapter`` once per seed (separate build folders, shared caches, ``jobs`` at a time) and
    tabulate each numeric metric's values and :func:`band`. ``write`` replaces the bands and the measured
    spread in the chapter's expected-results file, for the metrics it already bands (comments above
    the ``mini:`` line are kept; relations untouched)."""
    from concurrent.futures import ThreadPoolExecutor

    from dfbook import runner

    def one(seed):
        build = paths.build_dir("spread", chapter, f"seed{seed}")
        res = runner.run_chapter(chapter, profile, {"SEED": int(seed)}, env={"DFBOOK_BUILD": str(build)})
        if res.status == "failed":
            raise RuntimeError(f"{chapter} failed with SEED={seed}: {res.error} (log: {res.log})")
        return json.loads(res.record.read_text())

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        records = list(pool.map(one, seeds))
    values: dict[str, list] = {}
    for rec in records:
        for key, entry in rec["metrics"].items():
            if isinstance(entry.get("value"), (int, float)) and not isinstance(entry.get("value"), bool):
                values.setdefault(key, []).append(float(entry["value"]))
    rows = [{"metric": key, "values": [round(v, 4) for v in vals], "mean": float(np.mean(vals)),
             "sd": float(np.std(vals, ddof=1)), "band": list(band(vals))}
            for key, vals in values.items() if len(vals) == len(seeds)]
    table = pd.DataFrame(rows)
    out = paths.build_dir("spread", f"{chapter}.{profile}.json")
    report.write_json_atomic(out, {"chapter": chapter, "profile": profile, "seeds": list(seeds),
                                   "coverage": COVERAGE, "metrics": rows})
    if write:
        write_bands(chapter, profile, list(seeds), {r["metric"]: r for r in rows})
    return table


def write_bands(chapter: str, profile: str, seeds: list[int], rows: dict[str, dict]) -> Path:
    """Put measured bands into ``notebooks/expected/<chapter>.yaml`` for the keys it already bands.
    Only the ``bands:`` and ``spread:`` blocks of the profile are rewritten; relations and comments stay."""
    path = expected_path(chapter)
    lines = path.read_text().splitlines(keepends=True)
    section = (yaml.safe_load("".join(lines)) or {}).get(profile) or {}
    keys = list(section.get("bands") or {})
    missing = [k for k in keys if k not in rows]
    if missing:
        raise KeyError(f"{path}: banded metrics {missing} were not measured by the spread runs")
    blocks = {"bands": {k: rows[k]["band"] for k in keys},
              "spread": {"seeds": seeds, "coverage": COVERAGE, "measured": {k: rows[k]["values"] for k in keys}}}
    for name, value in blocks.items():
        lines = _replace_block(lines, profile, name, value, path)
    path.write_text("".join(lines))
    return path


def _replace_block(lines: list[str], profile: str, name: str, value, path: Path) -> list[str]:
    """Swap the ``  <name>:`` block under the top-level ``<profile>:`` key for ``value`` (append if absent)."""
    top = [i for i, line in enumerate(lines) if line[:1] not in ("", " ", "#", "\n")]
    try:
        begin = next(i for i in top if lines[i].split("#")[0].strip() == f"{profile}:")
    except StopIteration:
        raise KeyError(f"{path}: no top-level '{profile}:' section") from None
    end = next((i for i in top if i > begin), len(lines))
    body = yaml.safe_dump({name: value}, sort_keys=False, default_flow_style=None, width=110)
    new = ["  " + line + "\n" for line in body.splitlines()]
    head = next((i for i in range(begin + 1, end) if lines[i].startswith(f"  {name}:")), None)
    if head is None:
        while end > begin + 1 and lines[end - 1][:1] in ("#", "\n"):  # comments above the next section stay there
            end -= 1
        return lines[:end] + new + lines[end:]
    stop = next((i for i in range(head + 1, end) if lines[i].strip() and not lines[i].startswith("   ")), end)
    return lines[:head] + new + lines[stop:]
