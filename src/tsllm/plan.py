"""`python -m tsllm.plan <the overrides of a sweep>`: what a sweep will cost, measured before it is launched.

    python -m tsllm.plan -m experiment=controls datasets=evidence16 [--jobs 2] [--json] [--records DIR]
    python -m tsllm.plan -m experiment=paper_grid datasets=ucr2015 llm=llama31_8b --tflops 400

A dry run of the real thing. The sweep's cells are expanded as Hydra's basic sweeper does (the experiment's
``hydra.sweeper.params`` and any ``a,b,c`` override); cells whose resolved configs are equal train once, as in
a real sweep. Each distinct run is built with :mod:`tsllm.build` (its data, its model, its LLM) and the
loop's own steps are timed on this machine: a training step at each batch size an epoch has, the
BatchNorm refresh, an evaluation of each split, a checkpoint, the diagnostics at the run's level, the text
arm's reads of a series, and the setting up (data, model, LLM). The times are multiplied by how often a run
does each. ``--jobs K`` measures K runs at once, each on its share of the cores, as a sweep of K queues
runs. Early stopping is ignored: the hours are an upper bound.

FLOPs are the machine-independent column: one training step and one evaluation forward counted with
:mod:`tsllm.flops` on the built model (on the meta device for an LLM whose weights are not here). Memory is the
other: each run's peak accelerator memory, read by :mod:`tsllm.memory` from the same meta-device model (the
LLM at llm.dtype, ``auto`` counted as on a GPU, or llm.quantization; a step's and an evaluation's
activations; the trainable part with Adam's state), and the common GPU sizes (24, 40, 80 GiB) that hold it. A run that
cannot be built here (the weights, or the data, are elsewhere) is costed from its FLOPs at ``--tflops``
(default: the float32 matmul rate measured on this CPU now); the ``hours_from`` column says which. With
``--records DIR``, each planned run is matched by config hash to its finished record there, and the wall
hours those records took (over every session) stand beside the plan. ``--json`` prints the same rows for
scripts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import resources
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tsllm.build import build, build_model, load_backbone, load_data, val_fraction_of
from tsllm.config import LLMConfig, TrainConfig, plain
from tsllm.data import UCR2015_85, DataError, DatasetSplits, Split, register_resolvers, resolve_dataset_set
from tsllm.flops import count_forward_flops, count_train_step_flops
from tsllm.identity import identify, without
from tsllm.llm import BackboneError, freeze, load_config, resolve_dtype, tokenizer_of
from tsllm.loop import Fit, resolve_threads, save_atomic
from tsllm.memory import CONTEXT_GIB, GIB, GPU_GIB, HEADROOM, Footprint, footprint
from tsllm.model import TSClassifier
from tsllm.preflight import experiment_axes
from tsllm.readers import MeanReader
from tsllm.records import config_hash, environment
from tsllm.train import CONF_DIR

log = logging.getLogger("tsllm.plan")
register_resolvers()
META_ABOVE_PARAMS = 1e9  # LLMs above this many parameters are not loaded here: counted on the meta device
LLAMA31_8B_DIMS = dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, head_dim=128,
                       max_position_embeddings=131072, tie_word_embeddings=False)
SAMPLE = 8  # series per timed evaluation, text read or diagnostics pass (scaled to the split's size)


class PlanError(ValueError):
    """Bad input to the planner: one line."""


# --------------------------------------------------------------------------- cells and dataset sizes


@dataclass(frozen=True)
class Shape:
    """What the cost of a run depends on in a dataset."""

    n_train: int  # after the validation split
    n_val: int
    n_test: int
    n_channels: int
    length: int
    num_classes: int
    source: str  # "data" (read from the files) or "table" (bundled UCR 2015 summary)


def sizes_table() -> dict[str, dict[str, int]]:
    return json.loads(resources.files("tsllm").joinpath("assets/ucr2015_sizes.json").read_text())["datasets"]


def dataset_shape(cfg: DictConfig) -> tuple[Shape, DatasetSplits | None]:
    """A run's split sizes, from its data when it can be read here (returned too), else from the bundled table."""
    try:
        d = load_data(cfg)
        n_val = 0 if d.val is None else len(d.val.y)
        return Shape(len(d.train.y), n_val, len(d.test.y), d.n_channels, d.length, d.num_classes, "data"), d
    except DataError:
        table = sizes_table()
        if cfg.data.name not in table:
            raise PlanError(f"dataset {cfg.data.name!r} is neither under data.root={cfg.data.root} nor in the "
                            "bundled UCR 2015 size table") from None
    row = table[cfg.data.name]
    n, k, fraction = row["n_train"], row["num_classes"], val_fraction_of(cfg)
    # The split rule of tsllm.data.splits.stratified_split (class counts unknown here: assumed >= 2 each).
    n_val = max(k, math.floor(fraction * n + 0.5)) if fraction > 0 else 0
    if n - n_val < k:
        n_val = 0
    return Shape(n - n_val, n_val, row["n_test"], row["n_channels"], row["length"], k, "table"), None


def dataset_names(spec: Any, root: str | None) -> list[str]:
    """A dataset set's names; the 85 UCR 2015 names even when they are not under root (sizes: the table)."""
    try:
        return resolve_dataset_set(spec, root)
    except DataError as e:
        tokens = [t.strip() for t in (spec.split(",") if isinstance(spec, str) else spec)]
        if not all(t.lower() == "ucr2015" or t in sizes_table() for t in tokens):
            raise PlanError(str(e)) from None
        names = [n for t in tokens for n in (UCR2015_85 if t.lower() == "ucr2015" else [t])]
        log.info("Not all datasets are under data.root=%s: their sizes come from the bundled UCR 2015 table", root)
        return list(dict.fromkeys(names))


def expand(overrides: list[str]) -> tuple[list[str], list[list[str]]]:
    """(plain overrides, one list of sweep overrides per cell): the product of every sweep axis, the command
    line's over the experiment's (a single command-line value replaces an experiment's axis, as in Hydra).

    An experiment's dataset set (``${tsllm_datasets:...}``) expands to its names even where they are not all on
    disk: those are sized from the bundled UCR 2015 table.
    """
    parser = OverridesParser.create()
    parsed = parser.parse_overrides([o for o in overrides if o not in ("-m", "--multirun")])
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        base = compose(config_name="train", overrides=fixed, return_hydra_config=True)
    axes = experiment_axes(base, {o.get_key_element() for o in parsed}, datasets=dataset_names)
    for o in parsed:
        if o.is_sweep_override():
            axes[o.get_key_element()] = list(o.sweep_string_iterator())
    if not axes:
        return fixed, [[]]
    keys = list(axes)
    return fixed, [[f"{k}={v}" for k, v in zip(keys, combo, strict=True)]
                   for combo in itertools.product(*(axes[k] for k in keys))]


# --------------------------------------------------------------------------- the LLMs a plan builds with


class _ApproxTokenizer:
    """Stands in for a tokenizer that is not available here: one token per word or punctuation mark, plus BOS.

    Close to a BPE tokenizer on the short English prompt; it only sets the prompt length (attention cost).
    """

    bos_token_id, eos_token_id, pad_token_id = 1, 2, None
    all_special_ids = [1, 2]

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        pieces = re.findall(r"\w+|[^\w\s]", text)
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + [3] * len(pieces)}

    def __len__(self) -> int:
        return 4


def _published_config(name: str):
    """The model's config from the bundled copy (Llama-3.1-8B), or its published dimensions."""
    from transformers import AutoConfig, LlamaConfig

    if name == "llama31_8b":
        path = resources.files("tsllm").joinpath("assets/llama31_8b_config.json")
        if path.is_file():
            return AutoConfig.for_model(**json.loads(path.read_text()))
        return LlamaConfig(**{k: v for k, v in LLAMA31_8B_DIMS.items() if k != "model_type"})
    raise PlanError(f"llm {name!r}: its config cannot be loaded here and no published config is bundled")


class Backbones:
    """The LLMs of a plan, each loaded once: the real one (to time runs with) where its weights are here and it
    fits, and a meta-device copy of every one (to count FLOPs on, from shapes alone)."""

    def __init__(self) -> None:
        self._real: dict[str, tuple[Any, float] | None] = {}
        self._meta: dict[str, Any] = {}
        self._configs: dict[str, bool] = {}
        self.notes: set[str] = set()

    @staticmethod
    def _key(cfg: DictConfig) -> str:
        llm_cfg = plain(cfg.llm)
        return json.dumps([llm_cfg, cfg.seed if llm_cfg.get("weights") == "random" else None], sort_keys=True)

    def real(self, cfg: DictConfig) -> tuple[tuple[nn.Module, Any], float] | None:
        """((frozen LLM, tokenizer), seconds a run takes to load it), or None where it cannot be run here."""
        key = self._key(cfg)
        if key not in self._real:
            self._real[key] = self._load(cfg)
        return self._real[key]

    def _load(self, cfg: DictConfig) -> tuple[Any, float] | None:
        spec = LLMConfig.from_cfg(cfg.llm)
        size = sum(p.numel() for p in self.meta(cfg)[0].parameters())
        if size > META_ABOVE_PARAMS:
            self.notes.add(f"{spec.name}: {size / 1e9:.2f} B parameters, not run here: its runs are costed from "
                           "FLOPs counted on the meta device")
            return None
        try:
            start = time.perf_counter()
            backbone = load_backbone(cfg)
            return backbone, time.perf_counter() - start
        except BackboneError:
            self.notes.add(f"{spec.name}: weights not available here: its runs are costed from FLOPs")
            return None

    def buildable(self, cfg: DictConfig) -> bool:
        """Whether a run of ``cfg`` can be built and timed here as training builds it: through the real LLM where
        it reads through one, else from the LLM's config alone (a standalone run's latent size is its hidden size)."""
        if identify(cfg).uses_llm:
            return self.real(cfg) is not None
        key = json.dumps(plain(cfg.llm), sort_keys=True)
        if key not in self._configs:
            spec = LLMConfig.from_cfg(cfg.llm)
            try:
                load_config(spec)
                self._configs[key] = True
            except BackboneError:
                self.notes.add(f"{spec.name}: its config is not available here: standalone runs under it (latent "
                               "size = its hidden size) are costed from FLOPs")
                self._configs[key] = False
        return self._configs[key]

    def meta(self, cfg: DictConfig) -> tuple[nn.Module, Any]:
        """(the LLM on the meta device, its tokenizer or an approximation): shapes without weights."""
        from transformers import AutoModelForCausalLM

        key = json.dumps(plain(cfg.llm), sort_keys=True)
        if key not in self._meta:
            spec = LLMConfig.from_cfg(cfg.llm)
            with torch.device("meta"):
                llm = AutoModelForCausalLM.from_config(self._config(spec))
            if spec.num_layers is not None:
                from tsllm.llm.loading import truncate_layers

                llm = truncate_layers(llm, spec.num_layers)
            tokenizer = tokenizer_of(cfg.llm)
            if tokenizer is None:
                tokenizer = _ApproxTokenizer()
                self.notes.add(f"{spec.name}: tokenizer not available here; prompt length approximated as one "
                               "token per word or punctuation mark (+ BOS)")
            self._meta[key] = (freeze(llm), tokenizer)
        return self._meta[key]

    @staticmethod
    def _config(spec: LLMConfig):
        try:
            return load_config(spec)
        except BackboneError:
            return _published_config(spec.name)


# --------------------------------------------------------------------------- FLOPs (machine-independent)


@dataclass
class Flops:
    """FLOPs of a run's kinds of work: a training step (at the batch size), an evaluation forward per series,
    the BatchNorm refresh per TRAIN series, the text arm's read per series (once per series, features kept)."""

    step: float
    eval_per_series: float
    bn_per_series: float = 0.0
    read_per_series: float = 0.0


def count_flops(model: nn.Module, shape: Shape, cfg: DictConfig, device: torch.device,
                readers: dict[str, tuple[float, float]] | None = None) -> Flops:
    """FLOPs of one training step and one evaluation forward of a built model, on ``device`` (meta or CPU).

    FLOPs add up by module: where an LLM reads the latents, the encoder and head are counted with a mean
    pool in the reader's place, and the reader apart, per series (FLOPs are linear in the batch), once per
    reader, LLM and latent shape in ``readers``: the dataset changes the encoder's cost, not the LLM's.
    """
    b = min(cfg.train.batch_size, shape.n_train)
    reader = model.reader
    split = reader.llm_reads_latents
    with torch.device(device), torch.random.fork_rng(devices=[]):
        front = TSClassifier(model.encoder, MeanReader(num_tokens=1), model.head.in_features, shape.num_classes) \
            if split else model
        x = torch.randn(b, shape.n_channels, shape.length)
        y = torch.randint(0, shape.num_classes, (b,))
        front(x[:1])  # builds the prompt's key/value cache outside the count, as a run does once
        step = float(count_train_step_flops(front, x, y))
        forward = count_forward_flops(front, x) / b
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.encoder.modules())
        bn = float(count_forward_flops(model.encoder, x[:1])) if has_bn else 0.0
        if split:
            with torch.no_grad():
                latents = model.encoder.eval()(x[:1])
            key = json.dumps([plain(cfg.reader), plain(cfg.llm), list(latents.shape)], sort_keys=True, default=str)
            readers = {} if readers is None else readers
            if key not in readers:
                readers[key] = _reader_flops(reader, latents)
            train_one, eval_one = readers[key]
            step, forward = step + b * train_one, forward + eval_one
    return Flops(step=step, eval_per_series=float(forward), bn_per_series=bn)


def _reader_flops(reader: nn.Module, latents: torch.Tensor) -> tuple[float, float]:
    """(forward + backward to the latents, forward) FLOPs of a reader on one series' latents [1, L, H]."""
    reader(latents)  # the prompt's key/value cache, built once outside the count as a run does
    latents = torch.randn_like(latents).requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        reader.train()(latents).float().sum().backward()
    return float(counter.get_total_flops()), float(count_forward_flops(reader, latents.detach()))


def run_flops(f: Flops, cfg: DictConfig, shape: Shape, trains: bool) -> float:
    """FLOPs of a whole run of cfg, as tsllm.loop trains and evaluates it."""
    evaluations = shape.n_test * (1 if cfg.train.epochs == 1 or not trains else 2) + shape.n_val
    reads = (shape.n_train if trains else 0) + shape.n_val + shape.n_test
    if not trains:  # nothing trains (text_icl): it reads validation and TEST once
        return evaluations * f.eval_per_series + reads * f.read_per_series
    b = min(cfg.train.batch_size, shape.n_train)
    epoch = shape.n_train * (f.step / b + f.bn_per_series) + shape.n_val * f.eval_per_series
    if cfg.train.protocol == "study_best_test":
        epoch += shape.n_test * f.eval_per_series
    return cfg.train.epochs * epoch + evaluations * f.eval_per_series + reads * f.read_per_series


# --------------------------------------------------------------------------- the dry run


@dataclass
class Timing:
    """Seconds of each kind of work a run does, measured on this machine by the run's own code."""

    setup: float                 # data, model and LLM, as a run sets them up
    first_step_extra: float      # the first step's warm-up and FLOP count, beyond a plain step
    steps: dict[int, float]      # seconds of a training step, by batch size
    bn_refresh: float            # BatchNorm statistics over TRAIN, once per epoch
    eval_per_series: float
    eval_per_call: float         # the fixed part of one evaluation of a split
    checkpoint: float            # the last checkpoint (every epoch) and the selected one (upper bound: every epoch)
    diagnostics: float           # at the run's level, scaled to its TEST split
    read_per_series: float = 0.0  # text arm: the LLM's read of one series (once per series)
    threads: int = 1
    flops: Flops | None = None

    def run_seconds(self, cfg: DictConfig, shape: Shape, trains: bool) -> float:
        """Seconds of a whole run: the counts of tsllm.loop times these measurements."""
        def evaluate(n: int) -> float:
            return self.eval_per_call + n * self.eval_per_series if n else 0.0

        reads = ((shape.n_train if trains else 0) + shape.n_val + shape.n_test) * self.read_per_series
        final = evaluate(shape.n_test) * (1 if cfg.train.epochs == 1 or not trains else 2) + evaluate(shape.n_val)
        if not trains:
            return self.setup + reads + final + self.diagnostics
        b = min(cfg.train.batch_size, shape.n_train)
        full, rest = divmod(shape.n_train, b)
        epoch = full * self.steps[b] + (self.steps[rest] if rest else 0.0) + self.bn_refresh
        epoch += evaluate(shape.n_val) + self.checkpoint
        if cfg.train.protocol == "study_best_test":
            epoch += evaluate(shape.n_test)
        return self.setup + self.first_step_extra + cfg.train.epochs * epoch + final + reads + self.diagnostics


def _subset(split: Split, n: int) -> Split:
    return Split(split.x[:n], split.y[:n])


def measure(cfg: DictConfig, data: DatasetSplits, backbone: tuple[nn.Module, Any] | None, llm_seconds: float,
            repeats: int = 2) -> Timing:
    """Build a run of cfg as training does and time each kind of step it will take, ``repeats`` times each."""
    from tsllm.diagnostics import resolve_level, run_diagnostics

    train_cfg = TrainConfig.from_cfg(cfg.train)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="tsllm-plan-") as tmp:
        start = time.perf_counter()
        load_data(cfg)  # what a run spends reading its data (the copy given is the same)
        model = build(cfg, llm=backbone, run_dir=tmp, data=data).model
        environment()
        setup = time.perf_counter() - start + (llm_seconds if backbone is not None else 0.0)
        loop = Fit(model, data, train_cfg, seed=cfg.seed, run_dir=Path(tmp), on_epoch=None)
        x, y = torch.from_numpy(data.train.x), torch.from_numpy(data.train.y)
        reader = model.reader
        read = 0.0
        features = getattr(reader, "features", None) or getattr(reader, "classifier", None)
        reads_flops = 0.0
        if features is not None:  # the text arm: each series is read once, then kept
            k = min(SAMPLE, len(data.test.y))
            sample = torch.from_numpy(data.test.x[:k])
            with FlopCounterMode(display=False) as counter:
                tic = time.perf_counter()
                features(sample)
                read = (time.perf_counter() - tic) / k
            reads_flops = counter.get_total_flops() / k
            features.memo.rows.clear()
            features.memo.factors.clear()
        steps: dict[int, float] = {}
        first_extra = 0.0
        if loop.optimizer is not None:
            b = min(train_cfg.batch_size, len(y))
            sizes = sorted({b, len(y) % b} - {0})
            if features is not None:
                features(x[:b])  # the reads are costed above; the steps time the head on kept features
            tic = time.perf_counter()
            loop.warm_up(x[:1])
            with FlopCounterMode(display=False) as counter:  # the loop's own first step: warm-up and count
                loop.step(x[:b], y[:b], 0)
            first = time.perf_counter() - tic
            step_flops = float(counter.get_total_flops())
            for size in sizes:
                if features is not None:
                    features(x[:size])
                times = []
                for _ in range(repeats):
                    tic = time.perf_counter()
                    loop.model.train()
                    loop.step(x[:size], y[:size], 0)
                    times.append(time.perf_counter() - tic)
                steps[size] = float(np.median(times))
            first_extra = max(0.0, first - steps[b])
            tic = time.perf_counter()
            loop.refresh_batchnorm()
            bn = time.perf_counter() - tic
            loop.state.session_seconds = [0.0]
            loop.start = time.perf_counter()
            tic = time.perf_counter()
            loop.checkpoint()
            save_atomic(loop.base.trainable_state(), loop.best_path)
            ckpt = time.perf_counter() - tic
        else:
            bn = ckpt = step_flops = 0.0
        # Evaluation: the fixed part of a call, and the part per series (kept text features are not re-read).
        k = min(SAMPLE, len(data.test.y))
        one, many = _subset(data.test, 1), _subset(data.test, k)
        if features is not None:
            features(torch.from_numpy(many.x))
        loop.evaluate(loop.model, one)
        tic = time.perf_counter()
        loop.evaluate(loop.model, one)
        t_one = time.perf_counter() - tic
        tic = time.perf_counter()
        loop.evaluate(loop.model, many)
        t_many = time.perf_counter() - tic
        # A difference of two timings can fall to nothing on a loaded machine: the k-series call sets the rate
        # per series, and what one series costs beyond that share is the call's fixed part.
        per_series = t_many / k
        per_call = max(0.0, t_one - per_series)
        eval_flops = count_forward_flops(model, torch.from_numpy(many.x)) / k
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.encoder.modules())
        bn_flops = float(count_forward_flops(model.encoder, x[:1])) if has_bn else 0.0
        # Diagnostics at the run's level, on a sample of TEST, scaled to what the run diagnoses.
        diag = 0.0
        diag_cfg = cfg.get("diagnostics")
        level = resolve_level(diag_cfg.level, model) if diag_cfg is not None else "none"
        if level != "none":
            sample = DatasetSplits(name=data.name, train=_subset(data.train, k), val=None, test=many,
                                   classes=data.classes, meta=data.meta)
            tic = time.perf_counter()
            run_diagnostics(model, sample, tmp, level, max_series=k, figures=level == "full")
            diag = (time.perf_counter() - tic) * min(len(data.test.y), diag_cfg.max_series) / k
    return Timing(setup=setup, first_step_extra=first_extra, steps=steps, bn_refresh=bn, eval_per_series=per_series,
                  eval_per_call=per_call, checkpoint=ckpt, diagnostics=diag, read_per_series=read, threads=threads,
                  flops=Flops(step_flops, float(eval_flops), bn_flops, read_per_series=reads_flops))


# --------------------------------------------------------------------------- the plan


@dataclass
class Planned:
    """One distinct run of a sweep."""

    config: dict[str, Any]
    cell: str           # the sweep overrides that make it
    shape: Shape
    data: DatasetSplits | None = field(default=None, repr=False)

    @property
    def cfg(self) -> DictConfig:
        return OmegaConf.create(self.config)


def distinct_runs(overrides: list[str], seen: set[str] | None = None) -> tuple[list[Planned], int]:
    """(the runs a sweep would train, twin cells dropped (configs resolve equal), with their dataset shapes;
    its number of cells). Runs whose config hash is in ``seen`` (another sweep's) are dropped too."""
    fixed, cells = expand(overrides)
    by_rest: dict[tuple, list[str]] = {}
    for cell in cells:  # compose once per non-dataset combination; datasets only change shapes
        rest = tuple(o for o in cell if not o.startswith("data.name="))
        by_rest.setdefault(rest, []).extend(o.split("=", 1)[1].strip("'\"") for o in cell if o.startswith("data.name="))
    runs, shapes = [], {}
    seen = set() if seen is None else seen
    for i, (rest, names) in enumerate(by_rest.items()):
        log.info("[%d/%d] %s: %d datasets", i + 1, len(by_rest), " ".join(rest) or "(one cell)", len(names) or 1)
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="train", overrides=[*fixed, *rest])
        for name in names or [cfg.data.name]:
            cfg.data.name = name
            config = plain(cfg)
            key = config_hash(config)
            if key in seen:
                continue
            seen.add(key)
            data_key = json.dumps([plain(cfg.data), cfg.seed, val_fraction_of(cfg)], sort_keys=True)
            if data_key not in shapes:
                shapes[data_key] = dataset_shape(cfg)
            shape, data = shapes[data_key]
            runs.append(Planned(config, " ".join(rest), shape, data))
    return runs, len(cells)


def _measure_key(config: dict[str, Any]) -> str:
    """Runs that differ only in their seed cost the same: one measurement serves them (the cell's hash)."""
    return config_hash(without(config, "seed"))


def _flops_key(config: dict[str, Any], shape: Shape) -> str:
    """FLOPs do not depend on the seed, learning rate, selection or data beyond its shape."""
    return json.dumps([config_hash(without(config, "seed", "train.lr", "data", "train.selection", "train.resume",
                                           "train.early_stopping", "train.protocol", "train.epochs")),
                       shape.n_channels, shape.length, shape.num_classes, min(shape.n_train, config["train"]["batch_size"])])


def _measure_worker(items: list[tuple[str, dict[str, Any]]], threads: int, repeats: int) -> dict[str, dict]:
    """Measure each (key, config) in this process with ``threads`` threads (a worker of ``--jobs``)."""
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    backbones = Backbones()
    out = {}
    for key, config in items:
        cfg = OmegaConf.create(config)
        out[key] = asdict(_measure_one(cfg, backbones, repeats))
    return out


def _measure_one(cfg: DictConfig, backbones: Backbones, repeats: int) -> Timing:
    data = load_data(cfg)
    backbone, seconds = backbones.real(cfg) if identify(cfg).uses_llm else (None, 0.0)
    with torch.random.fork_rng(devices=[]):
        return measure(cfg, data, backbone, seconds, repeats)


def measure_all(todo: dict[str, dict[str, Any]], jobs: int, repeats: int) -> dict[str, Timing]:
    """Timings of every (key -> config), ``jobs`` at a time in worker processes (1: in this process)."""
    if not todo:
        return {}
    threads = resolve_threads(None, jobs)
    items = list(todo.items())
    if jobs <= 1:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return {k: Timing(**_timing_fields(v)) for k, v in _measure_worker(items, threads, repeats).items()}
        finally:
            torch.set_num_threads(before)
    shares = [items[i::jobs] for i in range(jobs)]
    # Every worker measures while the others do, as K queues run: a worker with nothing of its own repeats the
    # first run (its numbers are dropped), so the load stays at K until the last measurement ends.
    shares = [s or [("_load", items[0][1])] for s in shares]
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(_measure_worker, shares, [threads] * jobs, [repeats] * jobs))
    merged = {k: v for r in results for k, v in r.items() if k != "_load"}
    return {k: Timing(**_timing_fields(v)) for k, v in merged.items()}


def _timing_fields(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    d["steps"] = {int(k): v for k, v in d["steps"].items()}
    d["flops"] = Flops(**d["flops"]) if d.get("flops") else None
    return d


def plan(overrides: list[str] | list[list[str]], *, jobs: int = 1, timed: bool = True,
         repeats: int = 2) -> tuple[pd.DataFrame, set[str]]:
    """One row per run the sweep (or sweeps: a list of override lists) would train, twin cells dropped:
    identity, counts, FLOPs, measured seconds."""
    sweeps = overrides if overrides and isinstance(overrides[0], list) else [overrides]
    runs, cells, seen = [], 0, set()
    for sweep in sweeps:
        more, n = distinct_runs(list(sweep), seen)
        runs += more
        cells += n
    backbones = Backbones()
    todo: dict[str, dict[str, Any]] = {}
    for r in runs:
        if timed and r.data is not None and backbones.buildable(r.cfg):
            todo.setdefault(_measure_key(r.config), r.config)
    timings = measure_all(todo, jobs, repeats)
    # FLOPs: counted by the loop's own step where a run was measured, else on the meta device from shapes alone
    # (where the meta counter also counts attention scores, which torch's CPU counter leaves out). Memory: read
    # from the same meta-device model (tsllm.memory), for every run.
    flops: dict[str, Flops] = {}
    footprints: dict[str, Footprint] = {}
    readers: dict[str, tuple[float, float]] = {}
    for r in runs:
        cfg, key = r.cfg, _flops_key(r.config, r.shape)
        timing = timings.get(_measure_key(r.config))
        if timing is not None:
            flops[key] = timing.flops
        if key in footprints or identify(r.config).mode == "text":
            continue
        with torch.device("meta"), torch.random.fork_rng(devices=[]):
            model = build_model(cfg, _ShapeOnly(cfg.data.name, r.shape), llm=backbones.meta(cfg))
        footprints[key] = footprint(model, r.shape.n_channels, r.shape.length)
        if key not in flops:
            flops[key] = count_flops(model, r.shape, cfg, torch.device("meta"), readers)
    rows = []
    for r in runs:
        cfg, identity = r.cfg, identify(r.config)
        timing = timings.get(_measure_key(r.config))
        trains = not str(cfg.reader._target_).endswith("TextICLReader")
        f = timing.flops if timing is not None else flops.get(_flops_key(r.config, r.shape), Flops(0, 0, 0, math.nan))
        b = min(cfg.train.batch_size, r.shape.n_train)
        steps = cfg.train.epochs * math.ceil(r.shape.n_train / b) if trains else 0
        memory = _memory(footprints.get(_flops_key(r.config, r.shape)), cfg, r.shape)
        rows.append({"config_hash": config_hash(r.config), "dataset": cfg.data.name, "encoder": cfg.encoder.name,
                     "mode": identity.mode, "arm": identity.arm,
                     "llm": cfg.llm.name if identity.mode != "standalone" else None, "lr": cfg.train.lr,
                     "epochs": cfg.train.epochs, "n_train": r.shape.n_train, "n_val": r.shape.n_val,
                     "n_test": r.shape.n_test, "sizes_from": r.shape.source, "cell": r.cell, "steps": steps,
                     "flops_per_step": f.step, "flops": run_flops(f, cfg, r.shape, trains),
                     "seconds": timing.run_seconds(cfg, r.shape, trains) if timing is not None else math.nan,
                     "threads": timing.threads if timing is not None else None,
                     "hours_from": "measured" if timing is not None else "flops", **memory})
    notes = backbones.notes | {f"{cells} cells, {len(runs)} distinct runs", MEMORY_NOTE}
    if timed and len(timings) < len({_measure_key(r.config) for r in runs}):
        notes.add("runs whose weights or data are not here are costed from their FLOPs at the rate below")
    return pd.DataFrame(rows), notes


MEMORY_NOTE = (f"memory: peak accelerator memory of each run (tsllm.memory: LLM weights at llm.dtype, where auto "
               f"means bfloat16 as on a GPU, or at llm.quantization; activations of a step and of an evaluation "
               f"batch; the trainable part with Adam's state); fits: the sizes of {', '.join(map(str, GPU_GIB))} GiB "
               f"that hold it with {HEADROOM:.0%} and {CONTEXT_GIB:g} GiB to spare (the text arm: not estimated)")


def _memory(fp: Footprint | None, cfg: DictConfig, shape: Shape) -> dict[str, Any]:
    """A run's memory columns, in GiB, and the common accelerator sizes that hold it (a comma-separated list)."""
    if fp is None:
        return {"memory_gib": math.nan, "weights_gib": math.nan, "activations_gib": math.nan, "fits_gib": None}
    m = fp.at(batch_size=min(cfg.train.batch_size, shape.n_train),
              eval_batch_size=min(cfg.train.eval_batch_size, max(shape.n_val, shape.n_test)),
              dtype=resolve_dtype(cfg.llm.dtype, gpu=True), quantization=cfg.llm.quantization)
    return {"memory_gib": m.total / GIB, "weights_gib": m.weights / GIB,
            "activations_gib": max(m.step, m.evaluation) / GIB, "fits_gib": ",".join(map(str, m.fitting())) or "none"}


@dataclass(frozen=True)
class _ShapeOnly:
    """A dataset's shape for the builder when only its sizes are known (tsllm.model.DataShape)."""

    name: str
    shape: Shape

    @property
    def n_channels(self) -> int:
        return self.shape.n_channels

    @property
    def length(self) -> int:
        return self.shape.length

    @property
    def num_classes(self) -> int:
        return self.shape.num_classes


def with_records(runs: pd.DataFrame, records: str | Path | list[str]) -> pd.DataFrame:
    """The planned runs with what their finished records under `records` say they cost, matched by config hash.

    ``real_hours`` is the record's wall time over its sessions (NaN where the run has not finished);
    ``partial`` marks a resumed run whose earlier sessions were not timed: a lower bound there.
    """
    from tsllm.results.loading import load_records, wall_hours

    done = load_records(records).drop_duplicates("config_hash").set_index("config_hash")
    hours, partial = wall_hours(done.reindex(runs["config_hash"]))
    return runs.assign(real_hours=hours.to_numpy(), partial=partial.to_numpy())


def cpu_throughput(seconds: float = 1.0, n: int = 1024) -> float:
    """Sustained float32 matmul FLOP/s measured on this machine now."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start)


def summarise(runs: pd.DataFrame, rate: float) -> pd.DataFrame:
    """Hours per encoder and mode: measured where a run was measured, from FLOPs at ``rate`` elsewhere; the
    largest run's memory and the accelerator sizes that hold every run of the group."""
    hours = runs["seconds"].where(runs["hours_from"] == "measured", runs["flops"] / rate) / 3600
    runs = runs.assign(hours=hours)
    real = {"finished": ("real_hours", "count"), "real_hours": ("real_hours", "sum")} if "real_hours" in runs else {}
    return runs.groupby(["encoder", "mode"], dropna=False).agg(
        runs=("flops", "size"), steps=("steps", "sum"), flops=("flops", "sum"), hours=("hours", "sum"), **real,
        peak_gib=("memory_gib", "max"), fits_gib=("fits_gib", common_sizes))


def common_sizes(fits: pd.Series) -> str | None:
    """The sizes every run's ``fits_gib`` names (``24,40,80``), ``none``, or None where no run was estimated."""
    known = [set(f.split(",")) - {"none"} for f in fits if isinstance(f, str)]
    if not known:
        return None
    both = set.intersection(*known)
    return ",".join(sorted(both, key=int)) or "none"


def fits_line(runs: pd.DataFrame) -> str:
    """``all 5100 runs fit 24, 40, 80 GiB`` or how many fit each common size."""
    estimated = runs["fits_gib"].dropna()
    counts = {g: int(estimated.map(lambda f, g=g: str(g) in f.split(",")).sum()) for g in GPU_GIB}
    if all(n == len(estimated) for n in counts.values()):
        return f"all {len(estimated)} estimated runs fit {', '.join(map(str, GPU_GIB))} GiB"
    return "runs that fit: " + ", ".join(f"{n} of {len(estimated)} in {g} GiB" for g, n in counts.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsllm.plan", description=__doc__.splitlines()[0])
    parser.add_argument("--tflops", type=float, default=None,
                        help="throughput for runs costed from FLOPs, in TFLOP/s (a GPU's); default: this CPU's")
    parser.add_argument("--jobs", type=int, default=1, help="measure K runs at once, as a sweep of K queues runs")
    parser.add_argument("--no-measure", action="store_true", help="FLOPs only: every run costed at the rate")
    parser.add_argument("--repeats", type=int, default=2, help="timed repetitions of each step (median)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (rows, summary, notes) only")
    parser.add_argument("--csv", default=None, help="also write one row per run to this CSV")
    parser.add_argument("--records", nargs="?", const="", default=None,
                        help="a folder of run records (a sweep's): beside the plan, the wall time its finished runs "
                             "took; with --experiment and no folder, the experiment's own")
    parser.add_argument("--experiment", default=None, help="a queue experiment (tsllm.experiment): plan its sweeps")
    parser.add_argument("--queue", action="append", default=[], help="with --experiment: its queues to plan "
                        "(repeatable; default: all); --jobs defaults to their number, as they run side by side")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING if args.json else logging.INFO, format="%(message)s")
    records: list[str] = [args.records] if args.records else []
    try:
        sweeps: list[list[str]] = [overrides]
        if args.experiment is not None:
            from tsllm.experiment import load_experiment

            experiment = load_experiment(args.experiment)
            sweeps = [[*sweep, *overrides] for sweep in experiment.sweeps(args.queue)]
            args.jobs = args.jobs if "--jobs" in (argv or sys.argv) else len(experiment.select(args.queue))
            records = records or experiment.values("hydra.sweep.dir")
        runs, notes = plan(sweeps, jobs=args.jobs, timed=not args.no_measure, repeats=args.repeats)
    except (PlanError, DataError, ValueError) as e:
        log.error("%s", e)
        return 2
    finished = pd.Series(dtype=bool)
    if args.records is not None:
        if not records:
            log.error("--records needs a folder (or --experiment)")
            return 2
        runs = with_records(runs, records)
    if args.tflops is not None:
        rate, what = args.tflops * 1e12, f"{args.tflops:g} TFLOP/s (given)"
    else:
        rate = cpu_throughput()
        what = f"{rate / 1e9:.1f} GFLOP/s (float32 matmul measured on this CPU now)"
    summary = summarise(runs, rate)
    planned = summary["hours"].sum()
    measured = int((runs["hours_from"] == "measured").sum())
    if args.json:
        print(json.dumps({"runs": json.loads(runs.to_json(orient="records")), "notes": sorted(notes),
                          "rate_flops_per_second": rate, "hours": planned, "jobs": args.jobs,
                          "summary": json.loads(summary.reset_index().to_json(orient="records"))}))
        return 0
    for note in sorted(notes):
        print(f"note: {note}")
    print(summary.to_string(float_format=lambda v: f"{v:.3g}"))
    line = (f"total: {len(runs)} runs on {runs['dataset'].nunique()} datasets, {runs['flops'].sum():.3e} FLOPs, "
            f"{planned:.3g} hours ({measured} runs measured here with --jobs {args.jobs}, the rest from FLOPs "
            f"at {what})")
    if args.records is not None:
        finished = runs["real_hours"].notna()
        line += (f"; records: {finished.sum()} of {len(runs)} finished, {runs['real_hours'].sum():.3g} real hours "
                 f"({(finished & runs['partial']).sum()} partial: resumed, earlier sessions not timed; "
                 "a lower bound)")
    print(line)
    if args.records is not None and finished.any():
        done = runs[finished]
        hours = summarise(done, rate)["hours"].sum()
        print(f"the {len(done)} finished runs: planned {hours:.3g} h, real {done['real_hours'].sum():.3g} h, "
              f"plan / real = {hours / done['real_hours'].sum():.2f}")
    if runs["memory_gib"].notna().any():
        top = runs.loc[runs["memory_gib"].idxmax()]
        print(f"memory: the largest run needs {top['memory_gib']:.1f} GiB ({top['encoder']} {top['mode']} on "
              f"{top['dataset']}); {fits_line(runs)}")
    if args.csv:
        runs.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
