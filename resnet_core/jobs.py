"""The queue: runs wait in the store as ``queued``; a detached runner starts their trainers
while cores are free, splits the cores between them, and exits when the queue is empty.

The app and the CLI share it: both call ``submit`` (which makes sure a runner is alive), and
``sweep`` runs the same runner in the foreground. Only one runner drains a store at a time
(an ``flock`` on ``.runner.lock``), and it never gives trainers more threads than cores in all.

Cores, locks and process launching come from the job layer (``resnet_core.launch``), which
the background analyses share; the runner starts each trainer through its backend.
"""

from __future__ import annotations

import os
import sys
import time

from . import launch
from .config import TrainConfig
from .data import check_source
from .launch import REPO_ROOT, Job, child_env, cores, lock_held, take_lock  # noqa: F401 (cores: the app's)
from .store import ACTIVE, RESUMABLE, Run, RunStore, StoreError, process_identity

RUNNER_LOCK = ".runner.lock"


def submit(store: RunStore, config: TrainConfig, start_runner: bool = True) -> Run:
    from .memory import check_run

    config.validate()
    check_source(config.dataset)
    check_run(config)  # what can't fit is refused now, not queued to fail later
    launch.get_backend()  # so is a backend not accepted ($RESNET_LAB_BACKEND)
    run = store.create(config, state="queued", message="waiting for a free core")
    if start_runner:
        ensure_runner(store)
    return run


def resume(store: RunStore, run_id: str, start_runner: bool = True, foreground: bool = False) -> Run:
    run = store.run(run_id)
    s = run.read_status()
    if s["state"] not in RESUMABLE + ("queued",):
        raise StoreError(
            f"run {run_id} is {s['state']}; resume accepts {', '.join(RESUMABLE)} and queued runs"
        )
    run.read_config()  # a broken config is reported now, not in the background
    try:
        (run.path / "cancel").unlink()
    except FileNotFoundError:
        pass
    if foreground:  # this process trains it now: never show it queued, or a runner starts it too
        run.write_status(
            state="running", message=f"resuming from step {s.get('step', 0)}", **process_identity()
        )
        return run
    run.write_status(
        state="queued", message=f"queued to resume from step {s.get('step', 0)}", pid=None, pid_start=None
    )
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
    return take_lock(store.root / RUNNER_LOCK)


def runner_alive(store: RunStore) -> bool:
    store.root.mkdir(parents=True, exist_ok=True)
    return lock_held(store.root / RUNNER_LOCK)


# The detached runner's program. It takes the store's lock before it imports anything heavy:
# importing torch takes seconds and half a GB, and a runner that took the lock only after it
# (as `python -m resnet_core runner` does, resnet_core imports torch) let every page that
# looked meanwhile start one more (3 tabs made 3 runners, two servers up to 21). Every starter
# but the one that gets the lock exits within a fraction of a second, torch never imported.
# The lock is the job layer's (``launch.take_lock``), loaded from its file: importing it as
# ``resnet_core.launch`` would run ``resnet_core/__init__``, which imports torch.
RUNNER_BOOT = """
import importlib.util, os, sys
root, layer = sys.argv[1], sys.argv[2]
os.makedirs(root, exist_ok=True)
spec = importlib.util.spec_from_file_location("_resnet_lab_launch", layer)
launch = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(launch)
lock = launch.take_lock(os.path.join(root, ".runner.lock"))
if lock is None:
    sys.exit(0)  # another runner drains this store
from resnet_core.jobs import run_queue
from resnet_core.store import RunStore
run_queue(RunStore(root), lock=lock)
"""


def runner_command(store: RunStore) -> list[str]:
    """The command ``ensure_runner`` starts (in its own session, from the repository root)."""
    return [sys.executable, "-c", RUNNER_BOOT, str(store.root), launch.__file__]


def ensure_runner(store: RunStore) -> None:
    """Start a detached runner unless one already drains this store. The runner itself is
    always a process of this host (it holds the store's lock); its trainers go wherever the
    backend puts them."""
    if runner_alive(store):
        return
    launch.LocalBackend().launch(runner_command(store), child_env(), REPO_ROOT, store.root / ".runner.log")


def waiting(store: RunStore, infos: list[dict] | None = None) -> list[str]:
    """Ids of the queued runs that nothing has cancelled."""
    infos = store.list_runs() if infos is None else infos
    return [
        i["id"]
        for i in infos
        if i["status"].get("state") == "queued" and not Run(store.root, i["id"]).cancel_requested()
    ]


def restart_if_stranded(store: RunStore, infos: list[dict] | None = None) -> bool:
    """Start a runner when runs wait in the queue and none drains it (the runner was killed,
    or the terminal of a foreground sweep was closed). True when one was started. The app's
    Lab page and the CLI's commands that touch the store call it."""
    if not store.root.is_dir() or not waiting(store, infos) or runner_alive(store):
        return False
    ensure_runner(store)
    return True


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


def run_queue(
    store: RunStore,
    max_cores: int | None = None,
    poll: float = 0.5,
    on_tick=None,
    wait_for_lock: bool = False,
    lock=None,
) -> int:
    """Drain the queue: start trainers while cores are free; return when nothing is queued or
    running. Returns the number of trainers started (0 if another runner holds the store).
    ``lock``: the store's runner lock, already taken (by ``RUNNER_BOOT``)."""
    started = _drain(store, max_cores, poll, on_tick, wait_for_lock, lock)
    # A run submitted while this runner was deciding to stop found the lock still held and
    # started no runner: now that the lock is free, look once more.
    if waiting(store):
        ensure_runner(store)
    return started


def _drain(store: RunStore, max_cores, poll, on_tick, wait_for_lock, lock=None) -> int:
    lock = lock or _lock(store)
    while lock is None and wait_for_lock:
        time.sleep(poll)
        lock = _lock(store)
    if lock is None:
        return 0
    ncores = max_cores or cores()
    max_jobs = concurrent_jobs(ncores)
    children: dict[str, tuple[Job, int]] = {}
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
            running_elsewhere = sum(
                int(_num(i["status"].get("threads"), 1))
                for i in infos
                if i["status"].get("state") == "running" and i["id"] not in children
            )
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
        run.write_status(
            state=state,
            message=f"the trainer exited with code {returncode} before finishing: {' | '.join(tail)}"[:1000],
        )


def trainer_command(store: RunStore, run_id: str, threads: int) -> list[str]:
    """The trainer's command: ``python -m resnet_core _run ID`` trains one queued run."""
    return [
        sys.executable,
        "-m",
        "resnet_core",
        "_run",
        run_id,
        "--runs-dir",
        str(store.root),
        "--threads",
        str(threads),
    ]


def _start_trainer(store: RunStore, run: Run, threads: int) -> Job:
    # the trainer writes "running" itself; mark it so a second look does not start it twice
    run.write_status(state="queued", message=f"starting with {threads} thread(s)", threads=threads)
    run.check_writable("train.log")  # never append through a link out of the store
    return launch.get_backend().launch(
        trainer_command(store, run.id, threads), child_env(threads=threads), REPO_ROOT, run.path / "train.log"
    )


def active_runs(store: RunStore) -> list[dict]:
    return [i for i in store.list_runs() if i["status"].get("state") in ACTIVE]
