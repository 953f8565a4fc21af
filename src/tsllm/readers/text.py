"""The LLM reading numbers as text (`mode=text`): no encoder, the series is written out in the prompt.

Text format (one series, C channels, T points each)::

    -0.12,0.50,1.00 | 0.33,0.34,0.35

Values have a fixed number of decimals and are comma-separated with no spaces; channels are joined by
`` | ``. The series follows the prompt after one space. A series whose text would exceed the token budget
(prompt included) is average-pooled in windows of k points, with the smallest integer k that fits; k is
recorded as its downsampling factor.

Two readouts:

- :class:`TextSeriesEncoder` (``text_probe``): the frozen LM's last hidden state at the final position of
  ``prompt + series``, shaped like an encoder output ``[B, 1, H]`` so the usual mean-pool reader and linear
  head train on it unchanged. Nothing upstream of the head trains, so each series is read once; the
  features are memoised by the series' bytes and persisted to ``features.pt`` in the run directory.
- :class:`TextICLClassifier` (``text_icl``): in-context classification. The prompt holds k labelled TRAIN
  series per class::

      <prompt>
      Series: <shot>
      Label: 0
      ...
      Series: <query>
      Label:

  and the logit of class c is the summed log-probability of its label tokens (`` 0``, `` 1``, ...) after
  ``Label:``. No sampling, no parsing, no trainable parameters.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from tsllm.llm import (
    cache_kwarg,
    decoder_of,
    expanded_cache,
    format_prompt,
    input_embeddings,
    pad_id_of,
    prefix_key_values,
    prompt_token_ids,
)
from tsllm.readers.base import Reader, ReaderContext, ReaderOptions

log = logging.getLogger(__name__)

VALUE_SEPARATOR = ","
CHANNEL_SEPARATOR = " | "
SERIES_TAG = "\nSeries:"
LABEL_TAG = "\nLabel:"


# --------------------------------------------------------------------------- text and token budget


def serialise(series: np.ndarray, decimals: int) -> str:
    """[C, T] -> text: fixed decimals, values joined by ',', channels by ' | '."""
    series = np.asarray(series, dtype=np.float64)
    if series.ndim != 2:
        raise ValueError(f"serialise expects a [C, T] series, got shape {series.shape}")
    if decimals < 0:
        raise ValueError(f"reader.decimals={decimals}: expected an integer >= 0")
    # Adding 0.0 after rounding turns -0.0 into 0.0, so tiny negatives do not print as "-0.00".
    rounded = np.round(series, decimals) + 0.0
    return CHANNEL_SEPARATOR.join(
        VALUE_SEPARATOR.join(f"{v:.{decimals}f}" for v in channel) for channel in rounded
    )


def downsample(series: np.ndarray, factor: int) -> np.ndarray:
    """[C, T] -> [C, ceil(T / factor)]: the mean of each window of `factor` points (the last may be shorter).

    Averaging rather than striding keeps content above the new Nyquist rate from aliasing into the text.
    """
    if factor == 1:
        return series
    c, t = series.shape
    n = -(-t // factor)
    padded = np.full((c, n * factor), np.nan)
    padded[:, :t] = series
    return np.nanmean(padded.reshape(c, n, factor), axis=2)


def series_token_ids(tokenizer: Any, text: str) -> list[int]:
    """The ids of a serialised series as it follows a prompt or tag: one space, then the text."""
    return tokenizer(" " + text, add_special_tokens=False)["input_ids"]


def check_budget(budget: int, fixed_tokens: int, what: str = "the prompt") -> None:
    """A budget must leave room for at least one series token after the fixed part of the text."""
    if budget <= fixed_tokens:
        raise ValueError(f"reader.token_budget={budget} is smaller than {what} ({fixed_tokens} tokens); "
                         f"expected more than {fixed_tokens}")


def smallest_factor(length: int, fits: Callable[[int], bool], budget: int) -> int:
    """The smallest downsampling factor k in 1..length with fits(k); an error if even one point is too long."""
    for k in range(1, length + 1):
        if fits(k):
            return k
    raise ValueError(f"reader.token_budget={budget} cannot hold the text even at one point per channel; "
                     f"expected a larger budget")


def _fit(x: np.ndarray, tokenizer: Any, room: int, decimals: int, budget: int) -> tuple[str, list[int], int]:
    """(text, ids, factor) of the least-downsampled version of x whose ids fit in `room` tokens."""
    found: dict[int, tuple[str, list[int]]] = {}

    def fits(k: int) -> bool:
        text = serialise(downsample(x, k), decimals)
        found[k] = (text, series_token_ids(tokenizer, text))
        return len(found[k][1]) <= room

    k = smallest_factor(x.shape[-1], fits, budget)
    return (*found[k], k)


def fit_to_budget(x: np.ndarray, tokenizer: Any, prompt_ids_len: int, budget: int,
                  decimals: int) -> tuple[str, int]:
    """Serialise x [C, T] so that prompt + series fit in `budget` tokens; returns (text, downsampling factor)."""
    check_budget(budget, prompt_ids_len)
    text, _, k = _fit(np.asarray(x), tokenizer, budget - prompt_ids_len, decimals, budget)
    return text, k


# --------------------------------------------------------------------------- memo persisted in the run dir


def series_key(series: Tensor) -> str:
    """A content hash of one series (shape and float32 bytes): equal series share their features."""
    a = series.detach().to("cpu", torch.float32).contiguous().numpy()  # no-op for a row already there
    return hashlib.sha256(f"{a.shape}".encode() + a.tobytes()).hexdigest()


def llm_fingerprint(llm: nn.Module, tokenizer: Any, **settings: Any) -> str:
    """What the memoised outputs depend on: settings, architecture, tokenizer and a sample of the weights.

    The first embedding rows tell pretrained from random weights (and one seed from another) cheaply.
    """
    emb = input_embeddings(llm).weight
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(llm.config.to_json_string(use_diff=False).encode())
    h.update(f"{type(tokenizer).__name__}|{len(tokenizer)}".encode())
    h.update(emb[:8].detach().to("cpu", torch.float32).numpy().tobytes())
    return h.hexdigest()


class OutputMemo:
    """series hash -> (output row, downsampling factor), saved atomically to one file when a path is given.

    A file written under another fingerprint (other prompt, LLM or settings) is ignored, never reused.
    """

    def __init__(self, path: str | Path | None, fingerprint: str) -> None:
        self.path = Path(path) if path is not None else None
        self.fingerprint = fingerprint
        self.rows: dict[str, Tensor] = {}
        self.factors: dict[str, int] = {}
        if self.path is not None and self.path.is_file():
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            if saved.get("fingerprint") != fingerprint:
                log.warning("%s was written for another prompt, LLM or setting; recomputing", self.path)
            else:
                self.rows = dict(zip(saved["keys"], saved["values"].unbind(0), strict=True))
                self.factors = dict(zip(saved["keys"], saved["factors"], strict=True))
                log.info("Loaded %d memoised LLM outputs from %s", len(self.rows), self.path)

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def put(self, key: str, row: Tensor, factor: int) -> None:
        self.rows[key] = row.detach().to("cpu", torch.float32)
        self.factors[key] = factor

    def stack(self, keys: Sequence[str]) -> Tensor:
        return torch.stack([self.rows[k] for k in keys])

    def save(self) -> None:
        """One stacked tensor written under a temporary name, then renamed: never a half-written file."""
        if self.path is None or not self.rows:
            return
        keys = list(self.rows)
        payload = {"fingerprint": self.fingerprint, "keys": keys, "values": self.stack(keys),
                   "factors": [self.factors[k] for k in keys]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", dir=self.path.parent)
        os.close(fd)
        torch.save(payload, tmp)
        os.replace(tmp, self.path)

    def factor_stats(self) -> dict[str, float]:
        """Downsampling factors over every series read so far: max and mean (1 = no downsampling)."""
        f = list(self.factors.values())
        return {"max": max(f) if f else 1, "mean": float(np.mean(f)) if f else 1.0, "series": len(f)}


# --------------------------------------------------------------------------- running the frozen LM


def left_padded(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(ids, attention mask, position ids): rows right-aligned so position -1 is every row's last token.

    Positions restart at 0 on each row's first real token, so a padded row computes what it would alone.
    """
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, n - len(s):] = torch.tensor(list(s), dtype=torch.long)
        mask[i, n - len(s):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


class _FrozenLMReader(nn.Module):
    """Shared by both readouts: holds the frozen LM (never in train mode) and runs padded batches."""

    SAVE_EVERY_BATCHES = 4  # the memo file is rewritten after this many LM batches of new reads

    def __init__(self, llm: nn.Module, tokenizer: Any, token_budget: int, batch_size: int) -> None:
        super().__init__()
        if any(p.requires_grad for p in llm.parameters()):
            raise ValueError("mode=text reads with a frozen LLM: freeze it first (tsllm.backbone.freeze)")
        if batch_size < 1:
            raise ValueError(f"reader.batch_size={batch_size}: expected an integer >= 1")
        limit = getattr(llm.config, "max_position_embeddings", None)
        if isinstance(limit, int) and token_budget > limit:
            raise ValueError(f"reader.token_budget={token_budget} exceeds the LLM's context "
                             f"(max_position_embeddings={limit}); expected at most {limit}")
        self.llm = llm
        decoder_of(llm)  # fail at build time, not at the first step
        self.tokenizer = tokenizer
        self.token_budget = token_budget
        self.batch_size = batch_size
        self.pad_id = pad_id_of(tokenizer)
        self.computed = 0  # LLM forwards of single series (a memo hit does not count)

    @property
    def device(self) -> torch.device:
        return input_embeddings(self.llm).weight.device

    def train(self, mode: bool = True) -> _FrozenLMReader:
        super().train(mode)
        self.llm.eval()  # a frozen LLM never runs dropout, whatever the loop asks
        return self

    def _batches(self, seqs: Sequence[Sequence[int]]):
        """Index batches of similar length (less padding), each with its padded tensors."""
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            yield idx, left_padded([seqs[i] for i in idx], self.pad_id, self.device)

    def last_hidden(self, seqs: Sequence[Sequence[int]]) -> Tensor:
        """[N, H] float32: the decoder's last-layer hidden state at each sequence's final token."""
        out = torch.empty(len(seqs), input_embeddings(self.llm).weight.shape[-1])
        for idx, (ids, mask, pos) in self._batches(seqs):
            hidden = decoder_of(self.llm)(input_ids=ids, attention_mask=mask, position_ids=pos,
                                          use_cache=False).last_hidden_state
            out[idx] = hidden[:, -1].float().cpu()
        return out

    def prefix_cache(self, prefix: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
        """Per-layer (key, value) of a shared prefix, batch 1: the few-shot part is read once per factor."""
        return prefix_key_values(decoder_of(self.llm), input_ids=torch.tensor([list(prefix)], device=self.device))

    def tail_log_probs(self, seqs: Sequence[Sequence[int]], n_last: int, prefix: Sequence[int] = (),
                       prefix_kv: list[tuple[Tensor, Tensor]] | None = None) -> list[Tensor]:
        """Per sequence, [n_last, V] float32 log-probabilities predicted at the last n_last positions of
        ``prefix + seq``. With ``prefix_kv`` (from :meth:`prefix_cache`) only the sequences are run.

        Rows are left-padded after the prefix: the mask hides the pads and positions continue from the
        prefix, so each row computes what ``prefix + seq`` computes alone.
        """
        p = len(prefix)
        if p and prefix_kv is None:
            seqs, p = [list(prefix) + list(s) for s in seqs], 0
        out: list[Tensor] = [torch.empty(0)] * len(seqs)
        for idx, (ids, mask, pos) in self._batches(seqs):
            b = len(idx)
            kwargs: dict[str, Any] = {"use_cache": False}
            if p:
                cache = expanded_cache(prefix_kv, b, self.llm.config)
                mask = torch.cat([torch.ones(b, p, dtype=mask.dtype, device=mask.device), mask], dim=1)
                kwargs = {"use_cache": True, cache_kwarg(self.llm): cache}
            # logits_to_keep: the full [B, n, V] logits of a long few-shot context would not fit in memory.
            logits = self.llm(input_ids=ids, attention_mask=mask, position_ids=pos + p,
                              logits_to_keep=n_last, **kwargs).logits
            lp = torch.log_softmax(logits.float(), dim=-1).cpu()
            for row, i in enumerate(idx):
                out[i] = lp[row]
        return out

    def _memoised(self, x: Tensor, memo: OutputMemo, compute: Callable[[list[np.ndarray]], list[tuple[Tensor, int]]]
                  ) -> Tensor:
        """Rows for x [B, C, T] from the memo, computing (and saving) only series not seen before."""
        x_cpu = x.detach().to("cpu", torch.float32)  # one transfer for the batch, not one per series
        keys = [series_key(s) for s in x_cpu]
        todo = list({k: i for i, k in enumerate(keys) if k not in memo}.items())
        # Saved every few LM batches, not once per loader batch: an evaluation batch of 128 series is ~25 min
        # of reads on a CPU, all lost to a stop before its end.
        chunk = self.SAVE_EVERY_BATCHES * self.batch_size
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            series = [x_cpu[i].double().numpy() for _, i in part]
            # Rows made under inference mode (evaluation) are safe to reuse in training: `stack` copies them.
            with torch.no_grad():
                rows = compute(series)
            for (key, _), (row, factor) in zip(part, rows, strict=True):
                memo.put(key, row, factor)
            self.computed += len(part)
            memo.save()
        return memo.stack(keys).to(x.device)


# --------------------------------------------------------------------------- text_probe


class TextSeriesEncoder(_FrozenLMReader):
    """x [B, C, T] -> [B, 1, H] float32: the frozen LM's last hidden state after ``prompt + series``.

    Each distinct series is read by the LM once (``computed`` counts those reads); with ``cache_path``
    (``<run_dir>/features.pt``) the features survive a restart. ``downsample_factors`` is for the record.
    """

    def __init__(self, llm: nn.Module, tokenizer: Any, prompt: str, *, decimals: int = 2,
                 token_budget: int = 2048, cache_path: str | Path | None = None, batch_size: int = 8) -> None:
        super().__init__(llm, tokenizer, token_budget, batch_size)
        self.prompt_ids = prompt_token_ids(tokenizer, prompt.rstrip()).tolist()
        check_budget(token_budget, len(self.prompt_ids))
        serialise(np.zeros((1, 1)), decimals)  # validates decimals now
        self.decimals = decimals
        self.memo = OutputMemo(cache_path, llm_fingerprint(
            llm, tokenizer, kind="text_probe", prompt=self.prompt_ids, decimals=decimals, budget=token_budget))

    @property
    def downsample_factors(self) -> dict[str, float]:
        return self.memo.factor_stats()

    def _compute(self, series: list[np.ndarray]) -> list[tuple[Tensor, int]]:
        room = self.token_budget - len(self.prompt_ids)
        fitted = [_fit(s, self.tokenizer, room, self.decimals, self.token_budget) for s in series]
        hidden = self.last_hidden([self.prompt_ids + ids for _, ids, _ in fitted])
        return [(h, k) for h, (_, _, k) in zip(hidden, fitted, strict=True)]

    def forward(self, x: Tensor) -> Tensor:
        return self._memoised(x, self.memo, self._compute)[:, None]


# --------------------------------------------------------------------------- text_icl


class TextICLClassifier(_FrozenLMReader):
    """x [B, C, T] -> logits [B, K]: in-context classification by label log-probability.

    ``shots`` TRAIN series per class, drawn and ordered by ``seed``, go into the prompt. A query and the
    shots share one downsampling factor, the smallest that fits the whole context in ``token_budget``.
    ``labels`` are the label texts (default: the class indices "0".."K-1", single tokens in most
    tokenizers); ``class_names`` only name classes in error messages. With ``cache_shots`` the few-shot
    prefix's key/value cache is computed once per factor and each query runs only its own tokens.
    """

    def __init__(self, llm: nn.Module, tokenizer: Any, train_x: np.ndarray, train_y: np.ndarray, *,
                 class_names: Sequence[str], shots: int = 1, seed: int = 0, labels: Sequence[str] | None = None,
                 decimals: int = 2, token_budget: int = 2048,
                 prompt: str = "Each series below is followed by its class label.",
                 cache_path: str | Path | None = None, batch_size: int = 4, cache_shots: bool = True) -> None:
        super().__init__(llm, tokenizer, token_budget, batch_size)
        self.cache_shots = cache_shots
        k_classes = len(class_names)
        labels = [str(c) for c in range(k_classes)] if labels is None else list(labels)
        if len(labels) != k_classes:
            raise ValueError(f"reader.labels has {len(labels)} entries; expected one per class ({k_classes})")
        if shots < 1:
            raise ValueError(f"reader.shots={shots}: expected an integer >= 1")
        serialise(np.zeros((1, 1)), decimals)  # validates decimals now
        self.decimals = decimals
        self.label_ids = [tokenizer(" " + lab, add_special_tokens=False)["input_ids"] for lab in labels]
        if any(not ids for ids in self.label_ids) or len({tuple(i) for i in self.label_ids}) < k_classes:
            raise ValueError(f"reader.labels={labels}: expected distinct, non-empty label texts")
        self.shots = self._draw_shots(np.asarray(train_x), np.asarray(train_y), class_names, shots, seed)
        self.shot_labels = [self.label_ids[c] for _, c in self.shots]
        self.prompt_ids = prompt_token_ids(tokenizer, prompt).tolist()
        self.series_tag = tokenizer(SERIES_TAG, add_special_tokens=False)["input_ids"]
        self.label_tag = tokenizer(LABEL_TAG, add_special_tokens=False)["input_ids"]
        self.max_label = max(len(ids) for ids in self.label_ids)
        self._shot_ids: dict[int, list[int]] = {}
        # Smallest possible context: prompt, tags and labels, one point per channel for every series.
        fixed = len(self._context(self.shots[0][0].shape[-1], self.shots[0][0])) + self.max_label - 1
        check_budget(token_budget, fixed, "the few-shot prompt at one point per series")
        self.memo = OutputMemo(cache_path, llm_fingerprint(
            llm, tokenizer, kind="text_icl", prompt=self.prompt_ids, labels=self.label_ids, decimals=decimals,
            budget=token_budget, shots=[(series_key(torch.from_numpy(s)), c) for s, c in self.shots]))

    @staticmethod
    def _draw_shots(x: np.ndarray, y: np.ndarray, class_names: Sequence[str], shots: int,
                    seed: int) -> list[tuple[np.ndarray, int]]:
        rng = np.random.default_rng(seed)
        chosen: list[int] = []
        for c, name in enumerate(class_names):
            members = np.flatnonzero(y == c)
            if len(members) < shots:
                raise ValueError(f"reader.shots={shots} but class {name!r} has only {len(members)} TRAIN "
                                 f"series; expected at most {len(members)}")
            chosen.extend(rng.choice(members, size=shots, replace=False).tolist())
        rng.shuffle(chosen)  # interleave classes: a block per class would favour the last one shown
        return [(x[i].astype(np.float64), int(y[i])) for i in chosen]

    @property
    def downsample_factors(self) -> dict[str, float]:
        return self.memo.factor_stats()

    def _series(self, series: np.ndarray, k: int) -> list[int]:
        return self.series_tag + series_token_ids(self.tokenizer, serialise(downsample(series, k), self.decimals))

    def _shots_prefix(self, k: int) -> list[int]:
        """prompt + every shot's "Series: ... Label: c" at downsampling factor k (memoised per k)."""
        if k not in self._shot_ids:
            ids = list(self.prompt_ids)
            for (s, _), lab in zip(self.shots, self.shot_labels, strict=True):
                ids += self._series(s, k) + self.label_tag + lab
            self._shot_ids[k] = ids
        return self._shot_ids[k]

    def _context(self, k: int, query: np.ndarray) -> list[int]:
        """The ids the label follows: shots, then "Series: <query>" and "Label:"."""
        return self._shots_prefix(k) + self._series(query, k) + self.label_tag

    def context_ids(self, query: np.ndarray) -> tuple[list[int], int]:
        """(context ids, factor) for one query [C, T] at the smallest factor whose longest scored text fits."""
        k = smallest_factor(query.shape[-1], lambda k: len(self._context(k, query)) + self.max_label - 1
                            <= self.token_budget, self.token_budget)
        return self._context(k, query), k

    def _compute(self, series: list[np.ndarray]) -> list[tuple[Tensor, int]]:
        # Classes whose labels share all but their last token are scored from one sequence: with
        # single-token labels, one LM pass per query scores every class.
        prefixes = sorted({tuple(ids[:-1]) for ids in self.label_ids})
        factors = [self.context_ids(s)[1] for s in series]
        rows: list[tuple[Tensor, int]] = [(torch.empty(0), 0)] * len(series)
        for k in sorted(set(factors)):  # queries of one factor share the few-shot prefix and its cache
            which = [q for q, f in enumerate(factors) if f == k]
            shots = self._shots_prefix(k)
            tails = [self._series(series[q], k) + self.label_tag + list(p) for q in which for p in prefixes]
            kv = self.prefix_cache(shots) if self.cache_shots else None
            lps = self.tail_log_probs(tails, self.max_label, prefix=shots, prefix_kv=kv)
            for j, q in enumerate(which):
                scores = torch.empty(len(self.label_ids))
                for c, ids in enumerate(self.label_ids):
                    lp = lps[j * len(prefixes) + prefixes.index(tuple(ids[:-1]))]
                    m = len(ids)  # the label's tokens are predicted at the last m kept positions
                    scores[c] = lp[self.max_label - m:].gather(1, torch.tensor(ids)[:, None]).sum()
                rows[q] = (scores, k)
        return rows

    def forward(self, x: Tensor) -> Tensor:
        return self._memoised(x, self.memo, self._compute)


# --------------------------------------------------------------------------- readers (mode=text)


@dataclass
class TextOptions(ReaderOptions):
    """What both text readers take: how numbers are written and how many tokens they may fill."""

    decimals: int = 2
    token_budget: int = 2048   # tokens in all (prompt + series); must exceed the prompt's
    batch_size: int = 8        # series per LLM forward


@dataclass
class TextProbeOptions(TextOptions):
    """conf/reader/text_probe.yaml"""

    _target_: str = "tsllm.readers.TextProbeReader"
    name: str = "text_probe"
    template: str = "Classify the following data into {num_classes} classes:"


class TextProbeReader(Reader):
    """``mode=text`` with a linear probe: the series as text through the frozen LLM, its last state to the head.

    It reads the raw series (``encoder=none``); nothing upstream of the head trains, so each series'
    feature is computed once and kept in ``<run_dir>/features.pt``.
    """

    Options: ClassVar[type[TextProbeOptions]] = TextProbeOptions
    mode = "text"
    reads_series = True

    def __init__(self, features: TextSeriesEncoder, *, seed: int = 0) -> None:
        super().__init__(num_tokens=1, seed=seed)
        self.features = features

    @classmethod
    def from_context(cls, ctx: ReaderContext, options: TextProbeOptions) -> TextProbeReader:
        llm, tokenizer = ctx.llm()
        prompt = format_prompt(options.template, num_tokens=1, num_classes=ctx.num_classes, dataset=ctx.dataset)
        cache = Path(ctx.run_dir) / "features.pt" if ctx.run_dir is not None else None
        features = TextSeriesEncoder(llm, tokenizer, prompt, decimals=options.decimals,
                                     token_budget=options.token_budget, cache_path=cache,
                                     batch_size=options.batch_size)
        return cls(features, seed=ctx.seed)

    def read(self, x: Tensor) -> Tensor:
        return self.features(x)[:, 0]

    def stats(self) -> dict[str, Any]:
        """For the record: LLM reads done by this process and how much series were downsampled."""
        return {"llm_reads": self.features.computed, "downsample": self.features.downsample_factors}


@dataclass
class TextICLOptions(TextOptions):
    """conf/reader/text_icl.yaml"""

    _target_: str = "tsllm.readers.TextICLReader"
    name: str = "text_icl"
    batch_size: int = 4
    prompt: str = "Each series below is followed by its class label."
    shots: int = 1
    labels: list[str] | None = None   # label texts; null = the class indices 0..K-1


class TextICLReader(Reader):
    """``mode=text`` in context: k labelled TRAIN series per class in the prompt; logits are label log-probs.

    Nothing trains: the head is the identity, and the run evaluates once.
    """

    Options: ClassVar[type[TextICLOptions]] = TextICLOptions
    mode = "text"
    reads_series = True
    gives_logits = True

    def __init__(self, classifier: TextICLClassifier, *, seed: int = 0) -> None:
        super().__init__(num_tokens=1, seed=seed)
        self.classifier = classifier

    @classmethod
    def from_context(cls, ctx: ReaderContext, options: TextICLOptions) -> TextICLReader:
        if ctx.data is None or getattr(ctx.data, "train", None) is None:
            raise ValueError("reader=text_icl needs the TRAIN split to draw its shots from")
        llm, tokenizer = ctx.llm()
        cache = Path(ctx.run_dir) / "icl_scores.pt" if ctx.run_dir is not None else None
        classifier = TextICLClassifier(llm, tokenizer, ctx.data.train.x, ctx.data.train.y,
                                       class_names=ctx.data.classes, shots=options.shots, seed=ctx.seed,
                                       labels=options.labels, decimals=options.decimals,
                                       token_budget=options.token_budget, prompt=options.prompt,
                                       cache_path=cache, batch_size=options.batch_size)
        return cls(classifier, seed=ctx.seed)

    def read(self, x: Tensor) -> Tensor:
        return self.classifier(x)

    def stats(self) -> dict[str, Any]:
        return {"llm_reads": self.classifier.computed, "downsample": self.classifier.downsample_factors}
