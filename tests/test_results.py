"""Tests for tsllm.results: record loading, two-stage averaging, tables, statistics, CLI and notebooks."""

from __future__ import annotations

import json
import logging
import math
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

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "results" / "notebooks").glob("*.ipynb"))
REFERENCE = REPO / "results" / "reference" / "ucr_published_accuracy.csv"


def make_record(dataset: str = "GunPoint", encoder: str = "cnn", mode: str = "standalone", seed: int = 0,
                test_acc: float | None = 0.9, *, lr: float = 1e-3, num_tokens: int = 16,
                num_kernels: int | None = None, status: str = "finished", last: float | None = None,
                best_test: float | None = None, llm: str = "smollm2_135m", sweep: str | None = None) -> dict:
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
    record = {
        "status": status,
        "config_hash": f"{dataset}-{encoder}-{mode}-{seed}-{lr}-{num_kernels}-{num_tokens}",
        "run_dir": f"/runs/{dataset}/{encoder}/{mode}/{seed}",
        "seed": seed,
        "config": {
            "data": {"name": dataset, "normalise": "znorm", "val_fraction": 0.2},
            "encoder": encoder_cfg,
            "mode": {"name": mode, "latent_dim": None},
            "llm": {"name": llm},
            "train": {"epochs": 2, "batch_size": 32, "lr": lr, "protocol": protocol},
            "seed": seed,
            "sweep_name": sweep or mode,
        },
        "dataset": dataset, "encoder": encoder, "mode": mode, "llm": llm if hybrid else None, "lr": lr,
        "num_tokens": num_tokens, "num_kernels": num_kernels, "protocol": protocol,
        "data": {"name": dataset, "n_train": 40, "n_val": 10, "n_test": 150, "num_classes": 2, "sha256": "ab"},
        "env": {"device": "cpu", "git": {"sha": "c0ffee", "dirty": False}, "versions": {"tsllm": "0.1.0"}},
        "params": {"trainable": 1000, "frozen": 135_000_000 if hybrid else 0},
    }
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


def test_load_records_counts_statuses_and_warns_on_malformed(hand_dir: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="tsllm.results"):
        df = R.load_records([hand_dir, hand_dir / "data.name=GunPoint,encoder=cnn,run=0"])  # overlap: no double count
    assert len(df) == len(HAND)
    assert df["status"].value_counts().to_dict() == {"finished": 7, "failed": 1, "running": 1}
    assert any("Broken" in r.getMessage() and "malformed" in r.getMessage() for r in caplog.records)
    failed = df[df["status"] == "failed"].iloc[0]
    assert failed["error"].startswith("RuntimeError") and pd.isna(failed["test_acc"])
    row = df[(df["mode"] == "hybrid") & (df["status"] == "finished")].iloc[0]
    assert row["sweep"] == "hybrid" and row["llm"] == "smollm2_135m" and row["epochs"] == 2
    assert row["trainable_params"] == 1000 and row["frozen_params"] == 135_000_000
    assert row["git_sha"] == "c0ffee" and row["device"] == "cpu" and row["path"].endswith("record.json")
    assert pd.isna(df[df["mode"] == "standalone"]["llm"]).all()
    assert set(R.TIDY_COLUMNS) == set(df.columns)


def test_load_records_empty_dir(tmp_path: Path) -> None:
    df = R.load_records(tmp_path)
    assert df.empty and list(df.columns) == list(R.TIDY_COLUMNS)


def test_accuracy_column_and_labels() -> None:
    assert R.accuracy_column("val_selected") == "test_acc"
    assert R.accuracy_column("last_epoch") == "test_acc_last_epoch"
    assert R.accuracy_column("study_best_test") == "study_best_test_acc"
    assert R.OPTIMISTIC_LABEL in R.protocol_label("study_best_test")
    assert R.OPTIMISTIC_LABEL not in R.protocol_label("val_selected")
    with pytest.raises(ValueError, match="unknown protocol"):
        R.accuracy_column("best")


def test_encoder_mode_table_two_stage_means(hand: pd.DataFrame) -> None:
    table = R.encoder_mode_table(hand, "val_selected")
    row = table.loc["cnn"]
    # Seeds within dataset first: GunPoint 0.7, Coffee 0.9 -> 0.8 (a pooled mean would give 0.75).
    assert row["standalone"] == pytest.approx(0.8)
    # GunPoint 0.75, Coffee (0.95 + 0.85) / 2 = 0.9 -> 0.825 (pooled: 0.85).
    assert row["hybrid"] == pytest.approx(0.825)
    assert row["n standalone"] == 2 and row["n hybrid"] == 2
    assert row["delta"] == pytest.approx(((0.75 - 0.7) + (0.9 - 0.9)) / 2)
    assert row["n_paired"] == 2 and math.isnan(row["p_wilcoxon"]) and "paired datasets" in row["note"]
    assert table.attrs["protocol"] == "val_selected"


def test_delta_uses_only_paired_datasets(tmp_path: Path) -> None:
    records = [make_record("A", "mlp", "standalone", 0, 0.5), make_record("B", "mlp", "standalone", 0, 0.9),
               make_record("A", "mlp", "hybrid", 0, 0.6)]
    table = R.encoder_mode_table(_frame(records, tmp_path), "val_selected")
    assert table.loc["mlp", "standalone"] == pytest.approx(0.7)  # own datasets: (0.5 + 0.9) / 2
    assert table.loc["mlp", "delta"] == pytest.approx(0.1)  # paired on A only
    assert table.loc["mlp", "n_paired"] == 1


def _frame(records: list[dict], tmp_path: Path) -> pd.DataFrame:
    """Tidy rows of ``records``, written and loaded in a folder of their own."""
    return R.load_records(write_runs(Path(tempfile.mkdtemp(dir=tmp_path)) / "runs", records))


def test_protocol_selects_column_and_optimistic_label(hand: pd.DataFrame, tmp_path: Path) -> None:
    last = R.encoder_mode_table(hand, "last_epoch")
    assert last.loc["cnn", "standalone"] == pytest.approx((0.5 + 1.0) / 2)
    records = [make_record("A", "mlp", "standalone", 0, 0.5, best_test=0.7),
               make_record("A", "mlp", "standalone", 1, 0.5, best_test=0.9),
               make_record("B", "mlp", "standalone", 0, 0.5)]  # val_selected run: no optimistic number
    df = _frame(records, tmp_path)
    optimistic = R.encoder_mode_table(df, "study_best_test")
    assert optimistic.loc["mlp", "standalone"] == pytest.approx(0.8)
    assert optimistic.loc["mlp", "n standalone"] == 1
    for table in (optimistic, R.grid_table(df, "study_best_test"), R.per_dataset_table(df, "study_best_test"),
                  R.reference_table(df, "study_best_test", REFERENCE)):
        assert R.OPTIMISTIC_LABEL in table.attrs["label"]
    report = R.markdown_report(df, "study_best_test")
    assert report.count(R.OPTIMISTIC_LABEL) >= 4  # header and every table
    assert R.OPTIMISTIC_LABEL not in R.markdown_report(df, "val_selected")


def test_arms_split_by_llm_and_lora_gets_its_own_delta(tmp_path: Path) -> None:
    records = [make_record("A", "mlp", "standalone", 0, 0.5),
               make_record("A", "mlp", "hybrid", 0, 0.6, llm="smollm2_135m"),
               make_record("A", "mlp", "hybrid", 0, 0.8, llm="llama31_8b"),
               make_record("A", "mlp", "lora", 0, 0.9, llm="llama31_8b")]
    table = R.encoder_mode_table(_frame(records, tmp_path), "val_selected")
    assert list(table.columns[:4:2]) == ["standalone", "hybrid[llama31_8b]"]
    assert table.loc["mlp", "hybrid[smollm2_135m]"] == pytest.approx(0.6)  # never pooled with llama
    assert table.loc["mlp", "delta [lora]"] == pytest.approx(0.4)
    assert table.loc["mlp", "delta [hybrid[llama31_8b]]"] == pytest.approx(0.3)


def test_report_without_usable_runs(hand: pd.DataFrame) -> None:
    report = R.markdown_report(hand, "study_best_test")
    assert "No usable runs" in report and R.OPTIMISTIC_LABEL in report and "7 finished without" in report


def test_wilcoxon_matches_scipy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    standalone = rng.uniform(0.6, 0.9, 7)
    hybrid = standalone + rng.normal(0.02, 0.03, 7)
    records = [make_record(f"D{i}", "resnet", "standalone", 0, s) for i, s in enumerate(standalone)]
    records += [make_record(f"D{i}", "resnet", "hybrid", 0, h) for i, h in enumerate(hybrid)]
    row = R.encoder_mode_table(_frame(records, tmp_path), "val_selected").loc["resnet"]
    assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(hybrid, standalone).pvalue)
    assert row["delta"] == pytest.approx(np.mean(hybrid - standalone)) and row["note"] == ""
    p_value, note = R.paired_wilcoxon([0.5] * 6, [0.5] * 6)
    assert math.isnan(p_value) and "zero" in note


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
    assert len(grid) == 4
    matrix = R.grid_matrix(full, "inception", "standalone", 16)
    assert list(matrix.columns) == ["3", "6"] and list(matrix.index) == [1e-4, 1e-3]
    assert matrix.loc[1e-4, "6"] == pytest.approx(0.4) and math.isnan(matrix.loc[1e-3, "3"])
    mlp = R.grid_matrix(full, "mlp", "standalone", 1)
    assert list(mlp.columns) == ["-"]


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
                         & (published["archive"] == R.DEFAULT_ARCHIVE)]["accuracy"]
    assert len(expected) == 1
    assert table.loc["GunPoint", "MLP (hfawaz/dl-4-tsc)"] == pytest.approx(expected.iloc[0])
    for method, repo in [("FCN", "hfawaz/dl-4-tsc"), ("ResNet", "hfawaz/dl-4-tsc"),
                         ("InceptionTime", "hfawaz/InceptionTime"), ("ROCKET", "angus924/rocket")]:
        assert table[f"{method} ({repo})"].notna().all()
    assert table.loc["Coffee", "cnn/hybrid"] == pytest.approx(0.9)
    assert set(table.index) == {"GunPoint", "Coffee"}


def test_markdown_report_header_counts(hand: pd.DataFrame) -> None:
    report = R.markdown_report(hand, "val_selected")
    assert "protocol val_selected (test_acc)" in report
    assert "7 finished runs over 2 datasets" in report and "1 failed, 1 running" in report
    for section in ("headline", "Per dataset", "grid"):
        assert section in report
    assert "| cnn | 0.800 |" in report


def test_critical_difference_hand_example() -> None:
    wide = pd.DataFrame({"A": [0.9, 0.8, 0.7, 0.9], "B": [0.8, 0.9, 0.6, 0.8], "C": [0.7, 0.7, 0.8, 0.7]},
                        index=["d1", "d2", "d3", "d4"])
    ranks, cd = R.critical_difference(wide)
    assert ranks.to_dict() == {"A": 1.5, "B": 2.0, "C": 2.5}
    assert cd == pytest.approx(2.343 * math.sqrt(3 * 4 / (6 * 4)), abs=1e-3)  # Demsar 2006, q_0.05(k=3)
    assert ranks.attrs["friedman_p"] == pytest.approx(stats.friedmanchisquare(*wide.to_numpy().T).pvalue)
    tied = R.critical_difference(pd.DataFrame({"A": [0.9] * 3, "B": [0.9] * 3, "C": [0.1] * 3}))[0]
    assert tied.to_dict() == {"A": 1.5, "B": 1.5, "C": 3.0}
    fig = R.plot_critical_difference(ranks, cd, title="hand")
    assert fig.axes


def test_critical_difference_too_small_is_a_note() -> None:
    ranks, cd = R.critical_difference(pd.DataFrame({"A": [0.9, 0.8], "B": [0.8, 0.9]}))
    assert math.isnan(cd) and "needs" in ranks.attrs["note"]
    fig = R.plot_critical_difference(ranks, cd)
    assert "needs" in fig.axes[0].texts[0].get_text()
    ranks, cd = R.critical_difference(pd.DataFrame({"A": [np.nan], "B": [0.8], "C": [0.1]}))
    assert math.isnan(cd) and ranks.empty


def test_cli_writes_tidy_and_report(hand_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    proc = subprocess.run([sys.executable, "-m", "tsllm.results", str(hand_dir), "--out", str(out), "--reference"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "Broken" in proc.stderr  # the malformed record is named, not fatal
    tidy = R.load_tidy(out / "tidy.csv")
    assert len(tidy) == len(HAND)
    report = (out / "report.md").read_text()
    assert report.strip() == proc.stdout.strip()
    assert "Published reference accuracies" in report and "ROCKET (angus924/rocket)" in report
    assert (out / "tidy.parquet").exists()


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
