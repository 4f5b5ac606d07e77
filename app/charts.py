"""Chart builders: data in, plotly figure out. Pure (no streamlit, no disk), tested without a
server.

Colors: a run keeps one color on every page. Hue tells the family (plain: oranges/reds,
ResNet: blues, pre-activation ResNet: greens), lightness tells the depth (deeper is darker,
at least 10 CIELAB L* apart between the paper's depths, so they part in grayscale too), so
a panel of one family reads "colored by depth" as in the paper's Fig. 6, and two runs of the
same model get a small hue shift (``variant``).
"""

from __future__ import annotations

import colorsys
import functools
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

TEMPLATE = "plotly_white"
REF_COLORS = {"plain": "#7f2704", "resnet": "#08306b", "preresnet": "#00441b"}

# --- reference values (the papers and reproductions each row names) ------------------------
# (source, kind, depth, test error %, std or None)
REFERENCES: list[tuple[str, str, int, float, float | None]] = (
    [
        ("paper Table 6", "resnet", d, e, None)
        for d, e in [(20, 8.75), (32, 7.51), (44, 7.17), (56, 6.97), (110, 6.43), (1202, 7.93)]
    ]
    + [
        ("paper Fig. 6 (read off)", "plain", d, e, None)
        for d, e in [(20, 9.5), (32, 10.0), (44, 12.0), (56, 13.5)]
    ]
    + [
        ("akamaster", "resnet", d, e, None)
        for d, e in [(20, 8.27), (32, 7.37), (44, 6.90), (56, 6.61), (110, 6.32), (1202, 6.18)]
    ]
    + [
        ("nabla0001 (5 seeds)", "resnet", d, e, s)
        for d, e, s in [(20, 8.51, 0.22), (56, 7.40, 0.27), (110, 7.14, 0.20)]
    ]
    + [("nabla0001 (5 seeds)", "plain", d, e, s) for d, e, s in [(20, 9.78, 0.13), (56, 12.95, 0.22)]]
    + [("a-martyn", "plain", d, e, None) for d, e in [(20, 9.5), (32, 9.92), (44, 11.35), (56, 12.76)]]
    + [("a-martyn", "resnet", d, e, None) for d, e in [(20, 8.0), (32, 7.51), (44, 7.38), (56, 7.33)]]
)
REF_SYMBOLS = {
    "paper Table 6": "x-thin-open",
    "paper Fig. 6 (read off)": "x-thin-open",
    "akamaster": "diamond-open",
    "nabla0001 (5 seeds)": "circle-open",
    "a-martyn": "square-open",
}


def references_frame() -> pd.DataFrame:
    return pd.DataFrame(REFERENCES, columns=["source", "kind", "depth", "test_error_pct", "std_pct"])


# One lightness per depth (CIELAB L*, 10.4 apart), so that depths in a family stay apart
# in grayscale and on a washed-out projector: the paper's Fig. 6 gives each depth its own
# colour. Depths between these anchors get a lightness in between (on log depth).
DEPTH_LIGHTNESS = (
    (8, 85.0),
    (14, 74.6),
    (20, 64.2),
    (32, 53.8),
    (44, 43.4),
    (56, 33.0),
    (110, 22.6),
    (1202, 12.2),
)
# LCh hue (degrees) of each family, from its lightest depth to its darkest: plain runs go
# orange to red-brown, ResNets sky blue to deep blue-violet, pre-activation ResNets greens.
FAMILY_HUES = {"plain": (75.0, 30.0), "resnet": (235.0, 285.0), "preresnet": (150.0, 135.0)}
OTHER_HUES = (320.0, 300.0)


def depth_lightness(depth) -> float:
    """The CIELAB lightness L* of a run of this depth (50 when the depth is unknown)."""
    try:
        d = float(depth)
    except (TypeError, ValueError):
        return 50.0
    if not math.isfinite(d) or d <= 0:
        return 50.0
    xs = [math.log(a) for a, _ in DEPTH_LIGHTNESS]
    return float(np.interp(math.log(d), xs, [v for _, v in DEPTH_LIGHTNESS]))


def _lab_to_srgb(L: float, a: float, b: float) -> tuple[float, float, float] | None:
    """CIELAB (D65) to sRGB in 0..1; None when the colour is outside the sRGB gamut."""
    fy = (L + 16) / 116
    finv = lambda t: t**3 if t > 6 / 29 else 3 * (6 / 29) ** 2 * (t - 4 / 29)
    x, y, z = 0.95047 * finv(fy + a / 500), finv(fy), 1.08883 * finv(fy - b / 200)
    lin = (
        3.2406 * x - 1.5372 * y - 0.4986 * z,
        -0.9689 * x + 1.8758 * y + 0.0415 * z,
        0.0557 * x - 0.2040 * y + 1.0570 * z,
    )
    if any(c < -1e-6 or c > 1 + 1e-6 for c in lin):
        return None
    return tuple(
        12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055
        for c in (min(1.0, max(0.0, c)) for c in lin)
    )


def _lch_color(L: float, hue_deg: float, chroma: float = 70.0) -> tuple[float, float, float]:
    """The most saturated sRGB colour (up to ``chroma``) of lightness L* and this hue: the
    lightness is kept exactly, only the saturation gives way to the gamut."""
    h = math.radians(hue_deg)
    lo, hi = 0.0, chroma
    for _ in range(30):  # bisection on chroma; chroma 0 (a gray) is always in gamut
        mid = (lo + hi) / 2
        if _lab_to_srgb(L, mid * math.cos(h), mid * math.sin(h)) is None:
            hi = mid
        else:
            lo = mid
    return _lab_to_srgb(L, lo * math.cos(h), lo * math.sin(h))


@functools.lru_cache(maxsize=1024)
def run_color(kind, depth, variant: int = 0) -> str:
    """The color of a run: hue by family, lightness by depth (deeper is darker, CIELAB L*
    from DEPTH_LIGHTNESS); ``variant`` shifts the hue a little for a second (third, ...) run
    of the same model. Returns "#rrggbb"."""
    L = depth_lightness(depth)
    h0, h1 = FAMILY_HUES.get(kind, OTHER_HUES)
    t = (DEPTH_LIGHTNESS[0][1] - L) / (DEPTH_LIGHTNESS[0][1] - DEPTH_LIGHTNESS[-1][1])
    r, g, b = _lch_color(L, h0 + (h1 - h0) * min(1.0, max(0.0, t)))
    if variant:
        h, light, s = colorsys.rgb_to_hls(r, g, b)
        step = ((variant + 1) // 2) * (1 if variant % 2 else -1)
        h = (h + 0.045 * step) % 1.0
        light = min(0.8, max(0.15, light + 0.05 * step))
        r, g, b = colorsys.hls_to_rgb(h, light, s)
    return "#" + "".join(f"{int(round(255 * min(1, max(0, c)))):02x}" for c in (r, g, b))


def _color_map(runs: pd.DataFrame) -> dict:
    return dict(zip(runs["id"], runs["color"])) if len(runs) else {}


def _label_map(runs: pd.DataFrame) -> dict:
    return dict(zip(runs["id"], runs["label"])) if len(runs) else {}


def _ref_map(runs: pd.DataFrame) -> dict:
    """run id -> True for bundled reference runs (rows with a non-empty ``reference``)."""
    if not len(runs) or "reference" not in runs.columns:
        return {}
    return {i: isinstance(r, str) and bool(r) for i, r in zip(runs["id"], runs["reference"])}


# Log axes label every tick with its full value ("0.002", "50"): plotly's default labels the
# ticks between powers of ten "2" and "5" alone, which repeat without their powers.
LOG_TICKS = "~g"


def log_ticks(values) -> dict:
    """Tick settings of a log axis over ``values``: full-value labels, at 1, 2 and 5 times
    each power of ten over at most 2 decades (plotly's own choice there labels every digit,
    which crowds once each label is a full number), one per power over more."""
    v = np.asarray(pd.to_numeric(pd.Series(np.ravel(values)), errors="coerce"), dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    span = math.log10(v.max() / v.min()) if v.size else 0.0
    return dict(tickformat=LOG_TICKS, dtick="D2" if span <= 2 else 1)


REF_OPACITY = 0.55  # reference runs are drawn fainter, so the user's own runs stand out


def _line_mode(n: int) -> str:
    """A line of one point draws nothing: a single evaluation (a `quick` run's) is a marker
    alone, so its legend entry is a point too; short series get markers as well."""
    return "markers" if n == 1 else "lines+markers" if n <= 3 else "lines"


ONE_POINT = " (one evaluation: a point)"  # legend suffix of a series with a single point


def empty_figure(message: str, height: int = 320) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(
        text=message,
        showarrow=False,
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        font=dict(size=14, color="#666"),
    )
    fig.update_layout(template=TEMPLATE, height=height, xaxis_visible=False, yaxis_visible=False)
    return fig


def _legend_below(fig: go.Figure, height: int, top: int = 30) -> go.Figure:
    """The common layout of the small figures: the lab's template, the legend in a row below
    the axes (under their titles), ``top`` pixels for a title or subplot titles."""
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        margin=dict(t=top, b=40, l=50, r=10),
        legend=dict(orientation="h", y=-0.25),
    )
    return fig


def _pct(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else 100.0 * v


# --- Fig. 6: degradation curves ---------------------------------------------------------
def _rgba(color: str, alpha: float) -> str:
    c = str(color or "#888888").lstrip("#")
    try:
        r, g, b = (int(c[i : i + 2], 16) for i in (0, 2, 4))
    except ValueError:
        r, g, b = 136, 136, 136
    return f"rgba({r},{g},{b},{alpha})"


def mean_band(metrics: pd.DataFrame, run_ids, split: str) -> pd.DataFrame:
    """Per step, the mean, sample std (ddof=1) and count of ``split``'s error (in percent)
    over the runs ``run_ids`` that logged that step. Columns: step, mean, std, n."""
    m = (
        metrics[
            metrics["run_id"].isin(list(run_ids)) & (metrics["split"] == split) & metrics["error"].notna()
        ]
        if len(metrics)
        else metrics
    )
    if not len(m):
        return pd.DataFrame(columns=["step", "mean", "std", "n"])
    # one value per run and step (a resumed run may log a step twice: keep its last line)
    m = m.drop_duplicates(["run_id", "step"], keep="last")
    g = (100.0 * m["error"].astype(float)).groupby(m["step"])
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()})
    return out.reset_index().sort_values("step").reset_index(drop=True)


def _split_traces(
    fig, d_x, y, name, color, dash, width, col, legendgroup, showlegend, opacity, hover, customdata=None
):
    one = len(d_x) == 1  # a single evaluation reads as a point, and the legend says so
    fig.add_trace(
        go.Scatter(
            x=d_x,
            y=y,
            mode=_line_mode(len(d_x)),
            name=name + (ONE_POINT if one else ""),
            customdata=customdata,
            marker=dict(size=12 if one else 9, color=color),
            legendgroup=legendgroup,
            showlegend=showlegend,
            opacity=opacity,
            line=dict(color=color, dash=dash, width=width),
            hovertemplate=hover,
        ),
        row=1,
        col=col,
    )


def degradation_figure(
    metrics: pd.DataFrame,
    runs: pd.DataFrame,
    train_split: str = "train",
    height: int = 460,
    seed_sets: pd.Series | None = None,
) -> go.Figure:
    """Training error dashed, test error solid, against iterations; plain on the left,
    residual on the right, each run in its color.

    ``metrics``: rows with run_id, step, split, error (0..1). ``runs``: id, label, kind,
    depth, color. ``train_split``: "train" (the running training error) or "train_eval"
    (training images re-scored in eval mode). ``seed_sets`` (runs_data.seed_sets, aligned
    with ``runs``): runs sharing a key that holds two or more runs are drawn as one line at
    their mean per step with a band of +- one standard deviation (ddof=1); without it, or for
    a key of one run, each run is its own line."""
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=("Plain nets", "Residual nets"),
    )
    colors, labels, refs = _color_map(runs), _label_map(runs), _ref_map(runs)
    if seed_sets is not None and len(runs):
        runs = runs.assign(_set=seed_sets.reindex(runs.index).fillna(runs["id"]).values)
    else:
        runs = runs.assign(_set=runs["id"]) if len(runs) else runs.assign(_set=[])
    runs = runs.sort_values(["depth", "id"], na_position="last") if len(runs) else runs
    ymax = 0.0
    for key, members in runs.groupby("_set", sort=False):
        r = members.iloc[0]
        col = 1 if r["kind"] == "plain" else 2
        if len(members) >= 2:
            ymax = max(ymax, _add_mean_band(fig, metrics, members, train_split, col, str(key)))
            continue
        m = metrics[metrics["run_id"] == r["id"]] if len(metrics) else metrics
        for split, dash, width in ((train_split, "dash", 1.3), ("test", "solid", 2.6)):
            d = m[(m["split"] == split) & m["error"].notna()].sort_values("step") if len(m) else m
            if not len(d):
                continue
            y = 100.0 * d["error"].astype(float)
            ymax = max(ymax, float(y.max()))
            what = "test error" if split == "test" else "training error"
            name = labels.get(r["id"], r["id"])
            _split_traces(
                fig,
                d["step"],
                y,
                name,
                colors.get(r["id"]),
                dash,
                width,
                col,
                r["id"],
                split == "test",
                REF_OPACITY if refs.get(r["id"]) else 1.0,
                f"{name}<br>{what}: %{{y:.2f}}%<br>iteration %{{x}}<extra></extra>",
            )
    _empty_panels(fig)
    fig.update_xaxes(title_text="iterations (steps)")
    fig.update_yaxes(title_text="error (%)", row=1, col=1)
    fig.update_yaxes(range=[0, min(100.0, max(5.0, ymax * 1.05))])
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        margin=dict(t=60, b=40, l=50, r=10),
        legend=dict(orientation="h", y=-0.3, yanchor="top"),
        title=dict(
            text="dashed: training error · solid: test error"
            + (" · bands: ± 1 std over seeds" if runs["_set"].duplicated().any() else ""),
            font=dict(size=13),
            x=0.0,
        ),
    )
    return fig


def _seed_set_name(members: pd.DataFrame) -> str:
    r = members.iloc[0]
    label = str(r.get("label", r["id"]))
    # a run's label ends with its id (and maybe its seed); the set's name replaces both
    parts = [p for p in label.split(" · ") if not p.startswith("seed ")]
    if parts and not (isinstance(r.get("reference"), str) and r.get("reference")):
        parts = parts[:-1]
    return " · ".join(parts) + f" · mean of {len(members)} seeds"


def _add_mean_band(fig, metrics, members, train_split, col, key) -> float:
    """The mean line and the +- std band of one set of seeds; returns the largest y drawn."""
    r = members.iloc[0]
    color = run_color(r["kind"], r["depth"])
    name = _seed_set_name(members)
    is_ref = isinstance(r.get("reference"), str) and bool(r.get("reference"))
    ymax = 0.0
    for split, dash, width, alpha in ((train_split, "dash", 1.3, 0.12), ("test", "solid", 2.6, 0.22)):
        b = mean_band(metrics, members["id"], split)
        if not len(b):
            continue
        what = "test error" if split == "test" else "training error"
        band = b[b["n"] >= 2]
        if len(band):
            hi, lo = band["mean"] + band["std"], band["mean"] - band["std"]
            ymax = max(ymax, float(hi.max()))
            fig.add_trace(
                go.Scatter(
                    x=list(band["step"]) + list(band["step"])[::-1],
                    y=list(hi) + list(lo)[::-1],
                    fill="toself",
                    fillcolor=_rgba(color, alpha * (REF_OPACITY if is_ref else 1.0)),
                    line=dict(width=0),
                    mode="lines",
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=key,
                    name=f"{name} ({what} ± std)",
                ),
                row=1,
                col=col,
            )
        ymax = max(ymax, float(b["mean"].max()))
        _split_traces(
            fig,
            b["step"],
            b["mean"],
            name,
            color,
            dash,
            width,
            col,
            key,
            split == "test",
            REF_OPACITY if is_ref else 1.0,
            f"{name}<br>{what}: mean %{{y:.2f}}% ± %{{customdata[0]:.2f}} "
            "(n=%{customdata[1]})<br>iteration %{x}<extra></extra>",
            customdata=np.stack([b["std"].fillna(0).to_numpy(float), b["n"].to_numpy(int)], axis=-1),
        )
    return ymax


def _empty_panels(fig) -> None:
    for col, what in ((1, "plain"), (2, "residual")):
        if not any(t.xaxis == ("x" if col == 1 else "x2") for t in fig.data):
            # an empty panel still shows its axes, and says why it is empty
            fig.add_trace(
                go.Scatter(
                    x=[0], y=[0], mode="markers", marker=dict(opacity=0), showlegend=False, hoverinfo="skip"
                ),
                row=1,
                col=col,
            )
            fig.add_annotation(
                text=f"no {what} runs selected",
                showarrow=False,
                x=0.5,
                y=0.5,
                xref=f"x{'' if col == 1 else 2} domain",
                yref=f"y{'' if col == 1 else 2} domain",
                font=dict(color="#888"),
            )


def final_errors_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Final test/training error (%) per run with its family and depth."""
    cols = ["id", "label", "kind", "depth", "color", "reference", "test_error_pct", "train_error_pct"]
    if not len(runs):
        return pd.DataFrame(columns=cols)
    df = runs.copy()
    if "reference" not in df.columns:
        df["reference"] = ""
    df["reference"] = df["reference"].fillna("")
    df["test_error_pct"] = [_pct(v) for v in df["test_error"]]
    df["train_error_pct"] = [_pct(v) for v in df["train_error"]]
    return df[cols]


def _kind_word(kind) -> str:
    return "plain" if kind == "plain" else "residual"


def _seed_marks(groups: pd.DataFrame | None, which: str) -> pd.DataFrame:
    """The sets of two or more seeds with a value for ``which``: depth, mean, std, n."""
    if groups is None or not len(groups):
        return pd.DataFrame(
            columns=["kind", "depth", "reference", "label", "color", "mean", "std", "n", "n_runs", "run_ids"]
        )
    g = groups[(groups["n_runs"] >= 2) & (groups[f"{which}_error_n"] >= 1) & groups["depth"].notna()]
    return g.assign(
        mean=g[f"{which}_error_mean"],
        std=g[f"{which}_error_std"],
        n=g[f"{which}_error_n"],
        reference=g["reference"].fillna(""),
    )


def _mean_std_trace(k: pd.DataFrame, name: str, which: str, symbol: str, color, **kw) -> go.Scatter:
    return go.Scatter(
        x=k["depth"],
        y=k["mean"],
        mode="markers",
        name=name,
        error_y=dict(
            type="data",
            array=k["std"].fillna(0).to_numpy(float),
            visible=True,
            thickness=2,
            width=6,
            color=color,
        ),
        marker=dict(symbol=symbol, size=13, color=k["color"], line=dict(color="white", width=1)),
        text=k["label"],
        customdata=np.stack([k["std"].fillna(0).to_numpy(float), k["n"].to_numpy(int)], axis=-1),
        hovertemplate="%{text}<br>depth %{x}<br>" + which + " error mean %{y:.2f}% "
        "± %{customdata[0]:.2f} (n=%{customdata[1]})<extra></extra>",
        **kw,
    )


def final_error_figure(
    finals: pd.DataFrame,
    which: str = "test",
    references: bool = True,
    height: int = 460,
    groups: pd.DataFrame | None = None,
    show_runs: bool = False,
) -> go.Figure:
    """Final error against depth, plain and residual; each run a marker in its color, a line
    through each family's mean per depth, and the paper's / reproductions' values as open
    reference marks (CIFAR-10, full budget).

    ``groups`` (runs_data.seed_groups): a set of two or more seeds is one mark at its mean
    with an error bar of one standard deviation (ddof=1) instead of a marker per run; with
    ``show_runs`` its single runs are drawn too, as small open circles."""
    col = "test_error_pct" if which == "test" else "train_error_pct"
    fig = go.Figure()
    d = finals[finals[col].notna() & finals["depth"].notna()] if len(finals) else finals
    if len(d) and "reference" not in d.columns:
        d = d.assign(reference="")
    marks = _seed_marks(groups, which)
    in_sets = {i for ids in marks["run_ids"] for i in ids} if len(marks) else set()
    members = d[d["id"].isin(in_sets)] if len(d) else d
    single = d[~d["id"].isin(in_sets)] if len(d) else d
    is_ref = (single["reference"].fillna("") != "") if len(single) else pd.Series(dtype=bool)
    _bundled_traces(
        fig, single[is_ref] if len(single) else single, marks[marks["reference"] != ""], col, which
    )
    own, own_marks = (single[~is_ref] if len(single) else single), marks[marks["reference"] == ""]
    own_all = d[d["reference"].fillna("") == ""] if len(d) else d
    for kind in ("plain", "resnet", "preresnet"):
        _own_kind_traces(fig, kind, own_all, own, own_marks, col, which)
    if show_runs and len(members):
        _member_traces(fig, members, col, which)
    if references and which == "test":
        _paper_traces(fig)
    fig.update_xaxes(title_text="depth (weighted layers)", type="log", tickvals=[8, 20, 56, 110, 1202])
    fig.update_yaxes(title_text=f"final {which} error (%)", rangemode="tozero")
    # the legend hangs below the axis title (long names wrap into several rows)
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        margin=dict(t=40, b=40, l=50, r=10),
        legend=dict(font=dict(size=10), orientation="h", y=-0.3, yanchor="top"),
        title=dict(text=f"final {which} error against depth", font=dict(size=13)),
    )
    if not len(d) and not (references and which == "test"):
        fig.add_annotation(
            text="no finished evaluations yet", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper"
        )
    return fig


def _own_kind_traces(fig, kind: str, own_all, own, own_marks, col: str, which: str) -> None:
    """One family's own runs on the final-error figure: the mean line per depth (over all its
    runs), a marker per single run, and a mean ± std mark per seed set."""
    k_all = own_all[own_all["kind"] == kind] if len(own_all) else own_all
    if not len(k_all):
        return
    mean = k_all.groupby("depth")[col].mean().sort_index()
    fig.add_trace(
        go.Scatter(
            x=mean.index,
            y=mean.values,
            mode="lines",
            line=dict(color=REF_COLORS[kind], width=1.5),
            name=f"{_kind_word(kind)} (mean of your runs)",
            hoverinfo="skip",
        )
    )
    k = own[own["kind"] == kind] if len(own) else own
    if len(k):
        fig.add_trace(
            go.Scatter(
                x=k["depth"],
                y=k[col],
                mode="markers",
                name=f"your {kind} runs",
                marker=dict(color=k["color"], size=12, line=dict(color="white", width=1)),
                text=k["label"],
                customdata=k["id"],
                hovertemplate="%{text}<br>depth %{x}<br>" + which + " error %{y:.2f}%<extra></extra>",
            )
        )
    km = own_marks[own_marks["kind"] == kind]
    if len(km):
        fig.add_trace(
            _mean_std_trace(km, f"your {kind} runs: mean ± std over seeds", which, "circle", REF_COLORS[kind])
        )


def _bundled_traces(fig, bundled: pd.DataFrame, marks: pd.DataFrame, col: str, which: str):
    """Bundled reference runs: stars on a dotted line per set and family; a set of seeds is
    one star at its mean with an error bar."""
    pts = (
        pd.concat(
            [
                bundled.assign(mean=bundled[col], std=np.nan, n=1)[
                    ["reference", "kind", "depth", "mean", "std", "n", "label", "color"]
                ]
                if len(bundled)
                else None,
                marks[["reference", "kind", "depth", "mean", "std", "n", "label", "color"]]
                if len(marks)
                else None,
            ]
        )
        if (len(bundled) or len(marks))
        else pd.DataFrame()
    )
    for (title, kind), k in pts.groupby(["reference", "kind"], sort=False) if len(pts) else []:
        k = k.sort_values("depth")
        color = REF_COLORS.get(kind, "#444")
        fig.add_trace(
            go.Scatter(
                x=k["depth"],
                y=k["mean"],
                mode="lines+markers",
                name=f"reference: {title} ({_kind_word(kind)})",
                line=dict(color=color, width=1.2, dash="dot"),
                marker=dict(
                    symbol="star", size=11, color=k["color"], opacity=0.8, line=dict(color=color, width=1)
                ),
                error_y=dict(
                    type="data",
                    array=k["std"].fillna(0).to_numpy(float),
                    visible=bool(k["std"].notna().any()),
                    color=color,
                ),
                text=[
                    f"{lb}<br>depth {dp:g}<br>{which} error "
                    + (f"mean {m:.2f}% ± {sd:.2f} (n={n})" if n >= 2 else f"{m:.2f}%")
                    for lb, dp, m, sd, n in zip(k["label"], k["depth"], k["mean"], k["std"], k["n"])
                ],
                hovertemplate="%{text}<extra></extra>",
            )
        )


def _member_traces(fig, members: pd.DataFrame, col: str, which: str):
    """The single runs behind the mean ± std marks, one click away."""
    for kind, k in members.groupby("kind", sort=False):
        fig.add_trace(
            go.Scatter(
                x=k["depth"],
                y=k[col],
                mode="markers",
                name=f"single {kind} runs (seeds)",
                marker=dict(symbol="circle-open", size=8, color=k["color"], line=dict(width=1.5)),
                text=k["label"],
                customdata=k["id"],
                hovertemplate="%{text}<br>depth %{x}<br>" + which + " error %{y:.2f}%<extra></extra>",
            )
        )


def _paper_traces(fig):
    ref = references_frame()
    for (source, kind), g in ref.groupby(["source", "kind"], sort=False):
        fig.add_trace(
            go.Scatter(
                x=g["depth"],
                y=g["test_error_pct"],
                mode="markers",
                name=f"{source} ({'plain' if kind == 'plain' else 'ResNet'}, CIFAR-10)",
                marker=dict(
                    symbol=REF_SYMBOLS.get(source, "circle-open"),
                    size=10,
                    color=REF_COLORS.get(kind, "#444"),
                    line=dict(width=1.5),
                ),
                error_y=dict(
                    type="data", array=g["std_pct"].fillna(0), visible=bool(g["std_pct"].notna().any())
                ),
                hovertemplate=f"{source} {kind}-%{{x}}: %{{y:.2f}}%<extra></extra>",
                legendgroup="references",
                visible=True,
            )
        )


# --- Fig. 7: layer responses ------------------------------------------------------------
def responses_frame(layers: pd.DataFrame) -> pd.DataFrame:
    """Layer-response std (``type="response"`` rows) per layer at one step per run: run_id,
    layer, index (1..L, in order), std, rank (1 = largest)."""
    d = layers[(layers["type"] == "response") & layers["std"].notna()].copy() if len(layers) else layers
    if not len(d):
        return pd.DataFrame(columns=["run_id", "step", "layer", "index", "std", "rank"])
    d = d.sort_values(["run_id", "order"])
    d["index"] = d.groupby("run_id").cumcount() + 1
    d["rank"] = d.groupby("run_id")["std"].rank(ascending=False, method="first").astype(int)
    return d[["run_id", "step", "layer", "index", "std", "rank"]].reset_index(drop=True)


def responses_figure(resp: pd.DataFrame, runs: pd.DataFrame, height: int = 580) -> go.Figure:
    """The paper's Fig. 7: std of each 3x3 layer's output (after BN if any, before ReLU/addition),
    top in layer order, bottom sorted by magnitude."""
    fig = make_subplots(
        rows=2, cols=1, vertical_spacing=0.2, subplot_titles=("in layer order", "sorted by magnitude")
    )
    colors, labels, refs = _color_map(runs), _label_map(runs), _ref_map(runs)
    for rid, g in resp.groupby("run_id", sort=False):
        g = g.sort_values("index")
        name = labels.get(rid, rid)
        dash = "dot" if refs.get(rid) else "solid"
        fig.add_trace(
            go.Scatter(
                x=g["index"],
                y=g["std"],
                mode="lines+markers",
                name=name,
                legendgroup=rid,
                line=dict(color=colors.get(rid), width=2, dash=dash),
                marker=dict(size=4),
                text=g["layer"],
                hovertemplate=name + "<br>%{text}: std %{y:.3f}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        s = g.sort_values("rank")
        fig.add_trace(
            go.Scatter(
                x=s["rank"],
                y=s["std"],
                mode="lines",
                name=name,
                legendgroup=rid,
                showlegend=False,
                line=dict(color=colors.get(rid), width=2, dash=dash),
                text=s["layer"],
                hovertemplate=name + "<br>%{text}: std %{y:.3f}<extra></extra>",
            ),
            row=2,
            col=1,
        )
    fig.update_xaxes(title_text="layer index (input → output)", row=1, col=1)
    fig.update_xaxes(title_text="layer rank (largest response first)", row=2, col=1)
    fig.update_yaxes(title_text="std of layer response", rangemode="tozero")
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        margin=dict(t=40, b=40, l=50, r=10),
        legend=dict(orientation="h", y=-0.15),
    )
    return fig


def ratio_frame(layers: pd.DataFrame) -> pd.DataFrame:
    d = layers[(layers["type"] == "block") & layers["f_over_x"].notna()].copy() if len(layers) else layers
    if not len(d):
        return pd.DataFrame(columns=["run_id", "step", "layer", "index", "f_over_x"])
    d = d.sort_values(["run_id", "order"])
    d["index"] = d.groupby("run_id").cumcount() + 1
    return d[["run_id", "step", "layer", "index", "f_over_x"]].reset_index(drop=True)


def ratio_figure(ratios: pd.DataFrame, runs: pd.DataFrame, height: int = 340) -> go.Figure:
    """||F(x)|| / ||x|| per block: how much each residual branch changes its input."""
    fig = go.Figure()
    colors, labels, refs = _color_map(runs), _label_map(runs), _ref_map(runs)
    for rid, g in ratios.groupby("run_id", sort=False):
        g = g.sort_values("index")
        name = labels.get(rid, rid)
        fig.add_trace(
            go.Scatter(
                x=g["index"],
                y=g["f_over_x"],
                mode="lines+markers",
                name=name,
                line=dict(color=colors.get(rid), width=2, dash="dot" if refs.get(rid) else "solid"),
                text=g["layer"],
                hovertemplate=name + "<br>%{text}: ‖F(x)‖/‖x‖ = %{y:.3f}<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="block index (input → output)")
    fig.update_yaxes(title_text="‖F(x)‖ / ‖x‖ (ratio)", rangemode="tozero")
    return _legend_below(fig, height, top=30)


# --- gradient flow ----------------------------------------------------------------------
GRAD_VALUES = {
    "grad_norm": ("weight", "‖∇W‖ (gradient norm)"),
    "grad_to_weight": ("weight", "‖∇W‖ / ‖W‖ (ratio)"),
    "out_grad_norm": ("block", "‖∂L/∂y‖ at block output"),
}


def grad_matrix(layers: pd.DataFrame, value: str = "grad_norm") -> pd.DataFrame:
    """layer (rows, input first) x step (columns) of a gradient statistic."""
    typ = GRAD_VALUES[value][0]
    d = layers[(layers["type"] == typ) & layers[value].notna()] if len(layers) else layers
    if not len(d):
        return pd.DataFrame()
    order = d.groupby("layer")["order"].min().sort_values()
    m = d.pivot_table(index="layer", columns="step", values=value, aggfunc="last")
    return m.reindex(order.index)


def grad_heatmaps(
    mats: list[pd.DataFrame], titles: list[str], value: str = "grad_norm", height: int = 520
) -> go.Figure:
    """Side-by-side layer x step heatmaps of log10 of a gradient statistic, on one color
    scale so the panels compare."""
    n = max(1, len(mats))
    fig = make_subplots(rows=1, cols=n, subplot_titles=titles or None, horizontal_spacing=0.14)
    vals = []
    for m in mats:
        if len(m):
            v = m.to_numpy(dtype=float)
            v = v[(v > 0) & (v == v)]
            vals.extend([float(v.min()), float(v.max())] if v.size else [])
    lo, hi = (math.log10(min(vals)), math.log10(max(vals))) if vals else (0, 1)
    label = GRAD_VALUES[value][1]
    for i, m in enumerate(mats):
        if not len(m):
            continue
        z = m.to_numpy(dtype=float)
        zl = np.where(z > 0, np.log10(np.where(z > 0, z, 1)), np.nan)
        fig.add_trace(
            go.Heatmap(
                z=zl,
                x=[int(c) for c in m.columns],
                y=list(m.index),
                zmin=lo,
                zmax=hi,
                coloraxis="coloraxis",
                customdata=z,
                hovertemplate="%{y}<br>step %{x}<br>" + label + " %{customdata:.3g}<extra></extra>",
            ),
            row=1,
            col=i + 1,
        )
        fig.update_yaxes(autorange="reversed", row=1, col=i + 1, tickfont=dict(size=9))
    fig.update_xaxes(title_text="iterations (steps)")
    fig.update_yaxes(title_text="layer (input at top)", row=1, col=1)
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        margin=dict(t=40, b=40, l=50, r=10),
        coloraxis=dict(colorscale="Viridis", cmin=lo, cmax=hi, colorbar=dict(title=f"log10<br>{label}")),
    )
    return fig


def grad_profile_figure(
    mats: list[pd.DataFrame], names: list[str], colors: list[str], value: str = "grad_norm", height: int = 340
) -> go.Figure:
    """The last logged step's gradient statistic per layer, runs overlaid (log scale)."""
    fig = go.Figure()
    for m, name, color in zip(mats, names, colors):
        if not len(m):
            continue
        last = m.iloc[:, -1]
        fig.add_trace(
            go.Scatter(
                x=list(range(1, len(last) + 1)),
                y=last.values,
                text=list(last.index),
                mode="lines+markers",
                name=f"{name} (step {m.columns[-1]})",
                line=dict(color=color),
                hovertemplate="%{text}: %{y:.3g}<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="layer index (input → output)")
    shown = [m.iloc[:, -1].to_numpy(dtype=float) for m in mats if len(m)]
    fig.update_yaxes(
        title_text=GRAD_VALUES[value][1], type="log", **log_ticks(np.concatenate(shown) if shown else [])
    )
    return _legend_below(fig, height, top=30)


def signal_figure(
    df: pd.DataFrame, value: str, ylabel: str, height: int = 380, log: bool = True
) -> go.Figure:
    """Signal propagation at initialization: ``value`` per layer index, one line per series
    (column ``series``; colors in column ``color`` when present)."""
    fig = go.Figure()
    for series, g in df.groupby("series", sort=False):
        g = g.sort_values("index")
        color = g["color"].iloc[0] if "color" in g.columns else None
        fig.add_trace(
            go.Scatter(
                x=g["index"],
                y=g[value],
                mode="lines+markers",
                name=str(series),
                line=dict(color=color),
                marker=dict(size=4),
                text=g["layer"] if "layer" in g.columns else None,
                hovertemplate="%{text}: %{y:.3g}<extra>" + str(series) + "</extra>",
            )
        )
    fig.update_xaxes(title_text="layer index (input → output)")
    fig.update_yaxes(
        title_text=ylabel,
        type="log" if log else "linear",
        rangemode="normal" if log else "tozero",
        **(log_ticks(df[value]) if log else {}),
    )
    return _legend_below(fig, height, top=30)


# --- comparisons and studies ------------------------------------------------------------
def compare_figure(metrics: pd.DataFrame, runs: pd.DataFrame, height: int = 380) -> go.Figure:
    """Loss and error (train dashed, test solid) of a few runs overlaid."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "error (%)"), horizontal_spacing=0.1)
    colors, labels = _color_map(runs), _label_map(runs)
    for rid in runs["id"]:
        m = metrics[metrics["run_id"] == rid]
        for split, dash in (("train", "dash"), ("test", "solid")):
            d = m[m["split"] == split].sort_values("step")
            if not len(d):
                continue
            name = f"{labels.get(rid, rid)} {split}"
            fig.add_trace(
                go.Scatter(
                    x=d["step"],
                    y=d["loss"],
                    mode=_line_mode(len(d)),
                    name=name,
                    legendgroup=rid,
                    line=dict(color=colors.get(rid), dash=dash),
                ),
                row=1,
                col=1,
            )
            fig.add_trace(
                go.Scatter(
                    x=d["step"],
                    y=100 * d["error"],
                    mode=_line_mode(len(d)),
                    name=name,
                    legendgroup=rid,
                    showlegend=False,
                    line=dict(color=colors.get(rid), dash=dash),
                ),
                row=1,
                col=2,
            )
    fig.update_xaxes(title_text="iterations (steps)")
    fig.update_yaxes(title_text="cross-entropy loss (nats)", row=1, col=1)
    fig.update_yaxes(title_text="error (%)", row=1, col=2, rangemode="tozero")
    return _legend_below(fig, height, top=40)


def series_figure(
    df: pd.DataFrame,
    x: str,
    y: str,
    xlabel: str,
    ylabel: str,
    height: int = 360,
    log_y: bool = False,
    mode: str = "lines+markers",
) -> go.Figure:
    """A generic line chart: one line per ``series`` with optional ``color`` column."""
    fig = go.Figure()
    for series, g in df.groupby("series", sort=False):
        g = g.sort_values(x)
        color = g["color"].iloc[0] if "color" in g.columns else None
        fig.add_trace(
            go.Scatter(x=g[x], y=g[y], mode=mode, name=str(series), line=dict(color=color), showlegend=True)
        )  # one series too: it must be named
    fig.update_xaxes(title_text=xlabel)
    fig.update_yaxes(
        title_text=ylabel, type="log" if log_y else "linear", **(log_ticks(df[y]) if log_y else {})
    )
    return _legend_below(fig, height, top=30)


def embedding_figure(points: pd.DataFrame, title: str, height: int = 420) -> go.Figure:
    """2-D embedding, colored by class: columns x, y, label (class name)."""
    fig = go.Figure()
    for label, g in points.groupby("label", sort=True):
        fig.add_trace(
            go.Scattergl(
                x=g["x"], y=g["y"], mode="markers", name=str(label), marker=dict(size=5, opacity=0.8)
            )
        )
    fig.update_xaxes(title_text="component 1")
    fig.update_yaxes(title_text="component 2")
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        title=dict(text=title, font=dict(size=13)),
        margin=dict(t=40, b=40, l=50, r=10),
        legend=dict(title="class"),
    )
    return fig


def image_figure(
    img,
    title: str = "",
    height: int = 280,
    colorscale: str = "gray",
    overlay=None,
    overlay_title: str = "attribution",
    overlay_range: tuple[float, float] | None = None,
) -> go.Figure:
    """A 2-D array (or H,W,3 uint8) as an image; with ``overlay``, the map beside it (same
    pixel grid), so both stay readable."""
    a = np.asarray(img)
    cols = 2 if overlay is not None else 1
    fig = make_subplots(
        rows=1,
        cols=cols,
        horizontal_spacing=0.04,
        subplot_titles=("image", overlay_title) if cols == 2 else None,
    )
    if a.ndim == 3:
        fig.add_trace(go.Image(z=a), row=1, col=1)
    else:
        fig.add_trace(
            go.Heatmap(
                z=a,
                colorscale=colorscale,
                showscale=False,
                hovertemplate="x %{x} y %{y}: %{z}<extra></extra>",
            ),
            row=1,
            col=1,
        )
    if overlay is not None:
        rng = dict(zmin=overlay_range[0], zmax=overlay_range[1]) if overlay_range else {}
        fig.add_trace(
            go.Heatmap(
                z=np.asarray(overlay),
                colorscale=rgb_scale("Inferno"),
                showscale=True,
                **rng,
                colorbar=dict(thickness=10, len=0.8),
                hovertemplate="x %{x} y %{y}: %{z:.3g}<extra></extra>",
            ),
            row=1,
            col=2,
        )
    fig.update_yaxes(autorange="reversed", visible=False)
    fig.update_xaxes(visible=False)
    for c in range(1, cols + 1):
        fig.update_yaxes(scaleanchor=f"x{'' if c == 1 else c}", row=1, col=c)
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        margin=dict(t=50, b=5, l=5, r=5),
        title=dict(text=title, font=dict(size=12)),
    )
    return fig


def feature_grid_figure(
    maps, title: str = "", n: int = 8, cols: int = 4, height: int = 300, scale: dict | None = None
) -> go.Figure:
    """The first ``n`` channels of a (C, H, W) feature map as small heatmaps, on one colour
    scale with its bar (see feature_scale); the title says how many of how many are shown."""
    a = np.asarray(maps)
    n = min(n, len(a))
    rows = max(1, math.ceil(n / cols))
    title = f"{title}: {'all ' if n == len(a) else f'the first {n} of '}{len(a)} channels"
    fig = make_subplots(
        rows=rows,
        cols=cols,
        horizontal_spacing=0.02,
        vertical_spacing=0.08,
        subplot_titles=[f"ch {i}" for i in range(n)],
    )
    scale = scale or feature_scale(a[:n])  # a shared one (two runs side by side) when given
    for i in range(n):
        fig.add_trace(
            go.Heatmap(
                z=a[i],
                coloraxis="coloraxis",
                hovertemplate=f"channel {i}<br>x %{{x}} y %{{y}}: %{{z:.3f}}<extra></extra>",
            ),
            row=i // cols + 1,
            col=i % cols + 1,
        )
    fig.update_layout(coloraxis=dict(**scale, colorbar=dict(thickness=10, len=0.9)))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    fig.update_annotations(font_size=9)
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        title=dict(text=title, font=dict(size=12)),
        margin=dict(t=40, b=5, l=5, r=5),
    )
    return fig


def lesion_figure(
    tables: list[pd.DataFrame], names: list[str], colors: list[str], height: int = 380
) -> go.Figure:
    """Test error with each block deleted alone (Veit et al. 2016), runs overlaid; hollow
    markers are downsampling blocks. Each table: block, order, downsampling, error, base_error."""
    fig = go.Figure()
    for t, name, color in zip(tables, names, colors):
        t = t.sort_values("order")
        fig.add_trace(
            go.Scatter(
                x=t["order"] + 1,
                y=100 * t["error"],
                mode="lines+markers",
                name=name,
                line=dict(color=color),
                text=t["block"],
                marker=dict(
                    size=9, color=color, symbol=["circle-open" if d else "circle" for d in t["downsampling"]]
                ),
                hovertemplate="%{text} deleted: error %{y:.2f}%<extra>" + name + "</extra>",
            )
        )
        fig.add_hline(y=100 * float(t["base_error"].iloc[0]), line=dict(color=color, dash="dot", width=1))
    fig.update_xaxes(title_text="deleted block (index, input → output)")
    fig.update_yaxes(title_text="test error with the block deleted (%)", rangemode="tozero")
    return _legend_below(fig, height, top=30)


def landscape_2d_figure(
    table: pd.DataFrame, title: str, height: int = 380, zrange: tuple[float, float] | None = None
) -> go.Figure:
    """A 2-D loss slice (columns alpha, beta, loss) as a contour plot of log loss;
    ``zrange`` (log10, from shared_log_range) puts panels side by side on one scale."""
    z = table.pivot(index="beta", columns="alpha", values="loss")
    scale = {}
    if zrange and zrange[1] > zrange[0]:  # the same levels and colours in every panel
        lo, hi = zrange
        scale = dict(
            zmin=lo, zmax=hi, autocontour=False, contours=dict(start=lo, end=hi, size=(hi - lo) / 25)
        )
    fig = go.Figure(
        go.Contour(
            z=np.log10(np.clip(z.to_numpy(dtype=float), 1e-12, None)),
            x=list(z.columns),
            y=list(z.index),
            colorscale="Viridis",
            colorbar=dict(title="log10 loss"),
            ncontours=25,
            **scale,
        )
    )
    fig.update_xaxes(title_text="α (direction 1, filter-normalized)")
    fig.update_yaxes(title_text="β (direction 2)")
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        title=dict(text=title, font=dict(size=12)),
        margin=dict(t=40, b=40, l=50, r=10),
    )
    return fig


SPP_PANELS = (
    ("sq_mean", "avg. channel squared mean"),
    ("var", "avg. channel variance"),
    ("res_var", "F(x): avg. channel variance"),
)


def spp_figure(df: pd.DataFrame, height: int = 400, floor: float = 1e-9) -> go.Figure:
    """Signal propagation plots (Brock, De and Smith 2021): per block (x), the average
    channel squared mean, the average channel variance, and the residual branch's average
    channel variance (three panels, log y), one line per ``series`` (``color`` when present).
    Columns: series, order, block, point, sq_mean, var, res_var. Values below ``floor``
    (zero up to rounding, e.g. the squared mean of a BN output) are not drawn: on a log axis
    rounding noise would look like a measurement."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in SPP_PANELS], horizontal_spacing=0.07)
    for series, g in df.groupby("series", sort=False):
        g = g.sort_values("order")
        color = g["color"].iloc[0] if "color" in g.columns else None
        legend = True  # once per series, on the first panel it has values in
        for c, (col, title) in enumerate(SPP_PANELS):
            v = g[col].astype(float).where(lambda s: s >= floor)
            if not v.notna().any():
                continue
            fig.add_trace(
                go.Scatter(
                    x=g["order"] + 1,
                    y=v,
                    mode="lines+markers",
                    name=str(series),
                    legendgroup=str(series),
                    showlegend=legend,
                    line=dict(color=color),
                    marker=dict(size=4),
                    text=g["block"] + ": " + g["point"],
                    hovertemplate="%{text}<br>" + title + " %{y:.3g}<extra>" + str(series) + "</extra>",
                ),
                row=1,
                col=c + 1,
            )
            legend = False
    fig.update_xaxes(title_text="block (input → output)")
    for c, (col, _) in enumerate(SPP_PANELS):  # each panel its own ticks: its own span of decades
        shown = df[col].astype(float).where(lambda s: s >= floor) if len(df) else df.get(col, [])
        fig.update_yaxes(type="log", **log_ticks(shown), row=1, col=c + 1)
    fig.update_annotations(font_size=12)
    return _legend_below(fig, height, top=40)


def band_figure(
    df: pd.DataFrame,
    x: str,
    xlabel: str,
    ylabel: str,
    height: int = 360,
    log_y: bool = False,
    percent: bool = False,
) -> go.Figure:
    """Mean (line) and mean +- std (shaded band) against ``x``, one line per ``series``.
    Columns: series, x, mean, std (and ``color``). ``percent`` multiplies values by 100."""
    fig = go.Figure()
    k = 100.0 if percent else 1.0
    for series, g in df.groupby("series", sort=False):
        g = g.sort_values(x)
        color = g["color"].iloc[0] if "color" in g.columns else None
        m, s = k * g["mean"].to_numpy(float), k * g["std"].fillna(0).to_numpy(float)
        xs = list(g[x])
        fig.add_trace(
            go.Scatter(
                x=xs + xs[::-1],
                y=list(m + s) + list((m - s)[::-1]),
                mode="lines",
                fill="toself",
                line=dict(width=0),
                fillcolor=color,
                opacity=0.2,
                hoverinfo="skip",
                showlegend=False,
                legendgroup=str(series),
            )
        )
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=m,
                mode="lines+markers",
                name=str(series),
                legendgroup=str(series),
                line=dict(color=color),
                customdata=s,
                hovertemplate="%{x}: %{y:.3g} ± %{customdata:.2g}<extra>" + str(series) + "</extra>",
            )
        )
    # ticks at the measured x values only (k = 1, 2, ...; the depths measured)
    fig.update_xaxes(title_text=xlabel, tickmode="array", tickvals=sorted(set(df[x])))
    fig.update_yaxes(title_text=ylabel, type="log" if log_y else "linear")
    return _legend_below(fig, height, top=30)


def crossing_figure(
    diff: pd.Series, stays_below_from, deep: str, shallow: str, split: str, height: int = 320
) -> go.Figure:
    """Deeper minus shallower training error against steps, a zero line, and the step from
    which the difference stays below zero (where depth starts to pay) marked."""
    what = "re-scored (eval mode)" if split == "train_eval" else "while training, smoothed"
    fig = go.Figure(
        go.Scatter(
            x=diff.index,
            y=diff.values,
            mode=_line_mode(len(diff)),
            name=f"{deep} − {shallow} ({what})",
            line=dict(color="#08306b", width=2),
            showlegend=True,
        )
    )
    fig.add_hline(y=0, line=dict(color="#888", width=1, dash="dot"))
    if stays_below_from is not None:
        fig.add_vline(
            x=stays_below_from,
            line=dict(color="#2ca02c", width=2, dash="dash"),
            annotation_text=f"below from step {stays_below_from:,}",
            annotation_position="top left",
        )
    fig.update_xaxes(title_text="iteration")
    fig.update_yaxes(title_text="training error difference (points)")
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        margin=dict(t=30, b=40, l=60, r=10),
        legend=dict(orientation="h", y=-0.3),
    )
    return fig


# --- layout for the screen and the projector ----------------------------------------------
PRESENT_SCALE = 1.5  # presentation mode: fonts this much larger
PRESENT_LINE = 2.0  # and lines this much thicker (at least PRESENT_MIN_LINE px)
PRESENT_MIN_LINE = 3.5


def finish_layout(fig: go.Figure) -> go.Figure:
    """The last touch every chart gets before it is drawn (ui.show_chart): a horizontal
    legend goes to the bottom of the whole figure (container-referenced), where plotly
    reserves room for it below the x-axis title, so no axis title runs under a legend."""
    leg = fig.layout.legend
    if leg.orientation == "h" and (leg.y is None or leg.y < 0):
        fig.update_layout(legend=dict(yref="container", y=0.0, yanchor="bottom", x=0.0, xanchor="left"))
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


def _scaled(size, default: float) -> int:
    return int(round((size or default) * PRESENT_SCALE))


def presentation_figure(fig: go.Figure) -> go.Figure:
    """Presentation mode (for a projector): every font PRESENT_SCALE times larger, every
    line PRESENT_LINE times thicker, markers larger. Changes ``fig`` and returns it."""
    fig.update_layout(font=dict(size=_scaled(fig.layout.font.size, 12)))
    if fig.layout.title.text:
        fig.update_layout(title_font_size=_scaled(fig.layout.title.font.size, 17))
    fig.update_layout(
        legend_font_size=_scaled(fig.layout.legend.font.size, 12), hoverlabel_font_size=_scaled(None, 13)
    )
    for ann in fig.layout.annotations:  # subplot titles, notes in empty panels
        ann.font.size = _scaled(ann.font.size, 12)
    # axis titles too, explicitly: Streamlit's chart theme sets its own sizes otherwise
    for each in (fig.for_each_xaxis, fig.for_each_yaxis):
        each(
            lambda ax: ax.update(
                tickfont_size=_scaled(ax.tickfont.size, 12), title_font_size=_scaled(ax.title.font.size, 12)
            )
        )
    if fig.layout.margin.t:  # room for the larger title above the subplot titles
        fig.update_layout(margin_t=int(fig.layout.margin.t * PRESENT_SCALE * 1.1))
    for t in fig.data:
        if t.type not in ("scatter", "scattergl"):
            continue
        t.line.width = max(PRESENT_MIN_LINE, PRESENT_LINE * (t.line.width or 2))
        if t.mode and "markers" in t.mode and not isinstance(t.marker.size, (tuple, list)):
            t.marker.size = _scaled(t.marker.size, 6)
    if fig.layout.height:
        fig.update_layout(height=int(fig.layout.height * 1.15))
    return fig


def shared_log_range(tables: list[pd.DataFrame], column: str = "loss") -> tuple[float, float]:
    """(min, max) of log10 ``column`` over several tables: one colour scale for panels shown
    side by side (2-D loss landscapes), so equal colours mean equal values."""
    vals = [np.log10(np.clip(t[column].to_numpy(dtype=float), 1e-12, None)) for t in tables if len(t)]
    vals = [v[np.isfinite(v)] for v in vals]
    vals = [v for v in vals if v.size]
    if not vals:
        return (0.0, 1.0)
    return (float(min(v.min() for v in vals)), float(max(v.max() for v in vals)))


def feature_scale(a) -> dict:
    """One colour scale for feature maps: sequential (white = 0 or the lowest value, dark =
    high) where all values are >= 0, as after a ReLU; diverging around 0 (blue negative, red
    positive, white 0) where some are negative, as a BN output. Light always reads as low
    in size, dark as high."""
    v = np.asarray(a, dtype=float)
    v = v[np.isfinite(v)]
    if not v.size:
        return dict(colorscale="Blues")
    lo, hi = float(v.min()), float(v.max())
    if lo >= 0:
        return dict(colorscale="Blues", cmin=0.0, cmax=hi if hi > 0 else 1.0)
    m = max(abs(lo), abs(hi))
    return dict(colorscale="RdBu", reversescale=True, cmid=0.0, cmin=-m, cmax=m)


def rgb_scale(name: str) -> list[list]:
    """A named plotly colour scale with its colours as "rgb(r, g, b)". Streamlit's chart
    theme replaces the exact colours #000001 ... #000040 in a figure with its own (they are
    its placeholders), and Inferno begins at #000004: its lowest values came out light pink,
    which reads as high."""
    from plotly.colors import get_colorscale, hex_to_rgb

    out = []
    for pos, c in get_colorscale(name):
        if c.startswith("#"):
            c = "rgb({}, {}, {})".format(*hex_to_rgb(c))
        out.append([pos, c])
    return out
