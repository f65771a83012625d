"""UCF: Uncovering Common Features for generalizable deepfake detection (Yan, Zhang, Fan, Wu; ICCV 2023,
arXiv 2304.13949), re-implemented from the official code in DeepfakeBench.

Reference (read, not vendored; CC BY-NC 4.0): ``SCLBD/DeepfakeBench@8a4a7bf``
``training/detectors/ucf_detector.py``, ``training/loss/contrastive_regularization.py``,
``training/networks/xception.py``, ``training/dataset/{abstract_dataset,pair_dataset}.py``,
``training/config/detector/ucf.yaml``. Section numbers (card §x) refer to
``reference/methods_ucf_fairness_deepfakebench.md``.

Data flow for a paired batch ``x`` of shape ``(2B, 3, H, W)`` (reals first, then fakes), ``H = W = 256``
in the paper, values normalised to [-1, 1] (mean = std = 0.5):

1. two encoders: forgery ``F = E_f(x)`` and content ``C = E_c(x)``, each ``(2B, D, H/32, W/32)``, D = 512;
2. ``S = block_spe(F)``, ``Z = block_sha(F)``: specific and common parts, ``(2B, D/2, h, w)``;
3. training only, with probability 0.7: permute ``Z`` within the real half and within the fake half;
4. fingerprint ``f = cat(S, Z)``; conditional AdaIN decoder ``D(f, c)`` reconstructs self (f_r,c_r), (f_f,c_f)
   and swapped (f_f,c_r)->x_r, (f_r,c_f)->x_f combinations, output ``(B, 3, H, W)`` in [-1, 1];
5. heads on GAP features: common ``head_sha`` (real/fake), specific ``head_spe`` (real + each manipulation);
6. loss = CE(common) + 0.1 CE(specific) + 0.3 (four L1 reconstructions) + 0.05 contrastive (margin 3).

Prediction uses the common head only: ``P(fake) = softmax(head_sha(block_sha(E_f(x))))[:, 1]``.

Public pieces: the model (:class:`UCF`, :func:`build_full`, :func:`build`, :func:`load_deepfakebench`,
:func:`param_counts`), the losses (:func:`losses`, :func:`contrastive_loss`, :func:`loss_fn` for
``dfbook.train.fit``), the ImageNet initialisation of ``full`` (:func:`imagenet_weights`), the data side
(:func:`augment`, :func:`gaussian_noise`, :class:`PairDataset`, :func:`to_tensor`; :class:`ImageFiles`,
:class:`FrameDataset`, :func:`eval_set` and :func:`embed` stream frames from disk in ``full``) and the chapter
workflow (:func:`protocol`, :func:`aiface_identities` + :func:`join_demographics` for ``full``'s AI-Face
demographics, :func:`train_tracked`, :func:`selection_table`, :func:`evaluate`, :func:`read_tensorboard`).

Module names equal DeepfakeBench's (``encoder_f, encoder_c, con_gan, head_spe, head_sha, block_spe,
block_sha``; Xception internals as in its ``networks/xception.py``), so a released ``ucf_best.pth`` loads into
:func:`build_full` with ``strict=True`` (:func:`load_deepfakebench`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.xception import Xception

from dfbook import paths
from dfbook.bench import camera

SOURCE = "SCLBD/DeepfakeBench@8a4a7bf training/detectors/ucf_detector.py"
# get_train_losses: `loss_sha + 0.1*loss_spe + 0.3*loss_reconstruction + 0.05*loss_con` (hard-coded, card §2.2)
LOSS_WEIGHTS = {"common": 1.0, "specific": 0.1, "reconstruction": 0.3, "contrastive": 0.05}
MARGIN = 3.0          # build_loss: con_loss_class(margin=3.0)
SHUFFLE_P = 0.7       # forward: `if aug_idx < 0.7`
RESOLUTION = 256      # ucf.yaml `resolution: 256`
MEAN = STD = (0.5, 0.5, 0.5)
# ucf.yaml optimizer.adam; lr_scheduler null; train_batchSize 16 pairs (= 32 images); nEpochs 5 -> 6 run (card §2.3)
RECIPE = {"lr": 2e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 5e-4, "batch_pairs": 16, "epochs": 6}
FF_METHODS = ("real", "DF", "F2F", "FS", "NT")   # label_dict: FF-real 0, FF-DF 1, FF-F2F 2, FF-FS 3, FF-NT 4


# ----------------------------------------------------------------------------------------------- encoders
class XceptionEncoder(Xception):
    """DeepfakeBench's Xception backbone in ``mode: adjust_channel``, built on timm's ``legacy_xception``
    (same module tree and key names as DeepfakeBench ``networks/xception.py``, which both port Cadene's).

    ``features(x)``: ``(N, 3, H, W)`` -> ``(N, 512, H/32, W/32)`` (8x8 at 256 px). Unlike timm's
    ``forward_features`` it stops at ``bn4`` without the final ReLU (DeepfakeBench ``fea_part5``) and then applies
    ``adjust_channel`` = 1x1 conv 2048->512 + BN + ReLU. ``last_linear`` (2048->2) is unused but kept because
    DeepfakeBench builds it (``backbone_config.num_classes: 2``) and its checkpoints contain it.
    """

    def __init__(self, feat_dim: int = 512, in_chans: int = 3):
        super().__init__(num_classes=0, in_chans=in_chans)   # timm's fc -> Identity (no parameters)
        self.last_linear = nn.Linear(self.num_features, 2)
        self.adjust_channel = nn.Sequential(
            nn.Conv2d(self.num_features, feat_dim, 1, 1), nn.BatchNorm2d(feat_dim), nn.ReLU(inplace=True))
        self.feat_dim = feat_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
        for i in range(1, 13):
            x = getattr(self, f"block{i}")(x)
        x = self.act3(self.bn3(self.conv3(x)))
        x = self.bn4(self.conv4(x))                       # no act4: DeepfakeBench fea_part5 ends at bn4
        return self.adjust_channel(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class AdjustedEncoder(nn.Module):
    """Any feature extractor + DeepfakeBench's ``adjust_channel`` (1x1 conv + BN + ReLU) to ``feat_dim`` channels.
    Used in the ``mini`` profile with a tiny Xception-like network. ``body`` maps ``(N, 3, H, W)`` to a map
    ``(N, C, h, w)`` with ``h, w >= 2`` (AdaIN needs a spatial variance); timm models are called through
    ``forward_features``. ``body_channels`` defaults to ``body.num_features`` (timm convention).

    ``body_norm=(mean, std)``: the normalisation the body was pretrained with (e.g. ImageNet's for the mini zoo).
    UCF's input stays DeepfakeBench's mean = std = 0.5 (the decoder's tanh reconstructs that range), and the
    encoder converts it to the body's normalisation first (fixed, non-persistent buffers: no state-dict keys)."""

    def __init__(self, body: nn.Module, feat_dim: int, body_channels: int | None = None,
                 body_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None):
        super().__init__()
        # x_body = ((x * 0.5 + 0.5) - mean) / std  =  x * scale + shift
        mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in (body_norm or (MEAN, STD)))
        self.register_buffer("in_scale", 0.5 / std, persistent=False)
        self.register_buffer("in_shift", (0.5 - mean) / std, persistent=False)
        channels = body_channels if body_channels is not None else getattr(body, "num_features", None)
        if channels is None:
            raise ValueError(f"AdjustedEncoder: cannot tell the output channels of {type(body).__name__}; "
                             "pass body_channels=<C of its (N, C, h, w) output>")
        self.body = body
        self.adjust_channel = nn.Sequential(
            nn.Conv2d(int(channels), feat_dim, 1, 1), nn.BatchNorm2d(feat_dim), nn.ReLU(inplace=True))
        self.feat_dim = feat_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.in_scale + self.in_shift
        fmap = self.body.forward_features(x) if hasattr(self.body, "forward_features") else self.body(x)
        if fmap.ndim != 4:
            raise ValueError(f"encoder body returned shape {tuple(fmap.shape)}; expected a (N, C, h, w) map — "
                             "build the body without global pooling (timm: num_classes=0, global_pool='')")
        return self.adjust_channel(fmap)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def load_imagenet_xception(encoder: XceptionEncoder, path: str | Path) -> XceptionEncoder:
    """Initialise an encoder from ImageNet Xception weights, as DeepfakeBench ``build_backbone`` does with
    Cadene's ``xception-b5690688.pth`` (timm's ``legacy_xception`` file ``xception-43020ad28.pth`` also works):
    2-D ``pointwise`` weights are unsqueezed to 1x1 convs and the ImageNet ``fc`` is dropped. Every other
    backbone weight must be present (``last_linear`` and ``adjust_channel`` stay random, as upstream)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ImageNet Xception weights not found at {path}. UCF's encoders start from Cadene's ImageNet Xception "
            "(DeepfakeBench release v1.0.0 'pretrained.zip' -> xception-b5690688.pth, or timm's legacy_xception "
            "file xception-43020ad28.pth). Download it on a connected machine and put it at "
            f"{paths.data_dir() / 'weights' / 'xception-b5690688.pth'} (or pass its path).")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: (v[..., None, None] if "pointwise" in k and v.ndim == 2 else v)
             for k, v in state.items() if not k.startswith(("fc.", "last_linear."))}
    result = encoder.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys
               if not k.startswith(("last_linear.", "adjust_channel.")) and not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ValueError(f"{path} does not look like an ImageNet Xception state dict: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    return encoder


def imagenet_weight_candidates() -> list[Path]:
    """Where :func:`imagenet_weights` looks when no path is given, in order: DeepfakeBench's file
    ``$DFBOOK_DATA/weights/xception-b5690688.pth`` and timm's ``legacy_xception.tf_in1k`` at the
    ``dfbook.backbones`` location ``$DFBOOK_DATA/weights/timm/legacy_xception.tf_in1k.<suffix>``."""
    from dfbook import backbones

    stem = backbones.expected_weights("timm:legacy_xception.tf_in1k")
    return [paths.data_dir() / "weights" / "xception-b5690688.pth",
            *(stem.with_name(stem.name + s) for s in backbones.WEIGHT_SUFFIXES)]


def imagenet_weights(path: str | Path | None = "") -> Path:
    """The ImageNet Xception file both encoders start from in ``full`` (UCF is never trained from random init
    upstream; a random-init run would quietly measure something else). ``path`` if given (it must exist), else the
    first existing :func:`imagenet_weight_candidates`. Raises ``FileNotFoundError`` saying what to download and
    where to put it. ``--dry-run`` needs no weights: it calls ``build_full(imagenet_weights=None)`` directly."""
    if path:
        path = paths.resolve_data_path(path)
        if not path.is_file():
            raise FileNotFoundError(f"IMAGENET_WEIGHTS={str(path)!r} does not exist; give the path of Cadene's "
                                    "ImageNet Xception file xception-b5690688.pth (DeepfakeBench release "
                                    "'pretrained.zip') or of timm's legacy_xception weights.")
        return path
    candidates = imagenet_weight_candidates()
    found = [c for c in candidates if c.is_file()]
    if not found:
        raise FileNotFoundError(
            "full UCF needs ImageNet Xception weights for its two encoders and IMAGENET_WEIGHTS is empty. On a "
            "connected machine download DeepfakeBench's release asset 'pretrained.zip' "
            "(https://github.com/SCLBD/DeepfakeBench/releases, v1.0.0) and put xception-b5690688.pth at "
            f"{candidates[0]}, or timm's legacy_xception.tf_in1k weights (Hugging Face timm/legacy_xception.tf_in1k, "
            f"model.safetensors) at {candidates[1]}; or pass -p IMAGENET_WEIGHTS <file>. Looked in: "
            + ", ".join(str(c) for c in candidates))
    return found[0]


# ----------------------------------------------------------------------------------------------- decoder
class AdaIN(nn.Module):
    """Adaptive instance norm (DeepfakeBench ``AdaIN``): standardise content ``x`` per sample and channel over
    space, then scale/shift with the spatial std/mean of the condition ``y``. Both ``(N, C, h, w)``.
    Uses the unbiased variance + eps 1e-5 inside the square root, as upstream."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def _stats(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = t.reshape(t.shape[0], t.shape[1], -1)
        return flat.mean(-1)[..., None, None], (flat.var(-1) + self.eps).sqrt()[..., None, None]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[:2] != y.shape[:2]:
            raise ValueError(f"AdaIN: content {tuple(x.shape)} and condition {tuple(y.shape)} differ in N or C")
        x_mean, x_std = self._stats(x)
        y_mean, y_std = self._stats(y)
        return (x - x_mean) / x_std * y_std + y_mean


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    """DeepfakeBench ``r_double_conv``: (3x3 conv + ReLU) x 2."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True))


class ConditionalUNet(nn.Module):
    """DeepfakeBench ``Conditional_UNet``: three stages (AdaIN -> Up x2 -> Dropout 0.3 -> DoubleConv),
    channels D -> D/2 -> D/4 -> D/8 (512 -> 256 -> 128 -> 64), the condition passing through the same (shared)
    up/dropout/conv modules; then 1x1 conv to 3 channels, bilinear upsampling to the input size, tanh.

    ``forward(f, c, out_size)``: fingerprint ``f`` and content ``c`` ``(B, D, h, w)`` -> ``(B, 3, *out_size)`` in
    [-1, 1]. Upstream upsamples x4 at the end (8 -> 64 -> 256); resizing to ``out_size`` with
    ``align_corners=True`` is the identical operation there and also serves encoders of other strides (mini).
    """

    def __init__(self, in_ch: int = 512):
        super().__init__()
        if in_ch % 8:
            raise ValueError(f"ConditionalUNet: in_ch must be divisible by 8, got {in_ch}")
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.dropout = nn.Dropout(p=0.3)
        self.adain3, self.adain2, self.adain1 = AdaIN(), AdaIN(), AdaIN()
        self.dconv_up3 = _double_conv(in_ch, in_ch // 2)
        self.dconv_up2 = _double_conv(in_ch // 2, in_ch // 4)
        self.dconv_up1 = _double_conv(in_ch // 4, in_ch // 8)
        self.conv_last = nn.Conv2d(in_ch // 8, 3, 1)

    def forward(self, f: torch.Tensor, c: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        x = c
        for adain, conv in ((self.adain3, self.dconv_up3), (self.adain2, self.dconv_up2),
                            (self.adain1, self.dconv_up1)):
            x = conv(self.dropout(self.upsample(adain(x, f))))
            f = conv(self.dropout(self.upsample(f)))      # the condition shares the stage's modules (upstream)
        x = self.conv_last(x)
        x = F.interpolate(x, size=tuple(out_size), mode="bilinear", align_corners=True)
        return torch.tanh(x)


# ----------------------------------------------------------------------------------------------- heads
class Conv2d1x1(nn.Module):
    """``block_spe`` / ``block_sha``: 1x1 conv D->D/2, LeakyReLU, D/2->D/2, LeakyReLU, D/2->D/2."""

    def __init__(self, in_f: int, hidden_dim: int, out_f: int):
        super().__init__()
        self.conv2d = nn.Sequential(nn.Conv2d(in_f, hidden_dim, 1, 1), nn.LeakyReLU(inplace=True),
                                    nn.Conv2d(hidden_dim, hidden_dim, 1, 1), nn.LeakyReLU(inplace=True),
                                    nn.Conv2d(hidden_dim, out_f, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(x)


class Head(nn.Module):
    """GAP -> Linear(in_f, hidden) -> LeakyReLU -> Linear(hidden, k) -> Dropout(0.2) on the logits (sic: upstream
    applies dropout to the output logits; kept because the released weights were trained with it).
    Returns ``(logits (N, k), pooled feature (N, in_f))``."""

    def __init__(self, in_f: int, hidden_dim: int, out_f: int):
        super().__init__()
        self.do = nn.Dropout(0.2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.mlp = nn.Sequential(nn.Linear(in_f, hidden_dim), nn.LeakyReLU(inplace=True), nn.Linear(hidden_dim, out_f))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.pool(x).flatten(1)
        return self.do(self.mlp(feat)), feat


# ----------------------------------------------------------------------------------------------- model
def shuffle_halves(z: torch.Tensor, p: float = SHUFFLE_P, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, bool]:
    """UCF's "idx aug": with probability ``p`` permute the rows of ``z`` ``(2B, ...)`` within the first (real) half
    and within the second (fake) half, so common features move to another sample of the same class.
    Uses ``z.size(0)`` for the halves (DeepfakeBench PR #61; before it the config batch size was used and the
    halves were wrong). Returns ``(z', applied)``; out of place (upstream assigns in place)."""
    n = z.shape[0]
    if n % 2:
        raise ValueError(f"shuffle_halves needs a paired batch (reals then fakes, even size), got {n} rows")
    if torch.rand((), generator=generator).item() >= p:
        return z, False
    half = n // 2
    idx = torch.cat([torch.randperm(half, generator=generator), half + torch.randperm(half, generator=generator)])
    return z[idx.to(z.device)], True


class UCF(nn.Module):
    """The UCF detector. ``encoder_f`` / ``encoder_c`` must provide ``features(x) -> (N, feat_dim, h, w)``
    (:class:`XceptionEncoder` in ``full``, :class:`AdjustedEncoder` in ``mini``).

    ``forward(x)`` = inference: common-head logits ``(N, 2)`` (what Grad-CAM and ``train.predict`` use).
    ``forward(x, paired=True)`` = :meth:`forward_train`, the training pass on a paired batch returning every output
    the loss needs (through ``forward`` so a DDP wrapper synchronises gradients).
    ``n_specific`` = 1 + number of manipulations (5 for FF++).
    """

    def __init__(self, encoder_f: nn.Module, encoder_c: nn.Module, feat_dim: int = 512, n_specific: int = 5,
                 shuffle_p: float = SHUFFLE_P):
        super().__init__()
        half = feat_dim // 2
        self.encoder_f, self.encoder_c = encoder_f, encoder_c
        self.con_gan = ConditionalUNet(feat_dim)
        self.head_spe = Head(half, feat_dim, n_specific)
        self.head_sha = Head(half, feat_dim, 2)
        self.block_spe = Conv2d1x1(feat_dim, half, half)
        self.block_sha = Conv2d1x1(feat_dim, half, half)
        self.feat_dim, self.n_specific, self.shuffle_p = feat_dim, n_specific, shuffle_p

    def forward(self, x: torch.Tensor, paired: bool = False, generator: torch.Generator | None = None):
        """``(N, 3, H, W)`` normalised -> common-head logits ``(N, 2)``; encoder_c and the decoder are unused.
        ``paired=True``: the training outputs of :meth:`forward_train` instead."""
        if paired:
            return self.forward_train(x, generator)
        return self.head_sha(self.block_sha(self.encoder_f.features(x)))[0]

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """P(fake) ``(N,)`` in [0, 1] = softmax of the common head, class 1 (DeepfakeBench ``prob``)."""
        return torch.softmax(self(x), dim=1)[:, 1]

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pooled features for t-SNE: ``forgery`` GAP(E_f(x)) ``(N, D)`` (what the seed's tsne.py used),
        ``common`` GAP(Z) and ``specific`` GAP(S) ``(N, D/2)``, and the common-head ``score``."""
        f = self.encoder_f.features(x)
        logits, common = self.head_sha(self.block_sha(f))
        _, specific = self.head_spe(self.block_spe(f))
        return {"forgery": f.mean((2, 3)), "common": common, "specific": specific,
                "score": torch.softmax(logits, 1)[:, 1]}

    def forward_train(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """Paired batch ``x`` ``(2B, 3, H, W)``, reals in the first half -> dict with ``cls`` ``(2B, 2)``,
        ``cls_spe`` ``(2B, n_specific)``, ``feat`` / ``feat_spe`` ``(2B, D/2)``, ``shuffled`` (bool) and ``rec``:
        the four reconstructions ``(B, 3, H, W)`` keyed ``self_fake, self_real, cross_fake, cross_real`` (named by
        the image each one must reproduce = the one that supplied the content)."""
        forgery, content = self.encoder_f.features(x), self.encoder_c.features(x)
        f_spe, f_sha = self.block_spe(forgery), self.block_sha(forgery)
        f_sha, shuffled = shuffle_halves(f_sha, self.shuffle_p, generator)
        f_all = torch.cat((f_spe, f_sha), dim=1)
        f_real, f_fake = f_all.chunk(2, dim=0)
        c_real, c_fake = content.chunk(2, dim=0)
        size = x.shape[-2:]
        rec = {"self_fake": self.con_gan(f_fake, c_fake, size), "self_real": self.con_gan(f_real, c_real, size),
               "cross_fake": self.con_gan(f_real, c_fake, size), "cross_real": self.con_gan(f_fake, c_real, size)}
        cls_spe, feat_spe = self.head_spe(f_spe)
        cls, feat = self.head_sha(f_sha)
        return {"cls": cls, "cls_spe": cls_spe, "feat": feat, "feat_spe": feat_spe, "rec": rec,
                "shuffled": shuffled}


# ----------------------------------------------------------------------------------------------- losses
def permute_within(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Index ``(N,)`` that permutes rows among rows with the same label (DeepfakeBench ``swap_spe_features``)."""
    idx = torch.arange(labels.shape[0])
    out = idx.clone()
    labels = labels.cpu()
    for value in labels.unique():
        members = idx[labels == value]
        out[members] = members[torch.randperm(members.numel(), generator=generator)]
    return out


def _triplet(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float) -> torch.Tensor:
    return torch.clamp(F.pairwise_distance(anchor, positive) - F.pairwise_distance(anchor, negative) + margin,
                       min=0.0).mean()


def contrastive_loss(common: torch.Tensor, specific: torch.Tensor, label_spe: torch.Tensor,
                     margin: float = MARGIN, generator: torch.Generator | None = None) -> torch.Tensor:
    """DeepfakeBench ``ContrastiveLoss`` (card §2.2). ``common``/``specific`` ``(2B, d)`` pooled features of a
    paired batch, ``label_spe`` ``(2B,)``. Anchors: common rows permuted within each half; specific rows permuted
    within the same method label. Four triplet terms T(a, p, n) = mean max(0, |a-p| - |a-n| + margin):
    T(R, R~, F~) + T(F, F~, R~) + T(S_R, S~_R, S~_F) + T(S_F, S~_F, S~_R). Note the specific terms contrast real
    vs fake, not method vs method (card §2.2 [I])."""
    n = common.shape[0]
    half = n // 2
    perm = torch.cat([torch.randperm(half, generator=generator), half + torch.randperm(half, generator=generator)])
    real, fake = common.chunk(2)
    real_pos, fake_pos = common[perm.to(common.device)].chunk(2)
    spe_real, spe_fake = specific.chunk(2)
    spe_real_pos, spe_fake_pos = specific[permute_within(label_spe, generator).to(specific.device)].chunk(2)
    return (_triplet(real, real_pos, fake_pos, margin) + _triplet(fake, fake_pos, real_pos, margin)
            + _triplet(spe_real, spe_real_pos, spe_fake_pos, margin)
            + _triplet(spe_fake, spe_fake_pos, spe_real_pos, margin))


def losses(out: dict, x: torch.Tensor, label_spe: torch.Tensor, weights: dict | None = None,
           margin: float = MARGIN, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """All UCF loss terms for ``out = model.forward_train(x)``; ``label_spe`` ``(2B,)`` (0 = real, 1.. = method).
    The binary label is the pair layout itself (first half 0, second half 1), as in ``pairDataset.collate_fn``.
    Returns ``loss`` (the weighted sum to minimise; DeepfakeBench's ``overall``) and ``common, specific,
    reconstruction, contrastive`` plus the four L1 terms ``rec_<name>``; weights default to :data:`LOSS_WEIGHTS`."""
    w = {**LOSS_WEIGHTS, **(weights or {})}
    half = x.shape[0] // 2
    label = torch.cat([torch.zeros(half), torch.ones(half)]).long().to(x.device)
    if label_spe.shape[0] != x.shape[0] or bool((label_spe[:half] != 0).any()) or bool((label_spe[half:] == 0).any()):
        raise ValueError("label_spe must have one entry per image, 0 for the real half and >= 1 for the fake half "
                         f"(got {label_spe.tolist()[:8]}...)")
    x_real, x_fake = x.chunk(2)
    target = {"self_fake": x_fake, "self_real": x_real, "cross_fake": x_fake, "cross_real": x_real}
    rec_terms = {f"rec_{k}": F.l1_loss(v, target[k]) for k, v in out["rec"].items()}
    terms = {"common": F.cross_entropy(out["cls"], label),
             "specific": F.cross_entropy(out["cls_spe"], label_spe),
             "reconstruction": sum(rec_terms.values()),
             "contrastive": contrastive_loss(out["feat"], out["feat_spe"], label_spe, margin, generator)}
    return {"loss": sum(w[k] * v for k, v in terms.items()), **terms, **rec_terms}


def loss_fn(model: nn.Module, batch, weights: dict | None = None) -> dict[str, torch.Tensor]:
    """``dfbook.train.fit`` loss. Training batches from :class:`PairDataset` are ``(x_real, x_fake, spe_fake)``
    -> all UCF terms (:func:`losses`). Validation batches ``(x, y)`` -> DeepfakeBench's test loss, the common-head
    cross-entropy only (``get_test_losses``). Randomness (shuffle, contrastive anchors) uses torch's global RNG,
    which ``fit`` seeds and checkpoints."""
    if len(batch) == 3:
        x_real, x_fake, spe_fake = batch
        x = torch.cat([x_real, x_fake])
        label_spe = torch.cat([torch.zeros_like(spe_fake), spe_fake]).long()
        return losses(model(x, paired=True), x, label_spe, weights)
    x, y = batch[0], batch[1]
    common = F.cross_entropy(model(x), y.long())
    return {"loss": common, "common": common}


def optimizer(model: nn.Module, lr: float = RECIPE["lr"], weight_decay: float = RECIPE["weight_decay"]
              ) -> torch.optim.Adam:
    """Adam as in ucf.yaml (betas 0.9/0.999, eps 1e-8, weight decay 5e-4, amsgrad off, no scheduler)."""
    return torch.optim.Adam(model.parameters(), lr=lr, betas=RECIPE["betas"], eps=RECIPE["eps"],
                            weight_decay=weight_decay, amsgrad=False)


# ----------------------------------------------------------------------------------------------- builders
def build_full(n_specific: int = 5, imagenet_weights: str | Path | None = None) -> UCF:
    """The paper's model: two DeepfakeBench Xceptions (feat 512) at 256 px. ``imagenet_weights``: a local ImageNet
    Xception file for both encoders (:func:`load_imagenet_xception`); ``None`` = random init (``--dry-run``)."""
    encoders = [XceptionEncoder(512), XceptionEncoder(512)]
    if imagenet_weights is not None:
        for enc in encoders:
            load_imagenet_xception(enc, imagenet_weights)
    return UCF(*encoders, feat_dim=512, n_specific=n_specific)


def build(make_body: Callable[[], nn.Module], feat_dim: int, n_specific: int = 5,
          body_channels: int | None = None, body_norm: tuple | None = None) -> UCF:
    """UCF with two encoders built by ``make_body()`` (called twice: separate weights, like upstream's two
    Xceptions from the same ImageNet file) plus ``adjust_channel`` to ``feat_dim``. For the mini profile, e.g.
    ``build(lambda: backbones.create("mini:xception").model, 128, body_norm=(spec["mean"], spec["std"]))``."""
    return UCF(*(AdjustedEncoder(make_body(), feat_dim, body_channels, body_norm) for _ in range(2)),
               feat_dim=feat_dim, n_specific=n_specific)


def default_checkpoint() -> Path:
    return paths.data_dir() / "weights" / "deepfakebench" / "ucf_best.pth"


def load_deepfakebench(model: UCF, path: str | Path | None = None) -> UCF:
    """Load a DeepfakeBench UCF checkpoint (``torch.save(model.state_dict())`` of ``UCFDetector``) with strict key
    matching. A ``module.`` prefix (DataParallel/DDP) and ``{'state_dict': ...}`` wrapping are removed first.
    ``path`` (relative: under ``$DFBOOK_DATA``) defaults to ``$DFBOOK_DATA/weights/deepfakebench/ucf_best.pth``."""
    path = paths.resolve_data_path(path) if path else default_checkpoint()
    if not path.is_file():
        raise FileNotFoundError(
            f"UCF checkpoint not found at {path}. Download 'ucf_best.pth' from the DeepfakeBench GitHub release "
            "v1.0.1 (https://github.com/SCLBD/DeepfakeBench/releases) on a connected machine and put it there "
            "(or set DFBOOK_DATA, or pass the path).")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    ours = model.state_dict()
    missing, unexpected = sorted(set(ours) - set(state)), sorted(set(state) - set(ours))
    reshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in ours.items()
                if k in state and state[k].shape != v.shape]
    if missing or unexpected or reshaped:
        raise ValueError(
            f"{path} does not match this UCF (strict loading): {len(missing)} missing e.g. {missing[:4]}, "
            f"{len(unexpected)} unexpected e.g. {unexpected[:4]}, {len(reshaped)} with other shapes e.g. "
            f"{reshaped[:3]}. A DeepfakeBench ucf_best.pth needs build_full(n_specific=5); a checkpoint of the mini "
            "model needs the same build() arguments it was trained with.")
    model.load_state_dict(state, strict=True)
    return model


def param_counts(model: UCF) -> dict[str, int]:
    """Parameters per component and in total (the ``--dry-run`` record); inference uses encoder_f + block_sha +
    head_sha only (``inference``)."""
    parts = {name: sum(p.numel() for p in getattr(model, name).parameters())
             for name in ("encoder_f", "encoder_c", "con_gan", "block_spe", "block_sha", "head_spe", "head_sha")}
    parts["total"] = sum(p.numel() for p in model.parameters())
    parts["inference"] = parts["encoder_f"] + parts["block_sha"] + parts["head_sha"]
    return parts


def gradcam_layer(model: UCF) -> nn.Module:
    """Grad-CAM target: the seed's ``grad.py`` uses ``model.encoder_f.conv4`` (last separable conv of the forgery
    Xception, before ``adjust_channel``). For other bodies: the last Conv2d of the forgery encoder's body."""
    enc = model.encoder_f
    if isinstance(enc, XceptionEncoder):
        return enc.conv4
    convs = [m for m in getattr(enc, "body", enc).modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"no Conv2d in {type(enc).__name__}; pass a target layer to Grad-CAM yourself")
    return convs[-1]


# ----------------------------------------------------------------------------------------------- data
def _rotate(img: np.ndarray, angle: float) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    # albumentations 1.1.0 Rotate: centre (w/2 - 0.5, h/2 - 0.5), INTER_LINEAR, BORDER_REFLECT_101
    m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), angle, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _isotropic_resize(img: np.ndarray, size: int, down: int, up: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    if max(h, w) == size:                       # DeepfakeBench albu.isotropically_resize_image: no-op at size
        return img
    scale = size / max(h, w)
    return cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=down if scale < 1 else up)


def _brightness_contrast(img: np.ndarray, rng: np.random.Generator, limit: float = 0.1) -> np.ndarray:
    alpha, beta = 1.0 + rng.uniform(-limit, limit), rng.uniform(-limit, limit)
    return np.clip(img.astype(np.float32) * alpha + beta * 255.0, 0, 255).astype(np.uint8)   # brightness_by_max


def _fancy_pca(img: np.ndarray, rng: np.random.Generator, alpha_std: float = 0.1) -> np.ndarray:
    """AlexNet PCA colour noise (albumentations ``FancyPCA(alpha=0.1)``): shift every pixel by
    ``eigvecs @ (alpha * eigvals)`` of the image's RGB covariance, in [0, 1] units."""
    flat = img.reshape(-1, 3).astype(np.float64) / 255.0
    eigvals, eigvecs = np.linalg.eigh(np.cov(flat - flat.mean(0), rowvar=False))
    shift = eigvecs @ (rng.normal(0.0, alpha_std, 3) * eigvals)
    return np.clip(img.astype(np.float64) + shift * 255.0, 0, 255).astype(np.uint8)


def _hue_saturation_value(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """albumentations ``HueSaturationValue`` defaults (hue +-20 in OpenCV's 0..179 scale, sat +-30, val +-20)."""
    import cv2

    hue_s, sat_s, val_s = rng.uniform(-20, 20), rng.uniform(-30, 30), rng.uniform(-20, 20)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = np.mod(np.rint(hsv[..., 0] + hue_s), 180)
    hsv[..., 1] = np.clip(np.rint(hsv[..., 1] + sat_s), 0, 255)
    hsv[..., 2] = np.clip(np.rint(hsv[..., 2] + val_s), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def augment(img: np.ndarray, rng: np.random.Generator, resolution: int = RESOLUTION) -> np.ndarray:
    """DeepfakeBench's training augmentation (``abstract_dataset.init_data_aug_method``, albumentations 1.1.0;
    albumentations is not a dependency here, so the six steps are re-written with OpenCV/numpy, in order):
    HorizontalFlip p.5; Rotate +-10 deg p.5; GaussianBlur kernel in {3,5,7} p.5; IsotropicResize(resolution), one of
    three interpolation pairs, p=1; one of {RandomBrightnessContrast +-0.1, FancyPCA, HueSaturationValue} p.5;
    JPEG quality in [40, 100] p.5. ``img``: uint8 RGB ``(H, W, 3)``; returns a new uint8 array."""
    import cv2

    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"augment expects a uint8 RGB (H, W, 3) image, got {img.dtype} {img.shape}")
    out = img
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.5:
        out = _rotate(out, rng.uniform(-10, 10))
    if rng.random() < 0.5:
        k = int(rng.choice([3, 5, 7]))
        out = cv2.GaussianBlur(np.ascontiguousarray(out), (k, k), 0)   # sigma 0: OpenCV derives it from k
    down, up = [(cv2.INTER_AREA, cv2.INTER_CUBIC), (cv2.INTER_AREA, cv2.INTER_LINEAR),
                (cv2.INTER_LINEAR, cv2.INTER_LINEAR)][int(rng.integers(3))]
    out = _isotropic_resize(out, resolution, down, up)
    if rng.random() < 0.5:
        colour = (_brightness_contrast, _fancy_pca, _hue_saturation_value)[int(rng.integers(3))]
        out = colour(np.ascontiguousarray(out), rng)
    if rng.random() < 0.5:
        out = camera.jpeg(np.ascontiguousarray(out), int(rng.integers(40, 101)))
    return np.ascontiguousarray(out)


def gaussian_noise(img: np.ndarray, sigma: float, rng: np.random.Generator, wrap: bool = False) -> np.ndarray:
    """Additive Gaussian pixel noise with std ``sigma`` (the seed used 15) on uint8 images.

    ``wrap=False`` (this book): in float, rounded and clipped to [0, 255].
    ``wrap=True`` reproduces the seed repo's ``add_gaussian_noise`` (card §1.2): ``normal(0, 15).astype('uint8')``
    truncates the noise towards zero and turns negative values into 256 - |n| (-3 -> 253); the uint8 sum then wraps
    mod 256 and the final clip can no longer do anything. Measured here (numpy 2.4, x86): mid-tones get ordinary
    (truncated) noise, but every pixel whose noisy value would leave [0, 255] flips to the other end — dark pixels
    with negative noise turn near-white and bright pixels with positive noise near-black (salt-and-pepper in hair,
    background and highlights). This corrects the card's [I] guess of "near-uniform corruption of about half the
    pixels": how many pixels flip depends on the image's histogram. numpy's negative-float -> uint8 cast is
    platform-defined; we spell out the x86 result (truncate, then mod 256) so it is deterministic."""
    if img.dtype != np.uint8:
        raise ValueError(f"gaussian_noise expects uint8 pixels, got {img.dtype}")
    if not wrap:
        return camera.noise(img, sigma, rng)
    noise_u8 = np.mod(np.trunc(rng.normal(0.0, sigma, img.shape)).astype(np.int64), 256)
    return np.mod(img.astype(np.int64) + noise_u8, 256).astype(np.uint8)


def to_tensor(imgs: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` or ``(H, W, 3)`` -> float ``(N, 3, H, W)`` normalised with mean = std = 0.5 to [-1, 1]."""
    arr = np.asarray(imgs)
    if arr.ndim == 3:
        arr = arr[None]
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div(255.0)
    return (t - 0.5) / 0.5


class ImageFiles:
    """Face frames on disk, read when indexed, so the ``full`` profile never holds a split in memory.

    ``files[i]`` -> uint8 ``(size, size, 3)``, read and resized exactly as ``dfbook.imageio.load_images`` does
    (so streamed and in-memory runs see identical pixels); ``files[mask]`` / ``files[index_array]`` -> the subset
    (still on disk); ``np.asarray(files)`` reads them all. Indexing mirrors a ``(N, size, size, 3)`` array, so
    :class:`PairDataset` and :class:`FrameDataset` take either. Unreadable files raise naming the file."""

    def __init__(self, paths, size: int):
        self.paths = [str(p) for p in paths]
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), self.size, self.size, 3)

    def __getitem__(self, idx):
        from dfbook import imageio

        if isinstance(idx, (int, np.integer)):
            return imageio.load_images([self.paths[int(idx)]], size=self.size)[0][0]
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if len(idx) != len(self.paths):
                raise IndexError(f"boolean index of length {len(idx)} for {len(self.paths)} files")
            idx = np.flatnonzero(idx)
        return ImageFiles([self.paths[i] for i in idx.astype(int)], self.size)

    def __array__(self, dtype=None, copy=None):
        from dfbook import imageio

        arr = imageio.load_images(self.paths, size=self.size)[0]
        return arr.astype(dtype) if dtype is not None else arr


class FrameDataset(torch.utils.data.Dataset):
    """Evaluation frames ``(x (3, H, W) normalised like :func:`to_tensor`, label)`` from a uint8 array or
    :class:`ImageFiles` (then read from disk per item, in DataLoader workers if asked)."""

    def __init__(self, images, labels):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, torch.tensor(np.asarray(labels)).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return to_tensor(self.images[i])[0], self.labels[i]


def eval_set(images, labels, *, batch_size: int = 256, num_workers: int = 0):
    """What ``train.predict`` / ``fit(val=...)`` take: in-memory uint8 ``(N, H, W, 3)`` -> ``(x, y)`` tensors (the
    mini path); :class:`ImageFiles` -> an ordered DataLoader over :class:`FrameDataset` that reads each batch from
    disk with ``num_workers`` processes (the full path). Both give the same scores (same batches, same pixels)."""
    if isinstance(images, np.ndarray):
        return to_tensor(images), torch.tensor(np.asarray(labels))          # a copy: labels may be read-only
    return torch.utils.data.DataLoader(FrameDataset(images, labels), batch_size=batch_size, shuffle=False,
                                       num_workers=num_workers)


@torch.no_grad()
def embed(model: UCF, images, batch_size: int = 64) -> dict[str, np.ndarray]:
    """:meth:`UCF.embed` over uint8 frames (array or :class:`ImageFiles`) in batches on the model's device."""
    device = next(model.parameters()).device
    model.eval()
    parts = [model.embed(to_tensor(np.asarray(images[np.arange(i, min(i + batch_size, len(images)))])).to(device))
             for i in range(0, len(images), batch_size)]
    return {k: torch.cat([p[k] for p in parts]).cpu().numpy() for k in parts[0]}


class PairDataset(torch.utils.data.Dataset):
    """DeepfakeBench ``pairDataset`` over uint8 images (in memory, or :class:`ImageFiles` read from disk per item):
    item ``i`` = fake ``i`` with a uniformly random
    real, both through :func:`augment` (if ``train_augment``), optional :func:`gaussian_noise` and
    :func:`to_tensor`. Returns ``(x_real (3, H, W), x_fake (3, H, W), spe_fake)``; the default collate stacks them
    into the ``(x_real, x_fake, spe)`` batches :func:`loss_fn` expects (reals first, as upstream's collate_fn).

    ``real``/``fake``: ``(N, H, W, 3)`` uint8 arrays or :class:`ImageFiles`; ``spe_fake``: ``(N_fake,)`` method
    ids >= 1 (:func:`specific_labels`).
    The random real and the augmentation draws come from torch's global RNG, so ``fit``'s (seed, epoch) order and
    checkpointed RNG state make a run reproducible and resumable. With DataLoader workers each worker's torch seed is
    drawn from the main process's RNG, so a run stays reproducible for a fixed ``num_workers``, but its draws differ
    from a single-process run's."""

    def __init__(self, real: np.ndarray, fake: np.ndarray, spe_fake: np.ndarray, *, train_augment: bool = True,
                 noise_sigma: float = 0.0, noise_wrap: bool = False, resolution: int | None = None):
        spe_fake = np.asarray(spe_fake)
        if len(spe_fake) != len(fake) or (spe_fake < 1).any():
            raise ValueError(f"spe_fake needs one method id >= 1 per fake image ({len(fake)} fakes, got "
                             f"{len(spe_fake)} ids, min {spe_fake.min() if len(spe_fake) else None})")
        if len(real) < 1 or len(fake) < 1:
            raise ValueError(f"PairDataset needs reals and fakes (got {len(real)} reals, {len(fake)} fakes)")
        self.real, self.fake, self.spe = real, fake, torch.as_tensor(spe_fake).long()
        self.train_augment, self.noise_sigma, self.noise_wrap = train_augment, noise_sigma, noise_wrap
        self.resolution = resolution or fake.shape[1]

    def __len__(self) -> int:
        return len(self.fake)

    def _prepare(self, img: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        if self.train_augment:
            img = augment(img, rng, self.resolution)
        if self.noise_sigma > 0:
            img = gaussian_noise(img, self.noise_sigma, rng, wrap=self.noise_wrap)
        return to_tensor(img)[0]

    def __getitem__(self, i: int):
        j = int(torch.randint(len(self.real), ()).item())
        rng = np.random.default_rng(int(torch.randint(2**62, ()).item()))
        return self._prepare(self.real[j], rng), self._prepare(self.fake[i], rng), self.spe[i]


def specific_labels(methods, order: tuple[str, ...] | list[str] | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Method names -> specific-head labels: ``real`` -> 0, the manipulations -> 1..K in ``order`` (default: sorted
    names). Returns ``(labels (N,), ("real", *order))``. Unknown names raise (no silent relabelling)."""
    methods = np.asarray(methods, dtype=object)
    order = tuple(order) if order is not None else tuple(sorted(set(methods) - {"real"}))
    names = ("real", *order)
    unknown = sorted(set(methods) - set(names))
    if unknown:
        raise ValueError(f"methods {unknown} are not in the specific-head order {names}; pass order=...")
    lookup = {name: i for i, name in enumerate(names)}
    return np.array([lookup[m] for m in methods], dtype=np.int64), names


def pair_epoch(n_real: int, n_fake: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One epoch of DeepfakeBench ``pairDataset``: every fake once in random order (DataLoader shuffle), each
    paired with a uniformly random real (with replacement). Returns ``(real_idx, fake_idx)``, both ``(n_fake,)``.
    Upstream lists each FF++ real four times (one JSON per method, issue #64); uniform sampling over that list is
    the same as uniform over distinct reals, so nothing is lost by sampling distinct reals here."""
    if n_real < 1 or n_fake < 1:
        raise ValueError(f"pair_epoch needs at least one real and one fake (got {n_real} reals, {n_fake} fakes)")
    return rng.integers(0, n_real, size=n_fake), rng.permutation(n_fake)


# ----------------------------------------------------------------------------------------------- chapter workflow
class PairedForward(nn.Module):
    """``x -> model(x, paired=True)`` without the ``shuffled`` flag, so ``report.model_check`` can push a batch
    through the training path (encoders, decoder, both heads) and record its output shapes."""

    def __init__(self, model: UCF):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict:
        out = self.model(x, paired=True)
        return {"cls": out["cls"], "cls_spe": out["cls_spe"], **out["rec"]}


def sample_frames(df, k: int):
    """``k`` evenly spaced frames per video (DeepfakeBench ``fixed_num_frames``: linspace over the frames a video
    has); videos with fewer frames keep them all. Videos are keyed by ``manifest.video_key``."""
    from dfbook import manifest

    key = manifest.video_key(df).to_numpy()
    rank = df.groupby(key)["frame"].rank(method="first").astype(int) - 1
    n = df.groupby(key)["frame"].transform("size")
    wanted = np.floor(np.arange(k)[None, :] * (n.to_numpy()[:, None] / k)).astype(int)   # (N, k) targets
    keep = (rank.to_numpy()[:, None] == wanted).any(axis=1) | (n.to_numpy() <= k)
    return df[keep].reset_index(drop=True)


def protocol(df, *, train_domain: str = "ffpp", test_domains=("celebdf_v2", "wilddeepfake"),
             train_frames: int = 2, test_frames: int = 8) -> dict:
    """The chapter's data: ``train``/``val``/``test`` of ``train_domain`` (identity- and video-disjoint, checked)
    and the ``test`` split of each cross domain under its own name. Frames are subsampled per video."""
    from dfbook import manifest

    own = df[df["domain"] == train_domain] if "domain" in df else df
    parts = {s: sample_frames(own[own["split"] == s], train_frames if s == "train" else test_frames)
             for s in ("train", "val", "test")}
    manifest.check_disjoint(pd.concat(parts.values(), ignore_index=True))
    for dom in test_domains:
        sel = df[(df["domain"] == dom) & (df["split"] == "test")]
        if sel.empty or sel["label"].nunique() < 2:
            raise ValueError(f"cross-domain test set {dom!r} is empty or one-class; "
                             f"domains: {sorted(df['domain'].unique())}")
        parts[dom] = sample_frames(sel, test_frames)
    return parts


#: AI-Face source folders (``deepfakes/<source>/``) that hold FF++ frames (the authors' copies are named e.g.
#: ``ff++`` or ``ff++_ori``); matched against the ``domain`` column of ``datasets.aiface()``.
AIFACE_FFPP = r"(?i)^(?:ff\+\+|ffpp|faceforensics\+\+)"
_FFPP_VIDEO = r"(?:^|/)(\d{3})(?:_(\d{3}))?(?=/|\.[A-Za-z]+$)"


def aiface_identities(aiface: pd.DataFrame, *, source: str = AIFACE_FFPP, prefix: str = "ffpp_",
                      columns=("gender", "skin_group", "age_group")) -> pd.DataFrame:
    """Per-identity demographics of FF++ from the AI-Face annotations (``datasets.aiface(version="v2")``).

    AI-Face annotates single frames and publishes no FF++ video or person ids, so the key is the FF++ video name
    in the image path (``000`` or ``000_003``: the first path part after the source folder that looks like one;
    the only key the release has). As in ``datasets.ffpp`` the identity of a video is its target (``000`` ->
    ``ffpp_000``). Each identity takes the most frequent label of each column over its annotated *real* frames
    (its own face), or over its fake frames when AI-Face kept no real frame of it. Returns one row per identity:
    ``identity``, the ``columns``, ``n_images`` and ``agreement`` (the smallest share of those frames that agree
    with the chosen label, over the columns: 1.0 = the annotators never disagreed)."""
    missing = [c for c in ("path", "label", "domain", *columns) if c not in aiface.columns]
    if missing:
        raise ValueError(f"aiface_identities: the AI-Face table lacks {missing}; load it with "
                         "dfbook.datasets.aiface(version='v2') (skin_group is a v2 column)")
    rows = aiface[aiface["domain"].astype(str).str.contains(source, regex=True)]
    if rows.empty:
        raise ValueError(f"no AI-Face image under a source folder matching {source!r}; sources present: "
                         f"{sorted(aiface['domain'].astype(str).unique())[:10]} (pass source=...)")
    rel = rows["path"].astype(str).str.extract(r"(?i)(?:^|/)(?:deepfakes|real)/[^/]+/(.*)$")[0]
    target = rel.str.extract(_FFPP_VIDEO)[0]
    if target.isna().all():
        raise ValueError(f"no FF++ video name (000 or 000_003) found in the AI-Face paths under {source!r}, e.g. "
                         f"{rows['path'].head(3).tolist()}")
    rows = rows.assign(identity=prefix + target).dropna(subset=["identity"])
    real_ids = set(rows.loc[rows["label"] == 0, "identity"])
    rows = rows[(rows["label"] == 0) | ~rows["identity"].isin(real_ids)]
    out = []
    for ident, grp in rows.groupby("identity", sort=True):
        row = {"identity": ident, "n_images": len(grp)}
        shares = []
        for col in columns:
            counts = grp[col].dropna().astype(str).value_counts()
            row[col] = counts.index[0] if len(counts) else None
            shares.append(counts.iloc[0] / counts.sum() if len(counts) else float("nan"))
        row["agreement"] = float(np.nanmin(shares)) if np.isfinite(shares).any() else float("nan")
        out.append(row)
    return pd.DataFrame(out)


def join_demographics(faces: pd.DataFrame, people: pd.DataFrame, *, domain: str = "ffpp") -> pd.DataFrame:
    """``faces`` with the demographic columns of ``people`` (:func:`aiface_identities`) joined on ``identity`` for
    the rows of ``domain``; other domains' rows get missing values. Columns already present are replaced for
    ``domain``'s rows. ``attrs["demographics"]`` counts the rows and identities of ``domain`` with and without
    demographics. Raises when no identity matches (wrong ``prefix`` or AI-Face source)."""
    cols = [c for c in people.columns if c not in ("identity", "n_images", "agreement")]
    mine = (faces["domain"] == domain).to_numpy() if "domain" in faces else np.ones(len(faces), bool)
    lookup = people.drop_duplicates("identity").set_index("identity")
    matched = faces["identity"].astype(str).isin(lookup.index).to_numpy() & mine
    if not matched.any():
        raise ValueError(f"none of the {int(mine.sum())} {domain} rows has an identity in the AI-Face table "
                         f"(e.g. {faces.loc[mine, 'identity'].head(3).tolist()} vs {lookup.index[:3].tolist()})")
    out = faces.copy()
    for col in cols:
        values = out[col].astype(object) if col in out else pd.Series(None, index=out.index, dtype=object)
        values[mine] = out.loc[mine, "identity"].astype(str).map(lookup[col]).to_numpy()
        out[col] = values
    ids = faces.loc[mine, "identity"].astype(str)
    out.attrs["demographics"] = {
        "domain": domain, "rows": int(mine.sum()), "rows_with_demographics": int(matched.sum()),
        "identities": int(ids.nunique()), "identities_with_demographics": int(ids[matched[mine]].nunique())}
    return out


def train_tracked(model: UCF, pairs: PairDataset, val: tuple, tests: dict, *, config, log_dir=None,
                  progress: bool = False):
    """Train with ``dfbook.train.fit`` on paired batches and score every test set after every epoch.

    ``val`` = ``(x (N, 3, H, W), y (N,))`` or an ordered DataLoader of ``(x, y)`` batches (:func:`eval_set`): what
    fit validates and monitors (``config.monitor``, e.g. ``val_auc``); with ``config.restore_best`` the model ends
    at the best validation epoch (the corrected protocol). ``tests``: name -> the same kinds. Returns
    ``(history, scores)``; ``scores[name]`` is a list of ``(N,)`` P(fake)
    arrays, one per epoch, for the as-published best-on-test choice (:func:`selection_table`)."""
    from dfbook import train

    scores: dict[str, list] = {name: [] for name in tests}

    def track(event: str, info: dict) -> None:
        if event == "epoch":
            for name, data in tests.items():
                scores[name].append(train.predict(model, data))

    history = train.fit(model, pairs, config=config, loss_fn=loss_fn, val=val, progress=progress,
                        callbacks=[track], log_dir=log_dir)
    return history, scores


def read_tensorboard(log_dir) -> pd.DataFrame:
    """All scalars of a TensorBoard log folder as ``tag, step, value`` rows (read back with TensorBoard's own
    ``EventAccumulator``, so the figures show what the run really logged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not Path(log_dir).is_dir():
        raise FileNotFoundError(f"no TensorBoard scalars under {log_dir}: the folder does not exist; was "
                                "fit(log_dir=...) given this folder?")
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    rows = [{"tag": tag, "step": e.step, "value": e.value} for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)]
    if not rows:
        raise FileNotFoundError(f"no TensorBoard scalars under {log_dir}; was fit(log_dir=...) given this folder?")
    return pd.DataFrame(rows)


def selection_table(scores: dict, labels: dict, val_epoch: int):
    """Corrected vs as-published model selection per test set, frame AUC. ``val_epoch`` (1-based) is the epoch the
    validation split chose; as published (DeepfakeBench ``Trainer``) each test set keeps its own best epoch."""
    from dfbook import metrics

    rows = []
    for name, per_epoch in scores.items():
        aucs = [metrics.auc(labels[name], s) for s in per_epoch]
        best = int(np.argmax(aucs))
        rows.append({"test_set": name, "corrected_auc": aucs[val_epoch - 1], "corrected_epoch": val_epoch,
                     "best_on_test_auc": aucs[best], "best_on_test_epoch": best + 1,
                     "optimism": aucs[best] - aucs[val_epoch - 1]})
    return pd.DataFrame(rows)


def evaluate(df, s: np.ndarray, *, n_boot: int = 200, seed: int = 0) -> dict:
    """Frame and video metrics side by side for one test set: frame AUC/AP/EER/accuracy@0.5/balanced accuracy and
    video AUC (mean frame P(fake) per ``manifest.video_key``), each with a percentile bootstrap CI (``<key>_ci``)
    resampling whole videos (the video AUC resamples the per-video scores)."""
    from dfbook import manifest, metrics

    y, keys = df["label"].to_numpy(), manifest.video_key(df).to_numpy()
    frame = metrics.summary(y, s)
    vid = metrics.video_scores(s, keys, y)
    out = {"frame_auc": frame["auc"], "frame_ap": frame["ap"], "frame_eer": frame["eer_nearest"],
           "frame_acc": frame["accuracy"], "frame_balanced_acc": frame["balanced_accuracy"],
           "video_auc": metrics.auc(vid["label"], vid["score"]), "n_frames": len(y), "n_videos": len(vid)}
    out["frame_auc_ci"] = metrics.bootstrap_ci(metrics.auc, y, s, keys=keys, n_boot=n_boot, seed=seed).interval
    out["video_auc_ci"] = metrics.bootstrap_ci(metrics.auc, vid["label"].to_numpy(), vid["score"].to_numpy(),
                                               n_boot=n_boot, seed=seed).interval
    others = {"frame_ap": metrics.ap, "frame_eer": metrics.eer_nearest, "frame_acc": metrics.accuracy,
              "frame_balanced_acc": metrics.balanced_accuracy}
    ci = metrics.bootstrap(lambda yb, sb: {k: fn(yb, sb) for k, fn in others.items()}, y, s, keys=keys,
                           n_boot=n_boot, seed=seed)
    out.update({f"{k}_ci": (float(ci.loc[k, "lo"]), float(ci.loc[k, "hi"])) for k in others})
    return out


# ----------------------------------------------------------------------------------------------- saved detectors
def mini_net(encoder: str, feat_dim: int, n_specific: int = 5) -> UCF:
    """The architecture of a saved mini UCF (random weights): :func:`build` on two ``encoder`` bodies."""
    from dfbook import backbones

    spec = backbones.create(encoder, pretrained=False).spec
    return build(lambda: backbones.create(encoder, pretrained=False).model, feat_dim, n_specific,
                 body_norm=(spec["mean"], spec["std"]))


def save_detectors(run, model: UCF, data: dict, scores: dict, *, encoder: str, feat_dim: int, n_specific: int,
                   resolution: int, released: UCF | None = None, released_from: str = "") -> pd.DataFrame:
    """Save the trained UCF (its checkpoint chosen on validation AUC) -- and DeepfakeBench's released
    ``ucf_best.pth`` when the chapter loaded one -- as :class:`dfbook.detector.Detector` s, scored on the
    training domain's test split; returns the summary table."""
    from dfbook import detector as D

    prep = D.Preprocess(resolution, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), mode="fit")
    build_ = ({"function": "dfbook.methods.ucf:build_full", "kwargs": {"n_specific": n_specific}}
              if encoder == "deepfakebench:xception" else
              {"function": "dfbook.methods.ucf:mini_net",
               "kwargs": {"encoder": encoder, "feat_dim": feat_dim, "n_specific": n_specific}})
    out = [D.save_trained(run, D.Detector("ucf", "ucf", model, prep, build_), data["test"], train=data["train"],
                          architecture=f"UCF on {encoder} (inference: forgery encoder, common block, common head)",
                          protocol="train on the training domain's real + manipulated frames, identity-disjoint "
                          "splits; checkpoint with the best validation AUC (DeepfakeBench picks it on the test set)",
                          chapter_scores=scores["test"])]
    if released is not None:
        out.append(D.save_trained(run, D.Detector("ucf_released", "ucf", released, prep,
                                                  {"function": "dfbook.methods.ucf:build_full",
                                                   "kwargs": {"n_specific": 5}}),
                                  data["test"], architecture="DeepfakeBench UCF (Xception encoders)",
                                  protocol="DeepfakeBench's released checkpoint (FF++ c23, selected on its test metric)",
                                  selection="released", source="released", released_from=released_from))
    return D.saved_table(out)
