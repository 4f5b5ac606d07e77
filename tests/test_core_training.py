"""Training: loss goes down, metrics and checkpoints land in the store, divergence, resume."""

import math

import pytest
import torch

from resnet_core import RunStore, TrainConfig, train
from resnet_core.config import ConfigError, apply_preset
from resnet_core.train import Callback, load_checkpoint, load_model, lr_at

torch.set_num_threads(1)


def tiny(**kw):
    base = dict(
        model="cifar_resnet8",
        width=8,
        dataset="digits",
        batch_size=32,
        iterations=40,
        log_every=5,
        eval_every=20,
        recorders=[],
        threads=1,
        train_eval_size=200,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_a_few_hundred_steps_lower_the_loss_on_digits(tmp_path):
    cfg = tiny(iterations=240, batch_size=64, lr=0.05, eval_every=120, checkpoint_every=120)
    store = RunStore(tmp_path)
    run = store.create(cfg, state="running")
    st = train(cfg, run=run)
    assert st["state"] == "done" and st["step"] == 240
    rows = run.read_metrics()
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == list(range(5, 241, 5))  # each log step once
    first = sum(r["loss"] for r in train_rows[:3]) / 3
    last = sum(r["loss"] for r in train_rows[-3:]) / 3
    assert last < 0.5 * first
    test = [r for r in rows if r["split"] == "test"]
    assert [r["step"] for r in test] == [120, 240]
    assert test[-1]["error"] < 0.5  # far below chance (90%) after a few hundred steps
    assert all(0 <= r["error"] <= 1 for r in rows)
    assert {"last", "best"} <= set(run.list_checkpoints())
    env = run.read_json("env.json")
    assert env["torch"] == torch.__version__ and env["threads"] == 1 and env["device"] == "cpu"


def test_config_is_saved_complete_and_reloads(tmp_path):
    cfg = tiny(iterations=5, checkpoint_steps=[3])
    run = RunStore(tmp_path).create(cfg, state="running")
    train(cfg, run=run)
    again = run.read_config()
    assert again == cfg
    assert "step-000003" in run.list_checkpoints()
    ck = load_checkpoint(run.checkpoint_path("step-000003"))
    assert ck["step"] == 3
    m = load_model(run, "last")
    assert not m.training and m(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_nan_loss_ends_as_diverged_at_its_step(tmp_path):
    cfg = tiny(lr=1e6, iterations=60, log_every=1, norm="none", warmup="none")
    run = RunStore(tmp_path).create(cfg, state="running")
    st = train(cfg, run=run)
    assert st["state"] == "diverged"
    nan_rows = [r for r in run.read_metrics() if r["split"] == "train" and r["loss"] is None]
    assert len(nan_rows) == 1
    assert f"at step {nan_rows[0]['step']}" in st["message"]
    assert nan_rows[0]["step"] < 60


class StopAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, ctx):
        if ctx.step == self.step:
            raise KeyboardInterrupt


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    cfg = tiny(iterations=30, checkpoint_every=10, eval_every=10)
    store = RunStore(tmp_path)
    a = store.create(cfg, state="running")
    train(cfg, run=a)
    b = store.create(cfg, state="running")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run=b, callbacks=[StopAt(17)])  # past the checkpoint at 10, mid-interval
    assert b.read_status()["state"] == "cancelled"
    assert max(r["step"] for r in b.read_metrics()) == 15  # logged past the checkpoint
    st = train(cfg, run=b)  # resumes from step 10, drops lines past it, redoes 11..30
    assert st["state"] == "done"
    wa = load_checkpoint(a.checkpoint_path("last"))["model"]
    wb = load_checkpoint(b.checkpoint_path("last"))["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    steps = [(r["step"], r["split"]) for r in b.read_metrics()]
    assert len(steps) == len(set(steps))
    assert steps == [(r["step"], r["split"]) for r in a.read_metrics()]


def test_paper_schedule_and_warmup():
    cfg = apply_preset("paper", {"model": "resnet110"})
    assert (cfg.iterations, cfg.batch_size, cfg.lr, cfg.weight_decay) == (64000, 128, 0.1, 1e-4)
    assert lr_at(cfg, 0, 64000, warming=True) == pytest.approx(0.01)
    assert lr_at(cfg, 31999, 64000, False) == pytest.approx(0.1)
    assert lr_at(cfg, 32000, 64000, False) == pytest.approx(0.01)
    assert lr_at(cfg, 48000, 64000, False) == pytest.approx(0.001)
    cos = TrainConfig(schedule="cosine", iterations=100)
    assert lr_at(cos, 50, 100, False) == pytest.approx(0.05)


def test_preset_flags_override():
    cfg = apply_preset("quick", {"model": "plain56", "dataset": "x.npz", "epochs": 2})
    assert cfg.epochs == 2 and cfg.subset == 2500 and cfg.preset == "quick"
    it = apply_preset("quick", {"iterations": 7})
    assert it.iterations == 7 and it.epochs is None


# Every preset's fields as written in resnet_core/config.py before the shared SGD recipe was
# factored out of them: a refactor of PRESETS must keep each one to the letter.
# fmt: off
PRESET_FIELDS = {  # a table: formatted, it would take one line per field
    "paper": dict(
        iterations=64000, epochs=None, batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4,
        schedule="steps", warmup="auto", augment="auto", subset=None, image_size=None, val_split=0,
        test_size=None,
    ),
    "quick": dict(
        epochs=6, iterations=None, batch_size=64, lr=0.1, momentum=0.9, weight_decay=1e-4,
        schedule="onecycle", warmup="none", subset=2500, image_size=12, val_split=0,
        checkpoint_every=None, eval_every=234, train_eval_size=1000, test_size=2000,
    ),
    "lesson": dict(
        epochs=30, iterations=None, batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4,
        schedule="steps", warmup="paper", subset=10000, image_size=16, val_split=0,
        eval_every=None, train_eval_size=1000, test_size=2000,
    ),
    "laptop": dict(
        width=8, epochs=None, iterations=6000, batch_size=128, lr=0.1, momentum=0.9,
        weight_decay=1e-4, schedule="steps", warmup="paper", subset=50000, image_size=16,
        val_split=0, eval_every=300, train_eval_size=5000, test_size=2000,
    ),
    "smoke": dict(
        iterations=20, epochs=None, batch_size=32, subset=512, image_size=16, log_every=5,
        eval_every=10,
    ),
}
# fmt: on

DIGITS_FIELDS = {
    "quick": dict(epochs=12, subset=None, image_size=None, batch_size=64, val_split=0, eval_every=264),
    "lesson": dict(image_size=None),
}


@pytest.mark.parametrize("name", sorted(PRESET_FIELDS))
def test_every_preset_resolves_to_its_written_values(name):
    """The preset holds exactly these fields, and the config it resolves to is the defaults
    with them (and its name) on top, every other field untouched."""
    from dataclasses import asdict

    from resnet_core import PRESETS

    assert PRESETS[name] == PRESET_FIELDS[name]
    want = {**asdict(TrainConfig()), **PRESET_FIELDS[name], "preset": name, "dataset": "c.npz"}
    assert asdict(apply_preset(name, {"dataset": "c.npz"})) == want
    # on digits (the default dataset) some presets change a few fields of their own
    digits = {**want, **DIGITS_FIELDS.get(name, {}), "dataset": "digits"}
    assert asdict(apply_preset(name, {"dataset": "digits"})) == digits


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("lr", -0.1, "lr=-0.1"),
        ("lr", math.nan, "lr=nan"),
        ("batch_size", 0, "batch_size=0"),
        ("model", "resnet21", "6n\\+2"),
        ("momentum", 1.5, "momentum"),
        ("schedule", "linear", "accepted"),
        ("epochs", -1, "epochs"),
        ("precision", "fp8", "precision"),
        ("subset", 0, "subset"),
    ],
)
def test_bad_config_values_name_the_field(field, value, match):
    with pytest.raises(ConfigError, match=match):
        tiny(**{field: value}).validate()


def test_config_file_with_unknown_or_missing_budget():
    with pytest.raises(ConfigError, match="unknown field.*'lrate'"):
        TrainConfig.from_dict({"lrate": 0.1, "iterations": 5})
    with pytest.raises(ConfigError, match="epochs or iterations"):
        TrainConfig.from_dict({"model": "resnet20"})


def test_batch_larger_than_dataset(tmp_path):
    cfg = tiny(batch_size=5000)
    run = RunStore(tmp_path).create(cfg, state="running")
    with pytest.raises(ValueError, match="batch_size=5000 is larger than the 1438"):
        train(cfg, run=run)
    assert run.read_status()["state"] == "failed"
