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

CIFAR_RESNET_DEPTHS = (20, 32, 44, 56, 110, 1202)
CIFAR_PLAIN_DEPTHS = (20, 32, 44, 56, 110)
IMAGENET_LAYERS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]),
                   50: (Bottleneck, [3, 4, 6, 3]), 101: (Bottleneck, [3, 4, 23, 3]),
                   152: (Bottleneck, [3, 8, 36, 3])}
IMAGENET_PLAIN = (18, 34)

ACCEPTED_FORMS = (
    "resnet20/32/44/56/110/1202, plain20/32/44/56/110 (CIFAR, paper); "
    "resnet18/34/50/101/152, plain18/34 (ImageNet, paper); "
    "cifar_resnet{D}, cifar_plain{D}, cifar_preresnet{D} for any D = 6n+2 (8, 14, 20, ...)"
)


class ModelNameError(ValueError):
    pass


def _cifar(kind: str, depth: int, *, shortcut: str = "A", width: int = 16, num_classes: int = 10,
           in_channels: int = 3, norm: str = "batch", init: str = "he", **unused) -> ResNet:
    _reject_unused(unused)
    if (depth - 2) % 6 or depth < 8:
        raise ModelNameError(f"depth {depth} is not 6n+2 with n >= 1; accepted: {ACCEPTED_FORMS}")
    n = (depth - 2) // 6
    block = PreActBlock if kind == "preresnet" else BasicBlock
    _check_shortcut(shortcut)
    return ResNet(block, [n] * 3, [width, 2 * width, 4 * width], stem="cifar",
                  shortcut=None if kind == "plain" else shortcut, num_classes=num_classes,
                  in_channels=in_channels, norm=norm, init=init)


def _imagenet(kind: str, depth: int, *, shortcut: str = "B", width: int = 64,
              num_classes: int = 1000, in_channels: int = 3, norm: str = "batch",
              init: str = "he", stride_on_1x1: bool = False, **unused) -> ResNet:
    _reject_unused(unused)
    block, layers = IMAGENET_LAYERS[depth]
    _check_shortcut(shortcut)
    return ResNet(block, layers, [width, 2 * width, 4 * width, 8 * width], stem="imagenet",
                  shortcut=None if kind == "plain" else shortcut, num_classes=num_classes,
                  in_channels=in_channels, norm=norm, init=init, stride_on_1x1=stride_on_1x1)


def _check_shortcut(s: str) -> None:
    if s not in ("A", "B", "C"):
        raise ValueError(f"shortcut={s!r} is not accepted; use 'A', 'B' or 'C'")


def _reject_unused(unused: dict) -> None:
    if unused:
        raise TypeError(f"unknown model option(s) {sorted(unused)}; accepted: shortcut, width, "
                        "num_classes, in_channels, norm, init (ImageNet nets: stride_on_1x1)")


def parse_name(name: str) -> tuple[str, str, int]:
    """``name`` -> (family, kind, depth), e.g. "resnet56" -> ("cifar", "resnet", 56)."""
    if not isinstance(name, str):
        raise ModelNameError(f"model name must be a string; accepted: {ACCEPTED_FORMS}")
    m = re.fullmatch(r"cifar_(resnet|plain|preresnet)(\d+)", name)
    if m:
        depth = int(m.group(2))
        if depth < 8 or (depth - 2) % 6:
            raise ModelNameError(f"unknown model {name!r}: {depth} is not 6n+2 (8, 14, 20, 26, "
                                 f"...); accepted: {ACCEPTED_FORMS}")
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
    in_channels, norm ("batch"/"none"), init ("he"/"torch"); ImageNet nets also take
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
