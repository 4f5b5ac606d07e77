"""Studies: lesion, gradient shattering, loss landscape; each computed in the background
(its own process, with progress and cancel), cached on disk, shown for two runs."""
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from app import charts, ui  # noqa: E402

st.title("Studies")
st.markdown("Three experiments that explain *why* residual nets train and plain ones degrade. "
            "Each runs in the background on a run's last checkpoint and is cached: leave the "
            "page and come back.")

store = ui.get_store()
df = ui.runs_df(store)
df = df[df["state"] != "broken"]
ok = df[[(store.root / i / "ckpt" / "last.pt").exists() for i in df["id"]]] if len(df) else df
if not len(ok):
    ui.no_runs_note("run studies (a run needs a checkpoint)")
    st.stop()

pair = ui.default_pair(ok)
c1, c2 = st.columns(2)
with c1:
    a = ui.pick_run(ok, "Left", key="stu_a", default=pair[0])
with c2:
    b = ui.pick_run(ok, "Right", key="stu_b", default=pair[-1])
ids = list(dict.fromkeys([a, b]))
labels = dict(zip(ok["id"], ok["label"]))
colors = dict(zip(ok["id"], ok["color"]))


def results(task: str, label: str, go: bool, **params) -> dict:
    out = {}
    for i, rid in enumerate(ids):
        r = ui.analysis_task(store.run(rid), task, f"{label} of {labels[rid]}",
                             key=f"{task}_{i}", start=go, **params)
        if r is not None:
            out[rid] = r
    return out


lesion, shatter, land = st.tabs(["Lesion", "Gradient shattering", "Loss landscape"])
with lesion:
    st.markdown("Delete one block at a time and measure test error (Veit et al. 2016). A "
                "residual net barely notices (except at downsampling blocks, hollow markers); "
                "a plain net collapses, because every path runs through every layer.")
    go = st.toggle("Compute for both runs", key="stu_lesion_go")
    res = results("lesion", "Lesion", go)
    if res:
        tables = [r["table"] for r in res.values()]
        data = pd.concat([t.assign(run=labels[rid]) for rid, t in zip(res, tables)])
        ui.show_chart(charts.lesion_figure(tables, [labels[r] for r in res], [colors[r] for r in res]),
                      data, "lesion", "stu_lesion",
                      caption="Dotted lines: each run's error with nothing deleted.")
with shatter:
    st.markdown("Input gradients at points along a short line through a test image: how well "
                "they correlate with their neighbors' (Balduzzi et al. 2017). Near 1: smooth; "
                "near 0: 'shattered', like noise. Deep plain nets shatter; skips keep "
                "gradients correlated.")
    img = st.number_input("Test image index", min_value=0, value=0, step=1, key="stu_sh_image")
    go = st.toggle("Compute for both runs", key="stu_sh_go")
    res = results("shattering", "Shattering", go, image=int(img))
    if res:
        data = pd.concat([r["table"].assign(series=labels[rid], color=colors[rid]) for rid, r in res.items()])
        ui.show_chart(charts.series_figure(data, "lag", "correlation",
                                           "distance along the line (points apart)",
                                           "gradient correlation (Pearson)"),
                      data.drop(columns=["color"]), "shattering", "stu_sh")
with land:
    st.markdown("The loss around the trained weights along random filter-normalized directions "
                "(Li et al. 2018). Without skips, deep nets' landscapes turn rough and chaotic.")
    dim = st.radio("Slice", ["landscape1d", "landscape2d"], horizontal=True, key="stu_land_dim",
                   format_func={"landscape1d": "1-D (21 points)", "landscape2d": "2-D (21x21 grid, slower)"}.get)
    go = st.toggle("Compute for both runs", key="stu_land_go")
    res = results(dim, "Loss landscape", go)
    if res and dim == "landscape1d":
        data = pd.concat([r["table"].assign(series=labels[rid], color=colors[rid]) for rid, r in res.items()])
        ui.show_chart(charts.series_figure(data, "alpha", "loss", "α (step along the direction, "
                                           "filter-normalized)", "cross-entropy loss (log)", log_y=True),
                      data.drop(columns=["color"]), "landscape-1d", "stu_land1")
    elif res:
        cols = st.columns(len(res))
        zr = charts.shared_log_range([r["table"] for r in res.values()])  # one colour scale
        for i, (col, (rid, r)) in enumerate(zip(cols, res.items())):
            with col:
                ui.show_chart(charts.landscape_2d_figure(r["table"], labels[rid], zrange=zr), r["table"],
                              f"landscape-2d-{rid}", f"stu_land2_{i}")
