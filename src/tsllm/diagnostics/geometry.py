"""Where the latent tokens sit relative to the LLM's word embeddings, and how alike two representations are.

Pure functions on tensors/arrays: no model, no files.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch
from torch import Tensor


def norm_stats(latents: Tensor, embeddings: Tensor) -> dict[str, Any]:
    """Per latent position: mean L2 norm, its ratio to the median word-embedding norm, and its percentile.

    latents [N, L, H]; embeddings [V, H] (the LLM's input table). The percentile is the share (0-100) of
    vocabulary embeddings with a smaller norm than the position's mean latent norm.
    """
    emb_norms = embeddings.float().norm(dim=-1)  # (V,)
    median = emb_norms.quantile(0.5).item()  # torch.median would take the lower middle value
    sorted_norms = emb_norms.sort().values
    per_pos = latents.float().norm(dim=-1).mean(dim=0)  # (L,)
    below = torch.searchsorted(sorted_norms, per_pos.contiguous())
    percentile = (100.0 * below.float() / len(sorted_norms)).tolist()
    ratio = (per_pos / median).tolist()
    return {"embedding_norm_median": median, "latent_norm": per_pos.tolist(), "ratio_to_median": ratio,
            "percentile": percentile, "ratio_to_median_mean": float(np.mean(ratio)),
            "percentile_mean": float(np.mean(percentile))}


def latent_norms(latents: Tensor) -> dict[str, Any]:
    """Per-position mean L2 norm only: what applies when there is no word-embedding table to compare to."""
    per_pos = latents.float().norm(dim=-1).mean(dim=0)
    return {"latent_norm": per_pos.tolist(), "latent_norm_mean": per_pos.mean().item()}


def nearest_tokens(latents: Tensor, embeddings: Tensor, k: int = 5, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Top-k vocabulary ids by cosine for every latent vector: latents [N, L, H] -> (ids, cos) [N, L, k]."""
    n, length, h = latents.shape
    emb = torch.nn.functional.normalize(embeddings.float(), dim=-1)  # (V, H)
    flat = torch.nn.functional.normalize(latents.reshape(-1, h).float(), dim=-1)
    ids, cos = [], []
    for part in flat.split(chunk):  # chunks keep [rows, V] small for a 128k vocabulary
        c, i = (part @ emb.T).topk(k, dim=-1)
        ids.append(i)
        cos.append(c)
    return torch.cat(ids).reshape(n, length, k), torch.cat(cos).reshape(n, length, k)


def top1_agreement(top1: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """How often the nearest token is the same across series and across classes, per position.

    top1 [N, L] token ids. `across_series`: share of series whose top token is the position's most common
    one. `across_classes`: share of classes whose own most common top token equals the overall one.
    """
    series, classes, modes = [], [], []
    for pos in range(top1.shape[1]):
        column = top1[:, pos]
        mode, count = Counter(column.tolist()).most_common(1)[0]
        modes.append(int(mode))
        series.append(count / len(column))
        class_modes = [Counter(column[labels == c].tolist()).most_common(1)[0][0] for c in np.unique(labels)]
        classes.append(float(np.mean([m == mode for m in class_modes])))
    return {"mode_token_id": modes, "across_series": series, "across_classes": classes,
            "across_series_mean": float(np.mean(series)), "across_classes_mean": float(np.mean(classes))}


def collapse(latents: Tensor) -> dict[str, Any]:
    """Mean pairwise cosine between the L latent tokens of each series (1 = all tokens point the same way)."""
    n, length, _ = latents.shape
    if length < 2:
        return {"mean_pairwise_cosine": None, "note": "one latent token per series: nothing to compare"}
    z = torch.nn.functional.normalize(latents.float(), dim=-1)
    gram = z @ z.transpose(1, 2)  # (N, L, L)
    off = ~torch.eye(length, dtype=torch.bool)
    per_series = gram[:, off].mean(dim=-1)
    return {"mean_pairwise_cosine": per_series.mean().item(), "std_over_series": per_series.std().item()}


def linear_cka(x: np.ndarray | Tensor, y: np.ndarray | Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) between two representations of the same N examples: [N, Dx], [N, Dy]."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same examples in both: {x.shape[0]} vs {y.shape[0]} rows")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    cross = np.linalg.norm(y.T @ x) ** 2
    denom = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / denom) if denom > 0 else float("nan")
