"""dfbook.detector: one interface for every chapter's detector; save, load, card; each chapter's save function
reproduces the scores of the chapter's own scoring path (small, fast training on the mini benchmark)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from dfbook import detector as D
from dfbook import report


@pytest.fixture(scope="module")
def faces():
    from dfbook.bench import corpus

    return corpus.load("faces")


@pytest.fixture(scope="module")
def images():
    from dfbook.bench import corpus

    return corpus.load("images")


def _pick(df, rows_per_class: int, seed: int = 0, **where):
    d = df
    for k, v in where.items():
        d = d[d[k].isin(v if isinstance(v, list) else [v])]
    return pd.concat([g.sample(min(len(g), rows_per_class), random_state=seed) for _, g in d.groupby("label")],
                     ignore_index=True)


def _run(chapter="fixture", seed=0):
    return report.Run(chapter, {"PROFILE": "mini", "SEED": seed})


class Tiny(nn.Module):
    def __init__(self, classes: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, classes)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def tiny(classes: int = 2) -> Tiny:  # the build function of the generic tests
    return Tiny(classes)


# -- preprocessing: the same tensors as each chapter's own pipeline ------------------------------------------------
def test_preprocess_modes_match_the_chapters_pipelines(images):
    from PIL import Image

    from dfbook import imageio
    from dfbook.methods import clip_peft, defenders, hierarchical, univfd

    path = images["path"].iloc[0]
    rgb = imageio.read_rgb(path)
    spec = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    fit = D.Preprocess(48, spec["mean"], spec["std"], mode="fit")(rgb)
    assert torch.equal(fit, hierarchical.to_tensor(imageio.load_images([path], 48)[0], spec)[0])
    squash = D.Preprocess(40, clip_peft.CLIP_MEAN, clip_peft.CLIP_STD, mode="squash")(rgb)
    assert torch.equal(squash, clip_peft.squash_transform(40)(Image.fromarray(rgb)))
    for mode in ("center_crop", "resize_center_crop"):
        ours = D.Preprocess(56, spec["mean"], spec["std"], mode=mode, load_size=60)(rgb)
        theirs = univfd.Transform(mode, 56, 60, spec["mean"], spec["std"])(Image.fromarray(rgb))
        assert torch.equal(ours, theirs), mode
    released = D.Preprocess(32, defenders.IMAGENET_MEAN, defenders.IMAGENET_STD, mode="normalise_resize")(rgb)
    assert torch.equal(released, defenders.preprocess(rgb, 32))
    assert D.Preprocess.from_dict(json.loads(json.dumps(D.Preprocess(8, mode="fit").to_dict()))) == D.Preprocess(8)
    with pytest.raises(ValueError, match="preprocess mode 'stretch'"):
        D.Preprocess(8, mode="stretch")


# -- the generic interface -------------------------------------------------------------------------------------------
def _tiny_detector(classes=2, output="logits"):
    torch.manual_seed(0)
    return D.Detector("tiny", "fixture", Tiny(classes), D.Preprocess(16), {"function": "tests.test_detector:tiny",
                                                                           "kwargs": {"classes": classes}}, output)


def test_save_load_round_trip_card_and_page(build_dir, write_pngs, tmp_path):
    paths_ = write_pngs(tmp_path / "imgs", 6, size=24)
    det = _tiny_detector()
    with pytest.raises(ValueError, match="checkpoint selection 'test'"):
        det.save(profile="mini", card={"selection": "test"})
    det.build = {"function": "tests.test_detector:tiny", "kwargs": {"classes": 2}}
    before = det.predict(paths_)
    assert before.shape == (6,) and ((before >= 0) & (before <= 1)).all()
    folder = det.save(profile="mini", card={"architecture": "tiny conv", "metrics": {"frame_auc": {"value": 0.5,
                                                                                                  "ci": [0.4, 0.6]}}})
    assert folder == build_dir / "models" / "mini" / "fixture" / "tiny"
    card = json.loads((folder / D.CARD).read_text())
    assert card["parameters"]["total"] == sum(p.numel() for p in det.module.parameters())
    assert card["checkpoint_selection"] == "validation" and card["source"] == "trained" and card["profile"] == "mini"
    assert "| architecture | tiny conv |" in (folder / D.PAGE).read_text()
    with pytest.raises(ValueError, match="must be 'dfbook.<module>:<function>'"):
        D.load(folder)  # a card may only name the package's own functions
    card["build"]["function"] = "dfbook.detector:_tiny_for_tests"
    (folder / D.CARD).write_text(json.dumps(card))
    D._tiny_for_tests = tiny
    try:
        again = D.load("fixture/tiny", "mini")
        assert np.array_equal(again.predict(paths_), before) and again.card["architecture"] == "tiny conv"
        table = D.available("mini")
        assert table["detector"].tolist() == ["fixture/tiny"] and table["in_distribution_auc"].iloc[0] == 0.5
        card["build"]["kwargs"] = {"classes": 3}  # the file no longer fits the architecture of the card
        (folder / D.CARD).write_text(json.dumps(card))
        with pytest.raises(ValueError, match="does not match the architecture"):
            D.load(folder)
    finally:
        del D._tiny_for_tests
    with pytest.raises(FileNotFoundError, match="no detector 'fixture/none'.*fixture/tiny"):
        D.load("fixture/none", "mini")


def test_outputs_and_video_rule():
    x = torch.randn(5, 3, 16, 16)
    two = _tiny_detector(2)
    assert np.allclose(two.predict_tensor(x), torch.softmax(two.module(x), 1)[:, 1].detach().numpy(), atol=1e-6)
    one = _tiny_detector(1)
    assert np.allclose(one.predict_tensor(x), torch.sigmoid(one.module(x)).reshape(-1).detach().numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="1 or 2 columns"):
        _tiny_detector(3).predict_tensor(x)
    vid = D.Detector("m", "fixture", Tiny(), D.Preprocess(8), {}, video_rule="majority")
    out = vid.video_scores([0.9, 0.8, 0.1, 0.2, 0.6], ["a", "a", "a", "b", "b"])
    assert out["score"].round(3).tolist() == [0.667, 0.5]
    with pytest.raises(ValueError, match="video_rule"):
        D.Detector("m", "fixture", Tiny(), D.Preprocess(8), {}, video_rule="max")


# -- each chapter's saved detector reproduces the chapter's own scores ---------------------------------------------
def _reload_and_check(row, ref, test, chapter_scores):
    """The saved detector, loaded fresh, gives the chapter's scores and its card's in-distribution AUC."""
    from dfbook import metrics

    det = D.load(ref, "mini")
    s = det.predict(test["path"].tolist())
    assert np.max(np.abs(s - np.asarray(chapter_scores, float))) < 1e-5, ref
    assert row["max_abs_diff_to_chapter"] < 1e-5
    assert abs(det.card["in_distribution"]["frame_auc"]["value"] - metrics.auc(test["label"], s)) < 1e-9
    lo, hi = det.card["in_distribution"]["frame_auc"]["ci"]
    assert lo <= det.card["in_distribution"]["frame_auc"]["value"] <= hi
    saved = pd.read_csv(det.path / D.IN_DISTRIBUTION)
    assert saved["path"].tolist() == test["path"].astype(str).tolist() and np.allclose(saved["score"], s)
    return det


@pytest.mark.slow
def test_univfd_probe_and_nn_reproduce(build_dir, images):
    from dfbook import backbones
    from dfbook.methods import univfd

    g = images[(images["dataset"] == "mini_gen") & (images["domain"] == "mini_gen")]
    train = _pick(g, 24, split="train", method=["real", "progan"])
    val = _pick(g, 12, split="val", method=["real", "progan"])
    tests = _pick(g, 12, split="test", method=["real", "progan"]).assign(test_set="progan")
    proto = univfd.Protocol(train, val, val, tests, {"train_generator": "progan"})
    bb = backbones.create("mini:clip", pretrained=False, init_seed=3)
    tf = univfd.transform_for(bb, "center_crop", size=64, load_size=73)
    feats = univfd.protocol_features(bb, proto, tf)
    head, _ = univfd.train_probe(feats, proto, univfd.probe_config(lr=1e-2, batch_size=16, epochs=3, seed=0))
    scores = {"lp/pretrained/corrected": univfd.head_scores(head, feats["tests"]["final"]),
              "nn/pretrained/k1": univfd.nn_test_scores(feats, proto, ks=(1,))[1]}
    table = univfd.save_detectors(_run("univfd"), bb, head, feats, proto, tf, scores)
    for name in ("probe", "nn"):
        _reload_and_check(table.loc[f"univfd/{name}"], f"univfd/{name}", tests, scores[f"{name if name == 'nn' else 'lp'}"
                          + ("/pretrained/k1" if name == "nn" else "/pretrained/corrected")])
    assert D.load("univfd/nn").card["checkpoint_selection"] == "none"


@pytest.mark.slow
def test_univfd_released_fc_weights_load_as_released(build_dir, images, tmp_path):
    from dfbook import backbones
    from dfbook.methods import univfd

    g = images[(images["dataset"] == "mini_gen") & (images["domain"] == "mini_gen")]
    tests = _pick(g, 6, split="test", method=["real", "progan"]).assign(test_set="progan")
    proto = univfd.Protocol(tests, tests, tests, tests, {"train_generator": "progan"})
    bb = backbones.create("mini:clip", pretrained=False)
    stand_in = tmp_path / "fc_weights.pth"  # the release's layout: a Linear(dim, 1) state dict
    torch.save(nn.Linear(bb.dim, 1).state_dict(), stand_in)
    tf = univfd.transform_for(bb, "center_crop", size=64, load_size=73)
    feats = univfd.protocol_features(bb, proto, tf)
    scores = {"lp/pretrained/corrected": np.zeros(len(tests)), "nn/pretrained/k1": np.zeros(len(tests))}
    table = univfd.save_detectors(_run("univfd"), bb, univfd.linear_probe(bb.dim), feats, proto, tf, scores,
                                  fc_weights=str(stand_in))
    released = D.load("univfd/probe_released")
    assert released.card["source"] == "released" and released.card["checkpoint_selection"] == "released"
    assert released.card["released_from"] == str(stand_in) and "univfd/probe_released" in table.index
    head = univfd.load_fc_weights(stand_in, bb.dim)
    expect = univfd.head_scores(head, feats["tests"]["final"])
    assert np.max(np.abs(released.predict(tests["path"].tolist()) - expect)) < 1e-5


@pytest.mark.slow
def test_hierarchical_level1_reproduces(build_dir, images):
    from dfbook import imageio, train
    from dfbook.methods import hierarchical as hier

    g = images[(images["dataset"] == "mini_gen") & (images["domain"] == "mini_gen")]
    df = pd.concat([_pick(g, 30, split=s, method=["real", "progan", "ldm"]) for s in ("train", "val", "test")],
                   ignore_index=True)
    tree = hier.Tree(("progan",), ("ldm",))
    labels, split = hier.tree_labels(df, tree), df["split"]
    net = hier.build("mini:resnet", 2, train_from="layer4", pretrained=False, init_seed=1)
    feats = hier.prefix_features(net.prefix, imageio.load_images(df["path"].tolist(), 48)[0], net.spec)
    cfg = train.TrainConfig(epochs=1, batch_size=16, optimizer="adam", lr=1e-3, monitor="val_bacc",
                            restore_best=True, seed=0, amp=False)
    nodes = hier.train_tree(feats, labels, split, tree, hier.suffix_factory(net), cfg, nodes=["level1"])
    probs = hier.predict_tree(nodes, feats)
    table = hier.save_detectors(_run("hierarchical"), "mini:resnet", net, nodes, df, labels, split, probs, size=48,
                                train_from="layer4")
    rows = (labels["in_tree"] & (split == "test")).to_numpy()
    _reload_and_check(table.loc["hierarchical/level1"], "hierarchical/level1", df[rows], probs["level1"][rows, 1])


@pytest.mark.slow
def test_ucf_reproduces(build_dir, faces):
    from dfbook import imageio, train
    from dfbook.methods import ucf

    test = _pick(faces, 12, split="test", dataset="ffpp")
    train_df = _pick(faces, 12, split="train", dataset="ffpp")
    torch.manual_seed(0)
    model = ucf.mini_net("mini:xception", 32, 5)
    scores = {"test": train.predict(model, ucf.eval_set(imageio.load_images(test["path"].tolist(), 32)[0],
                                                        test["label"]))}
    table = ucf.save_detectors(_run("ucf"), model, {"train": train_df, "test": test}, scores, encoder="mini:xception",
                               feat_dim=32, n_specific=5, resolution=32)
    _reload_and_check(table.loc["ucf/ucf"], "ucf/ucf", test, scores["test"])


@pytest.mark.slow
def test_ucf_released_checkpoint_stand_in_loads_as_released(build_dir, faces, tmp_path, monkeypatch):
    from dfbook.methods import ucf

    test = _pick(faces, 4, split="test", dataset="ffpp")
    small = lambda n_specific=5: ucf.mini_net("mini:xception", 16, n_specific)  # noqa: E731  (stands in for Xception)
    monkeypatch.setattr(ucf, "build_full", small)
    stand_in = tmp_path / "ucf_best.pth"  # DeepfakeBench's layout: torch.save of a DataParallel state dict
    torch.save({f"module.{k}": v for k, v in small().state_dict().items()}, stand_in)
    released = ucf.load_deepfakebench(ucf.build_full(), stand_in).eval()
    model = small()
    table = ucf.save_detectors(_run("ucf"), model, {"train": test, "test": test}, {"test": np.zeros(len(test))},
                               encoder="mini:xception", feat_dim=16, n_specific=5, resolution=32, released=released,
                               released_from=str(stand_in))
    det = D.load("ucf/ucf_released")
    assert det.card["source"] == "released" and table.loc["ucf/ucf_released", "source"] == "released"
    x = torch.stack([det.preprocess(np.asarray(imageio_read(p))) for p in test["path"]])
    assert np.allclose(det.predict_tensor(x), torch.softmax(released(x), 1)[:, 1].detach().numpy(), atol=1e-6)


def imageio_read(p):
    from dfbook import imageio

    return imageio.read_rgb(p)


@pytest.mark.slow
def test_defenders_mixture_reproduces(build_dir, faces):
    from dfbook.methods import defenders

    test = _pick(faces, 10, split="test", dataset="ffpp")
    archs = ["mini:resnet", "mini:resnet"]
    experts = {f"cluster_{i}": defenders.make_expert(a, pretrained=False, init_seed=i).eval() for i, a in enumerate(archs)}
    sets = {"seen": test, "pool": test}
    scores = {"seen": defenders.expert_scores(experts, defenders.load_inputs(test, size=32))}
    scores["seen"]["mixture"] = scores["seen"][list(experts)].mean(axis=1)
    table = defenders.save_detectors(_run("defenders"), experts, archs, sets, scores, size=32)
    det = _reload_and_check(table.loc["defenders/mixture"], "defenders/mixture", test, scores["seen"]["mixture"])
    assert det.output == "probability" and det.card["checkpoint_selection"] == "final_epoch"


@pytest.mark.slow
def test_clip_peft_adapter_reproduces(build_dir, faces):
    from dfbook import backbones, features, train
    from dfbook.methods import clip_peft

    frames = pd.concat([_pick(faces, 12, split=s, dataset="ffpp", method=["real", "FaceSwap", "NeuralTextures"])
                        for s in ("train", "val", "test")], ignore_index=True)
    bb = backbones.create("mini:clip", pretrained=False, init_seed=2)
    transform = clip_peft.squash_transform(bb.spec["size"][0])
    X = features.extract(bb, frames, transform=transform)
    protocols = {"corrected": clip_peft.corrected_protocol(frames, "FaceSwap", "NeuralTextures")}
    p = protocols["corrected"]
    head, _ = clip_peft.train_head("adapter", clip_peft.text_features(bb), X[p["train"].index.to_numpy()],
                                   frames["label"].to_numpy()[p["train"].index.to_numpy()], epochs=1, seed=0, lr=1e-3)
    scores = {("corrected", "adapter"): train.predict(head, X[p["test"].index.to_numpy()])}
    table = clip_peft.save_detectors(_run("clip_peft"), bb, head, frames, protocols, scores, train_method="FaceSwap",
                                     size=bb.spec["size"][0])
    assert table.loc["clip_peft/adapter", "max_abs_diff_to_chapter"] < 1e-5  # on the chapter's own test rows
    det = D.load("clip_peft/adapter")
    assert np.max(np.abs(det.predict(p["test"]["path"].tolist()) - scores["corrected", "adapter"])) < 1e-5
    assert det.card["checkpoint_selection"] == "final_epoch"


@pytest.mark.slow
def test_unsupervised_fork_reproduces(build_dir, faces):
    from dfbook.methods import unsupervised_video as uv

    test = _pick(faces, 10, split="test", dataset="ffpp")
    ecl = uv.build_ecl("mini:convnext", pretrained=False, init_seed=0)
    frames = uv.Frames.load(test["path"].tolist(), test["label"].to_numpy(), 32)
    _, back = uv.embed(ecl, frames)
    clf = uv.FeatureClassifier(back.shape[1])
    from dfbook import train

    chapter = 1.0 - train.predict(clf, torch.as_tensor(back))  # flipped: class 1 was named real on validation
    enc = type("Run", (), {"model": ecl})()
    table = uv.save_detectors(_run("unsupervised_video"), enc, clf, True, {"ffpp": {"test/ffpp": test}},
                              {"test/ffpp": chapter}, test, backbone="mini:convnext", domain="ffpp", size=32)
    _reload_and_check(table.loc["unsupervised_video/fork"], "unsupervised_video/fork", test, chapter)


@pytest.mark.slow
def test_defenders_released_stand_in_loads_as_released(build_dir, faces, tmp_path):
    from dfbook import imageio
    from dfbook.methods import defenders

    test = _pick(faces, 4, split="test", dataset="ffpp")
    archs = ["mini:resnet", "mini:resnet"]  # stand-ins for the release's seven timm experts
    mixture = defenders.MixtureOfExperts([defenders.make_expert(a, pretrained=False, init_seed=i)
                                          for i, a in enumerate(archs)])
    wdir = defenders.save_released(mixture, tmp_path / "release")  # weight.pth + ema.state, the release's layout
    released = defenders.load_released(wdir, archs)
    experts = {f"cluster_{i}": e for i, e in enumerate(released.experts)}
    scores = {"seen": pd.DataFrame({"mixture": np.zeros(len(test))})}
    defenders.save_detectors(_run("defenders"), experts, archs, {"seen": test, "pool": test}, scores, size=32,
                             released=released, released_from=str(wdir), released_archs=archs, released_size=32)
    det = D.load("defenders/mixture_released")
    assert det.card["source"] == "released" and det.card["released_from"] == str(wdir)
    x = torch.stack([defenders.preprocess(imageio.read_rgb(p), 32) for p in test["path"]])
    with torch.inference_mode():
        expect = released(x).numpy()
    assert np.max(np.abs(det.predict(test["path"].tolist()) - expect)) < 1e-5
