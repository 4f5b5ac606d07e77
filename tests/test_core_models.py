"""Models: names, shapes, parameter counts (paper / torchvision), taps, torchvision equivalence."""

import pytest
import torch
import torchvision
from torch import nn

from resnet_core.models import (
    ModelNameError,
    Tap,
    blocks_of,
    build_model,
    count_macs,
    count_params,
    list_models,
    parse_name,
    taps_of,
)

torch.set_num_threads(1)

# Exact counts of our option-A CIFAR nets; PAPER.md rounds them to 0.27M ... 19.4M.
CIFAR_PARAMS = {
    "resnet20": (269_722, 0.27e6),
    "resnet32": (464_154, 0.46e6),
    "resnet44": (658_586, 0.66e6),
    "resnet56": (853_018, 0.85e6),
    "resnet110": (1_727_962, 1.7e6),
    "resnet1202": (19_421_274, 19.4e6),
}
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


@pytest.mark.parametrize("name", list(CIFAR_PARAMS))
def test_cifar_param_counts_match_paper(name):
    exact, paper = CIFAR_PARAMS[name]
    n = count_params(build_model(name))
    assert n == exact
    assert abs(n - paper) / paper < 0.02  # the paper's table, to its rounding


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_plain_has_same_params_and_taps_as_residual(depth):
    plain, res = build_model(f"plain{depth}"), build_model(f"resnet{depth}")
    assert count_params(plain) == count_params(res)  # option A adds no parameters
    assert [n for n, _ in taps_of(plain)] == [n for n, _ in taps_of(res)]
    assert len(taps_of(res, "response")) == depth - 1  # every conv but none: 6n+1 convs, fc is the last layer
    assert not plain.residual and res.residual


@pytest.mark.parametrize("name,params", list(TORCHVISION_PARAMS.items()))
def test_imagenet_param_counts_match_torchvision(name, params):
    assert count_params(build_model(name)) == params


def test_imagenet_plain_nets_exist():
    p34, r34 = build_model("plain34"), build_model("resnet34")
    # projections where dimensions change are the only extra parameters of ResNet-34 (option B)
    extra = sum(p.numel() for n, p in r34.named_parameters() if "downsample" in n)
    assert count_params(p34) + extra == count_params(r34)
    assert count_params(build_model("plain18")) < count_params(build_model("resnet18"))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_weights_load_and_give_same_outputs(name):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, name)(weights=None)
    ours = build_model(name)
    ours.load_state_dict(tv.state_dict())  # strict: every name matches
    tv.eval(), ours.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), tv(x), atol=1e-5)


def test_macs_match_paper_table1():
    g = lambda name, **kw: count_macs(build_model(name, **kw)) / 1e9
    assert g("resnet18") == pytest.approx(1.8, abs=0.05)
    assert g("resnet34") == pytest.approx(3.6, abs=0.1)
    # the paper's stride placement (first 1x1) gives its 3.8 / 7.6 / 11.3 G
    assert g("resnet50", stride_on_1x1=True) == pytest.approx(3.8, abs=0.1)
    assert g("resnet101", stride_on_1x1=True) == pytest.approx(7.6, abs=0.1)
    # torchvision's placement (3x3) costs more, about 4.1 G for 50
    assert g("resnet50") == pytest.approx(4.1, abs=0.05)


@pytest.mark.parametrize(
    "name,in_ch,size,classes",
    [
        ("resnet20", 3, 32, 10),
        ("plain56", 3, 32, 10),
        ("cifar_preresnet14", 1, 16, 7),
        ("cifar_resnet50", 3, 8, 100),
    ],
)
def test_cifar_shapes(name, in_ch, size, classes):
    m = build_model(name, in_channels=in_ch, num_classes=classes)
    x = torch.randn(2, in_ch, size, size)
    feats = m.forward_features(x)
    assert feats.shape == (2, 64, size // 4, size // 4)
    emb = m.forward_head(feats, pre_logits=True)
    assert emb.shape == (2, 64)
    assert m(x).shape == (2, classes)


def test_imagenet_shape():
    m = build_model("resnet18", num_classes=5)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_names_resolve_to_the_right_family():
    assert parse_name("resnet50") == ("imagenet", "resnet", 50)
    assert parse_name("cifar_resnet50") == ("cifar", "resnet", 50)
    assert parse_name("resnet56") == ("cifar", "resnet", 56)
    assert parse_name("plain110") == ("cifar", "plain", 110)
    assert set(list_models()) >= {"resnet20", "resnet1202", "plain110", "resnet152", "plain34"}


@pytest.mark.parametrize(
    "bad", ["resnet21", "cifar_resnet21", "plain50", "resnet", "vgg16", "cifar_resnet2", "plain1202", ""]
)
def test_bad_names_list_accepted_forms(bad):
    with pytest.raises(ModelNameError) as e:
        build_model(bad)
    assert "6n+2" in str(e.value) and "resnet20" in str(e.value)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="shortcut"):
        build_model("resnet20", shortcut="D")
    with pytest.raises(ValueError, match="norm"):
        build_model("resnet20", norm="layer")
    with pytest.raises(ValueError, match="init"):
        build_model("resnet20", init="xavier")
    with pytest.raises(TypeError, match="unknown model option"):
        build_model("resnet20", dropout=0.5)


def test_shortcut_options_a_b_c():
    a, b, c = (build_model("resnet20", shortcut=s) for s in "ABC")
    pa, pb, pc = map(count_params, (a, b, c))
    assert pa < pb < pc  # A adds nothing; B projects twice (stage changes); C projects on all 9
    nb = sum(1 for _, blk in blocks_of(b) if isinstance(blk.downsample, nn.Sequential))
    nc = sum(1 for _, blk in blocks_of(c) if isinstance(blk.downsample, nn.Sequential))
    assert (nb, nc) == (2, 9)
    for m in (a, b, c):
        assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_no_shared_or_inplace_activations():
    m = build_model("resnet20")
    relus = [mod for mod in m.modules() if isinstance(mod, nn.ReLU)]
    assert len(relus) == len({id(r) for r in relus}) == 1 + 2 * 9
    assert not any(r.inplace for r in relus)


def test_taps_see_bn_output_and_residual_branch():
    torch.manual_seed(0)
    m = build_model("resnet20").eval()
    blk = m.layer2[1]
    seen = {}
    hs = [
        blk.tap2.register_forward_hook(lambda mod, i, o: seen.__setitem__("tap2", o)),
        blk.tap_f.register_forward_hook(lambda mod, i, o: seen.__setitem__("f", o)),
        blk.register_forward_hook(lambda mod, i, o: seen.__setitem__("out", o)),
        blk.register_forward_pre_hook(lambda mod, i: seen.__setitem__("x", i[0])),
    ]
    try:
        m(torch.randn(2, 3, 32, 32))
    finally:
        for h in hs:
            h.remove()
    assert torch.equal(seen["tap2"], seen["f"])
    assert torch.allclose(seen["out"], torch.relu(seen["f"] + seen["x"]))
    assert isinstance(blk.tap1, Tap) and blk.tap1.kind == "response"


def test_norm_none_and_torch_init():
    m = build_model("plain20", norm="none", init="torch")
    assert not any(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    he = build_model("plain20")
    # He init (fan_out) has a larger spread than PyTorch's default uniform init
    assert he.layer1[0].conv1.weight.std() > 1.5 * m.layer1[0].conv1.weight.std()
