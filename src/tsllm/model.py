"""The classifier: encoder -> reader (mean pool, or a frozen LLM) -> linear head.

The mode config group picks the reader; the encoder and head are the same in every mode, so standalone
and hybrid runs differ only in what reads the latents.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from tsllm.backbone import (
    BackboneError,
    LLMSpec,
    cache_kwarg,
    decoder_of,
    freeze,
    hidden_size,
    input_embeddings,
    load_config,
    load_llm,
)
from tsllm.encoders import build_encoder

log = logging.getLogger(__name__)


class MeanPool(nn.Module):
    """Standalone reader: latents [B, L, H] -> [B, H], the mean over the L tokens."""

    def forward(self, latents: Tensor) -> Tensor:
        return latents.mean(dim=1)


class LLMReader(nn.Module):
    """Hybrid reader: [prompt | latents | suffix] through a causal LM, one hidden state out.

    With `prefix_cache`, the prompt's key/value cache is computed once (it depends on nothing trainable)
    and each step runs only the L latent and suffix tokens; the result equals the uncached path.
    """

    def __init__(self, llm: nn.Module, tokenizer: Any, prompt: str, suffix: str = "pad",
                 pooling: str = "last", prefix_cache: bool = True) -> None:
        super().__init__()
        if pooling not in ("last", "mean"):
            raise ValueError(f"mode.pooling={pooling!r}: expected last or mean")
        self.llm = llm
        decoder_of(llm), input_embeddings(llm)  # fail at build time, not at the first step
        self.pooling = pooling
        self.frozen = not any(p.requires_grad for p in llm.parameters())
        if prefix_cache and not self.frozen:
            raise ValueError("mode.prefix_cache=true needs a frozen LLM: trainable weights change the prefix")
        self.prefix_cache = prefix_cache
        self._cache_kwarg = cache_kwarg(self.decoder)
        self.register_buffer("prompt_ids", prompt_token_ids(tokenizer, prompt), persistent=False)
        self.register_buffer("suffix_ids", suffix_token_ids(tokenizer, suffix), persistent=False)
        self._prefix: list[tuple[Tensor, Tensor]] | None = None
        self._prefix_key: tuple | None = None

    # Properties, not attributes: as submodules they would put the whole LLM into state_dict twice.
    @property
    def decoder(self) -> nn.Module:
        return decoder_of(self.llm)

    @property
    def embed(self) -> nn.Embedding:
        return input_embeddings(self.llm)

    @property
    def hidden_size(self) -> int:
        return self.embed.weight.shape[-1]

    def train(self, mode: bool = True) -> LLMReader:
        super().train(mode)
        if self.frozen:  # a frozen LLM never runs dropout, whatever the loop asks
            self.llm.eval()
        return self

    def _prefix_kv(self) -> list[tuple[Tensor, Tensor]]:
        """Per-layer (key, value) of the prompt, batch 1, computed once per device and dtype."""
        key = (self.embed.weight.device, self.embed.weight.dtype)
        if self._prefix is None or self._prefix_key != key:
            # Outside inference mode: tensors made under it could not be used by a later training step.
            with torch.inference_mode(False), torch.no_grad():
                out = self.decoder(inputs_embeds=self.embed(self.prompt_ids[None]), use_cache=True)
            cache = getattr(out, self._cache_kwarg, None) or out.past_key_values
            self._prefix = [(layer.keys, layer.values) for layer in cache.layers]
            self._prefix_key = key
        return self._prefix

    def forward(self, latents: Tensor) -> Tensor:
        """latents [B, L, H] -> [B, H] (float32)."""
        from transformers import DynamicCache

        b, n_lat, _ = latents.shape
        dtype = self.embed.weight.dtype
        suffix = self.embed(self.suffix_ids).expand(b, -1, -1)
        tail = torch.cat([latents.to(dtype), suffix], dim=1)  # (B, L+S, H)
        p = self.prompt_ids.numel()
        if self.prefix_cache:
            cache = DynamicCache(config=self.llm.config)
            for i, (k, v) in enumerate(self._prefix_kv()):
                cache.update(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1), i)
            positions = torch.arange(p, p + tail.shape[1], device=tail.device)[None]
            hidden = self.decoder(inputs_embeds=tail, position_ids=positions, use_cache=True,
                                  **{self._cache_kwarg: cache}).last_hidden_state  # (B, L+S, H)
        else:
            prompt = self.embed(self.prompt_ids).expand(b, -1, -1)
            hidden = self.decoder(inputs_embeds=torch.cat([prompt, tail], dim=1),
                                  use_cache=False).last_hidden_state[:, p:]
        out = hidden[:, -1] if self.pooling == "last" else hidden[:, :n_lat].mean(dim=1)
        return out.float()


def prompt_token_ids(tokenizer: Any, prompt: str) -> Tensor:
    """Prompt ids with the tokenizer's own special-token rules: one BOS if it uses one, never two."""
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]
    if not ids:
        raise ValueError("mode.prompt produced no tokens")
    return torch.tensor(ids, dtype=torch.long)


def suffix_token_ids(tokenizer: Any, suffix: str) -> Tensor:
    """The suffix as exactly one real token (the study's text "[PAD]" is several tokens, not one)."""
    if suffix == "pad":
        tok_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    elif suffix == "eos":
        tok_id = tokenizer.eos_token_id
    else:
        ids = tokenizer(suffix, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"mode.suffix={suffix!r} is {len(ids)} tokens for this tokenizer; expected exactly one")
        tok_id = ids[0]
    if tok_id is None:
        raise ValueError(f"mode.suffix={suffix!r}: the tokenizer has no such token")
    return torch.tensor([tok_id], dtype=torch.long)


class TSClassifier(nn.Module):
    """x [B, C, T] -> encoder -> latents [B, L, H] -> reader -> [B, H] -> head -> logits [B, K]."""

    def __init__(self, encoder: nn.Module, reader: nn.Module, latent_dim: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.reader = reader
        self.head = nn.Linear(latent_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.reader(self.encoder(x)))

    def trainable_state(self) -> dict[str, Tensor]:
        """What a checkpoint must hold: every state entry outside a frozen module, on CPU.

        A module whose parameters are all frozen (the LLM, or its base layers under LoRA) is left out
        whole, with its buffers and any quantisation state; encoder BatchNorm statistics are kept.
        """
        frozen = {name for name, m in self.named_modules(remove_duplicate=False)
                  if (ps := list(m.parameters())) and not any(p.requires_grad for p in ps)}

        def in_frozen(key: str) -> bool:
            parts = key.split(".")
            return any(".".join(parts[:i]) in frozen for i in range(1, len(parts)))

        return {k: v.detach().cpu().clone() for k, v in self.state_dict().items() if not in_frozen(k)}

    def load_trainable_state(self, state: dict[str, Tensor]) -> None:
        """Load a `trainable_state()`; RuntimeError naming missing or unexpected keys (or a shape mismatch)."""
        expected = set(self.trainable_state())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise RuntimeError(f"trainable state does not match the model: missing keys {missing[:5]}"
                               f"{' ...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
                               f"{' ...' if len(unexpected) > 5 else ''}")
        self.load_state_dict(state, strict=False)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable and frozen parameter counts (the frozen LLM counts as frozen)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return {"trainable": trainable, "frozen": frozen}


def format_prompt(template: str, *, num_tokens: int, num_classes: int, dataset: str) -> str:
    """Fill the prompt template; it may name {num_tokens}, {num_classes} and {dataset}."""
    try:
        return template.format(num_tokens=num_tokens, num_classes=num_classes, dataset=dataset)
    except KeyError as e:
        raise ValueError(f"mode.prompt names {e}, expected only {{num_tokens}}, {{num_classes}}, {{dataset}}") from None


def build_model(encoder_cfg: Any, mode_cfg: Any, llm_cfg: Any, *, in_channels: int, length: int,
                num_classes: int, dataset: str, seed: int) -> TSClassifier:
    """Join encoder, the mode's reader and a head. The LLM is loaded only when the mode reads with one."""
    spec = LLMSpec.from_cfg(llm_cfg)
    enc_args = dict(encoder_cfg)
    name = enc_args.pop("name")
    if mode_cfg.name == "standalone":
        latent_dim = mode_cfg.latent_dim or hidden_size(load_config(spec))
        reader: nn.Module = MeanPool()
    else:
        llm, tokenizer = load_llm(spec, seed=seed)
        llm = freeze(llm)
        latent_dim = hidden_size(llm.config)
        if mode_cfg.latent_dim not in (None, latent_dim):
            raise BackboneError(f"mode.latent_dim={mode_cfg.latent_dim} but the LLM's hidden size is {latent_dim}")
        if mode_cfg.get("lora"):
            llm = add_lora(llm, **mode_cfg.lora)
        prompt = format_prompt(mode_cfg.prompt, num_tokens=enc_args.get("num_tokens", 1),
                               num_classes=num_classes, dataset=dataset)
        reader = LLMReader(llm, tokenizer, prompt, suffix=mode_cfg.suffix, pooling=mode_cfg.pooling,
                           prefix_cache=mode_cfg.prefix_cache)
    encoder = build_encoder(name, in_channels=in_channels, length=length, latent_dim=latent_dim, **enc_args)
    return TSClassifier(encoder, reader, latent_dim, num_classes)


def add_lora(llm: nn.Module, r: int, alpha: int, dropout: float, target_modules: list[str]) -> nn.Module:
    """Wrap the LLM with PEFT LoRA adapters; only the adapters become trainable."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        bias="none")
    peft_model = get_peft_model(llm, config)
    # The reader calls the inner transformers model; PEFT injected the adapters into it in place.
    return peft_model.base_model.model
