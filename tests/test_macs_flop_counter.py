"""``count_macs`` (forward hooks on convolutions and linear layers) against PyTorch's own
``torch.utils.flop_counter.FlopCounterMode``, which counts every aten op that runs and reports
two FLOPs per multiply-add."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from resnet_core.models import build_model, count_macs


def _flop_counter_macs(model, size: int) -> tuple[int, dict]:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 3, size, size))
    ops = {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}
    return fc.get_total_flops() // 2, ops


@pytest.mark.parametrize(
    "name, kw, size",
    [
        ("resnet20", {}, 32),  # CIFAR, option-A shortcuts (padding, no FLOPs)
        ("plain20", {}, 32),  # the plain net: the same convolutions, no shortcuts
        ("resnet20", {"shortcut": "B"}, 32),  # 1x1 projection shortcuts add convolutions
        ("resnet18", {}, 224),  # ImageNet, basic blocks
        ("resnet50", {"stride_on_1x1": True}, 224),  # bottlenecks, the paper's stride placement
    ],
)
def test_count_macs_matches_flop_counter(name, kw, size):
    torch.manual_seed(0)
    model = build_model(name, **kw)
    ours = count_macs(model, size)
    theirs, ops = _flop_counter_macs(model, size)
    # only convolutions and the classifier's matrix product carry FLOPs in these nets
    assert set(ops) <= {"aten.convolution", "aten.addmm", "aten.mm"}, ops
    assert ours == theirs, (name, kw, ours, theirs)
