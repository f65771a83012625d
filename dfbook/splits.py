"""Split builders for every chapter's protocol; they work on any manifest, synthetic or real.

- :func:`assign` — FF++-style train/val/test by identity and video (swap target and donor
  always land together), or keep a manifest's existing ``split`` column.
- :func:`protocol` — train on some methods, test on each method separately (the
  train-on-row / test-on-column matrix of cross-manipulation studies).
- :func:`cross_domain` — train on one domain, test on others (FF++ -> Celeb-DF, ...).
- :func:`hold_out` — a validation split for a dataset that ships only train/test (Celeb-DF).
- :func:`imbalance` — the demographic-imbalance switch: thin one group in the training split.

Every function returns new frames (inputs are never modified) and proves the disjointness it
promises with :func:`dfbook.manifest.check_disjoint`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dfbook import manifest

# FF++ official split: 720 / 140 / 140 videos (Rössler et al. 2019, ondyari/FaceForensics dataset/splits).
FFPP_FRACTIONS = {"train": 0.72, "val": 0.14, "test": 0.14}


def _as_list(x: str | Iterable[str] | None) -> list[str] | None:
    return None if x is None else ([x] if isinstance(x, str) else list(x))


def identity_groups(df: pd.DataFrame) -> pd.Series:
    """A group id per row: identities linked by a swap (target and ``source_identity``) share a
    group, so a split by group keeps every visible person on one side."""
    ids = manifest.identities(df).str.split("|")
    names = sorted({i for row in ids for i in row})
    index = {n: k for k, n in enumerate(names)}
    a = [index[row[0]] for row in ids for _ in row]
    b = [index[i] for row in ids for i in row]
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(names), len(names)))
    _, comp = connected_components(graph, directed=False)
    return pd.Series([f"g{comp[index[row[0]]]}" for row in ids], index=df.index, name="group")


def assign(df: pd.DataFrame, fractions: dict[str, float] | None = None, *, seed: int = 0,
           respect_existing: bool = True) -> pd.DataFrame:
    """Train/val/test by identity group (hence also by video). With ``respect_existing`` a
    manifest whose ``split`` column is already filled (official lists, or the mini corpus) is
    only checked; rows with an empty split are an error then, so a half-split table is never
    silently re-split."""
    out = df.copy()
    filled = out["split"].fillna("").astype(str) != "" if "split" in out else pd.Series(False, index=out.index)
    if respect_existing and filled.all():
        manifest.check_disjoint(out)
        return out
    if respect_existing and filled.any():
        raise manifest.ManifestError(
            f"{int((~filled).sum())} of {len(out)} rows have no split while others do; pass "
            "respect_existing=False to re-split everything, or fill the missing splits")
    fractions = fractions or FFPP_FRACTIONS
    groups = identity_groups(out)
    split_of = manifest.stratified_ids(groups.to_numpy(), fractions, seed)
    out["split"] = groups.map(split_of)
    manifest.check_disjoint(out, splits=tuple(fractions))
    return out


def select(df: pd.DataFrame, *, methods: str | Iterable[str] | None = None, splits: str | Iterable[str] | None = None,
           domains: str | Iterable[str] | None = None, include_real: bool = True) -> pd.DataFrame:
    """Rows of the given fake ``methods`` (all when None) plus the reals, restricted to ``splits``
    and ``domains`` (matched on ``domain`` when present, else ``dataset``). Without ``domains``,
    the reals come only from the domains where the selected methods occur (FF++'s reals, not
    Celeb-DF's, go with FF++'s Deepfakes)."""
    mask = pd.Series(True, index=df.index)
    methods, splits, domains = _as_list(methods), _as_list(splits), _as_list(domains)
    col = "domain" if "domain" in df else "dataset"
    if domains is None and methods is not None:
        domains = sorted(df.loc[df["method"].isin(methods) & (df["label"] == 1), col].unique()) or None
    if domains is not None:
        unknown = set(domains) - set(df[col])
        if unknown:
            raise KeyError(f"domain(s) {sorted(unknown)} not in the manifest; it has {sorted(set(df[col]))}")
        mask &= df[col].isin(domains)
    if splits is not None:
        mask &= df["split"].isin(splits)
    if methods is not None:
        unknown = set(methods) - set(df["method"])
        if unknown:
            raise KeyError(f"method(s) {sorted(unknown)} not in the manifest; it has {sorted(set(df['method']))}")
        mask &= df["method"].isin(methods) | ((df["label"] == 0) & include_real)
    elif not include_real:
        mask &= df["label"] == 1
    out = df[mask].copy()
    if out.empty:
        raise ValueError(f"no rows for methods={methods}, splits={splits}, domains={domains}")
    return out


def protocol(df: pd.DataFrame, train_methods: str | Sequence[str], test_methods: str | Sequence[str] | None = None,
             *, domain: str | None = None) -> dict[str, pd.DataFrame]:
    """Train on ``train_methods`` (+ reals), test on each of ``test_methods`` (default: every fake
    method) separately. Returns ``{"train", "val", "test/<method>" ...}``; each test set holds the
    test-split reals and one method, so every cell of a train-on-row / test-on-column matrix has
    the same reals."""
    train_methods = _as_list(train_methods)
    tests = _as_list(test_methods) or sorted(df.loc[df["label"] == 1, "method"].unique())
    out = {"train": select(df, methods=train_methods, splits="train", domains=domain),
           "val": select(df, methods=train_methods, splits="val", domains=domain)}
    for m in tests:
        out[f"test/{m}"] = select(df, methods=m, splits="test", domains=domain)
    manifest.check_disjoint(pd.concat([out["train"], out["val"]] + [v for k, v in out.items() if k.startswith("test/")]))
    return out


def _check_apart(train: pd.DataFrame, test: pd.DataFrame, name: str) -> None:
    """No identity and no file of ``train`` may appear in ``test``."""
    both = pd.concat([train.assign(split="train"), test.assign(split="test")], ignore_index=True)
    try:
        manifest.check_disjoint(both, by=("identity",), splits=("train", "test"))
    except manifest.ManifestError as err:
        raise manifest.ManifestError(f"{name}: {err}") from None
    shared = set(train["path"]) & set(test["path"])
    if shared:
        raise manifest.ManifestError(f"{name}: {len(shared)} file(s) in both train and test, e.g. {sorted(shared)[:3]}")


def cross_domain(df: pd.DataFrame, train_domain: str, test_domains: str | Sequence[str], *,
                 test_split: str | None = "test") -> dict[str, pd.DataFrame]:
    """Train/val on ``train_domain``, test on each of ``test_domains``: ``{"train", "val",
    "test/<domain>" ...}``. ``test_split`` picks the test domains' split (``None``: every row,
    e.g. for a test-only dataset such as UADFV). Raises when a test set shares an identity or a
    file with the training data (Celeb-DF v1 lies inside v2: only v2's test split is a fair v1
    test after training on v2)."""
    out = {"train": select(df, splits="train", domains=train_domain),
           "val": select(df, splits="val", domains=train_domain)}
    seen = pd.concat([out["train"], out["val"]])
    for dom in _as_list(test_domains):
        test = select(df, domains=dom, splits=test_split)
        _check_apart(seen, test, f"cross_domain {train_domain} -> {dom}")
        out[f"test/{dom}"] = test
    return out


def hold_out(df: pd.DataFrame, domain: str, fraction: float = 0.15, *, seed: int = 0) -> pd.DataFrame:
    """Move ``fraction`` of the training identities of ``domain`` (matched on ``domain``, else ``dataset``) to
    ``split = "val"``, for a dataset that ships only train/test lists (Celeb-DF). Whole identities move, with all
    their videos and the fakes made on them, so val and train share no target person; identities with fakes and
    those without (Celeb-DF's YouTube-real videos) are drawn separately, at least one of each kind, so val holds
    both classes. A swapped-in face may still occur in train: Celeb-DF's swaps link nearly all its celebrities,
    so no split keeps every face apart (:func:`identity_groups` would give one group). Other rows are unchanged;
    ``attrs["hold_out"]`` records what moved."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    col = "domain" if "domain" in df else "dataset"
    train = (df[col] == domain) & (df["split"] == "train")
    if not train.any():
        raise ValueError(f"hold_out: no train rows of {domain!r} to hold a validation set out of; "
                         f"its splits are {sorted(df.loc[df[col] == domain, 'split'].unique())}")
    ident = df.loc[train, "identity"].astype(str)
    with_fakes = set(ident[df.loc[train, "label"] == 1])
    rng = np.random.default_rng(seed)
    moved = set()
    for kind in (sorted(with_fakes), sorted(set(ident) - with_fakes)):
        if len(kind) > 1:
            n = min(len(kind) - 1, max(1, int(round(fraction * len(kind)))))
            moved |= set(rng.choice(kind, n, replace=False))
    if not moved:
        raise ValueError(f"hold_out: {domain!r} has too few training identities ({len(set(ident))}) to hold any out")
    out = df.copy()
    out.loc[train & df["identity"].astype(str).isin(moved), "split"] = "val"
    out.attrs["hold_out"] = {"domain": domain, "fraction": fraction, "identities_moved": len(moved),
                             "identities_before": len(set(ident)), "rows_moved": int((out["split"] != df["split"]).sum())}
    return out


def imbalance(df: pd.DataFrame, attribute: str, group: str, keep_fraction: float, seed: int = 0) -> pd.DataFrame:
    """Keep only ``keep_fraction`` of the training identities whose ``attribute`` equals ``group``
    (whole identities, with all their videos and the fakes made from them); val and test are
    untouched. The returned frame's ``attrs["imbalance"]`` records what was dropped."""
    if attribute not in df:
        raise KeyError(f"column {attribute!r} not in the manifest; demographic columns are {manifest.DEMOGRAPHICS}")
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
    train = df["split"] == "train"
    members = df.loc[train & (df[attribute].astype(str) == str(group)), "identity"].astype(str).unique()
    if len(members) == 0:
        raise ValueError(f"no training identity has {attribute} == {group!r}; groups: "
                         f"{sorted(df.loc[train, attribute].astype(str).unique())}")
    rng = np.random.default_rng(seed)
    keep = set(rng.permutation(np.sort(members))[: int(round(keep_fraction * len(members)))])
    drop = train & df["identity"].astype(str).isin(set(members) - keep)
    out = df[~drop].copy()
    out.attrs["imbalance"] = {"attribute": attribute, "group": str(group), "keep_fraction": keep_fraction,
                              "identities_before": int(len(members)), "identities_kept": len(keep),
                              "rows_dropped": int(drop.sum())}
    return out
