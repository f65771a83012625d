"""Tests for dfbook.train: exact resume, schedules, early stopping (UnivFD rule), EMA, accumulation, DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from _ddp_worker import DDP_CONFIG, toy_data, toy_model
from dfbook import train
from dfbook.train import TrainConfig


@pytest.fixture(autouse=True)
def _one_thread():
    # bit-identical CPU results need a fixed intra-op thread count
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Interrupt(Exception):
    pass


class NpyFiles(Dataset):
    """A dataset over files, as in the full profile: one .npy per sample."""

    def __init__(self, folder: Path, x, y):
        self.paths = []
        for i, row in enumerate(x.numpy()):
            np.save(folder / f"{i}.npy", row)
            self.paths.append(folder / f"{i}.npy")
        self.y = y

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return torch.from_numpy(np.load(self.paths[i])), self.y[i]


def _no_time(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns="seconds")


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("source", ["tensors", "file_loader"])
def test_resume_after_crash_mid_epoch_is_bit_identical(tmp_path, source):
    x, y = toy_data(n=48)
    if source == "tensors":
        data = (x, y)
    else:
        (tmp_path / "files").mkdir()
        data = DataLoader(NpyFiles(tmp_path / "files", x, y), batch_size=8, shuffle=True, num_workers=1)
    cfg = TrainConfig(epochs=4, batch_size=8, lr=3e-3, scheduler="cosine", interval="step", accum_steps=2,
                      clip_grad_norm=0.5, ema_decay=0.95, monitor="val_auc", restore_best=True, seed=7)
    run = dict(val=(x[:24], y[:24]), config=cfg, progress=False)

    model_a = toy_model(dropout=0.3)
    hist_a = train.fit(model_a, data, ckpt_dir=tmp_path / "a", **run)

    def crash(event, info):
        if event == "step" and info["epoch"] == 3 and info["batch"] == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        train.fit(toy_model(dropout=0.3), data, ckpt_dir=tmp_path / "b", callbacks=[crash],
                  log_dir=tmp_path / "tb", **run)
    torch.manual_seed(12345)  # disturb the global RNG: resume must restore it from the checkpoint
    model_b = toy_model(dropout=0.3, seed=99)  # different init: weights must come from the checkpoint
    hist_b = train.fit(model_b, data, ckpt_dir=tmp_path / "b", log_dir=tmp_path / "tb", **run)

    assert _same_weights(model_a, model_b)
    pd.testing.assert_frame_equal(_no_time(hist_a), _no_time(hist_b))
    assert list(hist_a["epoch"]) == [1, 2, 3, 4] and hist_a["best"].sum() == 1
    assert {"train_loss", "val_loss", "val_acc", "val_auc", "lr"} <= set(hist_a.columns)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert not list((tmp_path / "b").glob("*.partial"))
    # a finished checkpoint returns the same result without training again
    model_c = toy_model(dropout=0.3, seed=5)
    hist_c = train.fit(model_c, data, ckpt_dir=tmp_path / "b", **run)
    assert _same_weights(model_a, model_c)
    pd.testing.assert_frame_equal(_no_time(hist_a), _no_time(hist_c))


def test_same_seed_same_numbers_other_seed_differs():
    x, y = toy_data()
    runs = []
    for seed in (1, 1, 2):
        model = toy_model(dropout=0.2)
        train.fit(model, (x, y), config=TrainConfig(epochs=2, batch_size=8, seed=seed), progress=False)
        runs.append(model)
    assert _same_weights(runs[0], runs[1])
    assert not _same_weights(runs[0], runs[2])


def test_channels_last_trains_the_same_model_and_returns_it_in_the_default_format():
    torch.manual_seed(0)
    x, y = torch.randn(32, 3, 12, 12), (torch.rand(32) > 0.5).float()
    runs = {}
    for cl in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(8, 1), nn.Flatten(0))
        seen = []
        model[0].register_forward_hook(lambda m, i, o: seen.append(m.weight.is_contiguous(
            memory_format=torch.channels_last) and not m.weight.is_contiguous()))
        train.fit(model, (x, y), config=TrainConfig(epochs=2, batch_size=8, optimizer="sgd", lr=0.1, channels_last=cl),
                  progress=False)
        assert any(seen) == cl                       # the conv really ran channels-last, and only when asked
        assert all(p.is_contiguous() for p in model.parameters())   # handed back in the default format
        runs[cl] = model
    for a, b in zip(runs[False].state_dict().values(), runs[True].state_dict().values()):
        # same math (SGD: rounding is not amplified as by Adam)
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-4, atol=1e-5)


def _flat(values):
    """A metrics function returning a fixed sequence of validation scores, one per epoch."""
    it = iter(values)
    return lambda y, s: {"score": next(it)}


def test_univfd_rule_patience_5_lr_drops_then_stop():
    # UnivFD/CNNDetection: no improvement for 5 epochs -> lr/10, restart; stop when lr would fall below 1e-6
    x, y = toy_data(n=16)
    cfg = TrainConfig(epochs=100, batch_size=16, lr=1e-4, monitor="val_score", patience=5, min_delta=1e-3,
                      lr_drops=2)
    hist = train.fit(toy_model(), (x, y), val=(x, y), metrics=_flat([0.5] * 100), config=cfg, progress=False)
    assert len(hist) == 18  # 3 phases x (1 reference + 5 bad epochs)
    np.testing.assert_allclose(hist["lr"], [1e-4] * 6 + [1e-5] * 6 + [1e-6] * 6)


def test_improvement_below_min_delta_does_not_reset_patience():
    x, y = toy_data(n=16)
    cfg = TrainConfig(epochs=10, batch_size=16, monitor="val_score", patience=2, min_delta=0.01)
    values = [0.5, 0.505, 0.509, 0.8, 0.8, 0.8]
    hist = train.fit(toy_model(), (x, y), val=(x, y), metrics=_flat(values), config=cfg, progress=False)
    assert len(hist) == 3  # 0.505 and 0.509 are within min_delta of 0.5
    assert hist["best"].tolist() == [True, False, False]


def test_restore_best_loads_weights_of_best_epoch():
    x, y = toy_data()
    snapshots = {}
    model = toy_model()

    def snap(event, info):
        if event == "epoch":
            snapshots[info["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    cfg = TrainConfig(epochs=4, batch_size=8, lr=0.05, monitor="val_score", restore_best=True)
    hist = train.fit(model, (x, y), val=(x, y), metrics=_flat([0.2, 0.9, 0.4, 0.7]), config=cfg,
                     callbacks=[snap], progress=False)
    assert hist["best"].tolist() == [False, True, False, False]
    assert all(torch.equal(v, snapshots[2][k]) for k, v in model.state_dict().items())
    assert not torch.equal(snapshots[2]["0.weight"], snapshots[4]["0.weight"])


def test_schedules_per_epoch():
    x, y = toy_data(n=16)
    run = dict(progress=True)  # also exercises the tqdm path
    step = train.fit(toy_model(), (x, y), config=TrainConfig(epochs=5, batch_size=8, lr=1.0, scheduler="step",
                                                                 step_size=2, gamma=0.5), **run)
    np.testing.assert_allclose(step["lr"], [1, 1, 0.5, 0.5, 0.25])
    cos = train.fit(toy_model(), (x, y), config=TrainConfig(epochs=4, batch_size=8, lr=1.0, scheduler="cosine",
                                                                min_lr=0.1), **run)
    expected = 0.1 + 0.9 * (1 + np.cos(np.pi * np.arange(4) / 4)) / 2
    np.testing.assert_allclose(cos["lr"], expected, rtol=1e-6)


def test_gradient_accumulation_matches_large_batch():
    x, y = toy_data()
    models = []
    for batch, accum in ((16, 1), (8, 2), (4, 4)):
        model = toy_model()
        train.fit(model, (x, y), config=TrainConfig(epochs=2, batch_size=batch, accum_steps=accum, optimizer="sgd",
                                                    lr=0.1), progress=False)
        models.append(model)
    for other in models[1:]:
        for p, q in zip(models[0].parameters(), other.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_ema_follows_torch_ema_warmup():
    x, y = toy_data(n=32)
    model = toy_model()
    shadow = [p.detach().clone() for p in model.parameters()]
    decay = 0.9

    def follow(event, info):
        if event == "step":  # torch-ema 0.3: shadow -= (1 - d) * (shadow - param), d = min(decay, (1+n)/(10+n))
            d = min(decay, (1 + info["step"]) / (10 + info["step"]))
            for s, p in zip(shadow, model.parameters()):
                s.sub_((1 - d) * (s - p.detach()))

    train.fit(model, (x, y), config=TrainConfig(epochs=2, batch_size=4, lr=0.05, ema_decay=decay),
              callbacks=[follow], progress=False)
    for s, p in zip(shadow, model.parameters()):  # EMA weights are baked into the model at the end
        torch.testing.assert_close(p, s, rtol=1e-5, atol=1e-6)


def test_ema_averages_parameters_not_batchnorm_statistics():
    """As torch-ema: BatchNorm's running statistics stay the live model's, only the parameters are averaged."""
    x, y = toy_data(n=32)

    def bn_model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))

    cfg = dict(epochs=2, batch_size=8, lr=0.05, seed=0)
    plain, averaged = bn_model(), bn_model()
    train.fit(plain, (x, y), config=TrainConfig(**cfg), progress=False)
    train.fit(averaged, (x, y), config=TrainConfig(**cfg, ema_decay=0.9), progress=False)
    bn_plain, bn_avg = plain[1], averaged[1]
    torch.testing.assert_close(bn_avg.running_mean, bn_plain.running_mean)  # the EMA does not change training
    torch.testing.assert_close(bn_avg.running_var, bn_plain.running_var)
    assert not torch.allclose(averaged[0].weight, plain[0].weight)          # the parameters are averaged


def test_loss_dict_is_logged_and_bad_losses_fail_clearly():
    x, y = toy_data(n=16)
    cfg = TrainConfig(epochs=1, batch_size=8)

    def two_terms(model, batch):
        ce = train.classification_loss(model, batch)
        reg = sum((p ** 2).sum() for p in model.parameters()) * 1e-3
        return {"loss": ce + reg, "ce": ce, "reg": reg}

    hist = train.fit(toy_model(), (x, y), val=(x, y), loss_fn=two_terms, config=cfg, progress=False)
    row = hist.iloc[0]
    assert row["train_loss"] == pytest.approx(row["train_ce"] + row["train_reg"], rel=1e-5)
    assert {"val_ce", "val_reg"} <= set(hist.columns)
    with pytest.raises(ValueError, match="'loss'"):
        train.fit(toy_model(), (x, y), loss_fn=lambda m, b: {"ce": two_terms(m, b)["ce"]}, config=cfg,
                  progress=False)
    with pytest.raises(FloatingPointError, match="epoch 1, batch 0"):
        train.fit(toy_model(), (x, y), loss_fn=lambda m, b: two_terms(m, b)["ce"] * float("nan"), config=cfg,
                  progress=False)
    with pytest.raises(KeyError, match="val_nope"):
        train.fit(toy_model(), (x, y), val=(x, y), config=TrainConfig(epochs=1, monitor="val_nope", patience=1),
                  progress=False)


def test_resume_with_other_settings_is_refused(tmp_path):
    x, y = toy_data(n=16)
    train.fit(toy_model(), (x, y), config=TrainConfig(epochs=1, lr=1e-3), ckpt_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"lr: checkpoint 0.001 vs now 0.01"):
        train.fit(toy_model(), (x, y), config=TrainConfig(epochs=1, lr=1e-2), ckpt_dir=tmp_path, progress=False)


def test_partials_of_killed_checkpoint_writes_are_removed(tmp_path):
    x, y = toy_data(n=16)
    for i in range(3):  # what SIGKILL during torch.save leaves behind (tempfile.mkstemp names)
        (tmp_path / f"last.pt{i}abc.partial").write_bytes(b"x" * 1000)
    (tmp_path / "other.pt1.partial").write_bytes(b"x")  # not this checkpoint's
    train.fit(toy_model(), (x, y), config=TrainConfig(epochs=1, lr=1e-3), ckpt_dir=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "other.pt1.partial"]


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(epochs=1, optimizer="lamb")
    with pytest.raises(ValueError, match="lr_drops"):
        TrainConfig(epochs=1, scheduler="cosine", lr_drops=1)


def test_predict_scores_and_mode():
    x = torch.randn(10, 6)
    for out, shape in ((1, (10,)), (2, (10,)), (3, (10, 3))):
        model = nn.Sequential(nn.Linear(6, out), nn.Dropout(0.5)).train()
        s = train.predict(model, x.numpy(), batch_size=4)
        assert s.shape == shape and s.min() >= 0 and s.max() <= 1
        assert model.training  # mode restored
    model = nn.Linear(6, 2)
    expected = torch.softmax(model(x), 1)[:, 1].detach().numpy()
    np.testing.assert_allclose(train.predict(model, (x, torch.zeros(10))), expected, rtol=1e-6)


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_single_process(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    worker = Path(__file__).with_name("_ddp_worker.py")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker),
         str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]

    x, y = toy_data()
    model = toy_model()
    hist = train.fit(model, (x, y), val=(x[:40], y[:40]), config=TrainConfig(batch_size=8, **DDP_CONFIG),
                     progress=False)
    ddp_state = torch.load(tmp_path / "ddp_model.pt", weights_only=True)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(ddp_state[k], v, rtol=1e-5, atol=1e-6)
    ddp_hist = pd.read_csv(tmp_path / "ddp_history.csv")
    pd.testing.assert_frame_equal(ddp_hist, _no_time(hist), check_dtype=False, rtol=1e-5)
    ckpt = torch.load(tmp_path / "ckpt" / train.CHECKPOINT_NAME, weights_only=True)
    assert ckpt["world"] == 2 and len(ckpt["rng"]) == 2


def test_data_order_depends_only_on_seed_and_epoch():
    def order(seed, epoch):
        loader = train.make_loader(torch.arange(20), 5, shuffle=True, seed=seed)
        loader.sampler.set_epoch(epoch)
        torch.manual_seed(epoch * 17)  # the global RNG must not matter
        return torch.cat([b[0] for b in loader]).tolist()

    assert order(0, 1) == order(0, 1)
    assert sorted(order(0, 1)) == list(range(20))
    assert order(0, 1) != order(0, 2) and order(0, 1) != order(3, 1)


def test_unreadable_checkpoint_names_the_file(tmp_path):
    (tmp_path / train.CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    x, y = toy_data(n=16)
    with pytest.raises(ValueError, match="cannot read checkpoint .*last.pt"):
        train.fit(toy_model(), (x, y), config=TrainConfig(epochs=1), ckpt_dir=tmp_path, progress=False)
