"""The training callback that records per-layer statistics into the run store.

``LayerStatsRecorder`` (named "analysis.recorders:LayerStatsRecorder" in
``TrainConfig.recorders``) writes two kinds of rows into layers.jsonl.

Probe rows, at the steps of :func:`default_schedule` (few: each costs a pass over the probe),
measured on a fixed probe set (the first ``min(probe_size, test set)`` test images; 1,000 by
default), the model in eval mode:

- ``type="response"``: the paper's Fig. 7 measure: std (and mean) of every conv's output after
  its norm layer (BN; none in the no-normalization variants), before the ReLU or the addition
  (the models' ``Tap("response")`` points, e.g. ``layer1.0.tap1``; the stem's is ``tap1``);
  population std over images, channels and space. Records written before the rename call
  these rows ``type="bn"``; ``Run.read_layers`` returns them as ``"response"``;
- ``type="block"``: ``f_std`` (std of F(x) at ``tap_f``), ``x_std`` (std of the block input),
  ``f_over_x`` = ||F(x)|| / ||x|| (Frobenius norms over the probe set; for a downsampling
  block x is the block's input, larger than F(x)), ``out_grad_norm`` (norm of the gradient of
  the probe set's mean cross-entropy with respect to the block output);
- ``type="act"``: for every ReLU: ``mean``, ``std``, ``dead_frac`` (fraction of units, i.e.
  channel x position, that are zero for every probe image).

Weight rows, at the steps of :func:`grad_schedule` (many: they only read what the training
step computed anyway, so Gradient flow gets dozens of columns even in a short run):

- ``type="weight"``: for every conv and linear layer: ``grad_norm`` of ``weight.grad`` from
  the training step itself (the loss of that step's batch, BN in train mode), ``weight_norm``,
  ``grad_to_weight``.

Every row carries ``images``: how many images its statistic was computed on (the probe size,
or the training batch for weight rows), and ``step``. A row labelled step s describes the
model after exactly s optimizer updates: the same weights and the same BN running statistics
as a checkpoint saved at step s. Probe rows for s < total are taken in ``on_step_start``,
before the training forward of step s+1 (which would move BN's running statistics), and at
the final step after its update; weight rows are the gradient computed at those weights, on
the batch of step s+1, so the final step has none.

At step 0 the model is its initialization: BN's running statistics are still mean 0 and
variance 1, so in eval mode "std after BN" there is the std of the raw conv output (gamma is
1, beta 0). The pages label it so; later records use running statistics that still carry
0.9^s of those initial values (PyTorch's BN momentum 0.1) until a few dozen steps in.

The recorder leaves training untouched: probe passes run in eval mode (no BN running-stat
update), draw no random numbers, and take the probe gradient with ``torch.autograd.grad`` with
respect to the block outputs only, so no ``.grad`` of a parameter is written; the previous
train/eval mode is restored in ``finally``. So a resumed run stays bit-identical. The probe
set goes through in chunks of the training batch size (no more memory than a training step);
every statistic is a sum over images, so chunking changes nothing but float rounding.

Schedule (:func:`default_schedule`): step 0, the powers of two, every 1/20 of the run and the
final step; when that many records would cost more than ``budget`` (4%) of training time (a
record costs about ``RECORD_COST_STEPS * probe_size / batch_size`` training steps), a
log-spaced grid of as many steps as the budget allows replaces it (always keeping 0 and the
final step). :func:`probe_plan` shrinks the probe below 1,000 images only where even two
records (0 and the end) would not fit in the budget (a `quick` run: about 300 images).
"""

from __future__ import annotations

import re
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from resnet_core.models import blocks_of, taps_of
from resnet_core.train import Callback

from .taps import eval_mode, forward_hooks

PROBE_IMAGES = 1000  # min(this, test set) probe images by default (BENCHMARKS.md section 4)
MIN_PROBE_IMAGES = 256  # probe_plan never goes below this (or the test set)
# a probe record of `batch_size` images costs about this many training steps (measured 0.8-1.1;
# BENCHMARKS.md section 4)
RECORD_COST_STEPS = 1.0
GRAD_COLUMNS = 64  # weight-gradient records spread evenly over a run (plus 0 and powers of two)


def default_schedule(
    total: int, batch_size: int = 128, probe_size: int = PROBE_IMAGES, budget: float = 0.04, every: int = 20
) -> list[int]:
    """Probe steps (0..total): dense early, sparser later, within ``budget`` of training."""
    total = int(total)
    if total <= 0:
        return [0]
    cand = {0, total}
    k = 1
    while k < total:
        cand.add(k)
        k *= 2
    cand |= {int(round(i * total / every)) for i in range(1, every + 1)}
    n_max = max(2, int(budget * total / record_cost(batch_size, probe_size)))
    if len(cand) > n_max:
        # log-spaced, starting no earlier than total / 2^(n-2): three records are 0, total/2
        # and total (not 0, 1, total), and a long budget still reaches down to step 1
        lo = max(1.0, total / 2 ** max(0, n_max - 2))
        grid = np.unique(np.round(np.geomspace(lo, total, max(1, n_max - 1))).astype(int))
        cand = {0, total} | {int(g) for g in grid}
        while len(cand) > n_max:  # rounding can leave one too many
            cand.discard(sorted(cand)[-2])
    return sorted(c for c in cand if 0 <= c <= total)


def record_cost(batch_size: int, probe_size: int) -> float:
    """One probe record's cost in training steps (same image size)."""
    return RECORD_COST_STEPS * probe_size / max(1, batch_size)


def probe_plan(
    total: int,
    batch_size: int,
    n_test: int,
    probe_size: int = PROBE_IMAGES,
    budget: float = 0.04,
    min_records: int = 2,
) -> int:
    """How many probe images to use: ``min(probe_size, n_test)``, unless then fewer than
    ``min_records`` records (step 0 and the end) fit in ``budget``; then as many as fit
    ``min_records``, but never under MIN_PROBE_IMAGES (tiny runs: there the budget yields).
    A `quick` run (234 steps of 64 images) gets about 300; `lesson` and `paper` 1,000."""
    n = min(int(probe_size), int(n_test))
    fit = budget * max(1, total) / min_records  # steps one record may cost
    if record_cost(batch_size, n) > fit:
        n = min(n, max(MIN_PROBE_IMAGES, int(fit * batch_size / RECORD_COST_STEPS)))
    return n


def grad_schedule(total: int, columns: int = GRAD_COLUMNS) -> list[int]:
    """Weight-gradient steps (0..total-1; step s = the gradient at the weights after s
    updates): 0, the powers of two and ``columns`` evenly spaced steps."""
    total = int(total)
    cand = {0} | {int(i * total / columns) for i in range(columns)}
    k = 1
    while k < total:
        cand.add(k)
        k *= 2
    return sorted(c for c in cand if 0 <= c < total)


def _param_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _relus(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ReLU)]


class _Sums:
    """Float64 running sums per (name, key), kept as device tensors (one .cpu() at the end);
    element counts as Python ints (no device copy per hook)."""

    def __init__(self):
        self.v: dict[tuple, torch.Tensor] = {}
        self.count: dict = {}

    def add(self, name, key, t):
        t = t.detach().double().reshape(())
        k = (name, key)
        self.v[k] = self.v[k] + t if k in self.v else t

    def moments(self, name, o):
        # plain float32 sum and squared norm per chunk, accumulated in float64: a float64 copy
        # of every map costs more than the probe pass itself (agrees with float64 to ~1e-6)
        o = o.detach().float()
        self.count[name] = self.count.get(name, 0) + o.numel()
        self.add(name, "s", o.sum())
        self.add(name, "ss", torch.linalg.vector_norm(o).square())


def _probe_pass(model, x, y, n_total, sums, fired):
    """One chunk through the model with hooks adding to ``sums``; the gradient of the probe
    set's mean loss (this chunk's share) with respect to each block output."""
    responses, blocks, relus = taps_of(model, "response"), blocks_of(model), _relus(model)
    outs: list[torch.Tensor] = []

    def on_block(n, m, i, o):
        sums.moments((n, "x"), i[0])
        outs.append(o)

    def on_f(n, m, i, o):
        sums.moments((n.rsplit(".", 1)[0], "f"), o)

    def on_act(n, m, i, o):
        sums.moments(n, o)
        f = o.detach().sum(0) > 0  # ReLU output >= 0: a unit fired iff its sum over images > 0
        fired[n] = fired[n] | f if n in fired else f

    fns = {n: (lambda n, m, i, o: sums.moments(n, o)) for n, _ in responses}
    fns.update({n: on_block for n, _ in blocks})
    fns.update({f"{n}.tap_f": on_f for n, _ in blocks})
    fns.update({n: on_act for n, _ in relus})
    try:
        with forward_hooks(model, fns):
            logits = model(x)
        if outs:
            # sum over this chunk / n_total: the chunks' gradients are the full probe's
            # mean-loss gradient (eval mode: an image's gradient depends on that image only)
            loss = F.cross_entropy(logits.float(), y, reduction="sum") / n_total
            grads = torch.autograd.grad(loss, outs, allow_unused=True)
            for (n, _), g in zip(blocks, grads):
                if g is not None:
                    sums.add(n, "g2", torch.linalg.vector_norm(g.float()).square())
    finally:
        outs.clear()


def layer_stats(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int = 0, chunk: int = 128
) -> list[dict]:
    """The probe rows ("response", "block", "act") described in the module docstring, for any
    model with taps, over all of ``x`` (normalized input on the model's device; labels ``y``),
    in chunks of ``chunk`` images. The model is in eval mode inside; its mode is restored."""
    n = len(x)
    sums, fired = _Sums(), {}
    with eval_mode(model), torch.enable_grad():
        for i in range(0, n, chunk):
            _probe_pass(model, x[i : i + chunk], y[i : i + chunk], n, sums, fired)
    for name, f in fired.items():
        sums.add(name, "dead", 1.0 - f.float().mean())
    keys = list(sums.v)
    flat = dict(zip(keys, torch.stack([sums.v[k] for k in keys]).cpu().tolist())) if keys else {}
    flat.update({(name, "n"): float(c) for name, c in sums.count.items()})
    return _rows(model, step, n, flat)


def _mstd(flat, name):
    """(mean, population std, root sum of squares) of a hooked output, from its sums."""
    cnt, s, ss = flat.get((name, "n")), flat.get((name, "s")), flat.get((name, "ss"))
    if cnt is None:
        return None, None, None
    m = s / cnt
    return m, max(0.0, ss / cnt - m * m) ** 0.5, ss**0.5


def _rows(model, step, n, flat) -> list[dict]:
    rows = []
    for j, (name, _) in enumerate(taps_of(model, "response")):
        m, sd, _ = _mstd(flat, name)
        rows.append(
            {"step": step, "layer": name, "type": "response", "order": j, "std": sd, "mean": m, "images": n}
        )
    for j, (name, _) in enumerate(blocks_of(model)):
        _, f_std, f_norm = _mstd(flat, (name, "f"))
        _, x_std, x_norm = _mstd(flat, (name, "x"))
        g2 = flat.get((name, "g2"))
        rows.append(
            {
                "step": step,
                "layer": name,
                "type": "block",
                "order": j,
                "f_std": f_std,
                "x_std": x_std,
                "f_over_x": f_norm / x_norm if f_norm is not None and x_norm else None,
                "out_grad_norm": g2**0.5 if g2 is not None else 0.0,
                "images": n,
            }
        )
    for j, (name, _) in enumerate(_relus(model)):
        m, sd, _ = _mstd(flat, name)
        rows.append(
            {
                "step": step,
                "layer": name,
                "type": "act",
                "order": j,
                "mean": m,
                "std": sd,
                "dead_frac": flat.get((name, "dead")),
                "images": n,
            }
        )
    return rows


def weight_rows(model: nn.Module, step: int, images: int | None = None) -> list[dict]:
    """``type="weight"`` rows: each conv/linear layer's ``weight.grad`` norm as it is (the
    training step's own gradient; None where there is none), weight norm and their ratio."""
    layers = _param_layers(model)
    grads = [m.weight.grad for _, m in layers]
    vals = [torch.linalg.vector_norm(m.weight.detach().float()) for _, m in layers]
    vals += [torch.linalg.vector_norm(g.detach().float()) for g in grads if g is not None]
    flat = iter(torch.stack(vals).double().cpu().tolist() if vals else [])
    w_norms = [next(flat) for _ in layers]
    rows = []
    for j, ((name, _), w, g) in enumerate(zip(layers, w_norms, grads)):
        g = next(flat) if g is not None else None
        rows.append(
            {
                "step": step,
                "layer": name,
                "type": "weight",
                "order": j,
                "grad_norm": g,
                "weight_norm": w,
                "grad_to_weight": g / w if g is not None and w else None,
                "images": images,
            }
        )
    return rows


class LayerStatsRecorder(Callback):
    """Records probe rows (:func:`layer_stats`) and weight rows (:func:`weight_rows`) into
    the run's layers.jsonl.

    ``steps``: explicit probe steps (default :func:`default_schedule`); ``grad_steps``:
    explicit weight-gradient steps (default :func:`grad_schedule`; when only ``steps`` is
    given, the same steps); ``probe_size``: at most this many test images form the probe set
    (see :func:`probe_plan`; an explicit ``steps`` list uses min(probe_size, test set));
    ``budget``: the share of training time the default probe schedule may spend.
    ``seconds``, ``records`` (probe records), ``grad_records`` and ``times`` tell what
    recording cost; ``probe_images`` how many images the probe set holds.
    """

    # its hooks live only on its own probe passes through ctx.model, the eager module, so a
    # compiled training pass loses nothing (measured: no recompiles across records)
    needs_hooks = False

    def __init__(
        self,
        steps: list[int] | None = None,
        probe_size: int = PROBE_IMAGES,
        budget: float = 0.04,
        grad_steps: list[int] | None = None,
    ):
        self.steps_arg, self.grad_steps_arg = steps, grad_steps
        self.probe_size = probe_size
        self.budget = budget
        self.steps: set[int] = set()
        self.grad_steps: set[int] = set()
        self.probe_images = 0
        self.seconds = 0.0
        self.records = 0
        self.grad_records = 0
        self.times: list[tuple[int, float]] = []  # (step, seconds) of each probe record
        self._x = self._y = None
        self._failed = False

    def on_train_start(self, ctx) -> None:
        total, batch = ctx.total_steps, ctx.config.batch_size
        n_test = len(ctx.data.y_test)
        if self.steps_arg is not None:
            n = min(self.probe_size, n_test)
            self.steps = {int(s) for s in self.steps_arg}
        else:
            n = probe_plan(total, batch, n_test, self.probe_size, self.budget)
            self.steps = set(default_schedule(total, batch, n, self.budget))
        if self.grad_steps_arg is not None:
            self.grad_steps = {int(s) for s in self.grad_steps_arg}
        elif self.steps_arg is not None:
            self.grad_steps = set(self.steps)
        else:
            self.grad_steps = set(grad_schedule(total))
        if n == 0:
            ctx.report_problem(
                "LayerStatsRecorder: the dataset has no test images to probe "
                "with; only weight-gradient rows are recorded"
            )
            return
        self.probe_images = n
        self._x = ctx.prepare(ctx.data.x_test[:n])
        self._y = ctx.data.y_test[:n].to(ctx.device)

    def _guard(self, ctx, step, fn) -> float | None:
        """Run ``fn`` and log its rows; returns the seconds it took. A failure stops the
        recorder (a recorder must never cost the run) and is reported in the run's status,
        and so on its pages; it returns None."""
        if self._failed:
            return None
        t0 = time.perf_counter()
        try:
            ctx.log_layers(fn())
        except Exception as e:  # noqa: BLE001 - reported in the status, not swallowed
            self._failed = True
            ctx.report_problem(
                f"LayerStatsRecorder stopped recording at step {step}: {type(e).__name__}: {e}"
            )
            return None
        dt = time.perf_counter() - t0
        self.seconds += dt
        return dt

    def _probe(self, ctx, step: int) -> None:
        if self._x is None or step not in self.steps:
            return
        dt = self._guard(
            ctx, step, lambda: layer_stats(ctx.model, self._x, self._y, step, chunk=ctx.config.batch_size)
        )
        if dt is not None:
            self.times.append((step, dt))
            self.records += 1

    def on_step_start(self, ctx) -> None:
        # before the training forward: weights and BN running statistics are exactly those
        # of a checkpoint saved at ctx.step
        self._probe(ctx, ctx.step)

    def on_after_backward(self, ctx) -> None:
        if (
            ctx.step in self.grad_steps
            and self._guard(ctx, ctx.step, lambda: weight_rows(ctx.model, ctx.step, ctx.config.batch_size))
            is not None
        ):
            self.grad_records += 1

    def on_step_end(self, ctx) -> None:
        if ctx.step == ctx.total_steps:  # no step after it: the final state is here
            self._probe(ctx, ctx.step)


def read_layer_stats(run, type: str | None = None):
    """The run's layers.jsonl as a DataFrame (deduplicated by step and layer), optionally
    only rows of one ``type`` ("response", "block", "weight", "act"), sorted by step and order."""
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


MAIN_CONV = re.compile(r"(^|\.)conv\d+$")  # conv1, layer2.3.conv2: not downsample.0, not fc


def first_last_ratio(names, grad_norms) -> tuple[str, str, float] | None:
    """The project's one "first/last gradient-norm ratio": the first main-path conv's weight
    gradient norm over the last main-path conv's (in forward order; projection shortcuts
    and the final fc layer are left out). ``names`` and ``grad_norms`` in forward order.
    Returns (first name, last name, ratio), or None with fewer than two main convs."""
    main = [
        (n, g) for n, g in zip(names, grad_norms) if MAIN_CONV.search(str(n)) and g is not None and g == g
    ]
    if len(main) < 2:
        return None
    (n0, g0), (n1, g1) = main[0], main[-1]
    return n0, n1, (g0 / g1 if g1 else float("nan"))


def grad_ratio_over_training(run):
    """Per recorded step: :func:`first_last_ratio` of the training step's own weight
    gradients (the quantity of the signal-propagation study, measured during training)."""
    import pandas as pd

    df = read_layer_stats(run, "weight")
    if df.empty or "grad_norm" not in df:
        return pd.DataFrame(columns=["step", "first", "last", "ratio"])
    out = []
    for step, g in df.dropna(subset=["grad_norm"]).groupby("step"):
        g = g.sort_values("order")
        r = first_last_ratio(g["layer"], g["grad_norm"])
        if r is not None:
            first = float(g.loc[g["layer"] == r[0], "grad_norm"].iloc[0])
            last = float(g.loc[g["layer"] == r[1], "grad_norm"].iloc[0])
            out.append({"step": step, "first": first, "last": last, "ratio": r[2]})
    return pd.DataFrame(out, columns=["step", "first", "last", "ratio"])
