"""The conventions every chapter source follows (see notebooks/README.md)."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import jupytext
import pytest
import yaml

from dfbook import params, paths, runner

ROOT = paths.repo_root()
CHAPTERS = sorted(p for p in (ROOT / "notebooks").glob("*.md") if p.stem.lower() != "readme")
FIXTURE = Path(__file__).parent / "fixtures" / "notebooks" / "fixture.md"
SOURCES = CHAPTERS + [FIXTURE]
BANNED = [(re.compile(r"^\s*[!%]\s*pip\b", re.M), "!pip / %pip"),
          (re.compile(r"plt\.show\(\)"), "plt.show()"),
          (re.compile(r"matplotlib\.use\("), "matplotlib.use() (kills figure capture)"),
          (re.compile(r"os\.chdir\("), "os.chdir()"),
          (re.compile(r"""["'\s(](/(home|root|work|tmp|data|mnt|Users|opt)/|[A-Za-z]:\\\\)"""), "an absolute path")]
MAX_DEF_LINES = 15


def _nb(path):
    return jupytext.read(path)


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _tagged(nb, tag):
    return [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_parameters_cell(path):
    nb = _nb(path)
    cells = _tagged(nb, "parameters")
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    assert _code(nb)[0] is cells[0], "the parameters cell is the first code cell"
    spec = runner.parse_parameters(cells[0].source)
    for name, info in spec.items():
        assert name.isupper(), f"parameter {name} must be UPPER_CASE"
        assert info["help"], f"parameter {name} needs a trailing `# comment`"
        assert info["type"] in params.TYPES, f"parameter {name}: type {info['type']} not in {list(params.TYPES)}"
    assert spec["PROFILE"]["default"] == "mini" and spec["DRY_RUN"]["default"] is False and "SEED" in spec
    params.check_values(path.stem, spec, {k: v["default"] for k, v in spec.items()}, "the defaults")  # {allowed}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_profiles_and_expected_files(path):
    nbdir = path.parent
    spec = runner.parse_parameters(_tagged(_nb(path), "parameters")[0].source)
    for profile in paths.PROFILES:
        pfile = nbdir / "params" / f"{path.stem}.{profile}.yaml"
        assert pfile.is_file(), f"missing {pfile}"
        values = yaml.safe_load(pfile.read_text()) or {}
        assert values.get("PROFILE") == profile
        params.check_values(path.stem, spec, values, str(pfile), files=False)  # files: where the data is
        if profile == "mini":  # a student's "Run all" is the CI run
            differ = {k: v for k, v in values.items() if spec[k]["default"] != v}
            assert not differ, f"{pfile} differs from the notebook defaults: {differ}"
    expected = yaml.safe_load((nbdir / "expected" / f"{path.stem}.yaml").read_text())
    assert expected.get("mini", {}).get("bands") or expected.get("mini", {}).get("relations"), \
        "the expected-results file needs mini bands or relations"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_cells(path):
    nb = _nb(path)
    dry = _tagged(nb, "dry-run")
    assert len(dry) == 1 and "model_check(" in dry[0].source, "one cell tagged 'dry-run' calling run.model_check"
    last = _code(nb)[-1]
    assert last.source.strip() == "run.save()" and "remove-cell" in last.metadata.get("tags", [])
    assert "skip-execution" not in str([c.metadata for c in nb.cells])
    for cell in _code(nb):
        assert not cell.get("outputs"), "source notebooks carry no outputs"
        for pattern, what in BANNED:
            assert not pattern.search(cell.source), f"{what} in cell:\n{cell.source[:200]}"
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                n = node.end_lineno - node.lineno + 1
                assert n <= MAX_DEF_LINES, f"{node.name} is {n} lines: move it into dfbook"


def test_sources_are_text_only():
    tracked = subprocess.run(["git", "ls-files", "notebooks/*.ipynb", "notebooks/**/*.ipynb"], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    assert not tracked, f"executed notebooks tracked under notebooks/: {tracked}"


def test_toc_lists_every_chapter():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    in_toc = sorted(f.split("/")[-1] for f in files if f.startswith("book/chapters/"))
    assert in_toc == sorted(p.stem for p in CHAPTERS)
    for f in files:
        if not f.startswith("book/chapters/"):
            assert (ROOT / f"{f}.md").is_file(), f"{f} in _toc.yml has no page"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_tables_and_figures_are_shown_by_the_run_not_by_a_return_value(path):
    """``run.table``/``run.figure`` show what they record and return None (issue 16): a chapter that used
    their return value, or ended a cell with the recorded object, would fail or show it twice."""
    for cell in _code(_nb(path)):
        tree = ast.parse(cell.source)
        statements = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("table", "figure") and getattr(node.func.value, "id", None) == "run"):
                assert id(node) in statements, f"the value of `{ast.unparse(node)[:60]}` is used"
        recorded = {ast.unparse(n.args[1]) for n in ast.walk(tree) if isinstance(n, ast.Call) and len(n.args) > 1
                    and getattr(n.func, "attr", "") == "table" and getattr(n.func.value, "id", None) == "run"}
        last = tree.body[-1] if tree.body else None
        if isinstance(last, ast.Expr):
            assert ast.unparse(last.value) not in recorded, f"`{ast.unparse(last.value)}` is shown twice"


# The leaderboard (issue 21) trains nothing: it scores the detectors the other chapters saved.
TRAINS_DETECTORS = [p for p in CHAPTERS if p.stem != "leaderboard"]


@pytest.mark.parametrize("path", TRAINS_DETECTORS, ids=lambda p: p.stem)
def test_chapter_says_whether_its_detectors_learn(path):
    """Issue 17: every chapter shows its detectors' in-distribution numbers (dfbook.learns) under a "Does it learn?"
    heading before its comparisons are read."""
    text = path.read_text()
    assert "### Does it learn?" in text, f"{path.name}: no 'Does it learn?' section"
    assert 'run.table("does_it_learn", learns.does_it_learn(run,' in text, f"{path.name}: no learns.does_it_learn table"
