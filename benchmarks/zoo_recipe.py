"""Zoo recipe experiment (issue 4): held-out pretraining metrics of one zoo member and the 1-NN
real/fake AUC on progan-like images with its pretrained vs random-init features, per layer.

    python benchmarks/zoo_recipe.py clip '{"visual_lr_scale": 1.0}' --seed 0 [--out results.jsonl]

The recipe JSON overrides ``dfbook.zoo`` recipe defaults; weights go to a temporary folder, never
into the zoo cache. ``benchmarks/results/zoo_recipe.jsonl`` holds the runs behind the table in the
``dfbook.zoo`` docstring (default and ``{"visual_lr_scale": 1.0}`` for seeds 0-4, other levers on seed 0).
About 90 s per run on one core.
"""

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from dfbook import imageio, zoo
from dfbook.bench import corpus


@torch.inference_mode()
def features(bb, df):
    out = {}
    for i in range(0, len(df), 256):
        imgs, _ = imageio.load_images(df.path.iloc[i:i + 256], 64)
        x = zoo._to_tensor(imgs, bb.spec["mean"], bb.spec["std"])
        for j, f in enumerate([bb.encode_image(x)] + bb.intermediates(x, list(range(bb.n_blocks)))):
            out.setdefault("final" if j == 0 else f"block{j - 1}", []).append(f.float().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def nn_auc(bb, train, test):
    ftr, fte = features(bb, train), features(bb, test)
    y = train.label.to_numpy()
    res = {}
    for k in ftr:
        a = ftr[k] / np.linalg.norm(ftr[k], axis=1, keepdims=True)
        b = fte[k] / np.linalg.norm(fte[k], axis=1, keepdims=True)
        sim = b @ a.T  # 1-NN rule: nearest fake minus nearest real similarity
        res[k] = round(roc_auc_score(test.label, sim[:, y == 1].max(1) - sim[:, y == 0].max(1)), 4)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("arch")
    ap.add_argument("recipe", nargs="?", default="{}")
    ap.add_argument("--seed", type=int, default=0, help="pretraining seed")
    ap.add_argument("--out", type=Path, help="append the result as a JSON line")
    args = ap.parse_args()
    torch.set_num_threads(1)
    df = corpus.load("images")
    gen = df[(df.dataset == "mini_gen") & df.method.isin(["real", "progan"]) & (df.get("domain", "") != "format_control")]
    train, test = gen[gen.split == "train"], gen[gen.split == "test"]
    with tempfile.TemporaryDirectory() as tmp:
        path = zoo.pretrain(args.arch, recipe=json.loads(args.recipe), seed=args.seed, out_dir=Path(tmp))
        meta = json.loads(path.with_suffix(".json").read_text())
        bb = zoo.create(args.arch, pretrained=False, init_seed=args.seed)
        state = torch.load(path, weights_only=True)
        (bb.clip if bb.clip is not None else bb.model).load_state_dict(state, strict=False)
    random_init = zoo.create(args.arch, pretrained=False, init_seed=args.seed)
    res = {"arch": args.arch, "seed": args.seed, "recipe": meta["recipe"], "train_s": meta["seconds"],
           **meta["held_out_metrics"], "nn_auc_progan_pretrained": nn_auc(bb, train, test),
           "nn_auc_progan_random": nn_auc(random_init, train, test)}
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
