"""LayerStatsRecorder: the numbers it writes are the ones a direct computation gives, and it
leaves training exactly as it would be without it (also across a resume)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from analysis.recorders import (
    LayerStatsRecorder,
    default_schedule,
    grad_schedule,
    layer_stats,
    probe_plan,
    read_layer_stats,
    record_cost,
    weight_rows,
)
from analysis.taps import hook_count
from resnet_core import RunStore, TrainConfig, load_dataset, train
from resnet_core.config import apply_preset
from resnet_core.data import normalize
from resnet_core.models import blocks_of, build_model
from resnet_core.train import Callback, load_checkpoint, load_model

torch.set_num_threads(1)


def cfg(**kw):
    base = dict(
        model="cifar_resnet8",
        width=4,
        dataset="digits",
        iterations=12,
        batch_size=32,
        log_every=4,
        eval_every=6,
        checkpoint_every=6,
        train_eval_size=64,
        device="cpu",
        threads=1,
        precision="fp32",
        recorders=["analysis.recorders:LayerStatsRecorder"],
    )
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
        n = probe_plan(total, batch, 10000)
        s = default_schedule(total, batch, n)
        assert s[0] == 0 and s[-1] == total and s == sorted(set(s))
        assert len(s) == 2 or record_cost(batch, n) * len(s) <= 0.04 * total + 1e-9
    # three records are 0, the middle and the end, not 0, 1 and the end
    assert default_schedule(240, 128, 128 * 3, budget=0.04) == [0, 120, 240]


def test_probe_size_and_gradient_columns_of_the_presets():
    """1,000 probe images where the budget allows it (lesson, paper), fewer only for `quick`,
    where two 1,000-image records alone would cost more than the 4% probe budget; the
    weight-gradient rows give Gradient flow at least 20 columns even there."""
    for preset, dataset in [
        ("quick", "cifar10"),
        ("quick", "digits"),
        ("lesson", "cifar10"),
        ("paper", "cifar10"),
    ]:
        c = apply_preset(preset, {"dataset": dataset})
        n_train = {"digits": 1438, "cifar10": 50000}[dataset]
        total = c.iterations or int(c.epochs * (min(c.subset or n_train, n_train) // c.batch_size))
        n_test = {"digits": 359, "cifar10": 10000}[dataset]
        n = probe_plan(total, c.batch_size, n_test)
        steps = default_schedule(total, c.batch_size, n)
        assert len(grad_schedule(total)) >= 20, (preset, dataset)
        assert 0 in steps and total in steps
        if preset == "quick":
            assert total in (234, 264) and 256 <= n < 1000 and len(steps) == 2
            assert record_cost(c.batch_size, 1000) * 2 > 0.04 * total  # 1,000 would not fit
        else:
            assert n == 1000 and len(steps) >= 10, (preset, len(steps))
        assert record_cost(c.batch_size, n) * len(steps) <= 0.04 * total + 1e-9


def _probe(ds, n):
    return normalize(ds.x_test[:n], ds.mean, ds.std), ds.y_test[:n]


def test_fig7_stds_and_block_stats_match_a_direct_computation(tmp_path):
    store = RunStore(tmp_path)
    c = cfg(iterations=10)
    run = store.create(c)
    train(c, run)
    rows = [r for r in run.read_layers() if r["step"] == 10]
    # the final step has no training gradient after it: probe rows only
    assert {r["type"] for r in rows} == {"response", "block", "act"}
    n = rows[0]["images"]
    assert n == probe_plan(10, 32, 359) and all(r["images"] == n for r in rows)
    model = load_model(run)  # the weights the step-10 rows were measured on
    ds = load_dataset("digits")
    x, y = _probe(ds, n)
    # direct: hooks of this test's own on the BN modules (the taps sit right after them)
    direct = {}
    mods = dict(model.named_modules())
    handles = []
    for name in ["bn1"] + [f"{b}.bn{i}" for b, _ in blocks_of(model) for i in (1, 2)]:
        tap = name.replace("bn", "tap")
        handles.append(
            mods[name].register_forward_hook(
                lambda m, i, o, t=tap: direct.__setitem__(t, o.double().std(unbiased=False).item())
            )
        )
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    bn = {r["layer"]: r for r in rows if r["type"] == "response"}
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
    # dead units: zero for every probe image, counted by this test's own hook on each ReLU
    acts = {r["layer"]: r for r in rows if r["type"] == "act"}
    seen = {}
    hs = [
        m.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o.detach()))
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.ReLU)
    ]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    assert set(seen) == set(acts)
    for name, o in seen.items():
        dead = (o == 0).all(0).double().mean().item()
        assert acts[name]["dead_frac"] == pytest.approx(dead, abs=1e-12), name
        assert acts[name]["std"] == pytest.approx(o.double().std(unbiased=False).item(), rel=1e-5)
    # weight rows at every step of the gradient schedule, none at the final step
    w = read_layer_stats(run, "weight")
    assert sorted(set(w["step"])) == grad_schedule(10)


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
    rows = rec.read_layers()
    n = probe_plan(12, 32, 359)
    assert {r["step"] for r in rows if r["type"] == "response"} == set(default_schedule(12, 32, n))
    assert {r["step"] for r in rows if r["type"] == "weight"} == set(grad_schedule(12))
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
            assert v == b[key][f] or (isinstance(v, float) and math.isclose(v, b[key][f], rel_tol=1e-12)), (
                key,
                f,
            )


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
    assert {r["type"] for r in rows} == {"response", "block", "act"}
    # existing grads (the training step's) are left as they are
    F.cross_entropy(model(x), y).backward()
    g = {n: p.grad.clone() for n, p in model.named_parameters()}
    layer_stats(model, x, y, chunk=5)
    assert all(torch.equal(g[n], p.grad) for n, p in model.named_parameters())
    # chunks change nothing but rounding: 16 images in chunks of 5 and in one pass
    one = layer_stats(model, x, y, chunk=16)
    five = layer_stats(model, x, y, chunk=5)
    for a, b in zip(one, five):
        for k, v in a.items():
            assert b[k] == (pytest.approx(v, rel=1e-5, abs=1e-9) if isinstance(v, float) else v), (
                a["layer"],
                k,
            )
    # an exception mid-pass still removes every hook and restores the mode
    model.eval()
    with pytest.raises(RuntimeError):
        layer_stats(model, torch.randn(2, 3, 8, 8), y[:2])  # wrong channel count
    assert hook_count(model) == 0 and not model.training


class _Snapshot(Callback):
    """The model as it starts (step 0): the test's own checkpoint, since a run saves none
    before its first step."""

    needs_hooks = False

    def on_train_start(self, ctx):
        self.state = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}


def test_rows_at_step_s_describe_the_model_after_exactly_s_updates(tmp_path):
    """Issue: rows labelled s were measured after the training forward of step s+1, so BN's
    running statistics were one batch ahead (29% off at step 0). Here each record is
    recomputed from the checkpoint of its step, by this test's own hooks, and must agree.
    The whole training set is one batch with no augmentation, so the weight-gradient rows can
    be recomputed from the same checkpoint too (the loss is a mean: order does not matter)."""
    store = RunStore(tmp_path)
    c = cfg(
        iterations=10,
        subset=64,
        batch_size=64,
        augment="none",
        checkpoint_steps=[2, 8],
        checkpoint_every=100,
        eval_every=10,
        recorders=[],
    )
    run = store.create(c)
    snap, rec = _Snapshot(), LayerStatsRecorder(steps=[0, 2, 8])
    train(c, run, callbacks=[snap, rec])
    ds = load_dataset("digits", subset=64)
    x, y = _probe(ds, rec.probe_images)
    assert rec.probe_images == 359  # min(1,000, the test set)
    xt, yt = normalize(ds.x_train, ds.mean, ds.std), ds.y_train
    layers = run.read_layers()
    for s in (0, 2, 8):
        state = snap.state if s == 0 else load_checkpoint(run.checkpoint_path(f"step-{s:06d}"))["model"]
        model = build_model("cifar_resnet8", width=4, in_channels=1)
        model.load_state_dict(state)
        model.eval()
        bn_out, block_out, f_out, block_in = {}, {}, {}, {}
        mods = dict(model.named_modules())
        hooks = [
            mods[n].register_forward_hook(lambda m, i, o, n=n: bn_out.__setitem__(n, o))
            for n in ["bn1"] + [f"{b}.bn{k}" for b, _ in blocks_of(model) for k in (1, 2)]
        ]

        def keep(b):
            def hook(m, i, o):  # returns None: the output stays as it is
                block_in[b], block_out[b] = i[0], o

            return hook

        for b, blk in blocks_of(model):
            hooks.append(blk.register_forward_hook(keep(b)))
            hooks.append(blk.bn2.register_forward_hook(lambda m, i, o, b=b: f_out.__setitem__(b, o)))
        loss = F.cross_entropy(model(x), y)
        for h in hooks:
            h.remove()
        names = [b for b, _ in blocks_of(model)]
        grads = dict(zip(names, torch.autograd.grad(loss, [block_out[b] for b in names])))
        rows = {(r["type"], r["layer"]): r for r in layers if r["step"] == s}
        for n, o in bn_out.items():
            want = o.detach().double().std(unbiased=False).item()
            assert rows["response", n.replace("bn", "tap")]["std"] == pytest.approx(want, rel=1e-4), (s, n)
        for b in names:
            r = rows["block", b]
            assert r["f_over_x"] == pytest.approx(
                (f_out[b].double().norm() / block_in[b].double().norm()).item(), rel=1e-4
            ), (s, b)
            assert r["out_grad_norm"] == pytest.approx(grads[b].norm().item(), rel=1e-4), (s, b)
        # the training step's gradient at these weights: train mode, the whole (one) batch
        model.train()
        model.zero_grad()
        F.cross_entropy(model(xt), yt).backward()
        for n, m in model.named_modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                got = rows["weight", n]
                assert got["grad_norm"] == pytest.approx(m.weight.grad.norm().item(), rel=1e-4), (s, n)
                assert got["weight_norm"] == pytest.approx(m.weight.norm().item(), rel=1e-5)
                assert got["images"] == 64
    # step 0 in eval mode sees BN's initial running statistics: "after BN" is the raw conv
    assert all(
        torch.equal(v, torch.zeros_like(v)) for k, v in snap.state.items() if k.endswith("running_mean")
    )
    with torch.no_grad():
        m0 = build_model("cifar_resnet8", width=4, in_channels=1)
        m0.load_state_dict(snap.state)
        raw = m0.conv1(x).double().std(unbiased=False).item() / math.sqrt(1 + 1e-5)
    stem0 = [r for r in layers if r["step"] == 0 and r["layer"] == "tap1"][0]
    assert stem0["std"] == pytest.approx(raw, rel=1e-4)


def test_weight_rows_read_the_training_gradient_and_none_without_one():
    torch.manual_seed(0)
    model = build_model("cifar_plain8", width=4, in_channels=1)
    assert all(r["grad_norm"] is None and r["grad_to_weight"] is None for r in weight_rows(model, 0))
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    F.cross_entropy(model(x), y).backward()
    rows = {r["layer"]: r for r in weight_rows(model, 3, images=8)}
    fc = model.fc.weight
    assert rows["fc"]["grad_norm"] == pytest.approx(fc.grad.double().norm().item(), rel=1e-6)
    assert rows["fc"]["grad_to_weight"] == pytest.approx(
        (fc.grad.double().norm() / fc.double().norm()).item(), rel=1e-6
    )
    assert rows["conv1"]["step"] == 3 and rows["conv1"]["images"] == 8
