"""Figures and tables as the reader gets them: shown once each in the executed notebook (whatever the
matplotlib import order), then staged into the book with their evidence links (issue 16)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from dfbook import book, paths, runner

pytestmark = pytest.mark.slow
FIGURES = {"before_pyplot", "after_pyplot", "pyplot_made"}
TABLES = {"first_scores", "wide"}


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The fixture chapter run once headless (papermill), in a private build folder."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("book")
    shutil.copytree(Path(__file__).parent / "fixtures" / "notebooks", root / "notebooks")
    mp.setenv("DFBOOK_NOTEBOOKS", str(root / "notebooks"))
    mp.setenv("DFBOOK_BUILD", str(root / "build"))
    res = runner.run_chapter("fixture", "mini", quiet=True)
    assert res.status == "ok", res.error
    yield nbformat.read(res.notebook, as_version=4), json.loads(res.record.read_text()), root
    mp.undo()


def _tagged(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if (o.get("metadata") or {}).get("dfbook")]


def test_each_figure_and_table_is_shown_once_as_image_or_html(executed):
    nb, record, _ = executed
    assert set(record["figures"]) == FIGURES and set(record["tables"]) == TABLES
    texts = [json.dumps(o.get("data", o.get("text", ""))) for c in nb.cells for o in c.get("outputs", [])]
    assert not [t for t in texts if "<Figure size" in t], "a figure printed as its repr"
    shown = {}
    for out in _tagged(nb):
        info = out.metadata["dfbook"]
        shown.setdefault((info["kind"], info["name"]), []).append(out)
        assert info["run_id"] == record["run_id"]
    assert sorted(shown) == sorted([("figure", f) for f in FIGURES] + [("table", t) for t in TABLES])
    assert all(len(v) == 1 for v in shown.values()), "shown more than once"
    for name in FIGURES:
        out = shown[("figure", name)][0]
        png = base64.b64decode(out["data"]["image/png"])
        assert png == (paths.build_dir() / record["figures"][name]).read_bytes()  # the saved file, as saved
        assert Image.open(io.BytesIO(png)).size[0] > 100
    # the pyplot-made figure is not displayed a second time by an inline backend
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == len(FIGURES)
    for name in TABLES:
        assert "<table" in shown[("table", name)][0]["data"]["text/html"]
        csv = paths.build_dir() / "results" / "mini" / "fixture" / f"{name}.csv"
        assert csv.is_file() and csv.read_text().count("\n") == len(record["tables"][name]) + 1


def test_staging_adds_evidence_links_that_resolve(executed, tmp_path):
    nb, record, root = executed
    staged = nbformat.from_dict(json.loads(json.dumps(nb)))
    page_dir = paths.repo_root() / "book" / "chapters"
    assert book.add_evidence(staged, record, "fixture", "mini", page_dir=page_dir) == len(FIGURES | TABLES)
    html_dir = tmp_path / "html"
    book.copy_evidence("mini", html_dir=html_dir)
    page = html_dir / "book" / "chapters"
    blocks = [o["data"]["text/html"] for o in _tagged(staged)]
    assert all("image/png" not in o["data"] for o in _tagged(staged))
    for block in blocks:
        hrefs = re.findall(r'(?:href|src)="([^"]+)"', block)
        assert len(hrefs) >= 2
        for href in hrefs:
            assert (page / href).resolve().is_file(), href
        assert f"commit {record['git']['commit'][:10]}" in block or record["git"]["commit"] is None
        assert "seed 0" in block and "profile mini" in block and record["run_id"] in block
    figure = next(b for b in blocks if 'data-dfbook-figure="pyplot_made"' in b)
    assert re.search(r'<img src="[^"]+/fixture/pyplot_made\.png"', figure)
    table = next(b for b in blocks if 'data-dfbook-table="wide"' in b)
    assert 'class="dfbook-scroll"' in table and "wide.csv" in table and "fixture.json" in table


def test_staging_refuses_a_record_of_another_run(executed):
    nb, record, _ = executed
    staged = nbformat.from_dict(json.loads(json.dumps(nb)))
    with pytest.raises(RuntimeError, match="different runs"):
        book.add_evidence(staged, {**record, "run_id": "someoneelse"}, "fixture", "mini",
                          page_dir=paths.repo_root() / "book" / "chapters")


def test_a_failed_run_is_staged_without_links(executed):
    nb, _, _ = executed
    staged = nbformat.from_dict(json.loads(json.dumps(nb)))
    book.add_evidence(staged, None, "fixture", "mini", page_dir=paths.repo_root() / "book" / "chapters")
    block = next(o["data"]["text/html"] for o in _tagged(staged) if o.metadata["dfbook"]["kind"] == "figure")
    assert "no result record" in block and "data:image/png;base64," in block
