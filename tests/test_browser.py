"""The built HTML book opened in headless Chromium: the landing page and a chapter render, and the
chapter shows a results table. Needs `_build/html` (run `dfbook book` first) and Debian's chromium
(installed by .ci/run); on CI a missing browser or book is a failure, elsewhere a skip."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from dfbook import paths

pytestmark = pytest.mark.browser
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic", "--hide-scrollbars"]


def _need(condition: bool, why: str):
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module")
def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    _need(exe is not None, "chromium is not installed (apt-get install chromium)")
    return exe


@pytest.fixture(scope="module")
def html():
    root = paths.repo_root() / "_build" / "html"
    _need((root / "index.html").is_file(), f"no built book at {root} (run `dfbook book`)")
    return root


def _render(exe, url, tmp_path, name):
    shot = tmp_path / f"{name}.png"
    common = [exe, *FLAGS, f"--user-data-dir={tmp_path / ('profile-' + name)}", "--window-size=1280,1000",
              "--virtual-time-budget=5000"]
    subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    return np.asarray(Image.open(shot).convert("L"), dtype=float), dom


def test_landing_page_and_a_chapter(chromium, html, tmp_path):
    pixels, dom = _render(chromium, (html / "index.html").as_uri(), tmp_path, "index")
    assert pixels.std() > 10, "the landing page screenshot is blank"
    assert "reproduced" in dom and "Chapters" in dom
    chapters = sorted((html / "book" / "chapters").glob("*.html"))
    _need(bool(chapters), "the book has no chapter pages")
    pixels, dom = _render(chromium, chapters[0].as_uri(), tmp_path, "chapter")
    assert pixels.std() > 10, f"the screenshot of {chapters[0].name} is blank"
    assert "class=\"dataframe\"" in dom, f"{chapters[0].name} shows no results table"
    assert "MathJax" in dom or "mathjax" in dom
