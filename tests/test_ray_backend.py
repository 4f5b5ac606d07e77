"""The job layer's Ray backend on a real local Ray cluster (ray.cluster_utils.Cluster on
127.0.0.1): a head that runs nothing (0 CPUs) and two nodes of one CPU each, no dashboard,
the smallest object store. Skipped where Ray is not installed (it is an optional extra).

- a sweep over two seeds with --backend ray trains every run to done, on both nodes, each
  with every metrics line once;
- a node killed mid-run (after step 20 of 200, checkpoints every 10): Ray reruns the task
  on the other node, which resumes from the last checkpoint; the run ends done with no
  metrics line lost or duplicated;
- without Ray, --backend ray says how to install it in one line (run in a process that
  can't import ray)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from faultlib import REPO, assert_each_step_once, cli_flags, subprocess_env, tiny_config, wait_for

from resnet_core import jobs, launch
from resnet_core.store import RunStore
from resnet_core.train import load_checkpoint

MB = 1024**2


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    small = dict(object_store_memory=80 * MB)
    c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, include_dashboard=False, **small))
    try:
        c.add_node(num_cpus=1, **small)
        c.add_node(num_cpus=1, **small)
        c.wait_for_nodes()
        yield c
    finally:
        ray.shutdown()
        launch._ray_backends.clear()
        jobs._checked_stores.clear()
        c.shutdown()


def _node_of(run) -> str | None:
    return run.read_status_raw().get("node")


@pytest.mark.ray
@pytest.mark.timeout(400)
def test_a_sweep_over_two_seeds_trains_every_run_on_both_nodes(cluster, tmp_path):
    """`sweep --backend ray` in a terminal: the queue's detached runner is the Ray driver, the
    terminal only follows. Closing the terminal (SIGHUP) mid-sweep leaves every run training:
    a Ray task dies with its driver, so a terminal that drove them would take them along."""
    root = tmp_path / "runs"
    flags = cli_flags(model=None, iterations=20, checkpoint_every=10)
    (tmp_path / "cwd").mkdir()
    with open(tmp_path / "sweep.err", "w") as err:
        p = subprocess.Popen(
            [sys.executable, "-m", "resnet_core", "sweep", "quick", "--seeds", "0,1", "--backend", "ray"]
            + ["--ray-address", cluster.address, "--runs-dir", str(root), *flags],
            cwd=tmp_path / "cwd",
            env=subprocess_env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    store = RunStore(root)
    try:
        wait_for(
            lambda: any((i["status"].get("step") or 0) >= 1 for i in store.list_runs()),
            240,
            every=0.1,
            what="a run to train",
        )
        p.send_signal(signal.SIGHUP)  # the terminal closes
        assert p.wait(60) == 0, (tmp_path / "sweep.err").read_text()[-3000:]
        wait_for(
            lambda: len(store.list_runs()) == 8 and not jobs.active_runs(store),
            300,
            every=0.5,
            what="the sweep",
        )
        wait_for(lambda: not jobs.runner_alive(store), 60, every=0.2, what="the runner to exit")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    infos = store.list_runs()
    assert len(infos) == 8  # quick's four models, two seeds each
    assert {(i["config"]["model"], i["config"]["seed"]) for i in infos} == {
        (m, s) for m in ("plain56", "resnet56", "plain20", "resnet20") for s in (0, 1)
    }
    nodes = set()
    for i in infos:
        run = store.run(i["id"])
        st = run.read_status()
        assert st["state"] == "done", (i["id"], st)
        assert st["backend"] == "ray" and st["threads"] == 1
        assert_each_step_once(run, run.read_config())
        nodes.add(_node_of(run))
    workers = {n.node_id[:8] for n in cluster.list_all_nodes() if n is not cluster.head_node}
    assert {n.split("/")[-1] for n in nodes} == workers  # every run on a worker node, both used


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_background_ray_run_is_cancelled_and_resumed_from_the_cli(cluster, tmp_path, monkeypatch, capsys):
    """`train --background --backend ray` hands the run to a detached runner (a Ray driver of
    this host); `cancel` ends the run cancelled, and the runner exits once its task has ended;
    `resume --background --backend ray` continues it in a Ray task."""
    from resnet_core.__main__ import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "runs"
    long = cli_flags(model="cifar_resnet20", width=16, batch_size=128, iterations=5000, eval_every=1000)
    rc = main(
        [
            "train",
            "--background",
            "--backend",
            "ray",
            "--ray-address",
            cluster.address,
            "--runs-dir",
            str(root),
        ]
        + long
    )
    out = capsys.readouterr()
    assert rc == 0, out.err
    store = RunStore(root)
    run = store.run(out.out.split()[0])
    try:
        wait_for(
            lambda: run.read_status()["state"] == "running" and (run.read_status_raw().get("step") or 0) >= 5,
            240,
            every=0.2,
            what="the run to train on a node",
        )
        st = run.read_status_raw()
        assert st["backend"] == "ray" and st["ray_address"] == cluster.address
        workers = {n.node_id[:8] for n in cluster.list_all_nodes() if n is not cluster.head_node}
        assert st["node"].split("/")[-1] in workers
        assert main(["cancel", run.id, "--runs-dir", str(root)]) == 0
        wait_for(lambda: run.read_status()["state"] == "cancelled", 120, every=0.2, what="cancelled")
        wait_for(lambda: not jobs.runner_alive(store), 120, every=0.2, what="the runner to see its task end")
        stopped = run.read_status()["step"]
        # `resume --backend ray`: a Ray task again, from the checkpoint the cancel wrote
        resumed = ["resume", run.id, "--background", "--backend", "ray", "--ray-address", cluster.address]
        assert main([*resumed, "--runs-dir", str(root)]) == 0
        wait_for(
            lambda: run.read_status()["state"] == "running" and run.read_status()["step"] > stopped,
            240,
            every=0.2,
            what="the resumed run to train past the step it was cancelled at",
        )
        assert main(["cancel", run.id, "--runs-dir", str(root)]) == 0
        wait_for(lambda: run.read_status()["state"] == "cancelled", 120, every=0.2, what="cancelled again")
        wait_for(lambda: not jobs.runner_alive(store), 120, every=0.2, what="the runner to exit")
    finally:
        if run.read_status()["state"] in ("queued", "running"):
            jobs.cancel(store, run.id)
            wait_for(lambda: not jobs.runner_alive(store), 120, every=0.5, what="the runner to exit")
    assert run.read_status()["step"] < 5000


@pytest.mark.ray
@pytest.mark.timeout(400)
def test_a_node_killed_mid_run_is_retried_and_resumes_with_every_line_once(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store = RunStore(tmp_path / "runs")
    # slow enough (about 0.1 s a step here) that step 20 comes well before the end
    cfg = tiny_config(
        model="cifar_resnet20", width=16, batch_size=128, iterations=200, checkpoint_every=10, eval_every=50
    )
    run = jobs.submit(store, cfg, start_runner=False, backend="ray", address=cluster.address)
    drained = {}
    t = threading.Thread(
        target=lambda: drained.update(n=jobs.run_queue(store, poll=0.2)), daemon=True, name="runner"
    )
    t.start()
    try:
        wait_for(lambda: (run.read_status_raw().get("step") or 0) >= 20, 240, every=0.1, what="step 20")
        first = _node_of(run)
        victim = [n for n in cluster.list_all_nodes() if n.node_id[:8] == first.split("/")[-1]]
        assert victim, f"no cluster node {first}"
        assert run.read_status_raw()["step"] < cfg.iterations, "the run ended before the node could be killed"
        cluster.remove_node(victim[0], allow_graceful=False)  # its raylet and workers, SIGKILL
        # the checkpoint the dead trainer left: the status lags it (a heartbeat every few
        # seconds), so the status step is no bound on where the rerun may resume
        killed_at = load_checkpoint(run.checkpoint_path("last"))["step"]
        resumed = wait_for(
            lambda: re.fullmatch(r"resumed at step (\d+)", run.read_status_raw().get("message") or ""),
            240,
            every=0.05,
            what="the rerun task to resume",
        )
        step = int(resumed.group(1))
        # from the last checkpoint the dead trainer wrote (one more if its worker outlived the
        # raylet by a step or two), never from an earlier one or from scratch
        assert step % 10 == 0 and 10 <= killed_at <= step <= killed_at + 10, (killed_at, step)
        t.join(300)
        assert not t.is_alive(), "the queue did not drain after the node died"
    finally:
        if t.is_alive():
            jobs.cancel(store, run.id)
    st = run.read_status()
    assert st["state"] == "done", st
    assert _node_of(run) != first  # Ray reran it on the node left
    assert_each_step_once(run, cfg)


def test_without_ray_backend_ray_says_how_to_install_it_in_one_line(tmp_path):
    """A process where `import ray` fails (a stand-in module that raises ImportError, first
    on the path): the CLI refuses in one line and queues nothing."""
    fake = tmp_path / "noray"
    fake.mkdir()
    (fake / "ray.py").write_text("raise ImportError('No module named ray')\n")
    env = subprocess_env(tmp_path, PYTHONPATH=f"{fake}:{REPO}")
    out = subprocess.run(
        [sys.executable, "-m", "resnet_core", "train", "--background", "--backend", "ray"]
        + ["--runs-dir", str(tmp_path / "runs"), *cli_flags()],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'resnet-lab[ray]'" in lines[0], out.stderr
    assert not (tmp_path / "runs").exists() or not RunStore(tmp_path / "runs").list_ids()


def test_backend_flags_are_checked_before_anything_is_queued(tmp_path, capsys):
    from resnet_core.__main__ import main

    root = tmp_path / "runs"
    assert main(["train", "--backend", "slurm", "--background", "--runs-dir", str(root), *cli_flags()]) == 2
    assert "--backend 'slurm' is not accepted; use one of: local, ray" in capsys.readouterr().err
    assert main(["train", "--backend", "ray", "--runs-dir", str(root), *cli_flags()]) == 2
    assert "--backend ray needs --background" in capsys.readouterr().err
    assert not root.exists() or not RunStore(root).list_ids()


def test_the_runs_page_shows_the_node_each_ray_run_trains_on(tiny_runs):
    """No Ray needed: the node is a field of status.json, written by the trainer in a task.
    A store of local runs only has no node column (the page as before)."""
    from test_app_helpers import no_exception, page

    at = page("runs").run()
    no_exception(at)
    assert "node" not in at.dataframe[0].value.columns
    ids = tiny_runs.list_ids()
    tiny_runs.run(ids[0]).write_status(node="gpu-box-3/1a2b3c4d", backend="ray")
    at = page("runs").run()
    no_exception(at)
    table = at.dataframe[0].value
    nodes = dict(zip(table["id"], table["node"]))
    assert nodes[ids[0]] == "gpu-box-3/1a2b3c4d"
    assert {nodes[i] for i in ids[1:]} == {"this host"}


# --- review fixes ---------------------------------------------------------------------------
@pytest.mark.ray
@pytest.mark.timeout(180)
def test_runs_no_node_can_take_fail_with_the_reason_and_the_runner_exits(cluster, tmp_path, monkeypatch):
    """A run asking more CPUs than any node has would wait in Ray as infeasible forever (and
    the runner with it); a config.json that is not an object must fail its run, not end the
    runner (the Ray driver: every task it launched would die with it)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store = RunStore(tmp_path / "runs")
    big = jobs.submit(
        store, tiny_config(threads=4), start_runner=False, backend="ray", address=cluster.address
    )
    odd = jobs.submit(store, tiny_config(), start_runner=False, backend="ray", address=cluster.address)
    (odd.path / "config.json").write_text("[1, 2]\n")
    drained = {}
    t = threading.Thread(target=lambda: drained.update(n=jobs.run_queue(store, poll=0.2)), daemon=True)
    t.start()
    t.join(150)
    assert not t.is_alive(), big.read_status()
    st = big.read_status()
    assert (
        st["state"] == "failed"
        and "no node of the Ray cluster has 4 CPU(s) (the largest has 1)" in st["message"]
    )
    assert odd.read_status()["state"] == "failed", odd.read_status()
    assert drained["n"] == 1  # the odd run's task ran (and failed); the big one never started


@pytest.mark.ray
def test_a_store_probe_that_fails_is_one_line_naming_the_node(cluster, tmp_path):
    from resnet_core.raybackend import BackendError

    be = launch.get_backend("ray", cluster.address)
    with pytest.raises(BackendError, match=r"the run store could not be checked on Ray node \S+: "):
        be.check_store(tmp_path / "runs", timeout=1e-4)  # no task answers in 0.1 ms
    assert [p.name for p in (tmp_path / "runs").iterdir()] == []  # its probe file removed


@pytest.mark.ray
def test_a_process_connected_to_one_cluster_refuses_another_address(cluster):
    from resnet_core import raybackend

    launch.get_backend("ray", cluster.address)
    with pytest.raises(
        raybackend.BackendError, match=r"connected to the Ray cluster at .*one cluster per process"
    ):
        launch.get_backend("ray", "127.0.0.1:1")
    raybackend.connect(cluster.address)  # the same one: fine


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_a_ray_run_is_queued_with_its_backend_in_its_first_status(cluster, tmp_path):
    """Killed right after the run's first status write (the test's fault point), the submitter
    leaves the run queued for Ray, never queued with no backend (a runner would train it here)."""
    code = (
        "import sys\n"
        "from faultlib import tiny_config\n"
        "from resnet_core import jobs\n"
        "from resnet_core.store import RunStore\n"
        "store, address = RunStore(sys.argv[1]), sys.argv[2]\n"
        "jobs.submit(store, tiny_config(), start_runner=False, backend='ray', address=address)\n"
    )
    env = subprocess_env(tmp_path, RESNET_LAB_FAULT="status_write:2")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests")])
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "runs"), cluster.address],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    store = RunStore(tmp_path / "runs")
    (rid,) = store.list_ids()
    st = store.run(rid).read_status_raw()
    assert st["state"] == "queued" and st.get("backend") == "ray", (st, out.returncode, out.stderr[-2000:])
    assert st["message"] == "waiting to be handed to the Ray cluster"  # not "a free core" here
    assert out.returncode == 0, out.stderr[-2000:]


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def _lab_on_ray(address: str):
    from test_app_helpers import page

    at = page("lab").run()
    at.selectbox(key="lab_preset").set_value("smoke")
    at.number_input(key="lab_width").set_value(4)
    at.radio(key="lab_backend").set_value("ray").run()
    at.text_input(key="lab_ray_address").set_value(address).run()
    at.button(key="lab_launch").click().run()
    return at


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_the_lab_refuses_a_ray_cluster_that_does_not_answer_and_queues_nothing(store):
    pytest.importorskip("ray")
    from test_app_helpers import no_exception

    address = f"127.0.0.1:{_closed_port()}"
    at = _lab_on_ray(address)
    no_exception(at)
    (err,) = [e.value for e in at.error]
    assert err.startswith(f"Not launched: can't connect to the Ray cluster at {address}: nothing answers"), (
        err
    )
    assert not store.list_ids()


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_the_lab_launches_a_run_onto_the_ray_cluster_without_becoming_a_driver(cluster, store):
    """The Lab in the browser's place (AppTest): Train on a Ray cluster, its address, Launch.
    The run is queued for Ray, the queue's detached runner hands it to a worker node, and it
    ends done with every metrics line once; the page's own process never connects to Ray."""
    import ray
    from test_app_helpers import no_exception

    was_connected = ray.is_initialized()
    at = _lab_on_ray(cluster.address)
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    (rid,) = store.list_ids()
    assert any(rid in s.value and cluster.address in s.value for s in at.success)
    assert ray.is_initialized() == was_connected  # the store check ran in a child process
    run = store.run(rid)
    st = run.read_status_raw()
    assert (st["backend"], st["ray_address"]) == ("ray", cluster.address)
    wait_for(lambda: run.read_status()["state"] == "done", 240, every=0.5, what="the Lab's Ray run")
    workers = {n.node_id[:8] for n in cluster.list_all_nodes() if n is not cluster.head_node}
    assert _node_of(run).split("/")[-1] in workers
    rows = [(r["step"], r["split"]) for r in run.read_metrics()]
    assert len(rows) == len(set(rows)) and max(s for s, _ in rows) == 20  # every line once
    wait_for(lambda: not jobs.runner_alive(store), 60, every=0.2, what="the runner to exit")


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_background_analysis_runs_as_a_ray_task_on_a_worker_node(cluster, tiny_runs, monkeypatch):
    """RESNET_LAB_ANALYSIS_BACKEND=ray: the page's background job is a local driver (the
    record's pid while the task waits for a node) that runs it as a Ray task; the job ends
    done with its result cached, computed on a worker node."""
    from analysis import jobs as ajobs

    monkeypatch.setenv("RESNET_LAB_ANALYSIS_BACKEND", "ray")
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    run = tiny_runs.run(tiny_runs.list_ids()[0])
    first = ajobs.start(run, "confusion", n=64)
    assert first["state"] in ("starting", "running", "done"), first
    st = ajobs.wait(run, "confusion", n=64, timeout=240)
    assert st["state"] == "done", st
    assert ajobs.get_or_start(run, "confusion", n=64)["confusion"].sum() == 64
    record = ajobs.run_json(ajobs._job_path(run, st["key"]))
    workers = {n.node_id[:8] for n in cluster.list_all_nodes() if n is not cluster.head_node}
    assert record["node"].split("/")[-1] in workers


@pytest.mark.ray
@pytest.mark.timeout(200)
def test_an_analysis_no_node_can_take_fails_at_once_naming_why(cluster, tiny_runs, monkeypatch):
    from analysis import jobs as ajobs

    monkeypatch.setenv("RESNET_LAB_ANALYSIS_BACKEND", "ray")
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    run = tiny_runs.run(tiny_runs.list_ids()[0])
    ajobs.start(run, "confusion", threads=2, n=64)  # 2 CPUs asked, nodes of 1
    st = ajobs.wait(run, "confusion", n=64, timeout=90)
    assert st["state"] == "failed" and "no node of the Ray cluster has 2 CPU(s)" in st["message"], st


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_an_analysis_waiting_for_a_ray_node_reads_alive_and_cancel_ends_it(cluster, tiny_runs, monkeypatch):
    """Both nodes busy: the job waits in Ray's queue with no record of its own. It reads
    'starting' by its driver's beat even where its record alone can't vouch for it (read
    from another host), and Cancel ends it cancelled through the driver."""

    from analysis import jobs as ajobs
    from resnet_core import raybackend
    from resnet_core.store import atomic_write_json

    ray = raybackend.connect(cluster.address)
    hold = ray.remote(num_cpus=1)(_sleep)
    holders = [hold.remote(120) for _ in range(2)]
    try:
        wait_for(lambda: ray.available_resources().get("CPU", 0) == 0, 60, every=0.2, what="busy nodes")
        monkeypatch.setenv("RESNET_LAB_ANALYSIS_BACKEND", "ray")
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)
        run = tiny_runs.run(tiny_runs.list_ids()[0])
        key = ajobs.start(run, "confusion", n=64)["key"]
        path = ajobs._job_path(run, key)
        beat = Path(raybackend.driver_beat_path(path))
        record = wait_for(lambda: (ajobs.run_json(path) or {}).get("driver") and ajobs.run_json(path), 30)
        wait_for(beat.exists, 60, every=0.2, what="the driver's beat")
        atomic_write_json(path, dict(record, host="another-host"))  # its pid means nothing there
        st = ajobs.status(run, "confusion", n=64)
        assert st["state"] == "starting" and "waiting for a Ray node with 1 free CPU(s)" in st["message"], st
        ajobs.cancel(run, "confusion", n=64)
        st = ajobs.wait(run, "confusion", n=64, timeout=60)
        assert st["state"] == "cancelled", st
        wait_for(lambda: not beat.exists(), 30, every=0.2, what="the driver to exit")
    finally:
        for h in holders:
            ray.cancel(h, force=True)
