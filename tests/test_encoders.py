"""Contract tests for every registered encoder family (driven by ``ENCODERS``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tsllm.encoders
import tsllm.train
from tsllm.encoders import ENCODERS, build_encoder
from tsllm.encoders.study_attention import ChannelLayerNorm
from tsllm.encoders.study_resnet import StudyResidualBlock

from conftest import make_cfg

BATCH = 3
LATENT = 32
TOKENS = 8
# Modules under tsllm/encoders that are helpers rather than encoder families.
NON_FAMILY_MODULES = {"__init__", "layers"}
# The study's networks are deliberately wide (512-2048 channels); size bounds apply to ours only.
STUDY = sorted(n for n in ENCODERS if n.startswith("study_"))
OURS = sorted(set(ENCODERS) - set(STUDY))


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


@pytest.mark.parametrize("name", OURS)
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


# --- The study's networks, checked layer by layer against STUDY.md ("The study's own code") ---------


def _study(name: str, length: int = 150, latent_dim: int = 576, **kwargs) -> nn.Module:
    """A study encoder with its default knobs at SmolLM2's H."""
    torch.manual_seed(0)
    return build_encoder(name, in_channels=1, length=length, latent_dim=latent_dim, **kwargs)


def _convs(model: nn.Module) -> list[nn.Conv1d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv1d)]


def test_study_inception_layers() -> None:
    model = _study("study_inception", num_tokens=16)
    assert len(model.blocks) == 4
    for i, block in enumerate(model.blocks):
        assert [c.kernel_size[0] for c in block.branches] == [1, 3, 5, 7, 9, 11]
        assert {(c.in_channels, c.out_channels) for c in block.branches} == {(1 if i == 0 else 16, 16)}
        assert all(torch.count_nonzero(c.bias) == 0 for c in block.branches)
        assert block.norm.normalized_shape == (150,) and block.dropout.p == 0.2
    assert (model.proj.in_features, model.proj.out_features) == (150, 576)
    assert not any(isinstance(m, (nn.ReLU, nn.BatchNorm1d)) for m in model.modules())
    # Kaiming-normal fan_out: std sqrt(2 / (out_channels * k)), here for the 16 x 16 x 11 branch.
    assert model.blocks[1].branches[5].weight.std().item() == pytest.approx((2 / (16 * 11)) ** 0.5, rel=0.1)


def test_study_inception_block_is_mean_of_branches_then_time_layernorm() -> None:
    block = _study("study_inception", length=40, num_tokens=4, num_kernels=3).blocks[1].eval()
    x = torch.randn(BATCH, 4, 40)
    mean = torch.stack([c(x) for c in block.branches]).mean(0)
    torch.testing.assert_close(block(x), F.layer_norm(mean, (40,), block.norm.weight, block.norm.bias))


def test_study_inception_knobs_come_from_the_grid(run_dir: Path) -> None:
    cfg = make_cfg("encoder=study_inception", "+grid.kernel_size=8", "+grid.kernel_count=3")
    assert (cfg.encoder.num_tokens, cfg.encoder.num_kernels) == (8, 3)
    rec = tsllm.train.run(cfg, run_dir=run_dir)
    assert rec["status"] == "finished" and rec["encoder"] == "study_inception"
    model = build_encoder(**{**cfg.encoder, "in_channels": 1, "length": 24, "latent_dim": 576})
    head = 576 * 2 + 2  # ItalyPowerDemand: T=24, 2 classes, linear head on H=576
    assert rec["params"]["trainable"] == _n_params(model) + head


@pytest.mark.parametrize("name", ["study_cnn", "study_resnet", "study_attention"])
def test_study_conv_stacks_widen_to_h(name: str) -> None:
    model = _study(name)
    main = [c for c in _convs(model) if c.kernel_size == (3,)]
    assert [(c.in_channels, c.out_channels) for c in main][:: 2 if name == "study_resnet" else 1] == [
        (1, 512), (512, 1024), (1024, 2048), (2048, 576)
    ]
    assert all(c.stride == (2,) for c in main if c.in_channels != c.out_channels)
    x = torch.randn(BATCH, 1, 150)
    assert model(x).shape == (BATCH, 16, 576)


@pytest.mark.parametrize("name", ["study_cnn", "study_resnet"])
def test_study_cnn_resnet_end_in_batchnorm_and_sigmoid(name: str) -> None:
    model = _study(name)
    assert model.head.bn.num_features == 576
    out = model(torch.randn(BATCH, 1, 150) * 100)
    assert ((out > 0) & (out < 1)).all()
    # Train-mode BatchNorm over batch and tokens: the pre-sigmoid values have mean 0 per channel.
    torch.testing.assert_close(torch.logit(out.double()).mean(dim=(0, 1)), torch.zeros(576).double(),
                               atol=1e-3, rtol=0)


def test_study_resnet_block() -> None:
    model = _study("study_resnet")
    assert len(model.blocks) == 4 and all(isinstance(b, StudyResidualBlock) for b in model.blocks)
    block = model.blocks[1].eval()
    assert block.conv1.bias is None and block.conv2.bias is None and block.conv2.stride == (1,)
    # No BatchNorm in the body (the study's are defined but never called), one on the shortcut.
    assert [type(m) for m in block.modules() if isinstance(m, nn.BatchNorm1d)] == [nn.BatchNorm1d]
    x = torch.randn(BATCH, 512, 75)
    expected = F.relu(block.conv2(F.relu(block.conv1(x))) + block.shortcut(x))
    torch.testing.assert_close(block(x), expected)
    assert block(x).shape == (BATCH, 1024, 38)


def test_study_mlp_layers() -> None:
    model = _study("study_mlp")
    linears = [m for m in model.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(150, 512), (512, 1024), (1024, 2048), (2048, 576)]
    assert [type(m) for m in model.net] == [nn.Flatten] + [nn.Linear, nn.ReLU] * 3 + [nn.Linear]
    assert model.norm.normalized_shape == (576,)
    out = model(torch.randn(BATCH, 1, 150))
    assert out.shape == (BATCH, 1, 576)
    torch.testing.assert_close(out.mean(-1), torch.zeros(BATCH, 1), atol=1e-5, rtol=0)


def test_study_mlp_flattens_channels() -> None:
    model = build_encoder("study_mlp", in_channels=3, length=20, latent_dim=LATENT, hidden=(8,))
    assert model.net[1].in_features == 60
    with pytest.raises(ValueError, match="length 20"):
        model(torch.randn(BATCH, 3, 21))


def test_study_inception_rejects_other_length() -> None:
    with pytest.raises(ValueError, match="length 24"):
        _build("study_inception", 1, 24)(torch.randn(BATCH, 1, 30))


def test_study_attention_layers_and_gate() -> None:
    model = _study("study_attention")
    assert [n.normalized_shape for n in model.modules() if isinstance(n, ChannelLayerNorm)] == [
        (512,), (1024,), (2048,), (576,)
    ]
    prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]
    assert len(prelus) == 1 and prelus[0].weight.numel() == 1
    assert model.dropout.p == 0.2
    assert (model.query.kernel_size, model.query.in_channels, model.query.out_channels) == ((1,), 576, 576)
    model.eval()
    x = torch.randn(BATCH, 1, 150)
    h = x
    for conv, norm in zip(model.convs, model.norms, strict=True):
        h = model.act(F.layer_norm(conv(h).transpose(1, 2), norm.normalized_shape, norm.weight, norm.bias))
        h = h.transpose(1, 2)
    gated = model.query(h) * torch.softmax(model.gate(h), dim=2)
    torch.testing.assert_close(model(x), F.adaptive_avg_pool1d(gated, 16).transpose(1, 2))


@pytest.mark.parametrize("name", STUDY)
def test_study_encoders_take_h_from_the_caller(name: str) -> None:
    """Built on the meta device at Llama-8B's H: nothing is allocated, H is never hard-coded."""
    with torch.device("meta"):
        model = build_encoder(name, in_channels=1, length=150, latent_dim=4096, num_tokens=16 if name != "study_mlp" else 1)
    out = model(torch.empty(2, 1, 150, device="meta"))
    assert out.shape[-1] == 4096 and out.device.type == "meta"


@pytest.mark.parametrize(("name", "knob"), [("study_cnn", "channels"), ("study_mlp", "hidden")])
def test_study_empty_widths_rejected(name: str, knob: str) -> None:
    with pytest.raises(ValueError, match=f"encoder.{knob} must be a non-empty list"):
        build_encoder(name, in_channels=1, length=24, latent_dim=LATENT, **{knob: []})
