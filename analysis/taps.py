"""Hook context managers over the models' named taps.

Every hook is registered inside a ``with`` block and removed in ``finally`` (as captum's
``_utils/gradient.py`` does), so an exception, a cancel or a Ctrl-C never leaves a handle on
the model. Hooks reduce tensors to 0-d statistics on the spot (fastai's ActivationStats
style); only :func:`capture_outputs` keeps tensors, for the rare callers that need a whole map
(feature maps, embeddings).

    with moments(model, names) as m:      # running n, sum, sum of squares per module
        model(x)
    m.std("layer1.0.tap1")

:func:`hook_count` tells how many hooks a model carries; tests use it to show none is left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch
from torch import nn

# eval_mode lives in resnet_core (the trainer uses it too); imported here for old callers
from resnet_core.inference import eval_mode  # noqa: F401


def named(model: nn.Module, names: Iterable[str]) -> list[tuple[str, nn.Module]]:
    """(name, module) pairs for qualified names; ``"stem"`` style aliases are not accepted,
    use the qualname (e.g. ``tap1`` for the stem's tap)."""
    mods = dict(model.named_modules())
    out = []
    for n in names:
        if n not in mods:
            raise KeyError(f"no module {n!r} in the model; e.g. {list(mods)[1:6]}")
        out.append((n, mods[n]))
    return out


@contextmanager
def forward_hooks(model: nn.Module, fns: dict[str, Callable]):
    """Register ``fn(name, module, inputs, output)`` as a forward hook on each named module;
    all are removed on exit, whatever happens inside."""
    handles = []
    try:
        for name, mod in named(model, fns):
            fn = fns[name]
            handles.append(mod.register_forward_hook(lambda m, i, o, _n=name, _f=fn: _f(_n, m, i, o)))
        yield handles
    finally:
        for h in handles:
            h.remove()


class Moments:
    """Per-module running count, sum and sum of squares (float64), so a std over many batches
    is exact, and a std over one batch is the same number the recorder gets."""

    def __init__(self):
        self.n: dict[str, float] = {}
        self.s: dict[str, torch.Tensor] = {}
        self.ss: dict[str, torch.Tensor] = {}

    def add(self, name: str, t: torch.Tensor) -> None:
        t = t.detach().float()  # float32 reductions, float64 accumulation across batches
        s, ss = t.sum().double(), torch.linalg.vector_norm(t).double().square()
        if name in self.s:
            self.n[name] += t.numel()
            self.s[name] = self.s[name] + s
            self.ss[name] = self.ss[name] + ss
        else:
            self.n[name], self.s[name], self.ss[name] = float(t.numel()), s, ss

    def names(self) -> list[str]:
        return list(self.n)

    def mean(self, name: str) -> float:
        return float(self.s[name]) / self.n[name]

    def std(self, name: str) -> float:
        """Population std (no Bessel correction) over every element: batch, channel, space."""
        n = self.n[name]
        m = float(self.s[name]) / n
        return max(0.0, float(self.ss[name]) / n - m * m) ** 0.5

    def as_rows(self) -> list[dict]:
        return [{"layer": n, "mean": self.mean(n), "std": self.std(n)} for n in self.n]


@contextmanager
def moments(model: nn.Module, names: Iterable[str]):
    """Accumulate :class:`Moments` of each named module's output over every forward pass
    inside the block."""
    acc = Moments()
    with forward_hooks(model, {n: (lambda n, m, i, o: acc.add(n, o)) for n in names}):
        yield acc


@contextmanager
def capture_outputs(model: nn.Module, names: Iterable[str], detach: bool = True):
    """Keep each named module's last output (detached by default). For feature maps and
    embeddings only: it holds whole tensors."""
    out: dict[str, torch.Tensor] = {}

    def keep(n, m, i, o):
        out[n] = o.detach() if detach else o

    with forward_hooks(model, {n: keep for n in names}):
        yield out


def hook_count(model: nn.Module) -> int:
    """How many module hooks the model carries (forward, forward-pre, backward, backward-pre)."""
    total = 0
    for m in model.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            total += len(getattr(m, attr, {}) or {})
    return total
