"""``dfbook images``: the image-set manifest of the chapters that read generated images (univfd, defenders,
benchmark), from the adapters of :mod:`dfbook.datasets` over the sets as published.

``dfbook images OUT cnndetection univfd_diffusion`` writes ``OUT/manifest.csv`` with one row per image of every
named set (read from ``$DFBOOK_DATA/<set>``), paths relative to ``OUT`` so that ``$DFBOOK_DATA`` can move as a
whole. Images are not copied or re-encoded: the chapters read them where the publisher's archive put them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from dfbook import datasets, manifest

SETS = {"cnndetection": datasets.cnndetection, "univfd_diffusion": datasets.univfd_diffusion,
        "multiffdi": datasets.multiffdi, "generators": datasets.generator_folders, "aiface": datasets.aiface}


def build(sets: list[str], out_dir: str | Path, roots: dict[str, str | Path] | None = None) -> pd.DataFrame:
    """Rows of each of ``sets`` (names of :data:`SETS`; ``roots`` overrides a set's folder) in one manifest,
    written to ``out_dir/manifest.csv`` with paths relative to it. Returns the manifest (absolute paths)."""
    unknown = [s for s in sets if s not in SETS]
    if unknown or not sets:
        raise ValueError(f"dfbook images: unknown image set(s) {unknown}; choose from {sorted(SETS)}")
    roots = roots or {}
    parts = [SETS[s](roots[s]) if s in roots else SETS[s]() for s in dict.fromkeys(sets)]
    df = pd.concat(parts, ignore_index=True)
    out = Path(out_dir).expanduser().resolve()
    manifest.write(df.assign(path=[os.path.relpath(p, out) for p in df["path"]]), out / "manifest.csv")
    return df


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dfbook images", description=(
        "Write one manifest of generated-image sets as published (read from $DFBOOK_DATA/<set>), "
        "e.g. `dfbook images $DFBOOK_DATA/prepared/generated cnndetection univfd_diffusion`."))
    p.add_argument("out", help="output folder of manifest.csv")
    p.add_argument("sets", nargs="+", help=f"image sets: {', '.join(SETS)}")
    args = p.parse_args(argv)
    try:
        df = build(args.sets, args.out)
    except (OSError, ValueError) as e:  # DatasetError is an OSError
        print(f"dfbook images: {e}", file=sys.stderr)
        return 2
    counts = df.groupby(["dataset", "split"]).size().to_dict()
    print(f"dfbook images: {len(df)} images -> {Path(args.out) / 'manifest.csv'} ({counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
