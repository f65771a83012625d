"""Every replicated detector as one kind of object: load it, preprocess an image, ``predict(images) -> P(fake)``,
aggregate frame scores into a video score -- and save it with a card saying what it is and how it was made.

A chapter hands its trained network to :class:`Detector` together with the preprocessing it was trained with and
the *build* that recreates its architecture with random weights (``{"function": "dfbook.methods.univfd:probe_net",
"kwargs": {...}}``: a function of the package, named in the card, never pickled code). :meth:`Detector.save`
writes ``_build/models/<profile>/<chapter>/<name>/``::

    model.safetensors       the state dict (safetensors; shared tensors stored once)
    card.json               architecture, parameter count, training data (manifest hash, datasets, methods),
                            protocol, checkpoint-selection rule, in-distribution metrics with intervals,
                            profile, commit, seed, source ("trained" here, or "released" third-party weights)
    card.md                 the card as a page
    in_distribution.csv     the in-distribution test rows (path, label, video key) and the saved detector's
                            score of each: loading the detector and scoring them again must give the same numbers

:func:`load` rebuilds the architecture, loads the weights (strict key matching) and returns the detector in
eval mode. :func:`available` lists every saved detector of a build folder (``dfbook predict --list``).
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dfbook import paths

WEIGHTS, CARD, PAGE, IN_DISTRIBUTION = "model.safetensors", "card.json", "card.md", "in_distribution.csv"
CARD_VERSION = 1
OUTPUTS = ("logits", "probability")  # what the network returns: logits (1 -> sigmoid, 2 -> softmax[:, 1]) or P(fake)
VIDEO_RULES = ("mean", "majority")   # dfbook.metrics.video_scores(agg=...)
SELECTION = ("validation", "final_epoch", "none", "released")  # how the checkpoint was chosen; never the test set
MODES = ("fit", "squash", "center_crop", "resize_center_crop", "normalise_resize")


# ---------------------------------------------------------------------------------------------- preprocessing
@dataclass(frozen=True)
class Preprocess:
    """uint8 RGB ``(H, W, 3)`` -> float32 ``(3, size, size)``, one of the chapters' input pipelines (JSON-able):

    - ``fit``: resized to ``size`` as :func:`dfbook.imageio.load_images` does (box down, bicubic up), /255, then
      ``(x - mean) / std`` -- UCF, hierarchical, DeepFakeDefenders (mini), the unsupervised fork (mean 0, std 1:
      the network normalises inside);
    - ``squash``: torchvision ``Resize((size, size))`` (bilinear, aspect not kept), ToTensor, Normalize -- CLIP PEFT;
    - ``center_crop`` / ``resize_center_crop``: UnivFD's test transforms (centre crop of the native image,
      zero-padded when smaller; or resize the shorter side to ``load_size`` first);
    - ``normalise_resize``: ToTensor, Normalize, then antialiased bilinear resize -- DeepFakeDefenders' ``infer.py``.
    """

    size: int
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)
    mode: str = "fit"
    load_size: int | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"preprocess mode {self.mode!r}; expected one of {MODES}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def __call__(self, rgb: np.ndarray):
        import torch
        from PIL import Image
        from torchvision.transforms import functional as TF

        rgb = np.ascontiguousarray(rgb)
        if self.mode == "fit":
            from dfbook.imageio import _fit

            x = torch.from_numpy(np.array(_fit(rgb, self.size))).permute(2, 0, 1).float().div_(255.0)
            return (x - torch.tensor(self.mean).view(3, 1, 1)) / torch.tensor(self.std).view(3, 1, 1)
        if self.mode == "normalise_resize":
            x = TF.normalize(TF.to_tensor(np.array(rgb)), list(self.mean), list(self.std))
            return TF.resize(x, [self.size, self.size], antialias=True)
        img = Image.fromarray(rgb)
        if self.mode == "squash":
            img = TF.resize(img, [self.size, self.size])
        else:
            if self.mode == "resize_center_crop":
                img = TF.resize(img, self.load_size or self.size, interpolation=TF.InterpolationMode.BILINEAR)
            img = TF.center_crop(img, [self.size, self.size])
        return TF.normalize(TF.to_tensor(img), list(self.mean), list(self.std))

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Preprocess":
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


# ---------------------------------------------------------------------------------------------- the detector
def _resolve(function: str) -> Callable:
    """``"dfbook.methods.univfd:probe_net"`` -> the function. Only the package's own functions are accepted: a card
    is data, and loading one must never import code from elsewhere."""
    module, _, name = function.partition(":")
    if not (module == "dfbook" or module.startswith("dfbook.")) or not name:
        raise ValueError(f"build function {function!r} must be 'dfbook.<module>:<function>'")
    return getattr(importlib.import_module(module), name)


def build_module(build: Mapping):
    """The architecture of ``build`` with random weights (the card's ``build`` entry)."""
    return _resolve(build["function"])(**build.get("kwargs", {}))


@dataclass
class Detector:
    """A trained (or released) detector. ``module`` maps a batch of :attr:`preprocess` outputs ``(N, 3, S, S)`` to
    logits (``output="logits"``: one logit -> sigmoid, two -> softmax class 1; a tuple output's first element) or
    directly to P(fake) (``output="probability"``). ``video_rule`` turns frame scores into a video score."""

    name: str
    chapter: str
    module: Any
    preprocess: Preprocess
    build: dict
    output: str = "logits"
    video_rule: str = "mean"
    card: dict = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self):
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if self.video_rule not in VIDEO_RULES:
            raise ValueError(f"video_rule must be one of {VIDEO_RULES}, got {self.video_rule!r}")

    @property
    def ref(self) -> str:
        """``<chapter>/<name>``: how ``dfbook predict`` names it."""
        return f"{self.chapter}/{self.name}"

    def to(self, device) -> "Detector":
        self.module.to(device)
        return self

    def _scores(self, x):
        import torch

        out = self.module(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        out = out.float()
        if self.output == "probability":
            return out.reshape(-1)
        if out.ndim == 1 or out.shape[1] == 1:
            return torch.sigmoid(out.reshape(-1))
        if out.shape[1] != 2:
            raise ValueError(f"{self.ref}: a logits output needs 1 or 2 columns, got {tuple(out.shape)}")
        return torch.softmax(out, dim=1)[:, 1]

    def predict_tensor(self, x, batch_size: int = 64):
        """P(fake) ``(N,)`` numpy for an already preprocessed batch ``(N, 3, S, S)``."""
        import torch

        device = next(self.module.parameters()).device
        self.module.eval()
        with torch.inference_mode():
            parts = [self._scores(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
        return torch.cat(parts).numpy().astype(np.float64) if parts else np.zeros(0)

    def predict(self, images: Sequence, *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """P(fake) ``(N,)`` in [0, 1] for uint8 RGB arrays ``(H, W, 3)`` or image paths (read with
        :func:`dfbook.imageio.read_rgb`, which raises naming an unreadable file)."""
        import torch

        from dfbook import runtime
        from dfbook.imageio import read_rgb

        out, batch = [], []
        for img in runtime.bar(images, desc=self.ref, unit="img", progress=progress):
            batch.append(self.preprocess(read_rgb(img) if isinstance(img, (str, Path)) else np.asarray(img)))
            if len(batch) == batch_size:
                out.append(self.predict_tensor(torch.stack(batch), batch_size))
                batch = []
        if batch:
            out.append(self.predict_tensor(torch.stack(batch), batch_size))
        return np.concatenate(out) if out else np.zeros(0)

    def video_scores(self, scores, keys, labels=None) -> pd.DataFrame:
        """One score per video by this detector's rule (:func:`dfbook.metrics.video_scores`)."""
        from dfbook import metrics

        return metrics.video_scores(scores, keys, labels, agg=self.video_rule)

    # -- saving ----------------------------------------------------------------------------------------------
    def save(self, folder: str | Path | None = None, *, profile: str = "mini", card: Mapping | None = None,
             in_distribution: pd.DataFrame | None = None) -> Path:
        """Write weights, card (JSON and page) and, given ``in_distribution`` (rows ``path, label, key, score``),
        its CSV. ``folder`` defaults to :func:`model_dir`. Files are written under temporary names and renamed, so
        a killed run leaves either the old detector or the new one."""
        from safetensors.torch import save_model

        folder = Path(folder) if folder is not None else model_dir(profile, self.chapter, self.name)
        folder.mkdir(parents=True, exist_ok=True)
        self.card = make_card(self, profile=profile, **dict(card or {}))
        tmp = folder / f".{WEIGHTS}.{os.getpid()}.tmp"
        save_model(self.module, str(tmp), metadata={"dfbook_card_version": str(CARD_VERSION)})
        tmp.replace(folder / WEIGHTS)
        if in_distribution is not None:
            _atomic_text(folder / IN_DISTRIBUTION, in_distribution.to_csv(index=False))
        _atomic_text(folder / CARD, json.dumps(self.card, indent=1, default=str))
        _atomic_text(folder / PAGE, render_card(self.card))
        self.path = folder
        return folder


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _count(module) -> dict[str, int]:
    ps = {id(p): p for p in module.parameters()}.values()
    return {"total": int(sum(p.numel() for p in ps)), "trainable": int(sum(p.numel() for p in ps if p.requires_grad))}


def make_card(det: Detector, *, profile: str, source: str = "trained", architecture: str = "",
              data: Mapping | None = None, protocol: str = "", selection: str = "validation",
              metrics: Mapping | None = None, seed: int | None = None, run_id: str | None = None,
              notes: Mapping | None = None, released_from: str | None = None) -> dict:
    """The card of ``det`` (see the module docstring). ``selection`` must say how the checkpoint was chosen: on a
    validation split, the final epoch, no training (nearest neighbour) or released weights -- never the test set."""
    from dfbook import __version__, report

    if selection not in SELECTION:
        raise ValueError(f"{det.ref}: checkpoint selection {selection!r} must be one of {SELECTION} "
                         "(a checkpoint chosen on the test set is not a result)")
    if source not in ("trained", "released"):
        raise ValueError(f"{det.ref}: source must be 'trained' or 'released', got {source!r}")
    git = report.git_state()
    return {
        "card_version": CARD_VERSION, "name": det.name, "chapter": det.chapter, "ref": det.ref,
        "source": source, "released_from": released_from,
        "architecture": architecture or type(det.module).__name__, "build": det.build,
        "parameters": _count(det.module), "preprocess": det.preprocess.to_dict(), "output": det.output,
        "video_rule": det.video_rule, "training_data": dict(data or {}), "protocol": protocol,
        "checkpoint_selection": selection, "in_distribution": report._jsonable(dict(metrics or {})),
        "profile": profile, "seed": seed, "run_id": run_id or os.environ.get("DFBOOK_RUN_ID"),
        "commit": git.get("commit"), "dirty": git.get("dirty"), "dfbook_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "notes": report._jsonable(dict(notes or {})),
    }


def render_card(card: Mapping) -> str:
    """The card as a Markdown page."""
    p, data = card.get("parameters", {}), card.get("training_data", {})
    lines = [f"# {card['ref']}", "",
             f"*{card['source']} detector* -- profile `{card['profile']}`, commit `{(card.get('commit') or 'unknown')[:10]}`"
             f", seed {card.get('seed')}, run `{card.get('run_id')}`", "",
             "| | |", "|---|---|",
             f"| architecture | {card['architecture']} |",
             f"| parameters | {p.get('total', 0):,} total, {p.get('trainable', 0):,} trained |",
             f"| preprocessing | {card['preprocess']} |",
             f"| output | {card['output']}; video score: {card['video_rule']} of frame P(fake) |",
             f"| checkpoint selection | {card['checkpoint_selection']} |",
             f"| protocol | {card.get('protocol') or '-'} |"]
    if card.get("released_from"):
        lines.append(f"| released weights | {card['released_from']} |")
    for k in ("datasets", "methods", "manifest_hash", "rows"):
        if k in data:
            lines.append(f"| training {k.replace('_', ' ')} | {data[k]} |")
    lines += ["", "## In-distribution metrics", "", "| metric | value | 95 % interval |", "|---|---|---|"]
    for k, m in (card.get("in_distribution") or {}).items():
        m = m if isinstance(m, Mapping) else {"value": m}
        ci = m.get("ci")
        lines.append(f"| {k} | {m.get('value'):.4f} | {f'[{ci[0]:.4f}, {ci[1]:.4f}]' if ci else '-'} |"
                     if isinstance(m.get("value"), float) else f"| {k} | {m.get('value')} | - |")
    lines += ["", f"Load it with `dfbook.detector.load({card['ref']!r}, profile={card['profile']!r})`; score files "
              f"with `dfbook predict {card['ref']} PATH...`.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- where and loading
def models_dir(profile: str = "mini") -> Path:
    """``_build/models/<profile>``, or ``$DFBOOK_MODELS/<profile>`` when set: the saved detectors of another build
    folder (``dfbook spread leaderboard`` runs each seed in its own build folder, reading one set of detectors)."""
    root = os.environ.get("DFBOOK_MODELS")
    base = Path(root).expanduser().resolve() if root else paths.build_dir("models")
    return base / paths.check_profile(profile)


def model_dir(profile: str, chapter: str, name: str) -> Path:
    """``_build/models/<profile>/<chapter>/<name>``."""
    return models_dir(profile) / chapter / name


def locate(ref: str | Path, profile: str = "mini") -> Path:
    """A folder holding ``card.json``: ``ref`` as a path, else ``<chapter>/<name>`` under :func:`models_dir`."""
    as_path = Path(ref).expanduser()
    if (as_path / CARD).is_file():
        return as_path
    folder = models_dir(profile) / str(ref)
    if (folder / CARD).is_file():
        return folder
    known = ", ".join(available(profile)["detector"]) or "none saved yet"
    raise FileNotFoundError(f"no detector {str(ref)!r} (no {CARD} in {as_path} nor in {folder}); saved detectors "
                            f"of the {profile} profile: {known} (`dfbook predict --list`; a chapter run saves its "
                            "detectors: `dfbook run <chapter>`)")


def load(ref: str | Path, profile: str = "mini", device: str = "cpu") -> Detector:
    """A saved detector (a folder, or ``<chapter>/<name>`` of ``profile``) in eval mode on ``device``."""
    from safetensors.torch import load_model

    folder = locate(ref, profile)
    card = json.loads((folder / CARD).read_text())
    module = build_module(card["build"])
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing beside its card; re-run `dfbook run {card['chapter']}`")
    try:
        missing, unexpected = load_model(module, str(weights), strict=False)
    except RuntimeError as e:  # shapes differ
        missing, unexpected = [str(e).splitlines()[-1].strip()], []
    if missing or unexpected:
        raise ValueError(f"{weights} does not match the architecture of its card ({card['build']['function']}): "
                         f"missing or different {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}; re-run "
                         f"`dfbook run {card['chapter']}`")
    det = Detector(card["name"], card["chapter"], module.eval(), Preprocess.from_dict(card["preprocess"]),
                   card["build"], card["output"], card["video_rule"], card, folder)
    return det.to(device)


def available(profile: str | None = None) -> pd.DataFrame:
    """Every saved detector: ``detector, profile, source, chapter, architecture, parameters, selection,
    in-distribution AUC, commit, created, path``."""
    rows = []
    for prof in ([profile] if profile else paths.PROFILES):
        root = models_dir(prof)
        for card_file in sorted(root.glob(f"*/*/{CARD}")) if root.is_dir() else []:
            try:
                card = json.loads(card_file.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            auc = (card.get("in_distribution") or {}).get("frame_auc") or {}
            rows.append({"detector": card.get("ref"), "profile": prof, "source": card.get("source"),
                         "released_from": card.get("released_from") or "",
                         "architecture": card.get("architecture"),
                         "parameters": (card.get("parameters") or {}).get("total"),
                         "selection": card.get("checkpoint_selection"),
                         "in_distribution_auc": auc.get("value") if isinstance(auc, Mapping) else auc,
                         "commit": (card.get("commit") or "")[:10], "created": card.get("created"),
                         "path": str(card_file.parent)})
    return pd.DataFrame(rows, columns=["detector", "profile", "source", "released_from", "architecture", "parameters",
                                       "selection", "in_distribution_auc", "commit", "created", "path"])


# ---------------------------------------------------------------------------------------------- what chapters call
def in_distribution_metrics(y, s, keys, *, n_boot: int = 200, seed: int = 0,
                            video_rule: str = "mean") -> dict[str, dict]:
    """Frame AUC/AP/EER/TPR@FPR 1e-2 and video AUC, each with a 95 % bootstrap interval over whole videos."""
    from dfbook import metrics

    y, s, keys = np.asarray(y), np.asarray(s, dtype=np.float64), np.asarray(keys)
    out = {}
    fns = {"frame_auc": metrics.auc, "frame_ap": metrics.ap, "frame_eer": metrics.eer_nearest,
           "frame_tpr@fpr=0.01": lambda yy, ss: metrics.tpr_at_fpr(yy, ss, 1e-2)}
    for k, fn in fns.items():
        ci = metrics.bootstrap_ci(fn, y, s, keys=keys, n_boot=n_boot, seed=seed)
        out[k] = {"value": ci.value, "ci": list(ci.interval)}
    vid = metrics.video_scores(s, keys, y, agg=video_rule)
    ci = metrics.bootstrap_ci(metrics.auc, vid["label"].to_numpy(), vid["score"].to_numpy(), n_boot=n_boot, seed=seed)
    out["video_auc"] = {"value": ci.value, "ci": list(ci.interval)}
    out["n_frames"], out["n_videos"] = int(len(y)), int(len(vid))
    return out


def save_trained(run, det: Detector, test: pd.DataFrame, *, train: pd.DataFrame | None = None,
                 architecture: str = "", protocol: str = "", selection: str = "validation",
                 chapter_scores=None, check: tuple | None = None, source: str = "trained",
                 released_from: str | None = None, n_boot: int = 200, batch_size: int = 128) -> dict:
    """Score the in-distribution ``test`` manifest with ``det`` (through its own preprocessing, from the files),
    compute the card's metrics, and save the detector under ``_build/models/<run.profile>/<chapter>/<name>``.

    ``chapter_scores``: the chapter's own scores of the same rows; the largest difference to the saved detector's
    is recorded in the card (``notes.reproduces_chapter_max_abs_diff``) and in the run (``models/<name>/...``).
    ``check = (rows, scores)``: the same comparison on other rows the chapter scored (when it never scored the
    in-distribution test set itself).
    Returns one summary row (``detector, frame_auc, video_auc, max_abs_diff, path``)."""
    from dfbook import manifest

    test = test.reset_index(drop=True)
    scores = det.predict(test["path"].tolist(), batch_size=batch_size)
    keys = manifest.video_key(test).to_numpy() if {"dataset", "method", "video_id"} <= set(test.columns) \
        else test["path"].astype(str).to_numpy()
    mets = in_distribution_metrics(test["label"].to_numpy(), scores, keys, n_boot=n_boot,
                                   seed=int(run.params.get("SEED", 0)), video_rule=det.video_rule)
    diff = None if chapter_scores is None else float(np.max(np.abs(np.asarray(chapter_scores, np.float64) - scores)))
    if check is not None:
        again = det.predict(check[0]["path"].tolist(), batch_size=batch_size)
        diff = float(np.max(np.abs(np.asarray(check[1], np.float64) - again)))
    data = {}
    if train is not None:
        data = {"manifest_hash": manifest.data_hash(train), "rows": int(len(train)),
                "datasets": sorted(map(str, train["dataset"].unique())) if "dataset" in train else [],
                "methods": sorted(map(str, train["method"].unique())) if "method" in train else []}
    data["test_manifest_hash"] = manifest.data_hash(test)
    rows = pd.DataFrame({"path": test["path"].astype(str), "label": test["label"].astype(int), "key": keys,
                         "score": scores})
    folder = det.save(profile=run.profile, in_distribution=rows, card={
        "source": source, "architecture": architecture, "data": data, "protocol": protocol, "selection": selection,
        "metrics": mets, "seed": run.params.get("SEED"), "run_id": run.run_id, "released_from": released_from,
        "notes": {"reproduces_chapter_max_abs_diff": diff}})
    run.models[f"saved/{det.name}"] = {"path": str(folder.relative_to(paths.build_dir())) if folder.is_relative_to(
        paths.build_dir()) else str(folder), "parameters": det.card["parameters"], "source": source,
        "frame_auc": mets["frame_auc"]["value"], "max_abs_diff": diff}
    return {"detector": det.ref, "source": source, "frame_auc": mets["frame_auc"]["value"],
            "frame_auc_ci": tuple(round(v, 3) for v in mets["frame_auc"]["ci"]),
            "video_auc": mets["video_auc"]["value"], "max_abs_diff_to_chapter": diff,
            "parameters": det.card["parameters"]["total"]}


def saved_table(rows: Sequence[Mapping]) -> pd.DataFrame:
    """The save cells' summary table."""
    return pd.DataFrame(list(rows)).set_index("detector")
