from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dfbook import report


def test_record_roundtrip_is_json_and_atomic(build_dir):
    run = report.start("demo", {"PROFILE": "mini", "SEED": 3, "lower": 1, "X": 0.5, "ARR": np.zeros(2)})
    assert run.params == {"PROFILE": "mini", "SEED": 3, "X": 0.5}
    run.metric("test/auc", np.float64(0.75), ci=(0.7, 0.8), headline=True)
    run.metric("nan_metric", float("nan"))
    run.table("t", pd.DataFrame({"a": [1, 2], "b": [np.int64(3), 4]}))
    path = run.save()
    rec = json.loads(path.read_text())
    assert path == build_dir / "results" / "mini" / "demo.json"
    assert rec["metrics"]["test/auc"] == {"value": 0.75, "ci": [0.7, 0.8]}
    assert rec["metrics"]["nan_metric"]["value"] is None
    assert rec["tables"]["t"] == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
    assert not list(path.parent.glob(".*tmp"))
    assert report.headline_of(rec) == "test/auc = 0.750 [0.700, 0.800]"
    from dfbook import pages

    table = pages.status_table("mini")
    assert list(table.index) == ["demo"] and table.loc["demo", "torch"] and table.loc["demo", "cpu"]
    assert table.loc["demo", "expected results"] == "no expected-results file"


def test_unknown_profile_and_missing_record(build_dir):
    with pytest.raises(ValueError, match="unknown profile"):
        report.start("demo", {"PROFILE": "huge"})
    with pytest.raises(FileNotFoundError, match="dfbook run demo"):
        report.load("demo", "mini")


def test_model_check_counts_and_dry_run_saves(build_dir):
    import torch

    run = report.start("demo", {"PROFILE": "full", "DRY_RUN": True})
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    net[0].weight.requires_grad_(False)
    table = run.model_check({"net": (net, (2, 4))})
    assert table.loc[0, "params_total"] == 23 and table.loc[0, "params_trainable"] == 11
    rec = report.load("demo", "full", dry_run=True)
    assert rec["status"] == "dry-run" and rec["models"]["net"]["output_shape"] == [2, 2]


def test_status_page_fits_and_lists_every_check(build_dir):
    from dfbook import pages

    run = report.start("benchmark", {"PROFILE": "mini", "SEED": 0})
    run.metric("faces/trained_mean", 0.95)
    run.save()
    page = pages.status_html("mini")
    assert "built" in page and "cores" in page and "GiB" in page
    assert page.count('class="dataframe dfbook-wrap"') >= 3          # runs, environment, benchmark's checks
    assert "<summary><b>benchmark</b>:" in page and "faces/trained_mean" in page and "FAILS" in page
