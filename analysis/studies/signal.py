"""Signal propagation at initialization: no training, seconds on a CPU.

A freshly initialized net (plain or residual, BN on or off, He or PyTorch-default init, any
6n+2 depth) gets one batch of Gaussian noise with random labels. Two measurements:

- :func:`conv_gradients` (the backward signal): per main-path conv in forward order, the norm
  of its weight's gradient of the mean cross-entropy. :func:`grad_ratio` summarizes a net by
  the first main conv's norm over the last main conv's (projection shortcuts left out).
- :func:`block_signal` (the forward signal, after Brock, De and Smith 2021, "Characterizing
  signal propagation to close the performance gap in unnormalized ResNets"): at each block,
  the *average channel squared mean* (the squared mean over N, H, W of each channel, averaged
  over channels), the *average channel variance* (biased variance over N, H, W, averaged over
  channels), and for residual blocks the residual branch's average channel variance.

Where the block signal is measured (``point`` column). Brock et al. use pre-activation
blocks, whose output is the sum x + F(x) itself. Here the paper's (post-activation) blocks end
in a ReLU after the sum, and a ReLU's output always has a positive mean, which would hide the
mean shift the plots are meant to show; so the tap is the sum *before* that ReLU:

- post-activation residual block: F(x) + shortcut(x), the input of the block's last ReLU;
- plain block: the same point, F(x) (the last BN's output), before the last ReLU;
- pre-activation residual block: the block output x + F(x) (there is no ReLU after it).

The residual branch is F(x) itself (the ``tap_f`` point). BN runs in train mode (batch
statistics) by default, as during the first SGD step. The model, its BN statistics, its
parameters' ``.grad`` and the caller's RNG state are left as they were.
"""

from __future__ import annotations

from contextlib import contextmanager

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from resnet_core.inference import mode
from resnet_core.models import BasicBlock, Bottleneck, PreActBlock, blocks_of, build_model


def _main_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Convs of the main path in forward order (projection shortcuts left out)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and "downsample" not in n]


def model_name(kind: str, depth: int) -> str:
    """``kind`` "plain"/"resnet"/"preresnet" and a 6n+2 depth -> a registry name."""
    return f"cifar_{kind}{depth}"


def noise_batch(model: nn.Module, batch: int = 128, image_size: int = 32, seed: int = 0):
    """Gaussian inputs (N(0, 1) per pixel, like normalized images) and uniform random labels."""
    g = torch.Generator().manual_seed(seed + 12345)
    x = torch.randn(batch, model.conv1.in_channels, image_size, image_size, generator=g)
    y = torch.randint(0, model.fc.out_features, (batch,), generator=g)
    return x, y


@contextmanager
def _untouched(model: nn.Module, bn_mode: str):
    """Put ``model`` in BN mode ``bn_mode`` ("train" or "eval"); on exit restore every module's
    mode, the BN running statistics and the parameters' ``.grad``."""
    if bn_mode not in ("train", "eval"):
        raise ValueError(f"bn_mode={bn_mode!r} is not accepted; use 'train' or 'eval'")
    old_grads = {p: p.grad for p in model.parameters()}
    saved = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}
    try:
        with mode(model, bn_mode == "train"):
            yield model
    finally:
        for p, gr in old_grads.items():
            p.grad = gr
        sd = model.state_dict()
        with torch.no_grad():
            for k, v in saved.items():
                sd[k].copy_(v)


def conv_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, bn_mode: str = "train"
) -> pd.DataFrame:
    """Per main-path conv (forward order): ``order``, ``layer`` (the conv's name) and
    ``grad_norm``, the norm of d(mean cross-entropy)/d(weight) for the batch ``x, y``."""
    convs = _main_convs(model)
    with _untouched(model, bn_mode):
        loss = F.cross_entropy(model(x).float(), y)
        grads = torch.autograd.grad(loss, [m.weight for _, m in convs])
    return pd.DataFrame(
        [
            {"order": i, "layer": n, "grad_norm": float(g.double().norm())}
            for i, ((n, _), g) in enumerate(zip(convs, grads))
        ]
    )


def _sum_point(block: nn.Module) -> tuple[nn.Module, str]:
    """The module whose *input* is the block's signal-propagation point, and what it is."""
    if isinstance(block, PreActBlock):
        if block.residual:
            return block.tap_out, "x + F(x): the block output (no ReLU after the sum)"
        return block.tap_out, "F(x): the block output (plain, no ReLU after it)"
    if not isinstance(block, (BasicBlock, Bottleneck)):
        raise TypeError(f"{type(block).__name__} is not a block this study knows")
    last = block.act2 if isinstance(block, BasicBlock) else block.act3
    if isinstance(last, nn.Identity):  # ReZero: x + alpha F(x), no activation after the sum
        return last, "F(x) + shortcut(x): the block output (no activation after the sum)"
    act = "ReLU" if isinstance(last, nn.ReLU) else "activation"  # tanh, TAT, CReLU variants
    if block.residual:
        return last, f"F(x) + shortcut(x), before the block's last {act}"
    bn = "BN" if isinstance(getattr(block, "bn3", block.bn2), nn.BatchNorm2d) else "conv"
    return last, f"F(x) (last {bn} output), before the block's last {act}"


def _channel_stats(t: torch.Tensor) -> tuple[float, float]:
    """Average channel squared mean and average channel variance of an (N, C, H, W) tensor."""
    t = t.detach().double().transpose(0, 1).flatten(1)  # C, N*H*W
    return float(t.mean(1).pow(2).mean()), float(t.var(1, unbiased=False).mean())


def block_signal(model: nn.Module, x: torch.Tensor, bn_mode: str = "train") -> pd.DataFrame:
    """Brock et al.'s signal propagation statistics, one row per block in forward order:
    ``order``, ``block``, ``point`` (what was measured), ``sq_mean`` (average channel squared
    mean), ``var`` (average channel variance) and ``res_var`` (the residual branch F(x)'s
    average channel variance; NaN for plain blocks, which have no branch beside a shortcut)."""
    blocks = blocks_of(model)
    stats: dict[str, tuple] = {}
    handles = []

    def at_sum(name):
        return lambda m, i, o: stats.__setitem__((name, "sum"), _channel_stats(i[0]))

    def at_branch(name):
        return lambda m, i, o: stats.__setitem__((name, "f"), _channel_stats(o))

    points = {}
    with _untouched(model, bn_mode):
        try:
            for n, b in blocks:
                mod, points[n] = _sum_point(b)
                handles.append(mod.register_forward_hook(at_sum(n)))
                if b.residual:
                    handles.append(b.tap_f.register_forward_hook(at_branch(n)))
            with torch.no_grad():
                model(x)
        finally:
            for h in handles:
                h.remove()
    rows = []
    for i, (n, b) in enumerate(blocks):
        sq, var = stats[(n, "sum")]
        rows.append(
            {
                "order": i,
                "block": n,
                "point": points[n],
                "sq_mean": sq,
                "var": var,
                "res_var": stats[(n, "f")][1] if b.residual else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def grad_ratio(df: pd.DataFrame) -> float:
    """First main conv's weight-gradient norm over the last one's: the project's one
    definition, :func:`analysis.recorders.first_last_ratio`, on one fresh net's rows."""
    from analysis.recorders import first_last_ratio

    df = df.sort_values("order")
    r = first_last_ratio(list(df["layer"]), list(df["grad_norm"]))
    return float("nan") if r is None else float(r[2])


def fresh_net(
    kind: str,
    depth: int,
    norm: str = "batch",
    init: str = "he",
    width: int = 16,
    num_classes: int = 10,
    seed: int = 0,
    options: dict | None = None,
) -> nn.Module:
    """A freshly initialized CIFAR-style net; the caller's RNG state is kept. ``options``:
    the variants' model options (activation, branch_scalar, zero_init_residual, tat_target;
    ``TrainConfig.model_options()`` without its norm, init and width), passed to the same
    builder the trainer uses."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(
            model_name(kind, depth),
            norm=norm,
            init=init,
            width=width,
            num_classes=num_classes,
            **(options or {}),
        )


def _run(kind, depth, norm, init, width, batch, image_size, seeds, num_classes, bn_mode, what, options=None):
    frames = []
    for seed in seeds:
        model = fresh_net(kind, depth, norm, init, width, num_classes, seed, options)
        x, y = noise_batch(model, batch, image_size, seed)
        df = conv_gradients(model, x, y, bn_mode) if what == "grad" else block_signal(model, x, bn_mode)
        df.insert(0, "seed", seed)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    for k, v in (("bn_mode", bn_mode), ("init", init), ("norm", norm), ("depth", depth), ("kind", kind)):
        out.insert(0, k, v)
    return out


def signal_propagation(
    kind: str = "plain",
    depth: int = 20,
    norm: str = "batch",
    init: str = "he",
    width: int = 16,
    batch: int = 128,
    image_size: int = 32,
    seeds=(0, 1, 2),
    num_classes: int = 10,
    bn_mode: str = "train",
    options: dict | None = None,
) -> pd.DataFrame:
    """Per seed and main-path conv of a fresh net: ``grad_norm`` (see :func:`conv_gradients`).
    Columns: kind, depth, norm, init, bn_mode, seed, order, layer, grad_norm. ``options``: a
    variant's other model options (see :func:`fresh_net`)."""
    return _run(
        kind, depth, norm, init, width, batch, image_size, seeds, num_classes, bn_mode, "grad", options
    )


def signal_propagation_plot(
    kind: str = "resnet",
    depth: int = 20,
    norm: str = "batch",
    init: str = "he",
    width: int = 16,
    batch: int = 128,
    image_size: int = 32,
    seeds=(0,),
    num_classes: int = 10,
    bn_mode: str = "train",
    options: dict | None = None,
) -> pd.DataFrame:
    """Per seed and block of a fresh net: Brock et al.'s ``sq_mean``, ``var``, ``res_var``
    (see :func:`block_signal`). Columns: kind, depth, norm, init, bn_mode, seed, order, block,
    point, sq_mean, var, res_var. ``options``: a variant's other model options."""
    return _run(
        kind, depth, norm, init, width, batch, image_size, seeds, num_classes, bn_mode, "spp", options
    )
