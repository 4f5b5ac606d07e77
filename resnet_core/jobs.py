"""The queue: runs wait in the store as ``queued``; a detached runner starts their trainers
while cores are free, splits the cores between them, and exits when the queue is empty.

The app and the CLI share it: both call ``submit`` (which makes sure a runner is alive), and
``sweep`` runs the same runner in the foreground. Only one runner drains a store at a time
(an ``flock`` on ``.runner.lock``), and it never gives trainers more threads than cores in all.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

from .config import TrainConfig
from .data import check_source
from .store import ACTIVE, RESUMABLE, Run, RunStore, StoreError, process_identity

REPO_ROOT = Path(__file__).resolve().parent.parent


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def submit(store: RunStore, config: TrainConfig, start_runner: bool = True) -> Run:
    config.validate()
    check_source(config.dataset)
    run = store.create(config, state="queued", message="waiting for a free core")
    if start_runner:
        ensure_runner(store)
    return run


def resume(store: RunStore, run_id: str, start_runner: bool = True,
           foreground: bool = False) -> Run:
    run = store.run(run_id)
    s = run.read_status()
    if s["state"] not in RESUMABLE:
        raise StoreError(f"run {run_id} is {s['state']}; resume accepts {', '.join(RESUMABLE)} runs")
    run.read_config()  # a broken config is reported now, not in the background
    try:
        (run.path / "cancel").unlink()
    except FileNotFoundError:
        pass
    if foreground:  # this process trains it now: never show it queued, or a runner starts it too
        run.write_status(state="running", message=f"resuming from step {s.get('step', 0)}",
                         **process_identity())
        return run
    run.write_status(state="queued", message=f"queued to resume from step {s.get('step', 0)}",
                     pid=None, pid_start=None)
    if start_runner:
        ensure_runner(store)
    return run


def cancel(store: RunStore, run_id: str) -> str:
    """Cancel a queued run at once, or ask a running one to stop at its next step."""
    run = store.run(run_id)
    s = run.read_status()
    if s["state"] == "queued":
        run.request_cancel()  # the runner skips it even if it reads the queue right now
        run.write_status(state="cancelled", message="cancelled before it started")
        return "cancelled"
    if s["state"] == "running":
        run.request_cancel()
        return "cancelling"
    raise StoreError(f"run {run_id} is {s['state']}; only queued or running runs can be cancelled")


def _lock(store: RunStore):
    store.root.mkdir(parents=True, exist_ok=True)
    f = open(store.root / ".runner.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def runner_alive(store: RunStore) -> bool:
    f = _lock(store)
    if f is None:
        return True
    f.close()
    return False


def ensure_runner(store: RunStore) -> None:
    """Start a detached runner unless one already drains this store."""
    if runner_alive(store):
        return
    log = open(store.root / ".runner.log", "ab")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    subprocess.Popen([sys.executable, "-m", "resnet_core", "runner", "--runs-dir", str(store.root)],
                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                     start_new_session=True, cwd=str(REPO_ROOT))
    log.close()


def _threads_in_use(store: RunStore) -> int:
    used = 0
    for info in store.list_runs():
        if info["status"].get("state") == "running":
            used += int(info["status"].get("threads") or 1)
    return used


def concurrent_jobs(ncores: int) -> int:
    """How many trainers may run at once. On CPU, one per core at most (each gets
    cores // jobs threads). On a GPU the CIFAR nets are far too small to fill it alone, so
    several share it ($RESNET_LAB_GPU_JOBS, default 4), with the CPU threads split between them."""
    import torch

    if torch.cuda.is_available():
        try:
            n = int(os.environ.get("RESNET_LAB_GPU_JOBS", "4"))
        except ValueError:
            n = 4
        return max(1, min(n, ncores))
    return ncores


def run_queue(store: RunStore, max_cores: int | None = None, poll: float = 0.5,
              on_tick=None, wait_for_lock: bool = False) -> int:
    """Drain the queue: start trainers while cores are free; return when nothing is queued or
    running. Returns the number of trainers started (0 if another runner holds the store)."""
    started = _drain(store, max_cores, poll, on_tick, wait_for_lock)
    # A run submitted while this runner was deciding to stop found the lock still held and
    # started no runner: now that the lock is free, look once more.
    if any(i["status"].get("state") == "queued" and not Run(store.root, i["id"]).cancel_requested()
           for i in store.list_runs()):
        ensure_runner(store)
    return started


def _drain(store: RunStore, max_cores, poll, on_tick, wait_for_lock) -> int:
    lock = _lock(store)
    while lock is None and wait_for_lock:
        time.sleep(poll)
        lock = _lock(store)
    if lock is None:
        return 0
    ncores = max_cores or cores()
    max_jobs = concurrent_jobs(ncores)
    children: dict[str, tuple[subprocess.Popen, int]] = {}
    started = 0
    try:
        while True:
            for rid, (p, _) in list(children.items()):
                if p.poll() is not None:
                    del children[rid]
                    _mark_if_never_started(Run(store.root, rid), p.returncode)
            infos = store.list_runs()
            queued = [i for i in infos if i["status"].get("state") == "queued" and i["id"] not in children]
            queued.sort(key=lambda i: (_num(i["status"].get("created"), 0.0), i["id"]))
            running_elsewhere = sum(int(_num(i["status"].get("threads"), 1)) for i in infos
                                    if i["status"].get("state") == "running" and i["id"] not in children)
            used = running_elsewhere + sum(t for _, t in children.values())
            for info in queued:
                run = Run(store.root, info["id"])
                if run.cancel_requested():
                    continue
                free = ncores - used
                n_jobs = len(children) + len(queued)
                want = max(1, ncores // max(1, min(max_jobs, n_jobs)))
                recorded = (run.read_json("env.json") or {}).get("threads")
                if recorded and run.checkpoint_path("last").exists():
                    want = min(int(_num(recorded, want)), ncores)  # a resumed run keeps its threads
                named = (run.read_json("config.json") or {}).get("threads")
                if isinstance(named, int) and not isinstance(named, bool) and named >= 1:
                    want = min(named, ncores)  # the config names its threads: a run is its config
                if free < want and (children or running_elsewhere):
                    break
                want = max(1, min(want, free)) if free > 0 else want
                try:
                    p = _start_trainer(store, run, want)
                except (OSError, StoreError):
                    continue  # deleted or unwritable meanwhile: the other runs still start
                children[info["id"]] = (p, want)
                used += want
                started += 1
            if on_tick is not None:
                on_tick(store)
            if not children and not queued:
                return started
            if not children and queued and all(Run(store.root, i["id"]).cancel_requested() for i in queued):
                return started
            time.sleep(poll)
    finally:
        lock.close()


def _num(v, default):
    """A number from a status field, or the default (one odd status must not stop the queue)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v > 0:
        return v
    return default


def _mark_if_never_started(run: Run, returncode: int) -> None:
    """A trainer that died before it wrote "running" (bad install, killed at start-up) would
    stay queued forever and be restarted in a loop: end it as failed with its log's tail."""
    try:
        s = run.read_status_raw()
        if run.read_status()["state"] == "running":
            return  # another live process trains it (this trainer was refused)
    except StoreError:
        return
    if s["state"] in ("queued", "running"):
        try:
            tail = (run.path / "train.log").read_text(errors="replace").strip().splitlines()[-3:]
        except OSError:
            tail = []
        state = "failed" if s["state"] == "queued" else "interrupted"
        run.write_status(state=state, message=f"the trainer exited with code {returncode} "
                         f"before finishing: {' | '.join(tail)}"[:1000])


def _start_trainer(store: RunStore, run: Run, threads: int) -> subprocess.Popen:
    # the trainer writes "running" itself; mark it so a second look does not start it twice
    run.write_status(state="queued", message=f"starting with {threads} thread(s)", threads=threads)
    log = open(run.path / "train.log", "ab")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    p = subprocess.Popen([sys.executable, "-m", "resnet_core", "_run", run.id, "--runs-dir",
                          str(store.root), "--threads", str(threads)],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                         start_new_session=True, cwd=str(REPO_ROOT))
    log.close()
    return p


def active_runs(store: RunStore) -> list[dict]:
    return [i for i in store.list_runs() if i["status"].get("state") in ACTIVE]
