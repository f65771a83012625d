"""`dfbook prepare` end to end on a short video of scikit-image's astronaut (a real face) moving
across the frame, plus unreadable inputs, resume after an interruption and the CLI."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
from skimage import data

from dfbook import datasets, manifest, prepare

N_BLANK, N_FACE = 3, 9  # the clip: 3 grey frames (no face), then the face moving right 14 px a frame
STEP = 14


def write_clip(path, n_blank=N_BLANK, n_face=N_FACE):
    face = cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (400, 280))
    assert writer.isOpened()
    for i in range(n_blank + n_face):
        canvas = np.full((280, 400, 3), 100, np.uint8)
        if i >= n_blank:
            x = 8 + (i - n_blank) * STEP
            canvas[12:268, x:x + 256] = face
        writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip") / "astro.avi")


@pytest.fixture
def folder(tmp_path, clip):
    """A video folder: real/astro.avi and fake/swap/astro2.avi (same clip)."""
    (tmp_path / "vids" / "real").mkdir(parents=True)
    (tmp_path / "vids" / "fake" / "swap").mkdir(parents=True)
    shutil.copy(clip, tmp_path / "vids" / "real" / "astro.avi")
    shutil.copy(clip, tmp_path / "vids" / "fake" / "swap" / "astro2.avi")
    return tmp_path / "vids"


def test_frame_indices_are_deepfakebench_linspace():
    assert np.array_equal(prepare.frame_indices(300, 32), np.linspace(0, 299, 32, dtype=int))
    assert prepare.frame_indices(5, 32).tolist() == [0, 1, 2, 3, 4]  # short video: each frame once


def test_frame_indices_at_a_fixed_rate():
    assert prepare.frame_indices(95, 32, fps=1, video_fps=25).tolist() == [0, 25, 50, 75]   # n_frames ignored
    assert prepare.frame_indices(10, 32, fps=4, video_fps=10).tolist() == [0, 2, 5, 8]      # 2.5-frame steps
    with pytest.raises(ValueError, match="frame rate"):
        prepare.frame_indices(10, 32, fps=1, video_fps=0)


def test_prepare_at_a_fixed_rate(folder, tmp_path):
    """The clip is 12 frames at 10 fps: 5 fps samples frames 0, 2, ..., 10 (faces from frame 3 on)."""
    out = prepare.prepare(folder, tmp_path / "out", fps=5, detector="haar", size=64, progress=False)
    real = out.manifest[out.manifest["method"] == "real"]
    missing = out.faces_missing[out.faces_missing["video_key"].str.contains("/real/")]
    assert sorted(real["frame"].tolist() + missing["frame"].tolist()) == [0, 2, 4, 6, 8, 10]
    assert json.loads((tmp_path / "out" / "prepare.json").read_text())["fps"] == 5


def test_square_crop_stays_square_and_inside():
    img = np.zeros((100, 200, 3), np.uint8)
    crop = prepare.square_crop(img, np.array([170.0, 10, 200, 50]), 1.3)  # box at the right edge
    assert crop.shape[0] == crop.shape[1] > 0
    centre = prepare.square_crop(img, np.array([90.0, 40, 110, 60]), 1.3)
    assert centre.shape[:2] == (26, 26)


def test_end_to_end_haar(folder, tmp_path):
    out = prepare.prepare(folder, tmp_path / "out", n_frames=6, detector="haar", size=64, progress=False)
    sampled = prepare.frame_indices(N_BLANK + N_FACE, 6)
    faces = out.manifest[out.manifest["method"] == "real"].sort_values("frame")
    missing = out.faces_missing[out.faces_missing["video_key"].str.contains("/real/")]
    # every sampled frame is either a face or a recorded miss; the grey frames are the misses
    assert sorted(faces["frame"].tolist() + missing["frame"].tolist()) == sampled.tolist()
    assert set(missing["frame"]) == {f for f in sampled if f < N_BLANK}
    assert (missing["reason"] == "no_face").all()
    # the crop follows the moving face
    centres = (faces["box_x0"] + faces["box_x1"]) / 2
    moved = np.diff(centres) / np.diff(faces["frame"])
    assert np.all(np.abs(moved - STEP) < 4), moved
    png = cv2.imread(faces["path"].iloc[0])
    assert png.shape == (64, 64, 3)
    # columns carried over from the source manifest; the written manifest reads back
    assert set(out.manifest["method"]) == {"real", "swap"} and set(out.manifest["label"]) == {0, 1}
    back = manifest.read(tmp_path / "out" / "manifest.csv")
    assert len(back) == len(out.manifest)
    assert out.counts()["frames_without_face"] == 2 * len(missing)
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == out.counts()


@pytest.mark.slow  # ~10 s: imports torch and builds MTCNN
def test_end_to_end_mtcnn(clip, tmp_path):
    src = pd.DataFrame([dict(path=str(clip), label=0, dataset="t", method="real", video_id="astro",
                             frame=datasets.VIDEO, identity="astronaut", split="test")])
    out = prepare.prepare(src, tmp_path / "out", n_frames=N_BLANK + N_FACE, size=64, progress=False)
    assert out.manifest["frame"].tolist() == list(range(N_BLANK, N_BLANK + N_FACE))  # every face frame found
    assert out.faces_missing["frame"].tolist() == list(range(N_BLANK))
    assert (out.manifest["face_score"] > 0.9).all()
    assert (out.manifest["identity"] == "astronaut").all() and (out.manifest["split"] == "test").all()


def test_zero_byte_video(folder, tmp_path):
    (folder / "fake" / "broken.mp4").write_bytes(b"")
    with pytest.raises(prepare.UnreadableInput, match=r"broken\.mp4 is empty"):
        prepare.prepare(folder, tmp_path / "strict", n_frames=2, detector="haar", progress=False)
    out = prepare.prepare(folder, tmp_path / "lenient", n_frames=2, detector="haar", lenient=True, progress=False)
    assert out.counts()["sources_unreadable"] == 1
    assert out.skipped["source_path"].str.endswith("broken.mp4").all()
    assert len(pd.read_csv(tmp_path / "lenient" / "skipped.csv")) == 1
    assert out.manifest["source_path"].str.endswith(".avi").all() and len(out.manifest) > 0


def test_truncated_image(tmp_path):
    good, bad = tmp_path / "real" / "astro.png", tmp_path / "fake" / "cut.jpg"
    good.parent.mkdir()
    bad.parent.mkdir()
    cv2.imwrite(str(good), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    ok, buf = cv2.imencode(".jpg", data.astronaut())
    bad.write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(prepare.UnreadableInput, match=r"cut\.jpg"):
        prepare.prepare(tmp_path, tmp_path / "strict", detector="haar", progress=False)
    out = prepare.prepare(tmp_path, tmp_path / "lenient", detector="haar", lenient=True, progress=False)
    assert out.counts() == {"sources": 2, "sources_unreadable": 1, "sources_without_face": 0, "faces": 1,
                           "frames_without_face": 0, "frames_undecodable": 0}


def test_resume_after_interruption(folder, tmp_path, monkeypatch):
    calls = []
    real_process = prepare._process

    def interrupted(row, *args):
        calls.append(row["video_id"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during the second video
        return real_process(row, *args)

    monkeypatch.setattr(prepare, "_process", interrupted)
    kwargs = dict(n_frames=4, detector="haar", size=32, progress=False)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare(folder, tmp_path / "out", **kwargs)
    assert len(list((tmp_path / "out" / ".done").glob("*.json"))) == 1
    assert not (tmp_path / "out" / "manifest.csv").exists()
    calls.clear()
    resumed = prepare.prepare(folder, tmp_path / "out", **kwargs)
    assert calls == ["astro2"]  # the finished video was not processed again
    monkeypatch.undo()
    fresh = prepare.prepare(folder, tmp_path / "fresh", **kwargs)
    cols = ["method", "video_id", "frame", "box_x0", "box_y0"]
    pd.testing.assert_frame_equal(resumed.manifest[cols], fresh.manifest[cols])


def test_changed_parameters_are_refused(folder, tmp_path):
    prepare.prepare(folder, tmp_path / "out", n_frames=2, detector="haar", size=32, progress=False)
    with pytest.raises(ValueError, match="was prepared with"):
        prepare.prepare(folder, tmp_path / "out", n_frames=2, detector="haar", size=48, progress=False)


def test_prepare_a_dataset_manifest_keeps_ids(clip, tmp_path):
    """FF++ layout -> video manifest -> faces, with split and identities carried to every crop."""
    root = tmp_path / "ffpp"
    real = root / "original_sequences/youtube/c23/videos"
    real.mkdir(parents=True)
    for vid in ("000", "003"):
        shutil.copy(clip, real / f"{vid}.avi")
    for m in datasets.faces.FFPP_METHODS:
        (root / f"manipulated_sequences/{m}/c23/videos").mkdir(parents=True)
        shutil.copy(clip, root / f"manipulated_sequences/{m}/c23/videos/000_003.avi")
    (root / "splits").mkdir()
    for split, pairs in {"train": [], "val": [], "test": [["000", "003"]]}.items():
        (root / "splits" / f"{split}.json").write_text(json.dumps(pairs))
    out = prepare.prepare(datasets.ffpp(root), tmp_path / "out", n_frames=2, detector="haar", size=32,
                          progress=False)
    assert out.manifest.groupby("method")["video_id"].nunique().to_dict() == {
        "Deepfakes": 1, "Face2Face": 1, "FaceSwap": 1, "NeuralTextures": 1, "real": 2}
    fake = out.manifest[out.manifest["label"] == 1]
    assert (fake["identity"] == "ffpp_000").all() and (fake["source_identity"] == "ffpp_003").all()
    assert (out.manifest["split"] == "test").all()


def test_cli(folder, tmp_path, capsys):
    rc = prepare.main([str(folder), str(tmp_path / "out"), "--frames", "3", "--detector", "haar", "--size", "32"])
    assert rc == 0 and (tmp_path / "out" / "manifest.csv").is_file()
    assert "faces from 2 sources" in capsys.readouterr().out
    assert prepare.main([str(tmp_path / "nowhere"), str(tmp_path / "out2")]) == 2
    assert "nowhere" in capsys.readouterr().err
