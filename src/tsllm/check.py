"""`python -m tsllm.check`: one command for the first look at a new machine.

    python -m tsllm.check                     # a GPU with the Llama-3.1-8B weights: the study's backbone
    python -m tsllm.check --llm smollm2_135m  # any machine: the embedded backbone

A short hybrid run of GunPoint (Inception encoder, the study's prompt), built by :mod:`tsllm.build` and
stepped by the loop's own step (:class:`tsllm.loop.Fit`), in each storage of the LLM this machine should
serve: on a GPU bf16 and 4-bit (batch 32, the study's), on a CPU float32 and, briefly (one timed step),
bf16 and 4-bit where bitsandbytes runs here (batch 8, to stay within minutes). Each storage runs with and without the prompt's prefix cache, and the check prints:

* seconds per training step and LLM tokens per second;
* the step's FLOPs (counted as the loop counts them) per second, and the model FLOPs utilisation against the
  device's peak from :data:`PEAK_TFLOPS` (a CPU or an unknown device: against the float32 matmul rate
  measured here now, and it says so);
* the peak memory of a training step against :mod:`tsllm.memory`'s estimate (the planner's numbers): on a
  GPU the allocator's peak against weights, trainable state and the step's activations; on a CPU what the
  first step allocates (torch's profiler) against the gradients, Adam's moments and the activations (the
  weights were there before; scripts/bench_memory.py compares the whole estimate with fresh processes' RSS);
* whether the prefix cache is exact: the first step's loss and the encoder's gradients with and without it.

It exits 1 when the prefix cache is not exact, a loss is not finite, or a peak memory is off the estimate by
more than ``MEMORY_TOLERANCE`` (estimates under ``MEMORY_FLOOR_MIB`` are shown, not judged); 2 when the
backbone cannot be loaded.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch.utils.flop_counter import FlopCounterMode

from tsllm.build import build, load_backbone, load_data
from tsllm.config import LLMConfig, TrainConfig
from tsllm.llm import BackboneError, load_config
from tsllm.llm.loading import quantization_problem
from tsllm.loop import Fit
from tsllm.memory import footprint, llm_storage
from tsllm.train import CONF_DIR

log = logging.getLogger("tsllm.check")
MIB = 2**20
MEMORY_TOLERANCE = 0.25  # the planner's estimate against the measured peak
# Below this the overheads the estimate leaves out (a dequantised 4-bit weight, autocast's copies, the loss)
# are of the same size as what it counts (a tiny random LLM): such peaks are shown, not judged.
MEMORY_FLOOR_MIB = 64
#: The prefix cache's largest relative difference (first step's loss; encoder gradients) per compute dtype.
EXACT = {torch.float32: 1e-4, torch.bfloat16: 1e-1}  # bf16: ~3e-2 seen on SmolLM2; a wrong position is O(1)
#: Dense peak TFLOP/s by device name (vendor datasheets, without sparsity): (pattern, bf16, float32).
PEAK_TFLOPS: tuple[tuple[str, float, float], ...] = (
    (r"H100.*PCIe", 756.0, 51.0), (r"H100.*NVL", 835.0, 60.0), (r"H100|H200|GH200", 989.0, 67.0),
    (r"A100", 312.0, 19.5), (r"L40S", 362.0, 91.6), (r"L40\b", 181.0, 90.5), (r"\bA10\b", 125.0, 31.2),
    (r"\bL4\b", 121.0, 30.3), (r"RTX 4090", 165.2, 82.6), (r"RTX A6000", 154.8, 38.7),
)
STUDY = ["mode=hybrid", "encoder=inception", "data.name=GunPoint", "logger=none", "diagnostics=none"]


def peak_tflops(device_name: str, dtype: torch.dtype) -> float | None:
    """The device's dense peak for ``dtype`` (bf16 for 4-bit, which computes in bf16), or None if unknown."""
    for pattern, bf16, fp32 in PEAK_TFLOPS:
        if re.search(pattern, device_name):
            return bf16 if dtype in (torch.bfloat16, torch.float16) else fp32
    return None


@dataclass(frozen=True)
class Storage:
    """How the LLM is stored and computed in one pair of variants (prefix cache on and off)."""

    label: str
    overrides: tuple[str, ...]
    steps: int
    batch: int


def storages(gpu: bool, steps: int) -> list[Storage]:
    """What this machine should serve: bf16 and 4-bit on a GPU; float32 and, briefly, bf16 and 4-bit on a CPU."""
    bf16 = ("llm.dtype=bfloat16", "train.precision=bf16")
    if gpu:
        return [Storage("bf16", bf16, steps, 32), Storage("4bit", ("llm.quantization=4bit", "train.precision=bf16"),
                                                          steps, 32)]
    out = [Storage("fp32", ("llm.dtype=float32", "train.precision=fp32"), steps, 8), Storage("bf16", bf16, 1, 8)]
    if quantization_problem("4bit") is None:  # bitsandbytes runs here (tests/test_quantization.py)
        out.append(Storage("4bit", ("llm.quantization=4bit", "train.precision=fp32"), 1, 8))
    return out


def choose_llm(gpu: bool) -> str:
    """Llama-3.1-8B where there is a GPU and its weights load here; SmolLM2-135M otherwise."""
    if not gpu:
        return "smollm2_135m"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        spec = LLMConfig.from_cfg(compose(config_name="train", overrides=["llm=llama31_8b"]).llm)
    try:
        load_config(spec)
        return "llama31_8b"
    except BackboneError as e:
        log.warning("No Llama-3.1-8B here (%s): checking SmolLM2-135M instead", str(e).splitlines()[0][:160])
        return "smollm2_135m"


@dataclass
class Measured:
    """One variant: a storage with the prefix cache on or off."""

    label: str
    seconds: float          # per step (median)
    tokens: int             # LLM tokens per step
    flops: float            # per step
    peak_mib: float         # GPU: the allocator's peak; CPU: the peak of what the first step allocates
    estimate_mib: float     # what tsllm.memory says the measured peak should be
    loss: float
    grads: list[torch.Tensor]


def allocated_peak(run) -> float:
    """Peak bytes torch allocated on the CPU beyond what was allocated before, while ``run()`` ran (from the
    profiler's memory events: what torch.cuda.max_memory_allocated is on a GPU, without the heap's slack)."""
    import json

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    with tempfile.TemporaryDirectory(prefix="tsllm-check-") as tmp:
        prof.export_chrome_trace(f"{tmp}/trace.json")
        events = json.loads(Path(f"{tmp}/trace.json").read_text())["traceEvents"]
    return max((e["args"]["Total Allocated"] for e in events
                if e.get("name") == "[memory]" and e["args"].get("Device Type") == 0), default=0)


def run_variant(label: str, cfg: DictConfig, data, backbone, batch: int, steps: int, gpu: bool) -> Measured:
    """Build the run (tsllm.build), step it with the loop's own step, time and measure it."""
    model = build(cfg, llm=backbone, data=data).model  # the loop's Accelerator follows each variant's precision
    with tempfile.TemporaryDirectory(prefix="tsllm-check-") as tmp:
        loop = Fit(model, data, TrainConfig.from_cfg(cfg.train), seed=cfg.seed, run_dir=Path(tmp), on_epoch=None)
        device = next(p for p in loop.base.parameters() if p.requires_grad).device
        x, y = (torch.from_numpy(a[:batch]).to(device) for a in (data.train.x, data.train.y))
        loop.warm_up(x[:1])  # the prompt's key/value cache, built once outside the count, as the loop does
        if gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with FlopCounterMode(display=False) as counter:  # the first step, as the loop counts it
            if gpu:
                _, loss = loop.step(x, y, 0)
            else:
                first: list = []
                peak = allocated_peak(lambda: first.extend(loop.step(x, y, 0))) / MIB
                loss = first[1]
        grads = [p.grad.detach().float().cpu().clone() for p in loop.base.encoder.parameters()]
        times = []
        for _ in range(steps):
            if gpu:
                torch.cuda.synchronize()
            tic = time.perf_counter()
            loop.step(x, y, 0)
            if gpu:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - tic)
        if gpu:
            peak = torch.cuda.max_memory_allocated() / MIB
    dtype, quantization = llm_storage(model)
    m = footprint(model, data.n_channels, data.length).at(batch_size=batch, eval_batch_size=batch, dtype=dtype,
                                                          quantization=quantization)
    # A GPU's peak holds everything; the CPU's counts what the first step allocates: not the weights (the LLM's
    # and the trainable part's), but the gradients, Adam's moments and the activations.
    expected = m.training_step if gpu else m.trainable * 3 // 4 + m.step
    tokens = model.reader.tokens_per_example * batch
    return Measured(label, sorted(times)[len(times) // 2], tokens, float(counter.get_total_flops()), peak,
                    expected / MIB, float(loss.detach()), grads)


def relative(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    num = math.sqrt(sum(float((x - y).pow(2).sum()) for x, y in zip(a, b, strict=True)))
    return num / max(math.sqrt(sum(float(y.pow(2).sum()) for y in b)), 1e-30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsllm.check", description=__doc__.splitlines()[0])
    parser.add_argument("--llm", default=None, help="the llm config to check (default: llama31_8b on a GPU where "
                                                    "its weights are, smollm2_135m otherwise)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant (default: 10 on a GPU, 2 "
                                                                "on a CPU; bf16 and 4-bit on a CPU take 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("transformers", "accelerate", "bitsandbytes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    gpu = torch.cuda.is_available()
    llm = args.llm or choose_llm(gpu)
    name = torch.cuda.get_device_name() if gpu else "cpu"
    print(f"tsllm.check on {name}: llm={llm}, {' '.join(STUDY)}")
    if not gpu:
        print("no GPU here: the same checks with SmolLM2-135M on this CPU (float32; bf16 and 4-bit briefly)"
              if llm == "smollm2_135m" else f"no GPU here: the checks run {llm} on this CPU")
    rate_here = None
    failures: list[str] = []
    rows = []
    for storage in storages(gpu, args.steps or (10 if gpu else 2)):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfgs = {cached: compose(config_name="train", overrides=[*STUDY, f"llm={llm}", *storage.overrides,
                                                                    f"reader.prefix_cache={str(cached).lower()}"])
                    for cached in (True, False)}
        data = load_data(cfgs[True])
        try:
            backbone = load_backbone(cfgs[True])
        except BackboneError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        results = {cached: run_variant(f"{storage.label}, prefix cache {'on' if cached else 'off'}", cfg, data,
                                       backbone, storage.batch, storage.steps, gpu) for cached, cfg in cfgs.items()}
        compute = llm_compute_dtype(backbone[0])
        loss_diff = abs(results[True].loss - results[False].loss) / max(abs(results[False].loss), 1e-30)
        grad_diff = relative(results[True].grads, results[False].grads)
        exact = max(loss_diff, grad_diff) <= EXACT[compute]
        if not exact:
            failures.append(f"{storage.label}: the prefix cache changes the step (loss {loss_diff:.1e}, "
                            f"gradients {grad_diff:.1e}; allowed {EXACT[compute]:.0e})")
        if gpu:
            peak = peak_tflops(name, compute)
        else:  # a CPU has no datasheet peak here: its float32 matmul rate, measured once
            if rate_here is None:
                from tsllm.plan import cpu_throughput

                rate_here = cpu_throughput() / 1e12
            peak = rate_here
        for r in results.values():
            if not math.isfinite(r.loss):
                failures.append(f"{r.label}: the loss is {r.loss}")
            off = r.peak_mib / r.estimate_mib - 1
            if abs(off) > MEMORY_TOLERANCE and r.estimate_mib >= MEMORY_FLOOR_MIB:
                failures.append(f"{r.label}: peak memory {r.peak_mib:.0f} MiB, estimate {r.estimate_mib:.0f} MiB "
                                f"({off:+.0%}; allowed {MEMORY_TOLERANCE:.0%})")
            achieved = r.flops / r.seconds / 1e12
            rows.append((r.label, storage.batch, r.seconds, r.tokens / r.seconds, achieved,
                         None if peak is None else achieved / peak, r.peak_mib, r.estimate_mib, loss_diff, grad_diff,
                         exact))
            print(f"{r.label}: {r.seconds:.3f} s/step", flush=True)
        del backbone, results
        gc.collect()
        if gpu:
            torch.cuda.empty_cache()
    print_table(rows, gpu, name, rate_here)
    if gpu and peak_tflops(name, torch.bfloat16) is None:
        print(f"unknown device {name!r}: no peak in tsllm.check.PEAK_TFLOPS, so no MFU")
    for failure in failures:
        print(f"MISMATCH: {failure}")
    print("check: " + ("passed" if not failures else f"{len(failures)} mismatch(es)"))
    return 1 if failures else 0


def llm_compute_dtype(llm: torch.nn.Module) -> torch.dtype:
    """The dtype the LLM computes in: its stored dtype, or for 4-bit the compute dtype it was loaded with."""
    quant = getattr(llm.config, "quantization_config", None)
    compute = getattr(quant, "bnb_4bit_compute_dtype", None) if quant is not None else None
    if isinstance(compute, torch.dtype) and getattr(quant, "load_in_4bit", False):
        return compute
    return llm.get_input_embeddings().weight.dtype


def print_table(rows: list[tuple], gpu: bool, name: str, rate_here: float | None) -> None:
    against = (f"{name}'s dense peak (tsllm.check.PEAK_TFLOPS)" if gpu else
               f"this CPU's float32 matmul rate measured now, {rate_here:.3g} TFLOP/s (no datasheet peak for a CPU)")
    memory = ("the allocator's peak against tsllm.memory's estimate of a step" if gpu else
              "what the first step allocates (torch's profiler) against the estimate's gradients, Adam moments and "
              "step activations")
    print(f"\nMFU against {against}; memory: {memory}; FLOPs as the loop counts them (on a CPU torch's counter "
          "leaves out SDPA attention)")
    print(f"{'variant':<26} {'batch':>5} {'s/step':>8} {'tokens/s':>9} {'TFLOP/s':>8} {'MFU':>7} "
          f"{'peak MiB':>9} {'est. MiB':>9} {'cache: loss / grads':>21}")
    for label, batch, seconds, tps, tflops, mfu, peak, est, loss_d, grad_d, exact in rows:
        cache = f"{loss_d:.1e} / {grad_d:.1e} {'ok' if exact else 'NO'}"
        mfu_text = "n/a" if mfu is None else f"{mfu:.1%}"
        print(f"{label:<26} {batch:>5} {seconds:>8.3f} {tps:>9.0f} {tflops:>8.3g} {mfu_text:>7} {peak:>9.0f} "
              f"{est:>9.0f} {cache:>21}")


if __name__ == "__main__":
    sys.exit(main())
