"""Two-process DDP run for tests/test_train.py, launched with
``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_ddp_worker.py OUT_DIR``.
Also holds the toy model/data both sides build, so the single-process reference is the same problem."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn


def toy_data(n: int = 64, d: int = 6, seed: int = 0):
    """(X (n, d) float32, y (n,) int64 in {0, 1}): labels from a noisy linear rule."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = ((x[:, 0] - 0.5 * x[:, 1] + 0.3 * torch.randn(n, generator=g)) > 0).long()
    return x, y


def toy_model(d: int = 6, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 1))


DDP_CONFIG = dict(epochs=3, optimizer="sgd", lr=0.1, scheduler="cosine", interval="step", clip_grad_norm=1.0,
                  ema_decay=0.9, seed=3)


def main(out: Path) -> None:
    from dfbook import train

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    x, y = toy_data()
    model = toy_model()
    history = train.fit(model, (x, y), val=(x[:40], y[:40]), config=train.TrainConfig(batch_size=4, **DDP_CONFIG),
                        ckpt_dir=out / "ckpt", progress=False)
    if rank == 0:
        torch.save(model.state_dict(), out / "ddp_model.pt")
        history.drop(columns="seconds").to_csv(out / "ddp_history.csv", index=False)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
