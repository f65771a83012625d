"""Where the frozen-feature readers lose the traces (issue 18): in-distribution scores of linear readers on the
frozen ``mini:clip`` embedding, lever by lever, pretrained vs random-init.

    python benchmarks/probe_regime.py [--seed 0] [--pretrain-seed 0] [--only univfd] [--out results.jsonl]

UnivFD (ProGAN-like -> ProGAN-like test, AP): the chapter's probe (``univfd.probe_config``, batch 64,
patience 5) at the learning rate mini used before (1e-3) and uses now (1e-2), and scikit-learn's logistic
regression on standardised features (C = 1, solved to convergence: what a linear reader can separate), each
trained on one of these training views:

- ``paper views, load 73, 2 views``: the chapter before issue 18 (resize to LOAD_SIZE 73, blur+JPEG
  ``data_augment``, random crop, flip; 2 augmented copies of the training set);
- ``paper views, load 64, 8 views``: no resize (the paper's 256-px load size is the identity on ProGAN's
  256-px images), 8 copies -- the chapter now;
- ``blur 0-0.75, load 64, 8 views``: the paper's blur range scaled by 64/256, JPEG as the paper;
- ``flip only, load 64, 8 views``: no blur, no JPEG;
- ``clean``: the test transform (no augmentation, no flip), the training set once.

CLIP-PEFT (FF++-like faces, one manipulation -> the same manipulation, held-out identities, AUC): the linear
ceiling (standardised logistic regression) on the final embedding and on the class token / mean patch token
of every transformer block; ``--only arch``: the same ceiling on random-init image towers of other shapes (patch
size, width, pooling), about 6 minutes. About 4 minutes on one core. ``--pretrain-seed N`` (N > 0) pretrains ``mini:clip``
with zoo seed N into a temporary folder first (about 90 s), as ``benchmarks/zoo_recipe.py`` does; 0 is the zoo's
own weights. ``benchmarks/results/probe_regime.jsonl`` holds the runs quoted in the univfd chapter and issue 18.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import tempfile

from dfbook import backbones, imageio, zoo
from dfbook.bench import corpus
from dfbook.methods import clip_peft, univfd

VIEWS = {  # name: (load size, data_augment overrides, augmented copies); None = the test transform
    "paper views, load 73, 2 views": (73, (), 2),
    "paper views, load 64, 8 views": (64, (), 8),
    "blur 0-0.75, load 64, 8 views": (64, (("blur_sig", (0.0, 0.75)),), 8),
    "flip only, load 64, 8 views": (64, (("blur_prob", 0.0), ("jpg_prob", 0.0)), 8),
    "clean": None,
}
PROBE_LRS = (1e-3, 1e-2)


def ceiling(x_train, y_train, x_test) -> np.ndarray:
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    return clf.fit(x_train, y_train).decision_function(x_test)


def clip_backbone(init: str, seed: int, pretrain_seed: int):
    """``mini:clip``: the zoo's weights (pretrain seed 0), weights pretrained with another zoo seed, or random init."""
    if init != "pretrained" or pretrain_seed == 0:
        return backbones.create("mini:clip", pretrained=init == "pretrained", init_seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = zoo.pretrain("clip", seed=pretrain_seed, out_dir=Path(tmp))
        bb = zoo.create("clip", pretrained=False, init_seed=pretrain_seed)
        bb.clip.load_state_dict(torch.load(path, weights_only=True), strict=False)
    return bb


def univfd_rows(seed: int, pretrain_seed: int = 0):
    proto = univfd.mini_protocol(corpus.load("images"), "progan", seed=seed)
    idx = np.flatnonzero(proto.tests["test_set"].to_numpy() == "progan")
    y_test = proto.tests["label"].to_numpy()[idx]
    for init in ("pretrained",) if pretrain_seed else ("pretrained", "random-init"):
        bb = clip_backbone(init, seed, pretrain_seed)
        test_tf = univfd.transform_for(bb, "center_crop", size=64, load_size=64)
        for view, spec in VIEWS.items():
            if spec is None:
                f = univfd.protocol_features(bb, proto, test_tf)
                x, y = f["train"]["final"], proto.train["label"].to_numpy()
                f = {**f, "train_aug": x, "y_train_aug": y}
            else:
                train_tf = univfd.transform_for(bb, "train", size=64, load_size=spec[0], seed=seed, aug=spec[1])
                f = univfd.protocol_features(bb, proto, test_tf, views=spec[2], train_tf=train_tf)
                x, y = f["train_aug"], f["y_train_aug"]
            q = f["tests"]["final"][idx]
            scores = {"logistic regression (ceiling)": ceiling(x, y, q)}
            for lr in PROBE_LRS:
                cfg = univfd.probe_config(lr=lr, batch_size=64, epochs=100, patience=5, lr_drops=2, seed=seed)
                head, history = univfd.train_probe(f, proto, cfg)
                scores[f"probe lr {lr:g}"] = univfd.head_scores(head, q)
                yield {"task": "univfd progan AP", "init": init, "view": view, "reader": f"probe lr {lr:g} epochs",
                       "score": len(history), "seed": seed, "pretrain_seed": pretrain_seed}
            for reader, s in scores.items():
                yield {"task": "univfd progan AP", "init": init, "view": view, "reader": reader,
                       "score": round(float(average_precision_score(y_test, s)), 4), "seed": seed,
                       "pretrain_seed": pretrain_seed}


@torch.inference_mode()
def _block_features(bb, paths) -> dict[str, np.ndarray]:
    out: dict[str, list] = {}
    for i in range(0, len(paths), 256):
        imgs, _ = imageio.load_images(paths[i:i + 256], zoo.SIZE)
        x = zoo._to_tensor(imgs, bb.spec["mean"], bb.spec["std"])
        o = bb.clip.visual.forward_intermediates(x, indices=list(range(bb.n_blocks)), intermediates_only=True,
                                                 output_extra_tokens=True)
        feats = {"final embedding": bb.encode_image(x)}
        for j, (tokens, prefix) in enumerate(zip(o["image_intermediates"], o["image_intermediates_prefix"])):
            feats[f"block {j} class token"] = prefix[:, 0]
            feats[f"block {j} mean patch token"] = tokens.mean((2, 3))
        for k, v in feats.items():
            out.setdefault(k, []).append(v.float().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def clip_peft_rows(seed: int):
    frames = clip_peft.load_frames("")
    y = frames["label"].to_numpy()
    for init in ("pretrained", "random-init"):
        bb = backbones.create("mini:clip", pretrained=init == "pretrained", init_seed=seed).eval()
        feats = _block_features(bb, list(frames["path"]))
        for method in sorted(set(frames["method"]) - {"real"}):
            p = clip_peft.corrected_protocol(frames, method, method)
            tr, te = p["train"].index.to_numpy(), p["test"].index.to_numpy()
            for layer, x in feats.items():
                yield {"task": f"clip_peft {method} AUC", "init": init, "view": layer,
                       "reader": "logistic regression (ceiling)",
                       "score": round(float(roc_auc_score(y[te], ceiling(x[tr], y[tr], x[te]))), 4), "seed": seed}


ARCH_VARIANTS = {  # vision_cfg overrides of dfbook.zoo.CLIP_CFG (the embedding as wide as the tower)
    "patch 8, width 64 (the zoo's)": {},
    "patch 4, width 64": {"patch_size": 4},
    "patch 8, width 256": {"width": 256, "head_width": 64},
    "patch 4, width 128": {"patch_size": 4, "width": 128, "head_width": 32},
    "patch 8, width 64, mean-pooled tokens": {"pool_type": "avg"},
}


def arch_rows(seed: int, methods=("FaceSwap", "Deepfakes")):
    """The linear ceiling on FF++-like faces of random-init image towers of other shapes: does any architecture
    carry the manipulations linearly before pretraining?"""
    import copy

    import open_clip

    frames = clip_peft.load_frames("")
    frames = frames[frames["method"].isin(["real", *methods])].reset_index(drop=True)
    imgs, _ = imageio.load_images(list(frames["path"]), zoo.SIZE)
    x = zoo._to_tensor(imgs, *zoo.OPENAI_CLIP)
    y = frames["label"].to_numpy()
    for name, over in ARCH_VARIANTS.items():
        cfg = copy.deepcopy(zoo.CLIP_CFG)
        cfg["vision_cfg"].update(over)
        cfg["embed_dim"] = cfg["vision_cfg"]["width"]
        torch.manual_seed(seed)
        model = open_clip.CLIP(**cfg).eval()
        with torch.inference_mode():
            feats = torch.cat([model.encode_image(b) for b in x.split(256)]).numpy()
        for method in methods:
            p = clip_peft.corrected_protocol(frames, method, method)
            tr, te = p["train"].index.to_numpy(), p["test"].index.to_numpy()
            yield {"task": f"clip_peft {method} AUC", "init": "random-init", "view": name,
                   "reader": "logistic regression (ceiling)",
                   "score": round(float(roc_auc_score(y[te], ceiling(feats[tr], y[tr], feats[te]))), 4), "seed": seed}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="protocol seed and random-init seed")
    ap.add_argument("--pretrain-seed", type=int, default=0, help="zoo pretraining seed of mini:clip (0: the zoo's)")
    ap.add_argument("--only", choices=["univfd", "clip_peft", "arch"],
                    help="one task (arch: random-init towers of other shapes on faces, not run by default)")
    ap.add_argument("--out", type=Path, help="append the rows as JSON lines")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [*(univfd_rows(args.seed, args.pretrain_seed) if args.only in (None, "univfd") else []),
            *(clip_peft_rows(args.seed) if args.only in (None, "clip_peft") else []),
            *(arch_rows(args.seed) if args.only == "arch" else [])]
    import pandas as pd

    df = pd.DataFrame(rows)
    if df.task.str.startswith("univfd").any():
        print(df[df.task.str.startswith("univfd")].pivot_table("score", ["init", "view"], "reader", sort=False).to_string())
    faces = df[~df.task.str.startswith("univfd")]
    if len(faces):
        print(faces.pivot_table("score", ["init", "view"], "task", sort=False).to_string())
    if args.out:
        with open(args.out, "a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
