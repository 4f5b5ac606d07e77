"""Embeddings: the penultimate features of test images, reduced to 2-D (PCA at once,
UMAP / t-SNE in the background), colored by class, two runs side by side."""

from pathlib import Path

import pandas as pd
import streamlit as st

from app import charts, ui
from resnet_core.store import StoreError

st.title("Embeddings")
st.markdown(
    "Each dot is a test image placed by its last-layer features (before the "
    "classifier). Well-separated classes = features the classifier can use."
)

store = ui.get_store()
df = ui.runs_df(store)
df = df[df["state"] != "broken"]
ok = df[[(store.root / i / "ckpt" / "last.pt").exists() for i in df["id"]]] if len(df) else df
if not len(ok):
    ui.no_runs_note("see embeddings (a run needs a checkpoint)")
    st.stop()

# torchvision's test sets; digits and .npz files are measured (test_set_size)
TEST_SIZES = {"cifar10": 10000, "cifar100": 10000, "mnist": 10000, "fashion_mnist": 10000, "svhn": 26032}


@st.cache_data(max_entries=32, show_spinner=False)
def test_set_size(dataset: str) -> int | None:
    """How many test images ``dataset`` has (None when it can't be told cheaply)."""
    import numpy as np

    from resnet_core.data import is_path_dataset, load_dataset

    if dataset in TEST_SIZES:
        return TEST_SIZES[dataset]
    try:
        if dataset == "digits":
            return len(load_dataset("digits").y_test)
        if is_path_dataset(dataset) and str(dataset).endswith(".npz"):
            with np.load(Path(dataset).expanduser()) as z:
                return int(len(z["y_test"]))
    except (OSError, KeyError, ValueError) as e:
        st.caption(f"Test-set size of {dataset} unknown ({type(e).__name__}).")
    return None


def image_counts(rids) -> tuple[list[int], int]:
    """The image counts offered and the default: at most each run's test set, 1,000 by
    default (fewer where the test set is smaller: digits has 359)."""
    sizes = []
    for rid in rids:
        try:
            sizes.append(test_set_size(str(store.run(rid).read_config_dict().get("dataset"))))
        except StoreError as e:  # a broken config: offer the usual counts
            st.caption(f"{rid}: config unreadable ({e}).")
    known = [s for s in sizes if s]
    cap = min(known) if known else None
    opts = [v for v in (500, 1000, 2000) if cap is None or v < cap] + ([cap] if cap and cap <= 2000 else [])
    return opts, min(1000, cap) if cap else 1000


pair = ui.default_pair(ok)
c1, c2, c3, c4 = st.columns([2, 2, 1.3, 1])
with c1:
    a = ui.pick_run(ok, "Left", key="emb_a", default=pair[0])
with c2:
    b = ui.pick_run(ok, "Right", key="emb_b", default=pair[-1])
with c3:
    method = st.radio(
        "Method",
        ["pca", "umap", "tsne"],
        horizontal=True,
        key="emb_method",
        format_func={"pca": "PCA", "umap": "UMAP", "tsne": "t-SNE"}.get,
        help="PCA is computed at once; UMAP and t-SNE take a while and run in the "
        "background (cached on disk, so each is computed once).",
    )
with c4:
    counts, n_default = image_counts([a, b])
    if st.session_state.get("emb_n") not in counts:
        st.session_state.pop("emb_n", None)
    n = st.selectbox(
        "Images",
        counts,
        index=counts.index(n_default),
        key="emb_n",
        help="Test images to place (at most the test set's size).",
    )
color_by = st.radio(
    "Color",
    ["label", "pred", "correct"],
    horizontal=True,
    key="emb_color",
    format_func={"label": "true class", "pred": "predicted class", "correct": "right / wrong"}.get,
)
labels = dict(zip(ok["id"], ok["label"]))
cols = st.columns(2)
for i, (col, rid) in enumerate(zip(cols, [a, b])):
    with col:
        res = ui.analysis_task(
            store.run(rid),
            method,
            f"{method.upper()} of {labels[rid]}",
            key=f"emb_{method}_{n}_{i}",
            n=int(n),
        )
        if res is None:
            continue
        classes = list(res["classes"])
        lab, pred = res["labels"].astype(int), res["pred"].astype(int)
        pts = pd.DataFrame(
            {
                "x": res["coords"][:, 0],
                "y": res["coords"][:, 1],
                "true": [classes[i] for i in lab],
                "predicted": [classes[i] for i in pred],
                "index": res["index"],
            }
        )
        pts["label"] = {
            "label": pts["true"],
            "pred": pts["predicted"],
            "correct": pd.Series(["right" if t == p else "wrong" for t, p in zip(lab, pred)]),
        }[color_by]
        acc = float((lab == pred).mean())
        ui.show_chart(
            charts.embedding_figure(
                pts,
                f"{labels[rid]} · {method.upper()} · test error {100 * (1 - acc):.1f}% on these {len(pts)}",
            ),
            pts,
            f"embedding-{method}-{rid}",
            f"emb_fig_{i}",
        )
