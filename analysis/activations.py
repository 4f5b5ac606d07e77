"""Layer responses on a checkpoint: the paper's Fig. 7, activation statistics, feature maps.

- :func:`layer_responses`: the std of every conv's output after its norm layer (if any),
  before the ReLU or the addition (the models' "response" taps), over all of ``x`` (exact
  over batches), in layer order;
- :func:`fig7`: that on a stored run's full test set, with each layer's rank when sorted by
  magnitude (the paper's bottom panel);
- :func:`activation_stats`: per ReLU, mean, std and the fraction of units never firing;
- :func:`feature_maps`: any layer's output for one image, as a (C, H, W) array.

Statistics use eval mode (BN's running statistics), the definition the recorder uses too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from resnet_core.models import taps_of

from .loading import heldout_batch, load
from .taps import capture_outputs, eval_mode, forward_hooks, moments


@torch.no_grad()
def layer_responses(model: nn.Module, x: torch.Tensor, batch: int = 500) -> pd.DataFrame:
    """Columns: order, layer, stage, mean, std (population std over every element)."""
    names = [n for n, _ in taps_of(model, "response")]
    with eval_mode(model), moments(model, names) as m:
        for i in range(0, len(x), batch):
            model(x[i : i + batch])
    rows = [
        {
            "order": j,
            "layer": n,
            "stage": n.split(".")[0] if "." in n else "stem",
            "mean": m.mean(n),
            "std": m.std(n),
        }
        for j, n in enumerate(names)
    ]
    return pd.DataFrame(rows)


def fig7(run, checkpoint: str = "last", n: int | None = None) -> pd.DataFrame:
    """Fig. 7 on a run's test set (the first ``n`` images; all when None): layer order plus
    ``rank`` (0 = largest std) for the sorted view."""
    model, ds = load(run, checkpoint)
    x, _ = heldout_batch(ds, n)
    df = layer_responses(model, x)
    df["rank"] = df["std"].rank(ascending=False, method="first").astype(int) - 1
    return df


@torch.no_grad()
def activation_stats(model: nn.Module, x: torch.Tensor, batch: int = 500) -> pd.DataFrame:
    """Per ReLU (forward order): mean, std, dead_frac (units zero on every image of ``x``)."""
    relus = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    fired: dict[str, torch.Tensor] = {}

    def on(n, m, i, o):
        f = (o > 0).flatten(1).any(0)
        fired[n] = fired[n] | f if n in fired else f

    with eval_mode(model), moments(model, relus) as mo, forward_hooks(model, {n: on for n in relus}):
        for i in range(0, len(x), batch):
            model(x[i : i + batch])
    return pd.DataFrame(
        [
            {
                "order": j,
                "layer": n,
                "mean": mo.mean(n),
                "std": mo.std(n),
                "dead_frac": 1.0 - float(fired[n].double().mean()),
            }
            for j, n in enumerate(relus)
        ]
    )


def layer_names(model: nn.Module, kinds=("response", "out")) -> list[str]:
    """Layers worth showing as feature maps: the taps of the given kinds, in forward order."""
    return [n for n, t in taps_of(model) if t.kind in kinds]


@torch.no_grad()
def feature_maps(model: nn.Module, x1: torch.Tensor, layer: str) -> np.ndarray:
    """The output of ``layer`` for one normalized image ``x1`` (C,H,W) -> (C', H', W')."""
    with eval_mode(model), capture_outputs(model, [layer]) as out:
        model(x1[None])
    return out[layer][0].float().cpu().numpy()
