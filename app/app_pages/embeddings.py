"""Embeddings: the penultimate features of test images, reduced to 2-D (PCA at once,
UMAP / t-SNE in the background), colored by class, two runs side by side."""
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from app import charts, ui  # noqa: E402

st.title("Embeddings")
st.markdown("Each dot is a test image placed by its last-layer features (before the "
            "classifier). Well-separated classes = features the classifier can use.")

store = ui.get_store()
df = ui.runs_df(store)
df = df[df["state"] != "broken"]
ok = df[[(store.root / i / "ckpt" / "last.pt").exists() for i in df["id"]]] if len(df) else df
if not len(ok):
    ui.no_runs_note("see embeddings (a run needs a checkpoint)")
    st.stop()

pair = ui.default_pair(ok)
c1, c2, c3, c4 = st.columns([2, 2, 1.3, 1])
with c1:
    a = ui.pick_run(ok, "Left", key="emb_a", default=pair[0])
with c2:
    b = ui.pick_run(ok, "Right", key="emb_b", default=pair[-1])
with c3:
    method = st.radio("Method", ["pca", "umap", "tsne"], horizontal=True, key="emb_method",
                      format_func={"pca": "PCA", "umap": "UMAP", "tsne": "t-SNE"}.get,
                      help="PCA is computed at once; UMAP and t-SNE take a while and run in the "
                           "background (cached on disk, so each is computed once).")
with c4:
    n = st.selectbox("Images", [500, 1000, 2000], index=1, key="emb_n")
color_by = st.radio("Color", ["label", "pred", "correct"], horizontal=True, key="emb_color",
                    format_func={"label": "true class", "pred": "predicted class",
                                 "correct": "right / wrong"}.get)
labels = dict(zip(ok["id"], ok["label"]))
cols = st.columns(2)
for i, (col, rid) in enumerate(zip(cols, [a, b])):
    with col:
        res = ui.analysis_task(store.run(rid), method, f"{method.upper()} of {labels[rid]}",
                               key=f"emb_{method}_{n}_{i}", n=int(n))
        if res is None:
            continue
        classes = list(res["classes"])
        lab, pred = res["labels"].astype(int), res["pred"].astype(int)
        pts = pd.DataFrame({"x": res["coords"][:, 0], "y": res["coords"][:, 1],
                            "true": [classes[i] for i in lab], "predicted": [classes[i] for i in pred],
                            "index": res["index"]})
        pts["label"] = {"label": pts["true"], "pred": pts["predicted"],
                        "correct": pd.Series(["right" if t == p else "wrong" for t, p in zip(lab, pred)])}[color_by]
        acc = float((lab == pred).mean())
        ui.show_chart(charts.embedding_figure(pts, f"{labels[rid]} · {method.upper()} · "
                                                   f"test error {100 * (1 - acc):.1f}% on these {len(pts)}"),
                      pts, f"embedding-{method}-{rid}", f"emb_fig_{i}")
