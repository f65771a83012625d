"""The generated-image corpus (dfbook.bench.images / scenes / generators) on small configurations."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from dfbook import manifest
from dfbook.bench import generators, images, scenes

SMALL = dict(n_real=90, n_per_generator=10, n_format_control=8, n_pretrain=30)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("images")
    return out, images.generate(out, **{**images.DEFAULTS, **SMALL})


def test_manifest_contract_and_splits(small):
    out, df = small
    manifest.validate(df, check_files=False)
    assert all((out / p).is_file() for p in df["path"])
    gen = df[df["dataset"] == "mini_gen"]
    manifest.check_disjoint(gen)  # no content instance crosses train/val/test
    fakes = gen[gen["label"] == 1]
    assert set(fakes["method"]) == {g.name for g in generators.GENERATORS}
    assert fakes.groupby("method").size().eq(10).all()
    fam = fakes.groupby("method")["family"].first()
    assert (fam == "gan").sum() >= 9 and (fam == "diffusion").sum() >= 4 and (fam == "autoregressive").sum() == 1
    # every generator has images in each split (stratified per generator)
    assert fakes.groupby("method")["split"].nunique().eq(3).all()
    assert set(gen.loc[gen["label"] == 0, "content"]) == set(images.CONTENT)
    ctl = gen[gen["domain"] == "format_control"]
    assert len(ctl) == 8 and (ctl["split"] == "test").all() and (ctl["label"] == 0).all()


def test_image_to_image_fakes_keep_the_split_of_their_source(small):
    _, df = small
    gen = df[df["dataset"] == "mini_gen"]
    split_of = dict(zip(gen.loc[gen["method"] == "real", "identity"], gen.loc[gen["method"] == "real", "split"]))
    for m in ("cyclegan", "stargan", "attgan"):
        rows = gen[gen["method"] == m]
        assert rows["identity"].isin(list(split_of)).all()
        assert (rows["identity"].map(split_of) == rows["split"]).all()
    assert (gen.loc[gen["method"].isin(["stargan", "attgan", "whichfaceisreal"]), "content"] == "face").all()


def test_pretraining_pool_is_real_only_and_disjoint(small):
    _, df = small
    pre = df[df["dataset"] == "mini_pretrain"]
    assert len(pre) == 30 and (pre["label"] == 0).all() and (pre["split"] == "train").all()
    assert not set(pre["identity"]) & set(df.loc[df["dataset"] == "mini_gen", "identity"])


def test_captions_describe_content_never_provenance(small):
    _, df = small
    assert df["caption"].str.startswith("a photo of").all()
    banned = re.compile(r"\b(?:real|fake|generated|synthetic|gan|diffusion|png|jpe?g)\b", re.I)
    assert not df["caption"].str.contains(banned).any()
    # the caption names the content class (or 'face')
    for c, cap in zip(df["content"], df["caption"]):
        assert (c in cap) or (scenes._PLURAL[c] in cap)


def _digest(out, df):
    h = hashlib.sha256()
    for p in sorted(df["path"]):
        h.update(p.encode())
        h.update((out / p).read_bytes())
    return h.hexdigest()


@pytest.mark.slow
def test_same_seed_gives_byte_identical_files(tmp_path):
    cfg = {**images.DEFAULTS, **SMALL, "n_real": 60, "n_pretrain": 10,
           "generators": ("progan", "stylegan", "cyclegan", "stargan", "gaugan", "ldm", "dalle")}
    a = images.generate(tmp_path / "a", **cfg)
    b = images.generate(tmp_path / "b", **cfg)
    assert a.equals(b)
    assert _digest(tmp_path / "a", a) == _digest(tmp_path / "b", b)
    c = images.generate(tmp_path / "c", **{**cfg, "seed": 1})
    assert _digest(tmp_path / "a", a) != _digest(tmp_path / "c", c)


@pytest.mark.parametrize("confound,common,real_fmt,fake_fmt", [
    (True, "png", "jpg", "png"), (False, "png", "png", "png"), (False, "jpg", "jpg", "jpg")])
def test_format_switches(tmp_path, confound, common, real_fmt, fake_fmt):
    cfg = {**images.DEFAULTS, **SMALL, "n_real": 40, "n_pretrain": 5, "generators": ("progan",),
           "format_confound": confound, "common_format": common}
    df = images.generate(tmp_path, **cfg)
    gen = df[df["domain"] == "mini_gen"]
    assert set(gen.loc[gen["label"] == 0, "format"]) == {real_fmt}
    assert set(gen.loc[gen["label"] == 1, "format"]) == {fake_fmt}
    ctl = df[df["domain"] == "format_control"]
    assert set(ctl["format"]) == {fake_fmt}  # saved the way fakes are
    assert all(p.endswith("." + f) for p, f in zip(df["path"], df["format"]))


def test_generators_are_fixed_and_distinct():
    rng = np.random.default_rng(0)
    attrs = scenes.sample(12, rng)
    x, seg = scenes.render(attrs, 64)
    cls = np.array([images.CONTENT.index(c) for c in attrs["content"]])
    outs = {}
    for g in generators.GENERATORS:
        y1 = generators.run(g, x, seg=seg, content_idx=cls, rng=np.random.default_rng(1))
        y2 = generators.run(g, x, seg=seg, content_idx=cls, rng=np.random.default_rng(1))
        assert y1.dtype == np.uint8 and y1.shape == x.shape
        assert np.array_equal(y1, y2), g.name
        diff = np.abs(y1.astype(np.float32) / 255 - x)
        assert 0.003 < diff.mean() < 0.1, (g.name, diff.mean())  # a trace, not a different picture
        outs[g.name] = y1
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not np.array_equal(outs[a], outs[b]), (a, b)


def test_progan_leaves_a_checkerboard_at_nyquist():
    rng = np.random.default_rng(0)
    x, seg = scenes.render(scenes.sample(16, rng), 64)
    y = generators.run(generators.by_name("progan"), x, seg=seg, content_idx=np.zeros(16, int), rng=rng)
    trace = y.astype(np.float32).mean(-1) / 255 - x.mean(-1)
    spec = np.abs(np.fft.fft2(trace)).mean(0)
    # energy at the Nyquist corner (period-2 checkerboard) well above the median frequency
    assert spec[32, 32] > 5 * np.median(spec)


def test_bad_parameters_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="multiple of 16"):
        images.generate(tmp_path, **{**images.DEFAULTS, **SMALL, "size": 40})
    with pytest.raises(ValueError, match="unknown generator"):
        images.generate(tmp_path, **{**images.DEFAULTS, **SMALL, "generators": ("vqgan9000",)})
    with pytest.raises(ValueError, match="common_format"):
        images.generate(tmp_path, **{**images.DEFAULTS, **SMALL, "common_format": "webp"})


def test_corpus_load_caches(tmp_path, monkeypatch):
    from dfbook.bench import corpus

    monkeypatch.setenv("DFBOOK_CACHE", str(tmp_path))
    cfg = dict(SMALL, n_real=40, n_pretrain=5, generators=("progan", "ldm"))
    df = corpus.load("images", **cfg)
    assert df["path"].map(lambda p: p.startswith(str(tmp_path))).all()
    assert corpus.info("images", **cfg)["version"] == images.VERSION
    again = corpus.load("images", **cfg)
    assert again.equals(df)
    with open(df["path"].iloc[3], "r+b") as f:  # a damaged cached image: named, with the folder to delete
        f.truncate(100)
    folder = corpus.location("images", **cfg)
    with pytest.raises(OSError, match=rf"cached corpus {folder} is damaged: 1 of {len(df)} files.*delete the folder"):
        corpus.load("images", **cfg)
