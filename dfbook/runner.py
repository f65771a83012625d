"""Execute chapter notebooks headless: jupytext (MyST .md -> notebook) + papermill.

For each chapter the runner
1. reads ``notebooks/<chapter>.md`` and its parameters cell, merges ``notebooks/params/<chapter>.<profile>.yaml``
   with ``-p NAME VALUE`` overrides, and rejects unknown names, values of the wrong type (papermill would
   only log a warning) and values outside the ``{allowed}`` rule of the parameter's comment (ranges, choices,
   paths that must exist: :mod:`dfbook.params`) -- before any kernel starts;
2. executes it with papermill in a child process (its own environment: ``HF_HUB_OFFLINE=1``, thread count,
   run id), keeping the executed notebook in ``_build/notebooks/<profile>/<chapter>.ipynb`` — also when a
   cell fails, for inspection;
3. checks that the notebook wrote its result record ``_build/results/<profile>/<chapter>.json`` with this
   run's id (a stale record from an earlier run is removed before the run starts; a lock file refuses a second
   run of the same chapter and profile into the same build folder while the first one runs).

``--dry-run`` executes the notebook only up to the cell tagged ``dry-run`` (``run.model_check``), with
``DRY_RUN=True``: on the ``full`` profile that builds the full-size models with random weights on a CPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from filelock import FileLock, Timeout

from dfbook import params, paths, report
from dfbook.params import parameters_cell, parse_parameters


RunnerError = params.ParameterError  # a chapter cannot be started; the message says how to fix it


# -- chapters and parameters -------------------------------------------------------------------------
def chapter_path(chapter: str) -> Path:
    return paths.notebooks_dir() / f"{chapter}.md"


def list_chapters() -> list[str]:
    """Chapters in book order (``_toc.yml``), then any notebook not yet in the table of contents."""
    found = sorted(p.stem for p in paths.notebooks_dir().glob("*.md") if p.stem.lower() != "readme")
    toc = paths.repo_root() / "_toc.yml"
    listed = []
    if toc.is_file():
        parts = (yaml.safe_load(toc.read_text()) or {}).get("parts", [])
        listed = [c["file"].removeprefix("book/chapters/") for part in parts for c in part.get("chapters", [])
                  if c.get("file", "").startswith("book/chapters/")]
    order = [c for c in listed if c in found]
    return order + [c for c in found if c not in order]


def read_notebook(chapter: str):
    import jupytext

    path = chapter_path(chapter)
    if not path.is_file():
        known = ", ".join(list_chapters()) or "none"
        raise RunnerError(f"unknown chapter {chapter!r}: {path} does not exist (chapters: {known})")
    return jupytext.read(path)


def chapter_title(chapter: str) -> str:
    """The chapter's first ``# `` heading."""
    nb = read_notebook(chapter)
    return next((ln.lstrip("# ").strip() for c in nb.cells if c.cell_type == "markdown"
                 for ln in c.source.splitlines() if ln.startswith("# ")), chapter)


def chapter_parameters(chapter: str, nb=None) -> dict[str, dict]:
    nb = nb if nb is not None else read_notebook(chapter)
    return parse_parameters(nb.cells[parameters_cell(nb)].source)


def load_profile(chapter: str, profile: str) -> dict:
    path = paths.notebooks_dir() / "params" / f"{chapter}.{paths.check_profile(profile)}.yaml"
    if not path.is_file():
        raise RunnerError(f"chapter {chapter!r} has no {profile} parameters: create {path}")
    return yaml.safe_load(path.read_text()) or {}


def parse_override(text: str):
    """``-p NAME VALUE``: VALUE is read as YAML (``3`` -> int, ``true`` -> bool, ``[1, 2]`` -> list)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def resolve_parameters(chapter: str, profile: str, overrides: dict | None = None,
                       dry_run: bool = False, nb=None) -> dict:
    spec = chapter_parameters(chapter, nb)
    for required in ("PROFILE", "DRY_RUN", "SEED"):
        if required not in spec:
            raise RunnerError(f"{chapter}: the parameters cell must define {required}")
    prof = load_profile(chapter, profile)
    overrides = dict(overrides or {})
    # types and {allowed} rules (params.py); paths not in a dry run, which reads no data
    params.check_values(chapter, spec, {k: v for k, v in prof.items() if k not in overrides},
                        f"notebooks/params/{chapter}.{profile}.yaml", files=not dry_run)
    params.check_values(chapter, spec, overrides, "command line", files=not dry_run)
    return {**prof, **overrides, "PROFILE": profile, "DRY_RUN": bool(dry_run)}


def dependencies(chapter: str, profile: str = "mini", overrides: dict | None = None) -> list[str]:
    """The chapters whose outputs ``chapter`` reads: the values of its parameters ruled ``{chapters}``
    (:mod:`dfbook.params`), from the profile's YAML and ``overrides``."""
    spec = chapter_parameters(chapter)
    values = {**{k: v["default"] for k, v in spec.items()}, **load_profile(chapter, profile), **(overrides or {})}
    deps = []
    for name, info in spec.items():
        if info.get("allowed") == "chapters":
            value = values.get(name) or []
            deps += value if isinstance(value, list) else [value]
    return [d for d in dict.fromkeys(deps) if d != chapter]


def order(chapters: Sequence[str], profile: str = "mini", overrides: dict | None = None) -> list[str]:
    """``chapters`` with each one after the chapters of this run it depends on (:func:`dependencies`), otherwise
    in the given order. Raises :data:`RunnerError` for a cycle."""
    chapters = list(dict.fromkeys(chapters))
    deps = {ch: [d for d in dependencies(ch, profile, overrides) if d in chapters] for ch in chapters}
    done, out, visiting = set(), [], set()

    def visit(ch, path=()):
        if ch in done:
            return
        if ch in visiting:
            raise RunnerError(f"chapters depend on each other in a cycle: {' -> '.join([*path, ch])}")
        visiting.add(ch)
        for d in deps[ch]:
            visit(d, (*path, ch))
        visiting.discard(ch)
        done.add(ch)
        out.append(ch)

    for ch in chapters:
        visit(ch)
    return out


# -- execution -----------------------------------------------------------------------------------------
@dataclass
class Result:
    chapter: str
    status: str  # ok | dry-run | failed
    seconds: float
    notebook: Path | None = None
    record: Path | None = None
    headline: str = ""
    error: str = ""
    log: Path | None = None
    extra: dict = field(default_factory=dict)


def _truncate_for_dry_run(nb, chapter: str):
    idx = [i for i, c in enumerate(nb.cells) if "dry-run" in c.get("metadata", {}).get("tags", [])]
    if len(idx) != 1:
        raise RunnerError(f"{chapter}: --dry-run needs exactly one cell tagged 'dry-run', found {len(idx)}")
    nb.cells = nb.cells[: idx[0] + 1]
    return nb


KERNEL_START_ATTEMPTS = 3


def _child(spec_path: str) -> int:
    """Runs in a child process: execute one notebook with papermill."""
    import jupytext
    import papermill as pm

    spec = json.loads(Path(spec_path).read_text())
    nb = jupytext.read(spec["source"])
    if spec["dry_run"]:
        nb = _truncate_for_dry_run(nb, spec["chapter"])
    for attempt in range(KERNEL_START_ATTEMPTS):
        try:
            pm.execute_notebook(nb, spec["output"], parameters=spec["parameters"], kernel_name="python3",
                                cwd=spec["cwd"], progress_bar=False, log_output=False,
                                execution_timeout=spec["cell_timeout"], report_mode=False)
            return 0
        except pm.PapermillExecutionError:
            return 1
        except RuntimeError as e:
            # jupyter_client picks free TCP ports before the kernel binds them, so two kernels starting at
            # once can collide ("Address already in use") and the kernel dies before any cell runs.
            if "Kernel died before replying to kernel_info" not in str(e) or attempt + 1 == KERNEL_START_ATTEMPTS:
                raise
            print(f"kernel failed to start ({e}); starting a new one", file=sys.stderr, flush=True)
            time.sleep(1 + attempt)
    return 1


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failing_line(source: str, traceback: Sequence[str]) -> tuple[int, str]:
    """``(line number, text)`` of the cell's line that raised: the ``Cell In[n], line k`` frame of IPython's
    traceback (the first one: the cell's own; the frames below it are library code), else the first line."""
    lines = source.splitlines()
    for frame in traceback:
        m = re.search(r"Cell In\[\d*\], line (\d+)", _ANSI.sub("", frame))
        if m and 0 < int(m.group(1)) <= len(lines):
            k = int(m.group(1))
            return k, lines[k - 1].strip()
    first = next((i for i, ln in enumerate(lines) if ln.strip()), 0)
    return first + 1, lines[first].strip() if lines else ""


def failure_summary(notebook: Path, log: Path | None = None, lines: int = 12) -> str:
    """The failing cell and its error in a few lines, read from the kept notebook (else the log)."""
    import nbformat

    if notebook and notebook.is_file():
        nb = nbformat.read(notebook, as_version=4)
        for i, cell in enumerate(nb.cells):
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            if errors:
                err = errors[0]
                count = cell.get("execution_count")
                line = failing_line(cell.source, err.get("traceback", []))
                return (f"cell {i} (In [{count}]) line {line[0]}: {line[1][:100]}\n"
                        f"    {err['ename']}: {str(err['evalue']).strip()[:600]}")
    if log and log.is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-lines:]
        return "\n".join("    " + ln for ln in tail)
    return "no notebook and no log were written"


CELL_TIMEOUT = {"mini": 1800, "full": None}  # seconds per cell; full: none (long cells resume from checkpoints)


def cell_timeout_for(profile: str, cell_timeout: int | None = None) -> int | None:
    """The per-cell limit of a run: ``cell_timeout`` when given (``0`` = none), else the profile's default --
    30 minutes in ``mini``, where a longer cell is a bug, and no limit in ``full``, whose training and
    extraction cells run for hours."""
    if cell_timeout is None:
        return CELL_TIMEOUT[paths.check_profile(profile)]
    return cell_timeout or None


def run_chapter(chapter: str, profile: str = "mini", overrides: dict | None = None, *, dry_run: bool = False,
                cell_timeout: int | None = None, env: dict | None = None,
                quiet: bool = False) -> Result:
    """Execute one chapter; never raises for a failing cell (the Result says ``failed``). Raises
    :data:`RunnerError` for a bad parameter, and when this chapter and profile are already running into the
    same build folder (a lock file beside its log)."""
    nb = read_notebook(chapter)
    if dry_run:
        _truncate_for_dry_run(nb, chapter)
    params = resolve_parameters(chapter, profile, overrides, dry_run, nb)
    child_env = {**os.environ, **(env or {})}
    build = _build(env)
    suffix = ".dry-run" if dry_run else ""
    out = build / "notebooks" / profile / f"{chapter}{suffix}.ipynb"
    log = build / "logs" / profile / f"{chapter}{suffix}.log"
    record = build / "results" / profile / f"{chapter}{suffix}.json"
    for p in (out, log, record):
        p.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(chapter, profile, dry_run, build):
        record.unlink(missing_ok=True)  # a failed run must not leave an earlier record looking current
        run_id = uuid.uuid4().hex[:12]
        child_env.update({"DFBOOK_RUN_ID": run_id, "DFBOOK_BUILD": str(build), "PYTHONHASHSEED": "0"})
        child_env.setdefault("HF_HUB_OFFLINE", "1")
        # Progress bars are for people watching a kernel; a headless run has none (papermill runs without
        # log_output), and its text bars would land in the book as thousands of lines. tqdm >= 4.66 reads
        # TQDM_DISABLE as the default of every bar. tqdm.auto (imported by timm, open_clip and dfbook) would
        # still warn, with a local path, that the kernel has no ipywidgets: filtered by message, because a -W
        # category must be a built-in class at interpreter start-up.
        child_env.setdefault("TQDM_DISABLE", "1")
        child_env["PYTHONWARNINGS"] = ",".join(filter(None, [child_env.get("PYTHONWARNINGS"),
                                                              "ignore:IProgress not found"]))
        child_env.setdefault("OMP_NUM_THREADS", child_env.get("DFBOOK_THREADS") or "1")  # see runtime.set_threads
        spec = {"chapter": chapter, "source": str(chapter_path(chapter)), "output": str(out),
                "parameters": params, "cwd": str(paths.notebooks_dir()), "dry_run": dry_run,
                "cell_timeout": cell_timeout_for(profile, cell_timeout)}
        spec_file = log.with_suffix(".spec.json")
        spec_file.write_text(json.dumps(spec))
        if not quiet:
            print(f"[{chapter}] {'dry run' if dry_run else 'running'} on {profile} ...", flush=True)
        t0 = time.perf_counter()
        with open(log, "w") as fh:
            proc = subprocess.run([sys.executable, "-m", "dfbook.runner", spec_file], env=child_env,
                                  stdout=fh, stderr=subprocess.STDOUT, cwd=paths.repo_root())
        seconds = time.perf_counter() - t0
        spec_file.unlink(missing_ok=True)
        if proc.returncode != 0:
            return Result(chapter, "failed", seconds, out if out.is_file() else None, None, "",
                          failure_summary(out, log), log)
        if not record.is_file():
            return Result(chapter, "failed", seconds, out, None, "", "the notebook finished but wrote no result "
                          f"record {record} (is `run.save()` the last cell?)", log)
        rec = json.loads(record.read_text())
        if rec.get("run_id") != run_id:
            return Result(chapter, "failed", seconds, out, record, "", f"record {record} is not from this run", log)
        return Result(chapter, rec.get("status", "ok"), seconds, out, record, report.headline_of(rec), "", log)


def _build(env: dict | None) -> Path:
    return Path({**os.environ, **(env or {})}.get("DFBOOK_BUILD") or paths.build_dir())


@contextlib.contextmanager
def _exclusive(chapter: str, profile: str, dry_run: bool, build: Path):
    """Hold the lock of one chapter's outputs in ``build`` (notebook, log, record): a second run of the same
    chapter and profile into the same build folder is refused in one line instead of deleting the first
    one's record and making it report a failure that did not happen."""
    lock_file = build / "logs" / profile / f"{chapter}{'.dry-run' if dry_run else ''}.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunnerError(f"{chapter} ({profile}{', dry run' if dry_run else ''}) is already running with the "
                          f"build folder {build} (lock {lock_file}); wait for that run to finish, or give this "
                          "one its own folder with DFBOOK_BUILD") from None
    try:
        yield
    finally:
        lock.release()


def run(chapters: Sequence[str] | None = None, profile: str = "mini", overrides: dict | None = None, *,
        jobs: int = 1, dry_run: bool = False, cell_timeout: int | None = None, env: dict | None = None) -> list[Result]:
    """Run chapters (default: all), ``jobs`` at a time; print a summary table; return the results."""
    paths.check_profile(profile)
    chapters = list(dict.fromkeys(chapters or list_chapters()))
    for ch in chapters:  # fail before starting anything when a name, a parameter or a busy chapter is wrong
        nb = read_notebook(ch)
        if dry_run:
            _truncate_for_dry_run(nb, ch)
        resolve_parameters(ch, profile, overrides, dry_run, nb)
        with _exclusive(ch, profile, dry_run, _build(env)):
            pass
    jobs = max(1, min(jobs, len(chapters)))
    chapters = order(chapters, profile, overrides)  # a chapter reading others' outputs runs after them
    futures = {}

    def one(ch):
        for dep in dependencies(ch, profile, overrides):  # submitted earlier (topological order): running or done
            if dep in futures:
                futures[dep].result()
        res = run_chapter(ch, profile, overrides, dry_run=dry_run, cell_timeout=cell_timeout, env=env)
        mark = "FAILED" if res.status == "failed" else res.status
        print(f"[{ch}] {mark} in {res.seconds:.1f} s", flush=True)
        if res.status == "failed":
            print(f"[{ch}] {res.error}\n[{ch}] executed notebook kept at {res.notebook}; log {res.log}", flush=True)
        return res

    if jobs == 1:
        results = [one(ch) for ch in chapters]
    else:
        with ThreadPoolExecutor(jobs) as pool:
            for ch in chapters:
                futures[ch] = pool.submit(one, ch)
            results = [futures[ch].result() for ch in chapters]
    print(summary(results))
    return results


def summary(results: Sequence[Result]) -> str:
    rows = [("chapter", "status", "wall (s)", "headline")]
    rows += [(r.chapter, r.status, f"{r.seconds:.1f}", r.error.splitlines()[0][:70] if r.error else r.headline)
             for r in results]
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*row) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


if __name__ == "__main__":  # the child process of run_chapter
    sys.exit(_child(sys.argv[1]))
