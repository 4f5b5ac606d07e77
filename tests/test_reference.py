"""Bundled reference runs: export from a store (records, never weights), the CLI, thinning,
refusals that keep what is on disk, the app showing them beside (or instead of) the user's
runs, and the sets the repository ships."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_app_helpers import arr, figures, no_exception, page, texts

from resnet_core import RunStore
from resnet_core.__main__ import main
from resnet_core.reference import (
    ReferenceSetError,
    check_set,
    default_root,
    export,
    list_sets,
    read_set,
    thin_layers,
    thin_metrics,
)
from resnet_core.store import StoreError

ROOT = Path(__file__).resolve().parent.parent


def _last(rows, split):
    return [r for r in rows if r.get("split") == split][-1]["error"]


def test_export_copies_records_not_weights(tiny_runs, tmp_path):
    ids = tiny_runs.list_ids()
    assert all((tiny_runs.root / i / "ckpt" / "last.pt").exists() for i in ids)
    s = export(tiny_runs, ids, tmp_path / "ref" / "tiny", title="Tiny", command="pytest")
    assert s.error is None and s.title == "Tiny" and sorted(s.run_ids()) == sorted(ids)
    for rid in ids:
        files = sorted(p.name for p in (s.path / rid).iterdir())
        assert files == ["config.json", "env.json", "layers.jsonl", "metrics.jsonl", "status.json"]
        src, ref = tiny_runs.run(rid), s.store.run(rid)
        assert ref.read_config_dict() == src.read_config_dict()
        status = ref.read_status()
        assert status["state"] == "done" and status["step"] == src.read_status()["step"]
        assert not {"pid", "host", "heartbeat", "pid_start"} & set(status)
        assert "host" not in ref.read_json("env.json")
        # short logs are copied whole (floats to 6 significant digits)
        assert len(ref.read_metrics()) == len(src.read_metrics())
        assert _last(ref.read_metrics(), "test") == pytest.approx(_last(src.read_metrics(), "test"), rel=1e-5)
        assert len(ref.read_layers()) == len(src.read_layers())
    listing = {r["id"]: r for r in s.meta["runs"]}
    for rid in ids:
        assert listing[rid]["model"] == tiny_runs.run(rid).read_config_dict()["model"]
        assert listing[rid]["test_error"] == pytest.approx(
            _last(tiny_runs.run(rid).read_metrics(), "test"), rel=1e-5
        )
    assert s.meta["command"] == "pytest" and s.meta["machine"]
    assert check_set(s) == []
    assert [x.name for x in list_sets(tmp_path / "ref")] == ["tiny"]


def test_export_refusals_keep_what_is_on_disk(tiny_runs, tmp_path):
    from conftest import tiny_config

    ids = tiny_runs.list_ids()
    dest = tmp_path / "ref" / "tiny"
    export(tiny_runs, ids[:2], dest, title="First")
    before = (dest / "set.json").read_bytes()
    with pytest.raises(ReferenceSetError, match="already exists; pass --force"):
        export(tiny_runs, ids, dest, title="Second")
    queued = tiny_runs.create(tiny_config(), state="queued")
    with pytest.raises(ReferenceSetError, match=f"run {queued.id} is queued, not done"):
        export(tiny_runs, ids + [queued.id], dest, title="Second", force=True)
    with pytest.raises(StoreError, match="no run 'nope'"):
        export(tiny_runs, [ids[0], "nope"], dest, title="Second", force=True)
    with pytest.raises(ReferenceSetError, match="name is not accepted|is not accepted"):
        export(tiny_runs, ids, tmp_path / "ref" / "Bad Name", title="x")
    with pytest.raises(ReferenceSetError, match="needs a title"):
        export(tiny_runs, ids, tmp_path / "ref" / "other", title="  ")
    with pytest.raises(ReferenceSetError, match="no runs to export"):
        export(tiny_runs, [], tmp_path / "ref" / "other", title="x")
    # every refusal left the first set whole and no half-built folder behind
    assert (dest / "set.json").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "ref").iterdir()) == ["tiny"]
    s = export(tiny_runs, ids, dest, title="Second", force=True)
    assert s.title == "Second" and len(s.run_ids()) == 4
    assert sorted(p.name for p in (tmp_path / "ref").iterdir()) == ["tiny"]


def test_thinning_averages_training_windows_and_keeps_every_evaluation():
    rows = []
    for step in range(10, 10010, 10):
        rows.append(
            {
                "step": step,
                "split": "train",
                "loss": 2.0,
                "error": (step // 10) % 2,
                "lr": 0.1,
                "time": step / 10,
            }
        )
        if step % 1000 == 0:
            rows.append({"step": step, "split": "test", "error": step / 1e5})
            rows.append({"step": step, "split": "train_eval", "error": step / 2e5})
    out = thin_metrics(rows, max_train_rows=400)
    train = [r for r in out if r["split"] == "train"]
    assert len(train) <= 400 and train[-1]["step"] == 10000
    # a coarser logging interval: every window is in exactly one average
    assert sum(r["windows"] for r in train) == 1000
    assert sum(r["error"] * r["windows"] for r in train) == pytest.approx(500)
    assert [r for r in out if r["split"] != "train"] == [r for r in rows if r["split"] != "train"]
    assert thin_metrics(rows[:50], max_train_rows=400) == rows[:50]  # short logs untouched

    layers = [{"step": s, "layer": f"l{i}", "std": 1.0} for s in range(0, 1000, 10) for i in range(3)]
    kept = thin_layers(layers, max_steps=12)
    steps = sorted({r["step"] for r in kept})
    assert len(steps) == 12 and steps[0] == 0 and steps[-1] == 990
    assert all(sum(r["step"] == s for r in kept) == 3 for s in steps)  # whole steps, all layers
    # weight-gradient rows (recorded at many more steps) are thinned on their own
    weight = [{"step": s, "layer": "conv1", "type": "weight", "grad_norm": 1.0} for s in range(0, 1000, 5)]
    kept = thin_layers(layers + weight, max_steps=12, max_weight_steps=40)
    assert len({r["step"] for r in kept if r.get("type") == "weight"}) == 40
    assert sorted({r["step"] for r in kept if r.get("type") != "weight"}) == steps


def test_cli_export_list_check(tiny_runs, tmp_path, capsys):
    ids = tiny_runs.list_ids()
    dest = tmp_path / "ref" / "cli-set"
    assert (
        main(
            [
                "reference",
                "export",
                "--all",
                "--runs-dir",
                str(tiny_runs.root),
                "--to",
                str(dest),
                "--title",
                "From the CLI",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "4 runs" in out and "no weights" in out
    assert sorted(read_set(dest).run_ids()) == sorted(ids)
    assert main(["reference", "list", "--root", str(dest.parent)]) == 0
    out = capsys.readouterr().out
    assert "From the CLI" in out and "cifar_plain14" in out
    assert main(["reference", "check", "--root", str(dest.parent)]) == 0
    assert "cli-set: ok" in capsys.readouterr().out
    # a weight file smuggled in, and a broken set.json, are both reported
    (dest / ids[0] / "last.pt").write_bytes(b"x")
    (tmp_path / "ref" / "broken").mkdir()
    (tmp_path / "ref" / "broken" / "set.json").write_text("{not json")
    assert main(["reference", "check", "--root", str(dest.parent)]) == 2
    out, err = capsys.readouterr()
    assert "looks like weights" in out and "set.json is not valid" in out
    assert "2 reference set(s) have problems" in err
    # refusals are one line naming what was wrong
    assert (
        main(["reference", "export", "--runs-dir", str(tiny_runs.root), "--to", str(dest), "--title", "x"])
        == 2
    )
    assert "name the runs to export" in capsys.readouterr().err
    assert (
        main(
            [
                "reference",
                "export",
                ids[0],
                "--runs-dir",
                str(tiny_runs.root),
                "--to",
                str(dest),
                "--title",
                "x",
            ]
        )
        == 2
    )
    assert "already exists; pass --force" in capsys.readouterr().err


def test_degradation_shows_reference_runs_when_the_user_has_none(store, reference_root):
    at = page("degradation").run()
    no_exception(at)
    assert "bundled reference runs" in texts(at, "info")
    ref = RunStore(reference_root / "tiny")
    chosen = at.multiselect(key="deg_refs").value
    assert sorted(chosen) == sorted(f"ref:tiny/{i}" for i in ref.list_ids())
    curves = figures(at)[0]
    for rid in ref.list_ids():
        tr = [t for t in curves["data"] if t.get("legendgroup") == f"ref:tiny/{rid}"]
        test = [r for r in ref.run(rid).read_metrics() if r["split"] == "test"]
        solid = [t for t in tr if t["line"]["dash"] == "solid"][0]
        assert arr(solid["y"]).tolist() == pytest.approx([100 * r["error"] for r in test])
        assert solid["opacity"] < 1 and solid["name"].startswith("ref · ")
    final = figures(at)[1]
    stars = [t for t in final["data"] if str(t.get("name", "")).startswith("reference: Tiny")]
    assert len(stars) == 2  # plain and residual, each a dotted line through its depths


def test_degradation_puts_reference_runs_beside_the_users(tiny_runs, reference_root):
    at = page("degradation").run()
    no_exception(at)
    assert at.multiselect(key="deg_refs").value == []  # the user's runs come first
    ref_id = f"ref:tiny/{RunStore(reference_root / 'tiny').list_ids()[0]}"
    at.multiselect(key="deg_refs").set_value([ref_id]).run()
    no_exception(at)
    groups = {t.get("legendgroup") for t in figures(at)[0]["data"]}
    assert ref_id in groups and set(tiny_runs.list_ids()) <= groups


def test_responses_and_gradients_read_reference_layers(store, reference_root):
    ref = RunStore(reference_root / "tiny")
    by_model = {ref.run(i).read_config_dict()["model"]: f"ref:tiny/{i}" for i in ref.list_ids()}
    # make the shallow plain run the newest: depth, not age, must pick Gradient flow's pair
    p8 = reference_root / "tiny" / by_model["cifar_plain8"].split("/")[1] / "status.json"
    p8.write_text(json.dumps(dict(json.loads(p8.read_text()), created=4e9)))
    at = page("responses").run()
    no_exception(at)
    chosen = at.multiselect(key="resp_refs").value
    assert sorted(chosen) == sorted(f"ref:tiny/{i}" for i in ref.list_ids())
    fig7 = figures(at)[0]
    rid = chosen[0].split("/", 1)[1]
    rows = [r for r in ref.run(rid).read_layers() if r["type"] == "response"]
    last = max(r["step"] for r in rows)
    want = [r["std"] for r in sorted((r for r in rows if r["step"] == last), key=lambda r: r["order"])]
    tr = [t for t in fig7["data"] if t.get("legendgroup") == chosen[0]]
    assert arr(tr[0]["y"]).tolist() == pytest.approx(want, rel=1e-3)
    assert tr[0]["line"]["dash"] == "dot"
    assert "reference runs ship without weights" in texts(at, "caption")

    at = page("gradients").run()
    no_exception(at)
    # with no runs of the user's, the deepest plain and residual references face each other
    assert at.selectbox(key="grad_a").value == by_model["cifar_plain14"]
    assert at.selectbox(key="grad_b").value == by_model["cifar_resnet14"]
    assert any(t["type"] == "heatmap" for t in figures(at)[0]["data"])


def test_runs_page_and_tour_offer_the_reference_set(store, reference_root):
    at = page("runs").run()
    no_exception(at)
    assert any("Tiny digits runs · 4 runs" in e.label for e in at.expander)
    assert "Four 20-step runs on digits." in texts(at)
    at = page("tour").run()
    no_exception(at)
    assert at.toggle(key="tour_refs").value is True
    curves = figures(at)[0]
    assert any(str(t.get("name", "")).startswith("ref · ") for t in curves["data"])
    # step 3 says in numbers what the residual curves show, whichever way they went
    at.button(key="tour_next").click().run()
    at.button(key="tour_next").click().run()
    no_exception(at)
    ref = RunStore(reference_root / "tiny")
    te = {
        ref.run(i).read_config_dict()["model"]: 100 * _last(ref.run(i).read_metrics(), "train_eval")
        for i in ref.list_ids()
    }
    md = texts(at)
    assert (
        f"In these runs at depth 14, ResNet-14 ends at {te['cifar_resnet14']:.1f}% final "
        f"training error against plain-14's {te['cifar_plain14']:.1f}%"
    ) in md
    gap = te["cifar_resnet14"] - te["cifar_resnet8"]  # ties: under 1 point (app.verdicts)
    verdict = (
        "**no clear difference**"
        if abs(gap) < 1
        else "the deeper residual net is " + ("**better**" if gap < 0 else "**worse**")
    )
    assert (
        f"ResNet-14 ends at {te['cifar_resnet14']:.1f}% final training error and ResNet-8 at "
        f"{te['cifar_resnet8']:.1f}%: {verdict}"
    ) in md


def test_a_reference_id_cannot_reach_outside_the_reference_folder(store, reference_root):
    from app import ui

    with pytest.raises(ReferenceSetError):
        ui.resolve("ref:../../etc/x", store)
    assert ui.metrics_for(["ref:../x/y", "ref:tiny/../../z"], store).empty
    assert not ui.has_layers(store, "ref:nope/x")
    real = RunStore(reference_root / "tiny").list_ids()[0]
    assert ui.has_layers(store, f"ref:tiny/{real}")
    with pytest.raises(StoreError):
        ui.resolve(f"ref:tiny/../tiny/{real}", store)
    assert not ui.has_layers(store, f"ref:tiny/../tiny/{real}")


@pytest.mark.parametrize("s", list_sets(default_root()) or [None], ids=lambda s: s.name if s else "none")
def test_the_bundled_sets_are_sound(s, monkeypatch):
    """What the repository ships under reference/: readable, finished, records only, small."""
    if s is None:
        pytest.skip("no reference set is bundled")
    assert check_set(s) == []
    assert s.title and s.description and s.meta.get("machine") and s.meta.get("command")
    size = sum(p.stat().st_size for p in s.path.rglob("*") if p.is_file())
    done = sum(info["status"]["state"] == "done" for info in s.store.list_runs())
    # about 5 MB a set; a set of many seeds may hold up to 400 kB a finished run, at most 12 MB
    limit = min(12_000_000, max(5_000_000, 400_000 * done))
    assert size < limit, (
        f"{s.name} is {size} bytes for {done} finished runs: thin it (see --max-weight-steps)"
    )
    for info in s.store.list_runs():
        metrics = s.store.run(info["id"]).read_metrics()
        if info["status"]["state"] == "diverged":  # stopped when its loss became NaN: said so
            assert "the training loss became nan" in info["status"]["message"], info["id"]
            continue
        assert any(r["split"] == "test" for r in metrics), info["id"]


def _reproduction_band(kind: str, depth: int):
    """(low, high) test error % that a one-seed `paper`-preset run on CIFAR-10 must land in:
    the spread of the paper's and public reproductions' values for that net (PAPER.md, as the
    app draws them), widened by half a point each side for seed noise (their single runs vary
    by about that much: nabla0001's five seeds have a std of 0.13-0.27)."""
    from app.charts import references_frame

    ref = references_frame()
    vals = ref[(ref["kind"] == kind) & (ref["depth"] == depth)]["test_error_pct"]
    if not len(vals):
        return None
    return float(vals.min()) - 0.5, float(vals.max()) + 0.5


def test_reproduction_band_is_what_papermd_says():
    assert _reproduction_band("resnet", 56) == pytest.approx((6.11, 7.90))  # akamaster .. a-martyn
    assert _reproduction_band("plain", 20) == pytest.approx((9.0, 10.28))
    assert _reproduction_band("plain", 110) is None


@pytest.mark.parametrize("s", list_sets(default_root()) or [None], ids=lambda s: s.name if s else "none")
def test_bundled_paper_runs_land_within_the_reproductions_spread(s):
    """Issue 6's bar for the reference set made on a GPU: every bundled `paper`-preset
    CIFAR-10 run's final test error lies within the public reproductions' spread."""
    from resnet_core.models import parse_name

    runs = (
        []
        if s is None
        else [
            i
            for i in s.store.list_runs()
            if i["config"].get("preset") == "paper"
            and "cifar10" in str(i["config"].get("dataset", "")).lower()
            and "cifar100" not in str(i["config"].get("dataset", "")).lower()
        ]
    )
    if not runs:
        pytest.skip("no paper-preset CIFAR-10 runs bundled (they need a GPU session)")
    for info in runs:
        _, kind, depth = parse_name(info["config"]["model"])
        band = _reproduction_band(kind, depth)
        if band is None:
            continue
        err = 100 * _last(s.store.run(info["id"]).read_metrics(), "test")
        assert band[0] <= err <= band[1], f"{info['config']['model']}: {err:.2f}% outside {band}"


def _raw_layers(path: Path) -> list[dict]:
    """A layers.jsonl file as it is on disk, parsed here without the store."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_rows_recorded_as_bn_read_back_as_response(tmp_path):
    """Fig. 7's rows were ``"type": "bn"`` before the rename; a run recorded (or resumed) by
    older code mixes both names. The public reader gives today's name, every value kept."""
    run_dir = tmp_path / "runs" / "20260101-000000-plain8-aaaaaa"
    run_dir.mkdir(parents=True)
    old = [
        {"step": 0, "layer": "tap1", "type": "bn", "order": 0, "std": 0.5, "mean": 0.1},
        {"step": 0, "layer": "layer1.0", "type": "block", "order": 0, "f_over_x": 0.3},
    ]
    new = [{"step": 4, "layer": "tap1", "type": "response", "order": 0, "std": 0.7, "mean": -0.2}]
    (run_dir / "layers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old + new))
    rows = RunStore(tmp_path / "runs").run(run_dir.name).read_layers()
    assert [(r["step"], r["type"]) for r in rows] == [(0, "response"), (0, "block"), (4, "response")]
    assert [r["std"] for r in rows if r["type"] == "response"] == [0.5, 0.7]
    assert rows[1] == old[1]  # other kinds pass untouched


def test_bundled_bn_records_read_as_response_and_draw_fig7(store, monkeypatch, tmp_path):
    """The bundled lesson-cpu records keep "bn" on disk (their bytes are checked): read back,
    they are "response" rows with the file's values, and Layer responses draws each run's
    last recorded step from them."""
    if not (ROOT / "reference" / "lesson-cpu" / "set.json").exists():
        pytest.skip("reference/lesson-cpu is not bundled")
    import shutil

    shutil.copytree(ROOT / "reference" / "lesson-cpu", tmp_path / "ref" / "lesson-cpu")
    monkeypatch.setenv("RESNET_LAB_REFERENCE_DIR", str(tmp_path / "ref"))  # the set shown alone
    ref = RunStore(ROOT / "reference" / "lesson-cpu")
    want = {}
    for rid in ref.list_ids():
        raw = _raw_layers(ref.root / rid / "layers.jsonl")
        assert {r["type"] for r in raw} >= {"bn"}  # still the old name on disk
        read = ref.run(rid).read_layers()
        assert "bn" not in {r["type"] for r in read}
        raw_bn = [r["std"] for r in raw if r["type"] == "bn"]
        assert [r["std"] for r in read if r["type"] == "response"] == raw_bn
        last = max(r["step"] for r in raw if r["type"] == "bn")
        at_last = sorted(
            (r for r in raw if r["type"] == "bn" and r["step"] == last), key=lambda r: r["order"]
        )
        want[f"ref:lesson-cpu/{rid}"] = [r["std"] for r in at_last]
    at = page("responses").run()
    no_exception(at)
    fig7 = figures(at)[0]
    for ref_id, stds in want.items():
        tr = [t for t in fig7["data"] if t.get("legendgroup") == ref_id]
        assert tr and arr(tr[0]["y"]).tolist() == pytest.approx(stds, rel=1e-3), ref_id


def test_check_reports_a_listing_whose_numbers_differ_from_the_records(tiny_runs, tmp_path):
    """set.json's per-run final errors are what the records end at; an edited number, or a
    listed run with no records, is reported by name."""
    import json

    dest = tmp_path / "ref" / "edited"
    export(tiny_runs, tiny_runs.list_ids(), dest, title="Edited")
    meta = json.loads((dest / "set.json").read_text())
    first = meta["runs"][0]
    rows = [json.loads(x) for x in (dest / first["id"] / "metrics.jsonl").read_text().splitlines()]
    final = [r["error"] for r in rows if r["split"] == "train_eval"][-1]
    assert first["train_error"] == final and first["name"] == tiny_runs.run(first["id"]).read_config().name
    assert check_set(read_set(dest)) == []
    first["train_error"] = round(final + 0.05, 6)
    meta["runs"].append({"id": "20991231-000000-ghost-abcdef", "model": "ghost"})
    (dest / "set.json").write_text(json.dumps(meta))
    problems = check_set(read_set(dest))
    assert (
        f"run {first['id']}: set.json lists train_error {first['train_error']}, "
        f"but its records end at {final}" in problems
    )
    assert "set.json lists run '20991231-000000-ghost-abcdef', which has no records in the set" in problems


def test_reference_labels_name_the_seed_and_the_rescue_variant():
    """Three seeds of one net in a set read apart; a rescue run says its variant."""
    import pandas as pd

    from app.ui import _reference_labels

    df = pd.DataFrame(
        {
            "kind": ["resnet", "resnet", "plain"],
            "depth": [56, 56, 56],
            "name": ["sweep laptop", "sweep laptop", "rescue: no shortcuts: TAT leaky ReLU, no BN"],
            "seed": [0, 1, 0],
        }
    )
    assert _reference_labels(df, "s") == [
        "ref · ResNet-56 · seed 0 · s",
        "ref · ResNet-56 · seed 1 · s",
        "ref · plain-56 · TAT leaky ReLU, no BN · seed 0 · s",
    ]
    assert _reference_labels(df.iloc[:1], "s") == ["ref · ResNet-56 · s"]


def test_a_set_of_seeds_of_reference_runs_is_labelled_without_one_runs_seed():
    import pandas as pd

    from app.runs_data import _group_label

    first = pd.Series(
        {"label": "ref · ResNet-56 · seed 1 · laptop-cpu", "reference": "laptop", "kind": "resnet"}
    )
    assert _group_label(first, 3) == "ref · ResNet-56 · laptop-cpu · 3 seeds"
    assert _group_label(first, 1) == "ref · ResNet-56 · seed 1 · laptop-cpu"
