"""Loss landscape slices (Li et al. 2018) around a checkpoint, filter-normalized.

A random direction d gets, filter by filter (each output channel of a conv, each row of the
linear layer), the norm of the same filter of the weights; BN parameters and biases get no
direction (d = 0), as Li et al. do. The loss is then measured at theta + a*d1 (1D) or
theta + a*d1 + b*d2 (2D), on a fixed probe subset, in eval mode (BN's running statistics).
Li et al. plot the training loss; the caller passes the images (``analysis.jobs`` uses the
first ``n`` training images, un-augmented, or test images on request).

CPU-sized defaults: 21 points (1D) or a 21 x 21 grid (2D) over [-1, 1].
:func:`roughness` counts the local minima a slice has besides its global one.
``progress(fraction, message)`` is called after each point; raise
:class:`analysis.progress.Cancelled` from it to stop. The model itself is never changed: the
slices are taken on a copy.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from torch import nn

from resnet_core.inference import loss_and_error

from ..progress import report


def filter_normalized_direction(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random direction per parameter name, filter-normalized; zero for 1-d parameters."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n, p in model.named_parameters():
        if p.ndim <= 1:
            out[n] = torch.zeros_like(p)
            continue
        d = torch.randn(p.shape, generator=g, dtype=torch.float32).to(p)
        dims = tuple(range(1, p.ndim))
        vn = torch.linalg.vector_norm
        d = d * (vn(p.detach(), dim=dims, keepdim=True) / vn(d, dim=dims, keepdim=True).clamp_min(1e-12))
        out[n] = d
    return out


def _slice(model, x, y, coords, directions, progress):
    m = copy.deepcopy(model).eval()
    params = dict(m.named_parameters())
    theta = {n: p.detach().clone() for n, p in params.items()}
    rows = []
    for i, c in enumerate(coords):
        with torch.no_grad():
            for n, p in params.items():
                v = theta[n]
                for a, d in zip(c, directions):
                    v = v + a * d[n]
                p.copy_(v)
        r = loss_and_error(m, x, y, batch=512)
        rows.append((*c, r["loss"], r["error"]))
        report(progress, i + 1, len(coords), f"point {i + 1} of {len(coords)}")
    return rows


def landscape_1d(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int = 21,
    span: float = 1.0,
    seed: int = 0,
    progress=None,
) -> pd.DataFrame:
    """Loss and error along one filter-normalized direction: columns alpha, loss, error."""
    d = filter_normalized_direction(model, seed)
    alphas = np.linspace(-span, span, steps)
    rows = _slice(model, x, y, [(float(a),) for a in alphas], [d], progress)
    return pd.DataFrame(rows, columns=["alpha", "loss", "error"])


def landscape_2d(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int = 21,
    span: float = 1.0,
    seed: int = 0,
    progress=None,
) -> pd.DataFrame:
    """Loss and error on a steps x steps grid of two filter-normalized directions: columns
    alpha, beta, loss, error (long format; pivot for a contour plot)."""
    d1 = filter_normalized_direction(model, seed)
    d2 = filter_normalized_direction(model, seed + 1)
    a = np.linspace(-span, span, steps)
    coords = [(float(i), float(j)) for i in a for j in a]
    rows = _slice(model, x, y, coords, [d1, d2], progress)
    return pd.DataFrame(rows, columns=["alpha", "beta", "loss", "error"])


def local_minima(df: pd.DataFrame) -> tuple[int, int]:
    """(number of local minima other than the global minimum, number of grid points) of a
    1-D (alpha, loss) or 2-D (alpha, beta, loss) slice. A point is a local minimum when its
    loss is strictly below that of each of its grid neighbours (2 in 1-D, 4 in 2-D; points on
    the edge have fewer). The global minimum (the lowest loss; the first, if tied) is not
    counted, wherever it is, edge included."""
    if "beta" in df.columns:
        z = df.pivot(index="alpha", columns="beta", values="loss").to_numpy(dtype=float)
    else:
        z = df.sort_values("alpha")["loss"].to_numpy(dtype=float)[:, None]
    pad = np.pad(z, 1, constant_values=np.inf)  # edges: a missing neighbour never beats a point
    c = pad[1:-1, 1:-1]
    is_min = (c < pad[:-2, 1:-1]) & (c < pad[2:, 1:-1]) & (c < pad[1:-1, :-2]) & (c < pad[1:-1, 2:])
    is_min.flat[int(np.argmin(z))] = False
    return int(is_min.sum()), int(z.size)


def roughness(df: pd.DataFrame) -> float:
    """How far a slice is from a single clean basin: the share of its grid points that are
    local minima other than the global one (see :func:`local_minima`); 0 for one basin."""
    extra, n = local_minima(df)
    return extra / n
