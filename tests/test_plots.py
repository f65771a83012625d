import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from threadpoolctl import threadpool_limits

from dfbook import compare, fairness, metrics, plots


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    g = rng.choice(["female", "male"], 200)
    return y, s, g


@pytest.fixture(autouse=True)
def no_pyplot_state():
    """Factories must not create pyplot figures (they would display twice and leak memory)."""
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


def _check(fig, n_axes_min=1):
    assert isinstance(fig, Figure)
    assert len([a for a in fig.axes if a.get_visible()]) >= n_axes_min
    fig.canvas.draw()  # renders without error
    return fig


def test_score_plots(scored):
    y, s, g = scored
    fig = _check(plots.roc_curves({"a": (y, s), "b": (y, 1 - s)}, log_fpr=True))
    assert "AUC" in fig.axes[0].get_legend().get_texts()[0].get_text()
    _check(plots.score_distributions(y, s, g), 2)
    _check(plots.score_distributions(y, s))


def test_tsne_is_seeded(scored):
    y, _, _ = scored
    x = np.random.default_rng(1).normal(size=(200, 8)) + y[:, None]
    with threadpool_limits(1):  # OpenMP spin-waiting makes t-SNE 10x slower on a shared 2-core machine
        a = plots.tsne(x, y, seed=0, max_points=80)
        b = plots.tsne(x, y, seed=0, max_points=80)
    assert "80 of 200" in a.axes[0].get_title()
    pa = np.vstack([c.get_offsets() for c in a.axes[0].collections])
    pb = np.vstack([c.get_offsets() for c in b.axes[0].collections])
    np.testing.assert_allclose(pa, pb)


def test_matrices():
    cm = metrics.confusion_matrix(["a", "b", "b", "c"], ["a", "b", "c", "c"], labels=["c", "b", "a"])
    fig = _check(plots.confusion(cm))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["c", "b", "a"]
    assert "(1)" in fig.axes[0].texts[0].get_text()
    auc = pd.DataFrame([[0.99, 0.7], [0.6, 0.95]], index=["train A", "train B"], columns=["test A", "test B"])
    _check(plots.heatmap(auc, vmin=0.5, vmax=1, title="AUC"))


def test_fairness_training_comparison(scored):
    y, s, g = scored
    _check(plots.fairness_bars(fairness.group_ci(y, s, g, metric="fpr", n_boot=50)))
    hist = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1, 0.6, 0.4], "val_loss": [1, 0.7, 0.6],
                         "val_auc": [0.6, 0.7, 0.8]})
    fig = _check(plots.training_curves(hist), 2)
    assert {a.get_title() for a in fig.axes if a.get_visible()} == {"loss", "auc"}
    rows = compare.select(compare.load(), system=re.compile("^UCF"), test_set="Celeb-DF-v2", metric="AUC")
    table = compare.comparison(rows, {"AUC · Celeb-DF-v2": metrics.bootstrap_ci(metrics.auc, y, s, n_boot=50)})
    fig = _check(plots.comparison_chart(table))
    assert len(fig.axes[0].patches) == len(table)


def test_image_grid_titles():
    imgs = [np.zeros((8, 8, 3), np.uint8), np.ones((3, 8, 8), np.float32)]
    fig = _check(plots.image_grid(imgs, ["real", "fake"]))
    assert [a.get_title() for a in fig.axes[:2]] == ["real", "fake"]
    with pytest.raises(ValueError, match="titles"):
        plots.image_grid(imgs, ["one"])


@pytest.mark.parametrize("arch", ["cnn", "vit"])
def test_gradcam_cnn_and_vit(arch):
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    if arch == "cnn":
        model = timm.create_model("convnext_atto", pretrained=False, num_classes=2)
        layers, reshape = [model.stages[-1]], None
    else:
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2, img_size=64, depth=2)
        layers, reshape = [model.blocks[-1].norm1], plots.vit_reshape_transform
    model.train()
    x = torch.randn(2, 3, 64, 64)
    maps = plots.gradcam_maps(model, layers, x, targets=[1, 1], reshape_transform=reshape)
    assert maps.shape == (2, 64, 64) and maps.min() >= 0 and maps.max() <= 1 and maps.max() > 0
    assert model.training  # mode restored
    fig = _check(plots.gradcam_grid(model, layers, x, targets=[1, 0], reshape_transform=reshape,
                                    titles=["real", "fake"]), 4)
    assert fig.axes[0].get_title() == "real"


def test_vit_reshape_rejects_non_square():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="grid"):
        plots.vit_reshape_transform(torch.zeros(1, 1 + 15, 4))
