"""Signal propagation at initialization: no training, seconds on a CPU.

For a freshly initialized net (plain or residual, BN on or off, He or PyTorch-default init,
any 6n+2 depth) and a batch of Gaussian noise with random labels, one forward and one backward
pass give, per conv layer in forward order:

- ``act_std``: std of the conv's output after BN (the Fig. 7 tap; without BN, the raw conv
  output), i.e. the forward signal;
- ``grad_norm``: the norm of the conv weight's gradient of the mean cross-entropy, i.e. the
  backward signal.

:func:`grad_ratio` summarizes a net by the first conv's weight-gradient norm over the last
conv's. BN runs in train mode (batch statistics) by default, as during training, so the
numbers are those the first SGD step sees. The caller's RNG state is left as it was.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from resnet_core.models import build_model, taps_of

from ..progress import report


def _main_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Convs of the main path in forward order (projection shortcuts left out)."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and "downsample" not in n]


def model_name(kind: str, depth: int) -> str:
    """``kind`` "plain"/"resnet"/"preresnet" and a 6n+2 depth -> a registry name."""
    return f"cifar_{kind}{depth}"


def measure(model: nn.Module, batch: int = 128, image_size: int = 32, seed: int = 0,
            bn_mode: str = "train") -> pd.DataFrame:
    """One noise batch through ``model`` (its weights as they are): per main-path conv,
    ``act_std`` and ``grad_norm``. Parameter ``.grad`` and the model's mode are restored."""
    from ..taps import forward_hooks

    in_ch = model.conv1.in_channels
    g = torch.Generator().manual_seed(seed + 12345)
    x = torch.randn(batch, in_ch, image_size, image_size, generator=g)
    y = torch.randint(0, model.fc.out_features, (batch,), generator=g)
    convs = _main_convs(model)
    # the signal after each conv's norm: the "bn" taps in order (one per main conv)
    taps = [n for n, _ in taps_of(model, "bn")]
    stds: dict[str, float] = {}

    def on_tap(n, m, i, o):
        stds[n] = float(o.detach().double().std(unbiased=False))

    was = [(m, m.training) for m in model.modules()]
    old_grads = {p: p.grad for p in model.parameters()}
    saved_bn = {k: v.clone() for k, v in model.state_dict().items()
                if "running_" in k or "num_batches" in k}
    try:
        model.train(bn_mode == "train")
        with forward_hooks(model, {n: on_tap for n in taps}):
            params = [m.weight for _, m in convs]
            loss = F.cross_entropy(model(x).float(), y)
            grads = torch.autograd.grad(loss, params)
    finally:
        for m, t in was:
            m.training = t
        for p, gr in old_grads.items():
            p.grad = gr
        sd = model.state_dict()
        with torch.no_grad():
            for k, v in saved_bn.items():
                sd[k].copy_(v)
    rows = []
    for i, ((n, _), gr) in enumerate(zip(convs, grads)):
        tap = taps[i] if len(taps) == len(convs) else None
        rows.append({"order": i, "layer": n, "tap": tap,
                     "act_std": stds.get(tap) if tap else None,
                     "grad_norm": float(gr.double().norm())})
    return pd.DataFrame(rows)


# The starting measurement of issue 4 (plain/residual 6n+2 nets, He init, BN in train mode,
# batch 128 of noise, width 16, 32x32, 3 seeds): first/last conv weight-gradient norm ratio.
# Shown beside what this module measures; never used in place of it.
REFERENCE_RATIOS = pd.DataFrame([
    {"kind": "plain", "depth": 20, "norm": "batch", "reference": "about 10"},
    {"kind": "plain", "depth": 56, "norm": "batch", "reference": "about 1e3"},
    {"kind": "plain", "depth": 110, "norm": "batch", "reference": "1e6 to 1e7"},
    {"kind": "resnet", "depth": 20, "norm": "batch", "reference": "about 2.5"},
    {"kind": "resnet", "depth": 56, "norm": "batch", "reference": "about 9"},
    {"kind": "resnet", "depth": 110, "norm": "batch", "reference": "about 20"},
    {"kind": "plain", "depth": None, "norm": "none", "reference": "0.1 to 13 (all depths)"},
    {"kind": "resnet", "depth": None, "norm": "none", "reference": "0.1 to 13 (all depths)"},
])


def grad_ratio(df: pd.DataFrame) -> float:
    """First main conv's weight-gradient norm over the last one's."""
    df = df.sort_values("order")
    return float(df["grad_norm"].iloc[0] / df["grad_norm"].iloc[-1])


def signal_propagation(kind: str = "plain", depth: int = 20, norm: str = "batch",
                       init: str = "he", width: int = 16, batch: int = 128,
                       image_size: int = 32, seeds=(0, 1, 2), num_classes: int = 10,
                       bn_mode: str = "train") -> pd.DataFrame:
    """Per seed and conv layer: ``act_std`` and ``grad_norm`` of a fresh net at init.
    Columns: kind, depth, norm, init, seed, order, layer, act_std, grad_norm."""
    frames = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(model_name(kind, depth), norm=norm, init=init, width=width,
                                num_classes=num_classes)
        df = measure(model, batch, image_size, seed, bn_mode)
        df.insert(0, "seed", seed)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    for k, v in (("bn_mode", bn_mode), ("init", init), ("norm", norm), ("depth", depth),
                 ("kind", kind)):
        out.insert(0, k, v)
    return out


def ratio_table(kinds=("plain", "resnet"), depths=(20, 56, 110), norms=("batch", "none"),
                inits=("he",), width: int = 16, batch: int = 128, image_size: int = 32,
                seeds=(0, 1, 2), progress=None) -> pd.DataFrame:
    """The first/last gradient-norm ratio for every combination, per seed, plus its geometric
    mean over seeds (``ratio_gmean``). ``progress(fraction, message)`` may raise
    :class:`analysis.progress.Cancelled` to stop."""
    combos = [(k, d, n, i) for k in kinds for d in depths for n in norms for i in inits]
    rows = []
    for c, (k, d, n, i) in enumerate(combos):
        report(progress, c, len(combos), f"{k}{d} norm={n} init={i}")
        df = signal_propagation(k, d, n, i, width, batch, image_size, seeds)
        ratios = [grad_ratio(g) for _, g in df.groupby("seed")]
        rows.append({"kind": k, "depth": d, "norm": n, "init": i, "ratios": ratios,
                     "ratio_gmean": float(np.exp(np.mean(np.log(ratios)))),
                     "ratio_min": min(ratios), "ratio_max": max(ratios)})
    report(progress, len(combos), len(combos), "done")
    return pd.DataFrame(rows)
