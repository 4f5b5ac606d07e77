"""AppTest: Lab, Degradation and Runs pages on a store of real tiny runs."""

from __future__ import annotations

import json

import pytest
from test_app_helpers import arr, figures, no_exception, page, texts, traces

from resnet_core import jobs

PATH_CHOICE = "a path (.npz or ImageFolder)…"


@pytest.fixture
def no_runner(monkeypatch):
    """Queue runs without starting trainer processes (the tests check what is queued)."""
    monkeypatch.setattr(jobs, "ensure_runner", lambda store: None)


def by_model(store):
    return {store.run(i).read_config_dict()["model"]: i for i in store.list_ids()}


# --- Lab -------------------------------------------------------------------------------------
def test_lab_lists_the_store_runs_in_its_queue(tiny_runs):
    at = page("lab").run()
    no_exception(at)
    md = texts(at)
    for rid in tiny_runs.list_ids():
        assert rid[-6:] in md  # every run's label ends with its id's last 6 characters
    st_ = tiny_runs.run(by_model(tiny_runs)["cifar_resnet8"]).read_status()
    assert st_["state"] == "done"
    bars = [e for e in at.get("progress")]
    assert len(bars) == 4 and all(b.proto.value == 100 for b in bars)
    # the finished run's test error from its metrics appears in its progress text
    m = [
        r for r in tiny_runs.run(by_model(tiny_runs)["cifar_resnet8"]).read_metrics() if r["split"] == "test"
    ][-1]
    assert any(f"{100 * m['error']:.2f}%" in b.proto.text for b in bars)


def test_lab_launch_queues_the_chosen_model(store, no_runner):
    at = page("lab").run()
    at.radio(key="lab_kind").set_value("resnet").run()
    at.number_input(key="lab_depth").set_value(14)
    at.selectbox(key="lab_shortcut").set_value("B")
    at.selectbox(key="lab_preset").set_value("smoke")
    at.number_input(key="lab_width").set_value(4)
    at.text_input(key="lab_name").set_value("class demo")
    at.run()
    at.button(key="lab_launch").click().run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    (rid,) = store.list_ids()
    cfg = store.run(rid).read_config()
    assert (cfg.model, cfg.shortcut, cfg.width, cfg.preset, cfg.iterations, cfg.name) == (
        "cifar_resnet14",
        "B",
        4,
        "smoke",
        20,
        "class demo",
    )
    assert store.run(rid).read_status()["state"] == "queued"
    assert any(rid in s.value for s in at.success)
    # it is in the queue, and Cancel cancels it
    at.button(key=f"lab_cancel_{rid}").click().run()
    assert store.run(rid).read_status()["state"] == "cancelled"


def test_lab_launch_sweep_queues_the_quick_models(store, no_runner):
    at = page("lab").run()
    at.selectbox(key="lab_sweep").set_value("quick")
    at.button(key="lab_launch_sweep").click().run()
    no_exception(at)
    cfgs = [store.run(i).read_config() for i in store.list_ids()]
    assert sorted(c.model for c in cfgs) == ["plain20", "plain56", "resnet20", "resnet56"]
    # the sweep's own budget on digits: the quick preset with its digits override
    from resnet_core.config import apply_preset

    expected = apply_preset("quick", {"dataset": "digits"})
    assert {(c.preset, c.dataset, c.epochs, c.batch_size) for c in cfgs} == {
        ("quick", "digits", expected.epochs, expected.batch_size)
    }


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda at: at.number_input(key="lab_depth").set_value(21), "6n+2"),
        (lambda at: at.number_input(key="lab_batch").set_value(0), "batch_size"),
        (lambda at: at.number_input(key="lab_lr").set_value(-1.0), "lr"),
    ],
)
def test_lab_bad_input_is_a_message_and_nothing_is_queued(store, no_runner, setup, message):
    at = page("lab").run()
    setup(at)
    at.run()
    at.button(key="lab_launch").click().run()
    no_exception(at)
    errs = texts(at, "error")
    assert "Not launched" in errs and message in errs
    assert store.list_ids() == []
    assert at.title[0].value == "Lab"  # the rest of the page is still there


def test_lab_dataset_path_is_checked_before_use(store, no_runner, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_LAB_DATA_DIRS", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    at = page("lab").run()
    at.selectbox(key="lab_dataset").set_value(PATH_CHOICE).run()
    for bad, msg in [
        ("/etc/passwd", "outside"),
        ("../../../etc/shadow", "outside"),
        (str(tmp_path / "data" / "missing.npz"), "does not exist"),
    ]:
        at.text_input(key="lab_data_path").set_value(bad).run()
        at.button(key="lab_launch").click().run()
        no_exception(at)
        assert msg in texts(at, "error"), (bad, texts(at, "error"))
    assert store.list_ids() == []


# --- Degradation -----------------------------------------------------------------------------
def test_degradation_plots_each_run_error_from_its_metrics(tiny_runs):
    at = page("degradation").run()
    no_exception(at)
    curves, finals = figures(at)[:2]  # then the depth-crossing chart, where 2+ ResNet depths
    ids = by_model(tiny_runs)
    for model, rid in ids.items():
        metrics = tiny_runs.run(rid).read_metrics()
        test = [100 * r["error"] for r in metrics if r["split"] == "test"]
        train = [100 * r["error"] for r in metrics if r["split"] == "train"]
        tr = traces(curves, rid[-6:])
        assert len(tr) == 2, model
        solid = [t for t in tr if t["line"]["dash"] == "solid"][0]
        dashed = [t for t in tr if t["line"]["dash"] == "dash"][0]
        assert arr(solid["y"]).tolist() == pytest.approx(test)
        assert arr(dashed["y"]).tolist() == pytest.approx(train)
        # plain runs on the left panel, residual on the right
        assert solid["xaxis"] == ("x" if "plain" in model else "x2")
    # the final-error chart holds each run's last test error and the paper's Table 6
    pts = [t for t in finals["data"] if str(t.get("name", "")).startswith("your ")]
    ys = sorted(float(v) for t in pts for v in arr(t["y"]))
    want = sorted(
        100 * [r for r in tiny_runs.run(rid).read_metrics() if r["split"] == "test"][-1]["error"]
        for rid in ids.values()
    )
    assert ys == pytest.approx(want)
    table6 = [t for t in finals["data"] if "Table 6" in str(t.get("name"))][0]
    assert 6.43 in arr(table6["y"]).tolist()
    assert len(at.get("download_button")) >= 2


def test_degradation_survives_a_corrupt_run_folder(tiny_runs):
    bad = tiny_runs.root / "20260101-000000-broken-abcdef"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    (bad / "status.json").write_text('{"state": "runn')  # half-written
    at = page("degradation").run()
    no_exception(at)
    curves, _ = figures(at)[:2]
    assert len(traces(curves, "digits")) == 8
    assert not traces(curves, "abcdef")


def test_degradation_with_an_empty_store_says_what_to_do(store):
    at = page("degradation").run()
    no_exception(at)
    assert "Lab" in texts(at, "info")


# --- Runs ------------------------------------------------------------------------------------
def test_runs_table_filter_and_compare(tiny_runs):
    at = page("runs").run()
    no_exception(at)
    table = at.dataframe[0].value
    assert set(table["id"]) == set(tiny_runs.list_ids())
    ids = by_model(tiny_runs)
    row = table[table["id"] == ids["cifar_plain14"]].iloc[0]
    last_test = [r for r in tiny_runs.run(ids["cifar_plain14"]).read_metrics() if r["split"] == "test"][-1]
    assert row["test error (%)"] == pytest.approx(100 * last_test["error"])
    at.text_input(key="runs_filter").set_value("plain").run()
    assert set(at.dataframe[0].value["id"]) == {ids["cifar_plain8"], ids["cifar_plain14"]}
    at.text_input(key="runs_filter").set_value("").run()
    at.multiselect(key="runs_pick").set_value([ids["cifar_plain8"], ids["cifar_resnet8"]]).run()
    no_exception(at)
    assert at.session_state["pair"] == [ids["cifar_plain8"], ids["cifar_resnet8"]]
    diff = [d.value for d in at.dataframe if "field" in d.value.columns][0]
    assert "model" in set(diff["field"]) and "dataset" not in set(diff["field"])


def test_runs_delete_asks_first(tiny_runs):
    ids = by_model(tiny_runs)
    rid = ids["cifar_plain8"]
    at = page("runs").run()
    at.multiselect(key="runs_pick").set_value([rid]).run()
    at.button(key="runs_delete").click().run()
    assert (tiny_runs.root / rid).is_dir()  # not yet
    assert "can't be undone" in texts(at, "warning")
    at.button(key="runs_delete_no").click().run()
    assert (tiny_runs.root / rid).is_dir()
    at.button(key="runs_delete").click().run()
    at.button(key="runs_delete_yes").click().run()
    no_exception(at)
    assert not (tiny_runs.root / rid).exists()
    assert rid not in set(at.dataframe[0].value["id"])


def test_runs_resume_a_cancelled_run_and_download_its_files(tiny_runs, no_runner):
    rid = by_model(tiny_runs)["cifar_resnet14"]
    tiny_runs.run(rid).write_status(state="cancelled", message="cancelled at step 10")
    at = page("runs").run()
    at.multiselect(key="runs_pick").set_value([rid]).run()
    labels = {b.label for b in at.get("download_button")}
    assert {"Metrics (CSV)", "Config (JSON)"} <= labels
    cfg_text = [c.value for c in at.code if '"model"' in c.value][0]
    assert json.loads(cfg_text)["model"] == "cifar_resnet14"
    at.button(key="runs_resume").click().run()
    no_exception(at)
    assert tiny_runs.run(rid).read_status()["state"] == "queued"


def test_runs_lists_a_broken_folder_and_can_delete_it(tiny_runs):
    bad = tiny_runs.root / "20260101-000000-broken-abcdef"
    bad.mkdir()
    (bad / "status.json").write_text("{}")
    at = page("runs").run()
    no_exception(at)
    assert "abcdef" in texts(at, "warning")
    at.multiselect(key="runs_pick").set_value([bad.name]).run()
    at.button(key="runs_delete").click().run()
    at.button(key="runs_delete_yes").click().run()
    assert not bad.exists()
