"""How long each app page takes to render with 100 runs in the store (goal: under 2 s).

    python benchmarks/bench_pages.py [--runs 100] [--rounds 3] [--keep DIR]

Builds a store of ``--runs`` runs in a temporary folder: 4 real tiny runs (digits, width 4,
with per-layer records and checkpoints) copied under new ids, each given a realistic log
(a 64k-iteration run logged every 100 steps: 640 training rows and 64 evaluations). Then
renders every page file with streamlit's AppTest (the script run, as a server would do per
rerun, without the browser's drawing) and prints the first (cold) and the median of the next
``--rounds`` (warm) render times. Pages that compute on request (Studies' toggles) render their
controls only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

PAGES = [
    "lab",
    "degradation",
    "runs",
    "responses",
    "gradients",
    "activations",
    "embeddings",
    "studies",
    "tour",
]
MODELS = [
    "plain20",
    "plain32",
    "plain44",
    "plain56",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
]


def build_store(root: Path, n: int) -> None:
    from conftest import TINY_MODELS, train_tiny

    from resnet_core import RunStore

    seed_dir = root / "_seed"
    seeds = RunStore(seed_dir)
    for i, m in enumerate(TINY_MODELS):
        train_tiny(seeds, m, seed=i)
    templates = sorted(p for p in seed_dir.iterdir() if p.is_dir())
    rng = random.Random(0)
    for k in range(n):
        src = templates[k % len(templates)]
        rid = f"20260101-{k:06d}-bench-{k:06x}"
        dst = root / rid
        shutil.copytree(src, dst)
        cfg = json.loads((dst / "config.json").read_text())
        cfg["name"] = f"bench {k}"
        (dst / "config.json").write_text(json.dumps(cfg))
        base = 0.05 + 0.1 * rng.random()
        rows = []
        for step in range(100, 64001, 100):
            e = base + 0.8 * (1 - step / 64000) ** 3
            rows.append(
                {
                    "step": step,
                    "epoch": step / 390,
                    "split": "train",
                    "loss": 2 * e,
                    "error": e,
                    "lr": 0.1,
                    "time": step / 10,
                    "images_per_s": 900.0,
                }
            )
            if step % 1000 == 0:
                for split in ("test", "train_eval"):
                    rows.append(
                        {
                            "step": step,
                            "epoch": step / 390,
                            "split": split,
                            "loss": 2 * e,
                            "error": e * (1.1 if split == "test" else 0.9),
                            "n": 1000,
                            "time": step / 10,
                        }
                    )
        (dst / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        st = json.loads((dst / "status.json").read_text())
        st.update(step=64000, total=64000)
        (dst / "status.json").write_text(json.dumps(st))
    shutil.rmtree(seed_dir)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", help="build (or reuse) the store in this folder and keep it")
    ap.add_argument("--pages", default=",".join(PAGES), help="comma-separated page names")
    a = ap.parse_args(argv)
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench-pages-"))
    t0 = time.time()
    if not (root.is_dir() and len([p for p in root.iterdir() if p.is_dir()]) >= a.runs):
        root.mkdir(parents=True, exist_ok=True)
        build_store(root, a.runs)
    print(
        f"store: {root} ({sum(1 for p in root.iterdir() if p.is_dir())} runs, built in "
        f"{time.time() - t0:.1f} s)",
        flush=True,
    )
    os.environ["RESNET_LAB_RUNS_DIR"] = str(root)
    from streamlit.testing.v1 import AppTest

    print(f"{'page':<14}{'cold (s)':>10}{'warm median (s)':>17}  {'ok':<4}")
    worst = 0.0
    try:
        for page in a.pages.split(","):
            times, ok = [], True
            for _ in range(1 + a.rounds):
                at = AppTest.from_file(str(ROOT / "app" / "app_pages" / f"{page}.py"), default_timeout=300)
                t = time.perf_counter()
                at.run()
                times.append(time.perf_counter() - t)
                ok = ok and not at.exception
            warm = statistics.median(times[1:]) if len(times) > 1 else times[0]
            worst = max(worst, warm)
            print(f"{page:<14}{times[0]:>10.2f}{warm:>17.2f}  {'yes' if ok else 'EXC'}", flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"slowest warm page: {worst:.2f} s (goal: under 2 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
