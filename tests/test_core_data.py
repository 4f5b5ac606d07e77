"""Data: digits offline, .npz and ImageFolder paths, subsets, splits, on-device augmentation."""

from pathlib import Path

import numpy as np
import pytest
import torch

from resnet_core.data import DataError, augment_batch, load_dataset

SHARED_NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.npz"


def test_digits_loads_offline():
    ds = load_dataset("digits")
    assert ds.x_train.dtype == torch.uint8 and ds.x_train.shape[1:] == (1, 8, 8)
    assert len(ds.y_train) + len(ds.y_test) == 1797
    assert ds.num_classes == 10 and set(ds.y_test.tolist()) == set(range(10))
    assert int(ds.x_train.max()) == 255  # rescaled from sklearn's 0..16


def _write_npz(path, nhwc=True, n=60, classes=True):
    rng = np.random.default_rng(0)
    shape = (n, 12, 12, 3) if nhwc else (n, 3, 12, 12)
    arrays = dict(
        x_train=rng.integers(0, 256, shape, dtype=np.uint8),
        y_train=np.arange(n) % 3,
        x_test=rng.integers(0, 256, (9,) + shape[1:], dtype=np.uint8),
        y_test=np.arange(9) % 3,
    )
    if classes:
        arrays["classes"] = np.array(["a", "b", "c"])
    np.savez(path, **arrays)
    return arrays


@pytest.mark.parametrize("nhwc", [True, False])
def test_npz_nhwc_and_nchw(tmp_path, nhwc):
    arrays = _write_npz(tmp_path / "d.npz", nhwc=nhwc)
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.x_train.shape == (60, 3, 12, 12)
    assert ds.classes == ["a", "b", "c"]
    ref = arrays["x_train"] if not nhwc else arrays["x_train"].transpose(0, 3, 1, 2)
    assert np.array_equal(ds.x_train.numpy(), ref)


def test_subset_is_stratified_and_val_split_disjoint(tmp_path):
    _write_npz(tmp_path / "d.npz", n=90)
    ds = load_dataset(str(tmp_path / "d.npz"), subset=30, val_split=6, image_size=8)
    assert len(ds.y_train) == 24 and len(ds.y_val) == 6
    assert torch.bincount(torch.cat([ds.y_train, ds.y_val])).tolist() == [10, 10, 10]
    assert ds.x_train.shape[-1] == ds.x_test.shape[-1] == ds.x_val.shape[-1] == 8


def test_imagefolder_loads_and_caches(tmp_path):
    from PIL import Image

    root = tmp_path / "folder"
    for split, n in (("train", 4), ("test", 2)):
        for ci, cls in enumerate(["cat", "dog"]):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (10, 10), (ci * 200, i * 10, 5)).save(d / f"{i}.png")
    ds = load_dataset(str(root), data_root=str(tmp_path / "cache"))
    assert ds.classes == ["cat", "dog"] and ds.x_train.shape == (8, 3, 10, 10)
    assert ds.y_train.tolist() == [0] * 4 + [1] * 4
    assert int(ds.x_train[4, 0, 0, 0]) == 200
    assert list((tmp_path / "cache" / "imagefolder-cache").glob("*.pt"))
    again = load_dataset(str(root), data_root=str(tmp_path / "cache"))
    assert torch.equal(again.x_train, ds.x_train)


def test_imagefolder_with_one_class_is_refused(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        (tmp_path / split / "only").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / split / "only" / "0.png")
    with pytest.raises(DataError, match="at least 2"):
        load_dataset(str(tmp_path), data_root=str(tmp_path / "c"))


@pytest.mark.parametrize(
    "name,match", [("imagenet", "accepted: digits"), ("/no/such/file.npz", "does not exist")]
)
def test_unknown_dataset_names_the_choices(name, match):
    with pytest.raises(DataError, match=match):
        load_dataset(name)


def test_missing_torchvision_dataset_says_what_to_do(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_root=str(tmp_path))
    msg = str(e.value)
    assert "--download" in msg and "--data-root" in msg and "digits" in msg
    assert not any(tmp_path.iterdir())  # nothing fetched, nothing written


def test_malformed_npz(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "partial.npz", x_train=np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="missing array"):
        load_dataset(str(tmp_path / "partial.npz"))


def test_augmentation_is_a_shifted_window_or_its_mirror():
    x = torch.randint(1, 255, (64, 3, 16, 16), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, "flip_crop", g)
    assert out.shape == x.shape
    pad = 2
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    flips = 0
    for i in range(len(x)):
        found = False
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                win = xp[i, :, dy : dy + 16, dx : dx + 16]
                if torch.equal(out[i], win):
                    found = True
                elif torch.equal(out[i], win.flip(-1)):
                    found, flips = True, flips + 1
        assert found, f"image {i} is not a crop of its padded source"
    assert 10 < flips < 54  # about half are mirrored
    g.manual_seed(0)
    assert torch.equal(augment_batch(x, "flip_crop", g), out)  # a function of the seed


@pytest.mark.skipif(not SHARED_NPZ.exists(), reason="shared CIFAR-10 npz not present")
def test_shared_cifar10_npz_loads_as_is():
    ds = load_dataset(str(SHARED_NPZ), subset=1000, image_size=16)
    assert ds.num_classes == 10 and ds.classes[0] == "airplane"
    assert ds.x_train.shape == (1000, 3, 16, 16) and len(ds.y_test) == 10000
