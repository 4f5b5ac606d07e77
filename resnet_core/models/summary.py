"""Parameter and multiply-add counts, measured by running the model once on a dummy input."""

from __future__ import annotations

import torch
from torch import nn

from ..inference import eval_mode


def default_input_size(model: nn.Module) -> int:
    return 224 if getattr(model, "family", "cifar") == "imagenet" else 32


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: int | None = None, in_channels: int | None = None) -> int:
    """Multiply-adds of convolutions and linear layers for one image (the paper's FLOPs)."""
    size = input_size or default_input_size(model)
    cin = in_channels or model.conv1.in_channels
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += out.numel() // out.shape[0] * k

    def linear_hook(m, inp, out):
        nonlocal total
        total += m.in_features * m.out_features

    handles = []
    try:
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                handles.append(m.register_forward_hook(conv_hook))
            elif isinstance(m, nn.Linear):
                handles.append(m.register_forward_hook(linear_hook))
        with eval_mode(model):
            model(torch.zeros(1, cin, size, size, device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return total


def summary(model: nn.Module, input_size: int | None = None) -> dict:
    size = input_size or default_input_size(model)
    return {"params": count_params(model), "macs": count_macs(model, size), "input_size": size}
