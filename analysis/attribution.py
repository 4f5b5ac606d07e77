"""Why did the net say that? Attributions with captum, top-k predictions, two runs side by side.

- :func:`grad_cam`: captum's LayerGradCam on a stage (``layer1``..``layerN``, or any module
  name), upsampled to the input size;
- :func:`integrated_gradients` (zero baseline = the dataset mean image after normalization)
  and :func:`saliency` (|d logit / d x|), summed over channels;
- :func:`top_k`: the k most probable classes for one image;
- :func:`attribute`: one entry point by method name; :func:`compare`: the same image through
  several models.

All return numpy arrays (H, W) or DataFrames; the model's mode is restored and no parameter
keeps a gradient.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from .taps import eval_mode

METHODS = ("gradcam", "integrated_gradients", "saliency")


def _target(model, x1, target):
    if target is not None:
        return int(target)
    with torch.no_grad(), eval_mode(model):
        return int(model(x1[None]).argmax(1))


def _no_param_grads(model):
    for p in model.parameters():
        p.grad = None


def grad_cam(
    model: nn.Module, x1: torch.Tensor, target: int | None = None, layer: str = "layer3"
) -> np.ndarray:
    """Grad-CAM map (H, W) of normalized image ``x1`` (C,H,W) for ``target`` (default: the
    predicted class), ReLU'd, at input resolution."""
    from captum.attr import LayerAttribution, LayerGradCam

    module = dict(model.named_modules())[layer]
    t = _target(model, x1, target)
    with eval_mode(model):
        try:
            a = LayerGradCam(model, module).attribute(x1[None], target=t, relu_attributions=True)
            a = LayerAttribution.interpolate(a, tuple(x1.shape[-2:]), interpolate_mode="bilinear")
        finally:
            _no_param_grads(model)
    return a[0, 0].detach().float().cpu().numpy()


def integrated_gradients(
    model: nn.Module, x1: torch.Tensor, target: int | None = None, steps: int = 32
) -> np.ndarray:
    """Integrated Gradients from a zero baseline (the mean image), summed over channels."""
    from captum.attr import IntegratedGradients

    t = _target(model, x1, target)
    with eval_mode(model):
        try:
            a = IntegratedGradients(model).attribute(
                x1[None], baselines=torch.zeros_like(x1[None]), target=t, n_steps=steps
            )
        finally:
            _no_param_grads(model)
    return a[0].sum(0).detach().float().cpu().numpy()


def saliency(model: nn.Module, x1: torch.Tensor, target: int | None = None) -> np.ndarray:
    """Max over channels of |d logit_target / d x|."""
    from captum.attr import Saliency

    t = _target(model, x1, target)
    with eval_mode(model):
        try:
            a = Saliency(model).attribute(x1[None].clone().requires_grad_(True), target=t, abs=True)
        finally:
            _no_param_grads(model)
    return a[0].amax(0).detach().float().cpu().numpy()


def attribute(
    model: nn.Module, x1: torch.Tensor, method: str, target: int | None = None, layer: str = "layer3"
) -> np.ndarray:
    """``method`` in METHODS -> an (H, W) map."""
    if method == "gradcam":
        return grad_cam(model, x1, target, layer)
    if method == "integrated_gradients":
        return integrated_gradients(model, x1, target)
    if method == "saliency":
        return saliency(model, x1, target)
    raise ValueError(f"method={method!r} is not accepted; use one of {', '.join(METHODS)}")


@torch.no_grad()
def top_k(model: nn.Module, x1: torch.Tensor, k: int = 5, classes=None) -> pd.DataFrame:
    """Columns: rank, index, class, prob."""
    with eval_mode(model):
        p = torch.softmax(model(x1[None]).float(), 1)[0]
    k = min(k, len(p))
    v, i = p.topk(k)
    classes = list(classes) if classes is not None else [str(j) for j in range(len(p))]
    return pd.DataFrame(
        {"rank": range(k), "index": i.tolist(), "class": [classes[j] for j in i.tolist()], "prob": v.tolist()}
    )


def compare(
    models: dict,
    x1: torch.Tensor,
    method: str = "gradcam",
    target: int | None = None,
    layer: str = "layer3",
    k: int = 3,
    classes=None,
) -> dict:
    """The same image through several models: {label: {"map": (H,W), "top_k": DataFrame}}.
    ``target`` None explains each model's own prediction."""
    return {
        label: {"map": attribute(m, x1, method, target, layer), "top_k": top_k(m, x1, k, classes)}
        for label, m in models.items()
    }


def explain_runs(
    runs: dict,
    index: int,
    method: str = "gradcam",
    checkpoint: str = "last",
    layer: str = "layer3",
    k: int = 3,
    target: int | None = None,
) -> dict:
    """Test image ``index`` through several stored runs ({label: Run}), each normalized with
    its own dataset statistics: {label: {"map", "top_k", "image" (uint8 C,H,W), "label"}}."""
    from .loading import heldout_batch, load

    out = {}
    for label, run in runs.items():
        model, ds = load(run, checkpoint)
        x, y = heldout_batch(ds, 1, start=index)
        out[label] = {
            "map": attribute(model, x[0], method, target, layer),
            "top_k": top_k(model, x[0], k, ds.classes),
            "image": ds.x_test[index].numpy(),
            "label": int(y[0]),
        }
    return out
