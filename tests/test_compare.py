import re

import numpy as np
import pandas as pd
import pytest

from dfbook import compare, metrics


@pytest.fixture(scope="module")
def table():
    return compare.load()


def test_load_parses_every_row(table):
    raw = pd.read_csv(compare.default_path())
    assert len(table) == len(raw) > 300
    assert table["evidence"].isin(compare.EVIDENCE).all()
    assert table["source_kind"].isin(["paper", "seed", "third-party"]).all()
    assert table["value"].between(0, 1).all()  # everything a fraction after normalisation
    assert (table["source"] == raw["source"]).all()  # sources (and their tags) kept verbatim
    # one unit per (source, metric): a percent table never mixes in fractions
    assert (table.groupby(["paper_or_repo", "metric"])["unit"].nunique() == 1).all()


@pytest.mark.parametrize("filters,evidence,kind", [
    ({"paper_or_repo": "DeepfakeBench (Yan et al., NeurIPS 2023 D&B)", "test_set": "Celeb-DF-v2"}, "verified", "paper"),
    ({"paper_or_repo": "DeepfakeBench issue #109", "metric": "EER"}, "third-party-repro", "third-party"),
    ({"paper_or_repo": "Unmasked (seed repo) - derived", "metric": "F_FPR max-min (pp) gender"}, "derived", "seed"),
    ({"paper_or_repo": "Unmasked (seed repo) quoting UCF authors"}, "seed-quoted", "paper"),
    ({"system": "UnivFD-LC (CLIP ViT-L/14)", "test_set": "SAN", "metric": "AP"}, "corroborated-recall", "paper"),
    ({"system": "improved_unsup_df (baseline row)", "test_set": "UADFV"}, "unverified", "seed"),
    ({"system": "deepfakedefenders", "metric": "final score ('accuracy rate'; likely AUC x100)"},
     "verified-secondary", "paper"),
])
def test_evidence_and_kind_rules(table, filters, evidence, kind):
    rows = compare.select(table, **filters)
    assert (rows["evidence"] == evidence).all() and (rows["source_kind"] == kind).all()


def test_units_normalised(table):
    pp = compare.select(table, paper_or_repo="Unmasked (seed repo) - derived", metric="F_FPR max-min (pp) gender")
    assert pp["unit"].item() == "pp" and pp["value"].item() == pytest.approx(0.04)
    pct = compare.select(table, system="UnivFD-LC (CLIP ViT-L/14)", test_set="SAN", metric="AP")
    assert pct["unit"].item() == "percent" and pct["value"].item() == pytest.approx(0.7902)
    frac = compare.select(table, system="UCF (Xception x2)", test_set="Celeb-DF-v2")
    assert frac["unit"].item() == "fraction" and frac["value"].item() == pytest.approx(0.7527)


def test_select_regex_list_and_helpful_error(table):
    ucf = compare.select(table, system=re.compile("^UCF"), test_set="celeb-df-v2", metric=["AUC", "video_AUC"])
    assert len(ucf) >= 4 and ucf["system"].str.startswith("UCF").all()
    with pytest.raises(ValueError, match="close values: .*'Celeb-DF-v2'"):
        compare.select(table, test_set="CelebDF-v2")


def test_comparison_this_book_only_from_arguments(table):
    rows = compare.select(table, system=re.compile("^UCF"), test_set="Celeb-DF-v2", metric="AUC")
    published = compare.comparison(rows)
    assert "this book" not in set(published["source_kind"])
    ci = metrics.CI(value=0.71, lo=0.66, hi=0.76, level=0.95, n_boot=100, n_failed=0, unit="video")
    out = compare.comparison(rows, {"AUC · Celeb-DF-v2": ci}, ours_label="this book (mini)")
    assert list(out.columns[:7]) == ["quantity", "source_kind", "value", "lo", "hi", "evidence", "source"]
    mine = out[out["source_kind"] == "this book"]
    assert mine[["value", "lo", "hi"]].iloc[0].tolist() == [0.71, 0.66, 0.76]
    assert out["source_kind"].iloc[-1] == "this book"  # papers first within a quantity
    assert out["quantity"].nunique() == 1
    with pytest.raises(ValueError, match="missing or not finite"):
        compare.comparison(rows, {"AUC · Celeb-DF-v2": float("nan")})


def test_ours_from_record():
    record = {"chapter": "ucf", "run_id": "abc", "profile": "mini", "git": {"commit": "0123456789abcdef"},
              "metrics": {"cross/celebdf/auc": {"value": 0.7, "ci": [0.6, 0.8]}, "x": {"value": 0.5}}}
    ours = compare.ours_from_record(record, {"AUC · Celeb-DF-v2": "cross/celebdf/auc", "X": "x"})
    assert ours["AUC · Celeb-DF-v2"]["lo"] == 0.6 and np.isnan(compare.comparison(
        pd.DataFrame(columns=["quantity", "source_kind", "value", "evidence", "source", "system", "level"]),
        ours)["hi"].iloc[1])
    assert "ucf run abc (mini profile" in ours["X"]["source"]
    with pytest.raises(KeyError, match="not in the record"):
        compare.ours_from_record(record, {"AP": "cross/celebdf/ap"})
