"""Variants from the follow-up literature on training deep nets without shortcuts or without
normalisation: activations, scalar modules and initialisations, plus the rules of which
options go together.

- Looks-linear init with CReLU (Balduzzi et al. 2017, "The Shattered Gradients Problem",
  section 5): CReLU(x) = [relu(x), relu(-x)] and mirrored weights [W, -W] on every layer that
  reads a CReLU, so W [relu(x); relu(-x)] = W x and the net is linear (affine with BN in eval
  mode, or with biases) at init. CReLU doubles each conv's *input* channels; the lab holds the
  width (the number of filters) equal to the baseline, so a CReLU net has about twice the
  parameters (``python -m resnet_core models`` lists both counts).
- Delta-orthogonal init (Xiao et al. 2018, "Dynamical Isometry and a Mean Field Theory of
  CNNs", Algorithm 2): each kernel zero except its spatial centre, ``sigma_w`` times a random
  orthogonal matrix. With tanh at criticality (``tanh_critical``) and no BN, their setting;
  with ReLU (gain sqrt 2) it is offered too, labelled: ReLU nets cannot reach dynamical
  isometry (Pennington et al. 2017).
- Tailored leaky ReLU, TAT (Zhang, Botev and Martens 2022, "Deep Learning without
  Shortcuts"): ``sqrt(2 / (1 + a^2)) * leaky_relu(x, a)`` with the negative slope ``a``
  chosen so that the whole plain chain's correlation map sends 0 to ``eta`` (0.9, the default
  of their ``dks`` code), with delta-orthogonal kernels and no normalisation.
- SkipInit (De and Smith 2020) and ReZero (Bachlechner et al. 2020): a learnable scalar,
  initialised to 0, multiplies each residual branch. SkipInit keeps the block as it is
  (the ReLU after the addition stays); ReZero is the paper's x + alpha F(x), with no
  activation after the addition.
- Fixup (Zhang, Dauphin and Ma 2019, "Fixup Initialization", section 3): no normalisation;
  the last conv of each branch and the classifier start at 0, the other branch convs get He
  init times L^(-1/(2m-2)) (L branches, m = 2 convs per basic-block branch, so L^(-1/2));
  scalar biases (init 0) before each conv, activation and the addition, and one scalar
  multiplier (init 1) per branch.
- Zero-init of each residual branch's last BN gamma (Goyal et al. 2017; torchvision's
  ``zero_init_residual``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("relu", "tanh", "tat", "crelu")
INITS = ("he", "torch", "looks_linear", "delta_orthogonal", "fixup")
BRANCH_SCALARS = ("none", "skipinit", "rezero")
TAT_TARGET = 0.9  # eta: C_f(0) of the whole net, the default of Zhang et al.'s dks code
# Xiao et al. 2018 train tanh CNNs on the order-to-chaos critical line at a small bias
# variance: sigma_b^2 = 2.01e-5 with sigma_w^2 = 1.05 is the pair we take for their CIFAR-10
# setting (not re-checked against the paper's text). tanh_critical solves their mean-field
# equations for the critical sigma_w^2 at this sigma_b^2: 1.0500, so the pair is critical.
TANH_SIGMA_B2 = 2.01e-5


class CReLU(nn.Module):
    """Concatenated ReLU: [relu(x), relu(-x)] along channels (Shang et al. 2016)."""

    channel_mult = 2  # the next layer reads twice the channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(x), F.relu(-x)], dim=1)


class TATLeakyReLU(nn.Module):
    """``sqrt(2 / (1 + a^2)) * leaky_relu(x, a)``: the scale keeps E[phi(z)^2] = 1 for
    z ~ N(0, 1) (TAT's Q(1) = 1). ``a`` is set by the model builder from the net's depth."""

    channel_mult = 1

    def __init__(self, negative_slope: float = 0.0):
        super().__init__()
        self.negative_slope = float(negative_slope)

    @property
    def output_scale(self) -> float:
        return math.sqrt(2.0 / (1.0 + self.negative_slope**2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_scale * F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope:.6f}, output_scale={self.output_scale:.6f}"


class Scale(nn.Module):
    """One learnable scalar multiplier (ReZero/SkipInit alpha, init 0; Fixup's, init 1)."""

    def __init__(self, init: float):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class Bias(nn.Module):
    """One learnable scalar bias, init 0 (Fixup)."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


def act_layer_for(activation: str) -> type:
    """The activation class a block instantiates (each use its own, non-in-place module)."""
    layers = {"relu": nn.ReLU, "tanh": nn.Tanh, "tat": TATLeakyReLU, "crelu": CReLU}
    if activation not in layers:
        raise ValueError(f"activation={activation!r} is not accepted; use {', '.join(ACTIVATIONS)}")
    return layers[activation]


# --- TAT: the slope from the depth -----------------------------------------------------------
def leaky_relu_cmap(c: float, a: float) -> float:
    """Correlation map of the scaled leaky ReLU (Zhang et al. 2022, eq. for Leaky ReLU):
    c + (1 - a)^2 / (pi (1 + a^2)) * (sqrt(1 - c^2) - c arccos(c))."""
    c = min(1.0, max(-1.0, c))
    return c + (1 - a) ** 2 / (math.pi * (1 + a * a)) * (math.sqrt(1 - c * c) - c * math.acos(c))


def tat_negative_slope(n_layers: int, target: float = TAT_TARGET) -> float:
    """The slope ``a`` for which ``n_layers`` maps composed send c = 0 to ``target``.

    For a plain chain the worst subnetwork is the whole net (Zhang et al. 2022), so the
    condition is on the composition over all its leaky-ReLU layers. The composed map at 0
    falls from its ReLU value (a = 0) to 0 (a = 1, linear), so bisection finds ``a``.
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"tat_target={target!r} is not accepted; expected a number in (0, 1)")

    def c0(a: float) -> float:
        c = 0.0
        for _ in range(n_layers):
            c = leaky_relu_cmap(c, a)
        return c

    if c0(0.0) <= target:
        return 0.0  # a net this shallow stays below the target even with plain ReLU
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if c0(mid) > target else (lo, mid)
    return (lo + hi) / 2


# --- tanh at criticality (Xiao et al. 2018) --------------------------------------------------
def _gauss_mean(fn, q: float, order: int = 101) -> float:
    z, w = np.polynomial.hermite_e.hermegauss(order)  # weight exp(-z^2/2)
    return float(np.sum(w * fn(math.sqrt(q) * z)) / math.sqrt(2 * math.pi))


@functools.lru_cache(maxsize=8)  # ~2 s of quadrature, asked for by every tanh net built
def tanh_critical(sigma_b2: float = TANH_SIGMA_B2) -> tuple[float, float]:
    """(sigma_w^2, q*) on tanh's order-to-chaos line for bias variance ``sigma_b2``: the
    length fixed point q* = sigma_w^2 E[tanh(sqrt(q*) z)^2] + sigma_b^2 with
    chi_1 = sigma_w^2 E[tanh'(sqrt(q*) z)^2] = 1 (Poole et al. 2016; Xiao et al. 2018)."""
    sech4 = lambda x: 1.0 / np.cosh(x) ** 4

    def sigma_w2_at(q):  # chi_1 = 1 fixes sigma_w^2 for a given q
        return 1.0 / _gauss_mean(sech4, q)

    def gap(q):  # the fixed-point equation's residual
        return sigma_w2_at(q) * _gauss_mean(lambda x: np.tanh(x) ** 2, q) + sigma_b2 - q

    lo, hi = 1e-12, 10.0  # gap > 0 at tiny q (sigma_b^2 dominates), < 0 at large q
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if gap(mid) > 0 else (lo, mid)
    q = math.sqrt(lo * hi)
    return sigma_w2_at(q), q


# --- initialisations -----------------------------------------------------------------------
@torch.no_grad()
def delta_orthogonal_(weight: torch.Tensor, gain: float) -> None:
    """Xiao et al. 2018, Algorithm 2: zero kernel, centre tap ``gain`` times a random
    orthogonal (cout x cin) matrix (orthonormal rows or columns when not square)."""
    cout, cin, kh, kw = weight.shape
    weight.zero_()
    centre = torch.empty(cout, cin, dtype=weight.dtype, device=weight.device)
    nn.init.orthogonal_(centre, gain=gain)
    weight[:, :, kh // 2, kw // 2] = centre


@torch.no_grad()
def mirror_(weight: torch.Tensor) -> None:
    """Looks-linear: the weight reading [relu(x), relu(-x)] becomes [W, -W], W drawn with a
    linear layer's He gain (std 1/sqrt(fan_in of W)): the mirrored net is linear at init."""
    half = weight.shape[1] // 2
    w = torch.empty_like(weight[:, :half])
    fan_in = w.shape[1] * (w[0, 0].numel())
    nn.init.normal_(w, 0.0, 1.0 / math.sqrt(fan_in))
    weight[:, :half] = w
    weight[:, half:] = -w


def activation_gain(activation: str) -> float:
    """sigma_w for a delta-orthogonal kernel before this activation: sqrt 2 for ReLU (He),
    tanh's critical value, 1 for TAT's and CReLU's (both keep E[phi(z)^2] = E[z^2])."""
    if activation == "relu":
        return math.sqrt(2.0)
    if activation == "tanh":
        return math.sqrt(tanh_critical()[0])
    return 1.0


def check_variant(
    kind: str,
    family: str,
    block: str,
    *,
    norm: str = "batch",
    activation: str = "relu",
    init: str = "he",
    branch_scalar: str = "none",
    zero_init_residual: bool = False,
    tat_target: float = TAT_TARGET,
) -> None:
    """Raise ValueError, naming the option and what is accepted, for a combination the
    variants do not define. ``kind``: plain/resnet/preresnet; ``block``: basic/bottleneck/preact."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not accepted; use {', '.join(ACTIVATIONS)}")
    if init not in INITS:
        raise ValueError(f"init={init!r} is not accepted; use {', '.join(INITS)}")
    if branch_scalar not in BRANCH_SCALARS:
        raise ValueError(f"branch_scalar={branch_scalar!r} is not accepted; use {', '.join(BRANCH_SCALARS)}")
    cifar_plain = kind == "plain" and family == "cifar"
    if activation in ("crelu", "tat") and not cifar_plain:
        raise ValueError(
            f"activation={activation!r} is for CIFAR plain nets (plain{{D}}, "
            "cifar_plain{D}): it is a way to train nets without shortcuts"
        )
    if init == "looks_linear" and activation != "crelu":
        raise ValueError(
            "init='looks_linear' mirrors the weights that read a CReLU; use it with activation='crelu'"
        )
    if init == "fixup" and (kind != "resnet" or block != "basic" or norm != "none"):
        raise ValueError(
            "init='fixup' is for residual basic-block nets without normalisation "
            "(resnet20..1202, resnet18/34, cifar_resnet{D}) with norm='none'"
        )
    if branch_scalar != "none" and kind == "plain":
        raise ValueError(
            f"branch_scalar={branch_scalar!r} scales residual branches; a plain net "
            "has none (use a resnet or preresnet model)"
        )
    if branch_scalar != "none" and init == "fixup":
        raise ValueError("init='fixup' has its own branch multiplier; use branch_scalar='none'")
    if zero_init_residual and (kind != "resnet" or norm != "batch"):
        raise ValueError(
            "zero_init_residual zeroes each residual branch's last BN gamma: use "
            "it with a resnet model (not plain or preresnet) and norm='batch'"
        )
    if isinstance(tat_target, bool) or not isinstance(tat_target, (int, float)) or not 0.0 < tat_target < 1.0:
        raise ValueError(f"tat_target={tat_target!r} is not accepted; expected a number in (0, 1)")
