"""Build the HTML book from the executed notebooks (``dfbook book``).

Jupyter Book 1.x renders the notebooks papermill executed (``execute_notebooks: off``); only the
run-status page executes at build time (it reads the result records). Staging copies each chapter's
executed notebook of the chosen profile into ``book/chapters/`` (an ignored folder) and a local MathJax
into ``_build/assets`` so formulas render without the internet.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import nbformat

from dfbook import paths, runner

PLACEHOLDER = """# {chapter}

```{{warning}}
This chapter has not been executed on the `{profile}` profile, so there is nothing to show.
Run `dfbook run {chapter} --profile {profile}` and rebuild the book.
```
"""


def stage_chapters(profile: str, chapters: Sequence[str] | None = None) -> list[str]:
    """Copy executed notebooks into ``book/chapters/``; returns the chapters that were missing
    (a placeholder page tells the reader how to produce them)."""
    target = paths.repo_root() / "book" / "chapters"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    missing = []
    for chapter in chapters or runner.list_chapters():
        src = paths.executed_dir(profile) / f"{chapter}.ipynb"
        if src.is_file():
            nb = nbformat.read(src, as_version=4)
            nb.metadata.setdefault("dfbook", {})["profile"] = profile
            nbformat.write(nb, target / f"{chapter}.ipynb")
        else:
            missing.append(chapter)
            (target / f"{chapter}.md").write_text(PLACEHOLDER.format(chapter=chapter, profile=profile))
    return missing


def stage_mathjax() -> Path:
    """Copy MathJax 3 (from the ``django-static-mathjax`` wheel on PyPI) to ``_build/assets/mathjax``:
    ``tex-chtml.js`` and its web fonts, about 2 MB instead of the 24 MB distribution."""
    try:
        es5 = resources.files("mathjax") / "static" / "mathjax" / "es5"
    except ModuleNotFoundError as exc:
        raise RuntimeError("MathJax is not installed: `pip install -e .[book]` installs django-static-mathjax") from exc
    es5 = Path(str(es5))
    out = paths.build_dir("assets", "mathjax")
    fonts = out / "output" / "chtml" / "fonts" / "woff-v2"
    fonts.mkdir(parents=True, exist_ok=True)
    shutil.copy2(es5 / "tex-chtml.js", out / "tex-chtml.js")
    for font in (es5 / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"):
        shutil.copy2(font, fonts / font.name)
    return out


def build_html(profile: str = "mini") -> int:
    """``jupyter-book build . -W -n --keep-going``: any warning (a broken page, a failed status page)
    fails the build. Returns the exit code."""
    stage_mathjax()
    env = {**os.environ, "DFBOOK_BOOK_PROFILE": profile, "HF_HUB_OFFLINE": "1"}
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(paths.repo_root()), "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, env=env, cwd=paths.repo_root())
    index = paths.build_dir("html", "index.html")
    if proc.returncode == 0:
        print(f"book: {index}")
    return proc.returncode


def book(profile: str = "mini", *, run_first: bool = True, jobs: int = 1) -> int:
    """Run every chapter (unless ``run_first`` is False), stage, build. Non-zero when any chapter
    failed or is missing, or the build failed — the HTML is still built for inspection."""
    failed = []
    if run_first:
        results = runner.run(None, profile, jobs=jobs)
        failed = [r.chapter for r in results if r.status == "failed"]
    missing = stage_chapters(profile)
    code = build_html(profile)
    if failed or missing:
        print(f"book: failed chapters {failed}, not executed {missing}", file=sys.stderr)
        return 1
    return code
