"""Face-forgery video datasets in their published layouts: FaceForensics++, Celeb-DF v1/v2, UADFV,
WildDeepfake, and a plain ``real/ fake/`` folder.

The video datasets (FF++, Celeb-DF, UADFV, video folders) return one row per **video** with
``frame = -1`` ("whole video, frames not extracted yet"); :func:`dfbook.prepare.prepare` turns such
a manifest into one row per face crop, carrying every column over. WildDeepfake is published as
face frames and returns one row per frame.

Ids are explicit columns built from the published naming schemes; identities are prefixed with the
dataset family (``ffpp_000``, ``celebdf_id0``) so that ids never collide across datasets.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from dfbook.datasets._layout import (IMAGE_EXTS, README, VIDEO_EXTS, DatasetError, files, finish,
                                     need_dir, need_file, root_of)

VIDEO = -1  # ``frame`` value of a row that stands for a whole video

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
# FF++ calls the uncompressed videos "raw" on disk and "c0" in the paper (Rössler et al. 2019, §3).
FFPP_COMPRESSION_DIRS = {"c0": "raw", "raw": "raw", "c23": "c23", "c40": "c40"}
FFPP_SPLITS = ("train", "val", "test")


def _ffpp_splits(folder: Path) -> dict[str, str]:
    """Official split lists (ondyari/FaceForensics ``dataset/splits/{train,val,test}.json``): each a
    JSON list of ``[target, source]`` id pairs; both ids of a pair belong to that split."""
    split_of: dict[str, str] = {}
    for split in FFPP_SPLITS:
        path = need_file(folder / f"{split}.json", "ffpp",
                         "official split list; copy dataset/splits/*.json from github.com/ondyari/FaceForensics")
        try:
            pairs = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"ffpp: split file {path} is not valid JSON ({e}); re-download it from "
                               "github.com/ondyari/FaceForensics (dataset/splits/).") from e
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise DatasetError(f"ffpp: split file {path} must be a JSON list of [target, source] id pairs, "
                               f"e.g. [[\"953\", \"974\"], ...]; got {str(pairs)[:80]}")
        for vid in (str(v) for pair in pairs for v in pair):
            if split_of.setdefault(vid, split) != split:
                raise DatasetError(f"ffpp: video id {vid} is listed in both {split_of[vid]}.json and "
                                   f"{split}.json under {folder}; the official lists are disjoint.")
    return split_of


def ffpp(root: str | Path | None = None, *, compression: str = "c23",
         methods: tuple[str, ...] = FFPP_METHODS, splits_dir: str | Path | None = None) -> pd.DataFrame:
    """FaceForensics++ videos (Rössler et al. ICCV 2019) as a video manifest.

    Layout (the official download script's): ``original_sequences/youtube/<comp>/videos/000.mp4``,
    ``manipulated_sequences/<Method>/<comp>/videos/000_003.mp4`` with ``<comp>`` = ``raw`` (c0),
    ``c23`` or ``c40``, and the split lists in ``splits/{train,val,test}.json`` (or ``splits_dir``).

    A fake ``000_003`` is target 000 (the video whose face is replaced or re-enacted) with source
    003: ``identity = ffpp_000``, ``source_identity = ffpp_003``. It exists once per method, so the
    video key ``ffpp/<method>/000_003`` keeps the four manipulations apart (the DeepfakeBench
    parent-folder grouping merges them; methods_ucf §4.6). Videos absent from every split list get
    ``split = ""``.
    """
    if compression not in FFPP_COMPRESSION_DIRS:
        raise ValueError(f"ffpp: unknown compression {compression!r}; use one of {sorted(FFPP_COMPRESSION_DIRS)}")
    unknown = set(methods) - set(FFPP_METHODS)
    if unknown:
        raise ValueError(f"ffpp: unknown method(s) {sorted(unknown)}; the four FF++ methods are {FFPP_METHODS}")
    root = root_of("ffpp", root)
    comp_dir = FFPP_COMPRESSION_DIRS[compression]
    comp = "c0" if comp_dir == "raw" else comp_dir
    split_of = _ffpp_splits(Path(splits_dir) if splits_dir else root / "splits")
    common = dict(dataset="ffpp", frame=VIDEO, domain="ffpp", compression=comp)

    rows = []
    real_dir = need_dir(root / "original_sequences" / "youtube" / comp_dir / "videos", "ffpp",
                        f"real videos at compression {compression}")
    for p in files(real_dir, VIDEO_EXTS, "ffpp", recursive=False):
        rows.append(dict(path=str(p), label=0, method="real", video_id=p.stem, identity=f"ffpp_{p.stem}",
                         split=split_of.get(p.stem, ""), source_identity="", family="real", **common))
    for method in methods:
        folder = need_dir(root / "manipulated_sequences" / method / comp_dir / "videos", "ffpp",
                          f"{method} videos at {compression}; pass methods=(...) to load fewer methods")
        for p in files(folder, VIDEO_EXTS, "ffpp", recursive=False):
            m = re.fullmatch(r"(\d+)_(\d+)", p.stem)
            if not m:
                raise DatasetError(f"ffpp: fake video {p} is not named <target>_<source> (e.g. 000_003.mp4); "
                                   f"see {README}, section 'ffpp'.")
            target, source = m.groups()
            split = split_of.get(target, "")
            if split != split_of.get(source, ""):
                raise DatasetError(f"ffpp: {p}: target {target} ({split or 'no split'}) and source {source} "
                                   f"({split_of.get(source) or 'no split'}) are in different split lists.")
            rows.append(dict(path=str(p), label=1, method=method, video_id=p.stem, identity=f"ffpp_{target}",
                             split=split, source_identity=f"ffpp_{source}", family="face_manipulation", **common))
    return finish(rows, "ffpp")


CELEBDF_FOLDERS = {"Celeb-real": 0, "YouTube-real": 0, "Celeb-synthesis": 1}


def _celebdf_test_list(path: Path, name: str) -> dict[tuple[str, str], int]:
    """``List_of_testing_videos.txt``: lines ``<1|0> <folder>/<video>.mp4`` where **1 = real,
    0 = fake** (the opposite of this book's labels). Returns ``{(folder, stem): label}`` with
    1 = fake."""
    listed = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1") or "/" not in parts[1]:
            raise DatasetError(f"{name}: {path} line {n} is {line!r}; expected '<1 real|0 fake> <folder>/<video>.mp4'.")
        rel = Path(parts[1])
        listed[(rel.parts[0], rel.stem)] = 1 - int(parts[0])
    if not listed:
        raise DatasetError(f"{name}: {path} lists no videos; re-download it with the dataset.")
    return listed


def _celebdf_ids(folder: str, stem: str, path: Path, name: str) -> tuple[str, str]:
    """(identity, source_identity). Celeb-real ``id0_0000`` shows celebrity id0; Celeb-synthesis
    ``id0_id16_0000`` is id0's video with id16's face; YouTube-real ``00000`` has no identity label,
    so each video is its own identity."""
    if folder == "YouTube-real":
        return f"celebdf_yt{stem}", ""
    pattern = r"(id\d+)_(id\d+)_\d+" if folder == "Celeb-synthesis" else r"(id\d+)_\d+"
    m = re.fullmatch(pattern, stem)
    if not m:
        example = "id0_id16_0000.mp4" if folder == "Celeb-synthesis" else "id0_0000.mp4"
        raise DatasetError(f"{name}: video {path} does not follow the Celeb-DF naming ({example}).")
    return f"celebdf_{m.group(1)}", (f"celebdf_{m.group(2)}" if m.lastindex == 2 else "")


def celebdf(root: str | Path | None = None, *, version: str = "v2") -> pd.DataFrame:
    """Celeb-DF v1 or v2 (Li et al. CVPR 2020) as a video manifest.

    Layout: ``Celeb-real/``, ``YouTube-real/``, ``Celeb-synthesis/`` (videos, possibly in a
    ``videos/`` subfolder) and ``List_of_testing_videos.txt``. ``split = "test"`` for the listed
    videos (518 in v2), ``"train"`` for all others. Unlike DeepfakeBench (which puts *all* videos in
    train; methods_ucf §4.4) the two are video-disjoint, but the published test list shares
    celebrities with the rest, so identity-disjointness does not hold: use Celeb-DF as a
    cross-dataset *test* set. Fakes get ``method = "deepfake"``; ``subset`` keeps the folder name.
    """
    if version not in ("v1", "v2"):
        raise ValueError(f"celebdf: version must be 'v1' or 'v2', got {version!r}")
    name = f"celebdf_{version}"
    root = root_of(name, root)
    listed = _celebdf_test_list(need_file(root / "List_of_testing_videos.txt", name, "official test list"), name)
    rows, seen = [], set()
    for folder, label in CELEBDF_FOLDERS.items():
        for p in files(need_dir(root / folder, name), VIDEO_EXTS, name):
            identity, source = _celebdf_ids(folder, p.stem, p, name)
            key = (folder, p.stem)
            seen.add(key)
            if key in listed and listed[key] != label:
                raise DatasetError(f"{name}: List_of_testing_videos.txt labels {folder}/{p.name} as "
                                   f"{'fake' if listed[key] else 'real'}, but it sits in {folder}/.")
            rows.append(dict(path=str(p), label=label, dataset=name, method="deepfake" if label else "real",
                             video_id=p.stem, frame=VIDEO, identity=identity,
                             split="test" if key in listed else "train", source_identity=source,
                             family="face_manipulation" if label else "real", domain=name, subset=folder))
    absent = sorted(set(listed) - seen)
    if absent:
        raise DatasetError(f"{name}: {len(absent)} video(s) of List_of_testing_videos.txt are not on disk under "
                           f"{root}, e.g. {['/'.join(k) for k in absent[:3]]}; the download is incomplete.")
    return finish(rows, name)


def uadfv(root: str | Path | None = None) -> pd.DataFrame:
    """UADFV (Li, Chang, Lyu 2018; 49 real + 49 fake videos) as a video manifest.

    Layout: ``real/0000.mp4`` and ``fake/0000_fake.mp4``; a fake and the real video with the same
    number show the same person. No official split exists, so every video gets ``split = "test"``
    (the dataset serves as a cross-dataset test set, as in DeepfakeBench)."""
    root = root_of("uadfv", root)
    rows = []
    for folder, label in (("real", 0), ("fake", 1)):
        for p in files(need_dir(root / folder, "uadfv"), VIDEO_EXTS, "uadfv"):
            person = p.stem
            if label:
                m = re.fullmatch(r"(.+)_fake", p.stem)
                if not m:
                    raise DatasetError(f"uadfv: fake video {p} is not named <id>_fake.mp4; "
                                       f"see {README}, section 'uadfv'.")
                person = m.group(1)
            rows.append(dict(path=str(p), label=label, dataset="uadfv", method="deepfake" if label else "real",
                             video_id=p.stem, frame=VIDEO, identity=f"uadfv_{person}", split="test",
                             family="face_manipulation" if label else "real", domain="uadfv"))
    return finish(rows, "uadfv")


WDF_FOLDERS = {"real_train": (0, "train"), "real_test": (0, "test"),
               "fake_train": (1, "train"), "fake_test": (1, "test")}


def wilddeepfake(root: str | Path | None = None) -> pd.DataFrame:
    """WildDeepfake (Zi et al. ACM MM 2020) face frames as a frame manifest.

    Layout: ``{real,fake}_{train,test}/<N>/**/<frame>.png`` -- the published archives
    ``<split>/<N>.tar.gz`` each extracted into a folder ``<N>/``. Each archive is one video
    (``video_id = <split>_<N>``); ``frame`` is the published frame number (the image's file name), and
    ``sequence`` keeps the sub-folder. When two face sequences of one archive share frame numbers, each
    sequence is a video of its own (``video_id = <split>_<N>/<sequence>``, identity still ``<split>_<N>``). WildDeepfake publishes no identity labels, so ``identity = video_id``:
    its train/test split is video-disjoint, identity-disjointness cannot be checked."""
    root = root_of("wilddeepfake", root)
    rows = []
    for folder, (label, split) in WDF_FOLDERS.items():
        d = need_dir(root / folder, "wilddeepfake")
        videos = sorted((v for v in d.iterdir() if v.is_dir()), key=lambda v: (len(v.name), v.name))
        unextracted = sorted(a.name for a in d.glob("*.tar.gz") if not (d / a.name[:-len(".tar.gz")]).is_dir())
        if unextracted:
            raise DatasetError(f"wilddeepfake: {len(unextracted)} archive(s) in {d} are not extracted, e.g. "
                               f"{unextracted[:3]}; extract each N.tar.gz into a folder N/ "
                               f"(see {README}, section 'wilddeepfake').")
        if not videos:
            raise DatasetError(f"wilddeepfake: no video folders in {d}; see {README}, section 'wilddeepfake'.")
        for v in videos:
            vid = f"{folder}_{v.name}"
            frames = files(v, IMAGE_EXTS, "wilddeepfake")
            bad = [p for p in frames if not p.stem.isdigit()]
            if bad:
                raise DatasetError(f"wilddeepfake: {bad[0]} is not named by its frame number (e.g. 123.png), as "
                                   f"the published archives are; see {README}, section 'wilddeepfake'.")
            seqs = [p.parent.relative_to(v).as_posix() for p in frames]
            # one archive may hold several face sequences; where their frame numbers collide each sequence is
            # a video of its own (identity stays the archive's)
            split_seqs = len({int(p.stem) for p in frames}) < len(frames)
            for p, seq in zip(frames, seqs):
                rows.append(dict(path=str(p), label=label, dataset="wilddeepfake",
                                 method="deepfake" if label else "real",
                                 video_id=f"{vid}/{seq}" if split_seqs else vid, frame=int(p.stem), identity=vid,
                                 split=split, family="face_manipulation" if label else "real",
                                 domain="wilddeepfake", sequence=seq, format=p.suffix.lower().lstrip(".")))
    return finish(rows, "wilddeepfake")


def video_folder(root: str | Path, *, dataset: str | None = None) -> pd.DataFrame:
    """Any folder of videos (or still images) laid out as ``real/**`` and ``fake/[<method>/]**``.

    ``video_id`` is the file's path below ``real/`` or ``fake/<method>/`` without suffix; with no
    identity labels, ``identity = video_id``; ``split = ""``. This is the layout ``dfbook prepare``
    accepts for a folder argument."""
    root = Path(root).expanduser()
    name = dataset or root.name
    need_dir(root, "video_folder")
    rows = []
    for folder, label in (("real", 0), ("fake", 1)):
        base = need_dir(root / folder, "video_folder", "a video folder needs real/ and fake/ sub-folders")
        for p in files(base, VIDEO_EXTS + IMAGE_EXTS, "video_folder"):
            rel = p.relative_to(base)
            method, rel = ("real", rel) if not label else ((rel.parts[0], rel.relative_to(rel.parts[0]))
                                                            if len(rel.parts) > 1 else ("fake", rel))
            vid = rel.with_suffix("").as_posix()
            rows.append(dict(path=str(p), label=label, dataset=name, method=method, video_id=vid,
                             frame=VIDEO if p.suffix.lower() in VIDEO_EXTS else 0, identity=vid, split=""))
    return finish(rows, "video_folder")
