"""The one training loop every chapter that trains uses, and the scoring helper that goes with it.

``fit`` covers linear probes on cached features (in-memory tensors), CNN/CLIP fine-tuning over files (DataLoaders),
multi-loss models (UCF: the loss function returns a dict of named losses) and EMA experts (DeepFakeDefenders).
Hyper-parameters live in one frozen :class:`TrainConfig`, so a chapter passes plain values and a checkpoint can prove it
is being resumed with the same recipe.

Contracts
- Batches are ``(inputs, labels, *extras)`` sequences (or dicts with a ``"label"`` key plus a custom ``score_fn``);
  labels are 1 = fake, 0 = real (or class ids for attribution).
- ``loss_fn(model, batch)`` returns a scalar tensor or a dict of named scalar tensors whose ``"loss"`` entry is the one
  back-propagated; every entry is logged. It receives the (possibly DDP-wrapped) model so gradients synchronise.
- ``score_fn(model, batch)`` returns P(fake) ``(B,)`` or class probabilities ``(B, C)``.
- Data order is a function of ``(seed, epoch)`` only (``DistributedSampler`` seeded with ``seed + epoch``), and a
  checkpoint holds every RNG state, so a run killed mid-epoch and resumed from its last checkpoint ends with the same
  weights and history as an uninterrupted run (bit for bit on CPU with a fixed thread count).
- Multi-GPU: launch the script with ``torchrun`` and call ``torch.distributed.init_process_group`` first; ``fit``
  then wraps the model in DDP and shards the data. We use plain DDP rather than Accelerate because ``prepare()``
  replaces the sampler, which would hide the (seed, epoch) data-order contract.

Example (UnivFD's linear probe on cached CLIP features)::

    probe = nn.Linear(768, 1)
    cfg = train.TrainConfig(epochs=100, batch_size=256, lr=1e-4, monitor="val_acc", patience=5, min_delta=1e-3,
                            lr_drops=2, restore_best=True, seed=SEED)
    history = train.fit(probe, (X_train, y_train), val=(X_val, y_val), config=cfg,
                        ckpt_dir=paths.cache_dir("runs", "univfd_probe"))
    scores = train.predict(probe, X_test)          # (N,) P(fake)
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, TensorDataset

from dfbook import runtime

CHECKPOINT_NAME = "last.pt"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that changes the numbers of a training run (stored in every checkpoint).

    Optimiser: ``optimizer`` in ``adamw | adam | sgd`` with ``lr``, ``weight_decay``, ``betas`` (Adam*),
    ``momentum`` (SGD). Schedule: ``scheduler`` in ``constant | cosine | step`` stepped per ``interval``
    (``epoch | step`` = optimiser step); cosine anneals to ``min_lr`` over the run, step multiplies by ``gamma``
    every ``step_size`` intervals.

    Early stopping (needs validation data): after ``patience`` validations without an improvement of at least
    ``min_delta`` on ``monitor`` (``val_<metric>`` maximised, ``*loss`` minimised) the lr is multiplied by
    ``drop_factor`` if fewer than ``lr_drops`` drops happened, else training stops. After a drop the patience
    reference restarts, as in CNNDetection's ``train.py`` (a new ``EarlyStopping`` per lr; CNNDetection@1f9a3263
    ``earlystop.py``: improvement iff ``score >= best + 0.001``).
    UnivFD's recipe (methods_univfd_hierarchical.md §A4: AdamW lr 1e-4, wd 0, patience 5 on val accuracy, delta
    0.001, ``adjust_learning_rate`` divides by 10 and stops once lr < 1e-6) is ``TrainConfig(lr=1e-4,
    monitor="val_acc", patience=5, min_delta=1e-3, lr_drops=2)``: 1e-4 -> 1e-5 -> 1e-6, and the third trigger
    (1e-7 < 1e-6) stops, i.e. the "three drops" of the write-up. Upstream then uses delta 0.002 after a drop; we keep
    one ``min_delta``.
    ``restore_best`` loads the best validated weights at the end.

    ``ema_decay`` keeps an EMA of the weights with torch-ema's warm-up ``min(decay, (1+n)/(10+n))`` at optimiser
    step n (DeepFakeDefenders: decay 0.995); validation then scores the EMA weights, and the EMA weights are copied
    into the model at the end, because the EMA is what that method infers with.

    ``batch_size`` is per process; it is ignored when the training data is already a DataLoader.
    ``channels_last`` trains a convolutional model in channels-last memory format (oneDNN's and cuDNN's faster
    NHWC kernels); the model comes back in the default format, so saving and loading are unchanged.
    ``amp`` is autocast on CUDA (bfloat16 where supported, else float16 + GradScaler; :func:`dfbook.runtime.autocast`)
    and a no-op on CPU and in the ``mini`` profile, which runs fp32.
    """

    epochs: int
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    scheduler: str = "constant"
    interval: str = "epoch"
    step_size: int = 1
    gamma: float = 0.1
    min_lr: float = 0.0
    clip_grad_norm: float | None = None
    accum_steps: int = 1
    amp: bool = True
    ema_decay: float | None = None
    monitor: str = "val_loss"
    patience: int | None = None
    min_delta: float = 0.0
    lr_drops: int = 0
    drop_factor: float = 0.1
    restore_best: bool = False
    ckpt_every: int = 1
    seed: int = 0
    shuffle: bool = True
    drop_last: bool = False
    num_workers: int = 0
    channels_last: bool = False

    def __post_init__(self):
        choices = {
            "optimizer": ("adamw", "adam", "sgd"),
            "scheduler": ("constant", "cosine", "step"),
            "interval": ("epoch", "step"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}; expected one of {allowed}")
        for name in ("epochs", "batch_size", "accum_steps", "ckpt_every", "step_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr_drops and self.scheduler != "constant":
            raise ValueError(
                "TrainConfig: lr_drops (plateau lr drops) needs scheduler='constant'; a cosine/step schedule "
                "would overwrite the dropped lr. Use one or the other."
            )
        if self.lr_drops and self.patience is None:
            raise ValueError("TrainConfig: lr_drops needs patience (drops happen when patience runs out)")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay must be in (0, 1), got {self.ema_decay}")

    @property
    def monitor_mode(self) -> str:
        return "min" if self.monitor.endswith("loss") else "max"


# --------------------------------------------------------------------------- defaults for (inputs, labels) batches


def _inputs(batch):
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)):
        return batch[0]
    raise TypeError(
        f"default scoring/loss expects batches (inputs, labels, ...); got {type(batch).__name__}. "
        "Pass score_fn= / loss_fn= that know your batch layout."
    )


def _labels(batch) -> torch.Tensor:
    if isinstance(batch, dict) and "label" in batch:
        return batch["label"]
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[1]
    raise TypeError(
        "validation needs labels: batches must be (inputs, labels, ...) or dicts with a 'label' key; "
        f"got {type(batch).__name__}"
    )


def _logits(model: nn.Module, batch) -> torch.Tensor:
    out = model(_inputs(batch))
    return out[0] if isinstance(out, (tuple, list)) else out  # e.g. DeepFakeDefenders experts: (logits, feat)


def classification_loss(model: nn.Module, batch) -> torch.Tensor:
    """Default loss. One logit per sample ``(B,)``/``(B, 1)`` -> BCE-with-logits on labels in {0, 1};
    ``(B, C)`` logits -> cross-entropy on class ids."""
    logits, y = _logits(model, batch), _labels(batch)
    if logits.ndim == 1 or logits.shape[1] == 1:
        return nn.functional.binary_cross_entropy_with_logits(logits.reshape(-1), y.to(logits.dtype))
    return nn.functional.cross_entropy(logits, y.long())


def probabilities(model: nn.Module, batch) -> torch.Tensor:
    """Default score. One logit -> sigmoid ``(B,)``; two logits -> softmax[:, 1] = P(fake) ``(B,)``;
    ``C > 2`` logits -> softmax ``(B, C)``. All in [0, 1]."""
    logits = _logits(model, batch).float()
    if logits.ndim == 1 or logits.shape[1] == 1:
        return torch.sigmoid(logits.reshape(-1))
    probs = torch.softmax(logits, dim=1)
    return probs[:, 1] if probs.shape[1] == 2 else probs


def default_metrics(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """``acc`` (P(fake) > 0.5, as UnivFD's validate.py, or argmax) and, for binary scores with both classes, ``auc``."""
    from sklearn.metrics import roc_auc_score

    if s.ndim == 2:
        return {"acc": float(np.mean(s.argmax(1) == y))}
    out = {"acc": float(np.mean((s > 0.5) == (y == 1)))}
    out["auc"] = float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else float("nan")
    return out


# --------------------------------------------------------------------------- data


def _dist() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _as_dataset(data) -> Dataset:
    if isinstance(data, Dataset):
        return data
    arrays = data if isinstance(data, (tuple, list)) else (data,)
    tensors = [torch.as_tensor(a) for a in arrays]
    if any(len(t) != len(tensors[0]) for t in tensors):
        raise ValueError(f"arrays of different lengths {[len(t) for t in tensors]}; expected (inputs, labels, ...)")
    return TensorDataset(*tensors)


def make_loader(data, batch_size: int, *, shuffle: bool, seed: int = 0, drop_last: bool = False,
                num_workers: int = 0) -> DataLoader:
    """A DataLoader whose order depends only on ``(seed, epoch)``: call ``loader.sampler.set_epoch(epoch)``.

    ``data``: a Dataset, an array/tensor ``X`` or a tuple ``(X, y, ...)`` of equal-length arrays. Under
    torch.distributed the sampler shards the data by rank; ``DistributedSampler`` pads the shards to equal length
    by repeating up to ``world - 1`` samples, so every rank takes the same number of steps.
    """
    rank, world = _dist()
    ds = _as_dataset(data)
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available())


def _train_loader(data, cfg: TrainConfig) -> DataLoader:
    if not isinstance(data, DataLoader):
        return make_loader(data, cfg.batch_size, shuffle=cfg.shuffle, seed=cfg.seed, drop_last=cfg.drop_last,
                           num_workers=cfg.num_workers)
    if _dist()[1] > 1 and not isinstance(data.sampler, DistributedSampler):
        raise ValueError(
            "fit under torch.distributed got a DataLoader without a DistributedSampler, so every rank would see "
            "all the data. Pass the Dataset instead (fit shards it), or build the loader with make_loader()."
        )
    return data


def _eval_loader(data, batch_size: int) -> DataLoader:
    """In order, no padding; under torch.distributed each rank takes every world-th sample."""
    rank, world = _dist()
    if isinstance(data, DataLoader):
        if world == 1:
            return data
        ds, batch_size, collate, workers = data.dataset, data.batch_size, data.collate_fn, data.num_workers
    else:
        ds, collate, workers = _as_dataset(data), None, 0
    if world > 1:
        ds = Subset(ds, range(rank, len(ds), world))
    return DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=workers,
                      pin_memory=torch.cuda.is_available())


def _to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------- scoring


@torch.no_grad()
def _collect(model, loader, device, score_fn, loss_fn=None, progress=False, desc="predict"):
    """Scores, labels (or None) and summed named losses over ``loader``, model in eval mode."""
    was_training = model.training
    model.eval()
    scores, labels, loss_sums, n_batches = [], [], {}, 0
    try:
        for batch in runtime.bar(loader, desc=desc, progress=progress, leave=False):
            batch = _to_device(batch, device)
            scores.append(score_fn(model, batch).float().cpu())
            if loss_fn is not None:
                labels.append(_labels(batch).cpu())
                for k, v in _loss_dict(loss_fn(model, batch)).items():
                    loss_sums[k] = loss_sums.get(k, 0.0) + float(v)
                n_batches += 1
    finally:
        model.train(was_training)
    s = torch.cat(scores).numpy() if scores else np.zeros(0, np.float32)
    y = torch.cat(labels).numpy() if labels else None
    return s, y, loss_sums, n_batches


def predict(model: nn.Module, data, *, batch_size: int = 256, score_fn: Callable = probabilities,
            device=None, progress: bool = False) -> np.ndarray:
    """Scores for every sample of ``data``, in order: ``(N,)`` P(fake) in [0, 1] (or ``(N, C)`` probabilities).

    ``data``: an array/tensor ``X``, a tuple ``(X, y, ...)``, a Dataset or a DataLoader (must not shuffle).
    Runs in eval mode under ``no_grad`` and restores the model's train/eval mode. Single process only.
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model = _unwrap(model).to(dev)
    if not isinstance(data, DataLoader):
        data = DataLoader(_as_dataset(data), batch_size=batch_size, shuffle=False)
    return _collect(model, data, dev, score_fn, progress=progress)[0]


# --------------------------------------------------------------------------- optimisation pieces


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``params``: an iterable of tensors or of param-group dicts (torch semantics)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """None for ``constant``; a torch LR scheduler stepped once per ``cfg.interval`` otherwise."""
    if cfg.scheduler == "constant":
        return None
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    total = cfg.epochs * (steps_per_epoch if cfg.interval == "step" else 1)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=cfg.min_lr)


def _make_ema(model: nn.Module, decay: float):
    from timm.utils import ModelEmaV3

    class TorchEmaWarmup(ModelEmaV3):
        # torch-ema 0.3's warm-up, which DeepFakeDefenders trained with (n = number of updates so far, from 1);
        # timm's own warm-up is the 1 - (1 + n/gamma)^-power curve.
        def get_decay(self, step=None):
            return self.decay if step is None else min(self.decay, (1 + step) / (10 + step))

    # torch-ema averages parameters only; BatchNorm's running statistics stay the live model's. timm averages
    # buffers too unless told not to (then it copies them), which would change what the EMA weights infer with.
    return TorchEmaWarmup(model, decay=decay, exclude_buffers=True)


def _loss_dict(out) -> dict[str, torch.Tensor]:
    losses = out if isinstance(out, dict) else {"loss": out}
    if "loss" not in losses:
        raise ValueError(f"loss_fn returned a dict without a 'loss' entry (keys {sorted(losses)}); put the total "
                         "to back-propagate under 'loss'.")
    bad = [k for k, v in losses.items() if not (isinstance(v, torch.Tensor) and v.numel() == 1)]
    if bad:
        raise ValueError(f"loss_fn must return scalar tensors; entries {bad} are not")
    return losses


class _Stopper:
    """Patience counter for early stopping and plateau lr drops. Hand-written because torch's ReduceLROnPlateau
    neither stops training nor restarts its reference after a drop (CNNDetection/UnivFD do both)."""

    def __init__(self, cfg: TrainConfig):
        self.cfg, self.ref, self.bad, self.drops = cfg, None, 0, 0

    def improved(self, value: float, ref: float | None) -> bool:
        if math.isnan(value):
            return False
        if ref is None:
            return True
        d = self.cfg.min_delta
        return value >= ref + d if self.cfg.monitor_mode == "max" else value <= ref - d

    def step(self, value: float, optimizer) -> bool:
        """Record one validation; return True when training must stop."""
        if self.improved(value, self.ref):
            self.ref, self.bad = value, 0
            return False
        self.bad += 1
        if self.cfg.patience is None or self.bad < self.cfg.patience:
            return False
        if self.drops >= self.cfg.lr_drops:
            return True
        self.drops, self.ref, self.bad = self.drops + 1, None, 0
        for group in optimizer.param_groups:
            group["lr"] *= self.cfg.drop_factor
        return False

    def state_dict(self) -> dict:
        return {"ref": self.ref, "bad": self.bad, "drops": self.drops}

    def load_state_dict(self, state: dict) -> None:
        self.ref, self.bad, self.drops = state["ref"], state["bad"], state["drops"]


# --------------------------------------------------------------------------- checkpoints


def _rng_state() -> dict:
    # numpy's key array stored as a tensor so the checkpoint loads with torch.load(weights_only=True)
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos,
                                                   has_gauss, gauss), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: a reader never sees half a checkpoint.
    Partial files of earlier writes killed mid-way (``<name>*.partial``; one writer per checkpoint) go first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f"{glob.escape(path.name)}*.partial"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_checkpoint(path: Path, cfg: TrainConfig, world: int) -> dict:
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read checkpoint {path} ({err}); delete it to start afresh, or pass "
                         "resume=False") from err
    saved = ck["config"]
    diff = {k: (saved.get(k), v) for k, v in dataclasses.asdict(cfg).items() if saved.get(k) != v}
    if diff or ck["world"] != world:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        if ck["world"] != world:
            detail += f"{', ' if detail else ''}processes: checkpoint {ck['world']} vs now {world}"
        raise ValueError(
            f"checkpoint {path} was written by a different training setup ({detail}). Resume with the same "
            "settings, or start afresh with resume=False or another ckpt_dir."
        )
    return ck


def _gather(obj, world: int) -> list:
    if world == 1:
        return [obj]
    out = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


# --------------------------------------------------------------------------- the loop


def fit(
    model: nn.Module,
    train,
    *,
    config: TrainConfig,
    loss_fn: Callable = classification_loss,
    val=None,
    metrics: Callable[[np.ndarray, np.ndarray], dict] = default_metrics,
    score_fn: Callable = probabilities,
    param_groups: Callable[[nn.Module], list] | None = None,
    ckpt_dir: str | Path | None = None,
    resume: bool = True,
    log_dir: str | Path | None = None,
    progress: bool = True,
    callbacks: Sequence[Callable[[str, dict], None]] = (),
    device=None,
) -> pd.DataFrame:
    """Train ``model`` in place and return the history, one row per epoch.

    Args:
        train: a Dataset, array/tensor tuple ``(X, y, ...)`` (batched by ``config.batch_size``, order from
            ``(config.seed, epoch)``) or a DataLoader (used as is; ``set_epoch`` is called on its sampler if any).
        val: same kinds, or None. Validated after every epoch: ``val_<loss names>`` from ``loss_fn`` and
            ``val_<name>`` for each entry of ``metrics(labels, scores)``, scores from ``score_fn``.
        param_groups: ``model -> list of param-group dicts`` for per-group lr; default all trainable parameters.
        ckpt_dir: if set, ``<ckpt_dir>/last.pt`` is written atomically every ``config.ckpt_every`` epochs and at the
            end; with ``resume`` an existing one is loaded first (a finished run returns at once). Under
            torch.distributed every rank must see the same folder.
        log_dir: TensorBoard folder (scalars per optimiser step and per epoch, on the optimiser-step axis).
        callbacks: ``fn(event, info)`` with event ``"step"`` (after each optimiser step; info has epoch, step,
            batch, losses) or ``"epoch"`` (after the epoch's checkpoint; info is the history row).
        device: default cuda if available (``cuda:$LOCAL_RANK`` under torchrun), else cpu.

    Returns:
        DataFrame with columns ``epoch, lr`` (in force at the epoch's start, first param group),
        ``train_<loss names>`` (means over the epoch's batches and processes), ``val_<...>``, ``seconds``, and
        ``best`` (the epoch with the best ``config.monitor``) when validating.
    """
    loop = _Loop(model, train, config, loss_fn, val, metrics, score_fn, param_groups, device)
    ckpt = Path(ckpt_dir) / CHECKPOINT_NAME if ckpt_dir is not None else None
    if resume and ckpt is not None and ckpt.is_file():
        loop.restore(ckpt)
    else:
        runtime.set_seed(config.seed + loop.rank)
    writer = None
    if log_dir is not None and loop.rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops the events an interrupted run logged after its last checkpoint
        writer = SummaryWriter(str(log_dir), purge_step=loop.st["step"] + 1 if loop.st["step"] else None)
    try:
        while not loop.done:
            row = loop.run_epoch(progress, writer, callbacks)
            epoch = row["epoch"]
            if ckpt is not None and (epoch % config.ckpt_every == 0 or loop.done):
                loop.save(ckpt)
            for cb in callbacks:
                cb("epoch", row)
    finally:
        if writer is not None:
            writer.close()
    return loop.finish()


class _Loop:
    """The state of one ``fit`` call: model, optimiser, scheduler, scaler, EMA, stopper, counters and history.
    Everything in it goes into the checkpoint."""

    def __init__(self, model, train, cfg, loss_fn, val, metrics, score_fn, param_groups, device):
        self.rank, self.world = _dist()
        if val is None and (cfg.patience is not None or cfg.restore_best):
            raise ValueError("TrainConfig.patience / restore_best need validation data: pass val=")
        if device is None:
            device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu"
        self.dev = torch.device(device)
        self.cfg, self.loss_fn, self.metrics, self.score_fn = cfg, loss_fn, metrics, score_fn
        self.model = model.to(self.dev)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.amp = cfg.amp and runtime.mixed_precision(self.dev)
        self.amp_dtype = runtime.amp_dtype() if self.amp else torch.float32
        self.loader = _train_loader(train, cfg)
        if len(self.loader) == 0:
            raise ValueError("the training data yields no batch (empty, or fewer samples than batch_size with "
                             "drop_last=True)")
        self.val_loader = None if val is None else _eval_loader(val, cfg.batch_size)
        self.net = model
        if self.world > 1:
            ids = [self.dev] if self.dev.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        params = param_groups(model) if param_groups else [p for p in model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(params, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, math.ceil(len(self.loader) / cfg.accum_steps))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.ema = _make_ema(model, cfg.ema_decay) if cfg.ema_decay else None
        self.stopper = _Stopper(cfg)
        self.st = {"epoch": 0, "step": 0, "history": [], "best_value": None, "best_epoch": None, "stopped": False}
        self.best_state = None

    @property
    def done(self) -> bool:
        return self.st["stopped"] or self.st["epoch"] >= self.cfg.epochs

    @property
    def eval_model(self) -> nn.Module:
        """What validation scores and ``restore_best`` keeps: the EMA weights when there is an EMA."""
        return self.ema.module if self.ema is not None else self.model

    def _stateful(self) -> dict:
        return {"model": self.model, "optimizer": self.optimizer, "scaler": self.scaler, "stopper": self.stopper,
                "scheduler": self.scheduler, "ema": self.ema}

    def save(self, path: Path) -> None:
        rngs = _gather(_rng_state(), self.world)  # every rank's RNG, so each resumes its own stream
        if self.rank == 0:
            ck = {k: (obj.state_dict() if obj is not None else None) for k, obj in self._stateful().items()}
            ck.update(config=dataclasses.asdict(self.cfg), world=self.world, state=self.st,
                      best_state=self.best_state, rng=rngs)
            _atomic_save(ck, path)
        if self.world > 1:
            torch.distributed.barrier()

    def restore(self, path: Path) -> None:
        ck = _load_checkpoint(path, self.cfg, self.world)
        for key, obj in self._stateful().items():
            if obj is not None:
                obj.load_state_dict(ck[key])
        self.st, self.best_state = ck["state"], ck["best_state"]
        _set_rng_state(ck["rng"][self.rank])

    def run_epoch(self, progress: bool, writer, callbacks) -> dict:
        epoch, t0 = self.st["epoch"] + 1, time.perf_counter()
        row = {"epoch": epoch, "lr": float(self.optimizer.param_groups[0]["lr"])}
        row.update(self._train_epoch(epoch, progress, writer, callbacks))
        if self.val_loader is not None:
            row.update(_validate(self.eval_model, self.val_loader, self.dev, self.score_fn, self.loss_fn,
                                 self.metrics, self.world))
            self._track(row)
        if self.scheduler is not None and self.cfg.interval == "epoch":
            self.scheduler.step()
        row["seconds"] = time.perf_counter() - t0
        self.st["history"].append(row)
        self.st["epoch"] = epoch
        if writer is not None:
            for k, v in row.items():
                if k != "epoch":
                    writer.add_scalar(f"epoch/{k}", v, self.st["step"])
        return row

    def _train_epoch(self, epoch: int, progress: bool, writer, callbacks) -> dict[str, float]:
        cfg, opt = self.cfg, self.optimizer
        if hasattr(self.loader.sampler, "set_epoch"):
            self.loader.sampler.set_epoch(epoch)
        self.net.train()
        sums, n_batches = {}, len(self.loader)
        bar = runtime.bar(self.loader, desc=f"epoch {epoch}/{cfg.epochs}", progress=progress and self.rank == 0,
                          leave=False)
        for i, batch in enumerate(bar):
            batch = _to_device(batch, self.dev)
            # accumulation group of this batch; the last group of an epoch may be shorter
            group_start = i - i % cfg.accum_steps
            group_size = min(cfg.accum_steps, n_batches - group_start)
            last = i == group_start + group_size - 1
            with self.net.no_sync() if self.world > 1 and not last else nullcontext():
                with torch.autocast("cuda", dtype=self.amp_dtype, enabled=self.amp):
                    losses = _loss_dict(self.loss_fn(self.net, batch))
                if not torch.isfinite(losses["loss"]):
                    raise FloatingPointError(
                        f"loss is {float(losses['loss'].detach())} at epoch {epoch}, batch {i}: lower the lr, set "
                        "clip_grad_norm, or check the inputs for NaN/inf")
                self.scaler.scale(losses["loss"] / group_size).backward()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float()
            if not last:
                continue
            if cfg.clip_grad_norm is not None:
                self.scaler.unscale_(opt)
                nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], cfg.clip_grad_norm)
            self.scaler.step(opt)
            self.scaler.update()
            opt.zero_grad(set_to_none=True)
            self.st["step"] += 1
            if self.ema is not None:
                self.ema.update(self.model, step=self.st["step"])
            if self.scheduler is not None and cfg.interval == "step":
                self.scheduler.step()
            step_losses = {k: float(v.detach()) for k, v in losses.items()}
            bar.set_postfix(loss=f"{step_losses['loss']:.4f}")
            if writer is not None:
                for k, v in step_losses.items():
                    writer.add_scalar(f"step/train_{k}", v, self.st["step"])
                writer.add_scalar("step/lr", opt.param_groups[0]["lr"], self.st["step"])
            for cb in callbacks:
                cb("step", {"epoch": epoch, "step": self.st["step"], "batch": i, "losses": step_losses})
        means = torch.stack([v / n_batches for v in sums.values()])
        if self.world > 1:
            torch.distributed.all_reduce(means)
            means /= self.world
        return {f"train_{k}": float(m) for k, m in zip(sums, means)}

    def _track(self, row: dict) -> None:
        """Early stopping / lr drops on ``cfg.monitor``, and the best epoch (kept for ``restore_best``)."""
        if self.cfg.monitor not in row:
            raise KeyError(f"TrainConfig.monitor={self.cfg.monitor!r} is not among the validation results "
                           f"{sorted(k for k in row if k.startswith('val_'))}")
        value = row[self.cfg.monitor]
        self.st["stopped"] = self.stopper.step(value, self.optimizer)
        if self.stopper.improved(value, self.st["best_value"]):
            self.st["best_value"], self.st["best_epoch"] = value, row["epoch"]
            if self.cfg.restore_best:
                self.best_state = {k: v.detach().to("cpu", copy=True)
                                   for k, v in self.eval_model.state_dict().items()}

    def finish(self) -> pd.DataFrame:
        """Bake the EMA weights in, restore the best weights if asked, return the history."""
        if self.ema is not None:
            self.model.load_state_dict(self.ema.module.state_dict())
        if self.cfg.restore_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        if self.cfg.channels_last:
            self.model.to(memory_format=torch.contiguous_format)
        history = pd.DataFrame(self.st["history"])
        if self.st["best_epoch"] is not None:
            history["best"] = history["epoch"] == self.st["best_epoch"]
        return history


def _validate(model, loader, device, score_fn, loss_fn, metrics, world) -> dict[str, float]:
    s, y, loss_sums, n = _collect(model, loader, device, score_fn, loss_fn, desc="validate")
    if world > 1:  # every rank scored a disjoint shard: pool them so all ranks take the same decision
        parts = _gather((s, y, loss_sums, n), world)
        s, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        n = sum(p[3] for p in parts)
        loss_sums = {k: sum(p[2][k] for p in parts) for k in loss_sums}
    out = {f"val_{k}": v / n for k, v in loss_sums.items()}
    out.update({f"val_{k}": float(v) for k, v in metrics(y, s).items()})
    return out
