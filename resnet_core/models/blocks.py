"""Building blocks shared by the CIFAR and ImageNet families.

Every block, plain or residual, carries the same named taps so the two compare layer by
layer:

- ``tap1``, ``tap2`` (``tap3``), kind ``"response"``: each main-path layer's response, the
  paper's Fig. 7 point: a conv's output after its norm layer (if the net has one), before the
  ReLU or the addition; in a pre-activation block, each norm layer's output before its ReLU.
  Not named after BN: the no-normalization variants (norm="none", Fixup, SkipInit, ReZero,
  TAT, delta-orthogonal) have the same points with nothing between conv and tap;
- ``tap_f``: the residual branch F(x) just before the addition (for a plain block, the branch
  output that has no shortcut to be added to);
- ``tap_out``: the block's output.

Taps are parameter-free ``nn.Identity`` subclasses, so state dicts match torchvision's and
forward hooks see every signal. Each activation is its own module and nothing is in-place.

The variants of ``variants.py`` plug in as options (:class:`BlockOptions`): ``act_layer``
(the activation class, e.g. CReLU, whose ``channel_mult`` widens the next conv's input),
``branch_scalar`` (SkipInit / ReZero's alpha), ``fixup`` (Fixup's scalar biases and
multiplier) and ``conv_bias``. With the defaults, the modules added are parameter-free
``nn.Identity``: names and state dicts are unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .variants import INITS, TANH_SIGMA_B2, Bias, Scale, activation_gain, delta_orthogonal_, mirror_


class Tap(nn.Identity):
    """A named observation point. ``kind`` tells analysis what the signal is."""

    def __init__(self, kind: str):
        super().__init__()
        # "response" (a conv's output after its norm layer if any, before the ReLU or the
        # addition: Fig. 7's point), "residual" (F(x)), "out" (block output). Records made
        # before the rename call the first "bn"; the store reads them as "response".
        self.kind = kind

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


def make_norm(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm={norm!r} is not accepted; use 'batch' or 'none'")


def conv3x3(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


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


def make_branch_scale(branch_scalar: str, fixup: bool) -> nn.Module:
    """The scalar that multiplies a residual branch: alpha = 0 (SkipInit, ReZero), Fixup's
    multiplier = 1, or none."""
    if fixup:
        return Scale(1.0)
    if branch_scalar in ("skipinit", "rezero"):
        return Scale(0.0)
    if branch_scalar != "none":
        raise ValueError(
            f"branch_scalar={branch_scalar!r} is not accepted; use 'none', 'skipinit' or 'rezero'"
        )
    return nn.Identity()


def fixup_bias(fixup: bool) -> nn.Module:
    return Bias() if fixup else nn.Identity()


@dataclass(frozen=True)
class BlockOptions:
    """What a block takes besides its sizes and shortcut; the defaults are the paper's block."""

    norm: str = "batch"  # "batch" (BN after each conv) or "none"
    stride_on_1x1: bool = False  # Bottleneck: the stride on the first 1x1 (the paper), not the 3x3
    act_layer: type = nn.ReLU  # the activation class; CReLU's channel_mult widens the next conv
    branch_scalar: str = "none"  # "skipinit" / "rezero": a scalar alpha (init 0) on the branch
    fixup: bool = False  # Fixup's scalar biases and branch multiplier (basic blocks only)
    conv_bias: bool = False  # biases on the convs (delta-orthogonal / TAT basic blocks only)


def norm_and_tap(norm: str, channels: int) -> tuple[nn.Module, Tap]:
    """A conv's norm layer and the tap on its output (Fig. 7's point), to be registered in
    that order: ``self.bn1, self.tap1 = norm_and_tap(...)``."""
    return make_norm(norm, channels), Tap("response")


class _Block(nn.Module):
    """What the three blocks share: the options, the sizes, and the modules after the branch's
    last conv (``_add_output``). Each block registers its branch first, in forward order, so
    the taps come in forward order and names and state dicts stay torchvision's."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, **options):
        super().__init__()
        self.options = BlockOptions(**options)
        self.in_planes, self.out_planes, self.stride = in_planes, planes * self.expansion, stride

    @property
    def residual(self) -> bool:
        return self.downsample is not None

    def _basic_only(self) -> None:
        o = self.options
        if o.fixup or o.conv_bias or getattr(o.act_layer, "channel_mult", 1) != 1:
            raise ValueError(
                f"{type(self).__name__} does not take fixup, conv_bias or a channel-doubling "
                "activation; those are for basic blocks"
            )

    def _add_output(self, downsample: nn.Module | None, act: str | None) -> None:
        """``tap_f``, the shortcut, the activation after the addition (the attribute ``act``;
        none in a pre-activation block; ReZero's residual blocks drop it: x + alpha F(x)),
        ``tap_out``."""
        self.tap_f = Tap("residual")
        self.downsample = downsample
        if act is not None:
            rezero = self.options.branch_scalar == "rezero" and downsample is not None
            setattr(self, act, nn.Identity() if rezero else self.options.act_layer())
        self.tap_out = Tap("out")

    def _add_shortcut(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return out if self.downsample is None else out + self.downsample(x)


class BasicBlock(_Block):
    """Two 3x3 convs. With ``shortcut=None`` it is the plain net's block.

    Fixup's scalar biases sit where its authors' code puts them (before each conv and the
    activation, and after the branch multiplier); the shortcut reads ``bias1a(x)`` as theirs.
    ReZero drops the activation after the addition (x + alpha F(x)); SkipInit keeps it.
    ``options``: see :class:`BlockOptions`.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str | None = "A", **options):
        super().__init__(in_planes, planes, stride, **options)
        o = self.options
        mult = getattr(o.act_layer, "channel_mult", 1)  # CReLU doubles what each conv reads
        self.bias1a = fixup_bias(o.fixup)
        self.conv1 = conv3x3(in_planes * mult, planes, stride, bias=o.conv_bias)
        self.bn1, self.tap1 = norm_and_tap(o.norm, planes)
        self.bias1b = fixup_bias(o.fixup)
        self.act1 = o.act_layer()
        self.bias2a = fixup_bias(o.fixup)
        self.conv2 = conv3x3(planes * mult, planes, bias=o.conv_bias)
        self.bn2, self.tap2 = norm_and_tap(o.norm, planes)
        self.scale = make_branch_scale(o.branch_scalar, o.fixup)
        self.bias2b = fixup_bias(o.fixup)
        self._add_output(make_shortcut(shortcut, in_planes, self.out_planes, stride, o.norm), "act2")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bias1a(x)
        out = self.act1(self.bias1b(self.tap1(self.bn1(self.conv1(x)))))
        out = self.conv2(self.bias2a(out))
        out = self.tap_f(self.bias2b(self.scale(self.tap2(self.bn2(out)))))
        return self.tap_out(self.act2(self._add_shortcut(out, x)))


class Bottleneck(_Block):
    """1x1 reduce, 3x3, 1x1 restore (4x). Stride on the 3x3 as torchvision ("v1.5") unless
    ``stride_on_1x1`` puts it on the first 1x1 as the paper does. ``options``: see
    :class:`BlockOptions`."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str | None = "B", **options):
        super().__init__(in_planes, planes, stride, **options)
        self._basic_only()
        o = self.options
        s1, s3 = (stride, 1) if o.stride_on_1x1 else (1, stride)
        self.conv1 = conv1x1(in_planes, planes, s1)
        self.bn1, self.tap1 = norm_and_tap(o.norm, planes)
        self.act1 = o.act_layer()
        self.conv2 = conv3x3(planes, planes, s3)
        self.bn2, self.tap2 = norm_and_tap(o.norm, planes)
        self.act2 = o.act_layer()
        self.conv3 = conv1x1(planes, self.out_planes)
        self.bn3, self.tap3 = norm_and_tap(o.norm, self.out_planes)
        self.scale = make_branch_scale(o.branch_scalar, False)
        self._add_output(make_shortcut(shortcut, in_planes, self.out_planes, stride, o.norm), "act3")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.tap1(self.bn1(self.conv1(x))))
        out = self.act2(self.tap2(self.bn2(self.conv2(out))))
        out = self.tap_f(self.scale(self.tap3(self.bn3(self.conv3(out)))))
        return self.tap_out(self.act3(self._add_shortcut(out, x)))


class PreActBlock(_Block):
    """Pre-activation basic block (He et al. 2016, "Identity Mappings"): BN-ReLU-conv twice,
    a clean identity path. ``tap1``/``tap2`` sit after each BN, before its ReLU. ``options``:
    see :class:`BlockOptions`."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str | None = "A", **options):
        super().__init__(in_planes, planes, stride, **options)
        self._basic_only()
        o = self.options
        self.bn1, self.tap1 = norm_and_tap(o.norm, in_planes)
        self.act1 = o.act_layer()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2, self.tap2 = norm_and_tap(o.norm, planes)
        self.act2 = o.act_layer()
        self.conv2 = conv3x3(planes, planes)
        # a pre-activation block has no activation after the addition: SkipInit = ReZero here
        self.scale = make_branch_scale(o.branch_scalar, False)
        self._add_output(self._shortcut(shortcut), None)

    def _shortcut(self, kind: str | None) -> nn.Module | None:
        # the projection variants of a pre-activation net take the raw input, no BN after
        changes = self.stride != 1 or self.in_planes != self.out_planes
        if kind in ("B", "C") and (kind == "C" or changes):
            return conv1x1(self.in_planes, self.out_planes, self.stride)
        return make_shortcut(kind, self.in_planes, self.out_planes, self.stride, self.options.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.act1(self.tap1(self.bn1(x))))
        out = self.tap_f(self.scale(self.conv2(self.act2(self.tap2(self.bn2(out))))))
        return self.tap_out(self._add_shortcut(out, x))


def init_weights(
    model: nn.Module, init: str, *, activation: str = "relu", zero_init_residual: bool = False
) -> None:
    """``he``: Kaiming normal (fan_out, ReLU) on convs as the paper and torchvision do; BN to
    (1, 0). ``torch``: leave PyTorch's default init. ``delta_orthogonal``, ``looks_linear``,
    ``fixup``: the variants of ``variants.py``. ``zero_init_residual`` then zeroes the gamma
    of each residual branch's last BN (Goyal et al. 2017)."""
    if init not in INITS:
        raise ValueError(f"init={init!r} is not accepted; use {', '.join(INITS)}")
    if init != "torch":
        gain = activation_gain(activation) if init == "delta_orthogonal" else None
        sigma_b = math.sqrt(TANH_SIGMA_B2) if activation == "tanh" else 0.0
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                if init == "delta_orthogonal":
                    delta_orthogonal_(m.weight, gain)
                else:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:  # Xiao et al.'s biases: N(0, sigma_b^2); 0 otherwise
                    nn.init.normal_(m.bias, 0.0, sigma_b) if sigma_b else nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    if init == "looks_linear":
        _looks_linear(model)
    elif init == "fixup":
        _fixup(model)
    if zero_init_residual:
        for _, b in blocks_of(model):
            last = b.bn3 if isinstance(b, Bottleneck) else getattr(b, "bn2", None)
            if b.residual and isinstance(last, nn.BatchNorm2d) and not isinstance(b, PreActBlock):
                nn.init.zeros_(last.weight)


@torch.no_grad()
def _looks_linear(model: nn.Module) -> None:
    """Mirror every layer that reads a CReLU: each block's convs and the classifier (the stem
    conv reads the image and keeps He init)."""
    for _, b in blocks_of(model):
        for conv in (b.conv1, b.conv2):
            mirror_(conv.weight)
    mirror_(model.fc.weight)
    nn.init.zeros_(model.fc.bias)


@torch.no_grad()
def _fixup(model: nn.Module) -> None:
    """Zhang et al. 2019, section 3: with L residual branches of m = 2 convs, the first conv
    of each branch keeps He init times L^(-1/(2m-2)), the last starts at 0, the classifier too."""
    branches = [b for _, b in blocks_of(model) if b.residual]
    scale = fixup_branch_scale(len(branches), m=2)
    for b in branches:
        b.conv1.weight.mul_(scale)
        nn.init.zeros_(b.conv2.weight)
    nn.init.zeros_(model.fc.weight)
    nn.init.zeros_(model.fc.bias)


def fixup_branch_scale(n_branches: int, m: int = 2) -> float:
    """L^(-1/(2m-2)) (Zhang, Dauphin and Ma 2019, Fixup rule 2)."""
    return n_branches ** (-1.0 / (2 * m - 2))


def blocks_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All blocks in forward order, with their qualified names."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (BasicBlock, Bottleneck, PreActBlock))]


def taps_of(model: nn.Module, kind: str | None = None) -> list[tuple[str, Tap]]:
    """All taps (optionally of one kind) in forward order, with their qualified names."""
    return [
        (n, m) for n, m in model.named_modules() if isinstance(m, Tap) and (kind is None or m.kind == kind)
    ]
