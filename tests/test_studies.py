"""The studies against independent computations written here from each paper's definition
(plain torch: the layers' own weights through torch.nn.functional, hooks, finite loops),
never by calling the function under test twice. Tiny nets, no training: seconds on a CPU."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_core.models import BasicBlock, PreActBlock, ShortcutA, blocks_of, build_model

torch.set_num_threads(1)


# --- plain-torch re-implementations of the blocks --------------------------------------------
def _bn(m, x, train):
    if isinstance(m, nn.Identity):
        return x
    if train:  # batch statistics, biased variance, as BN's train mode
        return F.batch_norm(x, None, None, m.weight, m.bias, True, 0.0, m.eps)
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


def _conv(m, x):
    return F.conv2d(x, m.weight, None, m.stride, m.padding)


def _shortcut(sc, x, train):
    if isinstance(sc, nn.Identity):
        return x
    if isinstance(sc, ShortcutA):
        x = x[:, :, :: sc.stride, :: sc.stride]
        extra = sc.out_planes - sc.in_planes
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))
    if isinstance(sc, nn.Conv2d):
        return _conv(sc, x)
    return _bn(sc[1], _conv(sc[0], x), train)


def _block_points(b, x, train):
    """(the signal-propagation point, the residual branch F(x)) of block ``b`` on input x."""
    if isinstance(b, PreActBlock):
        h = _conv(b.conv1, F.relu(_bn(b.bn1, x, train)))
        f = _conv(b.conv2, F.relu(_bn(b.bn2, h, train)))
    else:
        assert isinstance(b, BasicBlock)
        f = _bn(b.bn2, _conv(b.conv2, F.relu(_bn(b.bn1, _conv(b.conv1, x), train))), train)
    if b.downsample is None:
        return f, f
    return f + _shortcut(b.downsample, x, train), f


def _chan(t):
    """Brock et al.: average over channels of the squared channel mean and channel variance."""
    t = t.double()
    return t.mean((0, 2, 3)).pow(2).mean().item(), t.var((0, 2, 3), unbiased=False).mean().item()


def _block_inputs(model, x):
    ins, hs = {}, []
    try:
        for n, b in blocks_of(model):
            hs.append(b.register_forward_pre_hook(lambda m, i, _n=n: ins.__setitem__(_n, i[0])))
        model(x)
    finally:
        for h in hs:
            h.remove()
    return ins


# --- signal propagation (Brock, De and Smith 2021) -----------------------------------------
@pytest.mark.parametrize("kind", ["plain", "resnet", "preresnet"])
@pytest.mark.parametrize("norm", ["batch", "none"])
def test_signal_propagation_plots_equal_a_direct_computation(kind, norm):
    from analysis.studies.signal import block_signal, conv_gradients, fresh_net, noise_batch

    model = fresh_net(kind, 14, norm, width=4, seed=1)
    x, y = noise_batch(model, 16, 8, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spp = block_signal(model, x)
    grads = conv_gradients(model, x, y)
    # nothing changed: BN statistics, parameters, .grad
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())

    with torch.no_grad():
        ins = _block_inputs(model.train(), x)
    want = []
    for n, b in blocks_of(model):
        s, f = _block_points(b, ins[n], train=True)
        sq, var = _chan(s)
        want.append((n, sq, var, _chan(f)[1] if b.downsample is not None else np.nan))
    got = spp[["block", "sq_mean", "var", "res_var"]].to_records(index=False).tolist()
    assert [w[0] for w in want] == [g[0] for g in got]
    np.testing.assert_allclose([g[1:] for g in got], [w[1:] for w in want], rtol=1e-4, atol=1e-9)

    m = fresh_net(kind, 14, norm, width=4, seed=1).train()
    F.cross_entropy(m(x), y).backward()
    convs = [(n, c) for n, c in m.named_modules() if isinstance(c, nn.Conv2d) and "downsample" not in n]
    assert list(grads["layer"]) == [n for n, _ in convs]
    np.testing.assert_allclose(grads["grad_norm"], [c.weight.grad.norm().item() for _, c in convs], rtol=1e-4)


def test_signal_propagation_shows_what_brock_et_al_describe():
    from analysis.studies.signal import grad_ratio, signal_propagation, signal_propagation_plot

    kw = dict(width=4, batch=32, image_size=8, seeds=(0,))
    # no BN: the residual stream's variance grows block after block
    r = signal_propagation_plot("resnet", 56, "none", **kw)
    assert r["var"].iloc[-1] > 1e3 * r["var"].iloc[0]
    # BN: the variance grows only about linearly with the number of blocks
    b = signal_propagation_plot("resnet", 56, "batch", **kw)
    assert 2 < b["var"].iloc[-1] / b["var"].iloc[0] < 100
    assert np.allclose(b["res_var"], 1.0, atol=0.02)  # F(x) ends in a BN: variance 1
    # plain + BN: the measured point is a BN output, variance 1 by construction
    p = signal_propagation_plot("plain", 20, "batch", **kw)
    assert np.allclose(p["var"], 1.0, atol=1e-3) and p["res_var"].isna().all()
    # ... and its gradients grow toward the input far more than a residual net's
    ratio = {k: grad_ratio(signal_propagation(k, 56, "batch", **kw)) for k in ("plain", "resnet")}
    assert ratio["plain"] > 30 * ratio["resnet"]


# --- gradient shattering (Balduzzi et al. 2017) -----------------------------------------------
def _acf(s, max_lag):
    """Autocorrelation and covariance by their definition, with loops."""
    n, mu = len(s), sum(s) / len(s)
    cov = [sum((s[i] - mu) * (s[i + k] - mu) for i in range(n - k)) / n for k in range(max_lag + 1)]
    return np.array(cov), np.array(cov) / cov[0]


class _DetachedBN:
    """Forward hooks that make every BN normalize with its batch statistics treated as
    constants: each point's gradient is then its own."""

    def __init__(self, model):
        self.model, self.hs = model, []

    def __enter__(self):
        def hook(m, inp, out):
            x = inp[0]
            dims = [0] + list(range(2, x.ndim))
            shape = [1, -1] + [1] * (x.ndim - 2)
            mu = x.mean(dims).detach().view(shape)
            var = x.var(dims, unbiased=False).detach().view(shape)
            return (x - mu) / torch.sqrt(var + m.eps) * m.weight.view(shape) + m.bias.view(shape)

        for m in self.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                self.hs.append(m.register_forward_hook(hook))
        return self

    def __exit__(self, *exc):
        for h in self.hs:
            h.remove()


def test_fc_shattering_equals_df_dx_and_its_autocorrelation_by_definition():
    from analysis.studies.shattering import autocorrelation, fc_gradients, fc_net, fc_shattering

    for kind in ("plain", "resnet"):
        net = fc_net(kind, 6, width=16, norm="batch", seed=2)
        xs, g = fc_gradients(net, 256)
        assert np.allclose(xs, np.linspace(-2, 2, 256), atol=1e-6)
        x = torch.linspace(-2, 2, 256).unsqueeze(1).requires_grad_(True)
        with _DetachedBN(net.train()):
            (want,) = torch.autograd.grad(net(x).sum(), x)
        w = want[:, 0].numpy()
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4 * np.abs(w).max())  # float32
        cov, rho = _acf(list(want[:, 0].double().numpy()), 5)
        a = autocorrelation(g, 4 / 255, 5)
        np.testing.assert_allclose(a["covariance"], cov, rtol=2e-3)
        np.testing.assert_allclose(a["autocorrelation"], rho, rtol=2e-3, atol=1e-4)
        assert a["distance"].iloc[1] == pytest.approx(4 / 255)
    # without BN, df/dx by finite differences (float64; a point next to a ReLU kink may differ)
    net = fc_net("plain", 4, width=16, norm="none", seed=0).double()
    xs, g = fc_gradients(net.float(), 256)
    net = net.double()
    h = 1e-6
    with torch.no_grad():
        xx = torch.tensor(xs).unsqueeze(1)
        fd = ((net(xx + h) - net(xx - h)) / (2 * h))[:, 0].numpy()
    assert np.mean(np.isclose(g, fd, rtol=1e-3, atol=1e-5)) > 0.95
    # their result: plain nets' gradients decorrelate with depth, residual ones far less
    s = fc_shattering(depths=(2, 24), width=64, seeds=(0, 1), max_lag=1)
    c = s[s["lag"] == 1].groupby(["kind", "depth"])["autocorrelation"].mean()
    assert c["plain", 2] > 0.8 and c["plain", 24] < 0.2
    assert c["resnet", 24] > c["plain", 24] + 0.2


def test_image_shattering_is_the_directional_derivative_of_one_logit():
    from analysis.studies.shattering import image_line, image_shattering

    torch.manual_seed(0)
    model = build_model("cifar_plain8", width=4)
    x0 = torch.randn(3, 8, 8)
    pts, d, t = image_line(x0, 32, 1.0, seed=3)
    assert d.pow(2).mean().item() == pytest.approx(1.0)
    assert torch.allclose(pts - x0, t[:, None, None, None] * d, atol=1e-6)
    for bn in ("batch", "eval"):
        got = image_shattering(model, x0, 3, 32, 1.0, seed=3, bn=bn, max_lag=6)
        x = pts.clone().requires_grad_(True)
        if bn == "batch":
            with _DetachedBN(model.train()):
                (gx,) = torch.autograd.grad(model(x)[:, 3].sum(), x)
        else:
            (gx,) = torch.autograd.grad(model.eval()(x)[:, 3].sum(), x)
        s = (gx * d).flatten(1).sum(1).double().numpy()
        cov, rho = _acf(list(s), 6)
        np.testing.assert_allclose(got["covariance"], cov, rtol=1e-3)
        np.testing.assert_allclose(got["autocorrelation"], rho, rtol=1e-3, atol=1e-5)
        assert got["distance"].iloc[1] == pytest.approx(2 / 31)


def test_image_shattering_at_init_over_depth():
    from analysis.studies.shattering import at_lag, shattering_vs_depth

    rng = torch.get_rng_state()
    s = at_lag(
        shattering_vs_depth(depths=(8, 56), width=4, image_size=8, n_points=64, seeds=(0, 1), max_lag=2), 1
    )
    assert torch.equal(rng, torch.get_rng_state())
    c = {(k, d): m for k, d, m in zip(s.kind, s.depth, s["mean"])}
    assert c["plain", 56] < c["plain", 8] - 0.3  # plain nets shatter with depth
    assert c["resnet", 56] > c["plain", 56] + 0.2


# --- lesions (Veit et al. 2016) -------------------------------------------------------------
def _warm_bn(model, seed=0):
    """Give BN running statistics that are not the (0, 1) defaults, then eval mode."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, 3, 8, 8, generator=g))
    return model.eval()


def _lesioned_by_hook(model, name, x):
    """Logits with block ``name`` replaced, by a forward hook, by what the paper's deletion
    leaves: ReLU(shortcut(x)) (pre-activation: shortcut(x)) for a residual block, identity or
    subsample-and-pad for a plain one."""
    b = dict(model.named_modules())[name]

    def hook(m, inp, out):
        x = inp[0]
        if b.downsample is None:
            if b.stride == 1 and b.in_planes == b.out_planes:
                return x
            x = x[:, :, :: b.stride, :: b.stride]
            e = b.out_planes - b.in_planes
            return F.pad(x, (0, 0, 0, 0, e // 2, e - e // 2))
        s = _shortcut(b.downsample, x, train=False)
        return s if isinstance(b, PreActBlock) else F.relu(s)

    h = b.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model(x)
    finally:
        h.remove()


@pytest.mark.parametrize(
    "name,shortcut",
    [
        ("cifar_resnet14", "B"),
        ("cifar_resnet14", "C"),
        ("cifar_resnet14", "A"),
        ("cifar_preresnet14", "B"),
        ("cifar_plain14", None),
    ],
)
def test_a_deleted_block_leaves_its_shortcut_or_nothing(name, shortcut):
    from analysis.studies.lesion import deleted, lesion_each

    torch.manual_seed(0)
    model = _warm_bn(build_model(name, width=4, shortcut=shortcut))
    x = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = model(x).argmax(1)  # labels: the intact net is right on all of them
        y[::3] = (y[::3] + 1) % 10  # ... and wrong on a third
    table = lesion_each(model, x, y).set_index("block")
    for n, _block in blocks_of(model):
        want = _lesioned_by_hook(model, n, x)
        with deleted(model, [n]), torch.no_grad():
            got = model(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert table.loc[n, "error"] == pytest.approx((want.argmax(1) != y).float().mean().item())
    assert table["base_error"].iloc[0] == pytest.approx(len(y[::3]) / len(y))
    if shortcut in ("B", "C"):  # the projection is kept: its weights matter
        n = "layer2.0"
        with deleted(model, [n]), torch.no_grad():
            a = model(x)
            dict(model.named_modules())[n].shortcut[0].weight.mul_(2) if name.startswith(
                "cifar_res"
            ) else dict(model.named_modules())[n].shortcut.weight.mul_(2)
            b = model(x)
        assert not torch.allclose(a, b)


def test_random_lesions_equal_the_same_deletions_by_hooks():
    from analysis.studies.lesion import lesion_random, summarize_random

    torch.manual_seed(0)
    model = _warm_bn(build_model("cifar_resnet20", width=4))
    x = torch.randn(50, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (50,), generator=torch.Generator().manual_seed(2))
    r = lesion_random(model, x, y, ks=[1, 3, 5], samples=4, seed=7)
    assert list(r["k"]) == [1] * 4 + [3] * 4 + [5] * 4
    down = {n for n, b in blocks_of(model) if b.stride != 1 or b.in_planes != b.out_planes}
    for row in r.itertuples():
        names = row.blocks.split(",")
        assert len(set(names)) == row.k and not set(names) & down
        hs = []
        mods = dict(model.named_modules())
        try:
            for n in names:
                hs.append(
                    mods[n].register_forward_hook(lambda m, i, o: F.relu(i[0]))
                )  # identity shortcut: ReLU(x)
            with torch.no_grad():
                want = (model(x).argmax(1) != y).float().mean().item()
        finally:
            for h in hs:
                h.remove()
        assert row.error == pytest.approx(want)
    s = summarize_random(r).set_index("k")
    for k, g in r.groupby("k"):
        assert s.loc[k, "mean"] == pytest.approx(np.mean(g["error"]))
        assert s.loc[k, "std"] == pytest.approx(np.std(g["error"], ddof=1))


# --- loss landscapes (Li et al. 2018) -----------------------------------------------------------
def _count_minima(z):
    """Local minima (strictly below every existing 4-neighbour), the global one excluded."""
    z = np.atleast_2d(z)
    rows, cols = z.shape
    g = np.unravel_index(int(np.argmin(z)), z.shape)
    n = 0
    for i in range(rows):
        for j in range(cols):
            nb = [
                z[a, b]
                for a, b in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1))
                if 0 <= a < rows and 0 <= b < cols
            ]
            n += all(z[i, j] < v for v in nb) and (i, j) != g
    return n


def _grid(z):
    a = np.linspace(-1, 1, z.shape[0])
    return pd.DataFrame(
        [(a[i], a[j], z[i, j]) for i in range(len(a)) for j in range(len(a))],
        columns=["alpha", "beta", "loss"],
    )


def test_roughness_counts_every_local_minimum_but_the_global_one():
    from analysis.studies.landscape import local_minima, roughness

    a = np.linspace(-1, 1, 7)
    bowl = np.add.outer(a**2, a**2)
    assert local_minima(_grid(bowl)) == (0, 49) and roughness(_grid(bowl)) == 0
    # the global minimum on the edge, one local minimum inside: not a clean basin
    z = np.add.outer(np.arange(7.0), 0.01 * (a * 3) ** 2) + 5  # lowest at (0, 3), on the edge
    z[3, 3] = 6.0  # below its four neighbours (7, 9, 8.01, 8.01), above the global 5
    assert np.argmin(z) == 3 and _count_minima(z) == 1
    assert local_minima(_grid(z)) == (1, 49) and roughness(_grid(z)) == pytest.approx(1 / 49)
    rng = np.random.default_rng(0)
    for _ in range(5):
        z = rng.normal(size=(9, 9))
        assert local_minima(_grid(z)) == (_count_minima(z), 81)
    # 1-D slices: the same rule with two neighbours
    line = pd.DataFrame({"alpha": np.linspace(-1, 1, 9), "loss": [3, 1, 2, 0.5, 2, 1.5, 2, 2.5, 0.1]})
    assert local_minima(line) == (_count_minima(line["loss"].to_numpy()[None]), 9) == (3, 9)
