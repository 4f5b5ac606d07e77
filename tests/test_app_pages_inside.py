"""AppTest: Layer responses, Gradient flow, Activations, Embeddings, Studies and Tour, each
run on its own on a store of real tiny runs; values checked against the store."""
from __future__ import annotations

import math

import numpy as np
import pytest

from resnet_core import jobs
from test_app_helpers import arr, figures, no_exception, page, texts, traces


def by_model(store):
    return {store.run(i).read_config_dict()["model"]: i for i in store.list_ids()}


def newest_pair(store):
    ids = by_model(store)
    return ids["cifar_plain14"], ids["cifar_resnet14"]  # trained last: the newest of each kind


def test_responses_plot_the_recorded_std_per_layer(tiny_runs):
    at = page("responses").run()
    no_exception(at)
    plain, res = newest_pair(tiny_runs)
    assert set(at.multiselect(key="resp_runs").value) == {plain, res}
    fig7 = figures(at)[0]
    for rid in (plain, res):
        rows = [r for r in tiny_runs.run(rid).read_layers() if r["type"] == "bn"]
        last = max(r["step"] for r in rows)
        want = [r["std"] for r in sorted((r for r in rows if r["step"] == last), key=lambda r: r["order"])]
        tr = traces(fig7, rid[-6:])
        assert arr(tr[0]["y"]).tolist() == pytest.approx(want)  # layer order
        assert arr(tr[1]["y"]).tolist() == pytest.approx(sorted(want, reverse=True))  # sorted
    # the slider goes back in time: the first recorded step shows other numbers
    steps = at.select_slider(key="resp_step").options
    at.select_slider(key="resp_step").set_value(steps[0]).run()
    no_exception(at)
    first = [r for r in tiny_runs.run(plain).read_layers() if r["type"] == "bn" and r["step"] == int(steps[0])]
    tr = traces(figures(at)[0], plain[-6:])
    assert arr(tr[0]["y"]).tolist() == pytest.approx([r["std"] for r in sorted(first, key=lambda r: r["order"])])


def test_gradient_flow_heatmaps_and_signal_propagation(tiny_runs):
    at = page("gradients").run()
    no_exception(at)
    plain, res = newest_pair(tiny_runs)
    assert (at.selectbox(key="grad_a").value, at.selectbox(key="grad_b").value) == (plain, res)
    heat = figures(at)[0]
    hm = [t for t in heat["data"] if t["type"] == "heatmap"]
    rows = [r for r in tiny_runs.run(plain).read_layers()
            if r["type"] == "weight" and r.get("grad_norm") is not None]
    step = min(r["step"] for r in rows)
    conv1 = [r for r in rows if r["layer"] == "conv1" and r["step"] == step][0]
    z = arr(hm[0]["z"]).reshape(len(hm[0]["y"]), -1)
    assert hm[0]["y"][0] == "conv1"
    assert z[0][list(hm[0]["x"]).index(step)] == pytest.approx(math.log10(conv1["grad_norm"]))
    # signal propagation at init, computed on the spot: one row per net in the ratio table
    ratios = [d.value for d in at.dataframe if "series" in d.value.columns][0]
    assert set(ratios["series"]) == {"plain-20", "plain-56", "resnet-20", "resnet-56"}
    r = dict(zip(ratios["series"], ratios.iloc[:, 1]))
    assert r["plain-56"] > r["resnet-56"]  # BN'd plain nets' gradients grow toward the input


def test_activations_predictions_match_the_checkpoint(tiny_runs):
    import torch

    from analysis.checkpoints import heldout_batch, load

    at = page("activations").run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    plain, res = newest_pair(tiny_runs)
    tops = [d.value for d in at.dataframe if "class" in d.value.columns]
    assert len(tops) == 2
    for rid, top in zip((plain, res), tops):
        model, ds = load(tiny_runs.run(rid))
        x, _ = heldout_batch(ds, 1)
        with torch.no_grad():
            p = torch.softmax(model(x), 1)[0]
        assert top["class"].iloc[0] == ds.classes[int(p.argmax())]
        assert top["probability (%)"].iloc[0] == pytest.approx(round(100 * float(p.max()), 1))
    assert len(figures(at)) == 4  # attribution + feature maps for each run
    # side by side on one colour scale: both attribution maps, both feature grids
    att = [f["data"][1] for f in figures(at) if len(f["data"]) == 2]
    assert len(att) == 2 and att[0]["zmin"] == att[1]["zmin"] and att[0]["zmax"] == att[1]["zmax"]
    grids = [f["layout"]["coloraxis"] for f in figures(at) if "coloraxis" in f["layout"]]
    assert len(grids) == 2 and grids[0]["cmax"] == grids[1]["cmax"]
    at.selectbox(key="act_method").set_value("integrated_gradients").run()
    no_exception(at)
    assert not at.error


def test_embeddings_pca_places_every_test_image(tiny_runs):
    at = page("embeddings").run()
    no_exception(at)
    figs = figures(at)
    assert len(figs) == 2
    from resnet_core.data import load_dataset

    n_test = len(load_dataset("digits").y_test)
    # the default is 1,000 images or the whole test set where it is smaller (digits: 359)
    assert at.selectbox(key="emb_n").value == min(1000, n_test) == 359
    assert max(int(o) for o in at.selectbox(key="emb_n").options) <= n_test
    for f in figs:
        assert sum(len(arr(t["x"])) for t in f["data"]) == n_test
        assert {t["name"] for t in f["data"]} <= {str(i) for i in range(10)}
    at.radio(key="emb_color").set_value("correct").run()
    assert {t["name"] for f in figures(at) for t in f["data"]} <= {"right", "wrong"}


def test_studies_lesion_runs_in_the_background_and_shows_the_cached_result(tiny_runs):
    from analysis import jobs as ajobs

    at = page("studies").run()
    no_exception(at)
    assert not figures(at)  # nothing is computed until asked
    at.toggle(key="stu_lesion_go").set_value(True).run()
    no_exception(at)
    plain, res = newest_pair(tiny_runs)
    for rid in (plain, res):
        st_ = ajobs.wait(tiny_runs.run(rid), "lesion", timeout=120)
        assert st_["state"] == "done", st_
    at.run()
    no_exception(at)
    fig = figures(at)[0]
    table = ajobs.get_or_start(tiny_runs.run(plain), "lesion")["table"]
    tr = traces(fig, plain[-6:])[0]
    assert arr(tr["y"]).tolist() == pytest.approx((100 * table.sort_values("order")["error"]).tolist())


def test_tour_steps_through_with_the_users_runs(tiny_runs):
    at = page("tour").run()
    no_exception(at)
    assert at.header[0].value.startswith("1.")
    at.button(key="tour_next").click().run()
    no_exception(at)
    assert at.header[0].value.startswith("2.")
    ids = by_model(tiny_runs)
    te = {}
    for m in ("cifar_plain8", "cifar_plain14"):
        te[m] = [r for r in tiny_runs.run(ids[m]).read_metrics() if r["split"] == "train_eval"][-1]["error"]
    md = texts(at)
    assert f"({100 * te['cifar_plain14']:.1f}%)" in md and f"({100 * te['cifar_plain8']:.1f}%)" in md
    for _ in range(4):
        at.button(key="tour_next").click().run()
        no_exception(at)
    assert at.header[0].value.startswith("6.")
    assert at.button(key="tour_next").disabled


def test_tour_with_no_runs_offers_the_quick_sweep(store, monkeypatch):
    monkeypatch.setattr(jobs, "ensure_runner", lambda s: None)
    at = page("tour").run()
    no_exception(at)
    at.button(key="tour_launch").click().run()
    no_exception(at)
    models = sorted(store.run(i).read_config_dict()["model"] for i in store.list_ids())
    assert models == ["plain20", "plain56", "resnet20", "resnet56"]
    assert "queued or training" in texts(at, "success")
