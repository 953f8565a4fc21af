"""python -m tsllm.check: its pieces with a tiny random LLM; the whole command with SmolLM2 (slow)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tsllm import check


@pytest.mark.parametrize(("name", "dtype", "peak"), [
    ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989.0), ("NVIDIA H100 PCIe", torch.bfloat16, 756.0),
    ("NVIDIA H200", torch.bfloat16, 989.0), ("NVIDIA A100-SXM4-80GB", torch.float32, 19.5),
    ("NVIDIA A100 80GB PCIe", torch.bfloat16, 312.0), ("NVIDIA L40S", torch.bfloat16, 362.0),
    ("NVIDIA A10", torch.bfloat16, 125.0), ("NVIDIA L4", torch.bfloat16, 121.0),
    ("NVIDIA GeForce RTX 4090", torch.bfloat16, 165.2),
    ("NVIDIA A10G", torch.bfloat16, None), ("Tesla T4", torch.bfloat16, None),  # not in the table: said so
])
def test_device_peaks_are_found_by_name(name: str, dtype: torch.dtype, peak: float | None) -> None:
    assert check.peak_tflops(name, dtype) == peak


def test_the_check_passes_with_a_tiny_random_llm(capsys: pytest.CaptureFixture) -> None:
    assert check.main(["--llm", "tiny_random", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "no GPU here: the checks run tiny_random on this CPU" in out and "check: passed" in out
    labels = [f"{s}, prefix cache {c}" for s in ("fp32", "bf16") for c in ("on", "off")]
    assert all(label in out for label in labels)
    assert "4bit, prefix cache on" in out or check.quantization_problem("4bit") is not None
    assert "MFU against this CPU's float32 matmul rate measured now" in out


def test_a_prefix_cache_that_drops_the_prompt_fails_the_check(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    from transformers import DynamicCache

    import tsllm.readers.llm as reader_module

    monkeypatch.setattr(check, "storages", lambda gpu, steps, real=check.storages: real(gpu, steps)[:1])  # fp32
    monkeypatch.setattr(reader_module, "expanded_cache", lambda kv, batch, config: DynamicCache(config=config))
    assert check.main(["--llm", "tiny_random", "--steps", "1"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH: fp32: the prefix cache changes the step" in out and "check: 1 mismatch(es)" in out


@pytest.mark.slow
def test_python_m_tsllm_check_passes_on_this_machine() -> None:
    # SmolLM2-135M on a CPU (float32, bf16 and 4-bit): about 2-4 minutes on 2 shared cores.
    done = subprocess.run([sys.executable, "-m", "tsllm.check"], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "check: passed" in done.stdout and "llm=smollm2_135m" in done.stdout
