"""A chapter runs top-to-bottom with its default parameters and without papermill, as a student
pressing "Run all" in JupyterLab would (jupytext -> nbclient, working directory notebooks/).

One chapter is enough for what this checks (no papermill, notebooks/ as working directory, the record written):
every chapter's defaults are its mini parameters (tests/test_notebook_lint.py) and every chapter runs in the
book build. The default is the quickest chapter (unsupervised_video, about 60 s on 2 cores; benchmark took
240 s); DFBOOK_STUDENT_CHAPTER picks another."""

from __future__ import annotations

import json
import os

import jupytext
import pytest
from nbclient import NotebookClient

from dfbook import paths

CHAPTER = os.environ.get("DFBOOK_STUDENT_CHAPTER", "unsupervised_video")


@pytest.mark.slow
def test_default_parameters_run_without_papermill(build_dir, monkeypatch):
    source = paths.repo_root() / "notebooks" / f"{CHAPTER}.md"
    if not source.is_file():
        pytest.skip(f"chapter {CHAPTER} does not exist yet")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = jupytext.read(source)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(source.parent)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    record = json.loads((build_dir / "results" / "mini" / f"{CHAPTER}.json").read_text())
    assert record["status"] == "ok" and record["profile"] == "mini" and record["metrics"]
