"""Issue 15's instruments on every variant, and the "Can plain nets be fixed?" page.

Each measurement is checked against a computation written here from its definition (hooks
or plain torch), on real nets: fresh ones at init, and real tiny digits runs of every
variant of the `rescue` sweep. The page runs in Streamlit's AppTest on an empty store and on
a store of runs whose final errors are set so that a variant closes the gap, or does not.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import train_tiny

from analysis.studies import rescue
from analysis.studies.landscape import landscape_1d
from analysis.studies.lesion import deleted, error_of, lesion_each
from analysis.studies.shattering import image_shattering
from resnet_core.models import blocks_of, build_model

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = rescue.rescue_variants()


def _opts(v):
    o = dict(v["options"])
    return o.pop("norm"), o.pop("init"), o


def _fresh(v, depth=8, width=4, seed=0):
    norm, init, o = _opts(v)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(f"cifar_{v['kind']}{depth}", norm=norm, init=init, width=width, **o)


# --- at init ---------------------------------------------------------------------------------
def _sum_inputs(model, x):
    """Per block, the input of its last activation module (hooks), BN in train mode."""
    seen, handles = {}, []
    for n, b in blocks_of(model):
        handles.append(
            b.act2.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, i[0].detach().double()))
        )
    try:
        model.train()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def test_signal_propagation_at_init_of_every_variant_by_definition():
    """Brock et al.'s statistics of each variant's fresh net equal the channel squared mean and
    variance of the sum before each block's last activation, measured here by hooks on the same
    net built directly; and the variant really is the variant (ReZero/SkipInit/Fixup all start
    as their net of shortcuts, so they measure alike)."""
    blocks = rescue.variants_signal(depth=8, width=4, batch=16, image_size=8, seed=0)
    assert list(dict.fromkeys(blocks["label"])) == [v["label"] for v in VARIANTS]
    for v in VARIANTS:
        net = _fresh(v)
        g = torch.Generator().manual_seed(12345)
        x = torch.randn(16, 3, 8, 8, generator=g)
        seen = _sum_inputs(net, x)
        got = blocks[blocks["label"] == v["label"]].sort_values("order")
        for (n, _), (_, row) in zip(blocks_of(net), got.iterrows()):
            t = seen[n].transpose(0, 1).flatten(1)
            assert row["block"] == n
            assert row["sq_mean"] == pytest.approx(float(t.mean(1).pow(2).mean()), rel=1e-6, abs=1e-12)
            assert row["var"] == pytest.approx(float(t.var(1, unbiased=False).mean()), rel=1e-6)
    last = blocks.groupby("label").tail(1).set_index("label")["var"]
    assert last["Fixup"] == pytest.approx(last["SkipInit"], rel=1e-9)
    assert last["SkipInit"] == pytest.approx(last["ReZero"], rel=1e-9)


def _readout_grads(v, n_points=24, seed=0):
    """s_i = d . grad_x (r . pooled features) at each line point, one point at a time (BN with
    the line's batch statistics, taken here by a train-mode pass and frozen by hand)."""
    net = _fresh(v)
    x0 = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(seed))
    d = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + 999))
    d = d / d.pow(2).mean().sqrt()
    t = torch.linspace(-1, 1, n_points)
    pts = x0[None] + t[:, None, None, None] * d[None]
    r = torch.randn(
        net.num_features // (2 if v["options"]["activation"] == "crelu" else 1),
        generator=torch.Generator().manual_seed(seed + 4242),
    )
    if v["options"]["activation"] == "crelu":
        r = torch.cat([r, -r])
    r = r / r.norm()
    m = copy.deepcopy(net)
    bns = [b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    ins = {}
    hs = [b.register_forward_pre_hook(lambda mod, i: ins.__setitem__(mod, i[0])) for b in bns]
    m.train()
    with torch.no_grad():
        m(pts)
    for h in hs:
        h.remove()
    for b in bns:
        b.running_mean.copy_(ins[b].mean((0, 2, 3)))
        b.running_var.copy_(ins[b].var((0, 2, 3), unbiased=False))
    m.eval()
    s = []
    for p in pts:
        p = p[None].clone().requires_grad_(True)
        f = (m.forward_head(m.forward_features(p), pre_logits=True) @ r).sum()
        (g,) = torch.autograd.grad(f, p)
        s.append(float((g[0] * d).sum()))
    return np.array(s)


def test_gradient_shattering_at_init_of_every_variant_by_definition():
    """Each variant's autocorrelation is that of d . grad_x (r . features) computed point by
    point here; looks-linear CReLU (linear at init) has one gradient along the whole line, and
    Fixup (classifier at 0) still gets a gradient through the readout."""
    sh = rescue.variants_shattering(depth=8, width=4, image_size=8, n_points=24, max_lag=3)
    for v in VARIANTS:
        s = _readout_grads(v)
        got = sh[sh["label"] == v["label"]].sort_values("lag")
        if v["label"] == "looks-linear CReLU":
            assert np.ptp(s) <= 1e-4 * np.abs(s).max()  # the same gradient at every point
            assert got["constant"].all() and got["autocorrelation"].isna().all()
            continue
        c = s - s.mean()
        rho = [float((c[: len(s) - k] * c[k:]).sum() / (c * c).sum()) for k in range(4)]
        assert not got["constant"].any()
        np.testing.assert_allclose(got["autocorrelation"], rho, atol=2e-3)
    fixup = next(v for v in VARIANTS if v["label"] == "Fixup")
    assert np.abs(_readout_grads(fixup)).max() > 0  # Fixup, whose logits are flat at init


def test_signal_and_shattering_studies_take_a_variant_options_dict():
    """The existing studies build the variant through the same builder (options pass through)."""
    from analysis.studies.shattering import shattering_vs_depth
    from analysis.studies.signal import signal_propagation_plot

    rz = signal_propagation_plot(
        "resnet", 8, "none", "he", width=4, batch=8, image_size=8, options={"branch_scalar": "rezero"}
    )
    assert rz["point"].str.contains("no activation after the sum").all()
    # ReZero at init: every residual branch is multiplied by 0, so each block's branch output is 0
    assert (rz["res_var"] == 0).all()
    ll = shattering_vs_depth(
        ("plain",),
        (8,),
        width=4,
        image_size=8,
        n_points=16,
        seeds=(0,),
        init="looks_linear",
        max_lag=2,
        options={"activation": "crelu"},
    )
    assert ll["autocorrelation"].isna().all()  # logit of a linear net: a constant gradient


# --- on trained tiny runs of every variant ---------------------------------------------------
@pytest.fixture(scope="module")
def variant_runs(tmp_path_factory):
    from resnet_core.store import RunStore

    store = RunStore(tmp_path_factory.mktemp("variants"))
    out = {}
    for v in VARIANTS:
        norm, init, o = _opts(v)
        out[v["label"]] = train_tiny(
            store,
            f"cifar_{v['kind']}8",
            iterations=4,
            log_every=2,
            eval_every=4,
            train_eval_size=64,
            test_size=64,
            norm=norm,
            init=init,
            **o,
        )
    return out


def _branchless(block):
    """The block with its residual branch's output forced to 0, by hand: alpha = 0 and, for
    Fixup, the branch's own bias after the multiplier set to 0 too."""
    block.scale.weight.data.zero_()
    if hasattr(block, "bias2b") and hasattr(block.bias2b, "bias"):
        block.bias2b.bias.data.zero_()


def test_instruments_on_a_trained_tiny_run_of_every_variant(variant_runs):
    from analysis.loading import heldout_batch, load

    for label, run in variant_runs.items():
        assert run.read_status()["state"] == "done", label
        layers = run.read_layers()
        grads = [r for r in layers if r.get("type") == "weight" and r.get("grad_norm") is not None]
        assert grads and all(math.isfinite(r["grad_norm"]) for r in grads), label  # gradient flow
        assert any(r.get("type") == "response" and math.isfinite(r["std"]) for r in layers), label
        model, ds = load(run)
        x, y = heldout_batch(ds, 60)
        # lesions: every block, downsampling ones included (CReLU doubles the channels there)
        les = lesion_each(model, x, y)
        assert len(les) == 3 and les["error"].between(0, 1).all(), label
        for (n, b), (_, row) in zip(blocks_of(model), les.iterrows()):
            if b.residual and not isinstance(b.scale, torch.nn.Identity):
                ref = copy.deepcopy(model)  # SkipInit, ReZero, Fixup: the branch's output at 0
                _branchless(dict(ref.named_modules())[n])
                with deleted(model, [n]):
                    assert torch.allclose(model.eval()(x), ref.eval()(x), atol=1e-5), (label, n)
                assert row["error"] == pytest.approx(error_of(ref, x, y)["error"]), label
        # landscape: the loss at alpha = 0 is the checkpoint's own loss on the probe
        land = landscape_1d(model, x, y, steps=3, span=0.5, seed=0)
        with torch.no_grad():
            own = float(F.cross_entropy(model.eval()(x).float(), y))
        assert land.loc[land["alpha"] == 0, "loss"].iloc[0] == pytest.approx(own, rel=1e-4), label
        # image shattering on the checkpoint: finite, or a constant gradient said as NaN
        sh = image_shattering(model, x[0], int(y[0]), n_points=16, max_lag=2)
        assert sh["autocorrelation"].iloc[0] == 1.0 or sh["autocorrelation"].isna().all(), label


# --- the page ----------------------------------------------------------------------------------
PAGE = str(ROOT / "app" / "app_pages" / "rescue.py")


def _app(store_root, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("RESNET_LAB_RUNS_DIR", str(store_root))
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["rescue_depth"] = 8
    at.session_state["rescue_width"] = 4
    return at.run()


def _text(at) -> str:
    return "\n".join(
        [m.value for m in at.markdown] + [m.value for m in at.info] + [c.value for c in at.caption]
    )


def test_page_with_no_runs_says_so_and_gives_the_command(store, monkeypatch):
    at = _app(store.root, monkeypatch)
    assert not at.exception, at.exception
    text = _text(at)
    assert "python -m resnet_core sweep rescue --dataset ../shared/data/cifar10-jpeg.npz" in text
    # the init sentences name the numbers in the table beside them
    table = at.dataframe[1].value.set_index("variant")
    res_var = table.loc["resnet, He + BN", "last block variance"]
    assert f"**{res_var:.3g}**" in text
    zero = (
        "Residual branch variance 0 at every block (below 1e-09, so not drawn on the log "
        "axis): Fixup, SkipInit, ReZero, resnet, zero-init last BN."
    )
    assert zero in text  # each branch ends in alpha = 0, a zero conv or a zero BN gamma
    plain = "plain, He + BN, looks-linear CReLU, delta-orthogonal tanh, no BN, TAT leaky ReLU, no BN"
    assert f"No residual branch, so no line in the F(x) panel: {plain}." in text
    # what the squared-mean panel leaves out is said, and each one named is ~0 in the table
    (flat,) = [line for line in text.splitlines() if "Squared mean 0 up to rounding" in line]
    named = flat.split("): ", 1)[1].rstrip(".").split(", ")
    assert "plain" in named[0]  # the BN'd plain net: a BN output has mean 0 per channel
    sq = table["last block squared mean"]
    assert all(sq[v] < 1e-9 for v in table.index if v.split(",")[0] in named)
    ll = "looks-linear CReLU: the gradient is the same at every point"
    assert ll in text and table.loc["looks-linear CReLU", "gradient constant along the line"]


def _fake_run(store, model, train_err, test_err, seed=0, first_eval=None, **variant):
    """A finished run with a short metrics log ending at the given errors (fractions);
    ``first_eval``: a training error evaluated at step 10 as well."""
    from conftest import tiny_config

    run = store.create(tiny_config(model, seed=seed, **variant), state="done")
    rows = []
    for step, f in ((10, 0.5), (20, 1.0)):
        rows.append({"step": step, "split": "train", "error": 0.9 - f * (0.9 - train_err), "loss": 1.0})
        rows.append({"step": step, "split": "test", "error": 0.9 - f * (0.9 - test_err), "loss": 1.0})
    if first_eval is not None:
        rows.append({"step": 10, "split": "train_eval", "error": first_eval, "loss": 1.0})
    rows.append({"step": 20, "split": "train_eval", "error": train_err, "loss": 1.0})
    run.append_jsonl("metrics.jsonl", rows)
    run.write_status(state="done", step=20, total=20)
    return run


@pytest.mark.parametrize(
    "crelu_error, verdict, closed",
    [(0.15, "closes most of the gap: **90%**", "90%"), (0.60, "closes almost none of the gap (0%)", "0%")],
)
def test_page_verdicts_follow_the_runs(store, monkeypatch, crelu_error, verdict, closed):
    """plain 60%, resnet 10% (two seeds each), looks-linear CReLU at ``crelu_error``: the
    verdict sentence and the table's 'gap closed' change with the numbers."""
    for seed, (p, r) in enumerate(((0.58, 0.09), (0.62, 0.11))):
        _fake_run(store, "cifar_plain8", p, 0.6, seed=seed)
        _fake_run(store, "cifar_resnet8", r, 0.2, seed=seed)
    _fake_run(store, "cifar_plain8", crelu_error, 0.5, activation="crelu", init="looks_linear")
    at = _app(store.root, monkeypatch)
    assert not at.exception, at.exception
    text = _text(at)
    assert "a gap of **50.0 points**" in text
    assert "plain, He + BN 60.0% ± 2.8 (n=2)" in text
    assert f"**looks-linear CReLU** (no shortcuts): {100 * crelu_error:.1f}% (n=1); it {verdict}." in text
    gap = at.dataframe[-1].value.set_index("variant")
    assert gap.loc["looks-linear CReLU", "gap closed"] == closed
    assert "Sets with one seed have no spread" in text


def test_a_depth_without_the_residual_net_and_one_recipe_at_two_depths(store, monkeypatch):
    """plain110 has no resnet110 in the sweep: at such a depth the page names the missing
    baseline and gives each variant against the plain net in points; a recipe trained at two
    depths gets each variant's error at both, and whether the plain net degraded."""
    for seed, p in enumerate((0.58, 0.62)):
        _fake_run(store, "cifar_plain8", p, 0.6, seed=seed)
    _fake_run(store, "cifar_resnet8", 0.10, 0.2)
    _fake_run(store, "cifar_plain8", 0.45, 0.5, activation="crelu", init="looks_linear")
    _fake_run(store, "cifar_plain14", 0.75, 0.7, first_eval=0.75)  # never fell: did not train
    _fake_run(store, "cifar_plain14", 0.50, 0.5, first_eval=0.8, activation="crelu", init="looks_linear")
    at = _app(store.root, monkeypatch)
    assert not at.exception, at.exception
    text = _text(at)
    assert "No finished run of resnet, He + BN at this budget and depth" in text
    assert "Final training error of plain, He + BN: 75.0% (n=1)." in text
    assert "**looks-linear CReLU** (no shortcuts): 50.0% (n=1); 25.0 points below plain, He + BN." in text
    assert (
        "**plain, He + BN**: its training error never fell more than 5 points below its first "
        "evaluation's: 75.0% at the end, 75.0% at step 10, lowest 75.0%." in text
    )
    assert "**looks-linear CReLU**: its training error never" not in text  # 80% -> 50%
    assert (
        "**plain, He + BN**: 60.0% ± 2.8 (n=2) at depth 8, 75.0% (n=1) at depth 14: 15.0 points "
        "higher at depth 14 than at depth 8: at depth 14 its training error never fell more than 5 "
        "points below its first evaluation's, which is more than the paper's degradation problem" in text
    )
    assert (
        "**looks-linear CReLU**: 45.0% (n=1) at depth 8, 50.0% (n=1) at depth 14: 5.0 points higher" in text
    )
    assert not any("**resnet, He + BN**:" in m.value for m in at.markdown)  # one depth only


def test_a_variant_that_did_not_train_in_any_seed_is_named_with_its_numbers():
    """plain110 He + BN stayed at chance on the lesson budget (88.6% at one epoch, 90.0% at the
    end, with noise between): a set in which in *every* seed the training error (train_eval)
    never fell more than 5 points below its first evaluation's is named, with the means and
    each seed's lowest; a set where a seed's error fell by more is not."""
    import pandas as pd

    from app import rescue_view as rv

    def evals(rid, errs):
        return [
            {"run_id": rid, "split": "train_eval", "step": 10 * (i + 1), "error": e}
            for i, e in enumerate(errs)
        ]

    metrics = pd.DataFrame(
        evals("a0", [0.88, 0.91, 0.87])  # ends below its first, by noise
        + evals("a1", [0.90, 0.85, 0.90])  # exactly 5 points below: not more
        + evals("b0", [0.88, 0.6, 0.80])  # fell 28 points, then rose again
        + evals("b1", [0.40, 0.34, 0.90])  # fell 6 points
    )
    table = pd.DataFrame(
        [
            {**_row(rv.PLAIN, 88.5, n=2), "run_ids": ["a0", "a1"]},
            {**_row("Fixup", 85.0, n=2), "run_ids": ["b0", "b1"]},
        ]
    )
    said = rv.stalled_sentences(table, metrics)
    first, last = (88 + 90) / 2, (87 + 90) / 2
    assert said == [
        f"**plain, He + BN**: its training error never fell more than 5 points below its first "
        f"evaluation's, in each of its 2 seeds: {last:.1f}% at the end, {first:.1f}% at step 10 "
        "(means over seeds), lowest 85.0% to 87.0% over its seeds."
    ]
    assert rv.stalled_sets(table.assign(depth=56), metrics) == [(rv.PLAIN, 56)]


def test_depth_and_baseline_differences_that_round_to_zero_read_the_same():
    import pandas as pd

    from app import rescue_view as rv

    t = pd.DataFrame(
        [{**_row(rv.PLAIN, 60.0, n=3), "depth": 56}, {**_row(rv.PLAIN, 60.04, n=3), "depth": 110}]
    )
    (said,) = rv.depth_sentences(t)
    assert "the same at depth 110 as at depth 56" in said and "does not show here" in said
    one = pd.DataFrame([_row(rv.PLAIN, 60.0), _row("Fixup", 59.96)])
    assert "**Fixup** (g): 60.0% ± 1.0 (n=3); the same as plain, He + BN." in rv.gap_sentences(one)


def test_depth_sentences_say_when_the_plain_net_does_not_degrade():
    import pandas as pd

    from app import rescue_view as rv

    t = pd.DataFrame(
        [{**_row(rv.PLAIN, 60.0, n=1), "depth": 56}, {**_row(rv.PLAIN, 55.0, n=1), "depth": 110}]
    )
    said, noise = rv.depth_sentences(t)
    assert "seed noise" in noise  # one seed each
    assert "5.0 points lower at depth 110 than at depth 56" in said
    assert "degradation (a deeper plain net ending higher) does not show here" in said
    assert rv.depth_sentences(t[t["depth"] == 56]) == []


def _row(variant, train, n=3, std=1.0):
    return {
        "variant": variant,
        "group": "g",
        "n": n,
        "train_mean": train,
        "train_std": std,
        "test_mean": train + 5,
        "test_std": std,
        "gap_closed": math.nan,
    }


def test_gap_verdicts_without_a_baseline_without_a_gap_and_past_the_residual_net():
    """The verdicts name what is missing, say when there is no gap, and say when a variant ends
    below the residual net, each from the numbers given."""
    import pandas as pd

    from app import rescue_view as rv

    only_plain = pd.DataFrame([_row(rv.PLAIN, 60.0), _row("Fixup", 30.0)])
    assert "No finished run of resnet, He + BN" in rv.gap_sentences(only_plain)[0]
    no_gap = pd.DataFrame([_row(rv.PLAIN, 20.0), _row(rv.RESNET, 25.0), _row("ReZero", 10.0)])
    said = rv.gap_sentences(no_gap)
    assert "a gap of **-5.0 points**" in said[0] and "no gap for the variants to close" in said[1]
    assert not any("ReZero" in s for s in said)
    past = pd.DataFrame([_row(rv.PLAIN, 60.0), _row(rv.RESNET, 10.0), _row("ReZero", 4.0)])
    past["gap_closed"] = (60.0 - past["train_mean"]) / 50.0
    said = rv.gap_sentences(past)
    assert (
        "**ReZero** (g): 4.0% ± 1.0 (n=3); it closes the whole gap (112%): it ends 6.0 points "
        "below the residual net." in said
    )
    # seed spread: Fixup 2.0 below a residual net of std 3.0 is within it; ReZero's 6.0 is not
    noisy = pd.DataFrame(
        [_row(rv.PLAIN, 60.0), _row(rv.RESNET, 10.0, std=3.0), _row("Fixup", 8.0), _row("SkipInit", 14.0)]
    )
    noisy["gap_closed"] = (60.0 - noisy["train_mean"]) / 50.0
    said = rv.gap_sentences(noisy)
    assert (
        "**Fixup** (g): 8.0% ± 1.0 (n=3); it closes the whole gap (104%): it ends 2.0 points below "
        "the residual net (within the seeds' spread: ± 3.0)." in said
    )
    assert (
        "**SkipInit** (g): 14.0% ± 1.0 (n=3); it closes most of the gap: **92%** (4.0 points from "
        "the residual net, within the seeds' spread: ± 3.0)." not in said
    )  # 4.0 > 3.0
    assert "**SkipInit** (g): 14.0% ± 1.0 (n=3); it closes most of the gap: **92%**." in said
    one = pd.DataFrame([_row(rv.PLAIN, 60.0), _row(rv.RESNET, 10.0, n=1), _row("Fixup", 8.0)])
    one["gap_closed"] = (60.0 - one["train_mean"]) / 50.0
    assert not any("spread: ±" in x for x in rv.gap_sentences(one))  # one seed: no spread to compare


def test_runs_are_compared_within_one_budget_and_depth():
    """A variant's run shares its budget key with the baselines of the same training fields,
    whatever its family and variant fields; another budget or depth gets another key."""
    import dataclasses

    from conftest import tiny_config

    from app import rescue_view as rv

    def key(model, **kw):
        return rv.budget_key(dataclasses.asdict(tiny_config(model, **kw)))

    base = key("plain56")
    assert key("resnet56", norm="none", init="fixup") == base
    assert key("plain56", activation="tanh", init="delta_orthogonal", norm="none", seed=3) == base
    assert key("plain56", iterations=40) != base and key("plain20") != base
    assert key("cifar_resnet50") != key("resnet50")  # the CIFAR and the ImageNet layout of depth 50

    def recipe(model, **kw):
        return rv.recipe_key(dataclasses.asdict(tiny_config(model, **kw)))

    w = {"warmup": "paper"}  # as the lesson preset
    assert recipe("plain56", **w) == recipe("plain110", activation="crelu", init="looks_linear", **w)
    assert recipe("plain56", **w) == recipe("resnet20", **w)
    assert recipe("resnet18") != recipe("resnet20") and recipe("plain56", iterations=40) != recipe("plain56")
    # warmup "auto" warms up from depth 110 on (train.warmup_enabled): not one recipe across 110
    assert recipe("plain56", warmup="auto") != recipe("plain110", warmup="auto")
    assert recipe("plain56", warmup="auto") == recipe("plain20", warmup="none")


def test_a_bundled_rescue_set_is_shown_before_anything_is_trained(store, tmp_path, monkeypatch):
    """A reference set of rescue runs (exported from runs whose errors are known) fills the
    page on an empty store: its curves, its table and verdicts computed from its records."""
    from resnet_core.reference import export
    from resnet_core.store import RunStore

    made = RunStore(tmp_path / "made")
    _fake_run(made, "cifar_plain8", 0.60, 0.62)
    _fake_run(made, "cifar_resnet8", 0.20, 0.25)
    _fake_run(made, "cifar_plain8", 0.30, 0.35, norm="none", init="delta_orthogonal", activation="tanh")
    from conftest import tiny_config

    tat = made.create(tiny_config("cifar_plain8", norm="none", init="delta_orthogonal", activation="tat"))
    tat.append_jsonl("metrics.jsonl", [{"step": 7, "split": "train", "loss": None, "error": None, "lr": 0.1}])
    why = "the training loss became nan at step 7 (lr 0.1)"
    tat.write_status(state="diverged", step=7, total=20, message=f"diverged: {why}; try a smaller lr")
    refs = tmp_path / "refs"
    export(made, made.list_ids(), refs / "rescue-tiny", title="Tiny rescue", description="Four runs.")
    from resnet_core.reference import check_set, read_set

    assert check_set(read_set(refs / "rescue-tiny")) == []  # a diverged run is a sound reference run
    monkeypatch.setenv("RESNET_LAB_REFERENCE_DIR", str(refs))
    at = _app(store.root, monkeypatch)
    assert not at.exception, at.exception
    text = _text(at)
    assert [h.value for h in at.header][-2:] == ["Measured: bundled reference runs", "Your runs"]
    assert "**Tiny rescue** (`reference/rescue-tiny`). Four runs." in text
    assert "a gap of **40.0 points**" in text
    assert (
        "**delta-orthogonal tanh, no BN** (no shortcuts): 30.0% (n=1); it closes most of the gap: **75%**."
        in text
    )
    assert "The bundled reference runs above show what this sweep measured here." in text
    # a diverged run is a result: said with its status's step and lr, not in the table
    assert (
        f"**TAT leaky ReLU, no BN** (no shortcuts): its run diverged (seed 0: {why}). No final error" in text
    )
    gap = at.dataframe[-1].value.set_index("variant")
    assert gap.loc["delta-orthogonal tanh, no BN", "gap closed"] == "75%"
    assert len(at.get("plotly_chart")) == 3  # signal, shattering, the set's curves


def test_without_a_bundled_rescue_set_the_page_says_there_is_none(store, monkeypatch):
    at = _app(store.root, monkeypatch)
    assert "Measured: bundled reference runs" not in [h.value for h in at.header]
    assert "No measured reference set of this sweep is bundled" in _text(at)


def test_the_paper_nets_alone_are_not_a_rescue_measurement(store, monkeypatch):
    """The bundled degradation sets (and a user's own quick or laptop sweep) hold only the two
    baselines: the page never presents them as measurements of the rescue variants."""
    from resnet_core.reference import list_sets

    monkeypatch.setenv("RESNET_LAB_REFERENCE_DIR", str(ROOT / "reference"))
    _fake_run(store, "cifar_plain8", 0.60, 0.62)
    _fake_run(store, "cifar_resnet8", 0.20, 0.25)
    at = _app(store.root, monkeypatch)
    assert not at.exception, at.exception
    text = _text(at)
    rescue_sets = [
        s
        for s in list_sets(ROOT / "reference")
        if any(r.get("name", "").startswith("rescue: ") for r in s.meta["runs"])
    ]
    for s in list_sets(ROOT / "reference"):
        assert (f"**{s.title}**" in text) == (s in rescue_sets), s.name
    assert ("Measured: bundled reference runs" in [h.value for h in at.header]) == bool(rescue_sets)
    assert "No finished runs of the `rescue` variants in the store" in text  # the pair is not one
    assert "a gap of **40.0 points**" not in text


def _final_train_eval(path) -> float | None:
    import json

    rows = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines() if x.strip()]
    ev = [r["error"] for r in rows if r.get("split") == "train_eval" and r.get("error") is not None]
    return ev[-1] if ev else None


def test_the_bundled_rescue_sets_page_says_what_their_records_show(store, monkeypatch):
    """Every bundled set of `rescue` runs, read from its raw records with this test's own
    arithmetic: the page gives each variant's final training error and the share of the
    plain-to-residual gap it closes, (plain - variant) / (plain - residual), and names each
    diverged run."""
    import json

    from resnet_core.reference import list_sets

    sets = [
        s
        for s in list_sets(ROOT / "reference")
        if any(str(r.get("name", "")).startswith("rescue: ") for r in s.meta.get("runs", []))
    ]
    if not sets:
        pytest.skip("no rescue reference set bundled")
    monkeypatch.setenv("RESNET_LAB_REFERENCE_DIR", str(ROOT / "reference"))
    at = _app(store.root, monkeypatch)
    assert not at.exception, at.exception
    text = _text(at)
    for s in sets:
        assert f"**{s.title}**" in text
        by = {}  # (depth, variant) -> [final training error of each finished seed]
        diverged = []
        for rid in s.run_ids():
            cfg = json.loads((s.path / rid / "config.json").read_text())
            status = json.loads((s.path / rid / "status.json").read_text())
            state = status["state"]
            variant = cfg["name"].split(": ", 2)[-1]
            depth = int("".join(c for c in cfg["model"] if c.isdigit()))
            if state == "diverged":  # the step and lr its own status names, seed by seed
                what = status["message"][len("diverged: ") :].split(";")[0]
                diverged.append((variant, f"seed {cfg['seed']}: {what}"))
            else:
                by.setdefault((depth, variant), []).append(100 * _final_train_eval(s.path / rid))
        for (depth, variant), errs in by.items():
            plain, res = by.get((depth, "plain, He + BN")), by.get((depth, "resnet, He + BN"))
            if variant in ("plain, He + BN", "resnet, He + BN") or not (plain and res):
                continue
            p, r, v = (sum(x) / len(x) for x in (plain, res, errs))
            closed = (p - v) / (p - r)
            assert f"**{variant}** (" in text and f"{v:.1f}%" in text, variant
            assert f"{100 * closed:.0f}%" in text, (variant, closed)
        for variant, said in diverged:
            assert f"**{variant}** (" in text and said in text, said


def test_a_resumed_run_is_timed_over_all_its_sittings():
    """BENCHMARKS' s/step and `reference export`'s train_seconds: the trainer's clock restarts
    when a run is resumed, so the wall time is the sum of each sitting's last clock reading;
    without clock rows, the status's span."""
    from resnet_core.store import run_wall_s

    rows = [
        {"split": "train", "step": 10 * i, "time": t} for i, t in enumerate([10.0, 20.0, 30.0, 5.0, 15.0])
    ]
    rows.insert(2, {"split": "test", "step": 10, "time": 99.0})  # not a training row: not the clock
    assert run_wall_s(rows, {}) == 30.0 + 15.0
    assert run_wall_s([{"split": "test", "step": 1}], {"started": 100.0, "updated": 160.0}) == 60.0
    assert math.isnan(run_wall_s([], {}))


def test_curves_that_hide_each_other_are_named_per_panel():
    """Two variants whose mean curves stay within a point of each other at most steps are
    named, per panel: one line would hide the other. A curve far from both is not named."""
    import pandas as pd

    from app import rescue_view as rv

    def run(rid, split, errs):
        return [{"run_id": rid, "split": split, "step": 10 * (i + 1), "error": e} for i, e in enumerate(errs)]

    metrics = pd.DataFrame(
        run("a", "train", [0.90, 0.90, 0.90, 0.50])  # one step 40 points apart: the median is 0
        + run("b", "train", [0.905, 0.896, 0.90, 0.90])
        + run("c", "train", [0.60, 0.50, 0.40, 0.30])
        + run("a", "test", [0.9, 0.9, 0.9, 0.9])
        + run("b", "test", [0.8, 0.8, 0.8, 0.8])  # 10 points from a
        + run("c", "test", [0.3, 0.3, 0.3, 0.3])
    )
    table = pd.DataFrame(
        [
            {"variant": rv.PLAIN, "run_ids": ["a"], "n": 1},
            {"variant": "Fixup", "run_ids": ["b"], "n": 1},
            {"variant": "ReZero", "run_ids": ["c"], "n": 1},
        ]
    )
    assert rv.overlap_sentences(metrics, table) == [
        "In the training error (running) panel these lie within 1 point of each other at most steps "
        "(median distance), so one line may hide another: plain, He + BN and Fixup."
    ]
    assert rv.overlap_sentences(metrics, table, within=11.0)[1].endswith("plain, He + BN and Fixup.")


def test_a_set_where_only_some_seeds_did_not_train_names_those_seeds():
    """Fixup's seed 2 stayed at chance on the lesson budget while seeds 0 and 1 trained: the
    set's mean hides that, so the seeds whose training error never fell more than 5 points
    below their first evaluation's are named with their numbers, and where the others ended."""
    import pandas as pd

    from app import rescue_view as rv

    def evals(rid, errs):
        return [
            {"run_id": rid, "split": "train_eval", "step": 78 * (i + 1), "error": e}
            for i, e in enumerate(errs)
        ]

    metrics = pd.DataFrame(
        evals("s0", [0.80, 0.50, 0.40]) + evals("s1", [0.82, 0.45, 0.39]) + evals("s2", [0.906, 0.89, 0.90])
    )
    row = {**_row("Fixup", 56.3, n=3), "run_ids": ["s0", "s1", "s2"], "seeds": [0, 1, 2]}
    said = rv.stalled_sentences(pd.DataFrame([row]), metrics)
    assert said == [
        "**Fixup**: in 1 of its 3 seeds (seed 2) its training error never fell more than 5 points "
        "below its first evaluation's (90.0% at the end, 90.6% at step 78, lowest 89.0%); the others "
        "ended at 40.0% (seed 0), 39.0% (seed 1). The mean over seeds includes it."
    ]
    # without every run's seed known, the seeds are not named
    anon = rv.stalled_sentences(pd.DataFrame([{**row, "seeds": [0, 1]}]), metrics)
    assert anon[0].startswith("**Fixup**: in 1 of its 3 seeds its training error never")
    assert "(seed" not in anon[0]
    assert rv.stalled_sets(pd.DataFrame([{**row, "depth": 56}]), metrics) == []  # not every seed


def test_a_set_of_seeds_lists_its_runs_in_seed_order():
    """The rescue page names a seed by its place in run_ids: they must follow the seeds."""
    import pandas as pd

    from app.runs_data import seed_groups

    runs = pd.DataFrame(
        [
            {
                "id": f"r{s}",
                "seed": s,
                "kind": "plain",
                "depth": 20,
                "model": "cifar_plain20",
                "state": "done",
                "dataset": "d",
                "width": 16,
                "shortcut": None,
                "norm": "batch",
                "color": "#000",
                "test_error": 0.5,
                "train_error": 0.4,
                "label": "plain20",
                "group": "one experiment",
            }
            for s in (2, 0, 1)
        ]
    )
    (g,) = [r for _, r in seed_groups(runs).iterrows()]
    assert g["seeds"] == [0, 1, 2] and g["run_ids"] == ["r0", "r1", "r2"]
