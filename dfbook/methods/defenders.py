"""DeepFakeDefenders (JTGroup, 1st place, Global Multimedia Deepfake Detection 2024, image track).

Source: ``HighwayWu/DeepFakeDefenders`` @ 8acf7ba (``network.py``, ``infer.py``); method card
``methods_unsupervised_clippeft_defenders.md`` §3. Two parts, kept apart on purpose:

**Inference, as shipped [verified].** Seven timm experts with two classes each (ConvNeXtV2-T ×2,
EfficientNet-B4/B5 NS ×2 each, B6 NS ×1), EMA weights (decay 0.995), one 512×512 ImageNet-normalised
input for all, ``P(fake) = mean_i softmax(logits_i)[:, 1]``. The released files are

- ``weight.pth``: ``state_dict`` of the ``nn.ModuleList`` of experts. Each expert wraps its timm model
  in the attribute ``baseline_extractor``, so keys read ``"{i}.baseline_extractor.<timm key>"``;
- ``ema.state``: ``{i: torch-ema state}`` (``network.py`` keeps a dict keyed by expert index; a list
  is accepted too), each ``{"decay", "num_updates", "shadow_params": [tensor per expert.parameters()],
  "collected_params"}``. Shadows cover parameters only; BatchNorm buffers come from ``weight.pth``.

The original swaps EMA weights in per forward call and builds its EMA with ``.cuda()``, so it cannot
run without a GPU (card §3.5). :func:`load_released` instead copies the shadows into the parameters
once (``bake``), which is what ``ema.average_parameters()`` does at every call, so CPU works.

**Training, re-implemented [inferred].** Code and report were never released; the forms below come
from the README and ``imgs/framework.jpg``: frozen-encoder features -> k-means into K clusters -> K
leave-one-cluster-out splits, one expert per split; loss = CE + supervised contrastive on pooled
features + KL(expert(noise) ‖ uniform); EMA 0.995. Every choice the sources leave open is marked [I].
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from dfbook import manifest, runtime, scores_out

log = logging.getLogger(__name__)

# timm's current names for network.py's `convnextv2_tiny.fcmae_ft_in1k`, `tf_efficientnet_b{4,5,6}_ns`
# (the `_ns` names are deprecated aliases since timm 0.9).
FULL_EXPERTS: tuple[str, ...] = (
    "convnextv2_tiny.fcmae_ft_in1k", "convnextv2_tiny.fcmae_ft_in1k",
    "tf_efficientnet_b4.ns_jft_in1k", "tf_efficientnet_b4.ns_jft_in1k",
    "tf_efficientnet_b5.ns_jft_in1k", "tf_efficientnet_b5.ns_jft_in1k",
    "tf_efficientnet_b6.ns_jft_in1k",
)
INPUT_SIZE = 512                       # infer.py: Resize((512, 512), antialias=True)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # infer.py: transforms.Normalize
IMAGENET_STD = (0.229, 0.224, 0.225)
EMA_DECAY = 0.995                      # network.py: ExponentialMovingAverage(..., decay=0.995)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Demo smoke test shipped in the repo (expected values are in the file names, card §3.2 / issue #2).
DEMO_EXPECTED = {"img_1_should_be_0.0016829653177410.jpg": 0.0016829653177410,
                 "img_2_should_be_0.9854894280433655.jpg": 0.9854894280433655}


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
class Expert(nn.Module):
    """One expert: a two-class timm classifier stored as ``baseline_extractor`` (the key prefix of
    the released ``weight.pth``).

    ``forward(x: (B, 3, H, W) float, ImageNet-normalised) -> (logits (B, 2), feat (B, D))`` where
    ``feat`` is the globally pooled feature before the classifier, as in ``network.py``: for ConvNeXt
    the raw pooled map *before* the head's LayerNorm (768-d for -T), for EfficientNet the pooled
    vector after head dropout (1792/2048/2304-d for B4/B5/B6).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.baseline_extractor = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.baseline_extractor
        x = m.forward_features(x)
        head = getattr(m, "head", None)
        if head is not None and hasattr(head, "global_pool"):   # ConvNeXt: NormMlpClassifierHead
            return head(x), head.global_pool(x).flatten(1)
        feat = m.forward_head(x, pre_logits=True)                # EfficientNet: pool + dropout
        return m.get_classifier()(feat), feat


def build_expert(arch: str, *, pretrained: bool = False, **timm_kwargs) -> Expert:
    """A two-class :class:`Expert` around ``timm.create_model(arch, num_classes=2, ...)``, or around
    a book backbone for ``lib:arch`` names (``mini:convnext``; see :func:`make_expert`).

    ``pretrained=False`` (the default, as in ``infer.py``): the weights come from the released files.
    """
    if ":" in arch:
        return make_expert(arch, pretrained=pretrained, **timm_kwargs)
    import timm

    return Expert(timm.create_model(arch, pretrained=pretrained, num_classes=2, **timm_kwargs))


class MixtureOfExperts(nn.Module):
    """``MFF_MoE`` without its EMA bookkeeping: ``experts`` is the ``nn.ModuleList`` whose
    ``state_dict`` is ``weight.pth``.

    ``forward(x: (B, 3, H, W)) -> (B,)`` P(fake) in [0, 1], the unweighted mean of the experts'
    softmax fake probabilities; :meth:`expert_probs` returns the per-expert ``(B, K)`` matrix.
    """

    def __init__(self, experts: Sequence[nn.Module]):
        super().__init__()
        self.experts = nn.ModuleList(experts)

    def expert_probs(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([F.softmax(e(x)[0], dim=1)[:, 1] for e in self.experts], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expert_probs(x).mean(dim=1)


def build(archs: Sequence[str] = FULL_EXPERTS, **timm_kwargs) -> MixtureOfExperts:
    """The mixture with random weights (``pretrained=False``); :func:`load_released` fills it."""
    return MixtureOfExperts([build_expert(a, **timm_kwargs) for a in archs])


# ---------------------------------------------------------------------------------------------
# Released weights
# ---------------------------------------------------------------------------------------------
def _expect_file(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found. The DeepFakeDefenders weights are not downloadable from here: fetch "
            "`weight.pth` and `ema.state` from the links in the README of "
            "https://github.com/HighwayWu/DeepFakeDefenders (Google Drive / Baidu Pan; licence CC BY-NC 4.0) "
            f"and put both files in {path.parent}.")
    return path


def _check_keys(model_keys: Sequence[str], file_keys: Sequence[str], source: Path) -> None:
    missing = sorted(set(model_keys) - set(file_keys))
    unexpected = sorted(set(file_keys) - set(model_keys))
    if missing or unexpected:
        raise ValueError(
            f"{source}: keys do not match the expert architectures ({len(missing)} missing, e.g. {missing[:3]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}). Expected the state_dict of a ModuleList of "
            "experts with keys '<i>.baseline_extractor.<timm key>'; check `archs` (the released model is "
            "FULL_EXPERTS) and that the file is the released weight.pth.")


def _ema_state_of(states, idx: int, source: Path) -> Mapping:
    if isinstance(states, Mapping):
        if idx not in states:
            raise ValueError(f"{source}: no EMA state for expert {idx} (keys {sorted(states)[:8]}); "
                             "expected {expert index: torch-ema state_dict}")
    elif not isinstance(states, Sequence) or idx >= len(states):
        raise ValueError(f"{source}: expected a dict or list of torch-ema states, one per expert; got "
                         f"{type(states).__name__} without an entry for expert {idx}")
    state = states[idx]
    if not isinstance(state, Mapping) or "shadow_params" not in state:
        raise ValueError(f"{source}: EMA state {idx} is not a torch-ema state_dict (needs 'shadow_params', "
                         f"'decay', 'num_updates'); got {type(state).__name__}")
    return state


def bake_ema(expert: nn.Module, state: Mapping, *, name: str = "expert") -> dict:
    """Copy a torch-ema ``state["shadow_params"]`` into ``expert.parameters()`` in place (what
    ``ema.copy_to()`` does), so inference needs no EMA object. Shadows are matched to parameters by
    position, as torch-ema does; count, shapes and the decay range are checked first.

    Returns ``{"decay", "num_updates", "max_abs_change"}`` (how far the EMA moved the raw weights).
    """
    params = list(expert.parameters())
    shadows = state["shadow_params"]
    decay = float(state.get("decay", float("nan")))
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"{name}: EMA decay {decay} is not in [0, 1]; the state is not a torch-ema state_dict")
    if len(shadows) != len(params):
        raise ValueError(f"{name}: EMA state has {len(shadows)} shadow tensors but the expert has {len(params)} "
                         "parameters; the architecture does not match the one the EMA was made for")
    change = 0.0
    with torch.no_grad():
        for i, (p, s) in enumerate(zip(params, shadows)):
            if tuple(s.shape) != tuple(p.shape):
                raise ValueError(f"{name}: EMA shadow {i} has shape {tuple(s.shape)}, parameter has "
                                 f"{tuple(p.shape)}; the architecture does not match")
            s = s.to(device=p.device, dtype=p.dtype)
            change = max(change, float((s - p).abs().max())) if p.numel() else change
            p.copy_(s)
    return {"decay": decay, "num_updates": state.get("num_updates"), "max_abs_change": change}


def load_released(weights_dir: str | Path, archs: Sequence[str] = FULL_EXPERTS, *, device: str = "cpu",
                  use_ema: bool = True, **timm_kwargs) -> MixtureOfExperts:
    """Build the mixture and load ``weights_dir/weight.pth`` + ``weights_dir/ema.state`` (the released
    format, see the module docstring), baking the EMA shadows into the parameters.

    Tensors are mapped to CPU first (the originals were saved from CUDA) and loaded with
    ``weights_only=True`` (plain tensors, dicts, lists and numbers; no pickled code). The model is
    returned in ``eval()`` mode on ``device``; ``model.ema_info`` lists per-expert decay and updates.
    ``use_ema=False`` keeps the raw (non-averaged) weights, for comparison only.
    """
    weights_dir = Path(weights_dir)
    wpath = _expect_file(weights_dir / "weight.pth")
    model = build(archs, **timm_kwargs)
    state = torch.load(wpath, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{wpath}: expected a state_dict (mapping of tensors), got {type(state).__name__}")
    _check_keys(list(model.experts.state_dict()), list(state), wpath)
    model.experts.load_state_dict(state)
    model.ema_info = []
    if use_ema:
        epath = _expect_file(weights_dir / "ema.state")
        states = torch.load(epath, map_location="cpu", weights_only=True)
        for idx, expert in enumerate(model.experts):
            info = bake_ema(expert, _ema_state_of(states, idx, epath), name=f"{epath} expert {idx} ({archs[idx]})")
            model.ema_info.append(info)
    return model.to(device).eval()


def save_released(model: MixtureOfExperts, weights_dir: str | Path, *,
                  ema_models: Sequence[nn.Module] | None = None, num_updates: Sequence[int] | None = None,
                  decay: float = EMA_DECAY) -> Path:
    """Write ``weight.pth`` + ``ema.state`` in the released layout (``MFF_MoE.save``), so experts
    trained here load with :func:`load_released` like the authors' files.

    ``ema_models[i]``: a module with the same parameters as expert ``i`` holding the averaged weights
    (e.g. an EMA copy); ``None`` stores the current parameters as shadows (an EMA with no updates).
    """
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.experts.state_dict(), weights_dir / "weight.pth")
    sources = ema_models if ema_models is not None else list(model.experts)
    states = {i: {"decay": decay, "num_updates": int(num_updates[i]) if num_updates is not None else 0,
                  "shadow_params": [p.detach().clone() for p in src.parameters()], "collected_params": None}
              for i, src in enumerate(sources)}
    torch.save(states, weights_dir / "ema.state")
    return weights_dir


# ---------------------------------------------------------------------------------------------
# Images -> tensors, faces, prediction
# ---------------------------------------------------------------------------------------------
def preprocess(rgb: np.ndarray, size: int = INPUT_SIZE) -> torch.Tensor:
    """``uint8 (H, W, 3)`` RGB -> ``float32 (3, size, size)``, as ``infer.py``: ToTensor (/255),
    ImageNet Normalize, then bilinear antialiased Resize -- normalise *then* resize, kept in that order."""
    from torchvision.transforms import functional as TF

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"preprocess expects a uint8 RGB array (H, W, 3); got {rgb.dtype} {rgb.shape}")
    # to_tensor warns on read-only arrays (PIL-backed ones are); the copy is cheap next to the experts.
    x = TF.normalize(TF.to_tensor(np.array(rgb)), IMAGENET_MEAN, IMAGENET_STD)
    return TF.resize(x, [size, size], antialias=True)


def face_detector(kind: str = "haar"):
    """A callable ``rgb uint8 (H, W, 3) -> (x, y, w, h) of the largest face, or None``.

    ``haar``: OpenCV's frontal-face Haar cascade (needs opencv < 5, which ships the XML files);
    ``mtcnn``: facenet-pytorch's MTCNN (weights ship with the package; CPU).
    """
    if kind == "haar":
        import cv2

        xml = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        if not xml.is_file():
            raise FileNotFoundError(f"{xml} missing: this OpenCV build ships no Haar cascades (opencv 5.x dropped "
                                    "them); install opencv-python-headless<5 or use face_crop='mtcnn'")
        cascade = cv2.CascadeClassifier(str(xml))

        def detect(rgb):
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            side = min(gray.shape)
            boxes = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                             minSize=(max(20, side // 10),) * 2)
            return None if len(boxes) == 0 else tuple(int(v) for v in max(boxes, key=lambda b: b[2] * b[3]))
        return detect
    if kind == "mtcnn":
        from facenet_pytorch import MTCNN

        mtcnn = MTCNN(keep_all=True, device="cpu")

        def detect(rgb):
            boxes, _ = mtcnn.detect(rgb)
            if boxes is None:
                return None
            x0, y0, x1, y1 = max(np.asarray(boxes, dtype=float), key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
            return int(x0), int(y0), int(round(x1 - x0)), int(round(y1 - y0))
        return detect
    raise ValueError(f"unknown face detector {kind!r}; use 'haar' or 'mtcnn'")


def centre_crop_box(box: tuple[int, int, int, int], shape: tuple[int, ...], scale: float = 1.3
                    ) -> tuple[int, int, int, int]:
    """A square ``(x0, y0, x1, y1)`` of side ``scale * max(w, h)`` centred on the face box, shifted to
    stay inside an image of ``shape`` (H, W, ...) and shrunk to fit if larger.

    The training crops' margin is not published (issue #10 only says "512*512 with the face
    centered"); 1.3× is the common FF++ preprocessing margin (e.g. DeepFakeBench) [I].
    """
    x, y, w, h = box
    H, W = shape[:2]
    side = int(round(min(scale * max(w, h), H, W)))
    cx, cy = x + w / 2, y + h / 2
    x0 = int(round(min(max(cx - side / 2, 0), W - side)))
    y0 = int(round(min(max(cy - side / 2, 0), H - side)))
    return x0, y0, x0 + side, y0 + side


def list_images(path: str | Path) -> list[Path]:
    """One image file -> ``[path]``; a folder -> its image files (recursive, sorted). Raises if
    ``path`` does not exist or holds no image; logs how many non-image files were ignored."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such image or folder")
    files = sorted(p for p in path.rglob("*") if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise FileNotFoundError(f"{path}: no images (suffixes {IMAGE_SUFFIXES}) in this folder or below")
    if len(images) < len(files):
        log.info("%s: ignored %d non-image file(s)", path, len(files) - len(images))
    return images


class PredictionStopped(OSError):
    """Strict :func:`predict` met an unreadable image. The message names it; ``scored`` is the table of the
    images scored before it, so that work is not lost."""

    def __init__(self, message: str, scored: pd.DataFrame):
        super().__init__(message)
        self.scored = scored


def predict(source: str | Path | Sequence[str | Path], model: MixtureOfExperts, *, face_crop: str | None = None,
            crop_scale: float = 1.3, size: int = INPUT_SIZE, batch_size: int = 1, progress: bool = True,
            lenient: bool = False) -> pd.DataFrame:
    """P(fake) per image of a file, a folder or a list of files.

    Returns one row per image: ``path``, ``score`` (P(fake) in [0, 1], the mixture), ``p_<i>`` (expert
    ``i``'s P(fake)), and with ``face_crop`` (``"haar"`` / ``"mtcnn"``) ``face_found``: images without a
    detected face are scored whole and flagged (their count is logged), never dropped. An unreadable image
    (:func:`dfbook.imageio.read_rgb`: missing, empty, truncated, too small) raises :class:`PredictionStopped`,
    which carries the rows scored before it; ``lenient=True`` skips it instead and lists every skipped file
    in ``table.attrs["skipped"]`` (a frame ``path, reason``). ``batch_size=1`` as in ``infer.py``: the
    seven 512² experts need several GB per image batch on a GPU.
    """
    from dfbook.imageio import ImageReadError, read_rgb

    paths = [Path(p) for p in source] if isinstance(source, (list, tuple)) else list_images(source)
    detect = face_detector(face_crop) if face_crop else None
    device = next(model.parameters()).device
    rows, batch, skipped = [], [], []

    def flush():
        if not batch:
            return
        x = torch.stack([t for _, t in batch]).to(device)
        with torch.inference_mode():
            probs = model.expert_probs(x).cpu().numpy().astype(float)
        for (row, _), p in zip(batch, probs):
            rows.append({**row, "score": float(p.mean()), **{f"p_{i}": float(v) for i, v in enumerate(p)}})
        batch.clear()

    model.eval()
    for path in runtime.bar(paths, desc="defenders", unit="img", progress=progress):
        try:
            rgb = read_rgb(path)
        except ImageReadError as e:
            if not lenient:
                flush()
                raise PredictionStopped(str(e), pd.DataFrame(rows)) from e
            skipped.append({"path": str(path), "reason": str(e)})
            continue
        row = {"path": str(path)}
        if detect is not None:
            box = detect(rgb)
            row["face_found"] = box is not None
            if box is not None:
                x0, y0, x1, y1 = centre_crop_box(box, rgb.shape, crop_scale)
                rgb = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        batch.append((row, preprocess(rgb, size)))
        if len(batch) == batch_size:
            flush()
    flush()
    out = pd.DataFrame(rows)
    out.attrs["skipped"] = pd.DataFrame(skipped, columns=["path", "reason"])
    if skipped:
        log.warning("skipped %d unreadable image(s) of %d, e.g. %s", len(skipped), len(paths), skipped[0]["path"])
    if detect is not None and len(out) and not out["face_found"].all():
        log.warning("%d of %d image(s) had no detected face and were scored whole (face_found=False)",
                    int((~out["face_found"]).sum()), len(out))
    return out


def predict_path(path: str | Path, weights_dir: str | Path, *, face_crop: str | None = None,
                 device: str = "cpu", **kwargs) -> pd.DataFrame:
    """One call: load the released weights from ``weights_dir`` and score an image or a folder
    (see :func:`predict` for the columns and options)."""
    return predict(path, load_released(weights_dir, device=device), face_crop=face_crop, **kwargs)


def with_labels(scores: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """The :func:`predict` table joined to a manifest's ``label`` (and ``method``, ``dataset`` when present) on
    the resolved file path; images the manifest does not list keep a missing label and are counted in
    ``attrs["unlabelled"]``, so an AUC over the labelled rows says how many it left out."""
    cols = [c for c in ("label", "method", "dataset") if c in df]
    key = df.assign(path=[str(Path(p).resolve()) for p in df["path"]]).drop_duplicates("path")[["path", *cols]]
    out = scores.assign(path=[str(Path(p).resolve()) for p in scores["path"]]).merge(key, on="path", how="left")
    out.attrs["unlabelled"] = int(out["label"].isna().sum())
    return out


# ---------------------------------------------------------------------------------------------
# Dry run: the full-size architectures with random weights
# ---------------------------------------------------------------------------------------------
def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def dry_run(archs: Sequence[str] = FULL_EXPERTS, *, size: int = INPUT_SIZE, batch_size: int = 1,
            batches: int = 2, seed: int = 0) -> pd.DataFrame:
    """Build each expert with random weights (one at a time, to bound memory), push ``batches``
    random ``(batch_size, 3, size, size)`` batches through it, and report per expert: ``arch``,
    ``params``, ``logits_shape``, ``feat_shape``, ``seconds`` and ``peak_rss_mb`` (the process's peak
    resident memory so far, Linux/macOS). Nothing is downloaded."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i, arch in enumerate(archs):
        t0 = time.perf_counter()
        expert = build_expert(arch).eval()
        with torch.inference_mode():
            for _ in range(batches):
                logits, feat = expert(torch.randn(batch_size, 3, size, size, generator=gen))
        rows.append({"expert": i, "arch": arch, "params": sum(p.numel() for p in expert.parameters()),
                     "logits_shape": tuple(logits.shape), "feat_shape": tuple(feat.shape),
                     "seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": _peak_rss_mb()})
        del expert
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Training pieces, re-implemented [inferred]
# ---------------------------------------------------------------------------------------------
def cluster_splits(features: np.ndarray, k: int = 7, *, groups: Sequence | None = None, seed: int = 0
                   ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Stage I of the framework figure: k-means on frozen-encoder features into ``k`` clusters and
    ``k`` leave-one-cluster-out splits (split ``i``: validation = cluster ``i``, train = the rest).

    ``features``: ``(N, D)`` float, one row per sample. ``groups``: optional ``(N,)`` keys (e.g.
    ``manifest.video_key(df)``) clustered as one unit on their mean L2-normalised feature, so frames of
    one video never straddle train and validation -- a correction: the competition data were single
    images, video frames would otherwise leak. Features are L2-normalised first (cosine geometry) [I];
    the encoder and K are not published (K = 7 because 7 experts ship) [I]. sklearn ``KMeans`` with
    ``random_state=seed`` replaces ``torch_kmeans`` (in the authors' dependency list).

    Returns ``(cluster (N,) int in [0, k), [(train_idx, val_idx), ...] × k)``.
    """
    from sklearn.cluster import KMeans

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"features must be a non-empty (N, D) array; got shape {x.shape}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if groups is None:
        inverse, units = np.arange(len(x)), x
    else:
        keys, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        units = np.zeros((len(keys), x.shape[1]))
        np.add.at(units, inverse, x)
        units /= np.bincount(inverse, minlength=len(keys))[:, None]
    if len(units) < k:
        raise ValueError(f"cannot make {k} clusters from {len(units)} sample(s)/group(s); lower k")
    unit_cluster = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(units)
    cluster = unit_cluster[inverse]
    splits = [(np.flatnonzero(cluster != c), np.flatnonzero(cluster == c)) for c in range(k)]
    return cluster, splits


def supcon_loss(feat: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, Eq. 2, "L_out") on ``feat (B, D)`` with
    ``labels (B,)``; the figure's L_NCE pulls same-class features together and pushes real/fake apart,
    its exact form is not published [I]. Anchors without a positive in the batch are skipped.
    Hand-written: 15 lines, and no metric-learning library is a dependency of the book.
    """
    z = F.normalize(feat, dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = pos.sum(1)
    has_pos = n_pos > 0
    if not has_pos.any():
        return feat.new_zeros(())
    mean_log_prob_pos = log_prob.masked_fill(~pos, 0.0).sum(1)[has_pos] / n_pos[has_pos]
    return -mean_log_prob_pos.mean()


def noise_kl_loss(logits_noise: torch.Tensor) -> torch.Tensor:
    """KL(softmax(logits) ‖ uniform), batch-mean, for an expert's logits on random-noise inputs
    ``(B, C)``: zero when the expert is maximally unsure on non-face noise (the figure's L_KL on noise;
    the direction and the target are our reading [I])."""
    log_p = F.log_softmax(logits_noise, dim=1)
    log_u = torch.full_like(log_p, -math.log(log_p.shape[1]))
    return F.kl_div(log_u, log_p, log_target=True, reduction="batchmean")


def expert_losses(expert: nn.Module, batch, *, noise_batch: int = 4, w_nce: float = 1.0, w_kl: float = 1.0,
                  temperature: float = 0.07) -> dict[str, torch.Tensor]:
    """The three losses of one training step of one expert, in ``dfbook.train.fit``'s ``loss_fn(model,
    batch)`` form (bind the options with ``functools.partial``): ``{"loss", "ce", "nce", "kl"}`` with
    ``loss = ce + w_nce * nce + w_kl * kl`` (unweighted in the figure; weights unknown [U]).

    ``batch``: ``(x (B, 3, H, W) normalised images, y (B,) int labels 1 = fake, ...)``; ``expert``
    returns ``(logits, feat)`` like :class:`Expert`. The noise batch is ``N(0, 1)`` in normalised-input
    space, i.e. noise around the ImageNet mean [I], drawn from torch's global RNG so that ``fit``'s
    checkpoints (which save it) resume exactly.
    """
    x, y = batch[0], batch[1].long()
    logits, feat = expert(x)
    noise = torch.randn((noise_batch, *x.shape[1:])).to(x.device)
    ce = F.cross_entropy(logits, y)
    nce = supcon_loss(feat, y, temperature)
    kl = noise_kl_loss(expert(noise)[0])
    return {"loss": ce + w_nce * nce + w_kl * kl, "ce": ce.detach(), "nce": nce.detach(), "kl": kl.detach()}


# ---------------------------------------------------------------------------------------------
# The chapter's experiment: pool, test domains, experts, scores
# ---------------------------------------------------------------------------------------------
def _thin_frames(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """``k`` evenly spaced frames per video (every ``n // k``-th frame of an ``n``-frame video)."""
    by = df.groupby(manifest.video_key(df), sort=False)["frame"]
    rank = by.rank(method="first").astype(int) - 1
    step = (by.transform("size") // k).clip(lower=1)
    return df[(rank % step == 0) & (rank // step < k)]


def chapter_sets(faces: pd.DataFrame, images: pd.DataFrame, *, seen_manipulations: Sequence[str],
                 unseen_manipulations: Sequence[str], seen_generators: Sequence[str],
                 unseen_generators: Sequence[str], cross_domains: Sequence[str] = (), pool_frames: int = 2,
                 test_frames: int = 4, max_per_method: int | None = None, seed: int = 0) -> dict[str, pd.DataFrame]:
    """The competition-like data of the chapter from the mini benchmark (or real manifests with the
    same columns): face videos of FF++-like manipulations plus generated images, as multi-FFDI mixed
    face swaps/edits and fully generated images, and as the authors added SD and edited fakes (§3.3).

    - ``pool``: the "official" train + val data (its ``split`` column is the official split; the
      clusters are made on all of it): ``ffpp`` reals and ``seen_manipulations``, ``mini_gen`` reals
      and ``seen_generators``.
    - ``seen``: the test split of the same sources. ``unseen_manipulations`` / ``unseen_generators``:
      test-split fakes of the held-out methods with the test-split reals of their source.
      ``cross_dataset``: the test splits of ``cross_domains`` (other capture conditions).

    Videos give ``pool_frames`` / ``test_frames`` evenly spaced frames; ``max_per_method`` caps the
    images of each (method, split) of the generated-image manifest (seeded sample). Every set holds both classes,
    and the pool shares no identity or video with any test set (checked).
    """
    ff = faces[faces["domain"] == "ffpp"]
    # the zoo's real-only pretraining pool and the file-format control set are not detection data
    gen = images[(images["dataset"] != "mini_pretrain")
                 & (images.get("domain", images["dataset"]) != "format_control")]
    if max_per_method is not None:
        gen = gen.sample(frac=1.0, random_state=seed).groupby(["method", "split"]).head(max_per_method)

    def part(df, methods, splits, frames=None):
        df = df[df["method"].isin(["real", *methods]) & df["split"].isin(splits)]
        return _thin_frames(df, frames) if frames else df

    for kind, df, methods in (("manipulation", ff, seen_manipulations), ("generator", gen, seen_generators)):
        absent = sorted(set(methods) - set(df.loc[df["split"].isin(("train", "val")), "method"]))
        if absent:
            raise ValueError(f"seen {kind}(s) {absent} have no train/val rows, so the pool would not contain them "
                             "(CNNDetection, for one, trains on ProGAN only and has the other GANs in test/): list "
                             "them as unseen instead")
    sets = {
        "pool": pd.concat([part(ff, seen_manipulations, ("train", "val"), pool_frames),
                           part(gen, seen_generators, ("train", "val"))]),
        "seen": pd.concat([part(ff, seen_manipulations, ("test",), test_frames),
                           part(gen, seen_generators, ("test",))]),
        "unseen_manipulations": part(ff, unseen_manipulations, ("test",), test_frames),
        "unseen_generators": part(gen, unseen_generators, ("test",)),
    }
    if cross_domains:
        cross = faces[faces["domain"].isin(cross_domains) & (faces["split"] == "test")]
        sets["cross_dataset"] = _thin_frames(cross, test_frames)
    for name, df in sets.items():
        if df["label"].nunique() < 2:
            raise ValueError(f"chapter set {name!r} holds one class only; check the method names against the "
                             f"corpora (faces: {sorted(faces['method'].unique())}; "
                             f"images: {sorted(images['method'].unique())})")
        sets[name] = df.sort_values(["dataset", "method", "video_id", "frame"]).reset_index(drop=True)
    tests = pd.concat([df for n, df in sets.items() if n != "pool"]).drop_duplicates("path")
    manifest.check_disjoint(pd.concat([sets["pool"].assign(split="train"), tests.assign(split="test")]))
    return sets


def expert_archs(backbones_: Sequence[str], k: int) -> list[str]:
    """The backbone of each of ``k`` cluster experts: ``backbones_`` cycled (the release alternates
    families too: 2 ConvNeXtV2, 2+2+1 EfficientNets)."""
    return [backbones_[i % len(backbones_)] for i in range(k)]


def load_corpora(faces_csv: str = "", images_csv: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The face-video and generated-image manifests: CSV files under ``$DFBOOK_DATA`` (full profile:
    e.g. FF++/Celeb-DF frames from ``dfbook prepare``, and a generated-image set), or ``""`` for the
    mini benchmark's ``faces`` and ``images`` corpora. CSV paths are resolved against their folder."""
    from dfbook import paths
    from dfbook.bench import corpus

    def one(csv, kind):
        if not csv:
            return corpus.load(kind)
        return manifest.read(paths.resolve_data_path(csv))
    return one(faces_csv, "faces"), one(images_csv, "images")


def make_expert(name: str, *, pretrained: bool = True, init_seed: int = 0, **kw) -> Expert:
    """An :class:`Expert` around ``dfbook.backbones.create(name, num_classes=2)`` -- ``timm:<arch>``
    (the release's experts) or ``mini:<arch>`` (the zoo). ``expert.spec`` holds the backbone's
    preprocessing spec (size, mean, std) for :func:`load_inputs`."""
    from dfbook import backbones

    bb = backbones.create(name, pretrained=pretrained, num_classes=2, init_seed=init_seed, **kw)
    expert = Expert(bb.model)
    expert.spec = bb.spec
    return expert


def _normalise(arr: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def load_inputs(df: pd.DataFrame, *, size: int, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of a manifest as one normalised batch: ``x`` float32 ``(N, 3, size, size)``, ``y``
    int64 ``(N,)``. Unreadable files raise naming the file (``dfbook.imageio``). For the mini
    benchmark's few thousand 64² images; larger sets stream (:class:`InputFiles`)."""
    from dfbook.imageio import load_images

    arr, _ = load_images(list(df["path"]), size=size)
    y = torch.from_numpy(np.array(df["label"], dtype=np.int64))  # a copy: pandas arrays are read-only
    return _normalise(arr, mean, std), y


class InputFiles(torch.utils.data.Dataset):
    """The images of a manifest read from disk one at a time, for sets too large for memory (``full``: the pool
    at 512² is tens of GB as floats). Item ``i`` = ``(x float32 (3, size, size), y int64)``, the same pixels and
    normalisation as row ``i`` of :func:`load_inputs`; ``workers`` DataLoader processes read and decode."""

    def __init__(self, df: pd.DataFrame, *, size: int, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, workers: int = 0):
        from dfbook import imageio

        missing = [p for p in df["path"].astype(str) if not Path(p).is_file() or Path(p).stat().st_size == 0]
        if missing:
            raise imageio.ImageReadError(f"{len(missing)} of {len(df)} images are missing or empty, e.g. "
                                         f"{missing[:3]}; check the manifest or re-extract them")
        self.paths, self.size, self.mean, self.std, self.workers = list(df["path"].astype(str)), size, mean, std, workers
        self.labels = torch.from_numpy(np.array(df["label"], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from dfbook.imageio import load_images

        arr, _ = load_images([self.paths[i]], size=self.size)
        return _normalise(arr, self.mean, self.std)[0], self.labels[i]


def inputs(df: pd.DataFrame, *, size: int, stream: bool = False, workers: int = 0):
    """What :func:`train_experts` and :func:`expert_scores` take: :func:`load_inputs`'s ``(x, y)`` tensors, or
    (``stream``) an :class:`InputFiles` reading each image when its batch needs it."""
    return InputFiles(df, size=size, workers=workers) if stream else load_inputs(df, size=size)


def _part(data, idx: np.ndarray):
    return (data[0][idx], data[1][idx]) if isinstance(data, tuple) else torch.utils.data.Subset(data, idx)


def train_experts(specs: Mapping[str, tuple[str, np.ndarray, np.ndarray]], data, *, config, noise_batch: int = 8,
                  w_nce: float = 1.0, w_kl: float = 1.0, pretrained: bool = True,
                  progress: bool = False) -> tuple[dict[str, Expert], pd.DataFrame]:
    """Train one expert per entry ``name -> (backbone name, train_idx, val_idx)`` (indices into ``data``: the
    :func:`inputs` of the pool, tensors or streamed) with :func:`expert_losses` and ``dfbook.train.fit``
    (``config``: a ``TrainConfig``; set ``ema_decay=EMA_DECAY`` for the release's EMA, which fit bakes into the
    weights at the end, and ``num_workers`` for streamed data). Every expert starts from the same backbone
    weights, its classifier head seeded by ``config.seed``. Streamed and in-memory data train identically.

    Returns ``({name: trained Expert in eval mode}, history with an ``expert`` column)``.
    """
    import functools

    from dfbook import train

    loss = functools.partial(expert_losses, noise_batch=noise_batch, w_nce=w_nce, w_kl=w_kl)
    experts, histories = {}, []
    for name, (backbone, tr, va) in specs.items():
        expert = make_expert(backbone, pretrained=pretrained, init_seed=config.seed)
        hist = train.fit(expert, _part(data, tr), val=_part(data, va), config=config, loss_fn=loss,
                         progress=progress)
        experts[name] = expert.eval()
        histories.append(hist.assign(expert=name))
    return experts, pd.concat(histories, ignore_index=True)


def expert_scores(experts: Mapping[str, nn.Module], data, *, batch_size: int = 256) -> pd.DataFrame:
    """P(fake) of every expert on ``data`` (a tensor ``x``, :func:`inputs`' ``(x, y)`` or an :class:`InputFiles`):
    a ``(N, n_experts)`` frame, one column per expert."""
    x = data[0] if isinstance(data, tuple) else data
    batches = (x.split(batch_size) if isinstance(x, torch.Tensor) else  # streamed: each image is read once
               (b for b, _ in torch.utils.data.DataLoader(x, batch_size=batch_size, num_workers=x.workers)))
    out = {name: [] for name in experts}
    with torch.inference_mode():
        for expert in experts.values():
            expert.eval()
        for b in batches:
            for name, expert in experts.items():
                out[name].append(F.softmax(expert(b)[0], dim=1)[:, 1])
    return pd.DataFrame({name: torch.cat(parts).numpy() for name, parts in out.items()})


def score_table(y: np.ndarray, scores: pd.DataFrame, *, keys=None, n_boot: int = 200, seed: int = 0,
                fpr: float = 1e-3) -> pd.DataFrame:
    """AUC and TPR at ``fpr`` with stratified bootstrap intervals for each score column (videos
    resampled whole when ``keys`` are given). With fewer than ``1/fpr`` reals, TPR@FPR is the TPR at
    zero false positives (the threshold sits above every real score): ``n_real`` says how many."""
    from dfbook import metrics

    y = np.asarray(y)
    rows = []
    for name in scores.columns:
        s = scores[name].to_numpy()
        a = metrics.bootstrap_ci(metrics.auc, y, s, keys=keys, n_boot=n_boot, seed=seed)
        t = metrics.bootstrap_ci(lambda yy, ss: metrics.tpr_at_fpr(yy, ss, fpr), y, s, keys=keys,
                                 n_boot=n_boot, seed=seed)
        rows.append({"model": name, "auc": a.value, "auc_lo": a.lo, "auc_hi": a.hi, "tpr": t.value,
                     "tpr_lo": t.lo, "tpr_hi": t.hi, "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum())})
    return pd.DataFrame(rows)


def agreement(scores: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """Pairwise decision agreement of the score columns at ``threshold``: fraction of images on which
    two experts give the same real/fake call, ``(n, n)`` in [0, 1]."""
    calls = scores.to_numpy() > threshold
    same = (calls[:, :, None] == calls[:, None, :]).mean(axis=0)
    return pd.DataFrame(same, index=scores.columns, columns=scores.columns)


def demo_check(table: pd.DataFrame) -> pd.DataFrame:
    """The release's smoke test (card §3.5 pitfall 4: corrupted weights gave 0.587/0.687): rows of a
    :func:`predict` table whose file is one of the repository's two demo images, with the expected
    P(fake) from the file name and the absolute error. Empty when no demo image was scored."""
    name = table["path"].map(lambda p: Path(p).name)
    out = table.loc[name.isin(DEMO_EXPECTED), ["path", "score"]].copy()
    out["expected"] = name[out.index].map(DEMO_EXPECTED)
    out["abs_error"] = (out["score"] - out["expected"]).abs()
    return out.reset_index(drop=True)


def motivation_table(val_auc: Mapping[str, float], unseen: pd.DataFrame) -> pd.DataFrame:
    """The authors' motivating comparison (``imgs/motivation.jpg``): for every model, the AUC its own
    validation set promised (official val split, or the held-out cluster) next to the AUC it gets on
    unseen fakes, and the gap (``val_auc - unseen_auc``; large = validation was over-optimistic).
    ``unseen``: a :func:`score_table` on the unseen set (``model``, ``auc`` columns)."""
    t = unseen.set_index("model")[["auc", "auc_lo", "auc_hi"]].rename(columns=lambda c: "unseen_" + c)
    t.insert(0, "validated_on", ["official val split" if m == "official" else
                                 "held-out cluster" if m in val_auc else "-" for m in t.index])
    t.insert(1, "val_auc", [val_auc.get(m, np.nan) for m in t.index])
    t["gap"] = t["val_auc"] - t["unseen_auc"]
    return t.reset_index()


# ---------------------------------------------------------------------------------------------
# Command line: dfbook predict-defenders
# ---------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dfbook predict-defenders",
        description="P(fake) per image with the released DeepFakeDefenders experts (CPU or GPU). "
                    "Faces should be centred: the experts were trained on face crops (issue #10).")
    p.add_argument("path", nargs="?", help="an image file or a folder of images (searched recursively)")
    p.add_argument("--weights", type=Path, help="folder holding the released weight.pth and ema.state")
    p.add_argument("--face-crop", nargs="?", const="haar", choices=["haar", "mtcnn"], default=None,
                   help="crop a square around the largest detected face first (default detector: haar)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--out", type=Path, help="also write the table (path, score, p_0..p_6) to this CSV")
    p.add_argument("--lenient", action="store_true",
                   help="skip unreadable images instead of stopping at the first; they are listed on stderr and, "
                        "with --out, in OUT's .skipped.csv")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA averages")
    p.add_argument("--dry-run", action="store_true",
                   help="build the seven experts at 512x512 with random weights, push 2 batches, print "
                        "parameter counts, shapes, time and memory; no weights or images needed")
    return p


def _emit(table: pd.DataFrame, out: Path | None, *, partial: bool = False) -> str:
    """Print ``infer.py``'s line per scored image and write the table (to ``OUT.partial.csv`` for the images
    scored before a strict run stopped, so the unfinished table is never taken for the full one)."""
    for row in table.itertuples():
        print(f"Prediction of [{row.path}] being Deepfake: {row.score:10.9f}")  # infer.py's line
    if out is None:
        return ""
    target = scores_out.sibling(out, "partial") if partial else out
    target.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(target, index=False)
    if not partial:
        scores_out.sibling(out, "partial").unlink(missing_ok=True)  # an earlier stopped run's table is superseded
    return str(target)


def main(argv: list[str] | None = None) -> int:
    """``dfbook predict-defenders PATH --weights DIR [--face-crop [haar|mtcnn]] [--out CSV] [--lenient]`` or
    ``dfbook predict-defenders --dry-run``. Returns the process exit code: 0 done, 2 a user error (one line on
    stderr: a missing path or weights file, or -- without ``--lenient`` -- an unreadable image, after the
    scores computed before it are printed and, with ``--out``, written to ``OUT.partial.csv``)."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.dry_run:
        table = dry_run(batch_size=args.batch_size)
        print(table.to_string(index=False))
        print(f"total parameters: {table['params'].sum():,}")
        return 0
    if args.path is None or args.weights is None:
        parser.error("PATH and --weights DIR are required (or use --dry-run)")
    try:
        images = list_images(args.path)  # before the minutes of loading seven experts
        model = load_released(args.weights, device=args.device, use_ema=not args.no_ema)
        table = predict(images, model, face_crop=args.face_crop, batch_size=args.batch_size, lenient=args.lenient)
    except PredictionStopped as e:
        where = _emit(e.scored, args.out, partial=True)
        kept = f"; the {len(e.scored)} score(s) computed before it are in {where}" if where and len(e.scored) else ""
        print(f"dfbook predict-defenders: {e}{kept}. Rerun with --lenient to score every readable image and "
              "list the unreadable ones", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"dfbook predict-defenders: {e}", file=sys.stderr)
        return 2
    where = _emit(table, args.out)
    if where:
        print(f"wrote {where}")
    scores_out.report_skipped("dfbook predict-defenders", table.attrs["skipped"], len(images), args.out, "image")
    return 0



# ---------------------------------------------------------------------------------------------
# Saved detectors (dfbook.detector)
# ---------------------------------------------------------------------------------------------
def save_detectors(run, experts: Mapping[str, nn.Module], archs: Sequence[str], sets: Mapping[str, pd.DataFrame],
                   scores: Mapping[str, pd.DataFrame], *, size: int, released: MixtureOfExperts | None = None,
                   released_from: str = "", released_archs: Sequence[str] = FULL_EXPERTS,
                   released_size: int = INPUT_SIZE) -> pd.DataFrame:
    """Save the mixture of the cluster experts (mean of their P(fake), EMA weights; each expert chosen as the
    final EMA state and validated on its held-out cluster) -- and the released mixture when the chapter loaded
    it -- as :class:`dfbook.detector.Detector` s, scored on the ``seen`` test set; returns the summary table."""
    from dfbook import detector as D

    names = [f"cluster_{i}" for i in range(len(archs))]
    out = [D.save_trained(run, D.Detector("mixture", "defenders", MixtureOfExperts([experts[n] for n in names]),
                                          D.Preprocess(size, IMAGENET_MEAN, IMAGENET_STD, mode="fit"),
                                          {"function": "dfbook.methods.defenders:build", "kwargs": {"archs": list(archs)}},
                                          output="probability"),
                          sets["seen"], train=sets["pool"], selection="final_epoch",
                          architecture=f"mean P(fake) of {len(archs)} experts ({', '.join(archs)})",
                          protocol="pool clustered into K video-disjoint clusters; expert i trains on the others "
                          "(EMA weights of the last epoch) and is validated on cluster i",
                          chapter_scores=scores["seen"]["mixture"].to_numpy())]
    if released is not None:
        out.append(D.save_trained(run, D.Detector("mixture_released", "defenders", released,
                                                  D.Preprocess(released_size, IMAGENET_MEAN, IMAGENET_STD,
                                                               mode="normalise_resize"),
                                                  {"function": "dfbook.methods.defenders:build",
                                                   "kwargs": {"archs": list(released_archs)}}, output="probability"),
                                  sets["seen"], architecture=f"the released mixture of {len(released_archs)} experts",
                                  protocol="DeepFakeDefenders' released weight.pth + ema.state (EMA baked in)",
                                  selection="released", source="released", released_from=released_from))
    return D.saved_table(out)


if __name__ == "__main__":
    sys.exit(main())
