"""Seeds, devices, threads, offline mode and progress bars: the few global settings a run depends on."""

from __future__ import annotations

import os
import random
from contextlib import contextmanager, nullcontext

import numpy as np


def offline() -> None:
    """Make Hugging Face lookups fail in milliseconds instead of retrying for ~46 s
    (tooling_facts §2). Respects a value the user already set."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if not os.environ.get(var):  # unset or empty: an empty value would leave offline mode off
            os.environ[var] = "1"


def bar(iterable=None, *, progress: bool = True, **kw):
    """A tqdm progress bar, off when ``progress`` is False. When it is True the bar keeps tqdm's own
    default for ``disable``, so the ``TQDM_DISABLE=1`` that headless runs set (``dfbook.runner``) still
    turns it off: passing ``disable=False`` would override that."""
    from tqdm.auto import tqdm

    return tqdm(iterable, **kw) if progress else tqdm(iterable, disable=True, **kw)


# The profile of the chapter running in this process and its DETERMINISTIC parameter, set by
# dfbook.report.start: ``mini`` runs fp32 and deterministic (its numbers are checked bit for bit); ``full`` runs
# with autocast on the GPU and cudnn.benchmark on, unless DETERMINISTIC asks otherwise. Outside a chapter
# (library use, tests) the profile is None: mixed precision as dfbook.train has always done it, deterministic.
_POLICY: dict = {"profile": None, "deterministic": None}


def configure(profile: str | None = None, deterministic: bool | None = None) -> None:
    """Set the run's profile and its DETERMINISTIC parameter (``None``: the profile's default)."""
    _POLICY.update(profile=profile, deterministic=deterministic)


def is_deterministic() -> bool:
    """Deterministic kernels (cudnn.benchmark off): everywhere but in ``full``, and there when DETERMINISTIC asks."""
    return _POLICY["profile"] != "full" or bool(_POLICY["deterministic"])


def mixed_precision(device) -> bool:
    """Autocast for training and feature extraction: on a CUDA device, except in ``mini`` (fp32)."""
    return getattr(device, "type", str(device).split(":")[0]) == "cuda" and _POLICY["profile"] != "mini"


def amp_dtype():
    """bfloat16 where the GPU supports it (no loss scaling needed), else float16."""
    import torch

    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16


def autocast(device):
    """``torch.autocast`` in :func:`amp_dtype` when :func:`mixed_precision` allows it, else a no-op."""
    import torch

    return torch.autocast("cuda", dtype=amp_dtype()) if mixed_precision(device) else nullcontext()


def set_seed(seed: int, deterministic: bool | None = None) -> None:
    """Seed python, numpy and torch; on CPU this makes runs bit-identical for a fixed thread count.
    ``deterministic`` (default: the run's policy, :func:`is_deterministic`) sets cudnn's flags."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    deterministic = is_deterministic() if deterministic is None else deterministic
    torch.backends.cudnn.deterministic = bool(deterministic)
    torch.backends.cudnn.benchmark = not deterministic  # autotuned kernels: faster, not bit-reproducible


def device(prefer: str = "auto"):
    """``auto`` -> cuda when available, else cpu."""
    import torch

    if prefer == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(prefer)


def set_threads(n: int | None = None) -> int:
    """Threads for torch and the BLAS/OpenMP pools: ``n``, else ``$DFBOOK_THREADS``, else 1.

    One thread is the default because CPU training is bit-identical only for a fixed thread count (the
    reduction order changes with it, and a few hundred SGD steps turn that into different numbers): with
    the default, a chapter gives the same numbers from ``dfbook run``, ``dfbook book --jobs N`` and
    JupyterLab. Parallelism comes from running chapters side by side (``--jobs``). A larger count is
    faster and gives numbers that differ within the run-to-run spread; the result record notes it."""
    import torch
    from threadpoolctl import threadpool_limits

    n = n or int(os.environ.get("DFBOOK_THREADS", "0") or 0) or 1
    torch.set_num_threads(n)
    threadpool_limits(n)
    return n


@contextmanager
def single_thread():
    """Run a block with one torch thread whatever the caller set: for cached artifacts (generated
    images, pretrained zoo weights) that every run must get bit-identical."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def setup(seed: int = 0, device_name: str = "auto"):
    """One call at the top of every chapter: offline mode, threads, seeds, determinism (:func:`is_deterministic`);
    returns the device."""
    offline()
    set_threads()
    set_seed(seed)
    return device(device_name)
