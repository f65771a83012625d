"""Datasets published as label files next to the images: the AI-Face demographic annotation CSVs
(v1 and v2 schemas) and the multi-FFDI challenge label files.

Images are their own "video" (``frame = 0``) and identity: neither dataset publishes person ids,
so identity-disjointness of their splits cannot be checked, only image-disjointness.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from dfbook.datasets._layout import README, DatasetError, finish, image_format, need_dir, need_file, root_of

log = logging.getLogger(__name__)

# AI-Face-FairnessBench README (v1 table at commit 0b06d0c; v2 table at 588f80c).
AIFACE_V1_AGE = {0: "young", 1: "middle", 2: "senior", 3: "other"}
AIFACE_V1_RACE = {0: "asian", 1: "white", 2: "black", 3: "other"}
AIFACE_V1_INTERSECTION = dict(enumerate(f"{g},{r}" for g in ("male", "female")
                                         for r in ("asian", "white", "black", "other")))
# v2 age codes: the README says 0 child, 1 youth, 3 adult, 4 middle-aged, 5 senior, while the
# code (datasets_train.py ImageDataset_Test) maps 0..4 -- the two disagree (methods_ucf §3.1).
AIFACE_V2_AGE = {"readme": {0: "child", 1: "young", 3: "adult", 4: "middle", 5: "senior"},
                 "code": {0: "child", 1: "young", 2: "adult", 3: "middle", 4: "senior"}}
# v2 Intersection: 0-2 female light/medium/dark, 3-5 male light/medium/dark (the skin-tone groups
# are the authors' bins of the Monk scale; only "light = MST 1-3" is stated in their code).
AIFACE_V2_INTERSECTION = dict(enumerate((g, s) for g in ("female", "male") for s in ("light", "medium", "dark")))
# Top folders of the AI-Face image tree -> family; the next folder names the generator/source.
AIFACE_FAMILIES = {"gans": "gan", "dms": "diffusion", "deepfakes": "face_manipulation", "real": "real"}
AIFACE_TREE = r"(?i)(?:^|/)(gans|dms|deepfakes|real)/([^/]+)/"


def _int_column(df: pd.DataFrame, col: str, csv: Path, allowed=None) -> pd.Series:
    values = pd.to_numeric(df[col], errors="coerce")
    bad = values.isna() | (~values.isin(list(allowed)) if allowed is not None else False)
    if bad.any():
        raise DatasetError(f"aiface: {csv} column {col!r} has {int(bad.sum())} invalid value(s), e.g. "
                           f"{df.loc[bad, col].head(3).tolist()}; "
                           f"expected {sorted(allowed) if allowed is not None else 'integers'}.")
    return values.astype(int)


def _age_codes(values: pd.Series, age_codes: str, where: str) -> dict[int, str]:
    """The v2 age coding: given, or decided from the codes present in *all* CSVs of the dataset."""
    if age_codes != "auto":
        return AIFACE_V2_AGE[age_codes]
    seen = set(int(v) for v in values.unique())
    if seen <= {0, 1}:
        return AIFACE_V2_AGE["code"]  # both codings agree on 0 and 1
    if 5 in seen and 2 not in seen:
        return AIFACE_V2_AGE["readme"]
    if 2 in seen and 5 not in seen:
        return AIFACE_V2_AGE["code"]
    raise DatasetError(f"aiface: age codes {sorted(seen)} in {where} fit neither the README coding "
                       "(0,1,3,4,5) nor the code's (0-4) unambiguously; pass age_codes='readme' or 'code'.")


def _schema(df: pd.DataFrame, csv: Path, version: str) -> tuple[str, str]:
    """(schema version, name of the age column) of one annotation CSV."""
    if version == "auto":
        version = "v1" if "Ground Truth Race" in df.columns else "v2"
    need = {"v1": ["Image Path", "Ground Truth Gender", "Ground Truth Age", "Ground Truth Race", "Target"],
            "v2": ["Image Path", "Gender", "Skin Tone", "Intersection", "Target"]}[version]
    missing = [c for c in need if c not in df.columns]
    age_col = "Ground Truth Age" if version == "v1" else next(
        (c for c in ("Age", "Predicted Age") if c in df.columns), None)
    if missing or age_col is None:
        raise DatasetError(f"aiface: {csv} lacks column(s) {missing or ['Age or Predicted Age']} of the AI-Face "
                           f"{version} schema (found {list(df.columns)}); see {README}, section 'aiface'.")
    return version, age_col


def _aiface_table(df: pd.DataFrame, csv: Path, split: str, image_root: Path, version: str, age_col: str,
                  codes: dict[int, str]) -> pd.DataFrame:
    """One annotation CSV as manifest columns (vectorised: the v2 CSVs hold 1.6 M rows)."""
    target = _int_column(df, "Target", csv, {0, 1})
    gender = _int_column(df, "Ground Truth Gender" if version == "v1" else "Gender", csv, {0, 1})
    cols = {"gender": gender.map({1: "male", 0: "female"})}
    if version == "v1":
        cols["age_group"] = _int_column(df, age_col, csv, AIFACE_V1_AGE).map(AIFACE_V1_AGE)
        cols["race"] = _int_column(df, "Ground Truth Race", csv, AIFACE_V1_RACE).map(AIFACE_V1_RACE)
        if "Intersection" in df.columns:
            inter = _int_column(df, "Intersection", csv, AIFACE_V1_INTERSECTION)
            cols["intersection"] = inter.map(AIFACE_V1_INTERSECTION)
    else:
        cols["age_group"] = _int_column(df, age_col, csv, codes).map(codes)
        cols["skin_tone"] = _int_column(df, "Skin Tone", csv, range(1, 11))
        inter = _int_column(df, "Intersection", csv, AIFACE_V2_INTERSECTION)
        cols["skin_group"] = inter.map(lambda i: AIFACE_V2_INTERSECTION[i][1])
        disagree = int((inter.map(lambda i: AIFACE_V2_INTERSECTION[i][0]) != cols["gender"]).sum())
        if disagree:
            log.warning("aiface: %s: Intersection and Gender disagree in %d of %d rows; gender is taken "
                        "from the Gender column, skin_group from Intersection", csv, disagree, len(df))
        cols["intersection"] = inter.map(lambda i: ",".join(AIFACE_V2_INTERSECTION[i]))
    # String operations rather than pathlib: pathlib costs ~30 us per row and v2 has 1.6 M rows.
    raw = df["Image Path"].astype(str).str.replace("\\", "/", regex=False)
    tree = raw.str.extract(AIFACE_TREE).fillna("")
    family, source = tree[0].str.lower().map(AIFACE_FAMILIES).fillna(""), tree[1]
    fake = target == 1
    vid = raw.str.replace(r"\.[^./]+$", "", regex=True)
    ext = raw.str.extract(r"\.([^./]+)$")[0].fillna("").str.lower().replace({"jpeg": "jpg"})
    out = pd.DataFrame({
        "path": raw.where(raw.str.startswith("/"), str(image_root) + "/" + raw), "label": target,
        "dataset": "aiface", "method": source.replace("", "fake").where(fake, "real"),
        "video_id": vid, "frame": 0, "identity": vid, "split": split,
        "family": family.where(fake | (family != ""), "real"), "domain": source, "format": ext, "schema": version})
    return out.assign(**cols)


def _check_files(df: pd.DataFrame, name: str, lenient: bool) -> pd.DataFrame:
    """Raise (strict) or drop-and-count (lenient) rows whose image file does not exist."""
    gone = ~df["path"].map(lambda p: Path(p).is_file())
    n = int(gone.sum())
    df.attrs["n_missing_files"] = n
    if n and not lenient:
        raise DatasetError(f"{name}: {n} of {len(df)} listed image(s) do not exist, e.g. "
                           f"{df.loc[gone, 'path'].head(3).tolist()}; fix the image root, or pass lenient=True "
                           "to drop and count them.")
    if n:
        log.warning("%s: dropped %d of %d listed image(s) that do not exist, e.g. %s", name, n, len(df),
                    df.loc[gone, "path"].head(3).tolist())
        df = df.loc[~gone].reset_index(drop=True)
        df.attrs["n_missing_files"] = n
    return df


def aiface(root: str | Path | None = None, *, csvs: dict[str, str | Path] | None = None,
           image_root: str | Path | None = None, version: str = "auto", age_codes: str = "auto",
           check_files: bool = True, lenient: bool = False) -> pd.DataFrame:
    """AI-Face (Lin et al. CVPR 2025) demographic annotations as an image manifest.

    ``csvs`` maps split -> CSV (default ``<root>/train.csv`` and ``<root>/test.csv``). ``Image
    Path`` entries that are relative are resolved against ``image_root`` (default ``root``).
    Schemas (``version="auto"`` tells them apart by their columns):

    - v1: ``Ground Truth Gender`` (1 male, 0 female), ``Ground Truth Age`` (0 young, 1 middle,
      2 senior, 3 other), ``Ground Truth Race`` (0 asian, 1 white, 2 black, 3 other) ->
      ``gender, age_group, race, intersection``.
    - v2: ``Gender``, ``Age`` (or ``Predicted Age``), ``Skin Tone`` (Monk 1-10), ``Intersection``
      -> ``gender, age_group, skin_tone, skin_group`` (light/medium/dark, from Intersection),
      ``intersection``. The age coding is ambiguous between the README and the code; ``age_codes``
      ``"auto"`` decides from the values present and refuses when it cannot.

    ``method``/``family`` come from the image tree (``GANs/<gen>/``, ``DMs/<gen>/``,
    ``deepfakes/<set>/``, ``Real/<source>/``); off-layout fakes get ``method = "fake"``.
    ``check_files`` verifies every image exists (strict raises; ``lenient`` drops and counts, in
    ``df.attrs["n_missing_files"]``).
    """
    if age_codes not in ("auto", *AIFACE_V2_AGE):
        raise ValueError(f"aiface: age_codes must be 'auto', 'readme' or 'code', got {age_codes!r}")
    if version not in ("auto", "v1", "v2"):
        raise ValueError(f"aiface: version must be 'auto', 'v1' or 'v2', got {version!r}")
    root = root_of("aiface", root)
    csvs = csvs or {"train": root / "train.csv", "test": root / "test.csv"}
    image_root = Path(image_root) if image_root is not None else root
    tables = {}
    for split, csv in csvs.items():
        csv = need_file(Path(csv) if Path(csv).is_absolute() else root / csv, "aiface", f"{split} annotation CSV")
        df = pd.read_csv(csv)
        tables[split] = (csv, df, *_schema(df, csv, version))
    v2 = [(csv, df, age_col) for csv, df, v, age_col in tables.values() if v == "v2"]
    codes = _age_codes(pd.concat([_int_column(df, age_col, csv) for csv, df, age_col in v2]), age_codes,
                       ", ".join(str(t[0]) for t in v2)) if v2 else AIFACE_V1_AGE
    df = finish(pd.concat([_aiface_table(df, csv, split, image_root, v, age_col, codes)
                           for split, (csv, df, v, age_col) in tables.items()], ignore_index=True), "aiface")
    return _check_files(df, "aiface", lenient) if check_files else df


def multiffdi(root: str | Path | None = None, *, splits: tuple[str, ...] = ("train", "val"),
              check_files: bool = True, lenient: bool = False) -> pd.DataFrame:
    """multi-FFDI (Inclusion·Conference on the Bund 2024, image track) phase-1 sets.

    Layout: ``phase1/{trainset,valset}/<img_name>`` with ``phase1/{trainset,valset}_label.txt``,
    CSV files with header ``img_name,target`` (target 1 = fake). The generator of a fake is not
    published: ``method = "fake"``. ``check_files``/``lenient`` as in :func:`aiface`."""
    name = "multiffdi"
    root = root_of(name, root)
    phase = need_dir(root / "phase1", name, "the challenge's phase-1 folder")
    rows = []
    for split in splits:
        labels = need_file(phase / f"{split}set_label.txt", name, f"{split} label file")
        images = need_dir(phase / f"{split}set", name, f"{split} images")
        table = pd.read_csv(labels, dtype={"img_name": str})
        if list(table.columns[:2]) != ["img_name", "target"]:
            raise DatasetError(f"{name}: {labels} must start with the header 'img_name,target'; found "
                               f"{list(table.columns)}.")
        bad = ~table["target"].isin([0, 1])
        if bad.any():
            raise DatasetError(f"{name}: {labels} has {int(bad.sum())} target(s) other than 0/1, e.g. "
                               f"rows {table.index[bad][:3].tolist()}.")
        for img, target in zip(table["img_name"], table["target"]):
            p = images / img
            vid = f"{split}/{Path(img).with_suffix('').as_posix()}"
            rows.append(dict(path=str(p), label=int(target), dataset=name, method="fake" if target else "real",
                             video_id=vid, frame=0, identity=vid, split=split,
                             family="" if target else "real", domain=name, format=image_format(p)))
    df = finish(rows, name)
    return _check_files(df, name, lenient) if check_files else df
