"""Why the mini UCF did not learn its own distribution (issue 17): FF++-like -> FF++-like test frame AUC of UCF
(the chapter's model, losses and Adam recipe) lever by lever, one training run per call.

    python benchmarks/ucf_regime.py --frames 8 --epochs 6 [--batch 16] [--lr 1e-3] [--seed 0]
    python benchmarks/ucf_regime.py --frames 4 --epochs 3 \
        --weights '{"specific": 0, "reconstruction": 0, "contrastive": 0}'

Levers: training frames per video and epochs (= optimiser steps), pairs per step, learning rate, input side
(``--res``: the faces resized), the stem of ``mini:xception`` run at stride 2 instead of 4 (``--stem1``: its
second stem convolution at stride 1, zoo weights kept), random-init encoders, and, as a diagnostic only, loss
weights (``--weights``: JSON overriding ``ucf.LOSS_WEIGHTS``; all zero but ``common`` = cross-entropy alone). Each
run appends one row (arguments, training seconds on one thread, validation AUC per epoch, frame/video AUC with
the bootstrap interval over videos on the FF++-like test split and the two cross-dataset sets) to
``benchmarks/results/ucf_regime.jsonl``; the rows there are the runs the ucf chapter and issue 17 quote.
A run of 8 frames x 6 epochs takes about 8 minutes on one core.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from pathlib import Path

import torch

from dfbook import backbones, imageio, runtime, train
from dfbook.bench import corpus
from dfbook.methods import ucf

OUT = Path(__file__).parent / "results" / "ucf_regime.jsonl"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=2, help="training frames per video (the chapter before: 2)")
    p.add_argument("--test-frames", type=int, default=8, help="frames per validation/test video")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=16, help="real/fake pairs per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--feat", type=int, default=128, help="FEAT_DIM")
    p.add_argument("--res", type=int, default=64, help="input side (faces resized)")
    p.add_argument("--stem1", action="store_true", help="mini:xception's second stem conv at stride 1")
    p.add_argument("--channels-last", action="store_true", help="train in channels-last memory format (speed)")
    p.add_argument("--random-init", action="store_true", help="random-init encoders instead of the zoo's")
    p.add_argument("--weights", default="{}", help="JSON loss-weight overrides (diagnostic)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    runtime.setup(a.seed)
    data = ucf.protocol(corpus.load("faces"), train_frames=a.frames, test_frames=a.test_frames)
    imgs = {k: imageio.load_images(v["path"].tolist(), size=a.res)[0] for k, v in data.items()}
    spec = backbones.create("mini:xception", pretrained=False).spec

    def body():
        b = backbones.create("mini:xception", pretrained=not a.random_init).model
        if a.stem1:
            b.stem[1].conv.stride = (1, 1)
        return b

    torch.manual_seed(a.seed)
    model = ucf.build(body, a.feat, 5, body_norm=(spec["mean"], spec["std"]))
    tr = data["train"]
    real, fake = tr["label"].to_numpy() == 0, tr["label"].to_numpy() == 1
    spe, _ = ucf.specific_labels(tr.loc[fake, "method"])
    pairs = ucf.PairDataset(imgs["train"][real], imgs["train"][fake], spe, train_augment=False, resolution=a.res)
    evals = {k: ucf.eval_set(imgs[k], data[k]["label"]) for k in data if k != "train"}
    cfg = train.TrainConfig(epochs=a.epochs, batch_size=a.batch, optimizer="adam", lr=a.lr, weight_decay=5e-4,
                            monitor="val_auc", restore_best=True, seed=a.seed, channels_last=a.channels_last)
    t0 = time.perf_counter()
    hist = train.fit(model, pairs, config=cfg, loss_fn=functools.partial(ucf.loss_fn, weights=json.loads(a.weights)),
                     val=evals["val"])
    row = {"args": {k: v for k, v in vars(a).items() if k != "out"},
           "steps": math.ceil(int(fake.sum()) / a.batch) * a.epochs,
           "train_s": round(time.perf_counter() - t0, 1), "n_train": len(tr),
           "val_auc": [round(float(v), 4) for v in hist["val_auc"]]}
    for k in ("test", "celebdf_v2", "wilddeepfake"):
        r = ucf.evaluate(data[k], train.predict(model, evals[k]), n_boot=200, seed=a.seed)
        row[k] = {"frame_auc": round(r["frame_auc"], 4), "ci": [round(x, 3) for x in r["frame_auc_ci"]],
                  "video_auc": round(r["video_auc"], 4), "n_videos": r["n_videos"]}
    print(json.dumps(row))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with a.out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return row


if __name__ == "__main__":
    main()
