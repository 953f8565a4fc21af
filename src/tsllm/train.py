"""Entry point: `python -m tsllm.train [overrides]` composes conf/, trains, evaluates and records.

`run(cfg)` is importable and returns the record, so tests and notebooks call it without a shell.
A run directory that already holds a finished record of the same config is skipped; one that holds
a checkpoint of the same config resumes from it; one that holds another config, or that another live
process is training, is refused.

Several processes train one run together when launched so (the same command on CPU processes and GPUs)::

    torchrun --standalone --nproc_per_node 2 -m tsllm.train hydra.run.dir=outputs/runs/NAME [overrides]

Every process builds the run and trains its share of each batch (tsllm.loop); only the main process holds
the run directory's lock and writes in it (record, checkpoints, log) and to the tracker. ``hydra.run.dir``
must be given: Hydra's default names the folder by the second each process started in.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from tsllm.build import build, load_data
from tsllm.config import ConfigError, TrainConfig, plain, register_schemas
from tsllm.data import DataError, register_resolvers
from tsllm.identity import Identity, identify
from tsllm.llm import BackboneError, resolve_dtype
from tsllm.loop import available_cores, fit, leave_processes, mixed_precision, process_state, resolve_threads
from tsllm.model import parameter_counts
from tsllm.records import (
    RunDirConflict,
    RunRecord,
    config_hash,
    environment,
    find_finished,
    mark_finished,
    read_record,
    run_dir_lock,
    write_record,
)
from tsllm.tracking import NullTracker, run_labels

log = logging.getLogger("tsllm.train")
# conf/ inside the package: a link to the top-level conf/ in a checkout, a copy in an installed wheel.
CONF_DIR = str(Path(__file__).resolve().parent / "conf")
register_resolvers()  # conf/datasets/*.yaml expand dataset sets with it, before any job starts
register_schemas()  # the typed schemas every conf/ group extends (tsllm.config)


def _hydra_run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def _detach_run_log(run_dir: Path) -> None:
    """Stop Hydra's job log from writing into `run_dir` (the console keeps every line)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == run_dir.resolve():
            root.removeHandler(handler)
            handler.close()


def run(cfg: DictConfig, run_dir: str | Path | None = None, sweep_dir: str | Path | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration; write and return its record.

    With `sweep_dir`, a cell whose resolved config already finished in another cell of the sweep is
    skipped (grid axes that a family does not have resolve to the same config).
    """
    run_dir = Path(run_dir) if run_dir is not None else _hydra_run_dir()
    processes = process_state()
    if processes.num_processes > 1:
        _same_run_dir_everywhere(run_dir)
    main = processes.is_main_process
    if not main:
        _quiet_helper(run_dir)
    # The checks below read the dir's state: the main process holds it first, so they stay true. The other
    # processes of the launch are its helpers: they take no lock, which the main process holds for them.
    with run_dir_lock(run_dir) if main else nullcontext():
        return _run_locked(cfg, run_dir, sweep_dir, main)


def _same_run_dir_everywhere(run_dir: Path) -> None:
    """Refuse a launch whose processes would write to different folders (Hydra's default names the second)."""
    from accelerate.utils import gather_object

    dirs = sorted({str(d) for d in gather_object([str(run_dir.resolve())])})
    if len(dirs) > 1:
        raise ConfigError(f"the processes of this launch got different run folders ({', '.join(dirs)}): "
                          "give the launch one with hydra.run.dir=...")


def _quiet_helper(run_dir: Path) -> None:
    """A helper process logs warnings and errors only, to the console: the main process writes the log."""
    _detach_run_log(run_dir)
    logging.getLogger().setLevel(logging.WARNING)


def _run_locked(cfg: DictConfig, run_dir: Path, sweep_dir: str | Path | None, main: bool = True) -> dict[str, Any]:
    config = plain(cfg)
    key = config_hash(config)
    if sweep_dir is not None and (twin := find_finished(sweep_dir, key, exclude=run_dir)) is not None:
        log.info("Same resolved config already finished in %s, skipping this cell", twin["run_dir"])
        return twin
    previous = read_record(run_dir)
    if previous is not None and previous.get("config_hash") != key:
        raise RunDirConflict(f"{run_dir} holds a run of another config ({previous.get('config_hash')}, now {key}); "
                             "choose another hydra.run.dir")
    if previous is not None and previous.get("status") == "finished":
        _detach_run_log(run_dir)  # a finished run's files stay as committed: no "skipping" line in its log
        log.info("Already finished, skipping: %s (test_acc=%.4f)", run_dir, previous["test_acc"])
        return previous
    # Every process has read the folder before the main process writes in it, so all decided alike.
    process_state().wait_for_everyone()

    started = time.time()
    identity = identify(config)
    record = RunRecord(status="running", config_hash=key, run_dir=str(run_dir), seed=cfg.seed, config=config,
                       mode=identity.mode, arm=identity.arm, cell=identity.cell, context=identity.context)
    tracker = instantiate(cfg.logger) if main else NullTracker()
    try:
        _train(cfg, run_dir, record, previous, tracker, identity, main)
    except BaseException as e:
        record.status, record.error = "failed", f"{type(e).__name__}: {e}"
        record.wall_seconds = time.time() - started
        if main:
            write_record(run_dir, record)
        tracker.finish({"status": "failed"}, status="failed")
        raise
    record.wall_seconds = time.time() - started
    if main:
        write_record(run_dir, record)
        if sweep_dir is not None:
            mark_finished(sweep_dir, key, run_dir)
    done = record.to_dict()
    tracker.finish({k: done[k] for k in SUMMARY_KEYS if done.get(k) is not None})
    return done


SUMMARY_KEYS = ("val_acc", "test_acc", "test_acc_last_epoch", "best_epoch", "epochs_run", "selection", "selection_rule",
                "study_best_test_acc", "study_min_train_loss_test_acc", "seconds")


def _sweep_jobs() -> int:
    """How many runs a local parallel sweep runs at once (joblib's n_jobs), 1 otherwise."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return 1
    n_jobs = HydraConfig.get().launcher.get("n_jobs")
    if not isinstance(n_jobs, int):
        return 1
    return available_cores() if n_jobs <= 0 else n_jobs  # joblib: -1 is every core


def _train(cfg: DictConfig, run_dir: Path, record: RunRecord, previous: dict[str, Any] | None,
           tracker: Any, identity: Identity, main: bool = True) -> None:
    """Load data, build the model, fit; fills `record` in place so a failure keeps what was known.

    Only the ``main`` process of a multi-process launch writes the record and runs the diagnostics.
    """
    train_cfg = TrainConfig.from_cfg(cfg.train)  # bad option values fail here, before data or model
    record.threads = resolve_threads(train_cfg.threads, jobs=_sweep_jobs())
    torch.set_num_threads(record.threads)
    data = load_data(cfg)
    if previous is not None and previous.get("data", {}).get("sha256") != data.meta.get("sha256"):
        raise RunDirConflict(f"{run_dir}: the dataset files changed since this run started (checksum differs)")
    # A helper process keeps what a reader computes once (text features) in memory: the run folder is the main's.
    model = build(cfg, data=data, run_dir=run_dir if main else None).model
    hybrid = record.mode != "standalone"
    record.dataset, record.encoder, record.reader = data.name, cfg.encoder.name, cfg.reader.name
    record.llm = cfg.llm.name if hybrid else None
    record.lr, record.protocol, record.selection_rule = cfg.train.lr, train_cfg.protocol, train_cfg.selection
    record.num_tokens, record.num_kernels = cfg.encoder.get("num_tokens"), cfg.encoder.get("num_kernels")
    record.precision = {"no": "fp32"}.get(mode := mixed_precision(train_cfg.precision), mode)
    record.llm_dtype = str(resolve_dtype(cfg.llm.dtype)).removeprefix("torch.") if identity.uses_llm else None
    record.data, record.env, record.params = data.meta, environment(), parameter_counts(model)
    record.processes = process_state().num_processes
    if previous is not None and previous.get("processes") not in (None, record.processes):
        log.warning("%s started with %d processes and goes on with %d: its numbers follow neither exactly",
                    run_dir, previous["processes"], record.processes)
    if main:
        write_record(run_dir, record)

    name, tags = run_labels(cfg, data.name, record.arm, record.mode, record.cell)
    tracker.start(name=name, run_id=f"{record.config_hash}-{cfg.seed}", config=record.config, run_dir=run_dir,
                  tags=tags)
    result = fit(model, data, train_cfg, seed=cfg.seed, run_dir=run_dir,
                 on_epoch=lambda row: tracker.log(row, step=int(row["epoch"])))
    if callable(stats := getattr(model.reader, "stats", None)):
        record.reader_stats = stats()
    record.fit = result
    if main:  # diagnostics write into the run folder, and run after selection on the main process's weights
        _diagnose(model, data, run_dir, record, cfg.get("diagnostics"))
    record.status = "finished"
    log.info("%s%s: val_acc=%s test_acc=%.4f (selected at epoch %d by %s; last epoch %.4f) in %.0f s -> %s",
             name, _overrides(), f"{result.val_acc:.4f}" if result.val_acc is not None else "n/a", result.test_acc,
             result.best_epoch, result.selection, result.test_acc_last_epoch, result.seconds, run_dir)


def _overrides() -> str:
    """The job's own overrides, e.g. ` (encoder.num_kernels=4,train.lr=0.0001)`, when Hydra runs it."""
    if not HydraConfig.initialized():
        return ""
    job = HydraConfig.get().job.override_dirname
    return f" ({job})" if job else ""


def _diagnose(model: Any, data: Any, run_dir: Path, record: RunRecord, diag_cfg: Any) -> None:
    """Diagnostics of the selected model (after selection, so they never influence it), into the record.

    A failure here is logged and recorded; the run's numbers are kept all the same.
    """
    if diag_cfg is None or diag_cfg.get("level", "none") == "none":
        return
    from tsllm.diagnostics import run_diagnostics, summary_scalars

    try:
        diag = run_diagnostics(model, data, run_dir, **plain(diag_cfg))
    except Exception as e:  # noqa: BLE001 - diagnostics must never cost a finished run
        log.warning("diagnostics failed (%s: %s); the run's results are kept", type(e).__name__, e)
        record.diagnostics_error = f"{type(e).__name__}: {e}"
        return
    if diag:
        record.diagnostics = summary_scalars(diag)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra task: returns validation accuracy, the objective a sweeper may optimise (never TEST).

    NaN when there is none (a failed cell, or no validation split): Optuna counts such a trial as failed.
    """
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        record = run(cfg, sweep_dir=hydra_cfg.sweep.dir if multirun else None)
    except (DataError, BackboneError, ConfigError, RunDirConflict, ValueError, MemoryError) as e:
        # Bad input: one clear line, no traceback wall; in a sweep the job is recorded and the sweep goes on.
        log.error("%s: %s", type(e).__name__, e)
        if multirun:
            return math.nan
        sys.exit(2)
    except Exception:
        if multirun:
            log.exception("Job failed; recorded in %s, the sweep goes on", _hydra_run_dir())
            return math.nan
        raise
    val_acc = record.get("val_acc")
    return math.nan if val_acc is None else float(val_acc)


def cli() -> None:
    """`python -m tsllm.train`: the command line is checked first (tsllm.preflight), so a wrong option, key,
    type or dataset is one line and no run folder is created; then Hydra runs `main`."""
    from tsllm.preflight import check_command_line

    problem = check_command_line(CONF_DIR, sys.argv[1:])
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
    leave_processes()  # a run that ended well exits 0 under torchrun too (on an error, the exit says so anyway)


if __name__ == "__main__":
    cli()
