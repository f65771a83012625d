"""The ``full`` profile's defects of issue 19, each on a miniature tree written here from the publisher's
documented layout (``../shared/reference/published_layouts.md``, the section is cited per test)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dfbook import cli, datasets, runner
from dfbook.datasets import DatasetError


# -- defect 3: every long cell died at 30 minutes --------------------------------------------------------------
def _spec_of_run(monkeypatch, call) -> dict:
    """The spec the runner hands its child process, without running a kernel."""
    seen = {}

    def fake_child(cmd, **kw):
        seen.update(json.loads(Path(cmd[-1]).read_text()))
        return subprocess.CompletedProcess(cmd, 1)

    monkeypatch.setattr(runner.subprocess, "run", fake_child)
    call()
    return seen


def test_full_profile_has_no_cell_time_limit(fixture_notebooks, monkeypatch):
    full = _spec_of_run(monkeypatch, lambda: cli.main(["run", "fixture", "--profile", "full"]))
    assert full["cell_timeout"] is None  # papermill: no limit
    mini = _spec_of_run(monkeypatch, lambda: cli.main(["run", "fixture"]))
    assert mini["cell_timeout"] == 1800
    asked = _spec_of_run(monkeypatch, lambda: runner.run_chapter("fixture", "full", cell_timeout=60, quiet=True))
    assert asked["cell_timeout"] == 60
    assert runner.cell_timeout_for("full", 0) is None and runner.cell_timeout_for("mini", 0) is None


# -- defect 2: CNNDetection's multi-class sets read as plain fakes -------------------------------------------------
def touch(root: Path, *rels: str) -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_generator_folders_reads_multiclass_sets_and_refuses_ambiguous_labels(tmp_path):
    # published_layouts.md, "CNNDetection": CNN_synth_testset/<set>/[<class>/]0_real|1_fake; progan, stylegan,
    # stylegan2 and cyclegan have class sub-folders. data/README.md, "generators", symlinks those sets.
    cnn = tmp_path / "cnndetection" / "CNN_synth_testset"
    for cls in ("car", "horse"):
        touch(cnn, *[f"progan/{cls}/{sub}/{i:02d}.png" for sub in ("0_real", "1_fake") for i in range(8)])
    touch(cnn, "biggan/0_real/r.png", "biggan/1_fake/f.png")
    root = tmp_path / "generators"
    root.mkdir()
    for s in ("progan", "biggan"):
        (root / s).symlink_to(cnn / s)
    df = datasets.generator_folders(root)
    progan = df[df["domain"] == "progan"]
    reals = progan[progan["path"].str.contains("/0_real/")]
    assert len(reals) == 16 and (reals["label"] == 0).all() and (reals["method"] == "real").all()
    fakes = progan[progan["path"].str.contains("/1_fake/")]
    assert len(fakes) == 16 and (fakes["label"] == 1).all() and (fakes["family"] == "gan").all()
    assert sorted(progan["content"].unique()) == ["car", "horse"]
    # a class folder outside the convention next to the labelled ones: an error naming the folder
    touch(cnn, "progan/sheep/a.png")
    with pytest.raises(DatasetError, match=r"generators: .*progan holds class folders .*\['sheep'\]"):
        datasets.generator_folders(root)
    # a label folder deeper in a plain generator folder: an error naming it, never label 1 for its reals
    (cnn / "progan/sheep/a.png").unlink()
    (cnn / "progan/sheep").rmdir()
    touch(root, "stylegan3/run/batch1/0_real/r.png", "stylegan3/run/batch2/f.png")
    with pytest.raises(DatasetError, match=r"stylegan3/run/batch1/0_real is a label folder inside"):
        datasets.generator_folders(root)


# -- defect 6: published names refused ---------------------------------------------------------------------------
def test_cnndetection_reads_the_archives_as_they_unpack(tmp_path):
    # published_layouts.md, "CNNDetection": archives unpack as progan_train/, progan_val/ (each <20 LSUN
    # classes>/0_real|1_fake) and CNN_synth_testset/<set>/[<class>/]0_real|1_fake.
    root = tmp_path / "cnndetection"
    for split in ("progan_train", "progan_val"):
        touch(root, *[f"{split}/{cls}/{sub}/00.png" for cls in ("airplane", "cat") for sub in ("0_real", "1_fake")])
    touch(root, "CNN_synth_testset/stylegan/bedroom/0_real/r.png", "CNN_synth_testset/stylegan/bedroom/1_fake/f.png",
          "CNN_synth_testset/whichfaceisreal/0_real/r.png", "CNN_synth_testset/whichfaceisreal/1_fake/f.png")
    df = datasets.cnndetection(root)
    assert df.groupby("split").size().to_dict() == {"test": 4, "train": 4, "val": 4}
    assert df.loc[df["split"] == "train", "path"].str.contains("/progan_train/").all()  # names untouched
    assert set(df.loc[df["split"] == "test", "domain"]) == {"stylegan", "whichfaceisreal"}
    (root / "progan_train").rename(root / "elsewhere")
    with pytest.raises(DatasetError, match=r"progan_train not found .*also read as .*cnndetection/train"):
        datasets.cnndetection(root, splits=("train",))


# -- defect 7: a tree leaf with no data ---------------------------------------------------------------------------
def _published_generator_tree(tmp_path: Path, n: int = 2) -> Path:
    """CNNDetection's test sets and UnivFD's diffusion sets as published, symlinked into generators/ as data/README.md
    ('generators') says. published_layouts.md, 'CNNDetection' (CNN_synth_testset/<set>/[<class>/]0_real|1_fake;
    progan, stylegan, stylegan2, cyclegan with class folders) and 'UnivFD diffusion'
    (diffusion_datasets/{imagenet,laion}/0_real, diffusion_datasets/<generator>/1_fake)."""
    cnn = tmp_path / "cnndetection" / "CNN_synth_testset"
    for s in ("progan", "stylegan", "stylegan2", "cyclegan"):
        touch(cnn, *[f"{s}/{cls}/{sub}/{i}.png" for cls in ("car", "horse") for sub in ("0_real", "1_fake")
                     for i in range(n)])
    for s in ("biggan", "stargan", "gaugan", "crn", "imle", "seeingdark", "san", "deepfake", "whichfaceisreal"):
        touch(cnn, *[f"{s}/{sub}/{i}.png" for sub in ("0_real", "1_fake") for i in range(n)])
    uni = tmp_path / "diffusion_datasets"
    touch(uni, *[f"{s}/0_real/{i}.png" for s in ("imagenet", "laion") for i in range(n)])
    touch(uni, *[f"{g}/1_fake/{i}.png" for g in ("guided", "ldm_200", "ldm_200_cfg", "ldm_100", "glide_100_27",
                                                   "glide_50_27", "glide_100_10", "dalle") for i in range(n)])
    root = tmp_path / "generators"
    root.mkdir()
    for d in [*cnn.iterdir(), *uni.iterdir()]:
        (root / ("real" if d.name == "laion" else d.name)).symlink_to(d)
    return root


def test_hierarchical_full_leaves_all_have_images_in_the_public_sets(tmp_path):
    import yaml

    from dfbook import paths
    from dfbook.methods import hierarchical as hier

    full = yaml.safe_load((paths.notebooks_dir() / "params" / "hierarchical.full.yaml").read_text())
    df = datasets.generator_folders(_published_generator_tree(tmp_path))
    tree = hier.Tree(tuple(full["GAN_LEAVES"]), tuple(full["DM_LEAVES"]))
    tree.check(df, apart=full["APART"])  # raised on stable_diffusion, in none of the public sets
    labels = hier.tree_labels(df[df["label"].eq(0) | df["method"].isin([*tree.leaves, *full["APART"]])], tree)
    assert (labels["level1"] == "real").sum() > 0
    # a level with another class count than the paper's is not set next to the paper's number
    rows, keys = hier.comparison_rows(tree=tree)
    assert "L3 DM 4-way, acc (stratified)" not in keys and "L3 GAN 9-way, acc (stratified)" not in keys
    assert "L3 DM 4-way, acc (stratified)" in hier.comparison_rows()[1]
    # and a leaf with no images stops before any training, naming the parameter
    with pytest.raises(ValueError, match=r"DM_LEAVES names generator\(s\) \['stable_diffusion'\]"):
        hier.Tree(tuple(full["GAN_LEAVES"]), (*full["DM_LEAVES"], "stable_diffusion")).check(df)


# -- defect 1: benchmark (full) could not run ---------------------------------------------------------------------
FF_PAIRS = {"train": [["000", "003"], ["001", "002"]], "val": [["004", "005"]], "test": [["006", "007"], ["008", "009"]]}


def write_prepared_ffpp(data: Path, write_pngs, frames=(0, 7), size: int = 40, comp: str = "c23") -> Path:
    """A `dfbook prepare ffpp` output under $DFBOOK_DATA/prepared/ffpp_c23 (data/README.md): face crops
    faces/ffpp/<method>/<video>/<frame>.png and manifest.csv with paths relative to its folder, from a video
    tree in FF++'s published layout (published_layouts.md, 'FaceForensics++': original_sequences/youtube/c23/
    videos/NNN.mp4, manipulated_sequences/<method>/c23/videos/AAA_BBB.mp4, splits lists of [target, source])."""
    from dfbook import manifest

    ff = data / "ffpp"
    ids = sorted({v for pairs in FF_PAIRS.values() for pair in pairs for v in pair})
    touch(ff, *[f"original_sequences/youtube/{comp}/videos/{i}.mp4" for i in ids])
    for m in datasets.faces.FFPP_METHODS:
        touch(ff, *[f"manipulated_sequences/{m}/{comp}/videos/{a}_{b}.mp4" for pairs in FF_PAIRS.values()
                    for a, b in pairs])
    (ff / "splits").mkdir(exist_ok=True)
    for split, pairs in FF_PAIRS.items():
        (ff / "splits" / f"{split}.json").write_text(json.dumps(pairs))
    videos = datasets.ffpp(ff, compression=comp)
    out = data / "prepared" / f"ffpp_{comp}"
    rows = []
    for k, (_, v) in enumerate(videos.iterrows()):
        rel = f"faces/ffpp/{v['method']}/{v['video_id']}"
        for f, p in zip(frames, write_pngs(out / rel, len(frames), size=size, seed=k, name="{i:04d}.png")):
            rows.append({**v, "frame": f, "path": Path(p).relative_to(out).as_posix()})
    manifest.write(pd.DataFrame(rows), out / "manifest.csv")
    return out / "manifest.csv"


def write_cnndetection(root: Path, write_pngs, n: int = 4, size: int = 40) -> Path:
    """published_layouts.md, 'CNNDetection': progan_train/, progan_val/ (<LSUN class>/0_real|1_fake) and
    CNN_synth_testset/<set>/[<class>/]0_real|1_fake, progan and stylegan with class folders."""
    k = 0
    for split in ("progan_train", "progan_val"):
        for cls in ("airplane", "cat"):
            for sub in ("0_real", "1_fake"):
                write_pngs(root / split / cls / sub, n, size=size, seed=k)
                k += 1
    for s in ("progan", "stylegan"):
        for sub in ("0_real", "1_fake"):
            write_pngs(root / "CNN_synth_testset" / s / "car" / sub, n, size=size, seed=k)
            k += 1
    for s in ("biggan", "whichfaceisreal"):
        for sub in ("0_real", "1_fake"):
            write_pngs(root / "CNN_synth_testset" / s / sub, n, size=size, seed=k)
            k += 1
    return root


@pytest.fixture
def full_data(tmp_path, monkeypatch, write_pngs):
    data = tmp_path / "data"
    monkeypatch.setenv("DFBOOK_DATA", str(data))
    monkeypatch.chdir(tmp_path)  # parameters never resolve against the working directory
    return data


def test_benchmark_full_reads_prepared_faces_and_cnndetection_streaming(full_data, build_dir, write_pngs):
    import yaml

    from dfbook import paths
    from dfbook.methods import benchmark

    faces = write_prepared_ffpp(full_data, write_pngs)
    write_cnndetection(full_data / "cnndetection", write_pngs)
    shipped = yaml.safe_load((paths.notebooks_dir() / "params" / "benchmark.full.yaml").read_text())
    assert paths.resolve_data_path(shipped["FACES_MANIFEST"]) == faces  # the folder data/README.md's command writes
    # streamed statistics, spectra and pixels equal the in-memory ones
    df = datasets.cnndetection()
    src = benchmark.pixels(df["path"], 24, stream=True)
    mem = benchmark.pixels(df["path"], 24)
    assert np.array_equal(np.concatenate(list(src.chunks(chunk=5))), mem)
    rows = np.arange(len(df)) % 3 == 0
    st = benchmark.global_statistics(src, rows=rows)
    assert st.loc[~rows].isna().all().all()
    pd.testing.assert_frame_equal(st.loc[rows].reset_index(drop=True), benchmark.global_statistics(mem[rows]),
                                  check_dtype=False)
    a, b = benchmark.mean_spectra(src, df["family"]), benchmark.mean_spectra(mem, df["family"])
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-4) for k in a)
    # the chapter end to end on the full path, without a per-cell limit
    res = runner.run_chapter("benchmark", "full", {"SIZE": 32, "EPOCHS": 1, "IMAGE_EPOCHS": 1, "BATCH": 8,
                                                    "WORKERS": 1}, quiet=True)
    assert res.status == "ok", res.error
    rec = json.loads(res.record.read_text())
    assert rec["params"]["STREAM"] is True
    assert "images/progan_on_biggan" in rec["metrics"] and "faces/trained_min" in rec["metrics"]


def test_wilddeepfake_keeps_published_frame_numbers(tmp_path):
    # published_layouts.md, 'WildDeepfake': {real,fake}_{train,test}/N.tar.gz, each archive holds several
    # face-sequence folders; image file names are the frame numbers.
    root = tmp_path / "wilddeepfake"
    touch(root, "real_train/3/real/3/120.png", "real_train/3/real/3/96.png", "real_train/3/real/3/1004.png",
          "real_test/4/real/4/7.png", "fake_train/5/fake/5/33.png", "fake_test/6/fake/6a/10.png",
          "fake_test/6/fake/6b/10.png")
    df = datasets.wilddeepfake(root)
    v = df[df["video_id"] == "real_train_3"]
    assert v["frame"].tolist() == [96, 120, 1004]  # the published numbers, not a running index
    # two sequences of one archive with the same frame number stay apart, one identity
    six = df[df["identity"] == "fake_test_6"]
    assert sorted(six["video_id"]) == ["fake_test_6/fake/6a", "fake_test_6/fake/6b"] and (six["frame"] == 10).all()
    touch(root, "real_test/4/real/4/face_7.png")
    with pytest.raises(DatasetError, match=r"face_7\.png is not named by its frame number"):
        datasets.wilddeepfake(root)


def test_deepfakebench_preprocessed_layout(tmp_path, write_pngs):
    # published_layouts.md, 'DeepfakeBench preprocessed': datasets/rgb/<Dataset>/.../<comp>/frames/<video>/NNN.png
    # (+ landmarks/, masks/), preprocessing/dataset_json/<Dataset>.json (label -> split -> compression -> video ->
    # {label, frames: [paths]}); frame paths as DeepfakeBench's abstract_dataset reads them (relative to rgb/, or
    # absolute from the machine that ran the preprocessing).
    root = tmp_path / "DeepfakeBench"
    rgb = root / "datasets" / "rgb" / "FaceForensics++"
    ff = {"FF-real": {}, "FF-DF": {}}
    for split, vids in {"train": ["000", "003"], "test": ["006", "007"]}.items():
        for v in vids:
            real = write_pngs(rgb / f"original_sequences/youtube/c23/frames/{v}", 2, size=16, name="{i:03d}.png")
            ff["FF-real"].setdefault(split, {"c23": {}})["c23"][v] = {
                "label": "FF-real", "frames": [str(Path(p).relative_to(root / "datasets" / "rgb")) for p in real]}
        a, b = vids
        fake = write_pngs(rgb / f"manipulated_sequences/Deepfakes/c23/frames/{a}_{b}", 2, size=16, name="{i:03d}.png")
        ff["FF-DF"].setdefault(split, {"c23": {}})["c23"][f"{a}_{b}"] = {
            "label": "FF-DF", "frames": ["/old/machine/DeepfakeBench/datasets/rgb/" + str(Path(p).relative_to(
                root / "datasets" / "rgb")) for p in fake]}
    (root / "datasets/rgb/FaceForensics++/original_sequences/youtube/c23/landmarks/000").mkdir(parents=True)
    js = root / "preprocessing" / "dataset_json"
    js.mkdir(parents=True)
    (js / "FaceForensics++.json").write_text(json.dumps({"FaceForensics++": ff}))
    df = datasets.deepfakebench("FaceForensics++", root)
    assert len(df) == 12 and set(df["split"]) == {"train", "test"}
    fake = df[df["video_id"] == "000_003"]
    assert (fake["label"] == 1).all() and (fake["method"] == "Deepfakes").all()
    assert fake["identity"].iloc[0] == "ffpp_000" and fake["source_identity"].iloc[0] == "ffpp_003"
    assert sorted(df.loc[df["video_id"] == "006", "frame"]) == [0, 1]
    assert df["path"].map(lambda p: Path(p).is_file()).all()
    from dfbook import manifest

    assert manifest.check_disjoint(df)["shared"].sum() == 0
    # an unknown label name is never guessed
    ff["FF-XX"] = {"test": {"c23": {"009": {"label": "FF-XX", "frames": []}}}}
    (js / "FaceForensics++.json").write_text(json.dumps({"FaceForensics++": ff}))
    with pytest.raises(DatasetError, match=r"label name 'FF-XX' .*labels=\{'FF-XX': 0 or 1\}"):
        datasets.deepfakebench("FaceForensics++", root)


# -- defect 5: inputs the documented commands could not build ---------------------------------------------------
def test_prepare_appends_datasets_and_takes_wilddeepfake_crops_as_they_are(tmp_path, write_pngs, monkeypatch):
    """defenders' FACES manifest (FF++ + Celeb-DF-v2 + WildDeepfake) in one output folder, by one command per
    dataset. WildDeepfake as published (published_layouts.md, 'WildDeepfake': {real,fake}_{train,test}/N/, face
    sequences, file names = frame numbers) is resized, never re-detected."""
    import cv2
    from skimage import data as skdata

    from dfbook import manifest, prepare

    # a video folder with a real face (OpenCV's Haar cascade finds it), as tests/test_prepare.py builds one
    clip = tmp_path / "vids" / "real" / "astro.avi"
    clip.parent.mkdir(parents=True)
    (tmp_path / "vids" / "fake").mkdir()
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (300, 280))
    face = cv2.resize(skdata.astronaut(), (256, 256))
    for _ in range(4):
        canvas = np.full((280, 300, 3), 100, np.uint8)
        canvas[12:268, 20:276] = face
        writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    writer.release()
    cv2.imwrite(str(tmp_path / "vids" / "fake" / "x.png"), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    wdf = tmp_path / "data" / "wilddeepfake"
    for k, folder in enumerate(("real_train", "real_test", "fake_train", "fake_test")):
        write_pngs(wdf / folder / str(k + 1) / folder.split("_")[0] / str(k + 1), 2, size=20, seed=k,
                   name="{i}7.png")  # random pixels: no detector would find a face in them
    monkeypatch.setenv("DFBOOK_DATA", str(tmp_path / "data"))
    out = tmp_path / "data" / "prepared" / "faces"
    assert prepare.main([str(tmp_path / "vids"), str(out), "--frames", "2", "--detector", "haar", "--size", "32"]) == 0
    first = manifest.read(out / "manifest.csv")
    assert prepare.main(["wilddeepfake", str(out), "--frames", "2", "--detector", "haar", "--size", "32"]) == 0
    both = manifest.read(out / "manifest.csv")
    wd = both[both["dataset"] == "wilddeepfake"]
    assert len(wd) == 8 and len(both) == len(first) + 8  # appended, the video rows kept
    assert sorted(wd["frame"].unique()) == [7, 17] and wd["face_score"].astype(str).isin(["", "nan"]).all()
    assert cv2.imread(wd["path"].iloc[0]).shape == (32, 32, 3)
    assert json.loads((out / "summary.json").read_text())["sources"] == 2 + 8
    # resumable and idempotent: the same command again changes nothing
    assert prepare.main([str(tmp_path / "vids"), str(out), "--frames", "2", "--detector", "haar", "--size", "32"]) == 0
    again = manifest.read(out / "manifest.csv")
    assert len(again) == len(both) and set(again["path"]) == set(both["path"])


def test_images_command_builds_the_image_set_manifest(full_data, write_pngs, capsys):
    """defenders' IMAGES (CNNDetection + UnivFD) as its full parameters name it, from the sets as published
    (published_layouts.md, 'CNNDetection' and 'UnivFD diffusion')."""
    import yaml

    from dfbook import paths
    from dfbook.methods import defenders

    write_cnndetection(full_data / "cnndetection", write_pngs, n=1, size=16)
    uni = full_data / "univfd_diffusion"
    for d in ("imagenet/0_real", "laion/0_real", "guided/1_fake", "ldm_200/1_fake", "dalle/1_fake"):
        write_pngs(uni / d, 1, size=16)
    shipped = yaml.safe_load((paths.notebooks_dir() / "params" / "defenders.full.yaml").read_text())
    out = paths.resolve_data_path(shipped["IMAGES"]).parent
    assert cli.main(["images", str(out), "cnndetection", "univfd_diffusion"]) == 0
    assert "images ->" in capsys.readouterr().out
    raw = pd.read_csv(out / "manifest.csv")
    assert not raw["path"].str.startswith("/").any()  # relative: $DFBOOK_DATA can move
    _, images = defenders.load_corpora("", shipped["IMAGES"])
    assert set(images["dataset"]) == {"cnndetection", "univfd_diffusion"}
    assert images["path"].map(lambda p: Path(p).is_file()).all()
    assert set(images.loc[images["dataset"] == "cnndetection", "split"]) == {"train", "val", "test"}
    assert cli.main(["images", str(out), "nosuchset"]) == 2
    assert "unknown image set(s) ['nosuchset']" in capsys.readouterr().err


# -- defect 4: work on the CPU that belongs on the GPU --------------------------------------------------------------
@pytest.fixture
def policy():
    from dfbook import runtime

    yield runtime
    runtime.configure(None, None)
    runtime.set_seed(0, deterministic=True)


def test_full_runs_mixed_precision_and_autotuned_kernels_mini_stays_fp32(policy):
    import torch

    from dfbook import report

    cuda = torch.device("cuda")
    report.start("benchmark", {"PROFILE": "full", "SEED": 0})
    assert policy.mixed_precision(cuda) and not policy.mixed_precision(torch.device("cpu"))
    assert not policy.is_deterministic()
    policy.setup(0)
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    assert policy.amp_dtype() in (torch.bfloat16, torch.float16)
    report.start("benchmark", {"PROFILE": "full", "SEED": 0, "DETERMINISTIC": True})
    policy.setup(0)
    assert policy.is_deterministic() and not torch.backends.cudnn.benchmark
    report.start("benchmark", {"PROFILE": "mini", "SEED": 0, "DETERMINISTIC": False})
    policy.setup(0)
    assert not policy.mixed_precision(cuda) and policy.is_deterministic() and not torch.backends.cudnn.benchmark
    assert isinstance(policy.autocast(cuda), type(policy.autocast(torch.device("cpu"))))  # both no-ops in mini


def test_feature_cache_keys_name_the_precision_only_when_mixed(policy):
    from dfbook import backbones, features

    bb = backbones.create("mini:clip", pretrained=False)
    df = pd.DataFrame({"path": ["a.png"], "label": [0]})
    fp32 = features.cache_key(bb, df, fingerprint="x")
    assert fp32 == features.cache_key(bb, df, fingerprint="x", precision=None)  # mini's keys unchanged
    import torch

    assert features.cache_key(bb, df, fingerprint="x", precision=torch.bfloat16) != fp32


def test_univfd_end_to_end_cnn_is_not_pinned_to_the_cpu(monkeypatch):
    from dfbook import train
    from dfbook.methods import univfd

    seen = {}

    def fake_fit(model, data, **kw):
        seen.update(kw)
        return pd.DataFrame({"epoch": [1]})

    def fake_predict(model, data, **kw):
        seen["predict"] = kw
        return np.zeros(len(data.dataset))

    monkeypatch.setattr(train, "fit", fake_fit)
    monkeypatch.setattr(train, "predict", fake_predict)
    rows = pd.DataFrame({"path": ["a.png", "b.png"], "label": [0, 1]})
    proto = type("P", (), {"train": rows, "val": rows, "tests": rows})()
    cfg = train.TrainConfig(epochs=1, num_workers=2)
    bb, _ = univfd.train_cnn("mini:resnet", proto, cfg, size=16, load_size=18, pretrained=False)
    assert seen["device"] is None  # train.fit's default: the GPU when there is one
    univfd.cnn_scores(bb, rows, univfd.transform_for(bb, "center_crop", size=16, load_size=18), num_workers=2)
    assert "device" not in seen["predict"]  # scored where the model is


def test_no_chapter_cell_detects_faces():
    """Face detection belongs to `dfbook prepare` (resumable, on the GPU, its misses counted), never to a chapter
    cell: UCF's full path ran MTCNN over ~1.3M frames inside the notebook, and re-detected WildDeepfake's crops."""
    import jupytext
    import yaml

    from dfbook import paths

    for nb in sorted(paths.notebooks_dir().glob("*.md")):
        code = "\n".join(c.source for c in jupytext.read(nb).cells if c.cell_type == "code")
        for call in ("prepare.prepare(", "make_detector(", "MTCNN("):
            assert call not in code, f"{nb.name} calls {call} in a cell"
    ucf_full = yaml.safe_load((paths.notebooks_dir() / "params" / "ucf.full.yaml").read_text())
    defenders_full = yaml.safe_load((paths.notebooks_dir() / "params" / "defenders.full.yaml").read_text())
    assert ucf_full["FACES"] == defenders_full["FACES"]  # one `dfbook prepare` folder serves both


# -- defect 8: dlib's landmark model was a manual download --------------------------------------------------------
def test_landmarks_from_the_face_recognition_models_package(tmp_path, monkeypatch):
    """The [full] extra's face-recognition-models ships shape_predictor_68_face_landmarks.dat (published_layouts.md,
    'Weights'). A stand-in package (its __init__ refuses import: the file is found without importing, which would
    need pkg_resources) holds a tiny predictor trained as in test_unsupervised_video.py."""
    import sys

    import cv2
    import dlib
    import yaml
    from skimage import data

    from dfbook import paths
    from dfbook.methods import unsupervised_video as uv

    face = np.ascontiguousarray(data.astronaut()[0:300, 100:400])
    box = dlib.get_frontal_face_detector().run(face, 0, 0)[0][0]
    angle = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    points = [dlib.point(int(box.center().x + 0.4 * box.width() * np.cos(a)),
                         int(box.center().y + 0.4 * box.height() * np.sin(a))) for a in angle]
    options = dlib.shape_predictor_training_options()
    options.tree_depth, options.cascade_depth, options.num_trees_per_cascade_level = 2, 2, 2
    predictor = dlib.train_shape_predictor([face], [[dlib.full_object_detection(box, points)]], options)
    pkg = tmp_path / "site" / "face_recognition_models"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('needs pkg_resources')\n")
    predictor.save(str(pkg / "models" / "shape_predictor_68_face_landmarks.dat"))
    cv2.imwrite(str(tmp_path / "face.png"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    full = yaml.safe_load((paths.notebooks_dir() / "params" / "unsupervised_video.full.yaml").read_text())
    assert full["LANDMARK_MODEL"] == uv.PACKAGE_MODEL

    with pytest.raises(FileNotFoundError, match=r"face-recognition-models .*pip install -e '\.\[full\]'"):
        uv.landmark_model_path(uv.PACKAGE_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert uv.landmark_model_path(uv.PACKAGE_MODEL) == pkg / "models" / "shape_predictor_68_face_landmarks.dat"
    lm = uv.dlib_landmarks(pd.DataFrame({"path": [str(tmp_path / "face.png")]}), full["LANDMARK_MODEL"],
                           progress=False)
    assert np.isfinite(lm).all() and lm.shape == (1, 68, 2)
    assert "face_recognition_models" not in sys.modules
    # the manual download stays an option, under $DFBOOK_DATA
    monkeypatch.setenv("DFBOOK_DATA", str(tmp_path / "data"))
    assert uv.landmark_model_path("weights/lm.dat") == tmp_path / "data" / "weights" / "lm.dat"


# -- the throughput benchmark -----------------------------------------------------------------------------------
def test_bench_full_measures_and_extrapolates(monkeypatch):
    import importlib.util
    import sys

    from dfbook import paths

    spec = importlib.util.spec_from_file_location("bench_full", paths.repo_root() / "benchmarks" / "bench_full.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_full", bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    res = bench.run("cpu", batch=2, steps=1, only=["benchmark"])
    (speed,) = res["speeds"]
    assert speed["model"] == "SmallCNN@128" and speed["extract_img_s"] > 0 and speed["train_steps_s"] > 0
    work = [w for w in bench.WORKLOADS if w.chapter == "benchmark"]
    expect = sum(w.images * w.passes / (speed["extract_img_s"] if w.kind == "extract" else speed["train_img_s"])
                 for w in work) / 3600
    assert res["hours_per_chapter"]["benchmark"] == pytest.approx(expect)
    assert "CPU" in res["device"] and "| benchmark |" in bench.markdown(res)
    # every chapter with full parameters has its work listed, and every model it names is buildable by name
    chapters = {p.name.split(".")[0] for p in (paths.notebooks_dir() / "params").glob("*.full.yaml")}
    assert chapters <= {w.chapter for w in bench.WORKLOADS}
    assert {w.model for w in bench.WORKLOADS} <= set(bench.MODELS)


# -- priority 5: each chapter's full path end to end on CPU, tiny random-weight stand-ins of its models -----------
def save_random_weights(name: str, **kw) -> None:
    """Random weights of a timm model where a user puts the downloaded ones ($DFBOOK_DATA/weights/timm/...)."""
    import timm
    import torch

    from dfbook import backbones

    stem = backbones.expected_weights(name)
    stem.parent.mkdir(parents=True, exist_ok=True)
    torch.save(timm.create_model(backbones.parse(name)[1], **kw).state_dict(), stem.with_name(stem.name + ".pth"))


def save_random_openclip(name: str) -> None:
    """Random weights of an open_clip model where a user puts the downloaded ones ($DFBOOK_DATA/weights/openclip/)."""
    import open_clip
    import torch

    from dfbook import backbones

    stem = backbones.expected_weights(name)
    stem.parent.mkdir(parents=True, exist_ok=True)
    torch.save(open_clip.create_model(backbones.parse(name)[1], pretrained=None, force_quick_gelu=True).state_dict(),
               stem.with_name(stem.name + ".pth"))


def write_face_video(path: Path, seed: int, n: int = 4, side: int = 128) -> None:
    """A short clip of a real face (skimage's astronaut, which OpenCV's Haar cascade finds) with a little per-video
    noise, so that `dfbook prepare --detector haar` crops a face in every frame."""
    import cv2
    from skimage import data as skdata

    face = cv2.resize(np.ascontiguousarray(skdata.astronaut()[0:300, 100:400]), (side, side)).astype(np.int16)
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (side, side))
    for _ in range(n):
        frame = np.clip(face + rng.integers(-12, 13, face.shape), 0, 255).astype(np.uint8)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def write_ffpp_videos(root: Path, pairs: dict, video=write_face_video) -> None:
    """published_layouts.md, 'FaceForensics++' (ondyari/FaceForensics): original_sequences/youtube/c23/videos/
    NNN.mp4, manipulated_sequences/<method>/c23/videos/<target>_<source>.mp4, splits/{train,val,test}.json as
    lists of [target, source] pairs (``pairs``: split -> such a list). ``video(path, seed)`` writes one clip."""
    k = 0
    for i in sorted({v for split in pairs.values() for pair in split for v in pair}):
        video(root / f"original_sequences/youtube/c23/videos/{i}.mp4", k)
        k += 1
    for m in datasets.faces.FFPP_METHODS:
        for a, b in (pair for split in pairs.values() for pair in split):
            video(root / f"manipulated_sequences/{m}/c23/videos/{a}_{b}.mp4", k)
            k += 1
    (root / "splits").mkdir()
    for split, listed in pairs.items():
        (root / "splits" / f"{split}.json").write_text(json.dumps(listed))


def write_celebdf(root: Path, videos: list[str], listed: list[str], seed: int, video=write_face_video) -> None:
    """published_layouts.md, 'Celeb-DF v1 / v2' (yuezunli/celeb-deepfakeforensics READMEs): Celeb-real/idX_NNNN.mp4,
    YouTube-real/NNNNN.mp4, Celeb-synthesis/idX_idY_NNNN.mp4, List_of_testing_videos.txt with lines
    '<1 real | 0 fake> <folder>/<video>.mp4' and CRLF line endings."""
    for k, v in enumerate(videos):
        video(root / v, seed + k)
    (root / "List_of_testing_videos.txt").write_bytes(("\r\n".join(listed) + "\r\n").encode())


@pytest.mark.slow
def test_univfd_full_path_on_published_trees(full_data, build_dir, write_pngs):
    """CNNDetection + UnivFD diffusion as published (published_layouts.md, 'CNNDetection', 'UnivFD diffusion'), the
    full protocol, probe, nearest neighbours, end-to-end CNN and robustness curves; a ViT-Tiny stands in for
    ViT-L/14 and a ResNet-18 for the ResNet-50 (random weights at the local weight paths)."""
    write_cnndetection(full_data / "cnndetection", write_pngs, n=3, size=32)
    uni = full_data / "univfd_diffusion"
    for k, d in enumerate(("imagenet/0_real", "laion/0_real", "guided/1_fake", "ldm_200/1_fake", "dalle/1_fake")):
        write_pngs(uni / d, 3, size=32, seed=50 + k)
    vit, cnn = "timm:vit_tiny_patch16_224.augreg_in21k", "timm:resnet18.tv_in1k"
    save_random_weights(vit)
    save_random_weights(cnn)
    res = runner.run_chapter("univfd", "full", {
        "BACKBONE": vit, "CNN_BACKBONE": cnn, "LAYERS": ["block:0", "block:11"], "AUG_VIEWS": 1, "PROBE_BATCH": 8,
        "CNN_EPOCHS": 1, "CNN_BATCH": 8, "ROBUST_SETS": ["progan", "biggan", "guided"], "TSNE_POINTS": 20,
        "WORKERS": 1}, quiet=True)
    assert res.status == "ok", res.error
    rec = json.loads(res.record.read_text())
    assert rec["params"]["PROFILE"] == "full" and rec["params"]["CNN_BACKBONE"] == cnn


@pytest.mark.slow
def test_clip_peft_full_path_on_a_prepared_ffpp_c40(full_data, build_dir, write_pngs):
    """FF++ c40 face frames as `dfbook prepare ffpp ... --compression c40 --fps 1` writes them (from FF++'s
    published layout, published_layouts.md 'FaceForensics++'), the full parameters' FRAMES path, the seed's heads
    on cached CLIP features and the LoRA variant trained on images; random weights at the local path of
    ViT-B/32.openai (open_clip)."""
    write_prepared_ffpp(full_data, write_pngs, frames=(0, 25, 50), size=32, comp="c40")
    save_random_openclip("openclip:ViT-B-32.openai")
    res = runner.run_chapter("clip_peft", "full", {"EPOCHS": 1, "LORA_EPOCHS": 1, "PACKAGE_VIDEOS": 2, "WORKERS": 1,
                                                    "N_BOOT": 20, "N_MISTAKES": 2}, quiet=True)
    assert res.status == "ok", res.error
    rec = json.loads(res.record.read_text())
    assert rec["params"]["FRAMES"] == "prepared/ffpp_c40/manifest.csv"
