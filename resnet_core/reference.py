"""Bundled reference runs: the records of finished runs (config, status, metrics, layer
statistics, environment; never weights), kept in the repository so the app can show measured
curves next to a user's runs, including before the user has trained anything.

    reference/<set>/set.json          title, description, how and where it was made
    reference/<set>/<run_id>/         config.json status.json metrics.jsonl layers.jsonl env.json

A set folder is a read-only run store: ``RunStore(set.path)`` reads it like ``checkpoints/``.
Sets are made with ``python -m resnet_core reference export`` from runs in a store; long logs
are thinned on the way (averaged training windows, a few layer-record steps) so a set of nine
64k-step runs stays a few hundred KB.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .store import RunStore, atomic_write_bytes, atomic_write_json, loads, run_wall_s, valid_run_id

ENV_VAR = "RESNET_LAB_REFERENCE_DIR"
RUN_FILES = ("config.json", "status.json", "metrics.jsonl", "layers.jsonl", "env.json")
# status fields that describe the run; pid, host and heartbeat describe the machine it ran on
# the states a reference run may have: finished, or stopped by the trainer because its loss
# stopped being finite (a measured result: the `rescue` study's variants that diverge at its lr)
ENDED = ("done", "diverged")
STATUS_KEEP = (
    "state",
    "created",
    "updated",
    "started",
    "step",
    "total",
    "message",
    "threads",
    "eta_s",
    "images_per_s",
    "device",
    "precision",
    "recorder_errors",
)
ENV_DROP = ("host",)
MAX_TRAIN_ROWS = 400  # per training split: enough for a smooth curve at any budget
MAX_LAYER_STEPS = 12  # recorded probe steps kept per run (first and last always among them)
MAX_WEIGHT_STEPS = 40  # weight-gradient steps kept per run: Gradient flow's heatmap columns
_SET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class ReferenceSetError(ValueError):
    """A reference set or an export request is bad. The message names what and why."""


def default_root() -> Path:
    """$RESNET_LAB_REFERENCE_DIR, else the ``reference/`` folder beside this package."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "reference"


def valid_set_name(name) -> bool:
    """The one rule for set names, used by the listing and the lookup alike."""
    return isinstance(name, str) and bool(_SET_NAME.fullmatch(name)) and ".." not in name


def check_set_name(name: str) -> str:
    if not valid_set_name(name):
        raise ReferenceSetError(
            f"reference set name {name!r} is not accepted: use lower-case "
            "letters, digits, '.', '_' and '-' (at most 64, starting with a "
            "letter or digit)"
        )
    return name


@dataclass
class ReferenceSet:
    name: str
    path: Path
    title: str = ""
    description: str = ""
    meta: dict = field(default_factory=dict)  # the whole set.json
    error: str | None = None  # why the set can't be read (then it has no runs)

    @property
    def store(self) -> RunStore:
        return RunStore(self.path)

    def run_ids(self) -> list[str]:
        return [] if self.error else self.store.list_ids()


def read_set(path: Path) -> ReferenceSet:
    """A set folder as a ReferenceSet; a missing or broken set.json is reported in ``error``."""
    path = Path(path)
    s = ReferenceSet(name=path.name, path=path, title=path.name)
    try:
        meta = loads((path / "set.json").read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        meta_problem(meta)
    except FileNotFoundError:
        s.error = f"reference set {path.name}: set.json is missing"
        return s
    except (ValueError, UnicodeDecodeError, OSError) as e:
        s.error = f"reference set {path.name}: set.json is not valid ({e})"
        return s
    s.meta = meta
    s.title = str(meta.get("title") or path.name)
    s.description = str(meta.get("description") or "")
    return s


def meta_problem(meta: dict) -> None:
    """Raise ValueError naming the first field of set.json of the wrong type: ``runs`` a list
    of objects, ``title``/``description``/``machine``/``made``/``command`` strings (or null),
    so every reader (the app, ``reference list``) can trust what it gets."""
    runs = meta.get("runs", [])
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise ValueError("'runs' must be a list of objects")
    for k in ("title", "description", "machine", "made", "command"):
        if meta.get(k) is not None and not isinstance(meta[k], str):
            raise ValueError(f"{k!r} must be a string")
    claims = meta.get("claims", [])
    if not isinstance(claims, list) or not all(isinstance(c, str) for c in claims):
        raise ValueError("'claims' must be a list of strings")
    if not isinstance(meta.get("default", False), bool):
        raise ValueError("'default' must be true or false")


def is_reference_set(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder that ``export`` made (and so may replace): a real folder
    (not a link) holding a readable set.json and nothing but run-record folders. A notes
    folder, a run store (its runs hold checkpoints) or a file is not one."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir() or read_set(path).error:
        return False
    for p in path.iterdir():
        if p.name == "set.json":
            continue
        if p.is_symlink() or not p.is_dir() or not valid_run_id(p.name):
            return False
        if any(f.is_symlink() or f.name not in RUN_FILES for f in p.iterdir()):
            return False
    return True


def list_sets(root: str | os.PathLike | None = None) -> list[ReferenceSet]:
    """Every set under ``root`` (default: the bundled ones): the one whose set.json says
    ``"default": true`` first (the set pages show when a user has no runs), then by name;
    never raises."""
    root = Path(root) if root is not None else default_root()
    if not root.is_dir():
        return []
    sets = [read_set(p) for p in sorted(root.iterdir()) if valid_set_name(p.name) and p.is_dir()]
    return sorted(sets, key=lambda s: s.meta.get("default") is not True)  # stable: by name after


# --- thinning ----------------------------------------------------------------------------
def thin_metrics(rows: list[dict], max_train_rows: int = MAX_TRAIN_ROWS) -> list[dict]:
    """Keep every evaluation row; merge runs of consecutive training windows so each split has
    at most ``max_train_rows`` rows. A merged row averages its windows' loss and error and
    carries the last window's step, epoch, lr and time (a coarser logging interval, not a
    subsample: no window is dropped from the average)."""
    by_split: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.get("split") in ("train",) and isinstance(r.get("step"), (int, float)):
            by_split.setdefault(r["split"], []).append(i)
    replace: dict[int, dict | None] = {}
    for idx in by_split.values():
        if len(idx) <= max_train_rows:
            continue
        k = -(-len(idx) // max_train_rows)  # windows per merged row
        for start in range(0, len(idx), k):
            group = [rows[i] for i in idx[start : start + k]]
            merged = dict(group[-1])
            for key in ("loss", "error", "images_per_s"):
                vals = [g[key] for g in group if isinstance(g.get(key), (int, float))]
                if vals:
                    merged[key] = sum(vals) / len(vals)
            merged["windows"] = len(group)
            for i in idx[start : start + k - 1]:
                replace[i] = None
            replace[idx[min(start + k, len(idx)) - 1]] = merged
    out = []
    for i, r in enumerate(rows):
        if i in replace:
            if replace[i] is not None:
                out.append(replace[i])
        else:
            out.append(r)
    return out


def thin_layers(
    rows: list[dict], max_steps: int = MAX_LAYER_STEPS, max_weight_steps: int = MAX_WEIGHT_STEPS
) -> list[dict]:
    """The rows of at most ``max_steps`` recorded steps, evenly spread, first and last kept.
    Weight-gradient rows (``type="weight"``), recorded at many more steps than the probe rows,
    are thinned on their own to ``max_weight_steps``, so neither crowds the other out."""

    def keep_of(group, n):
        steps = sorted({r["step"] for r in group if isinstance(r.get("step"), (int, float))})
        if len(steps) <= n:
            return set(steps)
        return {steps[round(i * (len(steps) - 1) / (n - 1))] for i in range(n)}

    weight = keep_of([r for r in rows if r.get("type") == "weight"], max_weight_steps)
    probe = keep_of([r for r in rows if r.get("type") != "weight"], max_steps)
    return [r for r in rows if r.get("step") in (weight if r.get("type") == "weight" else probe)]


def _round(v, sig: int):
    if isinstance(v, float) and math.isfinite(v) and v != 0.0:
        return float(f"{v:.{sig}g}")
    return v


def _jsonl(rows: list[dict], sig: int) -> bytes:
    """Compact JSON lines, floats to ``sig`` significant digits (the records' own noise is
    larger: a 4-digit std is exact enough for Fig. 7, and keeps a 110-layer run small)."""
    return "".join(
        json.dumps({k: _round(v, sig) for k, v in r.items()}, separators=(",", ":")) + "\n" for r in rows
    ).encode()


# --- export ------------------------------------------------------------------------------
def _final(rows: list[dict], split: str):
    for r in reversed(rows):
        if r.get("split") == split and isinstance(r.get("error"), (int, float)):
            return r["error"]
    return None


def export(
    store: RunStore,
    run_ids: list[str],
    dest: str | os.PathLike,
    title: str,
    description: str = "",
    command: str | None = None,
    machine: str | None = None,
    force: bool = False,
    max_train_rows: int = MAX_TRAIN_ROWS,
    max_layer_steps: int = MAX_LAYER_STEPS,
    max_weight_steps: int = MAX_WEIGHT_STEPS,
    claims: list[str] | None = None,
    default: bool = False,
) -> ReferenceSet:
    """Copy the records of finished runs into a new reference set at ``dest``.

    Only runs in state "done" or "diverged" (``ENDED``) are accepted. The set is built under
    a hidden name beside ``dest`` and renamed into place, so a failure or a kill leaves any
    earlier set whole; an existing set is replaced only with ``force``. ``claims`` (names from
    ``resnet_core.claims.CLAIMS``) are checked against the runs before anything is written;
    ``default`` marks the set the app shows first."""
    dest = Path(dest)
    check_set_name(dest.name)
    runs = _export_runs(store, run_ids, dest, title, force)
    claims = [c.strip() for c in claims or [] if c.strip()]
    if not isinstance(max_weight_steps, int) or max_weight_steps < 2:
        raise ReferenceSetError(
            f"max_weight_steps={max_weight_steps!r}: keep at least 2 steps (first and last)"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".new-{dest.name}-{secrets.token_hex(3)}"
    tmp.mkdir()
    try:
        listing, envs = [], []
        for run, st, cfg in runs:
            row, env = _copy_run(
                tmp / run.id, run, st, cfg, max_train_rows, (max_layer_steps, max_weight_steps)
            )
            listing.append(row)
            envs.append(env)
        meta = {
            "title": title.strip(),
            "description": description.strip(),
            "made": time.strftime("%Y-%m-%d", time.gmtime()),
            "machine": _machine_of(envs) if machine is None else machine,
            "command": command,
            "git_commits": sorted({e["git_commit"] for e in envs if e.get("git_commit")}),
            "runs": listing,
            **({"claims": claims} if claims else {}),
            **({"default": True} if default else {}),
        }
        atomic_write_json(tmp / "set.json", meta)
        _check_claims(RunStore(tmp), claims)  # on the records as written (thinned, rounded)
        _swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_set(dest)


def _check_claims(store: RunStore, claims: list[str]) -> None:
    """Refuse an export whose claimed orderings its runs do not show."""
    from .claims import claim_problems

    problems = claim_problems(store, claims) if claims else []
    if problems:
        raise ReferenceSetError("the runs do not show what --claims says: " + "; ".join(problems))


def _export_runs(store: RunStore, run_ids: list[str], dest: Path, title, force: bool) -> list:
    """(run, status, config dict) of each run to export, or ReferenceSetError naming why not."""
    if not run_ids:
        raise ReferenceSetError("no runs to export: name at least one run id (or use --all)")
    if len(set(run_ids)) != len(run_ids):
        raise ReferenceSetError("a run id is named twice")
    if not isinstance(title, str) or not title.strip():
        raise ReferenceSetError("a reference set needs a title (--title), shown in the app")
    if (dest.exists() or dest.is_symlink()) and not force:
        raise ReferenceSetError(f"{dest} already exists; pass --force to replace it")
    if (dest.exists() or dest.is_symlink()) and not is_reference_set(dest):
        # --force replaces an earlier reference set, never a folder of anything else
        raise ReferenceSetError(
            f"{dest} exists and is not a reference set (a folder holding "
            "set.json and run records only); --force replaces only a set "
            "made by export: choose another --to"
        )
    runs = []
    for rid in run_ids:
        run = store.run(rid)  # StoreError names a bad or missing id
        st = run.read_status()
        if st["state"] not in ENDED:
            raise ReferenceSetError(
                f"run {rid} is {st['state']}, not done: only finished runs (done, or diverged: "
                "a result too) can be reference runs"
            )
        cfg = run.read_config().to_dict()  # validated
        runs.append((run, st, cfg))
    return runs


def _copy_run(out: Path, run, st: dict, cfg: dict, max_train_rows: int, layer_steps: tuple[int, int]):
    """Write one run's records (thinned, no weights) into ``out``; (its set.json row, its env)."""
    out.mkdir()
    metrics = thin_metrics(run.read_metrics(), max_train_rows)
    layers = thin_layers(run.read_layers(), *layer_steps)
    env = {k: v for k, v in (run.read_json("env.json") or {}).items() if k not in ENV_DROP}
    status = {k: st[k] for k in STATUS_KEEP if k in st}
    atomic_write_bytes(out / "config.json", (json.dumps(cfg, indent=2) + "\n").encode())
    atomic_write_json(out / "status.json", status)
    atomic_write_json(out / "env.json", env)
    atomic_write_bytes(out / "metrics.jsonl", _jsonl(metrics, 6))
    if layers:
        atomic_write_bytes(out / "layers.jsonl", _jsonl(layers, 4))
    elapsed = run_wall_s(run.read_metrics(), st)  # summed over a resumed run's sittings
    row = {
        "id": run.id,
        "model": cfg["model"],
        "name": cfg.get("name"),
        "seed": cfg.get("seed"),
        "dataset": cfg["dataset"],
        "preset": cfg.get("preset"),
        "steps": st.get("step"),
        # a diverged run has no final error (its last evaluation came before it diverged)
        "test_error": _final(metrics, "test") if st["state"] == "done" else None,
        "train_error": _final(metrics, "train_eval") if st["state"] == "done" else None,
        "train_seconds": round(elapsed, 1) if math.isfinite(elapsed) else None,
    }
    return row, env


def _machine_of(envs: list[dict]) -> str:
    """The first run's GPU or CPU, device, precision and torch, for set.json."""
    e = envs[0] if envs else {}
    machine = e.get("gpu") or e.get("cpu_model") or e.get("platform") or "unknown"
    machine = f"{machine} ({e.get('device', '?')}, {e.get('precision', '?')}, torch {e.get('torch', '?')})"
    return machine


def _swap_in(tmp: Path, dest: Path) -> None:
    """Rename the finished set into place; an earlier set is replaced only once it is whole."""
    if dest.exists():
        old = dest.parent / f".old-{dest.name}-{secrets.token_hex(3)}"
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)


def set_size(path: str | os.PathLike) -> int:
    """Bytes on disk of a set's files."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def check_set(s: ReferenceSet) -> list[str]:
    """Problems with a set (empty when it is sound): unreadable set.json, run folders that
    the store can't read, runs that are not done, or weights where none belong."""
    if s.error:
        return [s.error]
    problems = []
    for info in s.store.list_runs():
        if info["error"]:
            problems.append(info["error"])
        elif info["status"].get("state") not in ENDED:
            problems.append(f"run {info['id']} is {info['status'].get('state')}, not done")
    for p in s.path.rglob("*"):
        if p.is_file() and p.suffix in (".pt", ".pth", ".ckpt", ".bin", ".safetensors"):
            problems.append(f"{p.relative_to(s.path)} looks like weights; a set holds records only")
    if s.meta.get("claims"):
        from .claims import claim_problems

        problems += claim_problems(s.store, s.meta["claims"])
    listed = {r.get("id") for r in s.meta.get("runs", []) if isinstance(r, dict)}
    for rid in s.run_ids():
        if rid not in listed:
            problems.append(f"run {rid} is not listed in set.json")
    return problems + _listing_problems(s)


def _listing_problems(s: ReferenceSet) -> list[str]:
    """set.json's per-run numbers against the records: every listed run has records, and its
    listed final errors are the ones its metrics end at (so a description or table written
    from the listing can't drift from what the pages draw)."""
    problems, have = [], set(s.run_ids())
    for r in s.meta.get("runs", []):
        if not isinstance(r, dict):
            continue
        if r.get("id") not in have:
            problems.append(f"set.json lists run {r.get('id')!r}, which has no records in the set")
            continue
        rows = s.store.run(r["id"]).read_metrics()
        for key, split in (("train_error", "train_eval"), ("test_error", "test")):
            listed, final = r.get(key), _final(rows, split)
            if listed is not None and not (isinstance(listed, (int, float)) and not isinstance(listed, bool)):
                problems.append(f"run {r['id']}: set.json lists {key} {listed!r}, not a number")
            elif listed is not None and (final is None or abs(listed - final) > 1e-6):
                problems.append(
                    f"run {r['id']}: set.json lists {key} {listed}, but its records end at {final}"
                )
    return problems


__all__ = [
    "ReferenceSet",
    "ReferenceSetError",
    "list_sets",
    "read_set",
    "export",
    "check_set",
    "thin_metrics",
    "thin_layers",
    "default_root",
    "set_size",
    "ENDED",
]
