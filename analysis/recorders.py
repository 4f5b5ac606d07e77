"""The training callback that records per-layer statistics into the run store.

``LayerStatsRecorder`` (named "analysis.recorders:LayerStatsRecorder" in
``TrainConfig.recorders``) measures, at the steps of :func:`default_schedule`, on a fixed probe
batch (the first ``probe_size`` test images, the model in eval mode):

- ``type="bn"``: the paper's Fig. 7 measure: std (and mean) of every conv's output after BN,
  before the ReLU or the addition (the models' ``Tap("bn")`` points, e.g. ``layer1.0.tap1``;
  the stem's is ``tap1``); population std over batch, channels and space;
- ``type="block"``: ``f_std`` (std of F(x) at ``tap_f``), ``x_std`` (std of the block input),
  ``f_over_x`` = ||F(x)|| / ||x|| (Frobenius norms over the probe batch; for a downsampling
  block x is the block's input, larger than F(x)), ``out_grad_norm`` (norm of the gradient of
  the probe batch's mean cross-entropy with respect to the block output);
- ``type="weight"``: for every conv and linear layer: ``grad_norm`` of ``weight.grad`` from
  the training step itself, ``weight_norm``, ``grad_to_weight``;
- ``type="act"``: for every ReLU: ``mean``, ``std``, ``dead_frac`` (fraction of units, i.e.
  channel x position, that are zero for every probe image).

Row ``step`` = number of optimizer steps completed: a step-s row describes the weights after s
updates and the gradient computed at them (the (s+1)-th training batch). The final step
(``total``) has no training gradient after it, so its weight rows carry only ``weight_norm``.

The recorder leaves training untouched: probe passes run in eval mode (no BN running-stat
update), draw no random numbers, and take the probe gradient with ``torch.autograd.grad`` with
respect to the block outputs only, so no ``.grad`` of a parameter is written; the previous
train/eval mode is restored in ``finally``. So a resumed run stays bit-identical.

Schedule (:func:`default_schedule`): step 0, the powers of two, every 1/20 of the run and the
final step; when that many records would cost more than ``budget`` (4%) of training time
(a record costs about ``1.5 * probe_size / batch_size`` training steps), a log-spaced grid of
as many steps as the budget allows replaces it (always keeping 0 and the final step).
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from resnet_core.models import blocks_of, taps_of
from resnet_core.train import Callback

from .taps import eval_mode, forward_hooks

RECORD_COST_STEPS = 1.5  # one record ~ this many training steps at equal batch size (measured 0.85-1.0; margin)


def default_schedule(total: int, batch_size: int = 128, probe_size: int = 128,
                     budget: float = 0.04, every: int = 20) -> list[int]:
    """Steps (0..total) at which to record: dense early, sparser later, within ``budget``."""
    total = int(total)
    if total <= 0:
        return [0]
    cand = {0, total}
    k = 1
    while k < total:
        cand.add(k)
        k *= 2
    cand |= {int(round(i * total / every)) for i in range(1, every + 1)}
    cost = RECORD_COST_STEPS * probe_size / max(1, batch_size)
    n_max = max(2, int(budget * total / cost))
    if len(cand) > n_max:
        grid = np.unique(np.round(np.geomspace(1, total, max(1, n_max - 1))).astype(int))
        cand = {0, total} | {int(g) for g in grid}
        while len(cand) > n_max:  # rounding can leave one too many
            cand.discard(sorted(cand)[-2])
    return sorted(c for c in cand if 0 <= c <= total)


def _param_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _relus(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ReLU)]


def layer_stats(model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int = 0,
                with_weight_grads: bool = True) -> list[dict]:
    """One probe pass: the wide rows described in the module docstring, for any model with
    taps. ``x`` is the normalized input batch on the model's device, ``y`` its labels.
    Weight ``grad_norm`` is read from ``p.grad`` as it is (None where there is none)."""
    bn = taps_of(model, "bn")
    blocks = blocks_of(model)
    relus = _relus(model)
    vals: list[torch.Tensor] = []  # every statistic as a 0-d tensor; one .cpu() at the end
    slots: dict[tuple, int] = {}

    def put(key, t):
        slots[key] = len(vals)
        vals.append(t.detach().double().reshape(()))

    # Plain float32 sum and norm, combined in float64: a float64 copy of every map, or
    # var_mean, costs more than the probe pass itself. Agrees with a float64 computation to
    # ~1e-6 relative for these signals (|mean| within a few std).
    def mstd(o):
        o = o.detach().float()
        n = o.numel()
        m = o.sum().double() / n
        sq = torch.linalg.vector_norm(o).double().square() / n
        return m, (sq - m * m).clamp_min(0).sqrt()

    def norm(o):
        return torch.linalg.vector_norm(o.detach().float())

    outs: list[torch.Tensor] = []

    def on_bn(n, m, i, o):
        mean, std = mstd(o)
        put((n, "mean"), mean)
        put((n, "std"), std)

    def on_block(n, m, i, o):
        x_in = i[0]
        _, std = mstd(x_in)
        put((n, "x_std"), std)
        put((n, "x_norm"), norm(x_in))
        outs.append(o)

    def on_f(n, m, i, o):
        _, std = mstd(o)
        b = n.rsplit(".", 1)[0]
        put((b, "f_std"), std)
        put((b, "f_norm"), norm(o))

    def on_act(n, m, i, o):
        mean, std = mstd(o)
        put((n, "mean"), mean)
        put((n, "std"), std)
        fired = o.detach().sum(0) > 0  # ReLU output >= 0: a unit fired iff its sum over images > 0
        put((n, "dead_frac"), 1.0 - fired.float().mean())

    fns = {n: on_bn for n, _ in bn}
    fns.update({n: on_block for n, _ in blocks})
    fns.update({f"{n}.tap_f": on_f for n, _ in blocks})
    fns.update({n: on_act for n, _ in relus})
    try:
        with eval_mode(model), torch.enable_grad(), forward_hooks(model, fns):
            logits = model(x)
            if outs:
                loss = F.cross_entropy(logits.float(), y)
                grads = torch.autograd.grad(loss, outs, allow_unused=True)
                for (n, _), g in zip(blocks, grads):
                    put((n, "out_grad_norm"), norm(g) if g is not None
                        else torch.zeros((), dtype=torch.float64, device=x.device))
    finally:
        outs.clear()
    weights = _param_layers(model)
    for n, m in weights:
        w = m.weight
        put((n, "weight_norm"), norm(w))
        if with_weight_grads and w.grad is not None:
            put((n, "grad_norm"), norm(w.grad))
    flat = torch.stack(vals).cpu().tolist() if vals else []

    def get(n, k):
        i = slots.get((n, k))
        return None if i is None else flat[i]

    rows = []
    for j, (n, _) in enumerate(bn):
        rows.append({"step": step, "layer": n, "type": "bn", "order": j,
                     "std": get(n, "std"), "mean": get(n, "mean")})
    for j, (n, _) in enumerate(blocks):
        fn, xn = get(n, "f_norm"), get(n, "x_norm")
        rows.append({"step": step, "layer": n, "type": "block", "order": j,
                     "f_std": get(n, "f_std"), "x_std": get(n, "x_std"),
                     "f_over_x": fn / xn if fn is not None and xn else None,
                     "out_grad_norm": get(n, "out_grad_norm")})
    for j, (n, _) in enumerate(weights):
        g, w = get(n, "grad_norm"), get(n, "weight_norm")
        rows.append({"step": step, "layer": n, "type": "weight", "order": j, "grad_norm": g,
                     "weight_norm": w, "grad_to_weight": g / w if g is not None and w else None})
    for j, (n, _) in enumerate(relus):
        rows.append({"step": step, "layer": n, "type": "act", "order": j,
                     "mean": get(n, "mean"), "std": get(n, "std"),
                     "dead_frac": get(n, "dead_frac")})
    return rows


class LayerStatsRecorder(Callback):
    """Records :func:`layer_stats` rows into the run's layers.jsonl at scheduled steps.

    ``steps``: explicit steps to record (default :func:`default_schedule`); ``probe_size``:
    how many test images form the probe batch; ``budget``: the share of training time the
    default schedule may spend. ``seconds``, ``records`` and ``times`` tell what recording
    cost.
    """

    # its hooks live only on its own probe passes through ctx.model, the eager module, so a
    # compiled training pass loses nothing (measured: no recompiles across records)
    needs_hooks = False

    def __init__(self, steps: list[int] | None = None, probe_size: int = 128,
                 budget: float = 0.04):
        self.steps_arg = steps
        self.probe_size = probe_size
        self.budget = budget
        self.steps: set[int] = set()
        self.seconds = 0.0
        self.records = 0
        self.times: list[tuple[int, float]] = []  # (step, seconds) of each record
        self._x = self._y = None
        self._failed = False

    def on_train_start(self, ctx) -> None:
        total = ctx.total_steps
        if self.steps_arg is not None:
            self.steps = {int(s) for s in self.steps_arg}
        else:
            self.steps = set(default_schedule(total, ctx.config.batch_size, self.probe_size,
                                              self.budget))
        n = min(self.probe_size, len(ctx.data.y_test))
        if n == 0:
            warnings.warn("LayerStatsRecorder: the dataset has no test images to probe with")
            return
        self._x = ctx.prepare(ctx.data.x_test[:n])
        self._y = ctx.data.y_test[:n].to(ctx.device)

    def _record(self, ctx, step: int, with_grads: bool) -> None:
        if self._failed or self._x is None:
            return
        t0 = time.perf_counter()
        try:
            rows = layer_stats(ctx.model, self._x, self._y, step, with_weight_grads=with_grads)
        except Exception as e:  # a recorder must never cost the run
            self._failed = True
            warnings.warn(f"LayerStatsRecorder stopped recording at step {step}: "
                          f"{type(e).__name__}: {e}")
            return
        ctx.log_layers(rows)
        dt = time.perf_counter() - t0
        self.times.append((step, dt))
        self.seconds += dt
        self.records += 1

    def on_after_backward(self, ctx) -> None:
        if ctx.step in self.steps and ctx.step < ctx.total_steps:
            self._record(ctx, ctx.step, with_grads=True)

    def on_step_end(self, ctx) -> None:
        if ctx.step == ctx.total_steps and ctx.step in self.steps:
            self._record(ctx, ctx.step, with_grads=False)


def read_layer_stats(run, type: str | None = None):
    """The run's layers.jsonl as a DataFrame (deduplicated by step and layer), optionally
    only rows of one ``type`` ("bn", "block", "weight", "act"), sorted by step and order."""
    import pandas as pd

    df = pd.DataFrame(run.read_layers())
    if df.empty:
        return df
    if type is not None:
        df = df[df["type"] == type].dropna(axis=1, how="all")
    return df.sort_values(["step", "type", "order"]).reset_index(drop=True)


def pivot_layer_stats(run, type: str, value: str):
    """Step x layer table of one statistic (columns in forward order), e.g.
    ``pivot_layer_stats(run, "block", "f_over_x")``: whether residual functions stay small."""
    df = read_layer_stats(run, type)
    if df.empty or value not in df:
        import pandas as pd

        return pd.DataFrame()
    order = df.drop_duplicates("layer").sort_values("order")["layer"].tolist()
    wide = df.pivot_table(index="step", columns="layer", values=value, aggfunc="last")
    return wide.reindex(columns=[c for c in order if c in wide.columns])


def grad_ratio_over_training(run):
    """Per recorded step: the first conv's weight-gradient norm over the last conv's (the
    quantity of the signal-propagation study, measured during training)."""
    import pandas as pd

    df = read_layer_stats(run, "weight")
    if df.empty:
        return pd.DataFrame(columns=["step", "first", "last", "ratio"])
    convs = df[df["layer"] != "fc"].dropna(subset=["grad_norm"])
    out = []
    for step, g in convs.groupby("step"):
        g = g.sort_values("order")
        # the last conv of the main path (a projection shortcut is not the last layer)
        main = g[~g["layer"].str.contains("downsample")]
        first, last = main["grad_norm"].iloc[0], main["grad_norm"].iloc[-1]
        out.append({"step": step, "first": first, "last": last,
                    "ratio": first / last if last else float("nan")})
    return pd.DataFrame(out)
