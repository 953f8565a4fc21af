"""Tests for tsllm.results: record loading, two-stage averaging, tables, statistics, CLI and notebooks."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import math
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import nbformat
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tsllm import results as R
from tsllm.results import cli
from tsllm.results import report as generated
from tsllm.results.markdown import controls_markdown, diagnostics_markdown

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "results" / "notebooks").glob("0[1-3]_*.ipynb"))  # 04 reads the diagnostics table
REFERENCE = REPO / "results" / "reference" / "ucr_published_accuracy.csv"


def make_record(dataset: str = "GunPoint", encoder: str = "cnn", mode: str = "standalone", seed: int = 0,
                test_acc: float | None = 0.9, *, lr: float | str = 1e-3, num_tokens: int = 16,
                num_kernels: int | None = None, status: str = "finished", last: float | None = None,
                best_test: float | None = None, llm: str = "smollm2_135m", sweep: str | None = None,
                weights: str = "pretrained", epochs: int = 2, sha: str = "ab", reader: dict | None = None,
                leaks_test: bool | None = None, cost: dict | None = None) -> dict:
    """A record.json dict shaped like the ones tsllm.train writes (study_best_test when ``best_test``)."""
    protocol = "study_best_test" if best_test is not None else "val_selected"
    hybrid = mode != "standalone"
    history = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5, "val_acc": 0.5, "val_loss": 1.0}
               for e in (1, 2)]
    if best_test is not None:
        for entry in history:
            entry["test_acc_optimistic"] = best_test
    encoder_cfg = {"name": encoder, "num_tokens": num_tokens, "channels": 64}
    if num_kernels is not None:
        encoder_cfg["num_kernels"] = num_kernels
    config = {
        "data": {"name": dataset, "normalise": "znorm", "val_fraction": 0.2},
        "encoder": encoder_cfg,
        "mode": {"name": mode, "latent_dim": None},
        "llm": {"name": llm, "weights": weights},
        "train": {"epochs": epochs, "batch_size": 32, "lr": lr, "protocol": protocol},
        "seed": seed,
        "sweep_name": sweep or mode,
    }
    if reader is not None:  # the newer config group: records carry config["reader"] instead of config["mode"]
        config["reader"] = reader
        del config["mode"]
    record = {
        "status": status,
        "config_hash": f"{dataset}-{encoder}-{mode}-{seed}-{lr}-{num_kernels}-{num_tokens}",
        "run_dir": f"/runs/{dataset}/{encoder}/{mode}/{seed}",
        "seed": seed,
        "config": config,
        "dataset": dataset, "encoder": encoder, "mode": mode, "llm": llm if hybrid else None, "lr": lr,
        "num_tokens": num_tokens, "num_kernels": num_kernels, "protocol": protocol,
        "data": {"name": dataset, "n_train": 40, "n_val": 10, "n_test": 150, "num_classes": 2, "sha256": sha},
        "env": {"device": "cpu", "git": {"sha": "c0ffee", "dirty": False}, "versions": {"tsllm": "0.1.0"}},
        "params": {"trainable": 1000, "frozen": 135_000_000 if hybrid else 0},
    }
    if leaks_test is not None:
        record["data"]["leaks_test"] = leaks_test
    if cost is not None:
        record["cost"] = cost
    if status == "failed":
        record["error"] = "RuntimeError: out of memory"
    if status != "finished":
        return record
    record.update(
        selection="best_val", best_epoch=2, epochs_run=2, val_acc=0.8, val_loss=0.5, test_acc=test_acc,
        test_loss=0.4, test_acc_last_epoch=test_acc if last is None else last, train_acc_last_epoch=1.0,
        stopped_early=False, resumed_from_epoch=0, seconds=1.5, history=history,
        study_best_test_acc=best_test, wall_seconds=1.6,
    )
    return record


def write_runs(root: Path, records: list[dict]) -> Path:
    """Lay records out as a Hydra multirun sweep: ``root/<override_dirname>/record.json``."""
    for i, record in enumerate(records):
        run_dir = root / f"data.name={record['dataset']},encoder={record['encoder']},run={i}"
        run_dir.mkdir(parents=True)
        (run_dir / "record.json").write_text(json.dumps(record))
    return root


# Hand-checkable runs. Datasets have unequal seed counts, so a pooled mean over runs (0.75 for
# cnn/standalone) differs from the study's mean of per-dataset seed means (0.8).
HAND = [
    make_record("GunPoint", "cnn", "standalone", 0, 0.6, last=0.5),
    make_record("GunPoint", "cnn", "standalone", 1, 0.7, last=0.5),
    make_record("GunPoint", "cnn", "standalone", 2, 0.8, last=0.5),
    make_record("Coffee", "cnn", "standalone", 0, 0.9, last=1.0),
    make_record("GunPoint", "cnn", "hybrid", 0, 0.75),
    make_record("Coffee", "cnn", "hybrid", 0, 0.95),
    make_record("Coffee", "cnn", "hybrid", 1, 0.85),
    make_record("ArrowHead", "cnn", "hybrid", 0, None, status="failed"),
    make_record("ArrowHead", "cnn", "hybrid", 1, None, status="running"),
]


@pytest.fixture
def hand_dir(tmp_path: Path) -> Path:
    root = write_runs(tmp_path / "runs", HAND)
    bad = root / "data.name=Broken,encoder=cnn,seed=0"
    bad.mkdir()
    (bad / "record.json").write_text('{"status": "finished", "test_acc": ')
    return root


@pytest.fixture
def hand(hand_dir: Path) -> pd.DataFrame:
    return R.load_records(hand_dir)


def test_load_records_skips_failed_running_and_malformed_once(hand_dir: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="tsllm.results"):
        df = R.load_records([hand_dir, hand_dir / "data.name=GunPoint,encoder=cnn,run=0"])  # overlap: no double count
    assert len(df) == 7 and set(df["status"]) == {"finished"}
    skipped = df.attrs["skipped"]
    assert len(skipped) == 3
    assert any("Broken" in s and "JSON" in s for s in skipped)
    assert any("status 'failed': RuntimeError" in s for s in skipped) and any("'running'" in s for s in skipped)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Broken" in m for m in messages) == 1
    row = df[df["mode"] == "hybrid"].iloc[0]
    assert row["sweep"] == "hybrid" and row["llm"] == "smollm2_135m" and row["epochs"] == 2
    assert row["trainable_params"] == 1000 and row["frozen_params"] == 135_000_000
    assert row["git_sha"] == "c0ffee" and row["device"] == "cpu" and row["path"].endswith("record.json")
    assert pd.isna(df[df["mode"] == "standalone"]["llm"]).all()
    assert set(R.TIDY_COLUMNS) <= set(df.columns)
    # Only config keys that vary become columns; non-semantic ones (sweep_name) never do.
    assert {c for c in df.columns if "." in c} == {"mode.name", "data.name"}


def test_load_records_empty_dir(tmp_path: Path) -> None:
    df = R.load_records(tmp_path)
    assert df.empty and list(df.columns)[:len(R.TIDY_COLUMNS)] == list(R.TIDY_COLUMNS)


def test_accuracy_column_and_labels() -> None:
    assert R.accuracy_column("val_selected") == "test_acc"
    assert R.accuracy_column("last_epoch") == "test_acc_last_epoch"
    assert R.accuracy_column("study_best_test") == "study_best_test_acc"
    assert R.accuracy_column("study_min_train_loss") == "study_min_train_loss_test_acc"
    assert R.OPTIMISTIC_LABEL in R.protocol_label("study_best_test")
    assert R.OPTIMISTIC_LABEL not in R.protocol_label("val_selected")
    with pytest.raises(ValueError, match="unknown protocol"):
        R.accuracy_column("best")


def test_aggregate_two_stage_means(hand: pd.DataFrame) -> None:
    table = R.aggregate(hand, "val_selected").set_index(["variant", "arm"])
    # Seeds within dataset first: GunPoint 0.7, Coffee 0.9 -> 0.8 (a pooled mean would give 0.75).
    assert table.loc[("cnn", "standalone"), "mean"] == pytest.approx(0.8)
    # GunPoint 0.75, Coffee (0.95 + 0.85) / 2 = 0.9 -> 0.825 (pooled: 0.85).
    assert table.loc[("cnn", "hybrid"), "mean"] == pytest.approx(0.825)
    assert table.loc[("cnn", "hybrid"), "n_datasets"] == 2 and table.attrs["pooled"] == []


def test_headline_pairs_on_dataset_and_seed(hand: pd.DataFrame) -> None:
    row = R.headline_table(hand, "val_selected").iloc[0]
    assert (row["variant"], row["arm"], row["vs"]) == ("cnn", "hybrid", "standalone")
    # Pairs: (GunPoint, 0) 0.6 vs 0.75 and (Coffee, 0) 0.9 vs 0.95; seeds 1, 2 have no partner.
    assert row["n pairs"] == 2 and row["n datasets"] == 2
    assert row["mean vs"] == pytest.approx(0.75) and row["mean arm"] == pytest.approx(0.85)
    assert row["delta"] == pytest.approx(0.1) and row["median delta"] == pytest.approx(0.1)
    assert math.isnan(row["p_wilcoxon"]) and "below 6" in row["note"]
    assert R.headline_table(hand, "val_selected").attrs["protocol"] == "val_selected"


def test_delta_uses_only_paired_datasets(tmp_path: Path) -> None:
    records = [make_record("A", "mlp", "standalone", 0, 0.5), make_record("B", "mlp", "standalone", 0, 0.9),
               make_record("A", "mlp", "hybrid", 0, 0.6)]
    row = R.headline_table(_frame(records, tmp_path), "val_selected").iloc[0]
    assert row["mean vs"] == pytest.approx(0.5)  # over the pair only, not (0.5 + 0.9) / 2
    assert row["delta"] == pytest.approx(0.1) and row["n pairs"] == 1


def test_pairs_need_every_other_config_value_equal(tmp_path: Path) -> None:
    records = [make_record("A", "mlp", "standalone", 0, 0.5), make_record("A", "mlp", "hybrid", 0, 0.6, lr=1e-4)]
    table = R.headline_table(_frame(records, tmp_path), "val_selected")
    assert table.empty  # different lr: the two runs are different variants, never paired


def _frame(records: list[dict], tmp_path: Path, **kwargs) -> pd.DataFrame:
    """Tidy rows of ``records``, written and loaded in a folder of their own."""
    return R.load_records(write_runs(Path(tempfile.mkdtemp(dir=tmp_path)) / "runs", records), **kwargs)


def test_protocol_selects_column_and_optimistic_label(hand: pd.DataFrame, tmp_path: Path) -> None:
    last = R.aggregate(hand, "last_epoch").set_index(["variant", "arm"])
    assert last.loc[("cnn", "standalone"), "mean"] == pytest.approx((0.5 + 1.0) / 2)
    records = [make_record("A", "mlp", "standalone", 0, 0.5, best_test=0.7),
               make_record("A", "mlp", "standalone", 1, 0.5, best_test=0.9),
               make_record("B", "mlp", "standalone", 0, 0.5)]  # val_selected run: no optimistic number
    df = _frame(records, tmp_path)
    optimistic = R.aggregate(df, "study_best_test")
    assert optimistic["mean"].tolist() == pytest.approx([0.8]) and optimistic["n_datasets"].tolist() == [1]
    for table in (optimistic, R.grid_table(df, "study_best_test"), R.per_dataset_table(df, "study_best_test"),
                  R.reference_table(df, "study_best_test", REFERENCE), R.headline_table(df, "study_best_test")):
        assert R.OPTIMISTIC_LABEL in table.attrs["label"]
    report = R.markdown_report(df, "study_best_test")
    assert report.count(R.OPTIMISTIC_LABEL) >= 4  # header and every table
    assert R.OPTIMISTIC_LABEL not in R.markdown_report(df, "val_selected").split("## Study protocol")[0]


def test_arms_split_by_llm_and_lora_gets_its_own_delta(tmp_path: Path) -> None:
    records = [make_record("A", "mlp", "standalone", 0, 0.5),
               make_record("A", "mlp", "hybrid", 0, 0.6, llm="smollm2_135m"),
               make_record("A", "mlp", "hybrid", 0, 0.8, llm="llama31_8b"),
               make_record("A", "mlp", "lora", 0, 0.9, llm="llama31_8b")]
    table = R.headline_table(_frame(records, tmp_path), "val_selected").set_index("arm")
    assert list(table.index) == ["hybrid[llm.name=llama31_8b]", "hybrid[llm.name=smollm2_135m]", "lora"]
    assert table.loc["hybrid[llm.name=smollm2_135m]", "mean arm"] == pytest.approx(0.6)  # never pooled with llama
    assert table.loc["lora", "delta"] == pytest.approx(0.4)
    assert table.loc["hybrid[llm.name=llama31_8b]", "delta"] == pytest.approx(0.3)


def test_records_differing_only_in_llm_weights_stay_apart(tmp_path: Path) -> None:
    records = [make_record("A", "cnn", "hybrid", 0, 0.6, weights="pretrained"),
               make_record("A", "cnn", "hybrid", 0, 0.2, weights="random")]
    df = _frame(records, tmp_path)
    assert df["cell"].nunique() == 2 and "llm.weights" in df.columns
    table = R.aggregate(df, "val_selected").set_index("arm")["mean"]
    assert table.to_dict() == pytest.approx({"hybrid[llm.weights=pretrained]": 0.6, "hybrid[llm.weights=random]": 0.2})


def test_runs_with_different_epochs_are_not_averaged(tmp_path: Path) -> None:
    records = [make_record("A", "cnn", "standalone", 0, 0.9, epochs=100),
               make_record("A", "cnn", "standalone", 1, 0.5, epochs=3),
               make_record("A", "cnn", "standalone", 2, 0.6, epochs=3)]
    table = R.aggregate(_frame(records, tmp_path), "val_selected").set_index("variant")
    assert table.loc["cnn[train.epochs=100]", "mean"] == pytest.approx(0.9)
    assert table.loc["cnn[train.epochs=3]", "mean"] == pytest.approx(0.55)
    assert table.loc["cnn[train.epochs=3]", "max_seeds"] == 2


def test_different_data_checksums_stay_apart(tmp_path: Path) -> None:
    records = [make_record("GunPoint", "cnn", "standalone", 0, 0.9, sha="aa" * 32),
               make_record("GunPoint", "cnn", "standalone", 0, 0.5, sha="bb" * 32)]
    per_dataset = R.dataset_means(_frame(records, tmp_path), "val_selected")
    assert per_dataset.set_index("dataset")["mean"].to_dict() == pytest.approx(
        {"GunPoint@aaaaaaaa": 0.9, "GunPoint@bbbbbbbb": 0.5})
    assert (per_dataset["n_seeds"] == 1).all()


def test_reader_group_records_label_arms_from_varying_keys(tmp_path: Path) -> None:
    records = [make_record("A", "cnn", "standalone", 0, 0.5),  # an older record: config["mode"]
               make_record("A", "cnn", "hybrid", 0, 0.7, reader={"name": "hybrid", "prompt": "study"}),
               make_record("A", "cnn", "hybrid", 0, 0.6, reader={"name": "hybrid", "prompt": "none"})]
    df = _frame(records, tmp_path)
    assert set(df["arm"]) == {"standalone", "hybrid[reader.prompt=study]", "hybrid[reader.prompt=none]"}
    assert R.default_reference(list(df["arm"])) == "hybrid[reader.prompt=none]"  # fewest non-default values
    controls = R.controls_table(df, "val_selected", reference="hybrid[reader.prompt=study]").set_index("arm")
    assert controls.loc["hybrid[reader.prompt=none]", "delta"] == pytest.approx(-0.1)
    assert controls.loc["standalone", "vs"] == "hybrid[reader.prompt=study]"


def test_the_headline_pairs_each_variant_with_its_own_no_llm_arm(tmp_path: Path) -> None:
    # Records from before readers name the no-LLM arm `standalone`, later ones `mean`: a table of both
    # generations (python -m tsllm.results results/runs) used one baseline and dropped the other's variants.
    def reader_record(dataset: str, seed: int, acc: float, arm: str) -> dict:
        rec = make_record(dataset, "mlp", "standalone" if arm == "mean" else "hybrid", seed, acc,
                          reader={"name": arm}, sweep="evidence")
        rec["arm"] = arm
        return rec

    records = []
    for dataset in ("A", "B"):
        records += [make_record(dataset, "cnn", "standalone", 0, 0.8), make_record(dataset, "cnn", "hybrid", 0, 0.7),
                    reader_record(dataset, 0, 0.9, "mean"), reader_record(dataset, 0, 0.6, "llm")]
    df = _frame(records, tmp_path)
    headline = R.headline_table(df, "val_selected").set_index("variant")
    assert headline.loc["cnn", ["arm", "vs"]].tolist() == ["hybrid", "standalone"]
    assert headline.loc["mlp", ["arm", "vs"]].tolist() == ["llm", "mean"]
    assert headline.loc["mlp", "delta"] == pytest.approx(-0.3) and headline.loc["mlp", "n pairs"] == 2
    assert headline.attrs["baseline"] == "standalone, mean"


def test_control_arms_keep_their_short_labels_and_the_kernel_ablation_pairs_with_the_plain_llm(tmp_path: Path) -> None:
    def control(dataset: str, seed: int, acc: float, arm: str, num_layers: int | None = None,
                kernel_sizes: list[int] | None = None, encoder: str = "inception") -> dict:
        reader = {"name": "mean" if arm == "mean" else "llm"}
        rec = make_record(dataset, encoder, "standalone" if arm == "mean" else "hybrid", seed, acc,
                          reader=reader, sweep="controls")
        rec["config"]["llm"]["num_layers"] = num_layers
        rec["config"]["encoder"]["kernel_sizes"] = kernel_sizes
        rec["arm"] = arm  # what train.arm_label writes
        return rec

    records = []
    for dataset, shift in (("A", 0.0), ("B", 0.1)):
        for seed in (0, 1):
            records += [control(dataset, seed, 0.6 + shift, "llm"), control(dataset, seed, 0.9, "mean"),
                        control(dataset, seed, 0.5 + shift, "llm[num_layers=8]", num_layers=8),
                        control(dataset, seed, 0.7 + shift, "llm", kernel_sizes=[7, 7, 7]),
                        # ResNet's kernel sizes only tell encoders apart: they qualify no arm.
                        control(dataset, seed, 0.8, "llm", kernel_sizes=[8, 5, 3], encoder="resnet"),
                        control(dataset, seed, 0.9, "mean", kernel_sizes=[8, 5, 3], encoder="resnet")]
    df = _frame(records, tmp_path)
    single = "llm[encoder.kernel_sizes=[7, 7, 7]]"
    assert set(df["arm"]) == {"llm", "mean", "llm[num_layers=8]", single}  # no "=null" qualifiers
    assert set(df.loc[df["encoder"] == "resnet", "arm"]) == {"llm", "mean"}
    assert df.groupby(["variant", "arm"]).size().eq(4).all()  # two datasets x two seeds each: nothing merged
    controls = R.controls_table(df, "val_selected")
    assert set(controls["vs"]) == {"llm"}
    by_arm = controls[controls["variant"] == "inception"].set_index("arm")
    assert by_arm.loc[single, "n pairs"] == 4 and by_arm.loc[single, "delta"] == pytest.approx(0.1)
    assert by_arm.loc["llm[num_layers=8]", "delta"] == pytest.approx(-0.1)
    # --arm keeps the named rows only; a name with no row is an error naming the arms there are.
    only = controls_markdown(df, "val_selected", arms=["llm[num_layers=8]"])
    rows = [line for line in only.splitlines() if line.startswith("| inception") or line.startswith("| resnet")]
    assert len(rows) == 1 and "llm[num_layers=8]" in rows[0]
    with pytest.raises(ValueError, match=r"--arm llm\[num_layers=4\]: .*arms: .*llm\[num_layers=8\]"):
        controls_markdown(df, "val_selected", arms=["llm[num_layers=4]"])


def test_failed_record_with_string_lr_is_skipped(tmp_path: Path) -> None:
    records = [make_record("A", "cnn", "standalone", 0, 0.9),
               make_record("A", "cnn", "standalone", 1, None, lr="abc", status="failed"),
               make_record("A", "cnn", "standalone", 2, 0.5, lr="abc")]  # finished, yet malformed
    df = _frame(records, tmp_path)
    assert len(df) == 1 and df["lr"].tolist() == [1e-3]
    assert any("'train.lr' is 'abc' (expected a number)" in s for s in df.attrs["skipped"])
    assert any("status 'failed'" in s for s in df.attrs["skipped"])


def test_cli_survives_bad_records_and_warns_once(tmp_path: Path) -> None:
    records = [make_record("A", "cnn", "standalone", s, 0.9) for s in range(2)]
    records += [make_record("A", "cnn", "standalone", 2, None, lr="abc", status="failed"),
                make_record("A", "cnn", "standalone", 3, 0.5, lr="abc")]
    runs = write_runs(tmp_path / "runs", records)
    proc = subprocess.run([sys.executable, "-m", "tsllm.results", str(runs), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("'train.lr' is 'abc'") == 1
    assert (tmp_path / "out" / "tidy.parquet").exists() and len(R.load_tidy(tmp_path / "out" / "tidy.csv")) == 2


def test_cli_default_output_is_outside_results_and_bad_where_writes_nothing(hand_dir: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    run = [sys.executable, "-m", "tsllm.results", str(hand_dir)]
    proc = subprocess.run([*run, "--where", "no.such=1"], capture_output=True, text=True, timeout=120, cwd=work)
    assert proc.returncode == 2 and "no column 'no.such'" in proc.stderr and not (work / "tsllm-results").exists()
    proc = subprocess.run(run, capture_output=True, text=True, timeout=120, cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert (work / R.DEFAULT_OUT / "report.md").exists() and not any((work / "results").iterdir())


def test_where_and_sweep_filters(tmp_path: Path) -> None:
    records = [make_record("A", "cnn", "standalone", 0, 0.5, sweep="s1"),
               make_record("B", "cnn", "standalone", 0, 0.6, sweep="s2"),
               make_record("A", "cnn", "hybrid", 0, 0.7, sweep="s1", weights="random"),
               make_record("A", "cnn", "hybrid", 0, 0.8, sweep="s1")]
    assert len(_frame(records, tmp_path, sweeps=["s1"])) == 3
    only = _frame(records, tmp_path, where=R.parse_where(["llm.weights=random", "data.name=A"]))
    assert only["test_acc"].tolist() == [0.7] and only["arm"].tolist() == ["hybrid"]  # labels name what still varies
    full = _frame(records, tmp_path)
    assert "hybrid[llm.weights=random]" in set(full["arm"])
    assert R.filter_runs(full, where=["llm.weights=random"])["arm"].tolist() == ["hybrid"]
    assert len(_frame(records, tmp_path, where=[("train.lr", "0.001")])) == 4  # numbers compare as numbers
    with pytest.raises(ValueError, match="expected key=value"):
        R.parse_where(["llm.weights"])
    # A run in flight is counted as left out only by the report of its own sweep.
    running = [*records, make_record("C", "cnn", "standalone", 0, status="running", sweep="s2")]
    assert len(_frame(running, tmp_path, sweeps=["s1"]).attrs["skipped"]) == 0
    assert len(_frame(running, tmp_path, sweeps=["s2"]).attrs["skipped"]) == 1
    assert len(_frame(running, tmp_path, where=[("data.name", "A")]).attrs["skipped"]) == 0


def test_report_without_usable_runs(hand: pd.DataFrame) -> None:
    report = R.markdown_report(hand, "study_best_test")
    assert "No usable runs" in report and R.OPTIMISTIC_LABEL in report and "7 finished without" in report
    assert "1 failed, 1 running, 1 malformed" in report


def test_wilcoxon_matches_scipy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    standalone = rng.uniform(0.6, 0.9, 7)
    hybrid = standalone + rng.normal(0.02, 0.03, 7)
    records = [make_record(f"D{i}", "resnet", "standalone", 0, s) for i, s in enumerate(standalone)]
    records += [make_record(f"D{i}", "resnet", "hybrid", 0, h) for i, h in enumerate(hybrid)]
    row = R.headline_table(_frame(records, tmp_path), "val_selected").iloc[0]
    assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(hybrid, standalone).pvalue)
    assert row["delta"] == pytest.approx(np.mean(hybrid - standalone)) and row["note"] == ""
    assert row["median delta"] == pytest.approx(np.median(hybrid - standalone))
    # The headline's CI is the bootstrap of these differences; with 7 of them it lies strictly inside their range.
    diff = hybrid - standalone
    assert (row["ci low"], row["ci high"]) == pytest.approx(R.bootstrap_median_ci(diff))
    assert diff.min() < row["ci low"] <= row["median delta"] <= row["ci high"] < diff.max()
    p_value, note = R.paired_wilcoxon([0.5] * 6, [0.5] * 6)
    assert math.isnan(p_value) and "zero" in note
    p_value, note = R.paired_wilcoxon([0.9] * 5, [0.1] * 5)  # exact p would be 0.0625: never shown
    assert math.isnan(p_value) and "no p < 0.05 is possible below 6" in note


def test_bootstrap_ci_is_seeded_and_brackets_the_median() -> None:
    diff = [0.1, -0.05, 0.2, 0.0, 0.03]
    assert R.bootstrap_median_ci(diff) == R.bootstrap_median_ci(diff)
    low, high = R.bootstrap_median_ci(diff)
    assert low <= np.median(diff) <= high and low >= min(diff) and high <= max(diff)
    assert all(math.isnan(v) for v in R.bootstrap_median_ci([0.1]))


def test_bootstrap_ci_is_the_percentile_interval_of_resampled_medians() -> None:
    """Known values from the bootstrap's exact distribution, not just 'inside the range' ((min, max) passes that)."""
    # 11 distinct values: a resample's median is <= the k-th smallest iff 6 or more of its 11 draws are, so
    # P(median <= x_(k)) = P(Binomial(11, k/11) >= 6): 0.007 for k=2, 0.051 for k=3. The 2.5th percentile of
    # 10 000 resampled medians is therefore x_(3), far from either boundary, and symmetrically the 97.5th x_(9).
    x = np.random.default_rng(1).permutation(np.linspace(-0.5, 0.5, 11))
    assert [stats.binom.sf(5, 11, k / 11) for k in (2, 3)] == pytest.approx([0.0072, 0.0512], abs=1e-4)
    ordered = np.sort(x)
    assert R.bootstrap_median_ci(x) == pytest.approx((ordered[2], ordered[8]))
    # Outliers move (min, max) but hardly the median: its CI stays among the bulk of the values.
    bulk = list(np.linspace(-0.1, 0.1, 19))
    low, high = R.bootstrap_median_ci([-5.0, *bulk, 5.0])
    assert -0.1 <= low < 0 < high <= 0.1
    # More differences, a narrower CI (the range of the values only grows).
    rng = np.random.default_rng(0)
    widths = []
    for n in (10, 40, 160):
        low, high = R.bootstrap_median_ci(rng.normal(0.02, 0.05, n))
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2] > 0


def test_protocol_table_and_leak_flag(tmp_path: Path) -> None:
    records = [make_record("A", "mlp", "standalone", 0, 0.5, best_test=0.7, leaks_test=True),
               make_record("B", "mlp", "standalone", 0, 0.6, best_test=0.9, leaks_test=True),
               make_record("A", "mlp", "hybrid", 0, 0.6)]
    records[0]["study_min_train_loss_test_acc"] = 0.55
    df = _frame(records, tmp_path)
    table = R.protocol_table(df).set_index("study figure")
    assert table.loc["study_best_test", "honest"] == pytest.approx(0.55)
    assert table.loc["study_best_test", "delta"] == pytest.approx(0.25)
    assert table.loc["study_min_train_loss", "n runs"] == 1
    assert table.loc["study_min_train_loss", "delta"] == pytest.approx(0.05)
    assert table["variant"].str.endswith("(leaks TEST)").all()  # the variant also names train.protocol
    report = R.markdown_report(df, "val_selected")
    assert "leaks TEST" in report.split("## Per dataset")[1]  # flagged in every table that shows them


def test_cost_table(tmp_path: Path) -> None:
    cost = {"flops_per_step": 2e9, "llm_tokens_per_step": 600, "seconds_per_epoch": 1.5, "peak_rss_mib": 900.0,
            "peak_accelerator_mib": None}
    records = [make_record("A", "cnn", "hybrid", s, 0.9, cost={**cost, "seconds_per_epoch": 1.0 + s})
               for s in range(2)] + [make_record("A", "cnn", "standalone", 0, 0.9)]
    table = R.cost_table(_frame(records, tmp_path)).set_index("arm")
    assert list(table.index) == ["hybrid"] and table.loc["hybrid", "n runs"] == 2
    assert table.loc["hybrid", "seconds_per_epoch"] == pytest.approx(1.5)
    assert table.loc["hybrid", "flops_per_step"] == pytest.approx(2e9)
    assert table.loc["hybrid", "train_hours"] == pytest.approx((1.0 * 2 + 2.0 * 2) / 3600)  # 2 epochs each
    assert table.loc["hybrid", "wall_hours"] == pytest.approx(2 * 1.6 / 3600) and table.loc["hybrid", "partial"] == 0
    records[1].update(resumed_from_epoch=1, wall_seconds=0.4)  # a record from before sessions were timed:
    table = R.cost_table(_frame(records, tmp_path)).set_index("arm")  # its last session only, a lower bound
    assert table.loc["hybrid", "wall_hours"] == pytest.approx(2.0 / 3600) and table.loc["hybrid", "partial"] == 1
    records[1].update(earlier_sessions_seconds=1.1)  # its earlier session, from its checkpoint: exact
    table = R.cost_table(_frame(records, tmp_path)).set_index("arm")
    assert table.loc["hybrid", "wall_hours"] == pytest.approx(3.1 / 3600) and table.loc["hybrid", "partial"] == 0
    assert R.cost_table(_frame(records[2:], tmp_path)).empty
    assert "## Cost" in R.markdown_report(_frame(records, tmp_path), "val_selected", cost=True)
    assert "No run reports cost fields" in R.markdown_report(_frame(records[2:], tmp_path), "val_selected", cost=True)


def test_grid_table_cells(tmp_path: Path) -> None:
    records = [make_record("A", "inception", "standalone", 0, 0.5, num_kernels=6),
               make_record("A", "inception", "standalone", 1, 0.7, num_kernels=6),
               make_record("B", "inception", "standalone", 0, 0.9, num_kernels=6),
               make_record("A", "inception", "standalone", 0, 0.4, num_kernels=6, lr=1e-4),
               make_record("A", "inception", "standalone", 0, 0.3, num_kernels=3, lr=1e-4),
               make_record("A", "mlp", "standalone", 0, 0.2, num_tokens=1)]
    full = R.grid_table(_frame(records, tmp_path), "val_selected")
    grid = full.set_index(["encoder", "lr", "num_kernels"])
    assert grid.loc[("inception", 1e-3, 6), "mean"] == pytest.approx(0.75)  # (0.6 + 0.9) / 2, pooled: 0.7
    assert grid.loc[("inception", 1e-3, 6), "n_datasets"] == 2
    assert grid.loc[("inception", 1e-3, 6), "n_runs"] == 3
    assert grid.loc[("inception", 1e-4, 3), "mean"] == pytest.approx(0.3)
    assert len(grid) == 4 and full.attrs["pooled"] == []
    matrix = R.grid_matrix(full, "inception", "standalone", 16)
    assert list(matrix.columns) == ["3", "6"] and list(matrix.index) == [1e-4, 1e-3]
    assert matrix.loc[1e-4, "6"] == pytest.approx(0.4) and math.isnan(matrix.loc[1e-3, "3"])
    mlp = R.grid_matrix(full, "mlp", "standalone", 1)
    assert list(mlp.columns) == ["-"]


def test_fewer_group_columns_say_what_they_pooled(tmp_path: Path) -> None:
    records = [make_record("A", "cnn", "standalone", 0, 0.5, epochs=3), make_record("A", "cnn", "standalone", 0, 0.7)]
    table = R.aggregate(_frame(records, tmp_path), "val_selected", ["encoder"])
    assert table.attrs["pooled"] == ["train.epochs"]


def test_per_dataset_table_strings(hand: pd.DataFrame) -> None:
    table = R.per_dataset_table(hand, "val_selected")
    assert list(table.columns) == ["cnn/standalone", "cnn/hybrid"]
    assert table.loc["GunPoint", "cnn/standalone"] == "0.700 ± 0.100 (3 seeds)"
    assert table.loc["Coffee", "cnn/standalone"] == "0.900 (1 seed)"
    assert table.loc["Coffee", "cnn/hybrid"] == "0.900 ± 0.071 (2 seeds)"


def test_reference_table_joins_published(hand: pd.DataFrame) -> None:
    table = R.reference_table(hand, "val_selected", REFERENCE)
    published = pd.read_csv(REFERENCE)
    expected = published[(published["dataset"] == "GunPoint") & (published["method"] == "MLP")
                         & (published["archive"] == R.DEFAULT_ARCHIVES["MLP"])]["accuracy"]
    assert len(expected) == 1
    assert table.loc["GunPoint", "MLP (hfawaz/dl-4-tsc, UCR2015-85)"] == pytest.approx(expected.iloc[0])
    for method, repo in [("FCN", "hfawaz/dl-4-tsc"), ("ResNet", "hfawaz/dl-4-tsc"),
                         ("InceptionTime", "hfawaz/InceptionTime"), ("ROCKET", "angus924/rocket")]:
        assert table[f"{method} ({repo}, {R.DEFAULT_ARCHIVES[method]})"].notna().all()
    assert table.loc["Coffee", "cnn/hybrid"] == pytest.approx(0.9)
    assert set(table.index) == {"GunPoint", "Coffee"}


# The published means over datasets=evidence16 (dl-4-tsc and InceptionTime on UCR 2015, ROCKET's paper file).
EVIDENCE16_PUBLISHED = {"MLP": 0.822, "FCN": 0.825, "ResNet": 0.845, "InceptionTime": 0.887, "ROCKET": 0.905}


def test_published_matrix_reproduces_the_published_means_over_evidence16() -> None:
    import yaml

    names = yaml.safe_load((REPO / "conf" / "datasets" / "evidence16.yaml").read_text())["datasets"]["names"]
    matrix = R.published_matrix(names, REFERENCE)
    assert matrix.notna().all().all() and len(matrix) == 16
    means = {column.split(" (")[0]: round(value, 3) for column, value in matrix.mean().items()}
    assert means == EVIDENCE16_PUBLISHED
    other = R.published_matrix(names, REFERENCE, archives={"MLP": "UCR2018-128"})
    assert other.filter(like="MLP").isna().any().any()  # an archive without every dataset shows its gaps


def _two_encoders(tmp_path: Path) -> pd.DataFrame:
    acc = {"A": (0.9, 0.8), "B": (0.7, 0.75), "C": (0.6, 0.4), "D": (0.95, 0.9)}
    records = [make_record(d, enc, "standalone", seed, a + 0.01 * seed)
               for d, pair in acc.items() for enc, a in zip(("cnn", "mlp"), pair, strict=True) for seed in (0, 1)]
    records.append(make_record("E", "cnn", "standalone", 0, 0.5))  # cnn only: no pair
    return _frame(records, tmp_path)


def test_cells_paired_table_pairs_across_encoders_on_dataset_and_seed(tmp_path: Path) -> None:
    df = _two_encoders(tmp_path)
    row = R.cells_paired_table(df, "val_selected", [("mlp/standalone", "cnn/standalone")]).iloc[0]
    assert row["n datasets"] == 4 and row["n pairs"] == 8
    assert row["delta"] == pytest.approx(np.mean([-0.1, 0.05, -0.2, -0.05]))
    assert row["median delta"] == pytest.approx(-0.075) and "6" in row["note"]
    with pytest.raises(ValueError, match="no usable runs of cell 'nope/standalone'"):
        R.cells_paired_table(df, "val_selected", [("nope/standalone", "cnn/standalone")])
    two_settings = _frame([make_record("A", "cnn", "standalone", 0, 0.5, lr=1e-3),
                           make_record("A", "cnn", "standalone", 0, 0.6, lr=1e-4),
                           make_record("A", "mlp", "standalone", 0, 0.6)], tmp_path)
    two_settings.loc[two_settings["encoder"] == "cnn", "variant"] = "cnn"  # both lrs relabelled into one cell
    with pytest.raises(ValueError, match="several settings"):
        R.cells_paired_table(two_settings, "val_selected", [("cnn/standalone", "mlp/standalone")])


def test_rank_matrix_keeps_the_best_covered_cells_and_published_columns(tmp_path: Path) -> None:
    records = [make_record(d, "cnn", "standalone", 0, 0.8) for d in ("GunPoint", "Coffee", "ECG200")]
    records += [make_record("GunPoint", "mlp", "standalone", 0, 0.9)]  # one dataset only: left out, said so
    matrix = R.rank_matrix(_frame(records, tmp_path), "val_selected", REFERENCE)
    assert list(matrix.index) == ["Coffee", "ECG200", "GunPoint"]
    assert "cnn/standalone" in matrix and "mlp/standalone" not in matrix
    assert "mlp/standalone (1 datasets)" in matrix.attrs["note"] and len(matrix.columns) == 6
    means = R.column_means(matrix)
    assert means.loc["cnn/standalone", "mean"] == pytest.approx(0.8) and means["n datasets"].eq(3).all()


def test_cli_pair_and_ranks_print_one_table(tmp_path: Path, capsys) -> None:
    from tsllm.results import cli

    df_dir = write_runs(tmp_path / "runs", [make_record(d, enc, "standalone", 0, a) for d, enc, a in
                                            [("GunPoint", "cnn", 0.8), ("GunPoint", "mlp", 0.9),
                                             ("Coffee", "cnn", 0.7), ("Coffee", "mlp", 0.6)]])
    assert cli.main([str(df_dir), "--pair", "mlp/standalone", "cnn/standalone"]) == 0
    out = capsys.readouterr().out
    assert "| mlp/standalone | cnn/standalone | 0.750 | 0.750 | +0.000 |" in out and "2 (2)" in out
    assert cli.main([str(df_dir), "--ranks"]) == 0
    out = capsys.readouterr().out
    assert "| method | mean accuracy | average rank |" in out and "ROCKET (angus924/rocket, UCR2018-128)" in out
    assert cli.main([str(df_dir), "--pair", "x/standalone", "cnn/standalone"]) == 2
    assert "no usable runs of cell 'x/standalone'" in capsys.readouterr().err


def test_markdown_report_header_counts(hand: pd.DataFrame) -> None:
    report = R.markdown_report(hand, "val_selected")
    assert "protocol val_selected (test_acc)" in report
    assert "7 finished runs over 2 datasets" in report and "1 failed, 1 running" in report
    for section in ("headline", "Per dataset", "grid"):
        assert section in report
    assert "| cnn | hybrid | standalone | 0.750 | 0.850 | +0.100 |" in report


def test_critical_difference_hand_example() -> None:
    wide = pd.DataFrame({"A": [0.9, 0.8, 0.7, 0.9], "B": [0.8, 0.9, 0.6, 0.8], "C": [0.7, 0.7, 0.8, 0.7]},
                        index=["d1", "d2", "d3", "d4"])
    ranks, sig = R.critical_difference(wide)
    assert ranks.to_dict() == {"A": 1.5, "B": 2.0, "C": 2.5}
    assert ranks.attrs["friedman_p"] == pytest.approx(stats.friedmanchisquare(*wide.to_numpy().T).pvalue)
    assert list(sig.columns) == ["A", "B", "C"] and np.allclose(sig.to_numpy(), sig.to_numpy().T)
    # Nemenyi: |R_A - R_C| / sqrt(k(k+1)/(6n)) = 1 / sqrt(0.5); p from the studentized range (Demsar 2006).
    expected = stats.studentized_range.sf(1 / math.sqrt(0.5) * math.sqrt(2), 3, np.inf)
    assert sig.loc["A", "C"] == pytest.approx(expected, rel=1e-3)
    tied = R.critical_difference(pd.DataFrame({"A": [0.9] * 3, "B": [0.9] * 3, "C": [0.1] * 3}))[0]
    assert tied.to_dict() == {"A": 1.5, "B": 1.5, "C": 3.0}
    fig = R.plot_critical_difference(ranks, sig, title="hand")
    assert fig.axes


def test_dataset_matrix_common_seeds_pairs_the_ranks(hand: pd.DataFrame) -> None:
    full = R.dataset_matrix(hand, "val_selected")
    assert full.loc["GunPoint", "cnn/standalone"] == pytest.approx(0.7)  # seeds 0-2
    paired = R.dataset_matrix(hand, "val_selected", common_seeds=True)
    assert paired.loc["GunPoint", "cnn/standalone"] == pytest.approx(0.6)  # seed 0 only: hybrid ran only it
    assert paired.loc["Coffee", "cnn/hybrid"] == pytest.approx(0.95)


def test_critical_difference_too_small_is_a_note() -> None:
    ranks, sig = R.critical_difference(pd.DataFrame({"A": [0.9, 0.8], "B": [0.8, 0.9]}))
    assert sig is None and "needs" in ranks.attrs["note"]
    fig = R.plot_critical_difference(ranks, sig)
    assert "needs" in fig.axes[0].texts[0].get_text()
    ranks, sig = R.critical_difference(pd.DataFrame({"A": [np.nan], "B": [0.8], "C": [0.1]}))
    assert sig is None and ranks.empty


def test_plot_paired_prints_n(hand: pd.DataFrame) -> None:
    fig = R.plot_paired(R.headline_table(hand, "val_selected"))
    assert any("n = 2 pairs / 2 datasets" in t.get_text() for t in fig.axes[0].texts)


def test_plot_paired_wraps_long_labels_so_that_no_two_overlap(hand: pd.DataFrame) -> None:
    row = R.headline_table(hand, "val_selected")
    table = pd.concat([row] * 30, ignore_index=True)  # as many groups as a table of every record has
    table["variant"] = [f"inception[encoder.num_kernels={i}, encoder.num_tokens=16, train.lr=0.001]"
                        for i in range(30)]
    table["n pairs"], table["n datasets"] = 48, 16  # the widest note above the bars, at the same height in each
    fig = R.plot_paired(table)
    renderer = fig.canvas.get_renderer()
    for texts in (fig.axes[0].get_xticklabels(), fig.axes[0].texts):
        boxes = sorted((text.get_window_extent(renderer) for text in texts), key=lambda box: box.x0)
        assert len(boxes) == 30
        assert all(left.x1 < right.x0 for left, right in itertools.pairwise(boxes))


def test_cli_writes_tidy_and_report(hand_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    proc = subprocess.run([sys.executable, "-m", "tsllm.results", str(hand_dir), "--out", str(out), "--reference"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "Broken" in proc.stderr  # the malformed record is named, not fatal
    tidy = R.load_tidy(out / "tidy.csv")
    assert len(tidy) == 7 and {"cell", "arm", "variant", "mode.name"} <= set(tidy.columns)
    report = (out / "report.md").read_text()
    assert report.strip() == proc.stdout.strip()
    assert "Published reference accuracies" in report and "ROCKET (angus924/rocket, UCR2018-128)" in report
    assert "## Means beside the published methods" in report and "## Average ranks beside the published methods" in report
    assert (out / "tidy.parquet").exists()


@pytest.mark.parametrize(("doc", "title", "flag"), [("README.md", "## What we found", "--headline"),
                                                    ("results/REPORT.md", "## What we found here", "--headline"),
                                                    ("results/REPORT.md", "## Controls for our Inception", "--controls"),
                                                    ("results/REPORT.md", "## Alignment for our Inception", "--controls"),
                                                    ("results/REPORT.md", "## Alignment for our Inception",
                                                     "--diagnostics")])
def test_report_sections_show_generated_tables(doc: str, title: str, flag: str) -> None:
    lines = (REPO / doc).read_text().split("\n")
    start = lines.index(next(line for line in lines if line.startswith(title)))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")), len(lines))
    assert any(start < g.line <= end and flag in g.argv for g in generated.generated_tables(lines)), (title, flag)


def readme_results_commands() -> list[list[str]]:
    """Every ``python -m tsllm.results`` command in README.md's code blocks, as its arguments."""
    commands, in_block = [], False
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("```"):
            in_block = line.startswith("```bash")
        elif in_block and line.startswith(generated.PREFIX):
            commands.append(shlex.split(line[len(generated.PREFIX):].split("  #")[0]))
    return commands


@pytest.mark.parametrize("argv", readme_results_commands(), ids=" ".join)
def test_each_results_example_of_the_readme_finds_runs_and_pairs(argv: list[str], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader who pastes an example gets runs and paired tables, not an empty report."""
    if "--out" in argv:
        argv[argv.index("--out") + 1] = str(tmp_path)
    elif not any(flag in argv for flag in generated.ONE_TABLE):
        argv = [*argv, "--out", str(tmp_path)]
    monkeypatch.chdir(REPO)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(argv) == 0
    assert "|" in printed.getvalue()
    assert "No usable runs" not in printed.getvalue() and "No pairs" not in printed.getvalue()


@pytest.mark.parametrize("doc", generated.DEFAULT_FILES)
def test_generated_tables_of_readme_and_report_are_current(doc: str) -> None:
    """Every table below a one-table ``tsllm.results`` command is what it prints from the committed records."""
    assert generated.refresh(REPO / doc, check=True) == []


def test_report_refresh_rewrites_stale_tables_and_check_names_them(hand_dir: Path, tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    command = f"python -m tsllm.results {hand_dir} --headline  # the table"
    usage = f"python -m tsllm.results {hand_dir} --out elsewhere"  # writes a report: not a generated table
    doc.write_text(f"# t\n\n```bash\n{usage}\n{command}\n```\n\n_protocol old_\n\n| old |\n|---|\n\ntail\n")
    before = doc.read_text()
    assert generated.main([str(doc), "--check"]) == 1 and doc.read_text() == before  # check changes nothing
    assert generated.refresh(doc, check=True) == [f"{doc}:5: the table below `{command.split('  #')[0]}` is not what "
                                               "it prints now"]
    assert generated.main([str(doc)]) == 0
    text = doc.read_text()
    printed = subprocess.run([sys.executable, "-m", "tsllm.results", str(hand_dir), "--headline"],
                             capture_output=True, text=True, timeout=120, cwd=REPO).stdout
    assert [line for line in text.splitlines() if line.startswith(("|", "_protocol"))] == \
        [line for line in printed.splitlines() if line.startswith(("|", "_protocol"))]
    assert text.startswith("# t\n\n```bash\n") and text.endswith("\ntail\n") and not (tmp_path / "elsewhere").exists()
    assert generated.refresh(doc, check=True) == [] and generated.main([str(doc), "--check"]) == 0
    # A one-table command with no table under it, or one that fails, is an error naming the line.
    doc.write_text(f"{command}\n\n### next\n\n| a |\n")
    with pytest.raises(ValueError, match=rf"{doc}:1: .* no `\|` table follows it"):
        generated.refresh(doc)
    doc.write_text(f"python -m tsllm.results {hand_dir} --controls --arm nope\n\n| a |\n")
    with pytest.raises(RuntimeError, match=rf"{doc}:1: .*failed \(exit 2\): error: --arm nope"):
        generated.refresh(doc)
    assert generated.main([str(doc)]) == 2
    doc.write_text(f"python -m tsllm.results {hand_dir} --where seed=99 --headline\n\n| a |\n")
    with pytest.raises(RuntimeError, match=rf"{doc}:1: .*failed \(exit 1\): ERROR tsllm.results: no usable finished"):
        generated.refresh(doc)


# ------------------------------------------------------------------------------------------- notebooks

def notebook_records() -> list[dict]:
    """Enough runs for every notebook cell to draw: 6 datasets, 2 encoders x 2 modes, 2 seeds, a grid."""
    rng = np.random.default_rng(1)
    records = []
    for d in range(6):
        for encoder, kernels in (("cnn", None), ("inception", 6)):
            for mode in ("standalone", "hybrid"):
                for seed in (0, 1):
                    acc = float(np.clip(0.7 + 0.04 * d + (0.03 if mode == "hybrid" else 0) + rng.normal(0, 0.02), 0, 1))
                    records.append(make_record(f"D{d}", encoder, mode, seed, acc, num_kernels=kernels))
        records.append(make_record(f"D{d}", "inception", "standalone", 0, 0.6, num_kernels=3, lr=1e-4))
    records.append(make_record("D0", "cnn", "hybrid", 2, None, status="failed"))
    return records


@pytest.fixture(scope="session")
def python3_kernel() -> str:
    """Make sure a ``python3`` kernelspec exists; jupyter_client then launches it with sys.executable."""
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" not in KernelSpecManager().find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix"], check=True,
                       capture_output=True, timeout=120)
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] in {"python", "python3", sys.executable}, f"python3 kernel runs {spec.argv[0]}"
    return "python3"


@pytest.fixture
def notebook_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    df = R.load_records(write_runs(tmp_path / "runs", notebook_records()))
    R.write_tidy(df, tmp_path)
    monkeypatch.setenv("TSLLM_TIDY", str(tmp_path / "tidy.csv"))
    monkeypatch.setenv("TSLLM_SAVE_FIGS", "1")
    monkeypatch.setenv("TSLLM_FIG_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


def test_notebooks_committed_without_outputs() -> None:
    assert [p.name for p in NOTEBOOKS] == ["01_standalone_vs_hybrid.ipynb", "02_grid_heatmaps.ipynb",
                                           "03_per_dataset.ipynb"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


def execute(path: Path, workdir: Path, kernel: str) -> nbformat.NotebookNode:
    """Run a notebook headless; raises (nbclient.CellExecutionError) when any cell fails."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    # Proves the kernel is this interpreter's environment (the venv with tsllm), not some other python.
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    NotebookClient(nb, kernel_name=kernel, timeout=120, resources={"metadata": {"path": str(workdir)}}).execute()
    assert nb.cells[-1].outputs[0]["text"].strip() == sys.prefix
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o["output_type"] == "error"]
    return nb


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, notebook_env: Path, python3_kernel: str) -> None:
    execute(path, notebook_env, python3_kernel)
    figures = sorted((notebook_env / "figures").glob(f"{path.stem[:2]}_*.png"))
    assert figures, f"{path.name} saved no figure"
    assert all(f.stat().st_size > 1000 for f in figures)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_without_usable_runs(path: Path, notebook_env: Path, python3_kernel: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The synthetic runs carry no optimistic numbers: every cell must degrade to a note, not fail.
    monkeypatch.setenv("TSLLM_PROTOCOL", "study_best_test")
    nb = execute(path, notebook_env, python3_kernel)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert R.OPTIMISTIC_LABEL in text


def test_notebooks_execute_on_a_real_tiny_sweep(tmp_path: Path, python3_kernel: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "tsllm.train", "-m", f"hydra.sweep.dir={sweep}", "logger=none", "train.epochs=1",
           "llm=tiny_random", "encoder=mlp,cnn", "encoder.num_tokens=2", "mode=standalone,hybrid",
           "data.name=ItalyPowerDemand,GunPoint", "seed=0"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    df = R.load_records([sweep])
    assert len(df) == 8 and set(df["mode"]) == {"standalone", "hybrid"}
    R.write_tidy(df, tmp_path)
    monkeypatch.setenv("TSLLM_TIDY", str(tmp_path / "tidy.csv"))
    monkeypatch.setenv("TSLLM_SAVE_FIGS", "1")
    monkeypatch.setenv("TSLLM_FIG_DIR", str(tmp_path / "figures"))
    for path in NOTEBOOKS:
        execute(path, tmp_path, python3_kernel)
    assert len(list((tmp_path / "figures").glob("*.png"))) >= 3


def test_rendering_writes_into_the_users_folder_with_the_executed_notebook_and_never_into_results(
        tmp_path: Path, python3_kernel: str) -> None:
    """A user's own table: figures and the executed notebook in ./tsllm-results/figures; results/ untouched."""
    work = tmp_path / "work"
    R.write_tidy(R.load_records(write_runs(tmp_path / "runs", notebook_records())), work / "tsllm-results")
    evidence = {p: p.stat().st_mtime_ns for p in (REPO / "results").rglob("*") if p.suffix in {".png", ".ipynb"}}
    script = [sys.executable, str(REPO / "scripts" / "render_notebooks.py")]
    out = subprocess.run([*script, "01"], cwd=work, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = work / "tsllm-results" / "figures"  # beside the tidy table `python -m tsllm.results` wrote
    assert {p.suffix for p in figures.iterdir()} == {".png", ".ipynb"}
    assert all(p.name.startswith("01_") for p in figures.iterdir())
    executed = nbformat.read(figures / NOTEBOOKS[0].name, as_version=4)
    assert all(c.outputs for c in executed.cells if c.cell_type == "code" and c.source.strip())  # run, kept
    assert {p: p.stat().st_mtime_ns for p in (REPO / "results").rglob("*") if p.suffix in {".png", ".ipynb"}} \
        == evidence
    # The committed evidence is written only when asked by name: refused before any notebook runs.
    refused = subprocess.run([*script, "--figures", str(REPO / "results" / "figures"), "01"], cwd=work,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "pass --evidence" in refused.stderr


def test_cost_keys_are_the_ones_a_run_records(tmp_path: Path) -> None:
    from tsllm.results.loading import COST_KEYS
    from tsllm.train import run

    from conftest import make_cfg

    rec = run(make_cfg("encoder=mlp", "encoder.hidden=16", "llm=tiny_random"), run_dir=tmp_path / "run")
    assert set(COST_KEYS) <= set(rec["cost"])


def test_controls_reference_is_the_plain_pretrained_llm_arm() -> None:
    from tsllm.results.stats import default_reference

    arms = ["mean", "attention", "llm[reader.prompt=none, reader.shuffle_latents=null]",
            "llm[reader.prompt=text, reader.shuffle_latents=eval]", "llm[reader.prompt=text, reader.shuffle_latents=null]"]
    assert default_reference(arms) == "llm[reader.prompt=text, reader.shuffle_latents=null]"


def test_a_hybrid_run_diagnoses_itself_and_its_scalars_join_the_tidy_table(tmp_path: Path) -> None:
    from tsllm.train import run

    from conftest import make_cfg

    rec = run(make_cfg("mode=hybrid", "llm=tiny_random", "encoder=mlp", "encoder.hidden=16"), run_dir=tmp_path / "h")
    assert (tmp_path / "h" / "diagnostics.json").is_file() and rec["diagnostics"]["diag_norm_ratio_median"] > 0
    df = R.load_records([tmp_path])
    assert df.loc[0, "diag_norm_ratio_median"] == rec["diagnostics"]["diag_norm_ratio_median"]
    # A run diagnosed afterwards (python -m tsllm.diagnose) has them in diagnostics.json only.
    path = tmp_path / "h" / "record.json"
    path.write_text(json.dumps({k: v for k, v in rec.items() if k != "diagnostics"}))
    again = R.load_records([tmp_path])
    assert again.loc[0, "diag_norm_ratio_median"] == pytest.approx(rec["diagnostics"]["diag_norm_ratio_median"])
    # A record with the run's basic scalars, then `tsllm.diagnose --level full`: the full ones show.
    path.write_text(json.dumps(rec))
    diag_file = tmp_path / "h" / "diagnostics.json"
    diag = json.loads(diag_file.read_text())
    diag["probes"] = {"read": [0.5, 0.75, 1.0]}
    diag_file.write_text(json.dumps(diag))
    full = R.load_records([tmp_path])
    assert full.loc[0, "diag_probe_read_last"] == 1.0 and "diag_probe_read_last" not in rec["diagnostics"]
    assert full.loc[0, "diag_norm_ratio_median"] == pytest.approx(rec["diagnostics"]["diag_norm_ratio_median"])


def test_protocol_effect_pairs_study_runs_with_honest_runs_on_dataset_and_seed(tmp_path: Path) -> None:
    study = [make_record(d, "study_inception", "hybrid", 0, 0.7, best_test=b, leaks_test="normalise=study_global_minmax")
             for d, b in (("A", 0.9), ("B", 0.8), ("C", 0.95))]
    for r, m in zip(study, (0.75, 0.7, 0.9), strict=True):
        r["study_min_train_loss_test_acc"] = m
    honest = [make_record(d, "study_inception", "hybrid", 0, acc) for d, acc in (("A", 0.8), ("B", 0.6))]
    other_seed = [make_record("C", "study_inception", "hybrid", 1, 0.5)]  # no study run of seed 1: unpaired
    # An honest arm the study did not run (a random-init LLM) is another config, not a second counterpart.
    random_llm = [make_record(d, "study_inception", "hybrid", 0, 0.1, weights="random") for d in "AB"]
    # A text-arm run gives every other run missing reader settings (NaN, which never equals NaN).
    text = [make_record("A", "none", "text", 0, 0.5, reader={"name": "text_probe", "decimals": 2})]
    table = R.protocol_effect_table(_frame(study + honest + other_seed + random_llm + text, tmp_path))
    table = table.set_index("mode")
    row = table.loc["hybrid"]
    assert row["n pairs"] == 2 and row["datasets"] == "A, B"
    assert row["honest"] == pytest.approx(0.7) and row["study best TEST"] == pytest.approx(0.85)
    assert row["effect best TEST"] == pytest.approx(0.15) and row["effect min train loss"] == pytest.approx(0.025)


def test_diagnostics_summary_means_the_diagnosed_runs_and_takes_the_best_probe_layer(tmp_path: Path) -> None:
    diag = [{"diag_norm_ratio_median": 6.0, "diag_probe_read_L0": 0.5, "diag_probe_read_L1": 0.9,
             "diag_probe_read_L2": 0.8, "diag_probe_read_last": 0.8},
            {"diag_norm_ratio_median": 2.0, "diag_probe_read_L0": 0.5, "diag_probe_read_L1": 0.7,
             "diag_probe_read_L2": 1.0, "diag_probe_read_last": 1.0, "diag_cka_standalone_pooled_latents": 0.3}]
    records = [make_record("A", "cnn", "hybrid", s, 0.8 + 0.1 * s) for s in range(2)]
    for record, scalars in zip(records, diag, strict=True):
        record["diagnostics"] = scalars
    records.append(make_record("A", "cnn", "standalone", 0, 0.7))  # no diagnostics: not a row
    table = R.diagnostics_summary(_frame(records, tmp_path), "val_selected").set_index("arm")
    assert list(table.index) == ["hybrid"] and table.loc["hybrid", "n runs"] == 2
    assert table.loc["hybrid", "acc"] == pytest.approx(0.85)
    assert table.loc["hybrid", "norm ratio"] == pytest.approx(4.0)
    assert table.loc["hybrid", "probe best"] == pytest.approx((0.9 + 1.0) / 2)  # per run, then the mean
    assert table.loc["hybrid", "CKA vs no-LLM"] == pytest.approx(0.3)  # the mean over the runs that carry it
    assert "collapse" not in table  # a diagnostic no run carries is not a column
    assert "## Diagnostics" in R.markdown_report(_frame(records, tmp_path), "val_selected")
    assert R.diagnostics_summary(_frame(records[2:], tmp_path), "val_selected").empty
    # --diagnostics prints that table alone, --arm picks rows, and columns no shown row carries go.
    records.append({**make_record("A", "cnn", "hybrid", 0, 0.6, weights="random"),
                    "diagnostics": {"diag_collapse_cosine": 0.5}})
    df = _frame(records, tmp_path)
    both = diagnostics_markdown(df, "val_selected")
    assert both.startswith("_protocol val_selected") and "| collapse |" in both
    assert len([line for line in both.splitlines() if line.startswith("| cnn")]) == 2
    only = diagnostics_markdown(df, "val_selected", arms=["hybrid[llm.weights=pretrained]"])
    header = next(line for line in only.splitlines() if line.startswith("| variant"))
    assert "norm ratio" in header and "probe best" in header and "collapse" not in header
    with pytest.raises(ValueError, match=r"--arm nope: no such arm with diagnostics here; arms: hybrid\["):
        diagnostics_markdown(df, "val_selected", arms=["nope"])
    with pytest.raises(ValueError, match="no run here carries diagnostics"):
        diagnostics_markdown(_frame(records[2:3], tmp_path), "val_selected")


def test_study_protocol_keys_are_what_the_study_presets_change() -> None:
    from omegaconf import OmegaConf

    from tsllm.results.aggregate import STUDY_PROTOCOL_KEYS

    from conftest import make_cfg

    def flat(*overrides: str) -> dict:
        cfg = OmegaConf.to_container(make_cfg(*overrides), resolve=True)
        return dict(pd.json_normalize(cfg, sep=".").iloc[0])

    for study_mode, honest_mode in (("study_hybrid", "hybrid"), ("study_standalone", "standalone")):
        study = flat("experiment=study_reproduction", f"mode={study_mode}")
        honest = flat("encoder=study_inception", f"mode={honest_mode}")
        changed = {k for k in study.keys() | honest.keys() if str(study.get(k)) != str(honest.get(k))}
        # The sweep's folder name is not a setting a number depends on.
        assert changed - {"sweep_name"} <= STUDY_PROTOCOL_KEYS, changed


def test_cli_one_table_flags_are_exclusive_and_arm_needs_one(hand_dir: Path, capsys) -> None:
    from tsllm.results import cli

    for argv in (["--headline", "--controls"], ["--controls", "--diagnostics"], ["--arm", "hybrid"],
                 ["--ranks", "--headline"], ["--pair", "a/b", "c/d", "--ranks"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main([str(hand_dir), *argv])
        assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "each print one table: give one" in err and "--arm selects rows of one table" in err
