"""What the runs on screen show, as sentences with their numbers: one pure function per claim
of the papers. Pages call these instead of stating a result as fixed text, so a page never says
"deeper residual nets are better" over a chart where they are worse.

Each function takes small tables of numbers (a DataFrame or a list of dicts) and returns a
``Verdict``: the sentence (markdown), an outcome ("agrees", "contradicts", "mixed",
"unclear" when the difference is within the noise margin, "missing" when the runs cannot
answer), and the numbers it compared. Where the runs disagree with the paper, the sentence
says so and names the likely reason (``budget_note``: steps, images, image size, dataset).
No streamlit and no file reading here: tests feed numbers straight in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

RESIDUAL = ("resnet", "preresnet")
NAMES = {"plain": "plain", "resnet": "ResNet", "preresnet": "pre-act ResNet"}

# The paper's CIFAR-10 budget (He et al. 2016, Sec. 4.2): 64k iterations of batch 128 on the
# 50k training images at 32x32.
PAPER_STEPS, PAPER_BATCH, PAPER_IMAGES, PAPER_SIZE = 64_000, 128, 50_000, 32
# A difference of final training error below this many points is called a tie: one seed's
# error on 1,000 re-scored images has a standard error of about 1.5 points near 30-40%.
ERROR_MARGIN = 1.0
# Mean response std (Fig. 7) within this fraction of each other is a tie.
STD_MARGIN = 0.02
# Deleting one residual block "barely hurts" (Veit et al. 2016) when, with no plain run to
# compare, the mean rise at blocks that keep the shape stays under this many points.
BARELY_POINTS = 5.0


@dataclass(frozen=True)
class Verdict:
    claim: str  # which claim: "plain_depth", "residual_depth", "responses", ...
    outcome: str  # "agrees" | "contradicts" | "mixed" | "unclear" | "missing"
    text: str  # the sentence shown on the page (markdown), numbers included
    numbers: dict = field(default_factory=dict)  # what was compared, for tests and downloads

    def __bool__(self) -> bool:
        return bool(self.text)


def name(kind: str, depth) -> str:
    return f"{NAMES.get(kind, kind)}-{int(depth)}" if depth == depth and depth is not None else str(kind)


def _frame(rows) -> pd.DataFrame:
    return rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))


def _by_depth(d: pd.DataFrame, kind, col: str) -> pd.Series:
    """Mean of ``col`` per depth for one family (or tuple of families), sorted by depth."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    g = d[d["kind"].isin(kinds)].dropna(subset=[col, "depth"])
    return g.groupby("depth")[col].mean().sort_index()


def _residual_kind(d: pd.DataFrame, col: str) -> str:
    """The residual family with the most depths on screen (ResNet on a tie)."""
    counts = {k: _by_depth(d, k, col).size for k in RESIDUAL}
    return max(RESIDUAL, key=lambda k: (counts[k], k == "resnet"))


def _pct(d: pd.DataFrame, kind: str, depth, col: str, v: float) -> str:
    """A mean error as a percentage, saying how many runs (seeds) it averages when more than 1."""
    k = int((d["kind"].eq(kind) & d["depth"].eq(depth) & d[col].notna()).sum())
    return f"{v:.1f}%" + (f" (mean of {k} runs)" if k > 1 else "")


def _cmp(a: float, b: float, margin: float) -> int:
    """+1 when a > b beyond the margin, -1 when a < b beyond it, 0 for a tie."""
    return 0 if abs(a - b) < margin else (1 if a > b else -1)


# --- why runs may differ from the paper ----------------------------------------------------------
def budget_note(budgets) -> str:
    """How the runs' budget differs from the paper's, for "likely reason" clauses. ``budgets``:
    dicts with steps, batch_size, images (None: all), image_size (None: native) and dataset."""
    b = _frame(budgets)
    if not len(b):
        return "the budget, most likely (it is not recorded here; the paper trained 64,000 steps on CIFAR-10)"
    parts, cifar = [], True
    if "dataset" in b:
        ds = sorted({str(v) for v in b["dataset"].dropna()})
        cifar = bool(ds) and all("cifar10" in v.lower().replace("-", "") for v in ds)
        if ds and not cifar:
            parts.append(f"the data is {', '.join(ds)}, not CIFAR-10")
    steps = pd.to_numeric(b.get("steps"), errors="coerce").dropna() if "steps" in b else []
    if len(steps) and steps.max() < PAPER_STEPS:
        lo, hi = int(steps.min()), int(steps.max())
        parts.append(
            f"{lo:,} steps"
            + (f" (up to {hi:,})" if hi != lo else "")
            + f" against the paper's {PAPER_STEPS:,}"
        )
    imgs = pd.to_numeric(b.get("images"), errors="coerce") if "images" in b else pd.Series([])
    if cifar and imgs.notna().any() and imgs.max() < PAPER_IMAGES:
        parts.append(f"{int(imgs.max()):,} training images against {PAPER_IMAGES:,}")
    size = pd.to_numeric(b.get("image_size"), errors="coerce") if "image_size" in b else pd.Series([])
    if cifar and size.notna().any() and size.max() < PAPER_SIZE:
        s = int(size.max())
        parts.append(f"{s}×{s} images against {PAPER_SIZE}×{PAPER_SIZE}")
    if not parts:
        return "seed-to-seed variation: the budget matches the paper's"
    return "the budget: " + ", ".join(parts)


def _differs(paper: str, budgets) -> str:
    return f" He et al. report {paper}; the likely reason for the difference is {budget_note(budgets)}."


def _agrees(paper: str) -> str:
    return f" As He et al. report: {paper}."


# --- Fig. 6: degradation ---------------------------------------------------------------------
def _by_sign(key: str, c: int, agree: int, head: str, said: dict, paper: str, budgets, nums) -> Verdict:
    """The verdict of a comparison ``c`` (from _cmp): "agrees" when its sign is the paper's
    (``agree``), "unclear" on a tie, else "contradicts"; ``said[c]`` says what the runs show."""
    if c == agree:
        return Verdict(key, "agrees", head + said[c] + _agrees(paper), nums)
    if c == 0:
        text = f"**no clear difference** (under {ERROR_MARGIN:g} point)."
        return Verdict(key, "unclear", head + text + _differs(paper, budgets), nums)
    return Verdict(key, "contradicts", head + said[c] + _differs(paper, budgets), nums)


def _depth_ends(d: pd.DataFrame, kind: str, col: str, whose: str):
    """The shallowest and deepest nets of ``kind``: (errors by depth, lo, hi, _cmp(deep,
    shallow), the numbers, the sentence's head), or None with fewer than two depths."""
    e = _by_depth(d, kind, col)
    if len(e) < 2:
        return None
    what = "training" if col.startswith("train") else "test"
    lo, hi = e.index[0], e.index[-1]
    c = _cmp(e[hi], e[lo], ERROR_MARGIN)
    nums = {"shallow": float(e[lo]), "deep": float(e[hi]), "depths": (int(lo), int(hi))}
    head = (
        f"In {whose} runs, {name(kind, hi)} ends at {_pct(d, kind, hi, col, e[hi])} final "
        f"{what} error and {name(kind, lo)} at {_pct(d, kind, lo, col, e[lo])}: "
    )
    return e, lo, hi, c, nums, head


def plain_depth(finals, budgets=(), col: str = "train_error_pct", whose: str = "these") -> Verdict:
    """Deeper plain nets end with higher training error (He et al. Fig. 6, left)."""
    d = _frame(finals)
    ends = _depth_ends(d, "plain", col, whose) if len(d) else None
    if ends is None:
        return Verdict("plain_depth", "missing", "", {})
    p, lo, hi, c, nums, head = ends
    paper = "deeper plain nets end with higher training error (Fig. 6, left)"
    said = {
        1: f"the deeper plain net is **worse**, by {p[hi] - p[lo]:.1f} points.",
        -1: f"the deeper plain net is **better**, by {p[lo] - p[hi]:.1f} points.",
    }
    return _by_sign("plain_depth", c, 1, head, said, paper, budgets, nums)


def not_overfitting(finals, budgets=(), whose: str = "these") -> Verdict:
    """Degradation is not overfitting: the deeper plain net's *training* error is higher too."""
    d = _frame(finals)
    tr = _by_depth(d, "plain", "train_error_pct") if len(d) else pd.Series(dtype=float)
    te = _by_depth(d, "plain", "test_error_pct") if len(d) else pd.Series(dtype=float)
    if len(tr) < 2:
        return Verdict("not_overfitting", "missing", "", {})
    lo, hi = tr.index[0], tr.index[-1]
    c = _cmp(tr[hi], tr[lo], ERROR_MARGIN)
    nums = {"train": (float(tr[lo]), float(tr[hi])), "depths": (int(lo), int(hi))}
    test = ""
    if lo in te.index and hi in te.index:
        nums["test"] = (float(te[lo]), float(te[hi]))
        test = f" (test error {te[hi]:.1f}% against {te[lo]:.1f}%)"
    c_ = "train_error_pct"
    head = (
        f"In {whose} runs, {name('plain', hi)}'s final training error is "
        f"{_pct(d, 'plain', hi, c_, tr[hi])} against {name('plain', lo)}'s "
        f"{_pct(d, 'plain', lo, c_, tr[lo])}{test}: "
    )
    if c > 0:
        return Verdict(
            "not_overfitting",
            "agrees",
            head + "the deeper net fits its training data "
            "**worse**, so this is not overfitting: the optimizer fails to fit. As He "
            "et al. report (the *degradation problem*).",
            nums,
        )
    paper = "higher training error for the deeper plain net, which rules out overfitting"
    verb = "**no worse**" if c == 0 else "**better**"
    return Verdict(
        "not_overfitting",
        "unclear" if c == 0 else "contradicts",
        head + f"the deeper net fits its training data {verb}, so these runs show no "
        "degradation to explain." + _differs(paper, budgets),
        nums,
    )


def residual_depth(finals, budgets=(), col: str = "train_error_pct", whose: str = "these") -> Verdict:
    """Deeper residual nets end with lower error (He et al. Fig. 6, middle; Table 6)."""
    d = _frame(finals)
    if not len(d):
        return Verdict("residual_depth", "missing", "", {})
    kind = _residual_kind(d, col)
    ends = _depth_ends(d, kind, col, whose)
    if ends is None:
        return Verdict("residual_depth", "missing", "", {})
    r, lo, hi, c, nums, head = ends
    nums["kind"] = kind
    paper = "deeper ResNets end lower (Fig. 6, middle; Table 6), at 64,000 steps"
    said = {
        -1: f"the deeper residual net is **better**, by {r[lo] - r[hi]:.1f} points.",
        1: f"the deeper residual net is **worse**, by {r[hi] - r[lo]:.1f} points.",
    }
    return _by_sign("residual_depth", c, -1, head, said, paper, budgets, nums)


# the verdicts whose paper result a bundled set can claim (resnet_core.claims.CLAIMS)
CLAIM_OF = {
    "plain_depth": "deeper-plain-worse",
    "residual_depth": "deeper-residual-better",
    "responses": "fig7-order",
}


def shown_elsewhere(v: Verdict, sets: list[dict], on_screen: str | None = None) -> str:
    """Where the runs on screen do not show the paper's result, a pointer to a bundled
    reference set that does in every seed: its set.json claims it, and `reference check` (and
    the tests) recompute that claim from its records. ``sets``: ui.reference_sets();
    ``on_screen``: the title of a set already shown (no pointer to itself). "" otherwise."""
    claim = CLAIM_OF.get(v.claim)
    if v.outcome not in ("contradicts", "unclear", "mixed") or claim is None:
        return ""
    if v.numbers.get("kind", "resnet") != "resnet":  # the claims are about ResNets (not pre-act)
        return ""
    titles = [
        s["title"]
        for s in sets
        if claim in (s.get("meta") or {}).get("claims", []) and s["title"] != on_screen
    ]
    if not titles:
        return ""
    return (
        f" The bundled reference set “{titles[0]}” does show it at the end of its runs, in every seed "
        "(its records are checked by `python -m resnet_core reference check`): pick its runs under "
        "Reference runs."
    )


def residual_vs_plain(finals, budgets=(), col: str = "train_error_pct", whose: str = "these") -> Verdict:
    """At the same depth, the residual net ends lower than its plain twin (deepest such pair)."""
    d = _frame(finals)
    if not len(d):
        return Verdict("residual_vs_plain", "missing", "", {})
    kind = _residual_kind(d, col)
    r, p = _by_depth(d, kind, col), _by_depth(d, "plain", col)
    common = sorted(set(r.index) & set(p.index))
    if not common:
        return Verdict("residual_vs_plain", "missing", "", {})
    k = common[-1]
    what = "training" if col.startswith("train") else "test"
    c = _cmp(r[k], p[k], ERROR_MARGIN)
    nums = {"residual": float(r[k]), "plain": float(p[k]), "depth": int(k)}
    head = (
        f"In {whose} runs at depth {int(k)}, {name(kind, k)} ends at "
        f"{_pct(d, kind, k, col, r[k])} final {what} error against {name('plain', k)}'s "
        f"{_pct(d, 'plain', k, col, p[k])}: "
    )
    paper = "residual nets end below plain nets of the same depth (Fig. 6)"
    if c < 0:
        return Verdict(
            "residual_vs_plain",
            "agrees",
            head + f"the shortcuts gain {p[k] - r[k]:.1f} points." + _agrees(paper),
            nums,
        )
    out = "unclear" if c == 0 else "contradicts"
    return Verdict(
        "residual_vs_plain",
        out,
        head
        + (
            "**no clear difference**."
            if c == 0
            else f"the residual net is **worse**, by {r[k] - p[k]:.1f} points."
        )
        + _differs(paper, budgets),
        nums,
    )


def degradation(finals, budgets=(), col: str = "train_error_pct", whose: str = "these") -> list[Verdict]:
    """The three Fig. 6 verdicts that the runs can answer, in the order a class reads them."""
    vs = [
        plain_depth(finals, budgets, col, whose),
        residual_vs_plain(finals, budgets, col, whose),
        residual_depth(finals, budgets, col, whose),
    ]
    return [v for v in vs if v]


# --- Fig. 7: layer responses -----------------------------------------------------------------
def responses(means, budgets=(), whose: str = "these") -> Verdict:
    """ResNets' layers respond more weakly than plain nets', deeper ResNets more weakly still
    (He et al. Fig. 7). ``means``: rows of kind, depth and mean_std (mean over a run's BN
    outputs at one step; several runs of a kind and depth are averaged)."""
    d = _frame(means)
    if not len(d):
        return Verdict("responses", "missing", "", {})
    kind = _residual_kind(d, "mean_std")
    r, p = _by_depth(d, kind, "mean_std"), _by_depth(d, "plain", "mean_std")
    checks, parts, nums = [], [], {"kind": kind}
    for k in sorted(set(r.index) & set(p.index)):
        c = _cmp(r[k] / p[k], 1.0, STD_MARGIN)
        checks.append(-c)
        nums[f"{kind}-{int(k)}/plain-{int(k)}"] = (float(r[k]), float(p[k]))
        word = "more weakly" if c < 0 else ("about as strongly" if c == 0 else "**more strongly**")
        parts.append(
            f"{name(kind, k)}'s layers respond {word} than {name('plain', k)}'s "
            f"(mean std {r[k]:.2f} vs {p[k]:.2f})"
        )
    if len(r) >= 2:
        lo, hi = r.index[0], r.index[-1]
        c = _cmp(r[hi] / r[lo], 1.0, STD_MARGIN)
        checks.append(-c)
        nums[f"{kind}-{int(hi)}/{kind}-{int(lo)}"] = (float(r[hi]), float(r[lo]))
        word = "more weakly" if c < 0 else ("about as strongly" if c == 0 else "**more strongly**")
        parts.append(
            f"{name(kind, hi)}'s respond {word} than {name(kind, lo)}'s ({r[hi]:.2f} vs {r[lo]:.2f})"
        )
    if not checks:
        return Verdict("responses", "missing", "", {})
    outcome = (
        "agrees"
        if all(c > 0 for c in checks)
        else "contradicts"
        if all(c < 0 for c in checks)
        else "unclear"
        if all(c == 0 for c in checks)
        else "mixed"
    )
    paper = (
        "ResNets' layers respond more weakly than plain nets', and deeper ResNets' more weakly still (Fig. 7)"
    )
    text = f"In {whose} runs, " + "; ".join(parts) + "."
    text += (
        f" As He et al. report: {paper}."
        if outcome == "agrees"
        else f" {'The opposite of' if outcome == 'contradicts' else 'Only partly as in'} the paper: "
        f"He et al. report that {paper}; the likely reason is {budget_note(budgets)}."
    )
    return Verdict("responses", outcome, text, nums)


def response_means(resp, runs) -> pd.DataFrame:
    """Rows for ``responses``: each run's mean layer-response std (``resp``: run_id, std, as drawn)
    with its kind and depth (``runs``: id, kind, depth)."""
    resp, runs = _frame(resp), _frame(runs)
    if not len(resp) or not len(runs):
        return pd.DataFrame(columns=["run_id", "kind", "depth", "mean_std"])
    m = resp.groupby("run_id")["std"].mean().rename("mean_std").reset_index()
    return m.merge(runs[["id", "kind", "depth"]], left_on="run_id", right_on="id").drop(columns="id")


# --- gradients at initialization -----------------------------------------------------------------
def fold(v: float) -> str:
    """A ratio as a reader says it: 1,130 rather than 1.13e+03."""
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def gradient_growth(ratios, norm: str = "batch") -> Verdict:
    """At initialization, a deep plain net with BN has weight gradients that grow toward the
    input far more than its residual twin's (Yang et al. 2019). ``ratios``: rows of kind,
    depth and ratio (first main conv's weight-gradient norm over the last one's)."""
    d = _frame(ratios)
    if not len(d):
        return Verdict("gradient_growth", "missing", "", {})
    p = _by_depth(d, "plain", "ratio")
    kind = _residual_kind(d, "ratio")
    r = _by_depth(d, kind, "ratio")
    if not len(p):
        return Verdict("gradient_growth", "missing", "", {})
    k = max(set(p.index) & set(r.index)) if set(p.index) & set(r.index) else p.index[-1]

    def grows(v):
        return (
            f"grows {fold(v)}-fold toward the input"
            if v > 1
            else f"shrinks to {v:.3g} of its size toward the input"
        )

    nums = {"plain": float(p[k]), "depth": int(k)}
    text = f"Measured here: {name('plain', k)}'s weight-gradient norm {grows(p[k])}"
    if k in r.index:
        nums["residual"] = float(r[k])
        text += f", {name(kind, k)}'s {grows(r[k])}"
        agree = p[k] > 1 and p[k] > r[k]
    else:
        agree = p[k] > 1
    text += "."
    paper = (
        "with BN, the gradients of a deep plain net explode toward the input at "
        "initialization (Yang et al. 2019), and shortcuts keep them in check"
    )
    if norm != "batch":
        return Verdict(
            "gradient_growth",
            "unclear",
            text + " (Without BN the papers' claim about BN'd nets does not apply.)",
            nums,
        )
    if agree:
        return Verdict("gradient_growth", "agrees", text + f" As reported: {paper}.", nums)
    return Verdict(
        "gradient_growth",
        "contradicts",
        text + f" Not what is reported: {paper}; "
        "at this depth, width and batch the effect may be too small to show.",
        nums,
    )


# --- lesions (Veit et al. 2016) --------------------------------------------------------------
def lesion_row(label: str, kind: str, table) -> dict:
    """One row for ``lesions`` from a one-block-at-a-time lesion table (block, error, delta,
    downsampling; fractions)."""
    t = _frame(table)
    keep = ~t["downsampling"].astype(bool)
    worst = t.loc[t["delta"].idxmax()]
    return {
        "label": label,
        "kind": kind,
        "base": 100 * float(t["base_error"].iloc[0]),
        "keep": 100 * float(t.loc[keep, "delta"].mean()) if keep.any() else float("nan"),
        "worst_block": str(worst["block"]),
        "worst": 100 * float(worst["delta"]),
        "worst_downsampling": bool(worst["downsampling"]),
    }


def lesions(rows) -> Verdict:
    """Deleting one block of a residual net barely changes test error except at downsampling
    blocks; deleting one from a plain net is catastrophic (Veit et al. 2016). ``rows``: one
    per run: label, kind, base (error intact, %), keep (mean rise at blocks that keep the
    shape, points), worst_block, worst (its rise, points), worst_downsampling (bool)."""
    d = _frame(rows)
    if not len(d):
        return Verdict("lesions", "missing", "", {})
    res, plain = d[d["kind"].isin(RESIDUAL)], d[d["kind"] == "plain"]
    parts, checks = [], []
    for _, r in d.iterrows():
        where = "a downsampling block" if r["worst_downsampling"] else "a block that keeps the shape"
        parts.append(
            f"{r['label']}: {r['keep']:+.1f} points on average at blocks that keep the "
            f"shape; worst {r['worst_block']} ({r['worst']:+.1f}, {where})"
        )
    if len(res):
        lim = plain["keep"].min() / 2 if len(plain) else BARELY_POINTS
        checks.append(bool(res["keep"].max() < lim))
        checks.append(bool(res["worst_downsampling"].all()))
    if len(plain) and len(res):
        checks.append(bool(plain["keep"].min() > res["keep"].max()))
    nums = {"keep": dict(zip(d["label"], d["keep"])), "checks": checks}
    if not checks:
        return Verdict("lesions", "missing", "", {})
    outcome = "agrees" if all(checks) else ("contradicts" if not any(checks) else "mixed")
    paper = (
        "Veit et al. (2016) report that deleting one block of a residual net barely changes "
        "test error except at downsampling blocks, and deleting a layer of a plain net is "
        "catastrophic"
    )
    text = "Deleting one block: " + "; ".join(parts) + ". "
    text += (
        f"As {paper}."
        if outcome == "agrees"
        else f"{'These runs disagree' if outcome == 'contradicts' else 'These runs agree only in part'}"
        f": {paper} "
        "(on ImageNet and on CIFAR-10 after a full schedule); a short run's blocks may not "
        "yet have settled into small corrections."
    )
    return Verdict("lesions", outcome, text, nums)


# --- loss landscapes (Li et al. 2018) ----------------------------------------------------------
def landscape(rows) -> Verdict:
    """Without shortcuts, a deep net's loss landscape is rougher (Li et al. 2018). ``rows``:
    one per run: label, kind, depth, roughness (share of points that are extra local minima)."""
    d = _frame(rows)
    if not len(d) or not (d["kind"] == "plain").any() or not d["kind"].isin(RESIDUAL).any():
        return Verdict("landscape", "missing", "", {})
    p = d[d["kind"] == "plain"]["roughness"].max()
    r = d[d["kind"].isin(RESIDUAL)]["roughness"].max()
    nums = {"plain": float(p), "residual": float(r)}
    head = f"Roughness here: plain {p:.3f}, residual {r:.3f}: "
    paper = (
        "Li et al. (2018) report that without shortcuts the landscape of a deep net turns "
        "chaotic, and stays smooth with them (the effect is clear from about 56 layers)"
    )
    if p > r:
        return Verdict("landscape", "agrees", head + f"the plain net's slice is **rougher**. {paper}.", nums)
    if p == r:
        return Verdict(
            "landscape",
            "unclear",
            head + f"**no difference** along this slice. {paper}; "
            "a shallow net, a short run or a single slice may not show it.",
            nums,
        )
    return Verdict(
        "landscape",
        "contradicts",
        head + f"the residual net's slice is **rougher**. "
        f"{paper}; a shallow net, a short run or a single slice may not show it.",
        nums,
    )


# --- gradient shattering (Balduzzi et al. 2017) ------------------------------------------------
def shattering(lag1) -> Verdict:
    """At the greatest depth measured, the plain net's gradient is more shattered (lower lag-1
    autocorrelation) than the residual net's. ``lag1``: rows of kind, depth, mean."""
    d = _frame(lag1)
    if not len(d):
        return Verdict("shattering", "missing", "", {})
    p, r = _by_depth(d, "plain", "mean"), _by_depth(d, _residual_kind(d, "mean"), "mean")
    common = sorted(set(p.index) & set(r.index))
    if not common:
        return Verdict("shattering", "missing", "", {})
    k = common[-1]
    nums = {"plain": float(p[k]), "residual": float(r[k]), "depth": int(k)}
    head = f"At depth {int(k)}, lag-1 autocorrelation {p[k]:.2f} plain against {r[k]:.2f} residual: "
    paper = (
        "Balduzzi et al. (2017) report that plain nets' gradients shatter with depth and "
        "residual nets' much less"
    )
    if p[k] < r[k]:
        return Verdict(
            "shattering",
            "agrees",
            head + f"the plain net's gradient is **more shattered**, as {paper}.",
            nums,
        )
    return Verdict(
        "shattering",
        "contradicts",
        head + f"the plain net's gradient is **not more shattered**, unlike what {paper}.",
        nums,
    )
