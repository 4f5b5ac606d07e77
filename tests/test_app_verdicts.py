"""app.verdicts: each claim's verdict from numbers that agree with the papers and from numbers
that contradict them (the verdict flips, the sentence says so, with the numbers and a reason).
Pure functions: no store, no streamlit; milliseconds."""

from __future__ import annotations

import pandas as pd
import pytest

from app import verdicts as v

LESSON = [{"steps": 2340, "batch_size": 128, "images": 10000, "image_size": 16, "dataset": "cifar10-jpeg"}]


def finals(p20, p56, r20, r56):
    return pd.DataFrame(
        [
            {"kind": k, "depth": d, "train_error_pct": e, "test_error_pct": e + 3}
            for (k, d), e in zip(
                [("plain", 20), ("plain", 56), ("resnet", 20), ("resnet", 56)], [p20, p56, r20, r56]
            )
        ]
    )


def test_fig6_verdicts_agree_with_paper_like_numbers():
    vs = {x.claim: x for x in v.degradation(finals(9.5, 13.5, 8.8, 7.0), LESSON)}
    assert {k: x.outcome for k, x in vs.items()} == {
        "plain_depth": "agrees",
        "residual_vs_plain": "agrees",
        "residual_depth": "agrees",
    }
    assert "plain-56 ends at 13.5%" in vs["plain_depth"].text and "plain-20 at 9.5%" in vs["plain_depth"].text
    assert "**better**, by 1.8 points" in vs["residual_depth"].text
    assert "likely reason" not in " ".join(x.text for x in vs.values())


def test_fig6_verdicts_on_the_lesson_cpu_numbers_say_resnet56_trails():
    """The bundled reference set: plain 37.1 / 70.0, ResNet 30.1 / 40.1 (final training error)."""
    vs = {x.claim: x for x in v.degradation(finals(37.1, 70.0, 30.1, 40.1), LESSON)}
    assert vs["plain_depth"].outcome == "agrees"
    r = vs["residual_depth"]
    assert r.outcome == "contradicts"
    assert "ResNet-56 ends at 40.1%" in r.text and "ResNet-20 at 30.1%" in r.text
    assert "**worse**, by 10.0 points" in r.text
    # the reason names the budget's steps, images and image size against the paper's
    assert "2,340 steps against the paper's 64,000" in r.text
    assert "10,000 training images against 50,000" in r.text and "16×16" in r.text
    assert r.numbers == {"shallow": 30.1, "deep": 40.1, "depths": (20, 56), "kind": "resnet"}


def test_repeats_are_averaged_and_say_so():
    three = pd.concat([finals(10, 20, 8, 7), finals(12, 22, 8, 7), finals(14, 24, 8, 7)])
    x = v.plain_depth(three)
    assert x.outcome == "agrees" and "plain-56 ends at 22.0% (mean of 3 runs)" in x.text
    assert "plain-20 at 12.0% (mean of 3 runs)" in x.text


def test_plain_depth_flips_and_ties():
    assert v.plain_depth(finals(30, 20, 1, 1)).outcome == "contradicts"
    assert "**better**, by 10.0 points" in v.plain_depth(finals(30, 20, 1, 1)).text
    tie = v.plain_depth(finals(30, 30.4, 1, 1))
    assert tie.outcome == "unclear" and "no clear difference" in tie.text
    assert not v.plain_depth(finals(30, 20, 1, 1).iloc[1:])  # one plain depth: nothing to say


def test_residual_vs_plain_flips():
    assert v.residual_vs_plain(finals(10, 20, 12, 15)).outcome == "agrees"
    x = v.residual_vs_plain(finals(10, 20, 12, 25), LESSON)
    assert x.outcome == "contradicts" and "ResNet-56 ends at 25.0%" in x.text and "plain-56's 20.0%" in x.text


def test_not_overfitting_flips():
    agree = v.not_overfitting(finals(10, 20, 1, 1))
    assert agree.outcome == "agrees" and "not overfitting" in agree.text
    assert "test error 23.0% against 13.0%" in agree.text
    against = v.not_overfitting(finals(20, 10, 1, 1), LESSON)
    assert against.outcome == "contradicts" and "no degradation" in against.text
    assert "likely reason" in against.text


def test_budget_note_names_the_dataset_and_stays_quiet_at_the_paper_budget():
    assert "the data is digits, not CIFAR-10" in v.budget_note([{"steps": 500, "dataset": "digits"}])
    paper = v.budget_note([{"steps": 64000, "images": None, "image_size": None, "dataset": "cifar10"}])
    assert paper.startswith("seed-to-seed variation")
    assert "up to 2,000" in v.budget_note(
        [{"steps": 1000, "dataset": "cifar10"}, {"steps": 2000, "dataset": "cifar10"}]
    )


def means(p20, p56, r20, r56):
    return [
        {"kind": k, "depth": d, "mean_std": m}
        for (k, d), m in zip(
            [("plain", 20), ("plain", 56), ("resnet", 20), ("resnet", 56)], [p20, p56, r20, r56]
        )
    ]


def test_responses_agree_with_fig7_like_numbers():
    x = v.responses(means(1.5, 1.5, 0.9, 0.6))
    assert x.outcome == "agrees"
    assert "ResNet-56's layers respond more weakly than plain-56's (mean std 0.60 vs 1.50)" in x.text
    assert "ResNet-56's respond more weakly than ResNet-20's (0.60 vs 0.90)" in x.text


def test_responses_on_the_lesson_cpu_numbers_are_the_opposite_of_fig7():
    """lesson-cpu at the last step: ResNet-56 4.38, plain-56 1.49 (mean std)."""
    x = v.responses(means(1.3, 1.49, 2.1, 4.38), LESSON)
    assert x.outcome == "contradicts"
    assert "ResNet-56's layers respond **more strongly** than plain-56's (mean std 4.38 vs 1.49)" in x.text
    assert "The opposite of the paper" in x.text and "2,340 steps" in x.text
    mixed = v.responses(means(1.3, 1.49, 0.5, 4.38))  # below plain at 20, above at 56
    assert mixed.outcome == "mixed"


def test_response_means_averages_each_runs_layers():
    resp = pd.DataFrame({"run_id": ["a", "a", "b"], "std": [1.0, 3.0, 5.0]})
    runs = pd.DataFrame({"id": ["a", "b"], "kind": ["plain", "resnet"], "depth": [8, 8]})
    m = v.response_means(resp, runs).set_index("run_id")
    assert m.loc["a", "mean_std"] == 2.0 and m.loc["b", "kind"] == "resnet"


def test_gradient_growth_flips():
    agree = v.gradient_growth(
        [{"kind": "plain", "depth": 56, "ratio": 4000.0}, {"kind": "resnet", "depth": 56, "ratio": 12.0}]
    )
    assert agree.outcome == "agrees"
    assert (
        "plain-56's weight-gradient norm grows 4,000-fold toward the input, ResNet-56's grows 12-fold"
        in agree.text
    )
    against = v.gradient_growth(
        [{"kind": "plain", "depth": 56, "ratio": 0.5}, {"kind": "resnet", "depth": 56, "ratio": 2.0}]
    )
    assert against.outcome == "contradicts" and "shrinks to 0.5" in against.text
    assert v.gradient_growth([{"kind": "plain", "depth": 56, "ratio": 9.0}], norm="none").outcome == "unclear"


def lesion_table(deltas, ds, base=0.1):
    return pd.DataFrame(
        {
            "block": [f"layer{i}" for i in range(len(deltas))],
            "base_error": base,
            "delta": deltas,
            "error": [base + d for d in deltas],
            "downsampling": ds,
        }
    )


def test_lesions_flip():
    ds = [False, False, True, False]
    res_ok = v.lesion_row("ResNet-56", "resnet", lesion_table([0.01, 0.02, 0.2, 0.01], ds))
    plain_bad = v.lesion_row("plain-56", "plain", lesion_table([0.6, 0.7, 0.8, 0.7], ds))
    agree = v.lesions([res_ok, plain_bad])
    assert agree.outcome == "agrees"
    assert (
        "ResNet-56: +1.3 points on average at blocks that keep the shape; "
        "worst layer2 (+20.0, a downsampling block)" in agree.text
    )
    # ResNet-56 of lesson-cpu style: block 1 costs 44 points and it keeps the shape
    res_bad = v.lesion_row("ResNet-56", "resnet", lesion_table([0.44, 0.3, 0.1, 0.3], ds))
    against = v.lesions([res_bad, v.lesion_row("plain-56", "plain", lesion_table([0.1, 0.1, 0.1, 0.1], ds))])
    assert against.outcome == "contradicts" and "These runs disagree: Veit et al." in against.text
    assert "worst layer0 (+44.0, a block that keeps the shape)" in against.text


def test_landscape_and_shattering_flip():
    assert (
        v.landscape(
            [
                {"label": "p", "kind": "plain", "roughness": 0.05},
                {"label": "r", "kind": "resnet", "roughness": 0.0},
            ]
        ).outcome
        == "agrees"
    )
    x = v.landscape(
        [
            {"label": "p", "kind": "plain", "roughness": 0.0},
            {"label": "r", "kind": "resnet", "roughness": 0.02},
        ]
    )
    assert x.outcome == "contradicts" and "plain 0.000, residual 0.020" in x.text
    lag = [{"kind": "plain", "depth": 50, "mean": 0.1}, {"kind": "resnet", "depth": 50, "mean": 0.8}]
    assert v.shattering(lag).outcome == "agrees"
    lag[0]["mean"] = 0.9
    assert v.shattering(lag).outcome == "contradicts"


@pytest.mark.parametrize(
    "fn",
    [
        v.plain_depth,
        v.residual_depth,
        v.residual_vs_plain,
        v.not_overfitting,
        v.responses,
        v.gradient_growth,
        v.lesions,
        v.landscape,
        v.shattering,
    ],
)
def test_no_rows_no_sentence(fn):
    assert fn([]).outcome == "missing" and fn([]).text == ""
