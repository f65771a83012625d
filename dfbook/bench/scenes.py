"""Procedural scene renderer for the generated-image corpus: ten content classes drawn from
antialiased primitives over a sky/ground background with time-of-day lighting and fractal texture.

The renderer is vectorised per content class: ``render(attrs, size, seed)`` draws a whole batch
with numpy broadcasting, returning clean float images (no camera) and a per-pixel region map that
the semantic-map generator (``gaugan``) synthesises from. ``sample`` draws the attributes a caption
mentions (class, colour, count, background, time of day); ``caption`` writes the sentence.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CLASSES = ("ball", "house", "tree", "car", "boat", "flower", "mountain", "fish", "kite", "building")
COLOURS = {
    "red": (0.80, 0.12, 0.10), "orange": (0.95, 0.50, 0.10), "yellow": (0.95, 0.85, 0.15),
    "green": (0.20, 0.65, 0.20), "blue": (0.15, 0.30, 0.85), "purple": (0.50, 0.20, 0.65),
    "pink": (0.95, 0.55, 0.70), "white": (0.92, 0.92, 0.90), "black": (0.10, 0.10, 0.12),
    "brown": (0.45, 0.28, 0.12), "grey": (0.50, 0.50, 0.52),
}
TIMES = ("day", "dusk", "night")
# background -> (sky/wall top colour per time handled below, ground colour)
GROUNDS = {"grass": (0.25, 0.52, 0.18), "sand": (0.85, 0.74, 0.50), "snow": (0.90, 0.92, 0.96),
           "water": (0.12, 0.33, 0.58), "indoor": (0.50, 0.33, 0.20)}
# Which backgrounds make sense for each class (fish live under water, boats float).
_BACKGROUNDS = {"boat": ("water",), "fish": ("water",), "kite": ("grass", "sand", "snow"),
                "mountain": ("grass", "snow", "sand"), "building": ("grass", "snow", "sand")}
_NUMBERS = {1: "one", 2: "two", 3: "three"}
_PLURAL = {"ball": "balls", "house": "houses", "tree": "trees", "car": "cars", "boat": "boats",
           "flower": "flowers", "mountain": "mountains", "fish": "fish", "kite": "kites",
           "building": "buildings", "face": "faces"}
_SKY = {"day": ((0.35, 0.55, 0.90), (0.72, 0.83, 0.95)), "dusk": ((0.30, 0.24, 0.50), (0.95, 0.58, 0.35)),
        "night": ((0.03, 0.04, 0.12), (0.12, 0.14, 0.30))}
_WALL = (0.78, 0.72, 0.60)
_LIGHT = {"day": (1.0, 1.0, 1.0), "dusk": (0.95, 0.78, 0.62), "night": (0.42, 0.45, 0.60)}


def sample(n: int, rng: np.random.Generator, classes=CLASSES) -> pd.DataFrame:
    """``n`` content instances: columns ``content, colour, count, background, time, geo_seed``
    (``geo_seed`` fixes the layout so one instance always renders the same)."""
    content = rng.choice(np.array(classes), size=n)
    colour = rng.choice(np.array(list(COLOURS)), size=n)
    count = rng.integers(1, 4, size=n)
    time = rng.choice(np.array(TIMES), size=n, p=[0.5, 0.3, 0.2])
    grounds = np.array(list(GROUNDS))
    bg = np.array([rng.choice(np.array(_BACKGROUNDS.get(c, grounds))) for c in content])
    return pd.DataFrame({"content": content, "colour": colour, "count": count, "background": bg,
                         "time": time, "geo_seed": rng.integers(0, 2**31, size=n)})


def caption(row, photo: str = "") -> str:
    """English caption of one instance, e.g. ``"a photo of two red cars on sand at dusk, slightly
    blurry"``. ``photo`` is an optional comma-separated list of photographic attributes."""
    cls = row["content"]
    if cls == "face":
        text = f"a photo of a face, {row['colour']}"
    else:
        n = int(row["count"])
        noun = cls if n == 1 else _PLURAL[cls]
        where = {"water": "in the water" if cls == "fish" else "on water", "indoor": "indoors",
                 "grass": "on grass", "sand": "on sand", "snow": "in the snow"}[row["background"]]
        when = {"day": "in daylight", "dusk": "at dusk", "night": "at night"}[row["time"]]
        text = f"a photo of {_NUMBERS[n]} {row['colour']} {noun} {where} {when}"
    return f"{text}, {photo}" if photo else text


def fractal(n: int, size: int, rng: np.random.Generator, octaves=(4, 8, 16, 32), beta: float = 1.0):
    """Smooth random fields ``(n, size, size)`` with roughly 1/f^beta amplitude, zero mean, unit std."""
    import cv2

    out = np.zeros((n, size, size), np.float32)
    for o in octaves:
        if o > size:
            continue
        g = rng.standard_normal((n, o, o)).astype(np.float32)
        # cv2 resizes up to 512 channels at once; stack images as channels for one call
        for i in range(0, n, 500):
            chunk = np.ascontiguousarray(g[i:i + 500].transpose(1, 2, 0))
            up = cv2.resize(chunk, (size, size), interpolation=cv2.INTER_CUBIC)
            out[i:i + 500] += (up.reshape(size, size, -1).transpose(2, 0, 1)) * (o ** -beta)
    out -= out.mean(axis=(1, 2), keepdims=True)
    return out / (out.std(axis=(1, 2), keepdims=True) + 1e-6)


class _Canvas:
    """A batch of images being painted: ``img (N,S,S,3)`` float in [0,1], ``seg (N,S,S)`` region ids."""

    def __init__(self, n: int, size: int):
        self.S = size
        ax = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.yy, self.xx = ax[None, :, None], ax[None, None, :]
        self.img = np.zeros((n, size, size, 3), np.float32)
        self.seg = np.zeros((n, size, size), np.int8)
        self.label = 2  # 0 sky/wall, 1 ground, 2.. object parts

    def aa(self, sd):
        """Antialiased coverage from a signed distance (positive inside), in pixels of width 1."""
        return np.clip(sd * self.S + 0.5, 0.0, 1.0)

    def disk(self, cx, cy, r):
        return self.aa(r - np.sqrt((self.xx - cx) ** 2 + (self.yy - cy) ** 2))

    def ellipse(self, cx, cy, rx, ry):
        d = np.sqrt(((self.xx - cx) / rx) ** 2 + ((self.yy - cy) / ry) ** 2)
        return self.aa((1.0 - d) * np.minimum(rx, ry))

    def box(self, x0, y0, x1, y1):
        return self.aa(np.minimum(np.minimum(self.xx - x0, x1 - self.xx), np.minimum(self.yy - y0, y1 - self.yy)))

    def poly(self, pts):
        """Convex polygon, ``pts`` a list of (x, y) arrays (either winding)."""
        edges = list(zip(pts, pts[1:] + pts[:1]))
        orient = np.sign(sum((x0 * y1 - x1 * y0) for (x0, y0), (x1, y1) in edges) + 1e-12)
        sd = None
        for (x0, y0), (x1, y1) in edges:
            ex, ey = x1 - x0, y1 - y0
            d = orient * ((self.yy - y0) * ex - (self.xx - x0) * ey) / np.sqrt(ex ** 2 + ey ** 2 + 1e-9)
            sd = d if sd is None else np.minimum(sd, d)
        return self.aa(sd)

    def paint(self, mask, colour, texture=None, amount=0.08):
        """Alpha-composite ``colour`` ((N,3) or (N,S,S,3)) where ``mask`` (N,S,S) covers."""
        # only touch covered pixels: objects cover a few percent of the frame
        nz = np.nonzero(mask)
        m = mask[nz][:, None]
        col = np.asarray(colour, np.float32)
        col = col[nz[0]] if col.ndim == 2 else col[nz]
        if texture is not None:
            col = col * (1.0 + amount * texture[nz][:, None])
        self.img[nz] = self.img[nz] * (1.0 - m) + col * m
        self.seg[nz[0][m[:, 0] > 0.5], nz[1][m[:, 0] > 0.5], nz[2][m[:, 0] > 0.5]] = self.label
        self.label += 1


def _u(rng, n, lo, hi):
    return rng.uniform(lo, hi, size=(n, 1, 1)).astype(np.float32)


def _draw(cls: str, cv: _Canvas, col: np.ndarray, k: int, slots: int, rng, tex):
    """Draw object slot ``k`` of ``slots`` for class ``cls`` (``col`` (N,3) main colour)."""
    n = col.shape[0]
    x = (k + 0.5) / slots + _u(rng, n, -0.12, 0.12) / slots      # spread instances horizontally
    s = _u(rng, n, 0.7, 1.1) / np.sqrt(slots)                    # smaller when there are more
    dark = col * 0.55
    if cls == "ball":
        r, cy = 0.16 * s, _u(rng, n, 0.62, 0.75)
        shade = np.clip(1.0 - np.sqrt((cv.xx - x + 0.4 * r) ** 2 + (cv.yy - cy + 0.4 * r) ** 2) / (2 * r), 0, 1)
        cv.paint(cv.disk(x, cy, r), col[:, None, None, :] * (0.55 + 0.6 * shade[..., None]))
    elif cls == "house":
        w, h, base = 0.2 * s, 0.18 * s, _u(rng, n, 0.72, 0.8)
        cv.paint(cv.box(x - w, base - h, x + w, base), col, tex)
        cv.paint(cv.poly([(x - 1.2 * w, base - h), (x, base - h - 1.1 * h), (x + 1.2 * w, base - h)]),
                 np.broadcast_to(np.float32([0.55, 0.18, 0.12]), col.shape), tex)
        cv.paint(cv.box(x - 0.25 * w, base - 0.6 * h, x + 0.1 * w, base), np.broadcast_to(np.float32([0.3, 0.2, 0.1]), col.shape))
        cv.paint(cv.box(x + 0.35 * w, base - 0.75 * h, x + 0.75 * w, base - 0.4 * h), np.broadcast_to(np.float32([0.85, 0.9, 0.95]), col.shape))
    elif cls == "tree":
        base, h = _u(rng, n, 0.75, 0.85), 0.45 * s
        cv.paint(cv.box(x - 0.025 * s, base - 0.5 * h, x + 0.025 * s, base), np.broadcast_to(np.float32([0.35, 0.22, 0.1]), col.shape), tex)
        cv.paint(cv.disk(x, base - 0.75 * h, 0.3 * h), col, tex, 0.25)
    elif cls == "car":
        base, w = _u(rng, n, 0.78, 0.85), 0.22 * s
        cv.paint(cv.box(x - w, base - 0.16 * s, x + w, base - 0.05 * s), col, tex)
        cv.paint(cv.box(x - 0.55 * w, base - 0.27 * s, x + 0.5 * w, base - 0.15 * s), col * 0.9, tex)
        cv.paint(cv.box(x - 0.45 * w, base - 0.25 * s, x + 0.4 * w, base - 0.17 * s), np.broadcast_to(np.float32([0.7, 0.8, 0.9]), col.shape))
        for wx in (-0.6, 0.6):
            cv.paint(cv.disk(x + wx * w, base - 0.05 * s, 0.055 * s), np.broadcast_to(np.float32([0.08, 0.08, 0.08]), col.shape))
    elif cls == "boat":
        base, w = _u(rng, n, 0.7, 0.8), 0.2 * s
        cv.paint(cv.poly([(x - w, base - 0.08 * s), (x - 0.7 * w, base), (x + 0.7 * w, base), (x + w, base - 0.08 * s)]),
                 dark, tex)
        cv.paint(cv.box(x - 0.012, base - 0.4 * s, x + 0.012, base - 0.08 * s), np.broadcast_to(np.float32([0.3, 0.2, 0.1]), col.shape))
        cv.paint(cv.poly([(x + 0.015, base - 0.38 * s), (x + 0.015, base - 0.1 * s), (x + 0.7 * w, base - 0.1 * s)]), col, tex)
    elif cls == "flower":
        base, h = _u(rng, n, 0.82, 0.9), 0.4 * s
        cy = base - h
        cv.paint(cv.box(x - 0.012, cy, x + 0.012, base), np.broadcast_to(np.float32([0.2, 0.5, 0.15]), col.shape))
        for a in range(5):
            ang = 2 * np.pi * a / 5 + _u(rng, n, 0, 0.6)
            cv.paint(cv.disk(x + 0.07 * s * np.cos(ang), cy + 0.07 * s * np.sin(ang), 0.055 * s), col, tex)
        cv.paint(cv.disk(x, cy, 0.04 * s), np.broadcast_to(np.float32([0.95, 0.8, 0.1]), col.shape))
    elif cls == "mountain":
        base, w, h = _u(rng, n, 0.62, 0.7), 0.35 * s * np.sqrt(slots), _u(rng, n, 0.3, 0.45)
        cv.paint(cv.poly([(x - w, base), (x + w, base), (x, base - h)]), col * 0.6 + 0.2, tex, 0.3)
        cv.paint(cv.poly([(x - 0.3 * w, base - 0.7 * h), (x + 0.3 * w, base - 0.7 * h), (x, base - h)]),
                 np.broadcast_to(np.float32([0.95, 0.95, 0.97]), col.shape))
    elif cls == "fish":
        cy, w = _u(rng, n, 0.3, 0.7), 0.16 * s
        d = np.where(rng.random((n, 1, 1)) < 0.5, -1.0, 1.0).astype(np.float32)
        cv.paint(cv.poly([(x - d * 0.9 * w, cy), (x - d * 1.5 * w, cy - 0.5 * w), (x - d * 1.5 * w, cy + 0.5 * w)]),
                 dark, tex)
        cv.paint(cv.ellipse(x, cy, w, 0.5 * w), col, tex)
        cv.paint(cv.disk(x + d * 0.55 * w, cy - 0.1 * w, 0.1 * w), np.broadcast_to(np.float32([0.05, 0.05, 0.05]), col.shape))
    elif cls == "kite":
        cy, w = _u(rng, n, 0.2, 0.4), 0.1 * s
        cv.paint(cv.poly([(x, cy - 1.4 * w), (x - w, cy), (x, cy + 1.4 * w), (x + w, cy)]), col, tex)
        cv.paint(cv.box(x - 0.006, cy + 1.4 * w, x + 0.006, cy + 4 * w), np.broadcast_to(np.float32([0.2, 0.2, 0.2]), col.shape))
    elif cls == "building":
        base, w, h = _u(rng, n, 0.8, 0.86), 0.16 * s * np.sqrt(slots) / 1.4, _u(rng, n, 0.45, 0.7)
        body = cv.box(x - w, base - h, x + w, base)
        cv.paint(body, col * 0.7 + 0.15, tex)
        # window grid: light squares where both stripes are on
        pitch = 0.06 * s * np.sqrt(slots) / 1.4
        on = ((np.mod(cv.xx - x + w, pitch) > 0.45 * pitch) & (np.mod(cv.yy - base + h, pitch) > 0.45 * pitch))
        win = body * cv.box(x - 0.85 * w, base - 0.95 * h, x + 0.85 * w, base - 0.1 * h) * on
        cv.paint(win, np.broadcast_to(np.float32([0.9, 0.85, 0.55]), col.shape))
    else:
        raise ValueError(f"unknown content class {cls!r}; expected one of {CLASSES}")


def render(attrs: pd.DataFrame, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Render every row of ``attrs`` (from :func:`sample`).

    Returns ``img`` float32 ``(N, size, size, 3)`` in [0, 1] (clean: no camera, no noise) and
    ``seg`` int8 ``(N, size, size)`` region ids (0 sky/wall, 1 ground, 2.. object parts).
    Each row is rendered from its own ``geo_seed``, so an instance looks the same in any batch."""
    n = len(attrs)
    img = np.zeros((n, size, size, 3), np.float32)
    seg = np.zeros((n, size, size), np.int8)
    for cls, idx in attrs.groupby("content").indices.items():
        sub = attrs.iloc[idx]
        # one generator per batch, seeded by the instances' own seeds -> order-independent batches
        rng = np.random.default_rng([int(s) for s in sub["geo_seed"]])
        cv = _Canvas(len(sub), size)
        tex = fractal(len(sub), size, rng)
        grain = rng.standard_normal((len(sub), size, size), dtype=np.float32)
        _background(cv, sub, rng, tex, grain)
        col = np.array([COLOURS[c] for c in sub["colour"]], np.float32)
        col = col * (1.0 + 0.12 * rng.standard_normal(col.shape).astype(np.float32))
        slots = sub["count"].to_numpy().reshape(-1, 1, 1)
        obj_tex = 0.7 * tex + 0.3 * grain
        for slots_n in (1, 2, 3):
            sel = slots[:, 0, 0] == slots_n
            if not sel.any():
                continue
            sc = _Canvas(int(sel.sum()), size)
            sc.img, sc.seg = cv.img[sel], cv.seg[sel]
            for k in range(slots_n):
                _draw(cls, sc, col[sel], k, slots_n, rng, obj_tex[sel])
            cv.img[sel], cv.seg[sel] = sc.img, sc.seg
        light = np.array([_LIGHT[t] for t in sub["time"]], np.float32)[:, None, None, :]
        img[idx] = np.clip(cv.img * light, 0.0, 1.0)
        seg[idx] = cv.seg
    return img, seg


def _background(cv: _Canvas, sub: pd.DataFrame, rng, tex, grain):
    """Sky (or indoor wall) gradient above a textured ground; fish live in an all-water world.
    Row profiles are (N,S,1,3); only the texture modulation touches every pixel."""
    n = len(sub)
    water_world = sub["content"].to_numpy() == "fish"
    horizon = np.where(water_world[:, None, None], -1.0, _u(rng, n, 0.45, 0.62)).astype(np.float32)
    top = np.array([_SKY[t][0] for t in sub["time"]], np.float32)
    bot = np.array([_SKY[t][1] for t in sub["time"]], np.float32)
    indoor = sub["background"].to_numpy() == "indoor"
    top[indoor], bot[indoor] = np.float32(_WALL) * 1.05, np.float32(_WALL) * 0.9
    t = np.clip(cv.yy / horizon.clip(1e-3), 0, 1)[..., None]                     # (N,S,1,1)
    sky = top[:, None, None, :] * (1 - t) + bot[:, None, None, :] * t
    ground = np.array([GROUNDS[b] for b in sub["background"]], np.float32)[:, None, None, :]
    a, b = np.where(water_world, 0.7, 0.85), np.where(water_world, 0.5, 0.3)
    grow = ground * (a[:, None, None, None] + b[:, None, None, None] * cv.yy[..., None])
    land = cv.aa(cv.yy - horizon)[..., None]                                     # (N,S,1,1)
    amp_t = np.where(water_world, 0.10, 0.15).astype(np.float32)[:, None, None]
    amp_g = np.where(water_world, 0.0, 0.06).astype(np.float32)[:, None, None]
    mod_g = (1.0 + amp_t * tex + amp_g * grain)[..., None]
    mod_s = (1.0 + 0.04 * tex)[..., None]
    cv.img = (sky * (1 - land)) * mod_s + (grow * land) * mod_g
    cv.seg[:] = (land[..., 0] > 0.5)
