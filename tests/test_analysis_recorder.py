"""LayerStatsRecorder: the numbers it writes are the ones a direct computation gives, and it
leaves training exactly as it would be without it (also across a resume)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from analysis.recorders import LayerStatsRecorder, default_schedule, layer_stats, read_layer_stats
from analysis.taps import hook_count
from resnet_core import RunStore, TrainConfig, load_dataset, train
from resnet_core.data import normalize
from resnet_core.models import blocks_of, build_model
from resnet_core.train import load_model

torch.set_num_threads(1)


def cfg(**kw):
    base = dict(model="cifar_resnet8", width=4, dataset="digits", iterations=12, batch_size=32,
                log_every=4, eval_every=6, checkpoint_every=6, train_eval_size=64,
                device="cpu", threads=1, precision="fp32",
                recorders=["analysis.recorders:LayerStatsRecorder"])
    base.update(kw)
    return TrainConfig(**base)


def test_default_schedule_is_dense_early_and_within_budget():
    s = default_schedule(64000)
    assert s[0] == 0 and s[-1] == 64000
    assert {1, 2, 4, 8, 16, 1024} <= set(s)
    assert 3200 in s and 32000 in s  # every 1/20 of the run
    gaps = [b - a for a, b in zip(s, s[1:])]
    assert gaps[0] <= 1 and max(gaps) > 1000
    for total, batch in [(20, 32), (200, 64), (1000, 128), (5000, 128), (64000, 128)]:
        s = default_schedule(total, batch)
        assert s[0] == 0 and s[-1] == total and s == sorted(set(s))
        cost = 1.5 * 128 / batch * len(s)  # a record costs ~1.5 steps at equal batch
        assert len(s) == 2 or cost <= 0.04 * total + 1e-9


def _probe(ds, n=128):
    return normalize(ds.x_test[:n], ds.mean, ds.std), ds.y_test[:n]


def test_fig7_stds_and_block_stats_match_a_direct_computation(tmp_path):
    store = RunStore(tmp_path)
    c = cfg(iterations=10)
    run = store.create(c)
    train(c, run)
    rows = [r for r in run.read_layers() if r["step"] == 10]
    assert {r["type"] for r in rows} == {"bn", "block", "weight", "act"}
    model = load_model(run)  # the weights the step-10 rows were measured on
    ds = load_dataset("digits")
    x, y = _probe(ds)
    # direct: hooks of this test's own on the BN modules (the taps sit right after them)
    direct = {}
    mods = dict(model.named_modules())
    handles = []
    for name in ["bn1"] + [f"{b}.bn{i}" for b, _ in blocks_of(model) for i in (1, 2)]:
        tap = name.replace("bn", "tap")
        handles.append(mods[name].register_forward_hook(
            lambda m, i, o, t=tap: direct.__setitem__(t, o.double().std(unbiased=False).item())))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    bn = {r["layer"]: r for r in rows if r["type"] == "bn"}
    assert set(bn) == set(direct) and len(bn) == 7
    for k, v in direct.items():
        assert bn[k]["std"] == pytest.approx(v, rel=1e-6, abs=1e-9)
    # per block: F(x) and x computed by hand, the output gradient by autograd
    blocks = {r["layer"]: r for r in rows if r["type"] == "block"}
    inputs, outs = {}, {}
    def keep(n):
        def hook(m, i, o):
            inputs[n], outs[n] = i[0], o
        return hook

    hs = [b.register_forward_hook(keep(n)) for n, b in blocks_of(model)]
    loss = F.cross_entropy(model(x), y)
    for h in hs:
        h.remove()
    grads = torch.autograd.grad(loss, [outs[n] for n, _ in blocks_of(model)])
    for (n, b), g in zip(blocks_of(model), grads):
        xin = inputs[n].detach()
        with torch.no_grad():
            f = b.bn2(b.conv2(b.act1(b.bn1(b.conv1(xin)))))
        r = blocks[n]
        assert r["f_over_x"] == pytest.approx((f.norm() / xin.norm()).item(), rel=1e-5)
        assert r["f_std"] == pytest.approx(f.double().std(unbiased=False).item(), rel=1e-5)
        assert r["x_std"] == pytest.approx(xin.double().std(unbiased=False).item(), rel=1e-5)
        assert r["out_grad_norm"] == pytest.approx(g.norm().item(), rel=1e-4)
    # the final step has no training gradient after it; earlier steps do
    w_final = [r for r in rows if r["type"] == "weight"]
    assert all(r["grad_norm"] is None and r["weight_norm"] > 0 for r in w_final)
    w0 = [r for r in run.read_layers() if r["step"] == 0 and r["type"] == "weight"]
    assert w0 and all(r["grad_norm"] > 0 and r["grad_to_weight"] > 0 for r in w0)
    df = read_layer_stats(run, "act")
    assert ((df["dead_frac"] >= 0) & (df["dead_frac"] <= 1)).all()


def _final_state(tmp_path, name, c, interrupt_at=None):
    store = RunStore(tmp_path / name)
    run = store.create(c)
    if interrupt_at is None:
        train(c, run)
    else:
        def stop(ctx, row):
            if ctx.step >= interrupt_at:
                run.request_cancel()
        st = train(c, run, progress=stop)
        assert st["state"] == "cancelled"
        (run.path / "cancel").unlink()
        assert train(c, run)["state"] == "done"
    return run, load_model(run).state_dict()


def test_recorder_leaves_the_trajectory_bit_identical_even_across_a_resume(tmp_path):
    plain, sd0 = _final_state(tmp_path, "none", cfg(recorders=[]))
    rec, sd1 = _final_state(tmp_path, "rec", cfg(recorders=["analysis.recorders:LayerStatsRecorder"]))
    assert {r["step"] for r in rec.read_layers()} == set(default_schedule(12, 32))
    assert plain.read_layers() == []
    for k in sd0:
        assert torch.equal(sd0[k], sd1[k]), k
    # a resumed run (cancelled at step 4, checkpointed there) equals an uninterrupted one
    full, sd2 = _final_state(tmp_path, "full", cfg())
    res, sd3 = _final_state(tmp_path, "resumed", cfg(), interrupt_at=4)
    for k in sd0:
        assert torch.equal(sd0[k], sd2[k]) and torch.equal(sd0[k], sd3[k]), k
    a = {(r["step"], r["layer"]): r for r in full.read_layers()}
    b = {(r["step"], r["layer"]): r for r in res.read_layers()}
    assert a.keys() == b.keys()
    for key in a:
        for f, v in a[key].items():
            assert v == b[key][f] or (isinstance(v, float) and math.isclose(v, b[key][f], rel_tol=1e-12)), (key, f)


def test_recording_at_every_step_changes_nothing(tmp_path):
    store = RunStore(tmp_path)
    c = cfg(recorders=[])
    r0 = store.create(c)
    train(c, r0)
    r1 = store.create(c)
    rec = LayerStatsRecorder(steps=list(range(13)))
    train(c, r1, callbacks=[rec])
    assert rec.records == 13
    a, b = load_model(r0).state_dict(), load_model(r1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_layer_stats_leaves_no_hooks_grads_mode_or_rng_behind():
    torch.manual_seed(0)
    model = build_model("cifar_plain8", width=4, in_channels=1)
    x = torch.randn(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))
    model.train()
    model(x)  # move BN running stats off (0, 1)
    bn_before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    rows = layer_stats(model, x, y)
    assert hook_count(model) == 0
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in bn_before.items())
    assert all(r["grad_norm"] is None for r in rows if r["type"] == "weight")
    # existing grads are read, not changed
    F.cross_entropy(model(x), y).backward()
    g = {n: p.grad.clone() for n, p in model.named_parameters()}
    rows = layer_stats(model, x, y)
    assert all(torch.equal(g[n], p.grad) for n, p in model.named_parameters())
    conv1 = next(r for r in rows if r["layer"] == "conv1")
    assert conv1["grad_norm"] == pytest.approx(g["conv1.weight"].norm().item(), rel=1e-6)
    # an exception mid-pass still removes every hook and restores the mode
    model.eval()
    with pytest.raises(RuntimeError):
        layer_stats(model, torch.randn(2, 3, 8, 8), y[:2])  # wrong channel count
    assert hook_count(model) == 0 and not model.training
