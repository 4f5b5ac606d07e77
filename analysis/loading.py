"""Load a stored run's model and its held-out data, the same way for every analysis.

    model, ds = load(run, "best")
    x, y = heldout_batch(ds, n=1000)      # normalized test images on the CPU, and labels

Datasets are kept in memory per process (loading CIFAR from a .npz takes seconds), keyed by
the arguments that define them.
"""

from __future__ import annotations

import functools

import torch

from resnet_core.data import Dataset, load_dataset, normalize
from resnet_core.inference import batched_logits
from resnet_core.train import load_model


@functools.lru_cache(maxsize=4)
def _dataset(name, data_root, subset, image_size, val_split, seed) -> Dataset:
    return load_dataset(name, data_root, False, subset, image_size, val_split, seed)


def dataset_of(run) -> Dataset:
    """The run's dataset (never downloads), as the trainer loaded it."""
    cfg = run.read_config()
    return _dataset(cfg.dataset, cfg.data_root, cfg.subset, cfg.image_size, cfg.val_split, cfg.seed)


def load(run, checkpoint: str = "last", device="cpu"):
    """(model in eval mode, dataset) for a run's checkpoint ("last", "best", "step-NNNNNN")."""
    return load_model(run, checkpoint, device), dataset_of(run)


def heldout_batch(ds: Dataset, n: int | None = None, start: int = 0, device="cpu"):
    """The first ``n`` test images (all when None), normalized, and their labels."""
    end = len(ds.y_test) if n is None else min(len(ds.y_test), start + n)
    x = normalize(ds.x_test[start:end].to(device), ds.mean.to(device), ds.std.to(device))
    return x, ds.y_test[start:end].to(device)


def checkpoint_identity(run, checkpoint: str = "last") -> dict:
    """What identifies a checkpoint's content for caching: name, size and mtime (ns)."""
    p = run.checkpoint_path(checkpoint)
    st = p.stat()
    return {"checkpoint": checkpoint, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


@torch.no_grad()
def predict(model, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Logits for normalized ``x`` in eval mode (the model's mode is restored)."""
    return torch.cat(batched_logits(model, x, batch))
