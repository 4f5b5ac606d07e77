"""Cached analyses of a checkpoint, computed inline or in a background process.

The app's whole API:

    res = get_or_start(run, "umap", checkpoint="best", n=2000)  # dict, or None while pending
    st = status(run, "umap", checkpoint="best", n=2000)         # {"state", "progress", ...}
    cancel(run, "umap", checkpoint="best", n=2000)

``get_or_start`` returns the cached result when there is one; computes quick tasks (``pca``,
``fig7``, ``confusion``, ``activations``) at once; otherwise starts one background process
(``python -m analysis.jobs --root R --run ID --task T --checkpoint C --params JSON``, a new
session, never a shell) and returns None. The process writes progress to
``cache/<key>.job.json``, the result to ``cache/<key>.npz`` (atomically), and stops at its next
progress report once ``cache/<key>.cancel`` exists. States: ``missing``, ``running``, ``done``,
``failed``, ``cancelled``, ``interrupted`` (the process died). ``get_or_start`` starts a job
only when there is none (``missing``): a failed, cancelled or interrupted one is restarted only
with ``retry=True``, so neither a crash nor a page refresh after Cancel loops. ``cancel`` also
sends SIGTERM to the job's own process (by the pid and start time it recorded), so a long
UMAP fit stops without waiting for a progress report.

At most ``max_jobs()`` background processes compute at once per run store (default
``max(1, cores // 2)``, or ``$RESNET_LAB_ANALYSIS_JOBS``): each one takes a slot, an ``flock``
on ``<root>/.analysis-slots/slot-<k>.lock``, before it computes, and the kernel drops the lock
when the process ends however it ends; waiting jobs are served first come, first served. A
job waiting for a slot reads as ``running`` with
progress 0 and the message "waiting for a free core (...)"; cancel stops it there too. Inline
tasks (computed in the caller's process) take no slot.

Cores, locks, launching, watching and cancelling are the job layer's (``resnet_core.launch``),
shared with the training queue: a job records its identity (pid, start time, host) and beats
while it lives, so a job of this host is judged by its pid and one of another host by its
heartbeat. With ``$RESNET_LAB_ANALYSIS_BACKEND=ray`` the background process is a local driver
(``resnet_core.raybackend.driver_command``) that runs the job as one Ray task on the cluster
at ``$RAY_ADDRESS`` and waits for it: the record holds the driver's pid (``driver``: true)
until the task writes its own, and SIGTERM to the driver cancels the task, queued or running.

Tasks and their parameters (defaults in ``TASKS``): pca / umap / tsne (n, seed, ...), fig7 (n),
confusion (n), activations (n), lesion (n), lesion_random (n, samples, seed),
landscape1d / landscape2d (n, split, steps, span, seed), shattering (image, n_points, span,
seed, max_lag).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
from pathlib import Path

from resnet_core import launch
from resnet_core.launch import child_env, cores, record_alive, signal_record, take_lock  # noqa: F401 (cores: tests)
from resnet_core.store import HEARTBEAT_S, Run, atomic_write_json, process_identity

from . import cache
from .progress import Cancelled

REPO_ROOT = Path(__file__).resolve().parents[1]
JOBS_ENV = "RESNET_LAB_ANALYSIS_JOBS"
ANALYSIS_BACKEND_ENV = "RESNET_LAB_ANALYSIS_BACKEND"
SLOTS_DIR = ".analysis-slots"


# --- how many background jobs compute at once -------------------------------------------
def max_jobs() -> int:
    """How many analysis background processes may compute at once per run store:
    $RESNET_LAB_ANALYSIS_JOBS (a positive integer), else max(1, cores // 2). A bad value is an
    error (ValueError naming the variable), not silently replaced."""
    default = max(1, cores() // 2)
    raw = os.environ.get(JOBS_ENV)
    if raw is None or not raw.strip():
        return default
    if not re.fullmatch(r"\d+", raw.strip()) or int(raw.strip()) < 1:
        raise ValueError(
            f"{JOBS_ENV}={raw!r} is not accepted: use a positive integer (how many "
            f"analysis jobs may compute at once; unset, it is max(1, cores // 2) = "
            f"{default} here)"
        )
    return int(raw.strip())


def _try_slot(root, n: int):
    """An open file holding one of the ``n`` slot locks of store ``root``, or None."""
    d = Path(root) / SLOTS_DIR
    d.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        f = take_lock(d / f"slot-{k}.lock")
        if f is not None:
            return f
    return None


def _live_tickets(d: Path) -> list[Path]:
    """The waiting jobs' tickets, oldest first. A ticket is live while its job holds an
    ``flock`` on it; one whose job died (the kernel dropped the lock) is removed here."""
    live = []
    for t in sorted(d.glob("wait-*.ticket")):
        try:
            f = take_lock(t, shared=True)
        except FileNotFoundError:
            continue
        if f is None:
            live.append(t)  # its job holds it: still waiting
        else:
            t.unlink(missing_ok=True)  # nobody holds it: its job is gone
            f.close()
    return live


def acquire_slot(root, n: int, on_wait=None, check=None, poll: float = 0.5):
    """Block until one of the ``n`` slots of store ``root`` is free; returns the open lock
    file (close it, or exit, to free the slot). ``on_wait()`` is called once if it has to wait;
    ``check()`` before each retry (raise from it, e.g. Cancelled, to stop waiting).

    First come, first served: a job that has to wait takes a ticket
    (``wait-<time_ns>-<pid>.ticket``, flock-held), and only the oldest live ticket's job may
    take a freed slot, so a newcomer never overtakes a job already waiting."""
    d = Path(root) / SLOTS_DIR
    d.mkdir(parents=True, exist_ok=True)
    ticket, held = None, None
    try:
        while True:
            older = [t for t in _live_tickets(d) if t != ticket and (ticket is None or t.name < ticket.name)]
            if not older:
                f = _try_slot(root, n)
                if f is not None:
                    return f
            if ticket is None:
                # locked before it gets its name, so no one ever sees it unheld (and stale)
                name = f"wait-{time.time_ns():020d}-{os.getpid()}.ticket"
                held = take_lock(d / f".{name}", wait=True)
                ticket = d / name
                os.replace(d / f".{name}", ticket)
                if on_wait is not None:
                    on_wait()
            if check is not None:
                check()
            time.sleep(poll)
    finally:
        if held is not None:
            for t in (ticket, Path(held.name)):
                if t is not None:
                    Path(t).unlink(missing_ok=True)
            held.close()


def waiting_message(n: int) -> str:
    return f"waiting for a free core ({n} analysis job{'s' if n != 1 else ''} at a time)"


# --- tasks ------------------------------------------------------------------------------
def _embedding(method):
    def fn(run, checkpoint, p, progress):
        from .embeddings import embed_checkpoint

        if progress:
            progress(0.0, f"{method}: features")
        out = embed_checkpoint(run, checkpoint, method, **p)
        return out

    return fn


def _fig7(run, checkpoint, p, progress):
    from .activations import fig7

    return {"table": fig7(run, checkpoint, p["n"])}


def _activations(run, checkpoint, p, progress):
    from .activations import activation_stats
    from .loading import heldout_batch, load

    model, ds = load(run, checkpoint)
    return {"table": activation_stats(model, heldout_batch(ds, p["n"])[0])}


def _confusion(run, checkpoint, p, progress):
    from .evaluation import evaluate_checkpoint

    r = evaluate_checkpoint(run, checkpoint, p["n"])
    return {
        "confusion": r["confusion"],
        "per_class": r["per_class"],
        "error": r["error"],
        "classes": r["classes"],
    }


def _lesion(run, checkpoint, p, progress):
    from .loading import heldout_batch, load
    from .studies.lesion import lesion_each

    model, ds = load(run, checkpoint)
    x, y = heldout_batch(ds, p["n"])
    return {"table": lesion_each(model, x, y, progress)}


def _lesion_random(run, checkpoint, p, progress):
    from .loading import heldout_batch, load
    from .studies.lesion import lesion_random

    model, ds = load(run, checkpoint)
    x, y = heldout_batch(ds, p["n"])
    return {"table": lesion_random(model, x, y, samples=p["samples"], seed=p["seed"], progress=progress)}


def _probe(ds, split: str, n: int):
    """The first ``n`` images of ``split`` ("train": un-augmented training images, as Li et
    al. plot the training loss; "test"), normalized, and their labels."""
    from resnet_core.data import normalize

    from .loading import heldout_batch

    if split == "test":
        return heldout_batch(ds, n)
    if split != "train":
        raise ValueError(f"split={split!r} is not accepted; use 'train' or 'test'")
    return normalize(ds.x_train[:n], ds.mean, ds.std), ds.y_train[:n]


def _landscape(dim):
    def fn(run, checkpoint, p, progress):
        from .loading import load
        from .studies import landscape

        model, ds = load(run, checkpoint)
        x, y = _probe(ds, p["split"], p["n"])
        f = landscape.landscape_1d if dim == 1 else landscape.landscape_2d
        return {"table": f(model, x, y, p["steps"], p["span"], p["seed"], progress), "n_images": int(len(y))}

    return fn


def _shattering(run, checkpoint, p, progress):
    from .loading import heldout_batch, load
    from .studies.shattering import image_shattering

    model, ds = load(run, checkpoint)
    x, y = heldout_batch(ds, 1, start=p["image"])
    if not len(y):
        raise ValueError(
            f"image={p['image']} is not accepted: the test set has "
            f"{len(ds.y_test)} images (0..{len(ds.y_test) - 1})"
        )
    # f: the logit of the image's own class; BN with its running statistics (eval mode)
    return {
        "table": image_shattering(
            model, x[0], int(y[0]), p["n_points"], p["span"], p["seed"], "eval", p["max_lag"]
        ),
        "target": int(y[0]),
        "class": ds.classes[int(y[0])],
    }


# name -> (function, default parameters, inline)
TASKS = {
    "pca": (_embedding("pca"), {"n": 2000, "seed": 0}, True),
    "umap": (_embedding("umap"), {"n": 2000, "seed": 0, "n_neighbors": 15, "min_dist": 0.1}, False),
    "tsne": (_embedding("tsne"), {"n": 2000, "seed": 0, "perplexity": 30.0}, False),
    "fig7": (_fig7, {"n": None}, True),
    "activations": (_activations, {"n": 1000}, True),
    "confusion": (_confusion, {"n": None}, True),
    "lesion": (_lesion, {"n": None}, False),
    "lesion_random": (_lesion_random, {"n": 1000, "samples": 10, "seed": 0}, False),
    "landscape1d": (_landscape(1), {"n": 512, "split": "train", "steps": 21, "span": 1.0, "seed": 0}, False),
    "landscape2d": (_landscape(2), {"n": 512, "split": "train", "steps": 21, "span": 1.0, "seed": 0}, False),
    "shattering": (_shattering, {"image": 0, "n_points": 256, "span": 1.0, "seed": 0, "max_lag": 32}, False),
}


def _params(task: str, params: dict) -> dict:
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not accepted; use one of {', '.join(TASKS)}")
    defaults = TASKS[task][1]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"task {task!r}: unknown parameter(s) {unknown}; accepted: {', '.join(defaults)}")
    return {**defaults, **params}


def key_of(run: Run, task: str, checkpoint: str = "last", **params) -> str:
    return cache.cache_key(run, task, checkpoint, _params(task, params))


def _job_path(run, key):
    return Path(run.cache_dir) / f"{key}.job.json"


def _cancel_path(run, key):
    return Path(run.cache_dir) / f"{key}.cancel"


# --- the API ----------------------------------------------------------------------------
def compute(run: Run, task: str, checkpoint: str = "last", progress=None, **params) -> dict:
    """Compute in this process (cached on disk); returns the result dict."""
    p = _params(task, params)
    key = cache.cache_key(run, task, checkpoint, p)
    hit = cache.load(run, key)
    if hit is not None:
        return hit
    result = TASKS[task][0](run, checkpoint, p, progress)
    cache.save(run, key, result)
    return cache.load(run, key)


def status(run: Run, task: str, checkpoint: str = "last", **params) -> dict:
    """{"state", "progress" (0..1), "message", "key"} for this task and parameters."""
    key = key_of(run, task, checkpoint, **params)
    if cache.result_path(run, key).exists():
        return {"state": "done", "progress": 1.0, "message": "", "key": key}
    job = run_json(_job_path(run, key))
    if job is None:
        return {"state": "missing", "progress": 0.0, "message": "", "key": key}
    state = job.get("state", "missing")
    now = time.time()
    if state in ("running", "starting") and not (
        record_alive(job, now, JOB_FRESH_S) or _driver_alive(run, key, job, now)
    ):
        # "starting" without a pid: the starter is between writing it and Popen
        if job.get("pid") is not None or time.time() - job.get("updated", 0) > 30:
            state = "interrupted"
            job["message"] = f"the job (pid {job.get('pid')}) stopped without a result; see cache/{key}.log"
    return {
        "state": state,
        "progress": float(job.get("progress") or 0.0),
        "message": job.get("message", ""),
        "key": key,
    }


# a job of another host that has not beaten for this long is dead (it beats every HEARTBEAT_S)
JOB_FRESH_S = 3 * HEARTBEAT_S + 10


def _driver(run: Run, key: str, job: dict) -> dict:
    """The beat of the Ray driver of the job whose record is ``job`` ({} if none, or another
    job's: the token must match)."""
    from resnet_core.raybackend import driver_beat_path

    beat = run_json(Path(driver_beat_path(_job_path(run, key)))) or {}
    return beat if job.get("token") and beat.get("token") == job.get("token") else {}


def _driver_alive(run: Run, key: str, job: dict, now: float) -> bool:
    """A job still waiting in Ray's queue has written nothing of its own: it lives while its
    driver does (by pid on the driver's host, by the driver's beat elsewhere)."""
    beat = _driver(run, key, job) if job.get("state") == "starting" else {}
    return bool(beat) and record_alive(beat, now, JOB_FRESH_S)


def run_json(p: Path):
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def job_command(run: Run, task: str, checkpoint: str, params: dict, threads: int, token: str) -> list[str]:
    """The background process's command (an argument list: never a shell)."""
    return [
        sys.executable,
        "-m",
        "analysis.jobs",
        "--root",
        str(run.root),
        "--run",
        run.id,
        "--task",
        task,
        "--checkpoint",
        checkpoint,
        "--params",
        json.dumps(params),
        "--threads",
        str(threads),
        "--token",
        token,
    ]


def analysis_backend() -> str:
    """Where background analyses run: $RESNET_LAB_ANALYSIS_BACKEND ("local", the default, or
    "ray": one Ray task each, on the running cluster at $RAY_ADDRESS, which it needs)."""
    raw = os.environ.get(ANALYSIS_BACKEND_ENV, "").strip().lower() or "local"
    if raw not in launch.BACKENDS:
        raise ValueError(
            f"{ANALYSIS_BACKEND_ENV}={raw!r} is not accepted; use one of: {', '.join(launch.BACKENDS)}"
        )
    if raw == "ray" and not os.environ.get("RAY_ADDRESS"):
        raise ValueError(
            f"{ANALYSIS_BACKEND_ENV}=ray needs RAY_ADDRESS (a running cluster): without it each "
            "analysis would start a Ray cluster of its own"
        )
    return raw


def start(run: Run, task: str, checkpoint: str = "last", threads: int = 1, **params) -> dict:
    """Start the background process (unless one is running or the result exists)."""
    st = status(run, task, checkpoint, **params)
    if st["state"] in ("done", "running", "starting"):
        return st
    max_jobs()  # a bad $RESNET_LAB_ANALYSIS_JOBS is reported here, not by a failed job
    p = _params(task, params)
    key = st["key"]
    Path(run.cache_dir).mkdir(parents=True, exist_ok=True)
    try:
        _cancel_path(run, key).unlink()
    except FileNotFoundError:
        pass
    env = child_env(threads=threads)  # t-SNE (OpenMP) and UMAP (numba) stay in their share
    token = secrets.token_hex(8)  # this job's: its own writes and its driver's carry it
    starting = {
        "token": token,
        "state": "starting",
        "pid": None,
        "pid_start": None,
        "host": launch.this_host(),  # its pid, written next, means something on this host only
        "progress": 0.0,
        "message": "starting",
        "task": task,
        "updated": time.time(),
    }
    driven = analysis_backend() == "ray"
    if driven:
        starting["message"] = f"waiting for a Ray node with {threads} free CPU(s)"
    atomic_write_json(_job_path(run, key), starting)
    cmd, log = job_command(run, task, checkpoint, p, threads, token), Path(run.cache_dir) / f"{key}.log"
    if driven:  # a local driver runs it as a Ray task and waits for it:
        # the record's pid until the task writes its own (it waits in Ray's queue meanwhile)
        from resnet_core.raybackend import driver_command

        address = os.environ.get("RAY_ADDRESS") or None
        cmd = driver_command([*cmd, "--no-slot"], address, threads, log, _job_path(run, key), token)
    job = launch.get_backend("local").launch(cmd, env, REPO_ROOT, log)
    if (run_json(_job_path(run, key)) or {}).get("state") == "starting":  # the child may be quicker
        driver = {**launch.process_identity(job.pid), "driver": True} if driven else {}
        atomic_write_json(_job_path(run, key), {**starting, "pid": job.pid, "updated": time.time(), **driver})
    return status(run, task, checkpoint, **params)


def get_or_start(
    run: Run,
    task: str,
    checkpoint: str = "last",
    retry: bool = False,
    background: bool | None = None,
    **params,
):
    """The result if cached; computed now for quick tasks; else start it and return None."""
    p = _params(task, params)
    key = cache.cache_key(run, task, checkpoint, p)
    hit = cache.load(run, key)
    if hit is not None:
        return hit
    inline = TASKS[task][2] if background is None else not background
    if inline:
        return compute(run, task, checkpoint, **params)
    st = status(run, task, checkpoint, **params)
    if st["state"] == "missing" or (retry and st["state"] not in ("running", "starting")):
        start(run, task, checkpoint, **params)
    return None


def cancel(run: Run, task: str, checkpoint: str = "last", **params) -> None:
    """Ask the background job to stop at its next progress report."""
    key = key_of(run, task, checkpoint, **params)
    Path(run.cache_dir).mkdir(parents=True, exist_ok=True)
    _cancel_path(run, key).touch()
    job = run_json(_job_path(run, key)) or {}
    # only a job that recorded its own identity (and so has its SIGTERM handler in place);
    # one of another host stops at its next progress report, on the cancel file
    if job.get("state") == "running" or (job.get("state") == "starting" and job.get("driver")):
        signal_record(job, signal.SIGTERM)
    driver = _driver(run, key, job)
    if driver:  # a Ray driver of this host cancels its task, queued or computing on any node
        signal_record(driver, signal.SIGTERM)


def wait(run: Run, task: str, checkpoint: str = "last", timeout: float = 300.0, **params) -> dict:
    """Block until the task is no longer running (for scripts and tests); returns status."""
    t0 = time.time()
    while True:
        st = status(run, task, checkpoint, **params)
        if st["state"] not in ("running", "starting") or time.time() - t0 > timeout:
            return st
        time.sleep(0.2)


# --- the background process -------------------------------------------------------------
class _Record:
    """The job's record, ``cache/<key>.job.json``: rewritten at each change of state or
    progress, and by a daemon thread every HEARTBEAT_S with a fresh ``heartbeat`` while it
    runs, so a job on another host (whose pid means nothing here) is seen alive by its beat
    even while a long fit reports no progress."""

    def __init__(self, path: Path, identity: dict):
        self.path, self.identity = path, identity
        self.current: dict | None = None
        self.lock = threading.Lock()
        self.ended = threading.Event()
        threading.Thread(target=self._beat, daemon=True).start()

    def write(self, state: str, progress: float, message: str) -> None:
        with self.lock:
            self.current = {
                "state": state,
                "progress": progress,
                "message": message,
                "updated": time.time(),
                **self.identity,
            }
            self._put()

    def _put(self) -> None:
        atomic_write_json(self.path, dict(self.current, heartbeat=time.time()))

    def _beat(self) -> None:
        while not self.ended.wait(HEARTBEAT_S):
            with self.lock:
                if self.current is not None and not self.ended.is_set():
                    self._put()

    def stop(self) -> None:
        """No more beats (before the last write, so no beat can follow it)."""
        with self.lock:
            self.ended.set()


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m analysis.jobs", description="Compute one cached analysis of a checkpoint."
    )
    ap.add_argument("--root", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--task", required=True, choices=sorted(TASKS))
    ap.add_argument("--checkpoint", default="last")
    ap.add_argument("--params", default="{}")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-slot", action="store_true", help="take no slot (a Ray task: Ray counts the CPUs)")
    ap.add_argument("--token", default=None, help="the job's token, kept in every write of its record")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, a.threads))
    from resnet_core.store import RunStore

    run = RunStore(a.root).run(a.run)
    params = json.loads(a.params)
    key = key_of(run, a.task, a.checkpoint, **params)
    jp, cp = _job_path(run, key), _cancel_path(run, key)
    record = _Record(jp, {"task": a.task, **process_identity(), **({"token": a.token} if a.token else {})})
    write = record.write
    last = {"t": 0.0}

    def progress(frac, message=""):
        if cp.exists():
            raise Cancelled(f"cancelled at {frac:.0%}")
        now = time.time()
        if now - last["t"] > 0.5:
            last["t"] = now
            write("running", float(frac), message)

    def on_term(signum, frame):
        raise Cancelled("cancelled")

    def check_cancel():
        if cp.exists():
            raise Cancelled("cancelled while waiting for a free core")

    signal.signal(signal.SIGTERM, on_term)
    slot = None
    try:
        n = max_jobs()
        if not a.no_slot:
            slot = acquire_slot(
                run.root, n, on_wait=lambda: write("running", 0.0, waiting_message(n)), check=check_cancel
            )
        write("running", 0.0, "loading")
        compute(run, a.task, a.checkpoint, progress, **params)
    except (Cancelled, KeyboardInterrupt) as e:  # KeyboardInterrupt: ray.cancel of its task
        write("cancelled", 0.0, str(e) or "cancelled")
        return 1
    except BaseException as e:
        write("failed", 0.0, f"{type(e).__name__}: {e}")
        raise
    finally:
        record.stop()
        if slot is not None:
            slot.close()  # frees the slot (so would the process's exit)
        try:
            cp.unlink()
        except FileNotFoundError:
            pass
    write("done", 1.0, "")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
