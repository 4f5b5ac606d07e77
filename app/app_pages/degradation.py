"""Degradation (the paper's Fig. 6): error against iterations, plain left, residual right;
beside it final error against depth with the paper's and reproductions' values."""
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from app import charts, ui, verdicts  # noqa: E402
from resnet_core.store import ACTIVE  # noqa: E402

st.title("Degradation")
st.markdown("He et al. (Fig. 6) report that deeper **plain** nets end with *higher training error* "
            "than shallower ones (not overfitting), while residual nets get better with depth. "
            "Below the charts: what the runs on screen show. Pick runs on one dataset.")

store = ui.get_store()
df = ui.runs_df(store)
df = df[df["state"] != "broken"]
refs = ui.reference_df()
if not len(df) and not len(refs):
    ui.no_runs_note("see the curves")
    st.stop()

c1, c2, c3 = st.columns([1, 3, 1.2])
if len(df):
    datasets = list(dict.fromkeys(df["dataset"]))  # newest run's dataset first
    with c1:
        dataset = st.selectbox("Dataset", datasets, key="deg_dataset")
    on_ds = df[df["dataset"] == dataset]
    with c2:
        default = list(on_ds["id"].head(12))
        sel = ui.pick_runs(on_ds, "Runs", key=f"deg_runs_{dataset}", default=default,
                           help="Default: the 12 newest runs on this dataset.")
else:
    on_ds, sel = df, []
    with c2:
        st.info("You have no runs yet, so the curves below are the **bundled reference runs** "
                "(measured, shipped with the lab). Launch your own on the **Lab** page: they "
                "appear here beside these.", icon=":material/science:")
with c2:
    first_set = ui.reference_sets()[0]["name"] if ui.reference_sets() else None
    ref_sel = ui.pick_references(
        refs, key="deg_refs",
        default=[] if len(df) else [i for i in refs["id"] if i.startswith(f"ref:{first_set}/")])
with c3:
    train_split = st.radio("Training error", ["train", "train_eval"], key="deg_train_split",
                           format_func={"train": "while training",
                                        "train_eval": "re-scored (eval mode)"}.get,
                           help="'while training' averages each logging window (train-mode BN, "
                                "augmented batches) as the paper's thin curves; 're-scored' "
                                "evaluates a fixed set of training images at each evaluation.")
if not sel and not ref_sel:
    st.info("Pick at least one run.")
    st.stop()

_live = bool(on_ds[on_ds["id"].isin(sel)]["state"].isin(ACTIVE).any()) if len(on_ds) else False


@st.fragment(run_every=3.0 if _live else None)
def curves():
    runs = ui.runs_df(store)
    runs = runs[runs["id"].isin(sel)].assign(reference="")
    chosen_refs = refs[refs["id"].isin(ref_sel)]
    if len(chosen_refs):
        runs = pd.concat([runs, chosen_refs], ignore_index=True) if len(runs) else chosen_refs
    metrics = ui.metrics_for(list(runs["id"]), store)
    left, right = st.columns([3, 2])
    with left:
        fig = charts.degradation_figure(metrics, runs, train_split=train_split)
        data = metrics.merge(runs[["id", "label", "kind", "depth"]], left_on="run_id", right_on="id")
        data = data[data["split"].isin([train_split, "test"])][
            ["run_id", "label", "kind", "depth", "step", "split", "error", "loss"]]
        ui.show_chart(fig, data, "degradation-curves", "deg_curves")
        if runs["state"].isin(ACTIVE).any():
            st.caption("Live: updates every 3 s while a run trains.")
    with right:
        which = st.radio("Final error", ["test", "train"], horizontal=True, key="deg_which",
                         format_func={"test": "test", "train": "training (re-scored)"}.get)
        finals = charts.final_errors_frame(runs)
        fig2 = charts.final_error_figure(finals, which=which)
        ui.show_chart(fig2, finals.drop(columns=["color"]), "final-error-vs-depth", "deg_final",
                      caption="Open marks: the paper (Table 6; plain read off Fig. 6) and public "
                              "reproductions, all CIFAR-10 at the full 64k-iteration budget: "
                              "compare the trend, not the level, with short or digits runs. "
                              "Stars on dotted lines: bundled reference runs (their budget is "
                              "on the Runs page).")
    tbl = finals.assign(state=runs["state"].values)[["label", "kind", "depth", "state",
                                                      "train_error_pct", "test_error_pct"]]
    st.dataframe(tbl.rename(columns={"train_error_pct": "final training error (%)",
                                     "test_error_pct": "final test error (%)"}),
                 hide_index=True, key="deg_table",
                 column_config={c: st.column_config.NumberColumn(format="%.2f")
                                for c in ("final training error (%)", "final test error (%)")})
    verdict_lines(runs, finals)


def verdict_lines(runs: pd.DataFrame, finals: pd.DataFrame):
    """Fig. 6's claims checked on the runs on screen, the user's and the bundled ones apart
    (their budgets differ), each a sentence with its numbers (app.verdicts)."""
    ref = runs["reference"].fillna("").astype(bool).to_numpy()
    for mask, whose in ((~ref, "your"), (ref, "the reference")):
        if mask.any():
            vs = verdicts.degradation(finals[mask], ui.budgets_for(runs[mask], store), whose=whose)
            st.markdown("\n".join(f"- {v.text}" for v in vs))


curves()
