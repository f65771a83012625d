from __future__ import annotations

import pytest

from dfbook import check, report


def _record(**metrics):
    return {"metrics": {k: {"value": v} for k, v in metrics.items()}}


def test_bands_and_relations():
    expected = {"mini": {"bands": {"a": [0.5, 0.9], "b": [0.0, 0.1]},
                         "relations": ["a >= c", "c <= a - 0.05", "a > missing"]}}
    table = check.check_record("ch", _record(a=0.8, b=0.2, c=0.7), expected, "mini")
    assert list(table["ok"]) == [True, False, True, True, False]
    assert table.loc[1, "measured"] == "0.2000"
    assert table.loc[4, "measured"] == "missing"


def test_unparsable_relation():
    with pytest.raises(ValueError, match="cannot parse relation"):
        check.check_record("ch", _record(a=1), {"mini": {"relations": ["a is big"]}}, "mini")


def test_check_fails_on_missing_record(fixture_notebooks, build_dir):
    ok, table = check.check(["fixture"], "mini")
    assert not ok and "dfbook run fixture" in table.loc[0, "measured"]
    run = report.start("fixture", {"PROFILE": "mini"})
    run.metric("auc", 0.7)
    run.save()
    ok, table = check.check(["fixture"], "mini")
    assert ok, check.format_table(table)
