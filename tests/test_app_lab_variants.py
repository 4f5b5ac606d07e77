"""AppTest: the Lab's run panel launches the variants of issue 15 and refuses bad
combinations; the `rescue` sweep queues its runs with their own variants."""

from __future__ import annotations

import pytest
from test_app_helpers import no_exception, page, texts

from resnet_core import jobs
from resnet_core.config import sweep_runs


@pytest.fixture
def no_runner(monkeypatch):
    """Queue runs without starting trainer processes (the tests check what is queued)."""
    monkeypatch.setattr(jobs, "ensure_runner", lambda store: None)


def test_lab_launches_a_looks_linear_crelu_plain_net(store, no_runner):
    at = page("lab").run()
    at.radio(key="lab_kind").set_value("plain").run()
    at.number_input(key="lab_depth").set_value(14)
    at.selectbox(key="lab_preset").set_value("smoke")
    at.selectbox(key="lab_activation").set_value("crelu")
    at.selectbox(key="lab_init").set_value("looks_linear")
    at.run()
    at.button(key="lab_launch").click().run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    (rid,) = store.list_ids()
    cfg = store.run(rid).read_config()
    assert (cfg.model, cfg.activation, cfg.init, cfg.norm, cfg.branch_scalar) == (
        "cifar_plain14",
        "crelu",
        "looks_linear",
        "batch",
        "none",
    )


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda at: at.selectbox(key="lab_activation").set_value("crelu"), "is for CIFAR plain nets"),
        (lambda at: at.selectbox(key="lab_init").set_value("fixup"), "norm='none'"),
    ],
)
def test_lab_refuses_a_variant_the_model_does_not_take(store, no_runner, setup, message):
    at = page("lab").run()
    at.radio(key="lab_kind").set_value("resnet").run()
    setup(at)
    at.run()
    at.button(key="lab_launch").click().run()
    no_exception(at)
    errs = texts(at, "error")
    assert "Not launched" in errs and message in errs
    assert store.list_ids() == []


def test_lab_rescue_sweep_keeps_each_runs_variant(store, no_runner):
    at = page("lab").run()
    at.selectbox(key="lab_activation").set_value("tanh")  # the run panel's: not for rescue
    at.selectbox(key="lab_sweep").set_value("rescue")
    at.run()
    at.button(key="lab_launch_sweep").click().run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    got = sorted(
        (c.model, c.activation, c.init, c.norm, c.branch_scalar, c.zero_init_residual, c.name)
        for c in (store.run(i).read_config() for i in store.list_ids())
    )
    want = sorted(
        (
            r["model"],
            r.get("activation", "relu"),
            r.get("init", "he"),
            r.get("norm", "batch"),
            r.get("branch_scalar", "none"),
            r.get("zero_init_residual", False),
            r["name"],
        )
        for r in sweep_runs("rescue")
    )
    assert got == want and len(got) == 14
