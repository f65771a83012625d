"""The command line: every subcommand a normal argparse parser (``-h``, options in any order), user errors in
one line with exit code 2."""

from __future__ import annotations

import pandas as pd
import pytest

from dfbook import cli


@pytest.mark.parametrize("command", ["prepare", "predict-defenders"])
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "-h"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith(f"usage: dfbook {command}")


def test_options_before_positionals(tmp_path, capsys):
    assert cli.main(["prepare", "--frames", "4", "--detector", "haar", str(tmp_path / "vids"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unrecognized arguments" not in err and len(err.splitlines()) == 1
    assert err.startswith("dfbook prepare: ") and str(tmp_path / "vids") in err  # the source does not exist


def test_predict_defenders_dry_run(monkeypatch, capsys):
    from dfbook.methods import defenders

    table = pd.DataFrame({"expert": [0], "arch": ["tiny"], "params": [12]})
    monkeypatch.setattr(defenders, "dry_run", lambda **kw: table)  # the seven 512px experts take minutes
    assert cli.main(["predict-defenders", "--dry-run"]) == 0
    assert "total parameters: 12" in capsys.readouterr().out


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(name in out for name in ("run", "check", "prepare", "predict-defenders", "bench"))
    assert "dfbook prepare -h" in out


def test_user_error_is_one_line_with_exit_code_2(monkeypatch, capsys):
    from dfbook import check

    def broken(chapters, profile):
        raise FileNotFoundError("no result record x.json; run `dfbook run x` first")

    monkeypatch.setattr(check, "check", broken)
    assert cli.main(["check", "x"]) == 2
    assert capsys.readouterr().err == "dfbook check: no result record x.json; run `dfbook run x` first\n"
