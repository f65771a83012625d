"""Compare result records with each chapter's expected-results file (``dfbook check``), and measure
the run-to-run spread that justifies the bands (``dfbook spread``).

``notebooks/expected/<chapter>.yaml``::

    mini:
      bands:                      # metric key -> [low, high]
        corrected/auc: [0.62, 0.81]
      relations:                  # "<key> <op> <key or number> [+|- number]"
        - "leaky/auc >= corrected/auc"
      spread: {seeds: [0, 1, 2], measured: {corrected/auc: [0.66, 0.71, 0.77]}, margin: "..."}
    paper:                        # rows of paper_results.csv the chapter compares against (informational)
      - {system: ..., metric: AUC}
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml

from dfbook import paths, report

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_REL = re.compile(r"^\s*(\S+)\s*(>=|<=|==|>|<)\s*(\S+)\s*(?:([+-])\s*([0-9.eE+-]+))?\s*$")


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


def format_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "no checks"
    shown = table.assign(ok=table["ok"].map({True: "ok", False: "FAIL"}))
    return shown.to_string(index=False)


def spread(chapter: str, seeds: Sequence[int], profile: str = "mini", jobs: int = 1) -> pd.DataFrame:
    """Run ``chapter`` once per seed (separate build folders, shared caches) and tabulate each metric's
    values, min, max and a suggested band (min/max widened by half the range, at least 0.02)."""
    from dfbook import runner

    values: dict[str, list] = {}
    for seed in seeds:
        build = paths.build_dir("spread", chapter, f"seed{seed}")
        res = runner.run_chapter(chapter, profile, {"SEED": int(seed)}, env={"DFBOOK_BUILD": str(build)})
        if res.status == "failed":
            raise RuntimeError(f"{chapter} failed with SEED={seed}: {res.error}")
        rec = json.loads(res.record.read_text())
        for key, entry in rec["metrics"].items():
            if isinstance(entry.get("value"), (int, float)):
                values.setdefault(key, []).append(entry["value"])
    rows = []
    for key, vals in values.items():
        lo, hi = min(vals), max(vals)
        margin = max((hi - lo) / 2, 0.02)
        rows.append({"metric": key, "values": [round(v, 4) for v in vals], "min": lo, "max": hi,
                     "band": [round(lo - margin, 3), round(hi + margin, 3)]})
    table = pd.DataFrame(rows)
    out = paths.build_dir("spread", f"{chapter}.{profile}.json")
    report.write_json_atomic(out, {"chapter": chapter, "profile": profile, "seeds": list(seeds),
                                   "metrics": rows})
    return table
