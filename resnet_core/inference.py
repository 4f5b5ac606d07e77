"""Running a model for its outputs, the one way the lab does it: in eval mode (BN uses its
running statistics and updates nothing), in batches, with every module's mode restored after.

    with eval_mode(model):
        ...
    loss_and_error(model, x, y)  # {"loss": mean cross-entropy, "error": top-1, "n": len(y)}
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


@contextmanager
def mode(model: nn.Module, training: bool):
    """``model.train(training)`` inside the block; every submodule's previous mode is restored
    on exit (a model with mixed modes comes back mixed, which ``model.train(was)`` would not)."""
    modes = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield model
    finally:
        for m, t in modes:
            m.training = t


def eval_mode(model: nn.Module):
    """Eval mode inside the block (BN uses its running statistics and updates nothing); the
    previous mode of every submodule is restored on exit."""
    return mode(model, False)


def batched_logits(
    model: nn.Module,
    x: torch.Tensor,
    batch: int = 1000,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    each: Callable[[slice, torch.Tensor], None] | None = None,
) -> list[torch.Tensor]:
    """The model's float32 logits for ``x``, one tensor per ``batch`` rows, in eval mode and
    without gradients. ``prepare`` maps a slice of ``x`` to the model's input (e.g. uint8
    images to normalized ones on the device); ``autocast()`` is entered around each forward.
    With ``each``, ``each(rows, logits)`` is called per batch and nothing is kept (a test set's
    logits need not all sit on the device at once). A list or a callback, not a generator: a
    suspended generator would hold eval mode and no_grad open in its caller."""
    outs = []
    with torch.no_grad(), eval_mode(model):
        for i in range(0, len(x), batch):
            rows = slice(i, i + batch)
            xb = x[rows] if prepare is None else prepare(x[rows])
            with autocast() if autocast is not None else contextlib.nullcontext():
                out = model(xb)
            out = out.float()
            if each is None:
                outs.append(out)
            else:
                each(rows, out)
    return outs


def loss_and_error(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int = 1000,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> dict:
    """Mean cross-entropy loss and top-1 error of ``model`` (eval mode) on ``x``, ``y``."""
    total = {"loss": 0.0, "wrong": 0}

    def add(rows: slice, out: torch.Tensor) -> None:
        yb = y[rows].to(out.device)
        total["loss"] += F.cross_entropy(out, yb, reduction="sum").item()
        total["wrong"] += (out.argmax(1) != yb).sum().item()

    batched_logits(model, x, batch, prepare, autocast, each=add)
    n = max(1, len(y))
    return {"loss": total["loss"] / n, "error": total["wrong"] / n, "n": len(y)}
