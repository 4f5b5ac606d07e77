"""The job layer's Ray backend: each job is one Ray task, declared with the CPUs (and GPU
share) it uses, that runs the job's command in a Ray worker on whichever node has them free.

The store must be one folder that every node reaches at the same path (a shared
filesystem): the task trains into it as a local trainer does. ``check_store`` asks a task on
every node to prove it before anything is queued. A run's trainer records the node it runs
on (``node`` in status.json); a run on another host is judged alive by its heartbeat only.

A worker or node that dies mid-run is a system failure to Ray: it runs the task again
(``max_retries``) on a live node, and the trainer resumes from the run's last checkpoint,
dropping the log lines written after it (the store's resume). Cancel: the run's cancel file
(which the trainer reads at each step, on any node), and ``ray.cancel`` from the process that
launched the task (a KeyboardInterrupt in the task: the trainer ends the run ``cancelled``).

Ray is optional (``pip install 'resnet-lab[ray]'``): nothing imports this module unless a
backend named ``ray`` is asked for.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import socket
import subprocess
import sys
import traceback

from .launch import NODE_ENV, REPO_ROOT, Backend, Job

CHECK_MARK = "resnet-lab store check: "  # the child's one line a BackendError is read from
INSTALL_HINT = (
    "the Ray backend needs Ray, which is not installed here: "
    "pip install 'resnet-lab[ray]' (or: pip install ray)"
)
MAX_RETRIES = 3  # how often Ray reruns a task whose worker or node died
TASK_ENV_PREFIXES = ("RESNET_LAB_", "OMP_", "MKL_", "NUMBA_")  # the job env a task carries


class BackendError(RuntimeError):
    """The Ray backend can't be used as asked (not installed, no cluster, a store the
    workers can't write). The message is one line naming what and what to do."""


def require_ray():
    try:
        import ray
    except ImportError:
        raise BackendError(INSTALL_HINT) from None
    return ray


_UNSET = object()
_connected = {"address": _UNSET}  # the address this process connected to (None: a local cluster)


def connect(address: str | None = None):
    """Connect this process to Ray: the cluster at ``address`` (or $RAY_ADDRESS), else a
    local one started now (it ends with this process). Workers find the lab on PYTHONPATH at
    this checkout's path, which every node must have. A process is connected to one cluster:
    asking for another one once connected is a BackendError (never a silent launch onto the
    first)."""
    ray = require_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        had = _connected["address"]
        if had is not _UNSET and had != address:
            raise BackendError(
                f"this process is connected to the Ray cluster at {had or '(a local one)'}; "
                f"it can't also use {address or 'a new local one'} (one cluster per process)"
            )
        return ray
    _reachable(address)
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="WARNING",
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
        )
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackendError(
            f"can't connect to the Ray cluster at {address or '(a new local one)'}: {first}"
        ) from None
    _connected["address"] = address
    return ray


def _reachable(address: str | None, timeout: float = 10.0) -> None:
    """A BackendError now when nothing answers at a ``host:port`` address: ray.init would
    retry for minutes before saying so. Other forms (auto, ray://...) are left to Ray."""
    host, sep, port = (address or "").rpartition(":")
    if not sep or not port.isdigit() or "/" in host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise BackendError(
            f"can't connect to the Ray cluster at {address}: nothing answers there "
            f"({type(e).__name__}); start one with `ray start --head` or give the address of a running one"
        ) from None


def task_env(env: dict) -> dict:
    """What of a job's environment goes into its Ray task's arguments (which Ray keeps in its
    object store and shows in its state API): the lab's settings and the thread caps, never the
    rest of the launcher's environment (tokens, keys). The worker applies the same subset."""
    return {k: v for k, v in env.items() if k.startswith(TASK_ENV_PREFIXES)}


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _node_label() -> str:
    import ray

    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"


def _run_command(cmd: list[str], env: dict, log: str) -> int:
    """In the Ray worker: run ``python -m MODULE ARGS`` (the command a local job runs as a
    process) in this worker process, its output appended to ``log``; returns its exit code.
    In-process, so a killed worker takes the trainer with it (nothing is left training on a
    node Ray has given up), and a ray.cancel reaches the trainer as a KeyboardInterrupt."""
    import runpy

    if len(cmd) < 3 or cmd[1] != "-m":
        raise ValueError(f"the ray backend runs `python -m MODULE ...` commands, not {cmd[:3]}")
    import signal

    saved_env, saved_argv, saved_term = dict(os.environ), sys.argv, signal.getsignal(signal.SIGTERM)
    os.environ.update(task_env(env))
    os.environ[NODE_ENV] = _node_label()
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = os.dup(1), os.dup(2)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        sys.argv = [cmd[2], *cmd[3:]]
        runpy.run_module(cmd[2], run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        raise  # ray.cancel: the task ends cancelled
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for f in saved_fds:
            os.close(f)
        sys.argv = saved_argv
        if saved_term is not None:  # the worker is reused: no job's handler may outlive it
            signal.signal(signal.SIGTERM, saved_term)
        os.environ.clear()
        os.environ.update(saved_env)


def _probe_store(root: str, token_name: str, token: str) -> str | None:
    """In a task on one node: None if the store at ``root`` is the driver's (the token file
    reads back) and writable here, else why not."""
    try:
        with open(os.path.join(root, token_name)) as f:
            if f.read() != token:
                return f"{root} on this node is another folder (its probe file differs)"
    except OSError as e:
        return f"{root} is not the same folder on this node ({type(e).__name__}: {e})"
    probe = os.path.join(root, f".ray-probe-{secrets.token_hex(6)}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"{root} is not writable on this node ({type(e).__name__}: {e})"
    return None


class _RayHandle:
    """A task's ObjectRef, read as a Popen: ``poll()`` is None while Ray runs (or reruns) it."""

    def __init__(self, ref):
        self.ref = ref
        self.error = ""

    def poll(self) -> int | None:
        import ray
        from ray.exceptions import RayError, TaskCancelledError

        try:
            ready, _ = ray.wait([self.ref], timeout=0, fetch_local=False)
        except RayError as e:  # the cluster went away: the task is lost with it
            self.error = _first_line(e)
            return -9
        if not ready:
            return None
        try:
            return int(ray.get(self.ref))
        except TaskCancelledError:
            return -15  # as a local job stopped by SIGTERM
        except RayError as e:  # its worker or node died more often than MAX_RETRIES
            self.error = _first_line(e)
            return -9


class RayBackend(Backend):
    name = "ray"

    def __init__(self, address: str | None = None):
        self.address = address
        self.ray = connect(address)
        self._run = self.ray.remote(_run_command)

    def launch(self, cmd, env, cwd, log, cpus: int = 1, gpus: float = 0.0) -> Job:
        ref = self._run.options(num_cpus=max(1, int(cpus)), num_gpus=gpus, max_retries=MAX_RETRIES).remote(
            list(cmd), task_env(env), str(log)
        )
        return Job(backend=self.name, handle=_RayHandle(ref))

    def cancel(self, job: Job) -> bool:
        if job.poll() is not None:
            return False
        self.ray.cancel(job.handle.ref, force=False)
        return True

    def gpus(self) -> float:
        return float(self.ray.cluster_resources().get("GPU", 0))

    def unfit(self, cpus: int, gpus: float) -> str | None:
        """Why no alive node could ever run a task of ``cpus`` CPUs and ``gpus`` GPU (Ray
        would hold it as infeasible, forever), or None when the largest node has them."""
        nodes = [n.get("Resources") or {} for n in self.ray.nodes() if n.get("Alive")]
        cpu_max = max((float(r.get("CPU", 0)) for r in nodes), default=0.0)
        gpu_max = max((float(r.get("GPU", 0)) for r in nodes), default=0.0)
        if cpus > cpu_max:
            return (
                f"no node of the Ray cluster has {cpus} CPU(s) (the largest has {cpu_max:g}); "
                "lower --threads or add a larger node"
            )
        if gpus > gpu_max:
            return (
                f"no node of the Ray cluster has {gpus:g} GPU (the run trains on cuda); "
                "use --device cpu or add a GPU node"
            )
        return None

    def check_store(self, root, timeout: float = 120.0) -> None:
        """Refuse (BackendError) a store that a task on some node can't write or sees as
        another folder: every node must reach the store at the same path."""
        from ray.exceptions import RayError
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        root = os.path.abspath(root)
        os.makedirs(root, exist_ok=True)
        token_name, token = f".ray-probe-{secrets.token_hex(6)}.token", secrets.token_hex(16)
        path = os.path.join(root, token_name)
        with open(path, "w") as f:
            f.write(token)
        probe = self.ray.remote(_probe_store)
        try:
            nodes = [n for n in self.ray.nodes() if n.get("Alive")]
            refs = {
                n.get("NodeManagerAddress", "?") + "/" + n["NodeID"][:8]: probe.options(
                    num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
                ).remote(root, token_name, token)
                for n in nodes
            }
            for node, ref in refs.items():
                try:
                    why = self.ray.get(ref, timeout=timeout)
                except RayError as e:  # the probe task failed or timed out on that node
                    raise BackendError(
                        f"the run store could not be checked on Ray node {node}: {_first_line(e)}"
                    ) from None
                if why:
                    raise BackendError(
                        f"the run store can't be used from Ray node {node}: {why}; every node must "
                        "reach the store at the same path (a shared filesystem, --runs-dir)"
                    )
        finally:
            os.unlink(path)


def check_store_isolated(root, address: str | None = None, timeout: float = 180.0) -> None:
    """``RayBackend.check_store`` run by a child process connected to Ray for this check only,
    so the process that queues runs (a terminal, the Streamlit server) never becomes a Ray
    driver: only the queue's detached runner does. BackendError with the child's one line
    when Ray is missing, the cluster can't be reached, or some node can't write the store."""
    if importlib.util.find_spec("ray") is None:
        raise BackendError(INSTALL_HINT)
    cmd = [sys.executable, "-m", "resnet_core.raybackend", os.path.abspath(root)]
    cmd += [address] if address else []
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    where = address or "(a new local one)"
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env=env)
    except subprocess.TimeoutExpired:
        raise BackendError(
            f"the Ray cluster at {where} did not answer the run store check within {timeout:.0f} s"
        ) from None
    if p.returncode == 0:
        return
    if "InvalidAuthToken" in p.stderr:  # Ray's token auth (on by default for `ray start`)
        raise BackendError(
            f"the Ray cluster at {where} refused this machine's Ray token: start the lab with "
            "RAY_AUTH_MODE=token and, unless this machine started the cluster, RAY_AUTH_TOKEN "
            "set to the cluster's token (`ray get-auth-token` on its head node)"
        )
    said = [ln[len(CHECK_MARK) :] for ln in p.stderr.splitlines() if ln.startswith(CHECK_MARK)]
    tail = [ln for ln in p.stderr.strip().splitlines() if ln.strip()][-1:]
    raise BackendError(
        said[-1]
        if said
        else f"the run store check on the Ray cluster at {where} failed: "
        + (tail[0] if tail else f"exit code {p.returncode}")
    )


def driver_command(cmd: list[str], address: str | None, cpus: int, log, record, token: str) -> list[str]:
    """The local process that runs ``cmd`` as one Ray task and waits for it (:func:`_drive`):
    the job's Ray driver, and the pid its record is judged by until the task has started.
    ``token``: the job's, in its record; the driver writes only a record that holds it."""
    return [
        sys.executable,
        "-m",
        "resnet_core.raybackend",
        "drive",
        "--address",
        address or "",
        "--cpus",
        str(cpus),
        "--log",
        str(log),
        "--record",
        str(record),
        "--token",
        token,
        "--",
        *cmd,
    ]


def driver_beat_path(record) -> str:
    """Where a driver beats while it lives (beside its job's record): a job waiting in Ray's
    queue has written nothing yet, and a page on another host judges it by this beat."""
    return f"{record}.driver"


def _read_json(path: str) -> dict:
    import json

    try:
        out = json.loads(open(path).read())
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def _end_record(path: str, token: str, returncode: int, why: str) -> None:
    """A job whose task ended without the job's own last word (never started, cancelled while
    waiting for a node, its node lost): its record says so, so it never reads as running.
    Only the record of this driver's job (its token): a newer job's is left alone."""
    import time

    from .store import atomic_write_json

    rec = _read_json(path)
    if rec.get("token") != token or rec.get("state") not in ("starting", "running"):
        return  # another job's record, or the job wrote its own end (done, failed, cancelled)
    state = "cancelled" if returncode == -15 else "failed"
    message = why or f"the Ray task ended with exit code {returncode} before the job reported"
    atomic_write_json(path, dict(rec, state=state, message=message, updated=time.time(), pid=os.getpid()))


def _beat(path: str, token: str, identity: dict) -> None:
    import time

    from .store import atomic_write_json

    atomic_write_json(path, {"token": token, "heartbeat": time.time(), **identity})


def _drive(argv: list[str]) -> int:
    """``drive --address A --cpus N --log L --record R --token T -- CMD...``: run CMD as one
    Ray task (on the cluster at A), wait for it and exit with its code, beating beside the
    record meanwhile; SIGTERM cancels the task (ray.cancel), queued or running."""
    import argparse
    import signal
    import time

    ap = argparse.ArgumentParser(prog="python -m resnet_core.raybackend drive")
    ap.add_argument("--address", default="")
    ap.add_argument("--cpus", type=int, default=1)
    ap.add_argument("--log", required=True)
    ap.add_argument("--record", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    asked = {"cancel": False}
    signal.signal(signal.SIGTERM, lambda *_: asked.update(cancel=True))
    from .launch import process_identity
    from .store import HEARTBEAT_S

    beat, me = driver_beat_path(a.record), process_identity()
    _beat(beat, a.token, me)
    try:
        backend = RayBackend(a.address or None)
        # again: connecting installed Ray's own SIGTERM handler (it logs and dies)
        signal.signal(signal.SIGTERM, lambda *_: asked.update(cancel=True))
        unfit = backend.unfit(a.cpus, 0.0)
        if unfit:
            raise BackendError(unfit)
        job = backend.launch(cmd, dict(os.environ), REPO_ROOT, a.log, cpus=a.cpus)
        cancelled, beaten = False, time.time()
        while job.poll() is None:
            if asked["cancel"] and not cancelled:
                cancelled = backend.cancel(job) or True
            if time.time() - beaten >= HEARTBEAT_S:  # as often as a job beats, not every poll
                _beat(beat, a.token, me)
                beaten = time.time()
            time.sleep(0.5)
        why = job.handle.error and f"Ray gave up on the task: {job.handle.error}"
        _end_record(a.record, a.token, job.returncode, why)
        return 0 if job.returncode == 0 else 1
    except BackendError as e:
        _end_record(a.record, a.token, 1, str(e))
        return 2
    finally:
        try:
            os.unlink(beat)
        except FileNotFoundError:
            pass


def _check_main(argv: list[str]) -> int:
    """``python -m resnet_core.raybackend ROOT [ADDRESS]``: check_store from this process."""
    try:
        RayBackend(argv[1] if len(argv) > 1 else None).check_store(argv[0])
    except BackendError as e:
        print(CHECK_MARK + str(e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_drive(sys.argv[2:]) if sys.argv[1:2] == ["drive"] else _check_main(sys.argv[1:]))
