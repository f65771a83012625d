"""Shared helpers of the dataset adapters: locating a dataset, clear errors, listing files, and
turning rows into a validated manifest."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from dfbook import manifest, paths

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
README = "data/README.md"

# Column order of every adapter's output; adapters add optional columns after these.
COLUMNS = list(manifest.REQUIRED)


class DatasetError(FileNotFoundError):
    """A dataset is missing or not in its published layout; the message names the file or folder
    and points to ``data/README.md``."""


def root_of(name: str, root: str | Path | None) -> Path:
    """``root`` if given, else ``$DFBOOK_DATA/<name>``; must be an existing folder."""
    path = Path(root).expanduser() if root is not None else paths.data_dir() / name
    if not path.is_dir():
        raise DatasetError(
            f"{name}: dataset folder {path} not found. Download the dataset and place it there "
            f"(or set $DFBOOK_DATA, or pass root=...); the expected layout is in {README}, section '{name}'.")
    return path


def need_dir(path: Path, name: str, what: str = "") -> Path:
    if not path.is_dir():
        raise DatasetError(f"{name}: folder {path} not found{' (' + what + ')' if what else ''}; "
                           f"see {README}, section '{name}', for the expected layout.")
    return path


def need_file(path: Path, name: str, what: str = "") -> Path:
    if not path.is_file():
        raise DatasetError(f"{name}: file {path} not found{' (' + what + ')' if what else ''}; "
                           f"see {README}, section '{name}', for where to get it.")
    return path


def natural_key(text: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def files(folder: Path, exts: Iterable[str], name: str, *, recursive: bool = True,
          required: bool = True) -> list[Path]:
    """Files under ``folder`` with one of ``exts`` (case-insensitive), in natural order of their
    path relative to ``folder``. ``required`` raises when there are none."""
    exts = tuple(e.lower() for e in exts)
    if recursive:  # os.walk, not Path.glob("**"): it follows symlinked sub-folders (data/README.md
        # suggests symlinking generator folders together)
        found = [Path(d) / f for d, _, names in os.walk(folder, followlinks=True) for f in names]
    else:
        found = list(folder.iterdir())
    found = [p for p in found if p.suffix.lower() in exts and p.is_file()]
    if required and not found:
        raise DatasetError(f"{name}: no {'/'.join(exts)} files in {folder}; "
                           f"see {README}, section '{name}', for the expected layout.")
    return sorted(found, key=lambda p: natural_key(p.relative_to(folder).as_posix()))


def image_format(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    return {"jpeg": "jpg"}.get(ext, ext)


def finish(rows: list[dict] | pd.DataFrame, name: str) -> pd.DataFrame:
    """Rows -> manifest with the required columns first; validated, and with one source file per
    video key and frame (two files claiming the same video and frame means an id collision)."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    if df.empty:
        raise DatasetError(f"{name}: no samples found; see {README}, section '{name}'.")
    df = df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]
    manifest.validate(df, name=name)
    clash = df.duplicated(subset=["dataset", "method", "video_id", "frame"], keep=False)
    if clash.any():
        raise DatasetError(f"{name}: {int(clash.sum())} files share a (method, video_id, frame), e.g. "
                           f"{df.loc[clash, 'path'].head(3).tolist()}; the layout has duplicate names "
                           f"(see {README}, section '{name}').")
    return df.reset_index(drop=True)
