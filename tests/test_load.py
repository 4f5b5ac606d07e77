"""Load: 8 runs queued at once on a 2-core machine while three sessions watch; and the
queue's races (a run queued while the runner exits, a foreground resume beside a runner)."""

from __future__ import annotations

import threading
import time

import pytest
from faultlib import assert_each_step_once, tiny_config, wait_for

from resnet_core import RunStore, jobs
from resnet_core.__main__ import main as cli_main
from resnet_core.store import ACTIVE


def _states(store):
    return {i["id"]: i["status"].get("state") for i in store.list_runs()}


@pytest.mark.slow
def test_eight_runs_queued_at_once_with_three_watchers(tmp_path, monkeypatch):
    from test_app_helpers import no_exception, page

    root = tmp_path / "runs"
    monkeypatch.setenv("RESNET_LAB_RUNS_DIR", str(root))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store = RunStore(root)
    cfgs = [tiny_config(seed=i, threads=None) for i in range(8)]
    t0 = time.time()
    runs = [jobs.submit(store, c) for c in cfgs]  # the first submit starts the detached runner
    ncores = jobs.cores()
    seen = {"reads": 0, "renders": 0, "max_running": 0, "max_threads": 0, "errors": []}
    stop = threading.Event()

    def cli_watcher():
        """A terminal user: `runs` and each run's metrics, as fast as it can."""
        while not stop.is_set():
            try:
                infos = store.list_runs()
                running = [i for i in infos if i["status"].get("state") == "running"]
                seen["max_running"] = max(seen["max_running"], len(running))
                seen["max_threads"] = max(
                    seen["max_threads"], sum(int(i["status"].get("threads") or 1) for i in running)
                )
                for i in infos:
                    assert i["error"] is None, i["error"]
                    store.run(i["id"]).read_metrics()
                seen["reads"] += 1
            except Exception as e:  # noqa: BLE001 - any error is a finding
                seen["errors"].append(f"cli: {type(e).__name__}: {e}")
            time.sleep(0.05)

    def data_watcher():
        """The app's data layer (what every page calls), polled like the live fragment."""
        from app import runs_data

        while not stop.is_set():
            try:
                runs_data.runs_frame(store)
                for r in runs:
                    runs_data.metrics_frame(r)
            except Exception as e:  # noqa: BLE001
                seen["errors"].append(f"data: {type(e).__name__}: {e}")
            time.sleep(0.2)

    threads = [
        threading.Thread(target=cli_watcher, daemon=True),
        threading.Thread(target=data_watcher, daemon=True),
    ]
    for t in threads:
        t.start()
    # three browser sessions: the Lab, Degradation and Runs pages, re-rendered in turn
    sessions = [page("lab"), page("degradation"), page("runs")]
    try:
        deadline = time.time() + 420
        while any(s in ACTIVE for s in _states(store).values()):
            assert time.time() < deadline, f"the queue did not drain: {_states(store)}"
            for at in sessions:
                at.run()
                no_exception(at)
                seen["renders"] += 1
            time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    wall = time.time() - t0
    assert not seen["errors"], seen["errors"][:5]
    states = _states(store)
    assert set(states.values()) == {"done"}, states
    for r, c in zip(runs, cfgs):
        assert_each_step_once(r, c)
        log = (r.path / "train.log").read_text(errors="replace")
        assert "Traceback" not in log and "lock" not in log.lower(), log[-2000:]
    runner_log = (root / ".runner.log").read_text(errors="replace") if (root / ".runner.log").exists() else ""
    assert "Traceback" not in runner_log and "lock" not in runner_log.lower(), runner_log[-2000:]
    assert seen["max_threads"] <= ncores, seen
    assert seen["reads"] > 10 and seen["renders"] >= 3
    print(f"8 runs in {wall:.0f}s; {seen}")


def test_a_run_queued_while_the_runner_exits_is_not_stranded(tmp_path, monkeypatch):
    """The runner decides the queue is empty; a submit lands before it releases its lock, sees
    the lock held, and starts no runner. Someone must still start that run."""
    store = RunStore(tmp_path / "runs")
    spawned = []
    real_alive = jobs.runner_alive

    def fake_ensure_runner(st):  # the real check, but record instead of spawning a process
        if not real_alive(st):
            spawned.append(time.time())

    monkeypatch.setattr(jobs, "ensure_runner", fake_ensure_runner)
    late = {}

    def on_tick(st):
        if not late:
            late["run"] = jobs.submit(st, tiny_config())  # during the runner's last tick

    jobs.run_queue(store, poll=0.01, on_tick=on_tick)
    assert late["run"].read_status()["state"] == "queued"
    assert spawned, "a run was left queued with no runner to start it"


def test_foreground_resume_is_never_offered_to_a_runner(tmp_path, monkeypatch):
    """`resume RUN` in a terminal trains in that process; if the run showed as queued meanwhile,
    a runner draining the same store would start a second trainer on it."""
    import importlib

    from faultlib import train_reference

    train_mod = importlib.import_module("resnet_core.train")
    cfg = tiny_config(iterations=10, eval_every=10)
    run = train_reference(tmp_path / "runs", cfg)
    run.write_status(state="interrupted")
    (run.path / "ckpt" / "last.pt").unlink()
    real = train_mod.run_in_store
    seen = {}

    def spy(store, run_id, **kw):
        seen["state"] = store.run(run_id).read_status()["state"]
        seen["queued"] = [i["id"] for i in store.list_runs() if i["status"].get("state") == "queued"]
        return real(store, run_id, **kw)

    monkeypatch.setattr(train_mod, "run_in_store", spy)
    assert cli_main(["resume", run.id, "--runs-dir", str(run.root), "--quiet"]) == 0
    assert seen["queued"] == [], f"the run showed as {seen['state']} while resumed in the foreground"
    assert run.read_status()["state"] == "done"
    assert_each_step_once(run, cfg)


def test_a_cancel_that_races_the_runner_start_is_honoured(tmp_path):
    """The runner checked the cancel file, then the user cancelled, then the runner started the
    trainer: the trainer must see the cancel request, not delete it and train."""
    import importlib

    from faultlib import tiny_config

    store = RunStore(tmp_path / "runs")
    run = jobs.submit(store, tiny_config(), start_runner=False)
    assert jobs.cancel(store, run.id) == "cancelled"
    run.write_status(state="queued", message="starting with 1 thread(s)")  # the runner's write
    st = importlib.import_module("resnet_core.train").run_in_store(store, run.id, threads=1)
    assert st["state"] == "cancelled", st
    assert run.read_metrics() == []


def test_a_second_trainer_on_a_run_being_trained_is_refused(tmp_path):
    """Two trainers on one folder (a runner restarted while a trainer was still starting, a
    double click) would interleave checkpoints and log lines. The second must refuse, touch
    nothing, and the runner must not mark the live run as ended."""
    import importlib
    import json as _json
    import threading as _threading

    from faultlib import tiny_config

    train_mod = importlib.import_module("resnet_core.train")
    store = RunStore(tmp_path / "runs")
    cfg = tiny_config(iterations=30)
    run = jobs.submit(store, cfg, start_runner=False)
    gate, go = _threading.Event(), _threading.Event()

    class Pause(train_mod.Callback):
        def on_step_end(self, ctx):
            if ctx.step == 7:
                gate.set()
                go.wait(60)

    first = _threading.Thread(
        target=train_mod.train, args=(cfg,), kwargs=dict(run=run, callbacks=[Pause()]), daemon=True
    )
    first.start()
    try:
        assert gate.wait(120), "the first trainer did not reach step 7"
        before = (run.path / "status.json").read_bytes(), (run.path / "metrics.jsonl").read_bytes()
        with pytest.raises(Exception, match="another process|being trained"):
            train_mod.run_in_store(store, run.id, threads=1)
        assert ((run.path / "status.json").read_bytes(), (run.path / "metrics.jsonl").read_bytes()) == before
        jobs._mark_if_never_started(run, 2)  # the runner, seeing the refused trainer exit
        assert _json.loads((run.path / "status.json").read_bytes())["state"] == "running"
    finally:
        go.set()
        first.join(120)
    assert run.read_status()["state"] == "done"
    assert_each_step_once(run, cfg)


class _Done:
    """A stand-in for a trainer process that has already finished."""

    returncode = 0

    def poll(self):
        return 0


def _fake_start(started):
    def start(store, run, threads):
        started.append(run.id)
        run.write_status(state="done", message="(fake trainer)")
        return _Done()

    return start


@pytest.mark.parametrize(
    "status",
    [
        {"state": "queued", "created": "yesterday"},  # a string where a time belongs
        {"state": "running", "threads": "two", "pid": None},  # reads as interrupted, threads junk
        {
            "state": "running",
            "threads": "two",
            "pid": __import__("os").getpid(),
            "pid_start": __import__("resnet_core.store", fromlist=["x"]).process_identity()["pid_start"],
        },
    ],
)
def test_one_odd_status_does_not_stop_the_queue_for_the_others(tmp_path, monkeypatch, status):
    import json as _json

    from faultlib import tiny_config

    store = RunStore(tmp_path / "runs")
    odd = jobs.submit(store, tiny_config(), start_runner=False)
    (odd.path / "status.json").write_text(_json.dumps(status))
    good = [jobs.submit(store, tiny_config(seed=s), start_runner=False) for s in (1, 2)]
    started = []
    monkeypatch.setattr(jobs, "_start_trainer", _fake_start(started))
    monkeypatch.setattr(jobs, "ensure_runner", lambda st: None)
    # (a live "running" run holds one of the two cores; two queued runs take one thread each)
    t = __import__("threading").Thread(
        target=jobs.run_queue, args=(store,), kwargs=dict(max_cores=2, poll=0.01), daemon=True
    )
    t.start()
    wait_for(lambda: good[0].id in started, 30, what="a good run to start")
    odd.write_status(state="done")  # the odd run ends: the runner drains the rest and exits
    wait_for(lambda: good[1].id in started, 30, what="the other good run to start")
    t.join(30)
    assert not t.is_alive()


def test_a_queued_run_deleted_under_the_runner_does_not_stop_the_queue(tmp_path, monkeypatch):
    import shutil

    from faultlib import tiny_config

    store = RunStore(tmp_path / "runs")
    gone = jobs.submit(store, tiny_config(), start_runner=False)
    good = jobs.submit(store, tiny_config(seed=1), start_runner=False)
    started = []
    fake, real = _fake_start(started), jobs._start_trainer

    def start(st, run, threads):
        if run.id == gone.id:
            shutil.rmtree(run.path)  # deleted from the Runs page at this very moment
            return real(st, run, threads)
        return fake(st, run, threads)

    monkeypatch.setattr(jobs, "_start_trainer", start)
    monkeypatch.setattr(jobs, "ensure_runner", lambda st: None)
    jobs.run_queue(store, max_cores=2, poll=0.01)
    assert started == [good.id]


def test_the_queue_honours_a_config_that_names_its_threads(tmp_path, monkeypatch):
    """A run is a function of its config: `threads=1` in the config must train with one thread
    from the queue too (on CPU a different thread count can change the floats)."""
    from faultlib import tiny_config

    store = RunStore(tmp_path / "runs")
    one = jobs.submit(store, tiny_config(threads=1), start_runner=False)
    auto = jobs.submit(store, tiny_config(threads=None, seed=1), start_runner=False)
    given = {}

    def start(st, run, threads):
        given[run.id] = threads
        run.write_status(state="done")
        return _Done()

    monkeypatch.setattr(jobs, "_start_trainer", start)
    monkeypatch.setattr(jobs, "ensure_runner", lambda st: None)
    jobs.run_queue(store, max_cores=4, poll=0.01)
    assert given[one.id] == 1
    assert given[auto.id] >= 1
