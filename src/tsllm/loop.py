"""The one training loop: cross-entropy, a named selection rule, TEST once at the end.

Accelerate places the model and batches (CPU, one GPU or several) and handles mixed precision, so the
same loop serves this CPU and a GPU machine. Every epoch ends with a checkpoint of the trainable
weights; a re-run in the same run directory continues from it and ends with the same result, because
each epoch's shuffling and dropout are seeded from (seed, epoch) rather than from a running RNG state.

`fit` reads top to bottom as its steps: resume, then per epoch train / evaluate / select / checkpoint,
then the final evaluation of the selected weights.

Several processes launched together (tsllm.train says how; gloo on CPUs, NCCL on GPUs) train one run.
``train.batch_size`` stays the batch of one optimiser step, split evenly among the processes (Accelerate's
``split_batches``), so a run means the same whatever the number of processes; DDP averages the gradients,
so every process holds the same weights after each step. Evaluation gathers every series exactly once.
Every process computes the same history, so all take the same selection and stopping decisions; only the
main process writes checkpoints, and the others wait for them before reading.
"""

from __future__ import annotations

import logging
import math
import os
import random
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration, PartialState
from accelerate.state import AcceleratorState
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from tsllm.config import ConfigError, TrainConfig
from tsllm.data import DatasetSplits, Split
from tsllm.llm import auto_dtype
from tsllm.memory import out_of_memory_advice
from tsllm.records import FILE_MODE, FitResult, RunDirConflict

log = logging.getLogger(__name__)

LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"


@dataclass
class LoopState:
    """Everything besides the weights that a resumed run needs; stored in the last checkpoint."""

    epoch: int = 0
    best_epoch: int = 0
    best_key: list[float] | None = None
    bad_epochs: int = 0
    stop_reason: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    flops_per_step: int | None = None
    # Seconds of fit per session, from its start to its last checkpoint, so a resumed run's real cost adds
    # up across the sessions that ran it (a checkpoint without it, from before it was kept, loads as []).
    session_seconds: list[float] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Python, numpy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def process_state() -> PartialState:
    """This process's place among the processes of its launch: one, or several under torchrun (gloo on a CPU,
    NCCL on GPUs). The first call joins the process group; the loop's Accelerator shares the same state."""
    return PartialState(cpu=not torch.cuda.is_available())


def leave_processes() -> None:
    """Leave the launch's process group, if this process joined one: the end of a multi-process command.

    A process that exits still in the group can abort (SIGABRT, "terminate called without an active
    exception") while the interpreter shuts down, as gloo's worker threads outlive it: torchrun then reports a
    finished run as failed. Accelerate's own `destroy_process_group` leaves it (a notebook's forked launch keeps it).
    """
    process_state().destroy_process_group()


def mixed_precision(precision: str) -> str:
    """Accelerate's mixed-precision name for train.precision (``auto``: tsllm.llm.auto_dtype, as llm.dtype)."""
    if precision == "auto":
        return "bf16" if auto_dtype() == torch.bfloat16 else "no"
    return {"fp32": "no", "no": "no", "bf16": "bf16", "fp16": "fp16"}[precision]


def make_accelerator(precision: str) -> Accelerator:
    """The loop's Accelerator at train.precision; ``train.batch_size`` is one optimiser step's batch, split among
    the processes (``split_batches``).

    Accelerate keeps one mixed precision per process and refuses another; a run after one of another precision
    in the same process (tests, the planner, a notebook) gets Accelerate's state afresh, its processes kept.
    """
    mode = mixed_precision(precision)
    if AcceleratorState._shared_state.get("_mixed_precision", mode) != mode:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mode, cpu=not torch.cuda.is_available(),
                       dataloader_config=DataLoaderConfiguration(split_batches=True))


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, which SLURM and taskset set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_threads(threads: int | None, jobs: int = 1) -> int:
    """CPU threads for a run: ``threads``; else OMP_NUM_THREADS where the caller set it; else the cores given
    to this process shared among the ``jobs`` runs of a local parallel sweep.

    torch's default (every core, whatever else runs) made a hybrid epoch 10x slower beside a second job.
    """
    if threads is not None:
        return threads
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    return max(1, available_cores() // max(1, jobs))


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save through a temporary file: a run killed mid-write leaves the previous checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, path)


def _loader(split: Split, batch_size: int, shuffle: bool, generator: torch.Generator | None = None) -> DataLoader:
    ds = TensorDataset(torch.from_numpy(split.x), torch.from_numpy(split.y))
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator)


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (our default) or AdamW (the study's), with train.lr and train.weight_decay."""
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class Evaluator:
    """Accuracy and mean loss over a split, under inference mode."""

    def __init__(self, accelerator: Accelerator, batch_size: int) -> None:
        self.accelerator = accelerator
        self.batch_size = batch_size
        self._loaders: dict[int, DataLoader] = {}

    def __call__(self, model: nn.Module, split: Split) -> tuple[float, float]:
        key = id(split)
        if key not in self._loaders:
            self._loaders[key] = self.accelerator.prepare(_loader(split, self.batch_size, shuffle=False))
        model.eval()
        correct, loss_sum, n = 0, 0.0, 0
        with torch.inference_mode(), self.accelerator.autocast():
            for x, y in self._loaders[key]:
                logits = model(x)
                logits, y = self.accelerator.gather_for_metrics((logits, y))
                loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum").item()
                correct += (logits.argmax(-1) == y).sum().item()
                n += y.numel()
        if n != len(split.y):  # what gather_for_metrics promises; a record must never count a series twice
            raise RuntimeError(f"evaluation gathered {n} series from {self.accelerator.num_processes} processes "
                               f"for a split of {len(split.y)}")
        return correct / n, loss_sum / n


def peak_memory() -> dict[str, float | None]:
    """Peak resident memory of this process and peak accelerator memory (None without one), in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mib = rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"peak_rss_mib": rss_mib, "peak_accelerator_mib": gpu}


def fit(model: nn.Module, data: DatasetSplits, cfg: TrainConfig, *, seed: int, run_dir: str | Path,
        on_epoch: Callable[[dict[str, float]], None] | None = None) -> FitResult:
    """Train, select by `cfg.selection`, evaluate TEST once (and once more for the last-epoch figure).

    `model` is a TSClassifier: it has `.encoder`, `trainable_state()` and `load_trainable_state()`.
    """
    try:
        return Fit(model, data, cfg, seed=seed, run_dir=Path(run_dir), on_epoch=on_epoch).run()
    except torch.OutOfMemoryError as e:
        raise MemoryError(out_of_memory_advice(model, data, cfg)) from e


class Fit:
    """One call of `fit`: the prepared objects and the named steps of the loop.

    Public so that the planner (`tsllm.plan`) and `tsllm.check` time and test the loop's own steps; train
    through `fit`, which also turns running out of memory into advice."""

    def __init__(self, model: nn.Module, data: DatasetSplits, cfg: TrainConfig, *, seed: int, run_dir: Path,
                 on_epoch: Callable[[dict[str, float]], None] | None) -> None:
        self.data, self.cfg, self.seed, self.run_dir, self.on_epoch = data, cfg, seed, run_dir, on_epoch
        run_dir.mkdir(parents=True, exist_ok=True)
        self.accelerator = make_accelerator(cfg.precision)
        if (n := self.accelerator.num_processes) > 1 and (cfg.batch_size % n or cfg.eval_batch_size % n):
            raise ConfigError(f"train.batch_size={cfg.batch_size} and train.eval_batch_size={cfg.eval_batch_size} "
                              f"are shared among the {n} processes: make each a multiple of {n}")
        seed_everything(seed)
        params = [p for p in model.parameters() if p.requires_grad]
        self.generator = torch.Generator()
        train_loader = _loader(data.train, cfg.batch_size, shuffle=True, generator=self.generator)
        # The whole of TRAIN, unsharded, for the BatchNorm refresh; the same batches as the prepared loader when
        # there is one process (they share the sampler and its generator).
        self.whole_train = train_loader
        # A model with nothing to train (in-context classification) gets no optimizer: it is evaluated once.
        self.optimizer = make_optimizer(params, cfg) if params else None
        if self.optimizer is not None:
            self.model, self.optimizer, self.train_loader = self.accelerator.prepare(model, self.optimizer,
                                                                                     train_loader)
        else:  # evaluated only, never wrapped for DDP (which refuses a model with nothing to train)
            self.model = self.accelerator.prepare_model(model, evaluation_mode=True)
            self.train_loader = self.accelerator.prepare(train_loader)
        self.base = self.accelerator.unwrap_model(self.model)
        self.evaluate = Evaluator(self.accelerator, cfg.eval_batch_size)
        self.state = LoopState()
        self.earlier_untimed = False  # resumed from a checkpoint that kept no session times
        self.last_path, self.best_path = run_dir / LAST, run_dir / BEST
        if cfg.selection == "val" and data.val is not None:
            self.selection = "best_val"
        elif cfg.selection == "val":
            self.selection = f"last_epoch: {data.meta.get('val_strategy', 'no validation split')}"
        else:
            self.selection = {"min_train_loss": "min_train_loss", "last": "last_epoch"}[cfg.selection]

    # ---- the loop, top to bottom ----
    def run(self) -> FitResult:
        self.start = start = time.perf_counter()
        if self.optimizer is None:
            return self.finish(start, resumed_from=0)
        resumed_from = self.resume()
        self.earlier_untimed = resumed_from > 0 and not self.state.session_seconds
        self.state.session_seconds.append(0.0)
        for epoch in range(self.state.epoch, self.cfg.epochs):
            if self.state.stop_reason is not None:  # a resumed run that had already stopped
                break
            tic = time.perf_counter()
            row = self.train_epoch(epoch)
            self.evaluate_epoch(row)
            self.select(row)
            self.state.history.append(row)
            self.state.epoch = epoch + 1
            self.state.epoch_seconds.append(time.perf_counter() - tic)
            self.state.stop_reason = self.stop_reason(row)
            self.checkpoint()
            self.report(row)
        return self.finish(start, resumed_from)

    # ---- the steps ----
    def resume(self) -> int:
        """Continue from the last checkpoint when there is one; the epoch it resumes from."""
        if not (self.cfg.resume and self.last_path.is_file()):
            return 0
        try:
            ckpt = torch.load(self.last_path, map_location="cpu", weights_only=True)
            self.base.load_trainable_state(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.state = LoopState(**ckpt["state"])
        except (RuntimeError, KeyError, TypeError, ValueError) as e:
            raise RunDirConflict(f"{self.last_path} does not match this model or loop ({e}); "
                                 f"move it away or choose another hydra.run.dir than {self.run_dir}") from None
        log.info("Resuming %s from epoch %d", self.run_dir, self.state.epoch)
        return self.state.epoch

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over TRAIN, then exact BatchNorm statistics for the new weights."""
        # Seeding per epoch makes the run independent of where it was interrupted.
        seed_everything(self.seed * 100_003 + epoch)
        self.generator.manual_seed(self.seed * 100_003 + epoch)
        self.model.train()
        loss_sum, correct, n = 0.0, 0, 0
        for x, y in self.train_loader:
            if self.state.flops_per_step is None:
                self.warm_up(x)
                with FlopCounterMode(display=False) as counter:  # forward + backward, counted once per run
                    logits, loss = self.step(x, y, epoch)
                self.state.flops_per_step = self.summed(int(counter.get_total_flops()))
            else:
                logits, loss = self.step(x, y, epoch)
            step_loss, step_correct, step_n = self.tally(logits, y, loss)
            loss_sum, correct, n = loss_sum + step_loss, correct + step_correct, n + step_n
        self.refresh_batchnorm()
        return {"epoch": epoch + 1, "train_loss": loss_sum / n, "train_acc": correct / n}

    def tally(self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> tuple[float, int, int]:
        """A step's loss sum, correct count and series count over the whole batch, each series once.

        With several processes the per-series figures are gathered, leaving out the series Accelerate repeats
        to even out a last short batch, so every process holds the same history and takes the same selection
        and stopping decisions.
        """
        if self.accelerator.num_processes == 1:  # the arithmetic single-process runs were recorded with
            return loss.item() * y.numel(), (logits.argmax(-1) == y).sum().item(), y.numel()
        losses = nn.functional.cross_entropy(logits.detach().float(), y, reduction="none")
        losses, hits = self.accelerator.gather_for_metrics((losses, logits.argmax(-1) == y))
        return losses.sum().item(), hits.sum().item(), losses.numel()

    def summed(self, count: int) -> int:
        """A count summed over the processes (each counted its share of the batch)."""
        return int(self.accelerator.reduce(torch.tensor(count, device=self.accelerator.device), "sum").item())

    def refresh_batchnorm(self) -> None:
        """Exact BatchNorm statistics for the new weights, over the whole of TRAIN, identical on every process.

        A UCR training set is one or two batches, so running averages (momentum 0.1) would lag epochs behind
        the weights. Every process runs the whole, unsharded TRAIN in the same order (a loader shuffled by the
        generator every process seeds alike), so all hold the same statistics; while training, each process
        normalises by its own share of the batch, as DDP does without SyncBatchNorm (which needs GPUs). Under
        the autocast evaluation runs in, so the statistics are of the activations they normalise. Only the
        encoder runs: the frozen LLM has no BatchNorm.
        """
        with self.accelerator.autocast():
            update_bn(self.whole_train, self.base.encoder, device=self.accelerator.device)

    def warm_up(self, x: torch.Tensor) -> None:
        """One eval-mode forward of a single series, so that what is built once on first use (the LLM
        prompt's key/value cache) is not counted as a training step's FLOPs. Eval mode draws no random
        numbers and leaves BatchNorm statistics alone."""
        with torch.no_grad(), self.accelerator.autocast():
            self.model.eval()
            self.model(x[:1])
        self.model.train()

    def step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        with self.accelerator.autocast():
            logits = self.model(x)
            loss = nn.functional.cross_entropy(logits.float(), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss at epoch {epoch + 1}: lower train.lr or use train.precision=fp32")
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        self.optimizer.step()
        return logits, loss

    def evaluate_epoch(self, row: dict[str, float]) -> None:
        """Validation every epoch; TEST only under the labelled optimistic protocol."""
        if self.data.val is not None:
            row["val_acc"], row["val_loss"] = self.evaluate(self.model, self.data.val)
        if self.cfg.protocol == "study_best_test":
            row["test_acc_optimistic"], _ = self.evaluate(self.model, self.data.test)

    def select(self, row: dict[str, float]) -> None:
        """Keep this epoch's weights if the selection rule prefers them (ties go to the earlier epoch)."""
        if self.selection == "best_val":
            # Ties on accuracy (common on tiny UCR validation sets) go to the lower loss.
            key = [row["val_acc"], -row["val_loss"]]
        elif self.selection == "min_train_loss":
            key = [-row["train_loss"]]
        else:
            key = [float(row["epoch"])]
        if self.state.best_key is None or key > self.state.best_key:
            self.state.best_key, self.state.best_epoch, self.state.bad_epochs = key, int(row["epoch"]), 0
            if self.accelerator.is_main_process:
                save_atomic(self.base.trainable_state(), self.best_path)
        else:
            self.state.bad_epochs += 1

    def stop_reason(self, row: dict[str, float]) -> str | None:
        if (self.selection == "best_val" and self.cfg.early_stopping > 0
                and self.state.bad_epochs >= self.cfg.early_stopping):
            return "early_stopping"
        if self.cfg.stop_at_train_acc is not None and row["train_acc"] >= self.cfg.stop_at_train_acc:
            return "train_acc"
        return None

    def checkpoint(self) -> None:
        """The main process writes the last checkpoint; the others wait, so the files are whole when read."""
        self.state.session_seconds[-1] = time.perf_counter() - self.start
        if self.accelerator.is_main_process:
            save_atomic({"model": self.base.trainable_state(), "optimizer": self.optimizer.state_dict(),
                         "state": asdict(self.state)}, self.last_path)
        self.accelerator.wait_for_everyone()

    def report(self, row: dict[str, float]) -> None:
        """One INFO line per epoch (train.log and the console under nohup or SLURM), then the tracker."""
        seconds = self.state.epoch_seconds[-1]
        val = f"{row['val_acc']:.4f}" if "val_acc" in row else "n/a"
        log.info("epoch %d/%d: train loss %.4f acc %.4f, val acc %s, %.1f s", row["epoch"], self.cfg.epochs,
                 row["train_loss"], row["train_acc"], val, seconds)
        if self.state.stop_reason == "early_stopping":
            log.info("Early stop at epoch %d: no validation improvement for %d epochs", row["epoch"],
                     self.cfg.early_stopping)
        elif self.state.stop_reason == "train_acc":
            log.info("Stop at epoch %d: training accuracy %.4f reached train.stop_at_train_acc=%s", row["epoch"],
                     row["train_acc"], self.cfg.stop_at_train_acc)
        if self.on_epoch is not None:
            self.on_epoch({**row, "seconds": seconds})

    def finish(self, start: float, resumed_from: int) -> FitResult:
        """TEST of the last weights, then of the selected ones: the only looks at TEST outside the study protocol."""
        history = self.state.history
        test_last, test_last_loss = self.evaluate(self.model, self.data.test)
        if self.optimizer is not None and self.state.best_epoch != self.state.epoch:
            self.base.load_trainable_state(torch.load(self.best_path, map_location="cpu", weights_only=True))
            test_acc, test_loss = self.evaluate(self.model, self.data.test)
        else:
            test_acc, test_loss = test_last, test_last_loss
        val_acc, val_loss = self.evaluate(self.model, self.data.val) if self.data.val is not None else (None, None)
        study_best = study_min_loss = None
        if self.cfg.protocol == "study_best_test" and history:
            study_best = max(h["test_acc_optimistic"] for h in history)
            study_min_loss = min(history, key=lambda h: h["train_loss"])["test_acc_optimistic"]
        return FitResult(
            selection=self.selection if self.optimizer is not None else "nothing_trains",
            best_epoch=self.state.best_epoch, epochs_run=self.state.epoch, val_acc=val_acc, val_loss=val_loss,
            test_acc=test_acc, test_loss=test_loss, test_acc_last_epoch=test_last,
            train_acc_last_epoch=history[-1]["train_acc"] if history else math.nan,
            stopped_early=self.state.stop_reason is not None, stop_reason=self.state.stop_reason,
            resumed_from_epoch=resumed_from, seconds=time.perf_counter() - start, cost=self.cost(),
            earlier_sessions_seconds=None if self.earlier_untimed else sum(self.state.session_seconds[:-1]),
            history=history, study_best_test_acc=study_best, study_min_train_loss_test_acc=study_min_loss,
        )

    def cost(self) -> dict[str, Any]:
        """FLOPs and LLM tokens per training step (train.batch_size series), seconds per epoch, peak memory."""
        per_example = getattr(getattr(self.base, "reader", None), "tokens_per_example", None)
        secs = self.state.epoch_seconds
        return {
            "flops_per_step": self.state.flops_per_step,
            "batch_size": self.cfg.batch_size,
            "llm_tokens_per_step": per_example * self.cfg.batch_size if per_example is not None else None,
            "seconds_per_epoch": sum(secs) / len(secs) if secs else None,
            **peak_memory(),
        }
