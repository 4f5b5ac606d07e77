"""Penultimate-layer embeddings of test images, reduced to 2-D by PCA, UMAP or t-SNE.

- :func:`penultimate`: the pooled features that feed the final linear layer, (N, F);
- :func:`reduce`: (N, F) -> (N, 2) by ``"pca"`` (instant), ``"umap"`` (umap-learn; ~12 s
  cold import and a numba JIT on first use) or ``"tsne"`` (scikit-learn);
- :func:`embed_checkpoint`: both for the first ``n`` test images of a stored run.

The slow methods are meant to run in the background with a disk cache: see
:mod:`analysis.jobs` (``get_or_start(run, "umap")``), which shows PCA at once meanwhile.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from .loading import heldout_batch, load, predict
from .taps import eval_mode

METHODS = ("pca", "umap", "tsne")


@torch.no_grad()
def penultimate(model: nn.Module, x: torch.Tensor, batch: int = 500) -> np.ndarray:
    """Pooled last-stage features (the input of ``fc``) for normalized ``x``."""
    out = []
    with eval_mode(model):
        for i in range(0, len(x), batch):
            f = model.forward_head(model.forward_features(x[i : i + batch]), pre_logits=True)
            out.append(f.float().cpu())
    return torch.cat(out).numpy()


def reduce(
    features: np.ndarray,
    method: str = "pca",
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    perplexity: float = 30.0,
) -> np.ndarray:
    """(N, F) -> (N, 2) float32. Deterministic for a given ``seed``."""
    x = np.asarray(features, dtype=np.float32)
    n = len(x)
    if n < 3:
        raise ValueError(f"need at least 3 points to embed, got {n}")
    if method == "pca":
        from sklearn.decomposition import PCA

        k = min(2, x.shape[1], n)
        y = PCA(n_components=k, random_state=seed).fit_transform(x)
        if k < 2:
            y = np.concatenate([y, np.zeros((n, 2 - k), y.dtype)], 1)
    elif method == "umap":
        import umap  # slow import: only here

        y = umap.UMAP(
            n_components=2,
            n_neighbors=min(n_neighbors, n - 1),
            min_dist=min_dist,
            random_state=seed,
            n_jobs=1,
        ).fit_transform(x)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        y = TSNE(
            n_components=2, perplexity=min(perplexity, (n - 1) / 3), init="pca", random_state=seed
        ).fit_transform(x)
    else:
        raise ValueError(f"method={method!r} is not accepted; use one of {', '.join(METHODS)}")
    return np.asarray(y, dtype=np.float32)


def embed_checkpoint(
    run, checkpoint: str = "last", method: str = "pca", n: int = 2000, seed: int = 0, **params
) -> dict:
    """The first ``n`` test images of ``run``: coords (n, 2), labels, pred (the model's
    predictions), index (test-set indices), classes, method, seconds (reduction time)."""
    model, ds = load(run, checkpoint)
    x, y = heldout_batch(ds, n)
    feats = penultimate(model, x)
    pred = predict(model, x).argmax(1).numpy()
    t0 = time.perf_counter()
    coords = reduce(feats, method, seed, **params)
    return {
        "coords": coords,
        "labels": y.numpy(),
        "pred": pred,
        "index": np.arange(len(y)),
        "classes": list(ds.classes),
        "method": method,
        "seconds": time.perf_counter() - t0,
    }
