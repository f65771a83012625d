"""End-to-end tests of the notebook runner on the fixture chapter (no torch training, ~10 s each)."""

from __future__ import annotations

import json

import nbformat
import pytest

from dfbook import cli, runner

pytestmark = pytest.mark.slow


def test_success_writes_notebook_and_record(fixture_notebooks, build_dir):
    res = runner.run_chapter("fixture", "mini", {"N": 300}, quiet=True)
    assert res.status == "ok", res.error
    rec = json.loads(res.record.read_text())
    assert res.record == build_dir / "results" / "mini" / "fixture.json"
    assert rec["params"]["N"] == 300 and rec["params"]["PROFILE"] == "mini"
    assert 0.5 < rec["metrics"]["auc"]["value"] <= 1.0
    assert rec["env"]["packages"]["torch"] and rec["run_id"]
    nb = nbformat.read(res.notebook, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "N = 300" in injected[0].source
    assert res.headline.startswith("auc = ")
    outputs = [o.get("text", "") for c in nb.cells for o in c.get("outputs", [])]
    # neither tqdm.auto's widget warning (with a local path) nor text bars reach the book
    assert not [t for t in outputs if "IProgress" in t or "fixture bar" in t]


def test_failing_cell_is_reported_and_no_record_left(fixture_notebooks, build_dir):
    ok = runner.run_chapter("fixture", "mini", quiet=True)
    assert ok.record.is_file()
    res = runner.run_chapter("fixture", "mini", {"FAIL": True}, quiet=True)
    assert res.status == "failed"
    assert "ValueError: boom from the fixture notebook" in res.error
    assert 'line 2: raise ValueError("boom from the fixture notebook")' in res.error  # the failing line
    assert res.notebook.is_file()  # kept for inspection
    assert not (build_dir / "results" / "mini" / "fixture.json").exists()  # the earlier record is gone


def test_bad_parameter_value_and_name(fixture_notebooks):
    with pytest.raises(runner.RunnerError, match=r"parameter N expects int .*got 'abc'"):
        runner.resolve_parameters("fixture", "mini", {"N": "abc"})
    with pytest.raises(runner.RunnerError, match=r"unknown parameter 'NN'"):
        runner.resolve_parameters("fixture", "mini", {"NN": 3})
    with pytest.raises(runner.RunnerError, match=r"unknown chapter 'nope'"):
        runner.read_notebook("nope")
    assert cli.main(["run", "fixture", "-p", "N", "abc"]) == 2


def test_ranges_and_paths_are_checked_before_any_kernel(fixture_notebooks, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DFBOOK_DATA", str(tmp_path / "data"))
    with pytest.raises(runner.RunnerError, match=r"parameter N = -5 from command line: must be >= 10.*number of"):
        runner.resolve_parameters("fixture", "mini", {"N": -5})
    with pytest.raises(runner.RunnerError, match=r"DATA = 'x.csv'.*data/x.csv does not exist.*DFBOOK_DATA"):
        runner.resolve_parameters("fixture", "mini", {"DATA": "x.csv"})
    assert runner.resolve_parameters("fixture", "full", {"DATA": "x.csv"}, dry_run=True)["DATA"] == "x.csv"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("a\n")
    assert runner.resolve_parameters("fixture", "mini", {"DATA": "x.csv"})["DATA"] == "x.csv"  # under $DFBOOK_DATA
    assert cli.main(["run", "fixture", "-p", "DATA", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv does not exist" in capsys.readouterr().err
    # the same checks when the notebook is run by hand (JupyterLab): report.start makes them
    from dfbook import report

    with pytest.raises(runner.RunnerError, match="N = 3 from the notebook's parameters: must be >= 10"):
        report.start("fixture", {"PROFILE": "mini", "DRY_RUN": False, "SEED": 0, "N": 3, "FAIL": False, "DATA": ""})


def test_second_run_of_one_chapter_is_refused_not_failed(fixture_notebooks, build_dir):
    """Two runs of one chapter into one build folder: the second is refused in one line; the first is not
    disturbed (before the lock, the second deleted the first's record, which then reported a failure)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(_):
        try:
            return runner.run_chapter("fixture", "mini", quiet=True)
        except runner.RunnerError as e:
            return e

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, range(2)))
    refused = [r for r in results if isinstance(r, runner.RunnerError)]
    done = [r for r in results if not isinstance(r, runner.RunnerError)]
    assert len(refused) == 1 and "fixture (mini) is already running" in str(refused[0])
    assert len(done) == 1 and done[0].status == "ok", done[0].error


def test_profile_yaml_is_checked(fixture_notebooks):
    (fixture_notebooks / "params" / "fixture.full.yaml").write_text("PROFILE: full\nN: many\n")
    with pytest.raises(runner.RunnerError, match=r"fixture.full.yaml"):
        runner.resolve_parameters("fixture", "full")


def test_dry_run_records_models_and_stops(fixture_notebooks, build_dir):
    res = runner.run_chapter("fixture", "full", dry_run=True, quiet=True)
    assert res.status == "dry-run", res.error
    rec = json.loads(res.record.read_text())
    assert rec["models"]["linear"]["params_total"] == 18
    assert rec["models"]["linear"]["output_shape"] == [2, 2]
    assert "auc" not in rec["metrics"]  # stopped after the model check
    assert not (build_dir / "results" / "full" / "fixture.json").exists()


def test_cli_run_exit_codes_and_summary(fixture_notebooks, capsys):
    assert cli.main(["run", "fixture", "-p", "FAIL", "true"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "boom" in out and "chapter" in out.splitlines()[-3]
    assert cli.main(["run", "--jobs", "2"]) == 0


def test_parse_parameters_rejects_non_literals():
    with pytest.raises(runner.RunnerError, match="literal"):
        runner.parse_parameters("A: int = 1 + len([1])  # no\n")
    with pytest.raises(runner.RunnerError, match="NAME: type = literal"):
        runner.parse_parameters("A = 1\n")
    spec = runner.parse_parameters("A: int = 3  # three  {>= 1}\nB: list = [1, 2]\n")
    assert spec["A"] == {"type": "int", "default": 3, "help": "three", "allowed": ">= 1"}
    with pytest.raises(runner.RunnerError, match=r"parameter C: cannot read the rule \{>= one\}"):
        runner.parse_parameters("C: int = 3  # three  {>= one}\n")


def test_kernel_that_dies_at_start_is_restarted(fixture_notebooks, tmp_path, monkeypatch):
    """Two kernels starting at once can collide on a TCP port; the child starts a new kernel instead of failing
    the chapter. Other errors still fail at once."""
    import papermill as pm

    calls = []

    def flaky(nb, output, **kw):
        calls.append(output)
        if len(calls) == 1:
            raise RuntimeError("Kernel died before replying to kernel_info")
        nbformat.write(nb, output)

    monkeypatch.setattr(pm, "execute_notebook", flaky)
    monkeypatch.setattr(runner.time, "sleep", lambda s: None)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"chapter": "fixture", "source": str(fixture_notebooks / "fixture.md"),
                                "output": str(tmp_path / "out.ipynb"), "parameters": {}, "cwd": str(tmp_path),
                                "dry_run": False, "cell_timeout": 60}))
    assert runner._child(str(spec)) == 0 and len(calls) == 2 and (tmp_path / "out.ipynb").is_file()
    monkeypatch.setattr(pm, "execute_notebook", lambda nb, out, **kw: (_ for _ in ()).throw(RuntimeError("other")))
    with pytest.raises(RuntimeError, match="other"):
        runner._child(str(spec))
