"""Cache of the generated mini corpora.

``load("faces", **params)`` or ``load("images", **params)`` returns the manifest of the corpus,
generating it first when it is not cached. The cache key holds the generator module's ``VERSION``,
its ``DEFAULTS`` overridden by ``params`` and a digest of the generating source files — everything
that changes the bytes — so a changed generator or parameter never returns stale images. Generation happens in a temporary folder that
is renamed into place when complete, under a file lock, so two notebooks running at once are safe. Every load
checks each file against the size recorded at generation and, if one changed, names the folder to delete.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import time
from pathlib import Path

import pandas as pd
from filelock import FileLock

from dfbook import manifest, paths

KINDS = {"faces": "dfbook.bench.faces", "images": "dfbook.bench.images"}


def _module(kind: str):
    if kind not in KINDS:
        raise ValueError(f"unknown corpus kind {kind!r}; expected one of {sorted(KINDS)}")
    return importlib.import_module(KINDS[kind])


def resolve(kind: str, **params) -> dict:
    """The full parameter set of a corpus (module defaults overridden by ``params``)."""
    mod = _module(kind)
    unknown = set(params) - set(mod.DEFAULTS)
    if unknown:
        raise TypeError(f"unknown {kind} corpus parameter(s) {sorted(unknown)}; known: {sorted(mod.DEFAULTS)}")
    return {**mod.DEFAULTS, **params}


def key(kind: str, **params) -> str:
    mod = _module(kind)
    blob = json.dumps({"kind": kind, "version": mod.VERSION, "params": resolve(kind, **params),
                       "source": paths.source_digest("bench/*.py")}, sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def location(kind: str, **params) -> Path:
    return paths.cache_dir("bench") / key(kind, **params)


def load(kind: str, **params) -> pd.DataFrame:
    """The corpus manifest with absolute paths; generates and caches the corpus on first use."""
    mod = _module(kind)
    full = resolve(kind, **params)
    final = location(kind, **params)
    done = final / "manifest.csv"
    if not done.is_file():
        with FileLock(str(final) + ".lock"):
            if not done.is_file():
                tmp = final.with_name(final.name + ".partial")
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                t0 = time.perf_counter()
                df = mod.generate(tmp, **full)
                manifest.write(df, tmp / "manifest.csv")
                sizes = {p: (tmp / p).stat().st_size for p in df["path"]}
                (tmp / "params.json").write_text(json.dumps(
                    {"kind": kind, "version": mod.VERSION, "params": full,
                     "seconds": round(time.perf_counter() - t0, 2), "bytes": sizes}, indent=1, default=str))
                shutil.rmtree(final, ignore_errors=True)
                tmp.rename(final)
    _verify(final)
    return manifest.read(done)  # relative paths resolved against the corpus folder


def _verify(folder: Path) -> None:
    """Every generated file is there with the size it was written with; else say which cache to delete."""
    expected = json.loads((folder / "params.json").read_text()).get("bytes", {})
    bad = [p for p, n in expected.items() if not (folder / p).is_file() or (folder / p).stat().st_size != n]
    if bad:
        raise OSError(f"the cached corpus {folder} is damaged: {len(bad)} of {len(expected)} files are missing or "
                      f"changed since generation (e.g. {bad[:3]}); delete the folder {folder} and rerun, which "
                      "regenerates it")


def info(kind: str, **params) -> dict:
    """Generation parameters and wall time recorded with a cached corpus."""
    return json.loads((location(kind, **params) / "params.json").read_text())
