"""``dfbook predict DETECTOR PATH...`` on the astronaut image, a short astronaut clip, a folder, and the bad-file
corpus of the input tests (a PNG that does not decode, an empty file, an image below the minimum side, a video
that is not one); ``--list``; ``--lenient`` counts and lists what it skipped, as ``predict-defenders`` does."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dfbook import cli
from dfbook import detector as D

SIZE = 32


@pytest.fixture
def saved(build_dir):
    """A small saved detector (the hierarchical level-1 architecture with random weights) under the build folder."""
    import torch

    from dfbook.methods import hierarchical as hier

    torch.manual_seed(0)
    net = hier.build("mini:resnet", 2, train_from="layer4", pretrained=False)
    det = D.Detector("level1", "hierarchical", net.eval(), D.Preprocess(SIZE, net.spec["mean"], net.spec["std"]),
                     {"function": "dfbook.methods.hierarchical:build",
                      "kwargs": {"backbone": "mini:resnet", "n_classes": 2, "train_from": "layer4", "pretrained": False}})
    det.save(profile="mini", card={"architecture": "test net", "selection": "validation"})
    return D.load("hierarchical/level1")


@pytest.fixture
def astronaut(tmp_path):
    from skimage import data

    img = data.astronaut()
    png = tmp_path / "media" / "astronaut.png"
    png.parent.mkdir()
    Image.fromarray(img).save(png)
    clip = tmp_path / "media" / "astronaut.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (img.shape[1], img.shape[0]))
    for t in range(12):  # the astronaut drifting a few pixels: a short clip with a face in every frame
        writer.write(cv2.cvtColor(np.roll(img, 2 * t, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()
    assert clip.stat().st_size > 0
    return png, clip


def _bad_files(folder):
    """The bad-file corpus of tests/test_features.py and tests/test_defenders.py, plus a broken video."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "b_broken.png").write_bytes(b"\x89PNG not really")
    (folder / "c_empty.png").write_bytes(b"")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "d_tiny.png")
    (folder / "e_broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    return ["b_broken.png", "c_empty.png", "d_tiny.png", "e_broken.mp4"]


def test_list_names_each_detector_and_where_it_came_from(saved, capsys):
    assert cli.main(["predict", "--list"]) == 0
    out = capsys.readouterr().out
    assert "hierarchical/level1" in out and "trained" in out and "validation" in out


def test_image_video_and_folder(saved, astronaut, tmp_path, capsys):
    png, clip = astronaut
    out = tmp_path / "out" / "scores.csv"
    assert cli.main(["predict", "hierarchical/level1", str(png), str(clip), "--out", str(out), "--frames",
                     "--n-frames", "6", "--batch-size", "4"]) == 0
    table, frames = pd.read_csv(out), pd.read_csv(out.with_name("scores.frames.csv"))
    assert table["kind"].tolist() == ["image", "video"] and table["score"].between(0, 1).all()
    assert table.loc[0, "score"] == pytest.approx(saved.predict([png])[0], abs=1e-9)
    video = table.iloc[1]
    assert video["frames"] == 6 and video["faces_found"] == 6      # prepare's sampling; the face found in each
    per_frame = frames[frames["path"] == str(clip)]
    assert per_frame["frame"].tolist() == [0, 2, 4, 6, 8, 11]      # np.linspace(0, 11, 6, dtype=int)
    assert video["score"] == pytest.approx(per_frame["score"].mean())  # the detector's video rule: the mean
    whole = tmp_path / "whole.csv"                                  # the crop is what the detector scores
    assert cli.main(["predict", "hierarchical/level1", str(clip), "--face-detector", "none", "--out", str(whole)]) == 0
    assert pd.read_csv(whole)["faces_found"].iloc[0] == 0
    capsys.readouterr()
    assert cli.main(["predict", "hierarchical/level1", str(png.parent)]) == 0   # a folder; CSV on stdout
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0] == "path,kind,score,frames,faces_found" and len(printed) == 3
    assert printed[1].startswith(f"{clip},video,") and printed[2].startswith(f"{png},image,")  # sorted


def test_bad_files_stop_in_one_line_or_are_counted_with_lenient(saved, astronaut, tmp_path, capsys):
    png, _ = astronaut
    folder = tmp_path / "mixed"
    bad = _bad_files(folder)
    Image.open(png).save(folder / "a_good.png")
    out = tmp_path / "out" / "s.csv"
    assert cli.main(["predict", "hierarchical/level1", str(folder), "--out", str(out)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and not ln.startswith("predict ")]
    assert len(err) == 1 and "b_broken.png cannot be decoded" in err[0] and "--lenient" in err[0]
    assert "Traceback" not in err[0] and not out.exists()
    assert pd.read_csv(out.with_name("s.partial.csv"))["path"].tolist() == [str(folder / "a_good.png")]
    assert cli.main(["predict", "hierarchical/level1", str(folder), "--out", str(out), "--lenient"]) == 0
    stderr = capsys.readouterr().err
    assert f"skipped {len(bad)} unreadable file(s) of {len(bad) + 1}" in stderr
    assert len(pd.read_csv(out)) == 1 and not out.with_name("s.partial.csv").exists()
    skipped = pd.read_csv(out.with_name("s.skipped.csv"))
    assert [p.split("/")[-1] for p in skipped["path"]] == bad
    assert skipped.loc[3, "kind"] == "video" and "e_broken.mp4" in skipped.loc[3, "reason"]


def test_user_errors_are_one_line(saved, tmp_path, capsys):
    assert cli.main(["predict", "hierarchical/level1", str(tmp_path / "nowhere.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere.png: no such image, video or folder" in err[0]
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "x.png")
    assert cli.main(["predict", "ucf/none", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no detector 'ucf/none'" in err[0] and "hierarchical/level1" in err[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["predict", "hierarchical/level1", str(empty)]) == 2
    assert "no images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["predict", "hierarchical/level1"])  # no PATH: argparse's usage error (exit 2)
