"""Alignment of latent tokens to the frozen LLM's input-embedding space (options of the LLM reader).

Trained hybrids put their soft tokens far off the manifold the LLM was trained on (norms 5-7x the word
embeddings', best cosine to any word ~0.15). Each option here changes only what the LLM reads:

* ``none``        -- the latents as the encoder made them.
* ``scale``       -- RMS-normalised per token, rescaled to the median input-embedding norm, times a learnable
                     gain per position (initialised to 1).
* ``prototypes``  -- reprogramming onto the vocabulary (after Time-LLM): K prototypes are learned convex
                     combinations (softmax weights) of the frozen embedding matrix; each latent cross-attends
                     to them and becomes a convex mixture of prototypes, so every token read lies in the
                     convex hull of the words, hence in the span of E and no longer than the longest word.
* ``nearest``     -- evaluation only: each latent replaced by its nearest vocabulary embedding (cosine),
                     how much signal survives discretisation. Training sees the latents unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tsllm.config import align_config


class _EmbeddingRef:
    """Holds the LLM's embedding table without registering it a second time as a submodule."""

    def __init__(self, embed: nn.Embedding) -> None:
        self.embed = embed

    @property
    def weight(self) -> Tensor:
        return self.embed.weight


class ScaleAlign(nn.Module):
    """``z -> z / rms(z) * (m / sqrt(H)) * g_l``: every token's norm becomes the embeddings' median m."""

    def __init__(self, embed: nn.Embedding, num_tokens: int) -> None:
        super().__init__()
        w = embed.weight.detach().float()
        self.register_buffer("target_norm", w.norm(dim=-1).median())
        self.gain = nn.Parameter(torch.ones(num_tokens))

    def forward(self, z: Tensor) -> Tensor:
        z = z.float()
        rms = z.pow(2).mean(dim=-1, keepdim=True).add(1e-6).sqrt()
        scale = self.target_norm / math.sqrt(z.shape[-1])
        return z / rms * scale * self.gain[: z.shape[1], None]


class PrototypeAlign(nn.Module):
    """Cross-attention of latents onto K prototypes ``P = softmax(A) E`` (A: K x V learned logits, E frozen).

    The mixing weights are a softmax over the vocabulary, not free coefficients: with free K x V weights Adam
    moves every one of them by about lr per step, so within a few steps the prototypes grew 100x longer than
    any word and collapsed onto one direction (every token the same vector, the encoder's gradient ~0).
    Convex weights keep each prototype inside the words' convex hull whatever the optimiser does.
    """

    def __init__(self, embed: nn.Embedding, num_prototypes: int = 100, num_heads: int = 8, seed: int = 0) -> None:
        super().__init__()
        vocab, hidden = embed.weight.shape
        if not 1 <= num_prototypes <= vocab:
            raise ValueError(f"align.num_prototypes={num_prototypes}: expected 1..{vocab} (the vocabulary size)")
        if hidden % num_heads:
            raise ValueError(f"align.num_heads={num_heads} must divide the hidden size {hidden}")
        self._embed = _EmbeddingRef(embed)
        # Start each prototype near one (seeded, distinct) word embedding, ~98% of its weight there: on the
        # manifold from step 0, with every word still reachable by the gradient.
        rows = torch.randperm(vocab, generator=torch.Generator().manual_seed(seed))[:num_prototypes]
        logits = torch.zeros(num_prototypes, vocab)
        logits[torch.arange(num_prototypes), rows] = math.log(max(vocab - 1, 1)) + 4.0
        self.mix_logits = nn.Parameter(logits)
        self.num_heads = num_heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)

    def prototypes(self) -> Tensor:
        """(K, H) = softmax(A) E: convex mixtures of the word embeddings."""
        return torch.softmax(self.mix_logits, dim=-1) @ self._embed.weight.float()

    def forward(self, z: Tensor) -> Tensor:
        b, n, h = z.shape
        protos = self.prototypes()  # (K, H)
        d = h // self.num_heads
        q = self.query(z.float()).view(b, n, self.num_heads, d).transpose(1, 2)  # (B, nh, L, d)
        k = self.key(protos).view(-1, self.num_heads, d).transpose(0, 1)          # (nh, K, d)
        # Heads average their attention weights, so the output is ONE convex mixture of whole prototypes.
        weights = torch.softmax(q @ k.transpose(-1, -2).unsqueeze(0) / math.sqrt(d), dim=-1).mean(dim=1)
        return weights @ protos  # (B, L, H)


class NearestAlign(nn.Module):
    """At evaluation, each latent becomes the vocabulary embedding nearest in cosine; identity in training."""

    def __init__(self, embed: nn.Embedding) -> None:
        super().__init__()
        self._embed = _EmbeddingRef(embed)

    def forward(self, z: Tensor) -> Tensor:
        if self.training:
            return z
        w = self._embed.weight
        idx = (F.normalize(z.float(), dim=-1) @ F.normalize(w.float(), dim=-1).T).argmax(dim=-1)  # (B, L)
        return w[idx]


def build_align(cfg: dict[str, Any] | None, embed: nn.Embedding, *, num_tokens: int, seed: int) -> nn.Module:
    """The alignment module an ``align`` config names (``{name: none}`` when absent; typed by tsllm.config)."""
    args = align_config(cfg).to_dict()
    name = args.pop("name")
    if name == "none":
        return nn.Identity()
    if name == "scale":
        return ScaleAlign(embed, num_tokens, **args)
    if name == "prototypes":
        return PrototypeAlign(embed, seed=seed, **args)
    return NearestAlign(embed, **args)  # align_config admits no other kind
