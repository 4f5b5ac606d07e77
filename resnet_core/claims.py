"""What a set of runs shows of the paper's three orderings, judged per seed from its records.

A reference set may *claim* some of them in its set.json (``"claims": [...]``, written by
``reference export --claims``); ``reference check`` then recomputes each claim from the set's
own records and reports every seed where it does not hold, so a bundled set cannot say more
than its runs show. The three orderings (He et al. 2016, Fig. 6 and 7; issue 17's a, b, c),
each between the shallowest and the deepest depth that both families have:

- ``deeper-plain-worse``: the deeper plain net ends at least ``PLAIN_GAP`` (10 points) above
  the shallower in final training error (the last eval-mode ``train_eval`` row);
- ``deeper-residual-better``: the deeper residual net ends below the shallower by more than
  twice the standard error of one such estimate, sqrt(p (1 - p) / n) at p = their mean error
  and n = the images scored (about 0.63 points on 5,000 images at p = 0.27);
- ``fig7-order``: at the last recorded step, the mean std of the main convs' outputs (the
  recorder's per-conv rows, Fig. 7's measure) of each residual net is below its plain twin's,
  and the deeper residual net's below the shallower's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .models.registry import ModelNameError, parse_name
from .store import RunStore

PLAIN_GAP = 0.10
CLAIMS = {
    "deeper-plain-worse": "deeper plain net at least 10 points worse in final training error",
    "deeper-residual-better": "deeper residual net better in final training error by over 2 standard errors",
    "fig7-order": "residual responses smaller than plain, and smaller in the deeper residual net",
}
CONV_ROW_TYPES = ("response",)  # the recorder's per-conv rows (Fig. 7's measure; old "bn" rows read as these)


@dataclass
class Verdict:
    claim: str
    seed: int | None
    holds: bool
    detail: str  # the numbers it was judged on


def _final_train(run) -> tuple[float, int] | None:
    rows = [r for r in run.read_metrics() if r.get("split") == "train_eval"]
    if not rows:
        return None
    last = max(rows, key=lambda r: r["step"])
    return float(last["error"]), int(last.get("n") or 0)


def _final_response(run) -> float | None:
    rows = [r for r in run.read_layers() if r.get("type") in CONV_ROW_TYPES and r.get("std") is not None]
    if not rows:
        return None
    last = max(r["step"] for r in rows)
    stds = [float(r["std"]) for r in rows if r["step"] == last]
    return sum(stds) / len(stds)


def _runs_by_seed(store: RunStore, run_ids=None) -> dict:
    """{seed: {(kind, depth): run}} of the store's finished runs (of ``run_ids`` if given)."""
    out: dict = {}
    for info in store.list_runs():
        if run_ids is not None and info["id"] not in run_ids:
            continue
        cfg = info.get("config") or {}
        if info.get("error") or info["status"].get("state") != "done":
            continue
        try:
            _, kind, depth = parse_name(cfg.get("model"))
        except ModelNameError:
            continue
        out.setdefault(cfg.get("seed"), {})[(kind, depth)] = store.run(info["id"])
    return out


def _depths(runs: dict) -> tuple[int, int] | None:
    shared = sorted({d for k, d in runs if k == "plain"} & {d for k, d in runs if k == "resnet"})
    return (shared[0], shared[-1]) if len(shared) >= 2 else None


def judge(store: RunStore, run_ids=None) -> list[Verdict]:
    """Every ordering, for every seed of the store's finished runs (or of ``run_ids``)."""
    out = []
    for seed, runs in sorted(
        _runs_by_seed(store, run_ids).items(), key=lambda kv: (kv[0] is None, kv[0] or 0)
    ):
        depths = _depths(runs)
        if depths is None:
            out += [Verdict(c, seed, False, "no plain and residual pair at two depths") for c in CLAIMS]
            continue
        lo, hi = depths
        out += [_plain(seed, runs, lo, hi), _residual(seed, runs, lo, hi), _fig7(seed, runs, lo, hi)]
    return out


def _plain(seed, runs, lo, hi) -> Verdict:
    a, b = _final_train(runs["plain", lo]), _final_train(runs["plain", hi])
    if a is None or b is None:
        return Verdict("deeper-plain-worse", seed, False, "no eval-mode training error")
    gap = b[0] - a[0]
    text = f"plain{hi} {100 * b[0]:.2f}% vs plain{lo} {100 * a[0]:.2f}% ({100 * gap:+.2f} points)"
    return Verdict("deeper-plain-worse", seed, gap >= PLAIN_GAP, text)


def _residual(seed, runs, lo, hi) -> Verdict:
    a, b = _final_train(runs["resnet", lo]), _final_train(runs["resnet", hi])
    if a is None or b is None or min(a[1], b[1]) <= 0:
        return Verdict("deeper-residual-better", seed, False, "no eval-mode training error")
    p, n = (a[0] + b[0]) / 2, min(a[1], b[1])
    se = math.sqrt(p * (1 - p) / n)
    diff = b[0] - a[0]
    text = (
        f"resnet{hi} {100 * b[0]:.2f}% vs resnet{lo} {100 * a[0]:.2f}% ({100 * diff:+.2f} points; "
        f"2 standard errors on {n} images: {200 * se:.2f})"
    )
    return Verdict("deeper-residual-better", seed, diff < -2 * se, text)


def _fig7(seed, runs, lo, hi) -> Verdict:
    s = {k: _final_response(runs[k]) for k in [("plain", lo), ("plain", hi), ("resnet", lo), ("resnet", hi)]}
    if any(v is None for v in s.values()):
        return Verdict("fig7-order", seed, False, "no layer records")
    ok = (
        s["resnet", lo] < s["plain", lo]
        and s["resnet", hi] < s["plain", hi]
        and s["resnet", hi] < s["resnet", lo]
    )
    text = ", ".join(f"{k}{d} {v:.3f}" for (k, d), v in s.items())
    return Verdict("fig7-order", seed, ok, "mean response std " + text)


def claim_problems(store: RunStore, claims: list, run_ids=None) -> list[str]:
    """One line per claimed ordering that is unknown or fails in some seed (empty: all hold)."""
    problems = [f"claim {c!r} is not known; known: {', '.join(CLAIMS)}" for c in claims if c not in CLAIMS]
    verdicts = judge(store, run_ids)
    if claims and not verdicts:
        problems.append("the set claims orderings but has no finished runs to show them")
    for v in verdicts:
        if v.claim in claims and not v.holds:
            problems.append(f"claim {v.claim!r} does not hold in seed {v.seed}: {v.detail}")
    return problems
