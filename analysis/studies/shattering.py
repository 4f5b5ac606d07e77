"""Gradient shattering (Balduzzi et al. 2017, "The Shattered Gradients Problem"): do nearby
inputs get similar gradients?

Two settings, one measure. Inputs x(t) lie on a line, t equally spaced; at each the scalar
s(t) = d . grad_x f(x(t)) is taken (for a 1-D input, d = 1 and s = df/dx), and its
autocorrelation against distance is reported (:func:`autocorrelation`):

    C(k) = 1/T sum_{i < T-k} (s_i - mean s)(s_{i+k} - mean s),   rho(k) = C(k) / C(0),

at lag k, distance k * (spacing of t). rho(1) near 1: the gradient varies smoothly along the
line (brown noise); near 0: it is "shattered", like white noise.

- :func:`fc_shattering`: their own setting, reproduced. Fully-connected ReLU nets with one
  input and one output (:class:`FCNet`), 256 inputs equally spaced on [-2, 2], df/dx at each,
  at initialization, plain vs residual, over depth.
- :func:`image_shattering`: the image version. x(t) = x0 + t d through an image x0, d a random
  direction of unit RMS (each pixel moves by t input standard deviations), t in [-span, span];
  f is one fixed logit (``target``: the caller names it). ``bn="batch"``: BN normalizes with
  the statistics of the batch of line points (train-mode values); ``bn="eval"``: with its
  running statistics, as a trained checkpoint is used.
- :func:`shattering_vs_depth`: the image version at initialization (a noise image, class 0's
  logit, BN over the line points), plain vs residual, over depth.

Batch statistics are *held fixed* when differentiating (:func:`frozen_batch_stats`): each
point's gradient is its own, not mixed with its neighbours' through the batch mean.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from torch import nn

from resnet_core.inference import eval_mode
from resnet_core.models import build_model

from ..progress import report

FC_POINTS, FC_RANGE = 256, (-2.0, 2.0)  # Balduzzi et al.'s 1-D inputs
# variance of s below this share of its mean square: constant up to float32 rounding (whose
# relative size is ~1e-7, so ~1e-14 in variance); a gradient that really varies is far above
CONSTANT_REL_VAR = 1e-9


# --- the measure ------------------------------------------------------------------------
def autocorrelation(s, spacing: float = 1.0, max_lag: int | None = None) -> pd.DataFrame:
    """Columns lag, distance, covariance C(k), autocorrelation rho(k), for k = 0..max_lag
    (default T // 4), as defined in the module docstring."""
    s = np.asarray(s, dtype=np.float64)
    t = len(s)
    max_lag = t // 4 if max_lag is None else min(max_lag, t - 1)
    c = s - s.mean()
    cov = np.array([(c[: t - k] * c[k:]).sum() / t for k in range(max_lag + 1)])
    # a gradient constant along the line (a linear net, e.g. looks-linear init) varies only by
    # float32 rounding: its rho would be the rounding noise's, so it is left undefined (NaN)
    flat = cov[0] <= CONSTANT_REL_VAR * float(np.mean(s * s))
    rho = cov / cov[0] if cov[0] > 0 and not flat else np.full_like(cov, np.nan)
    k = np.arange(max_lag + 1)
    return pd.DataFrame({"lag": k, "distance": k * spacing, "covariance": cov, "autocorrelation": rho})


@torch.no_grad()
def frozen_batch_stats(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """A copy of ``model`` in eval mode whose BN running statistics are the train-mode batch
    statistics of ``x`` (mean and *biased* variance, what train mode normalizes with), so its
    output on ``x`` equals the train-mode output, with the statistics held constant."""
    m = copy.deepcopy(model)
    bns = [b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    seen = {}
    handles = [b.register_forward_pre_hook(lambda mod, inp: seen.__setitem__(mod, inp[0])) for b in bns]
    try:
        m.train()
        m(x)
    finally:
        for h in handles:
            h.remove()
    for b in bns:
        v = seen[b].double()
        dims = [0] + list(range(2, v.ndim))
        b.running_mean.copy_(v.mean(dims).to(b.running_mean))
        b.running_var.copy_(v.var(dims, unbiased=False).to(b.running_var))
    return m.eval()


def directional_gradients(
    model: nn.Module, points: torch.Tensor, direction: torch.Tensor, target: int = 0, chunk: int = 256
) -> np.ndarray:
    """s_i = direction . grad_x f_target(points[i]) for each point (the model as it is, in
    eval mode; each point independent). Returns a (T,) float64 array. The model's mode is
    restored; parameters get no ``.grad``."""
    with eval_mode(model):
        out = []
        for i in range(0, len(points), chunk):
            x = points[i : i + chunk].detach().clone().requires_grad_(True)
            with torch.enable_grad():
                # per-sample outputs in eval mode: the sum's gradient is each one's
                (g,) = torch.autograd.grad(model(x)[:, target].sum(), x)
            out.append((g * direction).flatten(1).sum(1).double().cpu())
        return torch.cat(out).numpy()


# --- Balduzzi et al.'s setting: fully connected, 1 input, 1 output ------------------------
class FCNet(nn.Module):
    """A fully-connected ReLU net, 1 input, 1 output, ``depth`` hidden layers of ``width``.

    plain: h <- ReLU(BN(W h)) per layer; residual: blocks of two layers,
    h <- h + W2 ReLU(BN(W1 ReLU(BN(h)))) (pre-activation, an identity path). Weights: He init
    (fan-in, ReLU gain); biases: PyTorch's default (uniform), since with zero biases a ReLU net
    of one input is linear on each side of 0 and no net, however deep, shatters.
    ``norm="none"`` drops the BNs."""

    def __init__(self, kind: str = "plain", depth: int = 8, width: int = 128, norm: str = "batch"):
        super().__init__()
        if kind not in ("plain", "resnet"):
            raise ValueError(f"kind={kind!r} is not accepted; use 'plain' or 'resnet'")
        if norm not in ("batch", "none"):
            raise ValueError(f"norm={norm!r} is not accepted; use 'batch' or 'none'")
        if depth < 1 or (kind == "resnet" and depth % 2):
            raise ValueError(
                f"depth={depth} is not accepted; use a positive integer "
                "(even for residual nets: two layers per block)"
            )
        self.kind = kind

        def bn():
            return nn.BatchNorm1d(width) if norm == "batch" else nn.Identity()

        self.inp = nn.Linear(1, width)
        if kind == "plain":
            self.layers = nn.ModuleList(
                nn.Sequential(nn.Linear(width, width), bn(), nn.ReLU()) for _ in range(depth)
            )
        else:
            self.layers = nn.ModuleList(
                nn.Sequential(
                    bn(), nn.ReLU(), nn.Linear(width, width), bn(), nn.ReLU(), nn.Linear(width, width)
                )
                for _ in range(depth // 2)
            )
        self.out = nn.Linear(width, 1)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for layer in self.layers:
            h = layer(h) if self.kind == "plain" else h + layer(h)
        return self.out(h)


def fc_net(kind: str, depth: int, width: int = 128, norm: str = "batch", seed: int = 0) -> FCNet:
    """A fresh :class:`FCNet`; the caller's RNG state is kept."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FCNet(kind, depth, width, norm)


def fc_gradients(model: nn.Module, n_points: int = FC_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(x, df/dx) at ``n_points`` inputs equally spaced on [-2, 2]; BN, if any, normalizes
    with the statistics of these points (held fixed)."""
    x = torch.linspace(*FC_RANGE, n_points).unsqueeze(1)
    m = frozen_batch_stats(model, x)
    return x[:, 0].double().numpy(), directional_gradients(m, x, torch.ones(1))


def fc_shattering(
    kinds=("plain", "resnet"),
    depths=(2, 8, 24, 50),
    width: int = 128,
    norm: str = "batch",
    seeds=(0, 1, 2),
    n_points: int = FC_POINTS,
    max_lag: int = 32,
    progress=None,
) -> pd.DataFrame:
    """At initialization, per kind, depth and seed, the autocorrelation and covariance of
    df/dx against distance. Columns kind, depth, seed, lag, distance, covariance,
    autocorrelation."""
    combos = [(k, d, s) for k in kinds for d in depths for s in seeds]
    spacing = (FC_RANGE[1] - FC_RANGE[0]) / (n_points - 1)
    frames = []
    for i, (k, d, s) in enumerate(combos):
        report(progress, i, len(combos), f"{k} depth {d} seed {s}")
        _, g = fc_gradients(fc_net(k, d, width, norm, s), n_points)
        a = autocorrelation(g, spacing, max_lag)
        a.insert(0, "seed", s)
        a.insert(0, "depth", d)
        a.insert(0, "kind", k)
        frames.append(a)
    report(progress, len(combos), len(combos), "done")
    return pd.concat(frames, ignore_index=True)


# --- the image version ---------------------------------------------------------------------
def image_line(x0: torch.Tensor, n_points: int = 256, span: float = 1.0, seed: int = 0):
    """(points, direction, t): x(t) = x0 + t d for t equally spaced on [-span, span], d a
    random direction of unit RMS (shape of ``x0``, C,H,W)."""
    g = torch.Generator().manual_seed(seed + 999)
    d = torch.randn(x0.shape, generator=g).to(x0)
    d = d / d.pow(2).mean().sqrt()
    t = torch.linspace(-span, span, n_points, dtype=x0.dtype, device=x0.device)
    return x0[None] + t[:, None, None, None] * d[None], d, t


def image_shattering(
    model: nn.Module,
    x0: torch.Tensor,
    target: int,
    n_points: int = 256,
    span: float = 1.0,
    seed: int = 0,
    bn: str = "eval",
    max_lag: int | None = 32,
) -> pd.DataFrame:
    """Autocorrelation and covariance, against distance along the line, of
    s(t) = d . grad_x f_target(x(t)) (see :func:`image_line`). ``bn``: "eval" (running
    statistics) or "batch" (the line points' batch statistics, held fixed)."""
    if bn not in ("eval", "batch"):
        raise ValueError(f"bn={bn!r} is not accepted; use 'eval' or 'batch'")
    pts, d, t = image_line(x0, n_points, span, seed)
    m = frozen_batch_stats(model, pts) if bn == "batch" else model
    s = directional_gradients(m, pts, d, target)
    return autocorrelation(s, float(t[1] - t[0]), max_lag)


def shattering_vs_depth(
    kinds=("plain", "resnet"),
    depths=(8, 20, 56),
    width: int = 8,
    image_size: int = 16,
    in_channels: int = 3,
    n_points: int = 256,
    span: float = 1.0,
    seeds=(0, 1),
    init: str = "he",
    norm: str = "batch",
    max_lag: int = 32,
    progress=None,
    options: dict | None = None,
    readout=None,
) -> pd.DataFrame:
    """The image version at initialization: per kind, depth and seed, a fresh CIFAR-style net,
    a Gaussian-noise image, class 0's logit, BN over the line points. Columns kind, depth,
    seed, lag, distance, covariance, autocorrelation. The caller's RNG is kept. ``options``:
    a variant's other model options (activation, branch_scalar, ...), passed to the builder.
    ``readout``: None (the logit), or a function model -> module whose output column 0 is
    differentiated instead (e.g. a fixed random readout of the features, for Fixup, whose
    classifier starts at 0 and so has no input gradient at init)."""
    combos = [(k, d, s) for k in kinds for d in depths for s in seeds]
    frames = []
    for i, (k, d, s) in enumerate(combos):
        report(progress, i, len(combos), f"{k}{d} seed {s}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            model = build_model(
                f"cifar_{k}{d}", width=width, init=init, norm=norm, in_channels=in_channels, **(options or {})
            )
        model = readout(model) if readout is not None else model
        x0 = torch.randn(in_channels, image_size, image_size, generator=torch.Generator().manual_seed(s))
        a = image_shattering(model, x0, 0, n_points, span, s, "batch" if norm == "batch" else "eval", max_lag)
        for col, v in (("seed", s), ("depth", d), ("kind", k)):
            a.insert(0, col, v)
        frames.append(a)
    report(progress, len(combos), len(combos), "done")
    return pd.concat(frames, ignore_index=True)


def at_lag(df: pd.DataFrame, lag: int = 1) -> pd.DataFrame:
    """Mean and std over seeds of the autocorrelation at ``lag``, per kind and depth."""
    d = df[df["lag"] == lag]
    return d.groupby(["kind", "depth"], sort=False)["autocorrelation"].agg(["mean", "std"]).reset_index()
