"""Issue 17: a reference set that claims the paper's orderings shows them in every seed.

The bundled set that claims them is checked here from its raw records (no training, and not
through ``resnet_core.claims``): (a) plain-56 ends at least 10 points above plain-20 in final
eval-mode training error; (b) resnet-56 ends below resnet-20 by more than twice one estimate's
standard error, sqrt(p (1 - p) / n); (c) at the final recorded step the mean response std of
each residual net is below its plain twin's and resnet-56's below resnet-20's. Then the claim
checker itself is tried on records that agree and that contradict."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from resnet_core import RunStore
from resnet_core.__main__ import main
from resnet_core.claims import claim_problems
from resnet_core.reference import ReferenceSetError, check_set, export, list_sets, read_set

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = [s for s in list_sets(ROOT / "reference") if s.meta.get("claims")]
CONV_ROWS = ("bn", "response")  # the recorder's per-conv rows, by their old and new names


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _final_train(run: Path) -> tuple[float, int]:
    rows = [r for r in _rows(run / "metrics.jsonl") if r["split"] == "train_eval"]
    last = max(rows, key=lambda r: r["step"])
    return last["error"], last["n"]


def _final_response(run: Path) -> tuple[float, set]:
    rows = [r for r in _rows(run / "layers.jsonl") if r["type"] in CONV_ROWS]
    last = max(r["step"] for r in rows)
    at = [r for r in rows if r["step"] == last]
    return sum(r["std"] for r in at) / len(at), {r.get("images") for r in at}


def _by_seed(path: Path) -> dict:
    out: dict = {}
    for d in path.iterdir():
        if d.is_dir():
            cfg = json.loads((d / "config.json").read_text())
            kind, depth = re.fullmatch(r"(?:cifar_)?(plain|resnet)(\d+)", cfg["model"]).groups()
            out.setdefault(cfg["seed"], {})[kind, int(depth)] = d
    return out


@pytest.mark.parametrize("s", BUNDLED or [None], ids=lambda s: s.name if s else "none")
def test_the_bundled_set_shows_what_it_claims_in_every_seed(s):
    if s is None:
        pytest.skip("no bundled reference set claims the paper's orderings")
    claims = set(s.meta["claims"])
    seeds = _by_seed(s.path)
    assert len(seeds) >= 3, f"{s.name}: the issue asks for 3 seeds, the set has {sorted(seeds)}"
    for seed, runs in seeds.items():
        assert set(runs) == {("plain", 20), ("plain", 56), ("resnet", 20), ("resnet", 56)}, seed
        err = {k: _final_train(d) for k, d in runs.items()}
        if "deeper-plain-worse" in claims:
            assert err["plain", 56][0] - err["plain", 20][0] >= 0.10, (seed, err)
        if "deeper-residual-better" in claims:
            (a, na), (b, nb) = err["resnet", 20], err["resnet", 56]
            p, n = (a + b) / 2, min(na, nb)
            assert n >= 1000 and b - a < -2 * math.sqrt(p * (1 - p) / n), (seed, a, b, n)
        if "fig7-order" in claims:
            resp = {k: _final_response(d) for k, d in runs.items()}
            assert all(images == {1000} for _, images in resp.values()), (seed, resp)
            std = {k: v for k, (v, _) in resp.items()}
            assert std["resnet", 20] < std["plain", 20] and std["resnet", 56] < std["plain", 56], (seed, std)
            assert std["resnet", 56] < std["resnet", 20], (seed, std)


def test_the_default_set_is_listed_first_and_claims_are_checked(tmp_path):
    """`default: true` puts a set first (pages show it when the user has no runs)."""
    root = tmp_path / "ref"
    for name, meta in (("aaa", {}), ("zzz", {"default": True})):
        (root / name).mkdir(parents=True)
        (root / name / "set.json").write_text(json.dumps({"title": name, "runs": [], **meta}))
    assert [s.name for s in list_sets(root)] == ["zzz", "aaa"]
    (root / "aaa" / "set.json").write_text(json.dumps({"title": "a", "runs": [], "default": "yes"}))
    assert "'default' must be true or false" in read_set(root / "aaa").error


def _doctored(tiny_runs, dst: Path, train: dict, std: dict) -> RunStore:
    """The four real tiny runs (plain8/14, resnet8/14), as one seed, with their final eval-mode training error
    and final conv-response stds replaced by ``train`` / ``std`` ({model: value})."""
    for rid in tiny_runs.list_ids():
        shutil.copytree(tiny_runs.root / rid, dst / rid)
        cfg = json.loads((dst / rid / "config.json").read_text())
        (dst / rid / "config.json").write_text(json.dumps({**cfg, "seed": 0}))  # one seed's four nets
        model = cfg["model"].removeprefix("cifar_")
        last = max(r["step"] for r in _rows(dst / rid / "metrics.jsonl"))
        with open(dst / rid / "metrics.jsonl", "a") as f:
            f.write(
                json.dumps({"step": last + 1, "split": "train_eval", "error": train[model], "n": 5000}) + "\n"
            )
            f.write(json.dumps({"step": last + 1, "split": "test", "error": 0.5, "n": 300}) + "\n")
        with open(dst / rid / "layers.jsonl", "a") as f:
            for o in range(3):
                row = {"step": last + 1, "layer": f"l{o}", "type": "bn", "order": o, "std": std[model]}
                f.write(json.dumps({**row, "mean": 0.0, "images": 1000}) + "\n")
    return RunStore(dst)


PAPER_LIKE = (
    {"plain8": 0.30, "plain14": 0.45, "resnet8": 0.28, "resnet14": 0.25},
    {"plain8": 1.0, "plain14": 0.9, "resnet8": 0.8, "resnet14": 0.7},
)
ALL = "deeper-plain-worse,deeper-residual-better,fig7-order"


def test_claims_follow_the_records(tiny_runs, tmp_path):
    train, std = PAPER_LIKE
    store = _doctored(tiny_runs, tmp_path / "agree", train, std)
    assert claim_problems(store, ALL.split(",")) == []
    # resnet14 within two standard errors of resnet8 (2 x 0.64 points on 5,000 images): (b) fails
    close = _doctored(tiny_runs, tmp_path / "close", {**train, "resnet14": 0.272}, std)
    problems = claim_problems(close, ALL.split(","))
    assert len(problems) == 1 and "'deeper-residual-better' does not hold" in problems[0]
    # residual responses larger than plain (lesson-cpu's ResNet-56): (c) fails, alone
    loud = _doctored(tiny_runs, tmp_path / "loud", train, {**std, "resnet14": 4.38})
    problems = claim_problems(loud, ALL.split(","))
    assert (
        len(problems) == 1 and "'fig7-order' does not hold" in problems[0] and "resnet14 4.380" in problems[0]
    )
    # a gap of 9 points between the plain nets is not the 10: (a) fails
    near = _doctored(tiny_runs, tmp_path / "near", {**train, "plain14": 0.39}, std)
    assert ["'deeper-plain-worse' does not hold" in p for p in claim_problems(near, ALL.split(","))] == [True]


def test_export_refuses_a_claim_the_runs_do_not_show_and_check_catches_an_edited_one(
    tiny_runs, tmp_path, capsys
):
    train, std = PAPER_LIKE
    loud = _doctored(tiny_runs, tmp_path / "loud", train, {**std, "resnet14": 4.38})
    with pytest.raises(ReferenceSetError, match="fig7-order"):
        export(loud, loud.list_ids(), tmp_path / "ref" / "x", title="x", claims=ALL.split(","))
    assert not (tmp_path / "ref" / "x").exists()  # nothing written
    good = _doctored(tiny_runs, tmp_path / "good", train, std)
    args = ["reference", "export", "--all", "--runs-dir", str(good.root), "--to", str(tmp_path / "ref" / "y")]
    assert main([*args, "--title", "y", "--claims", ALL, "--default"]) == 0
    s = read_set(tmp_path / "ref" / "y")
    assert s.meta["claims"] == ALL.split(",") and s.meta["default"] is True and check_set(s) == []
    # a claim added by hand to a set that does not show it: `reference check` says which and why
    meta = {**s.meta, "claims": ["fig7-order", "deeper-depth-wins"]}
    (s.path / "set.json").write_text(json.dumps(meta))
    rid = next(i for i in s.run_ids() if "resnet" in i and "14" in i)
    with open(s.path / rid / "layers.jsonl", "a") as f:
        f.write(
            json.dumps({"step": 10**6, "layer": "l0", "type": "bn", "order": 0, "std": 9.0, "mean": 0}) + "\n"
        )
    problems = check_set(read_set(s.path))
    assert any("'deeper-depth-wins' is not known" in p for p in problems)
    assert any("'fig7-order' does not hold" in p for p in problems)
    assert main(["reference", "check", str(s.path)]) != 0
    assert "fig7-order" in capsys.readouterr().out


def test_ties_duplicates_and_mixed_experiments_are_not_wins(tiny_runs, tmp_path):
    train, std = PAPER_LIKE
    # exactly 10 points between the plain nets is the (a); 9.9 is not
    exact = _doctored(tiny_runs, tmp_path / "exact", {**train, "plain8": 0.35, "plain14": 0.45}, std)
    assert claim_problems(exact, ["deeper-plain-worse"]) == []
    # responses within 2% of each other are a tie on the pages: not claimed as smaller
    tie = _doctored(tiny_runs, tmp_path / "tie", train, {**std, "resnet14": 0.795})
    assert "'fig7-order' does not hold" in claim_problems(tie, ["fig7-order"])[0]
    # a second resnet14 in seed 0: ambiguous, reported
    dup = _doctored(tiny_runs, tmp_path / "dup", train, std)
    rid = next(i for i in dup.list_ids() if "resnet14" in i)
    shutil.copytree(dup.root / rid, dup.root / (rid[:-1] + ("0" if rid[-1] != "0" else "1")))
    assert "two runs of resnet14 in seed 0" in claim_problems(dup, ["fig7-order"])[0]
    # runs of two experiments (another width): no single answer
    mixed = _doctored(tiny_runs, tmp_path / "mixed", train, std)
    cfg_path = mixed.root / next(i for i in mixed.list_ids() if "plain8" in i) / "config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "width": 8}))
    assert "2 experiments" in claim_problems(mixed, ["deeper-plain-worse"])[0]


def test_export_flags_are_checked_and_only_one_set_is_the_default(tiny_runs, tmp_path, capsys):
    train, std = PAPER_LIKE
    good = _doctored(tiny_runs, tmp_path / "good", train, std)
    base = ["reference", "export", "--all", "--runs-dir", str(good.root), "--title", "t"]
    assert main([*base, "--to", str(tmp_path / "ref" / "a"), "--max-weight-steps", "1"]) != 0
    assert "keep at least 2 steps" in capsys.readouterr().err and not (tmp_path / "ref" / "a").exists()
    claims = " deeper-plain-worse , fig7-order"  # spaces around the names are fine
    assert main([*base, "--to", str(tmp_path / "ref" / "a"), "--claims", claims, "--default"]) == 0
    assert read_set(tmp_path / "ref" / "a").meta["claims"] == ["deeper-plain-worse", "fig7-order"]
    assert main(["reference", "check", "--root", str(tmp_path / "ref")]) == 0
    assert main([*base, "--to", str(tmp_path / "ref" / "b"), "--default"]) == 0
    capsys.readouterr()
    assert main(["reference", "check", "--root", str(tmp_path / "ref")]) != 0
    assert "more than one set is the default (pages show the first): a, b" in capsys.readouterr().out
