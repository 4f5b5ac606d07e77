"""`python -m resnet_core export RUN_ID... --tensorboard DIR`, read back with TensorBoard's own
reader (event_accumulator) and compared with the run's records read here as plain JSON lines."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")
from conftest import train_tiny
from tensorboard.backend.event_processing import event_accumulator as ea

from resnet_core import RunStore, reference
from resnet_core.__main__ import main

REPO = Path(__file__).resolve().parents[1]
MARK = ".resnet-lab-export.json"


@pytest.fixture(scope="module")
def run_store(tmp_path_factory):
    """One real tiny run (digits, 20 steps, layer statistics recorded)."""
    store = RunStore(tmp_path_factory.mktemp("runs"))
    run = train_tiny(store, "cifar_resnet8")
    assert run.read_status()["state"] == "done"
    return store, run.id


def _ref_id():
    """The first run of the repository's bundled reference sets (real thinned records)."""
    for s in reference.list_sets(REPO / "reference"):
        if not s.error and s.run_ids():
            return f"ref:{s.name}/{s.run_ids()[0]}", s.path / s.run_ids()[0]
    pytest.skip("no bundled reference set to export")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _last_per_key(rows, key):
    out = {}
    for r in rows:
        out[tuple(r[k] for k in key)] = r
    return out


def _read(run_dir: Path):
    files = list(run_dir.glob("events.out.tfevents.*"))
    assert len(files) == 1, files  # one event file: a re-export replaces, never appends
    acc = ea.EventAccumulator(str(run_dir), size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0})
    acc.Reload()
    return acc


def _check_run(acc, folder: Path):
    """Every loss, error and lr, every per-layer statistic, and the across-layer histograms."""
    tags = set(acc.Tags()["scalars"])
    metrics = _last_per_key(_jsonl(folder / "metrics.jsonl"), ("step", "split"))
    expect: dict[str, dict[int, float]] = {}
    for (step, split), r in metrics.items():
        for k in ("loss", "error"):
            if r.get(k) is not None:
                expect.setdefault(f"{k}/{split}", {})[step] = r[k]
        if split == "train":
            expect.setdefault("lr", {})[step] = r["lr"]
    assert {"loss/train", "error/train", "error/test", "lr"} <= set(expect)
    layers = _last_per_key(_jsonl(folder / "layers.jsonl"), ("step", "type", "layer"))
    across: dict[tuple[int, str], list[float]] = {}
    for (step, kind, layer), r in layers.items():
        kind = "response" if kind == "bn" else kind  # records older than the rename say "bn"
        for stat, v in r.items():
            if stat in ("step", "type", "layer", "order") or not isinstance(v, (int, float)):
                continue
            expect.setdefault(f"{kind}.{stat}/{r['order']:03d}_{layer}", {})[step] = v
            across.setdefault((step, f"{kind}.{stat}"), []).append(v)
    assert any(t.startswith("response.std/") for t in expect)  # the Fig. 7 measure is there
    for tag, by_step in expect.items():
        assert tag in tags, tag
        got = {e.step: e.value for e in acc.Scalars(tag)}
        assert got.keys() == by_step.keys(), tag
        for step, v in by_step.items():
            assert got[step] == pytest.approx(v, rel=1e-6, abs=1e-30), (tag, step)
    for (step, name), vals in across.items():
        h = {e.step: e.histogram_value for e in acc.Histograms(f"layers/{name}")}[step]
        assert h.num == len(vals), name
        assert h.min == pytest.approx(min(vals)) and h.max == pytest.approx(max(vals)), name
        assert h.sum == pytest.approx(math.fsum(vals), rel=1e-9, abs=1e-12), name
    cfg = json.loads((folder / "config.json").read_text())
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads(text.replace("\n    ", "\n"))["model"] == cfg["model"]
    return len(expect)


def test_export_a_run_and_a_reference_run_reads_back(run_store, tmp_path):
    store, rid = run_store
    ref_id, ref_folder = _ref_id()
    dest = tmp_path / "tb"
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        RESNET_LAB_REFERENCE_DIR=str(REPO / "reference"),
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "resnet_core",
            "export",
            rid,
            ref_id,
            "--tensorboard",
            str(dest),
            "--runs-dir",
            str(store.root),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert f"tensorboard --logdir {dest}" in r.stderr
    set_name, ref_rid = ref_id[len("ref:") :].split("/")
    n_own = _check_run(_read(dest / rid), store.run(rid).path)
    n_ref = _check_run(_read(dest / "ref" / set_name / ref_rid), ref_folder)
    assert n_own > 20 and n_ref > 20
    mark = json.loads((dest / MARK).read_text())
    assert set(mark["runs"]) == {rid, f"ref/{set_name}/{ref_rid}"}
    assert not list(dest.glob(".export-tmp-*"))


def test_re_export_replaces_and_foreign_folders_are_refused(run_store, tmp_path, capsys):
    store, rid = run_store
    args = ["export", rid, "--runs-dir", str(store.root), "--tensorboard"]
    dest = tmp_path / "tb"
    assert main(args + [str(dest)]) == 0
    assert main(args + [str(dest)]) == 0  # an earlier export: the run's folder is replaced
    acc = _read(dest / rid)  # still one event file, each step once
    steps = [e.step for e in acc.Scalars("error/train")]
    assert len(steps) == len(set(steps)) > 0

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    capsys.readouterr()
    assert main(args + [str(foreign)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not empty and is not an earlier export" in err
    assert sorted(p.name for p in foreign.iterdir()) == ["keep.txt"]
    assert main(args + [str(foreign), "--force"]) == 0  # asked: written beside, nothing removed
    assert (foreign / "keep.txt").read_text() == "mine" and (foreign / rid).is_dir()


def test_a_link_in_an_earlier_export_is_not_followed(run_store, tmp_path, capsys):
    store, rid = run_store
    dest = tmp_path / "tb"
    args = ["export", rid, "--runs-dir", str(store.root), "--tensorboard", str(dest)]
    assert main(args) == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("x")
    shutil.rmtree(dest / rid)
    (dest / rid).symlink_to(outside, target_is_directory=True)
    capsys.readouterr()
    assert main(args) == 2
    assert "is a link or leads outside" in capsys.readouterr().err
    assert (outside / "precious.txt").read_text() == "x"
    assert not list(dest.glob(".export-tmp-*"))  # the half-made copy was cleaned up


@pytest.mark.parametrize(
    "bad, text",
    [
        ("no-such-run", "no run 'no-such-run'"),
        ("ref:../etc/x", "reference set name '..' is not accepted"),
        ("ref:no-such-set/abc", "no reference set 'no-such-set'"),
        ("ref:lesson-cpu/../../x", "run id '../../x' is not accepted"),
    ],
)
def test_bad_run_ids_get_one_line_and_write_nothing(run_store, tmp_path, capsys, bad, text):
    store, _ = run_store
    dest = tmp_path / "tb"
    assert main(["export", bad, "--runs-dir", str(store.root), "--tensorboard", str(dest)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and text in err, err
    assert not dest.exists()


def test_missing_tensorboard_is_named(run_store, tmp_path, capsys, monkeypatch):
    store, rid = run_store
    # as on a machine without the package: importing it fails
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    dest = tmp_path / "tb"
    assert main(["export", rid, "--runs-dir", str(store.root), "--tensorboard", str(dest)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "needs the tensorboard package" in err and "[tensorboard]" in err
    assert not dest.exists()


def _events_per_step(acc, tag):
    steps = [e.step for e in acc.Scalars(tag)]
    assert len(steps) == len(set(steps)), (tag, steps)  # each step once
    return steps


def test_live_events_match_the_records_and_a_restart_does_not_repeat_them(tmp_path):
    from conftest import tiny_config

    from analysis.recorders import LayerStatsRecorder
    from resnet_core import train
    from resnet_core.export import LiveTensorBoard

    store = RunStore(tmp_path / "runs")
    cfg = tiny_config("cifar_resnet8", iterations=20, checkpoint_every=10)
    run = store.create(cfg, state="running")
    live = LiveTensorBoard()
    live.every_s = 0.0  # look at the files after every step: the most partial reads
    train(cfg, run=run, threads=1, callbacks=[LayerStatsRecorder(), live])
    assert run.read_status()["state"] == "done"
    acc = ea.EventAccumulator(
        str(run.path / "tensorboard"), size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0}
    )
    acc.Reload()
    _check_run(acc, run.path)
    before = _events_per_step(acc, "error/train")

    # the trainer starts again on the same run (a resume): the events are written anew from
    # the records, and TensorBoard drops the first pass's (purge at step 0), so none repeat
    again = LiveTensorBoard()
    train(cfg, run=run, threads=1, callbacks=[again])
    acc = ea.EventAccumulator(
        str(run.path / "tensorboard"), size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0}
    )
    acc.Reload()
    assert len(list((run.path / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert _events_per_step(acc, "error/train") == before
    _check_run(acc, run.path)
