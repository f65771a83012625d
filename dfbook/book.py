"""Build the HTML book from the executed notebooks (``dfbook book``).

Jupyter Book 1.x renders the notebooks papermill executed (``execute_notebooks: off``); only the
run-status and findings pages execute at build time (they read the result records). Staging copies each
chapter's executed notebook of the chosen profile into ``book/chapters/`` (an ignored folder), and a local
MathJax and the book's stylesheet into ``_build/assets`` so the pages render without the internet.

Evidence: every table and figure a chapter recorded (``report.Run.table`` / ``Run.figure``, which tag their
outputs with ``{"dfbook": {...}}`` metadata) becomes, in the staged notebook, an HTML block with the figure's
PNG or the scrollable table, and under it links to download the CSV or PNG and the result record, with the
record's profile, seed, commit and data-manifest hashes. After the build the result folder is copied to
``_build/html/evidence/<profile>/`` so the links resolve in the published book.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import nbformat

from dfbook import paths, runner

GENERATED_PAGES = ("book/status.md", "book/findings.md")  # executed at build time (mystnb execution_mode: force)
EVIDENCE = "evidence"  # _build/html/evidence/<profile>/: copies of the result records, tables (CSV), figures (PNG)

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
            record_file = paths.results_dir(profile) / f"{chapter}.json"
            record = json.loads(record_file.read_text()) if record_file.is_file() else None
            add_evidence(nb, record, chapter, profile, page_dir=target)
            nbformat.write(nb, target / f"{chapter}.ipynb")
        else:
            missing.append(chapter)
            (target / f"{chapter}.md").write_text(PLACEHOLDER.format(chapter=chapter, profile=profile))
    return missing


def _provenance(record: dict | None, run_id: str | None) -> tuple[str, str]:
    """(visible text, tooltip) naming the run an output came from."""
    if record is None:
        return "no result record for this run (the chapter failed or was interrupted)", ""
    if run_id and record.get("run_id") != run_id:
        raise RuntimeError(f"{record.get('chapter')}: the executed notebook (run {run_id}) and its result record "
                           f"(run {record.get('run_id')}) come from different runs; re-run "
                           f"`dfbook run {record.get('chapter')} --profile {record.get('profile')}`")
    git = record.get("git") or {}
    commit = (git.get("commit") or "unknown")[:10] + (" (dirty)" if git.get("dirty") else "")
    seed = (record.get("params") or {}).get("SEED", "none")
    data = record.get("data") or {}
    hashes = ", ".join(f"{name} {info.get('manifest_hash', '?')}" for name, info in data.items())
    visible = (f"profile {record.get('profile')} · seed {seed} · commit {commit} · run {record.get('run_id')}"
               + (f" · data {hashes}" if hashes else ""))
    tooltip = (f"finished {record.get('finished')}; data manifests (content hashes): {hashes or 'none recorded'}")
    return visible, tooltip


def _evidence_html(kind: str, name: str, info: dict, record: dict | None, base: str, profile: str) -> str:
    """The download line under a table or figure."""
    chapter = record.get("chapter") if record else None
    visible, tooltip = _provenance(record, info.get("run_id"))
    links = []
    if record is not None:
        rel = Path(info["file"]).relative_to(Path("results") / profile).as_posix()
        label = "PNG" if kind == "figure" else f"CSV ({info['rows']} rows)" if "rows" in info else "CSV"
        links.append(f'<a href="{base}/{rel}" download>{label}</a>')
        links.append(f'<a href="{base}/{chapter}.json">result record</a>')
    return (f'<span class="dfbook-name">{kind} <code>{html.escape(name)}</code></span>'
            + "".join(f" · {link}" for link in links)
            + f' · <span class="dfbook-provenance" title="{html.escape(tooltip)}">{html.escape(visible)}</span>')


def add_evidence(nb, record: dict | None, chapter: str, profile: str, page_dir: Path) -> int:
    """Rewrite the outputs tagged by ``report.Run.table``/``figure`` into HTML blocks with their evidence
    links (see the module docstring); returns how many were rewritten. ``page_dir`` is where the page is
    staged, for the relative links to ``_build/html/evidence/<profile>/``."""
    base = os.path.relpath(paths.repo_root() / EVIDENCE / profile, page_dir).replace(os.sep, "/")
    done = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            info = (out.get("metadata") or {}).get("dfbook")
            if not info or out.get("output_type") not in ("display_data", "execute_result"):
                continue
            kind, name = info["kind"], info["name"]
            caption = _evidence_html(kind, name, info, record, base, profile)
            anchor = f'{kind}-{name}'.replace("/", "-")
            if kind == "figure":
                rel = Path(info["file"]).relative_to(Path("results") / profile).as_posix()
                src = f"{base}/{rel}" if record is not None else f"data:image/png;base64,{out['data']['image/png']}"
                block = (f'<figure class="dfbook-figure" id="{anchor}" data-dfbook-figure="{html.escape(name)}">'
                         f'<img src="{src}" alt="{html.escape(chapter)}: {html.escape(name)}">'
                         f'<figcaption class="dfbook-evidence">{caption}</figcaption></figure>')
            else:
                block = (f'<div class="dfbook-table" id="{anchor}" data-dfbook-table="{html.escape(name)}">'
                         f'<div class="dfbook-scroll">{out["data"].get("text/html", "")}</div>'
                         f'<p class="dfbook-evidence">{caption}</p></div>')
            out["data"] = {"text/html": block, "text/plain": out["data"].get("text/plain", "")}
            done += 1
    return done


def copy_evidence(profile: str, html_dir: Path | None = None) -> Path:
    """Copy the result records, tables and figures of ``profile`` into the built HTML."""
    out = (html_dir or paths.repo_root() / "_build" / "html") / EVIDENCE / profile
    shutil.rmtree(out, ignore_errors=True)
    src = paths.results_dir(profile)
    if src.is_dir():
        shutil.copytree(src, out, ignore=shutil.ignore_patterns(".*"))
    return out


def stage_assets() -> Path:
    """The book's stylesheet (``dfbook/data/book.css``) and the sortable-table script into ``_build/assets``."""
    out = paths.build_dir("assets")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(str(resources.files("dfbook") / "data" / "book.css")), out / "dfbook.css")
    shutil.copy2(Path(str(resources.files("dfbook") / "data" / "sortable.js")), out / "dfbook-sortable.js")
    return out


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
    stage_assets()
    for page in GENERATED_PAGES:  # Sphinx rebuilds only changed sources: these read the records, always rebuild
        os.utime(paths.repo_root() / page)
    env = {**os.environ, "DFBOOK_BOOK_PROFILE": profile, "HF_HUB_OFFLINE": "1"}
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(paths.repo_root()), "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, env=env, cwd=paths.repo_root())
    copy_evidence(profile)
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
