"""The one builder: a resolved config -> the data splits and the model of a run.

Training, ``tsllm.diagnose``, ``tsllm.plan``, ``tsllm.reproduce``, the benchmarks and the tests all build
through here; nothing else spells ``load_ucr(...)`` or builds a reader. An LLM may be handed in (the
planner measures many runs with one loaded LLM); it must be the one the config's ``llm`` group names, loaded
by :func:`load_backbone`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from tsllm.config import LLMConfig, plain
from tsllm.data import DatasetSplits, load_ucr
from tsllm.encoders import build_encoder
from tsllm.identity import Identity, identify
from tsllm.llm import freeze, hidden_size, load_config, load_llm
from tsllm.loop import seed_everything
from tsllm.model import DataShape, TSClassifier
from tsllm.readers import ReaderContext, build_reader

Backbone = tuple[nn.Module, Any]  # (frozen LLM, tokenizer)


def val_fraction_of(cfg: Any) -> float:
    """The share of TRAIN a run holds out for validation, from its whole config (data + train).

    min_train_loss selects on TRAIN itself, so it trains on all of it: no validation carve-out.
    """
    return 0.0 if cfg.train.selection == "min_train_loss" else cfg.data.val_fraction


def load_data(cfg: Any) -> DatasetSplits:
    """The splits a run of ``cfg`` trains, selects and is tested on."""
    return load_ucr(cfg.data.name, cfg.data.root, normalise=cfg.data.normalise, val_fraction=val_fraction_of(cfg),
                    seed=cfg.seed, missing=cfg.data.missing)


def load_backbone(cfg: Any) -> Backbone:
    """The frozen LLM and tokenizer of a config, as a run loads them (to hand to :func:`build_model`)."""
    llm, tokenizer = load_llm(LLMConfig.from_cfg(cfg.llm), seed=cfg.seed)
    return freeze(llm), tokenizer


def build_model(cfg: Any, data: DataShape, *, llm: Backbone | None = None, run_dir: str | Path | None = None
                ) -> TSClassifier:
    """Join the configured encoder, reader and a head for a dataset. The LLM is loaded only if the reader uses one.

    H, the latent size, is the configured LLM's hidden size (read from its config, no weights) in every
    mode, so the encoder of a standalone run is the same network as that of a hybrid run. ``encoder=none``
    hands the raw series to a reader that reads series itself (mode=text).
    """
    spec = LLMConfig.from_cfg(cfg.llm)
    latent_dim = hidden_size(llm[0].config if llm is not None else load_config(spec))
    enc_args = plain(cfg.encoder)
    name = enc_args.pop("name")
    encoder = (nn.Identity() if name == "none" else
               build_encoder(name, in_channels=data.n_channels, length=data.length, latent_dim=latent_dim, **enc_args))
    ctx = ReaderContext(spec=spec, hidden_size=latent_dim, num_tokens=getattr(encoder, "num_tokens", 1),
                        num_classes=data.num_classes, dataset=data.name, seed=cfg.seed,
                        run_dir=None if run_dir is None else str(run_dir), data=data, handed_in=llm)
    reader = build_reader(cfg.reader, ctx)
    if (name == "none") != reader.reads_series:
        raise ValueError(f"reader={cfg.reader.name} with encoder={name}: a reader of raw series (mode=text) goes "
                         "with encoder=none, and a reader of latents needs an encoder")
    return TSClassifier(encoder, reader, latent_dim, data.num_classes)


@dataclass
class Built:
    """A run's data, model and identity, as its config builds them."""

    data: DatasetSplits
    model: TSClassifier
    identity: Identity


def build(cfg: Any, *, llm: Backbone | None = None, run_dir: str | Path | None = None,
          data: DatasetSplits | None = None) -> Built:
    """Data splits and model of a run of ``cfg``, seeded as every run is (``data`` may be passed when loaded)."""
    data = load_data(cfg) if data is None else data
    seed_everything(cfg.seed)  # a random-init LLM and every initial weight come from the seed
    return Built(data, build_model(cfg, data, llm=llm, run_dir=run_dir), identify(cfg))
