"""run_diagnostics: everything computed about a finished model, written to diagnostics.json.

Computed after selection on the selected weights; nothing here feeds back into training or selection.
Descriptive statistics use TEST series; probes are fit on TRAIN and scored on TEST once.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tsllm.data import DatasetSplits, Split
from tsllm.diagnostics import geometry as G
from tsllm.diagnostics.llm_pass import (
    EXTRA,
    SPANS,
    aligned_latents,
    eager_attention,
    is_llm_reader,
    llm_states,
)
from tsllm.diagnostics.maps import save_map
from tsllm.diagnostics.probes import layer_chosen_without_test, layer_probes, probe_accuracy
from tsllm.diagnostics.runs import DiagnosticsError
from tsllm.llm import tokenizer_of
from tsllm.records import read_record, write_atomically

log = logging.getLogger(__name__)

LEVELS = ("none", "basic", "full", "auto")
FILE = "diagnostics.json"
MAP_FILE = "diagnostics_tsne.png"
LLM_ONLY = ("norm ratio to the word embeddings", "nearest tokens", "layer-wise probes", "attention mass",
            "logit lens", "CKA latents vs read state")
ANY_READER = ("latent norms", "collapse", "probe of pooled latents", "CKA vs another run", "t-SNE of pooled latents")


def resolve_level(level: str, model: nn.Module) -> str:
    """`auto` is basic for LLM readers and none otherwise; other levels are taken as given."""
    if level not in LEVELS:
        raise DiagnosticsError(f"diagnostics.level={level!r}: expected one of {', '.join(LEVELS)}")
    if level == "auto":
        return "basic" if is_llm_reader(model.reader) else "none"
    return level


def not_applicable_message(run_dir: str | Path) -> str:
    """What a standalone run can and cannot be asked for."""
    return (f"{run_dir}: standalone run (no LLM reads its latents): {', '.join(LLM_ONLY)} do not apply; "
            f"computing {', '.join(ANY_READER)} only")


def subset(split: Split, max_series: int | None) -> Split:
    """A fixed, seeded subset of at most max_series series (all of them when there are fewer)."""
    if max_series is None or len(split.y) <= max_series:
        return split
    idx = np.sort(np.random.default_rng(0).permutation(len(split.y))[:max_series])
    return Split(split.x[idx], split.y[idx])


@torch.no_grad()
def encode(model: nn.Module, split: Split, batch_size: int) -> Tensor:
    """Encoder latents [N, L, H] (float32, CPU) of a split, in eval mode."""
    model.eval()
    device = _device(model)
    x = torch.from_numpy(split.x)
    return torch.cat([model.encoder(b.to(device)).float().cpu() for b in x.split(batch_size)])


def _device(module: nn.Module) -> torch.device:
    """Where the module's weights are (the run may end with the model on an accelerator)."""
    return next(module.parameters()).device


def _decode(tokenizer: Any, ids: list[int]) -> list[str]:
    if tokenizer is None:
        return [f"<{i}>" for i in ids]
    return [tokenizer.decode([i]) for i in ids]


def _states(reader: nn.Module, latents: Tensor, batch_size: int, **kw: Any) -> dict[str, Any]:
    """llm_states over a whole split in batches, concatenated."""
    device = _device(reader.llm)
    parts = [llm_states(reader, b.to(device), **kw) for b in latents.split(batch_size)]
    out = {"read": [np.concatenate(layer) for layer in zip(*(p.read for p in parts), strict=True)],
           "latent_mean": [np.concatenate(layer) for layer in zip(*(p.latent_mean for p in parts), strict=True)]}
    if parts[0].attention is not None:
        out["attention"] = np.concatenate([p.attention for p in parts])  # (N, layers, spans)
    if parts[0].lens_ids is not None:
        out["lens_ids"] = np.concatenate([p.lens_ids for p in parts], axis=1)  # (layers+1, N, k)
    return out


def basic(model: nn.Module, latents: Tensor, labels: np.ndarray, tokenizer: Any, k: int = 5) -> dict[str, Any]:
    """Norms, nearest tokens and collapse of the TEST latents (as the LLM sees them)."""
    out: dict[str, Any] = {"collapse": G.collapse(latents)}
    reader = model.reader
    if not is_llm_reader(reader):
        out["norms"] = G.latent_norms(latents)
        return out
    with torch.no_grad():
        seen = aligned_latents(reader, latents.to(_device(reader.llm))).float().cpu()
    table = reader.embed.weight.detach().float().cpu()
    out["norms"] = G.norm_stats(seen, table)
    ids, cos = G.nearest_tokens(seen, table, k=k)
    agreement = G.top1_agreement(ids[..., 0].numpy(), labels)
    centroid = nn.functional.normalize(seen, dim=-1).mean(dim=0, keepdim=True)  # (1, L, H): the mean direction
    c_ids, c_cos = G.nearest_tokens(centroid, table, k=k)
    out["nearest_tokens"] = {
        "per_position": [
            {"top_tokens": _decode(tokenizer, c_ids[0, p].tolist()), "top_ids": c_ids[0, p].tolist(),
             "cosine": [round(c, 6) for c in c_cos[0, p].tolist()],
             "mode_top1": _decode(tokenizer, [agreement["mode_token_id"][p]])[0],
             "mean_top1_cosine": cos[:, p, 0].mean().item()}
            for p in range(seen.shape[1])],
        "note": "top tokens of each position's mean direction; agreement counts each series' own top token",
        **{key: agreement[key] for key in ("across_series", "across_classes", "across_series_mean",
                                           "across_classes_mean")},
        "mean_top1_cosine": cos[..., 0].mean().item(),
    }
    return out


def full(model: nn.Module, data: DatasetSplits, train_lat: Tensor, test_lat: Tensor, tokenizer: Any,
         batch_size: int, lens_k: int = 5, val_lat: Tensor | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Probes, attention mass, logit lens and CKA; returns (results, TEST representations for maps/CKA).

    ``val_lat`` (the validation split's latents, when the run has one) chooses the probe layer without TEST.
    """
    train_y, test_y = data.train.y, data.test.y
    pooled_train, pooled_test = train_lat.mean(dim=1).numpy(), test_lat.mean(dim=1).numpy()
    out: dict[str, Any] = {"probes": {"pooled_latents": probe_accuracy(pooled_train, train_y, pooled_test, test_y)}}
    reps = {"pooled latents": pooled_test}
    reader = model.reader
    if not is_llm_reader(reader):
        return out, reps
    tr = _states(reader, train_lat, batch_size)
    with eager_attention(reader.llm):
        te = _states(reader, test_lat, batch_size, attention=True, lens_k=lens_k)
    va = _states(reader, val_lat, batch_size) if val_lat is not None else None
    for kind in ("read", "latent_mean"):
        curve = out["probes"][kind] = layer_probes(tr[kind], train_y, te[kind], test_y)
        val = (None, None) if va is None else (va[kind], data.val.y)
        layer, scores, how = layer_chosen_without_test(tr[kind], train_y, *val)
        out["probes"][f"{kind}_chosen_without_test"] = {"layer": layer, "by": how, "scores": scores,
                                                        "test": None if layer is None else curve[layer]}
    shares = te["attention"].mean(axis=0)  # (layers, spans)
    out["attention"] = {span: shares[:, i].tolist() for i, span in enumerate(SPANS + EXTRA)}
    out["attention"]["note"] = ("share of attention from the read (last) position, mean over heads and TEST series; "
                                "bos + prompt + latents + suffix = 1; first_token (the usual sink) overlaps them")
    lens = []
    for layer_ids in te["lens_ids"]:  # (N, k): per series top-k at this layer
        counts = Counter(layer_ids[:, 0].tolist()).most_common(lens_k)
        lens.append({"top1_tokens": _decode(tokenizer, [i for i, _ in counts]),
                     "top1_ids": [int(i) for i, _ in counts], "share": [c / len(layer_ids) for _, c in counts]})
    out["logit_lens"] = lens
    read_test = te["read"][-1]
    out["cka"] = {"latents_vs_read": G.linear_cka(pooled_test, read_test)}
    reps["LLM read state"] = read_test
    return out, reps


def run_diagnostics(model: nn.Module, data: DatasetSplits, run_dir: str | Path, level: str = "auto", *,
                    tokenizer: Any = None, batch_size: int = 64, max_series: int | None = 1000,
                    figures: bool = True) -> dict[str, Any]:
    """Diagnose a trained model and write diagnostics.json (+ a t-SNE PNG at level full) into run_dir.

    level: none | basic | full | auto (basic for LLM readers, none otherwise). Returns the dict written
    ({} at level none, nothing written).
    """
    level = resolve_level(level, model)
    if level == "none":
        return {}
    run_dir = Path(run_dir)
    llm = is_llm_reader(model.reader)
    if tokenizer is None and llm:
        tokenizer = getattr(model.reader, "tokenizer", None) or _record_tokenizer(run_dir)
    test = subset(data.test, max_series)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        test_lat = encode(model, test, batch_size)
        result: dict[str, Any] = {"level": level, "reader": "llm" if llm else "standalone",
                                  "split": "test", "n_series": len(test.y), "num_tokens": test_lat.shape[1]}
        if not llm:
            result["not_applicable"] = list(LLM_ONLY)
        result.update(basic(model, test_lat, test.y, tokenizer))
        if level == "full":
            val = None if data.val is None else subset(data.val, max_series)
            trimmed = DatasetSplits(name=data.name, train=subset(data.train, max_series), val=val, test=test,
                                    classes=data.classes, meta=data.meta)
            more, reps = full(model, trimmed, encode(model, trimmed.train, batch_size), test_lat, tokenizer,
                              batch_size, val_lat=None if val is None else encode(model, val, batch_size))
            result.update(more)
            result["probes"]["note"] = ("logistic regression fit on TRAIN features, scored on TEST once; "
                                        "*_chosen_without_test: the layer of best score without TEST (by: on "
                                        "validation, or k-fold CV within TRAIN), its TEST score")
            if figures and len(test.y) >= 5:
                save_map(reps, test.y, data.classes, run_dir / MAP_FILE, title=f"{data.name} TEST, t-SNE")
                result["figures"] = [MAP_FILE]
    write(run_dir, result)
    return result


def _record_tokenizer(run_dir: Path) -> Any | None:
    from omegaconf import OmegaConf

    record = read_record(run_dir) if run_dir.is_dir() else None
    return tokenizer_of(OmegaConf.create(record["config"]).llm) if record and "config" in record else None


def write(run_dir: Path, result: dict[str, Any]) -> Path:
    """diagnostics.json, keys sorted so that two computations compare byte for byte; written atomically."""
    return write_atomically(run_dir / FILE, json.dumps(result, indent=1, sort_keys=True, default=float))


def cross_run_cka(hybrid: tuple[nn.Module, DatasetSplits], standalone: tuple[nn.Module, DatasetSplits],
                  batch_size: int = 64, max_series: int | None = 1000) -> dict[str, float]:
    """Linear CKA between a hybrid run and the standalone run of the same encoder, dataset and seed (TEST)."""
    (h_model, h_data), (s_model, s_data) = hybrid, standalone
    if not np.array_equal(h_data.test.y, s_data.test.y) or h_data.meta.get("sha256") != s_data.meta.get("sha256"):
        raise DiagnosticsError("CKA across runs needs the same dataset and TEST series in both runs")
    test = subset(h_data.test, max_series)
    h_lat, s_lat = encode(h_model, test, batch_size), encode(s_model, test, batch_size)
    out = {"pooled_latents": G.linear_cka(h_lat.mean(dim=1).numpy(), s_lat.mean(dim=1).numpy())}
    if is_llm_reader(h_model.reader):
        read = _states(h_model.reader, h_lat, batch_size)["read"][-1]
        out["read_vs_standalone_pooled"] = G.linear_cka(read, s_lat.mean(dim=1).numpy())
    return out


def summary_scalars(diag: dict[str, Any]) -> dict[str, float]:
    """The scalar summaries of a diagnostics dict, flat, for the tidy table (prefix `diag_`)."""
    out: dict[str, float] = {}

    def put(name: str, value: Any) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
            out[f"diag_{name}"] = float(value)

    norms = diag.get("norms", {})
    put("norm_ratio_median", norms.get("ratio_to_median_mean"))
    put("norm_percentile", norms.get("percentile_mean"))
    put("latent_norm", norms.get("latent_norm_mean", np.mean(norms["latent_norm"]) if "latent_norm" in norms else None))
    near = diag.get("nearest_tokens", {})
    put("top1_same_series", near.get("across_series_mean"))
    put("top1_same_classes", near.get("across_classes_mean"))
    put("top1_cosine", near.get("mean_top1_cosine"))
    put("collapse_cosine", diag.get("collapse", {}).get("mean_pairwise_cosine"))
    probes = diag.get("probes", {})
    put("probe_pooled", probes.get("pooled_latents"))
    for kind in ("read", "latent_mean"):
        curve = probes.get(kind) or []
        for i, acc in enumerate(curve):
            put(f"probe_{kind}_L{i}", acc)
        if curve:
            put(f"probe_{kind}_last", curve[-1])
            put(f"probe_{kind}_best_layer", int(np.nanargmax(curve)))
        chosen = probes.get(f"{kind}_chosen_without_test") or {}
        put(f"probe_{kind}_chosen_layer", chosen.get("layer"))
        put(f"probe_{kind}_chosen", chosen.get("test"))
    for span in SPANS + EXTRA:
        shares = diag.get("attention", {}).get(span) or []
        for i, s in enumerate(shares):
            put(f"attn_{span}_L{i}", s)
        if shares:
            put(f"attn_{span}_mean", float(np.mean(shares)))
    put("cka_latents_read", diag.get("cka", {}).get("latents_vs_read"))
    for key, value in diag.get("cka_vs_standalone", {}).items():
        put(f"cka_standalone_{key}", value)
    return out
