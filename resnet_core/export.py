"""Runs as TensorBoard event files: ``python -m resnet_core export RUN_ID... --tensorboard DIR``.

Each run becomes one TensorBoard run (a folder of event files under DIR): ``DIR/<run_id>`` for a
run of the store, ``DIR/ref/<set>/<run_id>`` for a bundled reference run (``ref:<set>/<run_id>``,
the ids the app uses), so ``tensorboard --logdir DIR`` overlays plain and residual nets on one
chart. What is written, from the run's records (metrics.jsonl, layers.jsonl, config.json):

- scalars ``loss/<split>``, ``error/<split>`` (fractions in [0, 1], as in the store) for the
  splits ``train`` (running, train mode), ``train_eval``, ``val`` and ``test``; ``lr``,
  ``images_per_s`` and ``epoch`` from the training rows;
- every per-layer statistic as one scalar per layer: ``<type>.<stat>/<order>_<layer>``, e.g.
  ``response.std/003_layer1.1.tap1`` (the paper's Fig. 7 measure); the order number keeps
  TensorBoard's alphabetical listing in network order;
- at every recorded step, a histogram per ``<type>.<stat>`` of its values across layers (the
  distribution Fig. 7's sorted panel draws), under ``layers/<type>.<stat>``;
- the config as text (``config``).

Wall times are the run's own (its start time plus each row's ``time``), so TensorBoard's
"relative" axis reads training time. A folder is written only when it is empty or an earlier
export (it holds ``EXPORT_MARK``), unless the user forces it; a run's folder is replaced only
when an earlier export made it, and nothing outside DIR is ever deleted.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path

from . import reference
from .store import (
    Run,
    RunStore,
    StoreError,
    atomic_write_json,
    check_run_id,
    current_layer_row,
    dedupe_steps,
    parse_jsonl,
)
from .train import Callback

EXPORT_MARK = ".resnet-lab-export.json"  # what an earlier export leaves in DIR (and lists)
TMP_PREFIX = ".export-tmp-"  # a run being written; moved into place when complete
REF_PREFIX = "ref:"  # "ref:<set>/<run_id>": a bundled reference run, as in the app
METRIC_SCALARS = ("loss", "error")  # per split
TRAIN_SCALARS = ("lr", "images_per_s", "epoch")  # training rows only
LAYER_KEYS = ("step", "layer", "type", "order")  # the identity fields of a layers.jsonl row


class ExportError(ValueError):
    """An export request is bad (a run, the folder, a missing package). The message says what."""


def resolve(store: RunStore, run_id: str) -> tuple[Run, Path]:
    """(the run, its folder relative to DIR) for a store id or a "ref:<set>/<run_id>" id."""
    if run_id.startswith(REF_PREFIX):
        name, _, rid = run_id[len(REF_PREFIX) :].partition("/")
        reference.check_set_name(name)
        check_run_id(rid)  # a plain run id inside that set's folder: no path tricks
        root = reference.default_root() / name
        if not root.is_dir():
            raise ExportError(
                f"{run_id}: no reference set {name!r} in {root.parent} "
                "(see `python -m resnet_core reference list`)"
            )
        run = RunStore(root).run(rid)
        rel = Path("ref") / name / rid
    else:
        run = store.run(run_id)
        rel = Path(run_id)
    run.read_config_dict()  # a folder without a readable config.json is not a run: say so now
    return run, rel


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ExportError(
            "--tensorboard needs the tensorboard package "
            f"(pip install -e '.[tensorboard]'; import failed: {e})"
        ) from None
    return SummaryWriter


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _start_time(run: Run) -> float:
    """The run's start as a Unix time (for event wall times); its creation time as a fallback."""
    try:
        st = run.read_status_raw()
    except StoreError:
        st = {}
    for k in ("started", "created"):
        v = _number(st.get(k))
        if v is not None and v > 0:
            return v
    return time.time()


def write_metrics(w, rows: list[dict], t0: float) -> int:
    """Scalars from metrics.jsonl; returns how many were written."""
    n = 0
    for r in dedupe_steps(rows):
        step, split = r.get("step"), r.get("split")
        if not isinstance(step, int) or not isinstance(split, str):
            continue
        wall = t0 + (_number(r.get("time")) or 0.0)
        names = [(f"{k}/{split}", k) for k in METRIC_SCALARS]
        if split == "train":
            names += [(k, k) for k in TRAIN_SCALARS]
        for tag, k in names:
            v = _number(r.get(k))
            if v is not None:
                w.add_scalar(tag, v, step, walltime=wall)
                n += 1
    return n


def write_layers(w, rows: list[dict], t0: float) -> int:
    """Per-layer scalars and, per recorded step, histograms across layers; returns the count."""
    import numpy as np

    rows = dedupe_steps(rows, key=("step", "type", "layer"))
    across: dict[tuple[int, str], list[float]] = {}  # (step, "<type>.<stat>") -> values
    n = 0
    for r in rows:
        step, layer, kind = r.get("step"), r.get("layer"), r.get("type")
        if not isinstance(step, int) or not isinstance(layer, str) or not isinstance(kind, str):
            continue
        order = r.get("order") if isinstance(r.get("order"), int) else 0
        for stat, v in r.items():
            v = _number(v)
            if stat in LAYER_KEYS or v is None or not math.isfinite(v):
                continue
            w.add_scalar(f"{kind}.{stat}/{order:03d}_{layer}", v, step, walltime=t0)
            across.setdefault((step, f"{kind}.{stat}"), []).append(v)
            n += 1
    for (step, name), vals in across.items():
        w.add_histogram(f"layers/{name}", np.asarray(vals, dtype=np.float64), step, walltime=t0)
    return n


def write_config(w, run: Run, t0: float) -> dict:
    """The run's config.json as text (four spaces: a code block in TensorBoard's markdown)."""
    cfg = run.read_config_dict()
    w.add_text("config", "    " + json.dumps(cfg, indent=1).replace("\n", "\n    "), 0, walltime=t0)
    return cfg


def _write_run(run: Run, dest: Path) -> dict:
    SummaryWriter = _summary_writer()
    t0 = _start_time(run)
    w = SummaryWriter(log_dir=str(dest))
    try:
        cfg = write_config(w, run, t0)
        n_metrics = write_metrics(w, run.read_metrics(), t0)
        n_layers = write_layers(w, run.read_layers(), t0)
    finally:
        w.close()
    return {"scalars": n_metrics, "layer_scalars": n_layers, "model": cfg.get("model")}


def _read_mark(dest: Path) -> dict | None:
    try:
        mark = json.loads((dest / EXPORT_MARK).read_text())
    except (OSError, ValueError):
        return None
    return mark if isinstance(mark, dict) and isinstance(mark.get("runs"), dict) else None


def check_dest(dest: Path, force: bool) -> dict:
    """The folder's export mark (new, earlier, or forced); refuses anything else."""
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"--tensorboard {dest}: exists and is not a folder")
    mark = _read_mark(dest) if dest.is_dir() else None
    if mark is None:
        if dest.is_dir() and any(dest.iterdir()) and not force:
            raise ExportError(
                f"--tensorboard {dest}: the folder is not empty and is not an earlier "
                "export; name a new or empty folder (or pass --force to add the "
                "runs beside what is there; nothing there is deleted)"
            )
        mark = {"runs": {}}
    return mark


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _place(tmp: Path, final: Path, dest: Path, ours: bool) -> None:
    """Move a freshly written run folder into place; replace only a folder an export made."""
    if final.is_symlink() or (final.exists() and not _inside(final, dest)):
        raise ExportError(f"{final}: is a link or leads outside {dest}; not touching it")
    if final.exists():
        if not ours:
            raise ExportError(
                f"{final}: already exists and an earlier export did not write it; "
                "remove it or export into another folder"
            )
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(final)


def export_tensorboard(store: RunStore, run_ids: list[str], dest, force: bool = False) -> list[dict]:
    """Write each run's records as TensorBoard events under ``dest``; one summary per run."""
    dest = Path(dest)
    if not run_ids:
        raise ExportError(
            "name the runs to export (ids from `python -m resnet_core runs`, or ref:<set>/<run_id>)"
        )
    targets = [(rid, *resolve(store, rid)) for rid in dict.fromkeys(run_ids)]  # check all first
    _summary_writer()  # a missing package is reported before anything is written
    mark = check_dest(dest, force)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob(TMP_PREFIX + "*"):  # left by an export that was killed mid-run
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
    out = []
    for rid, run, rel in targets:
        final = dest / rel
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=dest))
        try:
            info = _write_run(run, tmp)
            _place(tmp, final, dest, ours=rel.as_posix() in mark["runs"])
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        mark["runs"][rel.as_posix()] = {"id": rid, "exported": time.time(), **info}
        atomic_write_json(dest / EXPORT_MARK, mark)  # after each run: a crash keeps the record true
        out.append({"id": rid, "path": str(final), **info})
    return out


class LiveTensorBoard(Callback):
    """A training callback that writes the run's records as TensorBoard events while it trains,
    into ``<run>/tensorboard/`` (so ``tensorboard --logdir checkpoints`` follows every run).

    Attach it by name, beside the default recorder:
    ``--recorders analysis.recorders:LayerStatsRecorder,resnet_core.export:LiveTensorBoard``.
    It hooks nothing: every ``every_s`` seconds (checked at step ends) it reads the lines the
    trainer appended to metrics.jsonl and layers.jsonl since its last look and writes them with
    the same tags as ``export``. On a resume it starts over from the files (a purge at step 0
    tells TensorBoard to drop the earlier events), so the events always match the records.
    Without the tensorboard package it is not attached (the trainer warns)."""

    needs_hooks = False  # it reads the store's files; torch.compile stays possible
    every_s = 5.0  # seconds between looks at the files

    def __init__(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # load_callbacks warns and trains on without it
            raise ImportError(f"LiveTensorBoard needs the tensorboard package ({e})") from None
        self._writer_cls = SummaryWriter
        self.w = None
        self.seconds = 0.0  # time spent in this callback (benchmarks/bench_live_tensorboard.py)
        self.looks = 0  # how many times it read the files

    def on_train_start(self, ctx) -> None:
        if ctx.run is None:
            return
        t = time.perf_counter()
        self.run = ctx.run
        self.t0 = _start_time(ctx.run)
        self.offsets = {"metrics.jsonl": 0, "layers.jsonl": 0}
        self.pending: list[dict] = []  # layer rows of the newest step: its batch may be partial
        self.w = self._writer_cls(log_dir=str(ctx.run.path / "tensorboard"), purge_step=0)
        self.last = time.monotonic()
        write_config(self.w, ctx.run, self.t0)
        self._look(final=False)
        self.seconds += time.perf_counter() - t

    def on_step_end(self, ctx) -> None:
        if self.w is None or time.monotonic() - self.last < self.every_s:
            return
        t = time.perf_counter()
        self._look(final=False)
        self.seconds += time.perf_counter() - t

    def on_train_end(self, ctx) -> None:
        if self.w is None:
            return
        t = time.perf_counter()
        try:
            self._look(final=True)
        finally:
            self.w.close()
            self.w = None
            self.seconds += time.perf_counter() - t

    def _new_rows(self, name: str) -> list[dict]:
        """Complete lines appended to ``name`` since the last look (a torn last line waits)."""
        path = self.run.path / name
        try:
            with open(path, "rb") as f:
                f.seek(self.offsets[name])
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offsets[name] += end
        return parse_jsonl(data[:end])[0]

    def _look(self, final: bool) -> None:
        self.last = time.monotonic()
        self.looks += 1
        write_metrics(self.w, self._new_rows("metrics.jsonl"), self.t0)
        # a resumed run's first lines may come from older code, whose Fig. 7 rows say "bn"
        rows = self.pending + [current_layer_row(r) for r in self._new_rows("layers.jsonl")]
        last = max((r["step"] for r in rows if isinstance(r.get("step"), int)), default=None)
        hold = not final and last is not None
        self.pending = [r for r in rows if hold and r.get("step") == last]
        write_layers(self.w, [r for r in rows if not (hold and r.get("step") == last)], self.t0)
        self.w.flush()
