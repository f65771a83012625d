"""defenders' ``full`` path end to end on CPU (issue 19): the face manifest built by the documented commands
(``dfbook prepare ffpp|celebdf_v2|wilddeepfake OUT``, one folder) from video and frame trees written here in the
publishers' layouts, the image-set manifest by ``dfbook images`` from CNNDetection and UnivFD's diffusion sets as
they unpack, random weights at the local weight paths, and the chapter run with only sizes overridden."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_full_profile import (FF_PAIRS, full_data, save_random_openclip, save_random_weights,  # noqa: F401
                               write_celebdf, write_cnndetection, write_ffpp_videos)        # (full_data: a fixture)

from dfbook import cli, manifest, paths, runner

# The release's families, small: ConvNeXtV2 (atto for tiny) and EfficientNet NS (B0 for B4-B6).
EXPERTS = ["timm:convnextv2_atto.fcmae_ft_in1k", "timm:tf_efficientnet_b0.ns_jft_in1k"]


def write_ffpp(root: Path) -> None:
    """FF++ c23 videos of the FF_PAIRS split lists (published layout: tests/test_full_profile.write_ffpp_videos)."""
    write_ffpp_videos(root, FF_PAIRS)


def write_celebdf_v2(root: Path) -> None:
    """Celeb-DF-v2: six videos, four of them on the test list (published layout: write_celebdf)."""
    write_celebdf(root, ["Celeb-real/id0_0000.mp4", "Celeb-real/id1_0000.mp4", "YouTube-real/00000.mp4",
                         "Celeb-synthesis/id0_id1_0000.mp4", "Celeb-synthesis/id1_id0_0000.mp4",
                         "Celeb-synthesis/id2_id0_0000.mp4"],
                  ["1 YouTube-real/00000.mp4", "1 Celeb-real/id1_0000.mp4", "0 Celeb-synthesis/id1_id0_0000.mp4",
                   "0 Celeb-synthesis/id2_id0_0000.mp4"], seed=100)


def write_wilddeepfake(root: Path, write_pngs) -> None:
    """published_layouts.md, 'WildDeepfake' (OpenTAI/wild-deepfake README): {real,fake}_{train,test}/N.tar.gz, each
    archive (here extracted into N/, as data/README.md says) holding face-sequence folders whose image file names
    are the frame numbers."""
    for k, folder in enumerate(("real_train", "real_test", "fake_train", "fake_test")):
        for n in (1, 2):
            write_pngs(root / folder / f"{k}{n}" / folder.split("_")[0] / f"{k}{n}", 3, size=48,
                       seed=200 + 10 * k + n, name="{i}2.png")


def write_image_sets(data: Path, write_pngs) -> None:
    """published_layouts.md, 'CNNDetection' (PeterWang512/CNNDetection README: progan_train/, progan_val/,
    CNN_synth_testset/<set>/[<class>/]0_real|1_fake, class folders in progan, stylegan, stylegan2, cyclegan) and
    'UnivFD diffusion' (WisconsinAIVision/UniversalFakeDetect: diffusion_datasets/{imagenet,laion}/0_real,
    diffusion_datasets/<generator>/1_fake); every generator the full parameters name."""
    cnn = write_cnndetection(data / "cnndetection", write_pngs, n=2, size=32)
    for k, s in enumerate(("stylegan2", "cyclegan")):
        for j, sub in enumerate(("0_real", "1_fake")):
            write_pngs(cnn / "CNN_synth_testset" / s / "horse" / sub, 3, size=32, seed=300 + 2 * k + j)
    for j, sub in enumerate(("0_real", "1_fake")):
        write_pngs(cnn / "CNN_synth_testset" / "stargan" / sub, 3, size=32, seed=310 + j)
    for k, d in enumerate(("imagenet/0_real", "laion/0_real", "guided/1_fake", "ldm_200/1_fake", "dalle/1_fake")):
        write_pngs(data / "univfd_diffusion" / d, 3, size=32, seed=320 + k)


@pytest.fixture
def defenders_inputs(full_data, write_pngs, capsys):
    """FACES and IMAGES as defenders.full.yaml names them, built by the documented commands."""
    import yaml

    shipped = yaml.safe_load((paths.notebooks_dir() / "params" / "defenders.full.yaml").read_text())
    write_ffpp(full_data / "ffpp")
    write_celebdf_v2(full_data / "celebdf_v2")
    write_wilddeepfake(full_data / "wilddeepfake", write_pngs)
    write_image_sets(full_data, write_pngs)
    faces_dir = paths.resolve_data_path(shipped["FACES"]).parent
    opts = ["--frames", "2", "--detector", "haar", "--size", "32"]
    for dataset in ("ffpp", "celebdf_v2", "wilddeepfake"):
        assert cli.main(["prepare", dataset, str(faces_dir), *opts]) == 0, capsys.readouterr().err
    images_dir = paths.resolve_data_path(shipped["IMAGES"]).parent
    assert cli.main(["images", str(images_dir), "cnndetection", "univfd_diffusion"]) == 0, capsys.readouterr().err
    return shipped


@pytest.mark.slow
def test_defenders_full_path_on_prepared_faces_and_published_image_sets(defenders_inputs, full_data, build_dir):
    """Clusters on the open_clip encoder's features (random ViT-B/32 weights at the local path), leave-one-cluster-
    out experts of the release's two families (small members, random weights at the local timm paths) trained on
    streamed images with worker processes, every test set, the release-format round trip and the saved detector."""
    shipped = defenders_inputs
    faces = manifest.read(paths.resolve_data_path(shipped["FACES"]))
    assert set(faces["dataset"]) == {"ffpp", "celebdf_v2", "wilddeepfake"}  # one manifest of three datasets
    released = paths.resolve_data_path(shipped["RELEASED_IMAGES"])  # the crops the released model scores
    assert released.is_dir() and set(faces.loc[faces["dataset"] == "celebdf_v2", "path"].map(
        lambda p: Path(p).resolve().is_relative_to(released.resolve()))) == {True}
    save_random_openclip(shipped["ENCODER"])
    for name in EXPERTS:
        save_random_weights(name)
    res = runner.run_chapter("defenders", "full", {
        "EXPERTS": EXPERTS, "OFFICIAL_EXPERT": EXPERTS[0], "K": 2, "IMAGE_SIZE": 32, "POOL_FRAMES": 1,
        "TEST_FRAMES": 2, "EPOCHS": 1, "BATCH_SIZE": 8, "NOISE_BATCH": 2, "N_BOOT": 20, "WORKERS": 1,
        "WEIGHTS": ""}, quiet=True)
    assert res.status == "ok", res.error
    rec = json.loads(res.record.read_text())
    assert rec["params"]["STREAM"] is True and rec["params"]["FACES"] == shipped["FACES"]
    for key in ("unseen/mixture/auc", "cross_dataset/mixture/auc", "seen/official/auc", "official/val_auc"):
        assert 0 <= rec["metrics"][key]["value"] <= 1, key
    assert rec["metrics"]["roundtrip/max_abs_diff"]["value"] < 1e-5
