"""How much memory a run needs, before anything is made, and whether the machine has it.

A training step holds: the parameters, their gradients and SGD's momentum buffers (exact
bytes, from the model built on PyTorch's "meta" device, which allocates nothing); the
activations autograd saves for the backward pass of one batch (counted with
``torch.autograd.graph.saved_tensors_hooks`` on a forward pass over meta tensors, each storage
once); and the dataset, which the lab keeps in memory as uint8 images (at its peak while
loading: the images as read, resized, and one float copy of the training images for the
per-channel mean). Plus what torch itself takes in a process (``RUNTIME_BYTES``).

The estimate is for fp32; a bf16 run saves some activations at half the size, so it is an
upper bound there. ``check_run`` refuses a run whose estimate exceeds the memory of the
machine that will train it (host RAM, or the cgroup limit when lower; a CUDA GPU's memory when
the run trains there), naming both numbers.
"""

from __future__ import annotations

import functools
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

GB = 1 << 30
MB = 1 << 20
RUNTIME_BYTES = 300 * MB  # a python process with torch imported, before any tensor (RSS)
LIMIT_ENV = "RESNET_LAB_MEMORY_LIMIT"  # e.g. "8G": a lower limit for the lab on a shared machine

# (train images, test images, channels, height, width, classes) of the named datasets
NAMED_SHAPES = {
    "digits": (1438, 359, 1, 8, 8, 10),
    "cifar10": (50000, 10000, 3, 32, 32, 10),
    "cifar100": (50000, 10000, 3, 32, 32, 100),
    "mnist": (60000, 10000, 1, 28, 28, 10),
    "fashion_mnist": (60000, 10000, 1, 28, 28, 10),
    "svhn": (73257, 26032, 3, 32, 32, 10),
}


class MemoryLimitError(ValueError):
    """A run can't fit in the memory of the machine that would train it. The message names
    the estimate and the limit."""


@dataclass
class DataShape:
    n_train: int  # training images in the file (before subset and val_split)
    n_test: int
    channels: int  # as trained (at most 3: a 4th channel is dropped at load)
    height: int  # as stored
    width: int
    num_classes: int


@dataclass
class Estimate:
    n_params: int
    params_bytes: int  # parameters and buffers (BN running statistics)
    grads_bytes: int
    momentum_bytes: int
    activations_bytes: int  # saved for backward, one batch
    data_bytes: int
    batch_size: int
    image_size: int

    @property
    def total(self) -> int:
        return (
            self.params_bytes
            + self.grads_bytes
            + self.momentum_bytes
            + self.activations_bytes
            + self.data_bytes
            + RUNTIME_BYTES
        )

    def breakdown(self) -> str:
        return (
            f"parameters {fmt_bytes(self.params_bytes)}, gradients "
            f"{fmt_bytes(self.grads_bytes)}, momentum {fmt_bytes(self.momentum_bytes)}, "
            f"activations {fmt_bytes(self.activations_bytes)} (batch {self.batch_size} at "
            f"{self.image_size}x{self.image_size}), data {fmt_bytes(self.data_bytes)}, "
            f"torch {fmt_bytes(RUNTIME_BYTES)}"
        )


def fmt_bytes(n: float) -> str:
    if n >= GB:
        return f"{n / GB:.1f} GB"
    if n >= MB:
        return f"{n / MB:.1f} MB"
    return f"{n / 1024:.0f} KB"


# --- the limit ------------------------------------------------------------------------------
def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) reads as None


def host_memory_limit() -> tuple[int, str]:
    """(bytes, what they are): the host's RAM, or the cgroup's memory limit when lower
    (cgroup v2 /sys/fs/cgroup/memory.max, else v1 memory.limit_in_bytes)."""
    ram = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    ram = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if ram is None:
        try:
            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            ram = None
    best = (ram, "the host's RAM") if ram else (None, "")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        lim = _read_int(path)
        if lim is not None and lim < (1 << 60) and (best[0] is None or lim < best[0]):
            best = (lim, f"the cgroup memory limit ({path})")
    env = _env_limit()
    if env is not None and (best[0] is None or env < best[0]):
        best = (env, f"the limit in ${LIMIT_ENV}")
    if best[0] is None:
        return 1 << 62, "unknown"
    return best


def _env_limit() -> int | None:
    text = os.environ.get(LIMIT_ENV, "").strip().upper().removesuffix("B")
    if not text:
        return None
    mult = {"K": 1 << 10, "M": MB, "G": GB, "T": 1 << 40}.get(text[-1:], 1)
    try:
        return int(float(text.rstrip("KMGT")) * mult)
    except ValueError:
        raise MemoryLimitError(
            f"${LIMIT_ENV}={os.environ[LIMIT_ENV]!r} is not accepted; expected a size such as 8G or 512M"
        ) from None


def device_memory_limit(device: str = "auto") -> tuple[int, str, str]:
    """(bytes, what they are, device type) for the device a run with ``device`` trains on:
    a CUDA GPU's memory, else the host's (see host_memory_limit)."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env = _env_limit()
        if env is not None and env < props.total_memory:
            return env, f"the limit in ${LIMIT_ENV}", "cuda"
        return int(props.total_memory), f"the memory of {props.name}", "cuda"
    b, what = host_memory_limit()
    return b, what, "cpu"


# --- the dataset's shape without loading it ---------------------------------------------------
def npz_members(p: Path) -> dict[str, tuple[tuple, object, int]]:
    """name -> (shape, dtype, stored bytes) of every array of a .npz, read from the zip
    directory and each member's .npy header only (nothing is decompressed beyond that)."""
    import numpy as np

    out = {}
    with zipfile.ZipFile(p) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            out[info.filename[:-4]] = (shape, dtype, info.file_size)
    return out


def dataset_shape(dataset: str, data_root: str | None = None) -> DataShape | None:
    """The dataset's shape, from a table (named), the .npz's headers, or the ImageFolder's
    file count and first image; None when it can't be told without loading it."""
    from .data import is_path_dataset

    if dataset in NAMED_SHAPES:
        return DataShape(*NAMED_SHAPES[dataset])
    if not is_path_dataset(dataset):
        return None
    p = Path(dataset).expanduser()
    try:
        if p.is_file():
            m = npz_members(p)
            xtr, xte = m["x_train"][0], m["x_test"][0]
            c = (
                1
                if len(xtr) == 3
                else (xtr[-1] if xtr[-1] in (1, 3, 4) and xtr[1] not in (1, 3, 4) else xtr[1])
            )
            h, w = (xtr[1], xtr[2]) if len(xtr) == 3 or (len(xtr) == 4 and xtr[-1] == c) else (xtr[2], xtr[3])
            k = m["classes"][0][0] if "classes" in m and len(m["classes"][0]) == 1 else 2
            return DataShape(xtr[0], xte[0], min(int(c), 3), int(h), int(w), max(2, int(k)))
        return _imagefolder_shape(p)
    except (OSError, KeyError, ValueError, IndexError, zipfile.BadZipFile):
        return None  # the loader's own checks say what is wrong


def _imagefolder_shape(p: Path) -> DataShape | None:
    from .data import IMAGE_EXTS

    counts, first = {}, None
    for split in ("train", "test"):
        files = [f for f in (p / split).rglob("*") if f.suffix.lower() in IMAGE_EXTS]
        counts[split] = len(files)
        first = first or (files[0] if files else None)
    if first is None:
        return None
    from PIL import Image

    with Image.open(first) as im:  # reads the header only
        w, h = im.size
    classes = sum(1 for d in (p / "train").iterdir() if d.is_dir())
    return DataShape(counts["train"], counts["test"], 3, h, w, max(2, classes))


# --- the estimate -----------------------------------------------------------------------------
def saved_activation_bytes(model, batch: int, channels: int, size: int) -> int:
    """Bytes autograd saves for backward in one training forward pass of ``model`` (built on
    the meta device) over a batch, each storage counted once."""
    import torch

    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        seen[st._cdata] = max(seen.get(st._cdata, 0), st.nbytes())
        return t

    params = {p.untyped_storage()._cdata for p in model.parameters()}
    x = torch.empty(batch, channels, size, size, device="meta", requires_grad=False)
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
        torch.nn.functional.cross_entropy(out, torch.zeros(batch, dtype=torch.long, device="meta"))
    return sum(n for k, n in seen.items() if k not in params)


def _measure(name: str, cfg, shape: DataShape, size: int) -> tuple[int, int, int, int]:
    """(parameter count, parameter bytes, buffer bytes, saved activation bytes) of model
    ``name`` with ``cfg``'s options, built and run on the meta device. Cached: a listing of
    every model (``models``) measures each family's depth-8 and -14 nets once, not once per
    depth."""
    options = tuple(sorted(cfg.model_options().items()))
    return _measured(name, options, cfg.batch_size, max(2, shape.num_classes), shape.channels, size)


@functools.lru_cache(maxsize=64)
def _measured(name: str, options: tuple, batch: int, classes: int, channels: int, size: int):
    import torch

    from .models import build_model

    with torch.device("meta"):
        model = build_model(name, **dict(options), num_classes=classes, in_channels=channels)
    n_params = sum(p.numel() for p in model.parameters())
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return n_params, params, buffers, saved_activation_bytes(model, batch, channels, size)


def _model_numbers(cfg, shape: DataShape, size: int) -> tuple[int, int, int, int]:
    """``_measure`` of cfg's model. A CIFAR net of depth 6n+2 has three stages of n blocks,
    every block after a stage's first identical to the one before, so each number is exactly
    linear in n: it is measured at n = 1 and 2 and extended (a meta pass over resnet1202's
    3,600 layers takes tens of seconds; two shallow ones well under one)."""
    from .models import parse_name

    family, kind, depth = parse_name(cfg.model)
    if family != "cifar" or depth <= 14:
        return _measure(cfg.model, cfg, shape, size)
    n = (depth - 2) // 6
    one = _measure(f"cifar_{kind}8", cfg, shape, size)
    two = _measure(f"cifar_{kind}14", cfg, shape, size)
    return tuple(a + (n - 1) * (b - a) for a, b in zip(one, two))


def estimate(cfg, shape: DataShape | None = None) -> Estimate:
    """The memory a run of ``cfg`` needs (see the module's docstring)."""
    shape = shape or dataset_shape(cfg.dataset, cfg.data_root) or DataShape(*NAMED_SHAPES["cifar10"])
    size = cfg.image_size or shape.height
    n_params, params, buffers, acts = _model_numbers(cfg, shape, size)
    return Estimate(
        n_params=n_params,
        params_bytes=params + buffers,
        grads_bytes=params,
        momentum_bytes=params if cfg.momentum > 0 else 0,
        activations_bytes=acts,
        data_bytes=data_bytes(cfg, shape),
        batch_size=cfg.batch_size,
        image_size=size,
    )


def data_bytes(cfg, shape: DataShape) -> int:
    """The dataset at load time's peak: the images as read, resized copies, a float32 copy of
    the training images (for the per-channel mean), and int64 labels."""
    n_train = min(cfg.subset, shape.n_train) if cfg.subset else shape.n_train
    n_all = shape.n_train + shape.n_test
    native = n_all * shape.channels * shape.height * shape.width
    size = cfg.image_size or shape.height
    resized = (
        (n_train + shape.n_test) * shape.channels * size * size
        if cfg.image_size and cfg.image_size != shape.height
        else 0
    )
    floats = 4 * n_train * shape.channels * size * size
    return native + resized + floats + 8 * n_all


def check_run(cfg) -> Estimate | None:
    """Refuse ``cfg`` before anything is made when its batch is larger than the training set
    or its estimate exceeds the memory of the machine that would train it. Returns the
    estimate (None when the dataset's shape can't be told without loading it)."""
    from .data import DataError

    shape = dataset_shape(cfg.dataset, cfg.data_root)
    if shape is None:
        return None
    if cfg.subset is not None and cfg.dataset in NAMED_SHAPES and cfg.subset < shape.num_classes:
        # the loader's own message (load_dataset), before the batch check below misleads
        raise DataError(
            f"subset={cfg.subset} is too small: it must hold at least one image of "
            f"each of the {shape.num_classes} classes"
        )
    n_train = min(cfg.subset, shape.n_train) if cfg.subset else shape.n_train
    n_train -= cfg.val_split or 0
    if 0 < n_train < cfg.batch_size:
        e = MemoryLimitError(
            f"--batch-size {cfg.batch_size} is larger than the {n_train} training images; accepted: 1 to that"
        )
        e.field = None
        raise e
    est = estimate(cfg, shape)
    limit, what, _ = device_memory_limit(cfg.device)
    if est.total > limit:
        raise MemoryLimitError(
            f"this run needs about {fmt_bytes(est.total)} of memory ({est.breakdown()}) but "
            f"{what} is {fmt_bytes(limit)}; use a smaller batch size, width or image size"
        )
    return est


__all__ = [
    "Estimate",
    "DataShape",
    "MemoryLimitError",
    "estimate",
    "check_run",
    "dataset_shape",
    "host_memory_limit",
    "device_memory_limit",
    "fmt_bytes",
    "saved_activation_bytes",
    "npz_members",
    "RUNTIME_BYTES",
]
