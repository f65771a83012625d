import cv2
import numpy as np
import pandas as pd
import pytest

from dfbook import train
from dfbook.methods import benchmark


def _toy(n_per=16, size=16, seed=0):
    """Reals are smooth noise; 'A' fakes add a bright corner square, 'B' fakes a 2-px checkerboard."""
    rng = np.random.default_rng(seed)
    rows, imgs = [], []
    yy, xx = np.mgrid[:size, :size]
    for method, label in (("real", 0), ("A", 1), ("B", 1)):
        for i in range(n_per * (2 if label == 0 else 1)):
            im = cv2.GaussianBlur(rng.uniform(60, 190, (size, size, 3)).astype(np.float32), (0, 0), 1.5)
            if method == "A":
                im[:4, :4] += 60
            if method == "B":
                im += 25 * (((yy // 2 + xx // 2) % 2) * 2 - 1)[..., None]
            imgs.append(np.clip(im, 0, 255).astype(np.uint8))
            rows.append(dict(method=method, label=label, split="train" if i % 2 else "test",
                             content="face" if i % 3 == 0 else "car"))
    return np.stack(imgs), pd.DataFrame(rows)


def test_global_statistics_shapes_and_blur_energy_drops_with_blur():
    imgs, _ = _toy()
    s = benchmark.global_statistics(imgs)
    assert list(s.columns) == list(benchmark.STATISTICS) and len(s) == len(imgs)
    blurred = np.stack([cv2.GaussianBlur(im, (0, 0), 2.0) for im in imgs])
    assert (benchmark.global_statistics(blurred)["blur_energy"] < s["blur_energy"]).all()
    with pytest.raises(ValueError, match="uint8"):
        benchmark.global_statistics(imgs.astype(np.float32))


def test_statistic_aucs_are_direction_free():
    y = np.array([0, 0, 1, 1])
    stats = pd.DataFrame({"up": [0.1, 0.2, 0.8, 0.9], "down": [0.9, 0.8, 0.2, 0.1], "flat": [1, 1, 1, 1]})
    t = benchmark.statistic_aucs(stats, y, {"all": np.ones(4, bool)})
    assert t.loc["all", "up"] == t.loc["all", "down"] == 1.0 and t.loc["all", "flat"] == 0.5


def test_test_sets_match_content_and_unknown_group():
    _, df = _toy()
    df.loc[df.method == "A", "content"] = "face"
    sets = benchmark.test_sets(df, ["A"], ["test"], match_content=True)
    chosen = df[sets["A"]]
    assert set(chosen.split) == {"test"} and set(chosen.content) == {"face"}
    assert set(chosen.method) == {"real", "A"}
    with pytest.raises(ValueError, match="available"):
        benchmark.test_sets(df, ["Z"], ["test"])


@pytest.mark.slow
def test_difficulty_matrix_learns_own_trace_and_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("DFBOOK_CACHE", str(tmp_path))
    imgs, df = _toy()
    cfg = train.TrainConfig(epochs=3, batch_size=16, lr=3e-3, optimizer="adam", seed=0)
    auc, hist = benchmark.difficulty_matrix(imgs, df, ["A", "B"], ["A", "B"], config=cfg)
    assert auc.shape == (2, 2) and set(hist.train_on) == {"A", "B"}
    assert auc.loc["A", "A"] > 0.8 and auc.loc["B", "B"] > 0.8
    again, _ = benchmark.difficulty_matrix(imgs, df, ["A"], ["A", "B"], config=cfg, cache_key="k")
    np.testing.assert_allclose(again.loc["A"].to_numpy(), auc.loc["A"].to_numpy())
    cached, _ = benchmark.difficulty_matrix(imgs, df, ["A"], ["A", "B"], config=cfg, cache_key="k")
    np.testing.assert_allclose(cached.to_numpy(), again.to_numpy())


def test_gap_summary():
    auc = pd.DataFrame([[0.95, 0.7], [0.85, 0.92]], index=["A", "B"], columns=["A", "B"])
    g = benchmark.gap_summary(auc)
    assert g["trained_min"] == 0.92 and g["unseen_le_low"] == 0.5
    assert g["unseen_mean"] == pytest.approx(0.775)


def test_mean_spectra_show_checkerboard_peak():
    imgs, df = _toy()
    sp = benchmark.mean_spectra(imgs, df.method)
    assert list(sp) == ["A", "B", "real"] and sp["B"].shape == (16, 16)
    c = 8  # a 2-px checker (period 4 along each axis) peaks at frequency S/4 from the centre, both axes
    assert sp["B"][c + 4, c + 4] > sp["real"][c + 4, c + 4] + 1.0
