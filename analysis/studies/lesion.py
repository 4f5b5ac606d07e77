"""Lesion study (Veit, Wilber, Belongie 2016): delete blocks of a trained net, measure error.

What a deletion removes:

- a residual block loses its residual branch F and keeps its shortcut, with the block's own
  projection for options B and C: it computes what it would with F(x) = 0, i.e.
  ReLU(shortcut(x)) for the paper's post-activation blocks (the ReLU after the sum stays) and
  shortcut(x) for pre-activation blocks (no ReLU after the sum). With identity and option-A
  shortcuts the ReLU changes nothing, since the block input is itself a ReLU output;
- a plain block has no shortcut, so the whole block goes (its two convs with their BNs and
  ReLUs): it becomes the identity, or, where it changes shape (stride 2 or more channels), the
  parameter-free option-A map (subsample and zero-pad, ``resnet_core.models.ShortcutA``) so
  the next block still gets a tensor of the shape it expects.
- the variants (``resnet_core.models.variants``): a deleted SkipInit or ReZero block computes
  what it did at init, alpha = 0 (SkipInit: ReLU(shortcut(x)); ReZero: shortcut(x), no
  activation after its sum); a deleted Fixup block computes ReLU(shortcut(x + b)), keeping
  the scalar bias b (``bias1a``) that its shortcut reads and losing the branch with its own
  biases and multiplier; a deleted CReLU plain block maps its input's doubled channels
  (2 x filters) as option A does.

- :func:`lesion_each`: every block deleted alone, in order (Veit et al.'s Fig. 3);
- :func:`lesion_random`: k random blocks deleted at once, ``samples`` draws per k (their
  Fig. 5); :func:`summarize_random` gives mean and std per k.

The model is changed only inside :func:`deleted` and restored in ``finally``.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from torch import nn

from resnet_core.inference import loss_and_error
from resnet_core.models import BasicBlock, Bottleneck, ShortcutA, blocks_of

from ..progress import report


class Lesioned(nn.Module):
    """A residual block without its residual branch: ``post(shortcut(pre(x)))``."""

    def __init__(self, shortcut: nn.Module, post: nn.Module, pre: nn.Module | None = None):
        super().__init__()
        self.shortcut, self.post = shortcut, post
        self.pre = pre if pre is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.shortcut(self.pre(x)))


def stand_in(block: nn.Module) -> nn.Module:
    """What replaces a deleted block (see the module docstring): a residual block keeps its
    own shortcut (and the ReLU after the sum, if it has one); a plain block becomes the
    identity, or option A where the shape changes.

    The variants: a SkipInit block keeps its ReLU after the sum, a ReZero block has none, so
    either deleted computes what it did at init (alpha = 0); a Fixup block keeps the scalar
    bias its shortcut reads (``bias1a``) and loses its branch with the branch's own biases
    and multiplier; a plain CReLU block's output has twice its filters in channels, so
    option A subsamples and zero-pads those."""
    if block.residual:
        post = (
            block.act2
            if isinstance(block, BasicBlock)
            else block.act3
            if isinstance(block, Bottleneck)
            else nn.Identity()
        )
        return Lesioned(block.downsample, post, getattr(block, "bias1a", None))
    if block.stride != 1 or block.in_planes != block.out_planes:
        mult = getattr(getattr(block, "act2", None), "channel_mult", 1)
        return ShortcutA(block.in_planes * mult, block.out_planes * mult, block.stride)
    return nn.Identity()


@contextmanager
def deleted(model: nn.Module, names):
    """Inside the block, the named blocks are replaced by :func:`stand_in`."""
    mods = dict(model.named_modules())
    swaps = []
    try:
        for n in names:
            parent_name, _, child = n.rpartition(".")
            parent = mods[parent_name] if parent_name else model
            old = getattr(parent, child)
            swaps.append((parent, child, old))
            setattr(parent, child, stand_in(old))
        yield model
    finally:
        for parent, child, old in reversed(swaps):
            setattr(parent, child, old)


def error_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> dict:
    """Test error and mean loss of ``model`` (eval mode) on normalized ``x``."""
    return loss_and_error(model, x, y, batch)


def lesion_each(model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress=None) -> pd.DataFrame:
    """One row per block: block, order, stage, downsampling, error (and loss) with the block
    deleted, the intact net's error (``base_error``) and the increase (``delta``)."""
    blocks = blocks_of(model)
    base = error_of(model, x, y)
    rows = []
    for j, (n, b) in enumerate(blocks):
        report(progress, j, len(blocks), f"deleting {n}")
        with deleted(model, [n]):
            r = error_of(model, x, y)
        rows.append(
            {
                "block": n,
                "order": j,
                "stage": n.split(".")[0],
                "downsampling": b.stride != 1 or b.in_planes != b.out_planes,
                "residual": bool(b.residual),
                "error": r["error"],
                "loss": r["loss"],
                "base_error": base["error"],
                "delta": r["error"] - base["error"],
            }
        )
    report(progress, len(blocks), len(blocks), "done")
    return pd.DataFrame(rows)


def lesion_random(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ks=None,
    samples: int = 5,
    seed: int = 0,
    include_downsampling: bool = False,
    progress=None,
) -> pd.DataFrame:
    """k random blocks deleted together, ``samples`` draws per k. Downsampling blocks are
    left in unless ``include_downsampling`` (Veit et al. delete only the others). Columns:
    k, sample, blocks (comma-joined), error, base_error."""
    pool = [
        n
        for n, b in blocks_of(model)
        if include_downsampling or (b.stride == 1 and b.in_planes == b.out_planes)
    ]
    ks = list(ks) if ks is not None else list(range(1, len(pool) + 1))
    rng = np.random.default_rng(seed)
    base = error_of(model, x, y)["error"]
    rows, total, done = [], len(ks) * samples, 0
    for k in ks:
        if k > len(pool):
            continue
        for s in range(samples):
            report(progress, done, total, f"k={k} sample {s + 1}")
            done += 1
            pick = sorted(rng.choice(len(pool), size=k, replace=False).tolist())
            names = [pool[i] for i in pick]
            with deleted(model, names):
                r = error_of(model, x, y)
            rows.append(
                {"k": k, "sample": s, "blocks": ",".join(names), "error": r["error"], "base_error": base}
            )
    report(progress, total, total, "done")
    return pd.DataFrame(rows)


def summarize_random(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of the error per k."""
    return df.groupby("k")["error"].agg(["mean", "std", "count"]).reset_index()
