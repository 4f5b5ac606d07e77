"""Tour, "Why deep plain nets fail": a few steps for teaching, each a chart from the user's
own runs and two or three sentences; with no runs, it offers to launch the quick sweep."""
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from app import charts, ui  # noqa: E402
from resnet_core import jobs  # noqa: E402
from resnet_core.config import SWEEPS, ConfigError, apply_preset  # noqa: E402
from resnet_core.store import ACTIVE, StoreError  # noqa: E402

st.title("Why deep plain nets fail")
st.caption("A guided tour of He et al. 2016 with your own runs. Use Next and Back.")

store = ui.get_store()
df = ui.runs_df(store)
df = df[df["state"] != "broken"]


def launch_quick():
    sw = SWEEPS["quick"]
    try:
        for m in sw["models"]:
            jobs.submit(store, apply_preset(sw["preset"], {"dataset": "digits", "model": m,
                                                           "name": "sweep quick"}),
                        start_runner=False)
        jobs.ensure_runner(store)
        st.session_state["tour_launched"] = True
    except (ConfigError, StoreError, OSError) as e:
        st.session_state["tour_error"] = str(e)


kinds = set(df["kind"]) if len(df) else set()
refs = ui.reference_df()
use_refs = False
if not ({"plain"} <= kinds and kinds & {"resnet", "preresnet"}):
    st.info("The tour needs at least one **plain** and one **residual** run. The `quick` sweep "
            "trains plain-20, plain-56, ResNet-20 and ResNet-56 on the bundled digits (minutes "
            "on a laptop; the charts fill in live).", icon=":material/school:")
    st.button("Launch the quick sweep on digits", type="primary", key="tour_launch",
              on_click=launch_quick)
    if st.session_state.get("tour_error"):
        st.error(st.session_state["tour_error"])
    if len(refs):
        use_refs = st.toggle("Meanwhile, take the tour with the bundled reference runs "
                             "(measured, shipped with the lab)", value=True, key="tour_refs")
    if not len(df) and not use_refs:
        st.stop()
if st.session_state.get("tour_launched") or (len(df) and df["state"].isin(ACTIVE).any()):
    st.success("Runs are queued or training: follow them on the **Lab** page; the charts "
               "below fill in as they train.", icon=":material/check:")

if use_refs:
    first = ui.reference_sets()[0]
    runs = refs[refs["id"].str.startswith(f"ref:{first['name']}/")].head(12)
    newest = f"the reference set “{first['title']}”"
else:
    newest = df["dataset"].iloc[0]
    on_ds = df[df["dataset"] == newest]
    runs = on_ds.head(12)
metrics = ui.metrics_for(list(runs["id"]), store)
finals = charts.final_errors_frame(runs)

STEPS = [
    ("1. The puzzle: deeper is worse",
     "A deeper net can do everything a shallower one can: copy it and make the extra layers "
     "the identity. Yet when you stack more plain layers, the error goes **up**. Look at the "
     "plain nets on the left: trained long enough, the deeper ones (darker) sit higher."),
    ("2. It is not overfitting",
     "Overfitting would mean low *training* error and high test error. Here the deeper plain "
     "net has higher **training** error too: the optimizer fails to fit the data. The paper "
     "calls this the *degradation problem*."),
    ("3. The fix: learn a residual",
     "A residual block outputs y = F(x) + x: the layers learn only the *change* F(x), and "
     "doing nothing (F = 0) is easy. With these shortcuts the deeper nets (right panel) train "
     "better, not worse, given enough iterations."),
    ("4. Inside: residual layers respond weakly",
     "The paper's Fig. 7: the std of each layer's output. In residual nets the responses are "
     "smaller: each block makes a small correction to what it receives, close to the identity."),
    ("5. Why plain nets are hard to optimize",
     "It is not that gradients vanish (BN keeps them alive). At initialization, deep plain "
     "nets with BN have gradients that *explode toward the input* and decorrelate; shortcuts "
     "give the gradient a direct path, so every layer gets a useful signal."),
    ("6. Your turn",
     "Launch deeper nets in the **Lab**, compare any two on **Runs**, look at gradient flow, "
     "lesion a trained net in **Studies** (deleting a residual block barely hurts; a plain "
     "layer is fatal)."),
]


def residual_verdict(finals: pd.DataFrame, whose: str) -> str:
    """What the runs on screen say about step 3's claim, in numbers: plain vs residual at the
    deepest depth both have, and the residual nets' shallowest vs deepest. Where the deeper
    residual net is not better, say so and why, rather than let the text contradict the chart."""
    d = finals.dropna(subset=["train_error_pct", "depth"])
    by = d.groupby(["kind", "depth"])["train_error_pct"].mean()
    res = by.get("resnet", pd.Series(dtype=float)).sort_index()
    plain = by.get("plain", pd.Series(dtype=float))
    parts = []
    common = sorted(set(res.index) & set(plain.index))
    if common:
        k = common[-1]
        parts.append(f"At depth {int(k)}, the residual net ends at {res[k]:.1f}% training error "
                     f"against the plain net's {plain[k]:.1f}%.")
    if len(res) >= 2:
        lo, hi = res.index[0], res.index[-1]
        if res[hi] <= res[lo]:
            parts.append(f"ResNet-{int(hi)} ({res[hi]:.1f}%) beats ResNet-{int(lo)} "
                         f"({res[lo]:.1f}%): deeper is better once there are shortcuts.")
        else:
            parts.append(f"ResNet-{int(hi)} ({res[hi]:.1f}%) still trails ResNet-{int(lo)} "
                         f"({res[lo]:.1f}%) here: in a short run the deeper net has not caught "
                         "up yet (at lr 0.1 deep nets sit near chance for their first few hundred "
                         "steps). The paper's 64k iterations put the deeper ResNet ahead.")
    return (f"In {whose} runs: " + " ".join(parts)) if parts else ""


i = int(st.session_state.get("tour_step", 0))
i = max(0, min(i, len(STEPS) - 1))
st.progress((i + 1) / len(STEPS), text=f"step {i + 1} of {len(STEPS)} · runs on {newest}")
title, text = STEPS[i]
st.header(title)
st.markdown(text)

if i in (0, 2):
    fig = charts.degradation_figure(metrics, runs)
    ui.show_chart(fig, metrics, "tour-degradation", f"tour_{i}")
    if i == 2:
        st.markdown(residual_verdict(finals, "these" if use_refs else "your"))
elif i == 1:
    c1, c2 = st.columns(2)
    with c1:
        ui.show_chart(charts.final_error_figure(finals, which="train", references=False),
                      finals.drop(columns=["color"]), "tour-train-error", "tour_1a")
    with c2:
        ui.show_chart(charts.final_error_figure(finals, which="test"), None, "tour-test-error",
                      "tour_1b")
    plain = finals[finals["kind"] == "plain"].dropna(subset=["train_error_pct", "depth"])
    if plain["depth"].nunique() >= 2:
        by = plain.groupby("depth")["train_error_pct"].mean().sort_index()
        verdict = "higher" if by.iloc[-1] > by.iloc[0] else "not higher (train longer to see it)"
        st.markdown(f"In {'these' if use_refs else 'your'} runs, plain-{int(by.index[-1])}'s "
                    "final training error "
                    f"({by.iloc[-1]:.1f}%) is **{verdict}** than plain-{int(by.index[0])}'s "
                    f"({by.iloc[0]:.1f}%).")
elif i == 3:
    with_layers = runs[[ui.has_layers(store, r) for r in runs["id"]]]
    if len(with_layers):
        sel = ui.default_pair(with_layers)
        layers = ui.layers_for(sel, store)
        bn = layers[layers["type"] == "bn"]
        last = bn[bn["step"] == bn.groupby("run_id")["step"].transform("max")]
        resp = charts.responses_frame(last)
        ui.show_chart(charts.responses_figure(resp, with_layers[with_layers["id"].isin(sel)]),
                      resp, "tour-responses", "tour_3")
    else:
        st.info("Your runs have no per-layer records; the **Layer responses** page fills in "
                "for runs trained with per-layer statistics on.")
elif i == 4:
    signal_propagation = ui.analysis_function("studies.signal", "signal_propagation",
                                              "Signal propagation at initialization")

    @st.cache_data(show_spinner="Measuring fresh nets…")
    def sig(kind, depth):
        return signal_propagation(kind, depth, width=8, batch=64, image_size=16, seeds=(0,))

    if signal_propagation is not None:
        try:
            frames = []
            for k in ("plain", "resnet"):
                for d in (20, 56):
                    r = sig(k, d).copy()
                    r["series"], r["color"], r["index"] = f"{k}-{d}", charts.run_color(k, d), r["order"] + 1
                    frames.append(r)
            data = pd.concat(frames, ignore_index=True)
            ui.show_chart(charts.signal_figure(data, "grad_norm", "‖∇W‖ of each conv at init (log)"),
                          data.drop(columns=["color"]), "tour-signal", "tour_4")
        except Exception as e:  # noqa: BLE001 - shown whole (type, message, traceback), and
            # the Back / Next buttons below still work
            st.error("Signal propagation failed: the error and where it happened:")
            st.exception(e)

b1, b2, _ = st.columns([1, 1, 6])
if b1.button("Back", key="tour_back", disabled=i == 0, icon=":material/arrow_back:"):
    st.session_state["tour_step"] = i - 1
    st.rerun()
if b2.button("Next", key="tour_next", disabled=i == len(STEPS) - 1, type="primary",
             icon=":material/arrow_forward:"):
    st.session_state["tour_step"] = i + 1
    st.rerun()
