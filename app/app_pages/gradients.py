"""Gradient flow: layer x step heatmaps of gradient norms, plain and residual side by side;
signal propagation at initialization, computed on the spot."""

import pandas as pd
import streamlit as st

from app import charts, ui, verdicts

st.title("Gradient flow")
st.markdown(
    "Where does the gradient go during training? Each row is a layer (input at the "
    "top), each column a recorded step; color is log10 of the gradient statistic, on "
    "one scale for both runs. **‖∇W‖** at step s is the training step's own gradient: "
    "the loss of the batch of step s+1 (BN in train mode) at the weights after s "
    "updates. **‖∂L/∂y‖** is measured on test images in eval mode, at fewer steps."
)

store = ui.get_store()
df, with_layers, refs = ui.layer_runs(store)
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
            what = f"training batches of {', '.join(map(str, imgs))} images" if imgs else "training batches"
        else:
            what = (
                f"the first {', '.join(f'{i:,}' for i in imgs)} test images, eval mode"
                if imgs
                else f"the first {ui.OLD_PROBE_IMAGES} test images, eval mode (older "
                "recorder: each row taken one training batch after its step)"
            )
        parts.append(f"{labels.get(rid, rid)}: {n} recorded steps, {what}.")
    return " ".join(parts)


if len(with_layers):
    # the user's newest pair; with none of theirs, the deepest plain / residual references,
    # where the two differ most
    pair = ui.default_pair(
        with_layers if own else with_layers.sort_values("depth", ascending=False, kind="stable")
    )
    c1, c2, c3 = st.columns([2, 2, 1.4])
    with c1:
        a = ui.pick_run(with_layers, "Left", key="grad_a", default=pair[0] if pair else None)
    with c2:
        b = ui.pick_run(with_layers, "Right", key="grad_b", default=pair[-1] if pair else None)
    with c3:
        value = st.radio(
            "Statistic",
            list(charts.GRAD_VALUES),
            key="grad_value",
            format_func=lambda v: charts.GRAD_VALUES[v][1],
        )
    ids = [a, b]
    layers = ui.layers_for(list(dict.fromkeys(ids)), store)
    mats = [charts.grad_matrix(layers[layers["run_id"] == rid], value) for rid in ids]
    labels = dict(zip(with_layers["id"], with_layers["label"]))
    colors = dict(zip(with_layers["id"], with_layers["color"]))
    if any(len(m) for m in mats):
        data = layers[layers["type"] == charts.GRAD_VALUES[value][0]][
            ["run_id", "step", "layer", "order", value]
        ]
        ui.show_chart(
            charts.grad_heatmaps(mats, [labels[i] for i in ids], value),
            data,
            "gradient-heatmaps",
            "grad_heat",
            caption=records_note(layers, value, labels),
        )
        ui.show_chart(
            charts.grad_profile_figure(mats, [labels[i] for i in ids], [colors[i] for i in ids], value),
            None,
            "gradient-profile",
            "grad_profile",
        )
        first_last_ratio = ui.analysis_function(
            "recorders", "first_last_ratio", "The first/last gradient-norm ratio"
        )
        if value == "grad_norm" and first_last_ratio is not None:
            for rid, m in dict(zip(ids, mats)).items():
                last = m.iloc[:, -1] if len(m) else m
                r = first_last_ratio(list(last.index), list(last.values)) if len(m) else None
                if r is not None:
                    st.caption(
                        f"{labels[rid]}: first/last gradient-norm ratio at step "
                        f"{m.columns[-1]}: **{r[2]:.3g}** (‖∇W‖ of the first main conv, "
                        f"`{r[0]}`, over the last, `{r[1]}`; projection shortcuts and "
                        "fc left out)"
                    )
    else:
        st.info(f"No '{charts.GRAD_VALUES[value][1]}' records for these runs.")
if not len(with_layers):
    st.info(
        "No run has per-layer gradient records yet (launch one from the **Lab** with "
        "per-layer statistics on). Signal propagation below needs no run."
    )

SIG_BATCH, SIG_SIZE = 64, 16  # noise batch and image size of the on-the-spot measurement


@st.cache_data(max_entries=64, show_spinner=False)
def signal_at_init(kind, depth, norm, init, width, options: tuple = ()):
    """Weight-gradient norms per conv and Brock et al.'s block statistics of one fresh net
    (``options``: a variant's other model options, as (name, value) pairs)."""
    from analysis.studies.signal import signal_propagation, signal_propagation_plot

    kw = dict(width=width, batch=SIG_BATCH, image_size=SIG_SIZE, seeds=(0,), options=dict(options))
    return (
        signal_propagation(kind, depth, norm, init, **kw),
        signal_propagation_plot(kind, depth, norm, init, **kw),
    )


BASE_INITS = {"he": "He (paper)", "torch": "PyTorch default"}


def rescue_choices() -> dict:
    """The follow-up literature's variants (the `rescue` sweep's, beyond plain He/torch init
    with or without BN): label -> variant (kind, options)."""
    from analysis.studies.rescue import VARIANT_DEFAULTS, rescue_variants

    plainly = {"he", "torch"}
    return {
        v["label"]: v
        for v in rescue_variants()
        if v["options"]["init"] not in plainly
        or any(
            v["options"][k] != VARIANT_DEFAULTS[k]
            for k in ("activation", "branch_scalar", "zero_init_residual")
        )
    }


def net_setup(kind: str, norm: str, init: str, variant: dict | None) -> tuple[str, str, tuple, str]:
    """(norm, init, other options, series suffix) of family ``kind``: the variant's own where
    it is one of that family's, else the paper's He + BN (with a variant chosen) or the
    section's norm and init."""
    if variant is None:
        return norm, init, (), ""
    if variant["kind"] != kind:
        return "batch", "he", (), ""
    o = dict(variant["options"])
    vnorm, vinit = o.pop("norm"), o.pop("init")
    return vnorm, vinit, tuple(sorted(o.items())), f" · {variant['label']}"


def _num(v: float) -> str:
    """A measured value; below 1e-9 it is zero up to rounding, and says so."""
    return f"0 (below 1e-9: {v:.1g})" if abs(v) < 1e-9 else f"{v:.4g}"


def _spp_sentences(spp: pd.DataFrame) -> list[str]:
    """What the signal propagation plots show, per net, read off the measured rows."""
    out = []
    for series, g in spp.groupby("series", sort=False):
        g = g.sort_values("order")
        first, last = g.iloc[0], g.iloc[-1]
        s = (
            f"**{series}**: average channel variance {_num(first['var'])} at block 1, "
            f"{_num(last['var'])} at block {len(g)} ({last['block']}); average channel squared "
            f"mean {_num(first['sq_mean'])} at block 1, {_num(last['sq_mean'])} at block {len(g)}"
        )
        if g["res_var"].notna().any():
            s += f"; residual branch variance {_num(g['res_var'].min())} to {_num(g['res_var'].max())}"
        out.append(s + ".")
    return out


def _setup_words(norm: str, init: str, variant: dict | None) -> str:
    if variant is None:
        return f"{'BN' if norm == 'batch' else 'no normalization'}, {BASE_INITS[init].split(' (')[0]} init"
    family = "plain" if variant["kind"] == "plain" else "residual"
    return f"{variant['label']} for the {family} nets, the other families as the paper's (He + BN)"


def _signal_text(ratios: pd.DataFrame, spp: pd.DataFrame, norm: str, init: str, width: int, variant=None):
    """The ratio table and every sentence under the signal charts, read off the measurement."""
    st.dataframe(ratios, hide_index=True, key="sig_ratios")
    st.caption(
        f"Measured here (width {width}, batch {SIG_BATCH} of {SIG_SIZE}×{SIG_SIZE} noise, "
        f"seed 0, {_setup_words(norm, init, variant)}): "
        + "; ".join(
            f"{r['series']} {r['first/last gradient-norm ratio']:.3g}" for r in ratios.to_dict("records")
        )
        + ". The ratio is the first main conv's weight-gradient norm over the last main "
        "conv's (projection shortcuts left out)."
    )
    st.markdown(
        "**Where the block statistics are taken.** Brock et al. measure pre-activation "
        "blocks, whose output is the sum x + F(x). This lab's post-activation blocks end "
        "in a ReLU after the sum, and a ReLU output always has a positive mean, which "
        "would hide any mean shift of the sum; so the statistics are taken before "
        "that ReLU. Per family, the point is: "
        + "; ".join(f"*{k}*: {p}" for k, p in spp.groupby("kind", sort=False)["point"].first().items())
        + "."
    )
    if net_setup("plain", norm, init, variant)[0] == "batch" and (spp["kind"] == "plain").any():
        flat = spp[spp["kind"] == "plain"]
        plain = ratios[ratios["series"].str.startswith("plain-")]
        st.markdown(
            f"In a plain net with BN that point is a BN output in train mode, so its "
            f"statistics are fixed by construction: measured squared mean at most "
            f"{_num(flat['sq_mean'].max())} (not drawn on the log axis), variance "
            f"{flat['var'].min():.4f} to {flat['var'].max():.4f}. What differs between "
            f"plain depths is on the left: first/last gradient-norm ratio "
            + ", ".join(
                f"{r['series']} {r['first/last gradient-norm ratio']:.3g}" for r in plain.to_dict("records")
            )
            + "."
        )
    st.markdown("\n".join(f"- {s}" for s in _spp_sentences(spp)))


def _signal_controls():
    """The signal section's choices: (families, depths, normalization, init, width)."""
    s1, s2, s3, s4, s5 = st.columns(5)
    kinds = s1.multiselect(
        "Families", ["plain", "resnet", "preresnet"], default=["plain", "resnet"], key="sig_kinds"
    )
    depths = s2.multiselect("Depths", [8, 14, 20, 32, 44, 56, 110], default=[20, 56], key="sig_depths")
    norm = s3.radio(
        "Normalization",
        ["batch", "none"],
        key="sig_norm",
        disabled=st.session_state.get("sig_init", "he") not in BASE_INITS,  # a variant's own
        format_func={"batch": "BatchNorm", "none": "none"}.get,
    )
    choices = rescue_choices()
    init = s4.selectbox(
        "Init / variant",
        list(BASE_INITS) + list(choices),
        key="sig_init",
        format_func=lambda c: BASE_INITS.get(c, c),
        help="He or PyTorch's default init, with the normalization chosen; or a variant of "
        "the follow-up literature (the `rescue` sweep's, page Can plain nets be fixed?), "
        "with its own normalization, applied to its family (the others drawn as the paper's).",
    )
    variant = choices.get(init)
    if variant is not None:
        s3.caption(f"{variant['label']}: {'BN' if variant['options']['norm'] == 'batch' else 'no BN'}")
    width = s5.selectbox("Width", [4, 8, 16], index=1, key="sig_width")
    return kinds, depths, norm, init, width, variant


def _measure_at_init(kinds, depths, norm, init, width, variant=None):
    """Fresh nets of every chosen family and depth: (gradient rows, SPP rows, ratio rows)."""
    from analysis.studies.signal import grad_ratio

    grads, spps, ratios = [], [], []
    with st.spinner("Measuring fresh nets…"):
        for k in kinds:
            knorm, kinit, options, suffix = net_setup(k, norm, init, variant)
            for d in sorted(depths):
                g, p = (r.copy() for r in signal_at_init(k, int(d), knorm, kinit, int(width), options))
                for r in (g, p):
                    r["series"], r["color"] = f"{k}-{d}{suffix}", charts.run_color(k, d)
                g["index"] = g["order"] + 1
                grads.append(g)
                spps.append(p)
                ratios.append(
                    {
                        "series": f"{k}-{d}{suffix}",
                        "first/last gradient-norm ratio": grad_ratio(g),
                        "first conv": g["layer"].iloc[0],
                        "last conv": g["layer"].iloc[-1],
                    }
                )
    sig, spp = pd.concat(grads, ignore_index=True), pd.concat(spps, ignore_index=True)
    return sig, spp, ratios


def signal_section():
    """Signal propagation at initialization: fresh nets, one noise batch, computed on the
    spot. Every number in the text is read off the measurement drawn beside it."""
    st.subheader("Signal propagation at initialization")
    st.markdown(
        f"A fresh net and one batch of {SIG_BATCH} Gaussian-noise images ({SIG_SIZE}×{SIG_SIZE}, "
        "random labels, one seed), BN in train mode as at the first SGD step. **Left**: the "
        "norm of each main-path conv's weight gradient (one backward pass). **Right**: the "
        "signal propagation plots of Brock, De and Smith (2021): at each block, the average "
        "channel squared mean, the average channel variance and the residual branch F(x)'s "
        "average channel variance."
    )
    kinds, depths, norm, init, width, variant = _signal_controls()
    fn = ui.analysis_function("studies.signal", "signal_propagation_plot", "Signal propagation")
    if fn is None or not kinds or not depths:
        return
    if len(kinds) * len(depths) > 8:
        st.warning("At most 8 nets at once: pick fewer families or depths.")
        return
    if variant is not None and variant["kind"] not in kinds:
        st.info(f"{variant['label']} is a variant of {variant['kind']} nets: add that family to see it.")
    sig, spp, ratios = _measure_at_init(kinds, depths, norm, init, width, variant)
    g1, g2 = st.columns([1, 2])
    with g1:
        ui.show_chart(
            charts.signal_figure(sig, "grad_norm", "‖∇W‖ of each conv (log)"),
            sig.drop(columns=["color"]),
            "signal-grad",
            "sig_grad",
        )
    with g2:
        ui.show_chart(charts.spp_figure(spp), spp.drop(columns=["color"]), "signal-spp", "sig_spp")
    _signal_text(pd.DataFrame(ratios), spp, norm, init, width, variant)
    if variant is not None:  # Yang et al.'s claim is about the paper's BN'd nets
        return
    st.markdown(
        verdicts.gradient_growth(
            [
                {
                    "kind": r["series"].rsplit("-", 1)[0],
                    "depth": int(r["series"].rsplit("-", 1)[1]),
                    "ratio": r["first/last gradient-norm ratio"],
                }
                for r in ratios
            ],
            norm,
        ).text
    )


st.divider()
signal_section()
