"""Is a torchvision dataset on disk? resnet_core.data.missing_files / on_disk look for the files
torchvision reads, without loading them; load_dataset and the CLI refuse early with one message."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets as tvd

from resnet_core.data import (
    TORCHVISION_FILES,
    DataError,
    data_root_of,
    default_data_root,
    load_dataset,
    missing_files,
    not_found_message,
    on_disk,
    require_on_disk,
)

TV_NAMES = ("cifar10", "cifar100", "mnist", "fashion_mnist", "svhn")


def touch(root: Path, rel: str, data: bytes = b"x"):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def test_the_layouts_are_the_files_torchvision_reads():
    """The first layout of each dataset is what the installed torchvision's classes check."""

    def cifar(cls):
        return {f"{cls.base_folder}/{f}" for f, _ in cls.train_list + cls.test_list} | {
            f"{cls.base_folder}/{cls.meta['filename']}"
        }

    def mnist(cls):
        return {f"{cls.__name__}/raw/{os.path.splitext(f)[0]}" for f, _ in cls.resources}

    want = {
        "cifar10": cifar(tvd.CIFAR10),
        "cifar100": cifar(tvd.CIFAR100),
        "mnist": mnist(tvd.MNIST),
        "fashion_mnist": mnist(tvd.FashionMNIST),
        "svhn": {tvd.SVHN.split_list[s][1] for s in ("train", "test")},
    }
    assert set(TORCHVISION_FILES) == set(TV_NAMES)
    for name in TV_NAMES:
        assert set(TORCHVISION_FILES[name][0]) == want[name], name
    legacy = {f"MNIST/processed/{tvd.MNIST.training_file}", f"MNIST/processed/{tvd.MNIST.test_file}"}
    assert set(TORCHVISION_FILES["mnist"][1]) == legacy


@pytest.mark.parametrize("name", TV_NAMES)
def test_empty_root_is_missing_everything_and_a_full_one_is_found(name, tmp_path):
    layout = TORCHVISION_FILES[name][0]
    assert missing_files(name, str(tmp_path)) == list(layout)
    assert not on_disk(name, str(tmp_path))
    for rel in layout[:-1]:
        touch(tmp_path, rel)
    assert missing_files(name, str(tmp_path)) == [layout[-1]]  # one file short: still missing
    assert not on_disk(name, str(tmp_path))
    touch(tmp_path, layout[-1])
    assert missing_files(name, str(tmp_path)) == [] and on_disk(name, str(tmp_path))
    assert not on_disk(name, str(tmp_path / "elsewhere"))


def test_a_folder_in_place_of_a_file_and_an_unpacked_archive_do_not_count(tmp_path):
    layout = TORCHVISION_FILES["cifar10"][0]
    for rel in layout[:-1]:
        touch(tmp_path, rel)
    (tmp_path / layout[-1]).mkdir()
    assert not on_disk("cifar10", str(tmp_path))
    touch(tmp_path, "cifar-10-python.tar.gz")  # torchvision extracts it only with download=True
    assert not on_disk("cifar10", str(tmp_path / "x"))
    assert not on_disk("cifar100", str(tmp_path))


def test_mnist_legacy_processed_files_count(tmp_path):
    touch(tmp_path, "FashionMNIST/processed/training.pt")
    assert not on_disk("fashion_mnist", str(tmp_path))
    touch(tmp_path, "FashionMNIST/processed/test.pt")
    assert on_disk("fashion_mnist", str(tmp_path))
    assert not on_disk("mnist", str(tmp_path))  # another folder


def test_the_default_root_is_the_trainers(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_root_of(None) == default_data_root() == str(tmp_path / "cache" / "resnet_lab" / "data")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root_of("~/d") == str(tmp_path / "home" / "d")
    for rel in TORCHVISION_FILES["svhn"][0]:
        touch(Path(default_data_root()), rel)
    assert on_disk("svhn") and not on_disk("svhn", str(tmp_path))


def test_not_torchvision_names_are_refused():
    for name in ("digits", "imagenet", "x.npz"):
        with pytest.raises(DataError, match="not a torchvision dataset"):
            missing_files(name)
    require_on_disk("digits")  # other sources pass the check
    require_on_disk("/some/file.npz")


def test_the_message_names_dataset_folder_files_and_remedies(tmp_path):
    msg = not_found_message("cifar10", str(tmp_path))
    assert "'cifar10'" in msg and str(tmp_path) in msg and "cifar-10-batches-py/" in msg
    assert "--download" in msg and "--data-root" in msg and "digits" in msg
    touch(tmp_path, "cifar-10-batches-py/data_batch_1")
    part = not_found_message("cifar10", str(tmp_path), remedy="do X in {root}")
    assert "missing: data_batch_2" in part and part.endswith(f"do X in {tmp_path}")
    with pytest.raises(DataError) as e:
        require_on_disk("cifar10", str(tmp_path), download=False, remedy="R")
    assert str(e.value) == not_found_message("cifar10", str(tmp_path), remedy="R")
    require_on_disk("cifar10", str(tmp_path), download=True)  # will be downloaded: passes


def _idx(path: Path, arr: np.ndarray):
    """An uncompressed idx file (the MNIST format) holding uint8 ``arr``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    code = 0x0800 | arr.ndim
    path.write_bytes(
        struct.pack(">I", code) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()
    )


def test_found_means_torchvision_loads_it_and_missing_means_the_same_message(tmp_path):
    """MNIST's raw files carry no checksum: what on_disk finds, torchvision loads."""
    root = str(tmp_path)
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_root=root)
    assert str(e.value) == not_found_message("mnist", root)
    assert not any(tmp_path.iterdir())  # nothing fetched, nothing written
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    for split, n in (("train", 30), ("t10k", 10)):
        _idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _idx(raw / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    assert on_disk("mnist", root)
    ds = load_dataset("mnist", data_root=root)
    assert ds.x_train.shape == (30, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)


def fake_cifar10(root: Path):
    """cifar-10-batches-py in torchvision's format (pickled dicts), 10 images per batch."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8), "labels": list(range(10))}
        (folder / name).write_bytes(pickle.dumps(d))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))


def test_cli_refuses_before_queueing_a_missing_dataset(tmp_path, monkeypatch, capsys):
    from resnet_core.__main__ import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    want = not_found_message("cifar10")
    for argv in (
        ["train", "--dataset", "cifar10", "--preset", "smoke", "--background"],
        ["train", "--dataset", "cifar10", "--preset", "smoke"],
        ["sweep", "quick", "--dataset", "cifar10", "--background"],
        ["sweep", "quick", "--dataset", "cifar10", "--dry-run"],
    ):
        assert main(argv + ["--runs-dir", str(runs)]) == 2, argv
        out, err = capsys.readouterr()
        assert err.strip() == f"error: {want}", argv
        # a dry run prints the configs it would queue, then the same refusal
        assert ('"model": "plain56"' in out) == ("--dry-run" in argv), argv
    assert not runs.exists() or not [p for p in runs.iterdir() if not p.name.startswith(".")]
    # with the files there, --background queues (the runner is not started in this test)
    fake_cifar10(Path(default_data_root()))
    from resnet_core import jobs

    monkeypatch.setattr(jobs, "ensure_runner", lambda store: None)
    assert (
        main(["train", "--dataset", "cifar10", "--preset", "smoke", "--background", "--runs-dir", str(runs)])
        == 0
    )
    assert len([p for p in runs.iterdir() if not p.name.startswith(".")]) == 1
