"""DeepfakeBench's preprocessed face frames (Yan et al. NeurIPS 2023 Datasets and Benchmarks) as a frame manifest.

Many researchers already hold the output of DeepfakeBench's ``preprocessing/`` scripts: face crops under
``datasets/rgb/<Dataset>/.../frames/<video>/NNN.png`` (``landmarks/`` and ``masks/`` beside them) and one index file
per dataset, ``preprocessing/dataset_json/<Dataset>.json``, nested label name -> split -> [compression ->] video ->
``{"label": <label name>, "frames": [paths]}`` (SCLBD/DeepfakeBench ``preprocessing/rearrange.py``,
``training/dataset/abstract_dataset.py``). The crops need no ``dfbook prepare``: this adapter reads them as they
are. The label of a label name comes from DeepfakeBench's ``label_dict`` (``training/config/train_config.yaml``)
or from ``labels=``; an unknown name is an error, never guessed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from dfbook.datasets._layout import README, DatasetError, finish, image_format, need_file, root_of

# DeepfakeBench's label_dict (training/config/train_config.yaml): label name -> 0 real / 1 fake.
LABELS = {
    "FF-real": 0, "FF-DF": 1, "FF-F2F": 1, "FF-FS": 1, "FF-NT": 1, "FF-FH": 1, "FF-SH": 1,
    "DFD_real": 0, "DFD_fake": 1, "CelebDFv1_real": 0, "CelebDFv1_fake": 1, "CelebDFv2_real": 0,
    "CelebDFv2_fake": 1, "DFDCP_Real": 0, "DFDCP_FakeA": 1, "DFDCP_FakeB": 1, "DFDC_Real": 0, "DFDC_Fake": 1,
    "DF_real": 0, "DF_fake": 1, "UADFV_Real": 0, "UADFV_Fake": 1,
}
# Label name -> this book's method name (FF++ folder names, as datasets.ffpp); others keep the label name.
METHODS = {"FF-DF": "Deepfakes", "FF-F2F": "Face2Face", "FF-FS": "FaceSwap", "FF-NT": "NeuralTextures",
           "FF-FH": "FaceShifter", "FF-SH": "FaceShifter"}
# DeepfakeBench dataset name -> this book's dataset name (data/README.md sections).
DATASETS = {"FaceForensics++": "ffpp", "Celeb-DF-v1": "celebdf_v1", "Celeb-DF-v2": "celebdf_v2", "UADFV": "uadfv",
            "DeepFakeDetection": "dfd", "DFDC": "dfdc", "DFDCP": "dfdcp", "DeeperForensics-1.0": "deeperforensics",
            "FaceShifter": "ffpp"}
SPLITS = ("train", "val", "test")
NAME = "deepfakebench"


def _identity(dataset: str, video: str) -> tuple[str, str]:
    """(identity, source_identity) from the published video names: FF++ ``000`` / ``000_003`` (target_source),
    Celeb-DF ``id0_0000`` / ``id0_id16_0000``; any other video is its own identity."""
    if dataset == "ffpp":
        m = re.fullmatch(r"(\d+)(?:_(\d+))?", video)
        if m:
            return f"ffpp_{m.group(1)}", f"ffpp_{m.group(2)}" if m.group(2) else ""
    if dataset.startswith("celebdf"):
        m = re.fullmatch(r"(id\d+)(?:_(id\d+))?_\d+", video)
        if m:
            return f"celebdf_{m.group(1)}", f"celebdf_{m.group(2)}" if m.group(2) else ""
    return f"{dataset}_{video}", ""


def _frame_path(raw: str, rgb: Path) -> Path:
    """A frame path of the JSON on this machine: as given when it exists, else its part below ``rgb/`` (the JSON
    was written on another machine, or relative to DeepfakeBench's ``datasets/rgb``) under ``rgb``."""
    p = Path(raw.replace("\\", "/"))
    if p.is_absolute() and p.exists():
        return p
    parts = p.parts
    below = parts[len(parts) - parts[::-1].index("rgb"):] if "rgb" in parts else [x for x in parts if x not in ("/", ".")]
    return rgb.joinpath(*below)


def _videos(tree: dict, compression: str, where: str):
    """(split, video name, info) of one label's subtree ``split -> [compression ->] video -> info``."""
    for split, sub in tree.items():
        if split not in SPLITS:
            raise DatasetError(f"{NAME}: {where} has split {split!r}; DeepfakeBench's are {SPLITS}.")
        if isinstance(sub, dict) and sub and all(isinstance(v, dict) and "frames" not in v for v in sub.values()):
            if compression not in sub:  # FF++-like: one level per compression
                raise DatasetError(f"{NAME}: {where}/{split} has no compression {compression!r} "
                                   f"(found {sorted(sub)}); pass compression=...")
            sub = sub[compression]
        for video, info in sub.items():
            if not isinstance(info, dict) or "frames" not in info:
                raise DatasetError(f"{NAME}: {where}/{split}/{video} has no 'frames' list; not a DeepfakeBench "
                                   "dataset_json file.")
            yield split, video, info


def deepfakebench(dataset: str, root: str | Path | None = None, *, compression: str = "c23",
                  labels: dict[str, int] | None = None, check_files: bool = True) -> pd.DataFrame:
    """One dataset of a DeepfakeBench preprocessed tree as a frame manifest (one row per face crop).

    ``root`` (default ``$DFBOOK_DATA/deepfakebench``) is DeepfakeBench's checkout: ``preprocessing/dataset_json/
    <dataset>.json`` and the crops under ``datasets/rgb/``. ``dataset`` is DeepfakeBench's name
    (``FaceForensics++``, ``Celeb-DF-v2``, ``UADFV``, ...). Frame paths of the JSON are used as given when they
    exist, else their part below ``rgb/`` is read under ``<root>/datasets/rgb`` (index files written on another
    machine). ``labels`` adds label names to :data:`LABELS`. ``frame`` is the number in the file name; ``video_id``
    the JSON's video name; FF++ and Celeb-DF identities as :func:`dfbook.datasets.ffpp` / ``celebdf`` give them.

    DeepfakeBench lists the test videos of a dataset without a validation split as its ``val`` too: a video in
    both ``val`` and ``test`` is ``test`` (counted in ``attrs["n_val_is_test"]``); any other video in two splits is
    an error.
    """
    root = root_of(NAME, root)
    known = {**LABELS, **(labels or {})}
    index = next((p for p in (root / "preprocessing" / "dataset_json" / f"{dataset}.json",
                              root / "dataset_json" / f"{dataset}.json") if p.is_file()), None)
    index = index or need_file(root / "preprocessing" / "dataset_json" / f"{dataset}.json", NAME,
                               f"the index of {dataset} written by DeepfakeBench's preprocessing/rearrange.py")
    try:
        data = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{NAME}: {index} is not a JSON file ({e}); re-run DeepfakeBench's rearrange.py.") from None
    if dataset not in data:
        raise DatasetError(f"{NAME}: {index} has no top-level key {dataset!r} (found {sorted(data)[:5]}).")
    ours = DATASETS.get(dataset, re.sub(r"[^a-z0-9]+", "_", dataset.lower()).strip("_"))
    rgb = root / "datasets" / "rgb"
    rows, split_of, val_is_test = [], {}, 0
    for label_name, tree in data[dataset].items():
        for split, video, info in _videos(tree, compression, f"{index}: {dataset}/{label_name}"):
            name = info.get("label", label_name)
            if name not in known:
                raise DatasetError(f"{NAME}: {index}: label name {name!r} (video {video}) is not in DeepfakeBench's "
                                   f"label_dict; pass labels={{{name!r}: 0 or 1}}.")
            label = int(known[name])
            method = METHODS.get(name, name) if label else "real"
            key = (method, video)
            if key in split_of and split_of[key] != split:
                if {split_of[key], split} == {"val", "test"}:
                    val_is_test += 1
                    split_of[key] = "test"
                    continue
                raise DatasetError(f"{NAME}: {index}: video {video} ({name}) is listed in {split_of[key]} and in "
                                   f"{split}.")
            split_of[key] = split
            identity, source = _identity(ours, video)
            for raw in info["frames"]:
                p = _frame_path(str(raw), rgb)
                digits = re.findall(r"\d+", p.stem)
                if not digits:
                    raise DatasetError(f"{NAME}: frame {p} has no frame number in its name (DeepfakeBench writes "
                                       "NNN.png).")
                rows.append(dict(path=str(p), label=label, dataset=ours, method=method, video_id=video,
                                 frame=int(digits[-1]), identity=identity, split=split, source_identity=source,
                                 family="face_manipulation" if label else "real", domain=ours,
                                 compression=compression if ours == "ffpp" else "", format=image_format(p),
                                 label_name=name))
    if not rows:
        raise DatasetError(f"{NAME}: {index} lists no frames for {dataset}; see {README}, section '{NAME}'.")
    df = pd.DataFrame(rows)
    df["split"] = [split_of[(m, v)] for m, v in zip(df["method"], df["video_id"])]
    df = df.drop_duplicates(subset=["method", "video_id", "frame", "path"]).reset_index(drop=True)
    if check_files:
        gone = ~df["path"].map(lambda p: Path(p).is_file())
        if gone.any():
            raise DatasetError(f"{NAME}: {int(gone.sum())} of {len(df)} frame(s) listed in {index} are not on disk, "
                               f"e.g. {df.loc[gone, 'path'].head(3).tolist()}; the crops belong under {rgb}.")
    df = finish(df, NAME)
    df.attrs["n_val_is_test"] = val_is_test
    return df
