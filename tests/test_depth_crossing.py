"""When depth starts to pay (issue 17): deeper minus shallower ResNet training error against
steps, and the step from which it stays below zero, checked against a computation written here
from the definition; and the Degradation page's sentence following the runs on screen."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from app.runs_data import depth_crossing
from tests.test_app_helpers import figures, no_exception, page, texts, traces

REPO = Path(__file__).resolve().parent.parent
LESSON = REPO / "reference" / "lesson-cpu"


def _rows(run_id, split, steps, errors):
    return [dict(run_id=run_id, split=split, step=s, error=e, loss=1.0) for s, e in zip(steps, errors)]


def _by_definition(deep: dict, shallow: dict):
    """Mean over seeds per step (steps all runs share), deep minus shallow in points, and the
    first step from which every later difference is negative."""
    steps = sorted(set.intersection(*(set(r) for r in [*deep.values(), *shallow.values()])))
    diff = []
    for s in steps:
        d = sum(r[s] for r in deep.values()) / len(deep)
        h = sum(r[s] for r in shallow.values()) / len(shallow)
        diff.append(100 * (d - h))
    since = None
    for i in range(len(steps)):
        if all(x < 0 for x in diff[i:]):
            since = steps[i]
            break
    return steps, diff, since


def test_crossing_equals_the_definition_over_seeds():
    steps = [100, 200, 300, 400, 500, 600]
    deep = {"d0": [0.9, 0.7, 0.5, 0.42, 0.30, 0.28], "d1": [0.9, 0.6, 0.45, 0.40, 0.33, 0.27]}
    shallow = {"s0": [0.8, 0.6, 0.5, 0.45, 0.35, 0.31], "s1": [0.8, 0.62, 0.49, 0.44, 0.31, 0.33]}
    rows = []
    for rid, errs in {**deep, **shallow}.items():
        rows += _rows(rid, "train_eval", steps, errs)
        rows += _rows(rid, "train", steps, [0.5] * len(steps))  # must not be used
    got = depth_crossing(pd.DataFrame(rows), ["d0", "d1"], ["s0", "s1"])
    want_steps, want_diff, want_since = _by_definition(
        {k: dict(zip(steps, v)) for k, v in deep.items()},
        {k: dict(zip(steps, v)) for k, v in shallow.items()},
    )
    assert got["split"] == "train_eval"
    assert list(got["diff"].index) == want_steps
    assert got["diff"].to_numpy() == pytest.approx(want_diff)
    assert got["stays_below_from"] == want_since == 300  # 300: 47.5% against 49.5%
    assert got["last"] == pytest.approx(want_diff[-1])


def test_a_late_rise_above_zero_resets_the_crossing_and_never_below_gives_none():
    steps = [1, 2, 3, 4, 5]
    rows = _rows("d", "train_eval", steps, [0.5, 0.3, 0.3, 0.45, 0.2]) + _rows(
        "s", "train_eval", steps, [0.4, 0.4, 0.4, 0.40, 0.3]
    )
    got = depth_crossing(pd.DataFrame(rows), ["d"], ["s"])
    assert got["stays_below_from"] == 5  # below at 2-3, above at 4, below again at 5
    rows = _rows("d", "train_eval", steps, [0.5, 0.5, 0.45, 0.41, 0.40]) + _rows(
        "s", "train_eval", steps, [0.4, 0.4, 0.40, 0.40, 0.39]
    )
    got = depth_crossing(pd.DataFrame(rows), ["d"], ["s"])
    assert got["stays_below_from"] is None and got["last"] == pytest.approx(1.0)


def test_without_three_evaluations_the_smoothed_running_error_is_used():
    steps = list(range(10, 110, 10))
    d_err = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15]
    s_err = [0.8, 0.7, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.3, 0.3]
    rows = (
        _rows("d", "train", steps, d_err)
        + _rows("s", "train", steps, s_err)
        + _rows("d", "train_eval", [100], [0.1])
        + _rows("s", "train_eval", [100], [0.2])
    )
    got = depth_crossing(pd.DataFrame(rows), ["d"], ["s"], smooth=3)
    # trailing 3-window means, by hand
    sm = lambda e: [sum(e[max(0, i - 2) : i + 1]) / len(e[max(0, i - 2) : i + 1]) for i in range(len(e))]  # noqa: E731
    want = [100 * (a - b) for a, b in zip(sm(d_err), sm(s_err))]
    assert got["split"] == "train"
    assert got["diff"].to_numpy() == pytest.approx(want)
    first_neg = next(i for i in range(len(want)) if all(x < 0 for x in want[i:]))
    assert got["stays_below_from"] == steps[first_neg]


def _final_train_eval(run_dir: Path) -> tuple[int, float]:
    last = None
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("split") == "train_eval":
            last = r
    return last["step"], 100 * last["error"]


def _lesson_copy(tmp_path, monkeypatch, shift_resnet56: float = 0.0) -> Path:
    """The bundled lesson-cpu set, copied; resnet56's re-scored training errors lowered by
    ``shift_resnet56`` (a fraction) to make a set that agrees with the paper."""
    root = tmp_path / "refs"
    dst = root / "lesson-cpu"
    shutil.copytree(LESSON, dst)
    if shift_resnet56:
        run = next(
            p for p in dst.iterdir() if p.name.endswith(tuple("0123456789abcdef")) and "resnet56" in p.name
        )
        lines = []
        for line in (run / "metrics.jsonl").read_text().splitlines():
            r = json.loads(line)
            if r.get("split") == "train_eval":
                r["error"] = max(0.0, r["error"] - shift_resnet56)
            lines.append(json.dumps(r))
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("RESNET_LAB_REFERENCE_DIR", str(root))
    return dst


def _run(dst: Path, model: str) -> Path:
    return next(p for p in dst.iterdir() if p.is_dir() and p.name.split("-")[2] == model)


@pytest.mark.skipif(not LESSON.exists(), reason="the bundled lesson-cpu set is not in this checkout")
@pytest.mark.parametrize("shift", [0.0, 0.15])
def test_degradation_says_when_depth_pays_from_the_runs_on_screen(store, tmp_path, monkeypatch, shift):
    dst = _lesson_copy(tmp_path, monkeypatch, shift)
    step, e56 = _final_train_eval(_run(dst, "resnet56"))
    _, e20 = _final_train_eval(_run(dst, "resnet20"))
    at = page("degradation").run()
    no_exception(at)
    captions = texts(at, "caption")
    fig = next(f for f in figures(at) if traces(f, "ResNet-56 − ResNet-20"))
    assert fig["data"][0]["y"] is not None
    if e56 - e20 >= 0:  # the bundled set: resnet56 still trails at the end
        assert "does not stay below" in captions
        assert f"at the last step ({step:,}) it is {e56 - e20:+.1f} points" in captions
    else:
        assert "stays below" in captions and "does not stay below" not in captions
        assert f"{e20 - e56:.1f} points lower" in captions
