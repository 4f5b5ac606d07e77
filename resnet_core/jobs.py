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


def submit(
    store: RunStore,
    config: TrainConfig,
    start_runner: bool = True,
    backend: str | None = None,
    address: str | None = None,
) -> Run:
    """Queue ``config``. ``backend``: "local" (a process of this host; the default, or
    $RESNET_LAB_BACKEND) or "ray" (a Ray task on the cluster at ``address``, $RAY_ADDRESS,
    or a local one the runner starts), recorded in the run's status for the runner."""
    from .memory import check_run

    config.validate()
    check_source(config.dataset)
    check_run(config)  # what can't fit is refused now, not queued to fail later
    fields = _backend_fields(store, backend, address)  # so is a backend that can't be used
    # the backend is part of the first status: a runner draining meanwhile, or a kill right
    # after, never sees the run queued without it (and starts it here)
    waits = "waiting to be handed to the Ray cluster" if fields else "waiting for a free core"
    run = store.create(config, state="queued", message=waits, **fields)
    if start_runner:
        ensure_runner(store)
    return run


_checked_stores: set = set()


def _backend_fields(store: RunStore, backend: str | None, address: str | None) -> dict:
    """The status fields that send a run to its backend ({} for local). A Ray launch is
    refused here, before anything is queued, when Ray is missing, the cluster can't be
    reached, or a worker can't write the store (checked once per store and process)."""
    name = launch.backend_name(backend)
    if name == "local":
        return {}
    address = address or os.environ.get("RAY_ADDRESS") or None
    key = (str(store.root.resolve()), address)
    if key not in _checked_stores:  # from a child: only the runner becomes a Ray driver
        from .raybackend import check_store_isolated

        check_store_isolated(store.root, address)
        _checked_stores.add(key)
    return {"backend": name, "ray_address": address}


def resume(
    store: RunStore,
    run_id: str,
    start_runner: bool = True,
    foreground: bool = False,
    backend: str | None = None,
    address: str | None = None,
) -> Run:
    run = store.run(run_id)
    s = run.read_status()
    if s["state"] not in RESUMABLE + ("queued",):
        raise StoreError(
            f"run {run_id} is {s['state']}; resume accepts {', '.join(RESUMABLE)} and queued runs"
        )
    run.read_config()  # a broken config is reported now, not in the background
    fields = {} if foreground else _backend_fields(store, backend, address)
    if s.get("backend") or s.get("node"):  # it ran on ray: where it resumes is asked anew
        fields = {"backend": None, "ray_address": None, "node": None, **fields}
    try:
        (run.path / "cancel").unlink()
    except FileNotFoundError:
        pass
    if foreground:  # this process trains it now: never show it queued, or a runner starts it too
        run.write_status(
            state="running",
            message=f"resuming from step {s.get('step', 0)}",
            **{**fields, **process_identity()},
        )
        return run
    run.write_status(
        state="queued",
        message=f"queued to resume from step {s.get('step', 0)}",
        pid=None,
        pid_start=None,
        **fields,
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
import time
for attempt in range(4):  # a caller asking whether a runner lives holds the lock for an instant
    if attempt:
        time.sleep(0.1)  # a few tries, briefly: a starter that finds a real runner exits soon
    lock = launch.take_lock(os.path.join(root, ".runner.lock"))
    if lock is not None:
        break
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
    asked: dict[str, float] = {}  # run id -> when its cancel file was first seen (remote jobs)
    started = 0
    try:
        while True:
            for rid, (p, _) in list(children.items()):
                if p.poll() is not None:
                    del children[rid]
                    asked.pop(rid, None)  # a resumed run cancelled again is cancelled again
                    why = getattr(getattr(p, "handle", None), "error", "")
                    _mark_if_never_started(Run(store.root, rid), p.returncode, why)
                elif getattr(p, "backend", "local") != "local":
                    _cancel_if_asked(Run(store.root, rid), p, asked)
            infos = store.list_runs()
            queued = [i for i in infos if i["status"].get("state") == "queued" and i["id"] not in children]
            queued.sort(key=lambda i: (_num(i["status"].get("created"), 0.0), i["id"]))
            running_elsewhere = sum(  # on this host's cores: a Ray run's are the cluster's
                int(_num(i["status"].get("threads"), 1))
                for i in infos
                if i["status"].get("state") == "running"
                and i["id"] not in children
                and i["status"].get("backend") in (None, "local")
            )
            used = running_elsewhere + sum(t for _, t in children.values())
            for info in queued:
                run = Run(store.root, info["id"])
                if run.cancel_requested():
                    continue
                if info["status"].get("backend") not in (None, "local"):
                    p = _start_remote(store, run, info["status"])
                    if p is not None:  # Ray queues it until a node has its CPUs free
                        children[info["id"]] = (p, 0)
                        started += 1
                    continue
                free = ncores - used
                n_jobs = len(children) + len(queued)
                want = max(1, ncores // max(1, min(max_jobs, n_jobs)))
                recorded = _json_dict(run, "env.json").get("threads")
                if recorded and run.checkpoint_path("last").exists():
                    want = min(int(_num(recorded, want)), ncores)  # a resumed run keeps its threads
                named = _json_dict(run, "config.json").get("threads")
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


def _json_dict(run: Run, name: str) -> dict:
    """A run file's JSON object, or {} for a missing or unreadable one or one that is not an
    object (a list in config.json fails that run's trainer, never the runner)."""
    try:
        d = run.read_json(name)
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def _num(v, default):
    """A number from a status field, or the default (one odd status must not stop the queue)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v > 0:
        return v
    return default


def _mark_if_never_started(run: Run, returncode: int, why: str = "") -> None:
    """A trainer that died before it wrote "running" (bad install, killed at start-up) would
    stay queued forever and be restarted in a loop: end it as failed with its log's tail."""
    try:
        s = run.read_status_raw()
        if run.read_status()["state"] == "running" and not why:
            return  # another live process trains it (this trainer was refused)
    except (OSError, StoreError):
        return
    if s["state"] in ("queued", "running"):
        try:
            tail = (run.path / "train.log").read_text(errors="replace").strip().splitlines()[-3:]
        except OSError:
            tail = []
        state = "failed" if s["state"] == "queued" else "interrupted"
        # ``why``: the backend's reason (Ray gave up on the task): its trainer is dead even
        # where a remote heartbeat is still fresh, so the reason is written then too
        try:
            run.write_status(
                state=state,
                message=f"the trainer exited with code {returncode} before finishing: "
                f"{' | '.join(tail + ([why] if why else []))}"[:1000],
            )
        except (OSError, StoreError):
            pass  # deleted or unwritable meanwhile: the runner goes on


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
    # a run with no backend in its status is a local one whatever $RESNET_LAB_BACKEND says
    # (that names the default for new submissions, read when they are queued)
    return launch.LocalBackend().launch(
        trainer_command(store, run.id, threads), child_env(threads=threads), REPO_ROOT, run.path / "train.log"
    )


# A remote trainer reads its run's cancel file at each step; one that has not stopped this long
# after it (still loading data, or waiting in Ray's queue) is stopped through the backend.
CANCEL_GRACE_S = 20.0


def _cancel_if_asked(run: Run, job: Job, asked: dict, grace_s: float = CANCEL_GRACE_S) -> None:
    """``asked``: run id -> when its cancel file was first seen (-1 once the backend was asked
    to stop it). A cancel file removed (resume) forgets it, so a later cancel counts anew."""
    if not run.cancel_requested():
        asked.pop(run.id, None)
        return
    first = asked.setdefault(run.id, time.time())
    if time.time() - first > grace_s and first > 0:
        asked[run.id] = -1.0  # once
        try:
            launch.get_backend(job.backend, (run.read_status_raw() or {}).get("ray_address")).cancel(job)
        except (StoreError, *_ray_errors()):
            pass  # its record or the cluster is gone: the task ends with it


def _remote_resources(run: Run, status: dict, backend) -> tuple[int, float]:
    """A Ray run's CPUs (its config's threads, else 1: many 1-CPU runs fill a node best) and
    GPU share (1/$RESNET_LAB_GPU_JOBS of one when it trains on a GPU: small CIFAR nets share)."""
    cfg = _json_dict(run, "config.json")
    named = cfg.get("threads")
    cpus = named if isinstance(named, int) and not isinstance(named, bool) and named >= 1 else 1
    wants_gpu = cfg.get("device") == "cuda" or (cfg.get("device", "auto") == "auto" and backend.gpus() > 0)
    if not wants_gpu:
        return cpus, 0.0
    try:
        share = max(1, int(os.environ.get("RESNET_LAB_GPU_JOBS", "4")))
    except ValueError:
        share = 4
    return cpus, 1.0 / share


def _start_remote(store: RunStore, run: Run, status: dict) -> Job | None:
    """Hand a queued run to its backend (Ray); a backend that can't take it fails the run
    with the reason, instead of leaving it queued to be retried forever."""
    from .raybackend import BackendError

    try:
        backend = launch.get_backend(status.get("backend"), status.get("ray_address"))
        cpus, gpus = _remote_resources(run, status, backend)
        unfit = backend.unfit(cpus, gpus) if hasattr(backend, "unfit") else None
        if unfit:  # Ray would hold it as infeasible: queued forever, the runner never exits
            raise BackendError(unfit)
        run.write_status(
            state="queued",
            message=f"submitted to {backend.name}: waiting for a node with {cpus} free CPU(s)"
            + (f" and {gpus:g} GPU" if gpus else ""),
            threads=cpus,
        )
        run.check_writable("train.log")
        return backend.launch(
            trainer_command(store, run.id, cpus),
            child_env(threads=cpus),
            REPO_ROOT,
            run.path / "train.log",
            cpus=cpus,
            gpus=gpus,
        )
    except (OSError, StoreError):
        pass  # deleted or unwritable meanwhile (StoreError is a ValueError: it comes first)
    except (BackendError, ValueError, *_ray_errors()) as e:
        # any error here would end the runner, which is the Ray driver: every task it launched
        # would die with it; so the run fails with the reason and the others go on
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        why = f"can't start on {status.get('backend')}: {first}"
        try:
            run.write_status(state="failed", message=why[:1000])
        except (OSError, StoreError):
            pass
    return None


def _ray_errors() -> tuple:
    """Ray's error base class where Ray is installed (a cluster that went away, a task that
    can't be submitted), else nothing."""
    try:
        from ray.exceptions import RayError
    except ImportError:
        return ()
    return (RayError,)


def active_runs(store: RunStore) -> list[dict]:
    return [i for i in store.list_runs() if i["status"].get("state") in ACTIVE]
