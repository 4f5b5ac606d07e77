"""What a Ray launch costs against the local runner: `sweep quick` on both backends.

    python benchmarks/bench_ray_overhead.py [--dataset PATH.npz | digits] [--repeats 2]

Runs ``python -m resnet_core sweep quick --backend B`` as a user does (a foreground sweep that
returns when every run has ended), alternating local and ray ``--repeats`` times each, into
fresh temporary stores, timed from outside (start to exit: process start-up, data loading and,
for Ray, starting a local Ray cluster on this machine and its workers are all included). The
Ray cluster is the one the queue starts when no address is given, with this machine's cores,
so both backends train two runs at once on a 2-core machine.

Prints each sweep's wall time, the median per backend, their ratio (ray / local), and whether
the final training errors agree (the same configs on one thread each: they should be equal).
Exits 0 when the dataset is absent (skipped) or every sweep finished, 2 when one failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_sweep_quick import DEFAULT_NPZ, MODELS, read_results  # noqa: E402


def one_sweep(backend: str, dataset: str) -> tuple[float, dict]:
    runs_dir = Path(tempfile.mkdtemp(prefix=f"bench-ray-{backend}-"))
    cmd = [sys.executable, "-m", "resnet_core", "sweep", "quick", "--dataset", dataset]
    cmd += ["--runs-dir", str(runs_dir), "--backend", backend]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RESNET_LAB_BACKEND")}
    env["PYTHONPATH"] = str(ROOT)
    try:
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            print(p.stderr[-3000:], file=sys.stderr)
            print(f"the {backend} sweep failed (exit {p.returncode})", file=sys.stderr)
            raise SystemExit(2)
        res = read_results(runs_dir)
        bad = {m: r["state"] for m, r in res.items() if r["state"] != "done"}
        if bad or len(res) != len(MODELS):
            print(f"the {backend} sweep did not finish every run: {bad or sorted(res)}", file=sys.stderr)
            raise SystemExit(2)
        return wall, res
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--dataset", default=str(DEFAULT_NPZ), help="a .npz path (default: the shared CIFAR-10) or digits"
    )
    ap.add_argument("--repeats", type=int, default=2, help="sweeps per backend, alternating (default 2)")
    a = ap.parse_args()
    if (a.dataset.endswith(".npz") or "/" in a.dataset) and not Path(a.dataset).exists():
        print(f"skipped: dataset {a.dataset} is absent")
        return 0
    if importlib.util.find_spec("ray") is None:
        print("skipped: Ray is not installed (pip install 'resnet-lab[ray]')")
        return 0
    walls: dict[str, list[float]] = {"local": [], "ray": []}
    errors: dict[str, list[dict]] = {"local": [], "ray": []}
    load0 = os.getloadavg()[0]
    for i in range(a.repeats):
        for backend in ("local", "ray") if i % 2 == 0 else ("ray", "local"):
            wall, res = one_sweep(backend, a.dataset)
            walls[backend].append(wall)
            errors[backend].append({m: res[m]["train_eval"] for m in MODELS})
            print(f"  sweep quick --backend {backend:<5} {wall:7.1f} s", flush=True)
    print(f"{os.cpu_count()} cores; load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after")
    med = {b: statistics.median(w) for b, w in walls.items()}
    for b in walls:
        print(
            f"{b:<6} median {med[b]:.1f} s over {len(walls[b])} sweeps: "
            + ", ".join(f"{w:.1f}" for w in walls[b])
        )
    print(
        f"ray / local = {med['ray'] / med['local']:.2f} "
        f"({med['ray'] - med['local']:+.1f} s a sweep of 4 runs)"
    )
    same = all(e == errors["local"][0] for b in errors for e in errors[b])
    print("final training errors: " + ("identical on both backends" if same else f"differ: {errors}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
