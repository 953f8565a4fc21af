"""Readers: the contract every reader meets, and the controls built on them (issue: controls)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from tsllm.build import build_model
from tsllm.config import ConfigError, LLMConfig
from tsllm.llm import BackboneError, freeze, load_llm, prompt_ids_for
from tsllm.readers import LLMReader, ReaderContext, build_reader
from tsllm.train import run

from conftest import CrashAfter, make_cfg

CONF_READERS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "reader").glob("*.yaml"))
LLM_READERS = {"llm"}
SHAPE = SimpleNamespace(name="ItalyPowerDemand", n_channels=1, length=24, num_classes=2)


def tiny_spec(**overrides) -> LLMConfig:
    cfg = make_cfg("llm=tiny_random", *(f"llm.{k}={v}" for k, v in overrides.items()))
    return LLMConfig.from_cfg(OmegaConf.to_container(cfg.llm, resolve=True))


def ctx(num_tokens: int = 4, **spec) -> ReaderContext:
    return ReaderContext(spec=tiny_spec(**spec), hidden_size=64, num_tokens=num_tokens, num_classes=2,
                         dataset="ItalyPowerDemand", seed=0)


@pytest.fixture(scope="module")
def tiny():
    llm, tok = load_llm(tiny_spec())
    return freeze(llm), tok


@pytest.mark.parametrize("name", [n for n in CONF_READERS if not n.startswith("text")])
def test_reader_contract(name: str) -> None:
    """Every reader in conf/reader: [B, L, H] -> [B, H], finite gradients to the latents, frozen parts unchanged."""
    cfg = make_cfg(f"reader={name}", "llm=tiny_random")
    reader = build_reader(cfg.reader, ctx())
    z = torch.randn(3, 4, 64, requires_grad=True)
    frozen = {n: p.clone() for n, p in reader.named_parameters() if not p.requires_grad}
    trainable = [p for p in reader.parameters() if p.requires_grad]
    reader.train()
    out = reader(z)
    assert out.shape == (3, 64) and out.dtype == torch.float32 and torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    if trainable:
        torch.optim.SGD(trainable, lr=0.1).step()
    after = dict(reader.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in frozen.items())
    assert (name in LLM_READERS) == bool(frozen)  # only the LLM readers hold frozen weights


def test_unknown_reader_lists_the_choices() -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="attention"):
        make_cfg("reader=no_such_reader")


def test_unknown_llm_key_raises() -> None:
    with pytest.raises(ConfigError, match=r"llm\.num_layer: unknown key; llm tiny_random takes .*num_layers"):
        LLMConfig.from_cfg({**OmegaConf.to_container(make_cfg("llm=tiny_random").llm), "num_layer": 4})


# Truncated LLM ------------------------------------------------------------------------------------------

def test_truncated_llm_has_k_layers_and_the_first_k_states(tiny) -> None:
    full, _ = tiny
    short, _ = load_llm(tiny_spec(num_layers=1))
    assert len(short.model.layers) == 1 and short.config.num_hidden_layers == 1
    assert sum(p.numel() for p in short.parameters()) < sum(p.numel() for p in full.parameters())
    ids = torch.randint(3, 200, (2, 7))
    with torch.no_grad():
        states = full.model(input_ids=ids, output_hidden_states=True).hidden_states  # (N+1) x (B, T, H)
        got = short.model(input_ids=ids).last_hidden_state
    # The truncated model's output is the full model's state after layer k, through the same final norm.
    torch.testing.assert_close(got, full.model.norm(states[1]))


@pytest.mark.parametrize("k", [0, 3])
def test_truncation_outside_range_names_n(k: int) -> None:
    with pytest.raises(BackboneError, match=r"llm.num_layers=.*expected 1\.\.2"):
        load_llm(tiny_spec(num_layers=k))


def test_truncated_run_counts_fewer_frozen_parameters(tmp_path: Path) -> None:
    full = run(make_cfg("mode=hybrid", "llm=tiny_random", "encoder=mlp"), run_dir=tmp_path / "full")
    short = run(make_cfg("mode=hybrid", "llm=tiny_random", "encoder=mlp", "llm.num_layers=1"), run_dir=tmp_path / "k1")
    assert short["params"]["frozen"] < full["params"]["frozen"]
    assert short["arm"] == "llm[weights=random,num_layers=1]" and short["config_hash"] != full["config_hash"]


# Prefix cache under the controls ---------------------------------------------------------------------------

def _cache_equals_uncached(**kwargs) -> None:
    cfg = make_cfg("mode=hybrid", "llm=tiny_random", *(f"{k}={v}" for k, v in kwargs.items()))
    spec_kwargs = {"num_layers": cfg.llm.num_layers} if cfg.llm.num_layers else {}
    c = ctx(**spec_kwargs)
    cached = build_reader(cfg.reader, c)
    uncached_cfg = OmegaConf.merge(cfg.reader, {"prefix_cache": False})
    uncached = build_reader(uncached_cfg, c)
    uncached.load_state_dict(cached.state_dict())
    cached.eval(), uncached.eval()
    z = torch.randn(3, 4, 64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    a, b = cached(z), uncached(z)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    if a.requires_grad:  # align=nearest at evaluation is a lookup: no gradient to compare
        (ga,) = torch.autograd.grad(a.pow(2).sum(), z)
        (gb,) = torch.autograd.grad(b.pow(2).sum(), z)
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("overrides", [
    {"llm.num_layers": 1},
    {"reader.prompt": "none"},
    {"reader.prompt": "random"},
    {"reader.suffix": '"[PAD]"'},
    {"align": "scale"},
    {"align": "prototypes", "reader.align.num_prototypes": 7},
    {"align": "nearest"},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_prefix_cache_equals_uncached_under(overrides: dict) -> None:
    _cache_equals_uncached(**overrides)


# Order of the latents ----------------------------------------------------------------------------------------

def test_shuffle_is_a_permutation_fixed_at_eval_and_fresh_in_training() -> None:
    cfg = make_cfg("reader.shuffle_latents=eval")
    reader = build_reader(cfg.reader, ctx(num_tokens=8))
    z = torch.arange(8.0).view(1, 8, 1).expand(2, 8, 3)
    reader.eval()
    seen = reader.order(z)
    assert sorted(seen[0, :, 0].tolist()) == list(range(8)) and not torch.equal(seen, z)
    assert torch.equal(reader.order(z), seen)  # one fixed permutation
    reader.train()
    assert torch.equal(reader.order(z), z)  # eval only
    train_reader = build_reader(make_cfg("reader.shuffle_latents=train").reader, ctx(num_tokens=8))
    train_reader.train()
    orders = {tuple(train_reader.order(z)[0, :, 0].tolist()) for _ in range(5)}
    assert len(orders) > 1 and all(sorted(o) == list(range(8)) for o in orders)
    train_reader.eval()
    assert torch.equal(train_reader.order(z), z)


def test_shuffle_refused_for_one_token() -> None:
    with pytest.raises(ValueError, match="at least 2 latent tokens.*MLP"):
        build_model(make_cfg("encoder=mlp", "llm=tiny_random", "reader.shuffle_latents=eval"), SHAPE)


# Prompt controls -------------------------------------------------------------------------------------------------

def test_random_prompt_differs_from_the_real_one_and_is_seeded(tiny) -> None:
    _, tok = tiny
    template = "Classify the following data with 8 features into 2 classes: "
    real = prompt_ids_for(tok, "text", template)
    a = prompt_ids_for(tok, "random", template, seed=0)
    assert a.numel() == real.numel() and not torch.equal(a, real)
    has_bos = int(real[0]) == tok.bos_token_id  # the BOS stays where the tokenizer puts one
    drawn = a[1:] if has_bos else a
    assert (int(a[0]) == tok.bos_token_id) == has_bos and not set(drawn.tolist()) & set(tok.all_special_ids)
    assert torch.equal(a, prompt_ids_for(tok, "random", template, seed=0))
    assert not torch.equal(a, prompt_ids_for(tok, "random", template, seed=1))
    assert prompt_ids_for(tok, "none", template).numel() == 0


def test_random_prompt_of_length_zero_is_refused(tiny) -> None:
    _, tok = tiny
    with pytest.raises(ValueError, match="prompt_length=0"):
        prompt_ids_for(tok, "random", "x", prompt_length=0)


def test_empty_suffix_and_unknown_prompt_are_refused(tiny) -> None:
    llm, tok = tiny
    with pytest.raises(ValueError, match="reader.suffix is empty"):
        LLMReader(llm, tok, num_tokens=4, template="x", suffix="")
    with pytest.raises(ValueError, match="reader.prompt='nonsense'.*text, none, random"):
        LLMReader(llm, tok, num_tokens=4, template="x", prompt="nonsense")


def test_prompt_none_reads_latents_and_suffix_only(tiny) -> None:
    llm, tok = tiny
    reader = LLMReader(llm, tok, num_tokens=4, template="x", prompt="none")
    embeds, spans = reader.sequence(torch.randn(2, 4, 64))
    assert embeds.shape[1] == 4 + 1 and spans["latents"] == slice(0, 4) and "bos" not in spans


def test_study_no_llm_control_pools_the_bos_embedding(tiny) -> None:
    llm, tok = tiny
    reader = build_reader(make_cfg("reader.bos=true", "llm=tiny_random").reader, ctx())
    z = torch.randn(2, 4, 64)
    bos = llm.get_input_embeddings().weight[tok.bos_token_id]
    torch.testing.assert_close(reader(z), torch.cat([bos.expand(2, 1, 64), z], dim=1).mean(dim=1))


# Multi-scale ablation -----------------------------------------------------------------------------------------

def test_inception_kernel_size_list_single_vs_multi_scale_same_parameters() -> None:
    single = build_model(make_cfg("llm=tiny_random", "encoder.kernel_sizes=[7,7,7,7,7,7]"), SHAPE)
    multi = build_model(make_cfg("llm=tiny_random", "encoder.kernel_sizes=[1,3,5,9,11,13]"), SHAPE)
    default = build_model(make_cfg("llm=tiny_random"), SHAPE)
    explicit_default = build_model(make_cfg("llm=tiny_random", "encoder.kernel_sizes=[1,3,5,7,9,11]"), SHAPE)
    n = [sum(p.numel() for p in m.encoder.parameters()) for m in (single, multi, default, explicit_default)]
    assert n[0] == n[1] and n[2] == n[3] < n[0]  # equal kernel-size sums, equal parameters
    sizes = [c.kernel_size[0] for c in single.encoder.modules() if isinstance(c, torch.nn.Conv1d) and c.kernel_size[0] > 1]
    assert set(sizes) == {7}
    with pytest.raises(ValueError, match="encoder.kernel_sizes.*num_kernels"):
        build_model(make_cfg("llm=tiny_random", "encoder.kernel_sizes=[3,5]", "encoder.num_kernels=6"), SHAPE)


# Checkpoints and resume ---------------------------------------------------------------------------------------

def test_attention_reader_resume_reproduces_the_uninterrupted_run(tmp_path: Path, monkeypatch) -> None:
    overrides = ("reader=attention", "llm=tiny_random", "encoder=cnn", "encoder.channels=8", "train.epochs=3")
    whole = run(make_cfg(*overrides), run_dir=tmp_path / "whole")
    import tsllm.train as train_mod

    monkeypatch.setattr(train_mod, "instantiate", lambda cfg: CrashAfter(2))
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(*overrides), run_dir=tmp_path / "cut")
    monkeypatch.undo()
    resumed = run(make_cfg(*overrides), run_dir=tmp_path / "cut")
    assert resumed["resumed_from_epoch"] == 2
    assert resumed["test_acc"] == whole["test_acc"] and resumed["history"] == whole["history"]


def test_checkpoint_of_another_model_is_refused() -> None:
    a = build_model(make_cfg("reader=attention", "llm=tiny_random"), SHAPE)
    b = build_model(make_cfg("llm=tiny_random"), SHAPE)
    assert not any(k.startswith("reader.llm") for k in a.trainable_state())
    with pytest.raises(RuntimeError, match="does not match.*unexpected.*reader"):
        b.load_trainable_state(a.trainable_state())


# Control presets ---------------------------------------------------------------------------------------------

CONTROLS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "control").glob("*.yaml"))


@pytest.mark.parametrize("control", CONTROLS)
def test_every_control_builds_and_steps(control: str) -> None:
    tiny_depth = ["llm.num_layers=1"] if control == "truncated" else []  # the tiny LLM has 2 layers, not 8+
    model = build_model(make_cfg(f"control={control}", "llm=tiny_random", "encoder.channels=4", *tiny_depth), SHAPE)
    x, y = torch.randn(4, 1, 24), torch.tensor([0, 1, 0, 1])
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_control_arms_have_distinct_labels_and_hashes() -> None:
    from tsllm.identity import identify
    from tsllm.records import config_hash

    labels, hashes = set(), set()
    for control in CONTROLS:
        cfg = make_cfg(f"control={control}")
        labels.add(identify(cfg).arm + str(cfg.encoder.get("kernel_sizes")))
        hashes.add(config_hash(OmegaConf.to_container(cfg, resolve=True)))
    assert len(labels) == len(hashes) == len(CONTROLS)


def check(*overrides: str) -> str | None:
    from tsllm.preflight import check_command_line
    from tsllm.train import CONF_DIR

    return check_command_line(CONF_DIR, list(overrides))


@pytest.mark.parametrize(("override", "message"), [
    ("llm.num_layer=3", "llm.num_layer=3: unknown key; llm smollm2_135m takes .*num_layers"),
    ("llm=custom", "llm.name_or_path is required for llm=custom"),
])
def test_llm_mistakes_fail_in_one_line_before_any_folder(override: str, message: str) -> None:
    import re

    assert re.search(message, check(override) or "")


@pytest.mark.parametrize("reader", CONF_READERS)
def test_every_reader_config_passes_its_own_schema_check(reader: str) -> None:
    from tsllm.preflight import config_problem

    assert config_problem(make_cfg(f"reader={reader}", *(["encoder=none"] if reader.startswith("text") else []))) \
        is None


@pytest.mark.parametrize(("overrides", "message"), [
    (["reader=attention", "reader.num_heads=abc"],
     "reader.num_heads=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    (["mode=hybrid", "reader.prefix_cache=maybe"],
     "reader.prefix_cache=maybe: Value 'maybe' is not a valid bool (type str)"),
    (["mode=text", "reader.token_budget=1.5"],
     "reader.token_budget=1.5: Value '1.5' of type 'float' could not be converted to Integer"),
    (["mode=hybrid", "reader.pooling=max"], "reader.pooling='max': expected one of last, mean"),
])
def test_reader_values_of_the_wrong_type_fail_before_any_folder(overrides: list[str], message: str) -> None:
    assert check(*overrides) == message


@pytest.mark.parametrize(("overrides", "message"), [
    # Arguments the run supplies (seed, sizes, the LLM) are not reader options: one line, not a TypeError.
    (["+reader.seed=3"], "reader.seed: unknown key; reader mean takes shuffle_latents, bos"),
    (["reader=attention", "+reader.hidden_size=64"],
     "reader.hidden_size: unknown key; reader attention takes num_heads, dropout, shuffle_latents"),
    (["mode=hybrid", "+reader.llm=x"], "reader.llm: unknown key; reader llm takes template, prompt, prompt_length, "
                                        "suffix, pooling, prefix_cache, shuffle_latents, lora, align"),
    (["mode=text", "+reader.features=1"],
     "reader.features: unknown key; reader text_probe takes decimals, token_budget, batch_size, template"),
])
def test_reader_keys_the_run_supplies_or_no_class_takes_are_refused(overrides: list[str], message: str) -> None:
    assert check(*overrides) == message
