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
    """An image file is missing, empty, truncated or not an image; the message names the file."""


def read_rgb(path: str | Path) -> np.ndarray:
    """Read one image as ``uint8`` RGB of shape ``(H, W, 3)``, values 0..255.

    Grey, palette and RGBA images are converted to RGB (alpha dropped). Raises
    :class:`ImageReadError` naming ``path`` for a missing, zero-byte, truncated or undecodable file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image {path} does not exist; check the manifest's path column "
                             "(relative paths are resolved against the current folder)")
    if path.stat().st_size == 0:
        raise ImageReadError(f"image {path} is empty (0 bytes); re-extract or re-download it, "
                             "or pass lenient=True to skip and count such files")
    try:
        with Image.open(path) as im:
            im.load()  # forces the full decode, so truncation raises here and not later
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"image {path} cannot be decoded ({type(e).__name__}: {e}); the file is "
                             "truncated or not an image -- re-extract it, or pass lenient=True to skip "
                             "and count such files") from e
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
