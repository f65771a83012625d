"""The built HTML book as a reader sees it, in headless Chromium (Playwright driving Debian's chromium).

Every page of the table of contents is opened over a loopback HTTP server (canvas reads of same-origin
images need one) and a full-page screenshot is saved to ``_build/screenshots/<page>.png`` for a person to
look at. Each page must show no ``<Figure size ...>`` text, no image that failed to load and nothing wider
than the content column (wide tables scroll inside it). Each chapter must show every figure its result record
names as a loaded, non-blank ``<img>``, every table of the record, and evidence links (CSV/PNG, the record)
that resolve. Needs ``_build/html`` (``dfbook book``), chromium (installed by .ci/run) and the ``playwright``
package (``[test]`` extra); on CI a missing piece is a failure, elsewhere a skip.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import yaml

from dfbook import paths

pytestmark = pytest.mark.browser
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--disable-quic"]
WIDTH = 1280
GENERATED = ("book/status", "book/findings")  # pages dfbook writes from the records (dfbook.pages)

# One pass over the page in the browser: everything the assertions need, as plain data.
PAGE_FACTS = """() => {
  const main = document.querySelector('main') || document.body;
  const article = document.querySelector('article.bd-article') || main;
  const col = article.getBoundingClientRect();
  const scrolls = (el) => { for (let a = el.parentElement; a && a !== article.parentElement; a = a.parentElement) {
      const ox = getComputedStyle(a).overflowX; if (ox === 'auto' || ox === 'scroll') return a; } return null; };
  const blank = (img) => {
    const c = document.createElement('canvas'); c.width = Math.min(img.naturalWidth, 400);
    c.height = Math.min(img.naturalHeight, 400);
    const g = c.getContext('2d'); g.drawImage(img, 0, 0, c.width, c.height);
    const d = g.getImageData(0, 0, c.width, c.height).data; let s = 0, s2 = 0, n = 0;
    for (let i = 0; i < d.length; i += 16) { const v = (d[i] + d[i + 1] + d[i + 2]) / 3; s += v; s2 += v * v; n++; }
    const m = s / n; return Math.sqrt(Math.max(0, s2 / n - m * m)) < 2; };
  const img = (el) => el ? {src: el.getAttribute('src'), complete: el.complete, width: el.naturalWidth,
                            blank: el.complete && el.naturalWidth > 0 ? blank(el) : null} : null;
  const tooWide = [];
  for (const el of article.querySelectorAll('table, img, pre, figure, div.cell_output > *')) {
    const r = el.getBoundingClientRect(); if (r.width === 0) continue;
    const box = scrolls(el); const frame = box ? box.getBoundingClientRect() : r;
    if (frame.right > col.right + 2 || frame.left < col.left - 2)
      tooWide.push(`${el.tagName.toLowerCase()}.${el.className} (${Math.round(frame.width)} px in a ${Math.round(col.width)} px column)`);
  }
  const scrolled = [...article.querySelectorAll('*')].filter(el => {
      const ox = getComputedStyle(el).overflowX;
      return (ox === 'auto' || ox === 'scroll') && el.scrollWidth > el.clientWidth + 1; })
    .map(el => `${el.tagName.toLowerCase()}.${el.className} scrolls (${el.scrollWidth} px in ${el.clientWidth} px)`);
  return {
    text: document.body.innerText,
    scrolled: scrolled.slice(0, 10),
    pageWidth: document.documentElement.scrollWidth, viewport: window.innerWidth,
    images: [...article.querySelectorAll('img')].map(img),
    figures: Object.fromEntries([...document.querySelectorAll('[data-dfbook-figure]')].map(
        f => [f.dataset.dfbookFigure, img(f.querySelector('img'))])),
    tables: Object.fromEntries([...document.querySelectorAll('[data-dfbook-table]')].map(
        t => [t.dataset.dfbookTable, t.querySelectorAll('table').length])),
    links: [...document.querySelectorAll('.dfbook-evidence a')].map(a => a.getAttribute('href')),
    tooWide: tooWide.slice(0, 10),
  };
}"""


def _need(condition: bool, why: str):
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def toc_pages() -> list[str]:
    """Every page of the book, as paths without suffix (``book/intro``, ``book/chapters/ucf``)."""
    toc = yaml.safe_load((paths.repo_root() / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += [c["file"] for c in part.get("chapters", [])]
    return pages


@pytest.fixture(scope="module")
def html() -> Path:
    root = paths.repo_root() / "_build" / "html"
    _need((root / "index.html").is_file(), f"no built book at {root} (run `dfbook book`)")
    return root


@pytest.fixture(scope="module")
def server(html):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(html))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    _need(exe is not None, "chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "playwright is not installed (pip install -e .[test])")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    out = paths.repo_root() / "_build" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _open(browser, url: str, shot: Path) -> dict:
    page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
    failed = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(url, wait_until="networkidle")
    page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=30_000)
    page.screenshot(path=str(shot), full_page=True)
    facts = page.evaluate(PAGE_FACTS)
    facts["failed"] = failed
    page.close()
    return facts


def _common(page: str, facts: dict) -> list[str]:
    problems = []
    if "<Figure size" in facts["text"]:
        problems.append("shows the text '<Figure size ...>' instead of a figure")
    if facts["pageWidth"] > facts["viewport"] + 1:
        problems.append(f"the page is {facts['pageWidth']} px wide in a {facts['viewport']} px window")
    problems += [f"wider than the content column: {w}" for w in facts["tooWide"]]
    problems += [f"image did not load: {i['src']}" for i in facts["images"] if not (i["complete"] and i["width"] > 0)]
    problems += [f"request failed: {f}" for f in facts["failed"]]
    return problems


def _chapter(chapter: str, facts: dict, base: str) -> list[str]:
    record_path = paths.repo_root() / "_build" / "results" / "mini" / f"{chapter}.json"
    if not record_path.is_file():
        return [f"no result record {record_path}: the chapter was not executed"]
    record = json.loads(record_path.read_text())
    problems = []
    for name in record.get("figures", {}):
        img = facts["figures"].get(name)
        if img is None:
            problems.append(f"figure {name!r} of the record is not on the page")
        elif not (img["complete"] and img["width"] > 0):
            problems.append(f"figure {name!r} did not load ({img['src']})")
        elif img["blank"]:
            problems.append(f"figure {name!r} is blank")
    for name in record.get("tables", {}):
        if not facts["tables"].get(name):
            problems.append(f"table {name!r} of the record is not on the page")
    if record.get("figures") or record.get("tables"):
        if not facts["links"]:
            problems.append("no evidence links (CSV/PNG and the result record) under tables and figures")
    html_root = paths.repo_root() / "_build" / "html"
    for href in set(facts["links"]):
        target = urlsplit(urljoin(base, href))
        local = html_root / target.path.lstrip("/")
        if not local.is_file():
            problems.append(f"evidence link {href} points to a missing file")
    return problems


def test_every_page_as_a_reader_sees_it(browser, server, html, shots):
    pages = toc_pages()
    report = {}
    for page in pages:
        url = urljoin(server, f"{page}.html")
        _need((html / f"{page}.html").is_file() or not os.environ.get("CI"), f"{page}.html was not built")
        facts = _open(browser, url, shots / f"{page.replace('/', '__')}.png")
        problems = _common(page, facts)
        if page.startswith("book/chapters/"):
            problems += _chapter(page.removeprefix("book/chapters/"), facts, url)
        elif page in GENERATED:  # the book's own tables wrap to the column: nothing to scroll sideways
            problems += [f"does not fit the column: {w}" for w in facts["scrolled"]]
        if problems:
            report[page] = problems
    assert not report, "\n".join(f"{page}:\n  " + "\n  ".join(p[:12]) + (f"\n  ... {len(p) - 12} more" if len(p) > 12 else "")
                                 for page, p in report.items())


def test_landing_page_names_the_chapters(browser, server, html, shots):
    facts = _open(browser, urljoin(server, "index.html"), shots / "index.png")
    assert "reproduced" in facts["text"] and "Chapters" in facts["text"]
    assert "MathJax" in (html / "book" / "intro.html").read_text() or "mathjax" in (html / "book" / "intro.html").read_text()
