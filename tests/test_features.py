import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dfbook import backbones, features, imageio

TINY = dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("DFBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)


@pytest.fixture
def _images(write_pngs):
    """``_images(folder, n, size=32, seed=0)`` -> manifest of ``n`` random PNGs with alternating labels."""
    return lambda folder, n, size=32, seed=0: pd.DataFrame(
        {"path": write_pngs(folder, n, size, seed), "label": [i % 2 for i in range(n)]})


@pytest.fixture
def bb():
    b = backbones.create("timm:convnext_atto", pretrained=False, **TINY)
    b.preprocess, b.spec = _small(), {"size": [32, 32], "test": "tiny"}  # 32 px keeps the tests fast
    return b


def _small():
    import torchvision.transforms as T

    return T.Compose([T.Resize(32), T.ToTensor()])


# ----------------------------------------------------------------------------- imageio

def test_read_rgb_converts_and_names_bad_files(tmp_path):
    Image.new("L", (10, 8), 7).save(tmp_path / "grey.png")
    Image.new("RGBA", (10, 8), (1, 2, 3, 4)).save(tmp_path / "rgba.png")
    assert imageio.read_rgb(tmp_path / "grey.png").shape == (8, 10, 3)
    assert imageio.read_rgb(tmp_path / "rgba.png")[0, 0].tolist() == [1, 2, 3]
    (tmp_path / "empty.jpg").write_bytes(b"")
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("not an image")
    for name, needle in [("empty.jpg", "0 bytes"), ("cut.jpg", "truncated"), ("text.png", "cannot be decoded"),
                         ("missing.png", "does not exist")]:
        with pytest.raises(imageio.ImageReadError, match=needle) as e:
            imageio.read_rgb(tmp_path / name)
        assert name in str(e.value)


def test_16_bit_grey_is_scaled_not_saturated(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    assert Image.open(tmp_path / "ramp16.png").mode.startswith("I")  # a 16-bit grey PNG
    rgb = imageio.read_rgb(tmp_path / "ramp16.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (32, 32, 3)
    # Image.convert("RGB") clips 16-bit values to 255: 99.6 % of this ramp would become white
    np.testing.assert_allclose(rgb[..., 0], ramp / 257, atol=0.51)
    assert (rgb == 255).mean() < 0.01
    Image.fromarray(np.ones((16, 16), np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(imageio.ImageReadError, match="float.tiff.*floating-point"):
        imageio.read_rgb(tmp_path / "float.tiff")


def test_tiny_image_is_refused_not_upscaled(tmp_path, _images):
    Image.new("RGB", (1, 1), (9, 9, 9)).save(tmp_path / "dot.png")
    with pytest.raises(imageio.ImageReadError, match=r"dot.png is 1x1 pixels.*lenient"):
        imageio.read_rgb(tmp_path / "dot.png")
    good = _images(tmp_path / "ok", 2, size=16)
    arr, skipped = imageio.load_images([good.path[0], str(tmp_path / "dot.png"), good.path[1]], size=64, lenient=True)
    assert arr.shape == (2, 64, 64, 3) and skipped == 1


def test_damaged_cached_file_names_the_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("DFBOOK_CACHE", str(tmp_path / "cache"))
    entry = tmp_path / "cache" / "bench" / "faces-0123456789ab"
    (entry / "ffpp").mkdir(parents=True)
    (entry / "ffpp" / "0000.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(imageio.ImageReadError) as e:
        imageio.read_rgb(entry / "ffpp" / "0000.png")
    assert f"cache entry {entry}: delete that folder" in str(e.value) and "lenient" not in str(e.value)


def test_load_images_strict_and_lenient(tmp_path, caplog, _images):
    df = _images(tmp_path, 3, size=20)
    (tmp_path / "bad.png").write_bytes(b"")
    paths = [df.path[0], str(tmp_path / "bad.png"), df.path[2]]
    with pytest.raises(imageio.ImageReadError, match="bad.png"):
        imageio.load_images(paths, size=16)
    with caplog.at_level(logging.WARNING):
        arr, skipped = imageio.load_images(paths, size=16, lenient=True)
    assert arr.shape == (2, 16, 16, 3) and arr.dtype == np.uint8 and skipped == 1
    assert "skipped 1 unreadable" in caplog.text
    Image.new("RGB", (8, 8)).save(tmp_path / "odd.png")
    with pytest.raises(ValueError, match="pass size="):
        imageio.load_images([df.path[0], str(tmp_path / "odd.png")])


# ----------------------------------------------------------------------------- features

def test_extract_cold_then_warm_row_aligned(tmp_path, bb, caplog, _images):
    df = _images(tmp_path / "img", 10)
    with caplog.at_level(logging.INFO, logger="dfbook.features"):
        cold = np.array(features.extract(bb, df, batch_size=4))
        assert "miss" in caplog.text
        caplog.clear()
        warm = features.extract(bb, df, batch_size=3)
        assert "hit" in caplog.text
    assert cold.shape == (10, bb.dim) and cold.dtype == np.float32
    np.testing.assert_array_equal(cold, warm)
    # row i belongs to df row i: the reversed manifest is a different key with reversed rows
    rev = features.extract(bb, df.iloc[::-1].reset_index(drop=True))
    np.testing.assert_allclose(rev, cold[::-1], rtol=1e-5, atol=1e-6)
    assert len(features.ls()) == 2
    meta = features.info(features.ls().key[0])
    assert meta["rows"] == 10 and meta["n_skipped"] == 0 and meta["weights"] == "random-init:0"


def test_key_changes_with_everything_that_changes_numbers(tmp_path, bb, _images):
    df = _images(tmp_path / "img", 4)
    k = features.cache_key(bb, df)
    other = backbones.create("timm:convnext_atto", pretrained=False, init_seed=1, **TINY)
    assert features.cache_key(other, df) != k                           # weights
    assert features.cache_key(bb, df, "block:0") != k                   # layer
    assert features.cache_key(bb, df.iloc[:3]) != k                     # data
    assert features.cache_key(bb, df, transform=_small(), transform_key="flip") != k  # preprocessing
    Image.new("RGB", (32, 32)).save(df.path[0])                         # file content changed in place
    assert features.cache_key(bb, df) != k
    with pytest.raises(ValueError, match="transform_key"):
        features.cache_key(bb, df, transform=lambda im: im)


def test_layers_list_and_uncached(tmp_path, bb, _images):
    df = _images(tmp_path / "img", 5)
    out = features.extract(bb, df, layer=["final", "block:0", "block:-1"])
    assert out["final"].shape == (5, 64) and out["block:0"].shape == (5, 8) and out["block:-1"].shape == (5, 64)
    again = features.extract(bb, df, layer="block:0")  # cached separately: a hit
    np.testing.assert_array_equal(again, out["block:0"])
    fresh = features.extract(bb, df, layer="block:0", cache=False)
    np.testing.assert_allclose(fresh, out["block:0"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="block:<i>"):
        features.extract(bb, df, layer="stage2")


def test_lenient_nan_rows_and_strict_error(tmp_path, bb, _images):
    df = _images(tmp_path / "img", 6)
    (tmp_path / "img" / "003.png").write_bytes(b"")
    with pytest.raises(imageio.ImageReadError, match="003.png"):
        features.extract(bb, df)
    strict = features.extract(bb, df.drop(index=3), batch_size=4)
    for cache in (True, False):  # lenient: the readable rows and their manifest, never a NaN row to train on
        X, kept = features.extract(bb, df, lenient=True, batch_size=4, cache=cache)
        assert X.shape == (5, 64) and not np.isnan(X).any()
        assert kept["path"].tolist() == df.drop(index=3)["path"].tolist() and kept.attrs["skipped"] == [df.path[3]]
        np.testing.assert_allclose(X, strict, rtol=1e-5, atol=1e-6)
    key = features.cache_key(bb, df)
    assert features.info(key)["n_skipped"] == 1 and features.info(key)["skipped_rows"] == [3]
    out, kept = features.extract(bb, df, layer=["final", "block:0"], lenient=True)
    assert {k: v.shape for k, v in out.items()} == {"final": (5, 64), "block:0": (5, 8)} and len(kept) == 5


def test_damaged_cache_entry_is_extracted_again(tmp_path, bb, _images, caplog):
    df = _images(tmp_path / "img", 4)
    X = np.array(features.extract(bb, df))
    npy = features._dir() / f"{features.cache_key(bb, df)}.npy"
    npy.write_bytes(npy.read_bytes()[:-64])  # truncated on disk
    with caplog.at_level(logging.WARNING):
        again = features.extract(bb, df)
    assert "damaged" in caplog.text
    np.testing.assert_array_equal(again, X)


def test_resume_after_interruption(tmp_path, bb, monkeypatch, _images):
    df = _images(tmp_path / "img", 12)
    reference = np.array(features.extract(bb, df, cache=False))
    calls = {"n": 0}
    original = features._forward

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*a, **k)

    monkeypatch.setattr(features, "_forward", dying)
    monkeypatch.setattr(features, "_fill", _with_checkpoint_every_batch(features._fill))
    with pytest.raises(KeyboardInterrupt):
        features.extract(bb, df, batch_size=2)
    key = features.cache_key(bb, df)
    progress = json.loads((features._dir() / f"{key}.progress.json").read_text())
    assert progress["done"] == 4
    monkeypatch.setattr(features, "_forward", original)
    calls["n"] = 0
    X = features.extract(bb, df, batch_size=2)
    np.testing.assert_allclose(X, reference, rtol=1e-5, atol=1e-6)
    assert not (features._dir() / f"{key}.progress.json").exists()
    assert features.clear("*") == 1 and features.ls().empty


def _with_checkpoint_every_batch(fill):
    def wrapped(*a, **k):
        return fill(*a, checkpoint_every=1, **k)
    return wrapped


@pytest.mark.slow
def test_two_processes_at_once_are_safe(tmp_path, _images):
    """Two processes extracting the same features at once: one fills, the other waits and hits."""
    import subprocess
    import sys

    df = _images(tmp_path / "img", 8)
    df.to_csv(tmp_path / "m.csv", index=False)
    code = (
        "import sys, numpy as np, pandas as pd, torch; torch.set_num_threads(1)\n"
        "from dfbook import backbones, features\n"
        "bb = backbones.create('timm:convnext_atto', pretrained=False, depths=(1,1,1,1), dims=(8,16,32,64))\n"
        "X = features.extract(bb, pd.read_csv(sys.argv[1]), batch_size=2)\n"
        "np.save(sys.argv[2], np.asarray(X))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "m.csv"), str(tmp_path / f"o{i}.npy")])
             for i in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    np.testing.assert_array_equal(np.load(tmp_path / "o0.npy"), np.load(tmp_path / "o1.npy"))
    assert len(features.ls()) == 1
