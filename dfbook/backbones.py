"""Backbones of timm, open_clip and the mini model zoo under one naming scheme.

Names
    ``timm:<arch>[.<tag>]``          e.g. ``timm:convnext_base.fb_in22k_ft_in1k``, ``timm:legacy_xception``
    ``openclip:<arch>.<tag>``        e.g. ``openclip:ViT-L-14.openai``, ``openclip:ViT-B-32.laion2b_s34b_b79k``
    ``mini:<arch>``                  the tiny pretrained zoo (:mod:`dfbook.zoo`): ``clip, convnext, resnet,
                                     xception, efficientnet``

:func:`create` returns a :class:`Backbone`: the model, the preprocessing that belongs to its weights, a
JSON-able preprocessing spec (part of feature-cache keys), the embedding dimension and a weights identity.

Weights never come from the network at run time (DESIGN.md): they come from a file the caller names, from
``$DFBOOK_DATA/weights/<lib>/<arch>.<tag>.{safetensors,pth,pt,bin}``, or from the local Hugging Face cache.
Hugging Face offline mode is switched on first, so a missing weight fails in well under a second with a
message saying which file to fetch, how, and where to put it.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from dfbook import paths, runtime

LIBRARIES = ("timm", "openclip", "mini")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


class WeightsNotFound(FileNotFoundError):
    """Pretrained weights are not on this machine; the message says what to download and where to put it."""


def parse(name: str) -> tuple[str, str, str | None]:
    """``"timm:convnext_base.fb_in1k"`` -> ``("timm", "convnext_base", "fb_in1k")``; the tag may be None."""
    lib, sep, rest = name.partition(":")
    if not sep or lib not in LIBRARIES or not rest:
        raise ValueError(f"backbone name {name!r} must look like 'timm:<arch>[.<tag>]', "
                         "'openclip:<arch>.<pretrained_tag>' or 'mini:<arch>'")
    arch, _, tag = rest.partition(".")
    return lib, arch, (tag or None)


def expected_weights(name: str) -> Path:
    """Where a user may put a weight file for ``name`` so that it is found without ``weights=``:
    ``$DFBOOK_DATA/weights/<lib>/<arch>.<tag>`` plus one of ``.safetensors .pth .pt .bin``."""
    lib, arch, tag = parse(name)
    return paths.data_dir() / "weights" / lib / (f"{arch}.{tag}" if tag else arch)


def _local_weights(name: str) -> Path | None:
    stem = expected_weights(name)
    found = [stem.with_name(stem.name + s) for s in WEIGHT_SUFFIXES if stem.with_name(stem.name + s).is_file()]
    return found[0] if found else None


def file_identity(path: Path) -> str:
    """Weights identity of a file's content: size and SHA-256 of its first and last MiB. Hashing the whole of
    a 1.7 GB ViT-L checkpoint would add seconds to every chapter start; size + both ends change with any
    real re-training or re-download."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return f"file:{size}:{h.hexdigest()[:16]}"


def _offline() -> None:
    """``runtime.offline()`` sets the environment variable, but huggingface_hub reads it once at import;
    if a notebook imported timm before, patch the already-read constant too (it is what
    ``huggingface_hub.constants.is_offline_mode()`` returns). An empty variable counts as unset."""
    if not os.environ.get("HF_HUB_OFFLINE"):
        os.environ.pop("HF_HUB_OFFLINE", None)
    runtime.offline()
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        import huggingface_hub.constants as hf_constants

        hf_constants.HF_HUB_OFFLINE = True


@contextmanager
def seeded(seed: int):
    """Random-init weights that depend only on ``seed``, not on the caller's RNG state (so random-init
    features are reproducible and cacheable)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class ClipClassifier(nn.Module):
    """CLIP image tower + linear head: ``(N, 3, H, W)`` -> logits ``(N, num_classes)``."""

    def __init__(self, clip: nn.Module, num_classes: int):
        super().__init__()
        self.clip = clip
        self.head = nn.Linear(clip.visual.output_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.clip.encode_image(x))


@dataclass
class Backbone:
    """A created backbone.

    ``model(x)`` maps a batch ``(N, 3, H, W)`` preprocessed as ``preprocess`` does to logits
    ``(N, num_classes)``, or -- for ``num_classes=0`` -- timm models return the pooled embedding
    ``(N, dim)`` and open_clip models are the whole CLIP (use :meth:`encode_image` / :meth:`encode_text`).
    ``preprocess`` maps a PIL image to a float tensor ``(3, H, W)``.
    """

    name: str
    library: str                      # "timm" or "openclip": the implementation (also for mini models)
    model: nn.Module
    preprocess: Callable
    train_preprocess: Callable | None
    spec: dict                        # JSON-able: size, mean, std, interpolation, crop
    dim: int                          # embedding dimension of encode_image
    num_classes: int
    weights_id: str                   # "random-init:<seed>", "hub:<arch>.<tag>", "file:...", "zoo:<key>"
    tokenizer: Callable | None = None
    info: dict = field(default_factory=dict)

    @property
    def clip(self) -> nn.Module | None:
        """The open_clip CLIP module (image + text towers), or None for image-only backbones."""
        if self.library != "openclip":
            return None
        return self.model.clip if isinstance(self.model, ClipClassifier) else self.model

    @property
    def image_tower(self) -> nn.Module:
        """The module that sees images (for freezing, Grad-CAM target layers, PEFT)."""
        return self.clip.visual if self.clip is not None else self.model

    @property
    def n_blocks(self) -> int:
        """How many intermediate feature points :meth:`intermediates` can return: transformer blocks
        of a ViT, stages of a CNN (timm's ``feature_info``)."""
        if self.clip is not None:
            return len(self.clip.visual.transformer.resblocks)
        return len(self.model.feature_info)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, dim)``: the CLIP image embedding (projected, NOT L2-normalised), or
        timm's pooled pre-logits features."""
        if self.clip is not None:
            return self.clip.encode_image(x, normalize=False)
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def encode_text(self, texts) -> torch.Tensor:
        """Captions (list of str) or token ids ``(N, L)`` -> ``(N, dim)`` text embeddings (CLIP only)."""
        if self.clip is None:
            raise TypeError(f"{self.name} has no text tower; use an openclip: or mini:clip backbone")
        if not torch.is_tensor(texts):
            texts = self.tokenizer(list(texts))
        device = next(self.clip.parameters()).device
        return self.clip.encode_text(texts.to(device), normalize=False)

    def intermediates(self, x: torch.Tensor, indices: list[int]) -> list[torch.Tensor]:
        """Pooled features ``(N, C_i)`` of intermediate blocks/stages ``indices`` (negative allowed).

        ViTs give the class token after block i (the UnivFD layer ablation, appendix C.1); CNNs give the
        global average of stage i's feature map."""
        n = self.n_blocks
        idx = [i % n for i in indices]
        if self.clip is not None:
            out = self.clip.visual.forward_intermediates(x, indices=idx, intermediates_only=True,
                                                         output_extra_tokens=True)
            return [t[:, 0] for t in out["image_intermediates_prefix"]]
        if getattr(self.model, "num_prefix_tokens", 0) and getattr(self.model, "cls_token", None) is not None:
            out = self.model.forward_intermediates(x, indices=idx, intermediates_only=True,
                                                   return_prefix_tokens=True)
            return [prefix[:, 0] for _, prefix in out]
        out = self.model.forward_intermediates(x, indices=idx, intermediates_only=True)
        return [t.mean(dim=(2, 3)) for t in out]

    def params(self) -> dict[str, int]:
        return count_params(self.model)

    def to(self, device) -> "Backbone":
        self.model.to(device)
        return self

    def eval(self) -> "Backbone":
        self.model.eval()
        return self


def count_params(module: nn.Module) -> dict[str, int]:
    """``{"total": ..., "trainable": ...}`` parameter counts."""
    ps = list(module.parameters())
    return {"total": sum(p.numel() for p in ps), "trainable": sum(p.numel() for p in ps if p.requires_grad)}


def freeze(module: nn.Module, *, except_: tuple[str, ...] | list[str] = ()) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter whose name does not start with one of ``except_``;
    returns ``module`` (modified in place, as torch does)."""
    for n, p in module.named_parameters():
        p.requires_grad = any(n.startswith(e) for e in except_)
    return module


# ----------------------------------------------------------------------------- timm

def timm_preprocessing(model) -> tuple:
    """``(eval_transform, train_transform, spec)`` from a timm model's data config (its pretrained_cfg)."""
    from timm.data import create_transform, resolve_model_data_config

    cfg = resolve_model_data_config(model)
    spec = {"size": list(cfg["input_size"][1:]), "mean": list(cfg["mean"]), "std": list(cfg["std"]),
            "interpolation": cfg["interpolation"], "crop_pct": cfg["crop_pct"], "crop_mode": cfg["crop_mode"]}
    return create_transform(**cfg), create_transform(**cfg, is_training=True), spec


def _fetch_hint_timm(arch_tag: str, expected: Path) -> str:
    import timm

    cfg = timm.models.get_pretrained_cfg(arch_tag)
    if cfg is None:
        raise ValueError(f"timm has no pretrained tag {arch_tag!r}; see timm.list_pretrained('{arch_tag.split('.')[0]}*')")
    lines = [f"  python -c \"import timm; timm.create_model('{arch_tag}', pretrained=True)\"",
             "  (fills the Hugging Face cache ~/.cache/huggingface/hub; copy it to this machine or point HF_HOME at it)"]
    if cfg.hf_hub_id:
        lines.append(f"  or: hf download {cfg.hf_hub_id} model.safetensors  and save it as {expected}.safetensors")
    elif cfg.url:
        lines.append(f"  or: wget {cfg.url} -O {expected}{Path(cfg.url).suffix or '.pth'}")
    return "\n".join(lines)


def _cached(arch_tag: str, lib: str) -> str | None:
    """Why the pretrained weights of ``arch_tag`` are NOT in a local cache, or None when they are. Checked
    before building the model, so a miss costs milliseconds, not the build of a 300M-parameter network,
    and a URL-hosted checkpoint never triggers a download attempt."""
    from huggingface_hub import try_to_load_from_cache

    if lib == "timm":
        import timm

        cfg = timm.models.get_pretrained_cfg(arch_tag)
        if cfg is None:
            return None  # let timm raise its own "unknown model" error
        hub, files, url = cfg.hf_hub_id, [cfg.hf_hub_filename or "model.safetensors", "pytorch_model.bin"], cfg.url
        url_cache = Path(torch.hub.get_dir()) / "checkpoints"
    else:
        import open_clip

        arch, tag = arch_tag.split(".", 1)
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        hub, url = cfg.get("hf_hub", "").rstrip("/"), cfg.get("url", "")
        hub, fname = (os.path.split(hub) if hub.count("/") > 1 else (hub, ""))
        files = [fname] if fname else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        url_cache = Path("~/.cache/clip").expanduser()  # open_clip.pretrained.download_pretrained_from_url
    if hub:
        if any(isinstance(try_to_load_from_cache(hub, f), str) for f in files):
            return None
        return f"{hub}/{files[0]} is not in the Hugging Face cache"
    if url:
        if (url_cache / Path(url).name).is_file():
            return None
        return f"{url} is not in the download cache {url_cache}"
    return None


def _create_timm(arch_tag: str, pretrained: bool, weights: Path | None, num_classes: int, kw: dict):
    import timm

    if not pretrained:
        return timm.create_model(arch_tag, pretrained=False, num_classes=num_classes, **kw)
    if weights is not None:
        overlay = {**kw.pop("pretrained_cfg_overlay", {}), "file": str(weights)}
        return timm.create_model(arch_tag, pretrained=True, pretrained_cfg_overlay=overlay,
                                 num_classes=num_classes, **kw)
    return timm.create_model(arch_tag, pretrained=True, num_classes=num_classes, **kw)


# ----------------------------------------------------------------------------- open_clip

def _openclip_spec(clip) -> dict:
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(clip)
    size = cfg["size"]
    return {"size": list(size) if isinstance(size, (tuple, list)) else [size, size],
            "mean": list(cfg["mean"]), "std": list(cfg["std"]), "interpolation": cfg["interpolation"],
            "crop_pct": 1.0, "crop_mode": cfg.get("resize_mode", "shortest")}


def _fetch_hint_openclip(arch: str, tag: str, expected: Path) -> str:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        known = open_clip.list_pretrained_tags_by_model(arch)
        raise ValueError(f"open_clip has no pretrained tag {tag!r} for {arch!r}; known tags: {known}")
    lines = [f"  python -c \"import open_clip; open_clip.create_model('{arch}', pretrained='{tag}')\"",
             "  (fills the Hugging Face cache ~/.cache/huggingface/hub; copy it to this machine or point HF_HOME at it)"]
    if cfg.get("hf_hub"):
        hub = cfg["hf_hub"].rstrip("/")
        lines.append(f"  or: hf download {hub} open_clip_pytorch_model.bin  and save it as {expected}.bin")
    elif cfg.get("url"):
        lines.append(f"  or: wget {cfg['url']} -O {expected}{Path(cfg['url']).suffix or '.pt'}")
    return "\n".join(lines)


def _create_openclip(arch: str, tag: str | None, pretrained: bool, weights: Path | None):
    import open_clip

    source, extra = None, {}
    if pretrained:
        source = str(weights) if weights is not None else tag
    if weights is not None and tag:
        # A file loses what the tag implies: OpenAI weights need QuickGELU (silently worse features without
        # it) and some tags carry their own normalisation (open_clip/pretrained.py).
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        extra = {"force_quick_gelu": bool(cfg.get("quick_gelu")),
                 **{f"image_{k}": cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}}
    model, train_preprocess, preprocess = open_clip.create_model_and_transforms(arch, pretrained=source, **extra)
    return model, preprocess, train_preprocess, open_clip.get_tokenizer(arch)


# ----------------------------------------------------------------------------- create

def _missing(name: str, expected: Path, hint: str, cause: Exception) -> WeightsNotFound:
    return WeightsNotFound(
        f"pretrained weights for backbone {name!r} are not on this machine ({type(cause).__name__}: "
        f"{str(cause)[:200]}).\nPut the file at {expected}.<safetensors|pth|bin> (or pass weights=<file>), "
        f"or into the Hugging Face cache. On a connected machine:\n{hint}\n"
        "For a run without pretrained weights use pretrained=False (random init).")


def create(name: str, *, pretrained: bool = True, weights: str | Path | None = None, num_classes: int = 0,
           init_seed: int = 0, **kw: Any) -> Backbone:
    """Create a backbone by name (see the module docstring).

    ``pretrained=False`` builds random-init weights that depend only on ``init_seed``. ``weights`` names a
    local file (timm state dict / open_clip checkpoint). ``num_classes=k > 0`` gives a classifier with a
    fresh ``k``-way head (timm's own head; a linear head on the CLIP image embedding for open_clip).
    ``**kw`` goes to ``timm.create_model`` (e.g. ``depths=``, ``drop_path_rate=``).
    Raises :class:`WeightsNotFound` (within a second, offline) when pretrained weights are missing.
    """
    lib, arch, tag = parse(name)
    if lib == "mini":
        from dfbook import zoo

        return zoo.create(arch, pretrained=pretrained, num_classes=num_classes, init_seed=init_seed, **kw)
    _offline()
    if weights is not None:
        weights = Path(weights).expanduser()
        if not weights.is_file():
            raise WeightsNotFound(f"weights file {weights} for backbone {name!r} does not exist; "
                                  f"pass the path of a downloaded checkpoint (or put it at {expected_weights(name)}.pth)")
    elif pretrained:
        weights = _local_weights(name)
    if pretrained and weights is None and tag is None and lib == "openclip":
        raise ValueError(f"{name!r}: open_clip needs a pretrained tag, e.g. 'openclip:{arch}.openai' "
                         f"(known: {__import__('open_clip').list_pretrained_tags_by_model(arch)}), "
                         "or weights=<file>, or pretrained=False")
    wid = (f"random-init:{init_seed}" if not pretrained
           else file_identity(weights) if weights is not None else f"hub:{arch}.{tag}" if tag else f"hub:{arch}")
    try:
        if pretrained and weights is None and (why := _cached(f"{arch}.{tag}" if tag else arch, lib)):
            raise FileNotFoundError(why)
        with seeded(init_seed):
            if lib == "timm":
                model = _create_timm(f"{arch}.{tag}" if tag else arch, pretrained, weights, num_classes, dict(kw))
            else:
                if kw:
                    raise TypeError(f"unexpected keyword arguments for an open_clip backbone: {sorted(kw)}")
                clip, preprocess, train_preprocess, tokenizer = _create_openclip(arch, tag, pretrained, weights)
                model = ClipClassifier(clip, num_classes) if num_classes else clip
    except (OSError, RuntimeError) as e:
        if not pretrained or weights is not None:
            raise
        expected = expected_weights(name)
        hint = (_fetch_hint_timm(f"{arch}.{tag}" if tag else arch, expected) if lib == "timm"
                else _fetch_hint_openclip(arch, tag, expected))
        raise _missing(name, expected, hint, e) from e
    if lib == "timm":
        preprocess, train_preprocess, spec = timm_preprocessing(model)
        return Backbone(name, "timm", model, preprocess, train_preprocess, spec,
                        getattr(model, "head_hidden_size", model.num_features), num_classes, wid)
    clip = model.clip if num_classes else model
    return Backbone(name, "openclip", model, preprocess, train_preprocess, _openclip_spec(clip), clip.visual.output_dim,
                    num_classes, wid, tokenizer=tokenizer)
