"""One network class for both families: a stem, stages of blocks, a pooled linear head.

Parameter names follow torchvision's ``ResNet`` (conv1, bn1, layer1.0.conv1, ...,
layer1.0.downsample.0, fc), so torchvision weights load as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import BasicBlock, PreActBlock, Tap, fixup_bias, init_weights, make_norm
from .variants import TATLeakyReLU, act_layer_for, tat_negative_slope


class ResNet(nn.Module):
    def __init__(
        self,
        block: type,
        layers: list[int],
        widths: list[int],
        *,
        stem: str,
        shortcut: str | None,
        num_classes: int = 10,
        in_channels: int = 3,
        norm: str = "batch",
        init: str = "he",
        stride_on_1x1: bool = False,
        stem_width: int | None = None,
        activation: str = "relu",
        branch_scalar: str = "none",
        zero_init_residual: bool = False,
        tat_target: float | None = None,
    ):
        super().__init__()
        stem_width = stem_width or widths[0]
        act_layer = act_layer_for(activation)
        mult = getattr(act_layer, "channel_mult", 1)
        fixup = init == "fixup"
        # Xiao et al.'s and TAT's nets have conv biases in place of BN's shift (basic blocks)
        conv_bias = init == "delta_orthogonal" and norm == "none" and block is BasicBlock
        self.activation = activation
        self.family = stem  # "cifar" or "imagenet"
        self.residual = shortcut is not None
        self.preact = block is PreActBlock
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, stem_width, 3, 1, 1, bias=conv_bias)
        else:
            self.conv1 = nn.Conv2d(in_channels, stem_width, 7, 2, 3, bias=conv_bias)
        # a pre-activation net's first block normalizes its own input
        self.bn1 = nn.Identity() if self.preact else make_norm(norm, stem_width)
        self.tap1 = Tap("response")
        self.stem_bias = fixup_bias(fixup)  # Fixup: relu(conv1(x) + bias)
        self.act1 = nn.Identity() if self.preact else act_layer()
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()
        in_planes = stem_width
        for i, (n, w) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                b = block(
                    in_planes,
                    w,
                    stride if j == 0 else 1,
                    shortcut=shortcut,
                    norm=norm,
                    stride_on_1x1=stride_on_1x1,
                    act_layer=act_layer,
                    branch_scalar=branch_scalar,
                    fixup=fixup,
                    conv_bias=conv_bias,
                )
                blocks.append(b)
                in_planes = b.out_planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages = len(layers)
        self.final_bn = make_norm(norm, in_planes) if self.preact else nn.Identity()
        self.final_act = act_layer() if self.preact else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = in_planes * mult  # CReLU: the pooled features are doubled too
        self.head_bias = fixup_bias(fixup)  # Fixup: fc(x + bias)
        self.fc = nn.Linear(self.num_features, num_classes)
        if activation == "tat":
            self._tailor_leaky_relus(tat_target)
        init_weights(self, init, activation=activation, zero_init_residual=zero_init_residual)

    def _tailor_leaky_relus(self, target: float | None) -> None:
        """TAT (Zhang et al. 2022): one slope for every leaky ReLU, chosen from how many there
        are along the chain (the plain net's depth in nonlinear layers)."""
        acts = [m for m in self.modules() if isinstance(m, TATLeakyReLU)]
        slope = tat_negative_slope(len(acts), *([target] if target is not None else []))
        for m in acts:
            m.negative_slope = slope
        self.tat_layers, self.tat_slope = len(acts), slope

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Input to the last stage's feature map (before pooling)."""
        x = self.maxpool(self.act1(self.stem_bias(self.tap1(self.bn1(self.conv1(x))))))
        for stage in self.stages():
            x = stage(x)
        return self.final_act(self.final_bn(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool and classify; ``pre_logits=True`` returns the penultimate embedding."""
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(self.head_bias(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
