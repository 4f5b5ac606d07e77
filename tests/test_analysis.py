"""Checkpoint analyses, studies, cache and background jobs, on tiny CPU nets: each test
asserts the property its analysis exists to show, as measured."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import analysis
from analysis import jobs
from analysis.loading import heldout_batch, load
from analysis.progress import Cancelled
from analysis.taps import hook_count
from resnet_core import RunStore, TrainConfig, train
from resnet_core.models import ShortcutA

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short digits run of a residual and a plain 14-layer net (width 8), same recipe."""
    store = RunStore(tmp_path_factory.mktemp("runs"))
    runs = {}
    for kind in ("resnet", "plain"):
        cfg = TrainConfig(
            model=f"cifar_{kind}14",
            width=8,
            dataset="digits",
            iterations=120,
            batch_size=64,
            schedule="cosine",
            log_every=20,
            eval_every=60,
            train_eval_size=100,
            device="cpu",
            threads=1,
            precision="fp32",
        )
        run = store.create(cfg)
        train(cfg, run)
        runs[kind] = run
    return runs


# --- studies ----------------------------------------------------------------------------
def test_lesion_deleting_a_residual_block_hurts_far_less_than_a_plain_one(trained):
    from analysis.studies.lesion import deleted, lesion_each, lesion_random, stand_in

    res = {}
    for kind, run in trained.items():
        model, ds = load(run)
        x, y = heldout_batch(ds)
        before = model(x[:8]).detach()
        df = lesion_each(model, x, y)
        assert torch.equal(before, model(x[:8]).detach())  # restored
        assert len(df) == 6 and df["downsampling"].sum() == 2
        res[kind] = df.set_index("block")
    base_r, base_p = res["resnet"]["base_error"].iloc[0], res["plain"]["base_error"].iloc[0]
    assert base_r < 0.25 and base_p < 0.35  # both learned something
    same = res["resnet"].index[~res["resnet"]["downsampling"]]
    d_res, d_plain = res["resnet"].loc[same, "delta"], res["plain"].loc[same, "delta"]
    assert d_res.mean() < 0.5 * d_plain.mean()
    assert (d_res < d_plain).sum() >= len(same) - 1
    # the stand-in for a downsampling block is option A, for others the identity
    model, ds = load(trained["plain"])
    b = model.layer2[0]
    assert isinstance(stand_in(b), ShortcutA) and isinstance(stand_in(model.layer2[1]), torch.nn.Identity)
    with deleted(model, ["layer2.0"]):
        assert isinstance(model.layer2[0], ShortcutA)
        assert model(heldout_batch(ds, 2)[0]).shape == (2, 10)
    assert model.layer2[0] is b
    x, y = heldout_batch(ds, 200)
    calls = []
    r = lesion_random(model, x, y, ks=[1, 2], samples=2, progress=lambda f, m: calls.append(f))
    assert list(r["k"]) == [1, 1, 2, 2] and calls[-1] == 1.0


def test_landscape_slices_center_on_the_checkpoint_and_can_be_cancelled(trained):
    from analysis.studies.landscape import landscape_1d, landscape_2d

    model, ds = load(trained["resnet"])
    x, y = heldout_batch(ds, 128)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    d1 = landscape_1d(model, x, y, steps=7, span=1.0)
    centre = d1.loc[d1.alpha.abs().idxmin()]
    with torch.no_grad():
        direct = F.cross_entropy(model(x), y).item()
    assert centre.alpha == 0 and centre.loss == pytest.approx(direct, rel=1e-4)
    assert centre.loss < d1.loss.iloc[0] and centre.loss < d1.loss.iloc[-1]
    seen = []
    d2 = landscape_2d(model, x, y, steps=3, progress=lambda f, m: seen.append(f))
    assert len(d2) == 9 and len(seen) == 9 and seen[-1] == 1.0
    assert d2[(d2.alpha == 0) & (d2.beta == 0)].loss.iloc[0] == pytest.approx(direct, rel=1e-4)

    def stop(f, m):
        if f > 0.3:
            raise Cancelled("enough")

    with pytest.raises(Cancelled):
        landscape_2d(model, x, y, steps=3, progress=stop)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in sd.items())  # untouched


# --- on a checkpoint ----------------------------------------------------------------------
def test_fig7_on_a_checkpoint_equals_a_direct_computation(trained):
    run = trained["plain"]
    df = analysis.fig7(run)
    model, ds = load(run)
    x, _ = heldout_batch(ds)
    out = {}
    h = model.layer3[1].bn2.register_forward_hook(lambda m, i, o: out.__setitem__("o", o))
    with torch.no_grad():
        model(x)
    h.remove()
    row = df.set_index("layer").loc["layer3.1.tap2"]
    assert row["std"] == pytest.approx(out["o"].double().std(unbiased=False).item(), rel=1e-6)
    assert sorted(df["rank"]) == list(range(len(df))) and list(df["order"]) == list(range(13))
    assert hook_count(model) == 0


def test_activation_stats_and_feature_maps(trained):
    model, ds = load(trained["resnet"])
    x, _ = heldout_batch(ds, 100)
    a = analysis.activation_stats(model, x)
    act = dict(model.named_modules())["layer1.0.act1"]
    with torch.no_grad():
        o = {}
        h = act.register_forward_hook(lambda m, i, out: o.__setitem__("o", out))
        model(x)
        h.remove()
    row = a.set_index("layer").loc["layer1.0.act1"]
    assert row["dead_frac"] == pytest.approx(1 - (o["o"] > 0).flatten(1).any(0).double().mean().item())
    assert row["std"] == pytest.approx(o["o"].double().std(unbiased=False).item(), rel=1e-6)
    fm = analysis.feature_maps(model, x[3], "layer2.0.tap_out")
    with torch.no_grad():
        ref = model.layer2[0](model.layer1(model.act1(model.bn1(model.conv1(x[3:4])))))[0]
    assert fm.shape == (16, 4, 4) and np.allclose(fm, ref.numpy(), atol=1e-5)
    assert hook_count(model) == 0


def test_confusion_matrix_agrees_with_the_trainers_test_error(trained):
    run = trained["resnet"]
    r = analysis.evaluate_checkpoint(run)
    cm = r["confusion"]
    assert cm.shape == (10, 10) and cm.sum() == len(load(run)[1].y_test) == 359
    assert 1 - np.trace(cm) / cm.sum() == pytest.approx(r["error"])
    last_test = [m for m in run.read_metrics() if m["split"] == "test"][-1]
    assert r["error"] == pytest.approx(last_test["error"], abs=1e-9)
    pc = r["per_class"]
    assert (pc["errors"].sum() == cm.sum() - np.trace(cm)) and (pc["n"] == cm.sum(1)).all()
    curves = analysis.error_curves(run)
    assert {"step", "train", "train_eval", "test"} <= set(curves.columns)
    assert curves["test"].dropna().iloc[-1] == pytest.approx(r["error"])
    summary = analysis.evaluation.degradation_summary(trained).set_index("run")
    assert summary.loc["resnet", "test_error"] == pytest.approx(r["error"])
    assert summary.loc["plain", "train_error"] == pytest.approx(
        [m for m in trained["plain"].read_metrics() if m["split"] == "train_eval"][-1]["error"]
    )


def test_attributions_gradcam_ig_saliency_topk(trained):
    from analysis import attribution as A

    model, ds = load(trained["resnet"])
    x, y = heldout_batch(ds, 4)
    x1 = x[1]
    cam = A.grad_cam(model, x1, layer="layer3")
    assert cam.shape == (8, 8) and (cam >= 0).all() and cam.max() > 0
    t = int(y[1])
    ig = A.integrated_gradients(model, x1, target=t, steps=64)
    with torch.no_grad():
        gap = (model(x1[None])[0, t] - model(torch.zeros_like(x1)[None])[0, t]).item()
    assert ig.sum() == pytest.approx(gap, rel=0.05, abs=0.05)  # completeness, measured
    sal = A.saliency(model, x1, target=t)
    xx = x1[None].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xx)[0, t], xx)
    assert np.allclose(sal, g[0].abs().amax(0).numpy(), atol=1e-6)
    tk = A.top_k(model, x1, k=3, classes=ds.classes)
    assert list(tk["rank"]) == [0, 1, 2] and tk["prob"].is_monotonic_decreasing
    other, _ = load(trained["plain"])
    both = A.compare({"resnet": model, "plain": other}, x1, "saliency")
    assert set(both) == {"resnet", "plain"} and both["plain"]["map"].shape == (8, 8)
    assert all(p.grad is None for p in model.parameters()) and hook_count(model) == 0
    assert not model.training
    runs = A.explain_runs(trained, 1, "gradcam", layer="layer2", k=2)
    assert set(runs) == {"resnet", "plain"} and runs["plain"]["label"] == t
    assert runs["resnet"]["map"].shape == (8, 8) and runs["resnet"]["image"].shape == (1, 8, 8)


# --- cache and background jobs ------------------------------------------------------------
def _nn1_accuracy(coords, labels):
    d = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float((labels[d.argmin(1)] == labels).mean())


def test_pca_inline_tsne_in_background_cached_per_checkpoint(trained):
    run = trained["resnet"]
    res = jobs.get_or_start(run, "pca", n=300)
    assert res["coords"].shape == (300, 2) and len(res["labels"]) == 300
    key = jobs.key_of(run, "pca", n=300)
    f = run.cache_dir / f"{key}.npz"
    mtime = f.stat().st_mtime_ns
    again = jobs.get_or_start(run, "pca", n=300)
    assert f.stat().st_mtime_ns == mtime and np.array_equal(again["coords"], res["coords"])
    assert _nn1_accuracy(res["coords"], res["labels"]) > 0.3  # classes cluster (chance 0.1)
    # t-SNE: a separate OS process, pending first, then cached
    assert jobs.get_or_start(run, "tsne", n=300) is None
    st = jobs.status(run, "tsne", n=300)
    assert st["state"] in ("starting", "running", "done")
    job = jobs.run_json(run.cache_dir / f"{st['key']}.job.json")
    assert job and job.get("pid") not in (None, os.getpid())
    st = jobs.wait(run, "tsne", timeout=240, n=300)
    assert st["state"] == "done", st
    ts = jobs.get_or_start(run, "tsne", n=300)
    assert ts["coords"].shape == (300, 2) and _nn1_accuracy(ts["coords"], ts["labels"]) > 0.6
    # a rewritten checkpoint is a cache miss
    p = run.checkpoint_path("last")
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    assert jobs.key_of(run, "pca", n=300) != key
    assert jobs.status(run, "tsne", n=300)["state"] == "missing"
    with pytest.raises(ValueError, match="accepted"):
        jobs.get_or_start(run, "pca", nn=3)


def test_background_job_can_be_cancelled_and_a_study_is_cached(trained):
    run = trained["plain"]
    kw = dict(steps=15, n=64)
    assert jobs.get_or_start(run, "landscape2d", **kw) is None
    import time

    t0 = time.time()  # let it get going, so cancel also reaches it by SIGTERM
    while jobs.status(run, "landscape2d", **kw)["state"] == "starting" and time.time() - t0 < 60:
        time.sleep(0.2)
    assert jobs.status(run, "landscape2d", **kw)["state"] == "running"
    jobs.cancel(run, "landscape2d", **kw)
    st = jobs.wait(run, "landscape2d", timeout=120, **kw)
    assert st["state"] == "cancelled", st
    assert jobs.get_or_start(run, "landscape2d", **kw) is None  # no restart without retry
    assert jobs.status(run, "landscape2d", **kw)["state"] == "cancelled"
    sh = jobs.compute(run, "shattering", n_points=12, max_lag=4)  # on a trained checkpoint
    # the second request is served from the cache file, unchanged, not computed again
    f = run.cache_dir / f"{jobs.key_of(run, 'shattering', n_points=12, max_lag=4)}.npz"
    mtime = f.stat().st_mtime_ns
    pd.testing.assert_frame_equal(
        jobs.get_or_start(run, "shattering", n_points=12, max_lag=4)["table"], sh["table"]
    )
    assert f.stat().st_mtime_ns == mtime
    model, ds = load(run)
    assert sh["target"] == int(ds.y_test[0]) and list(sh["table"]["lag"]) == list(range(5))
    assert sh["table"]["autocorrelation"].iloc[0] == 1.0
    # Li et al.'s training loss: the first n training images, un-augmented
    land = jobs.compute(run, "landscape1d", steps=3, n=64)
    from resnet_core.data import normalize

    with torch.no_grad():
        x = normalize(ds.x_train[:64], ds.mean, ds.std)
        want = F.cross_entropy(model(x), ds.y_train[:64]).item()
    assert land["n_images"] == 64
    assert land["table"].set_index("alpha").loc[0.0, "loss"] == pytest.approx(want, rel=1e-4)
    lesion = jobs.compute(run, "lesion", n=100)["table"]
    assert isinstance(lesion, pd.DataFrame) and len(lesion) == 6
    assert jobs.status(run, "lesion", n=100)["state"] == "done"


def test_recorded_gradient_ratio_and_layer_table(trained):
    from analysis.recorders import grad_ratio_over_training, pivot_layer_stats

    df = analysis.read_layer_stats(trained["plain"], "block")
    assert set(df["step"]) == {0, 120} and {"f_over_x", "out_grad_norm"} <= set(df.columns)
    g = grad_ratio_over_training(trained["plain"]).set_index("step")
    w = analysis.read_layer_stats(trained["plain"], "weight")
    assert set(g.index) == set(w["step"]) and len(g) >= 20  # every weight-gradient record
    # first main conv over last main conv, from the rows by name (fc and shortcuts left out)
    at = w[w["step"] == 60].set_index("layer")["grad_norm"]
    assert g.loc[60, "ratio"] == pytest.approx(at["conv1"] / at["layer3.1.conv2"], rel=1e-12)
    wide = pivot_layer_stats(trained["resnet"], "block", "f_over_x")
    assert list(wide.index) == [0, 120] and list(wide.columns)[0] == "layer1.0" and wide.shape[1] == 6


def test_analysis_imports_no_ui_library():
    for p in (ROOT / "analysis").rglob("*.py"):
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0] in ("streamlit", "plotly") for n in names), p


@pytest.mark.slow
def test_umap_embedding_separates_classes(trained):
    from analysis.embeddings import reduce

    res = jobs.compute(trained["resnet"], "umap", n=300)
    assert res["coords"].shape == (300, 2) and _nn1_accuracy(res["coords"], res["labels"]) > 0.6
    assert np.array_equal(reduce(np.eye(5, 3), "pca").shape, (5, 2))
