"""Unsupervised deepfake video detection: Qiao et al., "Fully Unsupervised Deepfake Video Detection via Enhanced
Contrastive Learning" (IEEE TPAMI 2024) as released, and the "Improved Unsupervised DeepFake Detection" fork.

Sources (read, not vendored; section numbers "card §1.x" refer to
``reference/methods_unsupervised_clippeft_defenders.md`` §1):

* baseline ``bestalllen/Unsupervised_DF_Detection@428ff47``: ``pseudo_label_generator.py`` + ``lib/vaf_util.py``
  (stage 1), ``enhanced_contrastive_learner.py`` + ``loss.py`` + ``model.py`` (stage 2); its stage 3 was deleted,
  read at ``@c207215 binary_classifier.py``;
* fork ``JohnPrice11/Unsupervised-Deep-Fake-Detection@90d5ff4``: ``stage2.py`` (pretrained ConvNeXt, cosine,
  AMP, gradient accumulation, clipping, t-SNE, checkpoints), ``stage3.py`` (supervised MLP), ``stage4.py``.

The four stages, each a few functions here:

1. pseudo-labels: :func:`vaf` (18-d visual-artifact features: Laws energies over the eyes and the teeth, only on
   frames with open eyes and mouth), :func:`pseudo_labels` (2-means, per-video majority vote);
2. enhanced contrastive learning: :class:`ECL` (backbone + projection), :func:`supcon_loss` (T = 0.07, two views
   from :func:`augment`), :func:`train_encoder` (the baseline's confident-sample reselection with re-init every
   ``S`` epochs, or the fork's single run) on top of :func:`dfbook.train.fit`;
3. binary decision: :func:`interframe_stats` (Spearman / Euclidean between consecutive frames),
   :func:`transductive_rule` (baseline), :class:`FeatureClassifier` + :func:`train_classifier` (fork, supervised
   when given ground truth);
4. video authentication: :func:`authenticate` (majority vote and mean probability over evenly spaced frames).

Labels follow the book: 1 = fake, 0 = real. Cluster ids from k-means are arbitrary (card §1.2: "0" does not mean
real); wherever a cluster has to be *named* fake or real, the choice is made on a labelled held-out set and stated
(:func:`fit_direction`, :func:`orient`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from dfbook import imageio, metrics, runtime, train

BASELINE = "bestalllen/Unsupervised_DF_Detection@428ff47"
BASELINE_STAGE3 = "bestalllen/Unsupervised_DF_Detection@c207215 binary_classifier.py"
FORK = "JohnPrice11/Unsupervised-Deep-Fake-Detection@90d5ff4"

# ----------------------------------------------------------------------------------------------- stage 1: VAF
# lib/vaf_util.py: Laws (1980) 5-tap vectors, all 16 outer products, symmetric pairs averaged -> 9 energy maps.
LAWS = {"L5": (1, 4, 6, 4, 1), "E5": (-1, -2, 0, 2, 1), "S5": (-1, 0, 2, 0, -1), "R5": (1, -4, 6, -4, 1)}
ENERGY_MAPS = (("L5E5", "E5L5"), ("L5R5", "R5L5"), ("E5S5", "S5E5"), ("L5S5", "S5L5"), ("E5R5", "R5E5"),
               ("S5R5", "R5S5"), ("S5S5",), ("R5R5",), ("E5E5",))
VAF_NAMES = tuple(f"{part}_{'_'.join(m)}" for part in ("eye", "teeth") for m in ENERGY_MAPS)
RIGHT_EYE, LEFT_EYE, INNER_MOUTH = np.arange(36, 42), np.arange(42, 48), np.arange(60, 68)
EYE_OPEN, MOUTH_OPEN = 0.25, 0.15    # classify_eyes_open / classify_mouth_open thresholds
LOCAL_MEAN, ENERGY_WINDOW = 15, 10   # preprocess_image(size=15), compute_energy(law_images, 10)
MOUTH_SIDE = 256                     # extract_vaf(..., scale=256): the mouth crop is resized to this larger side
MIN_EYE_PIXELS, MIN_TEETH_FRACTION = 10, 0.01
VAF_REASONS = ("ok", "eyes_closed", "mouth_closed", "eye_mask_small", "teeth_not_found", "no_landmarks")


def laws_filters() -> dict[str, np.ndarray]:
    """The 16 Laws masks ``name -> (5, 5) int64``; ``"L5E5"[i, j] = E5[i] * L5[j]`` as in ``generate_law_filters``."""
    return {a + b: np.outer(np.asarray(vb), np.asarray(va)) for a, va in LAWS.items() for b, vb in LAWS.items()}


def _mean_kernel(size: int) -> np.ndarray:
    return np.full((size, size), 1.0 / size**2, np.float32)


def laws_energy(rgb: np.ndarray, *, faithful_uint8: bool = True) -> np.ndarray:
    """Nine Laws texture-energy maps ``(9, H, W)`` float32 of an RGB ``uint8`` image ``(H, W, 3)``.

    ``faithful_uint8=True`` repeats the baseline's arithmetic bit for bit (card §1.8 pitfall 5, inherited from
    EVA): the grey image minus its local mean is a *uint8* subtraction (wraps around), ``filter2D(..., -1, ...)``
    keeps uint8 so negative responses saturate to 0 before ``abs`` (a no-op), the 10x10 energy is uint8 again,
    and the symmetric pairs are summed in uint8 (wraps) before ``/ 2.0``. ``False`` does the same steps in float32.
    Values: 0..255 (faithful) or >= 0 (float).
    """
    masks = laws_filters()
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if faithful_uint8:
        zero_mean = gray - cv2.filter2D(gray, -1, _mean_kernel(LOCAL_MEAN))
        energy = {n: cv2.filter2D(np.abs(cv2.filter2D(zero_mean, -1, k)), -1, _mean_kernel(ENERGY_WINDOW))
                  for n, k in masks.items()}
    else:
        g = gray.astype(np.float32)
        zero_mean = g - cv2.filter2D(g, -1, _mean_kernel(LOCAL_MEAN))
        energy = {n: cv2.filter2D(np.abs(cv2.filter2D(zero_mean, cv2.CV_32F, k.astype(np.float32))), -1,
                                  _mean_kernel(ENERGY_WINDOW)) for n, k in masks.items()}
    maps = [(energy[p[0]] + energy[p[1]]) / 2.0 if len(p) == 2 else energy[p[0]] for p in ENERGY_MAPS]
    return np.stack(maps).astype(np.float32)


def _ratio(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> float:
    """|c - d| / |a - b| (vertical over horizontal distance); 0 for a degenerate horizontal distance."""
    h = float(np.linalg.norm(b - a))
    return 0.0 if np.isclose(h, 0.0) else float(np.linalg.norm(d - c)) / h


def eyes_open(lm: np.ndarray, threshold: float = EYE_OPEN) -> bool:
    """Both eyes open: (mean of the upper lid points - mean of the lower) / corner distance > ``threshold``."""
    right = _ratio(lm[36], lm[39], (lm[37] + lm[38]) / 2, (lm[40] + lm[41]) / 2)
    left = _ratio(lm[42], lm[45], (lm[43] + lm[44]) / 2, (lm[46] + lm[47]) / 2)
    return right > threshold and left > threshold


def mouth_open(lm: np.ndarray, threshold: float = MOUTH_OPEN) -> bool:
    """Inner-lip gap |62-66| over inner-corner distance |60-64| > ``threshold``."""
    return _ratio(lm[60], lm[64], lm[62], lm[66]) > threshold


def convex_mask(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """Boolean convex-hull mask of integer ``points`` (K, 2) ``(x, y)``, clipped to ``shape`` (``generate_convex_mask``)."""
    from skimage.morphology import convex_hull_image

    mask = np.zeros(shape, np.uint8)
    x = np.clip(points[:, 0], 0, max(0, shape[1] - 1))
    y = np.clip(points[:, 1], 0, max(0, shape[0] - 1))
    mask[y, x] = 255
    return convex_hull_image(mask)


def face_crop(rgb: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop to the landmarks' bounding box, the stand-in for the dlib detection box the baseline crops with no
    margin (``get_crops_landmarks(roi_delta=0)``). Landmarks are rounded to int as dlib returns them.
    Returns the crop and the landmarks ``(68, 2)`` int in crop coordinates."""
    pts = np.rint(lm).astype(np.int32)
    x0, y0 = np.maximum(pts.min(0), 0)
    x1, y1 = pts.max(0) + 1
    return rgb[y0:y1, x0:x1], pts - np.array([x0, y0])


# The 9 energies at a pixel depend on its 15x15 local mean, then a 5x5 mask, then a 10x10 window (cv2 anchors
# an even kernel at 5: offsets -5..4): a reach of 7 + 2 + 5 = 14 pixels.
ENERGY_REACH = 16


def masked_energy(rgb: np.ndarray, mask: np.ndarray, *, faithful_uint8: bool = True) -> np.ndarray:
    """Mean of each of the 9 Laws energy maps of ``rgb`` over the boolean ``mask`` -> (9,) float32
    (``extract_features_mask``). Computed on the mask's bounding box plus :data:`ENERGY_REACH` pixels (clipped to
    the image, where OpenCV's border reflection is the same as for the whole image), which gives the whole-image
    values (up to OpenCV's rounding) at a fraction of the cost: the mouth crop is 256 px wide."""
    ys, xs = np.nonzero(mask)
    y0, y1 = max(ys.min() - ENERGY_REACH, 0), min(ys.max() + 1 + ENERGY_REACH, mask.shape[0])
    x0, x1 = max(xs.min() - ENERGY_REACH, 0), min(xs.max() + 1 + ENERGY_REACH, mask.shape[1])
    energy = laws_energy(np.ascontiguousarray(rgb[y0:y1, x0:x1]), faithful_uint8=faithful_uint8)
    m = mask[y0:y1, x0:x1]
    return np.array([np.mean(e[m], dtype=np.float32) for e in energy], np.float32)


def vaf(rgb: np.ndarray, lm: np.ndarray, *, faithful_uint8: bool = True) -> tuple[np.ndarray | None, str]:
    """The 18-d visual-artifact feature of one frame: 9 Laws energies averaged over both eyes, then 9 over the
    teeth (``extract_vaf``). ``rgb``: ``(H, W, 3)`` uint8 frame, ``lm``: ``(68, 2)`` dlib-68 landmarks in pixels.

    Returns ``(features (18,) float32, "ok")`` or ``(None, reason)`` with reason in :data:`VAF_REASONS`: frames
    whose eyes or mouth are closed are dropped, as are eye masks under 10 px and teeth under 1 % of the mouth.
    """
    if not np.isfinite(lm).all():
        return None, "no_landmarks"
    if not eyes_open(lm):
        return None, "eyes_closed"
    if not mouth_open(lm):
        return None, "mouth_closed"
    crop, pts = face_crop(rgb, lm)
    eye = convex_mask(crop.shape[:2], pts[LEFT_EYE]) | convex_mask(crop.shape[:2], pts[RIGHT_EYE])
    if eye.sum() < MIN_EYE_PIXELS:
        return None, "eye_mask_small"
    eye_features = masked_energy(crop, eye, faithful_uint8=faithful_uint8)
    teeth, crop = _teeth(crop, pts)
    if teeth is None:
        return None, "teeth_not_found"
    return np.concatenate([eye_features, masked_energy(crop, teeth, faithful_uint8=faithful_uint8)]), "ok"


def _teeth(crop: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """``extract_features_mouth``: resize the crop to larger side 256, 2-means on the grey values inside the inner
    mouth, the brighter cluster is the teeth. Returns (teeth mask or None, resized crop)."""
    h, w = crop.shape[:2]
    size = (MOUTH_SIDE, int(MOUTH_SIDE * h / w)) if w > h else (int(MOUTH_SIDE * w / h), MOUTH_SIDE)  # new_size()
    mouth = cv2.resize(convex_mask((h, w), pts[INNER_MOUTH]).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    crop = cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR)
    inside = mouth != 0
    if not inside.any():
        return None, crop
    values = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[inside]
    if values.min() == values.max():
        return None, crop
    # The baseline runs KMeans(2, random_state=0) on these grey values. In 1-D the optimal 2-means split is a
    # threshold, and Otsu's threshold is exactly the one minimising the within-cluster sum of squares, i.e. the
    # optimum that KMeans approximates; scikit-learn's KMeans cost ~0.2 s per frame here (thread start-up on a
    # few hundred values), Otsu microseconds.
    t, _ = cv2.threshold(values.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    teeth = np.zeros_like(inside)
    teeth[inside] = values > t
    if teeth.sum() / inside.sum() < MIN_TEETH_FRACTION:
        return None, crop
    return teeth, crop


def vaf_table(df: pd.DataFrame, landmarks: np.ndarray, *, faithful_uint8: bool = True,
              progress: bool = True) -> tuple[np.ndarray, pd.Series]:
    """VAF of every row of a frame manifest: ``(X (N, 18) float32 with NaN rows for dropped frames, reason (N,))``.

    ``landmarks``: ``(N, 68, 2)`` row-aligned (NaN rows = no face found). Unreadable images raise, naming the file.
    """
    if len(landmarks) != len(df):
        raise ValueError(f"landmarks ({len(landmarks)}) and manifest rows ({len(df)}) differ; pass row-aligned "
                         "landmarks, e.g. dfbook.bench.faces.landmarks(df)")
    X = np.full((len(df), len(VAF_NAMES)), np.nan, np.float32)
    reasons = []
    for i, (path, lm) in enumerate(runtime.bar(list(zip(df["path"], landmarks)), desc="VAF", progress=progress)):
        feats, why = vaf(imageio.read_rgb(path), lm, faithful_uint8=faithful_uint8)
        if feats is not None:
            X[i] = feats
        reasons.append(why)
    return X, pd.Series(reasons, index=df.index, name="vaf")


def video_keys(df: pd.DataFrame) -> np.ndarray:
    """Video key per row (``dataset/method/video_id``, :func:`dfbook.manifest.video_key`)."""
    from dfbook import manifest

    return manifest.video_key(df).to_numpy()


def majority(frame_labels: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Per-row video majority of non-negative frame labels; -1 for videos without any labelled frame.
    Ties go to the lower label (the baseline takes whichever label its first listed frame had, and the
    listing order is the file system's)."""
    out = np.full(len(keys), -1, np.int64)
    codes, uniq = pd.factorize(keys)
    for v in range(len(uniq)):
        rows = codes == v
        lab = frame_labels[rows]
        lab = lab[lab >= 0]
        if len(lab):
            out[rows] = np.bincount(lab).argmax()
    return out


def pseudo_labels(X: np.ndarray, keys: np.ndarray, *, seed: int = 0) -> pd.DataFrame:
    """Stage 1: ``KMeans(2, k-means++)`` on the frames with a VAF (no scaling, as the baseline), then every frame of
    a video gets its video's majority cluster. Returns one row per input row: ``cluster`` (frame's own cluster or
    -1), ``pseudo`` (video label or -1 when none of its frames had a VAF). The baseline sets no seed; here
    ``random_state=seed`` and ``n_init=10`` (the scikit-learn default when the baseline was written)."""
    from sklearn.cluster import KMeans

    ok = np.isfinite(X).all(1)
    if ok.sum() < 2:
        raise ValueError(f"only {int(ok.sum())} frame(s) have a VAF: 2-means needs at least 2. Use more frames per "
                         "video, or check the landmarks (eyes and mouth must be open)")
    cluster = np.full(len(X), -1, np.int64)
    cluster[ok] = KMeans(n_clusters=2, init="k-means++", n_init=10, random_state=seed).fit_predict(X[ok])
    return pd.DataFrame({"cluster": cluster, "pseudo": majority(cluster, keys)})


def purity(labels: np.ndarray, truth: np.ndarray) -> float:
    """Agreement of cluster ids with the ground truth under the better of the two namings (ids are arbitrary):
    ``max(mean(labels == truth), mean(labels != truth))`` in [0.5, 1]. With 1 real : 4 fake, giving every frame
    the same label already scores 0.8 -- read it next to :func:`balanced_purity`."""
    labels, truth = np.asarray(labels), np.asarray(truth)
    agree = float(np.mean(labels == truth))
    return max(agree, 1.0 - agree)


def balanced_purity(labels: np.ndarray, truth: np.ndarray) -> float:
    """Balanced accuracy of cluster ids against the ground truth under the better naming, in [0.5, 1]: 0.5 means
    the pseudo-labels carry no information about real vs fake, whatever the class ratio."""
    ba = metrics.balanced_accuracy(np.asarray(truth), np.asarray(labels).astype(float))
    return max(ba, 1.0 - ba)


PACKAGE_MODEL = "face_recognition_models"  # LANDMARK_MODEL value: dlib's 68-point model from that PyPI package


def landmark_model_path(value: str | Path) -> Path | None:
    """Where dlib's 68-point predictor is: ``""`` -> None (the mini corpus's ground-truth landmarks);
    ``"face_recognition_models"`` -> ``shape_predictor_68_face_landmarks.dat`` shipped in the PyPI package
    face-recognition-models (the ``[full]`` extra; located without importing it, which needs pkg_resources);
    anything else -> a file path, relative ones under ``$DFBOOK_DATA`` (the manual download)."""
    import importlib.util

    from dfbook import paths

    if not str(value):
        return None
    if str(value) != PACKAGE_MODEL:
        return paths.resolve_data_path(str(value))
    spec = importlib.util.find_spec(PACKAGE_MODEL)
    where = list(spec.submodule_search_locations or []) if spec is not None else []
    found = [Path(d) / "models" / "shape_predictor_68_face_landmarks.dat" for d in where]
    if not found or not found[0].is_file():
        raise FileNotFoundError(
            f"LANDMARK_MODEL = {PACKAGE_MODEL!r} needs the PyPI package face-recognition-models (dlib's 68-point model, "
            "trained on iBUG 300-W: non-commercial use only): `pip install -e '.[full]'`, or set LANDMARK_MODEL to the "
            "path of shape_predictor_68_face_landmarks.dat downloaded from dlib.net.")
    return found[0]


def dlib_landmarks(df: pd.DataFrame, model_file: str | Path, progress: bool = True) -> np.ndarray:
    """``full`` profile: dlib-68 landmarks ``(N, 68, 2)`` float32 for face crops (NaN rows where dlib's frontal
    detector, upsample 0, finds no face), with a user-supplied ``shape_predictor_68_face_landmarks.dat``
    (a relative path is taken under ``$DFBOOK_DATA``), or the copy in face-recognition-models
    (:func:`landmark_model_path`)."""
    path = landmark_model_path(model_file) if model_file else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"landmark model {str(model_file)!r} not found. Stage 1 needs dlib's 68-point predictor: download "
            "http://dlib.net/files/shape_predictor_68_face_landmarks.dat.bz2, unpack it (bunzip2) and pass its path "
            "as LANDMARK_MODEL (e.g. $DFBOOK_DATA/weights/shape_predictor_68_face_landmarks.dat).")
    try:
        import dlib
    except ImportError as e:
        raise ImportError("stage 1 in the full profile needs dlib for the baseline's face detector and 68-point "
                          "predictor: `pip install -e '.[full]'` (the dlib-bin wheels; `pip install dlib` builds "
                          "from source with cmake and a C++ compiler)") from e
    detector, predictor = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(path))
    out = np.full((len(df), 68, 2), np.nan, np.float32)
    for i, p in enumerate(runtime.bar(df["path"], desc="dlib landmarks", progress=progress)):
        img = imageio.read_rgb(p)
        dets, _, _ = detector.run(img, 0, 0)
        if len(dets):
            shape = predictor(img, dets[0])
            out[i] = [(shape.part(j).x, shape.part(j).y) for j in range(68)]
    return out


# ----------------------------------------------------------------------------------------------- stage 2: ECL
# enhanced_contrastive_learner.py / fork stage2.py: Adam 1e-4, wd 1e-4, SupCon T = 0.07, two views.
TEMPERATURE = 0.07
BASELINE_RECIPE = {"optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-4, "batch_size": 128, "epochs": 1000,
                   "scheduler": "constant", "reselect_every": 100, "keep": 0.8}   # S, k: Feb-2024 defaults
FORK_RECIPE = {"optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-4, "batch_size": 48, "accum_steps": 4,
               "epochs": 101, "scheduler": "cosine", "clip_grad_norm": 1.0, "amp": True, "ckpt_every": 2}
BASELINE_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))            # data/transform.py Normalize(0.5, 0.5)
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # fork stages 3/4


class ECL(nn.Module):
    """Backbone + projection head (``model.py`` ECL; fork ``stage2.py``).

    ``forward(x)``: ``x`` (N, 3, H, W) float in [0, 1] (normalised inside with ``mean``/``std``) ->
    ``(feat (N, out_dim), z (N, out_dim))``: the projection output *before* L2 normalisation (what the baseline's
    stage 3 correlates) and its L2-normalised version (what SupCon sees). :meth:`features` gives the pooled
    backbone features ``(N, dim)`` (what the fork's MLP classifies). ``hidden``: 2048 in the fork, ``dim`` in the
    baseline (``Linear(2048, 2048)``)."""

    def __init__(self, backbone: nn.Module, dim: int, *, hidden: int = 2048, out_dim: int = 128,
                 mean: Sequence[float] = IMAGENET_NORM[0], std: Sequence[float] = IMAGENET_NORM[1]):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.head(self.features(x))
        return feat, F.normalize(feat, dim=1)

    def init_weights(self, seed: int) -> None:
        """The baseline's re-initialisation at each reselection (``model.init_weights``), seeded here."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.apply(init_weights_)


def init_weights_(layer: nn.Module) -> None:
    """``model.py init_weights_``: conv N(0, sqrt(2 / (k*k*out))), BatchNorm 1/0, Linear U(-0.1, 0.1) with bias
    0.1. Other layers (ConvNeXt's LayerNorm and layer scale) keep their values, as they would in the baseline."""
    if isinstance(layer, nn.Conv2d):
        n = layer.kernel_size[0] * layer.kernel_size[1] * layer.out_channels
        layer.weight.data.normal_(0, (2.0 / n) ** 0.5)
        if layer.bias is not None:
            layer.bias.data.zero_()
    elif isinstance(layer, nn.BatchNorm2d):
        layer.weight.data.fill_(1)
        layer.bias.data.zero_()
    elif isinstance(layer, nn.Linear):
        nn.init.uniform_(layer.weight, -0.1, 0.1)
        nn.init.constant_(layer.bias, 0.1)


def build_ecl(name: str, *, variant: str = "fork", pretrained: bool = True, init_seed: int = 0,
              weights: str | Path | None = None) -> ECL:
    """An :class:`ECL` on ``dfbook.backbones.create(name, num_classes=0)``. ``variant="baseline"``: hidden = dim and
    normalisation 0.5/0.5 (Xception from scratch: pass ``pretrained=False``); ``"fork"``: hidden 2048, ImageNet
    normalisation."""
    from dfbook import backbones

    if variant not in ("baseline", "fork"):
        raise ValueError(f"variant must be 'baseline' or 'fork', got {variant!r}")
    bb = backbones.create(name, pretrained=pretrained, weights=weights, num_classes=0, init_seed=init_seed)
    mean, std = BASELINE_NORM if variant == "baseline" else IMAGENET_NORM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = ECL(bb.model, bb.dim, hidden=bb.dim if variant == "baseline" else 2048, mean=mean, std=std)
    model.weights_id = f"{bb.weights_id}|head-init:{init_seed}"  # part of the checkpoint-folder key
    return model


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = TEMPERATURE,
                base_temperature: float = TEMPERATURE) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020), ``loss.py ECLoss`` in ``contrast_mode='all'``.

    ``features``: (B, V, D) L2-normalised views; ``labels``: (B,) class ids (positives share a label). Returns a
    scalar >= 0. Anchors without a positive other than themselves would divide by zero; with V >= 2 views every
    anchor has at least its other view."""
    if features.ndim != 3 or features.shape[1] < 2:
        raise ValueError(f"features must be (batch, views >= 2, dim); got {tuple(features.shape)}")
    b, v = features.shape[:2]
    mask = torch.eq(labels.view(-1, 1), labels.view(1, -1)).float().repeat(v, v)
    contrast = torch.cat(torch.unbind(features, dim=1), dim=0)            # (V*B, D), view-major as ECLoss
    logits = contrast @ contrast.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    not_self = 1.0 - torch.eye(b * v, device=features.device)
    mask = mask * not_self
    log_prob = logits - torch.log((torch.exp(logits) * not_self).sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    return -(temperature / base_temperature) * mean_log_prob_pos.mean()


def augment(x: torch.Tensor, *, scale: tuple[float, float] = (0.5, 1.0), jitter: float = 0.4, hue: float = 0.1,
            p_jitter: float = 0.8, p_gray: float = 0.2, p_erase: float = 0.8,
            erase_scale: tuple[float, float] = (0.02, 0.2)) -> torch.Tensor:
    """One random view per image of a batch, following the baseline's train transform (``data/transform.py``):
    RandomResizedCrop(scale 0.5-1) -> HFlip -> ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8 -> RandomGrayscale(0.2)
    -> RandomErasing(p 0.8, scale 0.02-0.2, ratio 0.5-2, value 0). ``x``: (B, 3, H, W) uint8 or float in [0, 1];
    returns float (B, 3, H, W) in [0, 1]; draws from torch's global RNG (saved in every training checkpoint).

    Hand-written on whole batches because torchvision's transforms draw one set of parameters per call, and
    calling them per image costs ~4 ms per view on this CPU -- more than the mini network's forward pass.
    Differences, stated: crops whose side would exceed the image are clipped instead of re-drawn; the jitter
    order is fixed (brightness, contrast, saturation, hue) instead of random; hue is a rotation of the YIQ chroma
    plane, a linear stand-in for torchvision's HSV hue shift.
    """
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    b, dev = x.shape[0], x.device
    u = lambda *shape: torch.rand(*shape, device=dev)  # noqa: E731 - local shorthand
    area = scale[0] + (scale[1] - scale[0]) * u(b)
    logr = (torch.rand(b, device=dev) * 2 - 1) * np.log(4 / 3)
    w = torch.sqrt(area * torch.exp(logr)).clamp(max=1.0)
    h = torch.sqrt(area / torch.exp(logr)).clamp(max=1.0)
    cx, cy = (u(b) * 2 - 1) * (1 - w), (u(b) * 2 - 1) * (1 - h)
    flip = torch.where(u(b) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), mode="bilinear",
                      padding_mode="border", align_corners=False)
    x = _jitter(x, u(b) < p_jitter, jitter, hue)
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    x = torch.where((u(b) < p_gray).view(b, 1, 1, 1), gray.expand_as(x), x)
    return _erase(x, u(b) < p_erase, erase_scale)


def _jitter(x: torch.Tensor, on: torch.Tensor, strength: float, hue: float) -> torch.Tensor:
    b = x.shape[0]
    f = lambda: (1 + (torch.rand(b, 1, 1, 1, device=x.device) * 2 - 1) * strength)  # noqa: E731
    bright, contrast, sat = f(), f(), f()
    angle = (torch.rand(b, device=x.device) * 2 - 1) * hue * 2 * np.pi
    y = (x * bright).clamp(0, 1)
    lum = (0.299 * y[:, 0] + 0.587 * y[:, 1] + 0.114 * y[:, 2]).unsqueeze(1)
    y = ((y - lum.mean((2, 3), keepdim=True)) * contrast + lum.mean((2, 3), keepdim=True)).clamp(0, 1)
    lum = (0.299 * y[:, 0] + 0.587 * y[:, 1] + 0.114 * y[:, 2]).unsqueeze(1)
    y = ((y - lum) * sat + lum).clamp(0, 1)
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device)
    c, s = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(b, 3, 3, device=x.device)
    rot[:, 0, 0], rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = 1, c, -s, s, c
    m = torch.linalg.inv(yiq) @ rot @ yiq                                       # (B, 3, 3) in RGB
    y = torch.einsum("bij,bjhw->bihw", m, y).clamp(0, 1)
    return torch.where(on.view(b, 1, 1, 1), y, x)


def _erase(x: torch.Tensor, on: torch.Tensor, scale: tuple[float, float]) -> torch.Tensor:
    b, _, hh, ww = x.shape
    area = (scale[0] + (scale[1] - scale[0]) * torch.rand(b, device=x.device)) * hh * ww
    ratio = torch.exp(torch.empty(b, device=x.device).uniform_(np.log(0.5), np.log(2.0)))
    eh = torch.sqrt(area * ratio).clamp(1, hh).floor()
    ew = torch.sqrt(area / ratio).clamp(1, ww).floor()
    top = (torch.rand(b, device=x.device) * (hh - eh + 1)).floor()
    left = (torch.rand(b, device=x.device) * (ww - ew + 1)).floor()
    rows = torch.arange(hh, device=x.device).view(1, hh, 1)
    cols = torch.arange(ww, device=x.device).view(1, 1, ww)
    box = ((rows >= top.view(b, 1, 1)) & (rows < (top + eh).view(b, 1, 1)) & (cols >= left.view(b, 1, 1))
           & (cols < (left + ew).view(b, 1, 1)) & on.view(b, 1, 1))
    return x.masked_fill(box.unsqueeze(1), 0.0)


def contrastive_loss(model: nn.Module, batch, temperature: float = TEMPERATURE) -> torch.Tensor:
    """``dfbook.train.fit`` loss: two augmented views of each image of ``batch = (images uint8, labels, ...)``,
    one forward over both (as ``train()`` in the baseline), SupCon on the normalised projections."""
    x, y = batch[0], batch[1]
    views = torch.cat([augment(x), augment(x)])
    _, z = model(views)
    z1, z2 = z.split(len(x))
    return supcon_loss(torch.stack([z1, z2], dim=1), y, temperature)


class Frames(torch.utils.data.Dataset):
    """Face frames as ``(image uint8 (3, size, size), label int64, index)``. ``images``: an already loaded
    ``(N, size, size, 3)`` uint8 array (mini: the whole set fits in memory), else files are read lazily."""

    def __init__(self, paths: Sequence[str], labels: Sequence[int], size: int, images: np.ndarray | None = None):
        if len(paths) != len(labels):
            raise ValueError(f"paths ({len(paths)}) and labels ({len(labels)}) differ in length")
        self.paths, self.labels, self.size = list(map(str, paths)), np.asarray(labels, np.int64), int(size)
        self.images = images

    @classmethod
    def load(cls, paths: Sequence[str], labels: Sequence[int], size: int, max_bytes: float = 2e9) -> "Frames":
        """Read every image into memory when they take less than ``max_bytes`` (mini), else read lazily (full)."""
        if len(paths) * size * size * 3 > max_bytes:
            return cls(paths, labels, size)
        images, _ = imageio.load_images(list(paths), size=size)
        return cls(paths, labels, size, images)

    def subset(self, rows: np.ndarray, labels: np.ndarray) -> "Frames":
        rows = np.asarray(rows)
        images = self.images[rows] if self.images is not None else None
        return Frames([self.paths[i] for i in rows], labels, self.size, images)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = self.images[i] if self.images is not None else imageio.load_images([self.paths[i]], self.size)[0][0]
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), int(self.labels[i]), i


@torch.no_grad()
def embed(model: ECL, frames: Frames, *, batch_size: int = 256, device=None) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode embeddings of every frame (no augmentation, the val transform): ``(feat (N, 128) pre-normalisation
    projection, backbone (N, dim) pooled features)``, float32. Restores the model's train/eval mode."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    # A DataLoader draws its base seed from torch's global RNG unless given a generator; here that draw would
    # happen after fit's checkpoint (in the per-epoch snapshot) and make a resumed run diverge.
    loader = torch.utils.data.DataLoader(frames, batch_size=batch_size, shuffle=False,
                                         generator=torch.Generator().manual_seed(0))
    was = model.training
    model.eval()
    feats, backs = [], []
    try:
        for x, _, _ in loader:
            x = x.to(dev).float() / 255.0
            back = model.features(x)
            feats.append(model.head(back).float().cpu())
            backs.append(back.float().cpu())
    finally:
        model.train(was)
    return torch.cat(feats).numpy(), torch.cat(backs).numpy()


def select_confident(z: np.ndarray, keep: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The baseline's ``select_confidence_sample``: ``KMeans(2, k-means++)`` on the L2-normalised embeddings
    ``z`` (N, D), cosine distance of each sample to its own centre, keep the ``int(keep * |cluster|)`` closest per
    cluster (HEAD behaviour; the Feb-2024 code kept the *least* similar, card §1.8). Returns (kept row indices
    sorted, their new cluster ids)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics.pairwise import cosine_distances

    if not 0 < keep <= 1:
        raise ValueError(f"keep (k) must be in (0, 1], got {keep}")
    km = KMeans(n_clusters=2, init="k-means++", n_init=10, random_state=seed).fit(z)
    dist = cosine_distances(z, km.cluster_centers_)[np.arange(len(z)), km.labels_]
    rows = []
    for c in (0, 1):
        members = np.flatnonzero(km.labels_ == c)
        rows.append(members[np.argsort(dist[members], kind="stable")[: int(keep * len(members))]])
    rows = np.sort(np.concatenate(rows))
    return rows, km.labels_[rows].astype(np.int64)


def cycles(epochs: int, reselect_every: int | None) -> list[tuple[int, int]]:
    """Epoch ranges ``[(first, last), ...]`` between reselections. The baseline reselects at the start of epoch
    ``e`` when ``e % S == 0 and e != epochs`` (HEAD, 8964012), so the first cycle is S - 1 epochs long."""
    if not reselect_every:
        return [(1, epochs)]
    starts = [1] + [e for e in range(1, epochs + 1) if e % reselect_every == 0 and e != epochs and e > 1]
    return [(s, (starts[i + 1] - 1) if i + 1 < len(starts) else epochs) for i, s in enumerate(starts)]


@dataclasses.dataclass
class Stage2Result:
    """``history``: one row per epoch (``cycle, epoch, train_loss, lr, seconds``). ``selection``: one row per
    label set trained on (iteration 0 = stage-1 pseudo-labels, then one per reselection): ``iteration, epoch,
    n`` and, given the ground truth, ``purity, balanced_purity, fake_fraction``. ``snapshots``: epoch -> (M, 128) normalised
    embeddings of the watched frames (epoch 0 = before training)."""

    history: pd.DataFrame
    selection: pd.DataFrame
    snapshots: dict[int, np.ndarray]


def _selection_row(it: int, epoch: int, rows: np.ndarray, labels: np.ndarray, truth: np.ndarray | None) -> dict:
    row = {"iteration": it, "epoch": epoch, "n": int(len(rows))}
    if truth is not None:
        t = truth[rows]
        row.update(purity=purity(labels, t), balanced_purity=balanced_purity(labels, t), fake_fraction=float(t.mean()))
    return row


def train_encoder(model: ECL, frames: Frames, *, config: train.TrainConfig, reselect_every: int | None = None,
                  keep: float = 0.8, reinit: bool = True, truth: np.ndarray | None = None,
                  watch: np.ndarray | None = None, ckpt_dir: str | Path | None = None, progress: bool = True,
                  callbacks: Sequence[Callable[[str, dict], None]] = ()) -> Stage2Result:
    """Stage 2 on ``frames`` (labels = stage-1 pseudo-labels, or ground truth for the fork as published).

    ``reselect_every`` (S) and ``keep`` (k): the baseline's loop -- at the start of each cycle after the first,
    embed every originally labelled frame, re-cluster, keep the fraction k nearest their centre with the new
    cluster ids, and (``reinit``) re-initialise all weights. ``None``: one run (the fork, which never calls its
    ``select_confidence_sample``). Each cycle is one :func:`dfbook.train.fit` call with checkpoints in
    ``<ckpt_dir>/cycle<i>`` every ``config.ckpt_every`` epochs, so an interrupted run resumes exactly: finished
    cycles reload their last weights, the reselection is a deterministic function of them, and the current cycle
    continues from its checkpoint. One stated difference: Adam's moments restart each cycle (the baseline kept
    its optimiser across the re-init). ``truth``: (N,) ground truth, only to report the purity of each label set.
    ``watch``: frame rows embedded after every epoch (the t-SNE strip); saved next to the checkpoints.
    """
    ckpt = Path(ckpt_dir) if ckpt_dir is not None else None
    watch = np.arange(min(len(frames), 256)) if watch is None else np.asarray(watch)
    watched = frames.subset(watch, frames.labels[watch])
    rows, labels = np.arange(len(frames)), frames.labels.copy()
    snapshots = {0: _normalised(embed(model, watched)[0])}
    history, selection = [], [_selection_row(0, 0, rows, labels, truth)]
    for c, (first, last) in enumerate(cycles(config.epochs, reselect_every)):
        if c > 0:
            z = _normalised(embed(model, frames)[0])
            rows, labels = select_confident(z, keep, seed=config.seed + c)
            selection.append(_selection_row(c, first, rows, labels, truth))
            if reinit:
                model.init_weights(config.seed + 1000 + c)
        cdir = ckpt / f"cycle{c}" if ckpt is not None else None
        snap = _Snapshots(model, watched, first - 1, cdir)
        cfg = dataclasses.replace(config, epochs=last - first + 1, seed=config.seed + c)
        hist = train.fit(model, frames.subset(rows, labels), config=cfg, loss_fn=contrastive_loss, ckpt_dir=cdir,
                         progress=progress, callbacks=[snap, *callbacks])
        history.append(hist.assign(cycle=c, epoch=hist["epoch"] + first - 1))
        snapshots.update(snap.collect(last))
    hist = pd.concat(history, ignore_index=True)
    return Stage2Result(hist[["cycle", *[k for k in hist.columns if k != "cycle"]]], pd.DataFrame(selection),
                        snapshots)


def _normalised(feat: np.ndarray) -> np.ndarray:
    return feat / np.maximum(np.linalg.norm(feat, axis=1, keepdims=True), 1e-12)


class _Snapshots:
    """``fit`` callback: embed the watched frames after every epoch; kept on disk next to the cycle's checkpoint so
    that a resumed run still has the snapshots of the epochs it does not repeat."""

    def __init__(self, model: ECL, watched: Frames, offset: int, folder: Path | None):
        self.model, self.watched, self.offset, self.folder, self.mem = model, watched, offset, folder, {}

    def __call__(self, event: str, info: dict) -> None:
        if event != "epoch":
            return
        epoch = self.offset + int(info["epoch"])
        z = _normalised(embed(self.model, self.watched)[0])
        self.mem[epoch] = z
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            np.save(self.folder / f"snapshot_{epoch:04d}.npy", z)

    def collect(self, last: int) -> dict[int, np.ndarray]:
        out = dict(self.mem)
        for e in range(self.offset + 1, last + 1):
            f = self.folder / f"snapshot_{e:04d}.npy" if self.folder is not None else None
            if e not in out and f is not None and f.is_file():
                out[e] = np.load(f)
        return out


def tsne_strip(snapshots: dict[int, np.ndarray], truth: np.ndarray, *, max_panels: int = 4, seed: int = 0,
               title: str = "t-SNE of the normalised embedding per epoch"):
    """One t-SNE panel per epoch (at most ``max_panels``, evenly spaced, first and last kept), points coloured by
    the ground truth (blue real, red fake; the network never saw these colours unless trained on them)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    from dfbook import plots

    epochs = sorted(snapshots)
    if len(epochs) > max_panels:
        epochs = [epochs[i] for i in np.unique(np.linspace(0, len(epochs) - 1, max_panels).round().astype(int))]
    truth = np.asarray(truth)
    with plots.style():
        fig, axes = plots._figure(1, len(epochs), size=(2.3 * len(epochs), 2.5))
        for ax, e in zip(axes.flat, epochs):
            z = snapshots[e]
            # one thread: on a few hundred points OpenMP start-up and spinning cost more than they save
            with threadpool_limits(1):
                emb = TSNE(2, perplexity=min(30.0, (len(z) - 1) / 3), init="pca", random_state=seed,
                           max_iter=250).fit_transform(z)
            for lab in (0, 1):
                m = truth == lab
                ax.scatter(emb[m, 0], emb[m, 1], s=4, alpha=0.7, color=plots.CLASS_COLORS[lab],
                           label=plots.CLASS_NAMES[lab])
            ax.set(title=f"epoch {e}", xticks=[], yticks=[])
            ax.grid(False)
        axes.flat[0].legend(markerscale=2, loc="best")
        fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------------------------- stage 3
def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=1)


def interframe_stats(feat: np.ndarray, keys: np.ndarray, frames: np.ndarray, *, min_pairs: int = 3) -> pd.DataFrame:
    """Per video, statistics of consecutive frames' features ``feat`` (N, D) (ordered by ``frames`` within each
    video): ``spearman`` -- the mean Spearman correlation across the D dimensions, dropping exact zeros and
    requiring ``min_pairs`` values (baseline stage 3, ``scipy.stats.spearmanr``); ``euclidean`` -- the mean
    Euclidean distance (the fork's README claim, only plotted there). Videos with too few pairs get NaN and
    ``skipped = True``. Returns columns ``key, spearman, euclidean, pairs, skipped`` in order of first appearance."""
    order = pd.DataFrame({"key": keys, "frame": frames, "row": np.arange(len(keys))})
    order["k"] = pd.factorize(order["key"])[0]
    order = order.sort_values(["k", "frame"], kind="stable")
    rows = []
    for key, part in order.groupby("k", sort=True):
        f = feat[part["row"].to_numpy()]
        r = _ranks(f)
        r = (r - r.mean(1, keepdims=True)) / np.maximum(r.std(1, keepdims=True), 1e-12)
        rho = (r[1:] * r[:-1]).mean(1)                # Pearson of ranks = Spearman (ties: average ranks)
        rho = rho[rho != 0]
        dist = np.linalg.norm(f[1:] - f[:-1], axis=1)
        ok = len(rho) >= min_pairs
        rows.append({"key": part["key"].iloc[0], "spearman": rho.mean() if ok else np.nan,
                     "euclidean": dist.mean() if len(dist) >= min_pairs else np.nan, "pairs": len(rho),
                     "skipped": not ok})
    return pd.DataFrame(rows)


def consistency(stats: pd.DataFrame, statistic: str) -> np.ndarray:
    """Higher = more similar consecutive frames: the Spearman correlation, or minus the Euclidean distance."""
    if statistic not in ("spearman", "euclidean"):
        raise ValueError(f"statistic must be 'spearman' or 'euclidean', got {statistic!r}")
    return stats[statistic].to_numpy() * (1 if statistic == "spearman" else -1)


def fit_direction(consistency_values: np.ndarray, labels: np.ndarray) -> str:
    """On a labelled held-out set: ``"consistent_is_fake"`` if fake videos are more consistent on average
    (the baseline's rule "higher correlation => fake"), else ``"consistent_is_real"`` (what the fork's plots show)."""
    c, y = np.asarray(consistency_values, float), np.asarray(labels)
    ok = np.isfinite(c)
    if len(np.unique(y[ok])) < 2:
        raise ValueError("the held-out set must contain real and fake videos with a statistic to fix the direction")
    return "consistent_is_fake" if c[ok & (y == 1)].mean() > c[ok & (y == 0)].mean() else "consistent_is_real"


def transductive_rule(feat: np.ndarray, keys: np.ndarray, video_consistency: pd.Series, *,
                      direction: str = "consistent_is_fake", seed: int = 42) -> pd.DataFrame:
    """The baseline's stage 3 (``binary_classifier.py``): ``KMeans(2, random_state=42)`` on every test frame's
    feature pooled over all test videos, each video takes its frames' majority cluster, and the cluster whose
    videos are on average more consistent is called fake (``direction="consistent_is_fake"``, as released) or real.
    Transductive: it needs a batch of test videos that holds both classes, and its output depends on their ratio.

    ``video_consistency``: Series indexed by video key (NaN = skipped video, excluded as in the baseline).
    Returns ``key, cluster, consistency, pred`` (1 = fake) for the videos with a statistic."""
    from sklearn.cluster import KMeans

    if direction not in ("consistent_is_fake", "consistent_is_real"):
        raise ValueError(f"direction must be 'consistent_is_fake' or 'consistent_is_real', got {direction!r}")
    frame_cluster = KMeans(n_clusters=2, random_state=seed, n_init=10).fit_predict(feat)
    video = pd.DataFrame({"key": keys, "c": frame_cluster}).groupby("key", sort=False)["c"].agg(
        lambda s: np.bincount(s).argmax())
    out = pd.DataFrame({"key": video.index, "cluster": video.to_numpy()})
    out["consistency"] = out["key"].map(video_consistency).to_numpy(float)
    out = out[np.isfinite(out["consistency"])].reset_index(drop=True)
    means = out.groupby("cluster")["consistency"].mean()
    consistent = int(means.idxmax()) if len(means) == 2 else int(out["cluster"].iloc[0])
    fake_cluster = consistent if direction == "consistent_is_fake" else 1 - consistent
    out["pred"] = (out["cluster"] == fake_cluster).astype(np.int64)
    return out


class FeatureClassifier(nn.Module):
    """The fork's stage-3 MLP on frozen backbone features: ``Linear(d, 512)-ReLU-Linear(512, 128)-ReLU-Linear(128,
    2)``; ``(N, d)`` -> logits ``(N, 2)`` (softmax[:, 1] = P(class 1))."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 512), nn.ReLU(), nn.Linear(512, 128), nn.ReLU(), nn.Linear(128, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_classifier(X: np.ndarray, y: np.ndarray, *, epochs: int = 20, batch_size: int = 128, lr: float = 1e-4,
                     seed: int = 0, ckpt_dir: str | Path | None = None, progress: bool = False) -> FeatureClassifier:
    """Fork stage 3: cross-entropy, Adam lr 1e-4, batch 128 (20 epochs in the fork) on features ``X`` (N, d) and
    labels ``y`` (N,) in {0, 1} -- ground truth (supervised) or stage-1 pseudo-labels."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = FeatureClassifier(X.shape[1])
    cfg = train.TrainConfig(epochs=epochs, batch_size=batch_size, optimizer="adam", lr=lr, seed=seed, ckpt_every=2)
    # copies: pandas hands out read-only arrays, which torch would share (and warn about)
    train.fit(clf, (torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.long)), config=cfg,
              ckpt_dir=ckpt_dir, progress=progress)
    return clf


def orient(scores: np.ndarray, labels: np.ndarray) -> int:
    """+1 if higher ``scores`` mean fake on a labelled held-out set (AUC >= 0.5), else -1: names the classifier's
    arbitrary pseudo-label class 1 as fake or real."""
    return 1 if metrics.auc(labels, scores) >= 0.5 else -1


# ----------------------------------------------------------------------------------------------- stage 4
def evenly_spaced(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """``n`` evenly spaced frames per video (``np.linspace(0, len - 1, n, dtype=int)`` over the video's frames in
    order; all frames of shorter videos). The fork takes the *first* 32 frames; evenly spaced is ``dfbook prepare``'s
    sampling and covers the clip."""
    keys = video_keys(df)
    d = df.assign(_k=pd.factorize(keys)[0], _row=np.arange(len(df))).sort_values(["_k", "frame"], kind="stable")
    pick = []
    for _, part in d.groupby("_k", sort=True):
        idx = np.unique(np.linspace(0, len(part) - 1, min(n, len(part))).astype(int))
        pick.extend(part["_row"].to_numpy()[idx])
    return df.iloc[np.sort(pick)]


def authenticate(scores: np.ndarray, keys: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Per video: ``key, label, frames, mean_prob`` (mean frame P(fake)), ``fake_votes`` (fraction of frames with
    P(fake) >= 0.5), ``pred_majority`` (1 when at least half the frames vote fake; the fork's ``Counter``
    breaks ties by first occurrence), ``pred_mean`` (mean_prob >= 0.5)."""
    mean = metrics.video_scores(scores, keys, labels, agg="mean")
    votes = metrics.video_scores(scores, keys, labels, agg="majority")
    out = mean.rename(columns={"score": "mean_prob"})
    out["fake_votes"] = votes["score"].to_numpy()
    out["pred_majority"] = (out["fake_votes"] >= 0.5).astype(np.int64)
    out["pred_mean"] = (out["mean_prob"] >= 0.5).astype(np.int64)
    return out


def video_report(y: np.ndarray, pred: np.ndarray, score: np.ndarray | None = None) -> dict[str, float]:
    """Video-level ``accuracy``, ``balanced_accuracy``, ``real_accuracy``, ``fake_accuracy`` of hard predictions
    (1 = fake), ``all_fake_accuracy`` (the "call everything fake" baseline = share of fake videos), ``auc`` of
    ``score`` when given, and the counts ``n_real, n_fake``."""
    y, pred = np.asarray(y), np.asarray(pred).astype(float)
    out = {"accuracy": metrics.accuracy(y, pred), "balanced_accuracy": metrics.balanced_accuracy(y, pred),
           "real_accuracy": metrics.real_accuracy(y, pred), "fake_accuracy": metrics.fake_accuracy(y, pred),
           "all_fake_accuracy": float(np.mean(y == 1)), "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum())}
    if score is not None:
        out["auc"] = metrics.auc(y, score)
    return out


# ----------------------------------------------------------------------------------------------- the chapter's runs
VERSION = "1"  # part of every cache key below: bump when a change alters VAF or stage-2 results


def _hash(obj) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_dir(name: str, **key) -> Path:
    """``cache_dir("runs", "unsupervised_video", "<name>-<hash>")``: the checkpoint folder of one stage-2 run,
    keyed by everything that changes it, so a changed parameter starts afresh instead of resuming a stale run."""
    from dfbook import paths

    return paths.cache_dir("runs", "unsupervised_video", f"{name}-{_hash({'version': VERSION, **key})}")


VAL_FRACTION = 0.15  # training identities held out as val when a training domain ships no val list (Celeb-DF)


def chapter_sets(df: pd.DataFrame, train_domain: str, test_domains: Sequence[str], *, vaf_frames: int,
                 train_frames: int, eval_frames: int, cross_split: str = "test",
                 seed: int = 0) -> dict[str, pd.DataFrame]:
    """The frame sets of one training domain: ``vaf`` (train split, ``vaf_frames`` per video, for stage 1),
    ``train`` (``train_frames`` per video, stages 2-3), ``val`` (the labelled held-out set that fixes the
    direction of the rules), ``test/<train_domain>`` (its test split) and ``test/<other>`` for each other domain
    (its ``cross_split`` rows, ``"all"`` = every split, as the fork tested on whole datasets). Identities and files
    of a test set never occur in train/val (``dfbook.splits.cross_domain`` checks it). A training domain without
    a val split (Celeb-DF ships only a test list) gets one: :data:`VAL_FRACTION` of its training identities
    (``dfbook.splits.hold_out``, seeded), recorded in ``val.attrs["hold_out"]``."""
    from dfbook import splits

    col = "domain" if "domain" in df else "dataset"
    held = None
    if not ((df[col] == train_domain) & (df["split"] == "val")).any():
        df = splits.hold_out(df, train_domain, VAL_FRACTION, seed=seed)
        held = df.attrs.pop("hold_out")  # pandas copies attrs into every subset: only val carries it
    others = [d for d in test_domains if d != train_domain]
    parts = splits.cross_domain(df, train_domain, others, test_split=None if cross_split == "all" else cross_split)
    out = {"vaf": evenly_spaced(parts["train"], vaf_frames), "train": evenly_spaced(parts["train"], train_frames),
           "val": evenly_spaced(parts["val"], eval_frames),
           f"test/{train_domain}": evenly_spaced(splits.select(df, splits="test", domains=train_domain), eval_frames)}
    out.update({k: evenly_spaced(v, eval_frames) for k, v in parts.items() if k.startswith("test/")})
    if held:
        out["val"].attrs["hold_out"] = held
    return out


def landmarks_for(df: pd.DataFrame, model_file: str = "", *, progress: bool = True) -> np.ndarray:
    """dlib-68 landmarks ``(N, 68, 2)``: from ``model_file`` (dlib's predictor, :func:`dlib_landmarks`) or, when
    empty, the mini faces corpus's ground truth. dlib's landmarks are cached under
    ``cache_dir("unsupervised_video", "landmarks")``, keyed by the frame files and the model file's identity
    (a run over every FF++ frame takes hours on a CPU)."""
    if model_file:
        from dfbook import backbones, manifest, paths

        model = landmark_model_path(model_file)
        ident = backbones.file_identity(model) if model.is_file() else "missing"  # dlib_landmarks says what to do
        key = _hash({"version": VERSION, "files": manifest.content_hash(df, ["path"]), "model": ident})
        cache = paths.cache_dir("unsupervised_video", "landmarks") / f"landmarks-{key}.npy"
        if cache.is_file():
            return np.load(cache)
        lm = dlib_landmarks(df, model, progress=progress)
        tmp = cache.with_name(cache.stem + ".partial.npy")
        np.save(tmp, lm)
        tmp.replace(cache)
        return lm
    from dfbook.bench import faces

    try:
        return faces.landmarks(df)
    except (FileNotFoundError, KeyError) as e:
        raise FileNotFoundError(
            "these frames are not from the mini faces corpus (which ships ground-truth landmarks): set "
            "LANDMARK_MODEL to the path of dlib's shape_predictor_68_face_landmarks.dat") from e


def stage1(df: pd.DataFrame, landmarks: np.ndarray, *, faithful_uint8: bool = True, seed: int = 0,
           progress: bool = True) -> pd.DataFrame:
    """Stage 1 on a frame manifest: one row per frame with ``key, label, vaf`` (``"ok"`` or why it was dropped),
    ``cluster`` (-1 without a VAF) and ``pseudo`` (the video's majority cluster, -1 if none of its frames had a
    VAF). The VAF matrix is cached under ``cache_dir("unsupervised_video", "vaf")`` keyed by the files, the
    landmarks and the arithmetic."""
    from dfbook import manifest, paths

    import hashlib

    key = _hash({"version": VERSION, "files": manifest.content_hash(df, ["path"]), "faithful": faithful_uint8,
                 "landmarks": hashlib.sha256(np.ascontiguousarray(landmarks, np.float32).tobytes()).hexdigest()})
    cache = paths.cache_dir("unsupervised_video", "vaf") / f"vaf-{key}.npz"
    if cache.is_file():
        stored = np.load(cache, allow_pickle=False)
        X, why = stored["X"], stored["why"].astype(str)
    else:
        X, why = vaf_table(df, landmarks, faithful_uint8=faithful_uint8, progress=progress)
        why = why.to_numpy().astype(str)
        tmp = cache.with_name(cache.stem + ".partial.npz")
        np.savez(tmp, X=X, why=why)
        tmp.replace(cache)
    keys = video_keys(df)
    labels = pseudo_labels(X, keys, seed=seed)
    return pd.DataFrame({"key": keys, "label": df["label"].to_numpy(), "vaf": why,
                         "cluster": labels["cluster"].to_numpy(), "pseudo": labels["pseudo"].to_numpy()},
                        index=df.index)


def stage1_summary(table: pd.DataFrame) -> dict[str, float]:
    """Frame and video purity of the stage-1 labels (see :func:`purity`, :func:`balanced_purity`), the share of
    frames with a VAF and the number of videos left without a label."""
    frames = table[table["cluster"] >= 0]
    videos = table.groupby("key", sort=False).agg(label=("label", "first"), pseudo=("pseudo", "first"))
    lab = videos[videos["pseudo"] >= 0]
    return {"frames_with_vaf": float(len(frames) / len(table)), "frame_purity": purity(frames["cluster"], frames["label"]),
            "frame_balanced_purity": balanced_purity(frames["cluster"], frames["label"]),
            "video_purity": purity(lab["pseudo"], lab["label"]),
            "video_balanced_purity": balanced_purity(lab["pseudo"], lab["label"]),
            "videos": int(len(videos)), "videos_unlabelled": int((videos["pseudo"] < 0).sum())}


def training_labels(train_df: pd.DataFrame, table: pd.DataFrame, source: str) -> tuple[pd.DataFrame, np.ndarray, int]:
    """Frames of ``train_df`` with their stage-2/3 labels: ``source="pseudo"`` (the stage-1 video labels; frames of
    unlabelled videos are dropped and counted) or ``"truth"`` (ground truth, i.e. supervised -- what the fork's
    ``*_real_labels`` files most likely were, card §1.8). Returns (frames, labels, dropped)."""
    if source == "truth":
        return train_df, train_df["label"].to_numpy(np.int64), 0
    if source != "pseudo":
        raise ValueError(f"source must be 'pseudo' or 'truth', got {source!r}")
    video = table.groupby("key", sort=False)["pseudo"].first()
    labels = pd.Series(video_keys(train_df)).map(video).fillna(-1).to_numpy(np.int64)
    keep = labels >= 0
    return train_df[keep], labels[keep], int((~keep).sum())


@dataclasses.dataclass
class EncoderRun:
    """One trained encoder: ``stage2`` (:class:`Stage2Result`), ``truth`` (ground truth of the training frames, for
    plots only), ``embeddings``: set name -> ``(feat (N, 128), backbone (N, d))`` row-aligned with the set."""

    model: ECL
    stage2: Stage2Result
    truth: np.ndarray
    watch: np.ndarray
    embeddings: dict[str, tuple[np.ndarray, np.ndarray]]


def embed_sets(model: ECL, sets: dict[str, pd.DataFrame], size: int, *,
               batch_size: int = 256) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """:func:`embed` every set, each file once (Celeb-DF v1 frames are v2 files)."""
    unique = pd.unique(pd.concat([d["path"] for d in sets.values()]).astype(str))
    frames = Frames.load(unique, np.zeros(len(unique), np.int64), size)
    feat, back = embed(model, frames, batch_size=batch_size)
    row = {p: i for i, p in enumerate(unique)}
    out = {}
    for name, d in sets.items():
        idx = np.array([row[p] for p in d["path"].astype(str)])
        out[name] = (feat[idx], back[idx])
    return out


def train_and_embed(name: str, model: ECL, train_df: pd.DataFrame, labels: np.ndarray,
                    sets: dict[str, pd.DataFrame], *, config: train.TrainConfig, size: int,
                    reselect_every: int | None = None, keep: float = 0.8, n_watch: int = 200, key: dict | None = None,
                    progress: bool = True) -> EncoderRun:
    """Stage 2 (:func:`train_encoder`, checkpoints in :func:`run_dir` keyed by ``key`` + data + config) and the
    embeddings of ``sets`` with the trained encoder. ``n_watch`` training frames (a seeded random subset) are
    embedded after every epoch for the t-SNE strip."""
    from dfbook import manifest

    frames = Frames.load(train_df["path"].astype(str).tolist(), labels, size)
    truth = train_df["label"].to_numpy(np.int64)
    rng = np.random.default_rng(config.seed)
    watch = np.sort(rng.choice(len(frames), min(n_watch, len(frames)), replace=False))
    ckpt = run_dir(name, data=manifest.content_hash(train_df, ["path"]), labels=_hash(labels.tolist()),
                   config=dataclasses.asdict(config), reselect=reselect_every, keep=keep, size=size,
                   weights=getattr(model, "weights_id", None), **(key or {}))
    res = train_encoder(model, frames, config=config, reselect_every=reselect_every, keep=keep, truth=truth,
                        watch=watch, ckpt_dir=ckpt, progress=progress)
    return EncoderRun(model, res, truth, watch, embed_sets(model, sets, size))


def classify(run: EncoderRun, labels: np.ndarray, sets: dict[str, pd.DataFrame], *, epochs: int, lr: float = 1e-4,
             batch_size: int = 128, seed: int = 0, orient_on: str | None = None, return_model: bool = False):
    """Fork stage 3: the MLP on the frozen backbone features of the training frames (``run.embeddings["train"]``)
    with ``labels``, then frame P(fake) for every other embedded set (``sets`` supplies the held-out labels). ``orient_on`` (a set name, e.g. ``"val"``): for
    pseudo-labels, whose class 1 is an arbitrary cluster, flip the scores if class 1 ranks the labelled held-out
    set's fakes *below* its reals (:func:`orient`); leave None for ground-truth labels. ``return_model``: return
    ``(scores, classifier, flipped)`` instead of the scores alone."""
    clf = train_classifier(run.embeddings["train"][1], labels, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    scores = {k: train.predict(clf, torch.as_tensor(emb[1])) for k, emb in run.embeddings.items() if k != "train"}
    flipped = orient_on is not None and orient(scores[orient_on], sets[orient_on]["label"].to_numpy()) < 0
    if flipped:
        scores = {k: 1.0 - s for k, s in scores.items()}
    return (scores, clf, flipped) if return_model else scores


def stage4(scores: np.ndarray, df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float]]:
    """Video authentication of one set: per-video table (:func:`authenticate`) and :func:`video_report` of the
    majority vote (the fork's decision) with the mean probability as the AUC score, plus ``mean_vote_accuracy`` and
    ``mean_vote_balanced_accuracy`` of the other vote (mean probability >= 0.5)."""
    videos = authenticate(scores, video_keys(df), df["label"].to_numpy())
    report = video_report(videos["label"], videos["pred_majority"], videos["mean_prob"])
    mean_vote = video_report(videos["label"], videos["pred_mean"])
    return videos, {**report, "mean_vote_accuracy": mean_vote["accuracy"],
                    "mean_vote_balanced_accuracy": mean_vote["balanced_accuracy"]}


def baseline_decision(run: EncoderRun, sets: dict[str, pd.DataFrame], test: str, *, statistic: str = "spearman",
                      seed: int = 42) -> tuple[dict[str, dict[str, float]], str]:
    """Baseline stage 3 on set ``test``, with the direction as released (``consistent_is_fake``) and as fixed on
    the labelled ``val`` set. Returns ({rule name: video_report (AUC of the oriented statistic)}, fitted
    direction)."""
    val_stats = interframe_stats(run.embeddings["val"][0], video_keys(sets["val"]), sets["val"]["frame"].to_numpy())
    val_y = pd.Series(sets["val"]["label"].to_numpy(), index=video_keys(sets["val"])).groupby(level=0).first()
    direction = fit_direction(consistency(val_stats, statistic), val_stats["key"].map(val_y).to_numpy())
    df = sets[test]
    feat, keys = run.embeddings[test][0], video_keys(df)
    stats = interframe_stats(feat, keys, df["frame"].to_numpy())
    cons = pd.Series(consistency(stats, statistic), index=stats["key"])
    y = pd.Series(df["label"].to_numpy(), index=keys).groupby(level=0).first()
    out = {}
    for name, d in (("as_released", "consistent_is_fake"), ("direction_from_val", direction)):
        pred = transductive_rule(feat, keys, cons, direction=d, seed=seed)
        sign = 1 if d == "consistent_is_fake" else -1
        out[name] = video_report(pred["key"].map(y), pred["pred"], sign * pred["consistency"])
    return out, direction


def interframe_plot(stats: dict[str, pd.DataFrame], *, bins: int = 20):
    """Histograms of the per-video inter-frame statistics, real vs fake: one row per encoder (``stats``: name ->
    :func:`interframe_stats` table with a ``label`` column), columns Spearman and Euclidean -- the fork's
    distribution plots."""
    from dfbook import plots

    with plots.style():
        fig, axes = plots._figure(len(stats), 2, size=(7.5, 2.4 * len(stats)))
        for r, (name, st) in enumerate(stats.items()):
            for c, col in enumerate(("spearman", "euclidean")):
                ax = axes[r, c]
                vals = st[col].to_numpy(float)
                edges = np.histogram_bin_edges(vals[np.isfinite(vals)], bins=bins)
                for lab in (0, 1):
                    v = vals[(st["label"] == lab).to_numpy() & np.isfinite(vals)]
                    ax.hist(v, bins=edges, alpha=0.55, weights=np.full(len(v), 1 / max(len(v), 1)),
                            color=plots.CLASS_COLORS[lab], label=f"{plots.CLASS_NAMES[lab]} ({len(v)} videos)")
                ax.set(title=f"{name}: {col}", ylabel="fraction of videos",
                       xlabel="mean correlation of consecutive frames" if c == 0 else "mean distance of consecutive frames")
                ax.ticklabel_format(axis="x", useOffset=False)
                ax.legend()
    return fig


def video_stats(run: EncoderRun, df: pd.DataFrame, set_name: str) -> pd.DataFrame:
    """:func:`interframe_stats` of one embedded set, with each video's label."""
    keys = video_keys(df)
    st = interframe_stats(run.embeddings[set_name][0], keys, df["frame"].to_numpy())
    y = pd.Series(df["label"].to_numpy(), index=keys).groupby(level=0).first()
    return st.assign(label=st["key"].map(y).to_numpy())


def load_faces(profile: str, domains: Sequence[str], faces_csv: str = "") -> pd.DataFrame:
    """The frame manifest of ``domains``. ``mini``: the synthetic faces corpus (``corpus.load("faces")``, ground-
    truth landmarks included). ``full``: the face crops ``dfbook prepare`` wrote for FF++ / Celeb-DF v1, v2 / UADFV
    (``faces_csv``: its ``manifest.csv`` under ``$DFBOOK_DATA``, e.g. ``prepared/faces_299/manifest.csv``), with a
    ``domain`` column = dataset name; ``attrs["prepare"]`` holds each dataset's counts of videos, faces and frames
    without a face (``faces_missing.csv``), for the record. Face detection is ``prepare``'s work (resumable, on the
    GPU, its misses counted), never this chapter's."""
    if profile == "mini":
        from dfbook.bench import corpus

        df = corpus.load("faces")
        return df[df["domain"].isin(domains)].reset_index(drop=True)
    from dfbook import manifest, paths

    command = (f"for d in {' '.join(sorted(domains))}; do dfbook prepare $d $DFBOOK_DATA/prepared/faces_299 "
               "--size 299; done")
    if not faces_csv:
        raise ValueError(f"FACES is empty: the full profile reads the face crops of `dfbook prepare` ({command}) "
                         "from FACES = prepared/faces_299/manifest.csv")
    csv = paths.resolve_data_path(faces_csv)
    if not csv.is_file():
        raise FileNotFoundError(f"FACES {csv} not found; write it with `{command}`")
    df = manifest.read(csv)
    col = "domain" if "domain" in df else "dataset"
    absent = [d for d in domains if not (df[col] == d).any()]
    if absent:
        raise ValueError(f"{csv} holds no face crops of {absent} (it holds {sorted(df[col].unique())}); add them "
                         f"with `dfbook prepare {absent[0]} {csv.parent}` (the folder's own --size and --frames)")
    faces = df[df[col].isin(domains)].assign(domain=lambda d: d[col]).reset_index(drop=True)
    missing_csv = csv.parent / "faces_missing.csv"
    missing = pd.read_csv(missing_csv, dtype=str, keep_default_na=False) if missing_csv.is_file() else None
    counts = {}
    for d in domains:
        part = faces[faces["domain"] == d]
        lost = missing[missing["video_key"].str.startswith(f"{d}/")] if missing is not None and len(missing) else ()
        counts[d] = {"videos": int(manifest.video_key(part).nunique()), "faces": int(len(part)),
                     "frames_without_face": int(len(lost))}
    faces.attrs["prepare"] = counts
    return faces


# The fork's published numbers (dfbook/data/paper_results.csv) under this chapter's quantity names.
_TRAIN_SETS = (("FF++", "ffpp"), ("Celeb-DF-v2", "celebdf_v2"))
_TEST_SETS = (("UADFV", "uadfv"), ("Celeb-DF v1", "celebdf_v1"), ("Celeb-DF-v2", "celebdf_v2"), ("FF++", "ffpp"))
_METRICS = {"accuracy": "accuracy", "unspecified (accuracy?)": "accuracy", "balanced_accuracy": "balanced_accuracy",
            "accuracy_all_fake_trivial_baseline": "all_fake_accuracy"}


def quantity(metric: str, train_domain: str, test_domain: str) -> str:
    """The comparison table's row name, e.g. ``"accuracy · ffpp → uadfv"``."""
    return f"{metric} · {train_domain} → {test_domain}"


def comparison_rows(quantities: Sequence[str] | None = None) -> pd.DataFrame:
    """The seed's (fork's) rows of ``paper_results.csv`` with a ``quantity`` column (see :func:`quantity`),
    restricted to ``quantities`` when given. The paper's own numbers were not found (card §1.1)."""
    from dfbook import compare

    t = compare.load()
    t = t[t["system"].str.startswith("improved_unsup_df")].copy()

    def name(r) -> str | None:
        train_d = next((v for k, v in _TRAIN_SETS if r["train_set"].startswith(k)), None)
        test_d = next((v for k, v in _TEST_SETS if r["test_set"].startswith(k)), None)
        m = _METRICS.get(r["metric"])
        return quantity(m, train_d, test_d) if train_d and test_d and m else None

    t["quantity"] = t.apply(name, axis=1)
    t = t[t["quantity"].notna() & ~t["test_set"].str.contains("overlaps")]
    return t[t["quantity"].isin(quantities)] if quantities is not None else t


def set_overview(sets: dict[str, dict[str, pd.DataFrame]]) -> pd.DataFrame:
    """Videos (real / fake) and frames of every set of every training domain."""
    rows = []
    for dom, parts in sets.items():
        for name, d in parts.items():
            v = d.assign(_key=video_keys(d)).drop_duplicates("_key")
            held = d.attrs.get("hold_out")
            rows.append({"train domain": dom, "set": name, "real videos": int((v["label"] == 0).sum()),
                         "fake videos": int((v["label"] == 1).sum()), "frames": len(d),
                         "split": (f"held out: {held['identities_moved']} of {held['identities_before']} training "
                                   "identities" if held else "official")})
    return pd.DataFrame(rows)


def results_table(results: dict[tuple[str, str, str], dict[str, float]]) -> pd.DataFrame:
    """``{(train domain, label source, "test/<domain>"): video_report}`` -> one row per run and test set."""
    rows = [{"train": dom, "labels": src, "test": test.removeprefix("test/"), **rep}
            for (dom, src, test), rep in results.items()]
    cols = ["train", "labels", "test", "auc", "accuracy", "balanced_accuracy", "all_fake_accuracy", "real_accuracy",
            "fake_accuracy", "mean_vote_accuracy", "mean_vote_balanced_accuracy", "n_real", "n_fake"]
    return pd.DataFrame(rows)[[c for c in cols if c in rows[0]]] if rows else pd.DataFrame(columns=cols)


def fork_shape(table: pd.DataFrame, metric: str = "accuracy", published: pd.DataFrame | None = None) -> pd.DataFrame:
    """The fork's README table: rows = training set and label source, columns = test sets, cells = ``metric``.
    ``published`` (:func:`comparison_rows`): its rows of ``metric`` go on top, one per training set and system,
    labelled with their evidence tag."""
    t = table.assign(run="this book: " + table["train"] + " (" + table["labels"] + " labels)")
    ours = t.pivot(index="run", columns="test", values=metric)
    if published is None:
        return ours
    p = published[published["quantity"].str.startswith(f"{metric} · ")]
    if p.empty:
        return ours
    train_test = p["quantity"].str.removeprefix(f"{metric} · ").str.split(" → ", expand=True)
    rows = pd.DataFrame({"run": "published: " + train_test[0] + " (" + p["system"] + ", " + p["evidence"] + ")",
                         "test": train_test[1], "value": p["value"]})
    return pd.concat([rows.pivot_table(index="run", columns="test", values="value", aggfunc="first"), ours])


def confusion_grid(videos: dict[str, pd.DataFrame], pred: str = "pred_majority"):
    """Video confusion matrices (rows true real/fake, columns predicted) of several test sets, with counts."""
    from dfbook import plots

    with plots.style():
        fig, axes = plots._figure(1, len(videos), size=(2.6 * len(videos), 2.6))
        for ax, (title, v) in zip(axes.flat, videos.items()):
            cm = metrics.confusion_matrix(v["label"], v[pred], labels=[0, 1]).to_numpy()
            ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), vmin=0, vmax=1, cmap="Blues")
            for i in range(2):
                for j in range(2):
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=9)
            ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["real", "fake"], yticklabels=["real", "fake"],
                   xlabel="predicted", ylabel="true", title=title)
            ax.grid(False)
    return fig


def comparison_table(rows: pd.DataFrame, ours: dict[str, dict[str, float]]) -> pd.DataFrame:
    """``dfbook.compare.comparison`` with several of this book's runs (``ours``: label -> {quantity: value}),
    ordered by quantity; only quantities both published and measured here are kept."""
    from dfbook import compare

    measured = {q for vals in ours.values() for q in vals}
    rows = rows[rows["quantity"].isin(measured)]
    parts = [compare.comparison(rows if i == 0 else rows.iloc[:0],
                                {q: v for q, v in vals.items() if q in set(rows["quantity"])}, ours_label=label)
             for i, (label, vals) in enumerate(ours.items())]
    table = pd.concat(parts, ignore_index=True)
    order = {q: i for i, q in enumerate(dict.fromkeys(table["quantity"]))}
    return table.sort_values("quantity", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------- saved detectors
class ForkDetector(nn.Module):
    """The fork as one network: the stage-2 encoder's pooled backbone features (input in [0, 1], normalised inside)
    -> the stage-3 MLP -> logits ``(N, 2)``, the two columns swapped when the pseudo-label cluster "1" was named real
    on the labelled validation set (``flipped``), so softmax column 1 is P(fake)."""

    def __init__(self, ecl: ECL, classifier: FeatureClassifier, flipped: bool = False):
        super().__init__()
        self.ecl, self.classifier, self.flipped = ecl, classifier, bool(flipped)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.ecl.features(x))
        return logits.flip(1) if self.flipped else logits


def fork_net(backbone: str, dim: int, flipped: bool = False) -> ForkDetector:
    """The architecture of a saved fork (random weights)."""
    return ForkDetector(build_ecl(backbone, pretrained=False), FeatureClassifier(dim), flipped)


def save_detectors(run, encoder: "EncoderRun", classifier: FeatureClassifier, flipped: bool, sets: dict,
                   scores: dict, train_df: pd.DataFrame, *, backbone: str, domain: str, size: int,
                   source: str = "pseudo") -> pd.DataFrame:
    """Save the fork trained on ``domain`` with ``source`` labels (stage-1 pseudo-labels: the unsupervised
    detector) as a :class:`dfbook.detector.Detector`, scored on the domain's test videos (video score: the mean
    frame P(fake), as the chapter's video AUC); returns the summary table."""
    from dfbook import detector as D

    test_name = f"test/{domain}"
    dim = classifier.net[0].in_features
    det = D.Detector("fork", "unsupervised_video", ForkDetector(encoder.model, classifier, flipped),
                     D.Preprocess(size, mode="fit"),
                     {"function": "dfbook.methods.unsupervised_video:fork_net",
                      "kwargs": {"backbone": backbone, "dim": dim, "flipped": bool(flipped)}})
    row = D.save_trained(run, det, sets[domain][test_name], train=train_df, selection="final_epoch",
                         architecture=f"{backbone} (stage 2: SupCon on {source} labels) + MLP {dim}-512-128-2",
                         protocol=f"train on {domain} frames with {source} labels (stage 1), MLP on frozen features; "
                         "the MLP's class 1 named on the labelled validation set; final epochs (the fork keeps them)",
                         chapter_scores=scores[test_name])
    return D.saved_table([row])
