"""Command line: ``python -m resnet_core {train,sweep,resume,runs,models,cancel,reference,export}``
(installed as the ``resnet-lab`` console script, with the same subcommands).

A thin layer over the API: flags mirror TrainConfig fields one to one, errors are one line
naming the flag and what is accepted, with a non-zero exit and no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
import typing
from pathlib import Path

from . import launch
from .config import (
    PRESETS,
    SEEDS_ACCEPTED,
    SWEEPS,
    ConfigError,
    TrainConfig,
    apply_preset,
    parse_seeds,
    sweep_plan,
)
from .data import DataError, check_source, load_dataset, require_on_disk
from .models import ModelNameError
from .raybackend import BackendError
from .store import DISK_FULL_ERRNOS, DiskFullError, RunBusyError, RunStore, StoreError, fmt_eta

USER_ERRORS = (
    ConfigError,
    DataError,
    ModelNameError,
    StoreError,
    ValueError,
    FileNotFoundError,
    BackendError,
)


class CliError(Exception):
    pass


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _positive_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        msg = f"expected comma-separated positive integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return vals


def _none_or(conv, what):
    def parse(text):
        if text.lower() in ("none", "auto", ""):
            return "__none__"
        try:
            return conv(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} or 'none', got {text!r}") from None

    parse.__name__ = what
    return parse


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, help taken from the field's comment-free name."""
    hints = typing.get_type_hints(TrainConfig)
    g = p.add_argument_group(
        "run options (mirror TrainConfig; explicit flags override the preset and --config)"
    )
    for f in dataclasses.fields(TrainConfig):
        if f.name == "preset":
            continue
        t = hints[f.name]
        kw: dict = {"dest": f.name, "default": None}
        if t is bool or t == (bool | None):
            kw["action"] = argparse.BooleanOptionalAction
        elif f.name == "checkpoint_steps":
            kw.update(type=_positive_list, metavar="N,N,...")
        elif f.name == "recorders":
            kw.update(type=lambda s: [x for x in s.split(",") if x], metavar="MOD:CLS,...")
        elif t in (int, int | None):
            kw.update(type=_none_or(int, "an integer") if t is not int else int, metavar="N")
        elif t in (float, float | None):
            kw.update(type=_none_or(float, "a number") if t is not float else float, metavar="X")
        else:
            kw.update(type=str, metavar="S")
        g.add_argument(_flag(f.name), **kw)


def collect_overrides(args) -> dict:
    out = {}
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is None:
            continue
        if f.name == "shortcut" and isinstance(v, str) and v.lower() == "none":
            v = "__none__"
        out[f.name] = v
    return out


def build_config(args) -> TrainConfig:
    overrides = collect_overrides(args)
    nulls = {k for k, v in overrides.items() if v == "__none__"}
    overrides = {k: v for k, v in overrides.items() if k not in nulls}
    if getattr(args, "config", None):
        path = Path(args.config)
        try:
            base = json.loads(path.read_text())
        except FileNotFoundError:
            raise CliError(f"--config: file {args.config!r} does not exist") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise CliError(f"--config: {args.config!r} is not valid JSON ({e})") from None
        if not isinstance(base, dict):
            raise CliError(f"--config: {args.config!r} must hold a JSON object of TrainConfig fields")
        if args.preset:
            raise CliError("--config and --preset can't be combined: a saved config is complete")
        if "iterations" in overrides and "epochs" not in overrides:
            base["epochs"] = None
        if "epochs" in overrides and "iterations" not in overrides:
            base["iterations"] = None
        base.update(overrides)
        for k in nulls:
            base[k] = None
        try:
            return TrainConfig.from_dict(base, source=f"--config {args.config}")
        except TypeError as e:
            raise CliError(f"--config {args.config}: {e}") from None
    cfg = apply_preset(args.preset, overrides)
    for k in nulls:
        setattr(cfg, k, None)
    return cfg.validate("options")


class Progress:
    """A one-line progress bar on stderr (a line per ~10% when not a terminal).

    Hand-written rather than tqdm: redirected to a file, a 64k-step run leaves 11 lines here
    and half a megabyte of carriage-return overwrites on one line with tqdm
    (benchmarks/bench_progress.py, BENCHMARKS.md section 8); and resnet_core keeps to torch
    and torchvision."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.last_pct = -1
        self.t0 = time.time()

    def __call__(self, ctx, row):
        step, total = ctx.step, ctx.total_steps
        frac = step / total
        width = 24
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        rate = row.get("images_per_s") or 0
        eta = (total - step) * ctx.config.batch_size / rate if rate else 0
        loss = row["loss"]
        text = (
            f"[{bar}] {step}/{total} loss {loss:.3f} train err {100 * row['error']:.1f}% "
            f"{rate:,.0f} img/s ETA {fmt_eta(eta)}"
        )
        if self.tty:
            self.stream.write("\r" + text + ("\n" if step == total else ""))
            self.stream.flush()
        else:
            pct = int(frac * 10)
            if pct != self.last_pct or step == total:
                self.last_pct = pct
                print(text, file=self.stream, flush=True)


def final_errors(run) -> dict:
    rows = run.read_metrics()
    out = {}
    for r in rows:
        if r.get("split") in ("test", "val", "train_eval") and r.get("error") is not None:
            out[r["split"]] = r["error"]
    return out


def cmd_train(args) -> int:
    from .memory import check_run
    from .train import train

    cfg = build_config(args)
    store = RunStore(args.runs_dir)
    check_source(cfg.dataset)
    require_on_disk(cfg.dataset, cfg.data_root, cfg.download)  # before queueing, too
    check_run(cfg)  # what can't fit in memory is refused before anything is loaded or made
    if not args.background:
        _foreground_backend(args, "train")
    if args.background:
        from .jobs import submit

        run = submit(store, cfg, backend=args.backend, address=args.ray_address)
        print(run.id, flush=True)
        print(f"queued in {store.root}; follow it with: python -m resnet_core runs", file=sys.stderr)
        return 0
    # load the data before making a run folder: a missing or broken dataset leaves nothing behind
    data = load_dataset(
        cfg.dataset, cfg.data_root, cfg.download, cfg.subset, cfg.image_size, cfg.val_split, cfg.seed
    )
    if cfg.batch_size > len(data.y_train):
        raise CliError(
            f"--batch-size {cfg.batch_size} is larger than the {len(data.y_train)} "
            "training images; accepted: 1 to that"
        )
    run = store.create(cfg, state="running", message="starting")
    print(run.id, flush=True)
    print(f"run folder: {run.path}", file=sys.stderr, flush=True)
    return _finish(run, lambda: train(cfg, run=run, data=data, progress=None if args.quiet else Progress()))


def _finish(run, fn) -> int:
    try:
        st = fn()
    except KeyboardInterrupt:
        print(f"\nstopped; resume with: python -m resnet_core resume {run.id}", file=sys.stderr)
        return 130
    st = run.read_status()
    errs = final_errors(run)
    parts = [f"{k} error {100 * v:.2f}%" for k, v in errs.items()]
    print(
        f"{run.id}: {st['state']} — {st.get('message', '')}" + (f"; {', '.join(parts)}" if parts else ""),
        file=sys.stderr,
    )
    return 0 if st["state"] == "done" else 1


def cmd_resume(args) -> int:
    from .jobs import ensure_runner, restart_if_stranded, resume
    from .train import run_in_store

    store = RunStore(args.runs_dir)
    if not args.background:
        _foreground_backend(args, "resume")
    run = resume(
        store,
        args.run_id,
        start_runner=False,
        foreground=not args.background,
        backend=args.backend,
        address=args.ray_address,
    )
    if args.background:
        ensure_runner(store)
        print(run.id)
        return 0
    _note_restart(restart_if_stranded(store))  # the other queued runs, if their runner died
    print(run.id, flush=True)
    return _finish(
        run,
        lambda: run_in_store(
            store, run.id, progress=None if args.quiet else Progress(), threads=args.threads
        ),
    )


class HangUp(Exception):
    """SIGHUP: the terminal of a foreground sweep was closed."""


def _on_hangup(signum, frame):
    raise HangUp()


def _note_restart(started: bool) -> None:
    if started:
        _say("started a queue runner for the queued runs (none was running)")


def _say(text: str) -> None:
    """A line on stderr that never fails: after SIGHUP the terminal may be gone."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _sweep_eta(store, ids) -> str:
    """'  sweep ETA m:ss' for the whole sweep (resnet_core.eta), or '' before it can tell."""
    from .eta import runs_eta
    from .jobs import concurrent_jobs, cores

    eta = runs_eta(store, ids, concurrent_jobs(cores()))
    if eta is None:
        return ""
    s = int(eta)
    return (
        f"  sweep ETA {s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
        if s >= 3600
        else f"  sweep ETA {s // 60}:{s % 60:02d}"
    )


def cmd_sweep(args) -> int:
    from .jobs import ensure_runner, submit

    configs, seeds, store = _sweep_configs(args)
    if args.dry_run:
        for c in configs:
            print(c.to_json())
    # a dry run says so too: it shows what the real sweep would do, refusal included
    require_on_disk(configs[0].dataset, configs[0].data_root, configs[0].download)
    if args.dry_run:
        return 0
    t0 = time.time()
    runs = [
        submit(store, c, start_runner=False, backend=args.backend, address=args.ray_address) for c in configs
    ]
    ids = [r.id for r in runs]
    for r in runs:
        print(r.id, flush=True)
    if args.background:
        ensure_runner(store)
        return 0
    tick = _sweep_ticker(ids, seeds, t0)
    if any(store.run(i).read_status_raw().get("backend") not in (None, "local") for i in ids):
        stopped = _watch_sweep(store, ids, tick)
    else:
        stopped = _drain_sweep(store, ids, tick)
    if stopped is not None:
        return stopped
    return _sweep_summary(store, ids, args.name, t0)


def _sweep_configs(args) -> tuple[list[TrainConfig], list, RunStore]:
    """The sweep's configs, its seeds and the store, or a CliError naming the bad flag."""
    if args.name not in SWEEPS:
        raise CliError(f"sweep {args.name!r} is not accepted; accepted: {', '.join(SWEEPS)}")
    sw = SWEEPS[args.name]
    overrides = collect_overrides(args)
    if overrides.get("model"):
        raise CliError(f"--model can't be used with a sweep: {args.name} trains {', '.join(sw['models'])}")
    seeds = [overrides.get("seed")]  # None: the preset's seed
    if args.seeds is not None:
        if overrides.get("seed") is not None:
            raise CliError(
                f"--seed {overrides['seed']} and --seeds {args.seeds} can't be combined: "
                f"--seeds trains every model once per seed; give only --seeds "
                f"({SEEDS_ACCEPTED})"
            )
        seeds = parse_seeds(args.seeds)
    runs = sweep_plan(args.name, seeds)
    fixed = sorted(({k for r in runs for k in r} - {"model", "name", "seed"}) & set(overrides))
    if fixed:
        raise CliError(f"{_flag(fixed[0])} can't be used with sweep {args.name}: its runs set it")
    store = RunStore(args.runs_dir)
    check_source(overrides.get("dataset") or TrainConfig.dataset)
    configs = []
    for r in runs:  # a run's own label (rescue's variants) replaces "sweep NAME"
        configs.append(apply_preset(sw["preset"], {**overrides, "name": f"sweep {args.name}", **r}))
    return configs, seeds, store


def _sweep_ticker(ids: list[str], seeds: list, t0: float):
    """The progress line's printer: every tick on a terminal, every 2 s into a log."""
    last = {"t": 0.0}

    def tick(st):
        if time.time() - last["t"] < 2 and not sys.stderr.isatty():
            return
        last["t"] = time.time()
        parts = []
        for rid in ids:
            s = st.run(rid).read_status()
            tot = s.get("total") or 0
            pct = f"{100 * s.get('step', 0) / tot:.0f}%" if tot else "-"
            cfg = st.run(rid).read_config_dict()
            seed = f"/s{cfg.get('seed')}" if len(seeds) > 1 else ""
            parts.append(f"{cfg.get('model')}{seed}:{s['state']} {pct}")
        line = f"{time.time() - t0:6.1f}s  " + "  ".join(parts) + _sweep_eta(st, ids)
        if sys.stderr.isatty():
            sys.stderr.write("\r" + line)
        else:
            print(line, file=sys.stderr, flush=True)

    return tick


def _drain_sweep(store: RunStore, ids: list[str], tick) -> int | None:
    """Train the queue here; an exit code when a hang-up or Ctrl-C ended it early, else None."""
    from .jobs import ensure_runner, run_queue

    # closing the terminal must not strand the queue: on SIGHUP this process hands what is left
    # to a detached runner (in its own session, so the hangup does not reach it) and exits 0
    old_hup = signal.signal(signal.SIGHUP, _on_hangup) if hasattr(signal, "SIGHUP") else None
    try:
        run_queue(store, on_tick=tick, wait_for_lock=True)
    except HangUp:
        ensure_runner(store)  # run_queue released the store's lock on the way out
        _say(
            f"\nhang-up: a detached runner trains the rest; follow it with: "
            f"python -m resnet_core runs --runs-dir {store.root}"
        )
        return 0
    except KeyboardInterrupt:
        return _cancel_sweep(store, ids)
    finally:
        if old_hup is not None:
            signal.signal(signal.SIGHUP, old_hup)
    return None


def _cancel_sweep(store: RunStore, ids: list[str]) -> int:
    """Ctrl-C in a foreground sweep: cancel each of its runs (one already gone is skipped)."""
    from .jobs import cancel

    for rid in ids:
        try:
            cancel(store, rid)
        except StoreError:
            pass
    print("\nsweep cancelled", file=sys.stderr)
    return 130


def _watch_sweep(store: RunStore, ids: list[str], tick, poll: float = 0.5) -> int | None:
    """A sweep on Ray: a Ray task dies with the process that submitted it (its driver), so
    this terminal must not be the driver. The detached runner is (ensure_runner); this process
    only follows progress: a hang-up leaves the runs training, Ctrl-C cancels them."""
    from .jobs import ensure_runner, restart_if_stranded

    ensure_runner(store)
    old_hup = signal.signal(signal.SIGHUP, _on_hangup) if hasattr(signal, "SIGHUP") else None
    try:
        while True:
            tick(store)
            if not any(_still_active(store, rid) for rid in ids):
                return None
            restart_if_stranded(store)  # the runner was killed: queued runs need one
            time.sleep(poll)
    except HangUp:
        _say(
            f"\nhang-up: the queue's runner goes on training the runs; follow it with: "
            f"python -m resnet_core runs --runs-dir {store.root}"
        )
        return 0
    except KeyboardInterrupt:
        return _cancel_sweep(store, ids)
    finally:
        if old_hup is not None:
            signal.signal(signal.SIGHUP, old_hup)


def _still_active(store: RunStore, rid: str) -> bool:
    try:
        return store.run(rid).read_status()["state"] in ("queued", "running")
    except StoreError:
        return False  # deleted meanwhile: nothing left to wait for


def _sweep_summary(store: RunStore, ids: list[str], name: str, t0: float) -> int:
    """The table of the sweep's runs; 0 when every one is done."""
    wall = time.time() - t0
    print(file=sys.stderr)
    print(f"sweep {name}: {len(ids)} runs in {wall:.1f} s wall time", file=sys.stderr)
    print(f"{'model':<16}{'seed':>6}  {'state':<12}{'train err (eval)':>18}{'test err':>10}", file=sys.stderr)
    ok = True
    for rid in ids:
        run = store.run(rid)
        s = run.read_status()
        e = final_errors(run)
        ok &= s["state"] == "done"
        fmt = lambda v: f"{100 * v:.1f}%" if v is not None else "-"
        c = run.read_config_dict()
        label = c.get("model") if str(c.get("name")).startswith("sweep ") else c.get("name")
        print(
            f"{label:<16}{c.get('seed')!s:>6}  {s['state']:<12}"
            f"{fmt(e.get('train_eval')):>18}{fmt(e.get('test')):>10}",
            file=sys.stderr,
        )
    return 0 if ok else 1


def cmd_runs(args) -> int:
    from .jobs import restart_if_stranded

    store = RunStore(args.runs_dir)
    infos = store.list_runs()
    _note_restart(restart_if_stranded(store, infos))
    if not infos:
        print(f"no runs in {store.root}", file=sys.stderr)
        return 0
    if args.json:
        for i in infos:
            print(json.dumps(i))
        return 0
    print(runs_table(store, infos))
    return 0


RUNS_HEADER = ("id", "state", "model", "dataset", "progress", "train err", "test err")
DATASET_WIDTH = 28  # a longer dataset name is cut at its end, with "..."


def _dataset_label(ds) -> str:
    """A dataset as a reader recognizes it: a builtin's name, a file's or folder's own name."""
    text = str(ds if ds is not None else "?")
    if "/" in text or os.sep in text:
        text = Path(text).name or text
    return text if len(text) <= DATASET_WIDTH else text[: DATASET_WIDTH - 3] + "..."


def runs_table(store: RunStore, infos: list[dict]) -> str:
    """``runs``: a header, then one row per run with its final errors (eval-mode train error,
    test error; "-" until the run has them). Columns are as wide as their widest cell."""
    fmt = lambda v: f"{100 * v:.1f}%" if isinstance(v, (int, float)) else "-"  # noqa: E731
    rows = [RUNS_HEADER]
    for i in infos:
        s, c = i["status"], i["config"]
        tot = s.get("total")
        errs = final_errors(store.run(i["id"])) if not i["error"] else {}
        rows.append(
            (
                i["id"],
                s.get("state", "?"),
                str(c.get("model", "?")),
                _dataset_label(c.get("dataset")),
                f"{s.get('step', 0)}/{tot}" if tot else "-",
                fmt(errs.get("train_eval")),
                fmt(errs.get("test")),
            )
            + ((f"({i['error']})",) if i["error"] else ())
        )
    widths = [max(len(r[k]) for r in rows if k < len(r)) for k in range(len(RUNS_HEADER))]
    right = {4, 5, 6}  # numbers align right
    lines = []
    for r in rows:
        cells = [
            r[k].rjust(widths[k]) if k in right else r[k].ljust(widths[k]) for k in range(len(RUNS_HEADER))
        ]
        lines.append("  ".join(cells + list(r[len(RUNS_HEADER) :])).rstrip())
    return "\n".join(lines)


def cmd_models(args) -> int:
    from .memory import DataShape, estimate, fmt_bytes
    from .models import build_model, count_macs, count_params, list_models, parse_name

    # the memory column: one training step of a CIFAR-10-sized batch (3x32x32, 10 classes,
    # 50k images in memory), parameters + gradients + momentum + saved activations + data
    shape = DataShape(50000, 10000, 3, args.image_size, args.image_size, 10)
    print(
        f"{'model':<12}{'family':<10}{'params':>14}  training memory at batch "
        f"{args.batch_size}, {args.image_size}x{args.image_size} (params+grads+momentum, "
        "activations)",
        flush=True,
    )
    for name in args.names or list_models():
        m = build_model(name)
        fam = parse_name(name)[0]
        est = estimate(
            TrainConfig(
                model=name,
                batch_size=args.batch_size,
                iterations=1,
                dataset="cifar10",
                image_size=args.image_size,
            ),
            shape,
        )
        weights = est.params_bytes + est.grads_bytes + est.momentum_bytes
        line = (
            f"{name:<12}{fam:<10}{count_params(m):>14,}  {fmt_bytes(est.total):>9} "
            f"({fmt_bytes(weights)} + {fmt_bytes(est.activations_bytes)})"
        )
        if args.macs:
            line += f"{count_macs(m) / 1e9:>10.3f} G mult-adds"
        print(line, flush=True)
    print(
        f"training memory also counts the dataset ({fmt_bytes(est.data_bytes)} for CIFAR-10) "
        f"and torch itself; `train` refuses a run that can't fit, naming both numbers"
    )
    print("any 6n+2 depth: cifar_resnet{D}, cifar_plain{D}, cifar_preresnet{D} (e.g. cifar_resnet50)")
    from .models.registry import variant_listing

    print("\n".join(variant_listing()))
    return 0


def cmd_cancel(args) -> int:
    from .jobs import cancel

    store = RunStore(args.runs_dir)
    print(f"{args.run_id}: {cancel(store, args.run_id)}")
    return 0


def _reference_dest(text: str) -> Path:
    from .reference import check_set_name, default_root

    dest = Path(text) if ("/" in text or os.sep in text) else default_root() / text
    check_set_name(dest.name)  # the rule the app and the listing use: no 'a..b' here either
    return dest


def cmd_reference(args) -> int:
    from .reference import ReferenceSetError, check_set, export, list_sets, read_set, set_size

    if args.action == "export":
        store = RunStore(args.runs_dir)
        ids = list(args.run_ids)
        if args.all:
            ids += [
                i["id"]
                for i in store.list_runs()
                if i["status"].get("state") == "done" and i["id"] not in ids
            ]
        if not ids:
            raise CliError(
                "name the runs to export (run ids from `python -m resnet_core runs`) "
                "or pass --all for every finished run in the store"
            )
        dest = _reference_dest(args.to)
        s = export(
            store,
            ids,
            dest,
            title=args.title or "",
            description=args.description or "",
            command=args.command,
            machine=args.machine,
            force=args.force,
            max_weight_steps=args.max_weight_steps,
            claims=[c.strip() for c in (args.claims or "").split(",") if c.strip()],
            default=args.default,
        )
        print(
            f"{s.path}: {len(s.run_ids())} runs, {set_size(s.path) / 1024:.0f} KB (records only, no weights)"
        )
        return 0
    sets = [read_set(_reference_dest(args.set))] if args.set else list_sets(args.root)
    if args.set and not sets[0].path.is_dir():
        raise CliError(f"no reference set at {sets[0].path}")
    if not sets:
        print("no reference sets", file=sys.stderr)
        return 0
    bad = 0
    for s in sets:
        if args.action == "check":
            problems = check_set(s)
            bad += bool(problems)
            print(f"{s.name}: " + ("ok" if not problems else "; ".join(problems)))
            continue
        print(f"{s.name}: {s.title}" + (f"  ({s.error})" if s.error else ""))
        if s.meta.get("machine"):
            print(f"  made {s.meta.get('made', '?')} on {s.meta['machine']}")
        for r in s.meta.get("runs", []):
            fmt = lambda v: f"{100 * v:.2f}%" if isinstance(v, (int, float)) else "-"  # noqa: E731
            print(
                f"  {str(r.get('model', '?')):<12} test err {fmt(r.get('test_error')):>7}  "
                f"train err (eval) {fmt(r.get('train_error')):>7}  {r.get('id')}"
            )
    defaults = [s.name for s in sets if s.meta.get("default") is True]
    if args.action == "check" and len(defaults) > 1:
        print(f"more than one set is the default (pages show the first): {', '.join(defaults)}")
        bad += 1
    if bad:
        raise ReferenceSetError(f"{bad} reference set(s) have problems (listed above)")
    return 0


def cmd_export(args) -> int:
    from .export import export_tensorboard

    out = export_tensorboard(RunStore(args.runs_dir), list(args.run_ids), args.tensorboard, force=args.force)
    for r in out:
        print(f"{r['path']}: {r['model']}, {r['scalars']} scalars, {r['layer_scalars']} layer statistics")
    print(f"open with: tensorboard --logdir {args.tensorboard}", file=sys.stderr)
    return 0


def cmd_runner(args) -> int:
    from .jobs import run_queue

    run_queue(RunStore(args.runs_dir))
    return 0


def cmd_run_stored(args) -> int:
    from .train import run_in_store

    store = RunStore(args.runs_dir)
    run = store.run(args.run_id)
    remote = _wait_for_remote_owner(run)
    # a dead trainer of another host can hold its run lock on a shared filesystem for a while
    # (NFSv4 keeps a dead client's lock for its lease, 90 s by default): wait that out
    deadline = time.time() + (REMOTE_LOCK_WAIT_S if remote else 0)
    while True:
        try:
            run_in_store(store, args.run_id, threads=args.threads)
            return 0
        except RunBusyError:
            if time.time() >= deadline:
                raise
            time.sleep(3)


REMOTE_LOCK_WAIT_S = 180.0  # twice NFSv4's default lease


def _wait_for_remote_owner(run, poll: float = 1.0) -> bool:
    """A retried Ray task (its node died) may start while the run's status still shows the
    dead trainer of another host beating recently: wait until its heartbeat goes stale
    (the store then reads it interrupted) rather than refuse. A trainer of this host is
    judged by its pid at once, as before. True when the last owner was a trainer of another
    host (its lock may outlive it on a shared filesystem)."""
    from .store import STALE_S

    deadline = time.time() + STALE_S + 15
    remote = False
    while time.time() < deadline:
        try:
            raw = run.read_status_raw()
            remote = raw["state"] == "running" and not launch.on_this_host(raw)
            if not remote or run.read_status()["state"] != "running":
                return remote
        except StoreError:
            return remote  # the trainer reports a broken run itself
        time.sleep(poll)
    return remote


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line naming the flag, not the whole usage block."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def make_parser(prog: str = "python -m resnet_core") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="Train and inspect plain and residual nets (He et al. 2016).")
    sub = p.add_subparsers(
        dest="cmd", required=True, metavar="{train,sweep,resume,runs,models,cancel,reference,export}"
    )

    _add_train(sub)
    _add_sweep(sub)
    _add_resume_and_runs(sub)
    _add_models(sub)
    _add_cancel_and_reference(sub)
    _add_export_and_internal(sub)
    return p


def _backend_flags(sp) -> None:
    sp.add_argument(
        "--backend",
        default=None,
        metavar="{local,ray}",
        help="where queued runs train: local processes (default; $RESNET_LAB_BACKEND), or Ray "
        "tasks (pip install 'resnet-lab[ray]'; the store must be a path every node can write)",
    )
    sp.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="the Ray cluster (default: $RAY_ADDRESS; none: a local cluster started for the queue)",
    )


def _foreground_backend(args, what: str) -> None:
    """A foreground train or resume trains in this process: --backend ray is refused there."""
    if args.backend is not None and launch.backend_name(args.backend) != "local":
        raise CliError(f"--backend {args.backend} needs --background: {what} in the foreground trains here")


def _runs_dir_flag(sp) -> None:
    sp.add_argument(
        "--runs-dir",
        default=None,
        metavar="DIR",
        help="the run store (default: $RESNET_LAB_RUNS_DIR or ./checkpoints)",
    )


def _add_train(sub) -> None:
    """The train subcommand."""
    t = sub.add_parser("train", help="train one model (in the foreground unless --background)")
    t.add_argument("--preset", choices=list(PRESETS), help="a budget; explicit flags override it")
    t.add_argument("--config", metavar="FILE", help="a saved config.json to re-run")
    t.add_argument("--background", action="store_true", help="queue it and return at once")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    _runs_dir_flag(t)
    _backend_flags(t)
    add_config_flags(t)
    t.set_defaults(fn=cmd_train)


def _add_sweep(sub) -> None:
    """The sweep subcommand."""
    s = sub.add_parser("sweep", help="queue a set of runs and drain the queue (quick, lesson, fig6)")
    s.add_argument("name", help=f"one of: {', '.join(SWEEPS)}")
    s.add_argument("--background", action="store_true", help="queue them and return at once")
    s.add_argument("--dry-run", action="store_true", help="print the configs, run nothing")
    s.add_argument(
        "--seeds",
        default=None,
        metavar="S,S,...",
        help="train every model once per seed, e.g. 0,1,2 (not with --seed); the "
        "app shows runs that differ only in seed as mean +- std",
    )
    s.add_argument("--preset", help=argparse.SUPPRESS)
    _runs_dir_flag(s)
    _backend_flags(s)
    add_config_flags(s)
    s.set_defaults(fn=cmd_sweep)


def _add_resume_and_runs(sub) -> None:
    """The resume and runs subcommands."""
    r = sub.add_parser(
        "resume", help="continue an interrupted, failed or cancelled run, or start a queued one now"
    )
    r.add_argument("run_id")
    r.add_argument("--background", action="store_true")
    r.add_argument("--quiet", action="store_true")
    r.add_argument("--threads", type=int, default=None, help="default: the thread count it ran with")
    _runs_dir_flag(r)
    _backend_flags(r)
    r.set_defaults(fn=cmd_resume)

    ls = sub.add_parser("runs", help="list runs: id, state, model, dataset, progress, final errors")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    _runs_dir_flag(ls)
    ls.set_defaults(fn=cmd_runs)


def _add_models(sub) -> None:
    """The models subcommand."""
    m = sub.add_parser(
        "models", help="list the named models with parameter counts and the memory a training step needs"
    )
    m.add_argument(
        "names",
        nargs="*",
        metavar="MODEL",
        help="only these models (any name train accepts, e.g. cifar_resnet50)",
    )
    m.add_argument("--macs", action="store_true", help="also count multiply-adds (slower)")
    m.add_argument(
        "--batch-size",
        type=int,
        default=128,
        metavar="B",
        help="batch size for the memory column (default 128)",
    )
    m.add_argument(
        "--image-size",
        type=int,
        default=32,
        metavar="S",
        help="image side in pixels for the memory column (default 32, CIFAR)",
    )
    m.set_defaults(fn=cmd_models)


def _add_cancel_and_reference(sub) -> None:
    """The cancel and reference subcommands."""
    c = sub.add_parser("cancel", help="cancel a queued or running run")
    c.add_argument("run_id")
    _runs_dir_flag(c)
    c.set_defaults(fn=cmd_cancel)

    rf = sub.add_parser("reference", help="bundled reference runs: list, check, export")
    rsub = rf.add_subparsers(dest="action", required=True, metavar="{list,check,export}")
    for action, text in (
        ("list", "the sets and their runs' final errors"),
        ("check", "check that every set is readable and holds records only"),
    ):
        a = rsub.add_parser(action, help=text)
        a.add_argument("set", nargs="?", help="a set name or folder (default: every set)")
        a.add_argument(
            "--root",
            default=None,
            metavar="DIR",
            help="where the sets are (default: $RESNET_LAB_REFERENCE_DIR or ./reference)",
        )
        a.set_defaults(fn=cmd_reference)
    e = rsub.add_parser("export", help="copy finished runs' records (no weights) into a set")
    e.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    e.add_argument("--all", action="store_true", help="every finished run in the store")
    e.add_argument(
        "--to", required=True, metavar="NAME", help="a set name (under ./reference) or a folder path"
    )
    e.add_argument("--title", required=True, help="shown in the app beside the runs")
    e.add_argument("--description", default="", help="how the runs were made, in a sentence")
    e.add_argument("--command", default=None, help="the command that made the runs")
    e.add_argument("--machine", default=None, help="default: the GPU or CPU named in env.json")
    e.add_argument("--force", action="store_true", help="replace an existing set")
    e.add_argument(
        "--claims",
        default="",
        metavar="A,B",
        help="orderings the runs show in every seed, checked now and by `reference check`: "
        "deeper-plain-worse, deeper-residual-better, fig7-order",
    )
    e.add_argument(
        "--max-weight-steps",
        type=int,
        default=40,
        metavar="N",
        help="weight-gradient steps kept per run (Gradient flow's heatmap columns; default 40)",
    )
    e.add_argument("--default", action="store_true", help="the set the app shows when a user has no runs")
    _runs_dir_flag(e)
    e.set_defaults(fn=cmd_reference)


def _add_export_and_internal(sub) -> None:
    """The export subcommand, and the internal runner and _run ones."""
    ex = sub.add_parser("export", help="write runs as TensorBoard event files")
    ex.add_argument(
        "run_ids",
        nargs="+",
        metavar="RUN_ID",
        help="run ids from `runs`, or ref:<set>/<run_id> for a bundled reference run",
    )
    ex.add_argument(
        "--tensorboard",
        required=True,
        metavar="DIR",
        help="a new or empty folder, or an earlier export (its runs are replaced)",
    )
    ex.add_argument(
        "--force",
        action="store_true",
        help="also write into a non-empty folder that is not an earlier export",
    )
    _runs_dir_flag(ex)
    ex.set_defaults(fn=cmd_export)

    q = sub.add_parser("runner")  # the detached queue runner (started by submit)
    _runs_dir_flag(q)
    q.set_defaults(fn=cmd_runner)
    x = sub.add_parser("_run")  # one stored run in this process (started by the runner)
    x.add_argument("run_id")
    x.add_argument("--threads", type=int, default=None)
    _runs_dir_flag(x)
    x.set_defaults(fn=cmd_run_stored)


def main(argv=None, prog: str = "python -m resnet_core") -> int:
    parser = make_parser(prog)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except USER_ERRORS as e:
        msg = str(e)
        field = getattr(e, "field", None)
        if field:
            msg = f"{_flag(field)}: {msg}"
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:
        if not isinstance(e, DiskFullError) and e.errno not in DISK_FULL_ERRNOS:
            raise
        if not isinstance(e, DiskFullError):  # from a write outside the store's helpers
            where = os.path.dirname(e.filename) if isinstance(e.filename, str) else None
            e = DiskFullError(where or getattr(args, "runs_dir", None) or RunStore().root)
        _say(f"error: {e}")
        return 1


def console() -> int:
    """The ``resnet-lab`` console script (pyproject.toml's [project.scripts])."""
    return main(prog="resnet-lab")


if __name__ == "__main__":
    sys.exit(main())
