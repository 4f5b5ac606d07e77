"""The fast paths give the same training as the plain one: batch augmentation is the paper's
pad-crop-flip, channels_last (now on by default on CPU) and bf16 autocast follow the same
loss trend as fp32 NCHW, and the quick preset stays a valid, small budget."""

import pytest
import torch
import torch.nn.functional as F

from resnet_core import TrainConfig, train
from resnet_core.config import apply_preset
from resnet_core.data import augment_batch, normalize
from resnet_core.train import Callback, cpu_has_fast_bf16, resolve_channels_last, resolve_precision

torch.set_num_threads(1)


def reference_augment(x, kind, seed):
    """Per image, the textbook way: zero-pad by 1/8 of the side, crop at a random offset, flip
    half of them; random numbers drawn in the same order as augment_batch draws them."""
    g = torch.Generator().manual_seed(seed)
    b, c, h, w = x.shape
    pad = max(1, h // 8)
    off = torch.randint(0, 2 * pad + 1, (2, b), generator=g)
    flip = torch.rand(b, generator=g) < 0.5 if kind == "flip_crop" else torch.zeros(b, dtype=torch.bool)
    out = torch.empty_like(x)
    for i in range(b):
        p = F.pad(x[i], (pad, pad, pad, pad))
        crop = p[:, off[0, i] : off[0, i] + h, off[1, i] : off[1, i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


@pytest.mark.parametrize("kind", ["flip_crop", "crop"])
@pytest.mark.parametrize("shape", [(16, 3, 32, 32), (9, 1, 8, 8), (5, 3, 16, 16)])
def test_batch_augmentation_is_pad_crop_flip(kind, shape):
    x = torch.randint(0, 256, shape, dtype=torch.uint8)
    got = augment_batch(x, kind, torch.Generator().manual_seed(7))
    assert got.dtype == torch.uint8 and got.shape == x.shape
    assert torch.equal(got, reference_augment(x, kind, 7))
    again = augment_batch(x, kind, torch.Generator().manual_seed(7))
    assert torch.equal(got, again)  # a function of the generator's seed


def test_batch_augmentation_none_and_coverage():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    assert augment_batch(x, "none", torch.Generator()) is x
    got = augment_batch(x, "flip_crop", torch.Generator().manual_seed(0))
    # some crops are shifted (zeros come in from the padding), some flipped, none all zero
    assert (got == 0).flatten(1).any(1).float().mean() > 0.5
    assert all(got[i].any() for i in range(len(got)))


def test_normalize_matches_the_formula():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3])
    want = (x.float() / 255 - mean[:, None, None]) / std[:, None, None]
    assert torch.allclose(normalize(x, mean, std), want, atol=1e-6)


def test_hardware_detection_falls_back_cleanly():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_has_fast_bf16() else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_channels_last(None, cpu, "fp32") is True  # fp32 gains on CPU too
    assert resolve_channels_last(False, cpu, "bf16") is False  # an explicit choice wins


class Losses(Callback):
    needs_hooks = False

    def __init__(self):
        self.losses = []

    def on_after_backward(self, ctx):
        # the hook still sees gradients on every path
        assert all(p.grad is not None for p in ctx.model.parameters() if p.requires_grad)
        self.losses.append(float(ctx.loss.detach()))


def losses_of(**kw):
    cfg = TrainConfig(
        model="cifar_resnet8",
        width=8,
        dataset="digits",
        batch_size=64,
        iterations=60,
        lr=0.05,
        log_every=10,
        eval_every=60,
        recorders=[],
        train_eval_size=100,
        **kw,
    )
    cb = Losses()
    train(cfg, callbacks=[cb], threads=1)
    return torch.tensor(cb.losses)


def trend(losses):
    return losses[:10].mean().item(), losses[-10:].mean().item()


def test_channels_last_follows_the_same_loss_trend_as_nchw():
    a = losses_of(channels_last=False, precision="fp32")
    b = losses_of(channels_last=True, precision="fp32")
    assert torch.allclose(a[:3], b[:3], rtol=1e-4, atol=1e-5)  # same numbers up to rounding at first
    (a0, a1), (b0, b1) = trend(a), trend(b)
    assert a1 < 0.6 * a0 and b1 < 0.6 * b0
    assert abs(a1 - b1) < 0.15 * a1 + 0.05


def test_bf16_autocast_follows_the_same_loss_trend():
    a = losses_of(precision="fp32")
    b = losses_of(precision="bf16")  # runs (slowly) even where the CPU lacks fast bf16
    (a0, a1), (b0, b1) = trend(a), trend(b)
    assert abs(a0 - b0) < 0.05 * a0
    assert b1 < 0.6 * b0
    assert abs(a1 - b1) < 0.25 * a1 + 0.05


def test_channels_last_run_is_a_function_of_seed_and_step():
    a = losses_of(channels_last=True, precision="fp32")
    b = losses_of(channels_last=True, precision="fp32")
    assert torch.equal(a, b)


def test_quick_preset_is_a_small_valid_budget():
    for ds in ("x.npz", "digits"):
        for m in ("plain20", "plain56", "resnet20", "resnet56"):
            cfg = apply_preset("quick", {"model": m, "dataset": ds})
            assert cfg.preset == "quick"
            n = cfg.subset or 1438
            steps = (cfg.epochs or 0) * max(1, n // cfg.batch_size)
            assert 0 < steps <= 2000


def _has_cxx():
    import shutil

    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


@pytest.mark.skipif(not _has_cxx(), reason="torch.compile on CPU needs a C++ compiler")
def test_compile_trains_like_eager_and_keeps_the_default_recorder(store):
    """--compile used to be dropped silently whenever the default recorder was attached (every
    CLI and app run); the recorder probes the eager module, so both now work together."""
    import json

    from analysis.recorders import LayerStatsRecorder

    def run_with(compile):
        cfg = TrainConfig(
            model="cifar_resnet8",
            width=4,
            dataset="digits",
            batch_size=32,
            iterations=8,
            lr=0.05,
            log_every=2,
            eval_every=8,
            recorders=[],
            train_eval_size=50,
            compile=compile,
            channels_last=False,
        )
        run = store.create(cfg, state="running")
        losses, rec = Losses(), LayerStatsRecorder(steps=[1, 8], probe_size=16)
        status = train(cfg, run=run, callbacks=[losses, rec], threads=1)
        return run, status, torch.tensor(losses.losses), rec

    run_c, status_c, loss_c, rec_c = run_with(True)
    run_e, _, loss_e, _ = run_with(False)
    assert status_c["state"] == "done"
    assert json.loads((run_c.path / "env.json").read_text())["compile"] is True
    assert json.loads((run_e.path / "env.json").read_text())["compile"] is False
    assert rec_c.records == 2 and run_c.read_layers()
    assert torch.allclose(loss_c, loss_e, rtol=2e-3, atol=1e-4), (loss_c, loss_e)


def test_compile_is_skipped_with_a_reason_when_a_callback_hooks_training(store):
    class Hooker(Callback):
        needs_hooks = True

    cfg = TrainConfig(
        model="cifar_resnet8",
        width=4,
        dataset="digits",
        batch_size=32,
        iterations=2,
        log_every=1,
        eval_every=2,
        recorders=[],
        train_eval_size=10,
        compile=True,
    )
    run = store.create(cfg, state="running")
    with pytest.warns(UserWarning, match="compile ignored.*Hooker hook"):
        status = train(cfg, run=run, callbacks=[Hooker()], threads=1)
    assert status["state"] == "done"
    import json

    assert json.loads((run.path / "env.json").read_text())["compile"] is False
