"""The job layer under the lab's two job systems: the training queue (``resnet_core.jobs``)
and the background analyses (``analysis.jobs``). One core count, one lock helper, one way to
launch a detached process, watch it and cancel it.

Launching goes through a :class:`Backend`: ``launch(cmd, env, cwd, log) -> Job``,
``alive(job)``, ``cancel(job)``. :class:`LocalBackend` (the default) starts the command as a
process of this host in its own session. A backend for a cluster plugs in behind the same
three calls (see ``get_backend``).

Watching a job that another process started goes by what it recorded about itself
(``process_identity()``: pid, pid start time, host, plus a heartbeat time where it beats):
on this host its pid and start time tell (a reused pid has another start time); on another
host a pid means nothing here, so only a fresh heartbeat tells (``record_alive``).

This module imports only the standard library, so a runner's boot code can load it by file
before anything imports torch (see ``resnet_core.jobs.RUNNER_BOOT``).
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BACKEND_ENV = "RESNET_LAB_BACKEND"
BACKENDS = ("local", "ray")
NODE_ENV = "RESNET_LAB_NODE"  # set by a backend that runs jobs on named nodes (ray)
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


# --- cores ---------------------------------------------------------------------------------
def cores() -> int:
    """The cores this process may use (its affinity mask, e.g. a container's or taskset's
    share), the one count the queue and the analyses split between their jobs."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def nofollow_opener(path, flags):
    """An ``open`` opener that refuses to follow a symbolic link at the last component."""
    return os.open(path, flags | os.O_NOFOLLOW, 0o644)


def open_log(path):
    """A log file opened for appending, never through a symbolic link (OSError ELOOP)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644), "ab")


# --- locks ---------------------------------------------------------------------------------
def take_lock(path, shared: bool = False, wait: bool = False, opener=None):
    """Take an ``flock`` on ``path``: the open file (close it, or exit, to release; the
    kernel drops it however the process ends), or None when another process holds it and
    ``wait`` is false. ``shared``: a shared lock, to ask whether anyone holds it exclusively
    (the file must exist: FileNotFoundError otherwise). ``opener``: how to open it; by
    default one that refuses a symbolic link (OSError ELOOP), so a link planted at a lock's
    name never creates or touches a file outside the store. Every lock of the lab is taken
    here: the queue's runner lock, a trainer's run lock, the analyses' slots and tickets."""
    # not inherited by children (PEP 446)
    f = open(path, "r" if shared else "a+", opener=opener or nofollow_opener)
    try:
        fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        f.close()
        return None
    except BaseException:
        f.close()
        raise
    return f


def lock_held(path) -> bool:
    """Whether another process holds the exclusive lock on ``path`` (found by taking and
    releasing it: use ``flock_held`` where taking it could make a starter refuse)."""
    f = take_lock(path)
    if f is None:
        return True
    f.close()
    return False


def flock_held(path: Path) -> bool | None:
    """Whether some process holds an flock on ``path``, read from /proc/locks (taking the
    lock to find out would make a trainer starting at that moment refuse to train). None
    where /proc/locks can't tell (not Linux)."""
    try:
        st = os.stat(path, follow_symlinks=False)
        with open("/proc/locks") as f:
            table = f.read()
    except FileNotFoundError:
        return False if os.path.exists("/proc/locks") else None
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(
        len(p) > 5 and p[1] == "FLOCK" and p[5] == dev for p in (line.split() for line in table.splitlines())
    )


# --- process identity and liveness ---------------------------------------------------------
def _proc_start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] in ("Z", "X"):  # a zombie: killed but not yet reaped
            return None
        return fields[19]
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int | None, start_time: str | None = None) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    if os.path.exists("/proc"):
        st = _proc_start_time(pid)
        if st is None:
            return False
        return start_time is None or st == start_time
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def this_host() -> str:
    return socket.gethostname()


def _read_id(path: str, stat_inode: bool = False) -> str | None:
    try:
        if stat_inode:
            return str(os.stat(path).st_ino)
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def pid_space() -> dict:
    """What, beside the host name, makes a pid of this process mean this process: its pid
    namespace (containers sharing a host name have their own) and the kernel's boot id (a
    cloned VM has the same host name, another boot). Linux only; {} elsewhere."""
    out = {
        "pidns": _read_id("/proc/self/ns/pid", stat_inode=True),
        "boot_id": _read_id("/proc/sys/kernel/random/boot_id"),
    }
    return {k: v for k, v in out.items() if v}


def process_identity(pid: int | None = None) -> dict:
    """What a job records about itself (or its launcher about the process ``pid`` of this
    host) so that others can watch and cancel it (and, under a backend that names its
    nodes, the node it runs on)."""
    pid = os.getpid() if pid is None else pid
    ident = {"pid": pid, "pid_start": _proc_start_time(pid), "host": this_host(), **pid_space()}
    if os.environ.get(NODE_ENV):
        ident["node"] = os.environ[NODE_ENV]
    return ident


def on_this_host(record: dict) -> bool:
    """Whether the pid in ``record`` is one of this process's pid space: the same host name,
    and the same pid namespace and boot where the record has them (a record without a host,
    or without those, is an older one: hosts, then namespaces, were recorded later)."""
    if record.get("host") not in (None, this_host()):
        return False
    mine = pid_space()
    return all(record.get(k) in (None, v) for k, v in mine.items())


def record_alive(record: dict, now: float, fresh_s: float, beat_key: str = "heartbeat") -> bool:
    """Whether the job that wrote ``record`` (``process_identity()`` fields and a heartbeat
    time under ``beat_key``) still lives: by its pid and start time on this host, by a
    heartbeat younger than ``fresh_s`` seconds on another (never a pid from another host)."""
    if not on_this_host(record):
        beat = record.get(beat_key)
        if isinstance(beat, bool) or not isinstance(beat, (int, float)):
            return False  # no readable heartbeat: nothing says it is alive
        return now - beat < fresh_s
    return pid_alive(record.get("pid"), record.get("pid_start"))


def signal_record(record: dict, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig`` to the job that wrote ``record`` if it is a live process of this host
    with the recorded start time (so never to a reused pid). True if sent."""
    pid, start = record.get("pid"), record.get("pid_start")
    if not (on_this_host(record) and start and pid_alive(pid, start)):
        return False
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


# --- launching -----------------------------------------------------------------------------
def child_env(threads: int | None = None, **extra) -> dict:
    """This process's environment for a job: the repository on PYTHONPATH (so ``python -m
    resnet_core`` works from any folder), and with ``threads``, every thread pool (torch's
    OpenMP and MKL, numba's) capped at that many, so a job stays in its share of the cores."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        ),
    )
    if threads is not None:
        env.update({v: str(max(1, int(threads))) for v in THREAD_VARS})
    env.update(extra)
    return env


@dataclass
class Job:
    """A launched job, as its launcher holds it. ``poll()`` and ``returncode`` read as a
    ``subprocess.Popen``'s (None while it runs), so the queue watches any backend's jobs alike."""

    backend: str  # the backend's name: "local", ...
    pid: int | None = None  # the process, where the backend knows it (local: always)
    host: str | None = None  # where it runs
    handle: object = field(default=None, repr=False)  # the backend's own handle (a Popen, ...)
    returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self.handle is not None:
            self.returncode = self.handle.poll()
        return self.returncode


class Backend:
    """Where jobs run. A backend launches a command detached from the caller (the caller may
    exit; the job goes on), and can tell whether it lives and stop it."""

    name = "?"

    def launch(self, cmd: list[str], env: dict, cwd, log) -> Job:
        """Start ``cmd`` (an argument list, never a shell) with ``env`` in ``cwd``; its stdout
        and stderr go to ``log`` (an open binary file, or a path to append to)."""
        raise NotImplementedError

    def alive(self, job: Job) -> bool:
        return job.poll() is None

    def cancel(self, job: Job) -> bool:
        """Ask the job to stop (it ends as it would on SIGTERM); True if it was asked."""
        raise NotImplementedError


class LocalBackend(Backend):
    """A process of this host in its own session: it outlives the app or terminal that
    started it, and a Ctrl-C in that terminal does not reach it."""

    name = "local"

    def launch(self, cmd, env, cwd, log) -> Job:
        own = not hasattr(log, "write")
        f = open_log(log) if own else log
        try:
            p = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=f,
                env=env,
                cwd=str(cwd),
                start_new_session=True,
            )
        finally:
            if own:
                f.close()
        return Job(backend=self.name, pid=p.pid, host=this_host(), handle=p)

    def cancel(self, job: Job) -> bool:
        if job.poll() is not None:
            return False
        try:
            job.handle.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            return False
        return True


def backend_name(name: str | None = None) -> str:
    """The backend named, else $RESNET_LAB_BACKEND, else "local"; a name not accepted is a
    ValueError naming it and the accepted ones. Cheap: connects to nothing."""
    raw = name if name is not None else os.environ.get(BACKEND_ENV, "")
    chosen = raw.strip().lower() or "local"
    if chosen not in BACKENDS:
        where = f"--backend {raw!r}" if name is not None else f"{BACKEND_ENV}={raw!r}"
        raise ValueError(f"{where} is not accepted; use one of: {', '.join(BACKENDS)}")
    return chosen


_ray_backends: dict = {}


def get_backend(name: str | None = None, address: str | None = None) -> Backend:
    """The backend (``backend_name``). Ray's connects this process to the cluster at
    ``address`` (or $RAY_ADDRESS; none: a local cluster), once per process; without Ray
    installed it raises ``raybackend.BackendError`` saying how to install it."""
    chosen = backend_name(name)
    if chosen == "local":
        return LocalBackend()
    from .raybackend import RayBackend

    if address not in _ray_backends:
        _ray_backends[address] = RayBackend(address)
    return _ray_backends[address]
