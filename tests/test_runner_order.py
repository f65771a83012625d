"""A chapter that reads other chapters' outputs declares them with a ``{chapters}`` parameter, and the runner runs
it after them -- also with ``--jobs 2`` (the leaderboard reads the detectors every method chapter saves)."""

from __future__ import annotations

import threading
import time

import pytest

from dfbook import params, runner

CHAPTER = """---
jupytext:
  text_representation: {{extension: .md, format_name: myst}}
kernelspec: {{display_name: Python 3, language: python, name: python3}}
---

# {name}

```{{code-cell}} ipython3
:tags: [parameters]
PROFILE: str = "mini"   # profile  {{mini | full}}
DRY_RUN: bool = False   # dry run
SEED: int = 0           # seed
{reads}```
"""


@pytest.fixture
def chapters(tmp_path, monkeypatch, build_dir):
    nb = tmp_path / "notebooks"
    (nb / "params").mkdir(parents=True)

    def write(name, reads=None):
        line = f"READS: list = {reads!r}   # chapters whose outputs this one reads  {{chapters}}\n" if reads is not None else ""
        (nb / f"{name}.md").write_text(CHAPTER.format(name=name, reads=line))
        (nb / "params" / f"{name}.mini.yaml").write_text("PROFILE: mini\n")

    monkeypatch.setenv("DFBOOK_NOTEBOOKS", str(nb))
    return write


def test_dependencies_and_order(chapters):
    chapters("alpha")
    chapters("beta")
    chapters("board", ["beta", "alpha"])
    assert runner.dependencies("board") == ["beta", "alpha"] and runner.dependencies("alpha") == []
    assert runner.order(["board", "alpha", "beta"]) == ["beta", "alpha", "board"]   # after what it reads
    assert runner.order(["alpha", "board"]) == ["alpha", "board"]                   # beta is not in this run
    assert runner.dependencies("board", overrides={"READS": ["alpha"]}) == ["alpha"]


def test_a_cycle_and_an_unknown_chapter_are_refused(chapters):
    chapters("one", ["two"])
    chapters("two", ["one"])
    with pytest.raises(runner.RunnerError, match="cycle: one -> two -> one"):
        runner.order(["one", "two"])
    spec = runner.chapter_parameters("one")
    with pytest.raises(params.ParameterError, match="READS.*'nowhere'.*must be a chapter"):
        params.check_values("one", spec, {"READS": ["nowhere"]}, "test")


def test_run_with_two_jobs_waits_for_what_a_chapter_reads(chapters, monkeypatch):
    chapters("slow")
    chapters("fast")
    chapters("board", ["slow", "fast"])
    spans, lock = {}, threading.Lock()

    def fake(chapter, profile, overrides, **kw):
        t0 = time.perf_counter()
        time.sleep({"slow": 0.6, "fast": 0.1, "board": 0.05}[chapter])
        with lock:
            spans[chapter] = (t0, time.perf_counter())
        return runner.Result(chapter, "ok", spans[chapter][1] - t0)

    monkeypatch.setattr(runner, "run_chapter", fake)
    results = runner.run(["board", "slow", "fast"], jobs=2)
    assert [r.chapter for r in results] == ["slow", "fast", "board"]
    assert spans["board"][0] >= max(spans["slow"][1], spans["fast"][1])   # started after both finished
    assert spans["fast"][0] < spans["slow"][1]                             # the independent ones ran in parallel


def test_the_leaderboard_runs_after_every_method_chapter():
    order = runner.order(runner.list_chapters())
    reads = runner.dependencies("leaderboard")
    assert set(reads) == set(runner.list_chapters()) - {"leaderboard", "benchmark"}
    assert all(order.index(ch) < order.index("leaderboard") for ch in reads)
