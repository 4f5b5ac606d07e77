"""The cap on analysis background processes ($RESNET_LAB_ANALYSIS_JOBS): real job processes on
a real tiny run. With one slot, a second job waits (saying so) while the first computes, a
waiting job can be cancelled, both end done, and a killed job frees its slot.

The first job is paused with SIGSTOP while it holds the slot, so "the second waits while the
first runs" does not depend on how fast either computes."""

from __future__ import annotations

import os
import signal
import time

import pytest

from analysis import jobs
from resnet_core.store import pid_alive

A = ("landscape2d", {"steps": 9, "n": 64})
B = ("lesion", {"n": 100})
C = ("landscape1d", {"steps": 5, "n": 32})
D = ("shattering", {"n_points": 8})


def _run(store, model="cifar_resnet8"):
    for info in store.list_runs():
        if info["config"].get("model") == model:
            return store.run(info["id"])
    raise AssertionError(f"no {model} run in the store")


def _job(run, job):
    task, params = job
    return jobs.run_json(run.cache_dir / f"{jobs.key_of(run, task, **params)}.job.json") or {}


def _status(run, job):
    return jobs.status(run, job[0], **job[1])


def _until(pred, timeout, what):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def _holds_slot(run, job):
    """The job's own pid once it has taken a slot (it wrote "loading" or a later progress)."""
    j = _job(run, job)
    assert j.get("state") in (None, "starting", "running"), f"{job[0]} ended first: {j}"
    if j.get("state") == "running" and j.get("pid_start") and not j.get("message", "").startswith("waiting"):
        return j["pid"]
    return None


def _waiting(run, job):
    st = _status(run, job)
    assert st["state"] in ("starting", "running"), f"{job[0]} ended without waiting: {st}"
    return st["state"] == "running" and st["message"].startswith("waiting for a free core")


def test_max_jobs_default_is_half_the_cores_and_a_bad_value_is_an_error(monkeypatch):
    monkeypatch.delenv(jobs.JOBS_ENV, raising=False)
    monkeypatch.setattr(jobs, "cores", lambda: 8)
    assert jobs.max_jobs() == 4
    monkeypatch.setattr(jobs, "cores", lambda: 1)
    assert jobs.max_jobs() == 1
    monkeypatch.setenv(jobs.JOBS_ENV, " 3 ")
    assert jobs.max_jobs() == 3
    for bad in ("0", "-2", "two", "1.5", "2x"):
        monkeypatch.setenv(jobs.JOBS_ENV, bad)
        with pytest.raises(ValueError, match=r"RESNET_LAB_ANALYSIS_JOBS=.*positive integer"):
            jobs.max_jobs()
    assert jobs.waiting_message(1) == "waiting for a free core (1 analysis job at a time)"


def test_a_bad_value_stops_start_before_any_process(tiny_runs, monkeypatch):
    monkeypatch.setenv(jobs.JOBS_ENV, "0")
    run = _run(tiny_runs)
    with pytest.raises(ValueError, match="RESNET_LAB_ANALYSIS_JOBS"):
        jobs.get_or_start(run, B[0], **B[1])
    assert _status(run, B)["state"] == "missing"


def test_one_slot_second_job_waits_can_be_cancelled_and_both_finish(tiny_runs, monkeypatch):
    monkeypatch.setenv(jobs.JOBS_ENV, "1")
    run = _run(tiny_runs, "cifar_resnet14")
    all_jobs = (A, B, C, D)
    pid_a = None
    try:
        assert jobs.get_or_start(run, A[0], **A[1]) is None
        pid_a = _until(lambda: _holds_slot(run, A), 90, "job A takes the only slot")
        os.kill(pid_a, signal.SIGSTOP)  # A holds the slot until SIGCONT
        assert _status(run, A)["state"] == "running", "job A finished before it could be paused"
        for job in (B, C, D):
            assert jobs.get_or_start(run, job[0], **job[1]) is None
        for job in (B, C, D):
            _until(lambda: _waiting(run, job), 60, f"{job[0]} says it waits for a slot")
        time.sleep(1.5)  # three retries later: still waiting, nothing computed
        st = _status(run, B)
        assert st == {
            "state": "running",
            "progress": 0.0,
            "key": st["key"],
            "message": "waiting for a free core (1 analysis job at a time)",
        }
        assert _status(run, A)["state"] == "running"
        assert not jobs.cache.result_path(run, st["key"]).exists()

        # cancel while waiting: by the API (cancel file and SIGTERM) and by the file alone
        jobs.cancel(run, C[0], **C[1])
        jobs._cancel_path(run, jobs.key_of(run, D[0], **D[1])).touch()
        for job in (C, D):
            st = jobs.wait(run, job[0], timeout=30, **job[1])
            assert st["state"] == "cancelled", (job, st)
            j = _job(run, job)
            _until(lambda: not pid_alive(j["pid"], j["pid_start"]), 30, f"{job[0]} exits")
        assert "waiting" in _status(run, D)["message"]
        assert _waiting(run, B)

        os.kill(pid_a, signal.SIGCONT)
        for job in (A, B):
            st = jobs.wait(run, job[0], timeout=120, **job[1])
            assert st["state"] == "done", (job, st)
        res = {job[0]: jobs.cache.result_path(run, jobs.key_of(run, job[0], **job[1])) for job in (A, B)}
        assert res["landscape2d"].stat().st_mtime_ns <= res["lesion"].stat().st_mtime_ns
        assert len(jobs.get_or_start(run, B[0], **B[1])["table"]) == 6  # resnet14: 6 blocks
        free = jobs._try_slot(run.root, 1)
        assert free is not None, "a finished job still holds the slot"
        free.close()
    finally:
        if pid_a is not None:
            try:
                os.kill(pid_a, signal.SIGCONT)
            except ProcessLookupError:
                pass
        for job in all_jobs:
            jobs.cancel(run, job[0], **job[1])


def test_a_killed_job_frees_its_slot(tiny_runs, monkeypatch):
    monkeypatch.setenv(jobs.JOBS_ENV, "1")
    run = _run(tiny_runs)
    assert jobs.get_or_start(run, A[0], **A[1]) is None
    pid = _until(lambda: _holds_slot(run, A), 90, "the job takes the only slot")
    os.kill(pid, signal.SIGSTOP)  # holding it, for sure
    try:
        assert jobs._try_slot(run.root, 1) is None
    finally:
        os.kill(pid, signal.SIGKILL)
    f = _until(lambda: jobs._try_slot(run.root, 1), 10, "the killed job's slot is free")
    f.close()
    assert _until(lambda: _status(run, A)["state"] == "interrupted", 10, "the job reads interrupted")


def _hold_slot(root, held, release):
    f = jobs.acquire_slot(root, 1)
    held.touch()
    while not release.exists():
        time.sleep(0.02)
    f.close()
    os._exit(0)


def _wait_for_slot(root, name, poll, log):
    f = jobs.acquire_slot(root, 1, poll=poll)
    with open(log, "a") as o:
        o.write(name + "\n")
    time.sleep(0.2)
    f.close()
    os._exit(0)


def test_waiting_jobs_are_served_first_come_first_served(tmp_path):
    """The first job to wait gets the freed slot, though the second polls fifty times as
    often; a ticket whose job died is swept away instead of blocking the queue."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")  # children only take file locks: no torch work after fork
    root, log = tmp_path / "store", tmp_path / "order.txt"
    held, release = tmp_path / "held", tmp_path / "release"
    slots = root / jobs.SLOTS_DIR
    procs = []
    try:
        procs.append(ctx.Process(target=_hold_slot, args=(root, held, release), daemon=True))
        procs[-1].start()
        _until(held.exists, 30, "the holder takes the only slot")
        procs.append(ctx.Process(target=_wait_for_slot, args=(root, "first", 1.0, log), daemon=True))
        procs[-1].start()
        _until(lambda: len(list(slots.glob("wait-*.ticket"))) == 1, 30, "the first job queues")
        procs.append(ctx.Process(target=_wait_for_slot, args=(root, "second", 0.02, log), daemon=True))
        procs[-1].start()
        _until(lambda: len(list(slots.glob("wait-*.ticket"))) == 2, 30, "the second job queues")
        release.touch()
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
    finally:
        release.touch()
        for p in procs:
            if p.is_alive():
                p.kill()
    assert log.read_text().split() == ["first", "second"]
    assert not list(slots.glob("*.ticket")) and not list(slots.glob(".*"))
    # a ticket nobody holds (its job was killed) does not make a newcomer wait
    (slots / f"wait-{1:020d}-1.ticket").touch()
    t0 = time.time()
    jobs.acquire_slot(root, 1, poll=0.05).close()
    assert time.time() - t0 < 5 and not list(slots.glob("*.ticket"))
