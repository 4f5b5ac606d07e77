"""Failures are named, never swallowed: a recorder that fails to load, an unreadable cache
file, a missing analysis function; and options do what they say (no decay on BN and biases)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from test_app_helpers import figures, no_exception, page, texts

from resnet_core import train

torch.set_num_threads(1)


def test_a_run_whose_recorder_fails_to_load_says_so_in_its_status_and_pages(store):
    cfg = tiny_config(
        "cifar_resnet8", iterations=6, eval_every=6, recorders=["analysis.no_such_recorder:Recorder"]
    )
    run = store.create(cfg, state="running")
    with pytest.warns(UserWarning, match="no_such_recorder"):
        status = train(cfg, run=run, threads=1)  # the recorders named by the config
    assert status["state"] == "done"  # the run itself goes on
    (err,) = status["recorder_errors"]
    assert "analysis.no_such_recorder:Recorder" in err and "ModuleNotFoundError" in err
    assert "recorder" in status["message"] and "no_such_recorder" in status["message"]
    assert run.read_layers() == []
    for name, _title in (("responses", "Layer responses"), ("gradients", "Gradient flow")):
        at = page(name).run()
        no_exception(at)
        warned = texts(at, "warning")
        assert "no_such_recorder" in warned and run.id[-6:] in warned, (name, warned)


def test_an_unreadable_cache_file_is_named_and_can_be_discarded(tiny_runs):
    from analysis import jobs
    from analysis.cache import CacheError

    rid = [
        i for i in tiny_runs.list_ids() if tiny_runs.run(i).read_config_dict()["model"] == "cifar_resnet14"
    ][0]
    run = tiny_runs.run(rid)
    good = jobs.get_or_start(run, "fig7")["table"]
    f = run.cache_dir / f"{jobs.key_of(run, 'fig7')}.npz"
    f.write_bytes(f.read_bytes()[:100])  # damage on disk (writes are atomic, so not a torn write)
    with pytest.raises(CacheError, match="unreadable") as e:
        jobs.get_or_start(run, "fig7")
    assert str(f) in str(e.value)
    # the page says so, and its button discards the file and computes the result again
    at = page("responses").run()
    at.selectbox(key="resp_exact_run").set_value(rid).run()
    at.toggle(key="resp_exact").set_value(True).run()
    no_exception(at)
    assert "unreadable" in texts(at, "error") and str(f) in texts(at, "error")
    n_figures = len(figures(at))
    [b for b in at.button if b.label == "Discard it and compute again"][0].click().run()
    no_exception(at)
    assert not at.error, texts(at, "error")
    assert len(figures(at)) == n_figures + 1  # the exact Fig. 7 is drawn again
    again = jobs.get_or_start(run, "fig7")["table"]
    assert again["std"].tolist() == pytest.approx(good["std"].tolist())


def test_a_missing_analysis_function_is_named_on_the_page():
    from streamlit.testing.v1 import AppTest

    def script(root):
        import sys

        sys.path.insert(0, root)
        from app import ui

        assert ui.analysis_function("no_such_module", "f", "Thing one") is None
        assert ui.analysis_function("recorders", "no_such_function", "Thing two") is None
        assert ui.analysis_function("recorders", "first_last_ratio", "Thing three") is not None

    from test_app_helpers import ROOT

    at = AppTest.from_function(script, args=(str(ROOT),), default_timeout=90)
    at.run()
    no_exception(at)
    w = texts(at, "warning")
    assert "Thing one" in w and "ModuleNotFoundError" in w and "analysis.no_such_module" in w
    assert "Thing two" in w and "no `no_such_function`" in w
    assert "Thing three" not in w


def test_no_decay_on_bn_and_biases_is_a_real_option(store):
    """One SGD step from the same weights on the same batch: with decay_bn_bias off, BN's
    gamma (1 at init) moves by lr * weight_decay less than with it on; conv weights do not
    differ (the paper's default decays everything)."""
    from resnet_core.train import load_model

    kw = dict(
        iterations=1,
        eval_every=1,
        lr=0.1,
        weight_decay=0.01,
        momentum=0.0,
        schedule="constant",
        precision="fp32",
        channels_last=False,
    )
    models = {}
    for flag in (True, False):
        cfg = tiny_config("cifar_resnet8", decay_bn_bias=flag, **kw)
        run = store.create(cfg, state="running")
        train(cfg, run=run, threads=1, callbacks=[])
        models[flag] = load_model(run).state_dict()
    on, off = models[True], models[False]
    assert torch.equal(on["layer1.0.conv1.weight"], off["layer1.0.conv1.weight"])
    diff = (off["layer1.0.bn1.weight"] - on["layer1.0.bn1.weight"]).double()
    assert diff.tolist() == pytest.approx([0.1 * 0.01 * 1.0] * len(diff), rel=1e-4)
    assert torch.equal(on["fc.weight"], off["fc.weight"])
