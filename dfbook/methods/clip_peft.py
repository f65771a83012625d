"""CLIP parameter-efficient fine-tuning for cross-manipulation detection: a frozen CLIP image tower, a
bottleneck adapter and six text-prompt similarities, trained on Real + FaceSwap, tested on NeuralTextures.

Reference (read, not vendored): ``NYCUhsuchen/deepfake_detection@4f41ee3`` ``simplified_main.py``
(class ``CLIPDeepfakeDetector``), ``training.log``, ``metrics.json``; card
``reference/methods_unsupervised_clippeft_defenders.md`` §2 (section numbers below are the card's).

Data flow for images ``x`` ``(N, 3, S, S)`` (S = 224 for ViT-B/32; squash-resized, CLIP-normalised, §2.4):

1. ``e = normalize(encode_image(x))`` ``(N, D)``, D = 512 on ViT-B/32 -- frozen, no gradient;
2. ``t = normalize(encode_text(PROMPTS))`` ``(6, D)``; computed once here (the seed recomputes it every
   step under ``no_grad``: the same numbers, §2.6 item 4);
3. ``sim = e @ t.T`` ``(N, 6)``: raw cosines in [-1, 1], no logit scale, no softmax over prompts (§2.3);
   six scalars: mean of the real prompts, mean of the fake prompts, overall mean, real - fake, unbiased
   std, max;
4. ``cat(adapter(e) (N, 128), scalars (N, 6))`` -> classifier -> logits ``(N, 2)``;
   ``P(fake) = softmax(logits)[:, 1]``.

Trainable: adapter ``D->256->128`` + classifier ``134->256->64->2`` = 215,362 parameters for D = 512
(``training.log``: "Trainable parameters: 215,362 (0.14%)"). The heads take the *unnormalised* embedding
(what :func:`dfbook.features.extract` caches) and normalise it themselves, so one head module serves both
training on cached features and the image-level :class:`Detector`.

Beyond the seed: the frozen-CLIP linear probe (the assignment's suggested baseline), the ablation without
the prompt similarities, the zero-shot prompt score, and LoRA (rank 4, alpha 1; the seed's log mentions
such runs but their code is not in the repository, §2.3) through ``peft`` on the image tower's MLP layers.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dfbook import backbones, imageio, manifest, metrics, paths, splits, train

SOURCE = "NYCUhsuchen/deepfake_detection@4f41ee3 simplified_main.py"
PROMPTS = ("a real human face", "a fake deepfake face", "an authentic person", "a manipulated face",
           "a genuine human", "a synthetic face")
REAL_PROMPTS, FAKE_PROMPTS = (0, 2, 4), (1, 3, 5)
PROMPT_FEATURES = ("real_mean", "fake_mean", "mean", "real_minus_fake", "std", "max")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # the seed's Normalize(...) (§2.4) = OpenAI CLIP's
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SEED_TRAINABLE = 215_362                          # training.log, ViT-B/32
SEED_CLIP_PARAMS = 151_277_313                    # training.log: total 151,492,675 - 215,362
# §2.4: AdamW(lr 1e-4, wd 1e-4), CosineAnnealingLR(T_max=epochs) stepped per epoch, CE, clip_grad_norm 1.0,
# batch 32, 15 epochs, seed 42, final-epoch weights (no validation).
RECIPE = {"epochs": 15, "batch_size": 32, "lr": 1e-4, "weight_decay": 1e-4, "clip_grad_norm": 1.0, "seed": 42}
LEAK_FRACTION = 5000 / 10100      # §2.4: the first 5000 of the 10100 Real_youtube frames are the test reals
HEADS = ("adapter", "no_prompts", "probe")
VARIANTS = {"adapter": "seed: adapter + prompts", "no_prompts": "ablation: adapter, no prompts",
            "probe": "baseline: linear probe", "probe_random_init": "linear probe on a random-init CLIP",
            "zero_shot": "zero-shot prompt score", "lora": "LoRA + adapter"}
# LoRA on the two MLP linears of every image-tower block; the seed's LoRA code is not published (§2.3). Not on
# the attention: open_clip uses nn.MultiheadAttention, whose peft LoRA (peft 0.21 lora/layer.py
# `MultiheadAttention`) merges and unmerges the weights around every forward, so the "frozen" weights drift by
# float round-off each step (our test caught it); the MLP layers are plain nn.Linear modules.
LORA_TARGETS = r"visual\.transformer\.resblocks\.\d+\.mlp\.c_(fc|proj)"
# quantity -> (metric, level) in paper_results.csv, and the row of an evaluate() table it corresponds to
QUANTITIES = {
    "frame AUC": ("AUC", "frame", "frame/auc"),
    "frame accuracy @0.5": ("accuracy", "frame", "frame/accuracy"),
    "frame F1 @0.5": ("F1", "frame", "frame/f1"),
    "frame EER": ("EER", "frame", "frame/eer"),
    "real accuracy @0.5": ("real_accuracy (5000/5000)", "frame", "frame/real_accuracy"),
    "fake recall @0.5": ("fake_recall (8534/10100)", "frame", "frame/fake_accuracy"),
    "video AUC": ("AUC (mean frame prob)", "video", "video/auc"),
    "video accuracy @0.5": ("accuracy@0.5 (mean frame prob)", "video", "video/accuracy"),
}


# ----------------------------------------------------------------------------------------------- features
def squash_transform(size: int):
    """PIL image -> float tensor ``(3, size, size)``: ``Resize((size, size))`` (bilinear, aspect NOT kept),
    ToTensor, CLIP normalisation -- the seed's train = test transform (§2.4; CLIP's own resize + centre
    crop is not used). Its ``repr`` is stable, so it can key the feature cache."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                               transforms.Normalize(CLIP_MEAN, CLIP_STD)])


@torch.no_grad()
def text_features(backbone: backbones.Backbone, prompts=PROMPTS) -> torch.Tensor:
    """L2-normalised text embeddings ``(len(prompts), D)`` float32 on the CPU."""
    backbone.clip.eval()
    return F.normalize(backbone.encode_text(list(prompts)).float().cpu(), dim=-1)


def prompt_features(emb: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The six scalars of §2.3 from image embeddings ``(N, D)`` (any norm) and L2-normalised prompt
    embeddings ``(6, D)``: ``(N, 6)`` in the order of :data:`PROMPT_FEATURES`; cosines lie in [-1, 1]."""
    sim = F.normalize(emb.float(), dim=-1) @ text.T
    real, fake = sim[:, list(REAL_PROMPTS)].mean(1), sim[:, list(FAKE_PROMPTS)].mean(1)
    return torch.stack([real, fake, sim.mean(1), real - fake, sim.std(1), sim.max(1).values], dim=1)


def prompt_score(X: np.ndarray, text: torch.Tensor) -> np.ndarray:
    """Zero-shot ranking score ``(N,)`` = mean cosine to the fake prompts minus mean cosine to the real
    prompts (higher = more fake); a score in [-2, 2], not a probability: report AUC only."""
    f = prompt_features(torch.as_tensor(np.asarray(X)), text)
    return (-f[:, 3]).numpy()


# ----------------------------------------------------------------------------------------------- heads
class PromptAdapterHead(nn.Module):
    """The seed's trainable part. ``forward(emb (N, D)) -> logits (N, 2)``; ``use_prompts=False`` drops the
    six prompt scalars (classifier input 128 instead of 134) for the ablation."""

    def __init__(self, text: torch.Tensor, *, use_prompts: bool = True):
        super().__init__()
        dim = text.shape[1]
        self.register_buffer("text", F.normalize(text.float(), dim=-1))   # a buffer: frozen, not counted
        self.use_prompts = use_prompts
        self.adapter = nn.Sequential(nn.Linear(dim, 256), nn.ReLU(), nn.Dropout(0.1),
                                     nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.1))
        self.classifier = nn.Sequential(nn.Linear(128 + 6 * use_prompts, 256), nn.ReLU(), nn.Dropout(0.2),
                                        nn.Linear(256, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 2))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        e = F.normalize(emb.float(), dim=-1)
        parts = [self.adapter(e)] + ([prompt_features(e, self.text)] if self.use_prompts else [])
        return self.classifier(torch.cat(parts, dim=1))


class LinearProbe(nn.Module):
    """Frozen-CLIP linear probe: ``Linear(D, 2)`` on the L2-normalised embedding ``(N, D) -> (N, 2)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.fc = nn.Linear(dim, 2)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.fc(F.normalize(emb.float(), dim=-1))


def make_head(kind: str, text: torch.Tensor) -> nn.Module:
    """``"adapter"`` (the seed), ``"no_prompts"`` (ablation) or ``"probe"``; ``text`` is ``(6, D)``."""
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}; expected one of {HEADS}")
    if kind == "probe":
        return LinearProbe(text.shape[1])
    return PromptAdapterHead(text, use_prompts=kind == "adapter")


class Detector(nn.Module):
    """CLIP + head on images: ``(N, 3, S, S)`` CLIP-normalised -> logits ``(N, 2)``. The CLIP (both towers,
    as the seed's model holds them) is frozen; with LoRA only its adapters train. The image tower runs
    without autograd when nothing in it is trainable."""

    def __init__(self, clip: nn.Module, head: nn.Module):
        super().__init__()
        self.clip, self.head = clip, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tuned = any(p.requires_grad for p in self.clip.visual.parameters())
        with nullcontext() if tuned else torch.no_grad():
            emb = self.clip.encode_image(x)
        return self.head(emb)


def add_lora(clip: nn.Module, rank: int = 4, alpha: float = 1.0, dropout: float = 0.0) -> nn.Module:
    """Inject LoRA (``peft``) into the MLP linears of every block of ``clip.visual`` in place and return ``clip``;
    afterwards only the LoRA matrices of ``clip`` require gradients (B starts at zero: same outputs)."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS)
    return inject_adapter_in_model(config, clip)


def build(backbone: backbones.Backbone, kind: str = "adapter", *, lora_rank: int = 0,
          lora_alpha: float = 1.0) -> Detector:
    """A :class:`Detector` on ``backbone`` (an ``openclip:`` or ``mini:clip`` backbone). Without LoRA the
    detector shares the backbone's (frozen) CLIP; with ``lora_rank > 0`` it gets a deep copy with LoRA."""
    if backbone.clip is None:
        raise TypeError(f"{backbone.name} has no text tower; use an openclip: or mini:clip backbone")
    head = make_head(kind, text_features(backbone))
    clip = backbones.freeze(copy.deepcopy(backbone.clip) if lora_rank else backbone.clip)
    if lora_rank:
        add_lora(clip, lora_rank, lora_alpha)
    return Detector(clip, head)


# ----------------------------------------------------------------------------------------------- training
def recipe(epochs: int = RECIPE["epochs"], seed: int = RECIPE["seed"], batch_size: int = RECIPE["batch_size"],
           lr: float = RECIPE["lr"]) -> train.TrainConfig:
    """The seed's recipe (§2.4) as a TrainConfig; fp32 (no autocast), as the seed's CPU-loaded CLIP."""
    return train.TrainConfig(epochs=epochs, batch_size=batch_size, optimizer="adamw", lr=lr,
                             weight_decay=RECIPE["weight_decay"], scheduler="cosine", interval="epoch",
                             clip_grad_norm=RECIPE["clip_grad_norm"], amp=False, seed=seed)


def train_head(kind: str, text: torch.Tensor, X: np.ndarray, y: np.ndarray, *, epochs: int, seed: int,
               lr: float = RECIPE["lr"], batch_size: int = RECIPE["batch_size"]) -> tuple[nn.Module, pd.DataFrame]:
    """Train a head on cached embeddings ``X (N, D)`` with labels ``y (N,)`` (1 = fake) by the seed's
    recipe; returns ``(head in eval mode, history)``. The head is built under ``seed``, so the same seed
    gives the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = make_head(kind, text)
    history = train.fit(head, (torch.as_tensor(np.asarray(X), dtype=torch.float32),
                               torch.as_tensor(np.asarray(y), dtype=torch.long)),
                        config=recipe(epochs, seed, batch_size, lr), progress=False, device="cpu")
    return head.eval(), history


class Frames(torch.utils.data.Dataset):
    """Rows of a manifest as ``(transform(image), label)``; an unreadable file raises naming it."""

    def __init__(self, df: pd.DataFrame, transform):
        self.paths, self.labels, self.transform = list(df["path"].astype(str)), df["label"].to_numpy(), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(imageio.read_rgb(self.paths[i]))), int(self.labels[i])


def run_key(*parts) -> str:
    """A short stable hash of JSON-able parts (manifest hash, backbone weights, config ...) for checkpoint
    folders, so a changed corpus or recipe never resumes a stale run."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def train_detector(detector: Detector, df: pd.DataFrame, transform, *, epochs: int, seed: int,
                   lr: float = RECIPE["lr"], batch_size: int = RECIPE["batch_size"],
                   ckpt_dir: str | Path | None = None, num_workers: int = 0) -> pd.DataFrame:
    """End-to-end training on images (the LoRA variant): only parameters with ``requires_grad`` train.
    Checkpoints to ``ckpt_dir/last.pt`` every epoch and resumes from it. Returns the history."""
    cfg = dataclasses.replace(recipe(epochs, seed, batch_size, lr), num_workers=num_workers)
    return train.fit(detector, Frames(df, transform), config=cfg, ckpt_dir=ckpt_dir, progress=True)


# ----------------------------------------------------------------------------------------------- protocols
def load_frames(frames: str = "", domain: str = "ffpp") -> pd.DataFrame:
    """The chapter's frames, sorted by path, with index 0..N-1 (= the rows of the feature array).

    ``frames=""``: the ``domain`` rows of the mini faces corpus. Otherwise a frame manifest CSV, absolute or
    relative to ``$DFBOOK_DATA``, whose relative paths are resolved against the CSV's folder -- e.g. the
    ``manifest.csv`` of ``dfbook prepare ffpp OUT --compression c40 --fps 1``, as
    the seed's frame package (§2.2)."""
    if not frames:
        from dfbook.bench import corpus

        df = corpus.load("faces")
        df = df[df["domain"] == domain]
    else:
        path = paths.resolve_data_path(frames)
        if not path.is_file():
            raise FileNotFoundError(f"frame manifest {path} not found; make it with `dfbook prepare` (see "
                                    "data/README.md, section 'ffpp') or pass FRAMES='' for the mini corpus")
        df = manifest.read(path)
    return df.sort_values("path", kind="stable").reset_index(drop=True)


def frame_package(df: pd.DataFrame, methods, videos_per_class: int, seed: int) -> pd.DataFrame:
    """The seed's data (§2.2): ``videos_per_class`` videos of the reals and of each of ``methods``, each class
    drawn independently at random (the assignment's package held 100 of FF++'s 1000 videos per class, so only
    some fakes -- 9 of its 100 NeuralTextures targets -- show a person whose real video is in the package).
    Returns the rows of the drawn videos, in ``df``'s order."""
    rng = np.random.default_rng(seed)
    keys = manifest.video_key(df)
    keep = []
    for method in ("real", *methods):
        videos = np.sort(keys[df["method"] == method].unique())
        if len(videos) < videos_per_class:
            raise ValueError(f"{method!r} has {len(videos)} videos, fewer than videos_per_class={videos_per_class}")
        keep.extend(rng.choice(videos, videos_per_class, replace=False))
    return df[keys.isin(keep)]


def published_protocol(df: pd.DataFrame, train_method: str = "FaceSwap", test_method: str = "NeuralTextures",
                       *, videos_per_class: int | None = None, seed: int = 0,
                       leak_fraction: float = LEAK_FRACTION) -> dict[str, pd.DataFrame]:
    """The seed's protocol (§2.4), made reproducible: with ``videos_per_class``, first draw the seed's kind
    of package (:func:`frame_package`); train on EVERY real and ``train_method`` frame of it; test on the first
    ``leak_fraction`` of its real frames in sorted path order (all of them seen in training) plus every
    ``test_method`` frame. Splits are ignored, as the seed had none. Returns ``{"train", "test"}``."""
    if videos_per_class:
        df = frame_package(df, (train_method, test_method), videos_per_class, seed)
    reals = df[df["label"] == 0].sort_values("path", kind="stable")
    n_leak = int(round(leak_fraction * len(reals)))
    if not 0 < n_leak <= len(reals):
        raise ValueError(f"leak_fraction={leak_fraction} leaves {n_leak} of {len(reals)} real frames for testing")
    return {"train": pd.concat([reals, _method(df, train_method)]),
            "test": pd.concat([reals.iloc[:n_leak], _method(df, test_method)])}


def corrected_protocol(df: pd.DataFrame, train_method: str = "FaceSwap",
                       test_method: str = "NeuralTextures") -> dict[str, pd.DataFrame]:
    """Train on the ``train`` split's reals + ``train_method``, test on the ``test`` split's reals +
    ``test_method``; splits by identity (FF++ official lists in ``full``), disjointness proven by
    :func:`dfbook.splits.protocol`. The ``val`` split is not used (the recipe has no validation)."""
    parts = splits.protocol(df, [train_method], [test_method])
    return {"train": parts["train"], "test": parts[f"test/{test_method}"]}


def _method(df: pd.DataFrame, method: str) -> pd.DataFrame:
    out = df[df["method"] == method]
    if out.empty:
        raise KeyError(f"method {method!r} not in the manifest; it has {sorted(df['method'].unique())}")
    return out


def overlap(train_df: pd.DataFrame, test_df: pd.DataFrame) -> dict[str, int]:
    """What a test set shares with its training set: frames (paths), real videos, identities (incl. swap
    donors), and the test frames / real test frames whose file was trained on."""
    tr_ids = set(manifest.identities(train_df).str.split("|").explode())
    te_ids = set(manifest.identities(test_df).str.split("|").explode())
    seen = test_df["path"].isin(set(train_df["path"]))
    vk_tr, vk_te = set(manifest.video_key(train_df)), manifest.video_key(test_df)
    return {"test_frames": len(test_df), "test_frames_trained_on": int(seen.sum()),
            "real_test_frames_trained_on": int((seen & (test_df["label"] == 0)).sum()),
            "test_videos": int(vk_te.nunique()), "test_videos_trained_on": int(vk_te[vk_te.isin(vk_tr)].nunique()),
            "test_identities": len(te_ids), "identities_seen_in_training": len(te_ids & tr_ids)}


# ----------------------------------------------------------------------------------------------- evaluation
def evaluate(df: pd.DataFrame, scores: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Frame and video metrics of P(fake) ``scores (N,)`` on the rows of ``df`` (threshold 0.5, §2.4).

    Rows ``frame/{auc, eer, f1, accuracy, real_accuracy, fake_accuracy}`` and ``video/{auc, accuracy}``
    (video score = mean frame P(fake)); columns ``value, lo, hi`` -- 95 % bootstrap intervals for the AUCs,
    resampling whole videos (frames of a video are not independent)."""
    y, keys = df["label"].to_numpy(), manifest.video_key(df).to_numpy()
    fr = metrics.summary(y, scores)
    vid = metrics.video_scores(scores, keys, y)
    rows = {f"frame/{k}": fr[src] for k, src in (("auc", "auc"), ("eer", "eer_nearest"), ("f1", "f1"),
                                                  ("accuracy", "accuracy"), ("real_accuracy", "real_accuracy"),
                                                  ("fake_accuracy", "fake_accuracy"))}
    rows["video/auc"] = metrics.auc(vid["label"], vid["score"])
    rows["video/accuracy"] = metrics.accuracy(vid["label"], vid["score"])
    out = pd.DataFrame({"value": pd.Series(rows, dtype=float)}).assign(lo=np.nan, hi=np.nan)
    for name, ci in (("frame/auc", metrics.bootstrap_ci(metrics.auc, y, scores, keys=keys, n_boot=n_boot, seed=seed)),
                     ("video/auc", metrics.bootstrap_ci(metrics.auc, vid["label"], vid["score"], n_boot=n_boot,
                                                        seed=seed))):
        out.loc[name, ["lo", "hi"]] = ci.lo, ci.hi
    out.index.name = "metric"
    return out


def record(run, prefix: str, table: pd.DataFrame, headline: str | None = None) -> pd.DataFrame:
    """``run.metric(f"{prefix}/{metric}", value, ci=(lo, hi))`` for every row of an :func:`evaluate` table."""
    for name, row in table.iterrows():
        ci = (row["lo"], row["hi"]) if np.isfinite(row["lo"]) else None
        run.metric(f"{prefix}/{name}", float(row["value"]), ci=ci, headline=name == headline)
    return table


def confusion(df: pd.DataFrame, scores: np.ndarray, threshold: float = 0.5) -> pd.DataFrame:
    """2x2 confusion matrix (rows = true, columns = predicted at ``scores >= threshold``) labelled real/fake."""
    cm = metrics.confusion_matrix(df["label"].to_numpy(), (np.asarray(scores) >= threshold).astype(int), [0, 1])
    names = ["real", "fake"]
    return pd.DataFrame(cm.to_numpy(), index=pd.Index(names, name="true"), columns=pd.Index(names, name="predicted"))


def variants_table(protocols: dict, scores: dict, checked: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
                   run=None) -> pd.DataFrame:
    """Frame and video AUC of every scored variant: ``scores[(protocol, variant)]`` are the scores of
    ``protocols[protocol]["test"]``; ``checked`` is the ``run.model_check`` table (column ``model`` = variant)
    giving the trainable parameters (0 for the zero-shot prompt score). With ``run``, the AUCs of the
    non-seed variants are recorded as ``<protocol>/<variant>/{frame,video}/auc``."""
    trainable = dict(zip(checked["model"], checked["params_trainable"]))
    trainable |= {"zero_shot": 0, "probe_random_init": trainable.get("probe")}
    rows = []
    for kind, proto in itertools.product(VARIANTS, protocols):
        if (proto, kind) not in scores:
            continue
        t = evaluate(protocols[proto]["test"], scores[proto, kind], n_boot=n_boot, seed=seed).loc[
            ["frame/auc", "video/auc"]]
        if run is not None and kind != "adapter":
            record(run, f"{proto}/{kind}", t)
        rows.append({"variant": VARIANTS[kind], "protocol": proto, "trainable_params": trainable[kind],
                     "frame_auc": t.loc["frame/auc", "value"], "frame_auc_lo": t.loc["frame/auc", "lo"],
                     "frame_auc_hi": t.loc["frame/auc", "hi"], "video_auc": t.loc["video/auc", "value"]})
    return pd.DataFrame(rows)


def matrix_summary(matrix: pd.DataFrame) -> dict[str, float]:
    """Mean AUC on the diagonal (train = test method) and off it."""
    m = matrix.to_numpy(dtype=float)
    diag = np.eye(len(m), dtype=bool)
    return {"in_distribution_auc": float(m[diag].mean()), "cross_manipulation_auc": float(m[~diag].mean())}


def share_with_errors(errors: pd.DataFrame, label: int) -> float:
    """Fraction of the videos of class ``label`` in a :func:`per_video_errors` table with at least one error."""
    part = errors[errors["label"] == label]
    if part.empty:
        raise ValueError(f"no video with label {label} in the error table")
    return float((part["errors"] > 0).mean())


def per_video_errors(df: pd.DataFrame, scores: np.ndarray, threshold: float = 0.5) -> pd.DataFrame:
    """One row per video: ``video, method, label, frames, errors`` (frames on the wrong side of
    ``threshold``), ``mean_score``; most errors first."""
    wrong = (np.asarray(scores) >= threshold) != (df["label"].to_numpy() == 1)
    t = pd.DataFrame({"video": manifest.video_key(df).to_numpy(), "method": df["method"].to_numpy(),
                      "label": df["label"].to_numpy(), "error": wrong, "score": np.asarray(scores)})
    out = t.groupby("video", sort=False).agg(method=("method", "first"), label=("label", "first"),
                                             frames=("error", "size"), errors=("error", "sum"),
                                             mean_score=("score", "mean"))
    return out.sort_values(["errors", "mean_score"], ascending=[False, False], kind="stable").reset_index()


def confident_mistakes(df: pd.DataFrame, scores: np.ndarray, k: int = 12, threshold: float = 0.5) -> pd.DataFrame:
    """The ``k`` wrong frames (at ``threshold``) farthest from it, at most one per video (the most confident):
    rows of ``df`` plus ``score``, most confident first (false positives and false negatives together)."""
    s = np.asarray(scores)
    wrong = (s >= threshold) != (df["label"].to_numpy() == 1)
    out = df.assign(score=s, _video=manifest.video_key(df))[wrong]
    out = out.iloc[np.argsort(-np.abs(out["score"].to_numpy() - threshold), kind="stable")]
    return out.drop_duplicates("_video").drop(columns="_video").iloc[:k]


def cross_manipulation(df: pd.DataFrame, X: np.ndarray, text: torch.Tensor, methods, *, kind: str = "adapter",
                       epochs: int, seed: int, lr: float = RECIPE["lr"]) -> pd.DataFrame:
    """Frame AUC of a head trained on each method (+ reals, ``train`` split) and tested on each method
    (+ the ``test`` split's reals): a ``train x test`` DataFrame. ``X`` is row-aligned with ``df``
    (positional index 0..N-1)."""
    out = pd.DataFrame(index=pd.Index(methods, name="train on"), columns=pd.Index(methods, name="test on"),
                       dtype=float)
    for m in methods:
        parts = splits.protocol(df, [m], list(methods))
        tr = parts["train"].index.to_numpy()
        head, _ = train_head(kind, text, X[tr], df["label"].to_numpy()[tr], epochs=epochs, seed=seed, lr=lr)
        for t in methods:
            te = parts[f"test/{t}"]
            out.loc[m, t] = metrics.auc(te["label"], train.predict(head, X[te.index.to_numpy()]))
    return out


def seed_rows() -> pd.DataFrame:
    """The seed's published numbers (``paper_results.csv``) with a short ``quantity`` column whose names
    are :data:`QUANTITIES`' keys."""
    from dfbook import compare

    rows = compare.select(compare.load(), paper_or_repo="NYCUhsuchen/deepfake_detection")
    names = {(m, lvl): q for q, (m, lvl, _) in QUANTITIES.items()}
    rows["quantity"] = [names.get((m, lvl), f"{m} ({lvl})") for m, lvl in zip(rows["metric"], rows["level"])]
    return rows


def ours(table: pd.DataFrame) -> dict[str, dict]:
    """An :func:`evaluate` table as ``{quantity: {"value", "lo", "hi"}}`` for :func:`comparison`."""
    return {q: {"value": table.loc[key, "value"], "lo": table.loc[key, "lo"], "hi": table.loc[key, "hi"]}
            for q, (_, _, key) in QUANTITIES.items()}


def comparison(rows: pd.DataFrame, ours: dict[str, dict[str, object]]) -> pd.DataFrame:
    """:func:`dfbook.compare.comparison` with one "this book" row per protocol: ``ours`` maps a label
    (e.g. ``"this book, corrected (mini)"``) to ``{quantity: value or CI mapping}``."""
    from dfbook import compare

    tables = [compare.comparison(rows if i == 0 else rows.iloc[:0], values, ours_label=label)
              for i, (label, values) in enumerate(ours.items())]
    table = pd.concat(tables, ignore_index=True)
    order = {q: i for i, q in enumerate(dict.fromkeys(table["quantity"]))}
    return table.sort_values("quantity", key=lambda q: q.map(order), kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------- saved detectors
def detector_net(backbone: str, kind: str = "adapter") -> Detector:
    """The architecture of a saved detector: ``backbone`` (random weights) + a ``kind`` head."""
    return build(backbones.create(backbone, pretrained=False), kind)


def save_detectors(run, backbone: backbones.Backbone, head: nn.Module, frames: pd.DataFrame, protocols: dict,
                   scores: dict, *, train_method: str, size: int) -> pd.DataFrame:
    """Save the seed's model (frozen CLIP + prompt adapter) trained on the corrected protocol as a
    :class:`dfbook.detector.Detector`, scored on its in-distribution test set (the test split's reals and
    ``train_method`` fakes); its scores of the corrected cross-manipulation test are compared with the chapter's."""
    from dfbook import detector as D

    corrected = protocols["corrected"]
    test = frames[(frames["split"] == "test") & ((frames["label"] == 0) | (frames["method"] == train_method))]
    det = D.Detector("adapter", "clip_peft", Detector(backbone.clip, head),
                     D.Preprocess(size, CLIP_MEAN, CLIP_STD, mode="squash"),
                     {"function": "dfbook.methods.clip_peft:detector_net",
                      "kwargs": {"backbone": backbone.name, "kind": "adapter"}})
    row = D.save_trained(run, det, test, train=corrected["train"], selection="final_epoch",
                         architecture=f"frozen {backbone.name} (L2-normalised embedding) + prompt adapter head",
                         protocol=f"corrected: train split reals + {train_method}, split by identity; the seed's "
                         "recipe has no validation split, so the final epoch is kept",
                         check=(corrected["test"], scores["corrected", "adapter"]))
    return D.saved_table([row])
