"""The feature cache: frozen-backbone features extracted once, reused by every chapter and re-run.

``extract(backbone, df)`` returns a float32 array ``(N, D)`` whose row i belongs to ``df.iloc[i]``. Its cache
key holds everything that changes the numbers: backbone name, weights identity, preprocessing (spec, or the
key of a custom transform), layer, and the manifest's content (paths in order, plus each file's size and
modification time, so regenerated images are never served stale features).

Files: ``<cache>/features/<key>.npy`` (float32; NaN rows for unreadable images, which ``extract(lenient=True)``
drops from what it returns) and ``<key>.json`` (sidecar, written last: its presence marks a complete entry;
it records the ``.npy``'s size, checked on every hit). A miss streams batches into a
``np.lib.format.open_memmap`` under a temporary name (memory stays bounded by one batch), checkpoints its
progress so an interrupted extraction resumes where it stopped, and renames into place when complete; a
file lock makes two notebooks extracting the same features at once safe (the second waits, then hits).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from filelock import FileLock
from PIL import Image
from tqdm.auto import tqdm

from dfbook import __version__, imageio, manifest, paths, runtime

log = logging.getLogger(__name__)
FORMAT = 1  # bump when the stored layout or the pooling of a layer changes


def _dir() -> Path:
    return paths.cache_dir("features")


def data_fingerprint(df: pd.DataFrame) -> str:
    """Hash of the rows' paths in order plus each file's size and mtime (missing files count as -1)."""
    def stat(p):
        try:
            st = os.stat(p)
            return st.st_size, st.st_mtime_ns
        except OSError:
            return -1, -1

    sizes, mtimes = zip(*map(stat, df["path"].astype(str))) if len(df) else ((), ())
    table = pd.DataFrame({"path": df["path"].astype(str).to_numpy(), "size": sizes, "mtime": mtimes})
    return manifest.content_hash(table, columns=["path", "size", "mtime"])


def _transform_id(backbone, transform, transform_key: str | None) -> dict:
    if transform is None:
        return {"spec": backbone.spec}
    key = transform_key or repr(transform)
    if " at 0x" in key:
        raise ValueError("the custom transform's repr contains a memory address, so it cannot key the feature "
                         "cache; pass transform_key='<a stable description of the transform>'")
    return {"transform": key}


def cache_key(backbone, df: pd.DataFrame, layer: str = "final", *, transform=None,
              transform_key: str | None = None, fingerprint: str | None = None, precision=None) -> str:
    """The cache key of one layer's features (see the module docstring for what it holds); ``precision``: the
    autocast dtype the features were computed in (None: fp32)."""
    precision = {"precision": str(precision)} if precision else {}  # fp32 (mini, CPU) keeps the keys it had
    blob = json.dumps({"format": FORMAT, "backbone": backbone.name, "weights": backbone.weights_id,
                       **_transform_id(backbone, transform, transform_key), "layer": layer,
                       "data": fingerprint or data_fingerprint(df), **precision}, sort_keys=True, default=list)
    slug = "".join(c if c.isalnum() or c in "_-" else "-" for c in f"{backbone.name}-{layer}")
    return f"{slug}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def _parse_layer(layer: str) -> int | None:
    """``"final"`` -> None; ``"block:i"`` -> i (negative counts from the end)."""
    if layer == "final":
        return None
    head, _, idx = layer.partition(":")
    if head != "block" or not idx.lstrip("-").isdigit():
        raise ValueError(f"layer {layer!r} must be 'final' or 'block:<i>' (i may be negative)")
    return int(idx)


class _Images(torch.utils.data.Dataset):
    """Rows ``start..`` of the manifest as preprocessed tensors; unreadable files give None in lenient mode."""

    def __init__(self, paths_, transform, lenient: bool):
        self.paths, self.transform, self.lenient = list(paths_), transform, lenient

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            return self.transform(Image.fromarray(imageio.read_rgb(self.paths[i])))
        except imageio.ImageReadError:
            if not self.lenient:
                raise
            return None


def _collate(batch):
    ok = [b is not None for b in batch]
    good = [b for b in batch if b is not None]
    return (torch.stack(good) if good else None), torch.tensor(ok)


def _atomic_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(path)


def _forward(backbone, x: torch.Tensor, layers: list[str]) -> list[torch.Tensor]:
    out = {}
    if "final" in layers:
        out["final"] = backbone.encode_image(x)
    blocks = [l for l in layers if l != "final"]
    if blocks:
        out.update(zip(blocks, backbone.intermediates(x, [_parse_layer(l) for l in blocks])))
    return [out[l].float().cpu() for l in layers]


def _batches(backbone, paths_, layers, transform, *, batch_size, device, lenient, num_workers):
    """Yield ``(ok, feats)`` per batch: ``ok`` bool ``(m,)`` marks readable rows; ``feats`` is one float32
    array ``(m, D_layer)`` per layer with NaN rows where ``ok`` is False, or None if no row was readable."""
    loader = torch.utils.data.DataLoader(_Images(paths_, transform or backbone.preprocess, lenient),
                                         batch_size=batch_size, num_workers=num_workers, collate_fn=_collate,
                                         pin_memory=torch.device(device).type == "cuda")
    backbone.to(device).eval()
    with torch.inference_mode(), runtime.autocast(device):  # bf16/fp16 on the GPU in full; fp32 in mini
        for x, ok in loader:
            ok = ok.numpy()
            if x is None:
                yield ok, None
                continue
            feats = []
            for f in _forward(backbone, x.to(device), layers):
                block = np.full((len(ok), f.shape[1]), np.nan, np.float32)
                block[ok] = f.numpy()
                feats.append(block)
            yield ok, feats


def _fill(backbone, df, layers, keys, transform, *, checkpoint_every: int = 20, **kw) -> dict:
    """Stream the features of ``layers`` into ``<key>.npy.partial`` memmaps, resuming from their progress
    files (written atomically every ``checkpoint_every`` batches)."""
    d, n = _dir(), len(df)
    parts = [d / f"{k}.npy.partial" for k in keys]
    progress = [d / f"{k}.progress.json" for k in keys]
    done = [json.loads(p.read_text())["done"] if p.is_file() and q.is_file() else 0
            for p, q in zip(progress, parts)]
    start = min(done)
    mms = [np.lib.format.open_memmap(q, mode="r+") if start else None for q in parts]
    skipped = json.loads(progress[0].read_text())["skipped"] if start else []
    if start:
        log.info("resuming feature extraction at row %d of %d", start, n)
    row, t0 = start, time.perf_counter()
    with tqdm(total=n, initial=start, desc=f"features {backbone.name}", unit="img") as bar:
        for b, (ok, feats) in enumerate(_batches(backbone, df["path"].astype(str).iloc[start:], layers,
                                                 transform, **kw)):
            m = len(ok)
            for j in range(len(keys)):
                if mms[j] is None and feats is not None:
                    mms[j] = np.lib.format.open_memmap(parts[j], mode="w+", dtype=np.float32,
                                                       shape=(n, feats[j].shape[1]))
                    mms[j][:row] = np.nan  # leading batches with no readable image (lenient mode)
                if mms[j] is not None:
                    mms[j][row:row + m] = feats[j] if feats is not None else np.nan
            skipped += [int(row + i) for i in np.flatnonzero(~ok)]
            row += m
            bar.update(m)
            if (b + 1) % checkpoint_every == 0 and all(mm is not None for mm in mms):
                for mm, p in zip(mms, progress):
                    mm.flush()
                    _atomic_json(p, {"done": row, "skipped": skipped})
    if any(mm is None for mm in mms):
        raise imageio.ImageReadError(f"none of the {n} images could be read (first: {df['path'].iloc[0]})")
    for mm in mms:
        mm.flush()
    mms.clear()
    return {"parts": parts, "progress": progress, "skipped": skipped, "seconds": round(time.perf_counter() - t0, 2)}


def extract(backbone, df: pd.DataFrame, *, layer: str | list[str] = "final", batch_size: int = 64,
            transform=None, transform_key: str | None = None, device="auto", cache: bool = True,
            lenient: bool = False, num_workers: int = 0):
    """Features of every row of ``df`` (a manifest with a ``path`` column) from a frozen backbone.

    ``layer``: ``"final"`` (:meth:`Backbone.encode_image`: CLIP image embedding, or timm pooled
    pre-logits), ``"block:i"`` (class token / pooled stage i, see :meth:`Backbone.intermediates`) or a
    list of these -- then a dict ``layer -> array`` is returned. ``transform`` replaces the backbone's
    eval preprocessing (PIL image -> tensor); its ``repr`` (or ``transform_key``) enters the cache key.
    Unreadable images: by default the first one raises naming it. ``lenient=True`` skips and counts them
    (the cache stores NaN rows for them and ``n_skipped`` in its sidecar) and returns ``(features, kept)``:
    ``kept`` is ``df`` without the skipped rows, ``kept.attrs["skipped"]`` the skipped paths, and the
    features are row-aligned to ``kept`` -- so no NaN row reaches a probe or a loss.
    ``cache=False`` recomputes and does not store.

    Returns float32 ``(N, D)`` arrays row-aligned to ``df`` (read-only memory maps on a cache hit), or the
    ``(features, kept)`` pair with ``lenient``. The backbone is moved to ``device`` and put in eval mode.
    """
    layers = [layer] if isinstance(layer, str) else list(layer)
    for l in layers:
        _parse_layer(l)
    if not len(df):
        raise ValueError("extract() got an empty manifest")
    device = runtime.device(device) if isinstance(device, str) else device
    kw = dict(batch_size=batch_size, device=device, lenient=lenient, num_workers=num_workers)
    if not cache:
        out = dict(zip(layers, _extract_uncached(backbone, df, layers, transform, **kw)))
        return _result(out, layer, df, lenient)
    fp = data_fingerprint(df)
    precision = runtime.amp_dtype() if runtime.mixed_precision(device) else None
    keys = [cache_key(backbone, df, l, transform=transform, transform_key=transform_key, fingerprint=fp,
                      precision=precision) for l in layers]
    d = _dir()
    with ExitStack() as locks:
        for k in sorted(set(keys)):  # one lock per entry, taken in a fixed order: no deadlock
            locks.enter_context(FileLock(str(d / f"{k}.lock")))
        missing = [(l, k) for l, k in zip(layers, keys) if not _complete(d, k)]
        for l, k in zip(layers, keys):
            if (l, k) not in missing:
                log.info("feature cache hit: %s (%s, %s, %d rows)", k, backbone.name, l, len(df))
        if missing:
            ml, mk = [m[0] for m in missing], [m[1] for m in missing]
            log.info("feature cache miss: %s -- extracting %d rows", ", ".join(mk), len(df))
            res = _fill(backbone, df, ml, mk, transform, **kw)
            if res["skipped"]:
                log.warning("%d of %d images were unreadable and are skipped (lenient mode), e.g. %s",
                            len(res["skipped"]), len(df), list(df["path"].iloc[res["skipped"][:3]]))
            for l, k, part, prog in zip(ml, mk, res["parts"], res["progress"]):
                nbytes = part.stat().st_size
                part.replace(d / f"{k}.npy")
                _atomic_json(d / f"{k}.json", {
                    "key": k, "backbone": backbone.name, "weights": backbone.weights_id, "layer": l, "bytes": nbytes,
                    **_transform_id(backbone, transform, transform_key), "rows": len(df),
                    "data_fingerprint": fp, "n_skipped": len(res["skipped"]),
                    "skipped_rows": res["skipped"][:1000], "seconds": res["seconds"],
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "versions": {"dfbook": __version__, "torch": torch.__version__}})
                prog.unlink(missing_ok=True)
        out = {l: np.load(d / f"{k}.npy", mmap_mode="r") for l, k in zip(layers, keys)}
    return _result(out, layer, df, lenient)


def _result(out: dict, layer, df: pd.DataFrame, lenient: bool):
    """What :func:`extract` returns: the array (or dict of arrays), with ``lenient`` the readable rows only
    and the manifest of those rows."""
    if lenient:
        ok = ~np.isnan(next(iter(out.values()))).all(axis=1)
        if not ok.all():
            out = {l: np.asarray(x)[ok] for l, x in out.items()}
        kept = df[ok].copy()
        kept.attrs["skipped"] = df["path"].astype(str)[~ok].tolist()
    X = out[layer] if isinstance(layer, str) else out
    return (X, kept) if lenient else X


def _complete(d: Path, key: str) -> bool:
    """A cache entry is whole when its sidecar exists and its ``.npy`` has the size the sidecar recorded; a
    damaged one is logged and extracted again."""
    side, npy = d / f"{key}.json", d / f"{key}.npy"
    if not side.is_file():
        return False
    expected = json.loads(side.read_text()).get("bytes")
    size = npy.stat().st_size if npy.is_file() else -1
    if expected is not None and size != expected:
        log.warning("feature cache entry %s is damaged (%d bytes, its sidecar says %d): extracting it again",
                    npy, size, expected)
        side.unlink()
        return False
    return True


def _extract_uncached(backbone, df, layers, transform, **kw) -> list[np.ndarray]:
    chunks: list[list[np.ndarray]] = [[] for _ in layers]
    for ok, feats in tqdm(_batches(backbone, df["path"].astype(str), layers, transform, **kw),
                          desc=f"features {backbone.name}", unit="batch"):
        if feats is None:
            raise imageio.ImageReadError("a whole batch of images was unreadable; use cache=True, which sizes "
                                         "the output from the first readable image")
        for c, f in zip(chunks, feats):
            c.append(f)
    return [np.concatenate(c) for c in chunks]


def info(key: str) -> dict:
    """The sidecar of a cached entry."""
    return json.loads((_dir() / f"{key}.json").read_text())


def ls() -> pd.DataFrame:
    """One row per complete cache entry: key, backbone, layer, rows, n_skipped, created, MB."""
    rows = []
    for js in sorted(_dir().glob("*.json")):
        if js.name.endswith(".progress.json"):
            continue
        meta = json.loads(js.read_text())
        npy = js.with_suffix(".npy")
        rows.append({k: meta.get(k) for k in ("key", "backbone", "layer", "rows", "n_skipped", "created")}
                    | {"MB": round(npy.stat().st_size / 2**20, 2) if npy.is_file() else None})
    return pd.DataFrame(rows, columns=["key", "backbone", "layer", "rows", "n_skipped", "created", "MB"])


def clear(pattern: str = "*") -> int:
    """Delete cache entries whose key matches ``pattern`` (fnmatch); returns how many were deleted."""
    n = 0
    for f in list(_dir().iterdir()):
        key = f.name.split(".")[0]
        if fnmatch.fnmatch(key, pattern):
            n += f.name.endswith(".json") and not f.name.endswith(".progress.json")
            f.unlink(missing_ok=True)
    return n
