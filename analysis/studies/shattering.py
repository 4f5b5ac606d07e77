"""Gradient shattering (Balduzzi et al. 2017): do nearby inputs get similar gradients?

Inputs along a line, x_t = x0 + (t - T/2) * eps * d (d a random unit-RMS direction,
t = 0..T-1), go through the net one at a time (eval mode, so points do not interact through
batch statistics); for each point, the input gradient of a scalar output (the logit of the
class predicted at x0) is taken. Reported:

- :func:`line_gradients`: the (T, D) matrix of input gradients;
- :func:`gradient_correlation`: the mean Pearson correlation between the gradients of points
  ``lag`` apart, for each lag: near 1 when gradients vary smoothly, near 0 when "shattered";
- :func:`shattering_vs_depth`: that correlation at lag 1 for fresh nets of several depths,
  plain vs residual, at initialization.

At initialization, BN's running statistics are still (0, 1); so that eval mode normalizes as
training would, :func:`calibrate_bn` first sets them from a batch of the same inputs
(cumulative average, on a copy of the model).
"""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from torch import nn

from resnet_core.models import build_model

from ..progress import report


def line_points(x0: torch.Tensor, n_points: int = 64, eps: float = 0.01,
                seed: int = 0) -> torch.Tensor:
    """``n_points`` inputs on a line through ``x0`` (C,H,W), spaced ``eps`` (in input RMS
    units) apart."""
    g = torch.Generator().manual_seed(seed + 999)
    d = torch.randn(x0.shape, generator=g).to(x0)
    d = d / d.pow(2).mean().sqrt()
    t = (torch.arange(n_points, dtype=x0.dtype, device=x0.device) - n_points / 2) * eps
    return x0[None] + t[:, None, None, None] * d[None]


@torch.no_grad()
def calibrate_bn(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """A copy of ``model`` whose BN running statistics are the batch statistics of ``x``."""
    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None  # cumulative average: one batch sets the statistics exactly
    m.train()
    m(x)
    return m.eval()


def line_gradients(model: nn.Module, points: torch.Tensor, target: int | None = None,
                   chunk: int = 64) -> np.ndarray:
    """Input gradient of one logit at each point (eval mode, each point independent).
    Returns a (T, D) float64 array. The model's mode is restored; parameters get no .grad."""
    was = model.training
    model.eval()
    try:
        if target is None:
            with torch.no_grad():
                target = int(model(points[len(points) // 2:len(points) // 2 + 1]).argmax(1))
        out = []
        for i in range(0, len(points), chunk):
            x = points[i:i + chunk].detach().clone().requires_grad_(True)
            with torch.enable_grad():
                s = model(x)[:, target].sum()  # per-sample outputs: the sum's gradient is each one's
                (g,) = torch.autograd.grad(s, x)
            out.append(g.flatten(1).double().cpu())
        return torch.cat(out).numpy()
    finally:
        model.train(was)


def gradient_correlation(grads: np.ndarray, max_lag: int = 8) -> pd.DataFrame:
    """Mean Pearson correlation between gradients of points ``lag`` apart, lag = 1..max_lag."""
    g = grads - grads.mean(1, keepdims=True)
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-30)
    rows = []
    for lag in range(1, min(max_lag, len(g) - 1) + 1):
        c = (g[:-lag] * g[lag:]).sum(1)
        rows.append({"lag": lag, "correlation": float(c.mean()), "std": float(c.std())})
    return pd.DataFrame(rows)


def shattering(model: nn.Module, x0: torch.Tensor, n_points: int = 64, eps: float = 0.01,
               seed: int = 0, calibrate: bool = False, max_lag: int = 8) -> pd.DataFrame:
    """Gradient correlation by lag along a line through ``x0`` for one model."""
    pts = line_points(x0, n_points, eps, seed)
    m = calibrate_bn(model, pts) if calibrate else model
    return gradient_correlation(line_gradients(m, pts), max_lag)


def shattering_vs_depth(kinds=("plain", "resnet"), depths=(8, 20, 56), width: int = 8,
                        image_size: int = 16, in_channels: int = 3, n_points: int = 64,
                        eps: float = 0.01, seeds=(0, 1), init: str = "he", norm: str = "batch",
                        progress=None) -> pd.DataFrame:
    """At initialization: lag-1 gradient correlation along a line through a noise image, per
    kind, depth and seed (columns kind, depth, seed, correlation). The caller's RNG is kept."""
    combos = [(k, d, s) for k in kinds for d in depths for s in seeds]
    rows = []
    for i, (k, d, s) in enumerate(combos):
        report(progress, i, len(combos), f"{k}{d} seed {s}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            model = build_model(f"cifar_{k}{d}", width=width, init=init, norm=norm,
                                in_channels=in_channels)
        g = torch.Generator().manual_seed(s)
        x0 = torch.randn(in_channels, image_size, image_size, generator=g)
        c = shattering(model, x0, n_points, eps, s, calibrate=norm == "batch", max_lag=1)
        rows.append({"kind": k, "depth": d, "seed": s, "correlation": c["correlation"].iloc[0]})
    report(progress, len(combos), len(combos), "done")
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean lag-1 correlation per kind and depth."""
    return df.groupby(["kind", "depth"])["correlation"].agg(["mean", "std"]).reset_index()
