"""Hierarchical attribution: real/fake -> GAN/diffusion -> which generator (Guarnera, Giudice & Battiato,
"Level Up the Deepfake Detection", arXiv:2303.00608; journal version ACM TOMM 20(11), 2024).

The tree (methods_univfd_hierarchical.md part B1): level 1 real vs generated, level 2 GAN vs diffusion
model (DM), level 3 the architecture within the predicted family (9 GANs, 4 DMs): 14 leaves in all.
Each node is its own ResNet fine-tuned with cross-entropy; an image is routed L1 -> L2 -> L3.
Generators outside the tree (the autoregressive DALL-E-mini, a fifth DM) are never trained on: they
are routed down the tree and reported apart, labelled by what they are.

Models. A node is a :class:`LevelNet`: a frozen ``prefix`` of an ImageNet-style timm ResNet and a
trainable ``suffix`` (the remaining stages, global pooling and a head). ``train_from="conv1"`` fine-tunes
everything (the paper); ``"layer4"`` with an MLP head is the seed's "ResNet-50 + FC, partial unfreezing".
Every node of a tree shares one prefix, so the prefix's output is computed once per image set
(:func:`prefix_features`) and only the suffixes train -- what lets the mini profile train a dozen
nodes in a CPU minute.

Arrays: images are ``uint8 (N, H, W, 3)`` RGB; prefix features are ``float32 (N, C, h, w)``; class
probabilities are ``float (N, K)`` rows summing to 1. The ``full`` profile's ~80k images do not fit in memory
(~12 GB as uint8 at 224², four times that as features): there an :class:`ImageRows` stands in for both. It
reads each image from disk when a batch needs it, applies its edits (re-encoding, test-time perturbations) per
image, and every node then runs as prefix + suffix on the fly. Every function below takes either form.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn

from dfbook import backbones, imageio, manifest, metrics, train
from dfbook.bench import camera

# The paper's four DMs (DALL-E 2, GLIDE, Latent Diffusion, Stable Diffusion; card B2) and nine GANs. The
# corpus's GAN list overlaps the paper's on six (AttGAN, CycleGAN, ProGAN, StarGAN, StyleGAN, StyleGAN2);
# BigGAN, GauGAN and whichfaceisreal stand in for GDWCT, IMLE and StarGAN-v2, which it does not have.
GAN_LEAVES = ("progan", "stylegan", "stylegan2", "biggan", "cyclegan", "stargan", "attgan", "gaugan",
              "whichfaceisreal")
DM_LEAVES = ("dalle2", "glide", "ldm", "stable_diffusion")
# adm: a pixel-space DM that is not among the paper's four; dalle: autoregressive (VQ tokens), not a DM.
APART = ("adm", "dalle")
RESNET_STAGES = ("conv1", "layer1", "layer2", "layer3", "layer4", "head")
SPLITS = ("train", "val", "test")
# The label column (of :func:`tree_labels`) each node predicts.
NODE_COLUMN = {"level1": "level1", "level2": "level2", "level3_gan": "level3", "level3_dm": "level3", "flat": "leaf"}


@dataclass(frozen=True)
class Tree:
    """The leaves of the tree: ``gan`` and ``dm`` generator names (the ``method`` column)."""

    gan: tuple[str, ...] = GAN_LEAVES
    dm: tuple[str, ...] = DM_LEAVES

    def __post_init__(self):
        both = set(self.gan) & set(self.dm)
        if both or not self.gan or not self.dm:
            raise ValueError(f"Tree needs disjoint, non-empty GAN and DM leaves; shared: {sorted(both)}")

    def check(self, df: pd.DataFrame, apart: Sequence[str] = ()) -> None:
        """Raise before any training when a leaf (or an ``apart`` generator) has no fake image in ``df``: a node
        would train with an empty class, or a name is misspelt. The message lists the generators ``df`` has."""
        have = set(df.loc[df["label"] == 1, "method"].astype(str))
        for what, names in (("GAN_LEAVES", self.gan), ("DM_LEAVES", self.dm), ("APART", apart)):
            missing = [n for n in names if n not in have]
            if missing:
                raise ValueError(f"{what} names generator(s) {missing} with no image in the data; the data's "
                                 f"generators are {sorted(have)}")

    @property
    def leaves(self) -> tuple[str, ...]:
        return ("real", *self.gan, *self.dm)

    def tasks(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """Node name -> (label column of :func:`tree_labels`, classes). ``flat`` is the 14-way baseline."""
        classes = {"level1": ("real", "fake"), "level2": ("gan", "diffusion"), "level3_gan": self.gan,
                   "level3_dm": self.dm, "flat": self.leaves}
        return {name: (NODE_COLUMN[name], cls) for name, cls in classes.items()}


def tree_labels(df: pd.DataFrame, tree: Tree) -> pd.DataFrame:
    """Per-row labels of every level: ``level1`` (real/fake), ``level2`` (gan/diffusion, "" for reals),
    ``level3`` (generator, "" for reals), ``leaf`` (real or generator) and ``in_tree``. Rows of
    generators outside the tree get ``in_tree=False`` and their family in ``level2`` (e.g.
    ``autoregressive``), so they are reported apart and never trained on."""
    method = df["method"].astype(str).to_numpy()
    real = df["label"].to_numpy() == 0
    gan, dm = np.isin(method, tree.gan), np.isin(method, tree.dm)
    family = df["family"].astype(str).to_numpy() if "family" in df else np.full(len(df), "")
    return pd.DataFrame({
        "level1": np.where(real, "real", "fake"),
        "level2": np.where(real, "", np.where(gan, "gan", np.where(dm, "diffusion", family))),
        "level3": np.where(real, "", method),
        "leaf": np.where(real, "real", method),
        "in_tree": real | gan | dm,
    }, index=df.index)


def stratified_splits(df: pd.DataFrame, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> pd.Series:
    """The paper's in-distribution protocol: train/val/test drawn per class (``method``) by identity,
    so every class has the same fractions in each split (card B6: stratified 70/10/20; the corpus uses
    70/15/15). Rows keep their split where one is already set (the mini corpus builds its own)."""
    have = df["split"].astype(str).isin(SPLITS)
    out = df["split"].astype(str).where(have, "")
    for method, part in df[~have].groupby("method"):
        ids = manifest.stratified_ids(part["identity"].to_numpy(), dict(zip(SPLITS, fractions)),
                                      seed + sum(map(ord, str(method))))
        out.loc[part.index] = part["identity"].astype(str).map(ids)
    return out


# ----------------------------------------------------------------------------------------- models

class LevelNet(nn.Module):
    """One tree node: ``(N, 3, H, W)`` -> logits ``(N, K)`` = ``suffix(prefix(x))``; the prefix is frozen
    and stays in eval mode (its BatchNorm statistics are the pretrained ones)."""

    def __init__(self, prefix: nn.Module, suffix: nn.Module):
        super().__init__()
        self.prefix, self.suffix = prefix, suffix
        backbones.freeze(self.prefix)
        self.prefix.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.prefix.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.suffix(self.prefix(x))


def _head(dim: int, n_classes: int, kind: str) -> nn.Module:
    if kind == "linear":
        return nn.Linear(dim, n_classes)
    if kind == "mlp":  # the seed's "FC layers added in the end" (its width is not stated; 256 is ours)
        return nn.Sequential(nn.Linear(dim, 256), nn.ReLU(), nn.Dropout(0.3), nn.Linear(256, n_classes))
    raise ValueError(f"head must be 'linear' or 'mlp', got {kind!r}")


def build(backbone: str, n_classes: int, *, train_from: str = "conv1", head: str = "linear",
          pretrained: bool = True, init_seed: int = 0) -> LevelNet:
    """A tree node on a timm ResNet (``mini:resnet``, ``timm:resnet18.tv_in1k``, ...): stages before
    ``train_from`` (one of :data:`RESNET_STAGES`) frozen, the rest + a fresh ``head`` trainable
    (``train_from="head"``: the whole trunk frozen, a probe on its pooled features)."""
    if train_from not in RESNET_STAGES:
        raise ValueError(f"train_from must be one of {RESNET_STAGES}, got {train_from!r}")
    bb = backbones.create(backbone, pretrained=pretrained, init_seed=init_seed)
    m = bb.model
    if not all(hasattr(m, s) for s in RESNET_STAGES[:-1]):
        raise TypeError(f"{backbone} is not a timm ResNet (needs stages {RESNET_STAGES[:-1]})")
    stem = [m.conv1, m.bn1, m.act1, m.maxpool]
    stages = stem + [getattr(m, f"layer{i}") for i in range(1, 5)]
    cut = 0 if train_from == "conv1" else 3 + RESNET_STAGES.index(train_from)  # index in `stages`
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        fresh = _head(m.num_features, n_classes, head)
    tail = nn.Sequential(*stages[cut:], nn.AdaptiveAvgPool2d(1), nn.Flatten(), fresh)
    net = LevelNet(nn.Sequential(*stages[:cut]), tail)
    net.spec, net.weights_id = bb.spec, bb.weights_id  # preprocessing and provenance of the weights
    net.dim, net.head_kind = m.num_features, head
    return net


def suffix_factory(net: LevelNet, head: str | None = None):
    """``make(n_classes)`` -> a fresh trainable suffix for another node of the same tree: a copy of
    ``net``'s (pretrained) trainable stages with a new ``head`` (default: ``net``'s kind). Cheaper
    than :func:`build` per node, which re-creates and re-loads the whole backbone."""
    import copy

    body, kind = list(net.suffix)[:-1], head or net.head_kind
    return lambda n_classes: nn.Sequential(*copy.deepcopy(body), _head(net.dim, n_classes, kind))


def to_tensor(images: np.ndarray, spec: dict) -> torch.Tensor:
    """``uint8 (N, H, W, 3)`` -> ``float32 (N, 3, H, W)`` normalised with the backbone's mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)
    mean, std = (torch.tensor(spec[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    return (x - mean) / std


@dataclass(frozen=True, eq=False)
class ImageRows(torch.utils.data.Dataset):
    """Images of a manifest read from disk one at a time, for sets too large for memory (the ``full`` profile).

    Indexing with a bool mask or an index array gives the subset (rows keep their position in the manifest,
    so per-row edits stay aligned); ``len`` and ``rows[i]`` make it a Dataset whose item ``i`` is the image
    read (:func:`dfbook.imageio.read_rgb`: a missing or truncated file raises, naming it), resized to
    ``size``, passed through each of ``edits`` (``edit(uint8 (H, W, 3), manifest_row) -> uint8 (H, W, 3)``)
    and normalised with ``spec`` -- with its class id as well once :meth:`labelled`. ``prefix`` is the frozen
    part of the network that the nodes trained on these rows run in front of their suffix (set by
    :func:`prefix_features`). ``workers``: DataLoader processes for reading and decoding."""

    paths: tuple[str, ...]
    size: int
    spec: dict | None = None
    prefix: nn.Module | None = None
    edits: tuple[Callable, ...] = ()
    index: np.ndarray | None = None     # manifest rows of this subset (None: all, in order)
    labels: np.ndarray | None = None    # class ids aligned with ``index``
    workers: int = 0

    @property
    def rows(self) -> np.ndarray:
        return np.arange(len(self.paths)) if self.index is None else self.index

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            if self.spec is None:
                raise ValueError("these rows have no normalisation yet: pass them through "
                                 "prefix_features(net.prefix, rows, net.spec) first")
            r = int(self.rows[i])
            image, _ = imageio.load_images([self.paths[r]], size=self.size)
            for edit in self.edits:
                image = edit(image[0], r)[None]
            x = to_tensor(image, self.spec)[0]
            return x if self.labels is None else (x, torch.tensor(int(self.labels[i])))
        i = np.asarray(i)
        i = np.flatnonzero(i) if i.dtype == bool else i
        labels = None if self.labels is None else self.labels[i]
        return dataclasses.replace(self, index=self.rows[i], labels=labels)

    def edited(self, edit: Callable) -> "ImageRows":
        return dataclasses.replace(self, edits=(*self.edits, edit))

    def labelled(self, y: np.ndarray) -> "ImageRows":
        if len(y) != len(self):
            raise ValueError(f"{len(y)} labels for {len(self)} images")
        return dataclasses.replace(self, labels=np.asarray(y))

    def loader(self, batch_size: int = 256) -> torch.utils.data.DataLoader:
        """In manifest order, for scoring."""
        return torch.utils.data.DataLoader(self, batch_size=batch_size, shuffle=False, num_workers=self.workers)


def image_set(df: pd.DataFrame, size: int, *, stream: bool = False, workers: int = 0) -> np.ndarray | ImageRows:
    """The images of ``df`` at ``size``: all in memory as ``uint8 (N, size, size, 3)``, or (``stream``)
    an :class:`ImageRows` read as needed. Either way a missing or empty file is reported up front, naming
    it; when streaming, a file that is present but truncated raises when its batch is read."""
    if not stream:
        return load_images(df, size)[0]
    bad = [p for p in df["path"] if not os.path.isfile(p) or os.path.getsize(p) == 0]
    if bad:
        raise imageio.ImageReadError(f"{len(bad)} of {len(df)} images are missing or empty, e.g. {bad[:3]}; "
                                     "check the data folder (data/README.md) or re-extract them")
    return ImageRows(tuple(df["path"].astype(str)), size, workers=workers)


@torch.no_grad()
def prefix_features(prefix: nn.Module, x: np.ndarray | torch.Tensor | ImageRows, spec: dict | None = None, *,
                    start: int = 0, batch_size: int = 256, device="cpu") -> torch.Tensor | ImageRows:
    """The frozen prefix's output for every image: ``float32 (N, C, h, w)`` on the CPU.

    ``x`` is ``uint8 (N, H, W, 3)`` images (normalised with ``spec``) or, with ``start=k``, the output
    of the first ``k`` modules of ``prefix`` (so a longer prefix reuses a shorter one's features). For
    :class:`ImageRows` nothing is computed now: the rows are returned with ``prefix`` and ``spec``
    attached, and the prefix runs batch by batch wherever the rows are used."""
    if isinstance(x, ImageRows):
        return dataclasses.replace(x, prefix=nn.Sequential(*list(prefix)[start:]), spec=spec or x.spec)
    prefix = prefix.eval().to(device)
    rest = nn.Sequential(*list(prefix)[start:])
    prep = (lambda b: to_tensor(b, spec)) if isinstance(x, np.ndarray) else (lambda b: b)
    out = [rest(prep(x[i:i + batch_size]).to(device)).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def _bacc_metrics(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    pred = (s > 0.5).astype(int) if s.ndim == 1 else s.argmax(1)
    from sklearn.metrics import balanced_accuracy_score

    return {"acc": float(np.mean(pred == y)), "bacc": float(balanced_accuracy_score(y, pred))}


def _softmax(model: nn.Module, batch) -> torch.Tensor:
    x = batch[0] if isinstance(batch, (list, tuple)) else batch
    return torch.softmax(model(x).float(), dim=1)


def _fresh(make_suffix, n_classes: int, seed: int) -> nn.Module:
    """A new suffix whose random head depends only on ``seed`` (not on what ran before)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_suffix(n_classes)


def fit_node(suffix: nn.Module, x: torch.Tensor, y: np.ndarray, x_val: torch.Tensor, y_val: np.ndarray,
             config: train.TrainConfig, device="cpu") -> pd.DataFrame:
    """Fine-tune one node's suffix with cross-entropy on prefix features ``x`` and class ids ``y``;
    the checkpoint is chosen on validation balanced accuracy (``config.monitor="val_bacc"``). Returns
    the training history (:func:`dfbook.train.fit`)."""
    if len(np.unique(y)) < 2:
        raise ValueError(f"a tree node needs at least two classes in its training set, got {np.unique(y)}")
    if isinstance(x, ImageRows):  # streamed: the frozen prefix runs in front of the suffix, batch by batch
        return train.fit(LevelNet(x.prefix, suffix), x.labelled(y), val=x_val.labelled(y_val).loader(), config=config,
                         metrics=_bacc_metrics, score_fn=_softmax, progress=True, device=device)
    yt, yv = torch.as_tensor(y, dtype=torch.long), torch.as_tensor(y_val, dtype=torch.long)
    return train.fit(suffix, (x, yt), val=(x_val, yv), config=config, metrics=_bacc_metrics,
                     score_fn=_softmax, progress=False, device=device)


def probabilities(suffix: nn.Module, x: torch.Tensor | ImageRows, device="cpu") -> np.ndarray:
    """Class probabilities ``(N, K)`` of a trained suffix on prefix features ``x`` (or streamed rows)."""
    if len(x) == 0:
        raise ValueError("no images to score: the selection is empty (check the split and generator names)")
    if isinstance(x, ImageRows):
        return train.predict(LevelNet(x.prefix, suffix), x.loader(), score_fn=_softmax, device=device, progress=True)
    return train.predict(suffix, x, score_fn=_softmax, device=device)


# ------------------------------------------------------------------------------------ the tree

@dataclass
class Nodes:
    """Trained suffixes of one tree (node name -> module), their classes and histories."""

    models: dict[str, nn.Module]
    classes: dict[str, tuple[str, ...]]
    histories: dict[str, pd.DataFrame]


def train_tree(feats: torch.Tensor, labels: pd.DataFrame, split: pd.Series, tree: Tree, make_suffix,
               config: train.TrainConfig, nodes: Sequence[str] | None = None, device="cpu") -> Nodes:
    """Train every node of ``tree`` (or only ``nodes``) on the rows of its task.

    ``feats`` are prefix features aligned with ``labels`` (:func:`tree_labels`) and ``split``;
    ``make_suffix(n_classes)`` returns a fresh trainable suffix (e.g. ``lambda k: build(...).suffix``).
    Only in-tree rows are used; each node sees the rows whose label at its level is one of its classes."""
    models, classes, hist = {}, {}, {}
    for name, (col, cls) in tree.tasks().items():
        if nodes is not None and name not in nodes:
            continue
        rows = (labels["in_tree"] & labels[col].isin(cls)).to_numpy()
        y = labels[col].map({c: i for i, c in enumerate(cls)}).to_numpy()
        tr, va = rows & (split == "train").to_numpy(), rows & (split == "val").to_numpy()
        models[name] = _fresh(make_suffix, len(cls), config.seed)
        hist[name] = fit_node(models[name], feats[tr], y[tr].astype(int), feats[va], y[va].astype(int), config, device)
        classes[name] = cls
    return Nodes(models, classes, hist)


def predict_tree(nodes: Nodes, feats: torch.Tensor, device="cpu") -> dict[str, np.ndarray]:
    """Every node's class probabilities ``(N, K)`` on every row (routing picks which ones count)."""
    return {name: probabilities(m, feats, device) for name, m in nodes.models.items()}


def route(probs: dict[str, np.ndarray], nodes: Nodes) -> pd.DataFrame:
    """Route each image down the tree by the argmax at each node: level 1 real -> leaf ``real``; else
    level 2 picks the GAN or DM branch and that branch's level-3 node picks the generator. Also the
    flat classifier's argmax if it was trained. Columns ``level1, level2, level3, leaf[, flat]``."""
    c = nodes.classes
    l1 = np.asarray(c["level1"])[probs["level1"].argmax(1)]
    l2 = np.asarray(c["level2"])[probs["level2"].argmax(1)]
    gan = np.asarray(c["level3_gan"])[probs["level3_gan"].argmax(1)]
    dm = np.asarray(c["level3_dm"])[probs["level3_dm"].argmax(1)]
    fake = l1 == "fake"
    l3 = np.where(l2 == "gan", gan, dm)
    out = pd.DataFrame({"level1": l1, "level2": np.where(fake, l2, ""), "level3": np.where(fake, l3, ""),
                        "leaf": np.where(fake, l3, "real")})
    if "flat" in probs:
        out["flat"] = np.asarray(c["flat"])[probs["flat"].argmax(1)]
    return out


def node_accuracy(probs: dict[str, np.ndarray], nodes: Nodes, labels: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """Per-node accuracy on its own task (the paper's per-level numbers: each level tested on the
    images that belong to it, i.e. assuming the levels above were right). One row per node:
    ``node, n, accuracy, balanced_accuracy``."""
    out = []
    for name, cls in nodes.classes.items():
        col = NODE_COLUMN[name]
        m = rows & labels["in_tree"].to_numpy() & labels[col].isin(cls).to_numpy()
        pred = np.asarray(cls)[probs[name][m].argmax(1)]
        s = metrics.attribution_summary(labels[col].to_numpy()[m], pred, labels=cls)
        out.append({"node": name, "n": s["n"], "accuracy": s["accuracy"], "balanced_accuracy": s["balanced_accuracy"]})
    return pd.DataFrame(out)


def evaluate(probs: dict[str, np.ndarray], nodes: Nodes, labels: pd.DataFrame, rows: np.ndarray) -> dict:
    """Everything the chapter reports for one tree on the in-tree rows ``rows`` (bool mask):

    ``nodes`` (:func:`node_accuracy`), ``levels`` (:func:`dfbook.metrics.hierarchical_accuracy` of the
    routed predictions: per level and chained), ``metrics`` (flat dict: ``end_to_end/acc``,
    ``end_to_end/bacc``, ``flat/acc``, ``flat/bacc``, ``<node>/acc``, ``<node>/bacc``), ``per_class``
    (leaf recall, hierarchical vs flat) and ``routed`` (the routed predictions of ``rows``)."""
    rows = rows & labels["in_tree"].to_numpy()
    routed = route({k: v[rows] for k, v in probs.items()}, nodes)
    true = labels[rows].reset_index(drop=True)
    leaves = nodes.classes["flat"] if "flat" in nodes.classes else None
    e2e = metrics.attribution_summary(true["leaf"], routed["leaf"], labels=leaves)
    out = {"end_to_end/acc": e2e["accuracy"], "end_to_end/bacc": e2e["balanced_accuracy"]}
    per_class = metrics.per_class_accuracy(true["leaf"], routed["leaf"], leaves).set_index("label")[["n", "accuracy"]]
    per_class = per_class.rename(columns={"accuracy": "hierarchical"})
    if "flat" in routed:
        flat = metrics.attribution_summary(true["leaf"], routed["flat"], labels=leaves)
        out |= {"flat/acc": flat["accuracy"], "flat/bacc": flat["balanced_accuracy"]}
        per_class["flat"] = metrics.per_class_accuracy(true["leaf"], routed["flat"], leaves).set_index("label")["accuracy"]
    table = node_accuracy(probs, nodes, labels, rows)
    for r in table.itertuples():
        out |= {f"{r.node}/acc": r.accuracy, f"{r.node}/bacc": r.balanced_accuracy}
    levels = metrics.hierarchical_accuracy(true, routed, ["level1", "level2", "level3"])
    return {"nodes": table, "levels": levels, "metrics": out, "per_class": per_class, "routed": routed}


def out_of_tree(probs: dict[str, np.ndarray], nodes: Nodes, df: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """Where images of generators outside the tree end up: per generator, the share routed to fake,
    to the GAN and DM branches, and the most frequent leaf."""
    routed = route({k: v[rows] for k, v in probs.items()}, nodes)
    routed["method"] = df["method"].to_numpy()[rows]
    g = routed.groupby("method")
    return pd.DataFrame({
        "n": g.size(), "called_fake": g["level1"].apply(lambda s: (s == "fake").mean()),
        "to_gan_branch": g["level2"].apply(lambda s: (s == "gan").mean()),
        "to_dm_branch": g["level2"].apply(lambda s: (s == "diffusion").mean()),
        "top_leaf": g["leaf"].agg(lambda s: s.value_counts().index[0]),
        "top_leaf_share": g["leaf"].agg(lambda s: s.value_counts(normalize=True).iloc[0]),
    })


def train_eval(feats: torch.Tensor, y: np.ndarray, train_rows: np.ndarray, val_rows: np.ndarray,
               tests: dict[str, np.ndarray | tuple[np.ndarray, torch.Tensor]], make_suffix, n_classes: int,
               config: train.TrainConfig, device="cpu") -> tuple[dict[str, dict], nn.Module]:
    """One node outside the tree's fixed tasks (the seed's cross-generator protocol, the format
    control): train on ``train_rows``, choose the checkpoint on ``val_rows`` (bool masks; ``y`` class
    ids), then score each named test: a bool mask of ``feats`` rows, or ``(mask, other_feats)`` for the
    same rows with other pixels (e.g. re-encoded). Returns ``{test: {n, acc, bacc}}`` and the suffix."""
    suffix = _fresh(make_suffix, n_classes, config.seed)
    fit_node(suffix, feats[train_rows], y[train_rows], feats[val_rows], y[val_rows], config, device)
    out = {}
    for name, test in tests.items():
        m, src = test if isinstance(test, tuple) else (test, feats)
        pred = probabilities(suffix, src[m], device).argmax(1)
        s = metrics.attribution_summary(y[m], pred, labels=range(n_classes))
        out[name] = {"n": s["n"], "acc": s["accuracy"], "bacc": s["balanced_accuracy"]}
    return out, suffix


def robustness(nodes: Nodes, prefix: nn.Module, images: np.ndarray | ImageRows, spec: dict, labels: pd.DataFrame,
               perturbations: dict[str, Sequence[float]], device="cpu") -> pd.DataFrame:
    """Test-time robustness of a trained tree: every image of ``images`` (the in-tree test rows,
    aligned with ``labels``) perturbed by :func:`perturb` at each level, pushed through the frozen
    ``prefix`` and every node. One row per (perturbation, level) with each node's balanced
    accuracy on its own task and the end-to-end and flat balanced accuracy over the leaves."""
    rows, done = [], {}
    everything = np.ones(len(labels), bool)
    for kind, levels in perturbations.items():
        for level in levels:
            key = "clean" if is_noop(kind, level) else (kind, level)   # no-op levels are scored once
            if key not in done:
                f = prefix_features(prefix, perturb(images, kind, level), spec, device=device)
                done[key] = evaluate(predict_tree(nodes, f, device), nodes, labels, everything)["metrics"]
            ev = done[key]
            rows.append({"perturbation": kind, "level": level,
                         **{k.replace("/bacc", ""): v for k, v in ev.items() if k.endswith("/bacc")}})
    return pd.DataFrame(rows)


def robustness_figure(table: pd.DataFrame):
    """One panel per perturbation: balanced accuracy of each node and of the whole tree vs level."""
    from matplotlib.figure import Figure

    kinds = list(dict.fromkeys(table["perturbation"]))
    fig = Figure(figsize=(4.2 * len(kinds), 3.6), layout="constrained")
    axes = fig.subplots(1, len(kinds), squeeze=False)
    cols = [c for c in table.columns if c not in ("perturbation", "level")]
    for ax, kind in zip(axes[0], kinds):
        t = table[table["perturbation"] == kind]
        for c in cols:
            ax.plot(range(len(t)), t[c], marker="o", label=c, lw=2.2 if c in ("end_to_end", "flat") else 1.2)
        ax.set_xticks(range(len(t)), [f"{v:g}" for v in t["level"]])
        ax.set(title=kind, xlabel={"jpeg": "JPEG quality (0 = none)", "resize": "scale factor",
                                   "rotation": "degrees"}.get(kind, "level"), ylabel="balanced accuracy", ylim=(0, 1.02))
    axes[0][-1].legend(fontsize=7, loc="lower left")
    return fig


# -------------------------------------------------------------------------------- image edits

def _reencode_one(image: np.ndarray, row: int, formats: np.ndarray, qualities: np.ndarray) -> np.ndarray:
    return camera.jpeg(image[None], int(qualities[row]))[0] if formats[row] == "jpg" else image


def reencode(images: np.ndarray | ImageRows, formats: np.ndarray, qualities: np.ndarray) -> np.ndarray | ImageRows:
    """Each image as stored in ``formats[i]`` (``png``: unchanged, lossless; ``jpg``: encoded and
    decoded at ``qualities[i]``): the pixels a detector would see after loading that file. ``formats`` and
    ``qualities`` are per manifest row."""
    if isinstance(images, ImageRows):
        return images.edited(partial(_reencode_one, formats=np.asarray(formats), qualities=np.asarray(qualities)))
    out = images.copy()
    for q in np.unique(qualities[formats == "jpg"]):
        i = np.flatnonzero((formats == "jpg") & (qualities == q))
        out[i] = camera.jpeg(images[i], int(q))
    return out


def format_condition(labels: pd.DataFrame, condition: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-row storage format and JPEG quality of a format condition:

    ``png``         everything lossless (the corpus as generated);
    ``jpeg``        everything re-encoded as JPEG quality 95 (card B6's "re-encode all as JPEG q95");
    ``confounded``  formats follow the source, as when sets are collected from different places: reals
                    JPEG at quality 60-90 (photo collections such as LSUN, CNNDetection's reals), GAN
                    fakes JPEG at quality 95, DM fakes PNG (the UnivFD diffusion sets are PNG). An
                    invented but typical mix: level 1 and level 2 can both read it."""
    n = len(labels)
    if condition == "png":
        return np.full(n, "png"), np.zeros(n, int)
    if condition == "jpeg":
        return np.full(n, "jpg"), np.full(n, 95)
    if condition != "confounded":
        raise ValueError(f"format condition must be 'png', 'jpeg' or 'confounded', got {condition!r}")
    rng = np.random.default_rng([seed, 7])
    real = (labels["level1"] == "real").to_numpy()
    dm = (labels["level2"] == "diffusion").to_numpy()
    fmt = np.where(dm, "png", "jpg")
    q = np.where(real, rng.integers(60, 91, size=n), 95)
    return fmt, np.where(fmt == "jpg", q, 0)


def is_noop(kind: str, level: float) -> bool:
    """Whether :func:`perturb` leaves images unchanged at this level."""
    return level >= 1 if kind == "resize" else not level


def _perturb_one(image: np.ndarray, row: int, kind: str, level: float) -> np.ndarray:
    return perturb(image[None], kind, level)[0]


def perturb(images: np.ndarray | ImageRows, kind: str, level: float) -> np.ndarray | ImageRows:
    """Test-time perturbations of the journal version's robustness study (uint8 in, uint8 out, same
    shape): ``jpeg`` at quality ``level`` (0 = none); ``resize``: downscale by ``level`` (area) and back
    up (bicubic) so the network input keeps its size (1 = none); ``rotation`` by ``level`` degrees
    about the centre with reflected borders, so black corners cannot be a cue (0 = none)."""
    if kind not in ("jpeg", "resize", "rotation"):
        raise ValueError(f"perturbation must be 'jpeg', 'resize' or 'rotation', got {kind!r}")
    if isinstance(images, ImageRows):
        return images if is_noop(kind, level) else images.edited(partial(_perturb_one, kind=kind, level=level))
    if kind == "jpeg":
        return camera.jpeg(images, int(level)) if level else images.copy()
    h, w = images.shape[1:3]
    if kind == "resize":
        if level >= 1:
            return images.copy()
        small = camera.resize(images, (max(1, round(h * level)), max(1, round(w * level))))
        return camera.resize(small, (h, w), interpolation=cv2.INTER_CUBIC)
    if not level:  # rotation
        return images.copy()
    m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), float(level), 1.0)
    return np.stack([cv2.warpAffine(im, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
                     for im in images])


def cap(df: pd.DataFrame, caps: dict[str, int], default: int, seed: int = 0) -> pd.DataFrame:
    """At most ``caps.get(method, default)`` rows per ``method`` (0 = no cap), drawn at random with
    ``seed``; row order is kept. Splits keep their proportions in expectation."""
    parts = []
    for method, part in df.groupby("method", sort=False):
        n = caps.get(method, default)
        parts.append(part.sample(n=n, random_state=seed) if 0 < n < len(part) else part)
    return df.loc[pd.concat(parts).index.sort_values()]


def load_images(df: pd.DataFrame, size: int) -> tuple[np.ndarray, int]:
    """All images of ``df`` as ``uint8 (N, size, size, 3)``; unreadable files raise (a missing image
    would misalign the labels), naming the file."""
    return imageio.load_images(df["path"].tolist(), size=size)


# -------------------------------------------------------------------------------- comparison

COMPARISON = (
    # (quantity, paper_results selection, this book's metric key). Level 1: the paper's data is nearly
    # balanced (40.5k real / 42.5k fake, card B2), ours is not, so the book reports balanced accuracy there.
    ("L1 real vs fake, acc (stratified; book: balanced)", {"system": "Hierarchical ResNet (ResNet-18/34)", "test_set": "Level1 real vs AI (in-distribution)"}, "paper/level1/bacc"),
    ("L2 GAN vs DM, acc (stratified)", {"system": "Hierarchical ResNet (ResNet-18/34)", "test_set": "Level2 GAN vs DM (in-distribution)"}, "paper/level2/acc"),
    ("L3 GAN 9-way, acc (stratified)", {"test_set": ["Level3 architecture recognition (in-distribution)", "Level3-GAN (9-way)"]}, "paper/level3_gan/acc"),
    ("L3 DM 4-way, acc (stratified)", {"test_set": "Level3-DM (4-way)"}, "paper/level3_dm/acc"),
    ("hierarchical - flat, acc", {"system": "Hierarchical vs flat classifier"}, "paper/gain_over_flat"),
    ("L1 cross-generator (train DALL-E, test BigGAN), acc (book: balanced)", {"test_set": "Level1 real vs fake, test BigGAN fakes"}, "seed_protocol/level1/bacc"),
    ("L2 one generator per family, acc", {"system": "Seed hierarchical ResNet-50+FC (partial unfreeze)", "test_set": "Level2 GAN vs DM"}, "seed_protocol/level2/acc"),
    ("L3 among 4 DMs, acc", {"test_set": "Level3 among 4 DMs (max)"}, "seed_variant/level3_dm/acc"),
)


# Rows of COMPARISON that hold only for the paper's number of classes at a level (quantity -> (level, classes)).
COMPARISON_CLASSES = {"L3 GAN 9-way, acc (stratified)": ("gan", 9), "L3 DM 4-way, acc (stratified)": ("dm", 4),
                      "L3 among 4 DMs, acc": ("dm", 4)}


def comparison_rows(table: pd.DataFrame | None = None, tree: Tree | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Published rows (:mod:`dfbook.compare`) for :data:`COMPARISON` with a ``quantity`` column, and the
    map quantity -> this book's metric key. With ``tree``, a level-3 row is left out when the tree's level has
    another number of classes than the paper's (the public sets of ``full`` hold 8 GANs and 3 DMs): a 3-way
    accuracy is not comparable with a 4-way one."""
    from dfbook import compare

    table = compare.load() if table is None else table
    n = {"gan": len(tree.gan), "dm": len(tree.dm)} if tree is not None else {}
    rows = [(q, sel, key) for q, sel, key in COMPARISON
            if q not in COMPARISON_CLASSES or n.get(COMPARISON_CLASSES[q][0], COMPARISON_CLASSES[q][1])
            == COMPARISON_CLASSES[q][1]]
    parts = [compare.select(table, **sel).assign(quantity=q) for q, sel, _ in rows]
    return pd.concat(parts, ignore_index=True), {q: key for q, _, key in rows}


# ------------------------------------------------------------------------------------ saved detectors

def save_detectors(run, backbone: str, net: LevelNet, nodes: Nodes, df: pd.DataFrame, labels: pd.DataFrame,
                   split: pd.Series, probs: dict, *, size: int, train_from: str) -> pd.DataFrame:
    """Save the level-1 node (real vs fake: the frozen prefix + its trained suffix) as a
    :class:`dfbook.detector.Detector`, scored on the in-tree test images; returns the summary table."""
    from dfbook import detector as D

    fake = nodes.classes["level1"].index("fake")
    if fake != 1:
        raise ValueError(f"level 1's classes are {nodes.classes['level1']}; the saved detector expects ('real', 'fake')")
    rows = (labels["in_tree"] & (split == "test")).to_numpy()
    train_rows = (labels["in_tree"] & (split == "train")).to_numpy()
    det = D.Detector("level1", "hierarchical", LevelNet(net.prefix, nodes.models["level1"]),
                     D.Preprocess(size, net.spec["mean"], net.spec["std"], mode="fit"),
                     {"function": "dfbook.methods.hierarchical:build",
                      "kwargs": {"backbone": backbone, "n_classes": 2, "train_from": train_from,
                                 "head": net.head_kind, "pretrained": False}})
    row = D.save_trained(run, det, df[rows], train=df[train_rows],
                         architecture=f"{backbone}, stages before {train_from} frozen, the rest + a linear head (2-way)",
                         protocol="stratified 70/15/15 split of every in-tree generator and the reals; level 1 of the "
                         "tree (real vs fake); checkpoint with the best validation balanced accuracy",
                         chapter_scores=probs["level1"][rows, fake])
    return D.saved_table([row])
