"""The run store: one folder per run under ``checkpoints/`` (or $RESNET_LAB_RUNS_DIR).

Every file is written atomically (temporary file in the same folder, then ``os.replace``) or
appended line by line; readers skip a torn last line. So another process can read a run while
it is written, and a SIGKILL at any moment loses at most the last flush and corrupts nothing.

    <run_id>/config.json   the TrainConfig, written once
    <run_id>/status.json   state, pid, heartbeat, step/total, ETA, message
    <run_id>/metrics.jsonl one line per log step or evaluation
    <run_id>/layers.jsonl  per-layer statistics from the recorders
    <run_id>/env.json      torch version, device, threads, git commit
    <run_id>/ckpt/         last.pt, best.pt, step-NNNNNN.pt
    <run_id>/cache/        analysis results, keyed by checkpoint and method
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from .launch import (  # noqa: F401  (pid_alive, process_identity, flock_held: used from here too)
    _proc_start_time,
    flock_held,
    on_this_host,
    pid_alive,
    process_identity,
    record_alive,
    take_lock,
)

ENV_VAR = "RESNET_LAB_RUNS_DIR"
STATES = ("queued", "running", "done", "failed", "diverged", "cancelled", "interrupted")
ACTIVE = ("queued", "running")
RESUMABLE = ("interrupted", "failed", "cancelled")
HEARTBEAT_S = 2.0  # the trainer rewrites status.json at least this often while it runs
# A running status whose heartbeat is older than this, and whose trainer lock nobody holds,
# reads as interrupted whatever its pid says (pid 1 in a container is always alive). A live
# trainer beats every HEARTBEAT_S while it trains and holds its lock while it loads data or
# evaluates, so only a dead one goes silent this long.
STALE_S = 120.0
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class StoreError(ValueError):
    """A run id, run folder or run file is bad. The message names it."""


class RunBusyError(StoreError):
    """Another live process holds the run's trainer lock: a second trainer is refused."""


class DiskFullError(OSError):
    """A write failed because the disk (or the quota) is full. ``str()`` is one line:
    "disk full: N MB free in DIR ..."; errno is ENOSPC, so callers that test for it still do."""

    def __init__(self, folder, cause: BaseException | None = None):
        self.folder = str(folder)
        self.free_mb = free_mb(folder)
        why = f" ({os.strerror(errno.ENOSPC)})"
        super().__init__(
            errno.ENOSPC,
            f"disk full: {self.free_mb:.1f} MB free in {self.folder}; free some space and resume{why}",
        )

    def __str__(self) -> str:
        return self.strerror


def free_mb(folder) -> float:
    try:
        return shutil.disk_usage(folder).free / 2**20
    except OSError:
        return 0.0


DISK_FULL_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_NEARLY_FULL = 1 << 20  # bytes: a write that fails with less free than this failed for want of space


def as_disk_full(e: BaseException, folder) -> BaseException:
    """``e`` as a DiskFullError when it is one (ENOSPC, EDQUOT, or another error -- torch.save
    says "unexpected pos 670016 vs 669912" -- while the folder's disk has under 1 MB free);
    else ``e`` itself."""
    if isinstance(e, DiskFullError):
        return e
    if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
        return DiskFullError(folder, e)
    if isinstance(e, (OSError, RuntimeError)):
        try:
            if shutil.disk_usage(folder).free < _NEARLY_FULL:
                return DiskFullError(folder, e)
        except OSError:
            pass
    return e


def default_root() -> Path:
    return Path(os.environ.get(ENV_VAR) or "checkpoints")


def valid_run_id(run_id) -> bool:
    """The one rule for run ids and run folder names, used by the listing and the lookup
    alike (a folder the lookup would refuse is never listed)."""
    return isinstance(run_id, str) and bool(_RUN_ID.fullmatch(run_id)) and ".." not in run_id


MAX_JSON_BYTES = 16 << 20  # a status, config or set file is a few KB; refuse to parse more


def loads(data):
    """json.loads that raises ValueError for what the C parser raises RecursionError on
    (about 1,000 nested brackets): one bad file must never take down a listing."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested deeper than the JSON reader allows") from None


def check_run_id(run_id: str) -> str:
    if not valid_run_id(run_id):
        raise StoreError(
            f"run id {run_id!r} is not accepted: use letters, digits, '.', '_' and "
            "'-' only (no '..', no path separators, at most 128 characters)"
        )
    return run_id


FAULT_ENV = "RESNET_LAB_FAULT"
_fault_seen: dict[str, int] = {}


def fault_point(name: str, partial=None) -> None:
    """Test-only fault injection, off unless $RESNET_LAB_FAULT is "point:N": the Nth time this
    process reaches ``point`` it calls ``partial`` (to leave a half-written file) and SIGKILLs
    itself. Points: start, step (after backward, before the update), ckpt_write, status_write,
    config_write, env_write, metrics_flush, layers_flush. Used by tests/test_faults.py."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _fault_seen[name] = _fault_seen.get(name, 0) + 1
    if _fault_seen[name] == int(nth or 1):
        if partial is not None:
            partial()
        os.kill(os.getpid(), signal.SIGKILL)


def _nofollow(path, flags):
    """An ``open`` opener that refuses to follow a symbolic link at the last component."""
    return os.open(path, flags | os.O_NOFOLLOW, 0o644)


def atomic_write(path: Path, write, fault: str | None = None, partial=None) -> None:
    """Write through ``write(f)`` into a temporary file in the same folder, fsync, then
    ``os.replace``: a kill or a failed write at any moment leaves the previous file whole.
    ``fault``/``partial`` name the test-only fault point (see ``fault_point``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        # a link planted at the temporary name is never written through
        with open(tmp, "wb", opener=_nofollow) as f:
            write(f)
            f.flush()
            if fault is not None:
                fault_point(fault, partial and (lambda: partial(f)))
            os.fsync(f.fileno())
        os.replace(tmp, path)  # replaces a link at ``path`` itself, never its target
    except BaseException as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        full = as_disk_full(e, path.parent)
        if full is not e:
            raise full from e
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data), fault=f"{Path(path).stem}_write")


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode())


def _clean(v):
    """JSON has no NaN/inf: write them as null (a diverged loss is still recorded)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def fmt_eta(seconds) -> str:
    """A remaining time for people: m:ss, h:mm:ss, then days; capped, so an absurd budget
    (1e22 steps) reads "over 999 days", not a 19-digit hour count. "–" when unknown."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds != seconds:
        return "–"
    s = max(0.0, float(seconds))
    if s >= 999 * 86400:
        return "over 999 days"
    s = int(s)
    if s >= 48 * 3600:
        return f"{s // 86400} d {s % 86400 // 3600} h"
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def read_jsonl(path: Path) -> tuple[list[dict], int]:
    """All complete lines of a JSON-lines file, and how many lines were unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], 0
    return parse_jsonl(data)


def parse_jsonl(data: bytes) -> tuple[list[dict], int]:
    rows, bad = [], 0
    lines = data.split(b"\n")
    for line in lines:
        if not line.strip():
            continue
        try:
            row = loads(line)
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
        except (ValueError, UnicodeDecodeError):
            bad += 1  # a torn last line is expected after a kill
    return rows, bad


def run_wall_s(rows: list[dict], status: dict) -> float:
    """Wall seconds a run trained: its trainer's clock (``time`` of the training rows, seconds
    since that sitting started) summed over its sittings (a resumed run's clock starts again,
    seen as the clock going back); without such rows, the status's last update - start."""
    times = [r["time"] for r in rows if r.get("split") == "train" and isinstance(r.get("time"), (int, float))]
    if not times:
        ok = all(isinstance(status.get(k), (int, float)) for k in ("started", "updated"))
        return status["updated"] - status["started"] if ok else math.nan
    wall = 0.0
    for prev, t in zip(times, times[1:]):
        if t < prev:  # a new sitting
            wall += prev
    return wall + times[-1]


def _number(v, integer: bool = False) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return isinstance(v, int) if integer else math.isfinite(v)


# status.json fields and the type each must have; a field of another type is dropped on read
# (with its name in ``bad_fields``), so every reader can trust the ones it gets
STATUS_TYPES = {
    "step": "int",
    "total": "int",
    "threads": "int",
    "pid": "int",
    "heartbeat": "num",
    "created": "num",
    "updated": "num",
    "started": "num",
    "finished": "num",
    "eta_s": "num",
    "images_per_s": "num",
    "message": "str",
    "host": "str",
    "device": "str",
    "precision": "str",
    "pid_start": "str",
    "pidns": "str",  # the trainer's pid namespace and boot (launch.pid_space): with host, where
    "boot_id": "str",  # its pid means that process
    "node": "str",  # the node a backend (ray) runs it on
    "backend": "str",  # where the runner starts it: absent or "local", or "ray"
    "ray_address": "str",  # the Ray cluster it was queued for (absent: $RAY_ADDRESS or a local one)
}
SCALAR = (str, int, float, bool, type(None))


def clean_status(d: dict) -> dict:
    """A status with every known field of the wrong type dropped (named in ``bad_fields``)."""
    out, bad = {}, []
    for k, v in d.items():
        kind = STATUS_TYPES.get(k)
        ok = (
            v is None
            or (kind == "str" and isinstance(v, str))
            or (kind in ("int", "num") and _number(v, integer=kind == "int") and (kind != "int" or v >= 0))
            or (kind is None and k != "bad_fields")
        )
        if ok:
            out[k] = v
        else:
            bad.append(k)
    if bad:
        out["bad_fields"] = sorted(bad)
    return out


def metrics_row_ok(r: dict) -> bool:
    """A metrics.jsonl row every reader can use: an integer step, a string split, and plain
    values (numbers, strings, null) for the rest."""
    return (
        _number(r.get("step"), integer=True)
        and isinstance(r.get("split"), str)
        and all(isinstance(v, SCALAR) for v in r.values())
        and all(
            r.get(k) is None or _number(r.get(k))
            for k in ("loss", "error", "lr", "time", "epoch", "images_per_s", "n")
        )
    )


def layers_row_ok(r: dict) -> bool:
    """A layers.jsonl row: an integer step, a string layer name, plain values."""
    return (
        _number(r.get("step"), integer=True)
        and isinstance(r.get("layer"), str)
        and all(isinstance(v, SCALAR) for v in r.values())
    )


# Old layers.jsonl ``type`` names -> today's. Fig. 7's rows were "bn" until they were renamed
# "response" (in the no-normalization variants they are no BN outputs). The bundled reference
# records, users' older runs and runs still being recorded by older code keep "bn" on disk;
# every reader goes through Run.read_layers (or current_layer_row), so pages see one name.
OLD_LAYER_TYPES = {"bn": "response"}


def current_layer_row(r: dict) -> dict:
    """A layers.jsonl row with an old ``type`` name (OLD_LAYER_TYPES) replaced by today's."""
    t = r.get("type")
    if isinstance(t, str) and t in OLD_LAYER_TYPES:
        return {**r, "type": OLD_LAYER_TYPES[t]}
    return r


@dataclass
class Run:
    root: Path
    id: str

    @property
    def path(self) -> Path:
        return self.root / self.id

    @property
    def ckpt_dir(self) -> Path:
        return self.path / "ckpt"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    def check_writable(self, *names: str) -> Path:
        """Raise StoreError when writing into this run would go through a symbolic link: the
        run folder itself, or any of ``names`` inside it (files, or ckpt/ and cache/). The
        lab never follows a link out of the store when it writes or deletes."""
        for p in (self.path, *(self.path / n for n in names)):
            if p.is_symlink():
                where = "its folder" if p == self.path else p.relative_to(self.path).as_posix()
                raise StoreError(
                    f"run {self.id}: {where} is a symbolic link; the lab does not "
                    "write through links out of the store (replace it with a real "
                    "folder or file)"
                )
        return self.path

    # --- config -----------------------------------------------------------------------
    def read_config_dict(self) -> dict:
        p = self.path / "config.json"
        try:
            d = loads(p.read_text())
        except FileNotFoundError:
            raise StoreError(f"run {self.id}: config.json is missing") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise StoreError(f"run {self.id}: config.json is not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise StoreError(f"run {self.id}: config.json is not a JSON object")
        return d

    def read_config(self):
        from .config import ConfigError, TrainConfig

        try:
            return TrainConfig.from_dict(self.read_config_dict(), source=f"run {self.id} config.json")
        except ConfigError as e:
            raise StoreError(str(e)) from None
        except TypeError as e:
            raise StoreError(f"run {self.id}: config.json does not fit TrainConfig ({e})") from None

    # --- status -----------------------------------------------------------------------
    def read_status_raw(self) -> dict:
        p = self.path / "status.json"
        try:
            d = loads(p.read_text())
        except FileNotFoundError:
            raise StoreError(f"run {self.id}: status.json is missing") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise StoreError(f"run {self.id}: status.json is not valid JSON ({e})") from None
        if not isinstance(d, dict) or d.get("state") not in STATES:
            raise StoreError(f"run {self.id}: status.json has no valid state (accepted: {', '.join(STATES)})")
        return clean_status(d)

    def read_status(self) -> dict:
        """The status, reconciled: a running run whose process is gone is interrupted."""
        s = self.read_status_raw()
        if s["state"] == "running" and not self._owner_alive(s):
            s = dict(
                s,
                state="interrupted",
                message=f"the trainer (pid {s.get('pid')}) stopped without finishing at "
                f"step {s.get('step', 0)}; resume continues from the last checkpoint",
            )
        return s

    def _owner_alive(self, s: dict) -> bool:
        beat = s.get("heartbeat")
        # the job layer's judgement: pid and start time on this host, heartbeat on another.
        # A trainer beats only between steps: loading data, compiling, evaluating, probing or
        # writing a checkpoint it is silent for longer, so another host's is given STALE_S
        if not record_alive(s, time.time(), STALE_S):
            return False
        if not on_this_host(s):
            return True
        # the last sign of life: a heartbeat, or any status write (a foreground resume marks
        # the run running before its trainer beats)
        signs = [t for t in (beat, s.get("updated")) if t is not None]
        if signs and time.time() - max(signs) > STALE_S:
            # silent for long: a pid can be reused or never die (pid 1); only a trainer that
            # still holds the run's lock is alive
            return bool(flock_held(self.path / ".trainer.lock"))
        return True

    def write_status(self, **fields) -> dict:
        self.check_writable("status.json")
        try:
            s = self.read_status_raw()
            s.pop("bad_fields", None)
        except StoreError:
            s = {}
        s.update({k: _clean(v) for k, v in fields.items()})
        s["updated"] = time.time()
        atomic_write_json(self.path / "status.json", s)
        return s

    # --- metrics and layers -------------------------------------------------------------
    def append_jsonl(self, name: str, rows: list[dict]) -> None:
        if not rows:
            return
        data = "".join(json.dumps({k: _clean(v) for k, v in r.items()}) + "\n" for r in rows)
        self.check_writable(name)  # a (dangling) link in place of a log is refused
        try:
            with open(self.path / name, "a", opener=_nofollow) as f:
                fault_point(f"{Path(name).stem}_flush", lambda: (f.write(data[: len(data) // 2]), f.flush()))
                f.write(data)
                f.flush()
        except OSError as e:
            full = as_disk_full(e, self.path)
            if full is not e:
                raise full from e
            raise

    def read_metrics_counted(self) -> tuple[list[dict], int]:
        """The metrics rows every reader can use, and how many lines were skipped (torn,
        not JSON, or with a field of the wrong type, such as a list as the split)."""
        rows, bad = read_jsonl(self.path / "metrics.jsonl")
        good = [r for r in rows if metrics_row_ok(r)]
        return dedupe_steps(good), bad + len(rows) - len(good)

    def read_metrics(self) -> list[dict]:
        return self.read_metrics_counted()[0]

    def read_layers_counted(self) -> tuple[list[dict], int]:
        """The layers rows every reader can use (old type names read as today's, see
        OLD_LAYER_TYPES), and how many lines were skipped."""
        rows, bad = read_jsonl(self.path / "layers.jsonl")
        good = [current_layer_row(r) for r in rows if layers_row_ok(r)]
        return dedupe_steps(good, key=("step", "layer")), bad + len(rows) - len(good)

    def read_layers(self) -> list[dict]:
        return self.read_layers_counted()[0]

    LOGS = ("metrics.jsonl", "layers.jsonl")

    def log_sizes(self) -> dict:
        """The logs' byte sizes, saved in each checkpoint (see truncate_logs_after)."""
        return {n: (self.path / n).stat().st_size if (self.path / n).exists() else 0 for n in self.LOGS}

    def truncate_logs_after(self, step: int, sizes: dict | None = None) -> None:
        """Drop every line written after the checkpoint a run resumes from (and any torn
        line), so a resumed run records each step once. ``sizes``: the logs' byte sizes when
        that checkpoint was saved; exact whatever step a recorder labels its rows with (the
        analysis recorder labels rows recorded during step s+1 as s). Without them, lines
        labelled past ``step`` go."""
        self.check_writable(*self.LOGS)
        for name in self.LOGS:
            p = self.path / name
            if not p.exists():
                continue
            data = p.read_bytes()
            size = (sizes or {}).get(name)
            if isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= len(data):
                keep, _ = parse_jsonl(data[:size])
            else:
                rows, _ = parse_jsonl(data)
                keep = [r for r in rows if isinstance(r.get("step"), int) and r["step"] <= step]
            atomic_write_bytes(p, "".join(json.dumps(r) + "\n" for r in keep).encode())

    # --- other files --------------------------------------------------------------------
    def read_json(self, name: str, default=None):
        try:
            return loads((self.path / name).read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            return default

    def checkpoint_path(self, name: str = "last") -> Path:
        if not valid_run_id(name):
            raise StoreError(
                f"checkpoint name {name!r} is not accepted: use a name from the "
                "run's ckpt/ folder (last, best, step-NNNNNN)"
            )
        return self.ckpt_dir / f"{name}.pt"

    def list_checkpoints(self) -> list[str]:
        if not self.ckpt_dir.is_dir():
            return []
        names = [p.stem for p in self.ckpt_dir.glob("*.pt")]
        order = {"best": 1, "last": 2}
        return sorted(names, key=lambda n: (order.get(n, 0), n))

    def lock_for_training(self):
        """An exclusive lock held by the run's trainer for its life (the kernel drops it when
        the process dies, SIGKILL included); None when another trainer holds it."""
        # a trainer writes checkpoints, logs and its status here, and deletes stale temporary
        # files in ckpt/: none of it may go through a link out of the store
        self.check_writable(
            ".trainer.lock", "ckpt", "cache", "status.json", "env.json", "train.log", *self.LOGS
        )
        return take_lock(self.path / ".trainer.lock", opener=_nofollow)

    def request_cancel(self) -> None:
        self.check_writable("cancel")
        os.close(os.open(self.path / "cancel", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644))

    def cancel_requested(self) -> bool:
        return (self.path / "cancel").exists()


def dedupe_steps(rows: list[dict], key=("step", "split")) -> list[dict]:
    """Keep the last line for each key, in order of first appearance."""
    seen: dict = {}
    for r in rows:
        seen[tuple(r.get(k) for k in key)] = r
    return list(seen.values()) if len(seen) != len(rows) else rows


class RunStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()

    def run(self, run_id: str) -> Run:
        check_run_id(run_id)
        r = Run(self.root, run_id)
        if not r.path.is_dir():
            raise StoreError(f"no run {run_id!r} in {self.root}")
        return r

    def new_run_id(self, model: str) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        safe = re.sub(r"[^A-Za-z0-9_]", "", model)[:40] or "run"
        return f"{stamp}-{safe}-{secrets.token_hex(3)}"

    def create(self, config, state: str = "queued", message: str = "", **fields) -> Run:
        """Make a run folder with its config and first status (``fields``: more of it, such
        as the backend that trains it); nothing else is touched.
        The folder is filled under a hidden name and renamed into place, so a reader (or a
        kill at this moment) never sees a run without its config or status."""
        self.root.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for _ in range(10):
            run_id = self.new_run_id(config.model)
            path = self.root / run_id
            tmp = self.root / f".new-{run_id}"
            try:
                tmp.mkdir()
            except FileExistsError:
                continue
            try:
                atomic_write_bytes(tmp / "config.json", (config.to_json() + "\n").encode())
                atomic_write_json(
                    tmp / "status.json",
                    {
                        "state": state,
                        "created": now,
                        "updated": now,
                        "step": 0,
                        "total": None,
                        "message": message,
                        **{k: _clean(v) for k, v in fields.items()},
                    },
                )
                if path.exists():
                    raise FileExistsError(path)
                os.rename(tmp, path)
            except FileExistsError:
                shutil.rmtree(tmp, ignore_errors=True)
                continue
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return Run(self.root, run_id)
        raise StoreError("could not make a unique run folder")

    def list_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if valid_run_id(p.name) and p.is_dir())

    def list_runs(self) -> list[dict]:
        """One summary per run folder; a broken folder is listed with its error, never raised."""
        out = []
        for rid in self.list_ids():
            run = Run(self.root, rid)
            info = {"id": rid, "error": None}
            try:
                info["status"] = run.read_status()
                if info["status"].get("bad_fields"):
                    info["error"] = (
                        f"run {rid}: status.json field(s) "
                        f"{', '.join(info['status']['bad_fields'])} have the wrong "
                        "type and were ignored"
                    )
            except StoreError as e:
                info["status"] = {"state": "broken"}
                info["error"] = str(e)
            except OSError as e:  # unreadable (permissions, a link loop): this run only
                info["status"] = {"state": "broken"}
                info["error"] = f"run {rid}: status.json can't be read ({e})"
            try:
                # validated, so readers (the app's tables, `runs`) can trust every field's type
                info["config"] = run.read_config().to_dict()
            except (StoreError, OSError) as e:
                info["config"] = {}
                info["error"] = info["error"] or str(e)
            out.append(info)
        return out

    def delete(self, run_id: str) -> None:
        run = self.run(run_id)
        try:
            s = run.read_status()
            if s["state"] == "running":
                raise StoreError(f"run {run_id} is running: cancel it before deleting it")
        except StoreError as e:
            if "is running" in str(e):
                raise
        if run.path.is_symlink():
            # a linked run: remove the link, never what it points to (outside the store)
            run.path.unlink()
            return
        # rename first so a half-finished delete never leaves a half-readable run
        trash = self.root / f".deleting-{run_id}-{secrets.token_hex(2)}"
        os.replace(run.path, trash)
        shutil.rmtree(trash, ignore_errors=True)  # rmtree unlinks links inside, never follows
