"""UCF's ``full`` profile end to end on CPU (issue 19, "proof on CPU"): the three face datasets in the layouts their
publishers ship (``../shared/reference/published_layouts.md``, the row is cited per tree), ``dfbook prepare`` run as
``notebooks/params/ucf.full.yaml`` documents it (one face folder of FF++ c23 + Celeb-DF-v2 + WildDeepfake), AI-Face v2
annotation CSVs for the demographics, random weights where a user puts the ImageNet Xception file, and the chapter
with its shipped ``full`` parameters. Only sizes are overridden (input side, frames per video, epochs, batch,
bootstrap resamples, workers, t-SNE points, grid size): the code path (DeepfakeBench Xceptions, streaming,
augmentations, DataLoader workers, the AI-Face join, Grad-CAM at ``encoder_f.conv4``, the saved detector) is the
shipped one. The two Xceptions are full size with random weights (``ucf.build_full`` has no smaller variant, and a
smaller encoder would be the mini code path), at 64 px, the smallest side whose 1/32 map AdaIN can normalise; they
make this the slowest of the smoke runs (~90 s on two idle cores, one thread)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_full_profile import write_ffpp_videos

# FF++ split lists: lists of [target, source] pairs (published_layouts.md, 'FaceForensics++': dataset/splits/
# {train,val,test}.json). One training pair keeps the CPU run short (four fakes, one per method); three test pairs
# give every audited group reals.
FF_PAIRS = {"train": [["000", "003"]], "val": [["004", "005"]],
            "test": [["006", "007"], ["008", "009"], ["010", "011"]]}
FF_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
SIDE = 64          # crops written by prepare and the network input: Xception's 1/32 map is 2x2, AdaIN's minimum


def _face():
    import cv2
    from skimage import data as skdata

    return cv2.resize(skdata.astronaut()[0:256, 128:384], (96, 96), interpolation=cv2.INTER_AREA)


def write_video(path: Path, seed: int, n: int = 4) -> None:
    """A short .mp4 of a real face (scikit-image's astronaut, which OpenCV's Haar cascade finds) on a grey canvas,
    tinted and shifted per video so that no two videos are equal."""
    import cv2

    rng = np.random.default_rng(seed)
    face = np.clip(_face().astype(int) + rng.integers(-30, 31, 3), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (128, 112))
    assert writer.isOpened()
    for i in range(n):
        canvas = np.full((112, 128, 3), int(rng.integers(60, 140)), np.uint8)
        x = 4 + 6 * i
        canvas[8:104, x:x + 96] = face
        writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    writer.release()


def write_celebdf_v2(root: Path) -> None:
    """published_layouts.md, 'Celeb-DF v1 / v2' (yuezunli/celeb-deepfakeforensics READMEs): Celeb-real/idX_NNNN.mp4,
    YouTube-real/NNNNN.mp4, Celeb-synthesis/idX_idY_NNNN.mp4 and List_of_testing_videos.txt, lines
    '<1 real|0 fake> <folder>/<video>.mp4' with CRLF line endings."""
    videos = {"Celeb-real": ["id0_0000", "id1_0000", "id2_0000"], "YouTube-real": ["00000", "00001"],
              "Celeb-synthesis": ["id0_id1_0000", "id1_id0_0000", "id2_id0_0000", "id0_id2_0001"]}
    listed = []
    for k, (folder, stems) in enumerate(videos.items()):
        for j, stem in enumerate(stems):
            write_video(root / folder / f"{stem}.mp4", 100 + 10 * k + j)
            if j:  # the first video of each folder is a training video
                listed.append(f"{0 if folder == 'Celeb-synthesis' else 1} {folder}/{stem}.mp4")
    (root / "List_of_testing_videos.txt").write_bytes(("\r\n".join(listed) + "\r\n").encode())


def write_wilddeepfake(root: Path, write_pngs) -> None:
    """published_layouts.md, 'WildDeepfake' (OpenTAI/wild-deepfake README): {real,fake}_{train,test}/N.tar.gz, each
    extracted into N/ holding face-sequence folders; image file names are the frame numbers."""
    for k, folder in enumerate(("real_train", "real_test", "fake_train", "fake_test")):
        kind = folder.split("_")[0]
        write_pngs(root / folder / str(k + 1) / kind / str(k + 1), 2, size=80, seed=200 + k, name="{i}0.png")


# AI-Face v2 annotations of the FF++ identities: gender (1 male), skin group via Intersection (0-2 female light/
# medium/dark, 3-5 male light/medium/dark), Age 1 or 2 (young/adult in the code's 0-4 coding), alternating by test pair.
# Training identity 003 is dark-skinned, so the imbalance switch (IMBALANCE_GROUP "dark") has one to thin.
PEOPLE = {"000": 3, "003": 2, "004": 3, "005": 2, "006": 3, "007": 2, "008": 5, "009": 0, "010": 0, "011": 5}


def write_aiface(root: Path) -> None:
    """published_layouts.md, 'AI-Face' (Purdue-M2/AI-Face-FairnessBench README): v2 CSVs with columns Image Path,
    Gender, Age, Skin Tone, Intersection, Target. How AI-Face names FF++ images is unverified there; the tree is
    the one tests/test_ucf.py::_aiface_layout uses (deepfakes/ff++/<original|method>/<video>/<frame>.png). The
    chapter reads the CSVs only (check_files=False), so no image is written."""
    rows = []
    for vid, inter in PEOPLE.items():
        gender, skin_tone = int(inter >= 3), (2, 5, 9)[inter % 3]
        age = 1 + int(vid) // 2 % 2
        rows += [(f"deepfakes/ff++/original/{vid}/{f:04d}.png", gender, age, skin_tone, inter, 0) for f in (0, 10)]
    rows.append(("GANs/stylegan2/img_000.png", 0, 1, 3, 1, 1))
    table = pd.DataFrame(rows, columns=["Image Path", "Gender", "Age", "Skin Tone", "Intersection", "Target"])
    root.mkdir(parents=True)
    table.iloc[::2].to_csv(root / "train.csv", index=False)
    table.iloc[1::2].to_csv(root / "test.csv", index=False)


@pytest.mark.slow
def test_ucf_full_path_on_published_trees(tmp_path, monkeypatch, build_dir, write_pngs):
    import yaml

    from dfbook import backbones, cli, manifest, paths, prepare, runner
    from dfbook.methods import ucf

    data = tmp_path / "data"
    monkeypatch.setenv("DFBOOK_DATA", str(data))
    monkeypatch.chdir(tmp_path)  # parameters never resolve against the working directory
    write_ffpp_videos(data / "ffpp", FF_PAIRS, video=write_video)
    write_celebdf_v2(data / "celebdf_v2")
    write_wilddeepfake(data / "wilddeepfake", write_pngs)
    write_aiface(data / "aiface")

    # the documented commands (ucf.full.yaml): one face folder, one `dfbook prepare` per dataset
    shipped = yaml.safe_load((paths.notebooks_dir() / "params" / "ucf.full.yaml").read_text())
    faces = paths.resolve_data_path(shipped["FACES"])
    for name in ("ffpp", "celebdf_v2", "wilddeepfake"):
        assert prepare.main([name, str(faces.parent), "--frames", "2", "--detector", "haar",
                             "--size", str(SIDE)]) == 0
    prepared = manifest.read(faces)
    summary = json.loads((faces.parent / "summary.json").read_text())
    assert summary["frames_without_face"] == 0 and summary["sources_unreadable"] == 0
    assert set(prepared["domain"]) == {"ffpp", "celebdf_v2", "wilddeepfake"}
    wild = prepared[prepared["domain"] == "wilddeepfake"]
    assert sorted(wild["frame"].unique()) == [0, 10]  # the published frame numbers (file names), not re-detected

    # random weights where a user puts timm's ImageNet Xception (ucf.imagenet_weight_candidates)
    import timm
    import torch

    stem = backbones.expected_weights("timm:legacy_xception.tf_in1k")
    stem.parent.mkdir(parents=True)
    torch.save(timm.create_model("legacy_xception").state_dict(), stem.with_name(stem.name + ".pth"))
    assert ucf.imagenet_weights(shipped["IMAGENET_WEIGHTS"]) == stem.with_name(stem.name + ".pth")
    # and a stand-in of DeepfakeBench's released ucf_best.pth (its UCFDetector state dict, saved under DataParallel)
    released = ucf.default_checkpoint()
    released.parent.mkdir(parents=True)
    torch.manual_seed(1)
    torch.save({f"module.{k}": v for k, v in ucf.build_full().state_dict().items()}, released)

    # sizes only; the grid keeps one (batch, lr) cell plus its two noise runs
    sizes = {"RESOLUTION": SIDE, "TRAIN_FRAMES": 1, "TEST_FRAMES": 1, "EPOCHS": 1, "BATCH_PAIRS": 4, "GRID_FRAMES": 1,
             "GRID_EPOCHS": 1, "GRID_BATCH": [4], "GRID_LR": [0.0002], "WORKERS": 1, "N_BOOT": 20, "TSNE_POINTS": 20}
    res = runner.run_chapter("ucf", "full", {**sizes, "UCF_CHECKPOINT": "weights/deepfakebench/ucf_best.pth"},
                             quiet=True)
    assert res.status == "ok", res.error
    rec = json.loads(res.record.read_text())
    params = rec["params"]
    assert params["PROFILE"] == "full" and params["ENCODER"] == "deepfakebench:xception" and params["STREAM"]
    assert params["AUGMENT"] and params["GRADCAM_LAYER"] == "encoder_f.conv4"
    assert {"saved/ucf", "saved/ucf_released"} <= set(rec["models"])
    m = rec["metrics"]
    for key in ("test/frame_auc", "celebdf_v2/frame_auc", "wilddeepfake/video_auc",
                "corrected/celebdf_v2/frame_auc", "published/wilddeepfake/frame_auc", "imbalanced/test/frame_auc",
                "grid/noise_float/val_auc", "grid/noise_wrap/val_auc", "released/celebdf_v2/frame_auc",
                "released/wilddeepfake/video_auc"):
        assert 0 <= m[key]["value"] <= 1, key
    assert m["published/celebdf_v2/frame_auc"]["value"] >= m["corrected/celebdf_v2/frame_auc"]["value"]
    notes = rec["notes"]
    assert notes["specific_head_classes"] == ["real", *FF_METHODS]
    assert notes["demographics"]["identities_with_demographics"] == len(PEOPLE)
    assert notes["fairness_rows"]["audited"] == notes["fairness_rows"]["test_rows"] > 0
    for attribute in ("gender", "skin_group", "age_group", "gender × skin_group"):
        assert np.isfinite(m[f"balanced/{attribute}/f_fpr"]["value"]), attribute
    # the saved full detector (DeepfakeBench Xceptions) scores face crops through `dfbook predict`
    out = tmp_path / "scores.csv"
    crops = prepared.loc[prepared["split"].eq("test") & prepared["domain"].eq("ffpp"), "path"].head(3).tolist()
    assert cli.main(["predict", "ucf/ucf", "--profile", "full", "--face-detector", "none", *crops,
                     "--out", str(out)]) == 0
    scored = pd.read_csv(out)
    assert len(scored) == 3 and scored["score"].between(0, 1).all()
    assert rec["models"]["saved/ucf"]["max_abs_diff"] < 1e-5  # reloaded from its card = the chapter's scores


def test_predict_takes_options_between_detector_and_paths(tmp_path, monkeypatch, build_dir, write_pngs, capsys):
    """A full-profile detector is named with --profile full, which a user writes right after it
    (`dfbook predict ucf/ucf --profile full face.png`); argparse's plain parsing refused the paths after an option
    ("unrecognized arguments") and exited before looking at the detector."""
    from dfbook import cli

    img = write_pngs(tmp_path / "faces", 1, size=16)[0]
    assert cli.main(["predict", "nosuch/det", "--profile", "full", img, "--batch-size", "2"]) == 2
    err = capsys.readouterr().err
    assert "no detector 'nosuch/det'" in err and "saved detectors of the full profile" in err
