"""A hostile and a clumsy user (issue 13): what they did, and what the lab must do instead.

Each test is one case of RELIABILITY.md section 5, named after it; each failed against the
code before its fix (the table there says what that code did). Real parts throughout: real
tiny runs, real CLI commands, real AppTest pages, a real tmpfs for the full disk, real
processes for the runner and the sweep.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from faultlib import (
    REPO,
    assert_each_step_once,
    no_traceback,
    snapshot,
    subprocess_env,
    tiny_config,
    train_reference,
    wait_for,
)

from resnet_core import RunStore, StoreError, jobs
from resnet_core.__main__ import main as cli_main

torch.set_num_threads(1)
NESTED = "[" * 1000 + "]" * 1000  # about 1 KB of brackets: the C JSON parser recurses on each


def _cli(argv, capsys) -> tuple[int, str, str]:
    try:
        code = cli_main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line_error(err: str, *must: str):
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert no_traceback(err), err
    for m in must:
        assert m in err, (m, err)


def _pages_render(root: Path, names, monkeypatch):
    from test_app_helpers import no_exception, page

    monkeypatch.setenv("RESNET_LAB_RUNS_DIR", str(root))
    shown = {}
    for name in names:
        at = page(name).run()
        no_exception(at)
        shown[name] = at
    return shown


# --- 1. reference export --force replaces only a reference set ------------------------------
def test_export_force_replaces_only_a_reference_set(tiny_runs, tmp_path, capsys):
    rid = tiny_runs.list_ids()[0]
    base = ["reference", "export", rid, "--title", "t", "--runs-dir", str(tiny_runs.root), "--force"]
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("three years of work")
    victims = {"a notes folder": notes, "the run store itself": tiny_runs.root}
    (tmp_path / "afile").write_text("x")
    victims["a file"] = tmp_path / "afile"
    before = snapshot(tmp_path)
    for what, dest in victims.items():
        code, _, err = _cli(base + ["--to", str(dest)], capsys)
        assert code == 2, (what, err)
        _one_line_error(err, "is not a reference set")
    assert snapshot(tmp_path) == before, "a refused export changed something on disk"
    assert (notes / "thesis.tex").read_text() == "three years of work"
    assert tiny_runs.run(rid).checkpoint_path("last").exists()
    # an earlier set is still replaced, as --force promises
    dest = tmp_path / "sets" / "mine"
    assert _cli(base[:-1] + ["--to", str(dest)], capsys)[0] == 0
    other = tiny_runs.list_ids()[1]
    code, _, err = _cli(
        [
            "reference",
            "export",
            other,
            "--title",
            "t2",
            "--runs-dir",
            str(tiny_runs.root),
            "--force",
            "--to",
            str(dest),
        ],
        capsys,
    )
    assert code == 0, err
    assert sorted(p.name for p in dest.iterdir() if p.is_dir()) == [other]


# --- 2. deeply nested JSON -----------------------------------------------------------------------
def test_nested_json_takes_down_only_its_own_run_or_set(
    tiny_runs, reference_root, tmp_path, monkeypatch, capsys
):
    from resnet_core.reference import list_sets

    ids = tiny_runs.list_ids()
    victim = tiny_runs.run(ids[0])
    (victim.path / "status.json").write_text(NESTED)
    with open(tiny_runs.run(ids[1]).path / "metrics.jsonl", "a") as f:
        f.write(NESTED + "\n")
    queued = jobs.submit(tiny_runs, tiny_config(), start_runner=False)
    # the listing names the bad file; the queue (what the runner reads) still sees the rest
    infos = {i["id"]: i for i in tiny_runs.list_runs()}
    assert infos[victim.id]["status"]["state"] == "broken"
    assert "status.json" in infos[victim.id]["error"] and "nested" in infos[victim.id]["error"]
    assert jobs.waiting(tiny_runs) == [queued.id]
    assert tiny_runs.run(ids[1]).read_metrics_counted()[1] == 1
    code, out, err = _cli(["runs", "--runs-dir", str(tiny_runs.root)], capsys)
    assert code == 0 and no_traceback(err) and "status.json" in out
    jobs.cancel(tiny_runs, queued.id)
    # a nested set.json: that set reads as broken, the others as before
    bad = reference_root / "nested"
    shutil.copytree(reference_root / "tiny", bad)
    (bad / "set.json").write_text(NESTED)
    sets = {s.name: s for s in list_sets()}
    assert sets["nested"].error and "nested" in sets["nested"].error and not sets["tiny"].error
    code, out, err = _cli(["reference", "list"], capsys)
    assert code == 0 and "nested" in out and "Tiny digits runs" in out, err
    code, out, err = _cli(["reference", "check"], capsys)
    assert code == 2 and "tiny: ok" in out and no_traceback(err), (out, err)
    shown = _pages_render(
        tiny_runs.root, ("runs", "degradation", "tour", "responses", "gradients"), monkeypatch
    )
    assert victim.id in shown["runs"].dataframe[0].value.to_string()


# --- 4. junk field types -----------------------------------------------------------------------
def test_junk_field_types_are_skipped_and_counted(tiny_runs, tmp_path, monkeypatch, capsys):
    from resnet_core.reference import export

    a, b = tiny_runs.list_ids()[:2]
    st = json.loads((tiny_runs.root / a / "status.json").read_text())
    (tiny_runs.root / a / "status.json").write_text(json.dumps(dict(st, step="abc", total=[1])))
    run_b = tiny_runs.run(b)
    good = len(run_b.read_metrics())
    with open(run_b.path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 25, "split": ["test"], "error": 0.5}) + "\n")
        f.write(json.dumps({"step": "26", "split": "test", "error": 0.5}) + "\n")
        f.write(json.dumps({"step": 27, "split": "test", "error": {"x": 1}}) + "\n")
    rows, bad = run_b.read_metrics_counted()
    assert (len(rows), bad) == (good, 3)
    info = {i["id"]: i for i in tiny_runs.list_runs()}[a]
    assert info["status"]["state"] == "done" and "step" not in info["status"]
    assert "step" in info["error"] and "total" in info["error"]
    code, out, err = _cli(["runs", "--runs-dir", str(tiny_runs.root)], capsys)
    assert code == 0 and no_traceback(err)
    _pages_render(tiny_runs.root, ("runs", "degradation", "tour"), monkeypatch)
    s = export(tiny_runs, [a, b], tmp_path / "ref" / "junk", title="junk")
    assert sorted(s.run_ids()) == sorted([a, b])


# --- 10. one naming rule for the listing and the lookup -----------------------------------------
def test_dotdot_names_are_neither_listed_nor_looked_up(tiny_runs, reference_root, monkeypatch, capsys):
    from resnet_core.reference import list_sets

    src = tiny_runs.root / tiny_runs.list_ids()[0]
    shutil.copytree(src, tiny_runs.root / "copy..1")
    ids = tiny_runs.list_ids()
    assert "copy..1" not in ids and len(ids) == 4
    for rid in ids:
        tiny_runs.run(rid)  # everything listed can be looked up
    code, out, _ = _cli(["runs", "--runs-dir", str(tiny_runs.root)], capsys)
    assert code == 0 and "copy..1" not in out
    shutil.copytree(reference_root / "tiny", reference_root / "a..b")
    strings = reference_root / "strings"
    shutil.copytree(reference_root / "tiny", strings)
    meta = json.loads((strings / "set.json").read_text())
    (strings / "set.json").write_text(json.dumps(dict(meta, runs="not a list")))
    sets = {s.name: s for s in list_sets()}
    assert "a..b" not in sets and "'runs' must be a list" in sets["strings"].error
    code, out, err = _cli(["reference", "check", "a..b"], capsys)
    assert code == 2
    _one_line_error(err, "a..b", "not accepted")
    code, out, err = _cli(["reference", "list"], capsys)
    assert code == 0 and "'runs' must be a list" in out and no_traceback(err), err
    _pages_render(tiny_runs.root, ("embeddings", "studies"), monkeypatch)


# --- 11. symbolic links inside the store ---------------------------------------------------------
class StopAt:
    """Stops training (as Ctrl-C would) once ``step`` steps are done."""

    needs_hooks = False

    def __init__(self, step):
        self.step = step

    def on_step_end(self, ctx):
        if ctx.step == self.step:
            raise KeyboardInterrupt

    def on_train_start(self, ctx): ...
    def on_after_backward(self, ctx): ...
    def on_eval(self, ctx, results): ...
    def on_train_end(self, ctx): ...


def test_a_dangling_log_link_is_refused_not_written_through(tmp_path, capsys):
    from resnet_core.train import train

    cfg = tiny_config(iterations=10, eval_every=10)
    run = RunStore(tmp_path / "runs").create(cfg, state="running")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run=run, callbacks=[StopAt(7)])  # last.pt at step 5: resume has steps to log
    outside = tmp_path / "outside" / "metrics.jsonl"
    outside.parent.mkdir()
    (run.path / "metrics.jsonl").unlink()
    (run.path / "metrics.jsonl").symlink_to(outside)  # dangling
    code, _, err = _cli(["resume", run.id, "--runs-dir", str(run.root), "--quiet"], capsys)
    assert not outside.exists(), "resume wrote through the link, outside the store"
    assert code == 2
    _one_line_error(err, "metrics.jsonl is a symbolic link")


def test_a_linked_ckpt_folder_is_never_cleaned_through(tmp_path, capsys):
    run = train_reference(tmp_path / "runs", tiny_config(iterations=10, eval_every=10))
    run.write_status(state="interrupted")
    target = tmp_path / "elsewhere"
    shutil.move(run.ckpt_dir, target)
    (target / ".last.pt.tmp4242").write_bytes(b"someone else's file")
    run.ckpt_dir.symlink_to(target)
    before = snapshot(target)
    code, _, err = _cli(["resume", run.id, "--runs-dir", str(run.root), "--quiet"], capsys)
    assert snapshot(target) == before, "files in the link's target were changed or deleted"
    assert code == 2
    _one_line_error(err, "ckpt is a symbolic link")


def test_deleting_a_linked_run_removes_the_link_only(tmp_path):
    real = train_reference(tmp_path / "elsewhere", tiny_config(iterations=5, eval_every=5))
    store = RunStore(tmp_path / "runs")
    store.root.mkdir()
    (store.root / real.id).symlink_to(real.path)
    before = snapshot(real.path)
    store.delete(real.id)
    assert os.listdir(store.root) == [], os.listdir(store.root)  # no .deleting-* link left
    assert snapshot(real.path) == before
    # a link as the run folder is read, but never written through
    (store.root / real.id).symlink_to(real.path)
    with pytest.raises(StoreError, match="symbolic link"):
        store.run(real.id).write_status(state="interrupted")
    with pytest.raises(StoreError, match="symbolic link"):
        store.run(real.id).request_cancel()
    assert snapshot(real.path) == before


# --- also: a stale heartbeat, an absurd ETA ---------------------------------------------------
def test_a_stale_running_status_reads_interrupted_whatever_its_pid(tiny_runs, capsys):
    rid = tiny_runs.list_ids()[0]
    run = tiny_runs.run(rid)
    old = time.time() - 3600
    st = json.loads((run.path / "status.json").read_text())
    st.update(state="running", pid=1, heartbeat=old, updated=old)
    st.pop("pid_start", None)
    st.pop("host", None)
    (run.path / "status.json").write_text(json.dumps(st))
    assert os.path.exists("/proc/1"), "pid 1 must be alive for this case"
    assert run.read_status()["state"] == "interrupted"
    # a trainer that still holds the run's lock is alive, however old its heartbeat
    lock = run.lock_for_training()
    try:
        st.update(pid=os.getpid())
        (run.path / "status.json").write_text(json.dumps(st))
        assert run.read_status()["state"] == "running"
    finally:
        lock.close()
    assert run.read_status()["state"] == "interrupted"
    st.update(pid=1)
    (run.path / "status.json").write_text(json.dumps(st))
    jobs.resume(tiny_runs, rid, start_runner=False)  # refused before: "is running"
    assert run.read_status()["state"] == "queued"
    jobs.cancel(tiny_runs, rid)
    tiny_runs.delete(rid)
    assert rid not in tiny_runs.list_ids()


def test_an_absurd_eta_reads_in_days_and_an_absurd_budget_is_refused(capsys):
    from app.ui import fmt_eta as app_eta
    from resnet_core.store import fmt_eta

    assert fmt_eta(1e22 * 128 / 1000) == "over 999 days"
    assert app_eta(1e20) == "ETA over 999 days"
    assert fmt_eta(3 * 86400 + 7200) == "3 d 2 h" and fmt_eta(3725) == "1:02:05"
    assert fmt_eta(65) == "1:05" and fmt_eta(None) == "–" and fmt_eta(float("nan")) == "–"
    code, _, err = _cli(["train", "--iterations", str(10**22), "--dataset", "digits"], capsys)
    assert code == 2
    _one_line_error(err, "--iterations", "from 1 to 1000000000")


# --- 3. a killed runner strands no queued run ----------------------------------------------------
def test_runs_restarts_a_runner_for_queued_runs_that_have_none(tmp_path, capsys):
    store = RunStore(tmp_path / "runs")
    cfg = tiny_config(iterations=10, eval_every=10)
    run = jobs.submit(store, cfg, start_runner=False)  # as if its runner had been killed
    (store.root / "nested").mkdir()  # and one run whose status would have killed the runner
    shutil.copy(run.path / "config.json", store.root / "nested" / "config.json")
    (store.root / "nested" / "status.json").write_text(NESTED)
    assert not jobs.runner_alive(store)
    code, out, err = _cli(["runs", "--runs-dir", str(store.root)], capsys)
    assert code == 0 and "started a queue runner" in err, err
    wait_for(
        lambda: run.read_status()["state"] not in ("queued", "running"),
        240,
        every=0.5,
        what="the restarted runner to train the queued run",
    )
    assert run.read_status()["state"] == "done", run.read_status()
    assert_each_step_once(run, cfg)


def test_resume_accepts_a_queued_run(tmp_path, capsys):
    store = RunStore(tmp_path / "runs")
    cfg = tiny_config(iterations=10, eval_every=10)
    run = jobs.submit(store, cfg, start_runner=False)
    code, out, err = _cli(["resume", run.id, "--runs-dir", str(store.root), "--quiet"], capsys)
    assert code == 0, err
    assert run.read_status()["state"] == "done"
    assert_each_step_once(run, cfg)
    assert not jobs.runner_alive(store)  # it trained here; nothing was left for a runner


@pytest.mark.slow
def test_a_sweep_whose_terminal_closes_hands_the_rest_to_a_runner(tmp_path):
    from faultlib import start_cli

    root = tmp_path / "runs"
    args = [
        "sweep",
        "quick",
        "--dataset",
        "digits",
        "--iterations",
        "20",
        "--width",
        "4",
        "--batch-size",
        "32",
        "--recorders",
        "",
        "--threads",
        "1",
        "--train-eval-size",
        "100",
        "--log-every",
        "10",
        "--checkpoint-every",
        "10",
        "--runs-dir",
        str(root),
    ]
    p = start_cli(tmp_path, args, start_new_session=True)
    store = RunStore(root)
    try:
        wait_for(
            lambda: any(i["status"].get("state") == "running" for i in store.list_runs()),
            180,
            every=0.1,
            what="the sweep to start a trainer",
        )
        os.kill(p.pid, signal.SIGHUP)  # the terminal closes
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, (p.returncode, err[-2000:])
    assert "hang-up" in err and no_traceback(err)
    states = {i["id"]: i["status"]["state"] for i in store.list_runs()}
    assert len(states) == 4 and "queued" in states.values(), states  # something was left
    wait_for(
        lambda: all(i["status"]["state"] not in ("queued", "running") for i in store.list_runs()),
        400,
        every=0.5,
        what="the rest to train",
    )
    for i in store.list_runs():
        assert i["status"]["state"] == "done", i
        assert_each_step_once(store.run(i["id"]), store.run(i["id"]).read_config())


# --- 9. a runner storm -------------------------------------------------------------------------
def test_five_runner_starts_at_once_make_one_runner_and_four_never_import_torch(tmp_path):
    store = RunStore(tmp_path / "runs")
    cfg = tiny_config(iterations=10, eval_every=10)
    run = jobs.submit(store, cfg, start_runner=False)
    cmd = jobs.runner_command(store)
    env = subprocess_env(tmp_path)
    procs = []
    for i in range(5):  # five tabs, each starting a runner at the same moment
        with open(tmp_path / f"starter{i}.log", "w") as log:  # a file: a pipe would fill up
            procs.append(
                (
                    subprocess.Popen(
                        [cmd[0], "-X", "importtime", *cmd[1:]], cwd=REPO, env=env, stdout=log, stderr=log
                    ),
                    time.time(),
                )
            )
    t0 = time.time()
    subprocess.run([cmd[0], "-c", "pass"], env=env, check=True)
    bare = time.time() - t0  # a bare python start-up at this moment, for scale on a busy machine
    took = {}
    deadline = time.time() + 240
    while len(took) < 5 and time.time() < deadline:
        for i, (p, t0) in enumerate(procs):
            if i not in took and p.poll() is not None:
                took[i] = time.time() - t0
        time.sleep(0.01)
    assert len(took) == 5, "a starter did not exit"
    logs = [(tmp_path / f"starter{i}.log").read_text() for i in range(5)]
    imported = [any(line.split("|")[-1].strip() == "torch" for line in log.splitlines()) for log in logs]
    assert sum(imported) == 1, f"{sum(imported)} of 5 starters imported torch"
    losers = [took[i] for i in range(5) if not imported[i]]
    assert all(p.returncode == 0 for p, _ in procs)
    assert max(losers) < max(1.0, 3 * bare), (
        f"the starters that found the lock taken took {losers} s to exit (bare python: {bare:.2f} s)"
    )
    assert run.read_status()["state"] == "done"
    assert_each_step_once(run, cfg)
    print(
        f"losers exited after {', '.join(f'{t:.2f}' for t in sorted(losers))} s (bare python "
        f"{bare:.2f} s); the runner drained the queue in {max(took.values()):.1f} s"
    )


# --- 5. a full disk ------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MB tmpfs (tests run as root where it can be mounted; skipped elsewhere)."""
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(d)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"no tmpfs can be mounted here ({r.stderr.strip() or r.returncode})")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill the filesystem, then give back ``leave`` bytes."""
    chunk = b"\0" * 65536
    with open(disk / "filler", "ab") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    with open(disk / "filler", "r+b") as f:
        f.truncate(max(0, os.path.getsize(disk / "filler") - leave))


class FillAt:
    """A callback that fills the disk once ``step`` steps are done."""

    needs_hooks = False

    def __init__(self, disk, step, leave):
        self.disk, self.step, self.leave = disk, step, leave

    def on_step_end(self, ctx):
        if ctx.step == self.step:
            fill(self.disk, self.leave)

    def on_train_start(self, ctx): ...
    def on_step_start(self, ctx): ...
    def on_after_backward(self, ctx): ...
    def on_eval(self, ctx, results): ...
    def on_train_end(self, ctx): ...


def test_a_full_disk_says_so_in_one_line_and_keeps_the_last_checkpoint(
    small_disk, tmp_path, monkeypatch, capsys
):
    from resnet_core.store import DiskFullError
    from resnet_core.train import load_checkpoint, train

    cfg = tiny_config(iterations=20)
    store = RunStore(small_disk / "runs")
    run = store.create(cfg, state="running")
    # after the step-10 checkpoint, leave 56 KB: the logs and the status still fit, a
    # checkpoint (about 66 KB) does not -- torch.save itself hits the full disk, and says
    # "unexpected pos 57280 vs 57208"
    with pytest.raises(OSError) as ei:
        train(cfg, run=run, callbacks=[FillAt(small_disk, 12, 56 * 1024)])
    e = ei.value
    with capsys.disabled():
        print(f"raised {str(e)!r}, from {e.__cause__!r}")
    assert isinstance(e, DiskFullError) and e.errno == 28, repr(e)
    assert str(e).startswith("disk full: ") and f"MB free in {run.ckpt_dir}" in str(e), str(e)
    st = run.read_status()
    assert st["state"] == "failed" and "disk full: " in st["message"], st
    assert load_checkpoint(run.checkpoint_path("last"))["step"] == 10
    assert not [p for p in run.path.rglob("*") if ".tmp" in p.name]
    # the command line, still full: one line, no traceback
    code, out, err = _cli(["resume", run.id, "--runs-dir", str(store.root), "--quiet"], capsys)
    assert code == 1, err
    _one_line_error(err, "disk full: ", "MB free in ")
    assert load_checkpoint(run.checkpoint_path("last"))["step"] == 10
    fill(small_disk, 0)
    for argv in (
        ["train", "--model", "cifar_resnet8", "--width", "4", "--iterations", "5", "--quiet"],
        ["sweep", "quick", "--iterations", "5"],
    ):
        code, out, err = _cli(argv + ["--runs-dir", str(store.root)], capsys)
        assert code == 1, (argv, err)
        _one_line_error(err, "disk full: ", f"MB free in {store.root}")
    assert store.list_ids() == [run.id]
    # the Lab's Launch
    from test_app_helpers import no_exception, page, texts

    monkeypatch.setenv("RESNET_LAB_RUNS_DIR", str(store.root))
    at = page("lab").run()
    at.button(key="lab_launch").click().run()
    no_exception(at)
    assert "Not launched: disk full: " in texts(at, "error"), texts(at, "error")
    # space again: resume finishes it, each step once
    (small_disk / "filler").unlink()
    code, out, err = _cli(["resume", run.id, "--runs-dir", str(store.root), "--quiet"], capsys)
    assert code == 0, err
    assert_each_step_once(run, cfg)


# --- 6. the ImageFolder cache ----------------------------------------------------------------------
def test_imagefolder_cache_notices_a_file_moved_between_classes(tmp_path):
    from PIL import Image

    from resnet_core.data import load_dataset

    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    # 66 images in a/, 64 in b/: 130 files, so the old key sampled every 2nd; a/a065.png
    # (index 65) was not sampled, and moved into b/ it still sorts at index 65
    for split, counts in (("train", {"a": 66, "b": 64}), ("test", {"a": 2, "b": 2})):
        for cls, n in counts.items():
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                    root / split / cls / f"{cls}{i:03d}.png"
                )
    cache = str(tmp_path / "cache")
    ds = load_dataset(str(root), data_root=cache)
    moved = root / "train" / "a" / "a065.png"
    img = torch.from_numpy(np.asarray(Image.open(moved).convert("RGB")).transpose(2, 0, 1).copy())
    at = [i for i in range(len(ds.y_train)) if torch.equal(ds.x_train[i], img)]
    assert [int(ds.y_train[i]) for i in at] == [0]
    os.rename(moved, root / "train" / "b" / "a065.png")  # same bytes, same mtime, new class
    ds2 = load_dataset(str(root), data_root=cache)
    at = [i for i in range(len(ds2.y_train)) if torch.equal(ds2.x_train[i], img)]
    assert [int(ds2.y_train[i]) for i in at] == [1], "the cache kept the old label"
    assert len(list((tmp_path / "cache" / "imagefolder-cache").iterdir())) == 2


# --- 7. .npz loader gaps ----------------------------------------------------------------------------
def _npz(path, **over):
    arrays = dict(
        x_train=np.zeros((20, 8, 8), np.uint8),
        y_train=np.arange(20) % 2,
        x_test=np.zeros((4, 8, 8), np.uint8),
        y_test=np.arange(4) % 2,
    )
    arrays.update(over)
    np.savez_compressed(path, **arrays)
    return str(path)


NPZ_CASES = [
    (
        "empty test set",
        dict(x_test=np.zeros((0, 8, 8), np.uint8), y_test=np.zeros(0, np.int64)),
        ["x_test holds no images"],
    ),
    (
        "uint64 label beyond int64",
        dict(y_train=np.array([0, 1] * 9 + [0, 2**63 + 5], np.uint64)),
        ["y_train has a label of 9223372036854775813", "at most 100,000"],
    ),
    (
        "label of 1e9",
        dict(y_train=np.array([0, 1] * 9 + [0, 10**9])),
        ["y_train has a label of 1000000000", "at most 100,000"],
    ),
    (
        "expands to more than the memory",
        dict(x_train=np.zeros((600_000, 8, 8), np.uint8), y_train=np.arange(600_000) % 2),
        ["expand to 41.2 MB", "more than half of the limit in $RESNET_LAB_MEMORY_LIMIT (64.0 MB)"],
    ),
]


@pytest.mark.parametrize("over,must", [c[1:] for c in NPZ_CASES], ids=[c[0] for c in NPZ_CASES])
def test_npz_gaps_are_one_line_refusals(over, must, tmp_path, monkeypatch, capsys):
    from resnet_core.data import DataError, load_dataset

    monkeypatch.setenv("RESNET_LAB_MEMORY_LIMIT", "64M")
    path = _npz(tmp_path / "ds.npz", **over)
    with pytest.raises(DataError) as ei:
        load_dataset(path)
    for m in must:
        assert m in str(ei.value), (m, str(ei.value))


def test_a_dataset_path_longer_than_the_filesystem_allows(tmp_path, capsys):
    path = str(tmp_path / ("a" * 300 + ".npz"))
    code, _, err = _cli(
        ["train", "--dataset", path, "--iterations", "5", "--runs-dir", str(tmp_path / "runs")], capsys
    )
    assert code == 2
    _one_line_error(err, "can't be read (File name too long)")
    assert not (tmp_path / "runs").exists() or not os.listdir(tmp_path / "runs")


# --- 8. upper bounds and the memory estimate ---------------------------------------------------------
class SavedBytes:
    """Measures, on the first real training step, the bytes autograd saves for backward (each
    storage once, parameters excluded) and the gradients' bytes."""

    needs_hooks = True

    def on_train_start(self, ctx):
        self.saved, self.grads, self.ctx = {}, None, None
        self.params = {p.untyped_storage().data_ptr() for p in ctx.model.parameters()}

        def pack(t):
            s = t.untyped_storage()
            self.saved[s.data_ptr()] = max(self.saved.get(s.data_ptr(), 0), s.nbytes())
            return t

        self.hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self.pre = ctx.model.register_forward_pre_hook(lambda m, i: self.hooks.__enter__())
        self.post = ctx.model.register_forward_hook(lambda m, i, o: self.hooks.__exit__(None, None, None))

    def on_after_backward(self, ctx):
        if self.grads is None:
            self.pre.remove()
            self.post.remove()
            self.grads = sum(p.grad.numel() * p.grad.element_size() for p in ctx.model.parameters())

    def on_step_end(self, ctx): ...
    def on_eval(self, ctx, results): ...
    def on_train_end(self, ctx): ...

    @property
    def activations(self):
        return sum(n for k, n in self.saved.items() if k not in self.params)


@pytest.mark.parametrize(
    "model,over",
    [
        ("cifar_resnet20", dict(width=8, batch_size=16)),
        ("cifar_plain14", dict(width=8, batch_size=16)),
        ("cifar_preresnet14", dict(width=4, batch_size=16, image_size=16)),
        ("cifar_resnet56", dict(width=4, batch_size=8)),
        ("resnet18", dict(width=8, batch_size=8, image_size=32)),
    ],
)
def test_memory_estimate_matches_a_real_training_step(model, over, tmp_path):
    from resnet_core.memory import estimate
    from resnet_core.train import load_checkpoint, train

    cfg = tiny_config(model=model, iterations=1, eval_every=1, train_eval_size=0, **over)
    run = RunStore(tmp_path).create(cfg, state="running")
    spy = SavedBytes()
    assert train(cfg, run=run, callbacks=[spy])["state"] == "done"
    est = estimate(cfg)
    ck = load_checkpoint(run.checkpoint_path("last"))
    params = sum(v.numel() * v.element_size() for k, v in ck["model"].items())
    momentum = sum(
        s["momentum_buffer"].numel() * s["momentum_buffer"].element_size()
        for s in ck["optimizer"]["state"].values()
    )
    assert est.params_bytes == params  # parameters and BN buffers, exact
    assert est.grads_bytes == spy.grads and est.momentum_bytes == momentum
    assert abs(est.activations_bytes - spy.activations) <= 0.2 * spy.activations, (
        est.activations_bytes,
        spy.activations,
    )
    print(
        f"{model}: estimate {est.activations_bytes:,} B saved for backward, measured "
        f"{spy.activations:,} B ({est.activations_bytes / spy.activations:.3f})"
    )


BIG = [
    ("width beyond the bound", ["--width", "100000"], ["--width", "from 1 to 4096"]),
    (
        "width that can't fit",
        ["--width", "4096", "--model", "resnet110"],
        ["needs about", "GB of memory", "parameters", "activations", "but the "],
    ),
    (
        "image size that can't fit",
        ["--image-size", "4096", "--batch-size", "128"],
        ["needs about", "activations", "(batch 128 at 4096x4096)", "but the "],
    ),
    (
        "batch larger than the data, queued",
        ["--batch-size", "10000000", "--background"],
        ["--batch-size 10000000 is larger than the 1438 training images"],
    ),
]


@pytest.mark.parametrize("argv,must", [c[1:] for c in BIG], ids=[c[0] for c in BIG])
def test_what_cannot_fit_is_refused_before_anything_is_made(argv, must, tmp_path, capsys):
    root = tmp_path / "runs"
    code, _, err = _cli(
        ["train", "--dataset", "digits", "--iterations", "5", *argv, "--runs-dir", str(root)], capsys
    )
    assert code == 2
    _one_line_error(err, *must)
    assert not root.exists() or not [p for p in root.iterdir() if not p.name.startswith(".")]


@pytest.mark.parametrize("field", ["seed", "threads", "iterations", "width", "checkpoint_every"])
def test_huge_integers_in_a_config_file_are_refused(field, tmp_path, capsys):
    cfg = tiny_config().to_dict()
    cfg[field] = 10**22
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    code, _, err = _cli(
        ["train", "--config", str(tmp_path / "c.json"), "--runs-dir", str(tmp_path / "runs")], capsys
    )
    assert code == 2
    _one_line_error(err, f"{field}=10000000000000000000000 is not accepted", "expected an integer from")


def test_models_lists_the_memory_a_step_needs(capsys):
    from resnet_core import TrainConfig
    from resnet_core.memory import DataShape, estimate, fmt_bytes

    code, out, err = _cli(["models", "resnet110", "plain20", "--batch-size", "64"], capsys)
    assert code == 0, err
    line = [ln for ln in out.splitlines() if ln.startswith("resnet110 ")][0]
    est = estimate(
        TrainConfig(model="resnet110", batch_size=64, iterations=1, dataset="cifar10", image_size=32),
        DataShape(50000, 10000, 3, 32, 32, 10),
    )
    assert fmt_bytes(est.total) in line and fmt_bytes(est.activations_bytes) in line, line
    assert "training memory at batch 64, 32x32" in out


def test_the_lab_shows_the_estimate_and_refuses_what_cannot_fit(store, monkeypatch):
    from test_app_helpers import no_exception, page, texts

    from resnet_core.memory import host_memory_limit

    at = page("lab").run()
    no_exception(at)
    assert "Memory: about" in texts(at, "caption") and "activations" in texts(at, "caption")
    assert at.number_input(key="lab_width").max == 4096
    at.number_input(key="lab_depth").set_value(110).run()
    at.number_input(key="lab_width").set_value(4096).run()
    limit = host_memory_limit()[0]
    assert "Can't launch: this run needs about" in texts(at, "warning")
    at.button(key="lab_launch").click().run()
    no_exception(at)
    errs = texts(at, "error")
    assert "Not launched: this run needs about" in errs and "GB" in errs, errs
    assert limit > 0 and store.list_ids() == []
