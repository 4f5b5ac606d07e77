"""The `rescue` study's measured table, from a run store or a reference set, in Markdown.

    python benchmarks/rescue_table.py reference/rescue-cpu      # a bundled set
    python benchmarks/rescue_table.py checkpoints               # your runs

Per budget and depth, one row per variant: seeds, final training and test error (mean ± std
over seeds, eval-mode `train_eval` and `test` as on the pages), the share of the
plain-to-residual gap in training error it closes (the page's `app.rescue_view.gap_table`,
so the numbers are the page's), and the wall time per step (median over its runs of the
trainer's clock summed over a resumed run's sittings, / steps; one thread per run). Diverged
runs get a row of their own with the step and learning rate their status names. This prints
what the records say; it does not train anything.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.studies.rescue import rescue_variants  # noqa: E402
from app import rescue_view as rv  # noqa: E402
from app.runs_data import runs_frame  # noqa: E402
from resnet_core.store import RunStore, run_wall_s  # noqa: E402


def seconds_per_step(store: RunStore, ids) -> float:
    """Median over runs of wall seconds per step (:func:`run_wall_s` / its last step)."""
    per = []
    for rid in ids:
        run = store.run(rid)
        st = run.read_status_raw() or {}
        if isinstance(st.get("step"), int) and st["step"] > 0:
            per.append(run_wall_s(run.read_metrics(), st) / st["step"])
    return statistics.median(per) if per else math.nan


def table(root: Path) -> str:
    store = RunStore(root)
    df = runs_frame(store)
    configs = {rid: store.run(rid).read_config_dict() for rid in df["id"]}
    rr = rv.with_variants(rv.rescue_runs(df, configs))  # as the page: budgets that ran a variant
    gaps = rv.gap_table(rv.variant_sets(rr))
    metrics = pd.DataFrame(
        [
            {**r, "run_id": rid}
            for ids in gaps["run_ids"]
            for rid in ids
            for r in store.run(rid).read_metrics()
        ],
        columns=["run_id", "split", "step", "error"],
    )
    order = {v["label"]: i for i, v in enumerate(rescue_variants())}
    out = []
    for (budget, depth), t in sorted(gaps.groupby(["budget", "depth"], sort=False), key=lambda kv: kv[0][1]):
        first = t.iloc[0]
        out.append(f"\n**{first['dataset']}, depth {int(depth)}, `{first['preset'] or 'custom'}` budget**\n")
        out.append("| variant | group | seeds | final train error | final test error | gap closed | s/step |")
        out.append("|---|---|---|---|---|---|---|")
        for _, r in t.sort_values("variant", key=lambda s: s.map(order)).iterrows():
            closed = "–" if not math.isfinite(r["gap_closed"]) else f"{100 * r['gap_closed']:.0f}%"
            sd = lambda s: f" ± {s:.1f}" if math.isfinite(s) else ""  # noqa: E731
            out.append(
                f"| {r['variant']} | {r['group']} | {r['n']} ({', '.join(map(str, r['seeds']))}) "
                f"| {r['train_mean']:.1f}%{sd(r['train_std'])} | {r['test_mean']:.1f}%{sd(r['test_std'])} "
                f"| {closed} | {seconds_per_step(store, r['run_ids']):.2f} |"
            )
        here = rr[(rr["budget"] == budget) & (rr["depth"] == depth) & (rr["state"] == "diverged")]
        for v, g in here.sort_values("seed").groupby("variant", sort=False):
            said = [rv.diverged_what(m) for m in g["message"]]
            seeds = [s if s != s else int(s) for s in g["seed"]]
            steps = "; ".join(f"seed {s}: {m}" for s, m in zip(seeds, said))
            out.append(f"| {v} | {g['vgroup'].iloc[0]} | {len(g)} | diverged ({steps}) | – | – | – |")
        out.extend(f"- {s}" for s in rv.gap_sentences(t) + rv.stalled_sentences(t, metrics))
    for _, t in gaps.groupby("recipe", sort=False):
        deeper = rv.depth_sentences(t, rv.stalled_sets(t, metrics))
        if deeper:
            first, depths = t.iloc[0], " and ".join(str(int(d)) for d in sorted(t["depth"].unique()))
            out.append(f"\n**{first['dataset']}, depth {depths}, `{first['preset'] or 'custom'}` budget**\n")
            out.extend(f"- {s}" for s in deeper)
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", nargs="+", help="run stores or reference sets")
    for root in ap.parse_args().roots:
        print(f"## {root}")
        print(table(Path(root)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
