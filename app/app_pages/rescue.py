"""Can plain nets be fixed? The `rescue` variants side by side: their signal propagation and
gradient shattering at init (computed on the spot), then the user's runs of each variant with
the share of the plain-to-residual gap each closes. Every sentence is computed from the
numbers drawn beside it (``app.rescue_view``)."""

import pandas as pd
import streamlit as st

from analysis.studies.rescue import rescue_variants
from app import charts, ui
from app import rescue_view as rv

SIG_BATCH, SIG_SIZE, LINE_POINTS, MAX_LAG = 64, 16, 128, 16  # the on-the-spot measurement

st.title("Can plain nets be fixed?")
st.markdown(
    "The paper's answer to degradation is the shortcut. Later papers trained deep nets "
    "*without* shortcuts, or without normalisation, by changing the initialisation, the "
    "activation, or a scalar on each residual branch. This page puts them beside the paper's "
    "plain and residual nets with two of the lab's instruments at initialisation, then with "
    "your runs of the `rescue` sweep."
)
colors = rv.variant_colors()
st.dataframe(
    pd.DataFrame(
        [
            {"variant": v["label"], "group": v["group"], "family": v["kind"], "flags": rv.flags_of(v)}
            for v in rescue_variants()
        ]
    ),
    hide_index=True,
    key="rescue_variants",
)
st.caption(
    "Looks-linear CReLU: Balduzzi et al. 2017; delta-orthogonal tanh: Xiao et al. 2018; "
    "TAT: Zhang, Botev and Martens 2022; Fixup: Zhang, Dauphin and Ma 2019; SkipInit: "
    "De and Smith 2020; ReZero: Bachlechner et al. 2020; zero-init last BN: Goyal et al. "
    "2017. README, Models, says what each does at init."
)


@st.cache_data(max_entries=16, show_spinner=False)
def at_init(depth: int, width: int):
    """Brock et al.'s block statistics and the gradient shattering of every variant, fresh."""
    from analysis.studies.rescue import variants_shattering, variants_signal

    blocks = variants_signal(depth, width, SIG_BATCH, SIG_SIZE, seed=0)
    shatter = variants_shattering(depth, width, SIG_SIZE, LINE_POINTS, seeds=(0,), max_lag=MAX_LAG)
    return blocks, shatter


def init_section():
    st.header("At initialisation")
    st.markdown(
        f"Every variant built fresh (seed 0) through the trainer's own builder. **Signal "
        f"propagation** (Brock, De and Smith 2021): one batch of {SIG_BATCH} Gaussian-noise "
        f"images ({SIG_SIZE}×{SIG_SIZE}), BN in train mode; per block the average channel "
        "variance and squared mean of the sum before the block's last activation (plain "
        "blocks: F(x) at that point) and the residual branch's variance. **Gradient "
        f"shattering** (Balduzzi et al. 2017): along a line of {LINE_POINTS} points through a "
        "noise image, the derivative of a fixed random readout of the pooled features (a "
        "fresh classifier row; Fixup's own classifier starts at 0, so its logits have no "
        "gradient at init), and its autocorrelation against lag."
    )
    c1, c2 = st.columns(2)
    depth = c1.selectbox(
        "Depth",
        [8, 20, 32, 56],
        index=1,
        key="rescue_depth",
        help="The sweep trains depth 56; deeper takes longer to measure here.",
    )
    width = c2.selectbox("Width (filters in the first stage)", [4, 8, 16], index=1, key="rescue_width")
    with st.spinner(f"Measuring {len(colors)} fresh nets…"):
        blocks, shatter = at_init(int(depth), int(width))
    spp = blocks.rename(columns={"label": "series"})
    spp["color"] = spp["series"].map(colors)
    ui.show_chart(charts.spp_figure(spp), blocks, "rescue-signal", "rescue_spp")
    summary = rv.init_summary(blocks, shatter)
    ui.show_chart(rv.shattering_figure(shatter, colors), shatter, "rescue-shattering", "rescue_shatter")
    st.dataframe(
        summary.drop(columns=["group"]),
        hide_index=True,
        key="rescue_init_table",
        # 3 significant digits, in powers of ten where small (a BN output's mean is ~1e-16)
        column_config={
            c: st.column_config.NumberColumn(format="%.3g")
            for c in ("last block variance", "last block squared mean", "lag-1 gradient autocorrelation")
        },
    )
    st.markdown(f"**Measured here** (depth {depth}, width {width}, one seed):")
    st.markdown(
        "\n".join(
            f"- {s}"
            for s in rv.variance_sentences(summary)
            + rv.branch_sentences(blocks)
            + rv.shattering_sentences(summary)
        )
    )


def _configs(store, ids) -> dict:
    out = {}
    for rid in ids:
        try:
            where, own = ui.resolve(rid, store)
            out[rid] = where.run(own).read_config_dict()
        except Exception as e:  # an unreadable config: that run is left out, and said so
            st.caption(f"Run {rid}: config unreadable ({type(e).__name__}); left out.")
    return out


def _rescue_table(df: pd.DataFrame, store) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(the rescue variants' runs among ``df`` in budgets and depths that measured some
    variant besides the two baselines, their gap table: finished sets only, and how many
    runs of such variants are still queued, training or stopped)."""
    raw = rv.rescue_runs(df, _configs(store, list(df["id"]))) if len(df) else pd.DataFrame()
    if not len(raw):
        return raw, pd.DataFrame(), 0
    pending = int(
        (~raw["variant"].isin([rv.PLAIN, rv.RESNET]) & ~raw["state"].isin(["done", "diverged"])).sum()
    )
    rr = rv.with_variants(raw)
    return rr, (rv.gap_table(rv.variant_sets(rr)) if len(rr) else pd.DataFrame()), pending


def _show(table: pd.DataFrame, rr: pd.DataFrame, store, key: str) -> None:
    """Curves, the gap table and the verdicts of each budget and depth of ``rr`` (its runs
    that diverged said under the table)."""
    metrics = ui.metrics_for(sorted({i for ids in table["run_ids"] for i in ids}), store)
    groups = sorted(rr.groupby(["budget", "depth"], sort=False), key=lambda kv: kv[0][1])  # shallow first
    for (budget, depth), here in groups:
        t = table[(table["budget"] == budget) & (table["depth"] == depth)] if len(table) else table
        first = here.iloc[0]
        st.subheader(f"{first['dataset']} · depth {int(depth)} · {first['preset'] or 'custom'} budget")
        if len(t):
            ui.show_chart(
                rv.curves_figure(metrics, t, colors),
                None,
                f"rescue-curves-{key}-{budget}",
                f"rescue_curves_{key}_{budget}_{int(depth)}",
            )
            st.dataframe(rv.gap_display(t), hide_index=True, key=f"rescue_gap_{key}_{budget}_{int(depth)}")
        said = (
            rv.gap_sentences(t) + rv.stalled_sentences(t, metrics) + rv.overlap_sentences(metrics, t)
            if len(t)
            else []
        ) + rv.diverged_sentences(here, t["variant"] if len(t) else ())
        st.markdown("\n".join(f"- {s}" for s in said))
    for _, t in table.groupby("recipe", sort=False) if len(table) else []:
        deeper = rv.depth_sentences(t, rv.stalled_sets(t, metrics))
        if deeper:
            depths = " and ".join(str(int(d)) for d in sorted(t["depth"].unique()))
            first = t.iloc[0]
            st.subheader(f"{first['dataset']} · {first['preset'] or 'custom'} budget · depth {depths}")
            st.markdown(
                "Final training error of each variant trained on this budget at more than one depth:\n"
                + "\n".join(f"- {s}" for s in deeper)
            )


HOW_READ = (
    "Runs of one variant that differ only in seed are drawn as their mean (band: ± one "
    "standard deviation). Runs are compared only within one budget (the same dataset, preset "
    "and every other training field) and depth. *Gap closed*: (plain − variant) / (plain − "
    f"residual) in final training error, with the baselines {rv.PLAIN} and {rv.RESNET} of "
    "that budget. The final training error is the eval-mode pass over training images at the "
    "end of a run (split `train_eval`, as on the other pages), not the last point of the "
    "running curve."
)


def reference_section(store) -> bool:
    """The bundled sets' rescue runs (measured before anyone trains here); True if any."""
    refs = ui.reference_df()
    shown = False
    for title, df in refs.groupby("reference", sort=False) if len(refs) else []:
        rr, table, _ = _rescue_table(df, store)
        if not len(rr):
            continue
        if not shown:
            st.header("Measured: bundled reference runs")
            st.markdown(HOW_READ)
        shown = True
        s = next((x for x in ui.reference_sets() if x["title"] == title), {})
        st.markdown(f"**{title}** (`reference/{s.get('name', '?')}`). {s.get('description', '')}")
        _show(table, rr, store, f"ref_{s.get('name', 'set')}")
    return shown


def runs_section(have_reference: bool):
    st.header("Your runs")
    store = ui.get_store()
    df = ui.runs_df(store)
    df = df[df["state"] != "broken"] if len(df) else df
    rr, table, pending = _rescue_table(df, store)
    if not len(rr):
        bundled = (
            "The bundled reference runs above show what this sweep measured here."
            if have_reference
            else "No measured reference set of this sweep is bundled, so there are no curves "
            "to show before you train."
        )
        st.info(
            "No finished runs of the `rescue` variants in the store"
            + (f" ({pending} still queued, training or stopped)" if pending else "")
            + ". Train them (14 runs on the `lesson` budget; on a 2-core CPU, two at a time, "
            "its ten depth-56 runs took 1 h 40 min to 2 h a seed, and plain110 with He + BN 35 min, "
            "with tanh 45 min and with CReLU 80 min on one core each; `--seeds 0,1,2` for three seeds of the "
            "depth-56 runs):\n\n"
            f"`{rv.SWEEP_COMMAND}`\n\nor launch the sweep `rescue` from the "
            f"**Lab**. {bundled}",
            icon=":material/science:",
        )
        return
    st.markdown(HOW_READ)
    _show(table, rr, store, "own")


init_section()
st.divider()
runs_section(reference_section(ui.get_store()))
