"""resnet_core.inference: the one batched-evaluation loop and eval_mode, checked against plain
torch written here from the definitions (mean cross-entropy, top-1 error)."""

import torch
import torch.nn.functional as F
from torch import nn

from analysis.taps import eval_mode as taps_eval_mode
from resnet_core.inference import batched_logits, eval_mode, loss_and_error


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)
    )


def test_loss_and_error_match_one_full_batch_pass_in_eval_mode_and_restore_mixed_modes():
    net = _net()
    net.train()
    net[1].eval()  # mixed modes: must come back mixed
    x, y = torch.randn(23, 3, 8, 8), torch.randint(0, 5, (23,))
    stats = net[1].running_mean.clone()
    r = loss_and_error(net, x, y, batch=7)  # 7 does not divide 23: the last batch is short
    ref_net = _net()
    ref_net.load_state_dict(net.state_dict())
    ref_net.eval()
    with torch.no_grad():
        out = ref_net(x)
    assert r["n"] == 23
    assert abs(r["loss"] - F.cross_entropy(out, y).item()) < 1e-5
    assert r["error"] == int((out.argmax(1) != y).sum()) / 23
    assert torch.equal(net[1].running_mean, stats)  # eval mode: BN statistics untouched
    assert net.training and not net[1].training and net[0].training
    logits = torch.cat(batched_logits(net, x, batch=7))
    assert torch.allclose(logits, out, atol=1e-6)


def test_eval_mode_is_the_same_object_from_analysis_taps_and_restores_on_error():
    assert taps_eval_mode is eval_mode
    net = _net().train()
    try:
        with eval_mode(net):
            assert not any(m.training for m in net.modules())
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert all(m.training for m in net.modules())
