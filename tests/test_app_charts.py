"""The app's pure parts, without a server: chart builders, run frames, input checks."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

from app import charts, runs_data
from app.checks import InputError, check_dataset, check_depth, image_to_input, load_upload, model_name


def runs_table(rows):
    df = pd.DataFrame(rows, columns=["id", "label", "kind", "depth"])
    df["color"] = [charts.run_color(k, d) for k, d in zip(df["kind"], df["depth"])]
    return df


RUNS = runs_table(
    [
        ("p20", "plain-20", "plain", 20),
        ("p56", "plain-56", "plain", 56),
        ("r20", "ResNet-20", "resnet", 20),
        ("r56", "ResNet-56", "resnet", 56),
    ]
)


def metrics_table():
    rows = []
    for rid, base in (("p20", 0.3), ("p56", 0.4), ("r20", 0.3), ("r56", 0.2)):
        for step in (10, 20, 30):
            rows.append({"run_id": rid, "step": step, "split": "train", "error": base / step * 10})
            rows.append({"run_id": rid, "step": step, "split": "test", "error": base / step * 12})
    return pd.DataFrame(rows)


def test_run_colors_are_stable_distinct_and_by_family_and_depth():
    assert charts.run_color("plain", 20) == charts.run_color("plain", 20)
    cs = {charts.run_color(k, d) for k in ("plain", "resnet") for d in (20, 32, 44, 56, 110)}
    assert len(cs) == 10
    assert charts.run_color("resnet", 56, 1) != charts.run_color("resnet", 56, 0)
    # deeper is darker
    lum = lambda c: sum(int(c[i : i + 2], 16) for i in (1, 3, 5))
    assert lum(charts.run_color("plain", 110)) < lum(charts.run_color("plain", 20))
    assert charts.run_color("?", None).startswith("#")


def test_degradation_figure_panels_dashes_and_percent():
    fig = charts.degradation_figure(metrics_table(), RUNS)
    by = {(t.name, t.line.dash): t for t in fig.data}
    t = by[("plain-56", "solid")]
    assert t.xaxis == "x" and list(t.y) == pytest.approx([100 * 0.4 / s * 12 for s in (10, 20, 30)])
    assert by[("ResNet-20", "dash")].xaxis == "x2"
    assert sum(1 for t in fig.data if t.showlegend) == 4  # one legend entry per run
    assert by[("plain-20", "solid")].line.color == RUNS.set_index("id").loc["p20", "color"]
    assert fig.layout.yaxis.title.text == "error (%)"
    assert "iterations" in fig.layout.xaxis.title.text


def test_a_single_evaluation_still_shows_on_the_curves():
    """A `quick` run evaluates once, at its end: a line of one point would draw nothing."""
    m = metrics_table()
    m = m[(m["split"] == "train") | (m["step"] == 30)]
    fig = charts.degradation_figure(m, RUNS)
    by = {(t.name, t.line.dash): t for t in fig.data}
    one = by[("plain-56" + charts.ONE_POINT, "solid")]
    # a point, not a line, and its legend entry (the test series') says so
    assert one.mode == "markers" and len(one.y) == 1 and one.showlegend
    assert "a point" in one.name and one.marker.size >= 10
    assert by[("plain-56", "dash")].mode == "lines+markers"  # 3 points: markers as well
    long = pd.DataFrame(
        [{"run_id": "p20", "step": s, "split": "train", "error": 0.5} for s in range(10, 200, 10)]
    )
    assert charts.degradation_figure(long, RUNS).data[0].mode == "lines"
    cmp = charts.compare_figure(m.assign(loss=1.0), RUNS)
    assert {t.mode for t in cmp.data if "test" in t.name} == {"markers"}


def test_degradation_figure_with_one_family_keeps_both_panels():
    fig = charts.degradation_figure(metrics_table(), RUNS[RUNS["kind"] == "resnet"])
    assert any("no plain runs" in a.text for a in fig.layout.annotations)


def test_final_error_figure_has_runs_and_the_paper_references():
    runs = RUNS.assign(test_error=[0.1, 0.15, 0.09, 0.08], train_error=[0.05, 0.1, 0.03, 0.02])
    finals = charts.final_errors_frame(runs)
    assert finals["test_error_pct"].tolist() == pytest.approx([10, 15, 9, 8])
    fig = charts.final_error_figure(finals)
    names = [t.name for t in fig.data]
    assert "your plain runs" in names and "your resnet runs" in names
    t6 = [t for t in fig.data if t.name.startswith("paper Table 6")][0]
    assert dict(zip(t6.x, t6.y))[110] == 6.43
    nabla = [t for t in fig.data if t.name.startswith("nabla0001") and "plain" in t.name][0]
    assert list(nabla.error_y.array) == [0.13, 0.22]
    train = charts.final_error_figure(finals, which="train")
    assert not [t for t in train.data if "Table 6" in (t.name or "")]
    assert train.layout.yaxis.title.text == "final train error (%)"


def test_responses_frame_orders_and_ranks():
    layers = pd.DataFrame(
        [
            {"run_id": "a", "step": 5, "layer": "tap1", "type": "response", "order": 0, "std": 0.5},
            {"run_id": "a", "step": 5, "layer": "layer1.0.tap1", "type": "response", "order": 1, "std": 0.9},
            {"run_id": "a", "step": 5, "layer": "layer1.0", "type": "block", "order": 0, "std": None},
        ]
    )
    r = charts.responses_frame(layers)
    assert r["index"].tolist() == [1, 2] and r["rank"].tolist() == [2, 1]
    fig = charts.responses_figure(r, runs_table([("a", "A", "plain", 8)]))
    assert list(fig.data[0].y) == [0.5, 0.9] and list(fig.data[1].y) == [0.9, 0.5]


def test_grad_matrix_and_heatmaps_share_one_scale():
    rows = []
    for rid, scale in (("a", 1.0), ("b", 100.0)):
        for step in (0, 10):
            for k, layer in enumerate(["conv1", "layer1.0.conv1", "fc"]):
                rows.append(
                    {
                        "run_id": rid,
                        "step": step,
                        "layer": layer,
                        "type": "weight",
                        "order": k,
                        "grad_norm": scale * (k + 1) * (step + 1),
                    }
                )
    layers = pd.DataFrame(rows)
    ma = charts.grad_matrix(layers[layers["run_id"] == "a"])
    assert list(ma.index) == ["conv1", "layer1.0.conv1", "fc"] and list(ma.columns) == [0, 10]
    mb = charts.grad_matrix(layers[layers["run_id"] == "b"])
    fig = charts.grad_heatmaps([ma, mb], ["a", "b"])
    assert fig.layout.coloraxis.cmin == pytest.approx(0.0)
    assert fig.layout.coloraxis.cmax == pytest.approx(math.log10(100 * 3 * 11))
    assert np.asarray(fig.data[1].z)[0][0] == pytest.approx(2.0)


def test_run_frames_read_a_store(tiny_runs):
    df = runs_data.runs_frame(tiny_runs)
    assert len(df) == 4 and set(df["state"]) == {"done"}
    assert df["color"].nunique() == 4
    rid = df["id"].iloc[0]
    m = runs_data.metrics_frame(tiny_runs.run(rid))
    assert df["test_error"].iloc[0] == pytest.approx(m[m["split"] == "test"]["error"].iloc[-1])
    lay = runs_data.layers_frame(tiny_runs.run(rid))
    assert {"response", "block", "weight"} <= set(lay["type"])


def test_run_frames_tolerate_broken_folders(store):
    (store.root / "x-broken").mkdir()
    (store.root / "x-broken" / "config.json").write_text("[1, 2")
    df = runs_data.runs_frame(store)
    assert df["state"].tolist() == ["broken"]
    assert "status.json" in df["error"].iloc[0] or "config.json" in df["error"].iloc[0]


@pytest.mark.parametrize("depth", [8, 14, 20, 56, 110, 1202, 20.0])
def test_check_depth_accepts_6n_plus_2(depth):
    assert check_depth(depth) == int(depth)


@pytest.mark.parametrize("depth", [0, 2, 7, 21, 57, -4, 20.5, "abc", None, 1208])
def test_check_depth_refuses_others_with_a_message(depth):
    with pytest.raises(InputError) as e:
        check_depth(depth)
    assert "6n+2" in str(e.value) or "deepest" in str(e.value)


def test_model_names_use_the_papers_names_where_they_exist():
    assert model_name("plain", 20) == "plain20" and model_name("resnet", 110) == "resnet110"
    assert model_name("resnet", 14) == "cifar_resnet14" and model_name("preresnet", 20) == "cifar_preresnet20"


def test_check_dataset_names_and_confined_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_LAB_DATA_DIRS", str(tmp_path / "ok"))
    (tmp_path / "ok" / "folder" / "train").mkdir(parents=True)
    (tmp_path / "ok" / "folder" / "test").mkdir()
    np.savez(tmp_path / "ok" / "d.npz", x=np.zeros(1))
    (tmp_path / "ok" / "notes.txt").write_text("x")
    (tmp_path / "ok" / "escape.npz").symlink_to("/etc/passwd")
    assert check_dataset("digits") == "digits"
    assert check_dataset(str(tmp_path / "ok" / "d.npz")) == str((tmp_path / "ok" / "d.npz").resolve())
    assert check_dataset(str(tmp_path / "ok" / "folder")).endswith("folder")
    for bad, msg in [
        ("", "give"),
        ("cifar11", "not accepted"),
        ("/etc/passwd", "outside"),
        (str(tmp_path / "ok" / "escape.npz"), "outside"),
        (str(tmp_path / "ok" / "notes.txt"), "not a .npz"),
        (str(tmp_path / "ok" / "nope.npz"), "does not exist"),
        (str(tmp_path / "ok" / ".." / "x.npz"), "outside"),
        ("a\x00b.npz", "not accepted"),
    ]:
        with pytest.raises(InputError, match=msg):
            check_dataset(bad)


def png_bytes(size, mode="RGB"):
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def test_uploads_decode_small_images_and_refuse_the_rest():
    im = load_upload(png_bytes((40, 30)))
    assert im.size == (40, 30) and im.mode == "RGB"
    x = image_to_input(im, 8, 1)
    assert x.shape == (1, 8, 8) and x.dtype == np.uint8 and x.flags.writeable
    with pytest.raises(InputError, match="empty"):
        load_upload(b"")
    with pytest.raises(InputError, match="not a readable image|could not be decoded"):
        load_upload(b"\x89PNG\r\n\x1a\n garbage" * 10)
    with pytest.raises(InputError, match="MB"):
        load_upload(b"x" * 100, max_bytes=50)
    # a 5000 x 4000 image compresses to a few kB: refused from its header, never decoded
    bomb = png_bytes((5000, 4000), mode="1")
    assert len(bomb) < 100_000
    with pytest.raises(InputError, match="megapixels"):
        load_upload(bomb)
    with pytest.raises(InputError):
        load_upload(png_bytes((40, 30))[:60])  # truncated


def test_study_and_image_figures_carry_their_data():
    t = pd.DataFrame(
        {
            "block": ["layer1.0", "layer2.0"],
            "order": [0, 1],
            "downsampling": [False, True],
            "error": [0.1, 0.5],
            "base_error": [0.08, 0.08],
        }
    )
    fig = charts.lesion_figure([t], ["plain-20"], ["#ff0000"])
    assert list(fig.data[0].y) == pytest.approx([10, 50])
    assert list(fig.data[0].marker.symbol) == ["circle", "circle-open"]
    grid = pd.DataFrame(
        [(a, b, 1 + a * a + b * b) for a in (-1, 0, 1) for b in (-1, 0, 1)], columns=["alpha", "beta", "loss"]
    )
    c = charts.landscape_2d_figure(grid, "x")
    assert np.asarray(c.data[0].z)[1][1] == pytest.approx(0.0)  # log10(1) at the center
    fm = charts.feature_grid_figure(np.random.rand(3, 4, 4), n=8)
    assert len(fm.data) == 3
    im = charts.image_figure(np.zeros((8, 8)), overlay=np.ones((8, 8)))
    assert len(im.data) == 2 and im.data[1].type == "heatmap"
    sig = pd.DataFrame(
        {
            "series": ["plain-20"] * 3,
            "index": [1, 2, 3],
            "layer": ["a", "b", "c"],
            "grad_norm": [100.0, 10.0, 1.0],
        }
    )
    f = charts.signal_figure(sig, "grad_norm", "‖∇W‖")
    assert f.layout.yaxis.type == "log" and list(f.data[0].y) == [100.0, 10.0, 1.0]


def test_signal_propagation_plots_and_bands_carry_their_data():
    spp = pd.DataFrame(
        {
            "series": ["plain-8"] * 2 + ["resnet-8"] * 2,
            "order": [0, 1, 0, 1],
            "block": ["layer1.0", "layer2.0"] * 2,
            "point": ["p"] * 4,
            "sq_mean": [1e-16, 2e-16, 0.5, 2.0],
            "var": [1.0, 1.0, 1.5, 3.0],
            "res_var": [np.nan, np.nan, 1.0, 1.0],
        }
    )
    f = charts.spp_figure(spp)
    by = {(t.name, t.xaxis): list(t.y) for t in f.data}
    # squared means below 1e-9 (rounding) are not drawn; plain nets have no residual panel
    assert ("plain-8", "x") not in by and by[("plain-8", "x2")] == [1.0, 1.0]
    assert by[("resnet-8", "x2")] == [1.5, 3.0] and ("plain-8", "x3") not in by
    assert sum(t.showlegend is not False for t in f.data) == 2  # one legend entry per net
    # under 2 decades a log axis is labelled at 1, 2 and 5 times a power of ten, not every digit
    assert f.layout.yaxis2.type == "log" and f.layout.yaxis2.dtick == "D2"
    band = pd.DataFrame({"series": ["a", "a"], "k": [1, 2], "mean": [0.1, 0.3], "std": [0.01, 0.02]})
    b = charts.band_figure(band, "k", "k", "error (%)", percent=True)
    assert list(b.data[1].y) == pytest.approx([10, 30])
    assert list(b.data[0].y) == pytest.approx([11, 32, 28, 9])  # mean + std out, mean - std back
