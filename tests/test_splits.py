import numpy as np
import pandas as pd
import pytest

from dfbook import manifest, splits

METHODS = ("Deepfakes", "FaceSwap", "Face2Face")


def toy(n_ids: int = 20, frames: int = 2, split: bool = False, seed: int = 0) -> pd.DataFrame:
    """Reals of ``n_ids`` (even) people plus fakes of each method; people swap faces in pairs."""
    rng = np.random.default_rng(seed)
    groups = rng.choice(["light", "medium", "dark"], n_ids)
    rows = []
    for i in range(n_ids):
        donor = f"p{i ^ 1:02d}"  # pairs swap with each other, as FF++ target/source pairs
        vids = [("real", f"p{i:02d}", "")] + [(m, f"p{i:02d}_{donor}", donor if m != "Face2Face" else "")
                                              for m in METHODS]
        for method, vid, src in vids:
            for f in range(frames):
                rows.append(dict(path=f"{method}/{vid}/{f}.png", label=int(method != "real"), dataset="toy",
                                 domain="toy", method=method, video_id=vid, frame=f, identity=f"p{i:02d}",
                                 source_identity=src, split="", skin_group=groups[i]))
    return pd.DataFrame(rows)


def test_assign_keeps_swap_partners_together_and_is_seeded():
    df = toy()
    before = df.copy()
    a, b = splits.assign(df, seed=3), splits.assign(df, seed=3)
    pd.testing.assert_frame_equal(df, before)  # input untouched
    assert (a["split"] == b["split"]).all()
    assert set(a["split"]) == {"train", "val", "test"}
    table = manifest.check_disjoint(a)
    assert table["shared"].sum() == 0


def test_assign_respects_existing_and_rejects_half_split():
    df = splits.assign(toy(), seed=1)
    kept = splits.assign(df, seed=99)
    assert (kept["split"] == df["split"]).all()
    half = df.copy()
    half.loc[half.index[:3], "split"] = ""
    with pytest.raises(manifest.ManifestError, match="no split"):
        splits.assign(half)


def test_assign_existing_split_that_leaks_raises():
    df = splits.assign(toy(), seed=1)
    leak = df.copy()
    first = leak["identity"] == leak["identity"].iloc[0]
    leak.loc[first & (leak["method"] == "real"), "split"] = "test"
    leak.loc[first & (leak["method"] != "real"), "split"] = "train"
    with pytest.raises(manifest.ManifestError, match="not disjoint"):
        splits.assign(leak)


def test_protocol_gives_one_test_set_per_method_with_shared_reals():
    df = splits.assign(toy(), seed=0)
    sets = splits.protocol(df, "FaceSwap")
    assert set(sets) == {"train", "val"} | {f"test/{m}" for m in METHODS}
    assert set(sets["train"]["method"]) == {"real", "FaceSwap"}
    assert set(sets["train"]["split"]) == {"train"}
    reals = [set(v.loc[v["label"] == 0, "path"]) for k, v in sets.items() if k.startswith("test/")]
    assert all(r == reals[0] for r in reals) and reals[0]
    assert set(sets["test/Face2Face"]["method"]) == {"real", "Face2Face"}
    with pytest.raises(KeyError, match="NeuralTextures"):
        splits.protocol(df, "NeuralTextures")


def test_cross_domain_refuses_overlapping_identities():
    a = splits.assign(toy(seed=0), seed=0)
    b = a.assign(dataset="sub", domain="sub")  # a "v1 inside v2" copy: same people, same files
    both = pd.concat([a, b], ignore_index=True)
    with pytest.raises(manifest.ManifestError, match="identity"):
        splits.cross_domain(both, "toy", "sub", test_split=None)
    fair = splits.cross_domain(both, "toy", "sub", test_split="test")
    assert set(fair["test/sub"]["split"]) == {"test"}


def test_imbalance_thins_one_group_in_train_only():
    df = splits.assign(toy(n_ids=40), seed=0)
    out = splits.imbalance(df, "skin_group", "dark", 0.25, seed=0)
    info = out.attrs["imbalance"]
    train_dark = lambda d: d.loc[(d["split"] == "train") & (d["skin_group"] == "dark"), "identity"].nunique()
    assert info["identities_before"] == train_dark(df)
    assert train_dark(out) == info["identities_kept"] == round(0.25 * info["identities_before"])
    assert info["rows_dropped"] == len(df) - len(out) > 0
    for s in ("val", "test"):
        assert len(out[out["split"] == s]) == len(df[df["split"] == s])
    with pytest.raises(ValueError, match="no training identity"):
        splits.imbalance(df, "skin_group", "purple", 0.5)


def test_select_takes_reals_from_the_methods_domain_only():
    a = splits.assign(toy(seed=0), seed=0)
    other = a.assign(domain="other", dataset="other", method=np.where(a["label"] == 1, "Other", "real"),
                     identity="o" + a["identity"], source_identity="", path="o/" + a["path"])
    both = pd.concat([a, other], ignore_index=True)
    sel = splits.select(both, methods="FaceSwap", splits="train")
    assert set(sel["domain"]) == {"toy"}
    assert set(splits.select(both, splits="train")["domain"]) == {"toy", "other"}


def _celebdf_like() -> pd.DataFrame:
    """Celeb-DF's shape: celebrities with real videos and swaps among them, YouTube reals (one identity each),
    train/test only."""
    rows = []
    for i in range(10):
        rows.append(dict(identity=f"c{i}", source_identity="", label=0, split="train" if i < 8 else "test"))
        rows.append(dict(identity=f"c{i}", source_identity=f"c{(i + 1) % 10}", label=1,
                         split="train" if i < 8 else "test"))
    rows += [dict(identity=f"y{i}", source_identity="", label=0, split="train") for i in range(20)]
    df = pd.DataFrame(rows).assign(domain="celebdf_v2", dataset="celebdf_v2")
    return df.assign(path=[f"v{i}.mp4" for i in range(len(df))])


def test_hold_out_moves_whole_identities_of_both_kinds_and_is_seeded():
    df = _celebdf_like()
    a, b = splits.hold_out(df, "celebdf_v2", 0.25, seed=1), splits.hold_out(df, "celebdf_v2", 0.25, seed=1)
    assert (a["split"] == b["split"]).all() and (df["split"] != "val").all()  # seeded; input untouched
    val, train = a[a["split"] == "val"], a[a["split"] == "train"]
    assert set(val["label"]) == {0, 1}                                   # both classes, for the orientation
    assert not set(val["identity"]) & set(train["identity"])             # no target person on both sides
    assert val["identity"].str.startswith("c").sum() == 2 * 2            # round(0.25 * 8) celebrities, real + fake
    assert val["identity"].str.startswith("y").sum() == 5                # round(0.25 * 20) YouTube videos
    assert (a.loc[df["split"] == "test", "split"] == "test").all()       # test rows never move
    assert a.attrs["hold_out"]["identities_moved"] == 7
    assert (splits.hold_out(df, "celebdf_v2", 0.25, seed=2)["split"] != a["split"]).any()


def test_hold_out_refuses_what_it_cannot_split():
    df = _celebdf_like()
    with pytest.raises(ValueError, match=r"no train rows of 'celebdf_v2'.*splits are \['test'\]"):
        splits.hold_out(df.assign(split="test"), "celebdf_v2")
    with pytest.raises(ValueError, match="too few training identities"):
        splits.hold_out(df[df["identity"] == "c0"], "celebdf_v2")
    with pytest.raises(ValueError, match="fraction"):
        splits.hold_out(df, "celebdf_v2", 1.0)
