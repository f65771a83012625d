"""The manifest contract: what ``manifest.read``/``validate``/``check_disjoint`` refuse, and the record's hash."""

from __future__ import annotations

import pandas as pd
import pytest

from dfbook import manifest


def _rows(**change) -> pd.DataFrame:
    rows = [dict(path="real/a.png", label=0, dataset="toy", method="real", video_id="a", frame=0, identity="p1",
                 split="train"),
            dict(path="fake/b.png", label=1, dataset="toy", method="swap", video_id="b", frame=0, identity="p2",
                 split="test")]
    rows[1].update(change)
    return pd.DataFrame(rows)


def test_one_file_with_both_labels_is_refused():
    df = _rows(path="real/a.png")  # the fake row points at the real row's file
    with pytest.raises(manifest.ManifestError, match=r"same file is listed as real and as fake.*real/a.png"):
        manifest.validate(df)


def test_one_file_in_train_and_test_is_not_disjoint():
    df = pd.concat([_rows(), _rows().iloc[[0]].assign(split="test", dataset="toy2", identity="p9", video_id="z")])
    with pytest.raises(manifest.ManifestError, match=r"path\(s\) in both train and test.*real/a.png"):
        manifest.check_disjoint(manifest.validate(df))
    assert manifest.check_disjoint(_rows()).query("kind == 'path'")["shared"].sum() == 0


def test_read_names_the_file_for_a_bad_frame_or_a_binary_csv(tmp_path):
    _rows(frame="x").to_csv(tmp_path / "frames.csv", index=False)
    with pytest.raises(manifest.ManifestError, match=r"frames.csv: frame must be an integer.*\['x'\].*fake/b.png"):
        manifest.read(tmp_path / "frames.csv")
    (tmp_path / "binary.csv").write_bytes(b"path,label\n" + bytes(range(128, 256)) * 4)
    with pytest.raises(manifest.ManifestError, match=r"binary.csv is not a manifest CSV \(UnicodeDecodeError.*UTF-8"):
        manifest.read(tmp_path / "binary.csv")


def test_read_resolves_relative_paths_against_its_folder(tmp_path):
    _rows().to_csv(tmp_path / "m.csv", index=False)
    assert manifest.read(tmp_path / "m.csv")["path"].tolist() == [str(tmp_path / "real/a.png"),
                                                                   str(tmp_path / "fake/b.png")]


def test_record_hash_is_the_same_on_two_machines(tmp_path, write_pngs):
    """The same data under two roots (two machines) hashes the same; other bytes or rows do not."""
    for root in ("one", "two"):
        write_pngs(tmp_path / root / "real", 1, name="a.png")
        write_pngs(tmp_path / root / "fake", 1, seed=1, name="b.png")
        _rows().to_csv(tmp_path / root / "m.csv", index=False)
    one, two = manifest.read(tmp_path / "one" / "m.csv"), manifest.read(tmp_path / "two" / "m.csv")
    assert manifest.content_hash(one) != manifest.content_hash(two)  # the cache key keeps the location
    assert manifest.data_hash(one) == manifest.data_hash(two)
    assert manifest.data_hash(one) != manifest.data_hash(one.iloc[:1])
    write_pngs(tmp_path / "two" / "fake", 1, size=40, name="b.png")  # other bytes under the same name
    assert manifest.data_hash(one) != manifest.data_hash(two)
