"""Streamlit helpers shared by the pages: the store, cached readers, pickers, chart export.

Nothing here holds state the store lacks: every page re-reads the run store on each rerun
(cheap: small JSON files, log tails, and caches keyed by file size and mtime), so a refresh,
a second tab or a restarted server sees the same runs.
"""

from __future__ import annotations

import importlib
import json
import os
import time

import pandas as pd
import streamlit as st

from resnet_core import reference
from resnet_core.claims import CLAIMS, judge
from resnet_core.store import ACTIVE, RESUMABLE, RunStore, StoreError, check_run_id

from . import runs_data

STATE_ICONS = {
    "queued": ":material/hourglass_top:",
    "running": ":material/play_circle:",
    "done": ":material/check_circle:",
    "failed": ":material/error:",
    "diverged": ":material/warning:",
    "cancelled": ":material/cancel:",
    "interrupted": ":material/pause_circle:",
    "broken": ":material/broken_image:",
}
PLOTLY_CONFIG = {
    "displaylogo": False,
    "toImageButtonOptions": {"format": "png", "scale": 2, "filename": "resnet-lab"},
    "modeBarButtonsToRemove": ["lasso2d", "select2d"],
}


def get_store() -> RunStore:
    """The store of $RESNET_LAB_RUNS_DIR (default ./checkpoints), the CLI's too."""
    return RunStore()


def runs_df(store: RunStore | None = None) -> pd.DataFrame:
    """Every run in the store, newest first (re-read on every call: the truth is on disk)."""
    store = store or get_store()
    return runs_data.runs_frame(store)


# --- bundled reference runs (resnet_core.reference) ---------------------------------------
# They join the pickers of the pages that read records (Degradation, Layer responses, Gradient
# flow) under ids "ref:<set>/<run_id>", which no store run id can take (':' is refused there).
REF_PREFIX = "ref:"


def is_reference(run_id) -> bool:
    return isinstance(run_id, str) and run_id.startswith(REF_PREFIX)


def resolve(run_id: str, store: RunStore) -> tuple[RunStore, str]:
    """(the store holding ``run_id``, its id there): a reference set for "ref:" ids."""
    if is_reference(run_id):
        name, _, rid = run_id[len(REF_PREFIX) :].partition("/")
        reference.check_set_name(name)
        check_run_id(rid)  # no path tricks: a plain run id, inside that set's folder
        return RunStore(reference.default_root() / name), rid
    return store, run_id


def _reference_sig() -> tuple:
    root = reference.default_root()
    try:
        return tuple((p.name, _sig(p / "set.json")) for p in sorted(root.iterdir()) if p.is_dir())
    except OSError:
        return ()


@st.cache_data(max_entries=4, show_spinner=False)
def _reference_cached(root: str, sig: tuple) -> tuple[pd.DataFrame, list[dict]]:
    frames, sets = [], []
    for s in reference.list_sets(root):
        if s.error or not s.run_ids():
            continue
        df = runs_data.runs_frame(s.store)
        df = df[df["state"].isin(reference.ENDED)].copy()  # done, or diverged (a result too)
        # a diverged run's last evaluation came before its loss stopped being finite: it has
        # no final error (the pages' final-error charts, tables and verdicts read these)
        df.loc[df["state"] == "diverged", ["test_error", "train_error"]] = None
        if not len(df):
            continue
        df["label"] = _reference_labels(df, s.name)
        df["id"] = REF_PREFIX + s.name + "/" + df["id"]
        df["reference"] = s.title
        frames.append(df)
        sets.append(
            {
                "name": s.name,
                "title": s.title,
                "description": s.description,
                "meta": _checked(s),
                "n": len(df),
            }
        )
    if not frames:
        return pd.DataFrame(columns=runs_data.RUN_COLUMNS + ["reference"]), sets
    return pd.concat(frames, ignore_index=True), sets


def _reference_labels(df: pd.DataFrame, set_name: str) -> list[str]:
    """ "ref · <net> · <variant> · seed k · <set>": the variant (a `rescue` run's label after
    its group) where runs of one net differ in it, the seed where the set has several."""
    seeds = len({x for x in df["seed"] if x == x}) > 1
    out = []
    for r in df.itertuples():
        parts = ["ref", runs_data.model_title(r.kind, r.depth)]
        if isinstance(r.name, str) and r.name.startswith("rescue: "):
            parts.append(r.name.split(": ", 2)[-1])
        if seeds:
            parts.append(f"seed {r.seed}")
        out.append(" · ".join(parts + [set_name]))
    return out


def _checked(s) -> dict:
    """The set's set.json with only the claims its records do show (resnet_core.claims): the
    pages point to a set's claims, so a hand-edited or outdated one is dropped here."""
    if not s.meta.get("claims"):
        return s.meta  # nothing to confirm: no need to read every run's records at start-up
    verdicts = judge(s.store)  # once per set: every claim, every seed
    shown = {c for c in CLAIMS if all(v.holds for v in verdicts if v.claim == c)} if verdicts else set()
    claims = [c for c in s.meta.get("claims", []) if c in shown]
    return {**s.meta, "claims": claims}


def reference_df() -> pd.DataFrame:
    """The bundled reference runs as rows like ``runs_df``'s, with a ``reference`` column
    (the set's title); finished runs only (done, or diverged)."""
    return _reference_cached(str(reference.default_root()), _reference_sig())[0].copy()


def reference_sets() -> list[dict]:
    """name, title, description, meta (set.json) and run count of each readable set."""
    return _reference_cached(str(reference.default_root()), _reference_sig())[1]


def pick_references(refs: pd.DataFrame, key: str, default: list[str] | None = None) -> list[str]:
    """A picker for bundled reference runs (nothing shown when none are bundled)."""
    if not len(refs):
        return []
    return pick_runs(
        refs,
        "Reference runs (bundled with the lab, measured)",
        key=key,
        default=default or [],
        help="Finished runs whose records ship with the lab (no weights): "
        + "; ".join(f"{s['title']}" for s in reference_sets())
        + ". The Runs page says how each set was made.",
    )


def _sig(path) -> tuple:
    try:
        s = os.stat(path)
        return (s.st_size, s.st_mtime_ns)
    except OSError:
        return (0, 0)


@st.cache_data(max_entries=512, show_spinner=False)
def _metrics_cached(root: str, run_id: str, sig: tuple) -> pd.DataFrame:
    return runs_data.metrics_frame(RunStore(root).run(run_id))


@st.cache_data(max_entries=128, show_spinner=False)
def _layers_cached(root: str, run_id: str, sig: tuple) -> pd.DataFrame:
    return runs_data.layers_frame(RunStore(root).run(run_id))


def metrics_for(run_ids, store: RunStore | None = None) -> pd.DataFrame:
    """metrics.jsonl of several runs in one frame with a run_id column."""
    return _frames_for(run_ids, store, "metrics.jsonl", _metrics_cached, runs_data.METRIC_COLUMNS)


def layers_for(run_ids, store: RunStore | None = None) -> pd.DataFrame:
    """layers.jsonl of several runs in one frame with a run_id column."""
    return _frames_for(run_ids, store, "layers.jsonl", _layers_cached, runs_data.LAYER_COLUMNS)


def _frames_for(run_ids, store: RunStore | None, file: str, cached, columns: list[str]) -> pd.DataFrame:
    """One record file of several runs (own or reference; unreadable ones left out), read
    through ``cached(root, run_id, signature)``, in one frame with a run_id column."""
    store = store or get_store()
    frames = []
    for rid in run_ids:
        try:
            st_, sid = resolve(rid, store)
            df = cached(str(st_.root), sid, _sig(st_.root / sid / file))
        except (StoreError, reference.ReferenceSetError):
            continue
        if len(df):
            frames.append(df.assign(run_id=rid))
    if not frames:
        return pd.DataFrame(columns=columns + ["run_id"])
    return pd.concat(frames, ignore_index=True)


def budgets_for(runs: pd.DataFrame, store: RunStore | None = None) -> list[dict]:
    """Each run's training budget (steps, batch, training images, image size, dataset), for
    the verdicts' "likely reason" clauses (app.verdicts.budget_note); unreadable configs give
    what the runs table knows."""
    store = store or get_store()
    out = []
    for rid, total, ds in zip(runs["id"], runs["total"], runs["dataset"]):
        try:
            st_, sid = resolve(rid, store)
            cfg = st_.run(sid).read_config_dict()
        except (StoreError, reference.ReferenceSetError):
            cfg = {}
        out.append(
            {
                "steps": total,
                "batch_size": cfg.get("batch_size"),
                "images": cfg.get("subset"),
                "image_size": cfg.get("image_size"),
                "dataset": ds,
            }
        )
    return out


def has_layers(store: RunStore, run_id: str) -> bool:
    try:
        st_, sid = resolve(run_id, store)
    except (reference.ReferenceSetError, StoreError):
        return False
    return _sig(st_.root / sid / "layers.jsonl")[0] > 0


def layer_runs(store: RunStore) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """What the per-layer pages (Layer responses, Gradient flow) pick from: the store's
    readable runs, those of them with per-layer records, and the bundled reference runs with
    per-layer records."""
    df = runs_df(store)
    df = df[df["state"] != "broken"]
    with_layers = df[[has_layers(store, i) for i in df["id"]]] if len(df) else df
    refs = reference_df()
    refs = refs[[has_layers(store, i) for i in refs["id"]]] if len(refs) else refs
    return df, with_layers, refs


# --- what the per-layer records are (analysis.recorders) ----------------------------------
OLD_PROBE_IMAGES = 128  # records without an "images" field were made on 128 test images
BN_MOMENTUM = 0.1  # PyTorch's default, which the models keep


def recorder_problems(store: RunStore, run_ids) -> dict[str, list[str]]:
    """run id -> the recorder failures its status names (``recorder_errors``), for runs that
    have any: a recorder that failed to load or stopped mid-run."""
    out = {}
    for rid in run_ids:
        try:
            st_, sid = resolve(rid, store)
            status = st_.run(sid).read_json("status.json", {}) or {}
        except (StoreError, reference.ReferenceSetError):
            continue
        errs = status.get("recorder_errors") if isinstance(status, dict) else None
        if errs:
            out[rid] = [str(e) for e in errs]
    return out


def recorder_problem_note(runs: pd.DataFrame, store: RunStore) -> None:
    """A warning naming each run whose recorder failed, and why (nothing when none did)."""
    probs = recorder_problems(store, list(runs["id"])) if len(runs) else {}
    if probs:
        labels = dict(zip(runs["id"], runs["label"]))
        st.warning(
            "Per-layer records are missing or incomplete for these runs, because their "
            "recorder failed:\n\n"
            + "\n".join(f"- **{labels.get(r, r)}**: {'; '.join(e)[:300]}" for r, e in probs.items()),
            icon=":material/warning:",
        )


def record_images(layers: pd.DataFrame) -> dict:
    """run id -> sorted image counts of its records in ``layers`` (rows of one kind), or
    None for records made before the count was stored (128 probe images, the old timing)."""
    out = {}
    for rid, g in layers.groupby("run_id", sort=False):
        n = (
            pd.to_numeric(g["images"], errors="coerce").dropna()
            if "images" in g.columns
            else pd.Series(dtype=float)
        )
        out[rid] = sorted({int(v) for v in n}) or None
    return out


def fmt_eta(seconds) -> str:
    from resnet_core.store import fmt_eta as eta  # capped: an absurd budget reads in days

    return f"ETA {eta(seconds)}"


def fmt_pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and v != v) else f"{100 * v:.2f}%"


def state_text(state: str, icon: bool = True) -> str:
    """The state with a material icon (markdown only; tables get ``icon=False``)."""
    return f"{STATE_ICONS.get(state, '')} {state}" if icon else str(state)


def table6(t6: pd.DataFrame, extra: list[str], key: str, csv_key: str, file_name: str) -> None:
    """A Table 6-style table (``runs_data.table6_frame``: its shown columns, then ``extra``)
    and a CSV download of the whole frame."""
    st.dataframe(t6[runs_data.TABLE6_COLUMNS + extra], hide_index=True, key=key)
    st.download_button(
        "Table (CSV)",
        t6.to_csv(index=False).encode(),
        file_name=file_name,
        mime="text/csv",
        key=csv_key,
        on_click="ignore",
        icon=":material/download:",
    )


def show_chart(fig, data: pd.DataFrame | None, name: str, key: str, caption: str | None = None):
    """A plotly chart (its modebar exports PNG) with a CSV download of its data."""
    cfg = dict(PLOTLY_CONFIG, toImageButtonOptions=dict(PLOTLY_CONFIG["toImageButtonOptions"], filename=name))
    st.plotly_chart(chart_layout(fig), config=cfg, key=f"chart_{key}")
    if caption:
        st.caption(caption)
    if data is not None and len(data):
        st.download_button(
            "Download data (CSV)",
            data.to_csv(index=False).encode(),
            file_name=f"{name}.csv",
            mime="text/csv",
            key=f"csv_{key}",
            on_click="ignore",
            icon=":material/download:",
        )


def run_options(df: pd.DataFrame) -> tuple[list[str], dict]:
    """Run ids and their labels (with state), for pickers."""
    labels = {
        r.id: f"{r.label} ({r.state})" if r.state not in ("done",) else r.label for r in df.itertuples()
    }
    return list(df["id"]), labels


def pick_runs(
    df: pd.DataFrame,
    label: str,
    key: str,
    default: list[str] | None = None,
    max_selections: int | None = None,
    help: str | None = None,
) -> list[str]:
    ids, labels = run_options(df)
    if key in st.session_state:  # drop ids that vanished (deleted runs)
        st.session_state[key] = [i for i in st.session_state[key] if i in labels]
    default = [d for d in (default or []) if d in labels]
    return st.multiselect(
        label,
        ids,
        default=default if key not in st.session_state else None,
        format_func=lambda i: labels.get(i, i),
        key=key,
        max_selections=max_selections,
        help=help,
    )


def pick_run(df: pd.DataFrame, label: str, key: str, default: str | None = None) -> str | None:
    ids, labels = run_options(df)
    if not ids:
        return None
    if key in st.session_state and st.session_state[key] not in labels:
        del st.session_state[key]
    index = ids.index(default) if default in ids else 0
    return st.selectbox(label, ids, index=index, format_func=lambda i: labels.get(i, i), key=key)


def default_pair(df: pd.DataFrame, need=None) -> list[str]:
    """The pair to compare: the one chosen on the Runs page when set, else the deepest
    plain / residual pair at the same depth (where the effects are largest), else the newest
    plain and the newest residual run (among rows passing ``need``)."""
    d = df if need is None else df[need(df)]
    pair = [i for i in st.session_state.get("pair", []) if i in set(d["id"])]
    if len(pair) == 2:
        return pair
    same = deepest_pair(d)
    if same:
        return same
    out = []
    for kind in ("plain", "resnet", "preresnet"):
        k = d[d["kind"] == kind]
        if len(k) and len(out) < 2:
            out.append(k["id"].iloc[0])
    for rid in d["id"]:
        if len(out) >= 2:
            break
        if rid not in out:
            out.append(rid)
    return out


def analysis_function(module: str, name: str, what: str):
    """``analysis.<module>.<name>``; else None, after a note in the page naming the cause
    (a missing package, a missing function). Any other error while importing analysis is a
    bug: it is raised, so Streamlit shows it with its traceback."""
    target = f"analysis.{module}" if module else "analysis"
    try:
        return getattr(importlib.import_module(target), name)
    except ImportError as e:
        st.warning(
            f"**{what}** can't be shown: importing `{target}` failed "
            f"({type(e).__name__}: {str(e)[:200]}). The rest of the page works "
            "without it.",
            icon=":material/extension_off:",
        )
    except AttributeError:
        st.warning(
            f"**{what}** can't be shown: `{target}` has no `{name}` (an older analysis "
            "package?). The rest of the page works without it.",
            icon=":material/extension_off:",
        )
    return None


def no_runs_note(what: str = "this page"):
    st.info(
        f"No runs in the store yet ({get_store().root}). Launch one on the **Lab** page "
        f"and come back to {what}.",
        icon=":material/science:",
    )


def active_count(df: pd.DataFrame) -> int:
    return int(df["state"].isin(ACTIVE).sum()) if len(df) else 0


def config_json(store: RunStore, run_id: str) -> str:
    try:
        return json.dumps(store.run(run_id).read_config_dict(), indent=2)
    except StoreError as e:
        return json.dumps({"error": str(e)})


__all__ = [
    "get_store",
    "runs_df",
    "reference_df",
    "reference_sets",
    "pick_references",
    "is_reference",
    "metrics_for",
    "layers_for",
    "show_chart",
    "pick_runs",
    "pick_run",
    "default_pair",
    "analysis_function",
    "fmt_eta",
    "fmt_pct",
    "state_text",
    "no_runs_note",
    "ACTIVE",
    "RESUMABLE",
    "time",
]


# --- background analyses (analysis.jobs) -------------------------------------------------
def analysis_task(run, task: str, label: str, key: str, start: bool = True, **params):
    """The result of ``analysis.jobs`` task ``task`` on ``run`` (a dict), or None while it is
    computed in its own background process; meanwhile a progress bar with Cancel, refreshed
    every 2 s. ``start=False`` only reports (nothing is started until asked)."""
    if analysis_function("jobs", "get_or_start", label) is None:
        return None
    from analysis import jobs as ajobs
    from analysis.cache import CacheError

    try:
        res = ajobs.get_or_start(run, task, **params) if start else None
        if res is not None:
            return res
        stat = ajobs.status(run, task, **params)
    except CacheError as e:
        st.error(f"{label}: {e}")
        if st.button("Discard it and compute again", key=f"discard_{key}"):
            e.path.unlink(missing_ok=True)  # a file in this run's cache/ folder
            st.rerun(scope="app")
        return None
    except FileNotFoundError:
        st.warning(
            f"{label}: run {run.id} has no checkpoint yet (it is written at the end of "
            "each epoch and at the end of training)."
        )
        return None
    except (OSError, ValueError, RuntimeError) as e:
        # a checkpoint that can't be read (CheckpointError is a ValueError), a full disk, a
        # model that doesn't match its weights: say which, keep the page alive
        st.error(f"{label} failed on {run.id}: {type(e).__name__}: {str(e)[:300]}")
        return None
    if stat["state"] == "done":
        return ajobs.get_or_start(run, task, **params)
    _task_progress(run, task, label, key, params)
    return None


@st.fragment(run_every=2.0)
def _task_progress(run, task, label, key, params):
    from analysis import jobs as ajobs

    stat = ajobs.status(run, task, **params)
    state = stat["state"]
    if state == "done":
        st.rerun(scope="app")  # draw the result with the rest of the page
    if state in ("running", "starting"):
        c1, c2 = st.columns([5, 1])
        c1.progress(
            float(stat["progress"]),
            text=f"{label}: {stat['message'] or state} (in the background; you may leave this page)",
        )
        if c2.button("Cancel", key=f"cancel_task_{key}"):
            ajobs.cancel(run, task, **params)
    elif state in ("failed", "interrupted", "cancelled"):
        st.warning(f"{label}: {state}. {stat['message'][:300]}")
        if st.button("Try again", key=f"retry_task_{key}"):
            try:
                ajobs.get_or_start(run, task, retry=True, **params)
            except ValueError as e:  # a bad $RESNET_LAB_ANALYSIS_JOBS / _BACKEND: said, not raised
                st.error(f"{label}: not started: {e}", icon=":material/error:")
                return
            st.rerun(scope="app")
    else:
        st.caption(f"{label}: not computed yet.")


@st.cache_resource(max_entries=8, show_spinner="Loading the model…")
def load_checkpoint_model(root: str, run_id: str, checkpoint: str, sig: tuple):
    """(model, dataset) of a run's checkpoint; shared by all sessions (read-only use)."""
    from analysis.loading import load

    return load(RunStore(root).run(run_id), checkpoint)


def checkpoint_sig(store: RunStore, run_id: str, checkpoint: str = "last") -> tuple:
    return _sig(store.root / run_id / "ckpt" / f"{checkpoint}.pt")


# --- presentation mode (the sidebar's toggle, kept in the URL as ?present=1) ---------------
PRESENT_PARAM = "present"


def presenting() -> bool:
    """Whether presentation mode is on: the URL's ?present=1 (so a bookmark or a shared link
    opens in it), or the sidebar toggle in this session."""
    if PRESENT_PARAM in st.session_state:
        return bool(st.session_state[PRESENT_PARAM])
    return st.query_params.get(PRESENT_PARAM) == "1"


def chart_layout(fig):
    """The one place every chart gets its final layout: legends clear of axis titles, and
    in presentation mode larger fonts and thicker lines (charts.presentation_figure)."""
    from . import charts

    fig = charts.finish_layout(fig)
    return charts.presentation_figure(fig) if presenting() else fig


def presentation_toggle():
    """The sidebar's presentation-mode toggle; it writes ?present=1 into the URL (and drops
    it when off) on every page, since page switches may clear query parameters."""
    if PRESENT_PARAM not in st.session_state:
        st.session_state[PRESENT_PARAM] = st.query_params.get(PRESENT_PARAM) == "1"
    on = st.toggle(
        "Presentation mode",
        key=PRESENT_PARAM,
        help="For a projector: larger text, thicker lines on every chart. Kept in "
        "the address (?present=1), so a bookmark opens in it.",
    )
    if on and st.query_params.get(PRESENT_PARAM) != "1":
        st.query_params[PRESENT_PARAM] = "1"
    elif not on and PRESENT_PARAM in st.query_params:
        del st.query_params[PRESENT_PARAM]
    if on:  # larger page text too, not only the charts
        main = '[data-testid="stMainBlockContainer"]'
        st.html(f"<style>{main} p, {main} li, {main} label {{font-size: 1.3rem !important;}}</style>")
    return on


def fit_columns(
    numbers: list[str], label: str | None = None, digits: int = 2, integers: tuple[str, ...] = ()
) -> dict:
    """column_config for a table in a narrow column (about 330 px): numbers short and
    narrow, the label column fixed, so no column is cut off on the right (hover a label for
    all of it)."""
    cfg = {c: st.column_config.NumberColumn(c, format=f"%.{digits}f", width=64) for c in numbers}
    cfg.update({c: st.column_config.NumberColumn(c, format="%d", width=52) for c in integers})
    if label:
        cfg[label] = st.column_config.TextColumn(label, width=140)
    return cfg


def deepest_pair(df: pd.DataFrame) -> list[str]:
    """[plain run, residual run] at the largest depth both families have (the newest of each:
    rows are newest first), or [] when no depth has both."""
    if not len(df) or "depth" not in df.columns:
        return []
    depth = pd.to_numeric(df["depth"], errors="coerce")
    plain = set(depth[df["kind"] == "plain"].dropna())
    res = set(depth[df["kind"].isin(["resnet", "preresnet"])].dropna())
    common = plain & res
    if not common:
        return []
    at = df[depth == max(common)]
    return [
        at[at["kind"] == "plain"]["id"].iloc[0],
        at[at["kind"].isin(["resnet", "preresnet"])]["id"].iloc[0],
    ]
