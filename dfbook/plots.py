"""Figure factories in one house style. Each returns a ``matplotlib.figure.Figure`` built without
pyplot (no global state, no ``plt.show()``, no backend switch): a notebook displays the returned
figure once, and ``report.Run.figure`` saves it.

Colours mean the same thing everywhere: real = blue, fake = red; paper / seed / third-party /
this book as in :data:`KIND_COLORS`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

STYLE = {
    "figure.dpi": 100, "savefig.dpi": 110, "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
    "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "image.cmap": "viridis",
    "axes.prop_cycle": mpl.cycler(color=["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                                         "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]),
}
CLASS_COLORS = {0: "#1f77b4", 1: "#d62728"}
CLASS_NAMES = {0: "real", 1: "fake"}
KIND_COLORS = {"paper": "#1b3a6b", "seed": "#e08214", "third-party": "#8c8c8c", "this book": "#2ca02c"}


@contextlib.contextmanager
def style():
    """The book's rcParams, for figures made inside the block."""
    with mpl.rc_context(STYLE):
        yield


def _figure(nrows: int = 1, ncols: int = 1, *, size: tuple[float, float] | None = None, **kw):
    fig = Figure(figsize=size or (4.2 * ncols, 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return -(-n // ncols), ncols


# ------------------------------------------------------------------------------------------------
# scores


def roc_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], *, log_fpr: bool = False,
               title: str = "ROC") -> Figure:
    """ROC curves of several detectors or test sets. ``curves``: name -> ``(y, s)`` with y (N,)
    0/1 and s (N,) P(fake); the legend gives each AUC. ``log_fpr`` shows the low-FPR region."""
    from sklearn.metrics import roc_auc_score, roc_curve

    with style():
        fig, ax = _figure()
        ax = ax[0, 0]
        for name, (y, s) in curves.items():
            fpr, tpr, _ = roc_curve(np.asarray(y), np.asarray(s))
            ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {roc_auc_score(y, s):.3f})")
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
        if log_fpr:
            ax.set_xscale("log")
            ax.set_xlim(1e-4, 1)
        ax.set(xlabel="false-positive rate (reals called fake)", ylabel="true-positive rate", title=title)
        ax.legend(loc="lower right")
    return fig


def score_distributions(y, s, groups=None, *, bins: int = 40, threshold: float | None = 0.5,
                        ncols: int = 4, title: str = "score distributions") -> Figure:
    """Histograms of P(fake) for reals and fakes, one panel per group if ``groups`` (N,) is given
    (densities, so unequal class sizes stay comparable; counts are in the legend)."""
    y, s = np.asarray(y), np.asarray(s, dtype=float)
    g = np.asarray(groups).astype(str) if groups is not None else np.full(len(y), "all")
    names = sorted(np.unique(g))
    edges = np.linspace(min(0.0, s.min()), max(1.0, s.max()), bins + 1)
    with style():
        nrows, ncols = _grid(len(names), ncols)
        fig, axes = _figure(nrows, ncols, size=(3.4 * ncols, 2.6 * nrows), sharex=True)
        for ax, name in zip(axes.flat, names):
            for label in (0, 1):
                v = s[(g == name) & (y == label)]
                if len(v):
                    ax.hist(v, bins=edges, density=True, alpha=0.55, color=CLASS_COLORS[label],
                            label=f"{CLASS_NAMES[label]} (n={len(v)})")
            if threshold is not None:
                ax.axvline(threshold, c="k", ls="--", lw=1)
            ax.set(title=name if groups is not None else title, xlabel="P(fake)")
            ax.legend()
        for ax in list(axes.flat)[len(names):]:
            ax.set_visible(False)
        if groups is not None:
            fig.suptitle(title)
    return fig


def tsne(features, labels, *, seed: int = 0, perplexity: float = 30.0, max_points: int = 2000,
         title: str = "t-SNE of features") -> Figure:
    """2-D t-SNE (scikit-learn, seeded) of ``features`` (N, D), coloured by ``labels`` (N,).

    Above ``max_points`` a seeded random subset is embedded and the title says so."""
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    lab = np.asarray(labels).astype(str)
    if len(x) != len(lab):
        raise ValueError(f"features ({len(x)}) and labels ({len(lab)}) differ in length")
    keep = np.arange(len(x))
    if len(x) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), max_points, replace=False))
        title += f" ({max_points} of {len(x)} points, random subset)"
    emb = TSNE(n_components=2, perplexity=min(perplexity, (len(keep) - 1) / 3), init="pca",
               random_state=seed).fit_transform(x[keep])
    with style():
        fig, ax = _figure(size=(5, 4.2))
        ax = ax[0, 0]
        for name in sorted(np.unique(lab[keep])):
            m = lab[keep] == name
            ax.scatter(emb[m, 0], emb[m, 1], s=6, alpha=0.7, label=f"{name} ({m.sum()})")
        ax.set(title=title, xticks=[], yticks=[])
        ax.grid(False)
        ax.legend(markerscale=2, loc="best")
    return fig


# ------------------------------------------------------------------------------------------------
# matrices


def heatmap(matrix: pd.DataFrame, *, fmt: str = ".2f", vmin: float | None = None, vmax: float | None = None,
            cmap: str = "viridis", title: str = "", xlabel: str = "", ylabel: str = "") -> Figure:
    """Annotated heatmap of a DataFrame, e.g. AUC with train set on rows, test set on columns."""
    m = matrix.to_numpy(dtype=float)
    with style():
        fig, ax = _figure(size=(1.0 + 0.75 * m.shape[1], 1.0 + 0.55 * m.shape[0]))
        ax = ax[0, 0]
        im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        ax.grid(False)
        ax.set_xticks(range(m.shape[1]), [str(c) for c in matrix.columns], rotation=45, ha="right")
        ax.set_yticks(range(m.shape[0]), [str(i) for i in matrix.index])
        lo, hi = np.nanmin(m) if vmin is None else vmin, np.nanmax(m) if vmax is None else vmax
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                dark = (v - lo) / ((hi - lo) or 1) < 0.5
                ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7, color="w" if dark else "k")
        ax.set(title=title, xlabel=xlabel or (matrix.columns.name or ""), ylabel=ylabel or (matrix.index.name or ""))
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def confusion(cm: pd.DataFrame, *, normalize: bool = True, title: str = "confusion matrix") -> Figure:
    """A confusion matrix (``metrics.confusion_matrix``, rows = true) shown row-normalised (recall per
    class) with the counts kept in the cell text."""
    counts = cm.to_numpy(dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
    shown = pd.DataFrame(rates, index=cm.index, columns=cm.columns)
    fig = heatmap(shown, fmt=".2f" if normalize else ".0f", vmin=0, vmax=1 if normalize else None, cmap="Blues",
                  title=title, xlabel="predicted", ylabel="true")
    if normalize:
        ax = fig.axes[0]
        for text, n in zip(ax.texts, counts.ravel()):  # heatmap writes one text per cell, row-major
            text.set_text(f"{text.get_text()}\n({int(n)})")
    return fig


# ------------------------------------------------------------------------------------------------
# images and explanations


def _to_display(img) -> np.ndarray:
    """HWC float in [0, 1] from a CHW/HWC tensor or array (uint8 or float; floats are min-max scaled
    when outside [0, 1], e.g. normalised model inputs)."""
    a = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255
    a = a.astype(np.float32)
    if a.min() < 0 or a.max() > 1:
        a = (a - a.min()) / max(float(a.max() - a.min()), 1e-8)
    return a


def image_grid(images: Sequence, titles: Sequence[str] | None = None, *, ncols: int = 6,
               title: str = "") -> Figure:
    """Images (uint8 or float, HWC or CHW) in a grid with optional per-image titles."""
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(images)} images but {len(titles)} titles")
    nrows, ncols = _grid(len(images), ncols)
    with style():
        fig, axes = _figure(nrows, ncols, size=(1.9 * ncols, 2.0 * nrows))
        for k, ax in enumerate(axes.flat):
            ax.axis("off")
            if k < len(images):
                a = _to_display(images[k])
                ax.imshow(a.squeeze(), cmap="gray" if a.shape[-1] == 1 else None, vmin=0, vmax=1)
                if titles is not None:
                    ax.set_title(str(titles[k]), fontsize=8)
        if title:
            fig.suptitle(title)
    return fig


def vit_reshape_transform(tokens, *, prefix_tokens: int = 1, grid: tuple[int, int] | None = None):
    """Grad-CAM reshape for ViT blocks: (B, prefix + h*w, C) tokens -> (B, C, h, w) maps, dropping
    the class (and any register) tokens (pytorch-grad-cam's ViT tutorial; square grid by default)."""
    x = tokens[:, prefix_tokens:, :]
    h, w = grid or (int(round(x.shape[1] ** 0.5)),) * 2
    if h * w != x.shape[1]:
        raise ValueError(f"{x.shape[1]} patch tokens do not form a {h}x{w} grid; pass grid=(h, w) or prefix_tokens")
    return x.reshape(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)


def gradcam_maps(model, target_layers: Sequence, images, *, targets: Sequence[int] | None = None,
                 reshape_transform: Callable | None = None) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] from pytorch-grad-cam's ``GradCAM``.

    Args:
        model: a classifier ``(N, 3, H, W) -> (N, K)`` logits (put in eval mode here and restored).
        target_layers: e.g. ``[model.stages[-1]]`` (ConvNeXt) or ``[model.blocks[-1].norm1]`` (ViT).
        images: (N, 3, H, W) float tensor, already preprocessed for the model.
        targets: class index per image (e.g. 1 = fake); None = each image's top class.
        reshape_transform: for token outputs, e.g. :func:`vit_reshape_transform`.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    was_training = model.training
    model.eval()
    try:
        with GradCAM(model=model, target_layers=list(target_layers), reshape_transform=reshape_transform) as cam:
            tgt = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
            maps = cam(input_tensor=images, targets=tgt)  # `targets` is required in grad-cam 1.5.7
    finally:
        model.train(was_training)
    return np.asarray(maps, dtype=np.float32)


def gradcam_grid(model, target_layers: Sequence, images, *, display=None, targets: Sequence[int] | None = None,
                 reshape_transform: Callable | None = None, titles: Sequence[str] | None = None,
                 ncols: int = 6, title: str = "Grad-CAM") -> Figure:
    """Grad-CAM overlays: for each image, the input and its heat map on top (pytorch-grad-cam's
    ``show_cam_on_image``). ``display`` (N, H, W, 3) in [0, 1] or uint8 is what is drawn under the
    map (default: the min-max scaled input tensor). Other arguments as :func:`gradcam_maps`."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    maps = gradcam_maps(model, target_layers, images, targets=targets, reshape_transform=reshape_transform)
    base = [_to_display(im) for im in (display if display is not None else images)]
    overlays = [show_cam_on_image(b[..., :3].astype(np.float32), m, use_rgb=True) for b, m in zip(base, maps)]
    tiles, names = [], []
    for k, (b, o) in enumerate(zip(base, overlays)):
        tiles += [b, o]
        label = titles[k] if titles is not None else f"#{k}"
        names += [str(label), "Grad-CAM"]
    return image_grid(tiles, names, ncols=2 * max(1, ncols // 2), title=title)


# ------------------------------------------------------------------------------------------------
# fairness, training, comparison


def fairness_bars(table: pd.DataFrame, *, metric: str = "FPR", title: str = "") -> Figure:
    """Per-group bars with bootstrap CIs from ``fairness.group_ci``; each bar is labelled with the
    group size (real/fake); one-class groups are hatched (they are excluded from the gaps)."""
    t = table.reset_index(drop=True)
    with style():
        fig, ax = _figure(size=(max(4.0, 0.8 * len(t) + 1.5), 3.4))
        ax = ax[0, 0]
        x = np.arange(len(t))
        err = np.vstack([t["value"] - t["lo"], t["hi"] - t["value"]]).clip(min=0)
        bars = ax.bar(x, t["value"], yerr=np.nan_to_num(err), capsize=3, color="#4c72b0", alpha=0.85)
        for bar, row in zip(bars, t.itertuples()):
            if getattr(row, "single_class", False):
                bar.set_hatch("//")
                bar.set_alpha(0.4)
            top = row.hi if np.isfinite(row.hi) else row.value
            ax.annotate(f"n={row.n}\n{row.n_real}R/{row.n_fake}F", (bar.get_x() + bar.get_width() / 2, top),
                        xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=6)
        tops = np.where(np.isfinite(t["hi"]), t["hi"], t["value"])
        ax.set_ylim(0, np.nanmax(np.r_[tops, 1e-3]) * 1.25)  # room for the size labels
        ax.set_xticks(x, t["group"], rotation=30, ha="right")
        ax.set(ylabel=metric, title=title or f"{metric} per group (95% bootstrap CI)")
    return fig


def training_curves(history: pd.DataFrame, *, x: str = "epoch", panels: Mapping[str, Sequence[str]] | None = None,
                    title: str = "training") -> Figure:
    """Training history, one panel per quantity. Default panels group columns by their last
    ``_``/``/`` token: ``train_loss, val_loss`` -> panel ``loss``; ``val_auc`` -> panel ``auc``."""
    if x not in history.columns:
        raise ValueError(f"history has no {x!r} column; columns: {list(history.columns)}")
    if panels is None:
        groups: dict[str, list[str]] = {}
        for c in history.columns:
            if c != x and pd.api.types.is_numeric_dtype(history[c]):
                groups.setdefault(c.replace("/", "_").split("_")[-1], []).append(c)
        panels = groups
    with style():
        nrows, ncols = _grid(len(panels), 3)
        fig, axes = _figure(nrows, ncols, size=(3.6 * ncols, 2.8 * nrows))
        for ax, (name, cols) in zip(axes.flat, panels.items()):
            for c in cols:
                ax.plot(history[x], history[c], marker="o", ms=3, label=c)
            ax.set(title=name, xlabel=x)
            ax.legend()
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        fig.suptitle(title)
    return fig


def comparison_chart(table: pd.DataFrame, *, title: str = "paper vs seed vs this book", xlabel: str = "value",
                     xlim: tuple[float, float] | None = (0, 1)) -> Figure:
    """The chart every chapter ends with, from ``compare.comparison``: per quantity one bar per
    source (colour = paper / seed / third-party / this book, CI whiskers where known), labelled with
    value and evidence tag."""
    t = table.reset_index(drop=True)
    with style():
        fig, ax = _figure(size=(7.5, 0.5 + 0.32 * len(t) + 0.25 * t["quantity"].nunique()))
        ax = ax[0, 0]
        y, ticks, labels, prev = 0.0, [], [], None
        for row in t.itertuples():
            if prev is not None and row.quantity != prev:
                y += 0.6  # gap between quantities
            prev = row.quantity
            xerr = None
            if np.isfinite(row.lo) and np.isfinite(row.hi):
                xerr = [[max(row.value - row.lo, 0)], [max(row.hi - row.value, 0)]]
            ax.barh(y, row.value, xerr=xerr, capsize=2, height=0.8, color=KIND_COLORS.get(row.source_kind, "k"))
            ax.text(row.hi if np.isfinite(row.hi) else row.value, y, f" {row.value:.3f} [{row.evidence}]",
                    va="center", fontsize=7)
            ticks.append(y)
            labels.append(f"{row.quantity} — {str(row.system)[:40]}")
            y += 1
        ax.set_yticks(ticks, labels, fontsize=7)
        ax.invert_yaxis()
        if xlim is not None:
            ax.set_xlim(xlim[0], xlim[1] * 1.25)  # room for the value/evidence labels
        ax.set(xlabel=xlabel, title=title)
        handles = [Patch(color=c, label=k) for k, c in KIND_COLORS.items() if k in set(t["source_kind"])]
        ax.legend(handles=handles, loc="lower right")
    return fig
