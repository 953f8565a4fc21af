"""`python -m tsllm.plan <the overrides of a sweep>`: what a sweep will cost, before it is launched.

    python -m tsllm.plan -m experiment=paper_grid datasets=ucr2015 llm=llama31_8b [--tflops 400]

The sweep's cells are expanded as Hydra's basic sweeper does (the experiment's `hydra.sweeper.params`
and any `a,b,c` override); cells whose resolved configs are equal train once, as in a real sweep. Each
run's FLOPs = epochs x (TRAIN series x training FLOPs per series + BatchNorm refresh + validation
forwards) + the final evaluations, from FLOPs counted on one real step (or on the meta device for an LLM
that does not fit here) with `tsllm.flops`. Early stopping is ignored: the figure is an upper bound.
Dataset sizes come from the data when it is under data.root, else from the bundled UCR 2015 summary.
With `--records DIR`, each planned run is matched by config hash to its finished record there, and the
summary shows the wall hours those records took (over every session) beside the plan.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from torch import nn

from tsllm.backbone import LLMSpec, freeze, load_config
from tsllm.data import UCR2015_85, DataError, load_ucr, register_resolvers, resolve_dataset_set
from tsllm.flops import count_forward_flops, count_train_step_flops
from tsllm.loop import val_fraction_of
from tsllm.records import config_hash
from tsllm.train import CONF_DIR

log = logging.getLogger("tsllm.plan")
register_resolvers()
META_ABOVE_PARAMS = 1e9  # LLMs above this many parameters are counted on the meta device
LLAMA31_8B_DIMS = dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, head_dim=128,
                       max_position_embeddings=131072, tie_word_embeddings=False)


class PlanError(ValueError):
    """Bad input to the planner: one line."""


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


def dataset_shape(name: str, data_cfg: DictConfig, seed: int, val_fraction: float) -> Shape:
    """Sizes from the data itself when it can be read, else from the bundled UCR 2015 table.

    ``val_fraction`` is the run's own (`tsllm.loop.val_fraction_of`), which can differ from data_cfg's.
    """
    try:
        d = load_ucr(name, data_cfg.root, normalise=data_cfg.normalise, val_fraction=val_fraction,
                     seed=seed, missing=data_cfg.missing)
        n_val = 0 if d.val is None else len(d.val.y)
        return Shape(len(d.train.y), n_val, len(d.test.y), d.n_channels, d.length, d.num_classes, "data")
    except DataError:
        table = sizes_table()
        if name not in table:
            raise PlanError(f"dataset {name!r} is neither under data.root={data_cfg.root} nor in the "
                            "bundled UCR 2015 size table") from None
    row = table[name]
    n, k = row["n_train"], row["num_classes"]
    # The split rule of tsllm.data.splits.stratified_split (class counts unknown here: assumed >= 2 each).
    n_val = max(k, math.floor(val_fraction * n + 0.5)) if val_fraction > 0 else 0
    if n - n_val < k:
        n_val = 0
    return Shape(n - n_val, n_val, row["n_test"], row["n_channels"], row["length"], k, "table")


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
    """(plain overrides, one list of sweep overrides per cell), as Hydra's basic sweeper expands them."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides([o for o in overrides if o not in ("-m", "--multirun")])
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    user_sweeps = {o.key_or_group: o.input_line for o in parsed if o.is_sweep_override()}
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        base = compose(config_name="train", overrides=plain, return_hydra_config=True)
    node = base.hydra.sweeper.get("params")
    params = OmegaConf.to_container(node, resolve=False) if node is not None else {}
    fixed = {o.key_or_group for o in parsed if not o.is_sweep_override()}
    sweeps: dict[str, str] = {}
    for key, value in params.items():
        if key in fixed:  # a single value on the command line replaces the experiment's grid, as in Hydra
            continue
        if isinstance(value, str) and "tsllm_datasets" in value:
            value = ",".join(dataset_names(base.datasets.names, base.data.root))
        sweeps[key] = f"{key}={value}"
    sweeps.update(user_sweeps)  # the command line wins over the experiment's grid, as in Hydra
    if not sweeps:
        return plain, [[]]
    return plain, BasicSweeper.split_arguments(parser.parse_overrides(list(sweeps.values())), None)[0]


class _ApproxTokenizer:
    """Stands in for a tokenizer that is not available here: one token per word or punctuation mark, plus BOS.

    Close to a BPE tokenizer on the short English prompt; it only sets the prompt length (attention cost).
    """

    bos_token_id, eos_token_id, pad_token_id = 1, 2, None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        pieces = re.findall(r"\w+|[^\w\s]", text)
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + [3] * len(pieces)}


def _mode_of(cfg: DictConfig) -> str:
    """standalone | hybrid | lora | text, from the reader a config names."""
    from hydra.utils import get_class

    mode = get_class(cfg.reader._target_).mode
    return "lora" if mode == "hybrid" and cfg.reader.get("lora") else mode


class Counter:
    """FLOP counts per distinct shape, with one LLM per spec kept loaded (real or on the meta device)."""

    def __init__(self) -> None:
        self._llms: dict[str, tuple[nn.Module, Any, bool]] = {}
        self._cache: dict[str, tuple[float, float, float]] = {}
        self._readers: dict[str, tuple[int, float]] = {}
        self._fronts: dict[str, tuple[int, float, int]] = {}
        self._sizes: dict[str, int] = {}
        self._text: dict[str, float] = {}
        self.notes: set[str] = set()

    def _big(self, llm_cfg: DictConfig) -> bool:
        """Whether runs with this LLM are counted on the meta device (too large for this machine)."""
        from transformers import AutoModelForCausalLM

        key = json.dumps(OmegaConf.to_container(llm_cfg, resolve=True), sort_keys=True)
        if key not in self._sizes:
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(_config_or_published(LLMSpec.from_cfg(llm_cfg)))
            self._sizes[key] = sum(p.numel() for p in model.parameters())
            if self._sizes[key] > META_ABOVE_PARAMS:
                self.notes.add(f"{llm_cfg.name}: {self._sizes[key] / 1e9:.2f} B parameters, counted on the meta "
                               "device (standalone runs too: their latent size is its hidden size)")
        return self._sizes[key] > META_ABOVE_PARAMS

    def _llm(self, llm_cfg: DictConfig) -> tuple[nn.Module, Any, bool]:
        from tsllm.backbone import BackboneError, load_llm

        key = json.dumps(OmegaConf.to_container(llm_cfg, resolve=True), sort_keys=True)
        if key in self._llms:
            return self._llms[key]
        spec = LLMSpec.from_cfg(llm_cfg)
        meta = self._big(llm_cfg)
        if not meta:
            try:
                llm, tok = load_llm(spec, seed=0)
            except BackboneError:
                meta = True
                self.notes.add(f"{llm_cfg.name}: weights not available here, counted on the meta device")
        if meta:
            from transformers import AutoModelForCausalLM

            with torch.device("meta"):
                llm = AutoModelForCausalLM.from_config(_config_or_published(spec))
            tok = _tokenizer_or_approx(llm_cfg)
            if isinstance(tok, _ApproxTokenizer):
                self.notes.add(f"{llm_cfg.name}: tokenizer not available here; prompt length approximated "
                               "as one token per word or punctuation mark (+ BOS)")
        self._llms[key] = (freeze(llm), tok, meta)
        return self._llms[key]

    def hidden_size(self, llm_cfg: DictConfig) -> int:
        """The LLM's hidden size (from the loaded or meta model)."""
        return int(self._llm(llm_cfg)[0].config.hidden_size)

    def text_forward(self, cfg: DictConfig, shape: Shape) -> tuple[float, float]:
        """(FLOPs per series read, FLOPs once per run) of the text arm (``mode=text``), as its readers run.

        The tokens are those of a standard-normal series of the dataset's shape written as the reader
        writes it (downsampled to fit the budget). ``text_probe`` runs the decoder over prompt + series.
        ``text_icl`` runs the few-shot prefix once (its keys and values are cached), then per query the
        decoder over the query's tokens and the LM head at the label. As in every count here, attention
        scores are left to torch's counter (see tsllm.flops: on CPU it counts none), so long contexts are
        under-counted by about T / (6 x hidden size) (T tokens in the context).
        """
        from tsllm.backbone import decoder_of
        from tsllm.readers.llm import prompt_token_ids
        from tsllm.readers.text import LABEL_TAG, SERIES_TAG, fit_to_budget, series_token_ids

        llm, tok, meta = self._llm(cfg.llm)
        reader, budget = cfg.reader, int(cfg.reader.token_budget)
        x = np.random.default_rng(0).standard_normal((shape.n_channels, shape.length))
        prompt = len(prompt_token_ids(tok, str(reader.get("template") or reader.get("prompt"))))
        decoder = decoder_of(llm)

        def forward(tokens: int) -> float:
            key = json.dumps([OmegaConf.to_container(cfg.llm, resolve=True), tokens], sort_keys=True)
            if key not in self._text:
                with torch.device("meta" if meta else "cpu"):
                    ids = torch.zeros(1, tokens, dtype=torch.long)
                self._text[key] = float(count_forward_flops(decoder, input_ids=ids, use_cache=False))
            return self._text[key]

        if not _is_icl(cfg):
            text, _ = fit_to_budget(x, tok, prompt, budget, int(reader.decimals))
            return forward(prompt + len(series_token_ids(tok, text))), 0.0
        tags = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in (SERIES_TAG, LABEL_TAG))
        examples = int(reader.shots) * shape.num_classes + 1  # the shots and the query share one factor
        room = max(1, (budget - prompt) // examples - tags - 1)
        text, _ = fit_to_budget(x, tok, 0, room + 1, int(reader.decimals))
        query = tags + len(series_token_ids(tok, text))  # + the label's first token, scored below
        prefix = prompt + (examples - 1) * (query + 1)
        head = 2 * llm.config.hidden_size * llm.config.vocab_size  # the LM head at the scored position
        return forward(query) + head, forward(prefix)

    def per_series(self, cfg: DictConfig, shape: Shape, dataset: str) -> tuple[float, float, float]:
        """(training FLOPs per TRAIN series, forward FLOPs per evaluated series, encoder forward per series)."""
        key = json.dumps([OmegaConf.to_container(cfg[g], resolve=True) for g in ("encoder", "reader", "llm")]
                         + [cfg.train.batch_size, cfg.train.eval_batch_size, shape.n_channels, shape.length,
                            shape.num_classes, dataset if "{dataset}" in str(cfg.reader.get("template")) else ""],
                         sort_keys=True)
        if key not in self._cache:
            self._cache[key] = self._count(cfg, shape, dataset)
        return self._cache[key]

    def _count(self, cfg: DictConfig, shape: Shape, dataset: str) -> tuple[float, float, float]:
        from tsllm.model import build_model
        from tsllm.readers import reader_uses_llm

        hybrid = reader_uses_llm(cfg.reader)
        llm, tok, meta = self._llm(cfg.llm) if hybrid else (None, None, self._big(cfg.llm))
        lora = hybrid and cfg.reader.get("lora")
        loader = lambda *_a, **_k: (llm if not lora else _copy(llm), tok)  # noqa: E731
        device = torch.device("meta") if meta else torch.device("cpu")
        with _patched_backbone(load_llm=loader, load_config=_config_or_published), torch.device(device), \
                torch.random.fork_rng():
            torch.manual_seed(0)
            model = build_model(cfg, SimpleNamespace(name=dataset, n_channels=shape.n_channels, length=shape.length,
                                                     num_classes=shape.num_classes))
        if not isinstance(model.head, nn.Linear):  # a reader that reads series and gives logits (text arm)
            return self._whole(model, cfg, shape, device)
        # The front's cost depends on the encoder and the latent size only: shared by standalone and hybrid.
        front_key = json.dumps([OmegaConf.to_container(cfg.encoder, resolve=True), model.head.in_features,
                                cfg.train.batch_size, shape.n_channels, shape.length, shape.num_classes])
        if front_key not in self._fronts:
            try:  # outside the device context: it costs a Python call per op, the bulk of the planner's time
                self._fronts[front_key] = self._front(model, cfg, shape, device)
            except RuntimeError:  # a module that makes tensors without a device: count inside the context
                with torch.device(device):
                    self._fronts[front_key] = self._front(model, cfg, shape, device)
        train, evaluate, n_lat = self._fronts[front_key]
        b, eb, h = cfg.train.batch_size, cfg.train.eval_batch_size, model.head.in_features
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.encoder.modules())
        bn_refresh = evaluate - 2 * h * shape.num_classes if has_bn else 0.0  # the encoder's forward only
        if hybrid:
            reader_key = json.dumps([OmegaConf.to_container(cfg[g], resolve=True) for g in ("reader", "llm")]
                                    + [_prompt_key(model.reader), n_lat, h, b, eb], sort_keys=True)
            if reader_key not in self._readers:
                with torch.device(device):
                    self._readers[reader_key] = _reader_flops(model.reader, n_lat, h, b, eb)
            r_train, r_eval = self._readers[reader_key]
            train, evaluate = train + r_train, evaluate + r_eval
        return train / b, evaluate, bn_refresh

    @staticmethod
    def _whole(model: nn.Module, cfg: DictConfig, shape: Shape, device: torch.device) -> tuple[float, float, float]:
        """No encoder/reader split to exploit: the whole model counted on one step and one forward."""
        b = cfg.train.batch_size
        with torch.device(device):
            x = torch.randn(b, shape.n_channels, shape.length)
            y = torch.randint(0, shape.num_classes, (b,))
            return count_train_step_flops(model, x, y) / b, count_forward_flops(model, x) / b, 0.0

    @staticmethod
    def _front(model: nn.Module, cfg: DictConfig, shape: Shape, device: torch.device) -> tuple[int, float, int]:
        """Encoder + head on their own (the reader replaced by the mean pool): (train step FLOPs at the batch
        size, eval forward FLOPs per series, latent tokens). FLOPs add up by module, so the reader is counted
        apart, and only once per latent shape."""
        from tsllm.model import TSClassifier
        from tsllm.readers import MeanReader

        b, h = cfg.train.batch_size, model.head.in_features
        x = torch.randn(b, shape.n_channels, shape.length, device=device)
        y = torch.randint(0, shape.num_classes, (b,), device=device)
        front = TSClassifier(model.encoder, MeanReader(num_tokens=1), h, shape.num_classes).to(device)
        train = count_train_step_flops(front, x, y)
        # Linear in the batch: eval-mode forward per series (BatchNorm and dropout cost no counted FLOPs).
        with torch.no_grad():
            n_lat = model.encoder.eval()(x[:1]).shape[1]
        return train, count_forward_flops(front, x) / b, n_lat


def _prompt_key(reader: nn.Module) -> list[int] | None:
    ids = getattr(reader, "prompt_ids", None)
    return None if ids is None else [int(ids.numel()), int(getattr(reader, "suffix_ids", ids).numel())]


def _reader_flops(reader: nn.Module, n_lat: int, h: int, b: int, eb: int) -> tuple[int, float]:
    """(FLOPs of the reader's forward + backward to the latents on a batch of b, forward FLOPs per series)."""
    from torch.utils.flop_counter import FlopCounterMode

    reader(torch.zeros(1, n_lat, h))  # builds the prompt cache outside the count, as a run does once
    latents = torch.randn(b, n_lat, h, requires_grad=True)
    counter = FlopCounterMode(display=False)
    with counter:
        reader(latents).float().sum().backward()
    evaluate = count_forward_flops(reader, torch.zeros(eb, n_lat, h)) / eb
    return int(counter.get_total_flops()), evaluate


@contextmanager
def _patched_backbone(**replacements: Any) -> Iterator[None]:
    """Replace tsllm.backbone functions wherever the model code imported them (before and after refactors)."""
    import tsllm.backbone as backbone

    originals = {attr: getattr(backbone, attr) for attr in replacements}
    users = [m for name, m in list(sys.modules.items())
             if name.startswith("tsllm") and m is not None and m is not backbone and name != __name__]
    with ExitStack() as stack:
        for module in users:
            for attr, new in replacements.items():
                if getattr(module, attr, None) is originals[attr]:
                    stack.enter_context(mock.patch.object(module, attr, new))
        yield


def _config_or_published(spec: LLMSpec):
    from tsllm.backbone import BackboneError

    try:
        return load_config(spec)
    except BackboneError:
        return _published_config(spec.name)


def _copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)


def _published_config(name: str):
    """The model's config from the bundled copy (Llama-3.1-8B), or its published dimensions."""
    from transformers import AutoConfig, LlamaConfig

    if name == "llama31_8b":
        path = resources.files("tsllm").joinpath("assets/llama31_8b_config.json")
        if path.is_file():
            return AutoConfig.for_model(**json.loads(path.read_text()))
        return LlamaConfig(**{k: v for k, v in LLAMA31_8B_DIMS.items() if k != "model_type"})
    raise PlanError(f"llm {name!r}: its config cannot be loaded here and no published config is bundled")


def _tokenizer_or_approx(llm_cfg: DictConfig) -> Any:
    from tsllm.diagnostics.runs import tokenizer_of

    return tokenizer_of(llm_cfg) or _ApproxTokenizer()  # the prompt length is all that is needed


def run_flops(cfg: DictConfig, shape: Shape, counter: Counter, dataset: str) -> dict[str, float]:
    """FLOPs of one run of cfg on a dataset of this shape, as tsllm.loop trains and evaluates it."""
    if _mode_of(cfg) == "text":
        return _text_run_flops(cfg, shape, counter)
    per_train, per_eval, per_bn = counter.per_series(cfg, shape, dataset)
    epoch = shape.n_train * (per_train + per_bn) + shape.n_val * per_eval
    if cfg.train.protocol == "study_best_test":
        epoch += shape.n_test * per_eval
    # TEST of the last and of the selected weights (once when they are the same: one epoch; otherwise an
    # upper bound), validation again. Diagnostics after the run are not counted.
    final = ((1 if cfg.train.epochs == 1 else 2) * shape.n_test + shape.n_val) * per_eval
    steps = cfg.train.epochs * math.ceil(shape.n_train / cfg.train.batch_size)
    return {"flops": cfg.train.epochs * epoch + final, "flops_per_step": per_train * cfg.train.batch_size,
            "steps": steps}


def _is_icl(cfg: DictConfig) -> bool:
    return str(cfg.reader._target_).endswith("TextICLReader")


def _text_run_flops(cfg: DictConfig, shape: Shape, counter: Counter) -> dict[str, float]:
    """The text arm: one LLM forward per distinct series it reads, whatever the epochs (features are kept).

    ``text_probe`` reads TRAIN, validation and TEST once and trains a linear head on the features (its
    FLOPs are counted too, though negligible); ``text_icl`` trains nothing and reads validation and TEST.
    """
    forward, once = counter.text_forward(cfg, shape)
    if _is_icl(cfg):
        return {"flops": (shape.n_val + shape.n_test) * forward + once, "flops_per_step": 0.0, "steps": 0}
    b = cfg.train.batch_size
    hidden = counter.hidden_size(cfg.llm)
    head_step = 6 * hidden * shape.num_classes * b  # forward + backward of the linear head on a batch
    steps = cfg.train.epochs * math.ceil(shape.n_train / b)
    return {"flops": (shape.n_train + shape.n_val + shape.n_test) * forward + steps * head_step,
            "flops_per_step": float(head_step), "steps": steps}


def plan(overrides: list[str]) -> tuple[pd.DataFrame, set[str]]:
    """One row per run the sweep would train (twin cells dropped): identity, steps, FLOPs."""
    plain, cells = expand(overrides)
    counter, rows, seen = Counter(), [], set()
    by_group: dict[tuple, list[str]] = {}
    for cell in cells:  # compose once per non-dataset combination; datasets only change shapes
        rest = tuple(o for o in cell if not o.startswith("data.name="))
        by_group.setdefault(rest, []).extend(o.split("=", 1)[1].strip("'\"") for o in cell
                                             if o.startswith("data.name="))
    shapes: dict[tuple, Shape] = {}
    for i, (rest, names) in enumerate(by_group.items()):
        log.info("[%d/%d] %s: %d datasets", i + 1, len(by_group), " ".join(rest) or "(one cell)", len(names) or 1)
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="train", overrides=[*plain, *rest])
        for name in names or [cfg.data.name]:
            cfg.data.name = name
            key = config_hash(OmegaConf.to_container(cfg, resolve=True))
            if key in seen:
                continue
            seen.add(key)
            val_fraction = val_fraction_of(cfg)
            data_key = (name, json.dumps(OmegaConf.to_container(cfg.data, resolve=True), sort_keys=True), cfg.seed,
                        val_fraction)
            if data_key not in shapes:
                shapes[data_key] = dataset_shape(name, cfg.data, cfg.seed, val_fraction)
            shape = shapes[data_key]
            rows.append({"config_hash": key, "dataset": name, "encoder": cfg.encoder.name, "mode": _mode_of(cfg),
                         "llm": cfg.llm.name if _mode_of(cfg) != "standalone" else None, "lr": cfg.train.lr,
                         "epochs": cfg.train.epochs, "n_train": shape.n_train, "sizes_from": shape.source,
                         "cell": " ".join(rest), **run_flops(cfg, shape, counter, name)})
    return pd.DataFrame(rows), counter.notes | {f"{len(cells)} cells, {len(rows)} distinct runs"}


def with_records(runs: pd.DataFrame, records: str | Path) -> pd.DataFrame:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsllm.plan", description=__doc__.splitlines()[0])
    parser.add_argument("--tflops", type=float, default=None,
                        help="sustained throughput in TFLOP/s (a GPU's); default: measured on this CPU")
    parser.add_argument("--csv", default=None, help="also write one row per run to this CSV")
    parser.add_argument("--records", default=None,
                        help="a folder of run records (a sweep's): beside the plan, the wall time its finished runs took")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        runs, notes = plan(overrides)
    except (PlanError, DataError) as e:
        log.error("%s", e)
        return 2
    if args.records is not None:
        runs = with_records(runs, args.records)
    if args.tflops is not None:
        rate, what = args.tflops * 1e12, f"{args.tflops:g} TFLOP/s (given)"
    else:
        rate = cpu_throughput()
        what = f"{rate / 1e9:.1f} GFLOP/s (float32 matmul measured on this CPU now)"
    real = {"finished": ("real_hours", "count"), "real_hours": ("real_hours", "sum")} if args.records else {}
    summary = runs.groupby(["encoder", "mode"], dropna=False).agg(runs=("flops", "size"), steps=("steps", "sum"),
                                                                  flops=("flops", "sum"), **real)
    summary.insert(3, "hours", summary["flops"] / rate / 3600)
    total = runs["flops"].sum()
    for note in sorted(notes):
        print(f"note: {note}")
    print(summary.to_string(float_format=lambda v: f"{v:.3g}"))
    line = (f"total: {len(runs)} runs on {runs['dataset'].nunique()} datasets, {total:.3e} FLOPs, "
            f"{total / rate / 3600:.3g} hours at {what}")
    if args.records:
        finished = runs["real_hours"].notna()
        line += (f"; records: {finished.sum()} of {len(runs)} finished, {runs['real_hours'].sum():.3g} real hours "
                 f"({(finished & runs['partial']).sum()} partial: resumed, earlier sessions not timed; "
                 "a lower bound)")
    print(line)
    if args.csv:
        runs.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
