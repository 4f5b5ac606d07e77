"""What the paper's CIFAR-10 experiments cost in device-hours, from measured step times.

    python benchmarks/bench_step_cost.py [--device cpu|cuda] [--threads 1] [--steps 3] [--warmup 2]

Times one training step (forward, backward, SGD update; channels_last; fp32, or bf16 autocast
on a GPU that has it) of each net of Fig. 6 and Table 6 on random 32x32 batches of 128 (the
paper's shape), median of ``--steps`` steps after ``--warmup``. ResNet-1202 is timed at batch
32 on a CPU and scaled by 4 (a CPU step's time is linear in the batch at these sizes; the
script prints the batch it used). The data pipeline is left out: the trainer keeps CIFAR-10 in
memory and augments whole batches, under 3% of a step here (BENCHMARKS.md section 1).

Then it prints the device-hours of: Fig. 6 with 5 seeds (plain and residual 20/32/44/56 and
resnet110, 64,000 steps each) and Table 6 with ResNet-1202 (one seed of resnet20 ... 1202),
per run and in all; on a CPU, core-hours (one thread per run, as the queue runs them; divide
by the machine's cores for wall hours when the runs share it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from resnet_core.config import SWEEPS  # noqa: E402
from resnet_core.models import build_model  # noqa: E402

FIG6 = SWEEPS["fig6"]["models"]  # plain and residual 20/32/44/56 and resnet110
TABLE6 = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202"]
STEPS = 64_000  # the paper's CIFAR-10 budget (Sec. 4.2)


def step_seconds(name: str, device: str, batch: int, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    model = build_model(name).to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, 32, 32, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    where = torch.cuda.get_device_name() if a.device == "cuda" else f"CPU, {a.threads} thread(s)"
    print(f"device: {where}; torch {torch.__version__}")
    per_step = {}
    for name in dict.fromkeys(FIG6 + TABLE6):
        batch = 32 if (name == "resnet1202" and a.device == "cpu") else 128
        s = step_seconds(name, a.device, batch, a.steps, a.warmup) * (128 / batch)
        per_step[name] = s
        print(
            f"{name:<11} {1000 * s:9.1f} ms/step at batch 128 (timed at batch {batch}); "
            f"64k steps: {s * STEPS / 3600:7.1f} h"
        )
    unit = "GPU-hours" if a.device == "cuda" else "core-hours"
    fig6 = 5 * sum(per_step[m] for m in FIG6) * STEPS / 3600
    table6 = sum(per_step[m] for m in TABLE6) * STEPS / 3600
    print(f"Fig. 6, 9 nets x 5 seeds x 64k steps: {fig6:,.0f} {unit}")
    alone = per_step["resnet1202"] * STEPS / 3600
    print(
        f"Table 6, resnet20..1202, 1 seed x 64k steps: {table6:,.0f} {unit} (resnet1202 alone {alone:,.0f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
