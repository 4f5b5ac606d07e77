"""Recording overhead of LayerStatsRecorder at its default schedule, measured in one run.

Trains one run in this process (1 thread) with the recorder attached, times every step, and
prints: the median steady-state step (after warm-up, leaving out recorded, logging and
evaluation steps), the median cost of one record, and the ratio

    overhead = (time spent recording) / (median step x number of steps)

which the recorder's budget keeps at or under 5%. Machines are noisy: run it twice.

    python benchmarks/bench_recording.py [--model cifar_resnet20] [--iterations 300]
                                         [--dataset PATH.npz|digits] [--image-size 16]
                                         [--probe-size 1000] [--batch-size 128]

The `quick` preset's shape: --model cifar_resnet56 --iterations 234 --batch-size 64
--subset 2500 --image-size 12 --schedule onecycle.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.npz"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cifar_resnet20")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--dataset", default=str(CIFAR) if CIFAR.exists() else "digits")
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--subset", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--probe-size", type=int, default=None, help="the recorder's probe_size (default: its own, 1,000)"
    )
    ap.add_argument("--schedule", default="steps", help="the lr schedule (quick: onecycle)")
    ap.add_argument("--lr", type=float, default=0.1)
    a = ap.parse_args(argv)

    import torch

    from analysis.recorders import LayerStatsRecorder
    from resnet_core import TrainConfig, train
    from resnet_core.train import Callback

    torch.set_num_threads(a.threads)
    digits = a.dataset == "digits"
    cfg = TrainConfig(
        model=a.model,
        width=a.width,
        dataset=a.dataset,
        iterations=a.iterations,
        batch_size=a.batch_size,
        subset=None if digits else a.subset,
        image_size=None if digits else (a.image_size or 16),
        log_every=50,
        eval_every=a.iterations,
        train_eval_size=0,
        device="cpu",
        threads=a.threads,
        precision="fp32",
        recorders=[],
        schedule=a.schedule,
        lr=a.lr,
    )

    class StepTimer(Callback):
        needs_hooks = False

        def __init__(self):
            self.t = []

        def on_train_start(self, ctx):
            self.t.append(time.perf_counter())

        def on_step_end(self, ctx):
            self.t.append(time.perf_counter())

    rec = LayerStatsRecorder(**({} if a.probe_size is None else {"probe_size": a.probe_size}))
    timer = StepTimer()
    t0 = time.perf_counter()
    train(cfg, callbacks=[rec, timer], threads=a.threads)
    wall = time.perf_counter() - t0
    dur = [b - a_ for a_, b in zip(timer.t, timer.t[1:])]  # dur[s] = step s (0-based)
    warm = max(5, len(dur) // 10)
    # dur[s] holds step s's probe record (on_step_start) and its weight rows: leave them out
    noisy = (
        set(rec.steps)
        | set(rec.grad_steps)
        | {s - 1 for s in range(1, a.iterations + 1) if s % cfg.log_every == 0}
    )
    steady = [d for s, d in enumerate(dur) if s >= warm and s not in noisy]
    step = statistics.median(steady)
    per_record = rec.seconds / max(1, rec.records)
    ratio = rec.seconds / (step * a.iterations)
    probe_s = sum(t for _, t in rec.times)
    print(
        f"dataset {Path(a.dataset).name}, {a.model} width {a.width}, batch {a.batch_size}, "
        f"{a.iterations} steps, {a.threads} thread(s), torch {torch.__version__}, "
        f"{os.cpu_count()} cores"
    )
    print(f"median steady-state step: {step * 1000:.1f} ms  ({len(steady)} steps)")
    print(
        f"probe records: {rec.records} of {rec.probe_images} test images at steps "
        f"{sorted(rec.steps)}; weight-gradient records: {rec.grad_records}"
    )
    print(
        f"one record: {per_record * 1000:.1f} ms = {per_record / step:.2f} steps (mean); "
        f"median {statistics.median(t for _, t in rec.times) / step:.2f} steps; each: "
        + ", ".join(f"{s}: {t / step:.2f}" for s, t in rec.times)
    )
    print(
        f"weight-gradient rows: {(rec.seconds - probe_s) * 1000:.1f} ms in all = "
        f"{(rec.seconds - probe_s) / (step * a.iterations):.2%} of training time"
    )
    print(f"recording overhead ratio: {ratio:.4f} ({ratio:.2%} of training time; budget 5%)")
    print(f"wall time of the run: {wall:.1f} s")
    return 0 if ratio <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
