"""``dfbook predict DETECTOR PATH...``: P(fake) of images, folders and videos with any saved detector.

A ``DETECTOR`` is ``<chapter>/<name>`` of a profile's saved detectors (``dfbook predict --list``) or the folder of
one (:mod:`dfbook.detector`). Images are scored whole, through the detector's own preprocessing. A video goes
through ``dfbook prepare``'s steps -- ``--n-frames`` evenly spaced frames (:func:`dfbook.prepare.read_frames`), the
largest face (:func:`dfbook.prepare.make_detector`, ``--face-detector``) cropped square at ``--scale`` times its box
(:func:`dfbook.prepare.square_crop`) -- then every frame is scored and the detector's video rule (the mean frame
P(fake), or the majority) gives the video's score. A frame without a detected face is scored whole and counted.

Output: one row per file (``path, kind, score, frames, faces_found``) printed as CSV, or written to ``--out``;
``--frames`` adds the per-frame scores (``OUT.frames.csv``, or printed after the files). Unreadable input stops the
run in one line naming the file, after writing the rows scored before it to ``OUT.partial.csv``; with
``--lenient`` it is skipped and counted (stderr, ``OUT.skipped.csv``), as ``dfbook predict-defenders`` does.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from dfbook import runtime, scores_out
from dfbook.datasets._layout import IMAGE_EXTS, VIDEO_EXTS

log = logging.getLogger(__name__)


class PredictionStopped(OSError):
    """A strict run met an unreadable file; ``files`` and ``frames`` hold what was scored before it."""

    def __init__(self, message: str, files: pd.DataFrame, frames: pd.DataFrame):
        super().__init__(message)
        self.files, self.frames = files, frames


def inputs(paths) -> list[tuple[Path, str]]:
    """``(file, "image" | "video")`` for every PATH: a file as it is (its suffix says which), a folder's image and
    video files (recursive, sorted). Raises naming a PATH that does not exist or a folder with neither."""
    out = []
    for p in map(Path, paths):
        if p.is_file():
            kind = "video" if p.suffix.lower() in VIDEO_EXTS else "image"
            out.append((p, kind))
        elif p.is_dir():
            found = [(f, "video" if f.suffix.lower() in VIDEO_EXTS else "image") for f in sorted(p.rglob("*"))
                     if f.is_file() and f.suffix.lower() in IMAGE_EXTS + VIDEO_EXTS]
            if not found:
                raise FileNotFoundError(f"{p}: no images ({', '.join(IMAGE_EXTS)}) or videos "
                                        f"({', '.join(VIDEO_EXTS)}) in this folder or below")
            out.extend(found)
        else:
            raise FileNotFoundError(f"{p}: no such image, video or folder")
    return out


def video_frames(path: Path, n_frames: int, face, scale: float) -> tuple[list[np.ndarray], list[int], list[bool]]:
    """The sampled frames of a video, each cropped to its largest face when ``face`` finds one: ``(crops, frame
    indices, face found)``. Raises :class:`dfbook.prepare.UnreadableInput` for a video that does not decode."""
    from dfbook import prepare

    crops, idx, found = [], [], []
    for i, rgb in prepare.read_frames(path, n_frames):
        if rgb is None:
            continue
        box = face(rgb) if face is not None else None
        crops.append(np.ascontiguousarray(prepare.square_crop(rgb, box[0], scale)) if box is not None else rgb)
        idx.append(i)
        found.append(None if face is None else box is not None)
    if not crops:
        raise prepare.UnreadableInput(f"video {path}: none of its sampled frames decodes; re-download it, or pass "
                                      "--lenient to skip and count such files")
    return crops, idx, found


def predict(det, files: list[tuple[Path, str]], *, batch_size: int = 64, n_frames: int = 8,
            face_detector: str | None = "haar", scale: float = 1.3, lenient: bool = False,
            progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Score ``files`` (:func:`inputs`) with a :class:`dfbook.detector.Detector`. Returns ``(files table, frames
    table, skipped)``; strict mode raises :class:`PredictionStopped` at the first unreadable file."""
    from dfbook import prepare
    from dfbook.imageio import ImageReadError, read_rgb

    face = prepare.make_detector(face_detector) if face_detector and any(k == "video" for _, k in files) else None
    rows, frame_rows, skipped = [], [], []
    for path, kind in runtime.bar(files, desc=f"predict {det.ref}", unit="file", progress=progress):
        try:
            if kind == "image":
                imgs, idx, found = [read_rgb(path)], [0], [None]
            else:
                imgs, idx, found = video_frames(path, n_frames, face, scale)
        except (ImageReadError, prepare.UnreadableInput) as e:
            if not lenient:
                raise PredictionStopped(str(e), _files(rows), pd.DataFrame(frame_rows)) from e
            skipped.append({"path": str(path), "kind": kind, "reason": str(e)})
            continue
        s = det.predict(imgs, batch_size=batch_size)
        score = float(det.video_scores(s, np.zeros(len(s), int))["score"].iloc[0]) if kind == "video" else float(s[0])
        rows.append({"path": str(path), "kind": kind, "score": score, "frames": len(s),
                     "faces_found": int(sum(bool(f) for f in found)) if kind == "video" else None})
        frame_rows += [{"path": str(path), "frame": i, "score": float(v), "face_found": f}
                       for i, v, f in zip(idx, s, found)]
    no_face = sum(1 for r in frame_rows if r["face_found"] is False)
    if no_face:
        log.warning("%d video frame(s) had no detected face and were scored whole (face_found=False)", no_face)
    return _files(rows), pd.DataFrame(frame_rows, columns=["path", "frame", "score", "face_found"]), \
        pd.DataFrame(skipped, columns=["path", "kind", "reason"])


def _files(rows) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=["path", "kind", "score", "frames", "faces_found"])
    return out.astype({"frames": "Int64", "faces_found": "Int64"})


def _emit(files: pd.DataFrame, frames: pd.DataFrame | None, out: Path | None, *, partial: bool = False) -> str:
    if out is None:
        sys.stdout.write(files.to_csv(index=False))
        if frames is not None:
            sys.stdout.write("\n" + frames.to_csv(index=False))
        return ""
    target = scores_out.sibling(out, "partial") if partial else out
    target.parent.mkdir(parents=True, exist_ok=True)
    files.to_csv(target, index=False)
    if frames is not None:
        frames.to_csv(scores_out.sibling(target, "frames"), index=False)
    if not partial:
        scores_out.sibling(out, "partial").unlink(missing_ok=True)
    return str(target)


def list_table(profile: str | None) -> pd.DataFrame:
    from dfbook import detector

    table = detector.available(profile)
    return table[["detector", "profile", "source", "released_from", "parameters", "selection", "in_distribution_auc",
                  "commit", "path"]]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dfbook predict",
                                description="P(fake) of images, folders and videos with a saved detector of the book.")
    p.add_argument("detector", nargs="?", help="<chapter>/<name> (see --list) or a detector folder")
    p.add_argument("paths", nargs="*", metavar="PATH", help="images, videos or folders (searched recursively)")
    p.add_argument("--list", action="store_true", help="list the saved detectors and where each came from")
    p.add_argument("--profile", default="mini", choices=["mini", "full"], help="whose saved detectors (default mini)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n-frames", type=int, default=8, help="evenly spaced frames per video (dfbook prepare's sampling)")
    p.add_argument("--face-detector", default="haar", choices=["haar", "mtcnn", "none"],
                   help="face crop of video frames (none: whole frames)")
    p.add_argument("--scale", type=float, default=1.3, help="face crop side / face box side")
    p.add_argument("--frames", action="store_true", help="also write the per-frame scores (OUT.frames.csv)")
    p.add_argument("--out", type=Path, help="write the per-file table to this CSV (default: print it)")
    p.add_argument("--lenient", action="store_true",
                   help="skip unreadable files instead of stopping at the first; they are counted on stderr and, "
                        "with --out, listed in OUT.skipped.csv")
    return p


def main(argv: list[str] | None = None) -> int:
    """Exit code 0 done, 2 a user error (one line on stderr)."""
    parser = _parser()
    args = parser.parse_intermixed_args(argv)   # options may stand between the paths: `ucf/ucf --profile full a.png`
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.list:
        table = list_table(args.profile)
        if table.empty:
            print(f"no saved detectors for the {args.profile} profile: a chapter run saves its detectors "
                  f"(`dfbook run <chapter> --profile {args.profile}`)")
        else:
            print(table.to_string(index=False))
        return 0
    if args.detector is None or not args.paths:
        parser.error("give a DETECTOR and at least one PATH (or --list)")
    for name, value, low in (("--batch-size", args.batch_size, 1), ("--n-frames", args.n_frames, 1)):
        if value < low:
            parser.error(f"{name} must be at least {low}, got {value}")
    from dfbook import detector

    try:
        files = inputs(args.paths)                            # before loading the model
        det = detector.load(args.detector, args.profile, device=args.device)
        table, frames, skipped = predict(det, files, batch_size=args.batch_size, n_frames=args.n_frames,
                                         face_detector=None if args.face_detector == "none" else args.face_detector,
                                         scale=args.scale, lenient=args.lenient)
    except PredictionStopped as e:
        where = _emit(e.files, e.frames if args.frames else None, args.out, partial=True)
        kept = f"; the {len(e.files)} file(s) scored before it are in {where}" if where and len(e.files) else ""
        print(f"dfbook predict: {e}{kept}. Rerun with --lenient to score every readable file and count the "
              "unreadable ones", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError) as e:
        print(f"dfbook predict: {e}", file=sys.stderr)
        return 2
    where = _emit(table, frames if args.frames else None, args.out)
    if where:
        print(f"wrote {where}" + (f" and {scores_out.sibling(Path(where), 'frames')}" if args.frames else ""), file=sys.stderr)
    scores_out.report_skipped("dfbook predict", skipped, len(files), args.out, "file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
