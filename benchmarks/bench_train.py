"""Training throughput: our trainer against a conventional PyTorch loop, side by side.

    python benchmarks/bench_train.py [--models resnet20,plain56,resnet56] [--threads N]
                                     [--rounds 3] [--steps 8] [--warmup 3] [--accuracy-steps 0]
                                     [--device cpu|cuda]

Contenders, interleaved round by round (A, B, C, A, B, C, ...) so that a change in the
machine's load hits them all alike; each chunk's first ``--warmup`` steps are dropped and the
median of the remaining steps (over all rounds) is reported:

- ``conventional nw=0`` / ``nw=2``: the way public reproductions write it -- a CIFAR dataset
  of PIL images (``Image.fromarray`` per item, as torchvision's CIFAR10 does), torchvision
  transforms RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize, a
  DataLoader (batch 128, shuffle), the same model in fp32 NCHW, ``loss.backward()``,
  ``opt.step()``; torch threads = ``--threads``. The baseline is the faster of the two.
- ``ours``: ``resnet_core.train.train`` itself (in-memory uint8 tensors, batch augmentation,
  precision and channels_last on "auto"), its steps timed by a callback; no recorders.
- ``ours fp32 NCHW`` / ``ours fp32 channels_last`` (and ``ours bf16 ...`` where the CPU has
  fast bf16, or with ``--bf16``): the knobs one by one.
- ``ours auto + compile`` (with ``--compile``): the same with ``torch.compile``; its compile
  time falls in the dropped warm-up steps and is printed separately.

The roofline: the script also times a 2048x2048 fp32 matrix multiply with the same threads
(the machine's practical peak) and prints, for every contender, the training FLOP/s it reached
(2 x 3 x the model's forward multiply-adds per image: forward, input and weight gradients) as a
share of that peak, and the largest speed-up over the baseline that the peak would allow.

A step's time runs from the end of one optimizer step to the end of the next, so it includes
fetching and augmenting the batch. ``--accuracy-steps N`` then trains the baseline and ours
for N steps each (same cosine schedule, same seed) and compares test error on the full test
set. Skips cleanly (exit 0) when the CIFAR-10 .npz is absent.

``--device cuda`` runs every contender on the GPU: the conventional loop moves each batch from
its (pinned) DataLoader to the device as public reproductions do, ours keeps the data there;
every step ends with ``torch.cuda.synchronize()`` for both, so a step's time is its real time;
the roofline is a bf16 matmul on the device. (Written without a GPU at hand: the CPU path is
what has been run.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_NPZ = ROOT.parent / "shared" / "data" / "cifar10-jpeg.npz"

from resnet_core.config import TrainConfig  # noqa: E402
from resnet_core.data import Dataset, load_dataset  # noqa: E402
from resnet_core.models import build_model  # noqa: E402
from resnet_core.models.summary import count_macs  # noqa: E402
from resnet_core.train import (
    Callback,
    cpu_has_fast_bf16,
    cpu_model,
    resolve_channels_last,  # noqa: E402
    resolve_precision,
    train,
)

DEVICE = torch.device("cpu")  # --device; every contender runs there


def _sync():
    """Wait for the device's queued work, so a timestamp means the step is done."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# --- the conventional loop --------------------------------------------------------------
class PILCifar(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: a PIL image from uint8 HWC, transformed."""

    def __init__(self, x_nhwc: np.ndarray, y: np.ndarray, transform):
        self.x, self.y, self.transform = x_nhwc, y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


class Conventional:
    def __init__(self, model_name, x_nhwc, y, mean, std, batch, workers, seed=0, steps_total=None, lr=0.1):
        import torchvision.transforms as T

        tf = T.Compose(
            [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)]
        )
        self.ds = PILCifar(x_nhwc, y, tf)
        g = torch.Generator().manual_seed(seed)
        self.loader = torch.utils.data.DataLoader(
            self.ds,
            batch_size=batch,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=g,
            pin_memory=DEVICE.type == "cuda",
        )
        torch.manual_seed(seed)
        self.model = build_model(model_name, num_classes=10, in_channels=3).to(DEVICE)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
        self.sched = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=steps_total) if steps_total else None
        )
        self.it = None

    def _next(self):
        if self.it is None:
            self.it = iter(self.loader)
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)

    def run(self, n, threads) -> list[float]:
        torch.set_num_threads(threads)
        self.model.train()
        times, t = [], time.perf_counter()
        for _ in range(n):
            x, y = self._next()
            x, y = x.to(DEVICE, non_blocking=True), y.to(DEVICE, non_blocking=True)
            out = self.model(x)
            loss = F.cross_entropy(out, y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            if self.sched is not None:
                self.sched.step()
            _sync()
            now = time.perf_counter()
            times.append(now - t)
            t = now
        return times


# --- ours: the real trainer, timed by a callback ------------------------------------------
class StepTimer(Callback):
    needs_hooks = False

    def __init__(self):
        self.times, self.t = [], None

    def on_train_start(self, ctx):
        self.t = time.perf_counter()

    def on_step_end(self, ctx):
        _sync()
        now = time.perf_counter()
        self.times.append(now - self.t)
        self.t = now


def ours_cfg(
    model, n, batch, precision="auto", channels_last=None, seed=0, schedule="constant", compile=False
):
    return TrainConfig(
        compile=compile,
        model=model,
        dataset="bench",
        iterations=n,
        batch_size=batch,
        lr=0.1,
        schedule=schedule,
        warmup="none",
        augment="flip_crop",
        precision=precision,
        channels_last=channels_last,
        recorders=[],
        log_every=10,
        eval_every=10**9,
        train_eval_size=0,
        seed=seed,
        device=DEVICE.type,
    )


def small_test(ds: Dataset) -> Dataset:
    """The same training data with a 10-image test set: train() evaluates once at its end."""
    return Dataset(
        ds.name, ds.x_train, ds.y_train, ds.x_test[:10], ds.y_test[:10], ds.classes, mean=ds.mean, std=ds.std
    )


def run_ours(model, n, batch, threads, data, compile_times=None, **kw) -> list[float]:
    timer = StepTimer()
    train(ours_cfg(model, n, batch, **kw), callbacks=[timer], threads=threads, data=data)
    if compile_times is not None:
        compile_times.append(timer.times[0])
    return timer.times


def matmul_peak(threads: int, n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of an n x n matrix multiply: the practical ceiling for convolution work (fp32
    on the CPU; bf16 and n = 8192 on a GPU, where 2048 is too small to fill it)."""
    torch.set_num_threads(threads)
    if DEVICE.type == "cuda":
        n = 8192
    dtype = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=DEVICE, dtype=dtype), torch.randn(n, n, device=DEVICE, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        _sync()
        t = time.perf_counter()
        a @ b
        _sync()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def train_flops_per_image(model: str, size: int = 32) -> float:
    """Forward, input-gradient and weight-gradient passes: 3 x the forward multiply-adds, x2 FLOPs."""
    return 2 * 3 * count_macs(build_model(model, num_classes=10), size)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default=str(DEFAULT_NPZ))
    ap.add_argument("--models", default="resnet20,plain56,resnet56")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=cores(), help="torch threads (default: all cores)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per chunk, after warm-up")
    ap.add_argument("--warmup", type=int, default=3, help="steps dropped at the start of each chunk")
    ap.add_argument("--workers", default="0,2", help="DataLoader num_workers settings to try")
    ap.add_argument("--bf16", action="store_true", help="time bf16 variants even without fast bf16")
    ap.add_argument("--no-variants", action="store_true", help="only baseline vs ours (auto)")
    ap.add_argument("--compile", action="store_true", help="also time ours with torch.compile")
    ap.add_argument(
        "--accuracy-steps",
        type=int,
        default=0,
        help="then train baseline and ours N steps each and compare test error",
    )
    ap.add_argument("--accuracy-model", default="resnet20")
    ap.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="where every contender trains (default cpu)"
    )
    args = ap.parse_args(argv)
    global DEVICE
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device here; accepted: cpu", file=sys.stderr)
        return 2
    DEVICE = torch.device(args.device)
    if not Path(args.dataset).exists():
        print(f"skipped: dataset {args.dataset} is absent")
        return 0
    ds = load_dataset(args.dataset)
    if ds.image_size != 32:
        print(f"expected 32x32 images, got {ds.image_size}", file=sys.stderr)
        return 2
    x_nhwc = ds.x_train.permute(0, 2, 3, 1).contiguous().numpy()
    y_np = ds.y_train.numpy()
    mean, std = ds.mean.tolist(), ds.std.tolist()
    data = small_test(ds)
    fast_bf16 = cpu_has_fast_bf16()
    gpu = f", GPU {torch.cuda.get_device_name(DEVICE)}" if DEVICE.type == "cuda" else ""
    print(
        f"machine: {cpu_model() or 'unknown'}, {cores()} cores{gpu}, torch {torch.__version__}, "
        f"threads {args.threads}, "
        f"fast bf16: {fast_bf16}, load average {os.getloadavg()[0]:.2f}, device {DEVICE}",
        flush=True,
    )
    # the peak is re-measured before every round and the best kept: on a shared machine one
    # reading can come in far low (we saw 91 and 148 GFLOP/s minutes apart)
    peaks = [matmul_peak(args.threads)]
    what = (
        "bf16 8192x8192 matmul on the GPU"
        if DEVICE.type == "cuda"
        else f"fp32 2048x2048 matmul, {args.threads} threads"
    )
    print(f"roofline: {what}: {peaks[0]:.1f} GFLOP/s (re-measured every round; the best is used)", flush=True)
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    chunk = args.warmup + args.steps
    summary = []
    for model in [m for m in args.models.split(",") if m]:
        contenders: dict[str, object] = {}
        for w in workers:
            conv = Conventional(model, x_nhwc, y_np, mean, std, args.batch, w)
            contenders[f"conventional nw={w}"] = lambda c=conv: c.run(chunk, args.threads)
        auto_prec = resolve_precision("auto", DEVICE)
        auto_cl = resolve_channels_last(None, DEVICE, auto_prec)
        label = lambda p, c: f"{p} {'channels_last' if c else 'NCHW'}"
        contenders[f"ours auto = {label(auto_prec, auto_cl)}"] = lambda: run_ours(
            model, chunk, args.batch, args.threads, data
        )
        compile_times: list[float] = []
        if args.compile:
            contenders["ours auto + compile"] = lambda: run_ours(
                model, chunk, args.batch, args.threads, data, compile_times=compile_times, compile=True
            )
        if not args.no_variants:
            for prec in ["fp32", "bf16"] if (fast_bf16 or args.bf16 or DEVICE.type == "cuda") else ["fp32"]:
                for cl in (False, True):
                    if (prec, cl) == (auto_prec, auto_cl):
                        continue  # that is "ours auto"
                    contenders[f"ours {label(prec, cl)}"] = lambda p=prec, c=cl: run_ours(
                        model, chunk, args.batch, args.threads, data, precision=p, channels_last=c
                    )
        steady: dict[str, list[float]] = {k: [] for k in contenders}
        load0 = os.getloadavg()[0]
        for r in range(args.rounds):
            peaks.append(matmul_peak(args.threads))
            order = list(contenders) if r % 2 == 0 else list(contenders)[::-1]
            for name in order:
                steady[name] += contenders[name]()[args.warmup :]
        load1 = os.getloadavg()[0]
        med = {k: statistics.median(v) for k, v in steady.items()}
        conv_names = [k for k in med if k.startswith("conventional")]
        base = min(conv_names, key=lambda k: med[k])
        flops = train_flops_per_image(model)
        peak = max(peaks)
        print(
            f"\n{model} at 32x32, batch {args.batch}, {args.threads} threads "
            f"(median of {args.rounds}x{args.steps} steady steps; load {load0:.2f} -> {load1:.2f}); "
            f"baseline = {base}; {flops / 1e6:.0f} MFLOP per training image; matmul peak "
            f"{peak:.1f} GFLOP/s (readings so far {min(peaks):.0f}-{peak:.0f})"
        )
        for k, v in med.items():
            ips = args.batch / v
            gflops = ips * flops / 1e9
            print(
                f"  {k:<34}{1000 * v:9.1f} ms/step {ips:9.1f} img/s  x{med[base] / v:5.2f}"
                f"  {gflops:6.1f} GFLOP/s = {100 * gflops / peak:4.1f}% of peak"
            )
            summary.append((model, k, ips, med[base] / v))
        base_gflops = args.batch / med[base] * flops / 1e9
        print(
            f"  ceiling: at 100% of the matmul peak a step would be x{peak / base_gflops:.2f} the baseline's"
            f" speed; 2x the baseline needs {200 * base_gflops / peak:.0f}% of peak"
        )
        if compile_times:
            print(
                f"  torch.compile: first step (compilation) {statistics.median(compile_times):.1f} s "
                f"(median over {len(compile_times)} chunks)"
            )
    if args.accuracy_steps:
        accuracy(args, ds, x_nhwc, y_np, mean, std)
    return 0


def accuracy(args, ds, x_nhwc, y_np, mean, std):
    """Same number of steps, same cosine schedule: test error of the baseline vs ours."""
    n, model = args.accuracy_steps, args.accuracy_model
    w = 2  # the faster loader for resnet20 in the throughput runs
    conv = Conventional(model, x_nhwc, y_np, mean, std, args.batch, w, steps_total=n)
    t0 = time.perf_counter()
    conv.run(n, args.threads)
    t_conv = time.perf_counter() - t0
    conv.model.eval()
    with torch.no_grad():
        x = ((ds.x_test.float() / 255) - ds.mean[None, :, None, None]) / ds.std[None, :, None, None]
        wrong = sum(
            int((conv.model(xb.to(DEVICE)).argmax(1).cpu() != yb).sum())
            for xb, yb in zip(x.split(500), ds.y_test.split(500))
        )
    err_conv = wrong / len(ds.y_test)
    t0 = time.perf_counter()
    res = {}

    class Grab(Callback):
        needs_hooks = False

        def on_eval(self, ctx, results):
            res.update(results)

    train(
        ours_cfg(model, n, args.batch, schedule="cosine"), callbacks=[Grab()], threads=args.threads, data=ds
    )
    t_ours = time.perf_counter() - t0
    err_ours = res["test"]["error"]
    print(f"\naccuracy: {model}, {n} steps of batch {args.batch}, cosine lr 0.1, seed 0, full test set")
    print(f"  conventional nw={w}: test error {100 * err_conv:.2f}%  ({t_conv:.0f} s)")
    print(f"  ours (auto):        test error {100 * err_ours:.2f}%  ({t_ours:.0f} s, incl. final eval)")
    print(f"  difference {100 * (err_ours - err_conv):+.2f} points (goal: within 1.5)")


if __name__ == "__main__":
    sys.exit(main())
