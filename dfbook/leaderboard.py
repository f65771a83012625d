"""The leaderboard: every saved detector (:mod:`dfbook.detector`) on one evaluation matrix.

Tasks (``mini``: the benchmark's held-out test splits, :mod:`dfbook.bench`):

- ``in_distribution``: each detector's own in-distribution test rows (its card's ``in_distribution.csv``); up to
  ``max_rows`` of them (whole videos) are scored again from the files, and the saved detector must reproduce the
  scores its chapter saved (``reproduced``), so the cell uses every saved row's score;
- ``manipulation``: FF++-like test reals against each manipulation (``seen`` says whether the detector trained on it);
- ``cross_dataset``: each other capture domain's test split (Celeb-DF-like, WildDeepfake-like, UADFV-like);
- ``generator_family``: the generated-image test split, one set per family (GAN, diffusion, ...), against its reals;
- ``perturbation``: the re-scored in-distribution rows re-encoded at test time (JPEG, Gaussian blur, down- and
  up-resizing); ``perturbation: none`` is the same rows clean, the reference the degradations are read against.

Every cell gets frame AUC and video AUC (videos keyed by ``dataset/method/video_id``, never by folder name) with
95 % bootstrap intervals over whole videos, AP, EER and TPR at FPR 1e-2. Every detector's checkpoint was chosen
on validation (or is a released one: the card says which); where a chapter also measured what DeepfakeBench's
test-selected protocol reports (``ckpt_best`` chosen on a test metric), :func:`selection_inflation` puts that number
beside the validation-selected one. :func:`export` writes the matrix as one row per number
(``task, dataset, metric, detector, profile, commit``) valid against ``dfbook/data/results.schema.json``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from dfbook import manifest, metrics, runtime

SCHEMA = "results.schema.json"
METRICS = ("frame_auc", "video_auc", "frame_ap", "frame_eer", "frame_tpr@fpr=0.01")
PERTURBATIONS = {"jpeg": (50,), "blur": (2.0,), "resize": (0.5,)}  # test-time degradations (kind: levels)


@dataclass
class EvalSet:
    """One column of the matrix: ``task``, ``dataset`` and its manifest rows (``path, label`` + video key)."""

    task: str
    dataset: str
    rows: pd.DataFrame
    methods: tuple[str, ...] = ()
    perturb: tuple = ()            # ("jpeg", 50) etc.: applied to every image at test time
    detector: str | None = None    # in-distribution sets belong to one detector
    info: dict = field(default_factory=dict)


def _keys(df: pd.DataFrame) -> np.ndarray:
    if {"dataset", "method", "video_id"} <= set(df.columns):
        return manifest.video_key(df).to_numpy()
    return df["key"].astype(str).to_numpy() if "key" in df else df["path"].astype(str).to_numpy()


def _thin(df: pd.DataFrame, frames: int, videos: int, seed: int) -> pd.DataFrame:
    """At most ``videos`` videos per (method, label) and ``frames`` evenly spaced frames per video."""
    if df.empty:
        return df
    rng = np.random.default_rng(seed)
    df = df.assign(_key=_keys(df))
    keep = []
    for _, part in df.groupby(["method", "label"], sort=True):
        ks = part["_key"].unique()
        keep.extend(ks if len(ks) <= videos else rng.choice(ks, videos, replace=False))
    df = df[df["_key"].isin(set(keep))].sort_values(["_key", "frame"] if "frame" in df else ["_key"], kind="stable")
    out = [g.iloc[np.unique(np.linspace(0, len(g) - 1, frames).astype(int))] for _, g in df.groupby("_key", sort=True)]
    return pd.concat(out).drop(columns="_key").reset_index(drop=True)


def mini_sets(*, frames: int = 2, videos: int = 40, images: int = 60, seed: int = 0) -> list[EvalSet]:
    """The shared columns of the mini matrix, from the benchmark's test splits (cached corpora)."""
    from dfbook.bench import corpus

    faces, gen = corpus.load("faces"), corpus.load("images")
    faces = faces[faces["split"] == "test"]
    sets = []
    ff = faces[faces["dataset"] == "ffpp"]
    for method in sorted(set(ff["method"]) - {"real"}):
        rows = ff[(ff["label"] == 0) | (ff["method"] == method)]
        sets.append(EvalSet("manipulation", f"ffpp/{method}", _thin(rows, frames, videos, seed), (method,)))
    for dom in sorted(set(faces["dataset"]) - {"ffpp"}):
        rows = faces[faces["dataset"] == dom]
        sets.append(EvalSet("cross_dataset", dom, _thin(rows, frames, videos, seed),
                            tuple(sorted(set(rows["method"]) - {"real"}))))
    g = gen[(gen["split"] == "test") & (gen["domain"] == "mini_gen")]
    reals = g[g["label"] == 0]
    for fam in sorted(set(g.loc[g["label"] == 1, "family"].astype(str))):
        fakes = g[(g["label"] == 1) & (g["family"].astype(str) == fam)]
        rows = pd.concat([reals, fakes], ignore_index=True)
        sets.append(EvalSet("generator_family", fam, _thin(rows, 1, images, seed),
                            tuple(sorted(set(fakes["method"])))))
    return sets


def full_sets(*, frames: int = 32, videos: int = 10**6, images: int = 1000, seed: int = 0,
              size: int = 256) -> list[EvalSet]:
    """The ``full`` columns: FF++ c23 test against each manipulation, Celeb-DF v2, WildDeepfake and UADFV (faces
    prepared by :func:`dfbook.prepare.prepare`, cached), the CNNDetection test sets and the UnivFD diffusion sets
    against their reals (``dfbook.datasets``; data/README.md says where each comes from). Not run where the data
    is absent: each loader names the folder it expected."""
    from dfbook import datasets, prepare
    from dfbook.paths import cache_dir

    sources = {"ffpp": datasets.ffpp(), "celebdf_v2": datasets.celebdf(version="v2"),
               "wilddeepfake": datasets.wilddeepfake(), "uadfv": datasets.uadfv()}
    sets = []
    for name, src in sources.items():
        faces = prepare.prepare(src, cache_dir("faces", name), size=size).manifest
        faces = faces[faces["split"] == "test"] if "split" in faces and (faces["split"] == "test").any() else faces
        if name == "ffpp":
            for method in sorted(set(faces["method"]) - {"real"}):
                rows = faces[(faces["label"] == 0) | (faces["method"] == method)]
                sets.append(EvalSet("manipulation", f"ffpp/{method}", _thin(rows, frames, videos, seed), (method,)))
        else:
            sets.append(EvalSet("cross_dataset", name, _thin(faces, frames, videos, seed),
                                tuple(sorted(set(faces["method"]) - {"real"}))))
    gen = datasets.cnndetection()
    gen = gen[gen["split"] == "test"]
    for dom in sorted(gen["domain"].unique()):
        rows = gen[gen["domain"] == dom]
        sets.append(EvalSet("generator_family", f"cnndetection/{dom}", _thin(rows, 1, images, seed), (dom,)))
    diffusion = datasets.univfd_diffusion()
    for dom, real_src in datasets.UNIVFD_REAL_SOURCE.items():
        rows = diffusion[((diffusion["domain"] == dom) & (diffusion["label"] == 1))
                         | ((diffusion["domain"] == real_src) & (diffusion["label"] == 0))]
        if rows["label"].nunique() == 2:
            sets.append(EvalSet("generator_family", f"univfd/{dom}", _thin(rows, 1, images, seed), (dom,)))
    return sets


def sets_table(sets: Sequence[EvalSet]) -> pd.DataFrame:
    """What each shared column holds: frames, videos, reals, fakes, methods."""
    return pd.DataFrame([{"task": es.task, "dataset": es.dataset, "frames": len(es.rows),
                          "videos": int(pd.Series(_keys(es.rows)).nunique()), "reals": int((es.rows["label"] == 0).sum()),
                          "fakes": int((es.rows["label"] == 1).sum()), "methods": ", ".join(es.methods)}
                         for es in sets])


def detector_sets(card: Mapping, folder: Path, *, max_rows: int = 400, seed: int = 0) -> list[EvalSet]:
    """A detector's own columns: its in-distribution rows, and those rows perturbed at test time."""
    rows = pd.read_csv(folder / "in_distribution.csv")
    if len(rows) > max_rows:  # whole videos, both classes kept
        keys = rows["key"].unique()
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(keys))
        keep, n = set(), 0
        for i in order:
            if n >= max_rows:
                break
            keep.add(keys[i])
            n += int((rows["key"] == keys[i]).sum())
        rows = rows[rows["key"].isin(keep)].reset_index(drop=True)
    ref = card["ref"]
    out = [EvalSet("in_distribution", ref, rows, detector=ref), EvalSet("perturbation", "none", rows, detector=ref)]
    for kind, levels in PERTURBATIONS.items():
        for level in levels:
            out.append(EvalSet("perturbation", f"{kind}={level}", rows, perturb=(kind, level), detector=ref))
    return out


def perturb(rgb: np.ndarray, kind: str, level: float) -> np.ndarray:
    """Test-time degradations: ``jpeg`` at quality ``level`` (PIL), ``blur`` with sigma ``level`` (PIL's Gaussian),
    ``resize`` down to ``level`` of the side (area) and back up (bicubic): detail the camera never delivered."""
    from PIL import Image, ImageFilter

    img = Image.fromarray(rgb)
    if kind == "jpeg":
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(level))
        return np.asarray(Image.open(buf).convert("RGB"))
    if kind == "blur":
        return np.asarray(img.filter(ImageFilter.GaussianBlur(radius=float(level))))
    if kind == "resize":
        w, h = img.size
        small = img.resize((max(1, round(w * level)), max(1, round(h * level))), Image.Resampling.BOX)
        return np.asarray(small.resize((w, h), Image.Resampling.BICUBIC))
    raise ValueError(f"unknown perturbation {kind!r}; expected one of {sorted(PERTURBATIONS)}")


class _Images:
    """Images read once per path and kept (the mini sets are a few thousand 64-pixel images)."""

    def __init__(self):
        self.cache: dict[str, np.ndarray] = {}

    def get(self, paths: Sequence[str], perturbation: tuple = ()) -> list[np.ndarray]:
        from dfbook.imageio import read_rgb

        out = []
        for p in paths:
            if p not in self.cache:
                self.cache[p] = read_rgb(p)
            out.append(perturb(self.cache[p], *perturbation) if perturbation else self.cache[p])
        return out


def cell(y, s, keys, *, video_rule: str = "mean", n_boot: int = 200, seed: int = 0) -> dict[str, dict]:
    """The numbers of one matrix cell: ``{metric: {"value", "lo", "hi", "n"}}``; frame and video AUC carry
    intervals from resampling whole videos (reals and fakes separately)."""
    y, s, keys = np.asarray(y).astype(int), np.asarray(s, float), np.asarray(keys)
    if len(np.unique(y)) < 2:
        return {}
    out = {}
    ci = metrics.bootstrap_ci(metrics.auc, y, s, keys=keys, n_boot=n_boot, seed=seed)
    out["frame_auc"] = {"value": ci.value, "lo": ci.lo, "hi": ci.hi, "n": int(len(y))}
    vid = metrics.video_scores(s, keys, y, agg=video_rule)
    vci = metrics.bootstrap_ci(metrics.auc, vid["label"].to_numpy(), vid["score"].to_numpy(), n_boot=n_boot, seed=seed)
    out["video_auc"] = {"value": vci.value, "lo": vci.lo, "hi": vci.hi, "n": int(len(vid))}
    out["frame_ap"] = {"value": metrics.ap(y, s), "n": int(len(y))}
    out["frame_eer"] = {"value": metrics.eer_nearest(y, s), "n": int(len(y))}
    out["frame_tpr@fpr=0.01"] = {"value": metrics.tpr_at_fpr(y, s, 1e-2), "n": int(len(y))}
    return out


def evaluate(detectors: Mapping[str, object], shared: Sequence[EvalSet], *, n_boot: int = 200, seed: int = 0,
             max_rows: int = 400, batch_size: int = 128, progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score every detector (``ref -> dfbook.detector.Detector``) on the ``shared`` sets and on its own
    (:func:`detector_sets`). Returns ``(matrix, reproduced)``: the matrix has one row per number (``task, dataset,
    metric, detector, value, lo, hi, n, seen``); ``reproduced`` has, per detector, the largest difference between the
    in-distribution scores recomputed now and those saved with it, and the card's in-distribution AUC next to
    the recomputed one."""
    images = _Images()
    rows, repro = [], []
    for ref, det in runtime.bar(detectors.items(), desc="leaderboard", progress=progress):
        card = det.card
        trained_on = set((card.get("training_data") or {}).get("methods", []))
        own = detector_sets(card, Path(det.path), max_rows=max_rows, seed=seed)
        for es in [*own, *shared]:
            s = det.predict(images.get(es.rows["path"].astype(str).tolist(), es.perturb), batch_size=batch_size)
            if es.task == "in_distribution":  # re-scored rows must give the saved scores; the cell uses them all
                full = pd.read_csv(Path(det.path) / "in_distribution.csv")
                saved = full.set_index("path")["score"].reindex(es.rows["path"]).to_numpy()
                repro.append({"detector": ref, "max_abs_diff": float(np.max(np.abs(saved - s))),
                              "card_frame_auc": card["in_distribution"]["frame_auc"]["value"],
                              "rows_rescored": int(len(s)), "rows_saved": int(len(full))})
                es, s = EvalSet(es.task, es.dataset, full, detector=ref), full["score"].to_numpy()
            seen = bool(es.methods) and set(es.methods) <= trained_on
            for metric, v in cell(es.rows["label"], s, _keys(es.rows), video_rule=det.video_rule, n_boot=n_boot,
                                  seed=seed).items():
                rows.append({"task": es.task, "dataset": es.dataset, "metric": metric, "detector": ref,
                             "value": v["value"], "lo": v.get("lo"), "hi": v.get("hi"), "n": v["n"],
                             "seen": seen, "selection": card.get("checkpoint_selection"),
                             "source": card.get("source")})
    return pd.DataFrame(rows), pd.DataFrame(repro)


def record(run, matrix: pd.DataFrame, reproduced: pd.DataFrame) -> None:
    """Record in the run: ``reproduced/max_abs_diff`` (over every detector), and per detector ``<ref>/<task>/
    <dataset>/{frame,video}_auc`` with their intervals (``<ref>/in_distribution/...`` for its own rows) and the
    mean frame AUC per shared task (unseen manipulations only)."""
    run.metric("reproduced/max_abs_diff", float(reproduced["max_abs_diff"].max()) if len(reproduced) else float("nan"),
               headline=True)
    for r in matrix[matrix["metric"].isin(["frame_auc", "video_auc"])].itertuples(index=False):
        where = r.task if r.task == "in_distribution" else f"{r.task}/{r.dataset}"
        run.metric(f"{r.detector}/{where}/{r.metric}", r.value, ci=None if pd.isna(r.lo) else (r.lo, r.hi), n=r.n)
    auc = matrix[(matrix["metric"] == "frame_auc") & (matrix["task"] != "in_distribution")]
    auc = auc[~((auc["task"] == "manipulation") & auc["seen"]) & ~((auc["task"] == "perturbation") & (auc["dataset"] == "none"))]
    for (det, task), v in auc.groupby(["detector", "task"])["value"].mean().items():
        run.metric(f"{det}/{task}/mean_frame_auc", v)


def record_inflation(run, inflation: pd.DataFrame) -> None:
    """``selection/<detector>/<dataset>/{validation,test}_selected`` and ``.../inflation`` for every row."""
    for r in inflation.itertuples(index=False):
        key = f"selection/{r.detector}/{r.dataset.split(' ')[0]}/{r.metric}"
        run.metric(f"{key}/validation_selected", r.validation_selected)
        run.metric(f"{key}/test_selected", r.test_selected)
        run.metric(f"{key}/inflation", r.inflation)


def column(task: str, dataset: str) -> str:
    return "in-distribution" if task == "in_distribution" else f"{task}: {dataset}"


def wide(matrix: pd.DataFrame, metric: str = "frame_auc") -> pd.DataFrame:
    """Detectors x columns of one metric (in-distribution first, then the shared tasks in order)."""
    m = matrix[matrix["metric"] == metric].assign(column=lambda d: [column(t, s) for t, s in zip(d["task"], d["dataset"])])
    order = list(dict.fromkeys(m["column"]))
    out = m.pivot_table(index="detector", columns="column", values="value", aggfunc="first")
    return out[[c for c in order if c in out.columns]]


def summary(matrix: pd.DataFrame) -> pd.DataFrame:
    """One row per detector: mean frame and video AUC per task (unseen manipulations only), with the in-distribution
    interval -- what the sortable table shows."""
    rows = []
    for det, d in matrix.groupby("detector", sort=False):
        row = {"detector": det, "selection": d["selection"].iloc[0], "source": d["source"].iloc[0]}
        ind = d[(d["task"] == "in_distribution")].set_index("metric")
        for m in ("frame_auc", "video_auc"):
            row[f"in-distribution {m}"] = ind.loc[m, "value"] if m in ind.index else np.nan
            if m in ind.index:
                row[f"in-distribution {m} 95% CI"] = f"[{ind.loc[m, 'lo']:.3f}, {ind.loc[m, 'hi']:.3f}]"
        for task, label in (("manipulation", "unseen manipulations"), ("cross_dataset", "cross-dataset"),
                            ("generator_family", "generator families"), ("perturbation", "perturbed")):
            part = d[(d["task"] == task) & (d["metric"] == "frame_auc")]
            if task == "manipulation":
                part = part[~part["seen"]]
            if task == "perturbation":
                clean = part[part["dataset"] == "none"]
                row["re-scored rows, clean frame_auc"] = clean["value"].mean() if len(clean) else np.nan
                part = part[part["dataset"] != "none"]
            row[f"{label} frame_auc"] = part["value"].mean() if len(part) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def selection_inflation(records: Mapping[str, dict]) -> pd.DataFrame:
    """Validation-selected vs test-selected numbers, where a chapter measured both: UCF's per-test-set frame AUC
    of the validation-chosen epoch and of DeepfakeBench's best-on-test epoch (``selection`` table), and UnivFD's
    probe early-stopped on a held-out val split vs on the reported test split (its original ``train.py``)."""
    rows = []
    ucf = records.get("ucf")
    for r in (ucf or {}).get("tables", {}).get("selection", []):
        rows.append({"detector": "ucf/ucf", "dataset": r["test_set"], "metric": "frame_auc",
                     "validation_selected": r["corrected_auc"], "test_selected": r["best_on_test_auc"],
                     "epochs (val, test)": f"{r['corrected_epoch']}, {r['best_on_test_epoch']}"})
    uni = (records.get("univfd") or {}).get("metrics", {})
    for m in ("in_domain/acc", "in_domain/ap"):
        if f"lp/{m}" in uni and f"lp_published/{m}" in uni:
            rows.append({"detector": "univfd/probe", "dataset": "in_domain",
                         "metric": m.split("/")[1], "validation_selected": uni[f"lp/{m}"]["value"],
                         "test_selected": uni[f"lp_published/{m}"]["value"], "epochs (val, test)": ""})
    out = pd.DataFrame(rows, columns=["detector", "dataset", "metric", "validation_selected", "test_selected",
                                      "epochs (val, test)"])
    out["inflation"] = out["test_selected"] - out["validation_selected"]
    return out


# ---------------------------------------------------------------------------------------------- outputs
def schema() -> dict:
    return json.loads((resources.files("dfbook") / "data" / SCHEMA).read_text())


def records(matrix: pd.DataFrame, *, profile: str, commit: str | None, run_id: str | None = None) -> list[dict]:
    """The matrix as one JSON object per number (see ``results.schema.json``)."""
    out = []
    for r in matrix.itertuples(index=False):
        row = {"task": r.task, "dataset": r.dataset, "metric": r.metric, "detector": r.detector, "profile": profile,
               "commit": commit or "unknown", "value": None if pd.isna(r.value) else float(r.value),
               "n": int(r.n), "selection": r.selection, "source": r.source, "seen": bool(r.seen)}
        if r.lo is not None and not pd.isna(r.lo):
            row["ci"] = [float(r.lo), float(r.hi)]
            row["ci_level"] = 0.95
            row["ci_unit"] = "video"
        if run_id:
            row["run_id"] = run_id
        out.append(row)
    return out


def validate(rows: Sequence[Mapping]) -> None:
    """Check ``rows`` against the schema (``jsonschema``), and that no key (task, dataset, metric, detector,
    profile, commit) appears twice."""
    import jsonschema

    jsonschema.validate({"results": list(rows)}, schema())
    keys = [(r["task"], r["dataset"], r["metric"], r["detector"], r["profile"], r["commit"]) for r in rows]
    if len(set(keys)) != len(keys):
        dup = pd.Series(keys).value_counts()
        raise ValueError(f"{int((dup > 1).sum())} result key(s) appear twice, e.g. {dup.index[0]}")


def export(matrix: pd.DataFrame, path: str | Path, *, profile: str, commit: str | None,
           run_id: str | None = None) -> Path:
    """Write ``{"schema": ..., "results": [one row per number]}`` to ``path`` (validated first)."""
    rows = records(matrix, profile=profile, commit=commit, run_id=run_id)
    validate(rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"schema": "dfbook/data/results.schema.json", "results": rows}, indent=0))
    tmp.replace(path)
    return path
