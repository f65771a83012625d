import hashlib

import cv2
import numpy as np
import pandas as pd
import pytest

from dfbook import manifest
from dfbook.bench import corpus, face_manip, face_render, faces

SMALL = dict(n_ffpp=6, n_celebdf=6, n_uadfv=2, n_wild=6)  # the least every split can hold (2 per split)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("DFBOOK_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("DFBOOK_BENCH_WORKERS", "1")
    yield corpus.load("faces", **SMALL)
    mp.undo()


def _tree_hash(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_render_stills_shapes_attrs_determinism():
    a, attrs = faces.render_stills(6, 48, seed=1)
    b, _ = faces.render_stills(6, 48, seed=1)
    c, _ = faces.render_stills(6, 48, seed=2)
    assert a.shape == (6, 48, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert list(attrs.columns) == ["identity", "skin_tone", "skin_group", "gender", "age_group"]
    assert attrs["identity"].is_unique
    for tone, group in zip(attrs["skin_tone"], attrs["skin_group"]):
        assert group == ("light" if tone <= 3 else "medium" if tone <= 6 else "dark")
    assert a.std() > 20  # not blank


def test_demographics_are_visible():
    rng = np.random.default_rng(0)
    motion = face_render.sample_motion(rng, 16)
    bg = face_render.sample_background(rng)

    def face_mean(**attrs):
        ident = face_render.sample_identity(np.random.default_rng(5), **attrs)
        img, lm, face = face_render.render(ident, motion, 64, bg)
        return (img * face[..., None]).sum((0, 1, 2)) / face.sum(), img

    light, _ = face_mean(skin_tone=2, gender="female", age_group="young")
    dark, _ = face_mean(skin_tone=9, gender="female", age_group="young")
    assert light.mean() - dark.mean() > 0.3
    _, young = face_mean(skin_tone=5, gender="male", age_group="young")
    _, senior = face_mean(skin_tone=5, gender="male", age_group="senior")
    assert np.abs(young - senior).mean() > 0.01  # wrinkles / grey hair change the image


def test_small_corpus_contract(small):
    df = small
    manifest.validate(df, check_files=True)
    for _, part in df.groupby("domain"):
        manifest.check_disjoint(part)
    assert set(df["domain"]) == {"ffpp", "celebdf_v1", "celebdf_v2", "uadfv", "wilddeepfake"}
    ff = df[df["domain"] == "ffpp"]
    assert set(ff["method"]) == {"real", *face_manip.METHODS}
    swaps = df[df["method"].isin(["Deepfakes", "FaceSwap", "Celeb-synthesis", "FakeApp", "in-the-wild"])]
    assert (swaps["source_identity"] != "").all() and (swaps["source_identity"] != swaps["identity"]).all()
    assert (df.loc[df["method"].isin(["real", "Face2Face", "NeuralTextures"]), "source_identity"] == "").all()
    assert (df["family"] == np.where(df["label"] == 1, "face_manipulation", "real")).all()
    assert set(df["format"]) == {"png"}
    assert set(df.loc[df["domain"] == "uadfv", "split"]) == {"test"}
    # v1 lies inside v2: same files, same identities
    v1, v2 = df[df["domain"] == "celebdf_v1"], df[df["domain"] == "celebdf_v2"]
    assert set(v1["path"]) < set(v2["path"])
    # identities never cross domains (apart from v1 within v2)
    doms = df[df["domain"] != "celebdf_v1"].groupby("identity")["domain"].nunique()
    assert (doms == 1).all()
    assert set(df["frame"]) == set(range(16)) and df.groupby(manifest.video_key(df)).size().eq(16).all()
    for col, values in (("skin_group", {"light", "medium", "dark"}), ("gender", {"female", "male"}),
                        ("age_group", {"young", "middle", "senior"})):
        assert set(df[col]) <= values


def test_landmarks_lookup_any_subset(small):
    df = small
    full = faces.landmarks(df)
    assert full.shape == (len(df), 68, 2) and full.dtype == np.float32
    assert (full > 0).all() and (full < 64).all()
    idx = np.random.default_rng(0).permutation(len(df))[:50]
    assert np.array_equal(faces.landmarks(df.iloc[idx]), full[idx])
    bad = df.iloc[:1].assign(path=df["path"].iloc[0].replace("000.png", "999.png"))
    with pytest.raises(KeyError, match="not in"):
        faces.landmarks(bad)
    with pytest.raises(FileNotFoundError, match="landmarks.npy"):
        faces.landmarks(pd.DataFrame({"path": ["/nonexistent/x.png"]}))


def test_blinks_and_speech_show_in_landmarks(small):
    real = small[(small["domain"] == "ffpp") & (small["method"] == "real")]
    lm = faces.landmarks(real)
    d = lambda i, j: np.linalg.norm(lm[:, i] - lm[:, j], axis=-1)
    eye = (d(37, 41) + d(38, 40)) / (2 * d(36, 39))  # the unsupervised chapter's ratios (threshold 0.25 / 0.15)
    mouth = d(62, 66) / d(60, 64)
    assert (eye > 0.25).mean() > 0.6 and (eye < 0.25).any()
    assert 0.2 < (mouth > 0.15).mean() < 0.95


def test_fakes_flicker_frame_to_frame(small):
    """Every fake differs from its real clip, and the per-frame jitter makes the residual rough in
    time: its second temporal difference (which cancels smooth motion) shrinks without jitter."""
    ff = small[small["domain"] == "ffpp"]
    target = ff["identity"].iloc[0]

    def clip(method):
        rows = ff[(ff["identity"] == target) & (ff["method"] == method)].sort_values("frame")
        return np.stack([cv2.imread(p).astype(np.float32) for p in rows["path"]])

    real = clip("real")
    for m in face_manip.METHODS:
        assert np.abs(clip(m) - real).max() > 40, m

    rng = np.random.default_rng(1)
    ident, donor = face_render.sample_identity(rng), face_render.sample_identity(rng)
    motion, bg = face_render.sample_motion(rng, 16), face_render.sample_background(rng)
    target_clip, _, _ = face_render.render(ident, motion, 64, bg)

    def roughness(**kw):
        fake, _ = face_manip.swap(target_clip, ident, motion, donor, 64, np.random.default_rng(0), bg, **kw)
        return np.abs(np.diff(fake - target_clip, n=2, axis=0)).mean()

    assert roughness() > 1.5 * roughness(jitter_px=0.0, gain_jitter=0.0)


@pytest.mark.parametrize("method", face_manip.METHODS)
def test_manipulations_work_at_128(method):
    rng = np.random.default_rng(0)
    ident, donor = face_render.sample_identity(rng), face_render.sample_identity(rng)
    motion, src = face_render.sample_motion(rng, 16), face_render.sample_motion(rng, 16)
    bg = face_render.sample_background(rng)
    target, lm, _ = face_render.render(ident, motion, 128, bg)
    fake, flm = face_manip.manipulate(method, target, ident, motion, donor=donor, source_motion=src, size=128,
                                      rng=rng, background=bg)
    assert fake.shape == target.shape and flm.shape == (16, 68, 2)
    assert 0 <= fake.min() and fake.max() <= 1 and np.abs(fake - target).mean() > 1e-3
    with pytest.raises(ValueError, match="unknown face manipulation"):
        face_manip.manipulate("Blend", target, ident, motion, donor=donor, source_motion=src, size=128,
                              rng=rng, background=bg)


def test_too_few_identities_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="identities"):
        faces.generate(tmp_path, **{**SMALL, "n_ffpp": 4})


@pytest.mark.slow
def test_same_seed_same_bytes_and_format_confound(tmp_path, monkeypatch):
    monkeypatch.setenv("DFBOOK_BENCH_WORKERS", "2")  # parallel generation must not change the bytes
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    df_a = faces.generate(a, **SMALL)
    monkeypatch.setenv("DFBOOK_BENCH_WORKERS", "1")
    df_b = faces.generate(b, **SMALL)
    pd.testing.assert_frame_equal(df_a, df_b)
    assert _tree_hash(a) == _tree_hash(b)
    c = tmp_path / "c"
    c.mkdir()
    conf = faces.generate(c, **SMALL, format_confound=True)
    assert set(conf.loc[conf["label"] == 0, "format"]) == {"jpg"}
    assert set(conf.loc[conf["label"] == 1, "format"]) == {"png"}
    assert all((c / p).is_file() for p in conf["path"])
