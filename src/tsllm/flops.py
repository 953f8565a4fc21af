"""FLOP counting of one training step and one forward pass, with torch.utils.flop_counter.

Used by `tsllm.plan` before a sweep and by the training loop on its first step. Works on real tensors and
on the meta device (a model that does not fit is counted from its shapes alone). FLOPs of matrix products
and convolutions are counted; elementwise work (norms, activations, the optimiser) is not. Attention scores
are counted only where torch's counter knows the kernel: on CPU, `scaled_dot_product_attention` (what
transformers uses by default) counts 0 with or without a mask, so an LLM's attention over T tokens is
missing, about T / (6 x hidden size) of its forward.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


def count_train_step_flops(model: nn.Module, x: Tensor, y: Tensor) -> int:
    """FLOPs of forward + cross-entropy + backward on one batch (x [B, C, T], y [B]).

    The model is left as it was: gradients and buffers (BatchNorm statistics) are restored.
    """
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    grads = {n: p.grad for n, p in model.named_parameters()}
    was_training = model.training
    model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        loss = nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
    model.train(was_training)
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.copy_(buffers[n])
    for n, p in model.named_parameters():
        p.grad = grads[n]
    return int(counter.get_total_flops())


@torch.no_grad()
def count_forward_flops(module: nn.Module, *inputs: Tensor, **kwargs: Tensor) -> int:
    """FLOPs of one eval-mode forward pass (what evaluation costs per batch)."""
    was_training = module.training
    module.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        module(*inputs, **kwargs)
    module.train(was_training)
    return int(counter.get_total_flops())
