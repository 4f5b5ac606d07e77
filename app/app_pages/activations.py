"""Activations: one image (a test image or an upload) through two runs side by side: their
predictions, feature maps per stage, and Grad-CAM / Integrated Gradients / saliency."""

import copy

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, ui
from app.checks import MAX_UPLOAD_PIXELS, InputError, image_to_input, load_upload

st.title("Activations")
st.markdown(
    "One image through two nets: what each predicts, what its stages respond to, and "
    "which pixels drove the prediction."
)

store = ui.get_store()
df = ui.runs_df(store)
df = df[df["state"] != "broken"]
ok = df[[(store.root / i / "ckpt" / "last.pt").exists() for i in df["id"]]] if len(df) else df
if not len(ok):
    ui.no_runs_note(
        "look at activations (a run needs a checkpoint: one is written at each "
        "epoch's end and at the end of training)"
    )
    st.stop()
try:
    import analysis.activations as aact  # noqa: F401
    import analysis.attribution as aattr  # noqa: F401
    from resnet_core.data import normalize
except Exception as e:
    st.info(
        f"**Activations** are not available yet: the analysis package can't be imported "
        f"({type(e).__name__}: {str(e)[:160]})."
    )
    st.stop()

pair = ui.default_pair(ok)
c1, c2 = st.columns(2)
with c1:
    a = ui.pick_run(ok, "Left", key="act_a", default=pair[0])
with c2:
    b = ui.pick_run(ok, "Right", key="act_b", default=pair[-1])
ids = [a, b]
labels = dict(zip(ok["id"], ok["label"]))


def model_of(rid):
    model, ds = ui.load_checkpoint_model(str(store.root), rid, "last", ui.checkpoint_sig(store, rid))
    return copy.deepcopy(model), ds  # hooks go on this session's copy, never the shared one


try:
    models = {rid: model_of(rid) for rid in dict.fromkeys(ids)}
except Exception as e:
    st.error(f"A checkpoint can't be loaded: {type(e).__name__}: {str(e)[:300]}")
    st.stop()

s1, s2 = st.columns([1, 2])
with s1:
    source = st.radio(
        "Image",
        ["test", "upload"],
        key="act_source",
        horizontal=True,
        format_func={"test": "a test image", "upload": "upload one"}.get,
    )
ds_a = models[a][1]
raw = None  # uint8 C,H,W or a PIL image
true_label = None
with s2:
    if source == "test":
        idx = st.number_input(
            f"Test image index (0–{len(ds_a.y_test) - 1}, from {labels[a]}'s dataset)",
            min_value=0,
            max_value=len(ds_a.y_test) - 1,
            value=0,
            step=1,
            key="act_index",
        )
        raw = ds_a.x_test[int(idx)].numpy()
        true_label = ds_a.classes[int(ds_a.y_test[int(idx)])]
    else:
        up = st.file_uploader(
            f"An image (png, jpeg, bmp, gif, webp; at most {MAX_UPLOAD_PIXELS // 1_000_000} megapixels)",
            type=["png", "jpg", "jpeg", "bmp", "gif", "webp"],
            key="act_upload",
        )
        if up is not None:
            try:
                raw = load_upload(up.getvalue())
            except InputError as e:
                st.error(f"Upload refused: {e}")
if raw is None:
    st.info("Choose an image.")
    st.stop()


def input_for(ds):
    """The image as this model's normalized input (its size, channels and statistics)."""
    if isinstance(raw, np.ndarray):
        from PIL import Image

        arr = raw.transpose(1, 2, 0)
        im = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    else:
        im = raw
    u8 = image_to_input(im, ds.image_size, ds.in_channels)
    import torch

    x = torch.from_numpy(u8)[None]
    return normalize(x, ds.mean, ds.std)[0], u8


m1, m2 = st.columns([1, 1])
method = m1.selectbox(
    "Attribution",
    list(aattr.METHODS),
    key="act_method",
    format_func={
        "gradcam": "Grad-CAM (last stage)",
        "integrated_gradients": "Integrated Gradients",
        "saliency": "saliency (|∂logit/∂x|)",
    }.get,
)
stage = m2.selectbox(
    "Feature maps of",
    ["tap1", "layer1", "layer2", "layer3"],
    index=1,
    key="act_stage",
    format_func=lambda s: "the first conv (after BN)" if s == "tap1" else f"stage {s[-1]} output",
)
if true_label is not None:
    st.caption(f"True class: **{true_label}**")


@st.cache_data(max_entries=256, show_spinner=False)
def explain(root: str, rid: str, sig: tuple, u8: np.ndarray, method: str, stage: str):
    """Top-3 predictions, attribution map and feature maps of one image (cached on the
    checkpoint's identity, the image's pixels and the choices)."""
    import torch

    model, ds = model_of(rid)
    x1 = normalize(torch.from_numpy(u8.copy())[None], ds.mean, ds.std)[0]
    top = aattr.top_k(model, x1, k=3, classes=ds.classes)
    return top, aattr.attribute(model, x1, method), aact.feature_maps(model, x1, stage)


MAX_CSV_VALUES = 250_000  # a few MB of CSV per run; wider maps export their first channels


def channel_stats(fm: np.ndarray, layer: str, rid: str) -> pd.DataFrame:
    """Per channel of a (C, H, W) feature map: mean, std, min, max, and the fraction of
    positions above zero (after a ReLU: the fraction of units that fire on this image)."""
    a = fm.reshape(len(fm), -1).astype(np.float64)
    return pd.DataFrame(
        {
            "run_id": rid,
            "layer": layer,
            "channel": np.arange(len(fm)),
            "mean": a.mean(1),
            "std": a.std(1),
            "min": a.min(1),
            "max": a.max(1),
            "frac_positive": (a > 0).mean(1),
        }
    )


@st.cache_data(max_entries=32, show_spinner=False)
def feature_csv(fm: np.ndarray, layer: str, rid: str) -> tuple[bytes, int]:
    """The feature map in long format (run_id, layer, channel, y, x, value) as CSV bytes, and
    how many channels it holds (all of them unless that exceeds MAX_CSV_VALUES)."""
    c, h, w = fm.shape
    n = max(1, min(c, MAX_CSV_VALUES // max(1, h * w)))
    ch, yy, xx = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    df = pd.DataFrame(
        {
            "run_id": rid,
            "layer": layer,
            "channel": ch.ravel(),
            "y": yy.ravel(),
            "x": xx.ravel(),
            "value": fm[:n].ravel(),
        }
    )
    return df.to_csv(index=False, float_format="%.6g").encode(), n


def shared_scales(ids) -> tuple[tuple[float, float] | None, dict | None]:
    """One colour scale per kind of map for the two runs side by side: the attribution maps'
    (min, max) and the shown feature maps' scale (charts.feature_scale), so equal colours
    mean equal values left and right. (None, None) when either run fails to explain."""
    maps, feats = [], []
    for rid in dict.fromkeys(ids):
        try:
            _, u8 = input_for(models[rid][1])
            _, amap, fm = explain(str(store.root), rid, ui.checkpoint_sig(store, rid), u8, method, stage)
        except Exception:  # noqa: BLE001 -- the column below shows this run's error itself
            return None, None
        maps.append(np.abs(amap) if method != "gradcam" else amap)
        feats.append(np.asarray(fm)[:8].ravel())
    lo = float(min(np.nanmin(m) for m in maps))
    hi = float(max(np.nanmax(m) for m in maps))
    return ((lo, hi) if hi > lo else None), charts.feature_scale(np.concatenate(feats))


attr_range, feat_scale = shared_scales(ids)
cols = st.columns(2)
for i, (col, rid) in enumerate(zip(cols, ids)):
    model, ds = models[rid]
    with col:
        st.markdown(f"**{labels[rid]}**")
        try:
            _, u8 = input_for(ds)
            top, amap, fm = explain(str(store.root), rid, ui.checkpoint_sig(store, rid), u8, method, stage)
            st.dataframe(
                top[["class", "prob"]]
                .assign(prob=(100 * top["prob"]).round(1))
                .rename(columns={"prob": "probability (%)"}),
                hide_index=True,
                key=f"act_top_{i}",
            )
            img = u8[0] if u8.shape[0] == 1 else u8.transpose(1, 2, 0)
            names = {
                "gradcam": "Grad-CAM",
                "integrated_gradients": "|Integrated Gradients|",
                "saliency": "saliency",
            }
            h, w = amap.shape
            amap_df = pd.DataFrame(
                {
                    "y": np.repeat(np.arange(h), w),
                    "x": np.tile(np.arange(w), h),
                    "value": amap.ravel(),
                    "method": method,
                    "run_id": rid,
                }
            )
            ui.show_chart(
                charts.image_figure(
                    img,
                    f"why '{top['class'].iloc[0]}'?",
                    overlay=np.abs(amap) if method != "gradcam" else amap,
                    overlay_title=names.get(method, method),
                    overlay_range=attr_range,
                ),
                amap_df,
                f"{method}-{rid}",
                f"act_img_{i}",
            )
            ui.show_chart(
                charts.feature_grid_figure(fm, f"{stage}: {fm.shape[1]}x{fm.shape[2]}", scale=feat_scale),
                None,
                f"features-{stage}-{rid}",
                f"act_fm_{i}",
            )
            data, n_ch = feature_csv(fm, stage, rid)
            d1, d2 = st.columns(2)
            d1.download_button(
                "Feature maps (CSV)",
                data,
                file_name=f"features-{stage}-{rid}.csv",
                mime="text/csv",
                key=f"act_fm_csv_{i}",
                on_click="ignore",
                icon=":material/download:",
                help=f"run_id, layer, channel, y, x, value: {n_ch} of "
                f"{fm.shape[0]} channels, {fm.shape[1]}x{fm.shape[2]} each",
            )
            stats = channel_stats(fm, stage, rid)
            d2.download_button(
                "Channel statistics (CSV)",
                stats.to_csv(index=False, float_format="%.6g").encode(),
                file_name=f"channel-stats-{stage}-{rid}.csv",
                mime="text/csv",
                key=f"act_stats_csv_{i}",
                on_click="ignore",
                icon=":material/download:",
                help="per channel: mean, std, min, max, fraction above zero",
            )
            with st.expander(f"Per-channel statistics ({fm.shape[0]} channels)"):
                st.dataframe(
                    stats.drop(columns=["run_id", "layer"]).round(4), hide_index=True, key=f"act_stats_{i}"
                )
        except Exception as e:
            st.error(f"{type(e).__name__}: {str(e)[:300]}")
