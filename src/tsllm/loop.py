"""The one training loop: Adam, cross-entropy, validation each epoch, test once at the end.

Accelerate places the model and batches (CPU, one GPU or several) and handles mixed precision, so the
same loop serves this CPU and a GPU machine. Every epoch ends with a checkpoint of the trainable
weights; a re-run in the same run directory continues from it and ends with the same result, because
each epoch's shuffling and dropout are seeded from (seed, epoch) rather than from a running RNG state.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from tsllm.data import DatasetSplits, Split

log = logging.getLogger(__name__)

LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"
PROTOCOLS = ("val_selected", "study_best_test")


@dataclass
class TrainConfig:
    """What conf/train/*.yaml holds."""

    epochs: int = 100
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    early_stopping: int = 0
    precision: str = "auto"
    resume: bool = True
    protocol: str = "val_selected"

    @classmethod
    def from_cfg(cls, cfg: Any) -> TrainConfig:
        return cls(**dict(cfg))


@dataclass
class FitResult:
    """What a run reports. Test accuracies are of the model selected without looking at TEST."""

    selection: str                      # "best_val" or "last_epoch: <why>"
    best_epoch: int
    epochs_run: int
    val_acc: float | None
    val_loss: float | None
    test_acc: float
    test_loss: float
    test_acc_last_epoch: float
    train_acc_last_epoch: float
    stopped_early: bool
    resumed_from_epoch: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    study_best_test_acc: float | None = None   # only under protocol=study_best_test: optimistic, selected on TEST

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Python, numpy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def mixed_precision(precision: str) -> str:
    """Accelerate's mixed-precision name; `auto` is bf16 on a GPU and fp32 on CPU."""
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    try:
        return {"fp32": "no", "no": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    except KeyError:
        raise ValueError(f"train.precision={precision!r}: expected auto, fp32, bf16 or fp16") from None


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights that training changes; the frozen LLM is never written to a checkpoint."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            if k in names or not k.startswith("reader.llm.")}


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save through a temporary file: a run killed mid-write leaves the previous checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _loader(split: Split, batch_size: int, shuffle: bool, generator: torch.Generator | None = None) -> DataLoader:
    ds = TensorDataset(torch.from_numpy(split.x), torch.from_numpy(split.y))
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator)


def refresh_batchnorm(module: nn.Module, loader: DataLoader) -> None:
    """Recompute BatchNorm statistics as exact averages over TRAIN for the current weights.

    A UCR training set is one or two batches, so the running averages (momentum 0.1) would lag
    several epochs behind the weights and the eval-mode network would disagree with the trained one.
    Only the encoder is run: the frozen LLM has no BatchNorm.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    was_training = module.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    module.train()
    with torch.no_grad():
        for x, _ in loader:
            module(x)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    module.train(was_training)


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
        return correct / n, loss_sum / n


def fit(model: nn.Module, data: DatasetSplits, cfg: TrainConfig, *, seed: int, run_dir: str | Path,
        on_epoch: Callable[[dict[str, float]], None] | None = None) -> FitResult:
    """Train, select on validation, evaluate TEST once (and once more for the last-epoch figure)."""
    try:
        return _fit(model, data, cfg, seed=seed, run_dir=run_dir, on_epoch=on_epoch)
    except torch.OutOfMemoryError as e:
        raise MemoryError(
            f"out of accelerator memory at train.batch_size={cfg.batch_size}, train.eval_batch_size="
            f"{cfg.eval_batch_size}, train.precision={cfg.precision}: lower the batch sizes, use bf16 "
            "(train.precision=bf16, llm.dtype=bfloat16) or load the LLM with llm.quantization=8bit|4bit"
        ) from e


def _fit(model: nn.Module, data: DatasetSplits, cfg: TrainConfig, *, seed: int, run_dir: str | Path,
         on_epoch: Callable[[dict[str, float]], None] | None) -> FitResult:
    if cfg.protocol not in PROTOCOLS:
        raise ValueError(f"train.protocol={cfg.protocol!r}: expected one of {PROTOCOLS}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(mixed_precision=mixed_precision(cfg.precision), cpu=not torch.cuda.is_available())
    start_time = time.perf_counter()

    seed_everything(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator()
    train_loader = _loader(data.train, cfg.batch_size, shuffle=True, generator=generator)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    evaluate = Evaluator(accelerator, cfg.eval_batch_size)
    base = accelerator.unwrap_model(model)

    selection = "best_val" if data.val is not None else f"last_epoch: {data.meta.get('val_strategy', 'no validation split')}"
    state = {"epoch": 0, "best_epoch": 0, "best_key": None, "bad_epochs": 0, "history": [], "stopped_early": False,
             "study_best_test_acc": None}
    resumed_from = 0
    last_path, best_path = run_dir / LAST, run_dir / BEST
    if cfg.resume and last_path.is_file():
        ckpt = torch.load(last_path, map_location="cpu", weights_only=False)
        base.load_state_dict(ckpt["model"], strict=False)
        optimizer.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        resumed_from = state["epoch"]
        log.info("Resuming %s from epoch %d", run_dir, resumed_from)

    bar = tqdm(range(state["epoch"], cfg.epochs), desc="epochs", initial=state["epoch"], total=cfg.epochs,
               disable=None, dynamic_ncols=True)
    for epoch in bar:
        # Seeding per epoch makes the run independent of where it was interrupted.
        seed_everything(seed * 100_003 + epoch)
        generator.manual_seed(seed * 100_003 + epoch)
        model.train()
        loss_sum, correct, n = 0.0, 0, 0
        for x, y in train_loader:
            with accelerator.autocast():
                logits = model(x)
                loss = nn.functional.cross_entropy(logits.float(), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite training loss at epoch {epoch + 1}: lower train.lr or use train.precision=fp32")
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            loss_sum += loss.item() * y.numel()
            correct += (logits.argmax(-1) == y).sum().item()
            n += y.numel()
        row = {"epoch": epoch + 1, "train_loss": loss_sum / n, "train_acc": correct / n}
        refresh_batchnorm(base.encoder, train_loader)
        if data.val is not None:
            row["val_acc"], row["val_loss"] = evaluate(model, data.val)
        if cfg.protocol == "study_best_test":
            row["test_acc_optimistic"], _ = evaluate(model, data.test)
            best = state["study_best_test_acc"]
            state["study_best_test_acc"] = max(best or 0.0, row["test_acc_optimistic"])
        state["history"].append(row)
        state["epoch"] = epoch + 1

        # Best on validation accuracy; ties (common on tiny UCR validation sets) go to the lower loss.
        key = (row["val_acc"], -row["val_loss"]) if data.val is not None else (epoch,)
        improved = state["best_key"] is None or key > tuple(state["best_key"])
        if improved:
            state["best_key"], state["best_epoch"], state["bad_epochs"] = list(key), epoch + 1, 0
            save_atomic(trainable_state(base), best_path)
        else:
            state["bad_epochs"] += 1
        stop = data.val is not None and cfg.early_stopping > 0 and state["bad_epochs"] >= cfg.early_stopping
        state["stopped_early"] = stop
        save_atomic({"model": trainable_state(base), "optimizer": optimizer.state_dict(), "state": state}, last_path)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row['train_acc']:.3f}",
                        val=f"{row.get('val_acc', math.nan):.3f}")
        log.debug("epoch %s", row)
        if on_epoch is not None:
            on_epoch(row)
        if stop:
            log.info("Early stop at epoch %d: no validation improvement for %d epochs", epoch + 1, cfg.early_stopping)
            break
    bar.close()

    last_train_acc = state["history"][-1]["train_acc"] if state["history"] else math.nan
    test_acc_last, _ = evaluate(model, data.test)
    base.load_state_dict(torch.load(best_path, map_location="cpu"), strict=False)
    val_acc, val_loss = evaluate(model, data.val) if data.val is not None else (None, None)
    test_acc, test_loss = evaluate(model, data.test)
    return FitResult(
        selection=selection, best_epoch=state["best_epoch"], epochs_run=state["epoch"], val_acc=val_acc,
        val_loss=val_loss, test_acc=test_acc, test_loss=test_loss, test_acc_last_epoch=test_acc_last,
        train_acc_last_epoch=last_train_acc, stopped_early=state["stopped_early"], resumed_from_epoch=resumed_from,
        seconds=time.perf_counter() - start_time, history=state["history"],
        study_best_test_acc=state["study_best_test_acc"],
    )
