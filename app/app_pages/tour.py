"""Tour, "Why deep plain nets fail": a few steps for teaching, each a chart from the user's
own runs and two or three sentences; with no runs, it offers to launch the quick sweep."""

import pandas as pd
import streamlit as st

from app import charts, runs_data, ui, verdicts
from resnet_core import jobs
from resnet_core.config import SWEEPS, ConfigError, apply_preset
from resnet_core.store import ACTIVE, StoreError

st.title("Why deep plain nets fail")
st.caption("A guided tour of He et al. 2016 with your own runs. Use Next and Back.")

store = ui.get_store()
df = ui.runs_df(store)
df = df[df["state"] != "broken"]


def launch_quick():
    sw = SWEEPS["quick"]
    try:
        for m in sw["models"]:
            jobs.submit(
                store,
                apply_preset(sw["preset"], {"dataset": "digits", "model": m, "name": "sweep quick"}),
                start_runner=False,
            )
        jobs.ensure_runner(store)
        st.session_state["tour_launched"] = True
    except (ConfigError, StoreError, OSError) as e:
        st.session_state["tour_error"] = str(e)


kinds = set(df["kind"]) if len(df) else set()
refs = ui.reference_df()
use_refs = False
if not ({"plain"} <= kinds and kinds & {"resnet", "preresnet"}):
    st.info(
        "The tour needs at least one **plain** and one **residual** run. The `quick` sweep "
        "trains plain-20, plain-56, ResNet-20 and ResNet-56 on the bundled digits (minutes "
        "on a laptop; the charts fill in live).",
        icon=":material/school:",
    )
    st.button("Launch the quick sweep on digits", type="primary", key="tour_launch", on_click=launch_quick)
    if st.session_state.get("tour_error"):
        st.error(st.session_state["tour_error"])
    if len(refs):
        use_refs = st.toggle(
            "Meanwhile, take the tour with the bundled reference runs (measured, shipped with the lab)",
            value=True,
            key="tour_refs",
        )
    if not len(df) and not use_refs:
        st.stop()
if st.session_state.get("tour_launched") or (len(df) and df["state"].isin(ACTIVE).any()):
    st.success(
        "Runs are queued or training: follow them on the **Lab** page; the charts "
        "below fill in as they train.",
        icon=":material/check:",
    )

if use_refs:
    first = ui.reference_sets()[0]
    runs = runs_data.newest_groups(refs[refs["id"].str.startswith(f"ref:{first['name']}/")], 12)
    newest = f"the reference set “{first['title']}”"
else:
    newest = df["dataset"].iloc[0]
    on_ds = df[df["dataset"] == newest]
    runs = runs_data.newest_groups(on_ds, 12)  # all seeds of the 12 newest experiments
metrics = ui.metrics_for(list(runs["id"]), store)
finals = charts.final_errors_frame(runs)
seed_sets = runs_data.seed_sets(runs)  # runs that differ only in seed: drawn as mean ± std
seed_groups = runs_data.seed_groups(runs)
budgets = ui.budgets_for(runs, store)  # for the verdicts' "likely reason" clauses
whose = "these" if use_refs else "your"

STEPS = [
    (
        "1. The puzzle: is deeper worse?",
        "A deeper net can do everything a shallower one can: copy it and make the extra layers "
        "the identity. Yet He et al. found that when you stack more plain layers, the error goes "
        "**up**: trained long enough, deeper plain nets end higher. The plain nets are on the "
        "left (deeper is darker); below the chart, what these runs show.",
    ),
    (
        "2. It is not overfitting",
        "Overfitting would mean low *training* error and high test error. In the paper the deeper "
        "plain net has higher **training** error too: the optimizer fails to fit the data. He et "
        "al. call this the *degradation problem*. Left: final training error; right: test error.",
    ),
    (
        "3. The fix: learn a residual",
        "A residual block outputs y = F(x) + x: the layers learn only the *change* F(x), and "
        "doing nothing (F = 0) is easy. He et al. report that with shortcuts the deeper nets "
        "(right panel) train better, not worse, given enough iterations (64,000 steps).",
    ),
    (
        "4. Inside: how strongly do the layers respond?",
        "The paper's Fig. 7: the std of each layer's output. He et al. report that in residual "
        "nets the responses are smaller: each block makes a small correction to what it "
        "receives, close to the identity.",
    ),
    (
        "5. Why plain nets are hard to optimize",
        "He et al. argue it is not vanishing gradients (with BN they saw healthy gradient "
        "norms). Later work found that at initialization, deep plain nets with BN have gradients "
        "that *explode toward the input* (Yang et al. 2019) and decorrelate (Balduzzi et al. "
        "2017); shortcuts give the gradient a direct path. Measured below on fresh nets.",
    ),
    (
        "6. Your turn",
        "Launch deeper nets in the **Lab**, compare any two on **Runs**, look at gradient flow, "
        "lesion a trained net in **Studies** (Veit et al. 2016 report that deleting a residual "
        "block barely hurts while deleting a plain layer is fatal: see whether your runs agree).",
    ),
]


def residual_verdict(finals: pd.DataFrame, whose: str) -> str:
    """What the runs on screen say about step 3's claim, in numbers (app.verdicts): plain vs
    residual at the deepest depth both have, and the residual nets' shallowest vs deepest;
    where they differ from the paper, the sentence says so and why."""
    vs = [
        verdicts.residual_vs_plain(finals, budgets, whose=whose),
        verdicts.residual_depth(finals, budgets, whose=whose),
    ]
    on_screen = first["title"] if use_refs else None
    sets = ui.reference_sets()
    return "\n".join(f"- {v.text}{verdicts.shown_elsewhere(v, sets, on_screen)}" for v in vs if v)


i = int(st.session_state.get("tour_step", 0))
i = max(0, min(i, len(STEPS) - 1))
st.progress((i + 1) / len(STEPS), text=f"step {i + 1} of {len(STEPS)} · runs on {newest}")
title, text = STEPS[i]
st.header(title)
st.markdown(text)

if i in (0, 2):
    fig = charts.degradation_figure(metrics, runs, seed_sets=seed_sets)
    ui.show_chart(fig, metrics, "tour-degradation", f"tour_{i}")
    st.markdown(
        residual_verdict(finals, whose) if i == 2 else verdicts.plain_depth(finals, budgets, whose=whose).text
    )
elif i == 1:
    c1, c2 = st.columns(2)
    with c1:
        ui.show_chart(
            charts.final_error_figure(finals, which="train", references=False, groups=seed_groups),
            finals.drop(columns=["color"]),
            "tour-train-error",
            "tour_1a",
        )
    with c2:
        ui.show_chart(
            charts.final_error_figure(finals, which="test", groups=seed_groups),
            None,
            "tour-test-error",
            "tour_1b",
        )
    st.markdown(verdicts.not_overfitting(finals, budgets, whose=whose).text)
elif i == 3:
    with_layers = runs[[ui.has_layers(store, r) for r in runs["id"]]]
    if len(with_layers):
        sel = ui.default_pair(with_layers)
        layers = ui.layers_for(sel, store)
        rows = layers[layers["type"] == "response"]
        last = rows[rows["step"] == rows.groupby("run_id")["step"].transform("max")]
        resp = charts.responses_frame(last)
        ui.show_chart(
            charts.responses_figure(resp, with_layers[with_layers["id"].isin(sel)]),
            resp,
            "tour-responses",
            "tour_3",
        )
        v = verdicts.responses(verdicts.response_means(resp, with_layers), budgets, whose=whose)
        st.markdown(
            v.text + verdicts.shown_elsewhere(v, ui.reference_sets(), first["title"] if use_refs else None)
        )
    else:
        st.info(
            "Your runs have no per-layer records; the **Layer responses** page fills in "
            "for runs trained with per-layer statistics on."
        )
elif i == 4:
    signal_propagation = ui.analysis_function(
        "studies.signal", "signal_propagation", "Signal propagation at initialization"
    )
    grad_ratio = ui.analysis_function("studies.signal", "grad_ratio", "The first/last gradient-norm ratio")

    @st.cache_data(show_spinner="Measuring fresh nets…")
    def sig(kind, depth):
        return signal_propagation(kind, depth, width=8, batch=64, image_size=16, seeds=(0,))

    if signal_propagation is not None and grad_ratio is not None:
        try:
            frames, ratios = [], []
            for k in ("plain", "resnet"):
                for d in (20, 56):
                    r = sig(k, d).copy()
                    ratios.append({"kind": k, "depth": d, "ratio": grad_ratio(r)})
                    r["series"], r["color"], r["index"] = f"{k}-{d}", charts.run_color(k, d), r["order"] + 1
                    frames.append(r)
            data = pd.concat(frames, ignore_index=True)
            ui.show_chart(
                charts.signal_figure(data, "grad_norm", "‖∇W‖ of each conv at init (log)"),
                data.drop(columns=["color"]),
                "tour-signal",
                "tour_4",
            )
            st.markdown(verdicts.gradient_growth(ratios).text)
        except Exception as e:  # noqa: BLE001 - shown whole (type, message, traceback), and
            # the Back / Next buttons below still work
            st.error("Signal propagation failed: the error and where it happened:")
            st.exception(e)

b1, b2, _ = st.columns([1, 1, 6])
if b1.button("Back", key="tour_back", disabled=i == 0, icon=":material/arrow_back:"):
    st.session_state["tour_step"] = i - 1
    st.rerun()
if b2.button(
    "Next", key="tour_next", disabled=i == len(STEPS) - 1, type="primary", icon=":material/arrow_forward:"
):
    st.session_state["tour_step"] = i + 1
    st.rerun()
