"""Exact nearest-neighbour search at UnivFD's scale: a 720k x 768 bank (the ProGAN training set through
CLIP ViT-L/14) and 40k queries, on this CPU, with bounded memory.

    python benchmarks/nn_search.py                       # 720k x 768 bank, timings extrapolated to 40k queries
    python benchmarks/nn_search.py --bank 50000 --measure 2000 --sklearn-measure 500   # a quick run

Methods (each in its own child process, so its peak resident memory is its own):
  faiss-fp32   ``dfbook.methods.univfd.exact_topk``: faiss ``IndexFlatIP`` (exhaustive BLAS search), queries in
               chunks; the bank is added chunk by chunk, so only the index holds it (4 bytes x 720k x 768 = 2.2 GB).
  faiss-fp16   ``exact_topk(..., fp16=True)``: the bank held as float16 (1.1 GB), scanned in blocks upcast to
               float32 (``faiss.knn`` + ``faiss.ResultHeap``): half the memory, exact for the float16-rounded bank.
  sklearn      ``NearestNeighbors(metric="cosine", algorithm="brute")``, the scikit-learn baseline.
Exactness: faiss-fp32 is compared with a chunked NumPy matmul (``univfd.brute_topk``) on the first
``--check`` queries, faiss-fp16 with the same matmul over the float16-rounded bank, and scikit-learn's neighbours
with faiss-fp32's on the queries both ran.

Peak memory: ``peak_rss_mb`` is the child's peak resident set; ``data_peak_mb`` subtracts what the interpreter
and its imports held before any data was made (torch comes in with ``dfbook``).

Search time is linear in the number of queries (every query scans the whole bank), so when timing all 40k
queries would take more than a few minutes here, ``--measure`` / ``--sklearn-measure`` queries are timed and
the 40k figure is extrapolated; the output says which numbers are measured and which extrapolated. The
data are random unit vectors: exhaustive search costs the same for any data. Results go to
``_build/benchmarks/nn_search.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import time

import numpy as np

CHUNK = 50_000  # bank rows generated at a time


def _rows(n: int, dim: int, seed: int, start: int = 0, stop: int | None = None):
    """Deterministic unit vectors, chunk by chunk: ``(offset, (m, dim) float32)``."""
    stop = n if stop is None else stop
    for c0 in range(start - start % CHUNK, stop, CHUNK):
        rng = np.random.default_rng([seed, c0])
        x = rng.standard_normal((min(CHUNK, n - c0), dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        lo, hi = max(start - c0, 0), min(stop - c0, len(x))
        yield c0 + lo, x[lo:hi]


def _array(n: int, dim: int, seed: int) -> np.ndarray:
    out = np.empty((n, dim), np.float32)
    for off, x in _rows(n, dim, seed):
        out[off:off + len(x)] = x
    return out


def _peak_mb() -> float:
    """Peak resident memory of this process so far, MB (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _faiss(args, fp16: bool, queue) -> None:
    import faiss

    from dfbook.methods.univfd import exact_topk

    faiss.omp_set_num_threads(args.threads)
    base = _peak_mb()  # interpreter + imports (torch comes with dfbook), before any data
    t0 = time.perf_counter()
    q = _array(args.measure, args.dim, 2)
    if fp16:  # the float16 bank is the only copy; exact_topk scans it block by block
        bank = np.empty((args.bank, args.dim), np.float16)
        for off, x in _rows(args.bank, args.dim, 1):
            bank[off:off + len(x)] = x
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        sims, idx = exact_topk(bank, q, args.k, chunk=args.query_chunk, fp16=True)
    else:  # what exact_topk does, with the bank added chunk by chunk so that only the index holds it
        index = faiss.IndexFlatIP(args.dim)
        for _, x in _rows(args.bank, args.dim, 1):
            index.add(x)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        sims, idx = np.empty((len(q), args.k), np.float32), np.empty((len(q), args.k), np.int64)
        for i in range(0, len(q), args.query_chunk):
            sims[i:i + args.query_chunk], idx[i:i + args.query_chunk] = index.search(q[i:i + args.query_chunk], args.k)
    search = time.perf_counter() - t0
    queue.put({"build_s": build, "search_s": search, "queries": len(q), "peak_mb": _peak_mb(), "base_mb": base,
               "idx": idx[: args.sklearn_measure].tolist(), "sims": sims[: args.check].tolist(),
               "idx_check": idx[: args.check].tolist()})


def _sklearn(args, queue) -> None:
    from sklearn.neighbors import NearestNeighbors

    base = _peak_mb()
    t0 = time.perf_counter()
    bank = _array(args.bank, args.dim, 1)
    nn = NearestNeighbors(n_neighbors=args.k, metric="cosine", algorithm="brute", n_jobs=1).fit(bank)
    build = time.perf_counter() - t0
    q = _array(args.sklearn_measure, args.dim, 2)
    t0 = time.perf_counter()
    dist, idx = nn.kneighbors(q)
    search = time.perf_counter() - t0
    queue.put({"build_s": build, "search_s": search, "queries": len(q), "peak_mb": _peak_mb(), "base_mb": base,
               "idx": idx.tolist(), "sims": (1 - dist).tolist()})


def _reference(args, queue) -> None:
    from dfbook.methods.univfd import brute_topk

    bank = _array(args.bank, args.dim, 1)
    q = _array(args.check, args.dim, 2)
    t0 = time.perf_counter()
    sims, idx = brute_topk(bank, q, args.k, chunk=256)
    seconds = time.perf_counter() - t0
    idx16 = brute_topk(bank.astype(np.float16).astype(np.float32), q, args.k, chunk=256)[1]  # the fp16 reference
    queue.put({"search_s": seconds, "queries": len(q), "peak_mb": _peak_mb(),
               "idx": idx.tolist(), "sims": sims.tolist(), "idx16": idx16.tolist()})


def _child(target, args, *extra) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=target, args=(args, *extra, queue))
    p.start()
    out = queue.get()
    p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", type=int, default=720_000, help="bank rows (UnivFD: 360k real + 360k fake)")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=40_000, help="queries to report the time for")
    ap.add_argument("--measure", type=int, default=2000, help="queries actually timed for faiss")
    ap.add_argument("--fp16-measure", type=int, default=None, help="queries timed for faiss-fp16 (default --measure)")
    ap.add_argument("--sklearn-measure", type=int, default=500, help="queries actually timed for scikit-learn")
    ap.add_argument("--check", type=int, default=200, help="queries checked against the NumPy brute force")
    ap.add_argument("--k", type=int, default=9)
    ap.add_argument("--query-chunk", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("DFBOOK_THREADS", "0") or os.cpu_count()))
    ap.add_argument("--skip-sklearn", action="store_true")
    args = ap.parse_args()
    args.measure = min(args.measure, args.queries)
    args.sklearn_measure = min(args.sklearn_measure, args.measure)
    args.check = min(args.check, args.measure)
    print(f"bank {args.bank} x {args.dim}, k={args.k}, {args.threads} threads, cpus {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    res = {"faiss-fp32": _child(_faiss, args, False)}
    fp16_args = argparse.Namespace(**{**vars(args), "measure": args.fp16_measure or args.measure})
    fp16_args.sklearn_measure = min(args.sklearn_measure, fp16_args.measure)
    fp16_args.check = min(args.check, fp16_args.measure)
    res["faiss-fp16"] = _child(_faiss, fp16_args, True)
    if not args.skip_sklearn:
        res["sklearn"] = _child(_sklearn, args)
    ref = _child(_reference, args)

    f32 = res["faiss-fp32"]
    checks = {"faiss-fp32 vs numpy: same indices": float(np.mean(np.array(f32["idx_check"]) == np.array(ref["idx"]))),
              "faiss-fp32 vs numpy: max |sim diff|": float(np.abs(np.array(f32["sims"]) - np.array(ref["sims"])).max())}
    checks["faiss-fp16 vs numpy on the float16-rounded bank: same indices"] = float(
        np.mean(np.array(res["faiss-fp16"]["idx_check"]) == np.array(ref["idx16"])))
    for name in ("faiss-fp16", "sklearn"):
        if name in res:
            m = min(len(res[name]["idx"]), len(f32["idx"]))
            checks[f"{name} vs faiss-fp32: same indices"] = float(
                np.mean(np.array(res[name]["idx"][:m]) == np.array(f32["idx"][:m])))
    rows = []
    for name, r in res.items():
        qps = r["queries"] / r["search_s"]
        rows.append({"method": name, "timed_queries": r["queries"], "search_s": round(r["search_s"], 2),
                     "queries_per_s": round(qps, 2), f"s_for_{args.queries}": round(args.queries / qps, 1),
                     "extrapolated": r["queries"] < args.queries, "build_s": round(r["build_s"], 1),
                     "peak_rss_mb": round(r["peak_mb"]), "data_peak_mb": round(r["peak_mb"] - r["base_mb"])})
    by = {r["method"]: r for r in rows}
    if "sklearn" in by:
        checks["speed ratio faiss-fp32 / sklearn"] = round(by["faiss-fp32"]["queries_per_s"] / by["sklearn"]["queries_per_s"], 2)
    checks["speed ratio faiss-fp32 / faiss-fp16"] = round(by["faiss-fp32"]["queries_per_s"] / by["faiss-fp16"]["queries_per_s"], 2)
    header = list(rows[0])
    print(" ".join(f"{h:>14s}" for h in header))
    for r in rows:
        print(" ".join(f"{str(r[h]):>14s}" for h in header))
    for k, v in checks.items():
        print(f"{k}: {v}")
    from dfbook import paths

    out = paths.build_dir("benchmarks") / "nn_search.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "checks": checks,
                               "load_average": os.getloadavg()[0], "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                           time.gmtime())}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
