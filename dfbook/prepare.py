"""``dfbook prepare``: videos (or still images) -> face crops as PNG + a manifest.

Per source: ``n_frames`` evenly spaced frames (``np.linspace(0, N-1, n_frames, dtype=int)``, as
DeepfakeBench's ``fixed_num_frames``; methods_ucf §4.3) -> the largest face found by MTCNN
(facenet-pytorch, which ships its weights) or OpenCV's Haar cascade -> a square crop of ``scale``
times the box (FF++'s ``get_boundingbox``) -> ``size`` x ``size`` PNG. DeepfakeBench aligns with
dlib landmarks instead; this step deliberately needs no landmark model download.

Datasets published as face crops (WildDeepfake) are taken as they are: each image is resized to ``size``, with no
detection (``cropped``). One output folder can hold several datasets: each call replaces the rows of its own
sources in ``manifest.csv`` (and the other tables) and keeps the rest, so ``prepare ffpp OUT``, ``prepare
celebdf_v2 OUT``, ``prepare wilddeepfake OUT`` build one face manifest of the three.

Nothing is dropped silently: frames with no face go to ``faces_missing.csv`` (reason ``no_face``
or ``decode_failed``), unreadable sources raise (strict) or go to ``skipped.csv`` (``lenient``).
Each finished source gets a done marker (written atomically), so a rerun after an interruption
skips finished videos; the parameters are pinned in ``prepare.json`` so a rerun with other
parameters cannot mix two crops in one folder.

Output folder::

    faces/<dataset>/<method>/<video_id>/<frame:04d>.png
    manifest.csv  faces_missing.csv  skipped.csv  summary.json  prepare.json  .done/
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from dfbook import datasets, imageio, manifest, runtime
from dfbook.datasets import VIDEO
from dfbook.datasets._layout import VIDEO_EXTS

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the output of the same parameters changes
DETECTORS = ("mtcnn", "haar")
VIDEO_DATASETS = {"ffpp": datasets.ffpp, "celebdf_v1": partial(datasets.celebdf, version="v1"),
                  "celebdf_v2": partial(datasets.celebdf, version="v2"), "uadfv": datasets.uadfv}
# Published as face crops: resized, never re-detected.
CROPPED_DATASETS = {"wilddeepfake": datasets.wilddeepfake}
MISSING_COLUMNS = ["source_path", "video_key", "frame", "reason"]
SKIPPED_COLUMNS = ["source_path", "video_key", "reason"]

Box = tuple[np.ndarray, float]  # (x0, y0, x1, y1) in pixels, detector score (NaN for Haar)


class UnreadableInput(OSError):
    """A video or image cannot be decoded; the message names the file and the fix."""


@dataclass
class Prepared:
    """Result of :func:`prepare`. ``manifest``: one row per face PNG (absolute ``path``; every
    column of the source row, ``frame`` = index in the video, ``source_path``, ``face_score``,
    ``box_*``). ``faces_missing``: frames without a face. ``skipped``: unreadable sources."""

    manifest: pd.DataFrame
    faces_missing: pd.DataFrame
    skipped: pd.DataFrame
    n_sources: int
    out_dir: Path

    def counts(self) -> dict[str, int]:
        """Counts for a chapter's result record."""
        reasons = self.faces_missing["reason"]
        with_face = set(self.manifest["source_path"]) if len(self.manifest) else set()
        return {"sources": self.n_sources, "sources_unreadable": len(self.skipped),
                "sources_without_face": self.n_sources - len(self.skipped) - len(with_face),
                "faces": len(self.manifest), "frames_without_face": int((reasons == "no_face").sum()),
                "frames_undecodable": int((reasons == "decode_failed").sum())}


# ---------------------------------------------------------------------------------------- detection

def make_detector(name: str = "mtcnn", device: str = "cpu") -> Callable[[np.ndarray], Box | None]:
    """A function ``rgb uint8 (H, W, 3) -> (box, score)`` of the largest face, or ``None``.

    Largest face, as DeepfakeBench (methods_ucf §4.3): a deepfake video's subject fills the frame."""
    if name == "mtcnn":
        try:
            from facenet_pytorch import MTCNN
        except ImportError as e:
            raise RuntimeError(
                "detector 'mtcnn' needs facenet-pytorch, which ships its weights but pins old torch/numpy: "
                "install it with `pip install --no-deps facenet-pytorch==2.6.0`, or use detector='haar' "
                "(--detector haar).") from e
        net = MTCNN(keep_all=True, device=device)

        def detect(rgb: np.ndarray) -> Box | None:
            boxes, probs = net.detect(rgb)
            if boxes is None:
                return None
            # facenet-pytorch 2.6 returns dtype=object arrays under numpy 2 (tooling_facts §8).
            boxes, probs = np.asarray(boxes).astype(float), np.asarray(probs).astype(float)
            i = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
            return boxes[i], float(probs[i])
        return detect
    if name == "haar":
        if not hasattr(cv2, "CascadeClassifier"):
            raise RuntimeError("detector 'haar' needs OpenCV 4.x (OpenCV 5 dropped the Haar cascades): "
                               "pip install 'opencv-python-headless<5'.")
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        if cascade.empty():
            raise RuntimeError(f"OpenCV's haarcascade_frontalface_default.xml is missing from {cv2.data.haarcascades}.")

        def detect(rgb: np.ndarray) -> Box | None:
            found = cascade.detectMultiScale(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), scaleFactor=1.1,
                                             minNeighbors=5, minSize=(30, 30))
            if len(found) == 0:
                return None
            x, y, w, h = max(found, key=lambda b: b[2] * b[3])
            return np.array([x, y, x + w, y + h], float), float("nan")
        return detect
    raise ValueError(f"unknown detector {name!r}; use one of {DETECTORS}")


def square_crop(rgb: np.ndarray, box: np.ndarray, scale: float = 1.3) -> np.ndarray:
    """Square of side ``scale * max(w, h)`` centred on the box, moved/shrunk to stay inside the
    image -- FF++'s ``get_boundingbox`` (ondyari/FaceForensics, classification/detect_from_video.py)."""
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = box
    side = int(max(x1 - x0, y1 - y0) * scale)
    left = max(int((x0 + x1) / 2 - side // 2), 0)
    top = max(int((y0 + y1) / 2 - side // 2), 0)
    side = min(side, width - left, height - top)
    return rgb[top:top + side, left:left + side]


def resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """Area interpolation when shrinking (no aliasing), bicubic when enlarging."""
    interp = cv2.INTER_AREA if rgb.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(rgb, (size, size), interpolation=interp)


# ------------------------------------------------------------------------------------------ reading

def frame_indices(n_total: int, n_frames: int, *, fps: float | None = None,
                  video_fps: float | None = None) -> np.ndarray:
    """Evenly spaced frame indices, DeepfakeBench's ``fixed_num_frames``; fewer when the video is
    shorter than ``n_frames`` (duplicates removed). With ``fps``: one frame every ``1/fps`` seconds
    from the first (the CLIP seed's 1 fps frame package), as many as the video has, given its
    ``video_fps``; ``n_frames`` is then ignored."""
    if fps is None:
        return np.unique(np.linspace(0, n_total - 1, n_frames, dtype=int))
    if not fps > 0 or not (video_fps or 0) > 0:
        raise ValueError(f"frame_indices: need fps > 0 and the video's frame rate > 0 (got {fps}, {video_fps})")
    return np.unique(np.round(np.arange(0, n_total, video_fps / fps)).astype(int).clip(0, n_total - 1))


def read_frames(path: Path, n_frames: int, fps: float | None = None) -> Iterator[tuple[int, np.ndarray | None]]:
    """``(frame index, RGB uint8 or None if that frame would not decode)`` for the sampled frames.

    Decodes sequentially and retrieves only the wanted frames (seeking is unreliable in many
    codecs). Raises :class:`UnreadableInput` for a file OpenCV cannot open or that has no frames."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            size = path.stat().st_size if path.exists() else None
            why = ("does not exist" if size is None else "is empty (0 bytes)" if size == 0
                   else "cannot be opened by OpenCV (truncated, or an unsupported codec)")
            raise UnreadableInput(f"video {path} {why}; re-download it, or pass lenient=True (--lenient) "
                                  "to skip and count such files")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n <= 0:  # container without a frame count: count by decoding, then start again
            n = 0
            while cap.grab():
                n += 1
            cap.release()
            cap = cv2.VideoCapture(str(path))
        if n == 0:
            raise UnreadableInput(f"video {path} has no decodable frame; re-download it, or pass "
                                  "lenient=True (--lenient) to skip and count such files")
        video_fps = cap.get(cv2.CAP_PROP_FPS) if fps else None
        if fps and not video_fps > 0:
            raise UnreadableInput(f"video {path} does not state its frame rate, so --fps cannot sample it; "
                                  "use --frames N (evenly spaced) instead")
        pos, ok = 0, True
        for idx in frame_indices(n, n_frames, fps=fps, video_fps=video_fps):
            while ok and pos < idx:
                ok, pos = cap.grab(), pos + 1
            frame = None
            if ok:
                ok, frame = cap.read()
                pos += 1
            yield int(idx), (cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if ok and frame is not None else None)
    finally:
        cap.release()


# ---------------------------------------------------------------------------------------- preparing

def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "_"


def _video_folder(row: dict) -> str:
    return "/".join(_safe(row[c]) for c in ("dataset", "method", "video_id"))


def _sources(src) -> pd.DataFrame:
    """``src`` as a manifest: a DataFrame, a manifest CSV (relative paths resolved against its
    folder) or a folder laid out as ``real/`` + ``fake/`` (see ``datasets.video_folder``)."""
    if isinstance(src, pd.DataFrame):
        return manifest.validate(src.reset_index(drop=True), name="prepare source")
    path = Path(src).expanduser()
    if path.is_dir():
        return datasets.video_folder(path)
    if path.is_file() and path.suffix == ".csv":
        return manifest.read(path)  # relative paths resolved against its folder
    raise FileNotFoundError(f"prepare: source {path} is neither a manifest CSV nor a folder with real/ and fake/ "
                            f"sub-folders; dataset names ({', '.join(VIDEO_DATASETS)}) work on the command line.")


def _whole_face(rgb: np.ndarray) -> Box:
    """The "detection" of an image that is already a face crop: the whole image."""
    return np.array([0, 0, rgb.shape[1], rgb.shape[0]], float), float("nan")


def _process(row: dict, out_dir: Path, detect: Callable, n_frames: int, scale: float, size: int,
             fps: float | None = None, cropped: bool = False) -> dict:
    """Faces and missing frames of one source; PNGs written under ``out_dir/faces``. ``cropped``: the image is
    a face crop already -- resized to ``size`` whole (as DeepfakeBench reads crops), not detected again."""
    path = Path(row["path"])
    if row["frame"] == VIDEO or path.suffix.lower() in VIDEO_EXTS:
        frames = read_frames(path, n_frames, fps)
    else:
        try:
            frames = iter([(int(row["frame"]), imageio.read_rgb(path))])
        except imageio.ImageReadError as e:
            raise UnreadableInput(str(e)) from e
    folder = out_dir / "faces" / _video_folder(row)
    faces, missing = [], []
    for idx, rgb in frames:
        found = (_whole_face(rgb) if cropped else detect(rgb)) if rgb is not None else None
        if found is None:
            missing.append({"frame": idx, "reason": "no_face" if rgb is not None else "decode_failed"})
            continue
        box, score = found
        folder.mkdir(parents=True, exist_ok=True)
        file = folder / f"{idx:04d}.png"
        crop = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA if max(rgb.shape[:2]) > size
                          else cv2.INTER_CUBIC) if cropped else resize(square_crop(rgb, box, scale), size)
        cv2.imwrite(str(file), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        faces.append({"frame": idx, "file": file.relative_to(out_dir).as_posix(), "score": score,
                      "box": [round(float(v), 1) for v in box]})
    if not faces and missing and all(m["reason"] == "decode_failed" for m in missing):
        raise UnreadableInput(f"{path}: none of the sampled frames decodes; re-download it, or pass "
                              "lenient=True (--lenient) to skip and count such files")
    return {"source_path": str(path), "faces": faces, "missing": missing}


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)  # atomic: a marker is either absent or complete


def _pin_params(out_dir: Path, params: dict) -> None:
    pinned = out_dir / "prepare.json"
    if pinned.is_file():
        old = json.loads(pinned.read_text())
        if old != params:
            raise ValueError(f"prepare: {out_dir} was prepared with {old}, not {params}; use another output "
                             "folder, or delete this one to start again.")
    else:
        _write_json(pinned, params)


def _keep_earlier(out_dir: Path, sources: set[str], faces: pd.DataFrame, missing: pd.DataFrame,
                  skipped: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """This call's tables plus the rows an earlier call wrote to ``out_dir`` for *other* sources (another
    dataset appended to the same folder), and how many such earlier sources there are."""
    earlier = {}
    for name, cols in (("manifest.csv", None), ("faces_missing.csv", MISSING_COLUMNS),
                       ("skipped.csv", SKIPPED_COLUMNS)):
        path = out_dir / name
        if not path.is_file():
            earlier[name] = pd.DataFrame(columns=cols or [])
            continue
        table = manifest.read(path) if cols is None else pd.read_csv(path, dtype=str, keep_default_na=False)
        earlier[name] = table[~table["source_path"].astype(str).isin(sources)] if len(table) else table
    others = set().union(*(set(t["source_path"].astype(str)) for t in earlier.values() if "source_path" in t))
    join = lambda a, b: b if a.empty else a if b.empty else pd.concat([a, b], ignore_index=True)  # noqa: E731
    return (join(earlier["manifest.csv"], faces), join(earlier["faces_missing.csv"], missing),
            join(earlier["skipped.csv"], skipped), len(others))


def prepare(src, out_dir: str | Path, *, n_frames: int = 32, detector: str = "mtcnn", scale: float = 1.3,
            size: int = 256, lenient: bool = False, device: str = "auto", progress: bool = True,
            fps: float | None = None, cropped: bool | None = None) -> Prepared:
    """Videos or images -> face PNGs + manifest (see the module docstring).

    ``src``: a video/image manifest (DataFrame or CSV, e.g. from ``dfbook.datasets.ffpp``) or a
    folder with ``real/`` and ``fake/``. ``lenient=False`` raises :class:`UnreadableInput` naming
    the first unreadable file; ``lenient=True`` skips and counts it. Resumable: rerun the same call.
    ``fps``: one frame every ``1/fps`` seconds instead of ``n_frames`` evenly spaced ones.
    ``cropped``: the sources are face crops already (resized, not detected); default: the rows of a dataset in
    :data:`CROPPED_DATASETS`. ``device``: the detector's torch device (``auto``: the GPU when there is one).
    ``out_dir`` may hold other datasets already: their rows are kept, this call's sources replace their own.
    """
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; use one of {DETECTORS}")
    if n_frames < 1 or size < 8 or scale < 1 or (fps is not None and not fps > 0):
        raise ValueError(f"prepare: need n_frames >= 1, size >= 8, scale >= 1, fps > 0 or None "
                         f"(got {n_frames}, {size}, {scale}, {fps})")
    sources = _sources(src)
    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    sampling = {"n_frames": n_frames} if fps is None else {"fps": fps}
    _pin_params(out_dir, {"format": FORMAT, **sampling, "detector": detector, "scale": scale, "size": size})
    rows = sources.to_dict("records")
    keys = manifest.video_key(sources).tolist()
    owners: dict[str, set] = {}
    for row, key in zip(rows, keys):
        owners.setdefault(_video_folder(row), set()).add(key)
    clash = [f for f, ks in owners.items() if len(ks) > 1]
    if clash:
        raise ValueError(f"prepare: video keys {sorted(owners[clash[0]])} map to one output folder {clash[0]}; "
                         "make their video_id values differ in more than punctuation.")

    done_dir = out_dir / ".done"
    done_dir.mkdir(exist_ok=True)
    crop_rows = (sources["dataset"].isin(list(CROPPED_DATASETS)) if cropped is None
                 else pd.Series(bool(cropped), index=sources.index)).tolist()
    device = str(runtime.device(device))
    detect = None  # built on first use, so a fully resumed run never loads the detector
    face_rows, missing_rows, skipped_rows = [], [], []
    bar = runtime.bar(list(zip(rows, keys, crop_rows)), desc="prepare", unit="source", progress=progress)
    for row, key, crop in bar:
        marker = done_dir / (hashlib.sha1(f"{key}\0{row['path']}\0{row['frame']}".encode()).hexdigest() + ".json")
        if marker.is_file():
            result = json.loads(marker.read_text())
        else:
            detect = detect or (None if crop else make_detector(detector, device))
            try:
                result = _process(row, out_dir, detect, n_frames, scale, size, fps, crop)
            except UnreadableInput as e:
                if not lenient:
                    raise
                skipped_rows.append({"source_path": row["path"], "video_key": key, "reason": str(e)})
                continue
            _write_json(marker, result)
        for face in result["faces"]:
            x0, y0, x1, y1 = face["box"]
            face_rows.append({**row, "path": str(out_dir / face["file"]), "frame": face["frame"],
                              "source_path": row["path"], "face_score": face["score"],
                              "box_x0": x0, "box_y0": y0, "box_x1": x1, "box_y1": y1})
        missing_rows += [{"source_path": row["path"], "video_key": key, **m} for m in result["missing"]]
        bar.set_postfix(faces=len(face_rows), missing=len(missing_rows), skipped=len(skipped_rows))

    faces_df, missing_df, skipped_df, n_earlier = _keep_earlier(
        out_dir, set(sources["path"].astype(str)), pd.DataFrame(face_rows),
        pd.DataFrame(missing_rows, columns=MISSING_COLUMNS), pd.DataFrame(skipped_rows, columns=SKIPPED_COLUMNS))
    result = Prepared(faces_df, missing_df, skipped_df, len(rows) + n_earlier, out_dir)
    result.faces_missing.to_csv(out_dir / "faces_missing.csv", index=False)
    result.skipped.to_csv(out_dir / "skipped.csv", index=False)
    _write_json(out_dir / "summary.json", result.counts())
    if result.manifest.empty:
        raise RuntimeError(f"prepare: no face found in any of {len(rows)} source(s); see "
                           f"{out_dir / 'faces_missing.csv'} and {out_dir / 'skipped.csv'}.")
    relative = result.manifest.assign(path=[Path(p).relative_to(out_dir).as_posix() for p in result.manifest["path"]])
    manifest.write(relative, out_dir / "manifest.csv")
    log.info("prepare: %s", result.counts())
    return result


# -------------------------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    """``dfbook prepare SRC OUT [--frames N | --fps F] [--detector mtcnn|haar] [--size N] [--scale S] [--lenient]``."""
    p = argparse.ArgumentParser(prog="dfbook prepare", description=(
        "Extract evenly spaced frames, detect the largest face, save square crops as PNG plus manifest.csv. "
        "Resumable: rerun the same command after an interruption."))
    p.add_argument("src", help=f"a dataset name ({', '.join([*VIDEO_DATASETS, *CROPPED_DATASETS])}; read from "
                               "$DFBOOK_DATA), a manifest CSV, or a folder with real/ and fake/ sub-folders")
    p.add_argument("out", help="output folder; datasets prepared into it before are kept (one manifest of several)")
    p.add_argument("--frames", type=int, default=32, help="frames per video, evenly spaced (default 32)")
    p.add_argument("--fps", type=float, default=None,
                   help="instead of --frames: one frame every 1/FPS seconds (e.g. 1 for the CLIP seed's package)")
    p.add_argument("--detector", choices=DETECTORS, default="mtcnn")
    p.add_argument("--size", type=int, default=256, help="side of the saved crops in pixels (default 256)")
    p.add_argument("--scale", type=float, default=1.3, help="crop side / face box side (default 1.3)")
    p.add_argument("--compression", default="c23", help="FF++ only: c0 (raw), c23 or c40 (default c23)")
    p.add_argument("--lenient", action="store_true", help="skip and count unreadable files instead of stopping")
    p.add_argument("--device", default="auto", help="torch device for MTCNN (default: the GPU when there is one)")
    p.add_argument("--cropped", action="store_true",
                   help="the sources are face crops already: resize them, detect nothing (automatic for wilddeepfake)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.src in VIDEO_DATASETS:
            kwargs = {"compression": args.compression} if args.src == "ffpp" else {}
            src = VIDEO_DATASETS[args.src](**kwargs)
        elif args.src in CROPPED_DATASETS:
            src = CROPPED_DATASETS[args.src]()
        else:
            src = args.src
        out = prepare(src, args.out, n_frames=args.frames, detector=args.detector, scale=args.scale,
                      size=args.size, lenient=args.lenient, device=args.device, fps=args.fps,
                      cropped=True if args.cropped else None)
    except (OSError, ValueError, RuntimeError) as e:  # DatasetError and UnreadableInput are OSErrors
        print(f"dfbook prepare: {e}", file=sys.stderr)
        return 2
    counts = out.counts()
    print(f"dfbook prepare: {counts['faces']} faces from {counts['sources']} sources -> "
          f"{out.out_dir / 'manifest.csv'}; "
          f"{counts['frames_without_face']} frames without a face, {counts['sources_unreadable']} unreadable sources "
          "(see faces_missing.csv, skipped.csv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
