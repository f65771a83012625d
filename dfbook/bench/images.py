"""The generated-image corpus of the mini benchmark (``corpus.load("images", ...)``).

Two datasets in one manifest:

``mini_gen``
    Real photos of 11 content classes (the ten :data:`scenes.CLASSES` plus ``face`` from
    :func:`faces.render_stills`) through the camera pipeline, and the fakes of the fifteen toy
    generators of :mod:`dfbook.bench.generators` (9 GAN, 5 diffusion, 1 autoregressive) showing the
    same content classes. ``identity`` is the content instance, ``video_id`` the image; splits are by
    content instance, stratified per generator (image-to-image generators inherit the split of the
    real photo they edit). A test-only ``domain="format_control"`` set holds real photos saved the
    way fakes are saved, so a chapter can measure how much a detector reads the file format.
``mini_pretrain``
    A real-only pool (split ``train``, disjoint instances) with captions and content classes, for
    pretraining the mini model zoo -- never on real/fake labels.

Every image has an English ``caption``: content (class, count, colour, background, time of day or,
for faces, age, gender presentation and skin tone) and photographic attributes (blur, grain,
quality). For fakes the caption is the prompt: its photographic words are drawn from the reals'
distribution, so a caption never says whether an image is real. Image-to-image fakes keep the
caption of the photo they edit (CycleGAN's new season and the edited hair are not in it).

Format confound (``format_confound=True``): reals stored as JPEG (quality ``jpeg_quality`` range,
like LSUN's q75 reals in CNNDetection), fakes as PNG. Otherwise every image is stored as
``common_format`` (``png``, or ``jpg`` at the top of the ``jpeg_quality`` range).

Defaults generate about 3k reals, 6k fakes and 6k pretraining images at 64x64 (see the report in
the benchmark chapter for timings).
"""

from __future__ import annotations

import concurrent.futures as cf
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dfbook import manifest
from dfbook.bench import camera, generators, scenes

VERSION = "1"
DEFAULTS = {
    "seed": 0,
    "size": 64,
    "n_real": 3000,
    "n_per_generator": 400,
    "n_format_control": 300,
    "n_pretrain": 6000,
    "generators": tuple(g.name for g in generators.GENERATORS),
    "format_confound": False,
    "common_format": "png",
    "jpeg_quality": (60, 90),
    "blur_sigma": (0.0, 1.2),
    "noise_sigma": (0.5, 4.0),
    "split_fractions": (0.7, 0.15, 0.15),
    "generator_seed": 0,
}
CONTENT = (*scenes.CLASSES, "face")
SPLITS = ("train", "val", "test")


# -- photographs ------------------------------------------------------------------------------

def _photo_params(n: int, p: dict, rng: np.random.Generator) -> pd.DataFrame:
    """Per-image blur (optics), sensor noise and JPEG quality, and the words a caption uses."""
    blur = rng.uniform(*p["blur_sigma"], size=n)
    noise = rng.uniform(*p["noise_sigma"], size=n)
    q = rng.integers(p["jpeg_quality"][0], p["jpeg_quality"][1] + 1, size=n)
    return pd.DataFrame({"blur": blur, "noise": noise, "quality": q})


def _photo_words(ph: pd.DataFrame, jpeg: bool) -> list[str]:
    words = []
    for b, s, q in ph[["blur", "noise", "quality"]].itertuples(index=False):
        w = ["sharp" if b < 0.4 else "slightly blurry" if b < 0.8 else "blurry",
             "clean" if s < 1.5 else "slightly grainy" if s < 3 else "grainy"]
        if jpeg:
            w.append("high quality" if q >= 85 else "medium quality" if q >= 72 else "low quality")
        words.append(", ".join(w))
    return words


def _face_caption(a) -> str:
    person = {("young", "female"): "young woman", ("young", "male"): "young man",
              ("middle", "female"): "middle-aged woman", ("middle", "male"): "middle-aged man",
              ("senior", "female"): "older woman", ("senior", "male"): "older man"}
    return f"a photo of the face of a {person.get((a['age_group'], a['gender']), 'person')} with {a['skin_group']} skin"


def _content(n: int, rng, p: dict, classes, size: int) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """``n`` clean renders (float (N,S,S,3) in [0,1]), region maps and attributes (with a content
    caption) for content drawn uniformly from ``classes`` (which may include ``face``)."""
    from dfbook.bench import faces  # the faces corpus module renders plain face stills

    pick = rng.choice(np.array(classes), size=n)
    attrs = scenes.sample(n, rng, classes=[c for c in classes if c != "face"] or ["ball"])
    attrs["content"] = np.where(pick == "face", "face", attrs["content"])
    img = np.zeros((n, size, size, 3), np.float32)
    seg = np.zeros((n, size, size), np.int8)
    sc = np.flatnonzero(pick != "face")
    if len(sc):
        img[sc], seg[sc] = scenes.render(attrs.iloc[sc], size)
    attrs["caption"] = [scenes.caption(r) if r["content"] != "face" else "" for _, r in attrs.iterrows()]
    fc = np.flatnonzero(pick == "face")
    if len(fc):
        f_img, f_attr = faces.render_stills(len(fc), size, int(rng.integers(2**31)))
        img[fc] = f_img.astype(np.float32) / 255.0
        attrs.loc[attrs.index[fc], "caption"] = [_face_caption(a) for _, a in f_attr.iterrows()]
        attrs.loc[attrs.index[fc], ["colour", "background", "time"]] = ""
        seg[fc] = 0
    return img, seg, attrs


def _blur(img: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Per-image optics blur (float images; ``camera.blur`` is the uint8 equivalent)."""
    out = img.copy()
    for i, s in enumerate(sigmas):
        if s > 0.05:
            out[i] = cv2.GaussianBlur(img[i], (0, 0), float(s))
    return out


def _camera(img: np.ndarray, ph: pd.DataFrame, rng) -> np.ndarray:
    """Clean float renders -> uint8 photos: optics blur, then sensor noise (JPEG happens when
    saving). The noise is drawn per group of equal sigma (0.25 steps), a batch per group."""
    u8 = np.clip(np.rint(_blur(img, ph["blur"].to_numpy()) * 255), 0, 255).astype(np.uint8)
    level = np.round(ph["noise"].to_numpy() * 4) / 4
    for s in np.unique(level):
        i = np.flatnonzero(level == s)
        u8[i] = camera.noise(u8[i], float(s), rng)
    return u8


# -- storage ----------------------------------------------------------------------------------

def _save(out_dir: Path, rel: str, img: np.ndarray, fmt: str, quality: int) -> np.ndarray:
    """Write ``img`` (uint8 RGB) and return the pixels as stored (decoded JPEG for ``jpg``)."""
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1,
                                                                       cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    ok, buf = cv2.imencode("." + fmt, bgr, params)
    if not ok:
        raise RuntimeError(f"could not encode {rel} as {fmt}")
    (out_dir / rel).write_bytes(buf.tobytes())
    if fmt == "jpg":
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return img


def _formats(p: dict, label: int) -> str:
    if p["format_confound"]:
        return "jpg" if label == 0 else "png"
    if p["common_format"] not in ("png", "jpg"):
        raise ValueError(f"common_format must be 'png' or 'jpg', got {p['common_format']!r}")
    return p["common_format"]


def _write_group(out_dir: Path, rows: pd.DataFrame, imgs: np.ndarray, qualities) -> np.ndarray:
    stored = np.empty_like(imgs)
    for i, (rel, fmt, q) in enumerate(zip(rows["path"], rows["format"], qualities)):
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        stored[i] = _save(out_dir, rel, imgs[i], fmt, q)
    return stored


def _rows(dataset, method, family, ids, attrs, captions, fmt, domain, label):
    return pd.DataFrame({
        "path": [f"{dataset}/{method}/{i}.{fmt}" for i in ids], "label": label, "dataset": dataset,
        "method": method, "video_id": list(ids), "frame": 0, "identity": list(attrs["identity"]),
        "split": list(attrs["split"]), "family": family, "content": list(attrs["content"]),
        "caption": captions, "domain": domain, "format": fmt})


def _reals(p: dict, rng, n: int, dataset: str, prefix: str, domain: str, fmt: str, start: int = 0):
    """``n`` real photos with ids ``prefix{start..}``; returns (rows, uint8 pixels, region maps,
    JPEG qualities to save with)."""
    img, seg, attrs = _content(n, rng, p, CONTENT, p["size"])
    ph = _photo_params(n, p, rng)
    photos = _camera(img, ph, rng)
    ids = [f"{prefix}{k:05d}" for k in range(start, start + n)]
    attrs["identity"], attrs["split"] = ids, ""
    caps = [f"{c}, {w}" for c, w in zip(attrs["caption"], _photo_words(ph, p["format_confound"]))]
    rows = _rows(dataset, "real", "real", ids, attrs, caps, fmt, domain, 0)
    q = ph["quality"] if fmt == "jpg" and p["format_confound"] else [p["jpeg_quality"][1]] * n
    return rows, photos, seg, q


def _pretrain(out_dir: Path, p: dict, chunk: int = 1000) -> pd.DataFrame:
    """The real-only pretraining pool, rendered in chunks to bound memory."""
    rng = np.random.default_rng([p["seed"], 2])
    parts = []
    for start in range(0, p["n_pretrain"], chunk):
        rows, photos, _, q = _reals(p, rng, min(chunk, p["n_pretrain"] - start), "mini_pretrain",
                                    f"p{p['seed']}_", "mini_pretrain", _formats(p, 0), start)
        rows["split"] = "train"
        _write_group(out_dir, rows, photos, q)
        parts.append(rows)
    return pd.concat(parts, ignore_index=True)


def _assign(ids, p: dict, seed: int) -> list[str]:
    fr = dict(zip(SPLITS, p["split_fractions"]))
    m = manifest.stratified_ids(np.asarray(ids), fr, seed)
    return [m[i] for i in ids]


def generate(out_dir: Path, **params) -> pd.DataFrame:
    """Render the corpus into ``out_dir``; returns the manifest with paths relative to it."""
    p = {**DEFAULTS, **params}
    out_dir = Path(out_dir)
    size = int(p["size"])
    if size % 16 or size < 32:
        raise ValueError(f"size must be a multiple of 16 and >= 32, got {size}")
    gens = [generators.by_name(g) for g in p["generators"]]
    _formats(p, 1)  # validates common_format before any work starts
    # The real-only pretraining pool renders in a second thread while this one does mini_gen
    # (numpy, OpenCV and torch release the GIL in their kernels). Threads, not processes: a spawned
    # process would re-import the caller's script, which deadlocks on the corpus lock without a
    # __main__ guard. Each part has its own random generator, so the bytes do not depend on timing.
    with cf.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(_pretrain, out_dir, p) if p["n_pretrain"] > 0 else None
        gen_df = _mini_gen(out_dir, p, gens, size)
        pre = fut.result() if fut else None
    df = pd.concat([gen_df, pre], ignore_index=True) if pre is not None else gen_df
    manifest.check_disjoint(df[df["dataset"] == "mini_gen"])
    shared = set(df.loc[df["dataset"] == "mini_gen", "identity"]) & set(df.loc[df["dataset"] == "mini_pretrain", "identity"])
    if shared:
        raise AssertionError(f"pretraining pool shares {len(shared)} instances with mini_gen")
    return df


def _mini_gen(out_dir: Path, p: dict, gens, size: int) -> pd.DataFrame:
    seed = p["seed"]
    rng = np.random.default_rng([seed, 1])
    real_fmt, fake_fmt = _formats(p, 0), _formats(p, 1)
    # reals: split by instance
    reals, photos, real_seg, q = _reals(p, rng, p["n_real"], "mini_gen", f"r{seed}_", "mini_gen", real_fmt)
    reals["split"] = _assign(list(reals["identity"]), p, seed)
    stored = _write_group(out_dir, reals, photos, q)
    parts = [reals]
    # format control: real photos saved the way fakes are (never JPEG-compressed unless fakes are)
    if p["n_format_control"]:
        ctl, c_photos, _, _ = _reals(p, rng, p["n_format_control"], "mini_gen", f"c{seed}_",
                                     "format_control", fake_fmt)
        ctl["split"] = "test"
        ctl["path"] = [f"mini_gen/format_control/{v}.{fake_fmt}" for v in ctl["video_id"]]
        _write_group(out_dir, ctl, c_photos, [p["jpeg_quality"][1]] * len(ctl))
        parts.append(ctl)
    for gi, g in enumerate(tqdm(gens, desc="generators", leave=False)):
        parts.append(_fakes(out_dir, p, g, gi, reals, stored, real_seg, fake_fmt))
    return pd.concat(parts, ignore_index=True)


def _fakes(out_dir, p, g, gi, reals, stored, real_seg, fmt) -> pd.DataFrame:
    seed, size, n = p["seed"], p["size"], p["n_per_generator"]
    rng = np.random.default_rng([seed, 100 + gi])
    ph = _photo_params(n, p, rng)
    if g.source in ("scene", "face"):
        classes = scenes.CLASSES if g.source == "scene" else ("face",)
        img, seg, attrs = _content(n, rng, p, classes, size)
        img = _blur(img, ph["blur"].to_numpy())
        attrs["identity"] = [f"{g.name}{seed}_{k:05d}" for k in range(n)]
        attrs["split"] = _assign(list(attrs["identity"]), p, seed + 1 + gi)
        caps = [f"{c}, {w}" for c, w in zip(attrs["caption"], _photo_words(ph, p["format_confound"]))]
    else:
        # image-to-image: edit real photos of the corpus, the same share from each split
        want = (reals["content"] == "face") if g.source == "real_face" else (reals["content"] != "face")
        fr = np.asarray(p["split_fractions"], float)
        ks = np.diff(np.round(np.cumsum(np.r_[0, fr]) / fr.sum() * n)).astype(int)  # sums to n
        pools = [np.flatnonzero(want & (reals["split"] == s)) for s in SPLITS]
        if not len(pools[0]):
            raise ValueError(f"{g.name} edits real {g.source[5:]} photos but the train split has none; "
                             "raise n_real")
        for i in (1, 2):  # a split without source photos (tiny corpora): its share goes to train
            if not len(pools[i]):
                ks[0], ks[i] = ks[0] + ks[i], 0
        picks = [rng.choice(pool, size=k, replace=k > len(pool)) for pool, k in zip(pools, ks) if k]
        src = np.concatenate(picks)
        img, seg = stored[src].astype(np.float32) / 255.0, real_seg[src]
        attrs = reals.iloc[src][["identity", "split", "content", "caption"]].reset_index(drop=True)
        caps = list(attrs["caption"])
    content_idx = np.array([CONTENT.index(c) for c in attrs["content"]])
    out = generators.run(g, img, seg=seg, content_idx=content_idx, rng=rng, generator_seed=p["generator_seed"])
    ids = [f"{g.name}_{k:05d}" for k in range(n)]
    rows = _rows("mini_gen", g.name, g.family, ids, attrs, caps, fmt, "mini_gen", 1)
    _write_group(out_dir, rows, out, [p["jpeg_quality"][1]] * n)
    return rows
