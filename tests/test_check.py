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


def _ci_record(**metrics):
    return {"profile": "mini", "metrics": {k: ({"value": v[0], "ci": list(v[1:])} if isinstance(v, tuple) else {"value": v})
                                           for k, v in metrics.items()}}


def test_relation_verdict_uses_the_intervals():
    rec = _ci_record(a=(0.8, 0.75, 0.85), b=(0.6, 0.55, 0.65), c=(0.7, 0.6, 0.9), exact=0.5)
    assert check.relation_verdict(rec, "a >= b + 0.05")[0] == "holds"          # 0.75 >= 0.65 + 0.05
    assert check.relation_verdict(rec, "a >= c")[0] == "cannot tell"           # intervals overlap
    assert check.relation_verdict(rec, "b >= a")[0] == "does not hold"         # 0.65 < 0.75
    assert check.relation_verdict(rec, "exact <= 0.5")[0] == "holds"
    assert check.relation_verdict(rec, "a <= 0.8")[0] == "cannot tell"
    assert check.relation_verdict(rec, "nothing >= 0.5") == ("missing", "nothing not recorded")
    assert check.relation_verdict(rec, "a >= b + 0.05")[1] == "0.800 [0.750, 0.850] >= 0.600 [0.550, 0.650] + 0.050"


def test_claim_verdict_needs_the_detector_to_learn_first():
    rec = _ci_record(in_dist=(0.6, 0.5, 0.7), cross=(0.95, 0.93, 0.97))
    claim = {"relation": "cross >= 0.9", "requires": ["in_dist >= 0.9"]}
    verdict, why = check.claim_verdict(rec, claim)
    assert verdict == "mini cannot tell" and "in_dist >= 0.9" in why
    assert check.claim_verdict({**rec, "profile": "full"}, claim)[0] == "full cannot tell"
    assert check.claim_verdict(rec, {"relation": "cross >= 0.9"})[0] == "holds"
    assert check.claim_verdict(rec, {"relation": "in_dist >= 0.9"})[0] == "does not hold"


def test_every_claim_names_one_published_row_a_metric_and_a_section():
    import re

    from dfbook import compare, pages, runner

    published = compare.load()
    for chapter in runner.list_chapters():
        claims = check.load_expected(chapter).get("claims") or []
        assert claims, f"{chapter}: no claims for the Findings page"
        for i, claim in enumerate(claims):
            assert set(claim) <= {"claim", "section", "paper", "seed", "book", "relation", "requires"}, claim
            assert claim["claim"] and re.fullmatch(r"[a-z0-9-]+", claim["section"]), claim
            assert claim.get("paper") or claim.get("seed"), f"{chapter} claim {i + 1}: no published number"
            for rel in [claim["relation"], *(claim.get("requires") or [])]:
                check.relation_verdict({"metrics": {}}, rel)  # parses
            for sel in (claim.get("paper"), claim.get("seed")):
                if sel:
                    pages._published(published, sel, f"{chapter} claim {i + 1}")  # exactly one row


def test_findings_rows_link_to_sections_and_judge_the_record(build_dir, monkeypatch):
    from dfbook import pages

    run = report.start("ucf", {"PROFILE": "mini", "SEED": 0})
    run.metric("test/frame_auc", 0.95, ci=(0.93, 0.97))
    run.metric("celebdf_v2/frame_auc", 0.6, ci=(0.55, 0.66))
    run.save()
    table = pages.findings("mini")
    ucf = table[table["chapter"].str.contains("chapters/ucf.html#")]
    assert len(ucf) == len(check.load_expected("ucf")["claims"])
    assert "holds" in ucf.iloc[0]["verdict"] and "0.950 [0.930, 0.970]" in ucf.iloc[0]["this book (mini)"]
    assert "does not hold" in ucf.iloc[1]["verdict"]                   # 0.66 < 0.7 with the detector learning
    assert "cannot tell" in ucf.iloc[2]["verdict"] and "not recorded" in ucf.iloc[2]["why"]
    other = table[~table["chapter"].str.contains("chapters/ucf.html")]
    assert other["verdict"].str.contains("mini cannot tell").all()    # no record: nothing to judge
    assert "0.971<br>" in ucf.iloc[0]["paper"] or "0.970<br>" in ucf.iloc[0]["paper"]
