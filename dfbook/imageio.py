"""Robust image reading: RGB ``uint8`` arrays, or a clear error naming the file.

PIL is used rather than ``cv2.imread`` because OpenCV decodes a truncated JPEG/PNG with only a
warning on stderr and returns a partly grey image, while PIL raises -- and silent corruption is
exactly what must not reach a detector (truncation is itself a "fake-looking" artefact).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)


class ImageReadError(OSError):
    """An image file is missing, empty, truncated, too small or not an image; the message names the file."""


MIN_SIDE = 8  # smaller images carry no trace a detector could see: resizing would score the interpolation


def _fix(path: Path) -> str:
    """How to get past a damaged file: regenerate a cache entry, else re-extract or skip it."""
    from dfbook import paths

    entry = paths.cache_entry(path)
    if entry is not None:
        return (f"the file belongs to dfbook's cache entry {entry}: delete that folder and rerun, "
                "which regenerates it")
    return "re-extract or re-download it, or pass lenient=True (--lenient) to skip and count such files"


def _to_rgb(im: Image.Image, path: Path) -> np.ndarray:
    """8-bit RGB of a decoded image. 16-bit grey (PNG's ``I;16``, or ``I`` from older Pillow) is scaled from
    0..65535 to 0..255 -- ``Image.convert`` would clip it, saturating nearly every pixel; a float image has
    no known range and is refused."""
    if im.mode.startswith("I"):
        a = np.asarray(im).astype(np.int64)
        if a.min() < 0 or a.max() > 65535:
            raise ImageReadError(f"image {path} is a 32-bit integer image with values {a.min()}..{a.max()} "
                                 "(expected 0..65535); convert it to an 8- or 16-bit PNG")
        return np.repeat(np.round(a / 257).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "F":
        raise ImageReadError(f"image {path} holds floating-point pixels of unknown range; convert it to an "
                             "8- or 16-bit PNG")
    return np.asarray(im.convert("RGB"))


def read_rgb(path: str | Path) -> np.ndarray:
    """Read one image as ``uint8`` RGB of shape ``(H, W, 3)``, values 0..255.

    Grey, palette and RGBA images are converted to RGB (alpha dropped); 16-bit grey is scaled to 8 bits.
    Raises :class:`ImageReadError` naming ``path`` for a missing, zero-byte, truncated or undecodable file,
    and for one smaller than :data:`MIN_SIDE` pixels on a side.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image {path} does not exist; check the manifest's path column "
                             "(relative paths are resolved against the manifest's folder)")
    if path.stat().st_size == 0:
        raise ImageReadError(f"image {path} is empty (0 bytes); {_fix(path)}")
    try:
        with Image.open(path) as im:
            im.load()  # forces the full decode, so truncation raises here and not later
            arr = _to_rgb(im, path)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"image {path} cannot be decoded ({type(e).__name__}: {e}); the file is "
                             f"truncated or not an image -- {_fix(path)}") from e
    if min(arr.shape[:2]) < MIN_SIDE:
        raise ImageReadError(f"image {path} is {arr.shape[1]}x{arr.shape[0]} pixels, below the {MIN_SIDE}-pixel "
                             "minimum side: resized to a network's input it would show only interpolation; "
                             "remove it, or pass lenient=True (--lenient) to skip and count such files")
    return arr


def _fit(arr: np.ndarray, size: int | tuple[int, int] | None) -> np.ndarray:
    if size is None:
        return arr
    h, w = (size, size) if isinstance(size, int) else size
    if arr.shape[:2] == (h, w):
        return arr
    # Area interpolation for downscaling (no aliasing); bicubic when upscaling.
    return np.asarray(Image.fromarray(arr).resize(
        (w, h), Image.Resampling.BOX if arr.shape[0] > h else Image.Resampling.BICUBIC))


def load_images(paths: Sequence[str | Path], size: int | tuple[int, int] | None = None,
                lenient: bool = False) -> tuple[np.ndarray, int]:
    """Read many images into one ``uint8`` array ``(N, H, W, 3)``.

    ``size``: square side or ``(h, w)`` to resize to; ``None`` requires all images to share a shape.
    ``lenient=False`` raises on the first unreadable file; ``lenient=True`` skips unreadable files,
    logs a warning listing the first few, and returns how many were skipped -- the returned array
    then has ``len(paths) - n_skipped`` rows in the original order (use :func:`read_rgb` yourself
    when you need to know which rows are missing).
    """
    out, skipped = [], []
    for p in paths:
        try:
            arr = _fit(read_rgb(p), size)
        except ImageReadError:
            if not lenient:
                raise
            skipped.append(str(p))
            continue
        if out and arr.shape != out[0].shape:
            raise ValueError(f"image {p} has shape {arr.shape} but earlier images have {out[0].shape}; "
                             "pass size= to resize them to one shape")
        out.append(arr)
    if skipped:
        log.warning("skipped %d unreadable image(s) of %d, e.g. %s", len(skipped), len(paths), skipped[:3])
    if not out:
        shape = (0, *((size, size) if isinstance(size, int) else (size or (0, 0))), 3)
        return np.zeros(shape, np.uint8), len(skipped)
    return np.stack(out), len(skipped)
