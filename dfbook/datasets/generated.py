"""Generated-image datasets in the ``0_real`` / ``1_fake`` folder convention: the CNNDetection
(ForenSynths) train/val/test sets, the UnivFD diffusion sets, and the generator folders of the
hierarchical-attribution chapter.

Every image is its own "video" (``frame = 0``) and, with no person labels, its own identity; the id
is the image's path below the dataset root without suffix. ``domain`` is the test set / source
folder (reals of the ``biggan`` set have ``domain = "biggan"``), so each fake set can be scored
against its own reals as the papers do.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from dfbook.datasets._layout import (IMAGE_EXTS, README, DatasetError, files, finish, image_format,
                                     need_dir, root_of)

# Family of each generator folder name (lower case). Sources: CNNDetection README / eval_config.py,
# UnivFD dataset_paths.py, Guarnera et al. 2023 (methods_univfd_hierarchical.md A6.2, B2).
# "other": not a GAN nor a diffusion model (CRN, IMLE, SITD, SAN -- UnivFD's "GAN" average
# excludes them).
GENERATOR_FAMILY = {
    **dict.fromkeys(["progan", "stylegan", "stylegan2", "stylegan3", "biggan", "cyclegan", "stargan",
                     "stargan_v2", "gaugan", "whichfaceisreal", "attgan", "gdwct", "stgan", "mmdgan",
                     "msggan"], "gan"),
    **dict.fromkeys(["guided", "adm", "ldm", "ldm_100", "ldm_200", "ldm_200_cfg", "latent_diffusion",
                     "glide", "glide_100_10", "glide_100_27", "glide_50_27", "stable_diffusion",
                     "dalle2", "dall_e_2", "midjourney", "palette", "dcface"], "diffusion"),
    # DALL-E-mini (UnivFD's "dalle" set) generates VQ tokens autoregressively: not a diffusion model.
    **dict.fromkeys(["dalle", "dalle_mini"], "autoregressive"),
    "deepfake": "face_manipulation",
    **dict.fromkeys(["crn", "imle", "seeingdark", "sitd", "san"], "other"),
}
# Which real folder each UnivFD diffusion set is scored against (UnivFD dataset_paths.py:
# guided <-> imagenet reals, the LAION-caption text-to-image sets <-> laion reals).
UNIVFD_REAL_SOURCE = {"guided": "imagenet", **dict.fromkeys(
    ["ldm_200", "ldm_200_cfg", "ldm_100", "glide_100_27", "glide_50_27", "glide_100_10", "dalle"], "laion")}


def family_of(generator: str) -> str:
    """Family of a generator folder name (``""`` when unknown)."""
    return GENERATOR_FAMILY.get(generator.lower().replace("-", "_"), "")


def _labelled(folder: Path, root: Path, *, name: str, dataset: str, split: str, domain: str,
              content: str = "", family: str | None = None, require_both: bool = False) -> list[dict]:
    """Rows of one ``<folder>/{0_real,1_fake}/**`` pair (either may be absent unless ``require_both``)."""
    rows = []
    present = [sub for sub in ("0_real", "1_fake") if (folder / sub).is_dir()]
    if not present or (require_both and len(present) < 2):
        raise DatasetError(f"{name}: {folder} needs {'both' if require_both else 'a'} 0_real/ "
                           f"{'and' if require_both else 'or'} 1_fake/ sub-folder; see {README}, section '{name}'.")
    for sub in present:
        label = int(sub == "1_fake")
        for p in files(folder / sub, IMAGE_EXTS, name):
            vid = p.relative_to(root).with_suffix("").as_posix()
            rows.append(dict(path=str(p), label=label, dataset=dataset, method=domain if label else "real",
                             video_id=vid, frame=0, identity=vid, split=split,
                             family=(family if family is not None else family_of(domain)) if label else "real",
                             domain=domain, content=content, format=image_format(p)))
    return rows


def _is_labelled(folder: Path) -> bool:
    return (folder / "0_real").is_dir() or (folder / "1_fake").is_dir()


# Folder names that say which label the images below them have: inside a folder of one generator's fakes they
# make its labels ambiguous.
LABEL_NAMES = ("0_real", "1_fake", "real", "fake")


def _class_sets(folder: Path, name: str) -> list[Path] | None:
    """The class sub-folders of a multi-class set in the ``<class>/0_real|1_fake`` convention (CNNDetection's
    ``progan``, ``stylegan``, ``stylegan2``, ``cyclegan``), or None for a plain folder of fakes. Raises
    :class:`DatasetError` naming the folder when its labels cannot be told: class folders in the convention
    next to other folders or images, or a label folder anywhere deeper in a plain folder."""
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir())
    classes = [d for d in subdirs if _is_labelled(d)]
    if classes:
        others = [d.name for d in subdirs if d not in classes] + sorted(
            p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        if others:
            raise DatasetError(f"{name}: {folder} holds class folders in the 0_real/1_fake convention "
                               f"({[d.name for d in classes[:3]]}) next to {others[:3]}, whose label cannot be "
                               "told; move them into <class>/0_real or <class>/1_fake, or out of the folder "
                               f"(see {README}, section '{name}').")
        return classes
    for d, dirs, _ in os.walk(folder, followlinks=True):
        marked = [x for x in dirs if x.lower() in LABEL_NAMES]
        if marked:
            raise DatasetError(f"{name}: {Path(d) / marked[0]} is a label folder inside the generator folder "
                               f"{folder}, which is read as fakes only: its labels are ambiguous. Use "
                               "<generator>/0_real|1_fake or <generator>/<class>/0_real|1_fake "
                               f"(see {README}, section '{name}').")
    return None


# Folder of each split: as the release's archives unpack (progan_train.7z.*, progan_val.zip, CNN_synth_testset.zip;
# PeterWang512/CNNDetection README), else renamed train/ val/ test/.
CNNDETECTION_DIRS = {"train": ("progan_train", "train"), "val": ("progan_val", "val"),
                     "test": ("CNN_synth_testset", "test")}


def cnndetection(root: str | Path | None = None, *, splits: tuple[str, ...] = ("train", "val", "test"),
                 sets: tuple[str, ...] | None = None) -> pd.DataFrame:
    """CNNDetection / ForenSynths (Wang et al. CVPR 2020) as an image manifest.

    Layout, as the archives unpack: ``progan_train/<class>/{0_real,1_fake}/`` and ``progan_val/<class>/...``
    (ProGAN, 20 LSUN classes), ``CNN_synth_testset/<set>/{0_real,1_fake}/`` or, for the multi-class sets
    (progan, stylegan, stylegan2, cyclegan), ``CNN_synth_testset/<set>/<class>/{0_real,1_fake}/``; folders
    renamed ``train/``, ``val/``, ``test/`` are read too. Paths and ids keep the published names. ``content`` is the class (``""`` for flat
    sets); train/val fakes have ``method = domain = "progan"``. ``sets`` limits the test sets.
    """
    name = "cnndetection"
    root = root_of(name, root)
    rows = []
    for split in splits:
        if split not in CNNDETECTION_DIRS:
            raise ValueError(f"{name}: unknown split {split!r}; use some of {tuple(CNNDETECTION_DIRS)}")
        found = [root / d for d in CNNDETECTION_DIRS[split] if (root / d).is_dir()]
        base = found[0] if found else need_dir(root / CNNDETECTION_DIRS[split][0], name,
                                               f"the {split} split, also read as {root / split}")
        if split in ("train", "val"):
            for cls in sorted(d for d in base.iterdir() if d.is_dir()):
                rows += _labelled(cls, root, name=name, dataset=name, split=split, domain="progan",
                                  content=cls.name, require_both=True)
            continue
        available = sorted(d.name for d in base.iterdir() if d.is_dir())
        missing = sorted(set(sets or ()) - set(available))
        if missing:
            raise DatasetError(f"{name}: test set(s) {missing} not found in {base} (found {available}).")
        for s in (sets or available):
            folder = base / s
            if _is_labelled(folder):
                rows += _labelled(folder, root, name=name, dataset=name, split=split, domain=s, require_both=True)
            else:
                classes = sorted(d for d in folder.iterdir() if d.is_dir())
                if not classes:
                    raise DatasetError(f"{name}: {folder} has neither 0_real/1_fake nor class sub-folders.")
                for cls in classes:
                    rows += _labelled(cls, root, name=name, dataset=name, split=split, domain=s,
                                      content=cls.name, require_both=True)
    return finish(rows, name)


def univfd_diffusion(root: str | Path | None = None) -> pd.DataFrame:
    """The UnivFD diffusion/autoregressive test sets (Ojha et al. CVPR 2023) as an image manifest.

    Layout: ``<set>/0_real/`` for the real sources (``imagenet``, ``laion``) and ``<set>/1_fake/``
    for the generators (``guided``, ``ldm_200``, ``ldm_200_cfg``, ``ldm_100``, ``glide_100_27``,
    ``glide_50_27``, ``glide_100_10``, ``dalle``); every row gets ``split = "test"``. Score each fake
    set against the reals named in :data:`UNIVFD_REAL_SOURCE`."""
    name = "univfd_diffusion"
    root = root_of(name, root)
    rows = []
    for folder in sorted(d for d in root.iterdir() if d.is_dir()):
        rows += _labelled(folder, root, name=name, dataset=name, split="test", domain=folder.name)
    return finish(rows, name)


def generator_folders(root: str | Path | None = None, *, families: dict[str, str] | None = None,
                      dataset: str = "generators") -> pd.DataFrame:
    """Generator folders -> family labels, for the hierarchical chapter (real -> GAN/DM -> generator).

    Layout: ``<root>/real/**`` (real images) and one folder per generator, ``<root>/<generator>/**``;
    a folder in the ``0_real``/``1_fake`` convention contributes its ``0_real`` as reals and its
    ``1_fake`` as that generator's fakes, and so does each class folder of a multi-class set
    ``<generator>/<class>/0_real|1_fake`` (CNNDetection's progan, stylegan, stylegan2, cyclegan; ``content``
    = class), so symlinks to CNNDetection / UnivFD sets work as they are. A label folder (``0_real``,
    ``1_fake``, ``real``, ``fake``) anywhere else below a generator folder is an error naming it: the labels
    are never guessed. ``family`` comes from ``families`` (folder name -> family) or :data:`GENERATOR_FAMILY`; a
    generator with no known family is an error, never a silent guess. ``split = ""``: the chapter
    builds its own stratified splits."""
    name = "generators"
    root = root_of(dataset, root)
    families = {k.lower(): v for k, v in (families or {}).items()}
    rows, unknown = [], []
    for folder in sorted(d for d in root.iterdir() if d.is_dir()):
        g = folder.name
        if g.lower() == "real":
            for p in files(folder, IMAGE_EXTS, name):
                vid = p.relative_to(root).with_suffix("").as_posix()
                rows.append(dict(path=str(p), label=0, dataset=dataset, method="real", video_id=vid, frame=0,
                                 identity=vid, split="", family="real", domain="real", format=image_format(p)))
            continue
        fam = families.get(g.lower()) or family_of(g)
        labelled = _is_labelled(folder)
        classes = None if labelled else _class_sets(folder, name)
        has_fakes = (folder / "1_fake").is_dir() if labelled else (
            any((c / "1_fake").is_dir() for c in classes) if classes else True)
        if has_fakes and not fam:
            unknown.append(g)
            continue
        if labelled:
            rows += _labelled(folder, root, name=name, dataset=dataset, split="", domain=g, family=fam)
        elif classes:
            for cls in classes:
                rows += _labelled(cls, root, name=name, dataset=dataset, split="", domain=g, family=fam,
                                  content=cls.name)
        else:
            for p in files(folder, IMAGE_EXTS, name):
                vid = p.relative_to(root).with_suffix("").as_posix()
                rows.append(dict(path=str(p), label=1, dataset=dataset, method=g, video_id=vid, frame=0,
                                 identity=vid, split="", family=fam, domain=g, format=image_format(p)))
    if unknown:
        raise DatasetError(f"{name}: no family known for generator folder(s) {unknown} in {root}; pass "
                           f"families={{{unknown[0]!r}: 'gan' | 'diffusion' | 'autoregressive' | ...}}.")
    return finish(rows, name)
