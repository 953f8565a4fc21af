"""The classifier: encoder -> reader -> linear head (built from a config by tsllm.build).

The ``reader`` config group picks what reads the latents (mean pool, a frozen LLM, a control layer);
the encoder and head are the same whatever reads, so arms differ only in the reader.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor, nn


class DataShape(Protocol):
    """What the builder needs to know of a dataset (a DatasetSplits has it)."""

    name: str
    n_channels: int
    length: int
    num_classes: int


class TSClassifier(nn.Module):
    """x [B, C, T] -> encoder -> latents [B, L, H] -> reader -> [B, H] -> head -> logits [B, K]."""

    def __init__(self, encoder: nn.Module, reader: nn.Module, latent_dim: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.reader = reader
        # A reader that already gives class logits (in-context classification) needs no head.
        self.head = nn.Identity() if getattr(reader, "gives_logits", False) else nn.Linear(latent_dim, num_classes)

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


def _count(p: nn.Parameter) -> int:
    """The parameters a tensor stands for: a 4-bit weight packs two into each stored byte, and bitsandbytes
    keeps the unpacked shape in its quant_state."""
    state = getattr(p, "quant_state", None)
    return state.shape.numel() if state is not None else p.numel()


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable and frozen parameter counts, and the trainable count of each top-level part."""
    counts = {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "frozen": sum(_count(p) for p in model.parameters() if not p.requires_grad)}
    for name, child in model.named_children():
        counts[f"trainable_{name}"] = sum(p.numel() for p in child.parameters() if p.requires_grad)
    align = getattr(getattr(model, "reader", None), "align", None)
    if isinstance(align, nn.Module):
        counts["trainable_align"] = sum(p.numel() for p in align.parameters() if p.requires_grad)
    return counts


__all__ = ["DataShape", "TSClassifier", "parameter_counts"]
