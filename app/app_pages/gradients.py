"""Gradient flow: layer x step heatmaps of gradient norms, plain and residual side by side;
signal propagation at initialization, computed on the spot."""
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from app import charts, ui  # noqa: E402

st.title("Gradient flow")
st.markdown("Where does the gradient go during training? Each row is a layer (input at the "
            "top), each column a recorded step; color is log10 of the gradient statistic, on "
            "one scale for both runs. **‖∇W‖** at step s is the training step's own gradient: "
            "the loss of the batch of step s+1 (BN in train mode) at the weights after s "
            "updates. **‖∂L/∂y‖** is measured on test images in eval mode, at fewer steps.")

store = ui.get_store()
df = ui.runs_df(store)
df = df[df["state"] != "broken"]
with_layers = df[[ui.has_layers(store, i) for i in df["id"]]] if len(df) else df
refs = ui.reference_df()
refs = refs[[ui.has_layers(store, i) for i in refs["id"]]] if len(refs) else refs
own = len(with_layers)
if len(refs):
    # bundled reference runs join the pickers, after the user's own runs
    with_layers = pd.concat([with_layers.assign(reference=""), refs], ignore_index=True)
ui.recorder_problem_note(df, store)


def records_note(layers: pd.DataFrame, value: str, labels: dict) -> str:
    """How many columns and images each panel's records have, from the rows themselves."""
    typ = charts.GRAD_VALUES[value][0]
    d = layers[(layers["type"] == typ) & layers[value].notna()]
    images = ui.record_images(d)
    parts = []
    for rid, g in d.groupby("run_id", sort=False):
        n, imgs = g["step"].nunique(), images.get(rid)
        if typ == "weight":
            what = (f"training batches of {', '.join(map(str, imgs))} images" if imgs else
                    "training batches")
        else:
            what = (f"the first {', '.join(f'{i:,}' for i in imgs)} test images, eval mode" if imgs
                    else f"the first {ui.OLD_PROBE_IMAGES} test images, eval mode (older "
                         "recorder: each row taken one training batch after its step)")
        parts.append(f"{labels.get(rid, rid)}: {n} recorded steps, {what}.")
    return " ".join(parts)


if len(with_layers):
    # the user's newest pair; with none of theirs, the deepest plain / residual references,
    # where the two differ most
    pair = ui.default_pair(with_layers if own else
                           with_layers.sort_values("depth", ascending=False, kind="stable"))
    c1, c2, c3 = st.columns([2, 2, 1.4])
    with c1:
        a = ui.pick_run(with_layers, "Left", key="grad_a", default=pair[0] if pair else None)
    with c2:
        b = ui.pick_run(with_layers, "Right", key="grad_b", default=pair[-1] if pair else None)
    with c3:
        value = st.radio("Statistic", list(charts.GRAD_VALUES), key="grad_value",
                         format_func=lambda v: charts.GRAD_VALUES[v][1])
    ids = [a, b]
    layers = ui.layers_for(list(dict.fromkeys(ids)), store)
    mats = [charts.grad_matrix(layers[layers["run_id"] == rid], value) for rid in ids]
    labels = dict(zip(with_layers["id"], with_layers["label"]))
    colors = dict(zip(with_layers["id"], with_layers["color"]))
    if any(len(m) for m in mats):
        data = layers[layers["type"] == charts.GRAD_VALUES[value][0]][
            ["run_id", "step", "layer", "order", value]]
        ui.show_chart(charts.grad_heatmaps(mats, [labels[i] for i in ids], value), data,
                      "gradient-heatmaps", "grad_heat",
                      caption=records_note(layers, value, labels))
        ui.show_chart(charts.grad_profile_figure(mats, [labels[i] for i in ids],
                                                 [colors[i] for i in ids], value),
                      None, "gradient-profile", "grad_profile")
        first_last_ratio = ui.analysis_function("recorders", "first_last_ratio",
                                                "The first/last gradient-norm ratio")
        if value == "grad_norm" and first_last_ratio is not None:
            for rid, m in dict(zip(ids, mats)).items():
                last = m.iloc[:, -1] if len(m) else m
                r = first_last_ratio(list(last.index), list(last.values)) if len(m) else None
                if r is not None:
                    st.caption(f"{labels[rid]}: first/last gradient-norm ratio at step "
                               f"{m.columns[-1]}: **{r[2]:.3g}** (‖∇W‖ of the first main conv, "
                               f"`{r[0]}`, over the last, `{r[1]}`; projection shortcuts and "
                               "fc left out)")
    else:
        st.info(f"No '{charts.GRAD_VALUES[value][1]}' records for these runs.")
if not len(with_layers):
    st.info("No run has per-layer gradient records yet (launch one from the **Lab** with "
            "per-layer statistics on). Signal propagation below needs no run.")

st.divider()
st.subheader("Signal propagation at initialization")
st.markdown("A fresh net, one batch of noise, one forward and one backward pass: the std of "
            "each layer's output and the norm of each conv's weight gradient. With BN, deep "
            "*plain* nets' gradients grow toward the input at init (Yang et al. 2019); "
            "shortcuts keep them even. Seconds on a CPU.")
s1, s2, s3, s4, s5 = st.columns(5)
kinds = s1.multiselect("Families", ["plain", "resnet", "preresnet"], default=["plain", "resnet"],
                       key="sig_kinds")
depths = s2.multiselect("Depths", [8, 14, 20, 32, 44, 56, 110], default=[20, 56], key="sig_depths")
norm = s3.radio("Normalization", ["batch", "none"], key="sig_norm",
                format_func={"batch": "BatchNorm", "none": "none"}.get)
init = s4.radio("Init", ["he", "torch"], key="sig_init",
                format_func={"he": "He (paper)", "torch": "PyTorch default"}.get)
width = s5.selectbox("Width", [4, 8, 16], index=1, key="sig_width")


@st.cache_data(max_entries=64, show_spinner=False)
def signal(kind, depth, norm, init, width):
    from analysis.studies.signal import signal_propagation

    return signal_propagation(kind, depth, norm, init, width=width, batch=64, image_size=16,
                              seeds=(0,))


fn = ui.analysis_function("studies.signal", "signal_propagation", "Signal propagation")
if fn is not None and kinds and depths:
    if len(kinds) * len(depths) > 8:
        st.warning("At most 8 nets at once: pick fewer families or depths.")
    else:
        frames = []
        with st.spinner("Measuring fresh nets…"):
            for k in kinds:
                for d in sorted(depths):
                    r = signal(k, int(d), norm, init, int(width)).copy()
                    r["series"] = f"{k}-{d}"
                    r["color"] = charts.run_color(k, d)
                    r["index"] = r["order"] + 1
                    frames.append(r)
        sig = pd.concat(frames, ignore_index=True)
        g1, g2 = st.columns(2)
        with g1:
            ui.show_chart(charts.signal_figure(sig, "grad_norm", "‖∇W‖ of each conv (log)"),
                          sig.drop(columns=["color"]), "signal-grad", "sig_grad")
        with g2:
            ui.show_chart(charts.signal_figure(sig, "act_std", "std of BN/conv output", log=norm == "none"),
                          None, "signal-act", "sig_act")
        ratios = (sig.groupby("series")
                  .apply(lambda g: g.sort_values("order")["grad_norm"].iloc[0]
                         / g.sort_values("order")["grad_norm"].iloc[-1], include_groups=False)
                  .rename("first/last gradient-norm ratio").reset_index())
        st.dataframe(ratios, hide_index=True, key="sig_ratios")
        st.caption("Measured (PAPER.md, width 16, batch 128, 3 seeds): plain with BN ≈ 10 at "
                   "depth 20, 10³ at 56, 10⁶–10⁷ at 110; residual ≈ 2.5, 9, 20; without BN "
                   "0.1–13. Here width, batch and image size are smaller, for speed.")
