"""Benchmark every encoder family standalone: parameters, seconds per training epoch, ms per eval batch.

Each family is built from its own conf/encoder/<name>.yaml through the real Hydra config (mode=standalone,
so latent_dim is the configured LLM's hidden size, 576 for SmolLM2-135M) and trained with tsllm's own
`fit` loop on a UCR dataset (GunPoint by default). Epoch times are read from `fit`'s per-epoch callback,
so they include everything an epoch does there: the training batches, the BatchNorm refresh, the
validation pass and the checkpoint.

Threads: by default torch runs with ONE intra-op thread (`--threads 1`). On this 2-core machine, with
other training jobs running, torch's default (one thread per core) oversubscribes the cores and OpenMP
barriers then make steps several times slower and very noisy. `--threads 0` leaves torch's default.
Absolute times depend on the machine's load; compare families within one run.

    python scripts/bench_encoders.py                  # all families, writes results/bench/encoders.md
    python scripts/bench_encoders.py --encoders mlp cnn --epochs 3 --out /tmp/enc.md
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the LLM config is read from the local cache, never fetched
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from tsllm.build import build  # noqa: E402
from tsllm.config import TrainConfig  # noqa: E402
from tsllm.data import DatasetSplits  # noqa: E402
from tsllm.encoders import ENCODERS  # noqa: E402
from tsllm.loop import fit  # noqa: E402
from tsllm.model import parameter_counts  # noqa: E402
from tsllm.records import git_revision  # noqa: E402
from tsllm.train import CONF_DIR  # noqa: E402

DEFAULT_OUT = "results/bench/encoders.md"


def quiet() -> None:
    """Only warnings and errors from tsllm, transformers, accelerate and hydra."""
    logging.basicConfig(level=logging.WARNING)
    for name in ("tsllm", "accelerate", "hydra", "transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass


def compose_cfg(*overrides: str) -> DictConfig:
    """The real config from conf/ (no tracker), with the given overrides."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=["logger=none", *overrides])


def set_threads(threads: int) -> None:
    """`threads > 0`: that many intra-op threads; 0 leaves torch's default."""
    if threads > 0:
        torch.set_num_threads(threads)


def header(title: str, note: str) -> list[str]:
    """Markdown header: date, command, versions, threads, CPUs, load."""
    from importlib import metadata

    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "n/a"

    git = git_revision()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return [
        f"# {title}",
        "",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"- command: `python {shlex.join(sys.argv)}`",
        f"- versions: torch {torch.__version__}, transformers {version('transformers')}, "
        f"accelerate {version('accelerate')}, tsllm {version('tsllm')}, python {sys.version.split()[0]}",
        f"- git: {git['sha']}{' (uncommitted changes)' if git['dirty'] else ''}",
        f"- torch threads: {torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op; "
        f"CPUs: {os.cpu_count()}; device: {'cuda' if torch.cuda.is_available() else 'cpu'}",
        f"- load average at start (1, 5, 15 min): {load}",
        f"- {note}",
        "",
    ]


def tile(x: torch.Tensor, n: int) -> torch.Tensor:
    """The first n rows of x, repeating x when it has fewer."""
    return x[torch.arange(n) % x.shape[0]]


def time_fit(model: torch.nn.Module, data: DatasetSplits, train_cfg: TrainConfig, *, warmup: int, epochs: int,
             seed: int) -> list[float]:
    """Seconds of each of `epochs` epochs of `fit` (after `warmup` epochs), from its per-epoch callback."""
    stamps: list[float] = []
    cfg = replace(train_cfg, epochs=warmup + epochs, resume=False)
    with tempfile.TemporaryDirectory(prefix="bench-enc-") as run_dir:
        stamps.append(time.perf_counter())
        fit(model, data, cfg, seed=seed, run_dir=run_dir, on_epoch=lambda _row: stamps.append(time.perf_counter()))
    durations = [b - a for a, b in zip(stamps[:-1], stamps[1:], strict=True)]
    return durations[warmup:]


def time_eval(model: torch.nn.Module, x: torch.Tensor, *, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of one inference-mode forward pass on x, `repeats` times after `warmup`."""
    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            t = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append(1000 * (time.perf_counter() - t))
    return times


def bench_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Build `name` from its config, count parameters, time training epochs and eval batches."""
    cfg = compose_cfg(f"encoder={name}", f"data.name={args.dataset}", f"seed={args.seed}", *args.set)
    assert cfg.reader.name == "mean" and cfg.encoder.name == name
    built = build(cfg)  # the splits and model a training run of this config has
    data, model = built.data, built.model
    train_cfg = TrainConfig.from_cfg(cfg.train)
    x_eval = tile(torch.from_numpy(data.test.x), train_cfg.eval_batch_size)
    with torch.no_grad():
        tokens, latent_dim = model.encoder(x_eval[:2]).shape[1:]
    epochs = time_fit(model, data, train_cfg, warmup=args.warmup, epochs=args.epochs, seed=cfg.seed)
    evals = time_eval(model, x_eval, warmup=1, repeats=args.eval_repeats)
    knobs = {k: v for k, v in cfg.encoder.items() if k not in ("name", "num_tokens")}
    return {
        "name": name, "knobs": ", ".join(f"{k}={v}" for k, v in knobs.items()), "tokens": tokens,
        "latent_dim": latent_dim, "params_encoder": sum(p.numel() for p in model.encoder.parameters()),
        "params_total": parameter_counts(model)["trainable"], "epoch_s": epochs, "eval_ms": evals,
        "data": data, "train_cfg": train_cfg,
    }


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The Markdown table of the benchmark."""
    eval_bs = rows[0]["train_cfg"].eval_batch_size
    lines = [
        f"| encoder | knobs (conf/encoder) | L x H | params (encoder) | params (+ head) | s / epoch, median "
        f"[min-max] | ms / eval batch of {eval_bs}, median [min-max] |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        e, v = r["epoch_s"], r["eval_ms"]
        lines.append(
            f"| {r['name']} | {r['knobs']} | {r['tokens']} x {r['latent_dim']} | {r['params_encoder']:,} | "
            f"{r['params_total']:,} | {statistics.median(e):.3f} [{min(e):.3f}-{max(e):.3f}] | "
            f"{statistics.median(v):.1f} [{min(v):.1f}-{max(v):.1f}] |")
    return lines


def add_common_args(parser: argparse.ArgumentParser, default_out: str) -> None:
    """Threads, seed and output file: the options every benchmark takes."""
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads; 0 = torch's default (see the module docstring)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=default_out, help="Markdown file to write ('' to skip)")


def start(parser: argparse.ArgumentParser, argv: list[str] | None, default_out: str) -> tuple[argparse.Namespace, float]:
    """Every benchmark's start: the common options parsed, logs quieted, threads set; (args, start time)."""
    add_common_args(parser, default_out)
    args = parser.parse_args(argv)
    quiet()
    set_threads(args.threads)
    return args, time.perf_counter()


def finish(lines: list[str], table_lines: list[str], started: float, out: str | None) -> None:
    """Every benchmark's end: its table and total wall time after ``lines``, printed and written to ``out``."""
    emit([*lines, "", *table_lines, "", f"Total benchmark wall time: {time.perf_counter() - started:.0f} s."], out)


def emit(lines: list[str], out: str | None) -> None:
    """Print the report and, when asked, write it to a file."""
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"Wrote {path}")


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run every family, print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS),
                        help="families to benchmark (default: all registered)")
    parser.add_argument("--dataset", default="GunPoint")
    parser.add_argument("--epochs", type=int, default=10, help="timed epochs per family")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs before them")
    parser.add_argument("--eval-repeats", type=int, default=10, help="timed eval batches (after one warm-up)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="further config overrides of every family, e.g. train.selection=min_train_loss")
    args, started = start(parser, argv, DEFAULT_OUT)
    rows = []
    for name in args.encoders:
        print(f"[{time.perf_counter() - started:6.0f} s] {name} ...", flush=True)
        rows.append(bench_one(name, args))
    d, tc = rows[0]["data"], rows[0]["train_cfg"]
    n_batches = -(-d.train.x.shape[0] // tc.batch_size)
    note = ("Absolute times depend on the machine's load (other jobs shared these CPUs); compare rows of one run.")
    lines = header("Encoder families, standalone", note)
    lines += [
        f"Standalone (mean-pool reader, linear head) on {d.name}: {d.train.x.shape[0]} train / "
        f"{d.val.x.shape[0] if d.val is not None else 0} val / {d.test.x.shape[0]} test, length {d.length}. "
        f"Each family with its conf/encoder defaults; H = the configured LLM's hidden size. "
        f"An epoch is tsllm's `fit` epoch: {n_batches} training batches of <= {tc.batch_size} "
        f"(forward, backward, Adam), BatchNorm refresh over TRAIN, one validation pass, one checkpoint; "
        f"median of {args.epochs} epochs after {args.warmup} warm-up. Eval: one inference-mode forward of "
        f"{tc.eval_batch_size} series, median of {args.eval_repeats} after one warm-up.",
    ]
    finish(lines, table(rows), started, args.out)


if __name__ == "__main__":
    main()
