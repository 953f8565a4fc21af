"""``python -m tsllm.train`` that stops after an epoch and waits there to be killed (tests/test_processes.py).

    torchrun --standalone --nproc_per_node 2 tests/launched_train.py EPOCH [overrides]

The main process prints ``paused after epoch EPOCH`` once that epoch's checkpoint is written, then sleeps;
the other processes wait for it in their next step. A kill then interrupts a run at a known epoch.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import tsllm.loop as loop
from tsllm.train import cli

PAUSE_AFTER = int(sys.argv.pop(1))
report = loop.Fit.report


def paused(self: Any, row: dict[str, float]) -> None:
    report(self, row)
    if row["epoch"] >= PAUSE_AFTER and self.accelerator.is_main_process:
        print(f"paused after epoch {PAUSE_AFTER}", flush=True)
        time.sleep(600)


loop.Fit.report = paused

if __name__ == "__main__":
    cli()
