"""Shared fixtures: a run store in a temporary folder, and a few real tiny runs.

- ``store``: a RunStore under tmp_path, with RESNET_LAB_RUNS_DIR pointing at it (so
  ``RunStore()`` in the code under test reads the same folder).
- ``tiny_runs``: the ``store`` holding real runs trained in this process (digits, 20
  iterations, width 4): plain8, plain14, resnet8, resnet14. They are trained once per test
  session and copied into each test's folder, so a test may change or delete them.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TINY_MODELS = ("cifar_plain8", "cifar_plain14", "cifar_resnet8", "cifar_resnet14")


def tiny_config(model: str = "cifar_resnet8", **kw):
    from resnet_core import TrainConfig

    base = dict(
        model=model,
        dataset="digits",
        iterations=20,
        batch_size=32,
        width=4,
        log_every=5,
        eval_every=10,
        recorders=[],
        train_eval_size=200,
    )
    base.update(kw)
    return TrainConfig(**base)


def train_tiny(store, model: str = "cifar_resnet8", record: bool = True, **kw):
    """Train one tiny run in this process (1 thread) and return its Run. ``record`` attaches
    the real analysis recorder: a broken recorder fails the tests that use these runs."""
    from analysis.recorders import LayerStatsRecorder
    from resnet_core import train

    cfg = tiny_config(model, **kw)
    run = store.create(cfg, state="running")
    train(cfg, run=run, threads=1, callbacks=[LayerStatsRecorder()] if record else [])
    return run


@pytest.fixture
def store(tmp_path, monkeypatch):
    from resnet_core import RunStore

    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("RESNET_LAB_RUNS_DIR", str(root))
    return RunStore(root)


@pytest.fixture(scope="session")
def _tiny_runs_master(tmp_path_factory):
    from resnet_core import RunStore

    root = tmp_path_factory.mktemp("tiny_runs_master")
    st = RunStore(root)
    for i, m in enumerate(TINY_MODELS):
        train_tiny(st, m, seed=i)
    return root


@pytest.fixture
def tiny_runs(store, _tiny_runs_master):
    """``store`` holding four real finished tiny runs (plain8, plain14, resnet8, resnet14)."""
    for p in Path(_tiny_runs_master).iterdir():
        if p.is_dir():
            shutil.copytree(p, store.root / p.name)
    return store


@pytest.fixture(autouse=True)
def _no_bundled_reference(tmp_path, monkeypatch):
    """Tests see no bundled reference runs unless they ask for them (``reference_root``), so
    what a page shows for an empty store does not depend on what the repository ships."""
    monkeypatch.setenv("RESNET_LAB_REFERENCE_DIR", str(tmp_path / "no-reference"))


@pytest.fixture
def reference_root(tmp_path, monkeypatch, _tiny_runs_master):
    """A reference folder holding one set, "tiny", exported from the four real tiny runs, with
    RESNET_LAB_REFERENCE_DIR pointing at it. The user's store (``store``) stays as it was."""
    from resnet_core import RunStore
    from resnet_core.reference import export

    root = tmp_path / "reference"
    master = RunStore(_tiny_runs_master)
    export(
        master,
        master.list_ids(),
        root / "tiny",
        title="Tiny digits runs",
        description="Four 20-step runs on digits.",
        command="pytest",
    )
    monkeypatch.setenv("RESNET_LAB_REFERENCE_DIR", str(root))
    return root
