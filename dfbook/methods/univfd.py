"""UnivFD: nearest neighbour and linear probe on frozen CLIP features (Ojha, Li, Lee; CVPR 2023,
arXiv:2302.10174), with the CNNDetection baseline it argues against (Wang et al. CVPR 2020).

Reference (read, not vendored): ``Yuheng-Li/UniversalFakeDetect@1abc486`` (``data/datasets.py``,
``validate.py``, ``models/clip_models.py``, ``networks/trainer.py``) and ``PeterWang512/CNNDetection@ea0b562``.
Section numbers (card §x) refer to ``reference/methods_univfd_hierarchical.md``.

Pieces
- :class:`Transform`: the original's train transform (resize -> blur/JPEG augmentation -> random crop -> flip)
  and test transforms (centre crop of the native image, current release; or resize + centre crop, first
  release), optional test-time perturbations (robustness) and the seed's JPEG-80 + blur preprocessing. Its
  randomness is a function of ``(seed, view, image bytes)``, so augmented features are reproducible and cacheable.
- :func:`features_for`: cached frozen-backbone features (``dfbook.features``) of a manifest whose rows may repeat.
- Nearest neighbour: :func:`exact_topk` (faiss ``IndexFlatIP`` exact search, chunked) and :func:`nn_scores`.
- Linear probe: :func:`linear_probe` (``Linear(D, 1)``, weight ~ N(0, 0.02)), :func:`probe_config`, :func:`fit_head`;
  :class:`Probe` (frozen backbone + head, for the model check and the released ``fc_weights.pth``).
- Protocols: :func:`mini_protocol` (the synthetic benchmark) and :func:`full_protocol` (CNNDetection + UnivFD
  diffusion sets); :func:`evaluate` / :func:`per_test_set` (AP, real/fake accuracy, accuracy at 0.5, oracle accuracy).
- Baselines: :func:`spectrum_features` (+ scikit-learn logistic regression), :class:`ImageDataset` for the
  end-to-end CNN.
"""

from __future__ import annotations

import dataclasses
import io
import zlib

import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageFilter
from torch import nn
from torchvision.transforms import functional as TF

from dfbook import features, imageio, metrics
from dfbook.train import TrainConfig

SOURCE = "Yuheng-Li/UniversalFakeDetect@1abc486"
# data_augment defaults (card §A3; identical in CNNDetection): independent coin flips, blur first, then JPEG.
AUG = {"blur_prob": 0.5, "blur_sig": (0.0, 3.0), "jpg_prob": 0.5, "jpg_qual": (30, 100), "jpg_method": ("cv2", "pil")}
# The seed's preprocessing (seed README, Paper 4): JPEG quality 80 for every image, PIL GaussianBlur(radius=2)
# when np.random.rand() < 0.5.
SEED_PREPROCESS = {"quality": 80, "blur_radius": 2.0, "blur_p": 0.5}
KS = tuple(range(1, 10))  # the paper's voting-pool sizes, k = 1..9 (§A5)


# ----------------------------------------------------------------------------------------------- transforms

def jpeg(img: np.ndarray, quality: int, method: str = "cv2") -> np.ndarray:
    """Encode + decode ``uint8 (H, W, 3)`` RGB as JPEG at ``quality`` with OpenCV or PIL (the original
    picks one of the two at random: their chroma subsampling and quantisation tables differ)."""
    if method == "cv2":
        ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
        if not ok:
            raise RuntimeError("OpenCV JPEG encoding failed")
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()
    if method != "pil":
        raise ValueError(f"JPEG method must be 'cv2' or 'pil', got {method!r}")
    out = io.BytesIO()
    Image.fromarray(img).save(out, format="jpeg", quality=int(quality))
    return np.asarray(Image.open(out).convert("RGB"))


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """SciPy ``gaussian_filter`` per channel, as the original (not torchvision's, not PIL's radius)."""
    from scipy.ndimage import gaussian_filter

    if sigma <= 0:
        return img.copy()
    out = np.empty_like(img)
    for c in range(img.shape[2]):
        gaussian_filter(img[:, :, c], sigma=sigma, output=out[:, :, c])
    return out


def data_augment(img: np.ndarray, rng: np.random.Generator, aug: dict | None = None) -> np.ndarray:
    """UnivFD/CNNDetection ``data_augment`` on ``uint8 (H, W, 3)``: blur with probability ``blur_prob``
    (sigma ~ U(blur_sig)), then, in an independent draw, JPEG with probability ``jpg_prob`` (method uniform
    over ``jpg_method``, quality uniform over the integers ``jpg_qual[0]..jpg_qual[1]`` inclusive)."""
    a = {**AUG, **(aug or {})}
    if rng.random() < a["blur_prob"]:
        img = gaussian_blur(img, float(rng.uniform(*a["blur_sig"])))
    if rng.random() < a["jpg_prob"]:
        method = a["jpg_method"][int(rng.integers(len(a["jpg_method"])))]
        img = jpeg(img, int(rng.integers(a["jpg_qual"][0], a["jpg_qual"][1] + 1)), method)
    return img


def seed_preprocess(img: np.ndarray, rng: np.random.Generator, cfg: dict | None = None) -> np.ndarray:
    """The seed's preprocessing: PIL ``GaussianBlur(radius)`` on a random half, then JPEG (PIL) at ``quality``
    for every image. (The seed's order is not stated; blur-then-JPEG follows the original's order.)"""
    c = {**SEED_PREPROCESS, **(cfg or {})}
    if rng.random() < c["blur_p"]:
        img = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=c["blur_radius"])))
    return jpeg(img, c["quality"], "pil")


@dataclasses.dataclass(frozen=True)
class Transform:
    """PIL image -> normalised float tensor ``(3, size, size)``.

    ``mode``: ``"train"`` (resize shorter side to ``load_size`` -> :func:`data_augment` -> random crop -> random
    flip), ``"center_crop"`` (test, current release: centre crop of the native image, zero-padded when smaller)
    or ``"resize_center_crop"`` (test, first release: resize to ``load_size``, then centre crop).
    ``perturb``: test-time ``{"blur_sigma": s, "jpeg_quality": q}`` applied to the native image, blur before
    JPEG (PIL), before the crop (UnivFD ``validate.py``); ``{"jpeg_range": (lo, hi)}`` re-saves as JPEG with
    OpenCV at a per-image quality drawn from lo..hi -- what the corpus's ``format_confound`` switch does to reals. ``seed_variant``: apply :func:`seed_preprocess` first.
    Random draws depend on ``(seed, view, image bytes)`` only. The dataclass repr is the feature-cache key.
    """

    mode: str
    size: int
    load_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    aug: tuple = ()                     # (key, value) pairs overriding AUG (hashable)
    perturb: tuple = ()                 # (key, value) pairs: blur_sigma, jpeg_quality
    seed_variant: bool = False
    seed: int = 0
    view: int = 0

    def __post_init__(self):
        if self.mode not in ("train", "center_crop", "resize_center_crop"):
            raise ValueError(f"Transform mode {self.mode!r}; expected train | center_crop | resize_center_crop")

    def _rng(self, arr: np.ndarray) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.view, zlib.crc32(arr.tobytes())])

    def __call__(self, pil: Image.Image) -> torch.Tensor:
        arr = np.asarray(pil.convert("RGB"))
        rng = self._rng(arr)
        if self.seed_variant:
            arr = seed_preprocess(arr, rng)
        p = dict(self.perturb)
        if p.get("blur_sigma"):
            arr = gaussian_blur(arr, float(p["blur_sigma"]))
        if p.get("jpeg_quality"):
            arr = jpeg(arr, int(p["jpeg_quality"]), "pil")
        if p.get("jpeg_range"):
            arr = jpeg(arr, int(rng.integers(p["jpeg_range"][0], p["jpeg_range"][1] + 1)), "cv2")
        img = Image.fromarray(arr)
        if self.mode != "center_crop":
            img = TF.resize(img, self.load_size, interpolation=TF.InterpolationMode.BILINEAR)
        if self.mode == "train":
            img = Image.fromarray(data_augment(np.asarray(img), rng, dict(self.aug)))
            w, h = img.size
            top, left = int(rng.integers(0, h - self.size + 1)), int(rng.integers(0, w - self.size + 1))
            img = TF.crop(img, top, left, self.size, self.size)
            if rng.random() < 0.5:
                img = TF.hflip(img)
        else:
            img = TF.center_crop(img, [self.size, self.size])
        return TF.normalize(TF.to_tensor(img), list(self.mean), list(self.std))


def transform_for(backbone, mode: str, *, size: int, load_size: int, **kw) -> Transform:
    """A :class:`Transform` with the backbone's normalisation (CLIP mean/std for CLIP backbones)."""
    return Transform(mode, size, load_size, tuple(backbone.spec["mean"]), tuple(backbone.spec["std"]), **kw)


# ----------------------------------------------------------------------------------------------- features

def features_for(backbone, df: pd.DataFrame, transform: Transform, *, layer: str | list[str] = "final",
                 batch_size: int = 128) -> np.ndarray | dict[str, np.ndarray]:
    """Features ``(N, D)`` (float32) row-aligned to ``df``, whose paths may repeat (a real image shared by
    several test sets is extracted once). Cached by ``dfbook.features`` under the transform's repr."""
    unique = df.drop_duplicates("path").reset_index(drop=True)
    out = features.extract(backbone, unique, layer=layer, transform=transform, transform_key=repr(transform),
                           batch_size=batch_size)
    pos = pd.Index(unique["path"]).get_indexer(df["path"])
    if isinstance(out, dict):
        return {k: np.asarray(v)[pos] for k, v in out.items()}
    return np.asarray(out)[pos]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); cosine similarity is then the inner product."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# ----------------------------------------------------------------------------------------------- nearest neighbour

def exact_topk(bank: np.ndarray, queries: np.ndarray, k: int, *, chunk: int = 4096, fp16: bool = False,
               block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Exact maximum-inner-product top-``k``: ``(sims (Q, k) float32, idx (Q, k) int64)``, best first.

    float32: faiss ``IndexFlatIP`` (exhaustive BLAS search). ``fp16=True`` keeps the bank as float16 (half the
    memory) and scans it in blocks of ``block`` rows, each upcast to float32 and searched with ``faiss.knn``;
    a ``faiss.ResultHeap`` merges the blocks -- exact for the float16-rounded bank, at BLAS speed (faiss's own
    ``IndexScalarQuantizer(QT_fp16)`` decodes per vector and was 12x slower here). Queries go in chunks of
    ``chunk`` rows, so the extra memory is bounded by ``chunk x block`` scores and one float32 block on top of
    the bank. Pass L2-normalised rows for cosine similarity."""
    import faiss

    bank = np.ascontiguousarray(bank, dtype=np.float16 if fp16 else np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
        raise ValueError(f"bank {bank.shape} and queries {queries.shape} must be 2-D with the same width")
    if not 1 <= k <= len(bank):
        raise ValueError(f"k={k} must be between 1 and the bank size {len(bank)}")
    sims = np.empty((len(queries), k), np.float32)
    idx = np.empty((len(queries), k), np.int64)
    index = None
    if not fp16:
        index = faiss.IndexFlatIP(bank.shape[1])
        index.add(bank)
    for i in range(0, len(queries), chunk):
        q = queries[i:i + chunk]
        if index is not None:
            sims[i:i + chunk], idx[i:i + chunk] = index.search(q, k)
            continue
        heap = faiss.ResultHeap(len(q), k, keep_max=True)
        for b0 in range(0, len(bank), block):
            xb = bank[b0:b0 + block].astype(np.float32)
            d, j = faiss.knn(q, xb, min(k, len(xb)), metric=faiss.METRIC_INNER_PRODUCT)
            heap.add_result(np.ascontiguousarray(d), np.ascontiguousarray(j + b0))
        heap.finalize()
        sims[i:i + chunk], idx[i:i + chunk] = heap.D, heap.I
    return sims, idx


def brute_topk(bank: np.ndarray, queries: np.ndarray, k: int, *, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The reference for :func:`exact_topk`: chunked NumPy matmul + ``argpartition`` (same outputs)."""
    bank = np.asarray(bank, dtype=np.float32)
    sims, idx = [], []
    for i in range(0, len(queries), chunk):
        s = np.asarray(queries[i:i + chunk], dtype=np.float32) @ bank.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(s, part, 1)
        order = np.argsort(-ps, axis=1, kind="stable")
        idx.append(np.take_along_axis(part, order, 1))
        sims.append(np.take_along_axis(ps, order, 1))
    return np.concatenate(sims), np.concatenate(idx)


def nn_scores(bank_real: np.ndarray, bank_fake: np.ndarray, queries: np.ndarray,
              ks=KS) -> dict[int, np.ndarray]:
    """Nearest-neighbour P(fake)-like scores in [0, 1] per voting-pool size ``k`` (cosine similarity).

    ``m = (1 + max_f cos(q, f) - max_r cos(q, r)) / 2``: the paper's k = 1 rule (§A5) says fake iff the
    nearest fake is closer than the nearest real, i.e. ``m > 0.5``. For k > 1 the paper gives no rule; ours:
    ``score_k = (fake votes among the k nearest of the union bank + m) / (k + 1)``. For odd k, ``score_k > 0.5``
    exactly when fakes hold the majority; ``m`` breaks ties for even k and orders the scores within a vote
    count for AP. For k = 1 the score is a monotone function of ``m``, so AP equals AP of the margin.
    Features are L2-normalised here."""
    r, f, q = l2_normalise(bank_real), l2_normalise(bank_fake), l2_normalise(queries)
    margin = (1.0 + exact_topk(f, q, 1)[0][:, 0] - exact_topk(r, q, 1)[0][:, 0]) / 2.0
    kmax = max(ks)
    _, idx = exact_topk(np.vstack([r, f]), q, kmax)
    is_fake = idx >= len(r)
    return {k: (is_fake[:, :k].sum(1) + margin) / (k + 1) for k in ks}


# ----------------------------------------------------------------------------------------------- heads

def linear_probe(dim: int, *, seed: int = 0) -> nn.Linear:
    """``Linear(dim, 1)``; weight ~ N(0, 0.02) (``init_gain``), bias keeps PyTorch's default (card §A4)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(dim, 1)
        nn.init.normal_(head.weight, 0.0, 0.02)
    return head


def seed_mlp(dim: int, hidden: int = 768, *, seed: int = 0) -> nn.Sequential:
    """The seed's Keras head: Dense(768, ReLU) -> Dense(1) (sigmoid in the loss); PyTorch default init."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))


def probe_config(*, lr: float = 1e-4, batch_size: int = 256, epochs: int = 100, patience: int = 5,
                 lr_drops: int = 2, seed: int = 0) -> TrainConfig:
    """UnivFD's probe recipe (card §A4): AdamW, weight decay 0, early stopping on validation accuracy with
    patience 5 and delta 0.001, lr / 10 on each trigger; training ends on the trigger after ``lr_drops`` drops
    (1e-4 -> 1e-5 -> 1e-6 -> stop, the original's ``lr < 1e-6`` rule). The best validated weights are kept."""
    return TrainConfig(epochs=epochs, batch_size=batch_size, optimizer="adamw", lr=lr, weight_decay=0.0,
                       monitor="val_acc", patience=patience, min_delta=1e-3, lr_drops=lr_drops,
                       restore_best=True, seed=seed, amp=False)


def seed_config(seed: int = 0) -> TrainConfig:
    """The seed's training: Keras Adam defaults (lr 1e-3), batch 30, 7 epochs, no validation, last epoch kept."""
    return TrainConfig(epochs=7, batch_size=30, optimizer="adam", lr=1e-3, seed=seed, amp=False)


def fit_head(head: nn.Module, x_train, y_train, config: TrainConfig, *, val=None) -> tuple[nn.Module, pd.DataFrame]:
    """Train ``head`` on float features ``(N, D)`` and labels ``(N,)`` with ``dfbook.train.fit``; ``val`` is
    ``(X, y)`` or None. Returns ``(head, history)``."""
    from dfbook import train

    xt = torch.as_tensor(np.asarray(x_train, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y_train, dtype=np.float32))
    v = None if val is None else (torch.as_tensor(np.asarray(val[0], np.float32)),
                                  torch.as_tensor(np.asarray(val[1], np.float32)))
    history = train.fit(head, (xt, yt), val=v, config=config, progress=False, device="cpu")
    return head, history


def head_scores(head: nn.Module, x) -> np.ndarray:
    """P(fake) ``(N,)`` = sigmoid(head(x)) for features ``x (N, D)``."""
    from dfbook import train

    return train.predict(head, torch.as_tensor(np.asarray(x, dtype=np.float32)), device="cpu")


class Probe(nn.Module):
    """Frozen backbone image embedding (not L2-normalised) + linear head: ``(N, 3, H, W)`` -> logits ``(N, 1)``.
    Only ``fc`` is trainable (the original's ``--fix_backbone``)."""

    def __init__(self, backbone, head: nn.Linear | None = None):
        super().__init__()
        self.backbone = backbone
        self.encoder = backbone.image_tower  # registered, so parameter counts and .to(device) include it
        for p in backbone.model.parameters():
            p.requires_grad = False
        self.fc = head if head is not None else linear_probe(backbone.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f = self.backbone.encode_image(x)
        return self.fc(f)


def load_fc_weights(path, dim: int) -> nn.Linear:
    """The released ``pretrained_weights/fc_weights.pth`` (a ``Linear(768, 1)`` state dict, 4 kB) as a head.
    It expects un-normalised ViT-L/14 ``encode_image`` features (card §A10.14)."""
    from dfbook import paths

    path = paths.resolve_data_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fc_weights file {path} does not exist; download pretrained_weights/fc_weights.pth "
                                f"from {SOURCE.split('@')[0]} and pass its path as FC_WEIGHTS")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    state = {k.removeprefix("fc."): v for k, v in state.items() if k.removeprefix("fc.") in ("weight", "bias")}
    if set(state) != {"weight", "bias"} or tuple(state["weight"].shape) != (1, dim):
        raise ValueError(f"{path} is not a Linear({dim}, 1) state dict (found keys {sorted(state)}); expected the "
                         "UnivFD fc_weights.pth for CLIP ViT-L/14 (768-d)")
    head = nn.Linear(dim, 1)
    head.load_state_dict(state)
    return head


# ----------------------------------------------------------------------------------------------- protocols

@dataclasses.dataclass
class Protocol:
    """Training domain and test sets. ``train``/``val``/``val_published`` are manifests; ``tests`` is one
    manifest with a ``test_set`` column (a real image may appear in several test sets, as the 1k LAION reals
    are shared by seven UnivFD sets, card §A10.9). ``val_published`` = the training generator's *test* split:
    what the original's ``train.py`` validates on (card §A10.2)."""

    train: pd.DataFrame
    val: pd.DataFrame
    val_published: pd.DataFrame
    tests: pd.DataFrame
    info: dict = dataclasses.field(default_factory=dict)


def _balanced(fakes: pd.DataFrame, reals: pd.DataFrame, rng, max_sample: int | None) -> pd.DataFrame:
    """Equal numbers of reals and fakes (at most ``max_sample`` each), drawn without replacement."""
    n = min(len(fakes), len(reals), max_sample or 10**12)
    pick = lambda d: d.iloc[np.sort(rng.choice(len(d), n, replace=False))]  # noqa: E731
    return pd.concat([pick(reals), pick(fakes)], ignore_index=True)


def _matching_reals(reals: pd.DataFrame, fakes: pd.DataFrame) -> pd.DataFrame:
    """Reals showing the fakes' kind of content (faces for face generators, scenes otherwise)."""
    face = (fakes["content"] == "face").mean() > 0.5
    return reals[(reals["content"] == "face") == face]


def mini_protocol(df: pd.DataFrame, train_generator: str = "progan", *, seed: int = 0,
                  max_sample: int | None = None) -> Protocol:
    """The synthetic benchmark (``corpus.load("images")``) in UnivFD's protocol: train on one generator
    against content-matched reals of the train split (balanced, as the 360k/360k ProGAN set), validate on the
    val split (corrected) or on the generator's test split (as published), test every generator's test split
    against an equal number of content-matched test reals. The ``format_control`` reals form a reals-only test
    set. ``max_sample`` caps each class per set (the original's ``--max_sample``)."""
    rng = np.random.default_rng([seed, 5])
    g = df[df["dataset"] == "mini_gen"]
    reals = g[(g["label"] == 0) & (g["domain"] == "mini_gen")]
    fakes = g[g["label"] == 1]
    if train_generator not in set(fakes["method"]):
        raise ValueError(f"train generator {train_generator!r} not in the corpus; have {sorted(set(fakes['method']))}")

    def part(split, gen):
        f = fakes[(fakes["split"] == split) & (fakes["method"] == gen)]
        return _balanced(f, _matching_reals(reals[reals["split"] == split], f), rng, max_sample)

    tests = [part("test", gen).assign(test_set=gen) for gen in sorted(set(fakes["method"]))]
    ctl = g[g["domain"] == "format_control"]
    if len(ctl):
        tests.append(ctl.iloc[: max_sample or len(ctl)].assign(test_set="format_control"))
    return Protocol(part("train", train_generator), part("val", train_generator), part("test", train_generator),
                    pd.concat(tests, ignore_index=True), {"train_generator": train_generator, "seed": seed})


def full_protocol(cnndetection: pd.DataFrame, diffusion: pd.DataFrame | None = None, *, seed: int = 0,
                  max_sample: int | None = 1000, max_train: int | None = None) -> Protocol:
    """CNNDetection ProGAN train/val (20 classes) and every test set, each scored against its own reals; the
    UnivFD diffusion sets against the reals of ``UNIVFD_REAL_SOURCE`` (``dfbook.datasets``). ``max_sample`` as
    the original's ``validate.py`` (1000 per class, random, seeded) -- without its silent fall back to 100 when
    a set is smaller: a smaller set is used whole and its size is in the table. ``max_train`` caps each class
    of the training set (None = all 720k)."""
    from dfbook.datasets import UNIVFD_REAL_SOURCE

    rng = np.random.default_rng([seed, 5])
    c = cnndetection

    def split(name, cap):
        d = c[c["split"] == name]
        return _balanced(d[d["label"] == 1], d[d["label"] == 0], rng, cap)

    tests = []
    t = c[c["split"] == "test"]
    for s in sorted(t["domain"].unique()):
        d = t[t["domain"] == s]
        tests.append(_balanced(d[d["label"] == 1], d[d["label"] == 0], rng, max_sample).assign(test_set=s))
    if diffusion is not None:
        for s, real_src in UNIVFD_REAL_SOURCE.items():
            f = diffusion[(diffusion["domain"] == s) & (diffusion["label"] == 1)]
            r = diffusion[(diffusion["domain"] == real_src) & (diffusion["label"] == 0)]
            if len(f) and len(r):
                tests.append(_balanced(f, r, rng, max_sample).assign(test_set=s))
    published = t[t["domain"] == "progan"]
    return Protocol(split("train", max_train), split("val", None),
                    _balanced(published[published["label"] == 1], published[published["label"] == 0], rng, None),
                    pd.concat(tests, ignore_index=True), {"train_generator": "progan", "seed": seed})


# ----------------------------------------------------------------------------------------------- evaluation

def evaluate(y, s, threshold: float = 0.5) -> dict[str, float]:
    """The quantities UnivFD's ``validate.py`` reports, as fractions: ``ap``, ``acc`` (at ``threshold``),
    ``real_acc``, ``fake_acc`` and ``oracle_acc`` (best threshold chosen on these very scores: an optimistic
    bound), plus ``n_real`` / ``n_fake``. With one class only, AP/oracle are NaN and only that class's accuracy
    is given.

    AP is the same number; the others follow this package's decision rule and can differ from ``validate.py``
    on ties. ``validate.py`` calls a sample fake when ``p > threshold`` (here ``p >= threshold``), and its
    ``find_best_threshold`` chooses the oracle threshold with ``>=`` and then scores it with ``>``, so the samples
    at the chosen score count as real; :func:`dfbook.metrics.oracle_accuracy` scores its threshold with the
    rule that chose it, so it is never below ``validate.py``'s oracle. Both differ only for scores exactly equal
    to a threshold."""
    y, s = np.asarray(y), np.asarray(s, dtype=float)
    both = len(np.unique(y)) == 2
    out = {"n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum()),
           "ap": metrics.ap(y, s) if both else np.nan,
           "acc": metrics.accuracy(y, s, threshold),
           "real_acc": metrics.real_accuracy(y, s, threshold) if (y == 0).any() else np.nan,
           "fake_acc": metrics.fake_accuracy(y, s, threshold) if (y == 1).any() else np.nan,
           "oracle_acc": metrics.oracle_accuracy(y, s) if both else np.nan}
    return out


def per_test_set(tests: pd.DataFrame, scores, threshold: float = 0.5) -> pd.DataFrame:
    """One row per ``test_set`` (with its generator ``family``): :func:`evaluate` of ``scores`` (aligned to
    ``tests``)."""
    s = np.asarray(scores, dtype=float)
    rows = []
    for name, idx in tests.groupby("test_set", sort=False).indices.items():
        part = tests.iloc[idx]
        fam = part.loc[part["label"] == 1, "family"]
        rows.append({"test_set": name, "family": fam.iloc[0] if len(fam) else "real only",
                     **evaluate(part["label"].to_numpy(), s[idx], threshold)})
    return pd.DataFrame(rows).set_index("test_set")


def summarise(table: pd.DataFrame, train_generator: str) -> dict[str, float]:
    """Means of a :func:`per_test_set` table: in-domain AP/acc, mean AP/acc over unseen generators, per family."""
    t = table[table["n_fake"] > 0]
    unseen = t.drop(index=train_generator, errors="ignore")
    out = {"in_domain/ap": t.loc[train_generator, "ap"], "in_domain/acc": t.loc[train_generator, "acc"],
           "unseen/ap": unseen["ap"].mean(), "unseen/acc": unseen["acc"].mean(),
           "unseen/real_acc": unseen["real_acc"].mean(), "unseen/fake_acc": unseen["fake_acc"].mean()}
    for fam, part in unseen.groupby("family"):
        out[f"{fam}/ap"], out[f"{fam}/acc"], out[f"{fam}/fake_acc"] = (part["ap"].mean(), part["acc"].mean(),
                                                                       part["fake_acc"].mean())
    # the paper's groups (card §A8.1): "GAN family" includes the training generator; "DM+AR" = diffusion + DALL-E
    gan, dm = t[t["family"] == "gan"], t[t["family"].isin(["diffusion", "autoregressive"])]
    out.update({"gan_family/ap": gan["ap"].mean(), "gan_family/acc": gan["acc"].mean(),
                "dm_ar/ap": dm["ap"].mean(), "dm_ar/acc": dm["acc"].mean(), "dm_ar/real_acc": dm["real_acc"].mean(),
                "dm_ar/fake_acc": dm["fake_acc"].mean()})
    return {k: float(v) for k, v in out.items()}


# ----------------------------------------------------------------------------------------------- baselines

def spectrum_features(paths, size: int, *, out: int = 32) -> np.ndarray:
    """No-CLIP baseline features ``(N, out*out)``: log-magnitude 2-D spectrum of the high-pass residual
    (image - 3x3 median, UnivFD Fig. 3 / Zhang et al.), mean over channels, centre-cropped to ``size`` and
    average-pooled to ``out x out`` (keeps the Nyquist-frequency peaks of upsampling in the corner bins)."""
    imgs, _ = imageio.load_images(list(paths))
    h0 = (imgs.shape[1] - size) // 2
    imgs = imgs[:, h0:h0 + size, h0:h0 + size] if imgs.shape[1] >= size else imgs
    feats = []
    for im in imgs:
        res = im.astype(np.float32) - cv2.medianBlur(im, 3).astype(np.float32)
        spec = np.log(np.abs(np.fft.fftshift(np.fft.fft2(res, axes=(0, 1)), axes=(0, 1))) + 1e-3).mean(2)
        f = spec.shape[0] // out
        feats.append(spec[: f * out, : f * out].reshape(out, f, out, f).mean((1, 3)).ravel())
    return np.asarray(feats, np.float32)


def spectrum_classifier(seed: int = 0):
    """Standardise + L2 logistic regression (scikit-learn), the frequency-spectrum baseline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=3000, random_state=seed))


class ImageDataset(torch.utils.data.Dataset):
    """``(transform(image), label)`` per manifest row, for the end-to-end CNN baseline. A train-mode
    :class:`Transform` re-draws its augmentation every epoch through ``set_epoch`` (the view index)."""

    def __init__(self, df: pd.DataFrame, transform: Transform):
        self.paths, self.labels, self.transform = list(df["path"]), df["label"].to_numpy(np.float32), transform

    def set_epoch(self, epoch: int) -> None:
        self.transform = dataclasses.replace(self.transform, view=epoch)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(imageio.read_rgb(self.paths[i]))), self.labels[i]


# ----------------------------------------------------------------------------------------------- experiment steps

SPLITS = ("train", "val", "val_published", "tests")


def protocol_features(backbone, protocol: Protocol, test_tf: Transform, *, layers=("final",), views: int = 0,
                      train_tf: Transform | None = None) -> dict:
    """Features of every part of ``protocol`` through the test transform: ``{part: {layer: (N, D)}}`` for the
    parts in :data:`SPLITS`; with ``views > 0`` also ``"train_aug"`` (``views`` augmented copies of the training
    set through ``train_tf``, final layer, stacked view after view) and ``"y_train_aug"``. The original augments
    on the fly every epoch; with a frozen backbone we precompute a fixed number of augmented views instead."""
    parts = [getattr(protocol, name) for name in SPLITS]
    every = features_for(backbone, pd.concat(parts, ignore_index=True), test_tf, layer=list(layers))  # one pass
    bounds = np.cumsum([0] + [len(p) for p in parts])
    out = {name: {l: a[bounds[i]:bounds[i + 1]] for l, a in every.items()} for i, name in enumerate(SPLITS)}
    if views:
        out["train_aug"] = np.concatenate([features_for(backbone, protocol.train, dataclasses.replace(train_tf, view=v))
                                           for v in range(views)])
        out["y_train_aug"] = np.tile(protocol.train["label"].to_numpy(), views)
    return out


def add_concat(feats: dict, layers, name: str = "concat") -> dict:
    """Add the concatenation of ``layers`` as layer ``name`` to every part (the multi-layer feature)."""
    for part in SPLITS:
        feats[part][name] = np.hstack([feats[part][l] for l in layers])
    return feats


def train_probe(feats: dict, protocol: Protocol, config: TrainConfig, *, validation: str = "corrected",
                layer: str = "final", head: nn.Module | None = None, augmented: bool = True):
    """Train a head on ``layer`` features (the augmented views when present and ``augmented``), early-stopped on
    the held-out val split (``"corrected"``) or on the training generator's test split (``"published"``, the
    original's ``train.py``). Returns ``(head, history)``."""
    if validation not in ("corrected", "published"):
        raise ValueError(f"validation must be 'corrected' or 'published', got {validation!r}")
    if augmented and layer == "final" and "train_aug" in feats:
        x, y = feats["train_aug"], feats["y_train_aug"]
    else:
        x, y = feats["train"][layer], protocol.train["label"].to_numpy()
    part = "val" if validation == "corrected" else "val_published"
    val = (feats[part][layer], getattr(protocol, part)["label"].to_numpy())
    return fit_head(head if head is not None else linear_probe(x.shape[1], seed=config.seed), x, y, config, val=val)


def nn_test_scores(feats: dict, protocol: Protocol, *, layer: str = "final", ks=KS, bank_fraction: float = 1.0,
                   seed: int = 0, queries: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """:func:`nn_scores` of the test features (or ``queries``) against the training bank, optionally a balanced
    random ``bank_fraction`` of it (the bank-size ablation, paper Fig. 8)."""
    x, y = feats["train"][layer], protocol.train["label"].to_numpy()
    keep = np.ones(len(y), bool)
    if bank_fraction < 1:
        rng = np.random.default_rng([seed, 8])
        keep[:] = False
        for c in (0, 1):
            idx = np.flatnonzero(y == c)
            keep[rng.choice(idx, max(1, int(round(bank_fraction * len(idx)))), replace=False)] = True
    q = feats["tests"][layer] if queries is None else queries
    return nn_scores(x[keep & (y == 0)], x[keep & (y == 1)], q, ks)


def format_features(backbone, protocol: Protocol, test_tf: Transform, condition: str, *,
                    quality=(70, 95)) -> dict:
    """Final-layer features of every part under a file-format condition: ``"confounded"`` (reals re-saved as
    JPEG at a random quality in ``quality``, as the corpus's ``format_confound`` switch; fakes and the
    ``format_control`` reals stay PNG, i.e. saved the way fakes are) or ``"jpeg"`` (every image re-saved)."""
    if condition not in ("confounded", "jpeg"):
        raise ValueError(f"format condition must be 'confounded' or 'jpeg', got {condition!r}")
    jp = dataclasses.replace(test_tf, perturb=(("jpeg_range", tuple(quality)),))
    out = {}
    for part in SPLITS:
        df = getattr(protocol, part)
        mask = np.ones(len(df), bool) if condition == "jpeg" else (
            (df["label"] == 0) & (df.get("domain", "") != "format_control")).to_numpy()
        x = np.empty((len(df), backbone.dim), np.float32)
        for m, tf in ((mask, jp), (~mask, test_tf)):
            if m.any():
                x[m] = features_for(backbone, df[m], tf)
        out[part] = {"final": x}
    return out


def format_leak_auc(tests: pd.DataFrame, scores) -> float:
    """AUC of the detector's scores for telling the ``format_control`` reals (saved as fakes are) from the
    other test reals: 0.5 = the detector does not read the file format; 1.0 = it reads nothing else."""
    s = np.asarray(scores, dtype=float)
    reals = (tests["label"] == 0).to_numpy()
    ctl = (tests["test_set"] == "format_control").to_numpy()
    uniq = ~tests["path"].duplicated().to_numpy()
    pick = reals & uniq
    return metrics.auc(ctl[pick].astype(int), s[pick])


def spectrum_scores(protocol: Protocol, size: int, *, seed: int = 0) -> np.ndarray:
    """Frequency-spectrum logistic regression trained on the training set, scores on ``protocol.tests``."""
    clf = spectrum_classifier(seed).fit(spectrum_features(protocol.train["path"], size), protocol.train["label"])
    uniq = protocol.tests.drop_duplicates("path")
    s = pd.Series(clf.predict_proba(spectrum_features(uniq["path"], size))[:, 1], index=uniq["path"].to_numpy())
    return s.loc[protocol.tests["path"]].to_numpy()


def train_cnn(name: str, protocol: Protocol, config: TrainConfig, *, size: int, load_size: int,
              pretrained: bool = True, seed: int = 0, device=None):
    """CNNDetection-style end-to-end detector: backbone ``name`` with a fresh 1-logit head, trained on the
    training set with the same blur+JPEG augmentation (re-drawn every epoch), early-stopped on the val split.
    Returns ``(backbone, history)``; ``backbone.model`` maps images to logits ``(N, 1)``. ``device``: default
    the GPU when there is one (:func:`dfbook.train.fit`); ``config.num_workers`` processes decode images."""
    from dfbook import backbones, train

    bb = backbones.create(name, pretrained=pretrained, num_classes=1, init_seed=seed)
    tr = ImageDataset(protocol.train, transform_for(bb, "train", size=size, load_size=load_size, seed=seed))
    va = ImageDataset(protocol.val, transform_for(bb, "center_crop", size=size, load_size=load_size))

    def next_views(event, info):  # a fresh augmentation draw for the next epoch
        if event == "epoch":
            tr.set_epoch(int(info["epoch"]))

    history = train.fit(bb.model, tr, val=va, config=config, callbacks=[next_views], progress=False, device=device)
    return bb, history


def cnn_scores(bb, df: pd.DataFrame, tf: Transform, batch_size: int = 128, num_workers: int = 0) -> np.ndarray:
    """P(fake) of an end-to-end detector for every row of ``df`` (images through ``tf``), on the device the
    detector is on."""
    from dfbook import train

    loader = torch.utils.data.DataLoader(ImageDataset(df, tf), batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, pin_memory=torch.cuda.is_available())
    return train.predict(bb.model, loader)


def robustness(backbone, head: nn.Module, feats: dict, protocol: Protocol, test_tf: Transform, sets,
               levels: dict, *, cnn=None, cnn_tf: Transform | None = None) -> pd.DataFrame:
    """Test-time perturbation curves (paper Fig. 10): for each ``levels[kind]`` value (``kind`` in
    ``blur_sigma`` / ``jpeg_quality``; 0 = clean) the linear probe, nearest neighbour (k = 1, clean bank) and the
    end-to-end CNN are scored on the test sets ``sets``. One row per (kind, level, detector, test set)."""
    tests = protocol.tests[protocol.tests["test_set"].isin(sets)].reset_index(drop=True)
    rows = []
    for kind, values in levels.items():
        for v in values:
            tf = dataclasses.replace(test_tf, perturb=((kind, v),) if v else ())
            q = features_for(backbone, tests, tf)
            dets = {"linear probe": head_scores(head, q), "NN k=1": nn_test_scores(feats, protocol, ks=(1,), queries=q)[1]}
            if cnn is not None:
                dets["end-to-end CNN"] = cnn_scores(cnn, tests, dataclasses.replace(cnn_tf, perturb=tf.perturb))
            for det, s in dets.items():
                t = per_test_set(tests, s)
                rows += [{"perturbation": kind, "level": v, "detector": det, "test_set": name, **r}
                         for name, r in t.iterrows()]
    return pd.DataFrame(rows)


def robustness_figure(table: pd.DataFrame, metric: str = "ap"):
    """One panel per perturbation: mean ``metric`` over the test sets against the level, one line per detector."""
    from dfbook import plots

    kinds = list(dict.fromkeys(table["perturbation"]))
    with plots.style():
        fig, axes = plots._figure(1, len(kinds))
        for ax, kind in zip(axes[0], kinds):
            part = table[table["perturbation"] == kind].groupby(["detector", "level"])[metric].mean().unstack(0)
            part.plot(ax=ax, marker="o")
            ax.set(xlabel={"blur_sigma": "Gaussian blur sigma (px)", "jpeg_quality": "JPEG quality (0 = none)"}.get(kind, kind),
                   ylabel=f"mean {metric.upper()} over test sets", title=f"test-time {kind.split('_')[0]}", ylim=(0.4, 1.02))
    return fig


# ----------------------------------------------------------------------------------------------- paper vs seed vs book

def _q(metric: str, test_set: str, system: str) -> str:
    return f"{metric} · {test_set} · {system}"


# (quantity, selection in paper_results.csv, this book's metric key). Paper "GAN family" = ProGAN, CycleGAN,
# BigGAN, StyleGAN, GauGAN, StarGAN; "DM+AR" = the 8 diffusion / DALL-E sets (card §A8.1).
COMPARISON = (
    (_q("mAP", "GAN family", "linear probe"), dict(system="UnivFD-LC (CLIP ViT-L/14)", test_set="GAN family", metric="mAP"), "lp/gan_family/ap"),
    (_q("mAP", "DM+AR", "linear probe"), dict(system="UnivFD-LC (CLIP ViT-L/14)", test_set="DM+AR (8 sets)", metric="mAP"), "lp/dm_ar/ap"),
    (_q("mAP", "GAN family", "NN"), dict(system="UnivFD-NN (CLIP ViT-L/14)", test_set="GAN family", metric="mAP"), "nn/k1/gan_family/ap"),
    (_q("mAP", "DM+AR", "NN"), dict(system="UnivFD-NN (CLIP ViT-L/14)", test_set="DM+AR (8 sets)", metric="mAP"), "nn/k1/dm_ar/ap"),
    (_q("mAP", "GAN family", "trained CNN"), dict(system="Wang2020 best trained deep network", test_set="GAN family", metric="mAP"), "cnn/gan_family/ap"),
    (_q("mAP", "DM+AR", "trained CNN"), dict(system="Wang2020 best trained deep network", test_set="DM+AR (8 sets)", metric="mAP"), "cnn/dm_ar/ap"),
    (_q("acc", "DM+AR", "linear probe"), dict(system="UnivFD-LC (CLIP ViT-L/14)", test_set="DM+AR (8 sets)", metric="acc_mean_approx"), "lp/dm_ar/acc"),
    (_q("acc", "DM+AR", "trained CNN"), dict(system="Wang2020 trained deep networks", test_set="DM+AR (8 sets)"), "cnn/dm_ar/acc"),
    (_q("acc", "CycleGAN", "linear probe"), dict(system=["UnivFD-LC (CLIP ViT-L/14)", "UnivFD-LC (paper, as quoted by seed)", "Seed Keras MLP head (Dense768 ReLU+Dense1 sigmoid; Adam, BCE, bs30, 7 ep)"], test_set="CycleGAN", metric=["acc_thr0.5", "acc"]), "lp/cyclegan/acc"),
    (_q("acc", "BigGAN", "linear probe"), dict(system=["UnivFD-LC (CLIP ViT-L/14)", "UnivFD-LC (paper, as quoted by seed)", "Seed Keras MLP head (Dense768 ReLU+Dense1 sigmoid; Adam, BCE, bs30, 7 ep)"], test_set="BigGAN", metric=["acc_thr0.5", "acc"]), "lp/biggan/acc"),
    (_q("acc", "CycleGAN", "NN"), dict(system=["UnivFD-NN (paper, as quoted by seed)", "Seed NN k=1 cosine (CLIP ViT 768-d, JPEG80+blur r2 on half)"], test_set="CycleGAN"), "nn/k1/cyclegan/acc"),
    (_q("acc", "BigGAN", "NN"), dict(system=["UnivFD-NN (paper, as quoted by seed)", "Seed NN k=1 cosine (CLIP ViT 768-d, JPEG80+blur r2 on half)"], test_set="BigGAN"), "nn/k1/biggan/acc"),
    (_q("acc", "DALL-E", "NN"), dict(system=["UnivFD-NN (paper, as quoted by seed)", "Seed NN k=1 cosine (CLIP ViT 768-d, JPEG80+blur r2 on half)"], test_set="DALL-E(mini)+LAION"), "nn/k1/dalle/acc"),
)


# This book's test sets (mini toy names and full folder names) -> the paper's Table 2/3 column(s) that name the
# same generator (the seed's write-up calls DALL-E "DALL-E(mini)+LAION"). Mini's pixel-space "adm" is the guided
# diffusion model of the paper's "Guided"; its "ldm" and "glide" stand for the paper's default settings.
PAPER_TEST_SET = {
    "progan": ["ProGAN"], "cyclegan": ["CycleGAN"], "biggan": ["BigGAN"], "stylegan": ["StyleGAN"],
    "gaugan": ["GauGAN"], "stargan": ["StarGAN"], "deepfake": ["Deepfakes"], "seeingdark": ["SITD"], "san": ["SAN"],
    "crn": ["CRN"], "imle": ["IMLE"], "guided": ["Guided"], "adm": ["Guided"], "ldm": ["LDM_200"],
    "ldm_200": ["LDM_200"], "ldm_200_cfg": ["LDM_200_cfg"], "ldm_100": ["LDM_100"], "glide": ["Glide_100_27"],
    "glide_100_27": ["Glide_100_27"], "glide_50_27": ["Glide_50_27"], "glide_100_10": ["Glide_100_10"],
    "dalle": ["DALL-E(mini)", "DALL-E(mini)+LAION"],
}
# (column, system, metric) of the published per-generator numbers.
PER_GENERATOR_PUBLISHED = (
    ("paper probe AP", "UnivFD-LC (CLIP ViT-L/14)", "AP"),
    ("paper probe acc", "UnivFD-LC (CLIP ViT-L/14)", "acc_thr0.5"),
    ("paper NN acc (seed-quoted)", "UnivFD-NN (paper, as quoted by seed)", "acc"),
    ("seed MLP acc", "Seed Keras MLP head (Dense768 ReLU+Dense1 sigmoid; Adam, BCE, bs30, 7 ep)", "acc"),
    ("seed NN acc", "Seed NN k=1 cosine (CLIP ViT 768-d, JPEG80+blur r2 on half)", "acc"),
)


def per_generator_comparison(ours: dict[str, pd.DataFrame], published: pd.DataFrame | None = None) -> pd.DataFrame:
    """Paper vs seed vs this book, one row per test set of this run: the published cells of
    :data:`PER_GENERATOR_PUBLISHED` for the paper column of :data:`PAPER_TEST_SET` (NaN where nothing was
    published), then ``<label> AP`` and ``<label> acc`` of each :func:`per_test_set` table in ``ours``, and the
    evidence tags of the published cells. Reals-only sets (no AP) are left out."""
    from dfbook import compare

    pub = compare.load() if published is None else published
    first = next(iter(ours.values()))
    rows = []
    for test_set in first.index[first["n_fake"] > 0]:
        names = PAPER_TEST_SET.get(str(test_set).lower(), [])
        row, tags = {"test_set": test_set, "paper column": names[0] if names else ""}, set()
        for column, system, metric in PER_GENERATOR_PUBLISHED:
            cell = pub[(pub["system"] == system) & (pub["metric"] == metric) & pub["test_set"].isin(names)]
            row[column] = cell["value"].iloc[0] if len(cell) else np.nan
            tags |= set(cell["evidence"])
        for label, table in ours.items():
            row |= {f"{label} AP": table.loc[test_set, "ap"], f"{label} acc": table.loc[test_set, "acc"]}
        rows.append(row | {"evidence": ", ".join(sorted(tags))})
    return pd.DataFrame(rows).set_index("test_set")


def comparison_rows(table: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Published rows (``dfbook.compare``) for :data:`COMPARISON`, with a ``quantity`` column, and the map
    quantity -> this book's metric key."""
    from dfbook import compare

    table = compare.load() if table is None else table
    parts = [compare.select(table, **sel).assign(quantity=q) for q, sel, _ in COMPARISON]
    return pd.concat(parts, ignore_index=True), {q: key for q, _, key in COMPARISON}


# ----------------------------------------------------------------------------------------------- saved detectors
def probe_net(backbone: str, dim: int) -> Probe:
    """The architecture of a saved probe (random weights; :mod:`dfbook.detector` loads the file into it)."""
    from dfbook import backbones

    return Probe(backbones.create(backbone, pretrained=False), nn.Linear(dim, 1))


class NearestNeighbourNet(nn.Module):
    """The k = 1 nearest-neighbour rule as a network: frozen image embedding, L2-normalised, against the
    L2-normalised training banks (buffers, saved with the weights). ``forward -> (N,)`` the score of
    :func:`nn_scores` for k = 1: ``(fake vote + m) / 2`` with ``m = (1 + max cos fake - max cos real) / 2``."""

    def __init__(self, backbone: str, dim: int, n_real: int, n_fake: int, bb=None):
        from dfbook import backbones

        super().__init__()
        self.backbone = bb if bb is not None else backbones.create(backbone, pretrained=False)
        self.encoder = self.backbone.image_tower
        self.register_buffer("bank_real", torch.zeros(n_real, dim))
        self.register_buffer("bank_fake", torch.zeros(n_fake, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.nn.functional.normalize(self.backbone.encode_image(x).float(), dim=1)
        best_r, best_f = (q @ self.bank_real.T).max(1).values, (q @ self.bank_fake.T).max(1).values
        return ((best_f > best_r).float() + (1.0 + best_f - best_r) / 2.0) / 2.0


def save_detectors(run, backbone, probe: nn.Module, feats: dict, protocol: Protocol, test_tf: Transform, scores: dict,
                   *, fc_weights: str = "") -> pd.DataFrame:
    """Save the corrected probe and the k = 1 nearest neighbour of the pretrained backbone (and, given
    ``fc_weights``, the released probe head on it) as :class:`dfbook.detector.Detector` s, scored on the training
    generator's test set; returns the summary table."""
    from dfbook import detector as D

    gen = protocol.info["train_generator"]
    rows = (protocol.tests["test_set"] == gen).to_numpy()
    test = protocol.tests[rows]
    prep = D.Preprocess(test_tf.size, test_tf.mean, test_tf.std, mode=test_tf.mode, load_size=test_tf.load_size)
    y = protocol.train["label"].to_numpy()
    bank = l2_normalise(feats["train"]["final"])
    nn_net = NearestNeighbourNet(backbone.name, backbone.dim, int((y == 0).sum()), int((y == 1).sum()), bb=backbone)
    nn_net.bank_real.copy_(torch.as_tensor(bank[y == 0]))
    nn_net.bank_fake.copy_(torch.as_tensor(bank[y == 1]))
    protocol_text = (f"train {gen} vs content-matched reals, train split; frozen {backbone.name} features")
    out = [D.save_trained(run, D.Detector("probe", "univfd", Probe(backbone, probe), prep,
                                          {"function": "dfbook.methods.univfd:probe_net",
                                           "kwargs": {"backbone": backbone.name, "dim": backbone.dim}}),
                          test, train=protocol.train, architecture=f"frozen {backbone.name} + Linear({backbone.dim}, 1)",
                          protocol=protocol_text + "; early stopping on the held-out val split",
                          chapter_scores=scores["lp/pretrained/corrected"][rows]),
           D.save_trained(run, D.Detector("nn", "univfd", nn_net, prep,
                                          {"function": "dfbook.methods.univfd:NearestNeighbourNet",
                                           "kwargs": {"backbone": backbone.name, "dim": backbone.dim,
                                                      "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum())}},
                                          output="probability"),
                          test, train=protocol.train, architecture=f"frozen {backbone.name}, cosine 1-NN to the "
                          "training bank", protocol=protocol_text + "; no training", selection="none",
                          chapter_scores=scores["nn/pretrained/k1"][rows])]
    if fc_weights:
        head = load_fc_weights(fc_weights, backbone.dim)
        out.append(D.save_trained(run, D.Detector("probe_released", "univfd", Probe(backbone, head), prep,
                                                  {"function": "dfbook.methods.univfd:probe_net",
                                                   "kwargs": {"backbone": backbone.name, "dim": backbone.dim}}),
                                  test, architecture=f"frozen {backbone.name} + released Linear({backbone.dim}, 1)",
                                  protocol="UnivFD's released fc_weights.pth (trained on CNNDetection ProGAN)",
                                  selection="released", source="released", released_from=str(fc_weights)))
    return D.saved_table(out)
