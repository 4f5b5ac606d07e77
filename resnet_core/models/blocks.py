"""Building blocks shared by the CIFAR and ImageNet families.

Every block, plain or residual, carries the same named taps so the two compare layer by
layer:

- ``tap1``, ``tap2`` (``tap3``): each conv's normalized output, after BN and before the ReLU
  or the addition -- the points of the paper's Fig. 7;
- ``tap_f``: the residual branch F(x) just before the addition (for a plain block, the branch
  output that has no shortcut to be added to);
- ``tap_out``: the block's output.

Taps are parameter-free ``nn.Identity`` subclasses, so state dicts match torchvision's and
forward hooks see every signal. Each activation is its own module and nothing is in-place.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Tap(nn.Identity):
    """A named observation point. ``kind`` tells analysis what the signal is."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind  # "bn" (normalized conv output), "residual" (F(x)), "out" (block output)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


def make_norm(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm={norm!r} is not accepted; use 'batch' or 'none'")


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class ShortcutA(nn.Module):
    """Option A: identity, subsampled by ``stride``, extra channels zero-padded. No parameters.

    Also used by lesion studies to stand in for a removed downsampling block.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.in_planes, self.out_planes, self.stride = in_planes, out_planes, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_planes - self.in_planes
        if extra > 0:
            # pad channels evenly on both sides, as the common CIFAR reproductions do
            x = F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_planes}->{self.out_planes}, stride={self.stride}"


def make_shortcut(kind: str | None, in_planes: int, out_planes: int, stride: int, norm: str):
    """Return the shortcut module, or None for a plain block.

    ``kind``: None (plain), "A", "B" or "C" (paper section 3.3).
    """
    if kind is None:
        return None
    changes = stride != 1 or in_planes != out_planes
    if kind == "A":
        return ShortcutA(in_planes, out_planes, stride) if changes else nn.Identity()
    if kind == "B":
        if not changes:
            return nn.Identity()
    elif kind != "C":
        raise ValueError(f"shortcut={kind!r} is not accepted; use 'A', 'B' or 'C'")
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), make_norm(norm, out_planes))


class BasicBlock(nn.Module):
    """Two 3x3 convs. With ``shortcut=None`` it is the plain net's block."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str | None = "A",
                 norm: str = "batch", stride_on_1x1: bool = False):
        super().__init__()
        out_planes = planes * self.expansion
        self.in_planes, self.out_planes, self.stride = in_planes, out_planes, stride
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = make_norm(norm, planes)
        self.tap1 = Tap("bn")
        self.act1 = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = make_norm(norm, planes)
        self.tap2 = Tap("bn")
        self.tap_f = Tap("residual")
        self.downsample = make_shortcut(shortcut, in_planes, out_planes, stride, norm)
        self.act2 = nn.ReLU()
        self.tap_out = Tap("out")

    @property
    def residual(self) -> bool:
        return self.downsample is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.tap1(self.bn1(self.conv1(x))))
        out = self.tap_f(self.tap2(self.bn2(self.conv2(out))))
        if self.downsample is not None:
            out = out + self.downsample(x)
        return self.tap_out(self.act2(out))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 restore (4x). Stride on the 3x3 as torchvision ("v1.5") unless
    ``stride_on_1x1`` puts it on the first 1x1 as the paper does."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str | None = "B",
                 norm: str = "batch", stride_on_1x1: bool = False):
        super().__init__()
        out_planes = planes * self.expansion
        self.in_planes, self.out_planes, self.stride = in_planes, out_planes, stride
        s1, s3 = (stride, 1) if stride_on_1x1 else (1, stride)
        self.conv1 = conv1x1(in_planes, planes, s1)
        self.bn1 = make_norm(norm, planes)
        self.tap1 = Tap("bn")
        self.act1 = nn.ReLU()
        self.conv2 = conv3x3(planes, planes, s3)
        self.bn2 = make_norm(norm, planes)
        self.tap2 = Tap("bn")
        self.act2 = nn.ReLU()
        self.conv3 = conv1x1(planes, out_planes)
        self.bn3 = make_norm(norm, out_planes)
        self.tap3 = Tap("bn")
        self.tap_f = Tap("residual")
        self.downsample = make_shortcut(shortcut, in_planes, out_planes, stride, norm)
        self.act3 = nn.ReLU()
        self.tap_out = Tap("out")

    @property
    def residual(self) -> bool:
        return self.downsample is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.tap1(self.bn1(self.conv1(x))))
        out = self.act2(self.tap2(self.bn2(self.conv2(out))))
        out = self.tap_f(self.tap3(self.bn3(self.conv3(out))))
        if self.downsample is not None:
            out = out + self.downsample(x)
        return self.tap_out(self.act3(out))


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016, "Identity Mappings"): BN-ReLU-conv twice,
    a clean identity path. ``tap1``/``tap2`` sit after each BN, before its ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str | None = "A",
                 norm: str = "batch", stride_on_1x1: bool = False):
        super().__init__()
        out_planes = planes * self.expansion
        self.in_planes, self.out_planes, self.stride = in_planes, out_planes, stride
        self.bn1 = make_norm(norm, in_planes)
        self.tap1 = Tap("bn")
        self.act1 = nn.ReLU()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = make_norm(norm, planes)
        self.tap2 = Tap("bn")
        self.act2 = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.tap_f = Tap("residual")
        # the projection variants of a pre-activation net take the raw input, no BN after
        if shortcut in ("B", "C") and (shortcut == "C" or stride != 1 or in_planes != out_planes):
            self.downsample = conv1x1(in_planes, out_planes, stride)
        else:
            self.downsample = make_shortcut(shortcut, in_planes, out_planes, stride, norm)
        self.tap_out = Tap("out")

    @property
    def residual(self) -> bool:
        return self.downsample is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.act1(self.tap1(self.bn1(x))))
        out = self.tap_f(self.conv2(self.act2(self.tap2(self.bn2(out)))))
        if self.downsample is not None:
            out = out + self.downsample(x)
        return self.tap_out(out)


def init_weights(model: nn.Module, init: str) -> None:
    """``he``: Kaiming normal (fan_out, ReLU) on convs as the paper and torchvision do; BN to
    (1, 0). ``torch``: leave PyTorch's default init."""
    if init == "torch":
        return
    if init != "he":
        raise ValueError(f"init={init!r} is not accepted; use 'he' or 'torch'")
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def blocks_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All blocks in forward order, with their qualified names."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (BasicBlock, Bottleneck, PreActBlock))]


def taps_of(model: nn.Module, kind: str | None = None) -> list[tuple[str, Tap]]:
    """All taps (optionally of one kind) in forward order, with their qualified names."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, Tap) and (kind is None or m.kind == kind)]
