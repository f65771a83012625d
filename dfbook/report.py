"""Result records: one JSON file per chapter run, the single source the book, ``dfbook check`` and
any other tool read numbers from (DESIGN.md, "Results").

In a notebook::

    run = report.start("univfd", globals())      # UPPER_CASE parameters, clock, environment
    run.metric("corrected/auc", 0.83, ci=(0.79, 0.87), headline=True)
    run.table("per_generator", df)                # stored in the record and as CSV, and shown
    run.figure("roc", fig)                        # PNG next to the record, and shown
    run.save()                                    # _build/results/<profile>/<chapter>.json, atomically

Every metric is also glued (myst-nb) under its key, so chapter prose cites numbers the run produced:
``{glue:text}`corrected/auc:.3f```.

Tables and figures are shown where they are recorded, by ``run.table`` and ``run.figure`` themselves (they
return ``None``): a figure as the PNG it was saved as, whatever the matplotlib backend (under papermill none
is active, and a returned ``Figure`` would print as ``<Figure size ...>``), a table as HTML. Each displayed
output carries ``{"dfbook": {"kind", "name", "file", "run_id"}}`` in its metadata, from which
``dfbook.book`` adds the download links and provenance under it in the HTML book.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dfbook import __version__, manifest, paths
from dfbook.params import check_chapter

PACKAGES = ("torch", "torchvision", "timm", "open_clip_torch", "numpy", "pandas", "scikit-learn",
            "faiss-cpu", "peft", "papermill", "jupyter-book", "myst-nb")
_PARAM_TYPES = (str, int, float, bool, list, dict, tuple, type(None))


def _jsonable(value: Any) -> Any:
    """numpy/pandas scalars and containers -> plain JSON types; NaN/inf -> None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (pd.Timestamp, _dt.datetime, Path)):
        return str(value)
    return value


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (papermill, JupyterLab), False in scripts and tests."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        return False
    return get_ipython() is not None and get_ipython().__class__.__name__ == "ZMQInteractiveShell"


def _glue(key: str, value: Any) -> None:
    """Glue into the executing notebook (no-op outside a kernel). The one place that knows about
    myst-nb, so a move to Jupyter Book 2's embeds touches only this function."""
    if not _in_kernel():
        return
    from myst_nb import glue

    glue(key, value, display=False)


def _show(obj: Any, evidence: dict, *, raw: bool = False) -> None:
    """Display ``obj`` (a mime bundle when ``raw``) in the executing notebook with the ``dfbook``
    evidence metadata; no-op outside a kernel."""
    if not _in_kernel():
        return
    from IPython.display import display

    display(obj, raw=raw, metadata={"dfbook": evidence})


def git_state(root: Path | None = None) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout."""
    root = root or paths.repo_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha, "dirty": dirty if sha else None}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Python, package versions, CPU, memory, device and threads of this process."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    env = {"python": platform.python_version(), "platform": platform.platform(), "packages": versions,
           "cpu_count": os.cpu_count(), "cpu_model": cpu_model()}
    try:
        import psutil

        env["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - a dependency
        pass
    try:
        import torch

        env["threads"] = torch.get_num_threads()
        env["cpu_capability"] = torch.backends.cpu.get_cpu_capability()  # kernels differ by ISA (AVX2/AVX512)
        env["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        env["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover
        env["device"] = "cpu"
    return env


def record_path(chapter: str, profile: str, dry_run: bool = False) -> Path:
    return paths.results_dir(profile) / (f"{chapter}.dry-run.json" if dry_run else f"{chapter}.json")


def write_json_atomic(path: Path, payload: dict) -> Path:
    """Write to a temporary sibling, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_jsonable(payload), indent=1, sort_keys=False))
    tmp.replace(path)
    return path


def _count_params(module) -> dict:
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"total": int(total), "trainable": int(trainable)}


def _shapes(out) -> Any:
    if hasattr(out, "shape"):
        return list(out.shape)
    if isinstance(out, Mapping):
        return {k: _shapes(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return [_shapes(v) for v in out]
    return type(out).__name__


class Run:
    """One chapter run; see the module docstring."""

    def __init__(self, chapter: str, params: Mapping[str, Any]):
        self.chapter = chapter
        self.params = {k: _jsonable(v) for k, v in params.items()}
        self.profile = paths.check_profile(str(self.params.get("PROFILE", "mini")))
        self.dry_run = bool(self.params.get("DRY_RUN", False))
        self.run_id = os.environ.get("DFBOOK_RUN_ID") or uuid.uuid4().hex[:12]
        self.started = _dt.datetime.now(_dt.timezone.utc)
        self._t0 = time.perf_counter()
        self.metrics: dict[str, dict] = {}
        self.tables: dict[str, list[dict]] = {}
        self.data: dict[str, dict] = {}
        self.models: dict[str, dict] = {}
        self.figures: dict[str, str] = {}
        self.notes: dict[str, Any] = {}
        self.headline: str | None = None
        self._glued: dict[str, Any] = {}

    # -- numbers -------------------------------------------------------------------------------
    def metric(self, key: str, value: float, *, ci: tuple[float, float] | None = None,
               headline: bool = False, n: int | None = None) -> float:
        """Record one number (a fraction, not a percentage) under ``key`` (e.g. ``"test/progan/ap"``)."""
        entry = {"value": _jsonable(value)}
        if ci is not None:
            entry["ci"] = [_jsonable(ci[0]), _jsonable(ci[1])]
        if n is not None:
            entry["n"] = int(n)
        self.metrics[key] = entry
        if headline:
            self.headline = key
        plain = _jsonable(value)  # glue plain Python numbers: myst-nb cannot format np.float64 reprs
        if key not in self._glued:
            _glue(key, plain)
            self._glued[key] = plain
        elif self._glued[key] != plain:
            warnings.warn(f"metric {key!r} recorded again with a different value ({self._glued[key]} -> {plain}); "
                          "the page text keeps the first (glue keys are unique per page)", stacklevel=2)
        return value

    def metric_dict(self, values: Mapping[str, float], prefix: str = "") -> dict:
        """Record several metrics at once (e.g. the dict of ``metrics.summary``) under ``prefix/``."""
        for k, v in values.items():
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                self.metric(f"{prefix}/{k}" if prefix else k, v)
        return dict(values)

    def table(self, name: str, df: pd.DataFrame, *, show: pd.DataFrame | None = None) -> None:
        """Store a result table in the record and as ``<chapter>/<name>.csv`` next to it, and show it, or
        the view ``show`` of it (some columns, the first rows, rounded): the record and the CSV keep it whole."""
        flat = df.reset_index() if df.index.name or isinstance(df.index, pd.MultiIndex) else df
        self.tables[name] = _jsonable(flat.to_dict(orient="records"))
        out = self._artifact(name, ".csv")
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        flat.to_csv(tmp, index=False)
        tmp.replace(out)
        _show(df if show is None else show, {**self._evidence("table", name, out), "rows": len(flat)})

    def note(self, key: str, value: Any) -> Any:
        """Free-form provenance (e.g. ``threshold_direction`` chosen on held-out data)."""
        self.notes[key] = _jsonable(value)
        return value

    def dataset(self, name: str, df: pd.DataFrame, *, skipped: int = 0) -> pd.DataFrame:
        """Record which data a result came from: manifest hash, sizes, and files skipped as unreadable."""
        self.data[name] = {
            "manifest_hash": manifest.data_hash(df),
            "rows": int(len(df)),
            "videos": int(manifest.video_key(df).nunique()) if set(manifest.REQUIRED) <= set(df.columns) else None,
            "fake": int((df["label"] == 1).sum()) if "label" in df else None,
            "skipped_unreadable": int(skipped),
        }
        return df

    # -- figures ---------------------------------------------------------------------------------
    def figure(self, name: str, fig) -> None:
        """Save ``fig`` (a matplotlib figure) as ``_build/results/<profile>/<chapter>/<name>.png`` and
        show that PNG."""
        out = self._artifact(name, ".png")
        tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.png")
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        tmp.replace(out)
        self.figures[name] = str(out.relative_to(paths.build_dir()))
        pyplot = sys.modules.get("matplotlib.pyplot")
        manager = getattr(fig.canvas, "manager", None)
        if pyplot is not None and manager is not None and pyplot.fignum_exists(manager.num):
            pyplot.close(fig)  # a pyplot figure would be shown a second time by the inline backend
        png = base64.b64encode(out.read_bytes()).decode("ascii")
        _show({"image/png": png, "text/plain": f"[figure {name}: {self.figures[name]}]"},
              self._evidence("figure", name, out), raw=True)

    def _artifact(self, name: str, suffix: str) -> Path:
        out = paths.results_dir(self.profile) / self.chapter / f"{name}{suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        return out

    def _evidence(self, kind: str, name: str, out: Path) -> dict:
        return {"kind": kind, "name": name, "file": str(out.relative_to(paths.build_dir())), "run_id": self.run_id}

    # -- models ----------------------------------------------------------------------------------
    def model_check(self, models: Mapping[str, tuple[Any, tuple[int, ...]]], *, batches: int = 2) -> pd.DataFrame:
        """Build each model (a module, or a zero-argument callable returning one), push ``batches``
        random batches of the given input shape through it, and record parameter counts and output
        shapes. Under ``DRY_RUN`` the record is saved here; ``dfbook run --dry-run`` stops after this
        cell, so a GPU configuration is checked on a CPU before any GPU hour is spent."""
        import torch

        rows = []
        for name, (model, shape) in models.items():
            t0 = time.perf_counter()
            module = model() if callable(model) and not isinstance(model, torch.nn.Module) else model
            was_training = module.training
            module.eval()
            gen = torch.Generator().manual_seed(0)
            with torch.inference_mode():
                for _ in range(batches):
                    x = torch.randn(*shape, generator=gen)
                    out = module(x)
            module.train(was_training)
            counts = _count_params(module)
            info = {"input_shape": list(shape), "output_shape": _shapes(out), "params_total": counts["total"],
                    "params_trainable": counts["trainable"], "seconds": round(time.perf_counter() - t0, 3)}
            self.models[name] = info
            rows.append({"model": name, **info})
        table = pd.DataFrame(rows)
        if self.dry_run:
            self.save()
            print(f"dry run: {len(rows)} model(s) checked; record {record_path(self.chapter, self.profile, True)}")
        return table

    # -- saving ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        finished = _dt.datetime.now(_dt.timezone.utc)
        return {
            "chapter": self.chapter,
            "profile": self.profile,
            "status": "dry-run" if self.dry_run else "ok",
            "run_id": self.run_id,
            "started": self.started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"),
            "runtime_s": round(time.perf_counter() - self._t0, 2),
            "headline": self.headline,
            "params": self.params,
            "metrics": self.metrics,
            "tables": self.tables,
            "data": self.data,
            "models": self.models,
            "figures": self.figures,
            "notes": self.notes,
            "env": environment(),
            "git": git_state(),
            "dfbook_version": __version__,
        }

    def save(self) -> Path:
        """Write the record atomically and return its path."""
        return write_json_atomic(record_path(self.chapter, self.profile, self.dry_run), self.to_dict())


def start(chapter: str, namespace: Mapping[str, Any]) -> Run:
    """Start a run with the notebook's UPPER_CASE parameters (pass ``globals()``), checked as the runner checks
    them (:func:`dfbook.params.check_chapter`), so a notebook run by hand refuses a bad value at once."""
    params = {k: v for k, v in namespace.items()
              if k.isupper() and not k.startswith("_") and isinstance(v, _PARAM_TYPES)}
    check_chapter(chapter, params)
    from dfbook import runtime

    runtime.configure(params.get("PROFILE"), params.get("DETERMINISTIC"))  # precision and cudnn policy
    return Run(chapter, params)


def load(chapter: str, profile: str = "mini", dry_run: bool = False) -> dict:
    """A saved record (raises FileNotFoundError naming the command that makes it)."""
    path = record_path(chapter, profile, dry_run)
    if not path.is_file():
        raise FileNotFoundError(f"no result record {path}; run `dfbook run {chapter} --profile {profile}` first")
    return json.loads(path.read_text())


def load_all(profile: str = "mini") -> dict[str, dict]:
    folder = paths.results_dir(profile)
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))
            if not p.name.endswith(".dry-run.json")}


def headline_of(record: dict) -> str:
    """``key = value [lo, hi]`` for a record's headline metric, or ``""``."""
    key = record.get("headline")
    if not key or key not in record.get("metrics", {}):
        return ""
    m = record["metrics"][key]
    text = f"{key} = {m['value']:.3f}" if isinstance(m.get("value"), float) else f"{key} = {m.get('value')}"
    if m.get("ci"):
        text += f" [{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]"
    return text


def metric_value(record: dict, key: str) -> float | None:
    entry = record.get("metrics", {}).get(key)
    return None if entry is None else entry.get("value")

