"""The training loop. It knows nothing of analysis: callbacks listen in.

A run is a function of its config and seed: the epoch's permutation and each step's
augmentation draw from generators seeded by (seed, epoch) and (seed, step), so a run resumed
from a checkpoint continues exactly as an uninterrupted one (bit for bit on CPU in fp32).
"""

from __future__ import annotations

import importlib
import math
import os
import platform
import shutil
import signal
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .data import Dataset, augment_batch, augment_kind, load_dataset, normalize
from .inference import loss_and_error
from .models import build_model, parse_name
from .store import (
    HEARTBEAT_S,
    Run,
    RunBusyError,
    RunStore,
    atomic_write,
    atomic_write_json,
    fault_point,
    process_identity,
)

CKPT_VERSION = 1


# --- hardware ---------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but no CUDA GPU is available; use auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device='mps' was asked for but MPS is not available; use auto or cpu")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def resolve_channels_last(flag: bool | None, device: torch.device, precision: str) -> bool:
    if flag is not None:
        return flag
    # on by default on CUDA and on every CPU: oneDNN's convolutions run NHWC natively, and
    # fp32 too gains there (~1.2x a step on AVX2 and AMX machines; BENCHMARKS.md)
    return device.type in ("cuda", "cpu")


# --- schedule ----------------------------------------------------------------------------
def lr_at(cfg: TrainConfig, step: int, total: int, warming: bool) -> float:
    """Learning rate for the step about to run."""
    if warming:
        return cfg.lr * 0.1
    t = step / max(1, total)
    if cfg.schedule == "steps":  # the paper: /10 at 32k and 48k of 64k
        return cfg.lr * (0.1 ** ((step >= int(0.5 * total)) + (step >= int(0.75 * total))))
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.schedule == "onecycle":
        up = 0.3
        if t < up:
            return cfg.lr * (0.1 + 0.9 * t / up)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (t - up) / (1 - up)))
    return cfg.lr


def warmup_enabled(cfg: TrainConfig) -> bool:
    if cfg.warmup == "auto":
        return parse_name(cfg.model)[2] >= 110
    return cfg.warmup == "paper"


# --- callbacks ---------------------------------------------------------------------------
class Callback:
    """Hooks into the loop. ``ctx`` is the TrainContext; every method is optional."""

    # True when the callback hooks the training forward/backward itself; torch.compile is then
    # skipped. Callbacks that hook only their own passes through ctx.model (the eager module,
    # which shares its parameters with the compiled one) set it False.
    needs_hooks = True

    def on_train_start(self, ctx: TrainContext) -> None: ...
    # before the training forward of step ctx.step + 1: the model is exactly as a checkpoint
    # saved at ctx.step (that forward moves BN's running statistics)
    def on_step_start(self, ctx: TrainContext) -> None: ...
    def on_after_backward(self, ctx: TrainContext) -> None: ...
    def on_step_end(self, ctx: TrainContext) -> None: ...
    def on_eval(self, ctx: TrainContext, results: dict) -> None: ...
    def on_train_end(self, ctx: TrainContext) -> None: ...


@dataclass
class TrainContext:
    config: TrainConfig
    model: torch.nn.Module
    data: Dataset
    device: torch.device
    run: Run | None
    total_steps: int
    steps_per_epoch: int
    precision: str
    channels_last: bool
    step: int = 0  # steps completed
    loss: torch.Tensor | None = None  # this step's loss (a device tensor; .item() syncs)
    layer_rows: list = field(default_factory=list)
    problems: list = field(default_factory=list)  # recorder failures, shown in the run's status

    def report_problem(self, message: str) -> None:
        """A callback could not do its job (the run goes on): warn, and keep the message for
        the run's status (``recorder_errors``), so its pages can say why records are missing."""
        warnings.warn(message)
        self.problems.append(message)

    def log_layers(self, rows: list[dict]) -> None:
        """Recorders hand per-layer rows here; they are written with the next flush."""
        self.layer_rows.extend(rows)

    def prepare(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 images -> the model's normalized input on the device."""
        x = normalize(x_uint8.to(self.device), self.data.mean, self.data.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self):
        return torch.autocast(
            self.device.type,
            dtype=torch.bfloat16,
            enabled=self.precision == "bf16" and self.device.type in ("cpu", "cuda"),
        )


def load_callbacks(paths: list[str]) -> tuple[list[Callback], list[str]]:
    """Instantiate callbacks named by "module:Class". One that fails to load does not stop
    the run (resnet_core trains where only torch and torchvision are installed); the returned
    messages name it and why, for the run's status."""
    out, problems = [], []
    for p in paths:
        mod, _, cls = p.partition(":")
        try:
            out.append(getattr(importlib.import_module(mod), cls)())
        except (ImportError, AttributeError) as e:
            problems.append(
                f"recorder {p!r} not attached, so this run records no per-layer "
                f"statistics: {type(e).__name__}: {e}"
            )
    return out, problems


class TrainingCancelled(Exception):
    """A run stopped by cancel or SIGTERM, after checkpointing (not a study's
    analysis.progress.Cancelled)."""

    pass


class Diverged(Exception):
    """The training loss stopped being finite at ``step`` (the status names that step, not
    the later one the check ran at)."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


# --- evaluation --------------------------------------------------------------------------
def evaluate(ctx: TrainContext, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> dict:
    """Loss and error of the training model on uint8 images ``x`` (eval mode, autocast as
    trained): {"loss", "error", "n"}."""
    return loss_and_error(ctx.model, x, y, batch, prepare=ctx.prepare, autocast=ctx.autocast)


# --- environment ------------------------------------------------------------------------
def git_commit() -> str | None:
    try:
        r = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def compile_usable(device: torch.device, callbacks: list) -> bool:
    """Whether torch.compile can serve this run; says why not (the run then trains eagerly)."""
    hooking = [type(c).__name__ for c in callbacks if getattr(c, "needs_hooks", True)]
    why = None
    if hooking:
        why = f"{', '.join(hooking)} hook(s) the training pass, which a compiled model would not run"
    elif device.type == "cpu" and not any(
        shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")
    ):
        why = "torch.compile on CPU needs a C++ compiler (g++ or clang++), and none is on PATH"
    elif device.type == "cuda":
        try:
            from torch.utils._triton import has_triton
        except ImportError:  # pragma: no cover - older torch
            has_triton = lambda: True  # noqa: E731
        if not has_triton():
            why = "torch.compile on CUDA needs triton, which is not installed"
    if why:
        warnings.warn(f"compile ignored, training eagerly: {why}")
    return why is None


def environment(device: torch.device, threads: int, precision: str, channels_last: bool) -> dict:
    import torchvision

    env = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "threads": threads,
        "precision": precision,
        "channels_last": channels_last,
        "cpu_count": os.cpu_count(),
        "git_commit": git_commit(),
        "host": platform.node(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    cpu = cpu_model()
    if cpu:
        env["cpu_model"] = cpu
    return env


def cpu_model() -> str | None:
    """The processor's name (Linux /proc/cpuinfo, else platform), for the record."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


# --- the loop ---------------------------------------------------------------------------
def train(
    cfg: TrainConfig,
    run: Run | None = None,
    callbacks: list[Callback] | None = None,
    progress=None,
    threads: int | None = None,
    data: Dataset | None = None,
) -> dict:
    """Train ``cfg``; record into ``run`` when given. Resumes from ``run``'s last checkpoint
    when there is one. Returns the final status dict. ``progress(ctx, info)`` is called at
    each log step."""
    cfg.validate()
    ident = process_identity()
    t_start = time.time()
    lock = None
    if run is not None:
        # one trainer per run: a second one would interleave checkpoints and log lines
        lock = run.lock_for_training()
        if lock is None:
            raise RunBusyError(
                f"run {run.id} is being trained by another process; a second "
                "trainer would corrupt it (cancel that one first)"
            )
        run.write_status(state="running", message="loading data", started=t_start, heartbeat=t_start, **ident)
        fault_point("start")
    stop = {"flag": False}

    def on_term(signum, frame):
        stop["flag"] = True

    old_handler = None
    if threading_main():
        old_handler = signal.signal(signal.SIGTERM, on_term)
    try:
        return _train(cfg, run, callbacks, progress, threads, data, t_start, stop)
    except Diverged as e:
        if run is not None:
            at = {} if e.step is None else {"step": e.step}
            return run.write_status(state="diverged", message=str(e), heartbeat=time.time(), eta_s=0, **at)
        raise
    except TrainingCancelled as e:
        if run is not None:
            return run.write_status(state="cancelled", message=str(e), heartbeat=time.time(), eta_s=0)
        raise
    except KeyboardInterrupt:
        if run is not None:
            run.write_status(
                state="cancelled",
                message="stopped by Ctrl-C; resume continues from the last checkpoint",
                heartbeat=time.time(),
                eta_s=0,
            )
        raise
    except BaseException as e:
        if run is not None:
            try:
                run.write_status(
                    state="failed", message=f"{type(e).__name__}: {e}", heartbeat=time.time(), eta_s=0
                )
            except OSError:
                pass  # the disk refuses even the status: the error below still says why
        raise
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
        if lock is not None:
            lock.close()


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@dataclass
class _Loop:
    """What the loop carries from step to step, in one place."""

    cfg: TrainConfig
    ctx: TrainContext  # model, data, device, run, step, ...: what callbacks see
    fmodel: torch.nn.Module  # the module the step runs: torch.compile'd, or ctx.model itself
    opt: torch.optim.Optimizer
    callbacks: list[Callback]
    progress: object  # progress(ctx, row) at each log step, or None
    threads: int  # torch threads this run trains with (recorded in status and checkpoints)
    t_start: float  # when train() began: the "time" column of metrics.jsonl
    warming: bool  # the paper's warmup (lr/10 until training error < 80%) still on
    best: float  # lowest val (else test) error so far: picks the "best" checkpoint
    eval_every: int
    ckpt_every: int
    te_idx: torch.Tensor  # the fixed training subset evaluated as "train_eval"
    aug: str  # augmentation kind for this dataset
    gen: torch.Generator = field(default_factory=torch.Generator)  # reseeded per step
    perm_epoch: int = -1  # the epoch whose permutation ``perm`` is
    perm: torch.Tensor | None = None
    lr: float = 0.0  # the last step's learning rate
    # the training steps since the last log row (device tensors: one sync per log row)
    window_loss: list = field(default_factory=list)
    window_wrong: list = field(default_factory=list)
    window_n: int = 0
    window_first: int = 0  # the step the window starts after
    done_images: int = 0
    t_window: float = 0.0  # when training (after setup) began: images/s counts from here
    eval_time: float = 0.0  # seconds spent evaluating, left out of images/s
    rate: float | None = None  # training images per second
    last_beat: float = 0.0  # when the status heartbeat was last written

    @property
    def run(self) -> Run | None:
        return self.ctx.run

    @property
    def total(self) -> int:
        return self.ctx.total_steps


def _train(cfg, run, callbacks, progress, threads, data, t_start, stop) -> dict:
    loop, resumed = _setup(cfg, run, callbacks, progress, threads, data, t_start)
    ctx = loop.ctx
    _heartbeat(loop, message=f"resumed at step {ctx.step}" if resumed else "starting", force=True)
    ctx.model.train()
    try:
        while ctx.step < loop.total:
            if stop["flag"] or (run is not None and run.cancel_requested()):
                _flush_layers(loop)  # recorded before this checkpoint
                _save(loop, ["last"])
                raise TrainingCancelled(
                    f"cancelled at step {ctx.step} of {loop.total}; resume continues from here"
                )
            _step(loop)
            last = ctx.step == loop.total
            eval_due = ctx.step % loop.eval_every == 0 or last
            ckpt_due = ctx.step % loop.ckpt_every == 0 or last or ctx.step in cfg.checkpoint_steps
            if ctx.step % cfg.log_every == 0 or eval_due or ckpt_due:
                _log(loop, eval_due, ckpt_due, last)
            _heartbeat(loop)
    finally:
        _end_callbacks(loop)
    return _finish(loop)


def _setup(cfg, run, callbacks, progress, threads, data, t_start) -> tuple[_Loop, bool]:
    """Everything before the first step: hardware, data, model, optimizer, resume, callbacks."""
    device, threads, precision, channels_last = _hardware(cfg, run, threads)
    data = _data(cfg, data).to(device)
    model, opt = _model_and_optimizer(cfg, data, device, channels_last)
    n_train = len(data.y_train)
    steps_per_epoch = max(1, n_train // cfg.batch_size)
    total = cfg.iterations if cfg.iterations is not None else max(1, math.ceil(cfg.epochs * steps_per_epoch))
    ctx = TrainContext(cfg, model, data, device, run, total, steps_per_epoch, precision, channels_last)
    if callbacks is not None:
        callbacks = list(callbacks)
    else:
        callbacks, problems = load_callbacks(cfg.recorders)
        for msg in problems:
            ctx.report_problem(msg)
    step, warming, best, resumed = _resume(run, model, opt, device, warmup_enabled(cfg))
    use_compile = cfg.compile and compile_usable(device, callbacks)
    if run is not None:
        env = environment(device, threads, precision, channels_last)
        env["compile"] = use_compile
        atomic_write_json(run.path / "env.json", env)
    fmodel = torch.compile(model) if use_compile else model
    ctx.step = step
    for c in callbacks:
        c.on_train_start(ctx)
    g_eval = torch.Generator().manual_seed(cfg.seed + 31)
    te_idx = torch.randperm(n_train, generator=g_eval)[: cfg.train_eval_size].sort().values.to(device)
    loop = _Loop(
        cfg=cfg,
        ctx=ctx,
        fmodel=fmodel,
        opt=opt,
        callbacks=callbacks,
        progress=progress,
        threads=threads,
        t_start=t_start,
        warming=warming,
        best=best,
        eval_every=cfg.eval_every or steps_per_epoch,
        ckpt_every=cfg.checkpoint_every or steps_per_epoch,
        te_idx=te_idx,
        aug=augment_kind(cfg.augment, data.name),
        window_first=step,
        t_window=time.time(),
    )
    return loop, resumed


def _hardware(cfg, run, threads) -> tuple[torch.device, int, str, bool]:
    device = resolve_device(cfg.device)
    threads = threads or cfg.threads
    if threads is None and run is not None and run.checkpoint_path("last").exists():
        threads = (run.read_json("env.json") or {}).get("threads")  # resume as it ran
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    precision = resolve_precision(cfg.precision, device)
    return device, threads, precision, resolve_channels_last(cfg.channels_last, device, precision)


def _data(cfg, data: Dataset | None) -> Dataset:
    if data is None:
        data = load_dataset(
            cfg.dataset, cfg.data_root, cfg.download, cfg.subset, cfg.image_size, cfg.val_split, cfg.seed
        )
    if cfg.batch_size > len(data.y_train):
        raise ValueError(
            f"batch_size={cfg.batch_size} is larger than the {len(data.y_train)} "
            "training images; use a batch_size at most that"
        )
    return data


def _model_and_optimizer(cfg, data, device, channels_last):
    torch.manual_seed(cfg.seed)
    model = build_model(
        cfg.model, **cfg.model_options(), num_classes=data.num_classes, in_channels=data.in_channels
    )
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    # two groups always (a checkpoint's optimizer state has both); BN parameters and biases
    # decay too unless decay_bn_bias is off: the paper decays every weight
    opt = torch.optim.SGD(
        [
            {"params": decay},
            {"params": no_decay, "weight_decay": cfg.weight_decay if cfg.decay_bn_bias else 0.0},
        ],
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    return model, opt


def _resume(run, model, opt, device, warming) -> tuple[int, bool, float, bool]:
    """Load the run's last checkpoint when there is one; (step, warming, best, resumed)."""
    step, best, resumed = 0, math.inf, False
    if run is None:
        return step, warming, best, resumed
    if run.checkpoint_path("last").exists():
        ck = load_checkpoint(run.checkpoint_path("last"), map_location=device)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, warming, best = ck["step"], ck["warmup"], ck.get("best", math.inf)
        resumed = True
    # what was logged after the checkpoint is logged again: drop it (all of it when
    # there is no checkpoint, the run starts over)
    run.truncate_logs_after(step, ck.get("log_bytes") if resumed else {n: 0 for n in run.LOGS})
    run.ckpt_dir.mkdir(exist_ok=True)
    for stale in run.ckpt_dir.glob(".*.tmp*"):  # left by a trainer killed mid-write
        stale.unlink(missing_ok=True)
    return step, warming, best, resumed


def _step(loop: _Loop) -> None:
    """One optimisation step, with the callbacks around it."""
    ctx, cfg = loop.ctx, loop.cfg
    s = ctx.step
    for c in loop.callbacks:  # added after the other hooks: callbacks written before may lack it
        if hasattr(c, "on_step_start"):
            c.on_step_start(ctx)
    xb, yb = _batch(loop, s)
    loop.lr = lr_at(cfg, s, loop.total, loop.warming)
    for group in loop.opt.param_groups:
        group["lr"] = loop.lr
    with ctx.autocast():
        out = loop.fmodel(xb)
    loss = F.cross_entropy(out.float(), yb)
    loop.opt.zero_grad(set_to_none=True)
    loss.backward()
    fault_point("step")
    ctx.loss = loss
    for c in loop.callbacks:
        c.on_after_backward(ctx)
    loop.opt.step()
    ctx.step = s + 1
    loop.window_loss.append(loss.detach())
    loop.window_wrong.append((out.detach().argmax(1) != yb).sum())
    loop.window_n += len(yb)
    loop.done_images += len(yb)
    for c in loop.callbacks:
        c.on_step_end(ctx)


def _batch(loop: _Loop, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``s``'s batch: a permutation per epoch and an augmentation draw per step, each
    from its own seed, so a resumed run sees exactly the batches an uninterrupted one does."""
    cfg, data = loop.cfg, loop.ctx.data
    epoch, pos = divmod(s, loop.ctx.steps_per_epoch)
    if epoch != loop.perm_epoch:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        loop.perm, loop.perm_epoch = torch.randperm(len(data.y_train), generator=g).to(loop.ctx.device), epoch
    idx = loop.perm[pos * cfg.batch_size : (pos + 1) * cfg.batch_size]
    loop.gen.manual_seed(cfg.seed * 1_000_003 + 7_777_777 + s)
    return loop.ctx.prepare(augment_batch(data.x_train[idx], loop.aug, loop.gen)), data.y_train[idx]


def _log(loop: _Loop, eval_due: bool, ckpt_due: bool, last: bool) -> None:
    """A log step: the training row for the window, evaluation when due, the records written,
    the heartbeat, then the checkpoint when due."""
    ctx, run = loop.ctx, loop.run
    row = _train_row(loop)
    if loop.warming and (row["error"] < 0.8 or ctx.step >= max(1, loop.total // 100)):
        loop.warming = False  # the paper: back to the full lr once training error < 80%
    rows = [row]
    is_best = False
    if eval_due:
        erows, is_best = _evaluate_splits(loop)
        rows += erows
    if run is not None:
        run.append_jsonl("metrics.jsonl", rows)
        _flush_layers(loop)
    if loop.progress is not None:
        loop.progress(ctx, row)
    loop.window_loss, loop.window_wrong, loop.window_n, loop.window_first = [], [], 0, ctx.step
    # the status names this step before its checkpoint: a run killed from here on
    # shows at least the step that resume continues from
    _heartbeat(loop, force=last or ckpt_due)
    if ckpt_due:
        names = ["last"] + (["best"] if is_best else [])
        if ctx.step in loop.cfg.checkpoint_steps:
            names.append(f"step-{ctx.step:06d}")
        _save(loop, names)


def _train_row(loop: _Loop) -> dict:
    """The metrics row for the steps since the last one; Diverged if a loss is not finite."""
    ctx, run = loop.ctx, loop.run
    losses = torch.stack(loop.window_loss).float().cpu()
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        at = loop.window_first + int(bad[0]) + 1
        if run is not None:
            run.append_jsonl(
                "metrics.jsonl",
                [{"step": at, "split": "train", "loss": float("nan"), "error": None, "lr": loop.lr}],
            )
        raise Diverged(
            f"diverged: the training loss became {losses[int(bad[0])].item()} "
            f"at step {at} (lr {loop.lr:g}); try a smaller lr or the paper's warmup",
            step=at,
        )
    err = float(torch.stack(loop.window_wrong).sum()) / loop.window_n
    now = time.time()
    loop.rate = loop.done_images / max(1e-9, now - loop.t_window - loop.eval_time)
    return {
        "step": ctx.step,
        "epoch": round(ctx.step / ctx.steps_per_epoch, 4),
        "split": "train",
        "loss": float(losses.mean()),
        "error": err,
        "lr": loop.lr,
        "time": round(now - loop.t_start, 3),
        "images_per_s": round(loop.rate, 1),
    }


def _evaluate_splits(loop: _Loop) -> tuple[list[dict], bool]:
    """Evaluate test (and val, train_eval); the metrics rows, and whether this is the best."""
    ctx, cfg, data = loop.ctx, loop.cfg, loop.ctx.data
    t_eval = time.time()
    t = t_eval - loop.t_start
    n_eval = min(cfg.test_size or len(data.y_test), len(data.y_test))
    results = {"test": evaluate(ctx, data.x_test[:n_eval], data.y_test[:n_eval])}
    if data.x_val is not None:
        results["val"] = evaluate(ctx, data.x_val, data.y_val)
    if cfg.train_eval_size:
        results["train_eval"] = evaluate(ctx, data.x_train[loop.te_idx], data.y_train[loop.te_idx])
    rows = [
        {
            "step": ctx.step,
            "epoch": round(ctx.step / ctx.steps_per_epoch, 4),
            "split": split,
            "loss": r["loss"],
            "error": r["error"],
            "n": r["n"],
            "time": round(t, 3),
        }
        for split, r in results.items()
    ]
    for c in loop.callbacks:
        c.on_eval(ctx, results)
    loop.eval_time += time.time() - t_eval
    key = results.get("val", results["test"])["error"]
    is_best = key < loop.best
    if is_best:
        loop.best = key
    return rows, is_best


def _flush_layers(loop: _Loop) -> None:
    """Write the per-layer rows the recorders handed over since the last write."""
    if loop.run is not None and loop.ctx.layer_rows:
        loop.run.append_jsonl("layers.jsonl", loop.ctx.layer_rows)
        loop.ctx.layer_rows = []


def _heartbeat(loop: _Loop, state="running", message="training", force=False) -> None:
    """The run's status, at most every HEARTBEAT_S unless forced."""
    now = time.time()
    if loop.run is None or (not force and now - loop.last_beat < HEARTBEAT_S):
        return
    loop.last_beat = now
    ctx = loop.ctx
    eta = (loop.total - ctx.step) * loop.cfg.batch_size / loop.rate if loop.rate else None
    loop.run.write_status(
        state=state,
        message=message,
        heartbeat=now,
        step=ctx.step,
        total=loop.total,
        eta_s=eta,
        images_per_s=loop.rate,
        threads=loop.threads,
        device=str(ctx.device),
        precision=ctx.precision,
        recorder_errors=list(ctx.problems),
        **process_identity(),
    )


def _save(loop: _Loop, names: list[str]) -> None:
    """Checkpoint under each name (the first is written first: "last" before the others)."""
    run = loop.run
    if run is None:
        return
    state = {
        "version": CKPT_VERSION,
        "model": loop.ctx.model.state_dict(),
        "optimizer": loop.opt.state_dict(),
        "step": loop.ctx.step,
        "warmup": loop.warming,
        "best": loop.best,
        "threads": loop.threads,
        "config": loop.cfg.to_json(),
        "rng": torch.get_rng_state(),
        "log_bytes": run.log_sizes(),
    }
    for name in names:
        save_checkpoint(run.checkpoint_path(name), state)


def _end_callbacks(loop: _Loop) -> None:
    """on_train_end for every callback, whatever ended the loop; a failing one costs nothing
    but a named problem, and the last per-layer rows are written when the disk allows."""
    ctx = loop.ctx
    for c in loop.callbacks:
        try:
            c.on_train_end(ctx)
        except Exception as e:  # noqa: BLE001 - a recorder must never cost the run;
            # the failure is named in the run's status
            ctx.report_problem(f"recorder {type(c).__name__} failed at the end: {type(e).__name__}: {e}")
    if loop.run is not None and ctx.layer_rows:
        try:
            loop.run.append_jsonl("layers.jsonl", ctx.layer_rows)
        except OSError:
            pass


def _finish(loop: _Loop) -> dict:
    """The run's final status ("done")."""
    if loop.run is None:
        return {}
    problems = loop.ctx.problems
    message = f"finished {loop.total} steps" + (f"; recorder problem: {problems[0]}" if problems else "")
    return loop.run.write_status(
        state="done",
        message=message,
        step=loop.total,
        total=loop.total,
        eta_s=0,
        heartbeat=time.time(),
        finished=time.time(),
        images_per_s=loop.rate,
        recorder_errors=list(problems),
    )


# --- checkpoints -------------------------------------------------------------------------
def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic, like every file of a run: a kill mid-write leaves the previous checkpoint whole."""
    atomic_write(
        path,
        lambda f: torch.save(state, f),
        fault="ckpt_write",
        partial=lambda f: (f.truncate(f.tell() // 2), f.flush()),
    )


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load with ``weights_only=True``: a checkpoint carrying code is refused, not run."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {path} could not be loaded safely ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); it is truncated, "
            "corrupt, or holds objects other than tensors"
        ) from None


class CheckpointError(ValueError):
    pass


def load_model(run: Run, checkpoint: str = "last", device="cpu") -> torch.nn.Module:
    """The run's model with a checkpoint's weights, in eval mode."""
    cfg = run.read_config()
    ck = load_checkpoint(run.checkpoint_path(checkpoint), map_location=device)
    sd = ck["model"]
    fc_w = sd["fc.weight"]
    in_ch = sd["conv1.weight"].shape[1]
    model = build_model(cfg.model, **cfg.model_options(), num_classes=fc_w.shape[0], in_channels=in_ch)
    model.load_state_dict(sd)
    return model.to(device).eval()


def run_in_store(store: RunStore, run_id: str, progress=None, threads: int | None = None) -> dict:
    """Train (or resume) a stored run in this process."""
    run = store.run(run_id)
    cfg = run.read_config()
    # a cancel file here was made after the runner looked (jobs.resume removes old ones):
    # train() sees it at its first step and ends the run cancelled
    return train(cfg, run=run, progress=progress, threads=threads)
