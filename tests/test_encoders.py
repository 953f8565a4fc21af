"""Contract tests for every registered encoder family (driven by ``ENCODERS``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tsllm.encoders
from tsllm.encoders import ENCODERS, build_encoder

BATCH = 3
LATENT = 32
TOKENS = 8
# Modules under tsllm/encoders that are helpers rather than encoder families.
NON_FAMILY_MODULES = {"__init__", "layers"}


def _build(name: str, channels: int, length: int, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    params = {**ENCODERS[name].test_params, **kwargs}
    return build_encoder(name, in_channels=channels, length=length, latent_dim=LATENT, **params)


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("length", [24, 150, 1000])
@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_shape_gradients_determinism(name: str, length: int, channels: int) -> None:
    model = _build(name, channels, length, num_tokens=TOKENS)
    x = torch.randn(BATCH, channels, length)

    out = model(x)
    assert out.shape == (BATCH, TOKENS, LATENT)
    assert out.dtype == x.dtype
    assert torch.isfinite(out).all()

    # Random weights so no parameter can cancel out of the loss (e.g. a bias under a plain sum).
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"

    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_mlp_default_is_one_token() -> None:
    model = build_encoder("mlp", in_channels=2, length=24, latent_dim=LATENT, **ENCODERS["mlp"].test_params)
    assert model(torch.randn(BATCH, 2, 24)).shape == (BATCH, 1, LATENT)


def test_mlp_rejects_other_length() -> None:
    model = _build("mlp", 1, 24)
    with pytest.raises(ValueError, match="length 24"):
        model(torch.randn(BATCH, 1, 30))


def test_transformer_accepts_shorter_rejects_longer() -> None:
    model = _build("transformer", 1, 100, num_tokens=TOKENS)
    assert model(torch.randn(BATCH, 1, 37)).shape == (BATCH, TOKENS, LATENT)
    with pytest.raises(ValueError, match="length 100"):
        model(torch.randn(BATCH, 1, 120))


def test_inception_without_residual() -> None:
    model = _build("inception", 2, 24, num_tokens=TOKENS, residual=False)
    assert model(torch.randn(BATCH, 2, 24)).shape == (BATCH, TOKENS, LATENT)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_output_dtype_follows_input(name: str) -> None:
    model = _build(name, 1, 24, num_tokens=TOKENS).eval()
    with torch.no_grad():
        assert model(torch.randn(BATCH, 1, 24, dtype=torch.float64)).dtype == torch.float64


def test_wrong_channel_count_rejected() -> None:
    model = _build("cnn", 3, 24)
    with pytest.raises(ValueError, match="expects input"):
        model(torch.randn(BATCH, 1, 24))


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_default_knobs_build_and_size(name: str) -> None:
    """Study defaults at SmolLM2 size run a forward; at Llama-8B size they stay small."""
    torch.manual_seed(0)
    model = build_encoder(name, in_channels=1, length=2000, latent_dim=576, num_tokens=16).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 2000))
    assert out.shape == (2, 16, 576)
    assert torch.isfinite(out).all()
    assert 10_000 < _n_params(model) < 10_000_000

    big = build_encoder(name, in_channels=1, length=2000, latent_dim=4096, num_tokens=16)
    assert _n_params(big) < 50_000_000


def test_unknown_name_lists_registered() -> None:
    with pytest.raises(ValueError) as excinfo:
        build_encoder("nope", in_channels=1, length=24, latent_dim=LATENT)
    for name in ENCODERS:
        assert name in str(excinfo.value)


def test_registry_matches_module_files() -> None:
    """Every family module is registered under its file name, and nothing else is registered."""
    package_dir = Path(tsllm.encoders.__file__).parent
    modules = {p.stem for p in package_dir.glob("*.py")} - NON_FAMILY_MODULES
    assert set(ENCODERS) == modules
    for name, cls in ENCODERS.items():
        assert cls.__module__ == f"tsllm.encoders.{name}"
        assert isinstance(cls.test_params, dict)
