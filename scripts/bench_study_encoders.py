"""Benchmark the study's encoders (``study_*``) beside ours: parameters and seconds per training epoch, at two H.

Each ``study_*`` family and our same-family encoder (study_attention beside our transformer, the paper's
Transformer row) is built from its conf/encoder/<name>.yaml through the real Hydra config in standalone
mode, with H set through a random LLM config of that hidden size (576: SmolLM2-135M; 4096: Llama-3.1-8B).

- Parameters are counted on a model built on the meta device (no memory), so every cell has them.
- An epoch is timed only where the model's training state fits ``--max-gb`` (16 bytes a parameter:
  weights, gradients and Adam's two moments): one pass over TRAIN in shuffled batches of
  ``train.batch_size`` (32), each a forward of encoder + mean pool + linear head, cross-entropy, backward
  and an Adam step. Unlike scripts/bench_encoders.py (tsllm's whole ``fit`` epoch) there is no
  validation pass and no checkpoint, whose disk time would swamp the compute of the large study models.
- Ratios (study / ours, same family, same H) come from the same run, so machine load affects both.

    python scripts/bench_study_encoders.py                       # writes results/bench/study_encoders.md
    python scripts/bench_study_encoders.py --families cnn --latent-dims 576 --out ''
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from bench_encoders import compose_cfg, finish, header, start

from tsllm.build import build_model, load_data
from tsllm.data import DatasetSplits
from tsllm.loop import seed_everything
from tsllm.model import TSClassifier

DEFAULT_OUT = "results/bench/study_encoders.md"
# Family -> (the study's encoder, ours). The study's "attention" is the paper's Transformer row.
FAMILIES = {
    "inception": ("study_inception", "inception"),
    "cnn": ("study_cnn", "cnn"),
    "resnet": ("study_resnet", "resnet"),
    "mlp": ("study_mlp", "mlp"),
    "transformer": ("study_attention", "transformer"),
}
BYTES_PER_PARAM = 16  # float32 weight + gradient + Adam's exp_avg and exp_avg_sq


def build_at(name: str, latent_dim: int, data: DatasetSplits, args: argparse.Namespace,
          device: str) -> tuple[TSClassifier, Any]:
    """The standalone classifier for encoder `name` at H = `latent_dim`, on `device` ('meta' or 'cpu')."""
    cfg = compose_cfg(f"encoder={name}", f"data.name={args.dataset}", f"seed={args.seed}",
                      "llm=tiny_random", f"llm.random_config.hidden_size={latent_dim}")
    assert cfg.reader.name == "mean" and cfg.encoder.name == name
    seed_everything(cfg.seed)
    with torch.device(device):
        model = build_model(cfg, data)
    return model, cfg


def time_epochs(model: TSClassifier, data: DatasetSplits, *, batch_size: int, lr: float, warmup: int,
                epochs: int, seed: int) -> list[float]:
    """Seconds of each of `epochs` training epochs over TRAIN (after `warmup` untimed ones)."""
    x, y = torch.from_numpy(data.train.x), torch.from_numpy(data.train.y).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    times = []
    for epoch in range(warmup + epochs):
        start = time.perf_counter()
        for idx in torch.randperm(len(x), generator=generator).split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
        if epoch >= warmup:
            times.append(time.perf_counter() - start)
    return times


def bench_one(name: str, latent_dim: int, data: DatasetSplits, args: argparse.Namespace) -> dict[str, Any]:
    """Count `name`'s parameters at H = `latent_dim` on the meta device; time epochs if it fits `--max-gb`."""
    meta, cfg = build_at(name, latent_dim, data, args, "meta")
    params = sum(p.numel() for p in meta.encoder.parameters())
    total = sum(p.numel() for p in meta.parameters())
    need_gb = BYTES_PER_PARAM * total / 2**30
    row: dict[str, Any] = {"name": name, "latent_dim": latent_dim, "tokens": cfg.encoder.num_tokens,
                           "params": params, "need_gb": need_gb, "epoch_s": None, "why": ""}
    if need_gb > args.max_gb:
        row["why"] = f"training state {need_gb:.1f} GB > --max-gb {args.max_gb:g}"
        return row
    model, _ = build_at(name, latent_dim, data, args, "cpu")
    row["epoch_s"] = time_epochs(model, data, batch_size=cfg.train.batch_size, lr=cfg.train.lr,
                                 warmup=args.warmup, epochs=args.epochs, seed=cfg.seed)
    row["batch_size"] = cfg.train.batch_size
    return row


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.3g}x" if a is not None and b else "n/a"


def table(rows: dict[tuple[str, int], dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """One line per family x H: the study's encoder, ours, and study / ours."""
    lines = [
        "| family | H | study encoder | L | params (study) | s / epoch (study), median [min-max] | ours | "
        "params (ours) | s / epoch (ours), median [min-max] | params study / ours | s / epoch study / ours |",
        "|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]

    def cell(r: dict[str, Any]) -> str:
        e = r["epoch_s"]
        return f"{statistics.median(e):.3f} [{min(e):.3f}-{max(e):.3f}]" if e else f"not run: {r['why']}"

    for family in args.families:
        study_name, ours_name = FAMILIES[family]
        for h in args.latent_dims:
            s, o = rows[study_name, h], rows[ours_name, h]
            med = [statistics.median(r["epoch_s"]) if r["epoch_s"] else None for r in (s, o)]
            lines.append(
                f"| {family} | {h} | {study_name} | {s['tokens']} | {s['params']:,} | {cell(s)} | {ours_name} | "
                f"{o['params']:,} | {cell(o)} | {ratio(s['params'], o['params'])} | {ratio(*med)} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, bench every (encoder, H), print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--latent-dims", nargs="+", type=int, default=[576, 4096], help="H values")
    parser.add_argument("--dataset", default="GunPoint")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per cell")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs before them")
    parser.add_argument("--max-gb", type=float, default=4.0,
                        help="time epochs only where weights + grads + Adam state fit this many GB")
    args, started = start(parser, argv, DEFAULT_OUT)
    cfg = compose_cfg(f"data.name={args.dataset}", f"seed={args.seed}")
    data = load_data(cfg)  # the splits a training run of this config has
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for family in args.families:
        for name in FAMILIES[family]:
            for h in args.latent_dims:
                print(f"[{time.perf_counter() - started:6.0f} s] {name} H={h} ...", flush=True)
                rows[name, h] = bench_one(name, h, data, args)

    note = "Absolute times depend on the machine's load (other jobs shared these CPUs); compare within one run."
    lines = header("The study's encoders beside ours, standalone", note)
    lines += [
        f"{data.name}: {data.train.x.shape[0]} TRAIN series (after the validation carve-out) of length "
        f"{data.length}. Each encoder with its conf/encoder defaults (L from the yaml; the MLPs give one token), "
        f"H = the LLM's hidden size. Parameters: the encoder's own, counted on the meta device. An epoch: one shuffled "
        f"pass over TRAIN in batches of {cfg.train.batch_size}, each forward (encoder, mean pool, linear head), "
        f"cross-entropy, backward and an Adam step; no validation, no checkpoint; median of {args.epochs} epochs "
        f"after {args.warmup} warm-up. Timed only where weights + gradients + Adam state "
        f"({BYTES_PER_PARAM} bytes a parameter) fit --max-gb {args.max_gb:g}.",
    ]
    finish(lines, table(rows, args), started, args.out)


if __name__ == "__main__":
    main()
