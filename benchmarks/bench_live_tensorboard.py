"""Overhead of the live TensorBoard writer (resnet_core.export:LiveTensorBoard), in one run.

Trains one run in this process (1 thread) with the default recorder and the live writer,
times every step, and prints the writer's own time (reading the new lines of metrics.jsonl and
layers.jsonl, writing events) as a share of training time:

    overhead = (time spent in LiveTensorBoard) / (median steady step x number of steps)

against the recorders' budget (5%). ``--every S`` sets how often it looks at the files (the
default 5 s; 0 = after every step, the worst case). Not counted: SummaryWriter's own thread,
which writes the queued events to disk (the size written is printed).

    python benchmarks/bench_live_tensorboard.py [--every 0] [--iterations 300] [--dataset digits]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.npz"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cifar_resnet20")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--dataset", default=str(CIFAR) if CIFAR.exists() else "digits")
    ap.add_argument("--every", type=float, default=5.0, help="seconds between looks (0: every step)")
    a = ap.parse_args(argv)

    import torch

    from analysis.recorders import LayerStatsRecorder
    from resnet_core import RunStore, TrainConfig, train
    from resnet_core.export import LiveTensorBoard
    from resnet_core.train import Callback

    torch.set_num_threads(1)
    digits = a.dataset == "digits"
    cfg = TrainConfig(
        model=a.model,
        dataset=a.dataset,
        iterations=a.iterations,
        batch_size=a.batch_size,
        subset=None if digits else 5000,
        image_size=None if digits else 16,
        log_every=10,
        eval_every=a.iterations // 3,
        train_eval_size=500,
        device="cpu",
        threads=1,
        precision="fp32",
        recorders=[],
    )

    class StepTimer(Callback):
        needs_hooks = False

        def __init__(self):
            self.t = []

        def on_train_start(self, ctx):
            self.t.append(time.perf_counter())

        def on_step_end(self, ctx):
            self.t.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        live, timer = LiveTensorBoard(), StepTimer()
        live.every_s = a.every
        run = RunStore(tmp).create(cfg, state="running")
        train(cfg, run=run, callbacks=[LayerStatsRecorder(), timer, live], threads=1)
        dur = [b - a_ for a_, b in zip(timer.t[:-1], timer.t[1:])]
        step = statistics.median(dur[max(5, len(dur) // 10) :])
        ratio = live.seconds / (step * a.iterations)
        events = sum(f.stat().st_size for f in (run.path / "tensorboard").iterdir())
    print(
        f"dataset {Path(a.dataset).name}, {a.model}, batch {a.batch_size}, {a.iterations} steps, "
        f"1 thread, torch {torch.__version__}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"median step: {step * 1000:.1f} ms; live writer every {a.every:g} s: "
        f"{live.seconds * 1000:.0f} ms in all, {events / 1024:.0f} KB of events"
    )
    print(f"{live.looks} looks at the files (the first and last also open and close the writer)")
    print(f"live writer overhead ratio: {ratio:.4f} ({ratio:.2%} of training time; budget 5%)")
    return 0 if ratio <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
