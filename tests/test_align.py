"""Alignment options of the LLM reader (align=none|scale|prototypes|nearest)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hydra.errors import ConfigCompositionException
from torch import nn

from tsllm.build import build_model
from tsllm.readers.align import NearestAlign, PrototypeAlign, ScaleAlign

from conftest import make_cfg

SHAPE = SimpleNamespace(name="ItalyPowerDemand", n_channels=1, length=24, num_classes=2)


def embedding(vocab: int = 50, hidden: int = 16, rank: int | None = None, seed: int = 0) -> nn.Embedding:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(vocab, hidden, generator=g) * 3
    if rank is not None:  # a low-rank table, so that "in the span of E" is a real constraint
        w = torch.randn(vocab, rank, generator=g) @ torch.randn(rank, hidden, generator=g)
    emb = nn.Embedding(vocab, hidden)
    emb.weight = nn.Parameter(w, requires_grad=False)
    return emb


def test_scale_matches_the_embedding_median_norm_at_init() -> None:
    emb = embedding()
    align = ScaleAlign(emb, num_tokens=4)
    z = torch.randn(8, 4, 16) * 40  # far off the embeddings' scale, as trained latents are
    norms = align(z).norm(dim=-1)
    median = emb.weight.norm(dim=-1).median()
    torch.testing.assert_close(norms.median(), median, rtol=1e-4, atol=1e-4)
    assert sum(p.numel() for p in align.parameters()) == 4


def test_prototypes_stay_in_the_span_of_the_embeddings_and_pass_gradients() -> None:
    emb = embedding(vocab=60, hidden=16, rank=5)
    align = PrototypeAlign(emb, num_prototypes=10, num_heads=4)
    z = torch.randn(3, 4, 16, requires_grad=True)
    out = align(z)
    # Least squares of each output token on the rows of E: the residual is ~0 because E has rank 5 < 16.
    coef = torch.linalg.lstsq(emb.weight.T, out.reshape(-1, 16).T.detach()).solution
    residual = (emb.weight.T @ coef - out.reshape(-1, 16).T.detach()).norm() / out.norm()
    assert residual < 1e-4
    out.pow(2).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0 and align.mix_logits.grad is not None
    assert not emb.weight.requires_grad


def test_prototypes_stay_no_longer_than_the_longest_word_under_adam() -> None:
    """Free K x V mixing weights grew 100x past every word within 5 Adam steps and collapsed all tokens."""
    emb = embedding(vocab=500, hidden=16)
    align = PrototypeAlign(emb, num_prototypes=20, num_heads=4)
    opt = torch.optim.Adam(align.parameters(), lr=1e-2)
    z = torch.randn(8, 4, 16)
    target = torch.randn(8, 4, 16) * 50  # pulls the output far outside the words: the worst case
    for _ in range(30):
        opt.zero_grad()
        (align(z) - target).pow(2).mean().backward()
        opt.step()
    longest = emb.weight.norm(dim=-1).max()
    assert align.prototypes().norm(dim=-1).max() <= longest + 1e-4
    assert align(z).norm(dim=-1).max() <= longest + 1e-4
    # Training did move the mixture (the check above is not passing by standing still).
    start = PrototypeAlign(emb, num_prototypes=20, num_heads=4).prototypes()
    assert (align.prototypes() - start).norm() > 1e-2


def test_prototype_span_check_can_fail() -> None:
    emb = embedding(vocab=60, hidden=16, rank=5)
    v = torch.randn(16, 1)
    coef = torch.linalg.lstsq(emb.weight.T, v).solution
    assert (emb.weight.T @ coef - v).norm() / v.norm() > 0.1


@pytest.mark.parametrize("k", [0, 51])
def test_prototype_count_outside_the_vocabulary_is_refused(k: int) -> None:
    with pytest.raises(ValueError, match=r"align.num_prototypes=.*1\.\.50"):
        PrototypeAlign(embedding(), num_prototypes=k, num_heads=4)


def test_nearest_returns_exact_rows_at_eval_and_identity_in_training() -> None:
    emb = embedding()
    align = NearestAlign(emb)
    rows = torch.tensor([[3, 7], [11, 0]])
    z = emb.weight[rows] * 2.5 + 0.01 * torch.randn(2, 2, 16)  # near those words in cosine
    align.eval()
    assert torch.equal(align(z), emb.weight[rows])
    align.train()
    assert torch.equal(align(z), z)


def test_unknown_align_lists_the_choices() -> None:
    with pytest.raises(ConfigCompositionException, match="prototypes"):
        make_cfg("mode=hybrid", "align=rotate")


@pytest.mark.parametrize("reader", ["mean", "attention", "transformer_layer"])
def test_align_on_a_reader_without_llm_is_refused(reader: str) -> None:
    # align is the LLM reader's own option: other readers have no such key, so the config does not compose.
    from tsllm.preflight import check_command_line
    from tsllm.train import CONF_DIR

    problem = check_command_line(CONF_DIR, [f"reader={reader}", "align=scale", "llm=tiny_random"])
    assert problem == ("align=scale: this reader has no LLM to align; align applies to reader=llm "
                       "(mode=hybrid|lora), or leave align out")


@pytest.mark.parametrize("align", ["scale", "prototypes", "nearest"])
def test_align_composes_with_lora_and_truncation(align: str) -> None:
    cfg = make_cfg("mode=lora", f"align={align}", "llm=tiny_random", "llm.num_layers=1", "encoder.channels=4",
                   "reader.align.num_prototypes=8" if align == "prototypes" else "reader.pooling=last")
    model = build_model(cfg, SHAPE)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 1, 24)), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert any("lora_" in n and p.grad is not None for n, p in model.named_parameters())
