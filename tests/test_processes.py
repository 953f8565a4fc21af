"""Several processes train one run: torchrun with 2 processes on this CPU (gloo), as on several GPUs (NCCL).

The fit-level tests launch tests/launched_fit.py once (about 20 s) and read what each process reports; the
slow tests launch the documented command, ``torchrun ... -m tsllm.train``, end to end, and kill and resume it.
The guards that one process can show (a helper process writes nothing, evaluation never counts a series
twice) are checked in this process too.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from accelerate import Accelerator, PartialState

import tsllm.train as train
from launched_fit import FROZEN, NO_DROPOUT, build_case
from tsllm.config import ConfigError
from tsllm.loop import LAST, Evaluator, fit
from tsllm.records import read_record

from conftest import make_cfg

TESTS = Path(__file__).resolve().parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
N_TRAIN, N_TEST = 54, 1029  # ItalyPowerDemand: TRAIN less its validation carve-out; TEST, odd: never split evenly
# BatchNorm, and 54 = 32 + 22: each epoch's second step is short, and Accelerate evens it out with repeats.
CNN = ["encoder=cnn", "encoder.channels=8", "llm=tiny_random", "train.epochs=2", "train.eval_batch_size=16"]
# No BatchNorm, no dropout, and 54 = 3 x 18: two processes compute what one does, up to summation order.
MLP = ["encoder=mlp", "encoder.hidden=16", "llm=tiny_random", "train.epochs=2", "train.batch_size=18", NO_DROPOUT]
FROZEN_MLP = [*MLP, FROZEN]  # nothing to train (as in-context classification): evaluated once


def launch(*args: str, cwd: Path) -> subprocess.Popen:
    """torchrun with 2 processes; its output (both processes' console) is read from stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen([*TORCHRUN, *args], cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def finished(proc: subprocess.Popen, timeout: float = 300) -> str:
    """The console output of a torchrun that exited 0; otherwise a failure that shows all of it."""
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        # All of it, not its tail: a rank killed by a signal (SIGABRT from gloo, say) prints its reason
        # before torchrun's long report of the failure, and pytest would cut an asserted message.
        pytest.fail(f"torchrun exited {proc.returncode}; its whole output:\n{out}", pytrace=False)
    return out


def evaluated_alone(overrides: list[str], weights: dict[str, torch.Tensor]) -> tuple[float, float]:
    """TEST accuracy and loss of these weights, evaluated by this one process."""
    model, data, cfg, _ = build_case(overrides)
    model.load_trainable_state(weights)
    return Evaluator(Accelerator(cpu=True), cfg.eval_batch_size)(model, data.test)


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """What each of the 2 processes reported for each case: {case: [rank 0, rank 1]}."""
    out = tmp_path_factory.mktemp("launched")
    cases = {"cnn": CNN, "mlp": MLP, "frozen": FROZEN_MLP}
    finished(launch(str(TESTS / "launched_fit.py"), str(out), json.dumps(cases), cwd=out))
    return {case: [torch.load(out / case / f"rank{r}.pt", weights_only=False) for r in (0, 1)] for case in cases}


def test_each_step_shares_the_batch_between_the_processes(launched) -> None:
    first, second = launched["cnn"]
    assert first["processes"] == second["processes"] == 2
    steps = list(zip(first["steps"], second["steps"], strict=True))
    assert len(steps) == 2 * 2 and all(len(a) == len(b) == 16 for a, b in steps)  # batch 32, two steps an epoch
    for epoch in (steps[:2], steps[2:]):
        assert all(not set(a) & set(b) for a, b in epoch)  # no series on both processes in one step
        assert set().union(*(set(a) | set(b) for a, b in epoch)) == set(range(N_TRAIN))  # all of TRAIN
    assert first["steps"][0] != first["steps"][2]  # reshuffled each epoch


def test_processes_hold_identical_weights_after_every_epoch(launched) -> None:
    for case in ("cnn", "mlp"):
        first, second = launched[case]
        states = [*zip(first["epochs"], second["epochs"], strict=True), (first["final"], second["final"])]
        assert len(states) == 3
        for a, b in states:
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), case
        assert any(not torch.equal(first["epochs"][0][k], first["epochs"][1][k]) for k in first["final"]), case


def test_every_process_refreshes_batchnorm_over_the_whole_of_train_alike(launched) -> None:
    """Each epoch's refresh runs all of TRAIN, unsharded, in the same batches on both processes, and gives
    both the same statistics (read before DDP's own broadcast of buffers could make them agree)."""
    first, second = launched["cnn"]
    assert len(first["refreshes"]) == len(second["refreshes"]) == 2
    for a, b in zip(first["refreshes"], second["refreshes"], strict=True):
        assert a["batches"] == b["batches"] and sorted(sum(a["batches"], [])) == list(range(N_TRAIN))
        assert a["buffers"] and all(torch.equal(a["buffers"][k], b["buffers"][k]) for k in a["buffers"])


def test_gradients_are_averaged_over_the_whole_batch(launched, tmp_path: Path) -> None:
    """Two processes, each with half of every batch, end where one process with the whole batches ends."""
    model, data, cfg, seed = build_case(MLP)
    initial = model.trainable_state()
    alone = fit(model, data, cfg, seed=seed, run_dir=tmp_path)
    together = launched["mlp"][0]
    for key, value in model.trainable_state().items():
        torch.testing.assert_close(together["final"][key], value, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(initial[k], v) for k, v in model.trainable_state().items())
    for a, b in zip(alone.history, together["result"]["history"], strict=True):
        assert a["train_acc"] == b["train_acc"] and a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)


def test_every_process_keeps_the_same_history_and_counts_each_series_once(launched) -> None:
    first, second = launched["cnn"]
    keys = ("history", "test_acc", "test_loss", "val_acc", "best_epoch", "test_acc_last_epoch")
    assert {k: first["result"][k] for k in keys} == {k: second["result"][k] for k in keys}
    # Training figures are over the 54 series of TRAIN, not the 64 trained on (10 repeats even the last step).
    assert all((h["train_acc"] * N_TRAIN) == pytest.approx(round(h["train_acc"] * N_TRAIN))
               for h in first["result"]["history"])
    # TEST (1029 series, 16 a step): the selected weights, evaluated by one process, give the same figures.
    acc, loss = evaluated_alone(CNN, first["final"])
    assert acc == first["result"]["test_acc"] and loss == pytest.approx(first["result"]["test_loss"], rel=1e-5)


def test_a_model_with_nothing_to_train_is_evaluated_once_without_ddp(launched) -> None:
    """DDP refuses a model with nothing to train (Accelerate wraps every model on CPU processes)."""
    first, second = launched["frozen"]
    assert first["result"]["selection"] == second["result"]["selection"] == "nothing_trains"
    assert first["writes"] == second["writes"] == []
    acc, _ = evaluated_alone(FROZEN_MLP, first["final"])
    assert first["result"]["test_acc"] == second["result"]["test_acc"] == acc


def test_only_the_main_process_writes_checkpoints(launched) -> None:
    first, second = launched["cnn"]
    assert second["writes"] == []
    assert first["writes"].count("checkpoint_last.pt") == 2 and "checkpoint_best.pt" in first["writes"]


# What one process can show.

@pytest.fixture
def helper_process(monkeypatch: pytest.MonkeyPatch):
    """This process, taken for a helper (not the main process) of a multi-process launch."""
    monkeypatch.setattr(PartialState, "is_main_process", property(lambda self: False))
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)  # a helper quiets the root logger


def test_a_helper_process_writes_nothing_and_starts_no_tracker(helper_process, run_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def no_tracker(*_: Any) -> None:
        raise AssertionError("a helper process started the tracker")

    monkeypatch.setattr(train, "instantiate", no_tracker)
    folders = []
    real_build = train.build

    def build(*args: Any, run_dir: Path | None = None, **kwargs: Any) -> Any:
        folders.append(run_dir)
        return real_build(*args, run_dir=run_dir, **kwargs)

    monkeypatch.setattr(train, "build", build)
    rec = train.run(make_cfg("encoder=mlp", "encoder.hidden=16", "llm=tiny_random", "logger=wandb",
                             "train.epochs=2"), run_dir=run_dir)
    assert rec["status"] == "finished" and rec["epochs_run"] == 2
    assert list(run_dir.iterdir()) == []  # no lock, record, checkpoint or log
    assert folders == [None]  # its readers keep what they compute once (text features) in memory
    assert logging.getLogger().level == logging.WARNING


def test_batches_that_the_processes_cannot_share_evenly_are_one_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                                              tmp_path: Path) -> None:
    monkeypatch.setattr(Accelerator, "num_processes", property(lambda self: 3))
    model, data, cfg, seed = build_case(MLP)
    with pytest.raises(ConfigError, match=r"^train.batch_size=18 and train.eval_batch_size=128 are shared among "
                                          r"the 3 processes: make each a multiple of 3$"):
        fit(model, data, cfg, seed=seed, run_dir=tmp_path)


def test_evaluation_refuses_to_count_a_series_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    model, data, _, _ = build_case(MLP)
    evaluate = Evaluator(Accelerator(cpu=True), 16)
    evaluate(model, data.test)

    def gather_with_padding(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return tuple(torch.cat([t, t[:1]]) for t in batch)  # a plain gather keeps the padding

    monkeypatch.setattr(evaluate.accelerator, "gather_for_metrics", gather_with_padding)
    with pytest.raises(RuntimeError, match=rf"^evaluation gathered {N_TEST + 65} series .* split of {N_TEST}$"):
        evaluate(model, data.test)  # 65 steps of 16


JOINED_RUN = """
import sys, torch.distributed as dist
from tsllm.train import cli
dist.init_process_group("gloo", init_method=f"file://{sys.argv[1]}/store", rank=0, world_size=1)
sys.argv = ["tsllm.train", *sys.argv[2:]]
cli()
print("joined after the command:", dist.is_initialized())
"""


def test_the_command_leaves_its_process_group_before_exiting(tmp_path: Path) -> None:
    """A process still in a gloo group at exit can abort in the interpreter's shutdown (2 of 10 launches of
    tests/launched_fit.py here did), and torchrun then reports a finished run as failed."""
    args = [str(tmp_path), "data.name=ItalyPowerDemand", "encoder=mlp", "train.epochs=1", "logger=none",
            f"hydra.run.dir={tmp_path / 'run'}"]
    out = subprocess.run([sys.executable, "-c", JOINED_RUN, *args], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert read_record(tmp_path / "run")["status"] == "finished"
    assert "joined after the command: False" in out.stdout


# The documented command, end to end (about 20 s a launch).

COMMAND = ["-m", "tsllm.train", "data.name=ItalyPowerDemand", "encoder=cnn", "encoder.channels=8", "llm=tiny_random",
           "train.epochs=4", "train.eval_batch_size=16"]


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A standalone run by the documented command, W&B offline: its folder and its console output."""
    root = tmp_path_factory.mktemp("standalone")
    out = finished(launch(*COMMAND, "logger=wandb", f"hydra.run.dir={root / 'run'}", cwd=root))
    return root / "run", out


def assert_test_counted_once(run_dir: Path, overrides: list[str]) -> None:
    """The record's TEST accuracy is that of its selected weights over every TEST series, evaluated alone."""
    rec = read_record(run_dir)
    weights = torch.load(run_dir / "checkpoint_best.pt", weights_only=True)
    assert rec["data"]["n_test"] == N_TEST and evaluated_alone(overrides, weights)[0] == rec["test_acc"]


@pytest.mark.slow
def test_the_documented_command_trains_a_standalone_run_on_two_processes(standalone) -> None:
    run_dir, out = standalone
    rec = read_record(run_dir)
    assert rec["status"] == "finished" and rec["processes"] == 2 and rec["epochs_run"] == 4
    assert_test_counted_once(run_dir, COMMAND[2:])
    # The main process alone logs, tracks and writes: one line an epoch, one W&B run, nothing left behind.
    lines = (run_dir / "train.log").read_text().splitlines()
    assert [line.split(" - ")[1][:9] for line in lines if " - epoch " in line] == [f"epoch {e}/4" for e in (1, 2, 3, 4)]
    assert out.count("epoch 1/4: train loss") == 1
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "checkpoint_best.pt", "checkpoint_last.pt",
                                                        "record.json", "train.log", "wandb"]


@pytest.mark.slow
def test_the_documented_command_trains_a_hybrid_run_on_two_processes(tmp_path: Path) -> None:
    overrides = [*COMMAND[2:], "mode=hybrid", "train.epochs=2", "logger=none"]
    finished(launch(*COMMAND[:2], *overrides, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path))
    rec = read_record(tmp_path / "run")
    assert rec["status"] == "finished" and rec["processes"] == 2 and rec["mode"] == "hybrid"
    assert rec["diagnostics"]  # diagnostics=auto runs them for an LLM reader, on the main process
    assert_test_counted_once(tmp_path / "run", overrides)


@pytest.mark.slow
def test_the_documented_command_runs_the_in_context_text_arm_on_two_processes(tmp_path: Path) -> None:
    """Nothing trains (no DDP); the scores' cache in the run folder is the main process's alone."""
    overrides = ["data.name=ItalyPowerDemand", "mode=text", "reader=text_icl", "llm=tiny_random",
                 "reader.token_budget=200", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"]
    finished(launch(*COMMAND[:2], *overrides, cwd=tmp_path))
    rec = read_record(tmp_path / "run")
    assert rec["status"] == "finished" and rec["processes"] == 2 and rec["selection"] == "nothing_trains"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".hydra", "icl_scores.pt", "record.json",
                                                                    "train.log"]


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_and_ends_as_the_uninterrupted_one(standalone, tmp_path: Path) -> None:
    reference = read_record(standalone[0])
    run_dir = tmp_path / "run"
    overrides = [*COMMAND[2:], "logger=none", f"hydra.run.dir={run_dir}"]
    proc = launch(str(TESTS / "launched_train.py"), "2", *overrides, cwd=tmp_path)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "paused after epoch 2" in line:
            break
    assert "paused after epoch 2" in seen[-1], "".join(seen)[-3000:]
    launched = [proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))]
    for pid in launched:  # as a preempted job: every process of the launch killed at once
        os.kill(pid, signal.SIGKILL)
    proc.communicate()
    assert torch.load(run_dir / LAST, weights_only=True)["state"]["epoch"] == 2
    assert read_record(run_dir)["status"] == "running"  # killed outright: it could not write "failed"

    finished(launch(*COMMAND[:2], *overrides, cwd=tmp_path))  # the same command again continues it
    rec = read_record(run_dir)
    assert rec["status"] == "finished" and rec["resumed_from_epoch"] == 2
    for key in ("history", "epochs_run", "best_epoch", "val_acc", "test_acc", "test_acc_last_epoch"):
        assert rec[key] == reference[key], key
