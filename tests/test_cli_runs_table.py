"""`python -m resnet_core runs`: a header, final train/test errors, readable dataset names."""

from __future__ import annotations

import json

from conftest import train_tiny

from resnet_core import TrainConfig
from resnet_core.__main__ import main


def _final(run_path, split):
    rows = [json.loads(x) for x in (run_path / "metrics.jsonl").read_text().splitlines() if x]
    return [r["error"] for r in rows if r["split"] == split][-1]


def test_runs_has_a_header_final_errors_and_whole_dataset_names(store, tmp_path, capsys):
    done = train_tiny(store, "cifar_resnet8", record=False)
    deep = tmp_path / "a" / "rather" / "deep" / "folder" / "of" / "shared" / "data"
    deep.mkdir(parents=True)
    (deep / "my-cifar.npz").write_bytes(b"")  # queued only: never loaded
    long_name = deep / ("images-" + "x" * 40)
    long_name.mkdir()
    queued = store.create(TrainConfig(model="resnet20", dataset=str(deep / "my-cifar.npz"), iterations=5))
    folder = store.create(TrainConfig(model="plain20", dataset=str(long_name) + "/", iterations=5))

    assert main(["runs", "--runs-dir", str(store.root)]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == ["id", "state", "model", "dataset", "progress", "train", "err", "test", "err"]
    rows = {line.split()[0]: line for line in lines}
    assert set(rows) == {done.id, queued.id, folder.id}

    train_err = f"{100 * _final(done.path, 'train_eval'):.1f}%"
    test_err = f"{100 * _final(done.path, 'test'):.1f}%"
    assert rows[done.id].split() == [done.id, "done", "cifar_resnet8", "digits", "20/20", train_err, test_err]
    # a path shows its own name, whole, not a left-cut tail such as "g/shared/..."
    assert rows[queued.id].split()[1:4] == ["queued", "resnet20", "my-cifar.npz"], rows[queued.id]
    assert rows[queued.id].split()[-2:] == ["-", "-"]  # no errors before the run has them
    # a name longer than the column is cut at its end, so its start still reads
    assert rows[folder.id].split()[3] == "images-" + "x" * 18 + "..."
    # the columns line up: every cell of a column starts at the header's offset
    for col in ("state", "model", "dataset"):
        at = header.index(col)
        assert all(line[at - 2 : at] == "  " and line[at] != " " for line in lines), col
