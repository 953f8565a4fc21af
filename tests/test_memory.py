"""tsllm.memory: the estimate's parts against what autograd keeps, what a loaded model stores, and by hand.

The whole estimate against measured peaks (SmolLM2 runs on this CPU, their peak RSS) is a benchmark:
scripts/bench_memory.py -> results/bench/memory.md.
"""

from __future__ import annotations

import json
from importlib import resources
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from tsllm import plan as P
from tsllm.build import build_model
from tsllm.config import LLMConfig, TrainConfig
from tsllm.llm import expanded_cache, freeze, load_llm, prefix_key_values
from tsllm.memory import GIB, Footprint, LLMShape, Memory, _lora_inputs, footprint, out_of_memory_advice
from tsllm.readers.llm import add_lora

from conftest import dev_dependency, make_cfg

DIMS = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=100)


def saved_by_autograd(model: torch.nn.Module, run) -> int:
    """Bytes of the tensors autograd saves while ``run()`` runs, each storage once, parameters aside."""
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            seen.setdefault(storage.data_ptr(), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(seen.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("cached", [False, True], ids=["full", "prefix_cache"])
def test_per_layer_formula_is_what_autograd_keeps_through_a_frozen_llama(dtype: torch.dtype, cached: bool) -> None:
    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", **DIMS)
    llm = freeze(AutoModelForCausalLM.from_config(config, dtype=dtype))
    decoder, (b, t, p) = llm.model, (3, 5, 7)
    latents = torch.randn(b, t, 64, dtype=dtype, requires_grad=True)

    def forward() -> None:
        if cached:  # the reader's path: the prompt's keys and values computed once, positions continue
            cache = expanded_cache(prefix_key_values(decoder, input_ids=torch.arange(p)[None]), b, config)
            decoder(inputs_embeds=latents, position_ids=torch.arange(p, p + t)[None], use_cache=True, cache=cache)
        else:
            prompt = decoder.embed_tokens(torch.arange(p)[None]).expand(b, -1, -1)
            decoder(inputs_embeds=torch.cat([prompt, latents], 1), use_cache=False)

    expected = LLMShape.of(config).saved(b, t if cached else p + t, p + t, dtype.itemsize, repeated_kv=cached)
    assert saved_by_autograd(llm, forward) == expected


def test_lora_keeps_each_adapted_projections_input_twice_and_its_rank_r_part() -> None:
    config = AutoConfig.for_model("llama", **DIMS)
    latents = torch.randn(3, 5, 64, requires_grad=True)
    saved = {}
    for lora in (False, True):
        torch.manual_seed(0)
        llm = freeze(AutoModelForCausalLM.from_config(config))
        if lora:
            llm = add_lora(llm, r=8, alpha=16, dropout=0.05, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"])
            llm.train()
        saved[lora] = saved_by_autograd(llm, lambda llm=llm: llm.model(inputs_embeds=latents, use_cache=False))
    inputs = _lora_inputs(llm.model)
    assert inputs == [(64, 8), (64, 8), (64, 8), (160, 8)]
    assert saved[True] - saved[False] == 3 * 15 * sum(2 * i + r for i, r in inputs) * 4


def tiny_hybrid(*overrides: str):
    cfg = make_cfg("mode=hybrid", "llm=tiny_random", "encoder=mlp", *overrides)
    return build_model(cfg, SimpleNamespace(name="x", n_channels=2, length=24, num_classes=3))


def test_the_estimate_adds_up_by_hand_on_a_tiny_config() -> None:
    model = tiny_hybrid()
    fp = footprint(model, 2, 24)
    h, i, layers, kv = 64, 128, 2, 2 * 16  # conf/llm/tiny_random.yaml: 4 heads of 16, 2 key/value heads
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i  # q, o; k, v; gate, up, down
    assert (fp.linear_weights, fp.linear_rows) == (layers * per_layer, layers * (2 * h + 2 * kv + 2 * i + h))
    vocab = model.reader.llm.config.vocab_size
    assert fp.other_weights == 2 * vocab * h + (2 * layers + 1) * h  # embeddings, lm_head (untied); the norms
    assert fp.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (fp.prompt, fp.tail, fp.prefix_cache) == (model.reader.prompt_ids.numel(), 1 + 1, True)  # 1 latent, pad
    n = fp.linear_weights
    assert fp.weight_bytes(torch.float32, None) == 4 * (n + fp.other_weights)
    assert fp.weight_bytes(torch.bfloat16, "8bit") == n + 4 * fp.linear_rows + 2 * fp.other_weights
    assert fp.weight_bytes(torch.bfloat16, "4bit") == n // 2 + 4 * (n // 64) + 2 * fp.other_weights
    m = fp.at(batch_size=8, eval_batch_size=16, dtype=torch.float32, quantization=None)
    shape, keys = LLMShape.of(model.reader.llm.config), fp.prompt + fp.tail
    step = 8 * fp.trainable_saved + shape.saved(8, 2, keys, 4, repeated_kv=True) + max(
        shape.backward_working_set(16, 4), shape.kv_cache(8, keys, 4))
    evaluation = shape.inference(16 * 2, 4) + shape.kv_cache(16, keys, 4)
    assert m == Memory(weights=fp.weight_bytes(torch.float32, None), trainable=16 * fp.trainable_params, step=step,
                       evaluation=evaluation)
    assert m.total == m.weights + m.trainable + max(step, evaluation)
    # The encoder's saved tensors, measured on the meta device: the MLP keeps its input and each hidden layer.
    assert fp.trainable_saved > 4 * 2 * 24


def test_a_standalone_model_has_no_llm_weights_and_keeps_its_whole_graph() -> None:
    model = build_model(make_cfg("mode=standalone", "encoder=cnn", "llm=tiny_random"),
                        SimpleNamespace(name="x", n_channels=1, length=32, num_classes=2))
    fp = footprint(model, 1, 32)
    assert fp.llm is None and fp.weight_bytes(torch.float32, None) == 0
    x = torch.randn(1, 1, 32)
    model.train()
    assert fp.trainable_saved == saved_by_autograd(model, lambda: model(x))  # the meta count equals the real one


@pytest.mark.parametrize("kind", ["8bit", "4bit"])
def test_quantised_weights_are_what_bitsandbytes_stores(kind: str) -> None:
    bnb = dev_dependency("bitsandbytes")
    spec = LLMConfig.from_cfg(dict(make_cfg("llm=tiny_random", f"llm.quantization={kind}").llm))
    llm, tokenizer = load_llm(spec)
    model = tiny_hybrid(f"llm.quantization={kind}")
    stored = sum(p.numel() * p.element_size() for p in llm.parameters())
    for m in llm.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            stored += m.weight.quant_state.absmax.numel() * 4
        elif isinstance(m, bnb.nn.Linear8bitLt):
            stored += m.weight.SCB.numel() * 4
    assert footprint(model, 2, 24).weight_bytes(torch.float32, kind) == pytest.approx(stored, rel=0.001)


def llama31_8b_hybrid() -> torch.nn.Module:
    """The published config on the meta device (no weights), under the study's encoder and prompt."""
    config = json.loads(resources.files("tsllm").joinpath("assets/llama31_8b_config.json").read_text())
    with torch.device("meta"):
        llm, tokenizer = load_llm(LLMConfig(name="llama31_8b", random_config=config))
        return build_model(make_cfg("mode=hybrid", "encoder=inception", "llm=llama31_8b"),
                           SimpleNamespace(name="GunPoint", n_channels=1, length=150, num_classes=2),
                           llm=(freeze(llm), tokenizer))


def test_llama31_8b_in_bf16_fits_24_gib_and_in_float32_only_80() -> None:
    # The byte-level tokenizer of a random config makes the prompt 61 tokens (Llama-3's: about 16).
    fp = footprint(llama31_8b_hybrid(), 1, 150)
    assert fp.linear_weights + fp.other_weights == pytest.approx(8.03e9, rel=0.002)
    bf16 = fp.at(batch_size=32, eval_batch_size=128, dtype=torch.bfloat16, quantization=None)
    assert bf16.weights == 2 * (fp.linear_weights + fp.other_weights)
    assert bf16.fitting() == (24, 40, 80) and 1 * GIB < bf16.step < 5 * GIB
    assert fp.at(batch_size=32, eval_batch_size=128, dtype=torch.float32, quantization=None).fitting() == (80,)
    four = fp.at(batch_size=32, eval_batch_size=128, dtype=torch.bfloat16, quantization="4bit")
    assert 5 * GIB < four.weights < 6 * GIB  # 7.0 B decoder weights at 4.5 bits, 1.05 B at bf16


def test_out_of_memory_advice_gives_the_estimate_and_what_would_fit() -> None:
    model = llama31_8b_hybrid()
    data = SimpleNamespace(n_channels=1, length=150, train=SimpleNamespace(y=torch.zeros(40)))
    text = out_of_memory_advice(model, data, TrainConfig(batch_size=32))  # stored in float32 on the meta device
    assert text.startswith("out of accelerator memory at train.batch_size=32, train.eval_batch_size=128, "
                           "train.precision=auto, llm.quantization=null: tsllm.memory estimates 3")
    assert "on a 24 GiB GPU it suggests llm.dtype=bfloat16 train.precision=bf16 (18." in text
    assert "or llm.quantization=8bit (1" in text and "suggests train.batch_size" not in text  # halving: 30 GiB left


def test_footprint_prices_batch_sizes_without_rebuilding() -> None:
    fp = Footprint(linear_weights=0, linear_rows=0, other_weights=0, trainable_params=10, trainable_saved=100)
    one, two = (fp.at(batch_size=b, eval_batch_size=1, dtype=torch.float32, quantization=None) for b in (1, 2))
    assert (one.step, two.step, one.trainable) == (100, 200, 160)


def test_plan_prints_memory_and_the_gpus_that_hold_it(capsys: pytest.CaptureFixture) -> None:
    args = ["--no-measure", "--tflops", "400", "mode=hybrid", "llm=llama31_8b", "encoder=mlp", "data.name=GunPoint"]
    assert P.main(args) == 0
    out = capsys.readouterr().out
    assert "peak_gib  fits_gib" in out and "24,40,80" in out
    assert "memory: the largest run needs 15." in out and "all 1 estimated runs fit 24, 40, 80 GiB" in out
    assert P.main(["--json", *args]) == 0
    plan = json.loads(capsys.readouterr().out)
    run = plan["runs"][0]
    assert 15 < run["memory_gib"] < 16 and run["fits_gib"] == "24,40,80" and run["weights_gib"] == pytest.approx(
        2 * 8.03e9 / GIB, rel=0.002)
    assert plan["summary"][0]["fits_gib"] == "24,40,80"
