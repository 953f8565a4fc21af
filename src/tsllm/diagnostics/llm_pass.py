"""One uncached pass of [prompt | latents | suffix] through the reader's LLM, keeping every layer.

Works with every reader that declares an LLM reads its latents (``llm_reads_latents``: it has ``sequence``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

SPANS = ("bos", "prompt", "latents", "suffix")  # disjoint: their attention shares sum to 1
# Not a partition: the first position is the usual attention sink whether or not it is a BOS token.
EXTRA = ("first_token",)


def is_llm_reader(reader: nn.Module) -> bool:
    """True for readers that declare an LLM reads their latents (tsllm.readers: ``llm_reads_latents``).

    A reader that reads the series itself (the text arm) has no latent tokens to diagnose.
    """
    return bool(getattr(reader, "llm_reads_latents", False))


def reader_sequence(reader: nn.Module, latents: Tensor) -> tuple[Tensor, dict[str, slice]]:
    """(inputs_embeds [B, P+L+S, H], spans) exactly as the reader feeds its LLM; `latents` are the encoder's.

    The reader's own ``sequence`` builds it (with its alignment). Spans are disjoint: "bos" (when the prompt
    starts with the tokenizer's BOS), "prompt" (the rest of the prompt), "latents", "suffix".
    """
    embeds, spans = reader.sequence(latents)
    spans = dict(spans)
    if "bos" in spans and spans["prompt"].start == spans["bos"].start:
        spans["prompt"] = slice(spans["bos"].stop, spans["prompt"].stop)
    return embeds, spans


def aligned_latents(reader: nn.Module, latents: Tensor) -> Tensor:
    """The latents as the LLM sees them (after the reader's order control and alignment)."""
    return reader.align_latents(latents)


@contextmanager
def eager_attention(llm: nn.Module) -> Iterator[None]:
    """Eager attention for this pass only (fused kernels return no weights); the previous one is restored."""
    before = getattr(llm.config, "_attn_implementation", None)
    setter = getattr(llm, "set_attn_implementation", None)
    if setter is not None:
        setter("eager")
    else:
        llm.config._attn_implementation = "eager"
    try:
        yield
    finally:
        if setter is not None and before is not None:
            setter(before)
        else:
            llm.config._attn_implementation = before


@dataclass
class LLMStates:
    """What one pass over a batch of series yields, on CPU as float32 numpy."""

    read: list[np.ndarray]  # per layer 0..N: hidden state at the read position [B, H]
    latent_mean: list[np.ndarray]  # per layer 0..N: mean hidden state over the latent positions [B, H]
    attention: np.ndarray | None  # [B, N layers, SPANS + EXTRA]: attention mass from the read position
    lens_ids: np.ndarray | None  # [N+1 layers, B, k] top vocabulary ids through final norm + lm_head


def _final_norm(llm: nn.Module) -> nn.Module | None:
    decoder = llm.get_decoder() if hasattr(llm, "get_decoder") else None
    return getattr(decoder, "norm", None) or getattr(decoder, "final_layernorm", None)


@torch.no_grad()
def llm_states(reader: nn.Module, latents: Tensor, *, attention: bool = False, lens_k: int = 0) -> LLMStates:
    """Hidden states of every layer for a batch of latents [B, L, H]; optionally attention mass and logit lens.

    The read position is the last one when the reader pools "last"; with "mean" pooling the read state
    is the mean over latent positions (attention mass is then still taken from the last position).
    """
    llm = reader.llm
    embeds, spans = reader_sequence(reader, latents)
    out = llm(inputs_embeds=embeds, output_hidden_states=True, output_attentions=attention, use_cache=False)
    hidden = out.hidden_states  # N+1 x (B, T, H); the last is already through the final norm
    lat = spans["latents"]
    latent_mean = [h[:, lat].float().mean(dim=1) for h in hidden]
    read = latent_mean if getattr(reader, "pooling", "last") == "mean" else [h[:, -1].float() for h in hidden]

    mass = None
    if attention:
        layers = []
        for layer_attn in out.attentions:  # (B, heads, T, T)
            row = layer_attn[:, :, -1].float().mean(dim=1)  # (B, T): from the read position, mean over heads
            zero = torch.zeros(row.shape[0], device=row.device)
            shares = [row[:, spans[s]].sum(dim=-1) if s in spans else zero for s in SPANS]
            layers.append(torch.stack([*shares, row[:, 0]], -1))
        mass = torch.stack(layers, dim=1).cpu().numpy()

    lens = None
    if lens_k:
        norm, head = _final_norm(llm), llm.get_output_embeddings()
        ids = []
        for i, h in enumerate(hidden):
            state = h[:, -1]
            if i < len(hidden) - 1 and norm is not None:  # the last state is already normed
                state = norm(state)
            ids.append(head(state).float().topk(lens_k, dim=-1).indices.cpu().numpy())
        lens = np.stack(ids)
    return LLMStates(read=[r.cpu().numpy() for r in read], latent_mean=[m.cpu().numpy() for m in latent_mean],
                     attention=mass, lens_ids=lens)
