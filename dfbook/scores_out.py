"""Where the score commands (``dfbook predict``, ``dfbook predict-defenders``) put what they could not score."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def sibling(out: Path, kind: str) -> Path:
    """``scores.csv`` -> ``scores.<kind>.csv``."""
    return out.with_name(f"{out.stem}.{kind}{out.suffix or '.csv'}")


def report_skipped(prog: str, skipped: pd.DataFrame, total: int, out: Path | None, noun: str = "file") -> None:
    """Count the unreadable inputs on stderr, one reason a line, and list them in ``OUT.skipped.csv`` when the
    scores go to a file (``skipped``: one row per input with a ``reason`` column; nothing happens when empty)."""
    if not len(skipped):
        return
    listed = sibling(out, "skipped") if out is not None else None
    if listed is not None:
        skipped.to_csv(listed, index=False)
    print(f"{prog}: skipped {len(skipped)} unreadable {noun}(s) of {total}"
          + (f", listed in {listed}" if listed else "") + ":", file=sys.stderr)
    for row in skipped.itertuples():
        print(f"  {row.reason}", file=sys.stderr)
