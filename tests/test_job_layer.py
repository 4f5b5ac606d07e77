"""The job layer (resnet_core.launch) under the training queue and the background analyses:
one lock helper, one core count, one way to launch, watch and cancel a detached job.

Real processes throughout: the jobs here are small python programs (no torch), so the file
takes a few seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis import jobs as ajobs
from resnet_core import jobs, launch
from resnet_core.store import HEARTBEAT_S, RunStore

# A job that records its identity where the test can read it (as the trainer and the analysis
# jobs do), says so in its log, and ends cleanly on SIGTERM, writing that it did.
JOB = """
import json, os, signal, sys, time, importlib.util
spec = importlib.util.spec_from_file_location("_layer", sys.argv[2])
layer = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(layer)
out = sys.argv[1]
def stop(signum, frame):
    open(out + ".term", "w").write("SIGTERM")
    sys.exit(3)
signal.signal(signal.SIGTERM, stop)
rec = dict(layer.process_identity(), heartbeat=time.time(), threads=os.environ.get("OMP_NUM_THREADS"))
open(out + ".tmp", "w").write(json.dumps(rec))
os.replace(out + ".tmp", out)
print("job started", flush=True)
time.sleep(120)
"""


def _until(cond, timeout, what):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _other_process_takes(path) -> str:
    """Try the lock from another process with the layer's helper: 'took' or 'refused'."""
    code = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('_layer', sys.argv[2])\n"
        "m = sys.modules[spec.name] = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print('took' if m.take_lock(sys.argv[1]) is not None else 'refused')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), launch.__file__], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


# --- one lock helper ---------------------------------------------------------------------
def test_the_lock_helper_refuses_a_second_holder_until_the_first_lets_go(tmp_path):
    path = tmp_path / "x.lock"
    first = launch.take_lock(path)
    assert first is not None
    try:
        assert launch.take_lock(path) is None  # a second holder, even in this process
        assert _other_process_takes(path) == "refused"
        assert launch.lock_held(path)
        assert launch.flock_held(path) in (True, None)  # None: no /proc/locks to read
    finally:
        first.close()
    assert not launch.lock_held(path)
    assert _other_process_takes(path) == "took"
    with pytest.raises(FileNotFoundError):
        launch.take_lock(tmp_path / "absent", shared=True)  # nothing to ask about


def test_the_queue_the_trainers_and_the_analyses_take_their_locks_with_the_one_helper(tmp_path):
    """Whoever holds a lock by the helper is seen by each job system's own check: the
    runner lock, a run's trainer lock, an analysis slot."""
    store = RunStore(tmp_path / "runs")
    from faultlib import tiny_config

    run = store.create(tiny_config(), state="queued")
    held = [
        launch.take_lock(store.root / ".runner.lock"),
        launch.take_lock(run.path / ".trainer.lock"),
    ]
    (store.root / ajobs.SLOTS_DIR).mkdir()
    held.append(launch.take_lock(store.root / ajobs.SLOTS_DIR / "slot-0.lock"))
    try:
        assert all(f is not None for f in held)
        assert jobs.runner_alive(store)
        assert jobs._lock(store) is None
        assert run.lock_for_training() is None
        assert ajobs._try_slot(store.root, 1) is None
    finally:
        for f in held:
            f.close()
    assert not jobs.runner_alive(store)
    mine = run.lock_for_training()
    slot = ajobs._try_slot(store.root, 1)
    try:
        assert mine is not None and slot is not None
        assert _other_process_takes(run.path / ".trainer.lock") == "refused"
    finally:
        mine.close()
        slot.close()


# --- one core count ------------------------------------------------------------------------
def test_one_core_count_for_the_queue_and_the_analyses(monkeypatch):
    assert jobs.cores is launch.cores and ajobs.cores is launch.cores
    assert launch.cores() == len(os.sched_getaffinity(0))
    monkeypatch.delenv(ajobs.JOBS_ENV, raising=False)
    assert ajobs.max_jobs() == max(1, len(os.sched_getaffinity(0)) // 2)


def test_the_core_count_follows_the_affinity_mask(tmp_path):
    """Under `taskset -c 0` (one core allowed) the layer counts one core, whatever the host has."""
    code = (
        "import importlib.util, os, sys\n"
        "os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
        "spec = importlib.util.spec_from_file_location('_layer', sys.argv[1])\n"
        "m = sys.modules[spec.name] = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(m.cores())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, launch.__file__], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


# --- launch, watch, cancel -----------------------------------------------------------------
def _read(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_a_launched_job_is_detached_watched_and_cancelled(tmp_path):
    backend = launch.get_backend("local")
    rec_path, log = tmp_path / "job.json", tmp_path / "job.log"
    job = backend.launch(
        [sys.executable, "-c", JOB, str(rec_path), launch.__file__],
        launch.child_env(threads=1),
        launch.REPO_ROOT,
        log,
    )
    try:
        rec = _until(lambda: _read(rec_path), 60, "the job to record itself")
        assert rec["pid"] == job.pid and rec["host"] == job.host == launch.this_host()
        assert rec["threads"] == "1"  # child_env capped its thread pools
        assert os.getsid(job.pid) != os.getsid(0)  # its own session: a Ctrl-C here misses it
        assert backend.alive(job) and job.poll() is None
        assert launch.record_alive(rec, time.time(), 3 * HEARTBEAT_S + 10)
        _until(lambda: "job started" in log.read_text(), 30, "the job's log line")
        assert backend.cancel(job)
        assert job.handle.wait(30) == 3
    finally:
        if job.poll() is None:
            job.handle.kill()
            job.handle.wait(30)
    assert (tmp_path / "job.json.term").read_text() == "SIGTERM"  # it stopped on SIGTERM
    assert not backend.alive(job) and job.returncode == 3
    assert not backend.cancel(job)  # an ended job: nothing to ask
    assert not launch.record_alive(rec, time.time(), 3 * HEARTBEAT_S + 10)


def test_a_job_outlives_its_launcher_and_is_watched_and_cancelled_by_its_record(tmp_path):
    """The launcher (a page, a CLI) exits; another process watches the job by what it
    recorded and cancels it by pid and start time."""
    rec_path = tmp_path / "job.json"
    starter = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('_layer', sys.argv[1])\n"
        "m = sys.modules[spec.name] = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "job = m.LocalBackend().launch([sys.executable, '-c', sys.argv[2], sys.argv[3], sys.argv[1]],\n"
        "                              m.child_env(), m.REPO_ROOT, sys.argv[4])\n"
        "print(job.pid)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", starter, launch.__file__, JOB, str(rec_path), str(tmp_path / "job.log")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout)
    rec = _until(lambda: _read(rec_path), 60, "the job to record itself")
    try:
        assert rec["pid"] == pid
        assert launch.record_alive(rec, time.time(), 30)  # its launcher is gone, it is not
        reused = dict(rec, pid_start=str(int(rec["pid_start"]) + 1))  # the pid, another process
        assert not launch.record_alive(reused, time.time(), 30)
        assert not launch.signal_record(reused)  # never signals a process it did not record
        assert launch.signal_record(rec)
        _until(lambda: not launch.record_alive(rec, time.time(), 30), 30, "the job to stop")
        assert (tmp_path / "job.json.term").read_text() == "SIGTERM"
    finally:
        if launch.pid_alive(rec["pid"], rec["pid_start"]):
            os.kill(rec["pid"], signal.SIGKILL)


def test_a_job_of_another_host_is_judged_by_its_heartbeat_never_by_a_pid():
    now = time.time()
    mine = launch.process_identity()  # a live pid, with its start time, on this host
    elsewhere = dict(mine, host="node-b." + launch.this_host())
    assert launch.record_alive(dict(elsewhere, heartbeat=now - 1), now, 16)
    assert not launch.record_alive(dict(elsewhere, heartbeat=now - 60), now, 16)  # our pid lives
    assert not launch.record_alive(elsewhere, now, 16)  # no heartbeat: nothing says it lives
    assert not launch.signal_record(dict(elsewhere, heartbeat=now))  # never a pid of another host
    assert launch.record_alive(dict(mine, heartbeat=now - 3600), now, 16)  # here: its pid tells


def _umap_job(tmp_path):
    """A finished run with a stand-in checkpoint (only its size and time make the key), and
    its umap job's key, the cache folder made."""
    from faultlib import tiny_config

    run = RunStore(tmp_path / "runs").create(tiny_config(), state="done")
    run.ckpt_dir.mkdir(parents=True, exist_ok=True)
    run.checkpoint_path("last").write_bytes(b"stand-in")
    run.cache_dir.mkdir(parents=True, exist_ok=True)
    return run, ajobs.key_of(run, "umap")


def test_an_analysis_job_of_another_host_is_watched_by_its_heartbeat(tmp_path):
    run, key = _umap_job(tmp_path)
    now = time.time()
    rec = dict(
        launch.process_identity(), host="node-b", state="running", progress=0.5, message="fit", task="umap"
    )
    (run.cache_dir / f"{key}.job.json").write_text(json.dumps(dict(rec, heartbeat=now, updated=now - 600)))
    assert ajobs.status(run, "umap")["state"] == "running"
    (run.cache_dir / f"{key}.job.json").write_text(
        json.dumps(dict(rec, heartbeat=now - 600, updated=now - 600))
    )
    assert ajobs.status(run, "umap")["state"] == "interrupted"


def test_an_analysis_waiting_for_ray_lives_by_its_drivers_beat_with_the_same_token(tmp_path):
    """A job still "starting" (queued in Ray) written by a driver on another host: alive while
    a beat with the job's token is fresh; a stale beat, or one of another job (token), never
    vouches for it."""
    from resnet_core.raybackend import driver_beat_path

    run, key = _umap_job(tmp_path)
    now = time.time()
    elsewhere = dict(launch.process_identity(), host="node-b")
    path = run.cache_dir / f"{key}.job.json"
    path.write_text(json.dumps(dict(elsewhere, state="starting", token="t1", driver=True, updated=now - 600)))
    beat = Path(driver_beat_path(path))
    for token, age, state in (("t1", 0, "starting"), ("t1", 600, "interrupted"), ("t2", 0, "interrupted")):
        beat.write_text(json.dumps(dict(elsewhere, token=token, heartbeat=now - age)))
        assert ajobs.status(run, "umap")["state"] == state, (token, age)


def test_ray_analyses_need_a_running_cluster(monkeypatch):
    monkeypatch.setenv("RESNET_LAB_ANALYSIS_BACKEND", "ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ValueError, match="RESNET_LAB_ANALYSIS_BACKEND=ray needs RAY_ADDRESS"):
        ajobs.analysis_backend()
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert ajobs.analysis_backend() == "ray"


def test_a_backend_not_accepted_is_one_line_naming_the_accepted(monkeypatch):
    assert isinstance(launch.get_backend(), launch.LocalBackend)
    with pytest.raises(ValueError, match=r"--backend 'slurm' is not accepted; use one of: local, ray"):
        launch.get_backend("slurm")
    monkeypatch.setenv(launch.BACKEND_ENV, "k8s")
    with pytest.raises(ValueError, match=r"RESNET_LAB_BACKEND='k8s' is not accepted"):
        launch.get_backend()


def test_a_rerun_trainer_waits_for_the_dead_remote_trainer_to_go_silent(tmp_path):
    """A Ray task rerun after its node died may start while the run still shows that node's
    trainer beating: `_run` waits until the heartbeat is stale (then the store reads the run
    interrupted and the new trainer resumes it), instead of refusing. One of this host is
    judged by its pid at once."""
    from faultlib import tiny_config

    from resnet_core.__main__ import _wait_for_remote_owner
    from resnet_core.store import STALE_S

    run = RunStore(tmp_path / "runs").create(tiny_config(), state="queued")
    fresh_s = STALE_S  # another host's trainer may be silent this long (evaluating, loading)
    beat = time.time() - fresh_s + 3  # goes stale in about 3 s
    run.write_status(state="running", host="node-b", pid=1, pid_start="1", heartbeat=beat)
    assert run.read_status()["state"] == "running"
    t0 = time.time()
    assert _wait_for_remote_owner(run, poll=0.1)  # its owner was another host's
    assert time.time() - beat >= fresh_s and time.time() - t0 < fresh_s
    assert run.read_status()["state"] == "interrupted"
    run.write_status(state="running", heartbeat=time.time(), **launch.process_identity())
    t0 = time.time()
    assert not _wait_for_remote_owner(run, poll=0.1)
    assert time.time() - t0 < 1.0


# --- review fixes (issue 14 review) ---------------------------------------------------------
def test_a_run_queued_without_a_backend_trains_here_whatever_the_environment_names(tmp_path, monkeypatch):
    """$RESNET_LAB_BACKEND names the default for new submissions; a run whose status names no
    backend is a local one. A bad value there must not crash the runner on every start."""
    from faultlib import tiny_config

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store = RunStore(tmp_path / "runs")
    run = store.create(tiny_config(), state="queued")
    monkeypatch.setenv(launch.BACKEND_ENV, "slurm")
    assert jobs.run_queue(store, poll=0.1) == 1
    st = run.read_status()
    assert st["state"] == "done", st
    assert "backend" not in run.read_status_raw()


def test_a_queued_run_whose_config_is_not_an_object_fails_and_the_runner_goes_on(tmp_path, monkeypatch):
    from faultlib import tiny_config

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store = RunStore(tmp_path / "runs")
    bad = store.create(tiny_config(), state="queued")
    (bad.path / "config.json").write_text("[1, 2]\n")
    (bad.path / "env.json").write_text('"threads"\n')
    good = store.create(tiny_config(), state="queued")
    assert jobs.run_queue(store, poll=0.1) == 2
    assert bad.read_status()["state"] == "failed"
    assert "config.json" in bad.read_status()["message"]
    assert good.read_status()["state"] == "done"


def test_another_hosts_trainer_silent_between_steps_still_reads_running(tmp_path):
    """A trainer beats only between steps; data loading, evaluation or a checkpoint write can
    keep it silent well past 3 heartbeats. Another host's run reads interrupted only after
    STALE_S without one, so cancel still reaches it and delete still refuses it."""
    from faultlib import tiny_config

    from resnet_core.store import STALE_S

    store = RunStore(tmp_path / "runs")
    run = store.create(tiny_config(), state="queued")
    other = dict(launch.process_identity(), host="node-b." + launch.this_host())
    run.write_status(state="running", heartbeat=time.time() - 60, **other)
    assert run.read_status()["state"] == "running"
    assert jobs.cancel(store, run.id) == "cancelling"
    run.write_status(heartbeat=time.time() - STALE_S - 5)
    assert run.read_status()["state"] == "interrupted"


def test_a_lock_or_log_planted_as_a_link_is_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    store = tmp_path / "runs"
    store.mkdir()
    (store / "x.lock").symlink_to(outside / "made.lock")
    with pytest.raises(OSError):
        launch.take_lock(store / "x.lock")
    (store / "job.log").symlink_to(outside / "victim.log")
    with pytest.raises(OSError):
        launch.LocalBackend().launch(
            [sys.executable, "-c", "print('x')"], launch.child_env(), tmp_path, store / "job.log"
        )
    assert list(outside.iterdir()) == []  # nothing made or appended outside the store


def test_a_resumed_run_cancelled_again_is_stopped_through_its_backend_again(tmp_path):
    """The runner asks the backend to stop a job that ignores its cancel file past the grace;
    a resume (the cancel file removed) forgets that, so a second cancel is acted on too."""
    from faultlib import tiny_config

    run = RunStore(tmp_path / "runs").create(tiny_config(), state="running")
    asked: dict = {}
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    first = launch.LocalBackend().launch(sleeper, launch.child_env(), tmp_path, tmp_path / "a.log")
    second = launch.LocalBackend().launch(sleeper, launch.child_env(), tmp_path, tmp_path / "b.log")
    try:
        run.request_cancel()
        jobs._cancel_if_asked(run, first, asked, grace_s=0.0)  # seen
        time.sleep(0.05)
        jobs._cancel_if_asked(run, first, asked, grace_s=0.0)  # past the grace: stopped
        assert first.handle.wait(30) == -signal.SIGTERM
        (run.path / "cancel").unlink()  # resumed
        jobs._cancel_if_asked(run, second, asked, grace_s=0.0)
        run.request_cancel()  # cancelled again
        jobs._cancel_if_asked(run, second, asked, grace_s=0.0)
        time.sleep(0.05)
        jobs._cancel_if_asked(run, second, asked, grace_s=0.0)
        assert second.handle.wait(30) == -signal.SIGTERM
    finally:
        for j in (first, second):
            if j.poll() is None:
                j.handle.kill()
                j.handle.wait()


def test_an_analysis_jobs_first_record_names_its_host(tmp_path, monkeypatch):
    """Read from another host, a pid without a host would be judged as that host's pid."""
    from faultlib import tiny_config

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run = RunStore(tmp_path / "runs").create(tiny_config(), state="done")
    run.ckpt_dir.mkdir(parents=True, exist_ok=True)
    run.checkpoint_path("last").write_bytes(b"not a checkpoint: the job fails, after its first record")
    key = ajobs.key_of(run, "umap")
    st = ajobs.start(run, "umap")
    rec = json.loads((run.cache_dir / f"{key}.job.json").read_text())
    try:
        assert rec.get("host") == launch.this_host(), rec
        assert isinstance(rec.get("pid"), int)
    finally:
        _until(
            lambda: ajobs.status(run, "umap")["state"] not in ("starting", "running"), 120, "the job to end"
        )
    assert st["state"] in ("starting", "running")


def test_a_ray_task_carries_only_the_labs_settings_of_the_environment():
    from resnet_core.raybackend import task_env

    env = launch.child_env(
        threads=2, RESNET_LAB_RUNS_DIR="/x", GITHUB_TOKEN="secret", AWS_SECRET_ACCESS_KEY="k"
    )
    carried = task_env(env)
    assert carried["OMP_NUM_THREADS"] == "2" and carried["RESNET_LAB_RUNS_DIR"] == "/x"
    assert not {"GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "HOME", "PATH"} & set(carried)


def test_a_pid_of_another_pid_namespace_or_boot_is_never_judged_here():
    """Containers (or cloned VMs) can share a host name: their pids are not this host's."""
    if not os.path.exists("/proc/self/ns/pid"):
        pytest.skip("no pid namespaces here")
    now = time.time()
    mine = dict(launch.process_identity(), pidns=str(os.stat("/proc/self/ns/pid").st_ino))
    assert launch.on_this_host(mine)
    for other in (dict(mine, pidns="1"), dict(mine, boot_id="another-boot")):
        assert not launch.on_this_host(other)
        assert not launch.record_alive(dict(other, heartbeat=now - 60), now, 16)  # our pid lives: not it
        assert not launch.signal_record(dict(other, heartbeat=now))
    old = {k: v for k, v in mine.items() if k not in ("pidns", "boot_id")}
    assert launch.on_this_host(old)  # records from before namespaces were recorded


def test_the_reason_ray_gave_up_is_written_while_the_remote_heartbeat_is_fresh(tmp_path):
    from faultlib import tiny_config

    run = RunStore(tmp_path / "runs").create(tiny_config(), state="queued")
    run.write_status(state="running", heartbeat=time.time(), **dict(launch.process_identity(), host="node-b"))
    jobs._mark_if_never_started(run, -9, "The worker died unexpectedly while executing this task")
    st = run.read_status_raw()
    assert st["state"] == "interrupted" and "The worker died unexpectedly" in st["message"], st


LOCK_HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("_layer", sys.argv[2])
layer = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(layer)
lock = layer.take_lock(sys.argv[1])
print("held" if lock else "refused", flush=True)
time.sleep(float(sys.argv[3]))
"""


def test_a_rerun_trainer_waits_out_the_lock_a_dead_remote_trainer_left(tmp_path):
    """On a shared filesystem a dead client's lock outlives it (NFSv4: its lease, 90 s). The
    lease itself can't be made here; a process that holds the run's lock for 15 s (longer than
    the rerun takes to import torch and try it) after another host's trainer went silent
    stands in for it: the rerun waits, then trains."""
    from faultlib import subprocess_env, tiny_config

    from resnet_core.store import STALE_S

    store = RunStore(tmp_path / "runs")
    run = store.create(tiny_config(), state="queued")
    run.write_status(
        state="running", host="node-b", pid=1, pid_start="1", heartbeat=time.time() - STALE_S - 5
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(run.path / ".trainer.lock"), launch.__file__, "15"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "resnet_core",
                "_run",
                run.id,
                "--runs-dir",
                str(store.root),
                "--threads",
                "1",
            ],
            cwd=launch.REPO_ROOT,
            env=subprocess_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 0, out.stderr[-2000:]
    assert run.read_status()["state"] == "done"
