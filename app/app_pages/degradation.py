"""Degradation (the paper's Fig. 6): error against iterations, plain left, residual right;
beside it final error against depth with the paper's and reproductions' values."""

import pandas as pd
import streamlit as st

from app import charts, runs_data, ui, verdicts
from resnet_core.store import ACTIVE

st.title("Degradation")
st.markdown(
    "In the paper (Fig. 6), deeper **plain** nets end with *higher training error* than "
    "shallower ones (not overfitting), and residual nets get better with depth. Pick "
    "runs on one dataset to see what yours do: under the charts, what the runs on screen "
    "show."
)

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
        default = list(runs_data.newest_groups(on_ds, 12)["id"])
        sel = ui.pick_runs(
            on_ds,
            "Runs",
            key=f"deg_runs_{dataset}",
            default=default,
            help="Default: the 12 newest experiments on this dataset, with all their seeds.",
        )
else:
    on_ds, sel = df, []
    with c2:
        st.info(
            "You have no runs yet, so the curves below are the **bundled reference runs** "
            "(measured, shipped with the lab). Launch your own on the **Lab** page: they "
            "appear here beside these.",
            icon=":material/science:",
        )
with c2:
    first_set = ui.reference_sets()[0]["name"] if ui.reference_sets() else None
    ref_sel = ui.pick_references(
        refs,
        key="deg_refs",
        default=[] if len(df) else [i for i in refs["id"] if i.startswith(f"ref:{first_set}/")],
    )
with c3:
    train_split = st.radio(
        "Training error",
        ["train", "train_eval"],
        key="deg_train_split",
        format_func={"train": "while training", "train_eval": "re-scored (eval mode)"}.get,
        help="'while training' averages each logging window (train-mode BN, "
        "augmented batches) as the paper's thin curves; 're-scored' "
        "evaluates a fixed set of training images at each evaluation.",
    )
    single_runs = st.toggle(
        "Single runs",
        key="deg_single_runs",
        help="Finished runs that differ only in seed are drawn as their mean "
        "± one standard deviation. Turn this on to draw each run: its "
        "own curves, and its final error beside the error bars.",
    )
if not sel and not ref_sel:
    st.info("Pick at least one run.")
    st.stop()

_live = bool(on_ds[on_ds["id"].isin(sel)]["state"].isin(ACTIVE).any()) if len(on_ds) else False


def seed_note(groups: pd.DataFrame, bands: bool) -> str:
    """What the error bars (and bands) of the runs on screen are, with each set's seeds."""
    sets = groups[groups["n_runs"] >= 2]
    if not len(sets):
        return ""
    listed = "; ".join(f"{r.label} (seeds {', '.join(map(str, r.seeds))})" for r in sets.itertuples())
    return (
        f"Filled marks with error bars{' and the bands on the curves' if bands else ''}: "
        "mean ± one standard deviation (ddof=1) over finished runs that differ only in "
        "seed (every other training setting equal; name, threads and device may differ): "
        f"{listed}."
    )


def final_table(groups: pd.DataFrame):
    """The paper's Table 6 layout for the runs on screen, with a CSV download."""
    t6 = runs_data.table6_frame(groups)
    st.markdown(
        "**Final error by depth**, laid out as the paper's Table 6: (n) is the number "
        "of runs averaged; training error is the eval-mode re-scoring (the last "
        "training window for a run without one)."
    )
    shown = t6.assign(source=[r or "your runs" for r in t6["reference"]])
    ui.table6(shown, ["state", "source"], "deg_table", "deg_table_csv", "table6.csv")


def crossing_section(groups: pd.DataFrame, metrics: pd.DataFrame):
    """When depth starts to pay: the deepest minus the shallowest ResNet on screen, training
    error against steps, with the step from which it stays below zero marked and said."""
    res = groups[(groups["kind"] == "resnet") & groups["depth"].notna()]
    if res["depth"].nunique() < 2 or not len(metrics):
        return
    res = res.sort_values("depth")
    lo, hi = res.iloc[0], res.iloc[-1]
    if (res["depth"] == lo.depth).sum() > 1 or (res["depth"] == hi.depth).sum() > 1:
        st.caption(
            "When depth starts to pay: pick one experiment per depth (several runs at "
            "the shallowest or deepest ResNet depth are on screen)."
        )
        return
    cross = runs_data.depth_crossing(metrics, hi.run_ids, lo.run_ids)
    if cross["last"] is None:
        return
    deep, shallow = (runs_data.model_title("resnet", int(r.depth)) for r in (hi, lo))
    st.markdown(f"**When does depth start to pay?** {deep} minus {shallow}, training error")
    ui.show_chart(
        charts.crossing_figure(cross["diff"], cross["stays_below_from"], deep, shallow, cross["split"]),
        cross["diff"].rename("difference_points").rename_axis("step").reset_index(),
        "depth-crossing",
        "deg_crossing",
    )
    last_step = int(cross["diff"].index[-1])
    if hi.state != "done" or lo.state != "done":  # a set of seeds holds finished runs only
        below = cross["stays_below_from"]
        st.caption(
            f"Not finished: so far {deep}'s training error "
            + (
                f"has stayed below {shallow}'s since step {below:,}"
                if below is not None
                else f"is not below {shallow}'s for good"
            )
            + f"; at the latest step ({last_step:,}) the difference is {cross['last']:+.1f} points."
        )
    elif cross["stays_below_from"] is not None:
        st.caption(
            f"On these runs {deep}'s training error stays below {shallow}'s from step "
            f"{cross['stays_below_from']:,} to the last ({last_step:,}), where it is "
            f"{-cross['last']:.1f} points lower: as in the paper's Fig. 6, the deeper "
            "ResNet ends better."
        )
    else:
        st.caption(
            f"On these runs {deep}'s training error does not stay below {shallow}'s: at "
            f"the last step ({last_step:,}) it is {cross['last']:+.1f} points. The paper "
            "(Fig. 6, 64,000 iterations on all of CIFAR-10) has the deeper ResNet end "
            f"lower; these runs stop after {last_step:,} steps, the likely reason."
        )


def verdict_lines(runs: pd.DataFrame, finals: pd.DataFrame):
    """Fig. 6's claims checked on the runs on screen, the user's and the bundled ones apart
    (their budgets differ), each a sentence with its numbers (app.verdicts)."""
    ref = runs["reference"].fillna("").astype(bool).to_numpy()
    done = (runs["state"] == "done").to_numpy()  # a final error is a finished run's
    unfinished = runs.loc[~done, "label"].tolist()
    if unfinished:
        st.caption(
            f"Not in the verdicts until they finish ({len(unfinished)}): " + "; ".join(unfinished) + "."
        )
    for mask, whose in ((~ref & done, "your"), (ref & done, "the reference")):
        if not mask.any():
            continue
        mixed = mixed_depths(runs[mask])
        if mixed:  # averaging different settings at one depth would compare settings, not depths
            st.caption(
                f"No depth verdict for {whose} runs: several experiments (not only seeds) "
                f"at {', '.join(mixed)} are on screen; pick one experiment per depth."
            )
            continue
        vs = verdicts.degradation(finals[mask], ui.budgets_for(runs[mask], store), whose=whose)
        shown = set(runs.loc[mask, "reference"].dropna()) if whose == "the reference" else set()
        on_screen = next(iter(shown)) if len(shown) == 1 else None
        sets = ui.reference_sets()
        st.markdown("\n".join(f"- {v.text}{verdicts.shown_elsewhere(v, sets, on_screen)}" for v in vs))


def mixed_depths(runs: pd.DataFrame) -> list[str]:
    """The models (e.g. "ResNet-56") at which the runs belong to more than one seed set."""
    d = runs.assign(_set=runs_data.seed_sets(runs)).dropna(subset=["depth"])
    n = d.groupby(["kind", "depth"])["_set"].nunique()
    return [runs_data.model_title(k, int(dep)) for (k, dep), v in n.items() if v > 1]


@st.fragment(run_every=3.0 if _live else None)
def curves():
    runs = ui.runs_df(store)
    runs = runs[runs["id"].isin(sel)].assign(reference="")
    chosen_refs = refs[refs["id"].isin(ref_sel)]
    if len(chosen_refs):
        runs = pd.concat([runs, chosen_refs], ignore_index=True) if len(runs) else chosen_refs
    metrics = ui.metrics_for(list(runs["id"]), store)
    sets = runs_data.seed_sets(runs)
    groups = runs_data.seed_groups(runs)
    left, right = st.columns([3, 2])
    with left:
        fig = charts.degradation_figure(
            metrics, runs, train_split=train_split, seed_sets=None if single_runs else sets
        )
        data = metrics.merge(runs[["id", "label", "kind", "depth", "seed"]], left_on="run_id", right_on="id")
        data = data[data["split"].isin([train_split, "test"])][
            ["run_id", "label", "kind", "depth", "seed", "step", "split", "error", "loss"]
        ]
        ui.show_chart(fig, data, "degradation-curves", "deg_curves")
        if runs["state"].isin(ACTIVE).any():
            st.caption("Live: updates every 3 s while a run trains.")
    with right:
        which = st.radio(
            "Final error",
            ["test", "train"],
            horizontal=True,
            key="deg_which",
            format_func={"test": "test", "train": "training (re-scored)"}.get,
        )
        finals = charts.final_errors_frame(runs)
        fig2 = charts.final_error_figure(finals, which=which, groups=groups, show_runs=single_runs)
        ui.show_chart(
            fig2,
            finals.drop(columns=["color"]),
            "final-error-vs-depth",
            "deg_final",
            caption=(
                "Open marks: the paper (Table 6; plain read off Fig. 6) and public "
                "reproductions, all CIFAR-10 at the full 64k-iteration budget: "
                "compare the trend, not the level, with short or digits runs."
                if which == "test"
                else ""
            )
            + (
                " Stars on dotted lines: bundled reference runs (their budget is on the Runs page)."
                if len(chosen_refs)
                else ""
            ),
        )
    note = seed_note(groups, bands=not single_runs)
    if note:
        st.caption(note)
    if single_runs:
        tbl = finals.assign(state=runs["state"].values, seed=runs["seed"].values)[
            ["label", "kind", "depth", "seed", "state", "train_error_pct", "test_error_pct"]
        ]
        st.dataframe(
            tbl.rename(
                columns={
                    "train_error_pct": "final training error (%)",
                    "test_error_pct": "final test error (%)",
                }
            ),
            hide_index=True,
            key="deg_runs_table",
            column_config={
                c: st.column_config.NumberColumn(format="%.2f")
                for c in ("final training error (%)", "final test error (%)")
            },
        )
    else:
        final_table(groups)
    verdict_lines(runs, finals)
    crossing_section(groups, metrics)


curves()
