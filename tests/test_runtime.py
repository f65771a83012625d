import os
import subprocess
import sys

import torch

from dfbook import runtime


def test_threads_default_to_one_for_reproducible_numbers(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("DFBOOK_THREADS", raising=False)
        assert runtime.set_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("DFBOOK_THREADS", "2")
        assert runtime.set_threads() == 2 and torch.get_num_threads() == 2
        assert runtime.set_threads(1) == 1
    finally:
        torch.set_num_threads(before)


def test_single_thread_restores_the_callers_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with runtime.single_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_training_depends_on_thread_count_only_through_set_threads():
    """Same seed, same thread count -> bit-identical weights (the promise the default of one thread keeps)."""
    def train():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(2))
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        x, y = torch.randn(16, 3, 12, 12), torch.randint(0, 2, (16,))
        for _ in range(5):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    with runtime.single_thread():
        a, b = train(), train()
    assert torch.equal(a, b)


def test_progress_bar_follows_the_argument_and_headless_runs():
    # tqdm reads TQDM_* defaults when it is imported, so each case runs in a fresh interpreter
    code = "from dfbook import runtime; print(runtime.bar(range(3), progress=True).disable)"
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    headless = subprocess.run([sys.executable, "-c", code], env={**env, "TQDM_DISABLE": "1"},  # as dfbook.runner
                              capture_output=True, text=True, check=True)
    assert (shown.stdout.strip(), headless.stdout.strip()) == ("False", "True")
    assert runtime.bar(range(3), progress=False).disable
