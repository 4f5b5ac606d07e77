"""One ETA for a whole queue (a sweep): when its last run should finish.

Each running run knows its own remaining time (status.json's eta_s). A queued run has not
started, so its length is estimated from the running or finished runs of the same queue:
the time per step of a net grows about linearly with its depth (every block costs the same),
so a queued run is given the mean duration of the measured runs, each scaled by
depth(queued) / depth(measured) and by their step counts. The runs are then laid on ``slots``
parallel trainers in queue order, each starting on the first trainer to free up (as
jobs.run_queue starts them), and the ETA is when the last one ends.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass


@dataclass
class QueuedRun:
    state: str  # "running" or "queued" (other states are ignored)
    depth: float | None = None  # weighted layers (None: unknown, taken as the mean)
    total: float | None = None  # the run's steps, when known
    eta_s: float | None = None  # running: the trainer's own remaining-time estimate
    elapsed_s: float | None = None  # running: seconds since it started


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def queue_eta(runs: list[QueuedRun], slots: int, done: list[QueuedRun] = ()) -> float | None:
    """Seconds until every running and queued run in ``runs`` has finished, on ``slots``
    trainers at once; ``done`` (finished runs with elapsed_s = their duration) add to the
    measurements. None when nothing is running or queued, or nothing measured yet."""
    running = [r for r in runs if r.state == "running"]
    queued = [r for r in runs if r.state == "queued"]
    if not running and not queued:
        return None
    # seconds per (step x layer) from every run with a measured duration
    rates = []
    for r in running + list(done):
        dur = (r.elapsed_s or 0) + (r.eta_s or 0) if r.state == "running" else r.elapsed_s
        if _finite(dur) and dur > 0 and _finite(r.depth) and r.depth > 0 and _finite(r.total) and r.total > 0:
            rates.append(dur / (r.depth * r.total))
    if queued and not rates:
        return None
    rate = sum(rates) / len(rates) if rates else 0.0
    known = [r for r in running + queued + list(done) if _finite(r.depth)]
    mean_depth = sum(r.depth for r in known) / len(known) if known else 20.0
    known_t = [r.total for r in running + queued + list(done) if _finite(r.total) and r.total > 0]
    mean_total = sum(known_t) / len(known_t) if known_t else 0.0
    free = [max(0.0, float(r.eta_s)) if _finite(r.eta_s) else 0.0 for r in running]
    free += [0.0] * max(0, slots - len(free))
    heapq.heapify(free)
    end = max(free) if free else 0.0
    for r in queued:
        depth = r.depth if _finite(r.depth) else mean_depth
        total = r.total if _finite(r.total) and r.total > 0 else mean_total
        start = heapq.heappop(free)
        finish = start + rate * depth * total
        end = max(end, finish)
        heapq.heappush(free, finish)
    return end


def runs_eta(store, run_ids, slots: int, now: float | None = None) -> float | None:
    """queue_eta of these runs of ``store``, read from their status.json and config.json
    (the CLI's sweep and the Lab's queue); finished runs among them count as measurements."""
    import time

    from .models import model_depth
    from .store import StoreError

    now = time.time() if now is None else now
    active, done = [], []
    for rid in run_ids:
        try:
            run = store.run(rid)
            s, cfg = run.read_status(), run.read_config_dict()
        except StoreError:
            continue  # deleted meanwhile: it no longer counts
        try:
            depth = float(model_depth(cfg.get("model", "")))
        except (KeyError, ValueError, TypeError):
            depth = None
        started = s.get("started")
        elapsed = (now - started) if _finite(started) else None
        if s.get("state") == "done" and _finite(s.get("finished")) and _finite(started):
            elapsed = s["finished"] - started
        q = QueuedRun(
            state=s.get("state", ""),
            depth=depth,
            total=s.get("total"),
            eta_s=s.get("eta_s"),
            elapsed_s=elapsed,
        )
        (done if q.state == "done" else active).append(q)
    return queue_eta(active, slots, done)
