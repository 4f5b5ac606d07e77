"""The command line as a user types it: real subprocesses, a store in a temporary folder."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resnet_core import RunStore

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--model",
    "cifar_resnet8",
    "--width",
    "4",
    "--batch-size",
    "32",
    "--log-every",
    "5",
    "--recorders",
    "",
    "--threads",
    "1",
]


def cli(*args, runs_dir=None, timeout=180, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("RESNET_LAB_RUNS_DIR", None)
    if env_extra:
        env.update(env_extra)
    cmd = [sys.executable, "-m", "resnet_core", *args]
    if runs_dir is not None:
        cmd += ["--runs-dir", str(runs_dir)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(200) % 4
    x = (rng.integers(0, 60, (200, 8, 8, 3)) + (y * 50)[:, None, None, None]).astype(np.uint8)
    p = tmp_path / "four.npz"
    np.savez(p, x_train=x, y_train=y, x_test=x[:40], y_test=y[:40])
    return p


def test_train_prints_run_id_first_then_progress(tmp_path):
    r = cli("train", "--dataset", "digits", "--epochs", "1", *TINY, runs_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip().splitlines()[0]
    assert (tmp_path / run_id / "config.json").exists()
    assert "44/44" in r.stderr and "img/s" in r.stderr  # 1,438 // 32 steps, progress shown
    assert "done" in r.stderr and "test error" in r.stderr
    st = RunStore(tmp_path).run(run_id).read_status()
    assert st["state"] == "done" and st["step"] == st["total"] == 44


def test_train_on_npz_then_rerun_its_config_then_list(tmp_path, npz):
    r = cli("train", "--dataset", str(npz), "--iterations", "12", *TINY, runs_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    first = r.stdout.split()[0]
    cfg_path = tmp_path / first / "config.json"
    assert json.loads(cfg_path.read_text())["dataset"] == str(npz)
    r2 = cli("train", "--config", str(cfg_path), "--quiet", runs_dir=tmp_path)
    assert r2.returncode == 0, r2.stderr
    second = r2.stdout.split()[0]
    assert second != first
    a = json.loads(cfg_path.read_text())
    b = json.loads((tmp_path / second / "config.json").read_text())
    assert a == b
    ls = cli("runs", runs_dir=tmp_path)
    header, *lines = ls.stdout.strip().splitlines()
    assert header.split()[:5] == ["id", "state", "model", "dataset", "progress"]
    assert len(lines) == 2
    for line, rid in zip(lines, sorted([first, second])):
        assert line.split()[:5] == [rid, "done", "cifar_resnet8", "four.npz", "12/12"]


def test_resume_an_interrupted_run(tmp_path):
    r = cli("train", "--dataset", "digits", "--iterations", "10", *TINY, runs_dir=tmp_path)
    rid = r.stdout.split()[0]
    run = RunStore(tmp_path).run(rid)
    # pretend it was killed: a running status whose process is gone
    run.write_status(state="running", pid=2**22 + 7, pid_start="1")
    assert run.read_status()["state"] == "interrupted"
    assert "interrupted" in cli("runs", runs_dir=tmp_path).stdout
    res = cli("resume", rid, "--quiet", runs_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    assert run.read_status()["state"] == "done"
    again = cli("resume", rid, runs_dir=tmp_path)
    assert again.returncode == 2 and "resume accepts interrupted, failed, cancelled" in again.stderr


def test_sweep_quick_runs_four_models_through_the_queue(tmp_path, npz):
    r = cli(
        "sweep",
        "quick",
        "--dataset",
        str(npz),
        "--iterations",
        "6",
        "--eval-every",
        "6",
        "--width",
        "4",
        "--recorders",
        "",
        runs_dir=tmp_path,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    ids = r.stdout.split()
    assert len(ids) == 4
    store = RunStore(tmp_path)
    models = [store.run(i).read_config().model for i in ids]
    assert models == ["plain56", "resnet56", "plain20", "resnet20"]  # deepest first
    for i in ids:
        run = store.run(i)
        assert run.read_status()["state"] == "done"
        assert run.read_config().preset == "quick"
        assert run.read_json("env.json")["threads"] == 1  # 2 cores, 4 jobs: one thread each
    assert "train err (eval)" in r.stderr
    # progress lines name whole states ("plain56:running 40%"), never cut to "runn" or "queu"
    states = re.findall(r"\b(?:plain|resnet)\d+:(\S+) ", r.stderr)
    assert states and set(states) <= {"queued", "running", "done"}, states


def test_models_lists_names_with_parameter_counts():
    r = cli("models")
    assert r.returncode == 0
    assert "resnet20" in r.stdout and "269,722" in r.stdout and "11,689,512" in r.stdout
    assert "cifar_resnet{D}" in r.stdout
    assert "--activation relu|tanh|tat|crelu" in r.stdout  # the variants (issue 15)


BAD = [
    # (args, text the one-line error must contain)
    (["train", "--model", "resnet21", "--dataset", "digits", "--epochs", "1"], "6n+2"),
    (["train", "--model", "cifar_resnet21", "--dataset", "digits", "--epochs", "1"], "6n+2"),
    (["train", "--dataset", "digits", "--epochs", "1", "--lr", "-1"], "--lr"),
    (["train", "--dataset", "digits", "--epochs", "1", "--lr", "nan"], "finite"),
    (["train", "--dataset", "digits", "--epochs", "1", "--batch-size", "0"], "--batch-size"),
    (["train", "--dataset", "digits", "--epochs", "1", "--batch-size", "abc"], "invalid int"),
    (["train", "--dataset", "imagenet", "--epochs", "1"], "accepted: digits"),
    (["train", "--dataset", "digits"], "epochs or iterations"),
    (["train", "--dataset", "digits", "--epochs", "1", "--shortcut", "D"], "--shortcut"),
    (["train", "--config", "/no/such/config.json"], "does not exist"),
    (["train", "--preset", "fast"], "invalid choice"),
    (
        ["train", "--dataset", "digits", "--epochs", "1", "--batch-size", "5000", "--recorders", ""],
        "larger than the 1438",
    ),
    (["sweep", "fig7"], "accepted: quick, lesson, laptop, fig6"),
    (["sweep", "quick", "--model", "resnet20"], "can't be used with a sweep"),
    (["sweep", "quick", "--dataset", "nope"], "accepted: digits"),
    (["sweep", "quick", "--lr", "0"], "--lr"),
    (["sweep", "quick", "--epochs", "-2"], "--epochs"),
    (["resume", "../etc"], "not accepted"),
    (["resume", "no-such-run"], "no run 'no-such-run'"),
    (["resume", "a/b"], "not accepted"),
    (["resume", "x", "--threads", "two"], "invalid int"),
    (["resume"], "required"),
    (["cancel", "../../x"], "not accepted"),
    (["cancel", "missing"], "no run"),
    (["runs", "--bogus"], "unrecognized"),
    (["models", "--depth", "20"], "unrecognized"),
    (["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize("args,text", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_gets_one_clear_line(tmp_path, capsys, monkeypatch, args, text):
    # in-process through the same main() as `python -m resnet_core` (no torch start-up per case)
    from resnet_core.__main__ import main

    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    argv = list(args) + (["--runs-dir", str(store)] if args[0] not in ("models", "frobnicate") else [])
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert text in err, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    # a rejected command writes no run folder, here or anywhere else under tmp_path
    assert not store.exists() or not any(store.iterdir())
    assert [p.name for p in tmp_path.iterdir()] in ([], ["store"])


def test_bad_config_file_names_the_field(tmp_path):  # through a real process, once
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"model": "resnet20", "iterations": 5, "batch_sise": 8}))
    r = cli("train", "--config", str(p), runs_dir=tmp_path / "store")
    assert r.returncode == 2 and "batch_sise" in r.stderr and "accepted fields" in r.stderr
    p.write_text("{not json")
    r = cli("train", "--config", str(p), runs_dir=tmp_path / "store")
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    p.write_text(json.dumps({"model": "resnet20", "iterations": "5"}))
    r = cli("train", "--config", str(p), runs_dir=tmp_path / "store")
    assert r.returncode == 2 and "iterations='5'" in r.stderr
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())
