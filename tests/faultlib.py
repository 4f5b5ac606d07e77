"""Helpers for the reliability tests (faults, bad input, load, security).

Everything here works in folders the tests hand in (pytest's tmp_path); nothing reaches the
network or writes outside them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

# The smallest run that still has several checkpoints, logs and evaluations:
# train rows at steps 5, 10, ..., 30; test/train_eval rows at 10, 20, 30; last.pt every 5 steps.
TINY = dict(
    model="cifar_resnet8",
    dataset="digits",
    width=4,
    batch_size=32,
    iterations=30,
    log_every=5,
    eval_every=10,
    checkpoint_every=5,
    recorders=[],
    threads=1,
    precision="fp32",
    train_eval_size=200,
)


def tiny_config(**over):
    from resnet_core import TrainConfig

    return TrainConfig(**{**TINY, **over})


def cli_flags(**over) -> list[str]:
    """TrainConfig fields as `python -m resnet_core train` flags."""
    out = []
    for k, v in {**TINY, **over}.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, list):
            out += [flag, ",".join(map(str, v))]
        elif isinstance(v, bool):
            out.append(flag if v else "--no-" + k.replace("_", "-"))
        elif v is not None:
            out += [flag, str(v)]
    return out


def subprocess_env(tmp: Path, **extra) -> dict:
    """An environment for a child trainer: the repo importable, caches and home in tmp."""
    env = dict(os.environ)
    env.pop("RESNET_LAB_FAULT", None)
    env.update(
        PYTHONPATH=str(REPO),
        HOME=str(tmp / "home"),
        XDG_CACHE_HOME=str(tmp / "cache"),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_cli(tmp: Path, args: list[str], fault: str | None = None, **popen) -> subprocess.Popen:
    env = subprocess_env(tmp, **({"RESNET_LAB_FAULT": fault} if fault else {}))
    (tmp / "cwd").mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [PY, "-m", "resnet_core", *args],
        cwd=tmp / "cwd",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def run_cli(tmp: Path, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = subprocess_env(tmp)
    (tmp / "cwd").mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [PY, "-m", "resnet_core", *args],
        cwd=tmp / "cwd",
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(pred, timeout: float, every: float = 0.02, what: str = "condition"):
    t0 = time.time()
    while True:
        v = pred()
        if v:
            return v
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def expected_keys(cfg) -> list[tuple[int, str]]:
    """(step, split) of every metrics line an uninterrupted run writes, in order."""
    total = cfg.iterations
    keys = []
    for s in range(1, total + 1):
        last = s == total
        eval_due = s % cfg.eval_every == 0 or last
        ckpt_due = s % cfg.checkpoint_every == 0 or last or s in cfg.checkpoint_steps
        if s % cfg.log_every == 0 or eval_due or ckpt_due:
            keys.append((s, "train"))
            if eval_due:
                keys += [(s, "test")] + ([(s, "train_eval")] if cfg.train_eval_size else [])
    return keys


def raw_metrics(run) -> tuple[list[dict], int]:
    from resnet_core.store import read_jsonl

    return read_jsonl(run.path / "metrics.jsonl")


def assert_each_step_once(run, cfg):
    rows, bad = raw_metrics(run)
    keys = [(r.get("step"), r.get("split")) for r in rows]
    assert bad == 0, f"{bad} unreadable metrics line(s) left after resume"
    dup = {k for k in keys if keys.count(k) > 1}
    assert not dup, f"metrics lines recorded twice: {sorted(dup)}"
    assert keys == expected_keys(cfg), f"metrics lines {keys} != expected {expected_keys(cfg)}"


def state_tensors(path) -> dict:
    from resnet_core.train import load_checkpoint

    ck = load_checkpoint(path)
    out = {f"model.{k}": v for k, v in ck["model"].items()}
    for pid, st in ck["optimizer"]["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                out[f"opt.{pid}.{k}"] = v
    return out


def assert_same_weights(path_a, path_b):
    a, b = state_tensors(path_a), state_tensors(path_b)
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"tensors differ from the uninterrupted run: {diff[:5]}"


def train_reference(root: Path, cfg):
    """Train cfg uninterrupted in this process; return the Run."""
    from resnet_core import RunStore
    from resnet_core.train import train

    store = RunStore(root)
    run = store.create(cfg, state="running")
    st = train(cfg, run=run)
    assert st["state"] == "done", st
    return run


def snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """path -> content hash of every file under root (folders as 'dir'), skipping `skip`."""
    out = {}
    skip = tuple(Path(s).resolve() for s in skip)
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath).resolve()
        if any(d == s or s in d.parents for s in skip):
            dirnames[:] = []
            continue
        out[str(d)] = "dir"
        for f in filenames:
            p = d / f
            try:
                out[str(p)] = hashlib.sha1(p.read_bytes()).hexdigest()
            except OSError:
                out[str(p)] = "unreadable"
    return out


def no_traceback(text: str) -> bool:
    return "Traceback" not in text


def fork_trainers(tmp: Path, jobs: list[tuple[str, list[str], str | None]], timeout: float = 300) -> dict:
    """Run `python -m resnet_core ARGS` for each (key, args, fault) as forked children of one
    helper process that imported torch and resnet_core once (start-up is most of a tiny run's
    cost on 2 cores). Each child is a real process: SIGKILL ends it, /proc shows it; the fault
    is set in its environment only. Returns key -> (exit code or -signal, stdout, stderr)."""
    import json

    env = subprocess_env(tmp)
    (tmp / "cwd").mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [PY, "-c", _FORK_HELPER, json.dumps(jobs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp / "cwd",
    )
    if r.returncode != 0:
        raise AssertionError(f"fork helper failed: {r.stderr[-2000:]}")
    return {k: tuple(v) for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items()}


_FORK_HELPER = r"""
import json, os, sys, tempfile
import torch, torchvision, sklearn.datasets  # imported once, before any fork
from resnet_core.__main__ import main
jobs = json.loads(sys.argv[1])
kids = {}
for key, args, fault in jobs:
    out = tempfile.TemporaryFile(mode="w+"), tempfile.TemporaryFile(mode="w+")
    pid = os.fork()
    if pid == 0:
        os.dup2(out[0].fileno(), 1); os.dup2(out[1].fileno(), 2)
        if fault:
            os.environ["RESNET_LAB_FAULT"] = fault
        try:
            code = main(args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            import traceback; traceback.print_exc(); code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code or 0)
    kids[pid] = (key, out)
res = {}
for pid, (key, out) in kids.items():
    _, status = os.waitpid(pid, 0)
    texts = []
    for f in out:
        f.seek(0); texts.append(f.read())
    res[key] = [os.waitstatus_to_exitcode(status), texts[0], texts[1]]
print(json.dumps(res))
"""
