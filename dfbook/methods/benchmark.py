"""Measurements of the benchmark chapter: how hard the mini benchmark is and what it does not leak.

* :func:`global_statistics` — one number per image (blur energy, saturation, ...); :func:`statistic_aucs`
  shows that none of them separates a method's fakes from reals on its own (the issue's "no simple
  global statistic detects a method" check).
* :func:`difficulty_matrix` — a small supervised CNN trained on one method/generator and tested on each
  (train on row, test on column, frame AUC): the generalisation gap every chapter studies.
* :func:`mean_spectra` — averaged log-magnitude spectra of the high-pass residual per group (the
  fingerprints of Zhang et al. 2019 / Wang et al. 2020 Fig. 5 style plots).

Images are ``uint8`` RGB arrays ``(N, S, S, 3)`` row-aligned with a manifest (:mod:`dfbook.manifest`), or in the
``full`` profile an :class:`ImageSource` that reads them from disk batch by batch (:func:`pixels`): 160k FF++
frames and 720k CNNDetection images do not fit in host memory as arrays.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from dfbook import imageio, metrics, paths, train

STATISTICS = ("blur_energy", "saturation", "brightness", "jpeg_blockiness", "hf_residual", "noise_residual")
ARCH_VERSION = "highpass-cnn4-bn-maxpool-3"  # part of the checkpoint key: change it when SmallCNN changes


class ImageSource(torch.utils.data.Dataset):
    """The images of a manifest read from disk when needed (``full``): item ``i`` is image ``i`` as ``uint8
    (size, size, 3)`` (:func:`dfbook.imageio.read_rgb`, resized as :func:`dfbook.imageio.load_images` does; an
    unreadable file raises naming it). ``workers``: DataLoader processes reading and decoding."""

    def __init__(self, paths_: Sequence[str], size: int, workers: int = 0):
        self.paths, self.size, self.workers = [str(p) for p in paths_], int(size), int(workers)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i) -> np.ndarray:
        return imageio.load_images([self.paths[int(i)]], size=self.size)[0][0]

    def loader(self, dataset, batch_size: int) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=self.workers,
                                           pin_memory=torch.cuda.is_available())

    def chunks(self, rows: np.ndarray | None = None, chunk: int = 256):
        """``uint8 (n, S, S, 3)`` arrays of ``rows`` (default all), in order, ``chunk`` at a time."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows)
        for batch in self.loader(torch.utils.data.Subset(self, rows.tolist()), chunk):
            yield batch.numpy()


class _Labelled(torch.utils.data.Dataset):
    """``(image in [-0.5, 0.5] (3, S, S), label)`` of the given rows of an :class:`ImageSource`."""

    def __init__(self, source: ImageSource, rows: np.ndarray, labels: np.ndarray):
        self.source, self.rows, self.labels = source, np.asarray(rows), np.asarray(labels, np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return to_tensor(self.source[self.rows[i]][None])[0], torch.tensor(self.labels[i])


def pixels(paths_: Sequence[str], size: int, *, stream: bool = False, workers: int = 0):
    """The images of ``paths_`` at ``size``: one ``uint8`` array in memory, or with ``stream`` an
    :class:`ImageSource` that every function of this module reads batch by batch."""
    if stream:
        return ImageSource(paths_, size, workers)
    return imageio.load_images(paths_, size=size)[0]


def global_statistics(images, rows: np.ndarray | None = None) -> pd.DataFrame:
    """:func:`image_statistics` of an array, or of an :class:`ImageSource` chunk by chunk -- there only of
    ``rows`` (a bool mask or indices; default all), the others NaN, so the table stays row-aligned."""
    if not isinstance(images, ImageSource):
        return image_statistics(images)
    idx = np.arange(len(images)) if rows is None else np.asarray(rows)
    idx = np.flatnonzero(idx) if idx.dtype == bool else idx
    parts = [image_statistics(chunk) for chunk in images.chunks(idx)]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(STATISTICS), dtype=float)
    return table.set_axis(idx).reindex(np.arange(len(images)))


def image_statistics(images: np.ndarray) -> pd.DataFrame:
    """Per-image global statistics of ``uint8 (N, S, S, 3)`` images -> DataFrame ``(N, len(STATISTICS))``.

    blur_energy: variance of the Laplacian of the grey image (the usual focus measure); saturation and
    brightness: mean HSV saturation / grey level in [0, 1]; jpeg_blockiness: mean absolute horizontal
    difference across 8-pixel block boundaries over the mean elsewhere (> 1 for blocky JPEG);
    hf_residual: mean |grey - Gaussian(sigma 1)|; noise_residual: std of image - 3x3 median (sensor noise).
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, S, S, 3), got {images.dtype} {images.shape}")
    f = images.astype(np.float32) / 255.0
    grey = f.mean(-1)
    dx = np.abs(np.diff(grey, axis=2))
    boundary = (np.arange(dx.shape[2]) % 8) == 7
    median = np.stack([cv2.medianBlur(im, 3) for im in images]).astype(np.float32) / 255.0
    return pd.DataFrame({
        "blur_energy": [cv2.Laplacian(g, cv2.CV_32F).var() for g in grey],
        "saturation": [cv2.cvtColor(im, cv2.COLOR_RGB2HSV)[..., 1].mean() / 255.0 for im in images],
        "brightness": grey.mean((1, 2)),
        "jpeg_blockiness": dx[:, :, boundary].mean((1, 2)) / (dx[:, :, ~boundary].mean((1, 2)) + 1e-6),
        "hf_residual": np.abs(grey - np.stack([cv2.GaussianBlur(g, (0, 0), 1.0) for g in grey])).mean((1, 2)),
        "noise_residual": (f - median).std((1, 2, 3)),
    })


def test_sets(df: pd.DataFrame, groups: Sequence[str], splits: Sequence[str], *, by: str = "method",
              match_content: bool = False) -> dict[str, np.ndarray]:
    """Boolean row masks, one per fake group: that group's fakes in ``splits`` plus the reals they are
    compared with (the reals of ``splits``; with ``match_content`` only reals showing the same kind of
    content, faces vs scenes, as the generated-image test sets are built)."""
    in_split = df["split"].isin(splits).to_numpy()
    real = (df["label"] == 0).to_numpy()
    face = (df["content"] == "face").to_numpy() if match_content else None
    out = {}
    for g in groups:
        fake = (df[by] == g).to_numpy() & (df["label"] == 1).to_numpy()
        if not fake.any():
            raise ValueError(f"no fake rows with {by} == {g!r}; available: {sorted(df.loc[df.label == 1, by].unique())}")
        ref = real
        if match_content:
            ref = real & (face == (face[fake].mean() > 0.5))
        out[g] = in_split & (fake | ref)
    return out


def statistic_aucs(stats: pd.DataFrame, labels: np.ndarray, sets: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """AUC of each statistic (column) as a detector on each test set (row), direction-free:
    ``max(AUC, 1 - AUC)`` in [0.5, 1], because a statistic may be lower for fakes. Note the direction
    is chosen on the test set itself, so these are optimistic (oracle) values."""
    rows = {}
    for name, mask in sets.items():
        a = {c: metrics.auc(labels[mask], stats[c].to_numpy()[mask]) for c in stats.columns}
        rows[name] = {c: max(v, 1 - v) for c, v in a.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


class HighPass(nn.Module):
    """The image minus its 3x3 local mean, times ``gain``: a fixed high-pass residual in the spirit of the
    SRM filters of image forensics (Fridrich & Kodovsky 2012), which removes most of the content and keeps
    the pixel-level traces generators and blending leave. Not trained."""

    def __init__(self, gain: float = 8.0):
        super().__init__()
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)) * self.gain


class SmallCNN(nn.Sequential):
    """A fixed :class:`HighPass` residual, four conv-BN-ReLU-maxpool blocks (16-32-64-64 channels), global max
    pool, one logit. Input ``(B, 3, S, S)`` floats in [-0.5, 0.5]; output ``(B, 1)``. About 66k parameters.

    The residual input keeps the probe on low-level traces: on the raw pixels the latent-diffusion-like
    generator (a weak VAE-decoder trace under varied content) stayed at AUC 0.63-0.86 over five seeds even
    with 60 epochs. Max rather than average pooling at the end: a local trace (NeuralTextures re-textures only
    the mouth) is diluted by averaging over the frame. Seed 0, weakest in-generator / in-method AUC: raw pixels
    0.653 (images, 30 epochs) and 0.934 (faces); residual 0.998 and 0.969, with 70 % and 75 % of the unseen
    cells still <= 0.8."""

    def __init__(self, width: Sequence[int] = (16, 32, 64, 64)):
        layers, c = [HighPass()], 3
        for w in width:
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
            c = w
        super().__init__(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c, 1))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``uint8 (N, S, S, 3)`` -> float ``(N, 3, S, S)`` in [-0.5, 0.5]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5)


def _balanced_train_rows(df: pd.DataFrame, group: str, split: str, by: str, match_content: bool,
                         seed: int) -> np.ndarray:
    """Training rows: the group's fakes in ``split`` and as many reals (all reals if fewer), drawn
    without replacement with ``seed`` so every row of the matrix sees a balanced training set."""
    mask = test_sets(df, [group], [split], by=by, match_content=match_content)[group]
    idx = np.flatnonzero(mask)
    fake, real = idx[df["label"].to_numpy()[idx] == 1], idx[df["label"].to_numpy()[idx] == 0]
    if len(real) > len(fake):
        real = np.sort(np.random.default_rng(seed).choice(real, len(fake), replace=False))
    return np.concatenate([fake, real])


def difficulty_matrix(images: np.ndarray, df: pd.DataFrame, train_groups: Sequence[str],
                      test_groups: Sequence[str], *, by: str = "method", train_split: str = "train",
                      test_splits: Sequence[str] = ("test",), match_content: bool = False,
                      config: train.TrainConfig, cache_key: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train a :class:`SmallCNN` on each of ``train_groups`` (fakes vs balanced reals of
    ``train_split``) and score every group of ``test_groups``.

    Returns ``(auc, history)``: ``auc`` has train groups as rows, test groups as columns (frame AUC);
    ``history`` stacks the :func:`dfbook.train.fit` histories with a ``train_on`` column. With a
    ``cache_key`` (e.g. the corpus key) each model is checkpointed under ``cache/runs/benchmark/``
    and a finished run is reloaded instead of retrained.
    """
    stream = isinstance(images, ImageSource)
    x, y = (None if stream else to_tensor(images)), df["label"].to_numpy()
    sets = test_sets(df, test_groups, test_splits, by=by, match_content=match_content)
    scored = np.flatnonzero(np.any(list(sets.values()), axis=0)) if stream else None
    auc, hist = pd.DataFrame(index=list(train_groups), columns=list(test_groups), dtype=float), []
    for g in train_groups:
        rows = _balanced_train_rows(df, g, train_split, by, match_content, config.seed)
        torch.manual_seed(config.seed)
        model = SmallCNN()
        ckpt = None
        if cache_key:
            tag = json.dumps([cache_key, ARCH_VERSION, g, by, train_split, match_content, repr(config)])
            ckpt = paths.cache_dir("runs", "benchmark", hashlib.sha256(tag.encode()).hexdigest()[:16])
        data = _Labelled(images, rows, y[rows]) if stream else (x[rows], torch.from_numpy(y[rows]).float())
        h = train.fit(model, data, config=config, ckpt_dir=ckpt, progress=False)
        hist.append(h.assign(train_on=g))
        if stream:  # only the rows some test set uses, read batch by batch
            scores = np.full(len(df), np.nan, np.float32)
            scores[scored] = train.predict(model, images.loader(_Labelled(images, scored, y[scored]), 512))
        else:
            scores = train.predict(model, x, batch_size=512)
        for t, mask in sets.items():
            auc.loc[g, t] = metrics.auc(y[mask], scores[mask])
    return auc, pd.concat(hist, ignore_index=True)


def gap_summary(auc: pd.DataFrame, *, low: float = 0.8) -> dict[str, float]:
    """The issue's difficulty criterion on a train x test AUC matrix: ``trained_min`` / ``trained_mean``
    (cells where the test group is the training group), ``unseen_mean`` and ``unseen_le_low`` (fraction
    of unseen cells with AUC <= ``low``)."""
    own = np.array([auc.loc[g, g] for g in auc.index if g in auc.columns])
    unseen = np.array([auc.loc[g, t] for g in auc.index for t in auc.columns if t != g])
    return {"trained_min": float(own.min()), "trained_mean": float(own.mean()),
            "unseen_mean": float(unseen.mean()), "unseen_le_low": float((unseen <= low).mean())}


def mean_spectra(images, groups: pd.Series, order: Sequence[str] | None = None, *,
                 per_group: int = 1000) -> dict[str, np.ndarray]:
    """Per group, the mean log-magnitude spectrum ``(S, S)`` (centred, ``fftshift``) of the grey image's
    high-pass residual (image - Gaussian blur sigma 1), which removes content and keeps the
    up-sampling and quantisation peaks generators leave (cf. Wang et al. CVPR 2020, Fig. 5).
    From an :class:`ImageSource`: the first ``per_group`` images of each group, summed chunk by chunk."""
    if isinstance(images, ImageSource):
        groups = pd.Series(np.asarray(groups))
        names = list(order or sorted(groups.unique()))
        sums, counts = {}, {}
        for g in names:
            rows = np.flatnonzero((groups == g).to_numpy())[:per_group]
            for chunk in images.chunks(rows):
                mag = _residual_magnitude(chunk).sum(0)
                sums[g] = sums.get(g, 0) + mag
                counts[g] = counts.get(g, 0) + len(chunk)
        return {g: np.log(sums[g] / counts[g] + 1e-6) for g in names}
    mag = _residual_magnitude(images)
    groups = pd.Series(np.asarray(groups))
    return {g: np.log(mag[(groups == g).to_numpy()].mean(0) + 1e-6) for g in (order or sorted(groups.unique()))}


def _residual_magnitude(images: np.ndarray) -> np.ndarray:
    grey = images.astype(np.float32).mean(-1) / 255.0
    resid = grey - np.stack([cv2.GaussianBlur(g, (0, 0), 1.0) for g in grey])
    return np.abs(np.fft.fftshift(np.fft.fft2(resid), axes=(1, 2)))


# (quantity, compare.select filters, this book's metric key). The published detectors are far larger and
# the test shifts differ (FF++ -> Celeb-DF is a new dataset; here it is an unseen manipulation), so the
# rows show the same *kind* of gap, not comparable numbers.
COMPARISON = [
    ("trained-on domain · AUC", dict(system="UCF (Xception x2)", test_set="FF++_c23", metric="AUC"),
     "faces/trained_mean"),
    ("unseen (dataset or method) · AUC", dict(system="UCF (Xception x2)", test_set="Celeb-DF-v2", metric="AUC"),
     "faces/unseen_mean"),
    ("ProGAN-trained · BigGAN (AP paper, AUC here)",
     dict(system="CNNDetection ResNet-50 Blur+JPEG(0.5)", test_set="BigGAN", metric="AP_crop224"),
     "images/progan_on_biggan"),
]


def comparison_rows(table: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Published rows for :data:`COMPARISON` with a ``quantity`` column, and quantity -> metric key."""
    from dfbook import compare

    table = compare.load() if table is None else table
    parts = [compare.select(table, **sel).assign(quantity=q) for q, sel, _ in COMPARISON]
    return pd.concat(parts, ignore_index=True), {q: key for q, _, key in COMPARISON}
