"""Entry point: `python -m tsllm.train [overrides]` composes conf/, trains, evaluates and records.

`run(cfg)` is importable and returns the record, so tests and notebooks call it without a shell.
A run directory that already holds a finished record of the same config is skipped; one that holds
a checkpoint of the same config resumes from it; one that holds another config, or that another live
process is training, is refused.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tsllm.backbone import BackboneError
from tsllm.data import DataError, load_ucr, register_resolvers
from tsllm.loop import TrainConfig, fit, seed_everything, val_fraction_of
from tsllm.model import build_model, parameter_counts, reader_mode
from tsllm.records import (
    RunDirConflict,
    config_hash,
    environment,
    find_finished,
    mark_finished,
    read_record,
    run_dir_lock,
    write_record,
)
from tsllm.schema import check_overrides, register_schemas
from tsllm.tracking import run_labels

log = logging.getLogger("tsllm.train")
# conf/ inside the package: a link to the top-level conf/ in a checkout, a copy in an installed wheel.
CONF_DIR = str(Path(__file__).resolve().parent / "conf")
register_resolvers()  # conf/datasets/*.yaml expand dataset sets with it, before any job starts
register_schemas()  # the typed schemas that conf/train, conf/data and conf/logger extend


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
    with run_dir_lock(run_dir):  # the checks below read the dir's state: hold it first, so they stay true
        return _run_locked(cfg, run_dir, sweep_dir)


def _run_locked(cfg: DictConfig, run_dir: Path, sweep_dir: str | Path | None) -> dict[str, Any]:
    config = OmegaConf.to_container(cfg, resolve=True)
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

    started = time.time()
    record: dict[str, Any] = {"status": "running", "config_hash": key, "run_dir": str(run_dir),
                              "seed": cfg.seed, "config": config}
    tracker = instantiate(cfg.logger)
    try:
        _train(cfg, run_dir, record, previous, tracker)
    except BaseException as e:
        record.update(status="failed", error=f"{type(e).__name__}: {e}", wall_seconds=time.time() - started)
        write_record(run_dir, record)
        tracker.finish({"status": "failed"}, status="failed")
        raise
    record["wall_seconds"] = time.time() - started
    write_record(run_dir, record)
    if sweep_dir is not None:
        mark_finished(sweep_dir, key, run_dir)
    tracker.finish({k: v for k, v in record.items() if k in SUMMARY_KEYS and v is not None})
    return record


SUMMARY_KEYS = ("val_acc", "test_acc", "test_acc_last_epoch", "best_epoch", "epochs_run", "selection", "selection_rule",
                "study_best_test_acc", "study_min_train_loss_test_acc", "seconds")


def offline_if_hub_unreachable(name_or_path: str | None, timeout: float = 3.0) -> bool:
    """Switch the Hugging Face libraries to their local cache when the hub cannot be reached.

    Without this, a hub id that is not cached fails only after ~50 s of retries; with it, in seconds,
    with the same message. Local folders, `package:` names and random-weight models are left alone.
    Returns whether offline mode was switched on here.
    """
    import huggingface_hub.constants as hub

    if (name_or_path is None or name_or_path.startswith(("package:", "/", ".", "~")) or hub.HF_HUB_OFFLINE
            or Path(name_or_path).expanduser().exists()):
        return False
    url = urlparse(hub.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
        return False
    except OSError as e:
        log.info("Hugging Face hub %s unreachable (%s): reading llm.name_or_path=%s from the local cache only",
                 hub.ENDPOINT, e, name_or_path)
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub.HF_HUB_OFFLINE = True  # read at import time by huggingface_hub and transformers
    return True


def _train(cfg: DictConfig, run_dir: Path, record: dict[str, Any], previous: dict[str, Any] | None,
           tracker: Any) -> None:
    """Load data, build the model, fit; fills `record` in place so a failure keeps what was known."""
    train_cfg = TrainConfig.from_cfg(cfg.train)  # bad option values fail here, before data or model
    seed_everything(cfg.seed)
    data = load_ucr(cfg.data.name, cfg.data.root, normalise=cfg.data.normalise, val_fraction=val_fraction_of(cfg),
                    seed=cfg.seed, missing=cfg.data.missing)
    if previous is not None and previous.get("data", {}).get("sha256") != data.meta.get("sha256"):
        raise RunDirConflict(f"{run_dir}: the dataset files changed since this run started (checksum differs)")
    offline_if_hub_unreachable(cfg.llm.name_or_path)
    model = build_model(cfg, data, run_dir=run_dir)
    mode = reader_mode(model)
    record.update(dataset=data.name, encoder=cfg.encoder.name, mode=mode, reader=cfg.reader.name,
                  arm=arm_label(cfg, mode), llm=cfg.llm.name if mode != "standalone" else None, lr=cfg.train.lr,
                  num_tokens=cfg.encoder.get("num_tokens"), num_kernels=cfg.encoder.get("num_kernels"),
                  protocol=train_cfg.protocol, selection_rule=train_cfg.selection, data=data.meta,
                  env=environment(), params=parameter_counts(model))
    write_record(run_dir, record)

    name, tags = run_labels(cfg, data.name, record["arm"], mode)
    tracker.start(name=name, run_id=f"{record['config_hash']}-{cfg.seed}", config=record["config"], run_dir=run_dir,
                  tags=tags)
    result = fit(model, data, train_cfg, seed=cfg.seed, run_dir=run_dir,
                 on_epoch=lambda row: tracker.log(row, step=int(row["epoch"])))
    metrics = result.to_dict()
    if callable(stats := getattr(model.reader, "stats", None)):
        record["reader_stats"] = stats()
    record.update(metrics)
    _diagnose(model, data, run_dir, record, cfg.get("diagnostics"))
    record["status"] = "finished"
    log.info("%s: val_acc=%s test_acc=%.4f (selected at epoch %d by %s; last epoch %.4f) in %.0f s -> %s",
             name, f"{result.val_acc:.4f}" if result.val_acc is not None else "n/a", result.test_acc,
             result.best_epoch, result.selection, result.test_acc_last_epoch, result.seconds, run_dir)


def _diagnose(model: Any, data: Any, run_dir: Path, record: dict[str, Any], diag_cfg: Any) -> None:
    """Diagnostics of the selected model (after selection, so they never influence it), into the record.

    A failure here is logged and recorded; the run's numbers are kept all the same.
    """
    if diag_cfg is None or diag_cfg.get("level", "none") == "none":
        return
    from tsllm.diagnostics import run_diagnostics, summary_scalars

    try:
        diag = run_diagnostics(model, data, run_dir, **OmegaConf.to_container(diag_cfg, resolve=True))
    except Exception as e:  # noqa: BLE001 - diagnostics must never cost a finished run
        log.warning("diagnostics failed (%s: %s); the run's results are kept", type(e).__name__, e)
        record["diagnostics_error"] = f"{type(e).__name__}: {e}"
        return
    if diag:
        record["diagnostics"] = summary_scalars(diag)


def arm_label(cfg: DictConfig, mode: str) -> str:
    """A short human label of what reads the latents, e.g. ``llm``, ``llm[weights=random]``, ``attention``.

    Only settings that differ from the reader's and LLM's usual defaults are named, so two arms never
    share a label; the tidy table keeps every config key besides.
    """
    notes = []
    if mode != "standalone":
        if cfg.llm.get("weights", "pretrained") != "pretrained":
            notes.append(f"weights={cfg.llm.weights}")
        if cfg.llm.get("num_layers") is not None:
            notes.append(f"num_layers={cfg.llm.num_layers}")
    reader = cfg.reader
    for key, usual in (("prompt", "text"), ("suffix", "pad"), ("pooling", "last"), ("shuffle_latents", None),
                       ("bos", False)):
        # A text prompt is named by the config, not the label; only the prompt controls are named here.
        if key in reader and reader[key] != usual and (key != "prompt" or reader[key] in ("none", "random")):
            notes.append(f"{key}={reader[key]}")
    align = reader.get("align", {}).get("name", "none")
    if align != "none":
        notes.append(f"align={align}")
    label = reader.name + ("+lora" if reader.get("lora") else "")
    return label + (f"[{','.join(notes)}]" if notes else "")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra task: returns validation accuracy, the objective a sweeper may optimise (never TEST).

    NaN when there is none (a failed cell, or no validation split): Optuna counts such a trial as failed.
    """
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        record = run(cfg, sweep_dir=hydra_cfg.sweep.dir if multirun else None)
    except (DataError, BackboneError, RunDirConflict, ValueError, MemoryError) as e:
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
    """`python -m tsllm.train`: the config is checked first, so a wrong type or unknown key is one line
    and no run folder is created; then Hydra runs `main`."""
    problem = check_overrides(CONF_DIR, sys.argv[1:])
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
