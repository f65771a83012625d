"""The camera pipeline shared by every real image of the mini benchmark, and the post-processing
operations (JPEG, blur, resize, noise) that chapters also use as test-time perturbations.

All functions take and return ``uint8`` arrays of shape ``(H, W, 3)`` (RGB) or ``(N, H, W, 3)``;
they never modify their input.
"""

from __future__ import annotations

import cv2
import numpy as np


def _each(imgs: np.ndarray, fn) -> np.ndarray:
    if imgs.ndim == 3:
        return fn(imgs)
    return np.stack([fn(im) for im in imgs])


def jpeg(imgs: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode as JPEG at ``quality`` (1..100) with OpenCV (4:2:0 chroma subsampling)."""
    q = int(quality)

    def one(im):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(im, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    return _each(imgs, one)


def blur(imgs: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels (no-op for sigma <= 0)."""
    if sigma <= 0:
        return imgs.copy()
    return _each(imgs, lambda im: cv2.GaussianBlur(im, (0, 0), float(sigma)))


def resize(imgs: np.ndarray, size: int | tuple[int, int], interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """Resize to ``size`` (square side or ``(h, w)``)."""
    h, w = (size, size) if isinstance(size, int) else size
    return _each(imgs, lambda im: cv2.resize(im, (w, h), interpolation=interpolation))


def noise(imgs: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise in float, clipped to [0, 255] (never wraps around like uint8 maths)."""
    out = imgs.astype(np.float32) + rng.normal(0.0, sigma, size=imgs.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def camera(imgs: np.ndarray, rng: np.random.Generator, *, noise_sigma: float = 2.0,
           jpeg_quality: int | None = 90, blur_sigma: float = 0.0) -> np.ndarray:
    """A plain camera model: optics blur -> sensor noise -> JPEG. ``jpeg_quality=None`` keeps it
    lossless (used when the format confound is switched off and everything is saved one way)."""
    out = blur(imgs, blur_sigma) if blur_sigma > 0 else imgs
    out = noise(out, noise_sigma, rng) if noise_sigma > 0 else out.copy()
    return jpeg(out, jpeg_quality) if jpeg_quality else out
