"""The "Does it learn?" table (dfbook.learns): verdicts from the interval, numbers copied into the record."""
import pytest

from dfbook import learns, report


def _run(tmp_path, monkeypatch):
    monkeypatch.setenv("DFBOOK_BUILD", str(tmp_path))
    return report.Run("ucf", {"PROFILE": "mini", "SEED": 0})


@pytest.mark.parametrize("value, ci, expected", [
    (0.95, (0.92, 0.97), "learns"),
    (0.95, (0.85, 0.99), "cannot tell"),
    (0.60, (0.45, 0.74), "below target"),
    (0.91, None, "learns"),
    (0.89, None, "below target"),
])
def test_verdict_reads_the_interval(value, ci, expected):
    assert learns.verdict(value, ci, 0.90) == expected


def test_table_records_in_distribution_and_names_the_paper(tmp_path, monkeypatch):
    run = _run(tmp_path, monkeypatch)
    run.metric("test/frame_auc", 0.61, ci=(0.50, 0.72))
    run.metric("paper/level3_gan/acc", 0.85)
    table = learns.does_it_learn(run, [
        {"detector": "UCF", "test": "FF++-like test", "key": "test/frame_auc", "target": "auc", "metric": "frame AUC",
         "paper": {"system": "UCF (Xception x2)", "test_set": "FF++_c23", "metric": "AUC"}},
        {"detector": "level 3 (GAN)", "test": "held-out images", "key": "paper/level3_gan/acc", "target": "bacc_fine"},
    ])
    assert list(table["verdict"]) == ["below target", "learns"]
    table = table.reset_index()
    assert table.loc[0, "paper"] == "0.9705"                          # DeepfakeBench's in-domain FF++ c23 AUC
    assert table.loc[1, "paper"] == ""                                # no published number named: left empty
    assert run.metrics["in_distribution/ucf/frame_auc"] == {"value": 0.61, "ci": [0.5, 0.72]}
    assert run.metrics["in_distribution/level_3_gan/acc"]["value"] == 0.85
    assert table.loc[1, "target"] == 0.80


def test_unrecorded_key_is_named(tmp_path, monkeypatch):
    run = _run(tmp_path, monkeypatch)
    with pytest.raises(KeyError, match="test/frame_auc"):
        learns.does_it_learn(run, [{"detector": "UCF", "test": "x", "key": "test/frame_auc", "target": "auc"}])
