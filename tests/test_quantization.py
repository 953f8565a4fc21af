"""llm.quantization=8bit|4bit through bitsandbytes: refused in one line where it cannot run, exact where it can.

bitsandbytes 0.50.2 from PyPI runs both kinds on this CPU (checked 2026-12-07 with transformers 5.25), so the
hybrid path is tested here with a tiny random Llama, quantised as a pretrained one is loaded. bitsandbytes is
part of tsllm[dev], so these tests run wherever the suite does; the refusal tests fake its absence.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tsllm.build import build_model
from tsllm.config import LLMConfig
from tsllm.llm import BackboneError, freeze, load_llm
from tsllm.llm import loading as L
from tsllm.model import parameter_counts
from tsllm.preflight import check_command_line
from tsllm.readers import LLMReader
from tsllm.train import CONF_DIR, run

from conftest import dev_dependency, make_cfg


def tiny_spec(quantization: str | None) -> LLMConfig:
    return LLMConfig.from_cfg(dict(make_cfg("llm=tiny_random", f"llm.quantization={quantization or 'null'}").llm))


def without_bitsandbytes(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = L._installed_version
    monkeypatch.setattr(L, "_installed_version", lambda name: None if name == "bitsandbytes" else installed(name))


def test_without_bitsandbytes_a_quantised_run_is_refused_before_anything_exists(monkeypatch: pytest.MonkeyPatch,
                                                                                tmp_path: Path) -> None:
    without_bitsandbytes(monkeypatch)
    problem = check_command_line(CONF_DIR, ["mode=hybrid", "llm=tiny_random", "llm.quantization=4bit"])
    assert problem is not None and problem.startswith("llm.quantization=4bit needs bitsandbytes, which is not "
                                                      "installed: pip install 'tsllm[quant]'")
    # A standalone run never loads the LLM: its quantisation does not matter.
    assert check_command_line(CONF_DIR, ["mode=standalone", "llm.quantization=4bit"]) is None
    with pytest.raises(BackboneError, match="needs bitsandbytes"):
        load_llm(tiny_spec("8bit"))


def test_an_old_bitsandbytes_or_an_unsupported_device_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    bnb = dev_dependency("bitsandbytes")
    installed = L._installed_version
    monkeypatch.setattr(L, "_installed_version", lambda name: "0.41.0")
    assert "needs bitsandbytes>=" in L.quantization_problem("8bit") and "0.41.0 is installed" in L.quantization_problem("8bit")
    monkeypatch.setattr(L, "_installed_version", installed)
    monkeypatch.setattr(bnb, "supported_torch_devices", {"cuda"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert L.quantization_problem("4bit").startswith(f"llm.quantization=4bit: bitsandbytes {bnb.__version__} runs on "
                                                     "cuda, not on this cpu: it needs a CUDA GPU")


def dequantised_twin(quantised: torch.nn.Module) -> torch.nn.Module:
    """The same tiny model in float32 with each quantised Linear replaced by its dequantised weight."""
    bnb = dev_dependency("bitsandbytes")
    from bitsandbytes.functional import dequantize_4bit

    twin, _ = load_llm(tiny_spec(None))
    with torch.no_grad():
        for (_, q), (_, f) in zip(quantised.named_modules(), twin.named_modules(), strict=True):
            if isinstance(q, bnb.nn.Linear4bit):
                f.weight.copy_(dequantize_4bit(q.weight.data, q.weight.quant_state).float())
            elif isinstance(q, bnb.nn.Linear8bitLt):
                f.weight.copy_(q.weight.data.float() * q.weight.SCB[:, None] / 127)
    return freeze(twin)


@pytest.mark.parametrize(("kind", "tol"), [("4bit", 1e-5), ("8bit", 0.02)])
def test_quantised_llm_reads_latents_and_passes_their_gradient_on_cpu(kind: str, tol: float) -> None:
    # 4-bit dequantises each weight for a float32 matmul: equal to its dequantised twin. 8-bit also rounds
    # the input rows to int8 (through float16): within a few per mille.
    bnb = dev_dependency("bitsandbytes")
    llm, tokenizer = load_llm(tiny_spec(kind))
    llm = freeze(llm)
    layer = llm.model.layers[0].mlp.up_proj
    assert isinstance(layer, bnb.nn.Linear4bit if kind == "4bit" else bnb.nn.Linear8bitLt)
    assert L.quantization_of(llm) == kind and L.quantization_of(dequantised_twin(llm)) is None
    outputs = []
    for model in (llm, dequantised_twin(llm)):
        reader = LLMReader(model, tokenizer, num_tokens=4, template="Classify these: ", prefix_cache=True)
        z = torch.randn(3, 4, 64, generator=torch.Generator().manual_seed(0), requires_grad=True)
        with torch.no_grad():  # as an evaluation does, before the next training step
            reader(z[:1])
        out = reader(z)
        (grad,) = torch.autograd.grad(out.pow(2).sum(), z)
        outputs.append((out.detach(), grad))
    (out_q, grad_q), (out_f, grad_f) = outputs
    assert grad_f.norm() > 0
    assert (out_q - out_f).norm() / out_f.norm() < tol
    # Without tsllm.llm.loading._keep_backward, bitsandbytes' repacked CPU kernel dropped this gradient (1.0).
    assert (grad_q - grad_f).norm() / grad_f.norm() < tol


def test_a_4bit_hybrid_run_trains_on_cpu(tmp_path: Path) -> None:
    dev_dependency("bitsandbytes")
    record = run(make_cfg("mode=hybrid", "llm=tiny_random", "llm.quantization=4bit", "encoder=mlp", "train.epochs=2"),
                 run_dir=tmp_path / "run")
    assert record["status"] == "finished" and record["config"]["llm"]["quantization"] == "4bit"
    assert record["history"][-1]["train_loss"] != record["history"][0]["train_loss"]


@pytest.mark.parametrize("kind", ["8bit", "4bit"])
def test_a_quantised_llm_counts_the_parameters_it_stands_for(kind: str) -> None:
    # A 4-bit weight stores two parameters a byte: counted by numel, its LLM looked half as large as it is.
    dev_dependency("bitsandbytes")
    counts = {q: parameter_counts(build_model(make_cfg("mode=hybrid", "llm=tiny_random", "encoder=mlp",
                                                       f"llm.quantization={q or 'null'}"),
                                              SimpleNamespace(name="x", n_channels=1, length=24, num_classes=2)))
              for q in (None, kind)}
    assert counts[kind] == counts[None]
    assert counts[None]["frozen"] > 0
