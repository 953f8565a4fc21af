"""One ``fit`` per case in each process of a launch, each process reporting what it did (tests/test_processes.py).

    torchrun --standalone --nproc_per_node 2 tests/launched_fit.py OUT CASES_JSON

CASES_JSON maps a case name to its config overrides. Each process writes ``OUT/<case>/rank<r>.pt``: the
TRAIN series (indices) it trained on at each step, the series and statistics of each BatchNorm refresh, its
trainable state after every epoch and at the end, the fit's result, and the files it wrote. Not a test module
itself: pytest collects ``test_*.py`` only.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

import tsllm.loop as loop
from tsllm.build import build
from tsllm.config import TrainConfig

from conftest import make_cfg  # the script's folder, tests/, is first on sys.path

# Case flags, not config keys: dropout off, so 1 and 2 processes compute alike; everything frozen.
NO_DROPOUT, FROZEN = "+no_dropout", "+frozen"


def build_case(overrides: list[str]) -> tuple[Any, Any, TrainConfig, int]:
    """The model, data, loop options and seed of a case, as tests/test_processes.py rebuilds them in one process."""
    cfg = make_cfg(*(o for o in overrides if o not in (NO_DROPOUT, FROZEN)))
    built = build(cfg)
    if NO_DROPOUT in overrides:
        for module in built.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    if FROZEN in overrides:
        built.model.requires_grad_(False)
    return built.model, built.data, TrainConfig.from_cfg(cfg.train), cfg.seed


def run_case(out: Path, overrides: list[str]) -> None:
    model, data, train_cfg, seed = build_case(overrides)
    rank = loop.process_state().process_index
    rows = {x.tobytes(): i for i, x in enumerate(data.train.x)}
    steps: list[list[int]] = []
    epochs: list[dict[str, torch.Tensor]] = []
    writes: list[str] = []
    refreshes: list[dict[str, Any]] = []
    step, save, update_bn = loop.Fit.step, loop.save_atomic, loop.update_bn

    def indices(x: torch.Tensor) -> list[int]:
        return [rows[r.numpy().tobytes()] for r in x.cpu()]

    def seen_step(self: Any, x: torch.Tensor, y: torch.Tensor, epoch: int) -> Any:
        steps.append(indices(x))
        return step(self, x, y, epoch)

    def recorded_save(obj: Any, path: Path) -> None:
        writes.append(Path(path).name)
        save(obj, path)

    def recorded_update_bn(loader: Any, encoder: torch.nn.Module, device: Any = None) -> None:
        """The series the refresh ran, and its statistics before anything else (DDP's broadcast) touches them."""
        batches: list[list[int]] = []

        def recording() -> Any:
            for batch in loader:  # read as update_bn reads it, once: the loader's shuffling draws stay the same
                batches.append(indices(batch[0]))
                yield batch

        update_bn(recording(), encoder, device=device)
        refreshes.append({"batches": batches, "buffers": {k: v.clone() for k, v in encoder.state_dict().items()
                                                          if k.endswith(("running_mean", "running_var"))}})

    loop.Fit.step, loop.save_atomic, loop.update_bn = seen_step, recorded_save, recorded_update_bn
    try:
        result = loop.fit(model, data, train_cfg, seed=seed, run_dir=out / "run",
                          on_epoch=lambda row: epochs.append(model.trainable_state()))
    finally:
        loop.Fit.step, loop.save_atomic, loop.update_bn = step, save, update_bn
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"steps": steps, "epochs": epochs, "final": model.trainable_state(), "result": asdict(result),
                "writes": writes, "refreshes": refreshes, "processes": loop.process_state().num_processes},
               out / f"rank{rank}.pt")


if __name__ == "__main__":
    root, cases = Path(sys.argv[1]), json.loads(sys.argv[2])
    for name, overrides in cases.items():
        run_case(root / name, overrides)
    loop.leave_processes()
