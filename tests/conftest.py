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
