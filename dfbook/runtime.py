"""Seeds, devices, threads and offline mode: the few global settings a run depends on."""

from __future__ import annotations

import os
import random

import numpy as np


def offline() -> None:
    """Make Hugging Face lookups fail in milliseconds instead of retrying for ~46 s
    (tooling_facts §2). Respects a value the user already set."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if not os.environ.get(var):  # unset or empty: an empty value would leave offline mode off
            os.environ[var] = "1"


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
    """Intra-op threads for torch: ``n``, else ``$DFBOOK_THREADS`` (set by the runner when chapters
    run in parallel), else torch's default."""
    import torch

    n = n or int(os.environ.get("DFBOOK_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def setup(seed: int = 0, device_name: str = "auto"):
    """One call at the top of every chapter: offline mode, threads, seeds; returns the device."""
    offline()
    set_threads()
    set_seed(seed)
    return device(device_name)
