import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from dfbook import train
from dfbook.methods import hierarchical as hier

TREE = hier.Tree(("g1", "g2"), ("d1", "d2"))


def _df():
    methods = ["real", "real", "g1", "g2", "d1", "d2", "ar"]
    fam = ["real", "real", "gan", "gan", "diffusion", "diffusion", "autoregressive"]
    return pd.DataFrame({"method": methods, "family": fam, "label": [0, 0, 1, 1, 1, 1, 1],
                         "identity": [f"i{k}" for k in range(7)], "split": ""})


def _nodes():
    return hier.Nodes({}, {name: cls for name, (_, cls) in TREE.tasks().items()}, {})


def test_tree_labels_levels_and_out_of_tree():
    lab = hier.tree_labels(_df(), TREE)
    assert lab["level1"].tolist() == ["real", "real", "fake", "fake", "fake", "fake", "fake"]
    assert lab["level2"].tolist() == ["", "", "gan", "gan", "diffusion", "diffusion", "autoregressive"]
    assert lab["leaf"].tolist()[:3] == ["real", "real", "g1"]
    assert lab["in_tree"].tolist() == [True] * 6 + [False]
    assert TREE.leaves == ("real", "g1", "g2", "d1", "d2")
    with pytest.raises(ValueError, match="disjoint"):
        hier.Tree(("a",), ("a",))


def test_tree_leaf_without_images_is_named_before_training():
    TREE.check(_df(), apart=["ar"])
    with pytest.raises(ValueError, match=r"GAN_LEAVES names generator\(s\) \['g9'\] with no image.*'ar', 'd1'"):
        hier.Tree(("g1", "g9"), ("d1", "d2")).check(_df())
    with pytest.raises(ValueError, match=r"APART names generator\(s\) \['adm'\]"):
        TREE.check(_df(), apart=["adm"])


def test_route_stops_at_level1_and_follows_the_branch():
    probs = {"level1": np.array([[0.9, 0.1], [0.2, 0.8], [0.2, 0.8]]),
             "level2": np.array([[0.1, 0.9], [0.9, 0.1], [0.3, 0.7]]),
             "level3_gan": np.array([[0.6, 0.4], [0.3, 0.7], [1.0, 0.0]]),
             "level3_dm": np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]),
             "flat": np.eye(5)[[0, 2, 1]]}
    r = hier.route(probs, _nodes())
    assert r["leaf"].tolist() == ["real", "g2", "d2"]
    assert r["level2"].tolist() == ["", "gan", "diffusion"]
    assert r["flat"].tolist() == ["real", "g2", "g1"]


def test_evaluate_counts_routing_errors_and_flat():
    df = _df().iloc[:6]
    lab = hier.tree_labels(df, TREE)
    truth = ["real", "real", "g1", "g2", "d1", "d2"]
    onehot = lambda idx, k: np.eye(k)[idx]
    probs = {"level1": onehot([0, 0, 1, 1, 1, 0], 2),          # last DM image wrongly called real
             "level2": onehot([0, 0, 0, 0, 1, 1], 2),
             "level3_gan": onehot([0, 0, 0, 1, 0, 0], 2),
             "level3_dm": onehot([0, 0, 0, 0, 0, 1], 2),
             "flat": onehot([TREE.leaves.index(t) for t in truth], 5)}
    ev = hier.evaluate(probs, _nodes(), lab, np.ones(6, bool))
    assert ev["metrics"]["end_to_end/acc"] == pytest.approx(5 / 6)
    assert ev["metrics"]["flat/acc"] == 1.0
    assert ev["metrics"]["level1/acc"] == pytest.approx(5 / 6)
    assert ev["metrics"]["level3_dm/acc"] == 1.0          # the node itself is right; routing lost the image
    assert ev["per_class"].loc["d2", "hierarchical"] == 0.0


@pytest.mark.slow  # builds two ResNets (timm import): ~3 s alone, 15 s on the loaded CI machine
def test_build_freezes_the_prefix_and_shares_it():
    net = hier.build("mini:resnet", 3, train_from="layer4", pretrained=False)
    assert all(not p.requires_grad for p in net.prefix.parameters())
    assert all(p.requires_grad for p in net.suffix.parameters())
    x = torch.rand(2, 3, 64, 64)
    assert net(x).shape == (2, 3)
    net.train()
    assert not net.prefix.training
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    f3 = hier.prefix_features(net.prefix, images, net.spec)
    head = hier.build("mini:resnet", 3, train_from="head", pretrained=False)
    direct = hier.prefix_features(head.prefix, images, net.spec)
    chained = hier.prefix_features(head.prefix, f3, start=len(net.prefix))
    assert torch.allclose(direct, chained, atol=1e-5)
    make = hier.suffix_factory(net, head="mlp")
    a, b = make(4), make(4)
    assert a(f3).shape == (2 + 1, 4) and a[0] is not b[0]          # independent copies of layer4
    assert torch.equal(a[0][0].conv1.weight, net.suffix[0][0].conv1.weight)  # ... of the same weights
    with pytest.raises(ValueError, match="train_from"):
        hier.build("mini:resnet", 2, train_from="layer9", pretrained=False)


@pytest.mark.slow  # 100 optimiser steps through dfbook.train.fit: ~3 s alone, ~30 s on the loaded CI machine
def test_train_eval_learns_a_separable_task():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 240)
    x = torch.from_numpy((rng.normal(size=(240, 8)) + 2.5 * y[:, None]).astype(np.float32))
    split = np.array(["train", "val", "test"])[np.arange(240) % 3]
    cfg = train.TrainConfig(epochs=20, batch_size=32, optimizer="adam", lr=0.05, monitor="val_bacc",
                            restore_best=True, amp=False)
    res, _ = hier.train_eval(x, y, split == "train", split == "val", {"test": split == "test"},
                             lambda k: nn.Sequential(nn.Linear(8, k)), 2, cfg)
    assert res["test"]["bacc"] > 0.9
    shuffled, _ = hier.train_eval(x, rng.permutation(y), split == "train", split == "val",
                                  {"test": split == "test"}, lambda k: nn.Sequential(nn.Linear(8, k)), 2, cfg)
    assert shuffled["test"]["bacc"] < 0.75


def test_format_conditions_and_reencode():
    lab = hier.tree_labels(_df(), TREE)
    fmt, q = hier.format_condition(lab, "confounded", seed=0)
    assert fmt.tolist() == ["jpg", "jpg", "jpg", "jpg", "png", "png", "jpg"]
    assert all(60 <= v <= 90 for v in q[:2]) and q[2] == 95 and q[4] == 0
    assert set(hier.format_condition(lab, "jpeg")[0]) == {"jpg"}
    with pytest.raises(ValueError, match="format condition"):
        hier.format_condition(lab, "webp")
    imgs = np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    out = hier.reencode(imgs, fmt, q)
    assert np.array_equal(out[4], imgs[4]) and not np.array_equal(out[0], imgs[0])


def test_perturb_no_op_levels_and_shapes():
    imgs = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    for kind, none, some in [("jpeg", 0, 50), ("resize", 1.0, 0.5), ("rotation", 0, 10)]:
        assert np.array_equal(hier.perturb(imgs, kind, none), imgs)
        out = hier.perturb(imgs, kind, some)
        assert out.shape == imgs.shape and out.dtype == np.uint8 and not np.array_equal(out, imgs)
    assert np.array_equal(hier.perturb(imgs, "rotation", 90), np.rot90(imgs, 1, axes=(1, 2)))
    with pytest.raises(ValueError, match="perturbation"):
        hier.perturb(imgs, "shear", 1)


def test_stratified_splits_per_class_and_keeps_existing():
    df = pd.DataFrame({"method": ["a"] * 100 + ["b"] * 20, "identity": [f"x{i}" for i in range(120)],
                       "split": [""] * 119 + ["val"]})
    s = hier.stratified_splits(df, seed=0)
    assert s.iloc[-1] == "val"
    assert (s[:100] == "train").sum() == 70 and (s[:100] == "test").sum() == 15
    assert set(s[100:119]) == {"train", "val", "test"}
    assert s.equals(hier.stratified_splits(df, seed=0))


def test_comparison_rows_select_paper_and_seed():
    rows, keys = hier.comparison_rows()
    assert set(rows["quantity"]) == set(keys)
    assert {"paper", "seed"} <= set(rows["source_kind"])


@pytest.fixture
def _png_set(write_pngs):
    return lambda folder, n=12, side=20: pd.DataFrame({"path": write_pngs(folder, n, side, seed=3, name="im{i:02d}.png")})


SPEC = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def _prefix():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())


def test_streamed_rows_give_the_in_memory_pixels_edits_and_subsets(tmp_path, _png_set):
    df = _png_set(tmp_path / "set")
    arr, rows = hier.image_set(df, 16), hier.image_set(df, 16, stream=True)
    prefix = _prefix()
    flow = lambda r: r.prefix(torch.stack([r[i] for i in range(len(r))]))
    with torch.no_grad():
        assert torch.allclose(flow(hier.prefix_features(prefix, rows, SPEC)), hier.prefix_features(prefix, arr, SPEC), atol=1e-6)
        fmt, q = np.where(np.arange(12) % 2, "jpg", "png"), np.full(12, 70)
        mask = np.arange(12) >= 5   # a subset keeps its manifest rows, so per-row formats stay aligned
        streamed = flow(hier.prefix_features(prefix, hier.reencode(rows, fmt, q)[mask], SPEC))
        assert torch.allclose(streamed, hier.prefix_features(prefix, hier.reencode(arr, fmt, q)[mask], SPEC), atol=1e-6)
        for kind, level in [("jpeg", 50), ("resize", 0.5), ("rotation", 10)]:
            got = flow(hier.prefix_features(prefix, hier.perturb(rows, kind, level), SPEC))
            assert torch.allclose(got, hier.prefix_features(prefix, hier.perturb(arr, kind, level), SPEC), atol=1e-6)
    assert hier.perturb(rows, "jpeg", 0) is rows and hier.is_noop("resize", 1.0) and not hier.is_noop("rotation", 90)
    with pytest.raises(ValueError, match="prefix_features"):
        rows[0]                                   # not normalised yet


def test_streamed_training_equals_in_memory_training(tmp_path, _png_set):
    df = _png_set(tmp_path / "set", n=24)
    y = np.arange(24) % 2
    prefix = _prefix()
    make = lambda k: nn.Sequential(nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, k))
    cfg = train.TrainConfig(epochs=2, batch_size=4, optimizer="adam", lr=0.01, monitor="val_bacc",
                            restore_best=True, amp=False)
    tr, va = np.arange(24) < 16, np.arange(24) >= 16
    out = []
    for x in (hier.image_set(df, 16), hier.image_set(df, 16, stream=True)):
        f = hier.prefix_features(prefix, x, SPEC)
        suffix = hier._fresh(make, 2, 0)
        hier.fit_node(suffix, f[tr], y[tr], f[va], y[va], cfg)
        out.append(hier.probabilities(suffix, f))
    assert out[0].shape == (24, 2)
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)
    assert all(not p.requires_grad for p in prefix.parameters())   # the frozen part stayed frozen


def test_streaming_reports_missing_and_empty_files_up_front(tmp_path, _png_set):
    df = _png_set(tmp_path / "set", n=3)
    open(df["path"][1], "wb").close()
    df.loc[2, "path"] = str(tmp_path / "gone.png")
    with pytest.raises(hier.imageio.ImageReadError, match=r"2 of 3 images.*im01.png.*gone.png"):
        hier.image_set(df, 16, stream=True)


@pytest.mark.slow  # runs the chapter (papermill): ~60 s
def test_full_profile_runs_on_generator_folders_with_local_weights(tmp_path, monkeypatch, build_dir, _png_set):
    """The shipped `full` parameters -- generator folders, timm ResNet-18/34 and the seed's ResNet-50 from local
    weight files, whole-network fine-tuning, streaming with worker processes, the format control -- on a stand-in:
    10 small PNGs per folder and random weights saved where a user puts the downloaded ones. Only the sizes
    (input side, epochs, batch, workers) are overridden."""
    import json

    import timm
    import yaml

    from dfbook import backbones, paths, runner

    monkeypatch.setenv("DFBOOK_DATA", str(tmp_path / "data"))
    full = yaml.safe_load((paths.notebooks_dir() / "params" / "hierarchical.full.yaml").read_text())
    for folder in ["real", *full["GAN_LEAVES"], *full["DM_LEAVES"], *full["APART"]]:
        _png_set(tmp_path / "data" / "generators" / folder, n=10, side=40)
    for name in {*full["BACKBONES"], full["SEED_BACKBONE"]}:
        stem = backbones.expected_weights(name)
        stem.parent.mkdir(parents=True, exist_ok=True)
        torch.save(timm.create_model(backbones.parse(name)[1]).state_dict(), stem.with_name(stem.name + ".pth"))
    res = runner.run_chapter("hierarchical", "full", {"SIZE": 32, "EPOCHS": 1, "BATCH": 16, "WORKERS": 2}, quiet=True)
    assert res.status == "ok", res.error
    rec = json.loads(res.record.read_text())
    assert rec["params"]["STREAM"] and rec["params"]["TRAIN_FROM"] == "conv1"
    assert all(w.startswith("file:") for w in rec["notes"]["weights"].values()), rec["notes"]["weights"]
    for key in ("paper/level1/bacc", "paper/end_to_end/bacc", "format/confounded/level1/bacc_png_test",
                "seed_protocol/level1/bacc", "robust/jpeg/end_to_end/bacc"):
        assert 0 <= rec["metrics"][key]["value"] <= 1, key
