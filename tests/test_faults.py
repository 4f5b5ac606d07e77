"""Faults: a trainer SIGKILLed at seeded moments, failed writes, corrupt run files, NaN.

Every case checks the same promise: the run reads back, shows what happened to it, its last
checkpoint loads, and `resume` finishes it with each metrics line recorded once and weights
equal (torch.equal) to an uninterrupted run of the same config (CPU, fp32, one thread).
Kill moments use the test-only hook RESNET_LAB_FAULT="point:N" (resnet_core.store.fault_point)
or a real SIGKILL from outside.
"""

from __future__ import annotations

import errno
import importlib
import json
import math
import os
import random
import shutil
import signal
import time

import pytest
import torch
from faultlib import (
    assert_each_step_once,
    assert_same_weights,
    cli_flags,
    expected_keys,
    fork_trainers,
    no_traceback,
    raw_metrics,
    start_cli,
    tiny_config,
    train_reference,
    wait_for,
)

from resnet_core import RunStore, StoreError
from resnet_core.__main__ import main as cli_main
from resnet_core.store import HEARTBEAT_S, read_jsonl
from resnet_core.train import Callback, CheckpointError, load_checkpoint, load_model, train

torch.set_num_threads(1)

# --- 1. SIGKILL at ten seeded moments -------------------------------------------------------
_rng = random.Random(2016)
# (point, N): the Nth time the trainer reaches the point it SIGKILLs itself. With TINY there are
# 6 metrics flushes (steps 5..30), 6+ checkpoint writes and 30 steps.
KILL_MOMENTS = [
    ("start", 1),  # start-up: status says running, nothing else yet
    ("env_write", 1),  # start-up: writing env.json
    ("step", _rng.randint(1, 4)),  # mid-step before the first checkpoint
    ("step", _rng.randint(6, 17)),  # mid-step after a checkpoint
    ("step", _rng.randint(18, 29)),  # mid-step late in the run
    ("ckpt_write", _rng.randint(1, 3)),  # a torn checkpoint file, never renamed
    ("ckpt_write", _rng.randint(4, 7)),
    ("metrics_flush", _rng.randint(1, 3)),  # half a metrics flush on disk
    ("metrics_flush", _rng.randint(4, 6)),  # (flushes at 10, 20, 30 carry eval rows too)
    ("status_write", _rng.randint(3, 4)),  # a heartbeat's status.json, never renamed
]
# Two more with the analysis recorder attached: its layers.jsonl must come out whole too, and
# the weights must still equal the run without recorders (recording never changes training).
REC_MOMENTS = [("layers_flush", 1), ("step", _rng.randint(6, 29))]
REC = dict(recorders=["analysis.recorders:LayerStatsRecorder"])
IDS = [f"{p}:{n}" for p, n in KILL_MOMENTS] + [f"{p}:{n}+rec" for p, n in REC_MOMENTS]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted TINY run."""
    cfg = tiny_config()
    return cfg, train_reference(tmp_path_factory.mktemp("reference"), cfg)


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory):
    """One real trainer per kill moment, all at once, forked from one helper that imported
    torch once (start-up dominates a tiny run on 2 cores)."""
    base = tmp_path_factory.mktemp("killed")
    jobs = []
    for key in IDS:
        fault, _, rec = key.partition("+")
        d = base / key.replace(":", "-").replace("+", "-")
        jobs.append(
            (
                key,
                ["train", *cli_flags(**(REC if rec else {})), "--quiet", "--runs-dir", str(d / "runs")],
                fault,
            )
        )
    res = fork_trainers(base, jobs)
    return {k: (base / k.replace(":", "-").replace("+", "-"), *v) for k, v in res.items()}


@pytest.fixture(scope="module")
def reference_rec(tmp_path_factory):
    """The uninterrupted TINY run with the analysis recorder."""
    cfg = tiny_config(**REC)
    return cfg, train_reference(tmp_path_factory.mktemp("reference_rec"), cfg)


@pytest.mark.slow
@pytest.mark.parametrize("moment", IDS)
def test_sigkill_at_seeded_moment_then_resume(moment, killed_runs, reference, reference_rec, capsys):
    cfg, ref = reference
    if moment.endswith("+rec"):
        cfg = reference_rec[0]
    d, rc, stdout, stderr = killed_runs[moment]
    assert rc == -signal.SIGKILL, f"the trainer was not killed at {moment}: rc={rc}\n{stderr}"
    store = RunStore(d / "runs")
    [run_id] = store.list_ids()
    run = store.run(run_id)

    # shows as interrupted, with a message saying resume continues
    st = run.read_status()
    assert st["state"] == "interrupted", st
    assert "resume" in st["message"]
    # metrics parse: at most one torn line, and only the last one
    rows, bad = raw_metrics(run)
    assert bad <= 1
    if moment.startswith(("metrics_flush", "layers_flush")):
        name = "metrics.jsonl" if moment.startswith("metrics") else "layers.jsonl"
        assert read_jsonl(run.path / name)[1] == 1, f"the half-written flush left no torn line in {name}"
    if moment.startswith("metrics_flush"):
        assert bad == 1, "the half-written flush should have left a torn last line"
        assert not (run.path / "metrics.jsonl").read_bytes().endswith(b"\n")
    keys = [(r["step"], r["split"]) for r in rows]
    assert keys == expected_keys(cfg)[: len(keys)], "lines before the kill are the run's own, in order"
    # the last checkpoint loads, and is one the trainer finished writing
    ck_path = run.checkpoint_path("last")
    if ck_path.exists():
        ck = load_checkpoint(ck_path)
        assert ck["step"] % cfg.checkpoint_every == 0 and 0 < ck["step"] <= cfg.iterations
        assert ck["step"] <= max((k[0] for k in keys), default=0)
        # the status names at least the checkpoint's step (it is where resume continues)
        assert st.get("step", 0) >= ck["step"] or moment.startswith("status_write"), st
    # listing the store works and says the same
    assert cli_main(["runs", "--runs-dir", str(store.root)]) == 0
    assert "interrupted" in capsys.readouterr().out

    # resume (the CLI command, in this process) completes it
    assert cli_main(["resume", run_id, "--runs-dir", str(store.root), "--quiet"]) == 0
    assert run.read_status()["state"] == "done"
    assert_each_step_once(run, cfg)
    assert_same_weights(run.checkpoint_path("last"), ref.checkpoint_path("last"))
    if moment.endswith("+rec"):
        rows, bad = read_jsonl(run.path / "layers.jsonl")
        keys = [(r["step"], r["layer"]) for r in rows]
        want = [(r["step"], r["layer"]) for r in read_jsonl(reference_rec[1].path / "layers.jsonl")[0]]
        assert bad == 0 and len(set(keys)) == len(keys), "a layers line lost, torn or doubled"
        assert sorted(keys) == sorted(want) and len(keys) > 0
    # the torn temporary checkpoint never shows as a checkpoint, and resume removes it
    assert set(run.list_checkpoints()) <= {"last", "best"}
    assert not [p.name for p in run.ckpt_dir.iterdir() if ".tmp" in p.name]


# --- the core issue: a real SIGKILL from outside, mid-epoch, after a checkpoint ---------------
@pytest.mark.slow
def test_external_sigkill_mid_epoch_shows_interrupted_and_resume_matches(tmp_path):
    over = dict(iterations=300, checkpoint_every=10, eval_every=100, log_every=10)
    cfg = tiny_config(**over)
    steps_per_epoch = 1438 // cfg.batch_size  # digits: 1,438 training images
    root = tmp_path / "runs"
    p = start_cli(tmp_path, ["train", *cli_flags(**over), "--quiet", "--runs-dir", str(root)])
    store = RunStore(root)
    run_id = wait_for(lambda: store.list_ids(), 120, what="the run folder")[0]
    run = store.run(run_id)
    # wait for one checkpoint, then for a step that is not an epoch boundary
    wait_for(lambda: run.checkpoint_path("last").exists(), 120, what="a first checkpoint")
    rows = wait_for(
        lambda: [r for r in raw_metrics(run)[0] if r["step"] % steps_per_epoch != 0 and r["step"] >= 10],
        60,
        what="a mid-epoch step",
    )
    p.send_signal(signal.SIGKILL)
    t_kill = time.time()
    # not reaped yet: the pid still answers os.kill(pid, 0), the store must look deeper
    os.kill(p.pid, 0)
    wait_for(
        lambda: run.read_status()["state"] == "interrupted" and run.read_status(),
        2 * HEARTBEAT_S,
        every=0.05,
        what="state interrupted",
    )
    seen_after = time.time() - t_kill
    p.communicate(timeout=30)
    assert p.returncode == -signal.SIGKILL
    ck = load_checkpoint(run.checkpoint_path("last"))
    assert 10 <= ck["step"] < cfg.iterations
    got, bad = raw_metrics(run)
    assert bad <= 1
    # `resume` as a real command completes it
    env_dir = tmp_path
    r = start_cli(env_dir, ["resume", run_id, "--runs-dir", str(root), "--quiet"])
    out, err = r.communicate(timeout=240)
    assert r.returncode == 0, err
    assert run.read_status()["state"] == "done"
    assert_each_step_once(run, cfg)
    ref = train_reference(tmp_path / "ref", cfg)
    assert_same_weights(run.checkpoint_path("last"), ref.checkpoint_path("last"))
    print(
        f"killed at metrics step {rows[-1]['step']}, checkpoint step {ck['step']}, "
        f"interrupted seen after {seen_after:.2f}s"
    )


# --- failed writes: ENOSPC / EACCES while saving --------------------------------------------
def _fail_nth(real, n, err, match=lambda *a, **k: True):
    calls = {"n": 0}

    def fake(*args, **kwargs):
        if match(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                raise OSError(err, os.strerror(err))
        return real(*args, **kwargs)

    return fake


@pytest.mark.parametrize(
    "where,err",
    [
        ("torch.save", errno.ENOSPC),  # the disk fills while a checkpoint is written
        ("os.replace", errno.EACCES),  # the rename of the finished checkpoint is refused
        ("metrics", errno.ENOSPC),  # the metrics append is refused
    ],
)
def test_failed_write_ends_run_failed_and_keeps_earlier_checkpoints(
    tmp_path, monkeypatch, reference, where, err
):
    import resnet_core.store as store_mod

    train_mod = importlib.import_module("resnet_core.train")

    cfg, ref = reference
    store = RunStore(tmp_path / "runs")
    run = store.create(cfg, state="running")
    if where == "torch.save":
        monkeypatch.setattr(train_mod.torch, "save", _fail_nth(torch.save, 3, err))
    elif where == "os.replace":
        monkeypatch.setattr(
            train_mod.os,
            "replace",
            _fail_nth(os.replace, 3, err, match=lambda src, dst: str(dst).endswith(".pt")),
        )
    else:
        real_open = open
        monkeypatch.setattr(
            store_mod,
            "open",
            _fail_nth(
                real_open,
                3,
                err,
                match=lambda p, mode="r", *a, **k: str(p).endswith("metrics.jsonl") and "a" in mode,
            ),
            raising=False,
        )
    with pytest.raises(OSError) as ei:
        train(cfg, run=run)
    assert ei.value.errno == err
    monkeypatch.undo()
    st = run.read_status()
    assert st["state"] == "failed"
    assert os.strerror(err) in st["message"], st["message"]
    # the checkpoint before the failure is whole and loads
    ck = load_checkpoint(run.checkpoint_path("last"))
    assert ck["step"] in (5, 10)
    assert not [p for p in run.ckpt_dir.iterdir() if ".tmp" in p.name], "temporary file left"
    rows, bad = raw_metrics(run)
    assert bad == 0
    # once the disk is back, resume finishes it exactly as an uninterrupted run
    assert cli_main(["resume", run.id, "--runs-dir", str(store.root), "--quiet"]) == 0
    assert_each_step_once(run, cfg)
    assert_same_weights(run.checkpoint_path("last"), ref.checkpoint_path("last"))


def test_failed_write_where_even_status_cannot_be_written(tmp_path, monkeypatch):
    """The disk refuses everything: the error reaches the caller, and the files on disk stay
    the last whole versions (status.json valid JSON, last.pt loads)."""
    import resnet_core.store as store_mod

    train_mod = importlib.import_module("resnet_core.train")

    cfg = tiny_config()
    store = RunStore(tmp_path / "runs")
    run = store.create(cfg, state="running")
    state = {"full": False}
    real_save, real_replace = torch.save, os.replace

    def save(*a, **k):
        if run.checkpoint_path("last").exists():
            state["full"] = True
        if state["full"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(*a, **k)

    def replace(src, dst):
        if state["full"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(train_mod.torch, "save", save)
    monkeypatch.setattr(store_mod.os, "replace", replace)
    with pytest.raises(OSError) as ei:
        train(cfg, run=run)
    monkeypatch.undo()
    assert ei.value.errno == errno.ENOSPC
    st = run.read_status_raw()  # still whole JSON: the old version
    assert st["state"] == "running"
    assert load_checkpoint(run.checkpoint_path("last"))["step"] == 5
    assert not [p for p in run.path.rglob("*") if ".tmp" in p.name]


# --- corrupt run files: a clear error, other runs unaffected ----------------------------------
CORRUPTIONS = {
    "ckpt_truncated": ("ckpt/last.pt", lambda b: b[: len(b) // 2]),
    "ckpt_garbage": ("ckpt/last.pt", lambda b: b"\x00garbage" * 100),
    "ckpt_empty": ("ckpt/last.pt", lambda b: b""),
    "metrics_truncated": ("metrics.jsonl", lambda b: b[: len(b) - 17]),
    "metrics_garbage_line": ("metrics.jsonl", lambda b: b.replace(b"\n", b"\n{not json\n", 1)),
    "metrics_binary": ("metrics.jsonl", lambda b: b + b"\xff\xfe\x00\x01" * 8),
    "status_truncated": ("status.json", lambda b: b[: len(b) // 2]),
    "status_garbage": ("status.json", lambda b: b"\x89PNG not a status"),
    "status_bad_state": ("status.json", lambda b: b'{"state": "exploded"}'),
    "status_missing": ("status.json", None),
    "status_odd_types": (
        "status.json",
        lambda b: json.dumps(
            {
                "state": "running",
                "host": "elsewhere",
                "heartbeat": "soon",
                "pid": "x",
                "step": "many",
                "total": "all",
                "threads": "two",
                "created": "yesterday",
                "message": 7,
            }
        ).encode(),
    ),
    "config_truncated": ("config.json", lambda b: b[: len(b) // 2]),
    "config_mistyped": ("config.json", lambda b: json.dumps({**json.loads(b), "lr": "fast"}).encode()),
    "config_odd_types": (
        "config.json",
        lambda b: json.dumps(
            {**json.loads(b), "model": ["resnet20"], "dataset": {"x": 1}, "name": 5}
        ).encode(),
    ),
    "config_unknown_field": (
        "config.json",
        lambda b: json.dumps({**json.loads(b), "learning_rate": 0.1}).encode(),
    ),
}


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    cfg = tiny_config()
    return train_reference(tmp_path_factory.mktemp("done"), cfg)


def _copy_run(src, root, rid):
    shutil.copytree(src.path, root / rid)
    return RunStore(root).run(rid)


def _file_hashes(run):
    import hashlib

    return {
        str(p.relative_to(run.path)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(run.path.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_file_gives_clear_error_and_other_runs_unaffected(kind, done_run, tmp_path, capsys):
    root = tmp_path / "runs"
    victim = _copy_run(done_run, root, "victim")
    other = _copy_run(done_run, root, "other")
    # make the victim resumable, as a run killed mid-way would be
    victim.write_status(state="failed", message="stopped")
    before_other = _file_hashes(other)
    rel, how = CORRUPTIONS[kind]
    p = victim.path / rel
    if how is None:
        p.unlink()
    else:
        p.write_bytes(how(p.read_bytes()))
    store = RunStore(root)

    # the listing never raises; it names the broken file
    infos = {i["id"]: i for i in store.list_runs()}
    assert infos["other"]["status"]["state"] == "done" and infos["other"]["error"] is None
    assert cli_main(["runs", "--runs-dir", str(root)]) == 0
    out = capsys.readouterr().out
    line = [ln for ln in out.splitlines() if ln.startswith("victim")][0]
    broken = kind.startswith("status") and kind != "status_odd_types" or kind.startswith("config")
    if broken:
        assert rel in infos["victim"]["error"] and rel in line, line
    # the reader that the app uses says the same or skips bad lines
    rows = victim.read_metrics()
    assert all(isinstance(r, dict) for r in rows)
    if kind.startswith("ckpt"):
        with pytest.raises(CheckpointError, match="truncated, corrupt"):
            load_model(victim)
    # the app: the Runs and Degradation pages render, list both runs, and name the broken file
    from test_app_helpers import no_exception, page

    os.environ["RESNET_LAB_RUNS_DIR"] = str(root)
    try:
        shown = ""
        for name in ("runs", "degradation"):
            at = page(name).run()
            no_exception(at)
            if name == "runs":
                shown = " ".join(str(w.value) for w in at.warning) + " " + at.dataframe[0].value.to_string()
    finally:
        del os.environ["RESNET_LAB_RUNS_DIR"]
    capsys.readouterr()  # streamlit's own log lines
    assert "victim" in shown and "other" in shown
    if broken:
        assert rel in shown, shown[:1500]
    # resume: a one-line error naming the file (exit 2), or a clean finish for metrics damage
    code = cli_main(["resume", "victim", "--runs-dir", str(root), "--quiet"])
    err = capsys.readouterr().err
    assert no_traceback(err)
    if kind.startswith("metrics") or kind == "status_odd_types":
        assert code == 0, err  # bad lines are skipped and dropped; junk fields read as interrupted
    else:
        assert code == 2, err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        word = {"ckpt": "last.pt", "status": "status.json", "config": "config.json"}[kind.split("_")[0]]
        assert word in err, err
    # the other run is untouched and still fully usable
    assert _file_hashes(other) == before_other
    assert other.read_status()["state"] == "done"
    assert len(other.read_metrics()) == len(expected_keys(tiny_config()))
    load_model(other)


class StopAt(Callback):
    """Stops training (as Ctrl-C would) once `step` steps are done."""

    def __init__(self, step):
        self.at = step

    def on_step_end(self, ctx):
        if ctx.step == self.at:
            raise KeyboardInterrupt


def test_corrupt_metrics_then_resume_records_each_step_once(tmp_path, reference):
    cfg, ref = reference
    run = RunStore(tmp_path).create(cfg, state="running")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run=run, callbacks=[StopAt(12)])
    assert run.read_status()["state"] == "cancelled"
    assert load_checkpoint(run.checkpoint_path("last"))["step"] == 10
    # lines past the checkpoint, a garbage line and a torn last line
    later = [r for r in raw_metrics(ref)[0] if r["step"] == 15]
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in later) + "{oops\n" + '{"step": 20, "spl')
    assert raw_metrics(run)[1] == 2
    assert cli_main(["resume", run.id, "--runs-dir", str(run.root), "--quiet"]) == 0
    assert_each_step_once(run, cfg)
    assert_same_weights(run.checkpoint_path("last"), ref.checkpoint_path("last"))


# --- numerical faults -------------------------------------------------------------------------
class FirstNonFinite(Callback):
    """Records the first step whose loss is not finite, independently of the trainer."""

    def __init__(self):
        self.step = None

    def on_after_backward(self, ctx):
        if self.step is None and not torch.isfinite(ctx.loss).item():
            self.step = ctx.step + 1


def test_absurd_lr_ends_run_diverged_at_the_step_it_happened(tmp_path):
    cfg = tiny_config(lr=1e12, iterations=30)
    run = RunStore(tmp_path).create(cfg, state="running")
    spy = FirstNonFinite()
    st = train(cfg, run=run, callbacks=[spy])
    assert spy.step is not None
    assert st["state"] == "diverged"
    assert run.read_status()["state"] == "diverged"
    assert f"at step {spy.step} " in st["message"], (spy.step, st["message"])
    assert st["step"] == run.read_status()["step"] == spy.step  # not the later step it was noticed at
    rows, bad = raw_metrics(run)
    assert bad == 0
    nan_rows = [r for r in rows if r["split"] == "train" and r["loss"] is None]
    assert [r["step"] for r in nan_rows] == [spy.step]
    assert all(r["step"] <= spy.step for r in rows)
    # no checkpoint holds non-finite weights
    for name in run.list_checkpoints():
        ck = load_checkpoint(run.checkpoint_path(name))
        assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    # a diverged run is final: resume refuses it with a clear message
    with pytest.raises(StoreError, match="diverged"):
        from resnet_core.jobs import resume

        resume(RunStore(tmp_path), run.id, start_runner=False)


def test_paper_warmup_lets_resnet110_start_at_lr_0_1(tmp_path):
    cfg = tiny_config(
        model="cifar_resnet110",
        lr=0.1,
        iterations=20,
        eval_every=20,
        checkpoint_every=20,
        width=2,
        batch_size=16,
        train_eval_size=0,
    )
    run = RunStore(tmp_path).create(cfg, state="running")
    st = train(cfg, run=run)
    assert st["state"] == "done", st
    train_rows = [r for r in run.read_metrics() if r["split"] == "train"]
    assert train_rows[0]["lr"] == pytest.approx(0.01)  # lr/10 while warming up
    assert train_rows[1]["lr"] == pytest.approx(0.1)  # error < 80% or 1% of steps: back to 0.1
    assert train_rows[-1]["lr"] == pytest.approx(0.1 * 0.01)  # back to 0.1, then the /10 steps
    assert all(r["loss"] is not None and math.isfinite(r["loss"]) for r in train_rows)


# --- cancel between flushes, with a recorder -------------------------------------------------
class CancelAt(Callback):
    """Asks for a cancel (as the app's Cancel button does) once `step` steps are done."""

    def __init__(self, run, step):
        self.run, self.at = run, step

    def on_step_end(self, ctx):
        if ctx.step == self.at:
            self.run.request_cancel()


def test_cancel_between_flushes_then_resume_keeps_every_layer_row(tmp_path):
    from analysis.recorders import LayerStatsRecorder

    cfg = tiny_config()
    rec = lambda: LayerStatsRecorder(steps=[0, 6, 12, 30])  # noqa: E731 - rows at 6 wait in memory
    ref = RunStore(tmp_path / "ref").create(cfg, state="running")
    train(cfg, run=ref, callbacks=[rec()])
    run = RunStore(tmp_path / "runs").create(cfg, state="running")
    st = train(cfg, run=run, callbacks=[rec(), CancelAt(run, 7)])
    assert st["state"] == "cancelled" and load_checkpoint(run.checkpoint_path("last"))["step"] == 7
    (run.path / "cancel").unlink()
    st = train(cfg, run=run, callbacks=[rec()])  # resumes from last.pt
    assert st["state"] == "done"
    keys = lambda r: sorted((x["step"], x["layer"]) for x in read_jsonl(r.path / "layers.jsonl")[0])  # noqa: E731
    assert {k[0] for k in keys(ref)} == {0, 6, 12, 30}
    assert keys(run) == keys(ref), "layer rows recorded before the cancel were lost or doubled"
    assert_each_step_once(run, cfg)
    assert_same_weights(run.checkpoint_path("last"), ref.checkpoint_path("last"))


# --- a kill while the run folder is made ----------------------------------------------------------
def test_sigkill_while_the_run_folder_is_made_leaves_no_broken_run(tmp_path, capsys):
    """Killed between config.json and status.json: no run without a status may appear (it could
    be neither listed cleanly nor resumed); the command simply did not happen."""
    jobs = [
        (f"{p}:1", ["train", *cli_flags(), "--quiet", "--runs-dir", str(tmp_path / p / "runs")], f"{p}:1")
        for p in ("config_write", "status_write")
    ]
    res = fork_trainers(tmp_path, jobs)
    for key, (code, _out, err) in res.items():
        assert code == -signal.SIGKILL, (key, err)
        store = RunStore(tmp_path / key.split(":")[0] / "runs")
        assert store.list_runs() == [], f"{key}: a half-made run is listed: {store.list_runs()}"
        assert cli_main(["runs", "--runs-dir", str(store.root)]) == 0
        assert "no runs" in capsys.readouterr().err


# --- the Streamlit server stopped mid-run ----------------------------------------------------------
_LAUNCH = r"""
import json, sys, time
from resnet_core import RunStore, TrainConfig, jobs
run = jobs.submit(RunStore(sys.argv[1]), TrainConfig(**json.loads(sys.argv[2])))
print(run.id, flush=True)
time.sleep(600)  # lives on in the server's process group, like a page's script thread
"""


def _serve(tmp_path, env, port, log):
    import subprocess
    import sys
    import urllib.request

    from faultlib import REPO

    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app/main.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        process_group=0,
    )

    def healthy():
        assert p.poll() is None, "streamlit exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(healthy, 120, every=0.3, what="streamlit to answer")
    return p


@pytest.mark.slow
def test_server_killed_mid_run_training_goes_on_and_a_restarted_server_shows_it(tmp_path, monkeypatch):
    import socket
    import subprocess
    import sys
    import urllib.request

    from faultlib import REPO, subprocess_env
    from test_app_helpers import no_exception, page

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "runs"
    env = subprocess_env(tmp_path, RESNET_LAB_RUNS_DIR=root)
    log = open(tmp_path / "server.log", "ab")
    cfg = tiny_config(iterations=150, eval_every=50, checkpoint_every=25, log_every=5)
    t0 = time.time()
    server = _serve(tmp_path, env, port, log)
    phases = {"server up": time.time() - t0}
    procs = [server]
    try:
        # the run is launched from inside the server's process group, as the Lab page does
        launcher = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, str(root), json.dumps(cfg.to_dict())],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            process_group=server.pid,
        )
        procs.append(launcher)
        run_id = launcher.stdout.readline().strip()
        run = RunStore(root).run(run_id)
        wait_for(lambda: raw_metrics(run)[0], 180, every=0.1, what="the run to log its first steps")
        phases["run logging"] = time.time() - t0
        os.killpg(server.pid, signal.SIGKILL)  # the server, its script threads and the launcher
        server.wait(30)
        launcher.wait(30)
        st = run.read_status()
        assert st["state"] == "running", st  # the trainer is in its own session: still alive
        step_at_kill = max(r["step"] for r in raw_metrics(run)[0])
        wait_for(
            lambda: run.read_status()["state"] not in ("queued", "running"),
            300,
            every=0.5,
            what="the run to finish without the server",
        )
        phases["run done"] = time.time() - t0
        assert run.read_status()["state"] == "done"
        assert step_at_kill < cfg.iterations, "the run ended before the server was stopped"
        assert_each_step_once(run, cfg)
        # a restarted server answers and its pages show the finished run
        server = _serve(tmp_path, env, port, log)
        procs.append(server)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.status == 200
        monkeypatch.setenv("RESNET_LAB_RUNS_DIR", str(root))
        at = page("runs").run()
        no_exception(at)
        table = at.dataframe[0].value
        assert run_id in set(table["id"]) and set(table["state"]) == {"done"}
        phases["restarted and shown"] = time.time() - t0
        print(
            f"killed at step {step_at_kill}; seconds since start: "
            + ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
        )
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL) if p is not procs[1] else p.kill()
                p.wait(10)
        log.close()
