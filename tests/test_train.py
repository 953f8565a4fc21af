"""End-to-end runs through the real Hydra config: records, learning, resume, skip, tracking, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tsllm.encoders import ENCODERS
from tsllm.records import RunDirConflict, read_record
from tsllm.train import run

from conftest import make_cfg

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_every_encoder_runs_and_records(encoder: str, run_dir: Path) -> None:
    # Each family's tiny knobs: the record is under test here, not the width (the study's are 2048 wide).
    tiny = [f"encoder.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in ENCODERS[encoder].test_params.items()]
    rec = run(make_cfg(f"encoder={encoder}", "train.epochs=2", *tiny), run_dir=run_dir)
    assert rec["status"] == "finished" and rec == read_record(run_dir)
    for key in ("config", "config_hash", "seed", "data", "params", "val_acc", "test_acc", "test_acc_last_epoch",
                "epochs_run", "wall_seconds", "env", "selection", "best_epoch"):
        assert key in rec, key
    assert rec["encoder"] == encoder and rec["mode"] == "standalone" and rec["epochs_run"] == 2
    assert rec["data"]["sha256"] and rec["env"]["versions"]["torch"] and "sha" in rec["env"]["git"]
    assert rec["params"]["trainable"] > 0 and rec["params"]["frozen"] == 0
    assert 0.0 <= rec["test_acc"] <= 1.0
    # Standalone latents have the embedded backbone's hidden size, read from its config.
    assert rec["config"]["encoder"]["name"] == encoder


def test_a_run_really_learns_gunpoint(run_dir: Path) -> None:
    rec = run(make_cfg("data.name=GunPoint", "train.epochs=12", "encoder=resnet", "encoder.channels=[16,32,32]"),
              run_dir=run_dir)
    assert rec["test_acc"] >= 0.85, rec["test_acc"]  # chance is 0.5; 0.98 when written


def test_selection_follows_validation_not_test(run_dir: Path) -> None:
    rec = run(make_cfg("train.epochs=6", "encoder=cnn", "encoder.channels=8"), run_dir=run_dir)
    keys = [(h["val_acc"], -h["val_loss"]) for h in rec["history"]]
    assert rec["best_epoch"] == 1 + max(range(len(keys)), key=lambda i: (keys[i], -i))
    assert rec["val_acc"] == pytest.approx(rec["history"][rec["best_epoch"] - 1]["val_acc"])
    assert all("test" not in k for h in rec["history"] for k in h)  # TEST is not looked at per epoch


def test_study_protocol_is_labelled_and_separate(run_dir: Path) -> None:
    rec = run(make_cfg("train.epochs=3", "train.protocol=study_best_test", "encoder=mlp"), run_dir=run_dir)
    optimistic = [h["test_acc_optimistic"] for h in rec["history"]]
    assert rec["study_best_test_acc"] == max(optimistic)
    assert rec["protocol"] == "study_best_test"


def test_no_validation_split_falls_back_to_last_epoch(run_dir: Path) -> None:
    rec = run(make_cfg("train.epochs=2", "data.val_fraction=0"), run_dir=run_dir)
    assert rec["selection"].startswith("last_epoch") and rec["val_acc"] is None
    assert rec["best_epoch"] == 2 and rec["test_acc"] == rec["test_acc_last_epoch"]


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path: Path) -> None:
    overrides = ["train.epochs=4", "encoder=resnet", "encoder.channels=[8,16,16]"]
    whole = run(make_cfg(*overrides), run_dir=tmp_path / "whole")

    crash = ["logger._target_=conftest.CrashAfter", "+logger.epoch=2"]
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(*overrides, *crash), run_dir=tmp_path / "cut")
    failed = read_record(tmp_path / "cut")
    assert failed["status"] == "failed" and "KeyboardInterrupt" in failed["error"]
    assert (tmp_path / "cut" / "checkpoint_last.pt").is_file()

    resumed = run(make_cfg(*overrides), run_dir=tmp_path / "cut")
    assert resumed["resumed_from_epoch"] == 2 and resumed["epochs_run"] == 4
    assert whole["earlier_sessions_seconds"] == 0 < resumed["earlier_sessions_seconds"]  # the cut session's time
    assert resumed["history"] == whole["history"]
    for key in ("val_acc", "test_acc", "test_acc_last_epoch", "best_epoch"):
        assert resumed[key] == whole[key], key
    a = torch.load(tmp_path / "whole" / "checkpoint_best.pt")
    b = torch.load(tmp_path / "cut" / "checkpoint_best.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_accuracy(tmp_path: Path) -> None:
    a = run(make_cfg("train.epochs=2", "seed=5"), run_dir=tmp_path / "a")
    b = run(make_cfg("train.epochs=2", "seed=5"), run_dir=tmp_path / "b")
    assert a["history"] == b["history"] and a["test_acc"] == b["test_acc"]


def test_finished_run_is_skipped_and_other_config_refused(run_dir: Path) -> None:
    first = run(make_cfg(), run_dir=run_dir)
    mtime = (run_dir / "record.json").stat().st_mtime_ns
    again = run(make_cfg("logger=none"), run_dir=run_dir)
    assert again == first and (run_dir / "record.json").stat().st_mtime_ns == mtime
    with pytest.raises(RunDirConflict, match="another config"):
        run(make_cfg("train.lr=0.01"), run_dir=run_dir)


def read_wandb_log(path: Path) -> list:
    """Records of an offline run's .wandb file: a 7-byte header, then LevelDB-log framed protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    block, pos, records, pending = 32768, 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if pos + 7 + length > len(data):  # a record still being written
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST fragment
            rec = pb.Record()
            rec.ParseFromString(pending)
            records.append(rec)
            pending = b""
    return records


def wandb_records_when_written(path: Path, timeout_s: float = 60.0) -> dict[str, list]:
    """The offline run's records by kind, once its `exit` record is on disk.

    wandb-core writes the file from its own process: `run.finish()` can return before the writer has
    flushed (CI once read only part of the file), so the test waits for the closing record, then fails
    naming the kinds it did find.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        by_kind: dict[str, list] = {}
        for r in read_wandb_log(path):
            by_kind.setdefault(r.WhichOneof("record_type"), []).append(r)
        if "exit" in by_kind or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {"run", "history", "summary", "exit"} <= by_kind.keys(), (path, sorted(by_kind))
    return by_kind


def test_wandb_offline_run_files(run_dir: Path) -> None:
    rec = run(make_cfg("logger=wandb", "train.epochs=2"), run_dir=run_dir)
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    by_kind = wandb_records_when_written(next(runs[0].glob("run-*.wandb")))
    run_rec = by_kind["run"][0].run
    assert run_rec.project == "tsllm" and run_rec.run_group == "default"
    def items(updates) -> dict:
        return {u.key or ".".join(u.nested_key): json.loads(u.value_json) for u in updates}

    config = items(run_rec.config.update)
    assert config["data"]["name"] == "ItalyPowerDemand" and config["encoder"]["name"] == "inception"
    epochs = [items(h.history.item) for h in by_kind["history"]]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert epochs[-1]["train_loss"] == pytest.approx(rec["history"][-1]["train_loss"])
    summary = {k: v for s in by_kind["summary"] for k, v in items(s.summary.update).items()}
    assert summary["test_acc"] == pytest.approx(rec["test_acc"])


def test_a_run_dir_another_live_process_trains_is_refused_and_freed_when_it_dies(run_dir: Path) -> None:
    holder = subprocess.Popen(  # a real second process, as when two sweeps split one grid by hand
        [sys.executable, "-c", "import sys, time; from tsllm.records import run_dir_lock\n"
         "with run_dir_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(300)", str(run_dir)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirConflict, match=f"in use: pid {holder.pid} on "):
            run(make_cfg("train.epochs=1"), run_dir=run_dir)
        assert read_record(run_dir) is None  # refused before anything was written
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, as when a job is killed or preempted
        holder.wait()
    assert run(make_cfg("train.epochs=1"), run_dir=run_dir)["status"] == "finished"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "tsllm.train", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_cli_unknown_dataset_is_one_clear_error(tmp_path: Path) -> None:
    out = _cli("data.name=GunPiont", "logger=none", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "GunPiont" in text and "did you mean GunPoint" in text and "Traceback" not in text
    assert not (tmp_path / "r").exists()  # found missing before Hydra made the run folder


def test_cli_run_writes_record(tmp_path: Path) -> None:
    out = _cli("data.name=ItalyPowerDemand", "encoder=mlp", "train.epochs=1", "logger=none",
               f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert read_record(tmp_path / "r")["status"] == "finished"


@pytest.mark.slow
def test_default_run_meets_the_inception_target(run_dir: Path) -> None:
    """The README's main job: Inception standalone on GunPoint, 100 epochs (~1 min). Target >= 0.95."""
    rec = run(make_cfg("data.name=GunPoint", "train.epochs=100"), run_dir=run_dir)
    assert rec["test_acc"] >= 0.95, rec["test_acc"]


@pytest.mark.slow
def test_hybrid_inception_meets_its_target(run_dir: Path) -> None:
    """Inception under frozen SmolLM2-135M on GunPoint, 100 epochs (~8 min on 2 cores). Target >= 0.90."""
    rec = run(make_cfg("data.name=GunPoint", "train.epochs=100", "mode=hybrid"), run_dir=run_dir)
    assert rec["test_acc"] >= 0.90, rec["test_acc"]


@pytest.mark.parametrize("dataset", ["BasicMotions", "JapaneseVowels"])
def test_multivariate_and_unequal_length_datasets_run_end_to_end(dataset: str, run_dir: Path) -> None:
    rec = run(make_cfg(f"data.name={dataset}", "encoder=cnn", "encoder.channels=8"), run_dir=run_dir)
    assert rec["status"] == "finished" and rec["data"]["n_channels"] > 1
    if dataset == "JapaneseVowels":  # unequal lengths, padded then filled: counted in the record
        assert rec["data"]["missing"]["filled_train"] > 0


def test_early_stopping_on_validation(run_dir: Path) -> None:
    rec = run(make_cfg("train.epochs=50", "train.early_stopping=2", "encoder=mlp", "train.lr=0.05"),
              run_dir=run_dir)
    assert rec["stopped_early"] and rec["epochs_run"] < 50
    assert rec["epochs_run"] - rec["best_epoch"] == 2


def test_config_hash_is_the_same_under_another_home_and_data_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from omegaconf import OmegaConf

    from tsllm.records import config_hash

    monkeypatch.delenv("TSLLM_CACHE", raising=False)
    hashes, caches = set(), set()
    for home, root in (("/home/alice", None), ("/scratch/bob", "/data/ucr")):
        monkeypatch.setenv("HOME", home)
        config = OmegaConf.to_container(make_cfg(f"data.root={root}" if root else "data.root=null"), resolve=True)
        caches.add(config["llm"]["cache_dir"])
        hashes.add(config_hash(config))
    assert len(caches) == 2 and len(hashes) == 1
    assert config_hash(OmegaConf.to_container(make_cfg("train.lr=0.01"), resolve=True)) not in hashes


@pytest.mark.parametrize(("override", "expected"), [
    ("train.lr=abc", "train.lr=abc: Value 'abc' of type 'str' could not be converted to Float"),
    ("data.nmae=GunPoint", "data.nmae=GunPoint: unknown key; data takes name, root, normalise"),
    ("train.selection=best", "train.selection='best': expected one of val, min_train_loss, last"),
])
def test_cli_bad_config_is_one_line_before_any_folder(tmp_path: Path, override: str, expected: str) -> None:
    out = _cli(override, "logger=none", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {expected}")
    assert list(tmp_path.iterdir()) == []  # no run folder, no outputs/


def test_schema_rejects_wrong_types_when_composing() -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        make_cfg("train.epochs=many")
    with pytest.raises(ConfigCompositionException):
        make_cfg("logger=wandb", "logger.tags=3")


def test_unreachable_hub_switches_to_the_cache_and_fails_with_its_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    # `.invalid` never resolves: without the reachability check, the hub client retries for ~35-50 s.
    env.update(HF_ENDPOINT="https://hub.invalid", HF_HOME=str(tmp_path / "hf"), HYDRA_FULL_ERROR="0")
    cmd = [sys.executable, "-m", "tsllm.train", "llm=llama31_8b", "mode=hybrid", "logger=none",
           "data.name=ItalyPowerDemand", f"hydra.run.dir={tmp_path}/r"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    # The switch to the local cache is asserted, not the wall time: a timed bound fails on a loaded machine.
    assert "unreachable" in out.stdout + out.stderr and "from the local cache only" in out.stdout + out.stderr
    assert "is not in the local Hugging Face cache" in out.stdout + out.stderr


def test_reading_an_llm_config_switches_to_the_cache_when_the_hub_is_unreachable(tmp_path: Path) -> None:
    # Every reader of an LLM's config (a standalone run's latent size, the planner, the check) goes through
    # load_config: the switch lives there, not in each caller (the planner's standalone runs under
    # llama31_8b waited out the hub's retries before it did).
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT="https://hub.invalid", HF_HOME=str(tmp_path / "hf"))
    code = ("import logging; logging.basicConfig(level=logging.INFO)\n"
            "from tsllm.config import LLMConfig\nfrom tsllm.llm import BackboneError, load_config\n"
            "try:\n    load_config(LLMConfig(name='x', name_or_path='meta-llama/Llama-3.1-8B'))\n"
            "except BackboneError as e:\n    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert "from the local cache only" in out.stdout + out.stderr, out.stderr[-2000:]
    assert "refused:" in out.stdout and "is not in the local Hugging Face cache" in out.stdout


def test_a_run_uses_the_threads_it_is_given_and_records_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import tsllm.train as train_mod

    seen = []
    real_fit = train_mod.fit

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(train_mod, "fit", spy)
    before = torch.get_num_threads()
    try:
        record = run(make_cfg("train.threads=1", "encoder=mlp"), run_dir=tmp_path / "run")
    finally:
        torch.set_num_threads(before)
    assert record["threads"] == 1 and seen == [1]


def test_default_threads_share_the_cores_among_a_parallel_sweeps_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    import tsllm.loop as loop

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(loop, "available_cores", lambda: 4)
    assert (loop.resolve_threads(None, 1), loop.resolve_threads(None, 2), loop.resolve_threads(3, 2)) == (4, 2, 3)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what the caller set is what the run was given
    assert loop.resolve_threads(None, 2) == 1
