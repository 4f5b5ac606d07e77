"""Layer responses (the paper's Fig. 7): std of each conv's output after its norm layer (if
any), in layer order and sorted, plain vs residual, over training steps; ||F(x)|| / ||x|| per
block."""

import pandas as pd
import streamlit as st

from app import charts, ui, verdicts

st.title("Layer responses")
st.markdown(
    "The paper's **Fig. 7** (He et al. 2016): how strongly each 3x3 layer responds, "
    "the std of its output after BN (if the net has a norm layer), before the ReLU or the "
    "addition, on test images with the model in eval mode. He et al. report that residual "
    "layers respond more "
    "weakly, each block only nudging its input; under the chart, what the runs on "
    "screen show."
)

store = ui.get_store()
df, with_layers, refs = ui.layer_runs(store)
if not len(df) and not len(refs):
    ui.no_runs_note("see layer responses")
    st.stop()
ui.recorder_problem_note(df, store)
if not len(with_layers) and not len(refs):
    st.info(
        "None of the runs has per-layer records yet. They are written while a run trains "
        "with **Record per-layer statistics** ticked in the Lab (the default)."
    )
    st.stop()

c1, c2 = st.columns(2)
with c1:
    if len(with_layers):
        sel = ui.pick_runs(
            with_layers, "Runs", key="resp_runs", default=ui.default_pair(with_layers), max_selections=8
        )
    else:
        sel = []
        st.info(
            "None of your runs has per-layer records yet, so the bundled reference runs are shown.",
            icon=":material/science:",
        )
with c2:
    # with none of the user's own, a whole set (plain and residual at each depth, as Fig. 7)
    first = ui.reference_sets()[0]["name"] if len(refs) else None
    ref_sel = ui.pick_references(
        refs,
        key="resp_refs",
        default=[]
        if len(with_layers)
        else [i for i in refs["id"] if i.startswith(f"{ui.REF_PREFIX}{first}/")][:8],
    )
if not sel and not ref_sel:
    st.info("Pick at least one run.")
    st.stop()
runs = pd.concat(
    [with_layers[with_layers["id"].isin(sel)].assign(reference=""), refs[refs["id"].isin(ref_sel)]],
    ignore_index=True,
)
sel = list(sel) + list(ref_sel)
layers = ui.layers_for(sel, store)
response_rows = layers[(layers["type"] == "response") & layers["std"].notna()]
steps = sorted(int(s) for s in response_rows["step"].dropna().unique())
if not steps:
    st.info("The selected runs have no layer-response records.")
    st.stop()
step = st.select_slider(
    "Training step (each run shows its last record at or before it)",
    options=steps,
    value=steps[-1],
    key="resp_step",
    format_func=lambda s: "0 (init)" if s == 0 else str(s),
)


def at_step(d: pd.DataFrame, step: int) -> pd.DataFrame:
    """For each run, the rows of its latest recorded step <= ``step`` (else its first)."""
    out = []
    for _rid, g in d.groupby("run_id", sort=False):
        avail = sorted(g["step"].unique())
        s = max([v for v in avail if v <= step], default=avail[0])
        out.append(g[g["step"] == s])
    return pd.concat(out, ignore_index=True) if out else d.iloc[:0]


def records_caption(shown: pd.DataFrame, labels: dict) -> str:
    """What the records on screen are: images, mode, timing; step 0 and young BN statistics
    said where shown. Every number comes from the rows."""
    images = ui.record_images(shown)
    new = {r: v for r, v in images.items() if v is not None}
    old = [r for r, v in images.items() if v is None]
    parts = []
    if new:
        counts = sorted({n for v in new.values() for n in v})
        parts.append(
            f"Each record: the first {' / '.join(f'{n:,}' for n in counts)} test images"
            + (
                ""
                if len(counts) == 1
                else " ("
                + "; ".join(f"{labels.get(r, r)}: {', '.join(f'{n:,}' for n in v)}" for r, v in new.items())
                + ")"
            )
            + ", model in eval mode; a record at step s has the weights and BN "
            "running statistics of a checkpoint saved after s updates."
        )
    if old:
        parts.append(
            f"{', '.join(labels.get(r, r) for r in old)}: recorded by an older "
            f"recorder, on the first {ui.OLD_PROBE_IMAGES} test images, and a record "
            "labelled step s was taken after the training forward of step s+1 (BN's "
            "running statistics one batch ahead of the weights)."
        )
    # of the current recorder's records only: an older record at s was taken a batch later
    steps_shown = sorted({int(s) for s in shown[shown["run_id"].isin(list(new))]["step"].dropna()})
    if 0 in steps_shown:
        parts.append(
            "**Step 0 is the initialization.** BN has seen no data yet: in eval mode "
            "it uses its initial running statistics (mean 0, variance 1), so these "
            "values are the std of each raw conv output (γ = 1, β = 0), not "
            "normalized responses."
        )
    young = [s for s in steps_shown if 0 < s and (1 - ui.BN_MOMENTUM) ** s > 0.01]
    if young:
        s0 = young[0]
        parts.append(
            f"At step {s0}, BN's running statistics still weigh their initial values "
            f"by {(1 - ui.BN_MOMENTUM) ** s0:.0%} (momentum {ui.BN_MOMENTUM}): "
            "early eval-mode responses are only partly normalized."
        )
    return " ".join(parts)


shown = at_step(response_rows, step)
resp = charts.responses_frame(shown)
left, right = st.columns([3, 2])
with left:
    ui.show_chart(
        charts.responses_figure(resp, runs),
        resp,
        "layer-responses",
        "resp_fig7",
        caption=records_caption(shown, dict(zip(runs["id"], runs["label"]))),
    )
with right:
    summary = resp.groupby("run_id").agg(
        mean=("std", "mean"), max=("std", "max"), count=("std", "count"), step=("step", "max")
    )
    summary = summary.reset_index().merge(runs[["id", "label"]], left_on="run_id", right_on="id")
    st.markdown("**Mean response per run** (the paper: ResNets < plain nets; deeper ResNets smaller still)")
    st.dataframe(
        summary[["label", "step", "mean", "max", "count"]].rename(
            columns={"mean": "mean std", "max": "max std", "count": "layers"}
        ),
        hide_index=True,
        key="resp_summary",
        width="stretch",
        column_config=ui.fit_columns(["mean std", "max std"], label="label", integers=("layers",)),
    )
    steps_of = summary.set_index("label")["step"]
    if steps_of.nunique() > 1:  # the verdict compares these records: say they are not in step
        st.caption(
            "The runs' records are from different training steps ("
            + "; ".join(f"{lbl}: step {int(s):,}" for lbl, s in steps_of.items())
            + "): a run still training is compared at its latest record."
        )
    ref = runs["reference"].fillna("").astype(bool)
    for part, whose in ((runs[~ref], "your"), (runs[ref], "the reference")):  # budgets differ
        if len(part):
            v = verdicts.responses(
                verdicts.response_means(resp, part), ui.budgets_for(part, store), whose=whose
            )
            shown = set(part["reference"].dropna()) if whose == "the reference" else set()
            on_screen = next(iter(shown)) if len(shown) == 1 else None
            st.markdown(v.text + verdicts.shown_elsewhere(v, ui.reference_sets(), on_screen))
    blocks = layers[(layers["type"] == "block")]
    ratios = charts.ratio_frame(at_step(blocks, step)) if len(blocks) else charts.ratio_frame(blocks)
    if len(ratios):
        ui.show_chart(
            charts.ratio_figure(ratios, runs),
            ratios,
            "f-over-x",
            "resp_ratio",
            caption="‖F(x)‖/‖x‖ per block: the size of what each block adds relative "
            "to what it receives (norms over the same records' test "
            "images). For plain blocks F(x) is all there is.",
        )
    else:
        st.caption("No per-block records (‖F(x)‖/‖x‖) for these runs.")

with st.expander("Exact Fig. 7 on the whole test set, from a checkpoint"):
    own = runs[~runs["id"].map(ui.is_reference)]
    if not len(own):
        st.caption("Needs one of your runs: reference runs ship without weights.")
    rid = ui.pick_run(own, "Run", key="resp_exact_run") if len(own) else None
    if rid and st.toggle("Compute it (seconds; cached)", key="resp_exact"):
        run = store.run(rid)
        res = ui.analysis_task(run, "fig7", "Fig. 7 on the test set", key=f"fig7_{rid}")
        if res is not None:
            t = res["table"]
            exact = pd.DataFrame(
                {
                    "run_id": rid,
                    "step": None,
                    "layer": t["layer"],
                    "index": t["order"] + 1,
                    "std": t["std"],
                    "rank": t["rank"] + 1,
                }
            )
            ui.show_chart(charts.responses_figure(exact, runs), exact, "fig7-exact", "resp_exact_fig")
