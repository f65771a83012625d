"""Where things live. Every path the package uses is derived here, from the repository root or
from an environment variable; nothing depends on the current working directory.

- ``DFBOOK_DATA``  : root of the real datasets (``full`` profile); default ``<repo>/data``.
- ``DFBOOK_CACHE`` : generated benchmark, mini model zoo, feature cache; default ``<repo>/_cache``.
- ``DFBOOK_BUILD`` : executed notebooks, result records, HTML; default ``<repo>/_build``.
- ``DFBOOK_NOTEBOOKS``: chapter sources; default ``<repo>/notebooks``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

PROFILES = ("mini", "full")


def repo_root() -> Path:
    """The repository root: the folder holding ``pyproject.toml`` above this package."""
    here = Path(__file__).resolve().parent
    for parent in (here.parent, *here.parents):
        if (parent / "pyproject.toml").is_file() and (parent / "dfbook").is_dir():
            return parent
    raise RuntimeError(
        f"dfbook is not installed from a checkout (no pyproject.toml above {here}); "
        "install it with `pip install -e .` from the repository root."
    )


def _env_dir(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default


def data_dir() -> Path:
    return _env_dir("DFBOOK_DATA", repo_root() / "data")


def resolve_data_path(path: str | Path, root: str | Path | None = None) -> Path:
    """The one rule for relative paths: ``path`` as given when absolute (``~`` expanded), else under ``root``
    -- the folder of the manifest that names it -- or, without ``root``, under :func:`data_dir`
    (``$DFBOOK_DATA``), as for every path given in a chapter parameter."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else Path(root if root is not None else data_dir()) / path


def cache_dir(*parts: str) -> Path:
    """``<cache>/<parts...>``, created on demand."""
    path = _env_dir("DFBOOK_CACHE", repo_root() / "_cache").joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_entry(path: str | Path) -> Path | None:
    """The cache entry holding ``path`` (``<cache>/<area>/<entry>``, e.g. one generated corpus), or None when
    ``path`` is not in dfbook's cache: what to delete when a cached file turns out damaged."""
    root = _env_dir("DFBOOK_CACHE", repo_root() / "_cache")
    try:
        parts = Path(path).resolve().relative_to(root).parts
    except ValueError:
        return None
    return root.joinpath(*parts[:2]) if len(parts) > 2 else None


def build_dir(*parts: str) -> Path:
    """``<build>/<parts...>`` (not created)."""
    return _env_dir("DFBOOK_BUILD", repo_root() / "_build").joinpath(*parts)


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    return profile


def results_dir(profile: str) -> Path:
    """Result records of one profile: ``_build/results/<profile>/<chapter>.json``."""
    return build_dir("results", check_profile(profile))


def executed_dir(profile: str) -> Path:
    """Executed notebooks of one profile: ``_build/notebooks/<profile>/<chapter>.ipynb``."""
    return build_dir("notebooks", check_profile(profile))


def notebooks_dir() -> Path:
    """Chapter sources; ``$DFBOOK_NOTEBOOKS`` points elsewhere (the runner's tests use a fixture folder)."""
    return _env_dir("DFBOOK_NOTEBOOKS", repo_root() / "notebooks")


@functools.lru_cache(maxsize=None)  # the sources do not change while a process runs: read them once
def source_digest(*relative: str) -> str:
    """SHA-256 (12 hex) of the named source files of the dfbook package (``"bench/images.py"``, globs
    allowed): part of the cache keys of generated artifacts, so that editing the code that makes them
    can never return stale bytes. Any edit counts, comments included: a rebuild is cheaper than a doubt."""
    import hashlib

    package = Path(__file__).resolve().parent
    files = sorted({f for pattern in relative for f in package.glob(pattern)})
    if not files:
        raise FileNotFoundError(f"no dfbook source file matches {relative} under {package}")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:12]
