"""Model names -> builders. A plain dict registry, as torchvision's.

- The paper's CIFAR nets: ``resnet20/32/44/56/110/1202``, ``plain20/32/44/56/110``.
- The paper's ImageNet nets: ``resnet18/34/50/101/152``, ``plain18/34``.
- Any 6n+2 depth: ``cifar_resnet{D}``, ``cifar_plain{D}``, ``cifar_preresnet{D}``.
"""

from __future__ import annotations

import re

from torch import nn

from .blocks import BasicBlock, Bottleneck, PreActBlock
from .net import ResNet
from .variants import check_variant

CIFAR_RESNET_DEPTHS = (20, 32, 44, 56, 110, 1202)
CIFAR_PLAIN_DEPTHS = (20, 32, 44, 56, 110)
IMAGENET_LAYERS = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}
IMAGENET_PLAIN = (18, 34)

ACCEPTED_FORMS = (
    "resnet20/32/44/56/110/1202, plain20/32/44/56/110 (CIFAR, paper); "
    "resnet18/34/50/101/152, plain18/34 (ImageNet, paper); "
    "cifar_resnet{D}, cifar_plain{D}, cifar_preresnet{D} for any D = 6n+2 (8, 14, 20, ...)"
)


class ModelNameError(ValueError):
    pass


def _cifar(
    kind: str,
    depth: int,
    *,
    shortcut: str = "A",
    width: int = 16,
    num_classes: int = 10,
    in_channels: int = 3,
    norm: str = "batch",
    init: str = "he",
    **variant,
) -> ResNet:
    variant = _variant_options(variant)
    if (depth - 2) % 6 or depth < 8:
        raise ModelNameError(f"depth {depth} is not 6n+2 with n >= 1; accepted: {ACCEPTED_FORMS}")
    n = (depth - 2) // 6
    block = PreActBlock if kind == "preresnet" else BasicBlock
    _check_shortcut(shortcut)
    check_variant(kind, "cifar", _block_kind(block), norm=norm, init=init, **variant)
    return ResNet(
        block,
        [n] * 3,
        [width, 2 * width, 4 * width],
        stem="cifar",
        shortcut=None if kind == "plain" else shortcut,
        num_classes=num_classes,
        in_channels=in_channels,
        norm=norm,
        init=init,
        **variant,
    )


def _imagenet(
    kind: str,
    depth: int,
    *,
    shortcut: str = "B",
    width: int = 64,
    num_classes: int = 1000,
    in_channels: int = 3,
    norm: str = "batch",
    init: str = "he",
    stride_on_1x1: bool = False,
    **variant,
) -> ResNet:
    variant = _variant_options(variant)
    block, layers = IMAGENET_LAYERS[depth]
    _check_shortcut(shortcut)
    check_variant(kind, "imagenet", _block_kind(block), norm=norm, init=init, **variant)
    return ResNet(
        block,
        layers,
        [width, 2 * width, 4 * width, 8 * width],
        stem="imagenet",
        shortcut=None if kind == "plain" else shortcut,
        num_classes=num_classes,
        in_channels=in_channels,
        norm=norm,
        init=init,
        stride_on_1x1=stride_on_1x1,
        **variant,
    )


VARIANT_OPTIONS = ("activation", "branch_scalar", "zero_init_residual", "tat_target")


def _variant_options(options: dict) -> dict:
    """Split the variants' options (variants.py) from anything unknown, which is refused."""
    _reject_unused({k: v for k, v in options.items() if k not in VARIANT_OPTIONS})
    return {k: v for k, v in options.items() if k in VARIANT_OPTIONS}


def _block_kind(block: type) -> str:
    return {BasicBlock: "basic", Bottleneck: "bottleneck", PreActBlock: "preact"}[block]


def check_model_options(name: str, **options) -> None:
    """Raise ValueError (ModelNameError for a bad name) if ``name`` with these options is not a
    model the lab builds; the message names the option and what is accepted."""
    family, kind, depth = parse_name(name)
    options = {k: v for k, v in options.items() if v is not None}
    block = (
        (PreActBlock if kind == "preresnet" else BasicBlock)
        if family == "cifar"
        else IMAGENET_LAYERS[depth][0]
    )
    variant = _variant_options(
        {
            k: v
            for k, v in options.items()
            if k not in ("shortcut", "width", "num_classes", "in_channels", "norm", "init", "stride_on_1x1")
        }
    )
    check_variant(
        kind,
        family,
        _block_kind(block),
        norm=options.get("norm", "batch"),
        init=options.get("init", "he"),
        **variant,
    )


def _check_shortcut(s: str) -> None:
    if s not in ("A", "B", "C"):
        raise ValueError(f"shortcut={s!r} is not accepted; use 'A', 'B' or 'C'")


def _reject_unused(unused: dict) -> None:
    if unused:
        raise TypeError(
            f"unknown model option(s) {sorted(unused)}; accepted: shortcut, width, "
            "num_classes, in_channels, norm, init, activation, branch_scalar, "
            "zero_init_residual, tat_target (ImageNet nets: stride_on_1x1)"
        )


def parse_name(name: str) -> tuple[str, str, int]:
    """``name`` -> (family, kind, depth), e.g. "resnet56" -> ("cifar", "resnet", 56)."""
    if not isinstance(name, str):
        raise ModelNameError(f"model name must be a string; accepted: {ACCEPTED_FORMS}")
    m = re.fullmatch(r"cifar_(resnet|plain|preresnet)(\d+)", name)
    if m:
        depth = int(m.group(2))
        if depth < 8 or (depth - 2) % 6:
            raise ModelNameError(
                f"unknown model {name!r}: {depth} is not 6n+2 (8, 14, 20, 26, "
                f"...); accepted: {ACCEPTED_FORMS}"
            )
        return "cifar", m.group(1), depth
    m = re.fullmatch(r"(resnet|plain)(\d+)", name)
    if m:
        kind, depth = m.group(1), int(m.group(2))
        if kind == "resnet" and depth in CIFAR_RESNET_DEPTHS:
            return "cifar", kind, depth
        if kind == "plain" and depth in CIFAR_PLAIN_DEPTHS:
            return "cifar", kind, depth
        if depth in IMAGENET_LAYERS and (kind == "resnet" or depth in IMAGENET_PLAIN):
            return "imagenet", kind, depth
    raise ModelNameError(f"unknown model {name!r}; accepted: {ACCEPTED_FORMS}")


def build_model(name: str, **options) -> nn.Module:
    """Build a model by name. Options: shortcut ("A"/"B"/"C"), width, num_classes,
    in_channels, norm ("batch"/"none"), init ("he"/"torch"/"looks_linear"/"delta_orthogonal"/
    "fixup"), activation ("relu"/"tanh"/"tat"/"crelu"), branch_scalar ("none"/"skipinit"/
    "rezero"), zero_init_residual, tat_target (see variants.py); ImageNet nets also take
    stride_on_1x1 (True puts the bottleneck's stride on its first 1x1, as the paper)."""
    family, kind, depth = parse_name(name)
    options = {k: v for k, v in options.items() if v is not None}
    model = (_cifar if family == "cifar" else _imagenet)(kind, depth, **options)
    model.name = name
    return model


def list_models() -> list[str]:
    """The paper's named models (CIFAR first, then ImageNet)."""
    names = [f"resnet{d}" for d in CIFAR_RESNET_DEPTHS] + [f"plain{d}" for d in CIFAR_PLAIN_DEPTHS]
    names += [f"resnet{d}" for d in IMAGENET_LAYERS] + [f"plain{d}" for d in IMAGENET_PLAIN]
    return names


def model_depth(name: str) -> int:
    return parse_name(name)[2]


def is_residual(name: str) -> bool:
    return parse_name(name)[1] != "plain"


def variant_listing() -> list[str]:
    """The variants' options, for ``python -m resnet_core models``, with the parameter counts
    CReLU's doubled conv inputs cost at equal width."""
    from .summary import count_params

    base = count_params(build_model("plain56"))
    crelu = count_params(build_model("plain56", activation="crelu", init="looks_linear"))
    return [
        "variants (flags; see README, Models):",
        "  --activation relu|tanh|tat|crelu    tat, crelu: CIFAR plain nets",
        "  --init he|torch|looks_linear|delta_orthogonal|fixup",
        "      looks_linear: with --activation crelu (Balduzzi et al. 2017)",
        "      delta_orthogonal: with --activation tanh --norm none, Xiao et al. 2018's setting "
        "(relu is offered too: it cannot reach dynamical isometry)",
        "      fixup: resnets with --norm none (Zhang, Dauphin and Ma 2019)",
        "  --activation tat --init delta_orthogonal --norm none [--tat-target 0.9]   "
        "TAT (Zhang, Botev and Martens 2022)",
        "  --branch-scalar none|skipinit|rezero   resnets, with or without BN "
        "(De and Smith 2020; Bachlechner et al. 2020)",
        "  --zero-init-residual                resnets with BN (Goyal et al. 2017)",
        f"  CReLU holds the width: plain56 has {base:,} params, plain56 with CReLU {crelu:,} "
        f"({crelu / base:.2f}x)",
    ]
