"""Sweeps over seeds, and runs that differ only in seed drawn as mean +- std.

The expected numbers are computed here with numpy from each run's metrics.jsonl (the last
"test" line; the last "train_eval" line), never by the code under test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import train_tiny
from test_app_helpers import arr, figures, no_exception, page, texts, traces

from resnet_core import jobs
from resnet_core.config import ConfigError, parse_seeds

SEEDS = (0, 1, 2)


# --- the seed list ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, want", [("0,1,2", [0, 1, 2]), (" 7 , 3 ", [7, 3]), ("5", [5])])
def test_parse_seeds_accepts_distinct_non_negative_integers(text, want):
    assert parse_seeds(text) == want


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "no seeds"),
        ("  ", "no seeds"),
        ("1,,2", "empty entry"),
        ("0,-1", "'-1'"),
        ("0,x", "'x'"),
        ("1.5", "'1.5'"),
        ("1,2,1", "seed 1 is listed more than once"),
        ("4294967296", "'4294967296'"),
        ("٣", "'٣'"),
    ],
)
def test_parse_seeds_refuses_with_what_is_accepted(text, why):
    with pytest.raises(ConfigError) as e:
        parse_seeds(text)
    msg = str(e.value)
    assert why in msg and "accepted: a comma-separated list of distinct integers" in msg
    assert "\n" not in msg


# --- the command line ----------------------------------------------------------------------
def test_sweep_seeds_dry_run_shows_every_model_once_per_seed(tmp_path, capsys):
    from resnet_core.__main__ import main

    assert (
        main(["sweep", "quick", "--seeds", "0,1,2", "--dry-run", "--runs-dir", str(tmp_path / "store")]) == 0
    )
    out, cfgs, pos = capsys.readouterr().out, [], 0
    dec = json.JSONDecoder()
    while out[pos:].strip():  # the configs, one JSON object after another
        pos += len(out[pos:]) - len(out[pos:].lstrip())
        cfg, pos = dec.raw_decode(out, pos)
        cfgs.append(cfg)
    got = [(c["model"], c["seed"]) for c in cfgs]
    assert got == [(m, s) for m in ("plain56", "resnet56", "plain20", "resnet20") for s in SEEDS]
    for m in ("plain56", "resnet20"):  # a model's seeds differ in the seed only
        same = [{k: v for k, v in c.items() if k != "seed"} for c in cfgs if c["model"] == m]
        assert same[0] == same[1] == same[2]
    assert not (tmp_path / "store").exists()  # a dry run queues nothing


def test_sweep_seeds_queues_every_model_once_per_seed(tmp_path, monkeypatch, capsys):
    from resnet_core import RunStore
    from resnet_core.__main__ import main

    monkeypatch.setattr(jobs, "ensure_runner", lambda store: None)  # queue, train nothing
    assert (
        main(
            [
                "sweep",
                "quick",
                "--seeds",
                "3,1",
                "--background",
                "--iterations",
                "5",
                "--runs-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    ids = capsys.readouterr().out.split()
    store = RunStore(tmp_path)
    cfgs = [store.run(i).read_config() for i in ids]
    assert [(c.model, c.seed) for c in cfgs] == [
        (m, s) for m in ("plain56", "resnet56", "plain20", "resnet20") for s in (3, 1)
    ]
    assert {store.run(i).read_status()["state"] for i in ids} == {"queued"}


@pytest.mark.parametrize(
    "args, text",
    [
        (["--seeds", "0,1", "--seed", "4"], "--seed 4 and --seeds 0,1 can't be combined"),
        (["--seed", "0", "--seeds", "2"], "can't be combined"),
        (["--seeds", "0,0"], "seed 0 is listed more than once"),
        (["--seeds", "-3"], "'-3'"),
    ],
)
def test_sweep_refuses_bad_seeds_in_one_line_and_queues_nothing(tmp_path, capsys, args, text):
    from resnet_core.__main__ import main

    assert main(["sweep", "quick", *args, "--runs-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert text in err and len(err.splitlines()) == 1 and err.startswith("error: ")
    assert not (tmp_path / "s").exists()


# --- what "differ only in seed" means ------------------------------------------------------
def test_seed_group_ignores_only_fields_that_do_not_change_training():
    from app.runs_data import seed_group
    from resnet_core import TrainConfig

    base = TrainConfig(model="resnet20", epochs=6, seed=0).to_dict()
    key = seed_group(base)
    for change in (
        {"seed": 4},
        {"name": "x"},
        {"threads": 2},
        {"device": "cuda"},
        {"compile": True},
        {"recorders": []},
        {"checkpoint_every": 3},
        {"preset": "quick"},
        {"epochs": 6.0},
    ):
        assert seed_group({**base, **change}) == key, change
    old = {k: v for k, v in base.items() if k != "test_size"}  # an older config.json
    assert seed_group(old) == key
    for change in (
        {"lr": 0.2},
        {"model": "resnet32"},
        {"epochs": 7},
        {"precision": "bf16"},
        {"subset": 100},
        {"width": 8},
        {"dataset": "mnist"},
        {"eval_every": 5},
        {"shortcut": "B"},
    ):
        assert seed_group({**base, **change}) != key, change


# --- three seeds of one tiny config ----------------------------------------------------------
@pytest.fixture(scope="module")
def _three_seeds_master(tmp_path_factory):
    """Three real tiny runs of one config (cifar_resnet8 on digits) with seeds 0, 1, 2, and one
    run each of cifar_resnet14 and cifar_plain8 (seed 0), so both panels, two residual depths
    and the tour have something."""
    from resnet_core import RunStore

    root = tmp_path_factory.mktemp("three_seeds")
    st = RunStore(root)
    for s in SEEDS:
        train_tiny(st, "cifar_resnet8", record=False, seed=s)
    train_tiny(st, "cifar_resnet14", record=False, seed=0)
    train_tiny(st, "cifar_plain8", record=False, seed=0)
    return root


@pytest.fixture
def three_seeds(store, _three_seeds_master):
    for p in Path(_three_seeds_master).iterdir():
        if p.is_dir():
            shutil.copytree(p, store.root / p.name)
    return store


def last(run, split) -> float:
    """The run's last ``split`` error in percent, read straight from metrics.jsonl."""
    rows = [
        json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    return 100.0 * [r for r in rows if r.get("split") == split][-1]["error"]


def resnet_ids(store):
    return sorted(i for i in store.list_ids() if store.run(i).read_config_dict()["model"] == "cifar_resnet8")


def test_three_seeds_give_three_runs_and_one_row_with_numpys_mean_and_std(three_seeds):
    from app import runs_data

    ids = resnet_ids(three_seeds)
    assert len(ids) == 3
    assert sorted(three_seeds.run(i).read_config().seed for i in ids) == list(SEEDS)
    test = np.array([last(three_seeds.run(i), "test") for i in ids])
    train = np.array([last(three_seeds.run(i), "train_eval") for i in ids])
    assert test.std() > 0  # the seeds really differ, so the std is tested

    groups = runs_data.seed_groups(runs_data.runs_frame(three_seeds))
    assert len(groups) == 3  # the three seeds; resnet14 and plain8 alone
    row = groups[groups["n_runs"] == 3].iloc[0]
    assert sorted(row["run_ids"]) == ids and row["seeds"] == [0, 1, 2]
    assert row["test_error_mean"] == pytest.approx(np.mean(test))
    assert row["test_error_std"] == pytest.approx(np.std(test, ddof=1))
    assert row["train_error_mean"] == pytest.approx(np.mean(train))
    assert row["train_error_std"] == pytest.approx(np.std(train, ddof=1))
    assert row["test_error_n"] == row["train_error_n"] == 3

    t6 = runs_data.table6_frame(groups)
    r6 = t6[t6["test_error_n"] == 3].iloc[0]
    assert r6["net"] == "ResNet-8" and r6["depth (layers)"] == 8
    assert r6["test error (%) mean ± std (n)"] == f"{np.mean(test):.2f} ± {np.std(test, ddof=1):.2f} (3)"
    # parameters: the trained weights themselves (digits: 1 channel in, 10 classes out)
    import torch

    state = torch.load(three_seeds.run(ids[0]).checkpoint_path("last"), weights_only=True)
    weights = state["model"]
    n_params = sum(
        v.numel()
        for k, v in weights.items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert r6["params_count"] == n_params

    # a seed still training is not averaged with the finished ones
    three_seeds.run(ids[0]).write_status(state="running")
    groups = runs_data.seed_groups(runs_data.runs_frame(three_seeds))
    assert sorted(groups["n_runs"].tolist()) == [1, 1, 1, 2]


def test_curve_band_is_numpys_mean_and_std_per_step(three_seeds):
    from app import charts, runs_data

    runs = runs_data.runs_frame(three_seeds)
    metrics = __import__("pandas").concat(
        [runs_data.metrics_frame(three_seeds.run(i)).assign(run_id=i) for i in runs["id"]]
    )
    fig = charts.degradation_figure(metrics, runs, seed_sets=runs_data.seed_sets(runs))
    mean = [
        t
        for t in fig.data
        if "mean of 3 seeds" in (t.name or "") and t.line.dash == "solid" and t.fill is None
    ]
    assert len(mean) == 1
    per_step = {}
    for i in resnet_ids(three_seeds):
        for line in (three_seeds.run(i).path / "metrics.jsonl").read_text().splitlines():
            r = json.loads(line)
            if r.get("split") == "test":
                per_step.setdefault(r["step"], []).append(100 * r["error"])
    steps = sorted(per_step)
    assert list(mean[0].x) == steps
    assert list(mean[0].y) == pytest.approx([np.mean(per_step[s]) for s in steps])
    assert [c[0] for c in mean[0].customdata] == pytest.approx([np.std(per_step[s], ddof=1) for s in steps])
    band = [t for t in fig.data if t.fill == "toself" and "test error" in t.name]
    hi = np.array(band[0].y[: len(steps)])
    assert hi == pytest.approx([np.mean(per_step[s]) + np.std(per_step[s], ddof=1) for s in steps])
    # the plain run (one seed) is drawn as itself: its two curves, on the left panel
    (plain,) = runs.loc[runs["model"] == "cifar_plain8", "id"]
    mine = [t for t in fig.data if (t.name or "").endswith(plain[-6:])]
    assert len(mine) == 2 and {t.xaxis for t in mine} == {"x"}


# --- the pages ---------------------------------------------------------------------------------
def final_marks(fig: dict):
    agg = [t for t in fig["data"] if "mean ± std over seeds" in str(t.get("name"))]
    single = [
        t
        for t in fig["data"]
        if str(t.get("name", "")).startswith("your ") and "mean" not in str(t.get("name"))
    ]
    return agg, single


def test_degradation_shows_three_seeds_as_error_bars_and_one_seed_as_a_run(three_seeds):
    ids = resnet_ids(three_seeds)
    test = np.array([last(three_seeds.run(i), "test") for i in ids])
    at = page("degradation").run()
    no_exception(at)
    curves, finals = figures(at)[:2]  # then the depth-crossing chart, where 2+ ResNet depths
    agg, single = final_marks(finals)
    assert len(agg) == 1
    assert arr(agg[0]["y"]).tolist() == pytest.approx([np.mean(test)])
    assert arr(agg[0]["error_y"]["array"]).tolist() == pytest.approx([np.std(test, ddof=1)])
    assert arr(agg[0]["x"]).tolist() == [8]
    assert sorted(float(v) for t in single for v in arr(t["y"])) == pytest.approx(
        sorted(last(three_seeds.run(i), "test") for i in three_seeds.list_ids() if i not in ids)
    )
    assert len(traces(curves, "mean of 3 seeds")) == 4  # test and training: mean and band
    table = at.dataframe[0].value
    row = table[table["test error (%) mean ± std (n)"].str.endswith("(3)")]
    assert row["net"].tolist() == ["ResNet-8"]
    assert f"{np.mean(test):.2f} ± {np.std(test, ddof=1):.2f} (3)" in row.iloc[0].tolist()
    note = texts(at, "caption")
    assert "mean ± one standard deviation (ddof=1)" in note and "seeds 0, 1, 2" in note
    train = np.array([last(three_seeds.run(i), "train_eval") for i in ids])
    (r14,) = [
        i
        for i in three_seeds.list_ids()
        if three_seeds.run(i).read_config_dict()["model"] == "cifar_resnet14"
    ]
    t14 = last(three_seeds.run(r14), "train_eval")
    gap = t14 - np.mean(train)
    said = texts(at)  # the Fig. 6 verdicts (app.verdicts), the three seeds averaged
    assert (
        f"ResNet-14 ends at {t14:.1f}% final training error and ResNet-8 at "
        f"{np.mean(train):.1f}% (mean of 3 runs)"
    ) in said
    if abs(gap) >= 1:
        assert f"**{'worse' if gap > 0 else 'better'}**, by {abs(gap):.1f} points" in said
    assert "Stars on dotted lines" not in note  # no reference runs on screen
    assert "Table (CSV)" in {b.label for b in at.get("download_button")}

    # the single runs, one click away
    at.toggle(key="deg_single_runs").set_value(True).run()
    no_exception(at)
    curves, finals = figures(at)[:2]  # then the depth-crossing chart, where 2+ ResNet depths
    assert not traces(curves, "mean of")
    for i in ids:
        assert len(traces(curves, i[-6:])) == 2
    members = [t for t in finals["data"] if str(t.get("name", "")).startswith("single resnet")]
    assert sorted(arr(members[0]["y"]).tolist()) == pytest.approx(sorted(test))


def test_degradation_with_one_seed_draws_the_run_itself(three_seeds):
    ids = resnet_ids(three_seeds)
    for i in ids[1:]:
        three_seeds.delete(i)
    at = page("degradation").run()
    no_exception(at)
    curves, finals = figures(at)[:2]  # then the depth-crossing chart, where 2+ ResNet depths
    agg, single = final_marks(finals)
    assert not agg and not traces(curves, "mean of")
    ys = sorted(float(v) for t in single for v in arr(t["y"]))
    assert ys == pytest.approx(sorted(last(three_seeds.run(i), "test") for i in three_seeds.list_ids()))
    assert "standard deviation" not in texts(at, "caption")
    assert at.dataframe[0].value["test error (%) mean ± std (n)"].str.endswith("(1)").all()


def test_runs_page_and_tour_aggregate_the_seeds(three_seeds):
    ids = resnet_ids(three_seeds)
    test = np.array([last(three_seeds.run(i), "test") for i in ids])
    want = f"{np.mean(test):.2f} ± {np.std(test, ddof=1):.2f} (3)"
    at = page("runs").run()
    no_exception(at)
    seeds_tbl = [d.value for d in at.dataframe if "seeds" in d.value.columns][0]
    assert seeds_tbl["test error (%) mean ± std (n)"].tolist() == [want]
    at = page("tour").run()
    at.button(key="tour_next").click().run()  # step 2: final errors against depth
    no_exception(at)
    agg = [t for f in figures(at) for t in f["data"] if "mean ± std over seeds" in str(t.get("name"))]
    assert len(agg) == 2  # the training-error and the test-error chart
    train = np.array([last(three_seeds.run(i), "train_eval") for i in ids])
    assert sorted(float(arr(t["y"])[0]) for t in agg) == pytest.approx(
        sorted([np.mean(train), np.mean(test)])
    )


def test_lab_sweep_panel_queues_each_model_once_per_seed(store, monkeypatch):
    monkeypatch.setattr(jobs, "ensure_runner", lambda store: None)
    at = page("lab").run()
    at.selectbox(key="lab_sweep").set_value("quick")
    at.text_input(key="lab_sweep_seeds").set_value("0,1,2").run()
    at.button(key="lab_launch_sweep").click().run()
    no_exception(at)
    cfgs = [store.run(i).read_config() for i in store.list_ids()]
    assert sorted((c.model, c.seed) for c in cfgs) == sorted(
        (m, s) for m in ("plain20", "plain56", "resnet20", "resnet56") for s in SEEDS
    )
    assert "12 runs" in texts(at, "success")


@pytest.mark.parametrize(
    "seed, seeds, message",
    [
        (5, "0,1", "can't be combined"),
        (0, "1,1", "listed more than once"),
        (0, "a", "accepted: a comma-separated list"),
    ],
)
def test_lab_sweep_panel_refuses_bad_seeds(store, monkeypatch, seed, seeds, message):
    monkeypatch.setattr(jobs, "ensure_runner", lambda store: None)
    at = page("lab").run()
    at.number_input(key="lab_seed").set_value(seed)
    at.text_input(key="lab_sweep_seeds").set_value(seeds).run()
    at.button(key="lab_launch_sweep").click().run()
    no_exception(at)
    assert "Sweep not launched" in texts(at, "error") and message in texts(at, "error")
    assert store.list_ids() == []
