from __future__ import annotations

import numpy as np
import pytest
import yaml

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


def test_band_is_a_t_prediction_interval():
    from scipy import stats

    vals = [0.60, 0.62, 0.65, 0.61, 0.63]
    lo, hi = check.band(vals, coverage=0.99)
    half = stats.t.ppf(0.995, 4) * np.std(vals, ddof=1) * np.sqrt(1.2)
    assert lo == pytest.approx(np.mean(vals) - half, abs=1e-3) and hi == pytest.approx(np.mean(vals) + half, abs=1e-3)
    assert check.band([0.5, 0.5, 0.5]) == (0.49, 0.51)          # no seed spread: the platform floor
    assert check.band([0.97, 0.99, 0.999])[1] == 1.0             # clipped to the metric's range
    assert check.band([3.0, 5.0, 4.0])[1] > 5.0                  # not a [0, 1] metric: not clipped
    with pytest.raises(ValueError, match="at least 3"):
        check.band([0.5, 0.6])


def test_spread_writes_bands_and_keeps_relations_and_comments(fixture_notebooks, build_dir):
    path = fixture_notebooks / "expected" / "fixture.yaml"
    path.write_text("# why these bands\n" + path.read_text().replace('"auc >= 0.5"', '"auc >= 0.5"   # why') +
                    "# the full profile\nfull:\n  bands:\n    auc: [0.9, 1.0]\n")
    table = check.spread("fixture", [0, 1, 2], jobs=2, write=True)
    row = table.set_index("metric").loc["auc"]
    assert len(row["values"]) == 3 and len(set(row["values"])) == 3      # the seed changes the numbers
    text = path.read_text()
    assert text.startswith("# why these bands\n")
    saved = yaml.safe_load(text)["mini"]
    lo, hi = saved["bands"]["auc"]
    assert lo <= min(row["values"]) and max(row["values"]) <= hi and [lo, hi] == row["band"]
    assert saved["relations"] == ["auc >= 0.5"] and saved["spread"]["measured"]["auc"] == row["values"]
    assert text.index("  spread:") < text.index("# the full profile")
    assert '"auc >= 0.5"   # why' in text and yaml.safe_load(text)["full"] == {"bands": {"auc": [0.9, 1.0]}}


def test_every_chapter_lists_the_published_numbers_it_compares_with():
    from dfbook.runner import list_chapters

    for chapter in list_chapters():
        rows = check.paper_rows(chapter)
        assert len(rows) and rows["source"].str.len().gt(0).all() and rows["value"].notna().all(), chapter


def test_bad_paper_selector_names_the_file(fixture_notebooks):
    path = fixture_notebooks / "expected" / "fixture.yaml"
    path.write_text(path.read_text() + "paper:\n  - {system: no such system}\n")
    with pytest.raises(ValueError, match="fixture.yaml: bad 'paper:' entry.*no such system"):
        check.paper_rows("fixture")
