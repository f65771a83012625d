"""The one table format for every dataset, real or synthetic (DESIGN.md, "Shared contracts").

Required columns
    path      str   image file (absolute, or relative to the manifest's ``root`` attribute)
    label     int   1 = fake, 0 = real
    dataset   str   e.g. ``ffpp``, ``celebdf_v2``, ``mini_faces``, ``mini_gen``
    method    str   manipulation or generator (``real`` for real samples)
    video_id  str   explicit id, never parsed from a path; for still images: one id per image
    frame     int   frame index within the video (0 for still images)
    identity  str   person (faces) or content instance (scenes); every face in the image counts
    split     str   ``train`` / ``val`` / ``test`` (or ``""`` before splitting)

Optional columns used by some chapters
    source_identity  str  donor identity of a face swap (its face is in the image too)
    family           str  ``real`` / ``gan`` / ``diffusion`` / ``autoregressive`` / ``face_manipulation``
    content          str  content class of a generated or real scene image
    domain           str  cross-dataset domain (``ffpp``, ``celebdf_v1``, ...)
    format           str  ``png`` / ``jpg``
    skin_tone (int 1..10), skin_group, gender, age_group   demographic attributes
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dfbook import paths

REQUIRED = ("path", "label", "dataset", "method", "video_id", "frame", "identity", "split")
SPLITS = ("train", "val", "test", "")
DEMOGRAPHICS = ("skin_tone", "skin_group", "gender", "age_group")


class ManifestError(ValueError):
    """A manifest violates the contract; the message says which rows and how to fix them."""


def _rows(df: pd.DataFrame, mask, limit: int = 5) -> str:
    bad = df.loc[mask]
    shown = ", ".join(str(p) for p in bad["path"].head(limit)) if "path" in bad else str(list(bad.index[:limit]))
    more = f" (and {len(bad) - limit} more)" if len(bad) > limit else ""
    return f"{len(bad)} row(s): {shown}{more}"


def validate(df: pd.DataFrame, *, name: str = "manifest", check_files: bool = False) -> pd.DataFrame:
    """Check the contract and return ``df`` unchanged. Raises :class:`ManifestError` naming the
    offending column and rows."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{name}: missing column(s) {missing}; a manifest needs {list(REQUIRED)} "
            "(see dfbook/manifest.py). Video and identity ids must be explicit columns."
        )
    if df.empty:
        raise ManifestError(f"{name}: no rows")
    bad_label = ~df["label"].isin([0, 1])
    if bad_label.any():
        raise ManifestError(f"{name}: label must be 0 (real) or 1 (fake); {_rows(df, bad_label)}")
    for col in ("path", "video_id", "identity", "method", "dataset"):
        empty = df[col].isna() | (df[col].astype(str) == "")
        if empty.any():
            raise ManifestError(f"{name}: empty {col!r} in {_rows(df, empty)}")
    frame = pd.to_numeric(df["frame"], errors="coerce")
    bad_frame = frame.isna() | (frame != frame.round()) | (frame < -1)
    if bad_frame.any():
        raise ManifestError(f"{name}: frame must be an integer frame index (0 for a still image, -1 for a whole "
                            f"video); got {df.loc[bad_frame, 'frame'].head(3).tolist()} in {_rows(df, bad_frame)}")
    bad_split = ~df["split"].fillna("").isin(SPLITS)
    if bad_split.any():
        raise ManifestError(f"{name}: split must be one of {SPLITS}; {_rows(df, bad_split)}")
    real_not_real = (df["label"] == 0) & (df["method"] != "real")
    if real_not_real.any():
        raise ManifestError(f"{name}: real rows (label 0) must have method 'real'; {_rows(df, real_not_real)}")
    both = df.groupby("path")["label"].transform("nunique") > 1
    if both.any():
        raise ManifestError(f"{name}: the same file is listed as real and as fake in {_rows(df, both)}; "
                            "a file has one label -- fix the rows that give it the other")
    dup = df.duplicated(subset=["dataset", "method", "video_id", "frame", "path"])
    if dup.any():
        raise ManifestError(f"{name}: duplicated (dataset, method, video_id, frame, path) in {_rows(df, dup)}")
    if check_files:
        gone = ~df["path"].map(lambda p: Path(p).is_file())
        if gone.any():
            raise ManifestError(f"{name}: files not found for {_rows(df, gone)}")
    return df


def video_key(df: pd.DataFrame) -> pd.Series:
    """The explicit video key ``dataset/method/video_id``. FF++'s ``000_003`` exists in four
    manipulation folders and must stay four videos, so the method is part of the key."""
    return df["dataset"].astype(str) + "/" + df["method"].astype(str) + "/" + df["video_id"].astype(str)


def content_hash(df: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """A stable hash of the manifest's content as it stands, absolute paths included (row order matters:
    features are row-aligned): the key of a cache on this machine. A result record uses :func:`data_hash`."""
    cols = list(columns) if columns is not None else sorted(df.columns)
    h = hashlib.sha256()
    h.update(",".join(cols).encode())
    h.update(pd.util.hash_pandas_object(df[cols].astype(str), index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def data_hash(df: pd.DataFrame) -> str:
    """The hash a result record carries: the same on every machine holding the same data. Paths count
    relative to the dataset root (the deepest folder holding every file) and with each file's size (-1 when
    missing); every other column as in :func:`content_hash`."""
    if "path" not in df or df.empty:
        return content_hash(df)
    paths_ = df["path"].astype(str)
    absolute = paths_.map(os.path.isabs)
    root = Path(os.path.commonpath(list(paths_[absolute]))) if absolute.any() else None
    if root is not None and root.is_file():
        root = root.parent

    def portable(p: str) -> str:
        return Path(p).relative_to(root).as_posix() if root is not None and os.path.isabs(p) else p

    def size(p: str) -> int:
        try:
            return os.stat(p).st_size
        except OSError:
            return -1

    return content_hash(df.assign(path=paths_.map(portable), _size=paths_.map(size)))


def identities(df: pd.DataFrame) -> pd.Series:
    """Every identity visible in a row: its ``identity`` plus the ``source_identity`` of a swap."""
    ids = df["identity"].astype(str)
    if "source_identity" in df.columns:
        src = df["source_identity"].fillna("").astype(str)
        ids = ids.where(src == "", ids + "|" + src)
    return ids


def check_disjoint(df: pd.DataFrame, by: Iterable[str] = ("identity", "video", "path"),
                   splits: Sequence[str] = ("train", "val", "test")) -> pd.DataFrame:
    """Prove that no identity (including swap donors), no video and no file crosses the given splits.

    Returns a table ``kind, split_a, split_b, shared`` (all zeros when clean) and raises
    :class:`ManifestError` listing examples when anything is shared."""
    rows, problems = [], []
    for kind in by:
        if kind == "path":
            sets = {s: set(df.loc[df["split"] == s, "path"].astype(str)) for s in splits}
        elif kind == "identity":
            keys = identities(df).str.split("|")
            sets = {s: set(k for ks in keys[df["split"] == s] for k in ks) for s in splits}
        elif kind == "video":
            vk = video_key(df)
            sets = {s: set(vk[df["split"] == s]) for s in splits}
        else:
            raise ValueError(f"unknown disjointness kind {kind!r}; use 'identity', 'video' or 'path'")
        for i, a in enumerate(splits):
            for b in splits[i + 1:]:
                shared = sets[a] & sets[b]
                rows.append({"kind": kind, "split_a": a, "split_b": b, "shared": len(shared)})
                if shared:
                    problems.append(f"{len(shared)} {kind}(s) in both {a} and {b}, e.g. {sorted(shared)[:3]}")
    table = pd.DataFrame(rows)
    if problems:
        raise ManifestError("splits are not disjoint: " + "; ".join(problems))
    return table


def read(path: str | Path) -> pd.DataFrame:
    """Read and validate a manifest CSV; relative ``path`` values are resolved against the CSV's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} not found")
    try:
        df = pd.read_csv(path, dtype={"video_id": str, "identity": str, "source_identity": str, "split": str},
                         keep_default_na=False)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ManifestError(f"{path} is not a manifest CSV ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                            f"expected UTF-8 text with a header row of at least {list(REQUIRED)}") from None
    validate(df, name=str(path))
    if "path" in df:
        df["path"] = [str(paths.resolve_data_path(p, path.parent)) for p in df["path"].astype(str)]
    return df


def write(df: pd.DataFrame, path: str | Path) -> Path:
    """Validate, then write atomically."""
    validate(df, name=str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def counts(df: pd.DataFrame, by: Sequence[str] = ("split", "method", "label")) -> pd.DataFrame:
    """Rows, videos and identities per group, for the data tables every chapter shows."""
    g = df.assign(_video=video_key(df)).groupby(list(by), dropna=False)
    return g.agg(frames=("path", "size"), videos=("_video", "nunique"),
                 identities=("identity", "nunique")).reset_index()


def stratified_ids(ids: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Assign each unique id to a split with the given fractions (deterministic for a seed)."""
    uniq = np.array(sorted(set(map(str, ids))))
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    names = list(fractions)
    cuts = np.cumsum([fractions[n] for n in names])
    cuts = np.round(cuts / cuts[-1] * len(uniq)).astype(int)
    out, start = {}, 0
    for n, stop in zip(names, cuts):
        out.update({u: n for u in uniq[start:stop]})
        start = stop
    return out
