"""Shared fixtures. Tests write build products (records, executed notebooks) to a temporary folder;
the generated-data cache (_cache or $DFBOOK_CACHE) is shared, as it is for a student re-running a chapter."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def build_dir(tmp_path, monkeypatch) -> Path:
    """A private build folder (records, executed notebooks, logs)."""
    out = tmp_path / "build"
    monkeypatch.setenv("DFBOOK_BUILD", str(out))
    return out


@pytest.fixture
def fixture_notebooks(tmp_path, monkeypatch, build_dir) -> Path:
    """A private copy of the fixture chapters as the notebooks folder."""
    nbdir = tmp_path / "notebooks"
    shutil.copytree(FIXTURES / "notebooks", nbdir)
    monkeypatch.setenv("DFBOOK_NOTEBOOKS", str(nbdir))
    return nbdir


@pytest.fixture
def write_pngs():
    """``write_pngs(folder, n, size=32, seed=0, name="{i:03d}.png")`` -> paths of ``n`` random RGB PNGs."""
    import numpy as np
    from PIL import Image

    def write(folder: Path, n: int, size: int = 32, seed: int = 0, name: str = "{i:03d}.png") -> list[str]:
        rng = np.random.default_rng(seed)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(n):
            p = folder / name.format(i=i)
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p)
            paths.append(str(p))
        return paths

    return write
