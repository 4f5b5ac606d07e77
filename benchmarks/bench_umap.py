"""UMAP time for 2,000 points, as the app's background job runs it (1 thread).

Prints the cold import time of umap-learn, the first fit (numba JIT included) and a second fit
of the same 2,000 points. The points are penultimate features of a stored run's checkpoint
(``--run RUN_ID`` with ``--runs-dir``), else 64-d features of a 10-class Gaussian mixture.

    python benchmarks/bench_umap.py [--n 2000] [--run RUN_ID --runs-dir checkpoints]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--run", default=None)
    ap.add_argument("--runs-dir", default=None)
    ap.add_argument("--checkpoint", default="last")
    a = ap.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(1)
    if a.run:
        from analysis.embeddings import penultimate
        from analysis.loading import heldout_batch, load
        from resnet_core import RunStore

        model, ds = load(RunStore(a.runs_dir).run(a.run), a.checkpoint)
        feats = penultimate(model, heldout_batch(ds, a.n)[0])
        source = f"run {a.run} ({a.checkpoint})"
    else:
        rng = np.random.default_rng(0)
        centers = rng.normal(0, 0.6, (10, 64))
        feats = (centers[rng.integers(0, 10, a.n)] + rng.normal(0, 1, (a.n, 64))).astype(np.float32)
        source = "10-class Gaussian mixture, 64-d"
    from analysis.embeddings import reduce

    t = time.perf_counter()
    import umap  # noqa: F401

    t_import = time.perf_counter() - t
    t = time.perf_counter()
    y = reduce(feats, "umap")
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    reduce(feats, "umap")
    t_second = time.perf_counter() - t
    t = time.perf_counter()
    reduce(feats, "pca")
    t_pca = time.perf_counter() - t
    print(f"{len(feats)} points of {feats.shape[1]}-d features from {source}; output {y.shape}")
    print(f"umap-learn import (cold): {t_import:.1f} s")
    print(
        f"UMAP time for {len(feats)} points: first fit {t_first:.1f} s (numba JIT included), "
        f"second fit {t_second:.1f} s"
    )
    print(f"PCA for comparison: {t_pca * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
