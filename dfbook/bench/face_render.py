"""A procedural 2-D face renderer for the mini benchmark: identities, head motion, blinks, speech.

A face is drawn analytically in *face coordinates* ``(u, v)`` (origin between the eyes and the
mouth, ``v`` down, the face half-height ~ 1) and mapped to pixels by a per-frame similarity
transform (centre, scale, roll). Every layer is a signed-distance shape with a one-pixel soft
edge, so a whole clip ``(T, H, W)`` is rendered with a few dozen vectorised numpy operations and
no per-pixel Python. (Hand-written on purpose: no rendering library fits in the 60 s budget and
still yields exact dlib-68 landmarks.)

Shapes and ranges
    identity  : dict of scalars sampled by :func:`sample_identity` (stable across every clip)
    motion    : dict of ``(T,)`` float arrays sampled by :func:`sample_motion`
    render(...) -> image ``(T, H, W, 3)`` float32 in [0, 1], landmarks ``(T, 68, 2)`` float32 pixel
                  ``(x, y)``, face coverage ``(T, H, W)`` float32 in [0, 1]

Landmarks follow the dlib 68-point convention in *image* orientation: jaw 0-16 (image left to
right), brows 17-21 / 22-26, nose bridge 27-30, nostrils 31-35, eyes 36-41 (image-left) and
42-47, outer lips 48-59, inner lips 60-67. Eyes, brows, nose and lips are exact points of the
drawn shapes; the jaw is sampled on the drawn face outline.
"""

from __future__ import annotations

import numpy as np

# Monk Skin Tone scale swatches (MST 1..10, Google's published sRGB hex values).
MST_RGB = np.array([
    [0xF6, 0xED, 0xE4], [0xF3, 0xE7, 0xDB], [0xF7, 0xEA, 0xD0], [0xEA, 0xDA, 0xBA], [0xD7, 0xBD, 0x96],
    [0xA0, 0x7E, 0x56], [0x82, 0x5C, 0x43], [0x60, 0x41, 0x34], [0x3A, 0x31, 0x2A], [0x29, 0x24, 0x20],
], dtype=np.float32) / 255.0
HAIR_RGB = np.array([[0.08, 0.06, 0.05], [0.25, 0.15, 0.08], [0.45, 0.30, 0.15], [0.75, 0.62, 0.38],
                     [0.50, 0.20, 0.08]], dtype=np.float32)
IRIS_RGB = np.array([[0.25, 0.15, 0.08], [0.12, 0.08, 0.05], [0.30, 0.45, 0.65], [0.35, 0.45, 0.25]],
                    dtype=np.float32)
GENDERS = ("female", "male")
AGE_GROUPS = ("young", "middle", "senior")


def skin_group(tone: int) -> str:
    """MST 1-3 light, 4-6 medium, 7-10 dark (AI-Face: 'skintone1 represent Light (tone1-3)')."""
    return "light" if tone <= 3 else ("medium" if tone <= 6 else "dark")


def sample_identity(rng: np.random.Generator, *, skin_tone: int | None = None, gender: str | None = None,
                    age_group: str | None = None) -> dict:
    """Geometry and appearance of one person; demographic attributes are drawn unless given.

    Gender presentation changes jaw width/squareness, brow weight, hair length, lip colour and
    stubble; age changes wrinkles, grey hair, eye bags and face length; skin tone sets the
    MST base colour."""
    tone = int(skin_tone if skin_tone is not None else rng.integers(1, 11))
    g = gender if gender is not None else GENDERS[int(rng.integers(0, 2))]
    age = age_group if age_group is not None else AGE_GROUPS[int(rng.choice(3, p=[0.4, 0.35, 0.25]))]
    male, ai = g == "male", AGE_GROUPS.index(age)
    skin = MST_RGB[tone - 1] * rng.uniform(0.93, 1.05, 3).astype(np.float32)
    hair = HAIR_RGB[int(rng.integers(0, len(HAIR_RGB)))] * rng.uniform(0.85, 1.15)
    grey = [0.0, rng.uniform(0.15, 0.45), rng.uniform(0.55, 0.9)][ai]
    hair = hair * (1 - grey) + np.float32(0.78) * grey
    return dict(
        skin_tone=tone, gender=g, age_group=age,
        skin=np.clip(skin, 0, 1), hair=np.clip(hair, 0, 1).astype(np.float32),
        iris=IRIS_RGB[int(rng.integers(0, len(IRIS_RGB)))],
        lip=np.clip(skin * np.float32([0.85, 0.55, 0.55]) + np.float32([0.12, 0.0, 0.02]) * (not male), 0, 1),
        face_a=rng.uniform(0.78, 0.88) if male else rng.uniform(0.68, 0.78),
        face_b=rng.uniform(1.0, 1.08) + 0.04 * ai,
        jaw_p=rng.uniform(2.4, 3.0) if male else rng.uniform(1.8, 2.2),
        eye_dx=rng.uniform(0.29, 0.35), eye_y=rng.uniform(-0.22, -0.14),
        eye_w=rng.uniform(0.13, 0.16), eye_h=rng.uniform(0.055, 0.075),
        brow_gap=rng.uniform(0.12, 0.17), brow_t=(rng.uniform(0.035, 0.05) if male else rng.uniform(0.02, 0.03)),
        nose_len=rng.uniform(0.28, 0.38), nose_w=rng.uniform(0.07, 0.1) + 0.015 * male,
        mouth_y=rng.uniform(0.48, 0.56), mouth_w=rng.uniform(0.19, 0.25), lip_t=rng.uniform(0.035, 0.05),
        hair_long=(not male) or rng.random() < 0.1, hairline=rng.uniform(-0.72, -0.6) - 0.12 * (male and ai == 2),
        wrinkle=[0.0, rng.uniform(0.05, 0.08), rng.uniform(0.11, 0.16)][ai],
        bags=[0.0, 0.03, 0.07][ai],
        stubble=rng.uniform(0.04, 0.12) if (male and rng.random() < 0.6) else 0.0,
        blush=0.05 if not male else 0.0,
        # skin texture: a few oriented sinusoids in face coordinates, so it moves with the head
        tex_k=rng.uniform(14, 30, 4).astype(np.float32), tex_th=rng.uniform(0, np.pi, 4).astype(np.float32),
        tex_ph=rng.uniform(0, 2 * np.pi, 4).astype(np.float32),
    )


def _smooth(rng: np.random.Generator, t: np.ndarray, n: int = 2, period=(12.0, 40.0)) -> np.ndarray:
    """A smooth random signal in about [-1, 1]: a sum of ``n`` slow sinusoids."""
    out = np.zeros_like(t)
    for _ in range(n):
        out += np.sin(2 * np.pi * t / rng.uniform(*period) + rng.uniform(0, 2 * np.pi))
    return out / n


def sample_motion(rng: np.random.Generator, frames: int, *, motion: float = 1.0, talk: float = 1.0) -> dict:
    """Per-frame pose and expression of one clip; every entry is a float32 ``(T,)`` array.

    ``cx, cy`` centre in image fractions, ``scale`` face half-height in image fractions, ``roll``
    radians, ``yaw`` in [-1, 1] (shifts the inner features), ``eye`` openness (0 closed .. 1),
    ``mouth`` openness (0 .. 1), ``gaze`` iris offset, ``light`` azimuth (radians). Motion is
    smooth (slow sinusoids); blinks last 2-3 frames; speech opens the mouth about half the time."""
    t = np.arange(frames, dtype=np.float32)
    m = dict(
        cx=0.5 + rng.uniform(-0.03, 0.03) + 0.025 * motion * _smooth(rng, t),
        cy=0.52 + rng.uniform(-0.03, 0.03) + 0.02 * motion * _smooth(rng, t),
        scale=rng.uniform(0.3, 0.35) * (1 + 0.04 * motion * _smooth(rng, t)),
        roll=rng.uniform(-0.08, 0.08) + 0.08 * motion * _smooth(rng, t),
        yaw=rng.uniform(-0.3, 0.3) + 0.3 * motion * _smooth(rng, t),
        gaze=0.3 * _smooth(rng, t, 1, (8.0, 20.0)),
        light=np.full_like(t, rng.uniform(-1.2, 1.2)) + 0.1 * _smooth(rng, t),
    )
    eye = np.ones_like(t)
    start = rng.integers(-2, 6)
    while start < frames:
        for k, depth in enumerate((0.6, 0.05, 0.5)[: int(rng.integers(2, 4))]):
            if 0 <= start + k < frames:
                eye[start + k] = depth
        start += int(rng.integers(9, 20))
    m["eye"] = eye * rng.uniform(0.85, 1.1)
    speech = 0.45 + 0.55 * _smooth(rng, t, 2, (3.0, 7.0)) + 0.15 * rng.standard_normal(frames)
    m["mouth"] = np.clip(talk * speech, 0.0, 1.0)
    return {k: np.asarray(v, dtype=np.float32) for k, v in m.items()}


def sample_background(rng: np.random.Generator) -> dict:
    """Scene behind the head: two gradient colours and a soft blob pattern."""
    c0, c1 = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    return dict(c0=c0.astype(np.float32), c1=c1.astype(np.float32), k=rng.uniform(2, 7, 2).astype(np.float32),
                ph=rng.uniform(0, 2 * np.pi, 2).astype(np.float32), amp=np.float32(rng.uniform(0.03, 0.12)))


def local_coords(motion: dict, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face coordinates ``u, v`` of every pixel, ``(T, H, W)`` each, and the size of one pixel in
    face units ``(T, 1, 1)``."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cx, cy = (motion["cx"] * size)[:, None, None], (motion["cy"] * size)[:, None, None]
    s = (motion["scale"] * size)[:, None, None]
    c, sn = np.cos(motion["roll"])[:, None, None], np.sin(motion["roll"])[:, None, None]
    dx, dy = xs[None] - cx, ys[None] - cy
    return (c * dx + sn * dy) / s, (-sn * dx + c * dy) / s, 1.0 / s


def to_pixels(motion: dict, size: int, uv: np.ndarray) -> np.ndarray:
    """Map face-coordinate points ``(T, K, 2)`` to pixel ``(x, y)`` (inverse of :func:`local_coords`)."""
    s = (motion["scale"] * size)[:, None]
    c, sn = np.cos(motion["roll"])[:, None], np.sin(motion["roll"])[:, None]
    u, v = uv[..., 0] * s, uv[..., 1] * s
    x = c * u - sn * v + (motion["cx"] * size)[:, None]
    y = sn * u + c * v + (motion["cy"] * size)[:, None]
    return np.stack([x, y], -1).astype(np.float32)


def _cov(d: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Coverage of a shape with signed distance ``d`` (face units, < 0 inside): 1-pixel soft edge."""
    return np.clip(0.5 - d / px, 0.0, 1.0)


def ellipse_sdf(u, v, cu, cv, a, b):
    """Signed distance to an ellipse: first order, (r - 1) / |grad r|, bounded by the ellipse's box
    (the first-order term alone under-estimates far from thin ellipses and draws stray lines)."""
    x, y = (u - cu) / a, (v - cv) / b
    r = np.sqrt(x * x + y * y) + 1e-6
    grad = np.sqrt((x / a) ** 2 + (y / b) ** 2) / r + 1e-6
    return np.maximum((r - 1.0) / grad, np.maximum(np.abs(u - cu) - a, np.abs(v - cv) - b))


def _mix(img, color, alpha):
    """In-place alpha blend of a colour ``(3,)`` or image ``(T,H,W,3)`` with coverage ``(T,H,W)``."""
    img += alpha[..., None] * (color - img)


def features(ident: dict, motion: dict) -> dict:
    """Positions of the inner features in face coordinates, per frame (``(T,)`` arrays)."""
    yaw = motion["yaw"]
    shift = 0.12 * yaw  # a turned head moves the inner features sideways
    eye_h = ident["eye_h"] * np.clip(motion["eye"], 0.03, 1.2)
    mouth_open = 0.13 * motion["mouth"]
    return dict(shift=shift, eye_h=eye_h, mouth_open=mouth_open,
                mouth_w=ident["mouth_w"] * (1 - 0.15 * motion["mouth"]))


def landmarks_uv(ident: dict, motion: dict) -> np.ndarray:
    """dlib-68 landmarks in face coordinates, ``(T, 68, 2)``."""
    f = features(ident, motion)
    T = len(motion["cx"])
    sh = f["shift"][:, None]
    pts = np.zeros((T, 68, 2), np.float32)
    a, b, p = ident["face_a"], ident["face_b"], ident["jaw_p"]
    th = np.linspace(np.pi, 0.0, 17, dtype=np.float32)
    cu, sv = np.cos(th), np.sin(th)
    pts[:, 0:17, 0] = a * np.sign(cu) * np.abs(cu) ** (2 / p) + 0.4 * sh
    pts[:, 0:17, 1] = b * np.abs(sv) ** (2 / p) * 0.98 - 0.05
    ex, ey, ew = ident["eye_dx"], ident["eye_y"], ident["eye_w"]
    by = ey - ident["eye_h"] - ident["brow_gap"]
    for side, base in ((-1, 17), (1, 22)):
        xs = side * ex + ew * 1.2 * np.linspace(-1, 1, 5, dtype=np.float32) * (1 if side < 0 else 1)
        arch = by - 0.05 * (1 - np.linspace(-1, 1, 5) ** 2)
        pts[:, base:base + 5, 0] = xs[None] + sh
        pts[:, base:base + 5, 1] = arch[None]
    pts[:, 27:31, 0] = sh
    pts[:, 27:31, 1] = np.linspace(ey, ey + ident["nose_len"], 4)[None]
    pts[:, 31:36, 0] = sh + ident["nose_w"] * np.linspace(-1, 1, 5)[None]
    pts[:, 31:36, 1] = ey + ident["nose_len"] + 0.06 - 0.02 * (1 - np.linspace(-1, 1, 5) ** 2)[None]
    eh = f["eye_h"][:, None]
    k = np.float32(np.sqrt(1 - (1 / 3) ** 2))
    # image-left eye: 36 outer, 37-38 top, 39 inner, 40-41 bottom; image-right: 42 inner, 43-44 top, 45 outer, 46-47 bottom
    for c0, base, order in ((-ex, 36, (-1, -1 / 3, 1 / 3, 1, 1 / 3, -1 / 3)), (ex, 42, (-1, -1 / 3, 1 / 3, 1, 1 / 3, -1 / 3))):
        du = np.float32(order) * ew
        dv = np.float32([0, -1, -1, 0, 1, 1]) * k
        pts[:, base:base + 6, 0] = c0 + du[None] + sh
        pts[:, base:base + 6, 1] = ey + dv[None] * eh
    my, mw, mo, lt = ident["mouth_y"], f["mouth_w"][:, None], f["mouth_open"][:, None], ident["lip_t"]
    ang = np.float32([-1, -2 / 3, -1 / 3, 0, 1 / 3, 2 / 3, 1])
    top = np.sqrt(1 - ang ** 2)
    # outer lips 48-54 top (left corner -> right corner), 55-59 bottom (right -> left)
    pts[:, 48:55, 0] = ang[None] * mw + sh
    pts[:, 48:55, 1] = my - top[None] * (mo / 2 + lt)
    pts[:, 55:60, 0] = ang[5:0:-1][None] * mw + sh
    pts[:, 55:60, 1] = my + top[5:0:-1][None] * (mo / 2 + lt)
    inner = np.float32([-1, -0.5, 0, 0.5, 1])
    itop = np.sqrt(1 - inner ** 2)
    pts[:, 60:65, 0] = inner[None] * mw * 0.85 + sh
    pts[:, 60:65, 1] = my - itop[None] * mo / 2
    pts[:, 65:68, 0] = inner[3:0:-1][None] * mw * 0.85 + sh
    pts[:, 65:68, 1] = my + itop[3:0:-1][None] * mo / 2
    return pts


def _window(motion: dict, size: int, u0: float, u1: float, v0: float, v1: float) -> tuple[slice, slice]:
    """Pixel rows/columns covering the face-coordinate box ``[u0,u1] x [v0,v1]`` in every frame.
    Layers are drawn only inside their window: most of the cost of a clip is in full-frame blends."""
    corners = np.array([[u0, v0], [u0, v1], [u1, v0], [u1, v1]], np.float32)
    xy = to_pixels(motion, size, np.broadcast_to(corners, (len(motion["cx"]), 4, 2)))
    lo = np.clip(np.floor(xy.min(axis=(0, 1))).astype(int) - 1, 0, size)
    hi = np.clip(np.ceil(xy.max(axis=(0, 1))).astype(int) + 2, 0, size)
    return slice(lo[1], hi[1]), slice(lo[0], hi[0])


def render(ident: dict, motion: dict, size: int, background: dict, *, texture: float = 1.0,
           shading: float = 1.0, light: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render a clip. ``texture`` scales the fine skin/teeth texture (0 = flat, as a graphics
    re-render); ``shading`` scales the directional lighting; ``light`` overrides the per-frame light
    azimuth ``(T,)``. Returns image ``(T,H,W,3)`` float32 [0,1], landmarks ``(T,68,2)`` pixels,
    face coverage ``(T,H,W)``."""
    T = len(motion["cx"])
    U, V, px = local_coords(motion, size)
    f = features(ident, motion)
    sh = f["shift"][:, None, None]
    ys = np.linspace(0, 1, size, dtype=np.float32)[None, :, None, None]
    bg = background
    img = np.broadcast_to(bg["c0"] + (bg["c1"] - bg["c0"]) * ys, (T, size, size, 3)).copy()
    xs = np.linspace(0, 1, size, dtype=np.float32)
    blob = np.sin(bg["k"][0] * xs[None, :] * 2 + bg["ph"][0]) * np.sin(bg["k"][1] * xs[:, None] * 2 + bg["ph"][1])
    img += (bg["amp"] * blob)[None, :, :, None]
    face_full = np.zeros((T, size, size), np.float32)

    skin, hair = ident["skin"], ident["hair"]
    a, b, p = ident["face_a"], ident["face_b"], ident["jaw_p"]
    lt = motion["light"] if light is None else light
    lu, lv = np.sin(lt)[:, None, None], np.float32(-0.35)

    def shade_at(u, v):
        nz = np.sqrt(np.clip(1 - (u / (a + 0.15)) ** 2 - ((v + 0.05) / (b + 0.2)) ** 2, 0.0, 1.0))
        lam = np.clip((u / (a + 0.15)) * lu + ((v + 0.05) / (b + 0.2)) * lv + nz * 0.8, 0.0, 1.3)
        return 0.6 + 0.4 * (1 - shading) + shading * 0.4 * lam

    # --- head window: hair, neck, face, fringe, wrinkles (the neck runs to the bottom edge)
    wy, wx = _window(motion, size, -(a + 0.3), a + 0.3, -(b + 0.3), 4.0)
    u, v, im = U[:, wy, wx], V[:, wy, wx], img[:, wy, wx]
    # hair behind the head (long hair falls beside the face)
    if ident["hair_long"]:
        d_hair = ellipse_sdf(u, v, 0.0, 0.05, a + 0.28, b + 0.2)
    else:
        d_hair = ellipse_sdf(u, v, 0.0, -0.25, a + 0.1, b * 0.85)
    hair_tex = 1.0 + 0.12 * texture * np.sin(40 * u + 3 * np.sin(9 * v))
    _mix(im, hair * hair_tex[..., None], _cov(d_hair, px))
    # neck
    d_neck = np.maximum(np.abs(u - 0.3 * sh) - 0.42 * a, 0.6 - v)
    _mix(im, skin * 0.72, _cov(d_neck, px))
    # face: superellipse, squarer jaw for larger p
    q = np.abs(u / a) ** p + np.abs((v + 0.05) / b) ** np.where(v > -0.05, p, 2.0)
    face = _cov((q ** (1.0 / p) - 1.0) * a, px)
    face_full[:, wy, wx] = face
    tex = np.zeros_like(u)
    for k, th, ph in zip(ident["tex_k"], ident["tex_th"], ident["tex_ph"]):
        tex += np.sin(k * (np.cos(th) * u + np.sin(th) * v) + ph)
    tex = 1.0 + 0.025 * texture * tex
    ex, ey, ew = ident["eye_dx"], ident["eye_y"], ident["eye_w"]
    my = ident["mouth_y"]
    cheek = ident["blush"] * np.exp(-(((np.abs(u - sh) - 0.42) / 0.14) ** 2 + ((v - 0.22) / 0.12) ** 2))
    skin_img = skin * (shade_at(u, v) * tex)[..., None] + cheek[..., None] * np.float32([0.3, -0.1, -0.1])
    # age: forehead lines, crow's feet, nasolabial folds
    if ident["wrinkle"] > 0:
        w = ident["wrinkle"] * texture
        fore = (np.cos(30 * v) > 0.85) * (v > -0.62) * (v < -0.38) * (np.abs(u) < 0.45)
        crow = (np.cos(45 * (v - ey)) > 0.7) * (np.abs(np.abs(u - sh) - ex - ew - 0.06) < 0.05) * (np.abs(v - ey) < 0.1)
        fold = np.abs(np.abs(u - sh) - 0.14 - 0.25 * (v - ey - ident["nose_len"])) < 0.018
        fold = fold * (v > ey + ident["nose_len"]) * (v < my + 0.02)
        lines = (fore + crow + fold.astype(np.float32))
        skin_img *= (1.0 - w * np.clip(lines, 0, 1))[..., None]
    if ident["stubble"] > 0:
        st = (np.sin(83 * u) * np.sin(71 * v + 1.3) > 0.3) * (v > my - 0.15) * texture
        skin_img *= (1.0 - ident["stubble"] * st)[..., None]
    _mix(im, skin_img, face)
    # hair fringe over the forehead
    d_fringe = v - (ident["hairline"] + 0.06 * np.sin(7 * u + 1.0))
    _mix(im, hair * hair_tex[..., None] * 0.95, _cov(d_fringe, px) * face)

    # --- inner features, each drawn inside its own small window (margin 0.1 for the yaw shift)
    def win(u0, u1, v0, v1):
        wy, wx = _window(motion, size, u0 - 0.1, u1 + 0.1, v0, v1)
        return U[:, wy, wx], V[:, wy, wx], img[:, wy, wx], face_full[:, wy, wx]

    by = ey - ident["eye_h"] - ident["brow_gap"]
    eh = f["eye_h"][:, None, None]
    gz = (motion["gaze"] * ew * 0.4)[:, None, None]
    for sgn in (-1, 1):
        # eye bag and brow
        u, v, im, face = win(sgn * ex - 1.2 * ew, sgn * ex + 1.2 * ew, by - 0.1, ey + 0.2)
        if ident["bags"] > 0:
            bag = np.exp(-(((u - sh - sgn * ex) / ew) ** 2 + ((v - ey - 0.09) / 0.04) ** 2))
            im *= (1.0 - ident["bags"] * bag)[..., None]
        du = (u - sh - sgn * ex) / (ew * 1.2)
        arch = by - 0.05 * (1 - np.clip(du, -1, 1) ** 2)
        d_brow = np.maximum(np.abs(v - arch) - ident["brow_t"], (np.abs(du) - 1) * ew)
        _mix(im, hair * 0.7, _cov(d_brow, px) * face)
        # eye: sclera, iris, pupil, lid line
        cu = sh + sgn * ex
        d_eye = ellipse_sdf(u, v, cu, ey, ew, eh)
        eye_cov = _cov(d_eye, px)
        d_iris = np.sqrt((u - cu - gz) ** 2 + (v - ey) ** 2) - 0.062
        _mix(im, np.float32([0.93, 0.92, 0.9]), eye_cov)
        _mix(im, ident["iris"], _cov(d_iris, px) * eye_cov)
        _mix(im, np.float32([0.03, 0.03, 0.03]), _cov(d_iris + 0.035, px) * eye_cov)
        lid = _cov(np.maximum(np.abs(d_eye), np.abs(u - cu) - ew) - 0.012, px) * (v < ey + 0.2 * eh)
        _mix(im, skin * 0.35, lid)
    # nose: shaded side line and nostrils
    nl, nw = ident["nose_len"], ident["nose_w"]
    u, v, im, _ = win(-nw - 0.08, nw + 0.08, ey - 0.02, ey + nl + 0.1)
    side = np.sign(np.sin(lt))[:, None, None]
    d_ridge = np.maximum(np.abs(u - sh + side * 0.05) - 0.018, np.abs(v - ey - nl / 2) - nl / 2)
    _mix(im, skin * 0.7, _cov(d_ridge, px) * 0.6)
    for sgn in (-1, 1):
        d_nos = ellipse_sdf(u, v, sh + sgn * nw * 0.55, ey + nl + 0.05, 0.035, 0.02)
        _mix(im, skin * 0.35, _cov(d_nos, px))
    # mouth: lips, dark interior, upper and lower teeth with gaps
    mw, mo = f["mouth_w"][:, None, None], f["mouth_open"][:, None, None]
    half = 0.07 + ident["lip_t"] + 0.02
    u, v, im, _ = win(-ident["mouth_w"] - 0.03, ident["mouth_w"] + 0.03, my - half, my + half)
    d_lips = ellipse_sdf(u, v, sh, my, mw, mo / 2 + ident["lip_t"])
    _mix(im, ident["lip"] * shade_at(u, v)[..., None], _cov(d_lips, px))
    inside = _cov(ellipse_sdf(u, v, sh, my, mw * 0.85, mo / 2 + 1e-3), px)
    gaps = 1.0 - 0.35 * texture * (np.cos(60 * (u - sh)) > 0.8)
    upper = _cov(v - (my - mo / 2 + 0.045), px)
    lower = _cov((my + mo / 2 - 0.03) - v, px)
    teeth = np.float32([0.95, 0.93, 0.86]) * gaps[..., None]
    _mix(im, np.float32([0.22, 0.05, 0.05]), inside)
    _mix(im, teeth, upper * inside)
    _mix(im, teeth * 0.9, lower * inside)
    np.clip(img, 0.0, 1.0, out=img)
    return img, to_pixels(motion, size, landmarks_uv(ident, motion)), face_full


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
