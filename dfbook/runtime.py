"""Seeds, devices, threads, offline mode and progress bars: the few global settings a run depends on."""

from __future__ import annotations

import os
import random
from contextlib import contextmanager

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


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; on CPU this makes runs bit-identical for a fixed thread count."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


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
    """One call at the top of every chapter: offline mode, threads, seeds; returns the device."""
    offline()
    set_threads()
    set_seed(seed)
    return device(device_name)
