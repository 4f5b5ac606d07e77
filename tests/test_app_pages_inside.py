"""AppTest: Layer responses, Gradient flow, Activations, Embeddings, Studies and Tour, each
run on its own on a store of real tiny runs; values checked against the store."""

from __future__ import annotations

import math

import pytest
from test_app_helpers import arr, figures, no_exception, page, texts, traces

from resnet_core import jobs


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
        rows = [r for r in tiny_runs.run(rid).read_layers() if r["type"] == "response"]
        last = max(r["step"] for r in rows)
        want = [r["std"] for r in sorted((r for r in rows if r["step"] == last), key=lambda r: r["order"])]
        tr = traces(fig7, rid[-6:])
        assert arr(tr[0]["y"]).tolist() == pytest.approx(want)  # layer order
        assert arr(tr[1]["y"]).tolist() == pytest.approx(sorted(want, reverse=True))  # sorted
    # the slider goes back in time: the first recorded step shows other numbers
    assert at.select_slider(key="resp_step").options[0] == "0 (init)"  # labelled as such
    at.select_slider(key="resp_step").set_value(0).run()
    no_exception(at)
    first = [r for r in tiny_runs.run(plain).read_layers() if r["type"] == "response" and r["step"] == 0]
    tr = traces(figures(at)[0], plain[-6:])
    assert arr(tr[0]["y"]).tolist() == pytest.approx(
        [r["std"] for r in sorted(first, key=lambda r: r["order"])]
    )


def test_gradient_flow_heatmaps_and_signal_propagation(tiny_runs):
    at = page("gradients").run()
    no_exception(at)
    plain, res = newest_pair(tiny_runs)
    assert (at.selectbox(key="grad_a").value, at.selectbox(key="grad_b").value) == (plain, res)
    heat = figures(at)[0]
    hm = [t for t in heat["data"] if t["type"] == "heatmap"]
    rows = [
        r
        for r in tiny_runs.run(plain).read_layers()
        if r["type"] == "weight" and r.get("grad_norm") is not None
    ]
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
    # the caption quotes exactly the ratios on screen
    cap = texts(at, "caption")
    assert all(f"{k} {v:.3g}" in cap for k, v in r.items()), cap
    # Brock et al.'s plots: the values drawn are the measurement of the same fresh net
    from analysis.studies.signal import signal_propagation_plot

    spp = [f for f in figures(at) if len(f["data"]) and "F(x)" in str(f["layout"].get("annotations"))][0]
    want = signal_propagation_plot("resnet", 56, "batch", "he", width=8, batch=64, image_size=16, seeds=(0,))
    got = [t for t in traces(spp, "resnet-56") if t["xaxis"] == "x2"][0]
    assert arr(got["y"]).tolist() == pytest.approx(want["var"].tolist())
    assert f"{want['var'].iloc[-1]:.4g} at block 27" in texts(at)
    # the verdict under the charts quotes the same ratios and follows them
    v = r["plain-56"]
    verdict = f"plain-56's weight-gradient norm grows {v:,.0f}-fold" if v >= 100 else f"grows {v:.3g}-fold"
    assert verdict in texts(at)
    assert ("As reported" if r["plain-56"] > max(1, r["resnet-56"]) else "Not what is reported") in texts(at)


def test_layer_responses_and_gradient_flow_say_what_each_record_used(tiny_runs):
    """The pages' words come from the rows: the probe's image count, step 0 as the
    initialization (BN's initial running statistics), the training batch of the gradient
    rows, the number of columns, and one first/last ratio (first main conv / last main conv)."""
    plain, res = newest_pair(tiny_runs)
    rows = tiny_runs.run(plain).read_layers()
    n = {r["images"] for r in rows if r["type"] == "response"}
    assert len(n) == 1
    n = n.pop()
    at = page("responses").run()
    no_exception(at)
    caps = texts(at, "caption")
    assert f"the first {n:,} test images" in caps and "eval mode" in caps
    assert "Step 0 is the initialization" not in caps  # the last step is shown first
    at.select_slider(key="resp_step").set_value(0).run()
    caps = texts(at, "caption")
    assert "Step 0 is the initialization" in caps and "mean 0, variance 1" in caps
    table = [d.value for d in at.dataframe if "mean std" in d.value.columns][0]
    assert set(table["step"]) == {0}  # the step each run's row comes from

    at = page("gradients").run()
    no_exception(at)
    caps = texts(at, "caption")
    w = [r for r in rows if r["type"] == "weight" and r["grad_norm"] is not None]
    steps = sorted({r["step"] for r in w})
    assert len(steps) >= 20  # even a 20-step run: one column per step here
    assert f"{len(steps)} recorded steps, training batches of 32 images" in caps
    last = {r["layer"]: r["grad_norm"] for r in w if r["step"] == steps[-1]}
    want = last["conv1"] / last["layer3.1.conv2"]  # plain14: the last main conv
    assert f"first/last gradient-norm ratio at step {steps[-1]}: **{want:.3g}**" in caps
    assert "`conv1`, over the last, `layer3.1.conv2`" in caps


def test_records_of_an_older_recorder_are_labelled_as_such(tiny_runs):
    """Records without an image count (the bundled lesson-cpu set) were made on 128 test
    images with the old timing: both pages say so, for that run only."""
    import json

    plain, res = newest_pair(tiny_runs)
    path = tiny_runs.run(plain).path / "layers.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "images"}) + "\n" for r in rows))
    at = page("responses").run()
    no_exception(at)
    caps = texts(at, "caption")
    assert "recorded by an older recorder, on the first 128 test images" in caps
    assert plain[-6:] in caps.split("older recorder")[0] and "the first " in caps
    at = page("gradients").run()
    at.radio(key="grad_value").set_value("out_grad_norm").run()
    no_exception(at)
    caps = texts(at, "caption")
    assert "the first 128 test images, eval mode (older recorder" in caps
    n = {r["images"] for r in tiny_runs.run(res).read_layers() if r["type"] == "block"}.pop()
    assert f"the first {n:,} test images, eval mode." in caps


def test_activations_predictions_match_the_checkpoint(tiny_runs):
    import torch

    from analysis.loading import heldout_batch, load

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
    # the sentence under the chart is read off the same table
    md = texts(at)
    assert (
        f"test error {100 * table['base_error'].iloc[0]:.1f}% intact; deleting one block adds "
        f"{100 * table['delta'].mean():+.1f} points"
    ) in md
    # Veit et al.'s claim checked on the same table: the shape-keeping blocks' mean rise
    keep = table[~table["downsampling"].astype(bool)]["delta"].mean()
    assert f"{100 * keep:+.1f} points on average at blocks that keep the shape" in md
    assert "Veit et al. (2016) report" in md


def test_studies_shattering_at_init_needs_no_run_and_says_what_it_drew(store):
    at = page("studies").run()
    no_exception(at)
    at.toggle(key="stu_fc_go").set_value(True).run()
    no_exception(at)
    fig = figures(at)[0]
    lag1 = {t["name"]: arr(t["y"]) for t in fig["data"] if t.get("name")}
    assert set(lag1) == {"plain", "residual"}
    md = texts(at)
    for name in ("plain", "residual"):
        y = lag1[name]
        assert f"{name} nets: {y[0]:.2f} at depth 2, {y[-1]:.2f} at depth 50" in md
    assert lag1["plain"][-1] < lag1["residual"][-1]  # Balduzzi et al.'s result, as measured
    assert (
        f"At depth 50, lag-1 autocorrelation {lag1['plain'][-1]:.2f} plain against "
        f"{lag1['residual'][-1]:.2f} residual: the plain net's gradient is **more shattered**"
    ) in md


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
    assert (
        f"plain-14's final training error is {100 * te['cifar_plain14']:.1f}% against "
        f"plain-8's {100 * te['cifar_plain8']:.1f}%"
    ) in md
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


def test_signal_propagation_at_init_of_a_rescue_variant(store):
    """Gradient flow's signal section measures a variant of the follow-up literature on its
    family (TAT: plain nets, no BN, delta-orthogonal, the slope for the depth), the other
    family as the paper's; the numbers drawn are those of the same fresh nets, and the
    Yang et al. verdict (about BN'd nets) is not given."""
    from analysis.studies.signal import signal_propagation, signal_propagation_plot

    at = page("gradients").run()
    at.selectbox(key="sig_init").set_value("TAT leaky ReLU, no BN").run()
    no_exception(at)
    assert at.radio(key="sig_norm").disabled
    ratios = [d.value for d in at.dataframe if "series" in d.value.columns][0]
    tat = "plain-56 · TAT leaky ReLU, no BN"
    assert set(ratios["series"]) == {"plain-20 · TAT leaky ReLU, no BN", tat, "resnet-20", "resnet-56"}
    kw = dict(width=8, batch=64, image_size=16, seeds=(0,))
    opts = {"activation": "tat", "branch_scalar": "none", "zero_init_residual": False}
    g = signal_propagation("plain", 56, "none", "delta_orthogonal", options=opts, **kw)
    r = dict(zip(ratios["series"], ratios.iloc[:, 1]))
    assert r[tat] == pytest.approx(g["grad_norm"].iloc[0] / g["grad_norm"].iloc[-1])
    want = signal_propagation_plot("plain", 56, "none", "delta_orthogonal", options=opts, **kw)
    spp = [f for f in figures(at) if len(f["data"]) and "F(x)" in str(f["layout"].get("annotations"))][0]
    got = [t for t in traces(spp, tat) if t["xaxis"] == "x2"][0]
    assert arr(got["y"]).tolist() == pytest.approx(want["var"].tolist())
    caps = texts(at, "caption")
    assert "TAT leaky ReLU, no BN for the plain nets, the other families as the paper's (He + BN)" in caps
    assert f"{tat} {r[tat]:.3g}" in caps
    md = texts(at)
    assert "As reported" not in md and "Not what is reported" not in md
    assert "In a plain net with BN that point is a BN output" not in md
