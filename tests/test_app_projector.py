"""Built for a projector (issue 17, part 4): depth colours that part in grayscale, one colour
scale for panels side by side, legends clear of axis titles, presentation mode (charts and
the URL), and the small fixes (log tick labels, one-series legends, the Lab's preset help,
Embeddings' image count, the whole-queue ETA, the deepest same-depth pair)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from test_app_helpers import figures, no_exception, page

from app import charts

FAMILIES = ("plain", "resnet", "preresnet")
DEPTHS = (8, 14, 20, 32, 44, 56, 110, 1202)  # the CIFAR depths the lab trains and the tests use


def cie_lightness(hex_color: str) -> float:
    """CIELAB L* of an sRGB colour, from the standard's formulas (IEC 61966-2-1 and CIE 1976),
    written here independently of the app's code."""
    rgb = [int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    y = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]  # relative luminance, Yn = 1
    f = y ** (1 / 3) if y > (6 / 29) ** 3 else y / (3 * (6 / 29) ** 2) + 4 / 29
    return 116 * f - 16


@pytest.mark.parametrize("kind", FAMILIES)
def test_depths_in_a_family_differ_by_10_in_lightness(kind):
    """Fig. 6 colours each depth: here in grayscale too, at least 10 L* apart, deeper darker."""
    ls = [cie_lightness(charts.run_color(kind, d)) for d in DEPTHS]
    gaps = np.diff(ls)
    assert (gaps <= -10).all(), dict(zip(DEPTHS, np.round(ls, 1)))
    assert len({charts.run_color(kind, d) for d in DEPTHS}) == len(DEPTHS)
    # and the families stay apart at the same depth (hue): no two share a colour
    assert len({charts.run_color(k, 56) for k in FAMILIES}) == 3


def test_cie_lightness_reference_values():
    """The test's own L* against known values: white 100, black 0, mid-gray #777777 ~ 50.0."""
    assert cie_lightness("#ffffff") == pytest.approx(100, abs=0.01)
    assert cie_lightness("#000000") == pytest.approx(0, abs=0.01)
    assert cie_lightness("#777777") == pytest.approx(50.0, abs=0.2)


def degradation():
    runs = pd.DataFrame(
        {"id": ["p", "r"], "label": ["plain-56", "ResNet-56"], "kind": ["plain", "resnet"], "depth": [56, 56]}
    )
    runs["color"] = [charts.run_color(k, d) for k, d in zip(runs["kind"], runs["depth"])]
    rows = [
        {"run_id": rid, "step": s, "split": sp, "error": 0.5 - s / 1000}
        for rid in ("p", "r")
        for s in (10, 20, 30, 40)
        for sp in ("train", "test")
    ]
    return charts.degradation_figure(pd.DataFrame(rows), runs)


def test_presentation_mode_thickens_lines_and_enlarges_fonts():
    plain = degradation()
    big = charts.presentation_figure(degradation())
    assert (big.layout.font.size or 0) >= 1.4 * (plain.layout.font.size or 12)
    for a, b in zip(plain.data, big.data):
        assert b.line.width >= 1.9 * a.line.width and b.line.width >= charts.PRESENT_MIN_LINE
    assert big.layout.title.font.size > plain.layout.title.font.size
    # axis titles set explicitly (Streamlit's chart theme would size them otherwise)
    assert big.layout.xaxis.title.font.size >= 1.4 * 12 and big.layout.yaxis.title.font.size >= 1.4 * 12
    assert all(
        b.font.size > (a.font.size or 0) for a, b in zip(plain.layout.annotations, big.layout.annotations)
    )  # subplot titles


def test_horizontal_legends_go_below_the_axis_titles():
    """A legend at y < 0 in plot coordinates runs into the x-axis title; at the bottom of the
    container plotly reserves room for it below everything."""
    fig = charts.finish_layout(
        charts.compare_figure(
            pd.DataFrame(
                {
                    "run_id": ["p"] * 4,
                    "step": [1, 2, 1, 2],
                    "split": ["train"] * 2 + ["test"] * 2,
                    "loss": 1.0,
                    "error": 0.5,
                }
            ),
            pd.DataFrame({"id": ["p"], "label": ["plain-20"], "color": ["#000000"]}),
        )
    )
    leg = fig.layout.legend
    assert (leg.yref, leg.y, leg.yanchor, leg.orientation) == ("container", 0, "bottom", "h")


def test_a_single_series_still_has_its_legend():
    """The 1-D landscape's first run alone: its legend entry must show before a second run."""
    df = pd.DataFrame({"series": "ResNet-56", "alpha": [-1.0, 0.0, 1.0], "loss": [3.0, 1.0, 2.5]})
    fig = charts.series_figure(df, "alpha", "loss", "α", "loss", log_y=True)
    assert len(fig.data) == 1 and fig.data[0].showlegend is True


def test_log_axes_label_every_tick_with_its_value():
    df = pd.DataFrame({"series": "a", "alpha": [0, 1], "loss": [0.01, 20.0]})
    assert charts.series_figure(df, "alpha", "loss", "x", "y", log_y=True).layout.yaxis.tickformat == "~g"
    sig = pd.DataFrame({"series": "plain-20", "index": [1, 2], "grad_norm": [1e-3, 1.0], "layer": ["a", "b"]})
    assert charts.signal_figure(sig, "grad_norm", "g").layout.yaxis.tickformat == "~g"
    m = pd.DataFrame([[1e-3], [2.0]], index=["conv1", "fc"], columns=[5])
    ax = charts.grad_profile_figure([m], ["x"], ["#000000"]).layout.yaxis
    assert ax.tickformat == "~g" and ax.dtick == 1  # 3.3 decades: a label per power of ten
    narrow = pd.DataFrame({"series": "a", "alpha": [0, 1], "loss": [0.02, 0.4]})
    # 1.3 decades: labels at 1, 2 and 5 times each power (not at every digit: they crowd)
    assert charts.series_figure(narrow, "alpha", "loss", "x", "y", log_y=True).layout.yaxis.dtick == "D2"


def landscape(scale: float) -> pd.DataFrame:
    a, b = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5))
    return pd.DataFrame(
        {"alpha": a.ravel(), "beta": b.ravel(), "loss": scale * (1 + a.ravel() ** 2 + b.ravel() ** 2)}
    )


def test_landscapes_side_by_side_share_one_colour_scale():
    t1, t2 = landscape(0.1), landscape(50.0)
    zr = charts.shared_log_range([t1, t2])
    want = (np.log10(0.1 * 1.0), np.log10(50.0 * 3.0))  # the two tables' extremes, by hand
    assert zr == pytest.approx(want)
    f1, f2 = (charts.landscape_2d_figure(t, "x", zrange=zr).data[0] for t in (t1, t2))
    for f in (f1, f2):
        assert (f.zmin, f.zmax) == pytest.approx(want) and f.autocontour is False
        assert (f.contours.start, f.contours.end) == pytest.approx(want)


def test_feature_grid_says_what_it_shows_and_reads_light_as_low():
    rng = np.random.default_rng(0)
    relu = np.abs(rng.normal(size=(16, 6, 6)))
    fig = charts.feature_grid_figure(relu, "layer1")
    assert "first 8 of 16 channels" in fig.layout.title.text
    assert len(fig.data) == 8 and {t.coloraxis for t in fig.data} == {"coloraxis"}
    ca = fig.layout.coloraxis
    assert ca.cmin == 0 and ca.cmax == pytest.approx(relu[:8].max())
    lo, hi = ca.colorscale[0][1], ca.colorscale[-1][1]
    to_hex = lambda c: "#" + "".join(f"{int(v):02x}" for v in c[c.index("(") + 1 : -1].split(","))
    # the lowest values light, the highest dark: lightness falls along the scale
    assert cie_lightness(to_hex(lo)) > cie_lightness(to_hex(hi)) + 50
    signed = charts.feature_grid_figure(rng.normal(size=(4, 5, 5)), "tap1")
    assert "all 4 channels" in signed.layout.title.text
    assert signed.layout.coloraxis.cmid == 0 and signed.layout.coloraxis.cmin == -signed.layout.coloraxis.cmax


def test_whole_queue_eta_from_running_runs_scaled_by_depth():
    from resnet_core.eta import QueuedRun, queue_eta

    run = [
        QueuedRun("running", depth=56, total=1000, eta_s=100, elapsed_s=200),
        QueuedRun("running", depth=56, total=1000, eta_s=120, elapsed_s=180),
    ]
    queued = [QueuedRun("queued", depth=20), QueuedRun("queued", depth=20)]
    # by hand: each 56-layer run takes 300 s for 1,000 steps, so a 20-layer run of as many
    # steps 300 * 20 / 56; two trainers free at 100 s and 120 s
    each = 300 * 20 / 56
    assert queue_eta(run + queued, slots=2) == pytest.approx(max(100 + each, 120 + each))
    # one run on two trainers: a queued run starts at once on the free one (0 + each), the
    # other when the first trainer frees up (at 100 s, before 0 + each = 107 s)
    assert queue_eta(run[:1] + queued, slots=2) == pytest.approx(100 + each)
    # one trainer, one running run: the queued ones one after the other
    assert queue_eta(run[:1] + queued, slots=1) == pytest.approx(100 + 2 * each)
    assert queue_eta(queued, slots=2) is None  # nothing measured yet
    assert queue_eta([], slots=2) is None


def test_deepest_same_depth_pair_is_the_default():
    from app import ui

    df = pd.DataFrame(
        {
            "id": ["r110", "p56", "r56", "p20", "r20"],
            "kind": ["resnet", "plain", "resnet", "plain", "resnet"],
            "depth": [110, 56, 56, 20, 20],
        }
    )
    assert ui.deepest_pair(df) == ["p56", "r56"]
    assert ui.deepest_pair(df[df["kind"] == "resnet"]) == []


def test_lab_quick_help_says_the_presets_own_digits_epochs(store):
    from resnet_core.config import apply_preset

    at = page("lab").run()
    no_exception(at)
    quick = [o for o in at.selectbox(key="lab_preset").options if o.startswith("quick")][0]
    epochs = apply_preset("quick", {"model": "resnet20", "dataset": "digits"}).epochs
    assert f"on digits: {int(epochs)} epochs" in quick


def test_presentation_mode_is_read_from_the_url(store, reference_root):
    """?present=1 makes every chart's fonts larger and lines thicker, applied where charts
    get their layout (ui.show_chart), not per page."""
    at = page("degradation").run()
    no_exception(at)
    normal = figures(at)[0]
    at2 = page("degradation")
    at2.query_params["present"] = "1"
    at2.run()
    no_exception(at2)
    big = figures(at2)[0]
    size = lambda f: f["layout"].get("font", {}).get("size", 12)
    assert size(big) >= 1.4 * size(normal)
    widths = lambda f: [t["line"]["width"] for t in f["data"] if t.get("line", {}).get("width")]
    assert min(widths(big)) >= charts.PRESENT_MIN_LINE > max(widths(normal))


def test_no_colour_is_one_of_streamlits_placeholders():
    """Streamlit's chart theme swaps the colours #000001 ... #000040 for its own; Inferno's
    #000004 turned the lowest attribution values light pink. None may appear in a figure."""
    import re

    rng = np.random.default_rng(1)
    figs = [
        charts.image_figure(rng.integers(0, 255, (8, 8)), "x", overlay=rng.random((8, 8))),
        charts.feature_grid_figure(rng.normal(size=(8, 4, 4))),
        degradation(),
        charts.landscape_2d_figure(landscape(1.0), "x"),
    ]
    placeholder = re.compile(r"#0000(?:[0-3][0-9a-f]|40)\b", re.IGNORECASE)
    for f in figs:
        found = {m for m in placeholder.findall(f.to_json()) if m.lower() != "#000000"}
        assert not found, found
    low = charts.image_figure(np.zeros((4, 4)), overlay=np.ones((4, 4))).data[1].colorscale[0][1]
    assert low == "rgb(0, 0, 4)"  # Inferno's black, written so that Streamlit leaves it be


def test_runs_eta_reads_the_store_as_a_sweep_runs(store):
    """The CLI's sweep line and the Lab's queue: running runs' own ETAs and durations from
    status.json, queued ones scaled by their model's depth (from config.json)."""
    from conftest import tiny_config

    from resnet_core.eta import runs_eta

    now = 1_000_000.0
    a = store.create(tiny_config("plain56"), state="running")
    # this test's own process stands in for the trainer (a running run's owner must be alive)
    a.write_status(
        state="running", started=now - 200, eta_s=100, total=1000, step=667, pid=os.getpid(), pid_start=None
    )
    b = store.create(tiny_config("resnet20"), state="queued")
    gone = "20990101-000000-plain20-000000"  # deleted meanwhile: ignored
    # plain56: 300 s for 1,000 steps; resnet20 then takes 300 * 20 / 56 after it, one trainer
    assert runs_eta(store, [a.id, b.id, gone], slots=1, now=now) == pytest.approx(100 + 300 * 20 / 56)
    assert runs_eta(store, [b.id], slots=1, now=now) is None


def test_lab_queue_shows_one_eta_for_the_whole_sweep(store, monkeypatch):
    import time

    from conftest import tiny_config

    from resnet_core import jobs

    monkeypatch.setattr(jobs, "ensure_runner", lambda *a, **k: None)  # nothing starts
    monkeypatch.setattr(jobs, "concurrent_jobs", lambda n: 2)  # two trainers at once
    now = time.time()
    a = store.create(tiny_config("plain56"), state="running")
    a.write_status(
        state="running", started=now - 200, eta_s=100, total=1000, step=667, pid=os.getpid(), pid_start=None
    )
    for m in ("resnet20", "plain20"):
        store.create(tiny_config(m), state="queued")
    at = page("lab").run()
    no_exception(at)
    line = [m.value for m in at.markdown if "Whole queue" in m.value]
    assert line and "Whole queue (3 runs): ETA" in line[0], [m.value for m in at.markdown]
    # by hand, on the 2 trainers set above: plain56 took 300 s for 1,000 steps, so each
    # 20-layer run takes 300 * 20 / 56 = 107 s; one starts now, the other when plain56 ends
    # at 100 s: the queue is done at 207 s (a little more: plain56's elapsed time grows while
    # the page renders, and its measured duration with it)
    import re

    mm, ss = map(int, re.search(r"ETA (\d+):(\d\d)", line[0]).groups())
    assert 206 <= 60 * mm + ss <= 225, line[0]
