"""Queue experiments: the published evidence sweeps as configs (tsllm.experiment), read by plan and results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tsllm.experiment import ExperimentError, load_experiment, main, queue_experiments
from tsllm.plan import distinct_runs
from tsllm.records import config_hash

ROOT = Path(__file__).parents[1]


def planned_hashes(name: str, queues: list[str]) -> set[str]:
    seen: set[str] = set()
    for sweep in load_experiment(name).sweeps(queues):
        runs, _ = distinct_runs(sweep, seen)
        seen |= {config_hash(r.config) for r in runs}
    return seen


def committed_hashes(sweep_dir: str, **where: str) -> set[str]:
    out = set()
    for path in (ROOT / sweep_dir).glob("*/record.json"):
        record = json.loads(path.read_text())
        if all(f"{k}={v}" in path.parent.name for k, v in where.items()):
            out.add(config_hash(record["config"]))
    return out


def test_the_published_sweeps_are_queue_experiments() -> None:
    assert {"evidence16", "evidence_controls", "evidence_study", "evidence_shipped"} <= set(queue_experiments())
    assert set(load_experiment("evidence16").queues) == {"tier1_A", "tier1_B", "tier2", "align"}


@pytest.mark.parametrize(("name", "queues", "folder", "where"), [
    ("evidence_controls", ["B"], "results/runs/align", {"align": "prototypes"}),
    ("evidence_study", ["C"], "results/runs/text", {"reader": "text_icl"}),
    ("evidence16", ["tier2"], "results/runs/evidence16", {"control": "truncated"}),
])
def test_an_experiments_sweeps_make_exactly_its_committed_runs(name: str, queues: list[str], folder: str,
                                                               where: dict) -> None:
    planned, committed = planned_hashes(name, queues), committed_hashes(folder, **where)
    assert committed and committed <= planned, len(committed - planned)


@pytest.mark.slow
def test_the_16_dataset_tiers_make_exactly_the_496_committed_runs() -> None:
    planned = planned_hashes("evidence16", ["tier1_A", "tier1_B", "tier2"])
    assert planned == committed_hashes("results/runs/evidence16") and len(planned) == 496


def test_unknown_names_list_what_there_is(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ExperimentError, match="no queue 'tier3'; its queues: tier1_A, tier1_B, tier2, align"):
        load_experiment("evidence16").select(["tier3"])
    with pytest.raises(ExperimentError, match="a one-sweep experiment, not a queue experiment"):
        load_experiment("controls")
    assert main(["run", "nope"]) == 2
    assert "no conf/experiment/nope.yaml; queue experiments: evidence16" in capsys.readouterr().err


def test_dry_run_prints_each_queues_sweeps_with_its_share_of_the_cores(capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "evidence16", "--queue", "tier1_A", "--queue", "tier1_B", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 + 5 and lines[0].startswith("[tier1_A] OMP_NUM_THREADS=")
    assert "-m tsllm.train -m datasets=evidence16 train.selection=min_train_loss" in lines[0]


def test_results_of_an_experiment_are_those_of_its_folders_and_sweeps(capsys: pytest.CaptureFixture) -> None:
    from tsllm.results.cli import main as results_main

    assert results_main(["--experiment", "evidence_study", "--headline"]) == 0
    by_name = capsys.readouterr().out
    assert results_main(["results/runs/study_honest", "results/runs/study_reproduction", "results/runs/text",
                         "--headline"]) == 0
    assert capsys.readouterr().out == by_name and "| study_inception" in by_name


def test_a_queue_experiment_given_to_train_says_how_to_run_it() -> None:
    from tsllm.preflight import check_command_line
    from tsllm.train import CONF_DIR

    assert check_command_line(CONF_DIR, ["experiment=evidence16"]).startswith(
        "experiment=evidence16 lists queues of sweeps: run it with python -m tsllm.experiment run evidence16")
