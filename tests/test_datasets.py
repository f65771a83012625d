"""Each real-dataset adapter against a miniature copy of its published layout built in tmp_path
(the adapters only list files, so placeholder bytes stand in for videos and images)."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from dfbook import datasets, manifest
from dfbook.datasets import DatasetError


def touch(root, *rels):
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


# ------------------------------------------------------------------------------------------ FF++

FF_SPLITS = {"train": [["000", "003"]], "val": [["001", "002"]], "test": [["004", "005"]]}


@pytest.fixture
def ffpp_root(tmp_path):
    root = tmp_path / "ffpp"
    for comp in ("raw", "c23"):
        touch(root, *[f"original_sequences/youtube/{comp}/videos/{i:03d}.mp4" for i in range(7)])
        for m in datasets.faces.FFPP_METHODS:
            touch(root, *[f"manipulated_sequences/{m}/{comp}/videos/{a}_{b}.mp4"
                          for pair in FF_SPLITS.values() for a, b in (pair[0], pair[0][::-1])])
    (root / "splits").mkdir()
    for split, pairs in FF_SPLITS.items():
        (root / "splits" / f"{split}.json").write_text(json.dumps(pairs))
    return root


def test_ffpp(ffpp_root):
    df = datasets.ffpp(ffpp_root)
    assert (df["frame"] == datasets.VIDEO).all() and (df["compression"] == "c23").all()
    real = df[df["label"] == 0]
    assert real.groupby("split").size().to_dict() == {"": 1, "test": 2, "train": 2, "val": 2}  # 006 is unlisted
    fakes = df[df["label"] == 1]
    assert fakes.groupby(["split", "method"]).size().eq(2).all()  # t_s and s_t per method and split
    row = fakes[(fakes["method"] == "FaceSwap") & (fakes["video_id"] == "000_003")].iloc[0]
    assert (row["identity"], row["source_identity"], row["split"]) == ("ffpp_000", "ffpp_003", "train")
    # the four manipulations of 000_003 stay four videos
    assert manifest.video_key(fakes[fakes["video_id"] == "000_003"]).nunique() == 4
    assert manifest.check_disjoint(df[df["split"] != ""])["shared"].sum() == 0
    c0 = datasets.ffpp(ffpp_root, compression="c0", methods=("Deepfakes",))
    assert (c0["compression"] == "c0").all() and set(c0["method"]) == {"real", "Deepfakes"}
    assert c0["path"].str.contains("/raw/videos/").all()


def test_ffpp_missing_split_file(ffpp_root):
    (ffpp_root / "splits" / "val.json").unlink()
    with pytest.raises(DatasetError, match=r"val\.json not found.*ondyari/FaceForensics"):
        datasets.ffpp(ffpp_root)


def test_ffpp_bad_layout(ffpp_root, tmp_path):
    with pytest.raises(DatasetError, match=r"c40/videos not found.*data/README\.md"):
        datasets.ffpp(ffpp_root, compression="c40")
    (ffpp_root / "splits" / "test.json").write_text("{not json")
    with pytest.raises(DatasetError, match="test.json is not valid JSON"):
        datasets.ffpp(ffpp_root)
    with pytest.raises(DatasetError, match=r"nowhere not found.*DFBOOK_DATA"):
        datasets.ffpp(tmp_path / "nowhere")


def test_default_root_is_dfbook_data(ffpp_root, monkeypatch):
    monkeypatch.setenv("DFBOOK_DATA", str(ffpp_root.parent))
    assert len(datasets.ffpp()) == len(datasets.ffpp(ffpp_root))


# -------------------------------------------------------------------------------------- Celeb-DF

@pytest.fixture
def celeb_root(tmp_path):
    root = tmp_path / "celebdf_v2"
    touch(root, "Celeb-real/id0_0000.mp4", "Celeb-real/id1_0000.mp4", "Celeb-real/id1_0001.mp4",
          "Celeb-synthesis/id0_id1_0000.mp4", "Celeb-synthesis/id1_id0_0000.mp4",
          "YouTube-real/00000.mp4", "YouTube-real/00001.mp4")
    (root / "List_of_testing_videos.txt").write_text(
        "1 YouTube-real/00000.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n1 Celeb-real/id1_0001.mp4\n")
    return root


def test_celebdf(celeb_root):
    df = datasets.celebdf(celeb_root).set_index("video_id")
    assert df.loc["id0_id1_0000", ["label", "split", "identity", "source_identity"]].tolist() == [
        1, "test", "celebdf_id0", "celebdf_id1"]
    assert df.loc["00000", ["label", "split", "identity"]].tolist() == [0, "test", "celebdf_yt00000"]
    assert df.loc["id1_id0_0000", "split"] == "train" and df.loc["id0_0000", "label"] == 0
    assert (df["dataset"] == "celebdf_v2").all() and df["split"].value_counts()["test"] == 3
    assert manifest.check_disjoint(df.reset_index(), by=("video",))["shared"].sum() == 0


def test_celebdf_errors(celeb_root):
    lst = celeb_root / "List_of_testing_videos.txt"
    lst.write_text("0 YouTube-real/00000.mp4\n")  # a real video listed as fake
    with pytest.raises(DatasetError, match="labels YouTube-real/00000.mp4 as fake"):
        datasets.celebdf(celeb_root)
    lst.write_text("1 Celeb-real/id9_0000.mp4\n")
    with pytest.raises(DatasetError, match="not on disk.*Celeb-real/id9_0000"):
        datasets.celebdf(celeb_root)
    lst.write_text("real Celeb-real/id0_0000.mp4\n")
    with pytest.raises(DatasetError, match="line 1"):
        datasets.celebdf(celeb_root)
    lst.unlink()
    with pytest.raises(DatasetError, match="List_of_testing_videos.txt not found"):
        datasets.celebdf(celeb_root)
    with pytest.raises(DatasetError, match="celebdf_v1"):
        datasets.celebdf(version="v1", root=celeb_root.parent / "celebdf_v1")


# ------------------------------------------------------------------------------- UADFV, WildDeepfake

def test_uadfv(tmp_path):
    touch(tmp_path / "uadfv", "real/0000.mp4", "real/0001.mp4", "fake/0000_fake.mp4", "fake/0001_fake.mp4")
    df = datasets.uadfv(tmp_path / "uadfv")
    assert df.groupby("identity")["label"].apply(sorted).to_dict() == {"uadfv_0000": [0, 1], "uadfv_0001": [0, 1]}
    assert (df["split"] == "test").all()
    touch(tmp_path / "uadfv", "fake/0002.mp4")
    with pytest.raises(DatasetError, match="0002.mp4 is not named <id>_fake"):
        datasets.uadfv(tmp_path / "uadfv")


def test_wilddeepfake(tmp_path):
    root = tmp_path / "wilddeepfake"
    touch(root, "real_train/1/real/a/0.png", "real_train/1/real/a/10.png", "real_train/1/real/a/2.png",
          "real_test/1/real/b/0.png", "fake_train/7/fake/c/0.png", "fake_test/8/fake/d/0.png",
          "fake_test/8.tar.gz")
    df = datasets.wilddeepfake(root)
    v = df[df["video_id"] == "real_train_1"]
    assert v["frame"].tolist() == [0, 2, 10] and v["path"].str.endswith(("0.png", "2.png", "10.png")).all()
    assert v["path"].iloc[2].endswith("10.png")  # natural order
    assert df.groupby("split")["label"].apply(sorted).to_dict() == {"test": [0, 1], "train": [0, 0, 0, 1]}
    assert manifest.check_disjoint(df, by=("video",))["shared"].sum() == 0
    touch(root, "fake_test/9.tar.gz")
    with pytest.raises(DatasetError, match=r"not extracted.*9\.tar\.gz"):
        datasets.wilddeepfake(root)


def test_video_folder(tmp_path):
    touch(tmp_path / "v", "real/a.mp4", "real/sub/b.avi", "fake/x.mp4", "fake/NeuralTextures/y.mp4",
          "fake/NeuralTextures/z.png")
    df = datasets.video_folder(tmp_path / "v").set_index("video_id")
    assert df.loc["sub/b", "method"] == "real" and df.loc["x", "method"] == "fake"
    assert df.loc["y", "method"] == "NeuralTextures" and df.loc["z", "frame"] == 0 and df.loc["y", "frame"] == -1
    with pytest.raises(DatasetError, match="real/ and fake/"):
        datasets.video_folder(tmp_path / "v" / "real")


# ------------------------------------------------------------------------------ generated images

def test_cnndetection(tmp_path):
    root = tmp_path / "cnndetection"
    for split in ("train", "val"):
        touch(root, f"{split}/car/0_real/a.png", f"{split}/car/1_fake/a.png", f"{split}/cat/0_real/b.png",
              f"{split}/cat/1_fake/b.png")
    touch(root, "test/biggan/0_real/r.png", "test/biggan/1_fake/f.png",
          "test/progan/horse/0_real/r.png", "test/progan/horse/1_fake/f.png",
          "test/san/0_real/r.jpg", "test/san/1_fake/f.png")
    df = datasets.cnndetection(root)
    assert df.groupby("split").size().to_dict() == {"test": 6, "train": 4, "val": 4}
    assert set(df.loc[df["split"] == "train", "content"]) == {"car", "cat"}
    fake = df[df["label"] == 1].set_index("domain")
    assert fake.loc["biggan", "family"] == "gan" and fake.loc["san", "family"] == "other"
    assert df.loc[(df["split"] == "test") & (df["domain"] == "progan"), "content"].unique().tolist() == ["horse"]
    real_san = df[(df["domain"] == "san") & (df["label"] == 0)].iloc[0]
    assert (real_san["method"], real_san["format"]) == ("real", "jpg")
    only = datasets.cnndetection(root, splits=("test",), sets=("biggan",))
    assert set(only["domain"]) == {"biggan"}
    with pytest.raises(DatasetError, match=r"test set\(s\) \['stylegan'\] not found"):
        datasets.cnndetection(root, splits=("test",), sets=("stylegan",))
    (root / "test/biggan/1_fake/f.png").unlink()
    (root / "test/biggan/1_fake").rmdir()
    with pytest.raises(DatasetError, match="biggan needs both 0_real/ and 1_fake/"):
        datasets.cnndetection(root, splits=("test",))


def test_univfd_diffusion(tmp_path):
    root = tmp_path / "univfd_diffusion"
    touch(root, "imagenet/0_real/a.png", "laion/0_real/b.png", "guided/1_fake/c.png",
          "ldm_200/1_fake/d.png", "dalle/1_fake/e.png")
    df = datasets.univfd_diffusion(root).set_index("domain")
    assert df["family"].to_dict() == {"dalle": "autoregressive", "guided": "diffusion", "imagenet": "real",
                                      "laion": "real", "ldm_200": "diffusion"}
    assert (df["split"] == "test").all()
    assert datasets.UNIVFD_REAL_SOURCE["guided"] == "imagenet" and datasets.UNIVFD_REAL_SOURCE["dalle"] == "laion"


def test_generator_folders(tmp_path):
    root = tmp_path / "generators"
    touch(tmp_path / "univfd", "ldm_200/1_fake/d.png", "laion/0_real/e.png")
    touch(root, "real/celeba/a.png", "ProGAN/x/b.png", "StyleGAN2/c.png", "mystery/f.png")
    (root / "ldm_200").symlink_to(tmp_path / "univfd" / "ldm_200")  # symlinks work, as data/README.md suggests
    (root / "real" / "laion").symlink_to(tmp_path / "univfd" / "laion")
    with pytest.raises(DatasetError, match=r"no family known.*\['mystery'\].*families="):
        datasets.generator_folders(root)
    df = datasets.generator_folders(root, families={"mystery": "gan"}).set_index("method")
    assert df.loc["ProGAN", "family"] == "gan" and df.loc["ldm_200", "family"] == "diffusion"
    assert df.loc["mystery", "family"] == "gan"
    assert sorted(df.loc["real", "video_id"]) == ["real/celeba/a", "real/laion/0_real/e"]


# ------------------------------------------------------------------------------------- AI-Face

def test_aiface_v2(tmp_path):
    root = tmp_path / "aiface"
    touch(root, "GANs/AttGAN/a.png", "DMs/Palette/b.png", "Real/FFHQ/c.png", "deepfakes/dfd/d.png")
    pd.DataFrame({"Image Path": ["GANs/AttGAN/a.png", "DMs/Palette/b.png"], "Gender": [1, 0], "Age": [5, 0],
                  "Skin Tone": [2, 9], "Intersection": [3, 2], "Target": [1, 1]}).to_csv(root / "train.csv",
                                                                                         index=False)
    pd.DataFrame({"Image Path": ["Real/FFHQ/c.png", "deepfakes/dfd/d.png"], "Gender": [0, 1], "Age": [3, 4],
                  "Skin Tone": [5, 1], "Intersection": [1, 3], "Target": [0, 1]}).to_csv(root / "test.csv", index=False)
    df = datasets.aiface(root).set_index("video_id")
    a = df.loc["GANs/AttGAN/a"]
    assert (a["method"], a["family"], a["gender"], a["age_group"], a["skin_tone"], a["skin_group"], a["split"]) == (
        "AttGAN", "gan", "male", "senior", 2, "light", "train")  # age 5 -> README coding
    c = df.loc["Real/FFHQ/c"]
    assert (c["label"], c["method"], c["domain"], c["skin_group"], c["age_group"]) == (
        0, "real", "FFHQ", "medium", "adult")
    assert df.loc["deepfakes/dfd/d", "family"] == "face_manipulation"


def test_aiface_v1_and_errors(tmp_path, caplog):
    root = tmp_path / "aiface"
    touch(root, "x/a.png", "x/b.png")
    v1 = {"Image Path": ["x/a.png", "x/b.png"], "Uncertainty Score Gender": [0.1, 0.2],
          "Ground Truth Gender": [1, 0], "Ground Truth Age": [0, 2], "Ground Truth Race": [2, 1],
          "Intersection": [2, 5], "Target": [1, 0]}
    pd.DataFrame(v1).to_csv(root / "test.csv", index=False)
    df = datasets.aiface(root, csvs={"test": "test.csv"})
    assert df[["gender", "age_group", "race", "intersection", "schema"]].values.tolist() == [
        ["male", "young", "black", "male,black", "v1"], ["female", "senior", "white", "female,white", "v1"]]
    assert df.loc[0, "method"] == "fake"  # off-layout path: generator unknown, said so
    # v2 ages {0, 3, 4}: README (child, adult, middle) or code (child, middle, senior)? -> refuse
    pd.DataFrame({"Image Path": ["x/a.png", "x/b.png"], "Gender": [1, 0], "Age": [3, 4], "Skin Tone": [1, 1],
                  "Intersection": [3, 0], "Target": [1, 0]}).to_csv(root / "test.csv", index=False)
    with pytest.raises(DatasetError, match="age_codes='readme' or 'code'"):
        datasets.aiface(root, csvs={"test": "test.csv"})
    by_code = datasets.aiface(root, csvs={"test": "test.csv"}, age_codes="code")
    assert by_code["age_group"].tolist() == ["middle", "senior"]
    pd.DataFrame({"Image Path": ["x/a.png", "x/gone.png"], "Gender": [1, 0], "Age": [0, 1], "Skin Tone": [1, 1],
                  "Intersection": [0, 0], "Target": [1, 2]}).to_csv(root / "test.csv", index=False)
    with pytest.raises(DatasetError, match="column 'Target' has 1 invalid"):
        datasets.aiface(root, csvs={"test": "test.csv"})
    pd.DataFrame({"Image Path": ["x/a.png", "x/gone.png"], "Gender": [1, 0], "Age": [0, 1], "Skin Tone": [1, 1],
                  "Intersection": [0, 0], "Target": [1, 0]}).to_csv(root / "test.csv", index=False)
    with pytest.raises(DatasetError, match=r"1 of 2 listed image\(s\) do not exist.*gone\.png"):
        datasets.aiface(root, csvs={"test": "test.csv"})
    with caplog.at_level(logging.WARNING):
        kept = datasets.aiface(root, csvs={"test": "test.csv"}, lenient=True)
    assert len(kept) == 1 and kept.attrs["n_missing_files"] == 1
    assert "Intersection and Gender disagree in 1" in caplog.text and "dropped 1 of 2" in caplog.text
    pd.DataFrame({"Image Path": ["x/a.png"], "Target": [1]}).to_csv(root / "test.csv", index=False)
    with pytest.raises(DatasetError, match="lacks column"):
        datasets.aiface(root, csvs={"test": "test.csv"})


# ----------------------------------------------------------------------------------- multi-FFDI

def test_multiffdi(tmp_path):
    root = tmp_path / "multiffdi"
    touch(root, "phase1/trainset/a.jpg", "phase1/trainset/b.jpg", "phase1/valset/a.jpg")
    (root / "phase1/trainset_label.txt").write_text("img_name,target\na.jpg,0\nb.jpg,1\n")
    (root / "phase1/valset_label.txt").write_text("img_name,target\na.jpg,1\n")
    df = datasets.multiffdi(root)
    assert df[["video_id", "label", "method", "split"]].values.tolist() == [
        ["train/a", 0, "real", "train"], ["train/b", 1, "fake", "train"], ["val/a", 1, "fake", "val"]]
    (root / "phase1/valset_label.txt").write_text("name,label\na.jpg,1\n")
    with pytest.raises(DatasetError, match="header 'img_name,target'"):
        datasets.multiffdi(root)
    (root / "phase1/valset_label.txt").unlink()
    with pytest.raises(DatasetError, match="valset_label.txt not found"):
        datasets.multiffdi(root)
