"""Can plain nets be fixed? The variants of the `rescue` sweep measured at initialization.

The variants are the runs of ``resnet_core.config.SWEEPS["rescue"]`` (one list, so the
page and the sweep never disagree): each a family (plain or resnet) and model options
(norm, init, activation, branch_scalar, zero_init_residual). Here each is built fresh, at
any 6n+2 depth and a small width, through the trainer's own builder, and measured with the
lab's two instruments at init:

- :func:`variants_signal`: Brock, De and Smith's (2021) signal propagation statistics per
  block (``analysis.studies.signal.block_signal``) and each main conv's weight-gradient norm;
- :func:`variants_shattering`: Balduzzi et al.'s (2017) gradient shattering, image version
  (``analysis.studies.shattering``): the autocorrelation along a line through a noise image of
  the directional derivative of a *fixed random readout* of the pooled features
  (:class:`RandomReadout`), not of a logit. A logit of a fresh net is exactly such a readout
  (a random row of the classifier) plus a bias; but Fixup starts its classifier at 0, so every
  logit is constant at init and its gradient is 0. The readout is the same vector for every
  variant, so all are measured alike.

A looks-linear net is linear at init: its gradient is the same at every point of the line
and the autocorrelation is undefined (NaN, ``constant`` True): nothing is shattered.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from resnet_core.config import SWEEPS

from .shattering import (
    CONSTANT_REL_VAR,
    autocorrelation,
    directional_gradients,
    frozen_batch_stats,
    image_line,
)
from .signal import block_signal, fresh_net, noise_batch

# the model options a variant sets; any other TrainConfig field is part of the budget
VARIANT_FIELDS = ("norm", "init", "activation", "branch_scalar", "zero_init_residual")
VARIANT_DEFAULTS = {
    "norm": "batch",
    "init": "he",
    "activation": "relu",
    "branch_scalar": "none",
    "zero_init_residual": False,
}


def rescue_variants() -> list[dict]:
    """The `rescue` sweep's variants, once each (its depth-56 runs): ``label`` (the sweep's
    name after its group), ``group`` ("no shortcuts", "no normalisation", "zero-init"),
    ``kind`` ("plain"/"resnet") and ``options`` (every VARIANT_FIELDS value)."""
    out, seen = [], set()
    for r in SWEEPS["rescue"]["runs"]:
        kind = "plain" if r["model"].startswith("plain") else "resnet"
        options = {f: r.get(f, VARIANT_DEFAULTS[f]) for f in VARIANT_FIELDS}
        key = (kind, tuple(options.values()))
        if key in seen:
            continue
        seen.add(key)
        _, group, label = r["name"].split(": ", 2)
        out.append({"label": label, "group": group, "kind": kind, "options": options})
    return out


def variant_of(kind: str, cfg: dict) -> dict | None:
    """The rescue variant a run's config is (by family and VARIANT_FIELDS), or None."""
    options = {f: cfg.get(f, VARIANT_DEFAULTS[f]) for f in VARIANT_FIELDS}
    for v in rescue_variants():
        if v["kind"] == kind and v["options"] == options:
            return v
    return None


def _net(v: dict, depth: int, width: int, seed: int) -> nn.Module:
    """A fresh net of variant ``v`` (3 input channels, 10 classes)."""
    o = dict(v["options"])
    norm, init = o.pop("norm"), o.pop("init")
    return fresh_net(v["kind"], depth, norm, init, width, seed=seed, options=o)


def variants_signal(
    depth: int = 20, width: int = 8, batch: int = 64, image_size: int = 16, seed: int = 0, variants=None
) -> pd.DataFrame:
    """Brock et al.'s block statistics (``analysis.studies.signal.block_signal``) of each
    variant, fresh, on one noise batch (BN in train mode). Columns label, group, kind,
    order, block, point, sq_mean, var, res_var."""
    frames = []
    for v in variants or rescue_variants():
        net = _net(v, depth, width, seed)
        x, _ = noise_batch(net, batch, image_size, seed)
        b = block_signal(net, x)
        for col in ("kind", "group", "label"):
            b.insert(0, col, v[col])
        frames.append(b)
    return pd.concat(frames, ignore_index=True)


class RandomReadout(nn.Module):
    """f(x) = r . pooled features(x), r a fixed random unit vector (seeded): a logit of a
    freshly initialized classifier, without the classifier (see the module docstring). A
    CReLU net's features are [relu(h), relu(-h)], so r is mirrored, [r', -r'], as the
    looks-linear classifier is: the readout keeps the net linear at init."""

    def __init__(self, model: nn.Module, seed: int = 0):
        super().__init__()
        self.model = model
        g = torch.Generator().manual_seed(seed + 4242)
        mirrored = getattr(model, "activation", "relu") == "crelu"
        r = torch.randn(model.num_features // 2 if mirrored else model.num_features, generator=g)
        if mirrored:  # reading [relu(h), relu(-h)]: mirrored as looks-linear's classifier row
            r = torch.cat([r, -r])
        self.register_buffer("r", r / r.norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return (feats @ self.r)[:, None]


def readout_shattering(
    model: nn.Module,
    x0: torch.Tensor,
    n_points: int = 128,
    span: float = 1.0,
    seed: int = 0,
    max_lag: int = 16,
) -> pd.DataFrame:
    """Autocorrelation of s(t) = d . grad_x (r . features)(x0 + t d) along the line (BN with
    the line points' statistics, held fixed), with ``constant``: True where s does not vary
    beyond float rounding (then autocorrelation is NaN) and ``rel_var`` = var(s) / mean(s^2)."""
    net = RandomReadout(model, seed)
    pts, d, t = image_line(x0, n_points, span, seed)
    s = directional_gradients(frozen_batch_stats(net, pts), pts, d, 0)
    a = autocorrelation(s, float(t[1] - t[0]), max_lag)
    ms = float(np.mean(s * s))
    a["rel_var"] = float(np.var(s)) / ms if ms > 0 else float("nan")
    a["constant"] = bool(ms == 0 or np.var(s) <= CONSTANT_REL_VAR * ms)
    return a


def variants_shattering(
    depth: int = 20,
    width: int = 8,
    image_size: int = 16,
    n_points: int = 128,
    span: float = 1.0,
    seeds=(0,),
    max_lag: int = 16,
    variants=None,
) -> pd.DataFrame:
    """Per variant and seed, at init, :func:`readout_shattering` through a Gaussian-noise
    image. Columns label, group, kind, seed, lag, distance, covariance, autocorrelation,
    rel_var, constant."""
    frames = []
    for v in variants or rescue_variants():
        for s in seeds:
            net = _net(v, depth, width, s)
            x0 = torch.randn(3, image_size, image_size, generator=torch.Generator().manual_seed(s))
            a = readout_shattering(net, x0, n_points, span, s, max_lag)
            for col, val in (("seed", s), ("kind", v["kind"]), ("group", v["group"]), ("label", v["label"])):
                a.insert(0, col, val)
            frames.append(a)
    return pd.concat(frames, ignore_index=True)
