"""Studies: lesions (Veit et al. 2016), gradient shattering (Balduzzi et al. 2017), loss
landscapes (Li et al. 2018). Studies of a run are computed in the background (their own
process, with progress and cancel), cached on disk and shown for two runs; the shattering
studies at initialization need no run and are computed on the spot. Every sentence that
states a result is built from the numbers drawn beside it."""

import pandas as pd
import streamlit as st

from app import charts, ui, verdicts

# what the background tasks compute on (analysis.jobs.TASKS defaults, shown on the page)
LESION_RANDOM_N, LESION_RANDOM_SAMPLES = 1000, 10
LANDSCAPE_N = 512
SHATTER_POINTS, SHATTER_SPAN = 256, 1.0
FC_DEPTHS, FC_WIDTH, FC_SEEDS = (2, 4, 8, 16, 24, 50), 128, (0, 1, 2)
IMG_DEPTHS, IMG_WIDTH, IMG_SIZE, IMG_SEEDS = (8, 14, 20, 32, 56), 8, 16, (0, 1)
KIND_NAMES = {"plain": "plain", "resnet": "residual"}


def results(ids, labels, task: str, label: str, go: bool, **params) -> dict:
    out = {}
    for i, rid in enumerate(ids):
        r = ui.analysis_task(
            store.run(rid), task, f"{label} of {labels[rid]}", key=f"{task}_{i}", start=go, **params
        )
        if r is not None:
            out[rid] = r
    return out


# --- lesions -------------------------------------------------------------------------------
def lesion_sentence(name: str, t: pd.DataFrame) -> str:
    base = 100 * float(t["base_error"].iloc[0])
    d = 100 * t["delta"]
    worst = t.loc[t["delta"].idxmax()]
    s = (
        f"**{name}**: test error {base:.1f}% intact; deleting one block adds "
        f"{d.mean():+.1f} points on average (worst: {worst['block']}, "
        f"{100 * worst['error']:.1f}%)"
    )
    ds, other = t["downsampling"].astype(bool), ~t["downsampling"].astype(bool)
    if ds.any() and other.any():
        s += (
            f"; {d[other].mean():+.1f} points at the {int(other.sum())} blocks that keep the "
            f"shape, {d[ds].mean():+.1f} at the {int(ds.sum())} downsampling ones"
        )
    return s + "."


def random_sentence(name: str, s: pd.DataFrame) -> str:
    s = s.sort_values("k")
    a, b = s.iloc[0], s.iloc[-1]
    return (
        f"**{name}**: {int(a['k'])} block{'s' if a['k'] != 1 else ''} deleted: "
        f"{100 * a['mean']:.1f}% ± {100 * a['std']:.1f}; {int(b['k'])} deleted: "
        f"{100 * b['mean']:.1f}% ± {100 * b['std']:.1f} (mean ± std over "
        f"{int(b['count'])} draws)."
    )


def lesion_tab(ids, labels, colors):
    from analysis.studies.lesion import summarize_random

    st.markdown(
        "Delete blocks of a trained net and measure test error (Veit, Wilber and Belongie "
        "2016). A deleted **residual** block loses its residual branch F and keeps its "
        "shortcut, with its own projection for options B and C: it outputs ReLU(shortcut(x)) "
        "(pre-activation blocks: shortcut(x)). A deleted **plain** block has no shortcut to "
        "keep: the whole block goes, both convs with their BNs and ReLUs (the identity "
        "takes its place, or, at a downsampling block, the parameter-free option-A map: "
        "subsample and zero-pad)."
    )
    st.markdown(
        "**One block at a time** (their Fig. 3), on the whole test set. Hollow markers: downsampling blocks."
    )
    go = st.toggle("Compute for both runs", key="stu_lesion_go")
    res = results(ids, labels, "lesion", "Lesion", go)
    if res:
        tables = [r["table"] for r in res.values()]
        data = pd.concat([t.assign(run=labels[rid]) for rid, t in zip(res, tables)])
        ui.show_chart(
            charts.lesion_figure(tables, [labels[r] for r in res], [colors[r] for r in res]),
            data,
            "lesion",
            "stu_lesion",
            caption="Dotted lines: each run's error with nothing deleted.",
        )
        st.markdown("\n".join(f"- {lesion_sentence(labels[rid], t)}" for rid, t in zip(res, tables)))
        st.markdown(
            verdicts.lesions(
                [verdicts.lesion_row(labels[rid], kinds.get(rid), t) for rid, t in zip(res, tables)]
            ).text
        )
    st.markdown(
        f"**k random blocks at once** (their Fig. 5): for each k, {LESION_RANDOM_SAMPLES} "
        f"random draws of k blocks among those that keep the shape (downsampling blocks "
        f"stay), error on the first {LESION_RANDOM_N:,} test images; line: mean, band: "
        f"± one standard deviation over the draws."
    )
    go = st.toggle("Compute for both runs", key="stu_lrand_go")
    res = results(ids, labels, "lesion_random", "Random lesions", go)
    if res:
        sums = {rid: summarize_random(r["table"]) for rid, r in res.items()}
        data = pd.concat([s.assign(series=labels[rid], color=colors[rid]) for rid, s in sums.items()])
        ui.show_chart(
            charts.band_figure(data, "k", "blocks deleted (k)", "test error (%)", percent=True),
            pd.concat([r["table"].assign(run=labels[rid]) for rid, r in res.items()]),
            "lesion-random",
            "stu_lrand",
        )
        st.markdown("\n".join(f"- {random_sentence(labels[rid], s)}" for rid, s in sums.items()))


# --- gradient shattering ---------------------------------------------------------------------
@st.cache_data(max_entries=8, show_spinner="Measuring fresh fully-connected nets…")
def fc_at_init(norm: str) -> pd.DataFrame:
    from analysis.studies.shattering import fc_shattering

    return fc_shattering(depths=FC_DEPTHS, width=FC_WIDTH, norm=norm, seeds=FC_SEEDS)


@st.cache_data(max_entries=8, show_spinner="Measuring fresh conv nets…")
def image_at_init(kinds: tuple) -> pd.DataFrame:
    from analysis.studies.shattering import shattering_vs_depth

    return shattering_vs_depth(
        kinds=kinds,
        depths=IMG_DEPTHS,
        width=IMG_WIDTH,
        image_size=IMG_SIZE,
        n_points=SHATTER_POINTS,
        span=SHATTER_SPAN,
        seeds=IMG_SEEDS,
    )


def depth_sentence(lag1: pd.DataFrame, what: str) -> str:
    """Lag-1 autocorrelation at the shallowest and deepest depth, per kind, as measured."""
    parts = []
    for kind, g in lag1.groupby("kind", sort=False):
        g = g.sort_values("depth")
        a, b = g.iloc[0], g.iloc[-1]
        parts.append(
            f"{KIND_NAMES.get(kind, kind)} {what}: {a['mean']:.2f} at depth "
            f"{int(a['depth'])}, {b['mean']:.2f} at depth {int(b['depth'])}"
        )
    return "Lag-1 autocorrelation, mean over seeds: " + "; ".join(parts) + "."


def depth_chart(df: pd.DataFrame, name: str, key: str, xlabel: str):
    from analysis.studies.shattering import at_lag

    lag1 = at_lag(df, 1)
    lag1["series"] = lag1["kind"].map(KIND_NAMES)
    lag1["color"] = [charts.run_color(k, 56) for k in lag1["kind"]]
    ui.show_chart(
        charts.band_figure(lag1, "depth", xlabel, "lag-1 autocorrelation of the gradient"), df, name, key
    )
    return lag1


def acf_chart(df: pd.DataFrame, value: str, name: str, key: str):
    """Autocorrelation (or covariance) against distance, mean over seeds, per kind and depth."""
    m = df.groupby(["kind", "depth", "distance"], sort=False)[value].mean().reset_index()
    m["series"] = [f"{KIND_NAMES.get(k, k)}, depth {d}" for k, d in zip(m["kind"], m["depth"])]
    m["color"] = [charts.run_color(k, d) for k, d in zip(m["kind"], m["depth"])]
    ui.show_chart(
        charts.series_figure(
            m,
            "distance",
            value,
            "distance between inputs",
            value + (" (log)" if value == "covariance" else ""),
            log_y=value == "covariance",
            mode="lines",
        ),
        None,
        name,
        key,
    )


def fc_section():
    st.markdown(
        f"**Their own setting, at initialization.** Fully-connected ReLU nets with one input "
        f"and one output (width {FC_WIDTH}, He init; plain: Linear-BN-ReLU layers; residual: "
        f"pre-activation blocks of two layers, BN-ReLU-Linear twice, plus the identity), "
        f"{SHATTER_POINTS} inputs equally spaced on [-2, 2], df/dx at each; BN normalizes over "
        f"those {SHATTER_POINTS} inputs. Depth counts hidden layers; "
        f"{len(FC_SEEDS)} seeds per net."
    )
    c1, c2 = st.columns([1, 3])
    norm = c1.radio(
        "Normalization",
        ["batch", "none"],
        key="stu_fc_norm",
        format_func={"batch": "BatchNorm", "none": "none"}.get,
    )
    value = c2.radio(
        "Against distance", ["autocorrelation", "covariance"], horizontal=True, key="stu_fc_value"
    )
    if not st.toggle("Compute (seconds)", key="stu_fc_go"):
        return
    df = fc_at_init(norm)
    g1, g2 = st.columns(2)
    with g1:
        lag1 = depth_chart(df, "shattering-fc-depth", "stu_fc_depth", "depth (hidden layers)")
    with g2:
        acf_chart(
            df[df["depth"].isin([min(FC_DEPTHS), 8, max(FC_DEPTHS)])],
            value,
            "shattering-fc-acf",
            "stu_fc_acf",
        )
    st.markdown(depth_sentence(lag1, "nets") + " " + verdicts.shattering(lag1).text)


def image_init_section():
    st.markdown(
        f"**The image version, at initialization.** Fresh CIFAR-style conv nets (width "
        f"{IMG_WIDTH}, He init, BN), a Gaussian-noise image x0 ({IMG_SIZE}×{IMG_SIZE}), "
        f"{SHATTER_POINTS} inputs x(t) = x0 + t·d with t on [-{SHATTER_SPAN:g}, "
        f"{SHATTER_SPAN:g}] and d a random direction of unit RMS; at each, the directional "
        f"derivative d·∇x f of the logit of class 0 (at initialization the classes are "
        f"interchangeable); BN normalizes over the {SHATTER_POINTS} line points, its statistics "
        f"held fixed when differentiating. {len(IMG_SEEDS)} seeds per net."
    )
    if not st.toggle("Compute (about half a minute)", key="stu_img_go"):
        return
    df = image_at_init(("plain", "resnet"))
    lag1 = depth_chart(df, "shattering-image-depth", "stu_img_depth", "depth (layers, 6n+2)")
    st.markdown(depth_sentence(lag1, "conv nets") + " " + verdicts.shattering(lag1).text)


def checkpoint_section(ids, labels, colors):
    st.markdown(
        f"**The image version, on each run's last checkpoint.** The same line through a test "
        f"image ({SHATTER_POINTS} points, t on [-{SHATTER_SPAN:g}, {SHATTER_SPAN:g}]), f the "
        f"logit of the image's own class, BN in eval mode (its running statistics)."
    )
    img = st.number_input("Test image index", min_value=0, value=0, step=1, key="stu_sh_image")
    go = st.toggle("Compute for both runs", key="stu_sh_go")
    res = results(ids, labels, "shattering", "Shattering", go, image=int(img))
    if not res:
        return
    data = pd.concat([r["table"].assign(series=labels[rid], color=colors[rid]) for rid, r in res.items()])
    ui.show_chart(
        charts.series_figure(
            data,
            "distance",
            "autocorrelation",
            "distance along the line (t)",
            "autocorrelation of d·∇x f",
            mode="lines",
        ),
        data.drop(columns=["color"]),
        "shattering",
        "stu_sh",
    )
    st.markdown(
        "\n".join(
            f"- **{labels[rid]}** (f: logit of '{r['class']}'): lag-1 autocorrelation "
            f"{r['table'].set_index('lag').loc[1, 'autocorrelation']:.3f}, at distance "
            f"{r['table']['distance'].iloc[-1]:.3g}: {r['table']['autocorrelation'].iloc[-1]:.3f}."
            for rid, r in res.items()
        )
    )


def shattering_tab(ids, labels, colors):
    st.markdown(
        "Do nearby inputs get similar gradients (Balduzzi et al. 2017)? Along a line of inputs, "
        "the gradient's autocorrelation against the distance between inputs: near 1, it varies "
        "smoothly (brown noise); near 0, it is 'shattered' (white noise)."
    )
    fc_section()
    st.divider()
    image_init_section()
    st.divider()
    if ids:
        checkpoint_section(ids, labels, colors)
    else:
        ui.no_runs_note("measure shattering on a trained net (a run needs a checkpoint)")


# --- loss landscapes -------------------------------------------------------------------------
def landscape_sentence(name: str, r: dict) -> str:
    from analysis.studies.landscape import local_minima

    t = r["table"]
    extra, n = local_minima(t)
    centre = t.loc[(t["alpha"].abs() + (t["beta"].abs() if "beta" in t else 0)).idxmin(), "loss"]
    return (
        f"**{name}**: loss {centre:.3g} at the checkpoint, {t['loss'].min():.3g} to "
        f"{t['loss'].max():.3g} over the slice; {extra} local minim{'um' if extra == 1 else 'a'} "
        f"besides the global one among {n} points (roughness {extra / n:.3f})."
    )


def landscape_verdict(res: dict, labels: dict) -> str:
    """Li et al.'s claim checked on the slices on screen (app.verdicts.landscape)."""
    from analysis.studies.landscape import local_minima

    rows = []
    for rid, r in res.items():
        extra, n = local_minima(r["table"])
        rows.append({"label": labels[rid], "kind": kinds.get(rid), "roughness": extra / n})
    return verdicts.landscape(rows).text


def landscape_tab(ids, labels, colors):
    st.markdown(
        "The loss around a run's last checkpoint along random filter-normalized directions "
        "(Li et al. 2018), in eval mode. **Roughness**: the share of the slice's points that "
        "are local minima (below each grid neighbour) other than the global minimum; 0 for a "
        "single basin."
    )
    c1, c2 = st.columns(2)
    dim = c1.radio(
        "Slice",
        ["landscape1d", "landscape2d"],
        horizontal=True,
        key="stu_land_dim",
        format_func={"landscape1d": "1-D (21 points)", "landscape2d": "2-D (21×21 grid, slower)"}.get,
    )
    split = c2.radio(
        "Loss on",
        ["train", "test"],
        horizontal=True,
        key="stu_land_split",
        format_func={
            "train": f"the first {LANDSCAPE_N} training images (as Li et al.)",
            "test": f"the first {LANDSCAPE_N} test images",
        }.get,
    )
    go = st.toggle("Compute for both runs", key="stu_land_go")
    res = results(ids, labels, dim, "Loss landscape", go, split=split)
    if not res:
        return
    n = {r.get("n_images", LANDSCAPE_N) for r in res.values()}
    st.caption(
        f"Loss on {', '.join(str(v) for v in sorted(n))} {'training' if split == 'train' else 'test'} "
        "images (un-augmented, normalized as in training), BN in eval mode."
    )
    if dim == "landscape1d":
        data = pd.concat([r["table"].assign(series=labels[rid], color=colors[rid]) for rid, r in res.items()])
        ui.show_chart(
            charts.series_figure(
                data,
                "alpha",
                "loss",
                "α (step along the direction, filter-normalized)",
                "cross-entropy loss (log)",
                log_y=True,
            ),
            data.drop(columns=["color"]),
            "landscape-1d",
            "stu_land1",
        )
        st.markdown("\n".join(f"- {landscape_sentence(labels[rid], r)}" for rid, r in res.items()))
        st.markdown(landscape_verdict(res, labels))
        return
    cols = st.columns(len(res))
    zr = charts.shared_log_range([r["table"] for r in res.values()])  # one colour scale
    for i, (col, (rid, r)) in enumerate(zip(cols, res.items())):
        with col:
            ui.show_chart(
                charts.landscape_2d_figure(r["table"], labels[rid], zrange=zr),
                r["table"],
                f"landscape-2d-{rid}",
                f"stu_land2_{i}",
            )
            st.markdown(landscape_sentence(labels[rid], r))
    st.markdown(landscape_verdict(res, labels))


# --- the page --------------------------------------------------------------------------------
st.title("Studies")
st.markdown(
    "Three experiments from the papers that followed ResNet, on why residual nets train "
    "and plain ones degrade. Studies of a run are computed in the background on its last "
    "checkpoint and cached: leave the page and come back."
)

store = ui.get_store()
df = ui.runs_df(store)
df = df[df["state"] != "broken"]
ok = df[[(store.root / i / "ckpt" / "last.pt").exists() for i in df["id"]]] if len(df) else df
ids, labels, colors, kinds = [], {}, {}, {}
if len(ok):
    pair = ui.default_pair(ok)
    c1, c2 = st.columns(2)
    with c1:
        a = ui.pick_run(ok, "Left", key="stu_a", default=pair[0])
    with c2:
        b = ui.pick_run(ok, "Right", key="stu_b", default=pair[-1])
    ids = list(dict.fromkeys([a, b]))
    labels = dict(zip(ok["id"], ok["label"]))
    colors = dict(zip(ok["id"], ok["color"]))
    kinds = dict(zip(ok["id"], ok["kind"]))

lesion, shatter, land = st.tabs(["Lesion", "Gradient shattering", "Loss landscape"])
with lesion:
    if ids:
        lesion_tab(ids, labels, colors)
    else:
        ui.no_runs_note("run lesion studies (a run needs a checkpoint)")
with shatter:
    shattering_tab(ids, labels, colors)
with land:
    if ids:
        landscape_tab(ids, labels, colors)
    else:
        ui.no_runs_note("slice a loss landscape (a run needs a checkpoint)")
