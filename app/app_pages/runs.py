"""Runs: every run in a table; resume, cancel, delete, downloads; pick two to compare."""

import json

import pandas as pd
import streamlit as st

from app import charts, runs_data, ui
from resnet_core import jobs
from resnet_core.store import ACTIVE, RESUMABLE, StoreError, check_run_id

st.title("Runs")
st.markdown(
    "Every run in the store. Pick **one** to resume, cancel, delete or download it; "
    "pick **two** to compare them (the other pages then default to that pair)."
)

store = ui.get_store()
df = ui.runs_df(store)


def reference_section():
    """The bundled reference sets: what each is, how it was made, its runs' final errors."""
    sets, refs = ui.reference_sets(), ui.reference_df()
    if not sets:
        return
    st.subheader("Bundled reference runs")
    st.caption(
        "Records of finished runs that ship with the lab (metrics and per-layer "
        "statistics, no weights). They appear beside your runs on Degradation, Layer "
        "responses and Gradient flow. Make a set of your own with `python -m resnet_core "
        "reference export`."
    )
    for s in sets:
        meta = s["meta"]
        with st.expander(f"{s['title']} · {s['n']} runs", expanded=not len(df)):
            if s["description"]:
                st.markdown(s["description"])
            facts = [f"made {meta.get('made', '?')}", f"on {meta.get('machine', '?')}"]
            commits = meta.get("git_commits") or []
            if isinstance(commits, list) and commits:
                facts.append("commit " + ", ".join(f"`{str(c)[:10]}`" for c in commits))
            st.caption(" · ".join(facts))
            if meta.get("command"):
                st.code(meta["command"], language="bash")
            mine = refs[refs["id"].str.startswith(f"{ui.REF_PREFIX}{s['name']}/")]
            tbl = pd.DataFrame(
                {
                    "run": mine["label"],
                    "model": mine["model"],
                    "dataset": mine["dataset"],
                    "preset": mine["preset"],
                    "steps": mine["step"],
                    "test error (%)": [None if v is None or v != v else 100 * v for v in mine["test_error"]],
                    "train error (%)": [
                        None if v is None or v != v else 100 * v for v in mine["train_error"]
                    ],
                }
            )
            st.dataframe(
                tbl,
                hide_index=True,
                key=f"runs_ref_{s['name']}",
                column_config={
                    c: st.column_config.NumberColumn(format="%.2f")
                    for c in ("test error (%)", "train error (%)")
                },
            )


if not len(df):
    ui.no_runs_note("manage them")
    reference_section()
    st.stop()

f1, f2 = st.columns([2, 2])
with f1:
    text = st.text_input("Filter (model, dataset, label, id)", key="runs_filter")
with f2:
    states = st.multiselect("States", sorted(df["state"].unique()), key="runs_states")
view = df
if text:
    t = text.lower()
    hay = (
        view["label"].fillna("")
        + " "
        + view["model"].fillna("")
        + " "
        + view["dataset"].fillna("")
        + " "
        + view["id"]
    ).str.lower()
    view = view[hay.str.contains(t, regex=False)]
if states:
    view = view[view["state"].isin(states)]

table = pd.DataFrame(
    {
        "state": list(view["state"]),
        "run": view["label"],
        "model": view["model"],
        "dataset": view["dataset"],
        "preset": view["preset"],
        "seed": view["seed"],
        "progress": view["progress"].astype(float),
        "step": view["step"],
        "test error (%)": [None if v is None or v != v else 100 * v for v in view["test_error"]],
        "train error (%)": [None if v is None or v != v else 100 * v for v in view["train_error"]],
        "created": pd.to_datetime(view["created"], unit="s", errors="coerce"),
        "message": [(e or m) for e, m in zip(view["error"], view["message"])],
        "id": view["id"],
    }
)
if view["node"].notna().any():  # runs on a Ray cluster: the node each trains on
    table.insert(table.columns.get_loc("message"), "node", view["node"].fillna("this host").to_numpy())
st.dataframe(
    table,
    hide_index=True,
    key="runs_table",
    height=min(600, 38 + 35 * len(table)),
    column_config={
        "progress": st.column_config.ProgressColumn(min_value=0, max_value=1, format="percent"),
        "test error (%)": st.column_config.NumberColumn(format="%.2f"),
        "train error (%)": st.column_config.NumberColumn(format="%.2f"),
        "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
    },
)
st.caption(f"{len(view)} of {len(df)} runs shown; click a column header to sort. Store: `{store.root}`.")


def seeds_section(runs: pd.DataFrame):
    """Finished runs that differ only in seed, as mean ± std (n) per experiment, in the paper's
    Table 6 layout with a CSV download; shown when at least one experiment has two seeds."""
    groups = runs_data.seed_groups(runs[runs["state"] != "broken"])
    sets = groups[groups["n_runs"] >= 2]
    if not len(sets):
        return
    st.subheader("Repeats over seeds")
    st.caption(
        f"{len(sets)} experiment(s) with runs that differ only in seed (every other "
        "training setting equal; name, threads and device may differ): final error as "
        "mean ± standard deviation (ddof=1) over its finished runs, (n) = runs averaged. "
        "Runs still training, failed or diverged are not averaged."
    )
    t6 = runs_data.table6_frame(sets)
    ui.table6(t6, ["label"], "runs_seed_table", "runs_seed_csv", "seeds-table6.csv")


seeds_section(view)

broken = df[df["state"] == "broken"]
if len(broken):
    st.warning(
        f"{len(broken)} run folder(s) can't be read (half-written or corrupt): "
        + "; ".join(f"`{r.id}`: {r.error}" for r in broken.itertuples())[:1500],
        icon=":material/warning:",
    )

picked = ui.pick_runs(
    view if len(view) else df, "Pick one run to act on, or two to compare", key="runs_pick", max_selections=2
)


def _safe_run(rid):
    check_run_id(rid)
    return store.run(rid)


def actions(rid: str):
    row = df[df["id"] == rid].iloc[0]
    st.subheader(row["label"])
    st.caption(f"`{rid}` · {ui.state_text(row['state'])} · {row['message'] or ''}")
    try:
        run = _safe_run(rid)
    except StoreError as e:
        st.error(str(e))
        return
    b = st.columns(5)
    if row["state"] in RESUMABLE and b[0].button("Resume", key="runs_resume", icon=":material/play_arrow:"):
        try:
            jobs.resume(store, rid)
            st.success("Queued to resume from its last checkpoint.")
        except StoreError as e:
            st.error(str(e))
    if row["state"] in ACTIVE and b[1].button("Cancel", key="runs_cancel", icon=":material/stop:"):
        try:
            st.success(f"{jobs.cancel(store, rid)}")
        except StoreError as e:
            st.error(str(e))
    if b[2].button("Delete…", key="runs_delete", icon=":material/delete:"):
        st.session_state["runs_confirm_delete"] = rid
    metrics = ui.metrics_for([rid], store)
    b[3].download_button(
        "Metrics (CSV)",
        metrics.drop(columns=["run_id"]).to_csv(index=False).encode(),
        file_name=f"{rid}-metrics.csv",
        mime="text/csv",
        key="runs_dl_metrics",
        on_click="ignore",
        disabled=not len(metrics),
    )
    b[4].download_button(
        "Config (JSON)",
        ui.config_json(store, rid).encode(),
        file_name=f"{rid}-config.json",
        mime="application/json",
        key="runs_dl_config",
        on_click="ignore",
    )
    if st.session_state.get("runs_confirm_delete") == rid:
        st.warning(
            f"Delete **{row['label']}** (`{rid}`) with its checkpoints and logs? This can't be undone.",
            icon=":material/delete_forever:",
        )
        y, n, _ = st.columns([1, 1, 4])
        if y.button("Yes, delete it", key="runs_delete_yes", type="primary"):
            try:
                store.delete(rid)
                st.session_state.pop("runs_confirm_delete", None)
                st.rerun()
            except (StoreError, OSError) as e:
                st.error(f"Not deleted: {e}")
        if n.button("Keep it", key="runs_delete_no"):
            st.session_state.pop("runs_confirm_delete", None)
            st.rerun()
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Config**")
        st.code(ui.config_json(store, rid), language="json")
    with c2:
        st.markdown("**Status**")
        try:
            st.code(json.dumps(run.read_status(), indent=1, default=str), language="json")
        except StoreError as e:
            st.error(str(e))
        env = run.read_json("env.json")
        if env:
            st.markdown("**Environment**")
            st.code(json.dumps(env, indent=1), language="json")
    if len(metrics):
        runs = df[df["id"] == rid]
        ui.show_chart(charts.compare_figure(metrics, runs), metrics, f"{rid}-metrics", "runs_one")


def compare(ids: list[str]):
    st.session_state["pair"] = list(ids)
    runs = df[df["id"].isin(ids)].set_index("id").loc[ids].reset_index()
    st.subheader("Compare: " + " vs ".join(runs["label"]))
    st.caption(
        "Layer responses, Gradient flow, Activations and Embeddings now default to this pair."
        + (
            " These two runs differ only in seed."
            if runs["group"].notna().all() and runs["group"].nunique() == 1 and runs["seed"].nunique() == 2
            else ""
        )
    )
    metrics = ui.metrics_for(ids, store)
    ui.show_chart(charts.compare_figure(metrics, runs), metrics, "compare-metrics", "runs_cmp")
    cfgs = []
    for rid in ids:
        try:
            cfgs.append(store.run(rid).read_config_dict())
        except StoreError as e:
            cfgs.append({"error": str(e)})
    keys = list(dict.fromkeys(list(cfgs[0]) + list(cfgs[1])))
    diff = pd.DataFrame(
        {
            "field": keys,
            runs["label"][0]: [json.dumps(cfgs[0].get(k)) for k in keys],
            runs["label"][1] + " ": [json.dumps(cfgs[1].get(k)) for k in keys],
        }
    )
    diff["same"] = diff.iloc[:, 1] == diff.iloc[:, 2]
    only = st.toggle("Only fields that differ", value=True, key="runs_diff_only")
    st.dataframe(diff[~diff["same"]] if only else diff, hide_index=True, key="runs_diff")
    finals = pd.DataFrame(
        {
            "run": runs["label"],
            "state": runs["state"],
            "final test error (%)": [None if v is None or v != v else 100 * v for v in runs["test_error"]],
            "final training error (%)": [
                None if v is None or v != v else 100 * v for v in runs["train_error"]
            ],
        }
    )
    st.dataframe(finals, hide_index=True, key="runs_finals")


if len(picked) == 1:
    actions(picked[0])
elif len(picked) == 2:
    compare(picked)

st.divider()
reference_section()
