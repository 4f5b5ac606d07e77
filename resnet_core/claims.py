"""What a set of runs shows of the paper's three orderings, judged per seed from its records.

A reference set may *claim* some of them in its set.json (``"claims": [...]``, written by
``reference export --claims``); ``reference check`` then recomputes each claim from the set's
own records and reports every seed where it does not hold, so a bundled set cannot say more
than its runs show. The three orderings (He et al. 2016, Fig. 6 and 7; issue 17's a, b, c),
between the shallowest and the deepest depth that both families have in the whole set:

- ``deeper-plain-worse``: the deeper plain net ends at least ``PLAIN_GAP`` (10 points) above
  the shallower in final training error (the last eval-mode ``train_eval`` row);
- ``deeper-residual-better``: the deeper residual net ends below the shallower by more than
  twice the standard error of one such estimate, sqrt(p (1 - p) / n) at p = their mean error
  and n = the images scored (2 x 0.63 = 1.26 points on 5,000 images at p = 0.27), and by more
  than the pages' tie margin (``ERROR_TIE``), so a page never calls a claimed win a tie;
- ``fig7-order``: at the last recorded step, the mean std of the main convs' outputs (the
  recorder's "response" rows, Fig. 7's measure) of each residual net is below its plain
  twin's, and the deeper residual net's below the shallower's, each by more than the pages'
  tie margin (``STD_TIE``, relative).

Runs are grouped by experiment: a set whose runs differ in anything but the model and the
seed (width, budget, a variant) has no single answer, and two runs of one model and seed are
ambiguous; both are reported, never silently resolved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

from .models.registry import ModelNameError, parse_name
from .store import RunStore

PLAIN_GAP = 0.10  # issue 17's (a): at least 10 points
ERROR_TIE = 0.01  # the pages call final errors within 1 point a tie (app.verdicts)
STD_TIE = 0.02  # ... and mean response stds within 2% of each other
CLAIMS = {
    "deeper-plain-worse": "deeper plain net at least 10 points worse in final training error",
    "deeper-residual-better": "deeper residual net better in final training error by over 2 standard errors",
    "fig7-order": "residual responses smaller than plain, and smaller in the deeper residual net",
}
RESPONSE = "response"  # the recorder's per-conv rows (old "bn" rows are read as these)
# fields that may differ between the runs of one experiment (besides model and seed): labels,
# where and how fast it ran, and what was recorded (as app.runs_data.SEED_BLIND_FIELDS)
_FREE_FIELDS = {"model", "seed", "name", "preset", "data_root", "download", "device", "threads"}
_FREE_FIELDS |= {"compile", "channels_last", "recorders", "checkpoint_every", "checkpoint_steps"}


@dataclass
class Verdict:
    claim: str
    seed: int | None
    holds: bool
    detail: str  # the numbers it was judged on


def _num(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


def _final_train(run) -> tuple[float, int] | None:
    rows = [r for r in run.read_metrics() if r.get("split") == "train_eval" and _num(r.get("error"))]
    if not rows:
        return None
    last = max(rows, key=lambda r: r["step"])
    return float(last["error"]), int(last["n"]) if _num(last.get("n")) else 0


def _final_response(run) -> float | None:
    rows = [r for r in run.read_layers() if r.get("type") == RESPONSE and _num(r.get("std"))]
    if not rows:
        return None
    last = max(r["step"] for r in rows)
    stds = [float(r["std"]) for r in rows if r["step"] == last]
    return sum(stds) / len(stds)


def _finished(store: RunStore, run_ids=None) -> tuple[dict, list[str]]:
    """{seed: {(kind, depth): run}} of the finished runs (of ``run_ids`` if given), and the
    problems that make a verdict meaningless: several experiments, or one model twice."""
    out: dict = {}
    experiments, problems = set(), []
    for info in store.list_runs():
        if (run_ids is not None and info["id"] not in run_ids) or info.get("error"):
            continue
        cfg = info.get("config") or {}
        if info["status"].get("state") != "done":
            continue
        try:
            family, kind, depth = parse_name(cfg.get("model"))
        except ModelNameError:
            continue
        experiments.add(repr(sorted((k, repr(v)) for k, v in cfg.items() if k not in _FREE_FIELDS)))
        slot = out.setdefault(cfg.get("seed"), {})
        if (kind, depth) in slot:
            problems.append(f"two runs of {kind}{depth} in seed {cfg.get('seed')}")
        slot[(kind, depth)] = store.run(info["id"])
    if len(experiments) > 1:
        problems.append(
            f"the runs belong to {len(experiments)} experiments (they differ in more than model and seed)"
        )
    return out, problems


def _depths(by_seed: dict) -> tuple[int, int] | None:
    """The shallowest and deepest depth that both families have, over the whole set."""
    runs = [k for slot in by_seed.values() for k in slot]
    shared = sorted({d for k, d in runs if k == "plain"} & {d for k, d in runs if k == "resnet"})
    return (shared[0], shared[-1]) if len(shared) >= 2 else None


def judge(store: RunStore, run_ids=None) -> list[Verdict]:
    """Every ordering, for every seed of the store's finished runs (or of ``run_ids``)."""
    by_seed, problems = _finished(store, run_ids)
    depths = _depths(by_seed)
    if depths is None:
        problems.append("no plain and residual pair at two depths")
    if problems:
        return [Verdict(c, None, False, "; ".join(problems)) for c in CLAIMS]
    lo, hi = depths
    out = []
    for seed, runs in sorted(by_seed.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
        missing = [f"{k}{d}" for k in ("plain", "resnet") for d in (lo, hi) if (k, d) not in runs]
        if missing:
            out += [Verdict(c, seed, False, f"no finished {', '.join(missing)}") for c in CLAIMS]
            continue
        out += [_plain(seed, runs, lo, hi), _residual(seed, runs, lo, hi), _fig7(seed, runs, lo, hi)]
    return out


def _plain(seed, runs, lo, hi) -> Verdict:
    a, b = _final_train(runs["plain", lo]), _final_train(runs["plain", hi])
    if a is None or b is None:
        return Verdict("deeper-plain-worse", seed, False, "no eval-mode training error")
    gap = b[0] - a[0]
    text = f"plain{hi} {100 * b[0]:.2f}% vs plain{lo} {100 * a[0]:.2f}% ({100 * gap:+.2f} points)"
    return Verdict("deeper-plain-worse", seed, gap >= PLAIN_GAP - 1e-9, text)


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
    return Verdict("deeper-residual-better", seed, diff < -max(2 * se, ERROR_TIE), text)


def _fig7(seed, runs, lo, hi) -> Verdict:
    s = {k: _final_response(runs[k]) for k in [("plain", lo), ("plain", hi), ("resnet", lo), ("resnet", hi)]}
    if any(v is None or v <= 0 for v in s.values()):
        return Verdict("fig7-order", seed, False, "no layer-response records")
    below = lambda a, b: s[a] / s[b] < 1 - STD_TIE  # noqa: E731
    ok = below(("resnet", lo), ("plain", lo)) and below(("resnet", hi), ("plain", hi))
    ok = ok and below(("resnet", hi), ("resnet", lo))
    text = ", ".join(f"{k}{d} {v:.3f}" for (k, d), v in s.items())
    return Verdict("fig7-order", seed, ok, "mean response std " + text)


def claim_problems(store: RunStore, claims: list, run_ids=None) -> list[str]:
    """One line per claimed ordering that is unknown or fails in some seed (empty: all hold)."""
    problems = [f"claim {c!r} is not known; known: {', '.join(CLAIMS)}" for c in claims if c not in CLAIMS]
    verdicts = judge(store, run_ids)
    for v in verdicts:
        if v.claim in claims and not v.holds:
            where = "" if v.seed is None else f" in seed {v.seed}"
            problems.append(f"claim {v.claim!r} does not hold{where}: {v.detail}")
    return problems
