"""Benchmark tsllm.memory's estimate against the peak resident memory of SmolLM2 runs on this CPU.

On a CPU the parts the estimate counts (the LLM's weights, the trainable part with Adam's state, the larger
of a training step's and an evaluation batch's activations) live in the process's memory beside the Python
and torch runtime, which an accelerator's memory does not hold. That runtime is measured here as the peak
RSS of a fresh process that imports what a training run imports and reads the run's dataset; it is added to
the estimate, and the sum is compared with:

1. fresh runs, each its own process (``python -m tsllm.train ...``), their ``cost.peak_rss_mib``;
2. the committed hybrid records of results/runs/evidence16 (100 epochs each). Those sweeps ran with Hydra's
   basic launcher (scripts/evidence16.sh), every cell in one process, so a record's peak RSS is the maximum
   over the cells its process ran before it too: an upper bound of its own peak, reported apart.

The estimate is costed at this machine's dtype (llm.dtype=auto is float32 on a CPU), with the batch sizes
a run uses (train.batch_size, or TRAIN when smaller; train.eval_batch_size, or the largest evaluated split).

    python scripts/bench_memory.py                      # ~6 min on 2 loaded cores; writes results/bench/memory.md
    python scripts/bench_memory.py --fresh 2 --out ''   # two fresh runs, no file
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from bench_encoders import compose_cfg, finish, header, start
from omegaconf import OmegaConf

from tsllm import plan as P
from tsllm.build import build_model, load_data
from tsllm.llm import resolve_dtype
from tsllm.memory import footprint

MIB = 2**20
DEFAULT_OUT = "results/bench/memory.md"
TOLERANCE = 0.25  # the acceptance: the estimate plus the runtime within 25 % of the measured peak
#: (label, overrides) of the fresh runs: the prefix cache on and off, three encoders, two batch sizes.
FRESH = [
    ("inception, GunPoint", ["encoder=inception", "data.name=GunPoint"]),
    ("inception, GunPoint, prefix_cache=false", ["encoder=inception", "data.name=GunPoint",
                                                  "reader.prefix_cache=false"]),
    ("inception, GunPoint, batch 8", ["encoder=inception", "data.name=GunPoint", "train.batch_size=8"]),
    ("mlp, GunPoint", ["encoder=mlp", "data.name=GunPoint"]),
    ("cnn, Lightning7 (length 319)", ["encoder=cnn", "data.name=Lightning7"]),
    ("inception, GunPoint, 3 epochs", ["encoder=inception", "data.name=GunPoint", "train.epochs=3"]),
]
RUN = ["mode=hybrid", "llm=smollm2_135m", "logger=none", "diagnostics=none", "train.epochs=1"]
RUNTIME = """
import json, resource, sys
import accelerate, transformers, tsllm.build, tsllm.loop, tsllm.train
from transformers.models.llama import modeling_llama
from tsllm.build import load_data
from tsllm.train import CONF_DIR
from hydra import compose, initialize_config_dir
with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
    cfg = compose(config_name="train", overrides=sys.argv[1:])
load_data(cfg)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
"""


def child_env(threads: int) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(threads or 2)}


def runtime_mib(overrides: list[str], threads: int) -> float:
    """Peak RSS of a fresh process with a run's imports and its dataset read, nothing built: the runtime."""
    done = subprocess.run([sys.executable, "-c", RUNTIME, *overrides], capture_output=True, text=True, check=True,
                          env=child_env(threads))
    return float(done.stdout.strip().splitlines()[-1])


def estimate_mib(cfg: Any, backbones: P.Backbones) -> dict[str, float]:
    """tsllm.memory's estimate of a run of cfg on this machine, by part, in MiB (the model built on meta)."""
    data = load_data(cfg)
    with torch.device("meta"), torch.random.fork_rng(devices=[]):
        model = build_model(cfg, data, llm=backbones.meta(cfg))
    fp = footprint(model, data.n_channels, data.length)
    evaluated = max(len(data.test.y), len(data.val.y) if data.val is not None else 0)
    m = fp.at(batch_size=min(cfg.train.batch_size, len(data.train.y)),
              eval_batch_size=min(cfg.train.eval_batch_size, evaluated),
              dtype=resolve_dtype(cfg.llm.dtype), quantization=cfg.llm.quantization)
    return {"weights": m.weights / MIB, "trainable": m.trainable / MIB, "step": m.step / MIB,
            "evaluation": m.evaluation / MIB, "total": m.total / MIB}


def fresh_run(overrides: list[str], threads: int) -> float:
    """Peak RSS (MiB) of one training run in its own process, from its record."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        subprocess.run([sys.executable, "-m", "tsllm.train", *RUN, *overrides, f"hydra.run.dir={tmp}"],
                       capture_output=True, text=True, check=True, env=child_env(threads))
        return json.loads((Path(tmp) / "record.json").read_text())["cost"]["peak_rss_mib"]


def row(label: str, est: dict[str, float], runtime: float, measured: float) -> dict[str, Any]:
    predicted = est["total"] + runtime
    return {"label": label, **est, "runtime": runtime, "predicted": predicted, "measured": measured,
            "ratio": measured / predicted}


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| run | weights | trainable | step | evaluation | estimate | + runtime | = predicted | measured peak "
             "RSS | measured / predicted |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['weights']:.0f} | {r['trainable']:.0f} | {r['step']:.0f} | "
                     f"{r['evaluation']:.0f} | {r['total']:.0f} | {r['runtime']:.0f} | {r['predicted']:.0f} | "
                     f"{r['measured']:.0f} | {r['ratio']:.2f} |")
    return lines


def records(pattern: str, backbones: P.Backbones) -> list[dict[str, Any]]:
    """The committed hybrid records' peak RSS beside the estimate of their configs."""
    rows = []
    for path in sorted(glob.glob(pattern)):
        rec = json.loads(Path(path).read_text())
        if rec.get("status") != "finished" or rec.get("mode") != "hybrid":
            continue
        est = estimate_mib(OmegaConf.create(rec["config"]), backbones)
        rows.append({"arm": rec["arm"], "encoder": rec["encoder"], "dataset": rec["dataset"], "total": est["total"],
                     "measured": rec["cost"]["peak_rss_mib"]})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", type=int, default=len(FRESH), help="how many of the fresh runs to make")
    parser.add_argument("--records", default="results/runs/evidence16/*/record.json",
                        help="committed records to compare ('' to skip)")
    args, started = start(parser, argv, DEFAULT_OUT)
    backbones = P.Backbones()
    fresh = []
    runtimes: dict[str, float] = {}
    for label, overrides in FRESH[:args.fresh]:
        cfg = compose_cfg(*RUN, *overrides)
        name = cfg.data.name
        if name not in runtimes:
            runtimes[name] = runtime_mib([*RUN, *overrides], args.threads)
        fresh.append(row(label, estimate_mib(cfg, backbones), runtimes[name], fresh_run(overrides, args.threads)))
        print(table(fresh)[-1], flush=True)
    lines = header("Memory: tsllm.memory's estimate against the peak RSS of SmolLM2 runs on this CPU",
                   "Peak RSS is the process's; the runtime (Python, torch, transformers, the dataset) is measured "
                   "in a fresh process that builds nothing, and added to the estimate.")
    lines += [f"Config: {' '.join(RUN)} plus each row's overrides; float32 (llm.dtype=auto on a CPU). Columns "
              "in MiB. Acceptance: |measured / predicted - 1| <= "
              f"{TOLERANCE:.0%}. Runtimes measured: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in runtimes.items()),
              "", "## 1. Fresh runs, one process each", "", *table(fresh), ""]
    worst = max((abs(r["ratio"] - 1) for r in fresh), default=0.0)
    lines.append(f"- largest deviation: {worst:.0%} ({'within' if worst <= TOLERANCE else 'OUTSIDE'} "
                 f"{TOLERANCE:.0%})")
    if args.records:
        committed = records(args.records, backbones)
        runtime = statistics.median(runtimes.values()) if runtimes else runtime_mib(RUN, args.threads)
        ratios = [r["measured"] / (r["total"] + runtime) for r in committed]
        lines += ["", f"## 2. Committed records ({args.records}), 100 epochs, runs of a sweep", "",
                  f"{len(committed)} hybrid records; predicted = estimate + {runtime:.0f} MiB runtime. measured / "
                  f"predicted: median {statistics.median(ratios):.2f}, min {min(ratios):.2f}, max {max(ratios):.2f}; "
                  f"{sum(abs(x - 1) <= TOLERANCE for x in ratios)} of {len(ratios)} within {TOLERANCE:.0%}, "
                  f"{sum(x < 1 - TOLERANCE for x in ratios)} below. These sweeps ran every cell in one process "
                  "(Hydra's basic launcher): a record's peak RSS is the maximum over the cells run before it too, "
                  "an upper bound of its own peak, so the estimate is judged on the fresh runs above."]
    finish(lines, [], started, args.out)
    if worst > TOLERANCE:
        sys.exit(1)


if __name__ == "__main__":
    main()
