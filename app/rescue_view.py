"""The "Can plain nets be fixed?" page's data, figures and sentences (pure functions: no
streamlit), so tests can feed them numbers and read what the page would say.

- At init: the variants' signal propagation (``analysis.studies.rescue.variants_signal``) and
  gradient shattering (``variants_shattering``), summarized per variant and compared with the
  residual net (resnet, He + BN) and the plain net (plain, He + BN) in sentences.
- From runs: the user's runs of the `rescue` variants, grouped into sets that differ only in
  seed (``app.runs_data.seed_groups``), clustered by the budget they share (every config field
  but the model's family and the variant's own fields), with each variant's share of the
  plain-to-residual gap in final training error that it closes.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.studies.rescue import VARIANT_DEFAULTS, VARIANT_FIELDS, rescue_variants, variant_of

from .runs_data import seed_group, seed_groups

PLAIN, RESNET = "plain, He + BN", "resnet, He + BN"  # the baselines: the paper's two nets
SWEEP_COMMAND = "python -m resnet_core sweep rescue --dataset ../shared/data/cifar10-jpeg.npz"
ONE_SEED = "Sets with one seed have no spread: a difference of a few points between them may be seed noise."
NEAR_FACTOR = 10.0  # "near" the residual net's variance: within this factor either way
# a seed whose training error never fell more than this many points below its first
# evaluation's did not train (plain110 on the lesson budget: 88.6% at one epoch, 90.0% at the end)
STALL_POINTS = 5.0
RHO_TOL = 0.05  # lag-1 autocorrelation "at the residual net's level": within this below it
_PALETTE = [
    "#e6550d",
    "#8c6d31",
    "#d62728",
    "#9467bd",
    "#7f7f7f",
    "#17becf",
    "#2ca02c",
    "#bcbd22",
    "#1f4e9c",
    "#e377c2",
]


def variant_colors() -> dict:
    """One color per variant, in the sweep's order (plain He + BN orange, resnet He + BN blue,
    as the plain and residual families are drawn on the other pages)."""
    return {v["label"]: c for v, c in zip(rescue_variants(), _PALETTE)}


def flags_of(v: dict) -> str:
    """The command-line flags of a variant (beyond the model name)."""
    o = v["options"]
    out = [
        f"--{k.replace('_', '-')} {o[k]}"
        for k in ("norm", "init", "activation", "branch_scalar")
        if o[k] != VARIANT_DEFAULTS[k]
    ]
    if o["zero_init_residual"]:
        out.append("--zero-init-residual")
    return " ".join(out) or "(none: the paper's net)"


def _num(v: float) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.3g}"


# --- at initialization -------------------------------------------------------------------
def init_summary(blocks: pd.DataFrame, shatter: pd.DataFrame) -> pd.DataFrame:
    """Per variant: the last block's average channel variance and squared mean, the lag-1
    autocorrelation of the gradient (mean over seeds) and whether the gradient was constant."""
    last = blocks.sort_values("order").groupby("label", sort=False).tail(1).set_index("label")
    lag1 = shatter[shatter["lag"] == 1].groupby("label", sort=False)
    out = pd.DataFrame({"variant": [v["label"] for v in rescue_variants() if v["label"] in last.index]})
    out["group"] = [last.loc[v, "group"] for v in out["variant"]]
    out["last block variance"] = [float(last.loc[v, "var"]) for v in out["variant"]]
    out["last block squared mean"] = [float(last.loc[v, "sq_mean"]) for v in out["variant"]]
    rho = lag1["autocorrelation"].mean()
    const = lag1["constant"].all()
    out["lag-1 gradient autocorrelation"] = [float(rho.get(v, math.nan)) for v in out["variant"]]
    out["gradient constant along the line"] = [bool(const.get(v, False)) for v in out["variant"]]
    return out


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1e-30)


def variance_sentences(summary: pd.DataFrame) -> list[str]:
    """Which variants keep the last block's variance within NEAR_FACTOR of the residual net's,
    and which end far above or below it, with the numbers."""
    s = summary.set_index("variant")
    if RESNET not in s.index:
        return []
    ref = float(s.loc[RESNET, "last block variance"])
    near, above, below = [], [], []
    bn_plain = {
        v["label"] for v in rescue_variants() if v["kind"] == "plain" and v["options"]["norm"] == "batch"
    }
    for v, r in s.drop(index=RESNET).iterrows():
        x = float(r["last block variance"])
        item = f"{v} {_num(x)}" + (" (a BN output in train mode: 1 by construction)" if v in bn_plain else "")
        (near if ref / NEAR_FACTOR <= x <= ref * NEAR_FACTOR else above if x > ref else below).append(item)
    out = [f"Last block's average channel variance of the residual net ({RESNET}): **{_num(ref)}**."]
    if near:
        out.append(f"Within a factor of {NEAR_FACTOR:g} of it: " + "; ".join(near) + ".")
    if above:
        out.append(f"More than {NEAR_FACTOR:g} times larger: " + "; ".join(above) + ".")
    if below:
        out.append(f"More than {NEAR_FACTOR:g} times smaller: " + "; ".join(below) + ".")
    same = [v for v in s.index if v != RESNET]
    twins = [
        (a, b)
        for i, a in enumerate(same)
        for b in same[i + 1 :]
        if _same(s.loc[a, "last block variance"], s.loc[b, "last block variance"])
        and _same(s.loc[a, "last block squared mean"], s.loc[b, "last block squared mean"])
    ]
    if twins:
        groups = {}
        for a, b in twins:
            groups.setdefault(a, {a}).add(b)
        biggest = max(groups.values(), key=len)
        out.append(
            f"{', '.join(sorted(biggest))} measure exactly the same at the last block: "
            "at init each of their residual branches is multiplied by 0 or ends in a "
            "zero conv, so all compute the same net of shortcuts."
        )
    return out


def branch_sentences(blocks: pd.DataFrame, floor: float = 1e-9) -> list[str]:
    """What the signal-propagation panels leave out and why: the variants whose squared mean is
    0 up to rounding at every block, the plain variants (no residual branch, so no F(x) line),
    the residual variants that start with every branch's output at 0; and the others' range of
    branch variance, with the numbers. Values below ``floor`` are not drawn on the log axes."""
    out = []
    sq = blocks.groupby("label", sort=False)["sq_mean"].max()
    flat = [v for v, x in sq.items() if x < floor]
    if flat:
        out.append(
            f"Squared mean 0 up to rounding at every block (below {floor:g}, so not drawn on the "
            f"log axis; a BN output has mean 0 by construction): {', '.join(flat)}."
        )
    plain = [v for v, g in blocks.groupby("label", sort=False) if g["res_var"].isna().all()]
    if plain:
        out.append(f"No residual branch, so no line in the F(x) panel: {', '.join(plain)}.")
    res = blocks[blocks["res_var"].notna()]
    if not len(res):
        return out
    span = res.groupby("label", sort=False)["res_var"].agg(["min", "max"])
    zero = [v for v, r in span.iterrows() if r["max"] < floor]
    if zero:
        out.append(
            f"Residual branch variance 0 at every block (below {floor:g}, so not drawn "
            f"on the log axis): {', '.join(zero)}."
        )
    rest = [f"{v} {_num(r['min'])} to {_num(r['max'])}" for v, r in span.iterrows() if r["max"] >= floor]
    if rest:
        out.append("Residual branch variance, lowest to highest block: " + "; ".join(rest) + ".")
    return out


def shattering_sentences(summary: pd.DataFrame) -> list[str]:
    """How each variant's lag-1 gradient autocorrelation compares with the residual and the
    plain net's, with the numbers."""
    s = summary.set_index("variant")
    if RESNET not in s.index or PLAIN not in s.index:
        return []
    col = "lag-1 gradient autocorrelation"
    res, plain = float(s.loc[RESNET, col]), float(s.loc[PLAIN, col])
    out = [
        f"Lag-1 autocorrelation of the gradient along the line: residual net **{_num(res)}**, "
        f"plain net **{_num(plain)}** (1: smooth; 0: shattered, like white noise)."
    ]
    level, between, low, const = [], [], [], []
    for v, r in s.drop(index=[RESNET, PLAIN]).iterrows():
        x = float(r[col])
        if r["gradient constant along the line"]:
            const.append(v)
        elif not math.isfinite(x):
            continue
        elif x >= res - RHO_TOL:
            level.append(f"{v} {_num(x)}")
        elif x > plain:
            between.append(f"{v} {_num(x)}")
        else:
            low.append(f"{v} {_num(x)}")
    if level:
        out.append(
            f"At the residual net's level or above (at least {_num(res - RHO_TOL)}: its "
            f"{_num(res)} less {RHO_TOL:g}): " + "; ".join(level) + "."
        )
    if between:
        out.append("Between the plain and the residual net: " + "; ".join(between) + ".")
    if low:
        out.append("At or below the plain net: " + "; ".join(low) + ".")
    for v in const:
        out.append(
            f"{v}: the gradient is the same at every point of the line (the net is linear "
            "at init), so nothing is shattered and the autocorrelation is undefined."
        )
    if res <= plain:
        out.append(
            "Here the residual net's gradient is not smoother than the plain net's: at "
            "this depth and width the two do not differ in this measure."
        )
    return out


def shattering_figure(shatter: pd.DataFrame, colors: dict, height: int = 360) -> go.Figure:
    """Autocorrelation of the gradient against lag (mean over seeds), one line per variant."""
    fig = go.Figure()
    d = shatter.groupby(["label", "lag"], sort=False)["autocorrelation"].mean().reset_index()
    for label, g in d.groupby("label", sort=False):
        if not g["autocorrelation"].notna().any():
            continue  # a constant gradient: said in the text, nothing to draw
        fig.add_trace(
            go.Scatter(
                x=g["lag"],
                y=g["autocorrelation"],
                mode="lines+markers",
                name=label,
                line=dict(color=colors.get(label)),
                marker=dict(size=4),
            )
        )
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin=dict(t=30, b=40, l=50, r=10),
        xaxis_title="lag (points along the line)",
        yaxis_title="gradient autocorrelation",
        yaxis_range=[-1.05, 1.05],
        legend=dict(orientation="h", y=-0.3),
    )
    return fig


# --- from runs ---------------------------------------------------------------------------
def _family_depth(cfg: dict) -> tuple[str, int] | None:
    """(CIFAR or ImageNet layout, depth) of a config's model, or None if unreadable."""
    from resnet_core.models.registry import parse_name

    try:
        family, _, depth = parse_name(cfg["model"])
    except (KeyError, TypeError, ValueError):
        return None
    return family, depth


def budget_key(cfg: dict) -> str | None:
    """What runs must share to be compared: every field but seed-blind ones, the model's
    kind (plain or residual) and the variant's fields (so plain56 and resnet56 runs of one
    budget match); the layout (CIFAR or ImageNet) and depth stay in."""
    fd = _family_depth(cfg) if isinstance(cfg, dict) else None
    if fd is None:
        return None
    return seed_group({**cfg, "model": f"{fd[0]} depth{fd[1]}", **VARIANT_DEFAULTS})


def recipe_key(cfg: dict) -> str | None:
    """:func:`budget_key` at any depth of one layout: the runs of one training recipe, so one
    variant's runs at depth 56 and 110 can be set side by side."""
    fd = _family_depth(cfg) if isinstance(cfg, dict) else None
    if fd is None:
        return None
    warmup = cfg.get("warmup", "auto")
    if warmup == "auto":  # the trainer warms up from depth 110 on: a different schedule
        warmup = "paper" if fd[1] >= 110 else "none"
    return seed_group({**cfg, "model": f"{fd[0]} any depth", "warmup": warmup, **VARIANT_DEFAULTS})


def rescue_runs(runs: pd.DataFrame, configs: dict) -> pd.DataFrame:
    """The rows of ``runs`` (``runs_data.runs_frame``) whose config is a rescue variant, with
    ``variant``, ``vgroup`` (its sweep group) and ``budget``. ``configs``: id -> config dict."""
    rows = []
    for _, r in runs.iterrows():
        cfg = configs.get(r["id"])
        if not isinstance(cfg, dict) or r["kind"] not in ("plain", "resnet"):
            continue
        v = variant_of(r["kind"], cfg)
        if v is None:
            continue
        rows.append(
            {
                **r.to_dict(),
                "variant": v["label"],
                "vgroup": v["group"],
                "budget": budget_key(cfg),
                "recipe": recipe_key(cfg),
            }
        )
    return pd.DataFrame(rows, columns=list(runs.columns) + ["variant", "vgroup", "budget", "recipe"])


def with_variants(rr: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``rescue_runs`` in a budget and depth that has a run of some variant besides
    the two baselines (finished or diverged): a `quick` or `laptop` sweep alone is the paper's
    two nets, not a rescue measurement, and is left out."""
    if not len(rr):
        return rr
    beyond = ~rr["variant"].isin([PLAIN, RESNET]) & rr["state"].isin(["done", "diverged"])
    keys = set(zip(rr.loc[beyond, "budget"], rr.loc[beyond, "depth"]))
    return rr[[k in keys for k in zip(rr["budget"], rr["depth"])]]


def variant_sets(rr: pd.DataFrame) -> pd.DataFrame:
    """One row per set of seeds (``seed_groups``) of the rescue runs, with its variant, budget
    and depth; only finished sets with a final training error count for the verdicts."""
    if not len(rr):
        return pd.DataFrame()
    groups = seed_groups(rr)
    first = rr.set_index("id")
    for c in ("variant", "vgroup", "budget", "recipe", "preset"):
        groups[c] = [first.loc[ids[0], c] for ids in groups["run_ids"]]
    return groups


def gap_table(sets: pd.DataFrame) -> pd.DataFrame:
    """Per budget and depth, each variant's final errors (mean, std, n over seeds, percent)
    and the share of the plain-to-residual gap in training error that it closes:
    (plain - variant) / (plain - residual), with plain = plain He + BN and residual = resnet
    He + BN of the same budget and depth (NaN where either is missing or the gap is not
    positive). Sets that are not done are left out."""
    cols = [
        "budget",
        "recipe",
        "depth",
        "dataset",
        "preset",
        "variant",
        "group",
        "n",
        "seeds",
        "train_mean",
        "train_std",
        "test_mean",
        "test_std",
        "gap_closed",
        "run_ids",
    ]
    if not len(sets):
        return pd.DataFrame(columns=cols)
    done = sets[(sets["state"] == "done") & sets["train_error_mean"].notna()]
    rows = []
    for (budget, depth), g in done.groupby(["budget", "depth"], sort=False):
        by = g.drop_duplicates("variant").set_index("variant")
        plain = by["train_error_mean"].get(PLAIN, math.nan)
        res = by["train_error_mean"].get(RESNET, math.nan)
        gap = plain - res
        for v in [x["label"] for x in rescue_variants()]:
            if v not in by.index:
                continue
            r = by.loc[v]
            closed = (plain - r["train_error_mean"]) / gap if gap > 0 else math.nan
            rows.append(
                {
                    "budget": budget,
                    "recipe": r["recipe"],
                    "depth": depth,
                    "dataset": r["dataset"],
                    "preset": r["preset"],
                    "variant": v,
                    "group": r["vgroup"],
                    "n": int(r["train_error_n"]),
                    "seeds": r["seeds"],
                    "train_mean": r["train_error_mean"],
                    "train_std": r["train_error_std"],
                    "test_mean": r["test_error_mean"],
                    "test_std": r["test_error_std"],
                    "gap_closed": closed,
                    "run_ids": r["run_ids"],
                }
            )
    return pd.DataFrame(rows, columns=cols)


def _pm(mean: float, std: float, n: int) -> str:
    return f"{mean:.1f}%" + (f" ± {std:.1f}" if math.isfinite(std) else "") + f" (n={n})"


def gap_sentences(table: pd.DataFrame) -> list[str]:
    """The verdicts for one budget and depth (rows of :func:`gap_table`), read off the numbers."""
    by = table.set_index("variant")
    have_p, have_r = PLAIN in by.index, RESNET in by.index
    if not (have_p and have_r):
        missing = " and ".join(x for x, h in ((PLAIN, have_p), (RESNET, have_r)) if not h)
        out = [
            f"No finished run of {missing} at this budget and depth: without both baselines "
            "there is no plain-to-residual gap to measure the variants against."
        ]
        if have_p or have_r:
            out += _against_one_baseline(by, PLAIN if have_p else RESNET)
        return out
    p, r = by.loc[PLAIN], by.loc[RESNET]
    gap = p["train_mean"] - r["train_mean"]
    out = [
        f"Final training error: {PLAIN} {_pm(p['train_mean'], p['train_std'], p['n'])}, "
        f"{RESNET} {_pm(r['train_mean'], r['train_std'], r['n'])}: a gap of **{gap:.1f} "
        "points**."
    ]
    if gap <= 0:
        out.append(
            "At this budget the plain net is not behind the residual net, so there is no "
            "gap for the variants to close."
        )
        return out
    for v, row in by.drop(index=[PLAIN, RESNET]).iterrows():
        c = row["gap_closed"]
        err = _pm(row["train_mean"], row["train_std"], row["n"])
        if c >= 1.0:
            say = (
                f"closes the whole gap ({100 * c:.0f}%): it ends "
                f"{_points(row['train_mean'] - r['train_mean'], 'the residual net')}" + _spread(row, r)
            )
        elif c >= 0.5:
            say = f"closes most of the gap: **{100 * c:.0f}%**" + _spread(row, r, " from the residual net")
        elif c > 0.1:
            say = f"closes part of the gap: **{100 * c:.0f}%**"
        elif c >= -0.1:
            say = f"closes almost none of the gap ({100 * c:.0f}%)"
        else:
            say = (
                f"ends {row['train_mean'] - p['train_mean']:.1f} points *above* the plain "
                f"net ({100 * c:.0f}% of the gap)"
            )
        out.append(f"**{v}** ({row['group']}): {err}; it {say}.")
    if (by["n"] < 2).any():
        out.append(ONE_SEED)
    return out


def _spread(row, ref, what: str = "") -> str:
    """A note "(within the seeds' spread: ± s)" when ``row`` and ``ref`` (gap table rows) both have
    several seeds and differ in mean final training error by no more than the larger of their
    standard deviations, with the distance first if ``what`` names it; else "" (one seed: said
    once under the verdicts)."""
    if (
        row["n"] < 2
        or ref["n"] < 2
        or not (math.isfinite(row["train_std"]) and math.isfinite(ref["train_std"]))
    ):
        return ""
    s = max(row["train_std"], ref["train_std"])
    d = abs(row["train_mean"] - ref["train_mean"])
    if d > s:
        return ""
    return (
        f" ({d:.1f} points{what}, within the seeds' spread: ± {s:.1f})"
        if what
        else f" (within the seeds' spread: ± {s:.1f})"
    )


def _points(d: float, base: str, up: str = "above", down: str = "below") -> str:
    """A difference in points as the page prints it: rounded first, so what reads 0.0 is
    said as "the same"."""
    d = round(d, 1)
    return f"the same as {base}" if d == 0 else f"{abs(d):.1f} points {up if d > 0 else down} {base}"


def _against_one_baseline(by: pd.DataFrame, base: str) -> list[str]:
    """Each variant's final training error against the one baseline there is (``by``: gap
    table rows indexed by variant), in points."""
    b = by.loc[base]
    out = [f"Final training error of {base}: {_pm(b['train_mean'], b['train_std'], b['n'])}."]
    for v, row in by.drop(index=[base]).iterrows():
        out.append(
            f"**{v}** ({row['group']}): {_pm(row['train_mean'], row['train_std'], row['n'])}; "
            f"{_points(row['train_mean'] - b['train_mean'], base)}."
        )
    if len(by) > 1 and (by["n"] < 2).any():
        out.append(ONE_SEED)
    return out


def _first_last(row, metrics: pd.DataFrame) -> list[dict] | None:
    """Per run of one set of seeds (a row of :func:`gap_table`), in its order: the first and
    last training error (split ``train_eval``, percent), the first evaluation's step and the
    lowest error. None when a run has fewer than two evaluations."""
    out = []
    for rid in row["run_ids"]:
        m = (
            metrics[(metrics["run_id"] == rid) & (metrics["split"] == "train_eval")]
            if len(metrics)
            else metrics
        )
        m = m[m["error"].notna()].drop_duplicates("step", keep="last").sort_values("step") if len(m) else m
        if len(m) < 2:
            return None
        e = 100.0 * m["error"].astype(float)
        out.append({"first": e.iloc[0], "last": e.iloc[-1], "step": int(m["step"].iloc[0]), "low": e.min()})
    return out


def _flat(r: dict) -> bool:
    """A run's training error never fell more than STALL_POINTS below its first evaluation's."""
    return r["low"] >= r["first"] - STALL_POINTS


def stalled(row, metrics: pd.DataFrame) -> tuple[float, float, int, list[float]] | None:
    """For one set of seeds (a row of :func:`gap_table`), if in *every* seed the training error
    (split ``train_eval``) never fell more than STALL_POINTS below its first evaluation's (it
    did not train; whatever noise it had): (mean first, mean last error in percent, the first
    evaluation's step, each seed's lowest error in percent). Else None (also when a seed has
    fewer than two evaluations). ``metrics``: metrics_for rows."""
    return _stalled_of(_first_last(row, metrics))


def _stalled_of(runs: list[dict] | None) -> tuple[float, float, int, list[float]] | None:
    """:func:`stalled` from the runs' :func:`_first_last`."""
    if not runs or not all(_flat(r) for r in runs):
        return None
    mean = lambda k: sum(r[k] for r in runs) / len(runs)  # noqa: E731
    return mean("first"), mean("last"), min(r["step"] for r in runs), [r["low"] for r in runs]


def _some_stalled(row, runs: list[dict] | None) -> str | None:
    """For a set of seeds in which *some* but not all seeds did not train (:func:`_flat`): a
    sentence naming those seeds (when every run's seed is known) with their numbers, and where
    the others ended, since the set's mean includes them. ``runs``: its :func:`_first_last`."""
    if not runs:
        return None
    flat = [i for i, r in enumerate(runs) if _flat(r)]
    if not flat or len(flat) == len(runs):
        return None
    seeds = list(row.get("seeds") or [])
    named = len(seeds) == len(runs)
    which = f" (seed {', '.join(str(seeds[i]) for i in flat)})" if named else ""
    said = "; ".join(
        f"{r['last']:.1f}% at the end, {r['first']:.1f}% at step {r['step']}, lowest {r['low']:.1f}%"
        for r in (runs[i] for i in flat)
    )
    rest = [i for i in range(len(runs)) if i not in flat]
    others = ", ".join(f"{runs[i]['last']:.1f}%" + (f" (seed {seeds[i]})" if named else "") for i in rest)
    return (
        f"**{row['variant']}**: in {len(flat)} of its {len(runs)} seeds{which} its training error "
        f"never fell more than {STALL_POINTS:g} points below its first evaluation's ({said}); "
        f"the other{'s' if len(rest) > 1 else ''} ended at {others}. The mean over seeds includes "
        f"{'it' if len(flat) == 1 else 'them'}."
    )


def stalled_sentences(table: pd.DataFrame, metrics: pd.DataFrame) -> list[str]:
    """The variants (rows of :func:`gap_table`) that did not train in any of their seeds
    (:func:`stalled`), with the numbers; and those where only some seeds did not
    (:func:`_some_stalled`)."""
    out = []
    for _, row in table.iterrows():
        runs = _first_last(row, metrics)  # filtered once for both sentences
        s = _stalled_of(runs)
        if s is None:
            some = _some_stalled(row, runs)
            if some:
                out.append(some)
            continue
        first, last, step, lows = s
        several = row["n"] > 1
        every = f", in each of its {row['n']} seeds" if several else ""
        lo, hi = min(lows), max(lows)
        out.append(
            f"**{row['variant']}**: its training error never fell more than {STALL_POINTS:g} points "
            f"below its first evaluation's{every}: "
            f"{last:.1f}% at the end, {first:.1f}% at step {step}"
            + (" (means over seeds)" if several else "")
            + f", lowest {lo:.1f}%"
            + (f" to {hi:.1f}% over its seeds." if several and round(hi, 1) != round(lo, 1) else ".")
        )
    return out


def stalled_sets(table: pd.DataFrame, metrics: pd.DataFrame) -> list[tuple[str, int]]:
    """The (variant, depth) of each row of :func:`gap_table` that :func:`stalled` flags: what
    :func:`depth_sentences` takes as ``stalled_at``."""
    return [(r["variant"], r["depth"]) for _, r in table.iterrows() if stalled(r, metrics)]


def depth_sentences(table: pd.DataFrame, stalled_at=()) -> list[str]:
    """For each variant of one recipe (``recipe_key``) finished at several depths: its final
    training error at each depth and the change from the shallowest to the deepest, with the
    numbers (rows of :func:`gap_table`). For the plain net, whether that is the paper's
    degradation (a deeper plain net ending higher); ``stalled_at``: the (variant, depth) sets
    that did not train in any seed (:func:`stalled`)."""
    if not len(table) or table["depth"].nunique() < 2:
        return []
    out = []
    order = [v["label"] for v in rescue_variants()]
    for v in [x for x in order if x in set(table["variant"])]:
        g = table[table["variant"] == v].sort_values("depth")
        if len(g) < 2:
            continue
        at = ", ".join(
            f"{_pm(r.train_mean, r.train_std, r.n)} at depth {int(r.depth)}" for r in g.itertuples()
        )
        lo, hi = int(g["depth"].iloc[0]), int(g["depth"].iloc[-1])
        d = round(g["train_mean"].iloc[-1] - g["train_mean"].iloc[0], 1)
        said = f"**{v}**: {at}: " + (
            f"the same at depth {hi} as at depth {lo}"
            if d == 0
            else f"{abs(d):.1f} points {'higher' if d > 0 else 'lower'} at depth {hi} than at depth {lo}"
        )
        if v == PLAIN and d > 0 and (v, hi) in set(stalled_at):
            said += (
                f": at depth {hi} its training error never fell more than {STALL_POINTS:g} points below "
                "its first evaluation's, "
                "which is more than the paper's degradation problem (its deeper plain nets still "
                "trained, to a higher error)"
            )
        elif v == PLAIN:
            said += (
                ": the degradation problem the paper reports"
                if d > 0
                else ": the paper's degradation (a deeper plain net ending higher) does not show here"
            )
        out.append(said + ".")
    if out and (table["n"] < 2).any():
        out.append(ONE_SEED)
    return out


def diverged_what(message) -> str:
    """What a diverged run's status message says happened ("the training loss became nan at
    step 38 (lr 0.1)"), without the prefix and the advice."""
    return str(message or "").split("diverged: ", 1)[-1].split(";")[0].strip()


def diverged_sentences(rr: pd.DataFrame, finished=()) -> list[str]:
    """One sentence per variant with diverged runs among ``rescue_runs`` rows (one budget and
    depth): what each run's status says happened (the step and learning rate where the loss
    stopped being finite), seed by seed. Such runs have no final error, so the gap table
    leaves them out and says why here; ``finished``: the variants with finished seeds in the
    table (averaged without the diverged ones)."""
    out = []
    div = rr[rr["state"] == "diverged"]
    for variant, g in div.sort_values("seed").groupby("variant", sort=False):
        said = []
        for r in g.itertuples():
            what = diverged_what(r.message) or "its training loss stopped being finite"
            ok = isinstance(r.seed, (int, float)) and r.seed == r.seed
            said.append((f"seed {int(r.seed)}: " if ok else "") + what)
        runs = "its run" if len(g) == 1 else f"all {len(g)} of its runs shown here"
        out.append(
            f"**{variant}** ({g['vgroup'].iloc[0]}): {runs} diverged ({'; '.join(said)}). "
            + (
                "They have no final error: the table averages the seeds that finished."
                if variant in set(finished)
                else "No final error, so it is not in the table: at this budget it did not train."
            )
        )
    return out


def overlap_sentences(metrics: pd.DataFrame, table: pd.DataFrame, within: float = 1.0) -> list[str]:
    """Which variants' mean curves (as :func:`curves_figure` draws them) lie on top of each
    other: the median distance between two curves over the steps both logged is below
    ``within`` points, so one line may hide the other. One sentence per panel that has such
    curves, naming each group of them."""
    from .charts import mean_band

    out = []
    for split, panel in (("train", "training error (running)"), ("test", "test error")):
        curves = {}
        for _, row in table.iterrows():
            b = mean_band(metrics, row["run_ids"], split)
            if len(b):
                curves[row["variant"]] = b.set_index("step")["mean"]
        group = {v: {v} for v in curves}  # union of overlapping pairs
        names = list(curves)
        for i, a in enumerate(names):
            for c in names[i + 1 :]:
                both = pd.concat([curves[a], curves[c]], axis=1, join="inner").dropna()
                if len(both) and (both.iloc[:, 0] - both.iloc[:, 1]).abs().median() < within:
                    merged = group[a] | group[c]
                    for v in merged:
                        group[v] = merged
        seen, groups = set(), []
        for v in names:
            if len(group[v]) > 1 and v not in seen:
                seen |= group[v]
                groups.append(" and ".join(x for x in names if x in group[v]))
        if groups:
            out.append(
                f"In the {panel} panel these lie within {within:g} point of each other at most steps "
                f"(median distance), so one line may hide another: {'; '.join(groups)}."
            )
    return out


def curves_figure(metrics: pd.DataFrame, table: pd.DataFrame, colors: dict, height: int = 380) -> go.Figure:
    """Training error (running, split ``train``) and test error against step, per variant:
    the mean over its seeds with a ± std band. ``metrics``: metrics_for rows (run_id, split,
    step, error)."""
    from .charts import mean_band

    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["training error (running)", "test error"], horizontal_spacing=0.08
    )
    for _, row in table.iterrows():
        color = colors.get(row["variant"], "#888888")
        for col, split in ((1, "train"), (2, "test")):
            b = mean_band(metrics, row["run_ids"], split)
            if not len(b):
                continue
            fig.add_trace(
                go.Scatter(
                    x=b["step"],
                    y=b["mean"],
                    mode="lines",
                    name=row["variant"],
                    legendgroup=row["variant"],
                    showlegend=col == 1,
                    line=dict(color=color),
                ),
                row=1,
                col=col,
            )
            sd = b["std"].fillna(0.0)
            if row["n"] > 1:
                fig.add_trace(
                    go.Scatter(
                        x=list(b["step"]) + list(b["step"][::-1]),
                        y=list(b["mean"] + sd) + list((b["mean"] - sd)[::-1]),
                        fill="toself",
                        line=dict(width=0),
                        fillcolor=color,
                        opacity=0.15,
                        hoverinfo="skip",
                        showlegend=False,
                        legendgroup=row["variant"],
                    ),
                    row=1,
                    col=col,
                )
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="error (%)", rangemode="tozero")
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin=dict(t=40, b=40, l=50, r=10),
        legend=dict(orientation="h", y=-0.25),
    )
    return fig


def gap_display(table: pd.DataFrame) -> pd.DataFrame:
    """The table as the page shows it."""
    return pd.DataFrame(
        {
            "variant": table["variant"],
            "group": table["group"],
            "seeds": table["n"],
            "final training error": [
                _pm(m, s, n) for m, s, n in zip(table["train_mean"], table["train_std"], table["n"])
            ],
            "final test error": [
                _pm(m, s, n) for m, s, n in zip(table["test_mean"], table["test_std"], table["n"])
            ],
            "gap closed": ["–" if not math.isfinite(c) else f"{100 * c:.0f}%" for c in table["gap_closed"]],
        }
    )


__all__ = [
    "PLAIN",
    "RESNET",
    "SWEEP_COMMAND",
    "VARIANT_FIELDS",
    "variant_colors",
    "flags_of",
    "init_summary",
    "variance_sentences",
    "branch_sentences",
    "shattering_sentences",
    "shattering_figure",
    "diverged_sentences",
    "diverged_what",
    "depth_sentences",
    "stalled_sentences",
    "stalled_sets",
    "overlap_sentences",
    "stalled",
    "recipe_key",
    "with_variants",
    "budget_key",
    "rescue_runs",
    "variant_sets",
    "gap_table",
    "gap_sentences",
    "curves_figure",
    "gap_display",
]
