"""Peak accelerator memory of a run, before it is launched: read from its built model (real or on the meta device).

    peak = weights + trainable + max(training step, evaluation batch)

* **weights**: the frozen LLM as stored. Each ``nn.Linear`` of its decoder layers at its quantisation (8bit:
  one byte a weight and a float32 scale per output row; 4bit: half a byte and a float32 absmax per block of 64
  weights, bitsandbytes' defaults), everything else (embeddings, norms, the unused ``lm_head``, which
  bitsandbytes leaves alone) at ``llm.dtype``.
* **trainable**: the encoder, reader layers and head in float32 (Accelerate keeps float32 master weights under
  bf16 autocast) with their gradients and Adam's two moments: 16 bytes a parameter.
* **a training step**: what autograd keeps for the backward (the encoder's, measured on the meta device; the
  LLM's, derived below) plus the larger of the backward's working set and, with the prefix cache, the
  key/value cache that lives until the forward returns.
* **an evaluation batch** (inference mode, ``train.eval_batch_size``): the key/value cache and the widest
  layer's working set.

What autograd keeps in a Llama decoder layer whose weights are frozen, for N tokens run (batch B x tokens T
each), S key positions (the prompt's too when it is cached), hidden H, MLP width I, a heads of size d, h
key/value heads, activations of s bytes. Derived from the layer's operations: ``y = x W^T`` with a frozen
``W`` needs only ``W`` to pass the gradient to ``x``, so no projection keeps its input; what remains is
what the nonlinear steps need to pass the gradient back (tests/test_memory.py checks the sum against the
tensors autograd saves, in float32 and bf16, with and without the prefix cache):

    two RMSNorms     their float32 input and 1/rms (Llama normalises in float32)     2 N (4 H + 4)
    attention        SDPA's query and output                                           2 N H s
                     its keys and values (transformers repeats them to all a heads    2 B S h' d s
                     when it passes a mask, the cached path: h' = a; else h' = h)
                     its log-sum-exp, float32                                          4 N a
                     the cached path's mask, in the LLM's dtype                        B T S s
    MLP              the gate, SiLU(gate) and the up projection                        3 N I s

plus, once, the final RMSNorm (N (4 H + 4)) and the rotary tables (2 T d s). LoRA adds, per adapted
projection of input width i, its dropped-out input twice (the dropout's and the reshaped one the adapter
reads) and the rank-r intermediate: N (2 i + r) s. The two working sets were read off torch's memory
tracker on a small Llama rather than derived: the backward's (the gradients of the MLP's three
intermediates while the layer's output gradient lives) 3 N I s + 4 N H; an evaluation batch's, E tokens
run, E (3 I s + 4 H s). The trainable part's activations are counted at float32 (autocast's bf16 copies
are left out).

Not counted: the CUDA context, cuBLAS workspaces and the caching allocator's fragmentation: :meth:`Memory.fits`
leaves room for them (``HEADROOM``, ``CONTEXT_GIB``). On a CPU the same parts sit on top of the Python and
torch runtime (results/bench/memory.md compares the estimate with the peak RSS of SmolLM2 runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tsllm.config import TrainConfig

GIB = 2**30
GPU_GIB = (24, 40, 80)        # the common accelerator sizes a plan reports
HEADROOM = 0.10               # the caching allocator's fragmentation, as a share of the estimate
CONTEXT_GIB = 1.0             # CUDA context and cuBLAS workspaces, outside torch's allocator
QUANT_BLOCK = 64              # bitsandbytes' 4-bit block: one float32 absmax per 64 weights
ADAM_BYTES = 16               # float32 weight, gradient and Adam's two moments


@dataclass(frozen=True)
class Memory:
    """A run's peak accelerator memory by part, in bytes."""

    weights: int      # the frozen LLM, at its dtype or quantisation
    trainable: int    # trainable weights, gradients and Adam's moments
    step: int         # activations of a training step (kept for the backward, plus its working set)
    evaluation: int   # activations of an evaluation batch

    @property
    def total(self) -> int:
        return self.weights + self.trainable + max(self.step, self.evaluation)

    @property
    def training_step(self) -> int:
        """The peak of a training step alone (what tsllm.check measures)."""
        return self.weights + self.trainable + self.step

    def fits(self, gib: float) -> bool:
        """Whether an accelerator of ``gib`` GiB holds it, with room for fragmentation and the CUDA context."""
        return self.total * (1 + HEADROOM) + CONTEXT_GIB * GIB <= gib * GIB

    def fitting(self) -> tuple[int, ...]:
        """The common sizes (24, 40, 80 GiB) that hold it."""
        return tuple(g for g in GPU_GIB if self.fits(g))

    def describe(self) -> str:
        """``19.4 GiB (weights 15.0, trainable 0.0, step 4.4, evaluation 0.9)``"""
        return (f"{self.total / GIB:.1f} GiB (weights {self.weights / GIB:.1f}, trainable {self.trainable / GIB:.1f}, "
                f"step {self.step / GIB:.1f}, evaluation {self.evaluation / GIB:.1f})")


@dataclass(frozen=True)
class LLMShape:
    """The sizes of an LLM's decoder that its activations depend on."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, config: Any) -> LLMShape:
        """From a transformers config (Llama names; GPT-2's where a family names them so)."""
        from tsllm.llm.loading import hidden_size, num_layers

        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        hidden = hidden_size(config)
        heads = next((v for k in ("num_attention_heads", "n_head") if isinstance(v := getattr(text, k, None), int)), 0)
        if heads < 1:
            raise ValueError(f"{type(config).__name__} has no attention head count (num_attention_heads / n_head)")
        kv = getattr(text, "num_key_value_heads", None) or heads
        head_dim = getattr(text, "head_dim", None) or hidden // heads
        inter = next((v for k in ("intermediate_size", "n_inner") if isinstance(v := getattr(text, k, None), int)),
                     4 * hidden)
        return cls(num_layers(config), hidden, inter, heads, kv, head_dim)

    def saved(self, batch: int, run: int, keys: int, s: int, repeated_kv: bool) -> int:
        """Bytes autograd keeps for the backward to the input of the frozen decoder (module docstring)."""
        n = batch * run
        h = self.heads if repeated_kv else self.kv_heads
        norms = 2 * n * (4 * self.hidden + 4)
        attention = 2 * n * self.hidden * s + 2 * batch * keys * h * self.head_dim * s + 4 * n * self.heads
        mask = batch * run * keys * s if repeated_kv else 0
        mlp = 3 * n * self.intermediate * s
        once = n * (4 * self.hidden + 4) + 2 * run * self.head_dim * s
        return self.layers * (norms + attention + mask + mlp) + once

    def backward_working_set(self, tokens: int, s: int) -> int:
        return 3 * tokens * self.intermediate * s + 4 * tokens * self.hidden

    def kv_cache(self, batch: int, keys: int, s: int) -> int:
        """Every layer's keys and values for ``keys`` positions, as transformers' DynamicCache holds them."""
        return 2 * self.layers * batch * self.kv_heads * keys * self.head_dim * s

    def inference(self, tokens: int, s: int) -> int:
        """The widest layer's working set in inference mode: the MLP's intermediates and a few hidden states."""
        return tokens * (3 * self.intermediate * s + 4 * self.hidden * s)


@dataclass(frozen=True)
class Footprint:
    """What a run's peak memory depends on, read once from its built model; :meth:`at` prices one setting."""

    linear_weights: int           # elements of the decoder's Linear weights (what bitsandbytes quantises)
    linear_rows: int              # their output rows (8-bit keeps a float32 scale for each)
    other_weights: int            # elements of the rest of the LLM (embeddings, norms, lm_head)
    trainable_params: int
    trainable_saved: int          # bytes autograd keeps per series in the trainable part (encoder, or the model)
    llm: LLMShape | None = None   # None: nothing reads through an LLM
    prompt: int = 0               # prompt tokens
    tail: int = 0                 # latent and suffix tokens per series
    prefix_cache: bool = False
    lora_inputs: tuple[int, ...] = ()  # input width of each adapted projection in one layer
    lora_rank: int = 0
    text_batch: int = 0           # the text arm: its own LLM batch size ...
    text_tokens: int = 0          # ... and token budget (read once, under no_grad)

    def weight_bytes(self, dtype: torch.dtype, quantization: str | None) -> int:
        s = dtype.itemsize
        if quantization is None:
            return (self.linear_weights + self.other_weights) * s
        if quantization == "8bit":
            linear = self.linear_weights + 4 * self.linear_rows
        elif quantization == "4bit":
            linear = self.linear_weights // 2 + 4 * math.ceil(self.linear_weights / QUANT_BLOCK)
        else:
            raise ValueError(f"llm.quantization={quantization!r}: expected null, 8bit or 4bit")
        return linear + self.other_weights * s

    def at(self, *, batch_size: int, eval_batch_size: int, dtype: torch.dtype, quantization: str | None) -> Memory:
        """The peak at these batch sizes, with the LLM stored at ``dtype`` (its compute dtype) or quantised."""
        s = dtype.itemsize
        step = batch_size * self.trainable_saved
        evaluation = 0
        m = self.llm
        if m is not None and self.text_tokens:
            evaluation = m.inference(self.text_batch * self.text_tokens, s)
        elif m is not None and self.tail:
            cached = self.prefix_cache and self.prompt > 0
            run = self.tail if cached else self.prompt + self.tail
            keys = self.prompt + self.tail
            tokens = batch_size * run
            lora = m.layers * tokens * sum(2 * i + self.lora_rank for i in self.lora_inputs) * s
            step += m.saved(batch_size, run, keys, s, repeated_kv=cached) + lora
            step += max(m.backward_working_set(tokens, s), m.kv_cache(batch_size, keys, s) if cached else 0)
            evaluation = m.inference(eval_batch_size * run, s) + (m.kv_cache(eval_batch_size, keys, s) if cached else 0)
        return Memory(weights=self.weight_bytes(dtype, quantization) if m is not None else 0,
                      trainable=ADAM_BYTES * self.trainable_params, step=step, evaluation=evaluation)


def _reader_llm(reader: nn.Module) -> nn.Module | None:
    """The LLM a reader reads through (hybrid, lora, text), or None."""
    llm = getattr(reader, "llm", None)
    for part in ("features", "classifier"):  # the text arm keeps its LLM in a frozen-LM reader
        llm = llm or getattr(getattr(reader, part, None), "llm", None)
    return llm


def footprint(model: nn.Module, n_channels: int, length: int) -> Footprint:
    """Read a built TSClassifier (its parameters real or on the meta device) for :meth:`Footprint.at`."""
    from tsllm.llm.loading import decoder_of

    reader = model.reader
    llm = _reader_llm(reader)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if llm is None:  # the whole model trains: the standalone arm and the trainable controls
        return Footprint(0, 0, 0, trainable, saved_per_series(model, n_channels, length))
    linear = rows = 0
    linear_ids: set[int] = set()
    for name, module in decoder_of(llm).named_modules():
        if isinstance(module, nn.Linear) and "lora_" not in name:  # bitsandbytes' layers are nn.Linear too
            linear += module.in_features * module.out_features
            rows += module.out_features
            linear_ids.add(id(module.weight))
    other = sum(p.numel() for p in llm.parameters() if id(p) not in linear_ids and not p.requires_grad)
    text = getattr(reader, "features", None) or getattr(reader, "classifier", None)
    lora = _lora_inputs(decoder_of(llm))
    return Footprint(
        linear_weights=linear, linear_rows=rows, other_weights=other, trainable_params=trainable,
        trainable_saved=saved_per_series(model.encoder, n_channels, length) if not isinstance(
            model.encoder, nn.Identity) else 0,
        llm=LLMShape.of(llm.config),
        prompt=int(reader.prompt_ids.numel()) if hasattr(reader, "prompt_ids") and text is None else 0,
        tail=int(reader.eval_permutation.numel() + reader.suffix_ids.numel()) if hasattr(reader, "suffix_ids") else 0,
        prefix_cache=bool(getattr(reader, "prefix_cache", False)),
        lora_inputs=tuple(i for i, _ in lora), lora_rank=max((r for _, r in lora), default=0),
        text_batch=getattr(text, "batch_size", 0), text_tokens=getattr(text, "token_budget", 0))


def _lora_inputs(decoder: nn.Module) -> list[tuple[int, int]]:
    """(input width, rank) of each LoRA-adapted projection of the first decoder layer."""
    layers = next((m for m in decoder.children() if isinstance(m, nn.ModuleList)), None)
    if layers is None or not len(layers):
        return []
    out = []
    for module in layers[0].modules():
        lora_a = getattr(module, "lora_A", None)
        if isinstance(lora_a, nn.ModuleDict) and len(lora_a):
            a = next(iter(lora_a.values()))
            out.append((a.in_features, a.out_features))
    return out


def saved_per_series(module: nn.Module, n_channels: int, length: int) -> int:
    """Bytes autograd keeps for the backward of one train-mode forward of one series ``[1, C, T]``.

    Run on the meta device with meta stand-ins for the module's parameters and buffers (no memory, no change
    to a real module), counting each saved tensor's storage once and leaving the parameters out.
    """
    from torch.func import functional_call

    stand_ins = {n: torch.empty_like(t, device="meta").requires_grad_(t.requires_grad)
                 for n, t in module.named_parameters()}
    stand_ins |= {n: torch.empty_like(t, device="meta") for n, t in module.named_buffers()}
    own = {t.untyped_storage()._cdata for t in stand_ins.values()}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in own:
            seen.setdefault(storage._cdata, storage.nbytes())
        return t

    was_training = module.training
    module.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.random.fork_rng(devices=[]):
            functional_call(module, stand_ins, (torch.zeros(1, n_channels, length, device="meta"),))
    finally:
        module.train(was_training)
    return sum(seen.values())


def llm_storage(model: nn.Module) -> tuple[torch.dtype, str | None]:
    """(the dtype, the quantisation) a built model's LLM is stored in; (float32, None) without one."""
    from tsllm.llm.loading import input_embeddings, quantization_of

    llm = _reader_llm(model.reader)
    if llm is None:
        return torch.float32, None
    return input_embeddings(llm).weight.dtype, quantization_of(llm)


def out_of_memory_advice(model: nn.Module, data: Any, cfg: TrainConfig) -> str:
    """The loop's out-of-memory message: this run's estimate, and the settings that the estimate says would fit
    this GPU (the smallest common size where there is none: the message is then a forecast).

    ``data`` is the run's DatasetSplits (its shape and TRAIN's size).
    """
    batch_size, eval_batch_size = cfg.batch_size, cfg.eval_batch_size
    dtype, quantization = llm_storage(model)
    fp = footprint(model, data.n_channels, data.length)
    b, e = min(batch_size, len(data.train.y)), eval_batch_size
    now = fp.at(batch_size=b, eval_batch_size=e, dtype=dtype, quantization=quantization)
    if torch.cuda.is_available():
        gib, where = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / GIB, "this"
    else:
        gib, where = GPU_GIB[0], "a"
    fixes = []
    k = 2
    while b // k >= 1:
        smaller = fp.at(batch_size=b // k, eval_batch_size=max(1, e // k), dtype=dtype, quantization=quantization)
        if smaller.fits(gib):
            fixes.append(f"train.batch_size={b // k} train.eval_batch_size={max(1, e // k)} "
                         f"({smaller.total / GIB:.1f} GiB)")
            break
        k *= 2
    if fp.llm is not None and dtype.itemsize > 2:
        half = fp.at(batch_size=b, eval_batch_size=e, dtype=torch.bfloat16, quantization=quantization)
        if half.fits(gib):
            fixes.append(f"llm.dtype=bfloat16 train.precision=bf16 ({half.total / GIB:.1f} GiB)")
    if fp.llm is not None:
        for kind in ("8bit", "4bit"):
            if quantization != "4bit" and kind != quantization:
                lighter = fp.at(batch_size=b, eval_batch_size=e, dtype=dtype, quantization=kind)
                if lighter.fits(gib):
                    fixes.append(f"llm.quantization={kind} ({lighter.total / GIB:.1f} GiB)")
                    break
    advice = " or ".join(fixes) if fixes else "nothing at these settings: use a larger GPU"
    return (f"out of accelerator memory at train.batch_size={batch_size}, train.eval_batch_size={eval_batch_size}, "
            f"train.precision={cfg.precision}, llm.quantization={quantization or 'null'}: tsllm.memory estimates "
            f"{now.describe()}; on {where} {gib:.0f} GiB GPU it suggests {advice}")
