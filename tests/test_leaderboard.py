"""dfbook.leaderboard: the evaluation matrix, its reproduction check, the selection-inflation table, the sortable
table and the results file validated against dfbook/data/results.schema.json (jsonschema, a dependency of
nbformat, so always installed with the book)."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pandas as pd
import pytest

from dfbook import detector as D
from dfbook import leaderboard as L
from dfbook import report


@pytest.fixture(scope="module")
def images():
    from dfbook.bench import corpus

    g = corpus.load("images")
    return g[(g["dataset"] == "mini_gen") & (g["domain"] == "mini_gen") & (g["split"] == "test")]


def _pick(df, n, methods):
    d = df[df["method"].isin(methods)]
    return pd.concat([g.head(n) for _, g in d.groupby("label")], ignore_index=True)


@pytest.fixture
def saved(build_dir, images):
    """Two saved detectors (random-init hierarchical level-1 nets) with their in-distribution rows."""
    import torch

    from dfbook.methods import hierarchical as hier

    run = report.Run("hierarchical", {"PROFILE": "mini", "SEED": 0})
    test = _pick(images, 8, ["real", "progan"])
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        net = hier.build("mini:resnet", 2, train_from="layer4", pretrained=False, init_seed=seed).eval()
        det = D.Detector(name, "hierarchical", net, D.Preprocess(32, net.spec["mean"], net.spec["std"]),
                         {"function": "dfbook.methods.hierarchical:build",
                          "kwargs": {"backbone": "mini:resnet", "n_classes": 2, "train_from": "layer4",
                                     "pretrained": False, "init_seed": seed}})
        D.save_trained(run, det, test, train=test, n_boot=20)
        out[det.ref] = D.load(det.ref)
    return out


def _shared(images):
    return [L.EvalSet("generator_family", "gan", _pick(images, 6, ["real", "stylegan"]), ("stylegan",)),
            L.EvalSet("generator_family", "diffusion", _pick(images, 6, ["real", "ldm"]), ("ldm",))]


def test_matrix_reproduction_and_results_file(saved, images, build_dir):
    matrix, repro = L.evaluate(saved, _shared(images), n_boot=20, max_rows=100)
    assert set(matrix["detector"]) == set(saved) and set(matrix["metric"]) == set(L.METRICS)
    per = matrix.groupby(["detector", "task"]).size()
    assert per[("hierarchical/a", "perturbation")] == 5 * (1 + sum(len(v) for v in L.PERTURBATIONS.values()))
    auc = matrix[matrix["metric"] == "frame_auc"]
    assert ((auc["lo"] <= auc["value"]) & (auc["value"] <= auc["hi"])).all()
    assert (repro["max_abs_diff"] < 1e-6).all() and (repro["rows_rescored"] == 16).all()
    # a saved score that the detector no longer gives is caught
    f = saved["hierarchical/a"].path / D.IN_DISTRIBUTION
    rows = pd.read_csv(f)
    rows.loc[0, "score"] += 0.25
    rows.to_csv(f, index=False)
    _, repro2 = L.evaluate({"hierarchical/a": saved["hierarchical/a"]}, [], n_boot=20)
    assert repro2["max_abs_diff"].iloc[0] == pytest.approx(0.25, abs=1e-6)
    out = L.export(matrix, build_dir / "results.json", profile="mini", commit="abc123", run_id="r1")
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, L.schema())
    assert len(doc["results"]) == len(matrix)
    row = doc["results"][0]
    assert {"task", "dataset", "metric", "detector", "profile", "commit", "value"} <= set(row)
    wide = L.wide(matrix)
    assert wide.columns[0] == "in-distribution" and list(wide.index) == sorted(saved)
    board = L.summary(matrix)
    assert board["generator families frame_auc"].between(0, 1).all()


def test_schema_refuses_bad_rows_and_duplicate_keys():
    good = {"task": "cross_dataset", "dataset": "celebdf_v2", "metric": "frame_auc", "detector": "ucf/ucf",
            "profile": "mini", "commit": "abc", "value": 0.7, "n": 10, "ci": [0.6, 0.8]}
    L.validate([good])
    for bad in ({**good, "value": 1.5}, {**good, "metric": "auc"}, {**good, "task": "cross"},
                {k: v for k, v in good.items() if k != "commit"}, {**good, "detector": "ucf"}, {**good, "extra": 1}):
        with pytest.raises(jsonschema.ValidationError):
            L.validate([bad])
    with pytest.raises(ValueError, match="appear twice"):
        L.validate([good, {**good, "value": 0.6}])


def test_cell_uses_video_keys_and_perturbations_change_pixels():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    s = np.clip(y * 0.3 + rng.uniform(0, 0.7, 40), 0, 1)
    keys = np.repeat(np.arange(10), 4)  # 10 videos of 4 frames
    c = L.cell(y, s, keys, n_boot=50)
    assert c["video_auc"]["n"] == 10 and c["frame_auc"]["n"] == 40
    assert c["frame_auc"]["lo"] <= c["frame_auc"]["value"] <= c["frame_auc"]["hi"]
    assert L.cell(np.zeros(5), np.ones(5), np.arange(5)) == {}  # one class: no AUC, no cell
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for kind, levels in L.PERTURBATIONS.items():
        out = L.perturb(img, kind, levels[0])
        assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img), kind
    with pytest.raises(ValueError, match="unknown perturbation"):
        L.perturb(img, "rotate", 1)


def test_selection_inflation_and_the_sortable_script():
    records = {"ucf": {"tables": {"selection": [
        {"test_set": "celebdf_v2", "corrected_auc": 0.6, "best_on_test_auc": 0.66, "corrected_epoch": 2,
         "best_on_test_epoch": 3}]}},
        "univfd": {"metrics": {"lp/in_domain/acc": {"value": 0.8}, "lp_published/in_domain/acc": {"value": 0.83}}}}
    t = L.selection_inflation(records)
    assert t["inflation"].round(3).tolist() == [0.06, 0.03]
    assert t["detector"].tolist() == ["ucf/ucf", "univfd/probe"]
    assert L.selection_inflation({}).empty
    from importlib import resources

    js = (resources.files("dfbook") / "data" / "sortable.js").read_text()
    assert "[data-dfbook-table] table" in js and "parseFloat" in js  # every recorded table, numbers as numbers
