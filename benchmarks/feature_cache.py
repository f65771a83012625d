"""Feature cache benchmark: cold (extract + store) vs warm (cache hit) on a mini-benchmark subset.

    python benchmarks/feature_cache.py [--backbone mini:clip] [--n 2000] [--layer final] [--pretrained]

Random-init weights by default (the timing does not depend on the weights, and it avoids training the
zoo). The benchmark's own cache entry is deleted first so the cold run is really cold; the corpus itself
must already be generated or is generated first (not timed). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from dfbook import backbones, features, runtime
from dfbook.bench import corpus


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="mini:clip")
    ap.add_argument("--pretrained", action="store_true")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--layer", default="final")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="warm runs; the median is reported")
    args = ap.parse_args(argv)

    runtime.setup(0)
    df = corpus.load("images")
    df = df[df["dataset"] == "mini_gen"].sample(n=min(args.n, len(df)), random_state=0).reset_index(drop=True)
    bb = backbones.create(args.backbone, pretrained=args.pretrained)
    key = features.cache_key(bb, df, args.layer)
    features.clear(key)

    t0 = time.perf_counter()
    cold = np.asarray(features.extract(bb, df, layer=args.layer, batch_size=args.batch_size))
    t_cold = time.perf_counter() - t0
    warm_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        warm = np.asarray(features.extract(bb, df, layer=args.layer, batch_size=args.batch_size))
        warm_times.append(time.perf_counter() - t0)
    assert np.array_equal(cold, warm), "a cache hit must return the stored features"
    t_warm = float(np.median(warm_times))
    res = {"backbone": args.backbone, "pretrained": args.pretrained, "layer": args.layer, "rows": len(df),
           "dim": int(cold.shape[1]), "threads": runtime.set_threads(), "cold_s": round(t_cold, 3),
           "warm_s": round(t_warm, 4), "speedup": round(t_cold / t_warm, 1)}
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
