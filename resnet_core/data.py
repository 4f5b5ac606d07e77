"""Datasets as in-memory uint8 tensors, augmented per batch on the training device.

Sources: a torchvision dataset by name (read from ``data_root``, downloaded only when asked),
a ``.npz`` file (x_train, y_train, x_test, y_test, optional classes), an ImageFolder tree
(train/<class>/*, test/<class>/*; decoded once, then cached), or ``digits``, scikit-learn's
bundled 8x8 handwritten digits, which needs no file and no network.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

NAMED = ("digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "svhn")
NO_FLIP = ("digits", "mnist", "fashion_mnist", "svhn")  # mirrored digits are other symbols
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_CLASSES = 100_000  # labels 0..K-1; ImageNet-21k has 21,841 (a label of 1e9 is an error)


class DataError(ValueError):
    """The dataset can't be had or read. The message says what to do."""


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # uint8 N,C,H,W
    y_train: torch.Tensor  # int64 N
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    mean: torch.Tensor = field(default=None)  # per channel, in [0, 1], from the training images
    std: torch.Tensor = field(default=None)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    def to(self, device) -> Dataset:
        for k in ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val", "mean", "std"):
            v = getattr(self, k)
            if v is not None:
                setattr(self, k, v.to(device))
        return self


def default_data_root() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "resnet_lab", "data")


def data_root_of(data_root: str | None = None) -> str:
    """The folder torchvision datasets are read from and downloaded into: ``data_root`` when
    given (TrainConfig.data_root, --data-root), else :func:`default_data_root`. The trainer,
    the command line and the app all resolve it here."""
    return os.path.expanduser(data_root) if data_root else default_data_root()


def _mnist_files(folder: str) -> tuple[tuple[str, ...], ...]:
    raw = tuple(
        f"{folder}/raw/{f}-idx{d}-ubyte"
        for f, d in (("train-images", 3), ("train-labels", 1), ("t10k-images", 3), ("t10k-labels", 1))
    )
    legacy = (f"{folder}/processed/training.pt", f"{folder}/processed/test.pt")
    return (raw, legacy)


# The files torchvision 0.29's dataset classes read under the data root, as their own checks
# see them (CIFAR10/100._check_integrity and _load_meta, MNIST._check_exists and
# _check_legacy_exist, SVHN._check_integrity), both splits: one or more alternative layouts,
# each a tuple of files that must all exist (the first is the one a download writes).
TORCHVISION_FILES: dict[str, tuple[tuple[str, ...], ...]] = {
    "cifar10": (
        tuple(
            f"cifar-10-batches-py/{f}"
            for f in (
                "data_batch_1",
                "data_batch_2",
                "data_batch_3",
                "data_batch_4",
                "data_batch_5",
                "test_batch",
                "batches.meta",
            )
        ),
    ),
    "cifar100": (("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"),),
    "mnist": _mnist_files("MNIST"),
    "fashion_mnist": _mnist_files("FashionMNIST"),
    "svhn": (("train_32x32.mat", "test_32x32.mat"),),
}
TORCHVISION_WHERE = {  # the same, in words, for messages
    "cifar10": "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)",
    "cifar100": "cifar-100-python/ (train, test, meta)",
    "mnist": "MNIST/raw/ (the four unpacked idx files)",
    "fashion_mnist": "FashionMNIST/raw/ (the four unpacked idx files)",
    "svhn": "train_32x32.mat and test_32x32.mat",
}
CLI_REMEDY = (
    "pass --download to fetch it into {root}, --data-root DIR where it already is, "
    "a .npz or ImageFolder path as --dataset, or --dataset digits (offline)"
)


def missing_files(name: str, data_root: str | None = None) -> list[str]:
    """The files torchvision needs for the named dataset that are not under the data root,
    relative to it; [] when it is all there. Cheap: it only looks for the files, it reads
    none (torchvision checks the CIFAR and SVHN files' MD5 sums when it loads them, so a
    corrupted file passes here and fails at load). Raises DataError for a name that is not a
    torchvision dataset."""
    if name not in TORCHVISION_FILES:
        raise DataError(f"{name!r} is not a torchvision dataset; those are {', '.join(TORCHVISION_FILES)}")
    root = Path(data_root_of(data_root))
    first = None
    for layout in TORCHVISION_FILES[name]:
        miss = [f for f in layout if not (root / f).is_file()]
        if not miss:
            return []
        first = miss if first is None else first
    return first


def on_disk(name: str, data_root: str | None = None) -> bool:
    """Whether the named torchvision dataset is in the data root (see :func:`missing_files`)."""
    return not missing_files(name, data_root)


def not_found_message(name: str, data_root: str | None = None, remedy: str = CLI_REMEDY) -> str:
    """One line: which dataset, the folder looked in, what was looked for, what to do.
    ``remedy`` may hold ``{root}``."""
    root = data_root_of(data_root)
    miss = missing_files(name, data_root)
    layout = TORCHVISION_FILES[name][0]
    part = (
        f"; missing: {', '.join(m.rsplit('/', 1)[-1] for m in miss)}"
        if miss and len(miss) < len(layout)
        else ""
    )
    return (
        f"dataset {name!r} was not found in {root} (torchvision looks there for "
        f"{TORCHVISION_WHERE[name]}{part}): {remedy.format(root=root)}"
    )


def require_on_disk(
    name: str, data_root: str | None = None, download: bool = False, remedy: str = CLI_REMEDY
) -> None:
    """Raise DataError (:func:`not_found_message`) when ``name`` is a torchvision dataset that
    is not in the data root and will not be downloaded; other datasets pass."""
    if name in TORCHVISION_FILES and not download and not on_disk(name, data_root):
        raise DataError(not_found_message(name, data_root, remedy))


def is_path_dataset(name: str) -> bool:
    return name.endswith(".npz") or os.sep in name or "/" in name or os.path.isdir(name)


def check_source(name: str) -> None:
    """Cheap check of a dataset name or path, before any run folder is made."""
    if not isinstance(name, str) or not name:
        raise DataError(f"dataset must be a name ({', '.join(NAMED)}) or a path")
    if is_path_dataset(name):
        p = Path(name).expanduser()
        try:
            p.stat()
        except FileNotFoundError:
            pass
        except OSError as e:  # a name longer than the filesystem allows, a link loop, ...
            raise DataError(
                f"dataset path {name[:80]!r}{'...' if len(name) > 80 else ''} can't "
                f"be read ({e.strerror}); give a .npz file or an ImageFolder folder "
                "path the filesystem accepts"
            ) from None
        if not p.exists():
            raise DataError(
                f"dataset path {name!r} does not exist; give a .npz file, an "
                f"ImageFolder folder (train/<class>/, test/<class>/), or a name: "
                f"{', '.join(NAMED)}"
            )
        if p.is_file() and p.suffix != ".npz":
            raise DataError(
                f"dataset path {name!r} is a file but not a .npz; accepted: a .npz "
                "file or an ImageFolder folder"
            )
    elif name not in NAMED:
        raise DataError(
            f"dataset={name!r} is not accepted; accepted: {', '.join(NAMED)}, a .npz "
            "path, or an ImageFolder folder path"
        )


def load_dataset(
    name: str,
    data_root: str | None = None,
    download: bool = False,
    subset: int | None = None,
    image_size: int | None = None,
    val_split: int = 0,
    seed: int = 0,
) -> Dataset:
    """Load, resize, subset and split a dataset. Raises DataError with a remedy on failure."""
    check_source(name)
    if is_path_dataset(name):
        p = Path(name).expanduser()
        ds = _load_npz(p) if p.is_file() else _load_imagefolder(p, data_root)
    elif name == "digits":
        ds = _load_digits()
    else:
        ds = _load_torchvision(name, data_root_of(data_root), download)
    # Many files store the test set sorted by class (the shared CIFAR npz, every ImageFolder):
    # one fixed shuffle, the same for every run, makes "the first N test images" -- probe
    # batches, test_size, the app's image picker -- a fair sample that all runs share.
    tp = torch.randperm(len(ds.y_test), generator=torch.Generator().manual_seed(2016))
    ds.x_test, ds.y_test = ds.x_test[tp], ds.y_test[tp]
    if subset is not None:
        if subset < ds.num_classes:
            raise DataError(
                f"subset={subset} is too small: it must hold at least one image of "
                f"each of the {ds.num_classes} classes"
            )
        idx = _stratified_first(ds.y_train, min(subset, len(ds.y_train)), seed)
        ds.x_train, ds.y_train = ds.x_train[idx], ds.y_train[idx]
    if val_split:
        if val_split >= len(ds.y_train):
            raise DataError(
                f"val_split={val_split} must be smaller than the {len(ds.y_train)} training images"
            )
        g = torch.Generator().manual_seed(seed + 7919)
        perm = torch.randperm(len(ds.y_train), generator=g)
        vi, ti = perm[:val_split].sort().values, perm[val_split:].sort().values
        ds.x_val, ds.y_val = ds.x_train[vi], ds.y_train[vi]
        ds.x_train, ds.y_train = ds.x_train[ti], ds.y_train[ti]
    if image_size is not None and image_size != ds.image_size:
        ds.x_train = resize_uint8(ds.x_train, image_size)
        ds.x_test = resize_uint8(ds.x_test, image_size)
        if ds.x_val is not None:
            ds.x_val = resize_uint8(ds.x_val, image_size)
    x = ds.x_train.float().div_(255)
    ds.mean = x.mean(dim=(0, 2, 3))
    ds.std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return ds


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    out = []
    for chunk in x.split(4096):
        y = F.interpolate(
            chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out.append(y.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _stratified_first(y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of n training images with classes as balanced as the data allows: a seeded
    shuffle, then round-robin over the classes (the k-th image of every class before any
    class's (k+1)-th)."""
    g = torch.Generator().manual_seed(seed + 104729)
    perm = torch.randperm(len(y), generator=g)
    _, yp = torch.unique(y[perm], return_inverse=True)  # class index 0..K-1, in shuffled order
    k = int(yp.max()) + 1
    by_class = torch.argsort(yp, stable=True)
    starts = torch.cumsum(torch.bincount(yp, minlength=k), 0) - torch.bincount(yp, minlength=k)
    rank = torch.empty_like(yp)
    rank[by_class] = torch.arange(len(yp)) - starts[yp[by_class]]
    order = torch.argsort(rank * k + yp, stable=True)
    return perm[order[:n]].sort().values


def _to_nchw(x: np.ndarray, what: str) -> torch.Tensor:
    if x.dtype != np.uint8:
        raise DataError(f"{what} must hold uint8 images (0..255), found dtype {x.dtype}")
    if x.ndim == 3:  # N,H,W grayscale
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{what} must be N,H,W,C or N,C,H,W images, found shape {x.shape}")
    if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    if x.shape[1] not in (1, 3, 4):
        raise DataError(f"{what} must have 1, 3 or 4 channels, found shape {x.shape}")
    if x.shape[2] < 4 or x.shape[3] < 4:
        raise DataError(f"{what}: images of {x.shape[2]}x{x.shape[3]} pixels are too small")
    return torch.from_numpy(np.ascontiguousarray(x[:, :3]))


def _labels(y: np.ndarray, n: int, what: str) -> torch.Tensor:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{what} must be {n} integer labels, found dtype {y.dtype} shape {y.shape}")
    if len(y) and y.min() < 0:
        raise DataError(f"{what} has negative labels; labels must be 0..K-1")
    if len(y) and int(y.max()) >= MAX_CLASSES:  # int(): a uint64 beyond int64 compares exactly
        raise DataError(
            f"{what} has a label of {int(y.max())}; labels must be 0..K-1 with K at "
            f"most {MAX_CLASSES:,} classes"
        )
    return torch.from_numpy(y.astype(np.int64))


NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test", "classes")


def check_npz_sizes(p: Path) -> None:
    """Refuse a .npz whose arrays would not fit in memory, from the zip directory and each
    array's .npy header alone (nothing is decompressed): a few KB can expand to gigabytes.
    An array whose header claims more bytes than the archive stores is refused too."""
    from .memory import fmt_bytes, host_memory_limit, npz_members

    members = npz_members(p)
    total = 0
    for name in NPZ_ARRAYS:
        if name not in members:
            continue
        shape, dtype, stored = members[name]
        if dtype.hasobject:
            continue  # np.load refuses pickled objects with its own message
        need = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if need > stored:
            raise DataError(
                f"{p}: array {name} claims {fmt_bytes(need)} ({shape}, {dtype}) but "
                f"the archive holds {fmt_bytes(stored)} of it; the file is corrupt"
            )
        total += need
    limit, what = host_memory_limit()
    if total > limit // 2:
        raise DataError(
            f"{p}: its arrays expand to {fmt_bytes(total)}, more than half of {what} "
            f"({fmt_bytes(limit)}); use a smaller dataset or a subset saved on its own"
        )


def _load_npz(p: Path) -> Dataset:
    try:
        check_npz_sizes(p)
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
            if missing:
                raise DataError(
                    f"{p}: missing array(s) {missing}; a .npz dataset needs x_train, "
                    "y_train, x_test, y_test (uint8 images, integer labels) and may "
                    "hold classes"
                )
            arrays = {k: z[k] for k in NPZ_ARRAYS if k in z.files}
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(
            f"{p}: not a readable .npz file ({e}); expected numpy.savez output with "
            "x_train, y_train, x_test, y_test"
        ) from None
    for k in ("x_train", "x_test"):
        if arrays[k].ndim == 0 or len(arrays[k]) == 0:
            raise DataError(
                f"{p}: {k} holds no images; a dataset needs at least one training and one test image"
            )
    xtr = _to_nchw(arrays["x_train"], "x_train")
    xte = _to_nchw(arrays["x_test"], "x_test")
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(
            f"{p}: x_train images {tuple(xtr.shape[1:])} and x_test images "
            f"{tuple(xte.shape[1:])} differ in shape"
        )
    ytr = _labels(arrays["y_train"], len(xtr), "y_train")
    yte = _labels(arrays["y_test"], len(xte), "y_test")
    k = int(max(ytr.max(), yte.max())) + 1 if len(ytr) else 0
    if "classes" in arrays:
        if arrays["classes"].ndim != 1 or len(arrays["classes"]) > MAX_CLASSES:
            raise DataError(f"{p}: classes must be a list of at most {MAX_CLASSES:,} names")
        classes = [str(c) for c in arrays["classes"].tolist()]
        if len(classes) < k:
            raise DataError(f"{p}: labels go up to {k - 1} but only {len(classes)} classes are named")
    else:
        classes = [str(i) for i in range(k)]
    if len(classes) < 2 or len(ytr.unique()) < 2:
        raise DataError(f"{p}: a classification dataset needs at least 2 classes in y_train")
    return Dataset(p.stem, xtr, ytr, xte, yte, classes)


def _load_imagefolder(p: Path, data_root: str | None) -> Dataset:
    for split in ("train", "test"):
        if not (p / split).is_dir():
            raise DataError(
                f"{p}: an ImageFolder dataset needs {split}/<class>/<image> folders; {p / split} is missing"
            )
    classes = sorted(d.name for d in (p / "train").iterdir() if d.is_dir())
    if len(classes) < 2:
        raise DataError(
            f"{p}: found {len(classes)} class folder(s) under train/; a "
            "classification dataset needs at least 2"
        )
    files = {
        s: sorted(f for f in (p / s).rglob("*") if f.suffix.lower() in IMAGE_EXTS) for s in ("train", "test")
    }
    # the cache is keyed by every file's path, size and modification time: moving one image
    # to another class folder (same bytes, same mtime, new path) is a new dataset
    stamp = hashlib.sha1()
    for s in ("train", "test"):
        stamp.update(f"{s}:{len(files[s])}".encode())
        for f in files[s]:
            st = f.stat()
            stamp.update(f"{f.relative_to(p)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    cache_dir = Path(data_root_of(data_root)) / "imagefolder-cache"
    cache = (
        cache_dir
        / f"{p.name}-{hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:8]}-{stamp.hexdigest()[:12]}.pt"
    )
    if cache.exists():
        try:
            d = torch.load(cache, weights_only=True)
            return Dataset(p.name, d["x_train"], d["y_train"], d["x_test"], d["y_test"], d["classes"])
        except Exception:
            pass  # a torn cache is rebuilt below
    from PIL import Image

    index = {c: i for i, c in enumerate(classes)}
    out = {}
    size = None
    for s in ("train", "test"):
        xs, ys = [], []
        for f in files[s]:
            cls = f.relative_to(p / s).parts[0]
            if cls not in index:
                raise DataError(f"{f}: class folder {cls!r} is not among train/'s classes")
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB")
                    if size is None:
                        size = im.size
                    elif im.size != size:
                        im = im.resize(size, Image.BILINEAR)
                    xs.append(np.asarray(im))
            except Exception as e:
                raise DataError(f"{f}: not a readable image ({e})") from None
            ys.append(index[cls])
        if not xs:
            raise DataError(f"{p / s}: no images found (accepted: {', '.join(IMAGE_EXTS)})")
        out[f"x_{s}"] = torch.from_numpy(np.stack(xs).transpose(0, 3, 1, 2).copy())
        out[f"y_{s}"] = torch.tensor(ys, dtype=torch.int64)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save({**out, "classes": classes}, tmp)
        os.replace(tmp, cache)
    except OSError:
        pass  # caching is an optimization; a read-only cache folder is fine
    return Dataset(p.name, out["x_train"], out["y_train"], out["x_test"], out["y_test"], classes)


def _load_digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("dataset 'digits' needs scikit-learn (pip install scikit-learn)") from None
    d = load_digits()
    x = torch.from_numpy((d.images * (255.0 / 16.0)).round().astype(np.uint8))[:, None]
    y = torch.from_numpy(d.target.astype(np.int64))
    # a fixed split: every 5th image is a test image (359 test, 1,438 train)
    test = torch.arange(len(y)) % 5 == 4
    return Dataset("digits", x[~test], y[~test], x[test], y[test], [str(i) for i in range(10)])


def _load_torchvision(name: str, root: str, download: bool) -> Dataset:
    if not download:
        require_on_disk(name, root)  # the message the app and the CLI give before queueing
    import torchvision.datasets as tvd

    remedy = CLI_REMEDY.format(root=root)
    try:
        if name == "svhn":
            tr = tvd.SVHN(root, split="train", download=download)
            te = tvd.SVHN(root, split="test", download=download)
            xtr, xte = torch.from_numpy(tr.data), torch.from_numpy(te.data)
            ytr, yte = torch.from_numpy(tr.labels).long(), torch.from_numpy(te.labels).long()
            classes = [str(i) for i in range(10)]
        else:
            cls = {
                "cifar10": tvd.CIFAR10,
                "cifar100": tvd.CIFAR100,
                "mnist": tvd.MNIST,
                "fashion_mnist": tvd.FashionMNIST,
            }[name]
            tr = cls(root, train=True, download=download)
            te = cls(root, train=False, download=False)  # one archive holds both splits
            xtr, xte = (torch.as_tensor(np.asarray(d.data)) for d in (tr, te))
            if xtr.ndim == 3:
                xtr, xte = xtr[:, None], xte[:, None]
            else:
                xtr, xte = xtr.permute(0, 3, 1, 2), xte.permute(0, 3, 1, 2)
            ytr, yte = torch.as_tensor(tr.targets).long(), torch.as_tensor(te.targets).long()
            classes = list(tr.classes)
    except RuntimeError as e:
        if "not found" in str(e).lower() or "corrupted" in str(e).lower():
            raise DataError(f"dataset {name!r} in {root} is missing or corrupted ({e}): {remedy}") from None
        raise
    except OSError as e:  # URLError, connection refused, DNS failure: no network
        raise DataError(f"dataset {name!r} could not be downloaded ({e}); {remedy}") from None
    return Dataset(name, xtr.contiguous(), ytr, xte.contiguous(), yte, classes)


def augment_kind(cfg_augment: str, dataset_name: str) -> str:
    if cfg_augment != "auto":
        return cfg_augment
    return "crop" if dataset_name in NO_FLIP else "flip_crop"


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """The paper's augmentation on a whole uint8 batch at once: pad by 1/8 of the side (4 px at
    32), random crop back, random horizontal flip. Random numbers come from ``generator``
    (on the CPU) so a run is a function of its seed and step."""
    if kind == "none":
        return x
    b, c, h, w = x.shape
    pad = max(1, h // 8)
    off = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).to(x.device)
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = (off[0][:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (off[1][:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    if kind == "flip_crop":
        # a flipped crop reads the same window right to left
        flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)[:, None, None, None]
        mirrored = (off[1][:, None] + (w - 1) - torch.arange(w, device=x.device))[:, None, None, :]
        cols = torch.where(flip, mirrored, cols)
    return xp[bi, ci, rows, cols]


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 N,C,H,W -> float, standardized per channel."""
    x = x.float().div_(255)
    return (x - mean[None, :, None, None]) / std[None, :, None, None]
