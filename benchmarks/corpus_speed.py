"""How long the mini corpora take to generate, and to load once cached.

    python benchmarks/corpus_speed.py [--kinds faces images] [--keep]

Generates every kind into a fresh temporary cache (``DFBOOK_CACHE``), then loads it again from
the cache, and prints per kind: wall time, CPU time of this process and its workers, frames,
bytes on disk. The issue's budget is 60 s for all kinds together on 2 cores; CPU time is printed
too because wall time on a shared machine says little.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", nargs="+", default=["faces", "images"])
    ap.add_argument("--keep", action="store_true", help="keep the temporary cache and print its path")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dfbook-cache-"))
    os.environ["DFBOOK_CACHE"] = str(tmp)
    from dfbook.bench import corpus  # after DFBOOK_CACHE is set

    print(f"cache {tmp}  cpus {os.cpu_count()}  load average {os.getloadavg()[0]:.1f}")
    print(f"{'kind':8s} {'generate s':>10s} {'cpu s':>7s} {'cached s':>9s} {'frames':>7s} {'rows':>7s} {'MB':>7s}")
    total = 0.0
    try:
        for kind in args.kinds:
            if importlib.util.find_spec(corpus.KINDS[kind]) is None:
                print(f"{kind:8s} (module {corpus.KINDS[kind]} not written yet; skipped)")
                continue
            c0, t0 = _cpu(), time.perf_counter()
            df = corpus.load(kind)
            gen, cpu = time.perf_counter() - t0, _cpu() - c0
            t1 = time.perf_counter()
            corpus.load(kind)
            cached = time.perf_counter() - t1
            folder = corpus.location(kind)
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            total += gen
            print(f"{kind:8s} {gen:10.1f} {cpu:7.1f} {cached:9.2f} {df['path'].nunique():7d} {len(df):7d} "
                  f"{size / 1e6:7.1f}")
        print(f"total generation {total:.1f} s (budget 60 s on 2 cores)")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
