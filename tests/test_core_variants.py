"""Variants from the follow-up literature (issue 15): each one's defining property at init,
computed here from its paper's formula, not by calling the code under test; the parameter
cost of CReLU; validation of their options; and a few training steps of each on digits."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate
from torch import nn

from resnet_core import RunStore, TrainConfig, train
from resnet_core.config import SWEEPS, ConfigError, sweep_runs
from resnet_core.models import blocks_of, build_model, count_params
from resnet_core.train import load_model

torch.set_num_threads(1)

XIAO_SIGMA_B2 = 2.01e-5  # Xiao et al. 2018's bias variance for tanh at criticality


def convs_of(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def gaussian_mean(fn, q):
    """E[fn(sqrt(q) z)], z ~ N(0, 1), by adaptive quadrature (not the code's Gauss-Hermite)."""
    f = lambda z: fn(math.sqrt(q) * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    return integrate.quad(f, -12, 12, limit=200)[0]


# --- delta-orthogonal (Xiao et al. 2018, Algorithm 2) --------------------------------------------
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_delta_orthogonal_centre_tap_is_orthogonal_and_the_rest_zero(activation):
    torch.manual_seed(0)
    model = build_model("plain20", activation=activation, init="delta_orthogonal", norm="none")
    gains = []
    for conv in convs_of(model):
        w = conv.weight.detach().double()
        cout, cin, k, _ = w.shape
        centre = w[:, :, k // 2, k // 2]
        off = w.clone()
        off[:, :, k // 2, k // 2] = 0
        assert off.abs().max() == 0  # every tap but the centre is zero
        gram = centre.T @ centre if cout >= cin else centre @ centre.T  # sigma_w^2 I
        g2 = gram.diagonal().mean()
        assert torch.allclose(gram, g2 * torch.eye(gram.shape[0], dtype=gram.dtype), atol=1e-5)
        gains.append(float(g2))
    assert np.allclose(gains, gains[0])
    if activation == "relu":
        assert gains[0] == pytest.approx(2.0, rel=1e-5)  # He's sigma_w^2 = 2
        return
    # tanh at criticality: iterate the length map q <- sigma_w^2 E[tanh^2] + sigma_b^2 to its
    # fixed point q*, then chi_1 = sigma_w^2 E[tanh'(sqrt(q*) z)^2] must be 1 (Xiao et al. eq. 2.5)
    sw2, q = gains[0], 1.0
    for _ in range(400):
        q = sw2 * gaussian_mean(lambda x: math.tanh(x) ** 2, q) + XIAO_SIGMA_B2
    chi = sw2 * gaussian_mean(lambda x: 1 / math.cosh(x) ** 4, q)
    assert chi == pytest.approx(1.0, abs=2e-3)
    assert sw2 == pytest.approx(1.05, abs=1e-3)  # the paper's sigma_w^2 at this sigma_b^2
    biases = torch.cat([c.bias.detach() for c in convs_of(model)])
    assert float(biases.pow(2).mean()) == pytest.approx(XIAO_SIGMA_B2, rel=0.3)  # 1,000+ draws


# --- looks-linear CReLU (Balduzzi et al. 2017, section 5) ----------------------------------------
@pytest.mark.parametrize("norm", ["batch", "none"])
def test_looks_linear_net_computes_an_affine_function_at_init(norm):
    torch.manual_seed(0)
    ll = build_model("plain20", activation="crelu", init="looks_linear", norm=norm, width=8).double().eval()
    he = build_model("plain20", activation="crelu", init="he", norm=norm, width=8).double().eval()
    x, y = torch.randn(3, 3, 8, 8, dtype=torch.float64), torch.randn(3, 3, 8, 8, dtype=torch.float64)
    zero = torch.zeros_like(x)

    def affine_gap(f):
        with torch.no_grad():
            f0 = f(zero)
            lin = lambda v: f(v) - f0
            scale = lin(x).abs().max()
            return max(
                float((lin(x + y) - lin(x) - lin(y)).abs().max() / scale),
                float((lin(-2.5 * x) + 2.5 * lin(x)).abs().max() / scale),
            )

    assert affine_gap(ll) < 1e-9
    assert affine_gap(he) > 1e-3  # CReLU without the mirrored weights is not linear
    for _, b in blocks_of(ll):  # each conv reading a CReLU is [W, -W]
        w = b.conv1.weight
        half = w.shape[1] // 2
        assert torch.equal(w[:, half:], -w[:, :half])


def test_crelu_holds_the_width_and_doubles_conv_inputs():
    base, crelu = build_model("plain56"), build_model("plain56", activation="crelu", init="looks_linear")
    assert [c.out_channels for c in convs_of(base)] == [c.out_channels for c in convs_of(crelu)]
    # each block conv and the classifier read twice the channels; the stem reads the image
    extra = sum(b.conv1.weight.numel() + b.conv2.weight.numel() for _, b in blocks_of(base))
    extra += base.fc.weight.numel()
    assert count_params(crelu) == count_params(base) + extra
    assert (count_params(base), count_params(crelu)) == (853_018, 1_701_530)


# --- SkipInit / ReZero / zero-init / Fixup: the net with every residual branch deleted -----------
def shortcut_a(x, out_planes, stride):
    """Option A, from the paper: subsample, zero-pad the extra channels (evenly, both sides)."""
    x = x[:, :, ::stride, ::stride]
    extra = out_planes - x.shape[1]
    return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2)) if extra else x


def branches_deleted(model, x, relu_after_add, stem_bias=0.0):
    """The CIFAR resnet with each block replaced by its shortcut (then the ReLU, if the block
    has one after the addition), written from the architecture, not the model's forward."""
    x = F.relu(model.bn1(model.conv1(x)) + stem_bias)
    for _, b in blocks_of(model):
        x = shortcut_a(x, b.out_planes, b.stride)
        x = F.relu(x) if relu_after_add else x
    return model.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize(
    "variant,norm",
    [
        ("skipinit", "none"),
        ("skipinit", "batch"),
        ("rezero", "none"),
        ("rezero", "batch"),
        ("zero_init", "batch"),
    ],
)
def test_branch_scalars_and_zero_init_start_as_the_net_without_branches(variant, norm):
    torch.manual_seed(0)
    opts = dict(zero_init_residual=True) if variant == "zero_init" else dict(branch_scalar=variant)
    model = build_model("resnet20", norm=norm, width=8, **opts).double()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    for mode in (True, False):  # training mode (batch statistics) and eval mode
        model.train(mode)
        with torch.no_grad():
            ref = branches_deleted(model, x, relu_after_add=variant != "rezero")
            assert torch.allclose(model(x), ref, atol=1e-12, rtol=0)
    model.train()
    if variant == "zero_init":
        assert all(float(b.bn2.weight.detach().abs().max()) == 0 for _, b in blocks_of(model))
        return
    alphas = [b.scale.weight for _, b in blocks_of(model)]
    assert len(alphas) == 9 and all(float(a.detach()) == 0 and a.requires_grad for a in alphas)
    F.cross_entropy(model(x), torch.arange(4) % 10).backward()
    assert any(float(a.grad.abs()) > 0 for a in alphas)  # alpha learns from step 1


def test_fixup_scales_branches_by_L_to_the_minus_one_over_2m_minus_2():
    torch.manual_seed(0)
    he = build_model("resnet20", norm="none", init="he").requires_grad_(False)
    torch.manual_seed(0)
    fx = build_model("resnet20", norm="none", init="fixup")  # same draws, then Fixup's rules
    fx.requires_grad_(False)
    pairs = list(zip(blocks_of(he), blocks_of(fx)))
    L, m = len(pairs), 2  # 9 residual branches of 2 convs each
    scale = L ** (-1 / (2 * m - 2))
    assert scale == pytest.approx(1 / 3)
    for (_, bh), (_, bf) in pairs:
        assert torch.allclose(bf.conv1.weight, bh.conv1.weight * scale, atol=0, rtol=1e-6)
        assert float(bf.conv2.weight.abs().max()) == 0  # the branch's last layer starts at 0
        assert float(bf.scale.weight) == 1.0  # the multiplier starts at 1
        for name in ("bias1a", "bias1b", "bias2a", "bias2b"):
            assert float(getattr(bf, name).bias) == 0.0
    assert float(fx.fc.weight.abs().max()) == 0 and float(fx.fc.bias.abs().max()) == 0
    # the scalar biases are learnable parameters: 4 per block, one in the stem and the head
    scalars = [n for n, p in fx.named_parameters() if p.ndim == 0 and n.endswith(".bias")]
    assert all(p.requires_grad for p in build_model("resnet20", norm="none", init="fixup").parameters())
    assert len(scalars) == 4 * L + 2
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        fx.fc.weight.normal_()  # make the head non-zero: the body is each block's shortcut
        assert torch.allclose(fx(x), branches_deleted(fx, x, True), atol=1e-6)


# --- TAT (Zhang, Botev and Martens 2022) ---------------------------------------------------------
def lrelu_cmap(c, a):
    """The scaled leaky ReLU's correlation map in the arc-cosine-kernel form (Cho and Saul
    2009): ((1-a)^2 (sqrt(1-c^2) + (pi - arccos c) c) / pi + 2 a c) / (1 + a^2)."""
    return ((1 - a) ** 2 * (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi + 2 * a * c) / (
        1 + a * a
    )


def tat_acts(model):
    return [m for m in model.modules() if type(m).__name__ == "TATLeakyReLU"]


@pytest.mark.parametrize("model_name,target", [("plain20", 0.9), ("plain56", 0.9), ("plain56", 0.5)])
def test_tat_slope_sends_zero_to_the_target_through_the_whole_chain(model_name, target):
    model = build_model(model_name, activation="tat", init="delta_orthogonal", norm="none", tat_target=target)
    acts = tat_acts(model)
    assert len(acts) == int(model_name[5:]) - 1  # every conv is followed by one, the fc is not
    a = acts[0].negative_slope
    assert all(m.negative_slope == a for m in acts) and 0 < a < 1
    c = 0.0
    for _ in acts:
        c = lrelu_cmap(c, a)
    assert c == pytest.approx(target, abs=1e-6)
    # the module is sqrt(2/(1+a^2)) * leaky_relu(x, a), and E[phi(z)^2] = 1
    z = torch.linspace(-4, 4, 81)
    assert torch.allclose(acts[0](z), math.sqrt(2 / (1 + a * a)) * torch.where(z > 0, z, a * z))
    assert gaussian_mean(lambda v: float(acts[0](torch.tensor(v))) ** 2, 1.0) == pytest.approx(1, abs=1e-6)


def test_tat_cmap_formula_matches_the_activation_it_describes():
    """E[phi(u) phi(v)] for unit Gaussians with correlation c, by 2-D quadrature on the
    model's own activation module, equals the map used above."""
    act = tat_acts(build_model("plain20", activation="tat", init="delta_orthogonal", norm="none"))[0]
    z, w = np.polynomial.hermite_e.hermegauss(120)
    w = w / w.sum()
    for c in (0.0, 0.4, 0.8):
        u = torch.tensor(np.repeat(z, len(z)))
        v = torch.tensor(c * np.repeat(z, len(z)) + math.sqrt(1 - c * c) * np.tile(z, len(z)))
        ww = torch.tensor(np.outer(w, w).ravel())
        est = float((act(u) * act(v) * ww).sum())
        assert est == pytest.approx(lrelu_cmap(c, act.negative_slope), abs=2e-3)


def test_tat_slope_equals_the_dks_packages():
    at = pytest.importorskip("dks.base.activation_transform")
    model = build_model("plain56", activation="tat", init="delta_orthogonal", norm="none")
    n = len(tat_acts(model))

    def whole_chain(x, r_fn):  # for a plain chain the worst subnetwork is the whole net
        for _ in range(n):
            x = r_fn(x)
        return x

    phi = at.get_transformed_activations(
        ["leaky_relu"], method="TAT", tat_params={"c_val_0_target": 0.9}, subnet_max_func=whole_chain
    )["leaky_relu"]
    a_dks = -phi(np.array(-1.0)) / phi(np.array(1.0))
    assert tat_acts(model)[0].negative_slope == pytest.approx(float(a_dks), abs=1e-6)


# --- options: validation, the sweep --------------------------------------------------------------
@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(activation="gelu"), "activation='gelu' is not accepted; accepted: relu, tanh, tat, crelu"),
        (dict(init="lsuv"), "init='lsuv' is not accepted; accepted: he, torch, looks_linear"),
        (dict(branch_scalar="alpha"), "branch_scalar='alpha' is not accepted; accepted: none"),
        (dict(model="resnet20", activation="crelu"), "activation='crelu' is for CIFAR plain nets"),
        (dict(model="plain20", init="looks_linear"), "use it with activation='crelu'"),
        (dict(model="resnet20", init="fixup"), "init='fixup' is for .* norm='none'"),
        (dict(model="plain20", branch_scalar="rezero"), "a plain net has none"),
        (dict(model="resnet20", zero_init_residual=True, norm="none"), "zero_init_residual"),
        (dict(model="plain20", activation="tat", tat_target=1.0), "tat_target=1.0 .* in \\(0, 1\\)"),
        (dict(zero_init_residual="yes"), "zero_init_residual='yes' .* true or false"),
    ],
)
def test_bad_variant_options_are_refused_with_what_is_accepted(kw, match):
    base = dict(model="plain20", iterations=5)
    with pytest.raises(ConfigError, match=match) as e:
        TrainConfig(**{**base, **kw}).validate()
    assert e.value.field in ("activation", "init", "branch_scalar", "zero_init_residual", "tat_target")


def test_rescue_sweep_has_its_three_groups_and_seed_rule():
    runs0, runs1 = sweep_runs("rescue", 0), sweep_runs("rescue", 1)
    assert SWEEPS["rescue"]["preset"] == "lesson"
    assert len(runs0) == 14 and len(runs1) == 10  # plain110 runs only with seed 0
    groups = {r["name"].split(": ")[1] for r in runs0}
    assert groups == {"no shortcuts", "no normalisation", "zero-init"}
    for r in runs0:  # every run is a valid config
        TrainConfig(**{k: v for k, v in r.items()}, iterations=1).validate()
    assert sweep_runs("quick") == [{"model": m} for m in SWEEPS["quick"]["models"]]


# --- a few steps of each variant on digits --------------------------------------------------------
VARIANTS = {
    "looks-linear CReLU": dict(model="cifar_plain14", activation="crelu", init="looks_linear"),
    "delta-orthogonal tanh": dict(
        model="cifar_plain14", activation="tanh", init="delta_orthogonal", norm="none"
    ),
    "delta-orthogonal relu": dict(
        model="cifar_plain14", activation="relu", init="delta_orthogonal", norm="none"
    ),
    "TAT": dict(model="cifar_plain14", activation="tat", init="delta_orthogonal", norm="none"),
    "SkipInit": dict(model="cifar_resnet14", branch_scalar="skipinit", norm="none"),
    "ReZero + BN": dict(model="cifar_resnet14", branch_scalar="rezero"),
    "Fixup": dict(model="cifar_resnet14", init="fixup", norm="none"),
    "zero-init": dict(model="cifar_resnet14", zero_init_residual=True),
}
# The nets without BN sit near ln 10 for their first ~50 steps on digits at this size (100
# steps at lr 0.1 took TAT from 2.30 to 1.87, tanh to 1.43, Fixup and SkipInit only to about
# 2.27), so for them 25 steps check a finite loss and moved weights; the BN nets must descend.
WITH_BN = {"looks-linear CReLU", "ReZero + BN", "zero-init"}


@pytest.mark.parametrize("label", list(VARIANTS))
def test_each_variant_trains_a_few_steps_on_digits(tmp_path, label):
    cfg = TrainConfig(
        dataset="digits",
        width=8,
        batch_size=32,
        iterations=25,
        lr=0.02,
        warmup="none",
        log_every=5,
        eval_every=25,
        recorders=[],
        threads=1,
        train_eval_size=64,
        test_size=64,
        precision="fp32",
        **VARIANTS[label],
    )
    run = RunStore(tmp_path).create(cfg, state="running")
    st = train(cfg, run=run)
    assert st["state"] == "done", st
    losses = [r["loss"] for r in run.read_metrics() if r["split"] == "train"]
    assert len(losses) >= 5 and all(math.isfinite(v) for v in losses)
    assert max(losses) < 2 * losses[0]  # no blow-up
    if label in WITH_BN:
        assert min(losses[-2:]) < losses[0]
    torch.manual_seed(cfg.seed)  # train() seeds, then builds: the same draws give the init
    init = build_model(cfg.model, **cfg.model_options(), num_classes=10, in_channels=1)
    trained = load_model(run, "last")
    moved = [n for n, p in trained.named_parameters() if not torch.equal(p, init.state_dict()[n])]
    assert len(moved) > len(list(trained.parameters())) // 2
    saved = run.read_config()  # config.json records the variant
    for k, v in VARIANTS[label].items():
        assert getattr(saved, k) == v


# --- the command line ----------------------------------------------------------------------------
def cli(capsys, monkeypatch, tmp_path, *args):
    from resnet_core.__main__ import main

    monkeypatch.chdir(tmp_path)
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_dry_run_shows_the_rescue_runs_and_refuses_what_they_set(tmp_path, capsys, monkeypatch):
    import json

    store = str(tmp_path / "store")
    code, out, err = cli(capsys, monkeypatch, tmp_path, "sweep", "rescue", "--dry-run", "--runs-dir", store)
    assert code == 0, err
    configs = [json.loads("{" + part) for part in out.split("\n{")[1:]] + [json.loads(out.split("\n{")[0])]
    assert len(configs) == 14
    assert {
        (c["model"], c["activation"], c["init"], c["norm"], c["branch_scalar"], c["zero_init_residual"])
        for c in configs
    } >= {
        ("plain56", "crelu", "looks_linear", "batch", "none", False),
        ("plain110", "tat", "delta_orthogonal", "none", "none", False),
        ("resnet56", "relu", "fixup", "none", "none", False),
        ("resnet56", "relu", "he", "batch", "none", True),
    }
    assert all(c["preset"] == "lesson" and c["name"].startswith("rescue: ") for c in configs)
    code, out, err = cli(
        capsys, monkeypatch, tmp_path, "sweep", "rescue", "--init", "he", "--runs-dir", store
    )
    assert code == 2 and err.strip() == "error: --init can't be used with sweep rescue: its runs set it"
    code, out, err = cli(
        capsys,
        monkeypatch,
        tmp_path,
        "train",
        "--model",
        "resnet20",
        "--activation",
        "crelu",
        "--dataset",
        "digits",
        "--iterations",
        "1",
        "--runs-dir",
        store,
    )
    assert code == 2 and "activation='crelu' is for CIFAR plain nets" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())


def test_models_listing_names_the_variants_and_crelus_cost():
    # `python -m resnet_core models` prints these lines (tests/test_core_cli.py runs it)
    from resnet_core.models.registry import variant_listing

    out = "\n".join(variant_listing())
    for flag in (
        "--activation relu|tanh|tat|crelu",
        "looks_linear",
        "delta_orthogonal",
        "fixup",
        "--branch-scalar none|skipinit|rezero",
        "--zero-init-residual",
        "--tat-target",
    ):
        assert flag in out
    assert "plain56 has 853,018 params, plain56 with CReLU 1,701,530" in out
