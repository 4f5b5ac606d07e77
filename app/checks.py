"""Checks on what the browser sends: depths, dataset paths, uploaded images. No streamlit.

Every function raises ``InputError`` with a message meant for the page.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

from resnet_core.store import StoreError, check_run_id

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_UPLOAD_BYTES = 8 * 1024 * 1024  # below the server's own 10 MB (.streamlit/config.toml)
MAX_UPLOAD_PIXELS = 16_000_000  # checked from the header, before decoding (PIL's guard is ~90 MP)
UPLOAD_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
DATA_DIRS_ENV = "RESNET_LAB_DATA_DIRS"


class InputError(ValueError):
    """Bad input from the page; the message says what is accepted."""


def check_depth(depth) -> int:
    """A CIFAR depth 6n+2 (8, 14, 20, ...)."""
    try:
        d = int(depth)
    except (TypeError, ValueError):
        raise InputError(f"depth {depth!r} is not a number; use 6n+2: 8, 14, 20, 32, 44, 56, 110") from None
    if d != depth and not (isinstance(depth, float) and depth.is_integer()):
        raise InputError(f"depth {depth!r} is not a whole number; use 6n+2: 8, 14, 20, 32, 44, 56, 110")
    if d < 8 or (d - 2) % 6:
        near = sorted({max(8, 6 * ((d - 2) // 6) + 2), max(8, 6 * ((d - 2) // 6 + 1) + 2)})
        raise InputError(
            f"depth {d} is not 6n+2 with n >= 1 (the CIFAR nets have 3 stages of "
            f"n two-layer blocks, plus the first conv and the classifier); nearest: "
            f"{' or '.join(map(str, near))}"
        )
    if d > 1202:
        raise InputError(f"depth {d} is deeper than the paper's deepest net (1202)")
    return d


def model_name(kind: str, depth: int) -> str:
    """A model name for resnet_core: the paper's short names where they exist."""
    from resnet_core.models.registry import CIFAR_PLAIN_DEPTHS, CIFAR_RESNET_DEPTHS

    if kind == "resnet" and depth in CIFAR_RESNET_DEPTHS:
        return f"resnet{depth}"
    if kind == "plain" and depth in CIFAR_PLAIN_DEPTHS:
        return f"plain{depth}"
    if kind not in ("plain", "resnet", "preresnet"):
        raise InputError(f"model family {kind!r} is not accepted; use plain, resnet or preresnet")
    return f"cifar_{kind}{depth}"


def allowed_data_dirs() -> list[Path]:
    """Folders a dataset path typed in the browser may point into: $RESNET_LAB_DATA_DIRS
    (os.pathsep-separated) when set, else the repository's parent folder, the current folder
    and the user's data cache."""
    env = os.environ.get(DATA_DIRS_ENV)
    if env:
        dirs = [Path(p) for p in env.split(os.pathsep) if p.strip()]
    else:
        from resnet_core.data import default_data_root

        dirs = [REPO_ROOT.parent, Path.cwd(), Path(default_data_root())]
    out = []
    for d in dirs:
        try:
            out.append(d.expanduser().resolve())
        except (OSError, RuntimeError):
            pass
    return out


def check_dataset(text: str) -> str:
    """A dataset name, or a path to a .npz file / ImageFolder folder inside the allowed
    folders. Returns what to put in TrainConfig.dataset."""
    from resnet_core.data import NAMED

    t = (text or "").strip()
    if not t:
        raise InputError("give a dataset name or a path")
    if t in NAMED:
        return t
    if "\x00" in t or len(t) > 1000:
        raise InputError("dataset path is not accepted")
    if not (t.endswith(".npz") or "/" in t or os.sep in t):
        raise InputError(
            f"dataset {t!r} is not accepted; accepted: {', '.join(NAMED)}, or a path "
            "to a .npz file or an ImageFolder folder (train/<class>/, test/<class>/)"
        )
    p = Path(t).expanduser()
    if not p.is_absolute():
        p = REPO_ROOT / p  # relative paths are read from the repository, as the CLI's cwd
    try:
        rp = p.resolve()
    except (OSError, RuntimeError):
        raise InputError(f"dataset path {t!r} can't be resolved") from None
    roots = allowed_data_dirs()
    if not any(rp == r or r in rp.parents for r in roots):
        raise InputError(
            f"dataset path {t!r} is outside the folders the lab reads data from "
            f"({', '.join(map(str, roots))}); set {DATA_DIRS_ENV} to allow others"
        )
    if rp.is_file():
        if rp.suffix.lower() != ".npz":
            raise InputError(f"dataset file {t!r} is not a .npz file")
        return str(rp)
    if rp.is_dir():
        if not ((rp / "train").is_dir() and (rp / "test").is_dir()):
            raise InputError(
                f"folder {t!r} is not an ImageFolder dataset: it needs train/<class>/ "
                "and test/<class>/ subfolders"
            )
        return str(rp)
    raise InputError(f"dataset path {t!r} does not exist")


def check_run(store, run_id: str):
    """A run of the store by id (checked by resnet_core.store.check_run_id)."""
    try:
        check_run_id(run_id)
        return store.run(run_id)
    except StoreError as e:
        raise InputError(str(e)) from None


def load_upload(data: bytes, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS):
    """Decode an uploaded image safely: size in bytes first, then the pixel count from the
    header (before any decoding), then decode only the formats in UPLOAD_FORMATS. Returns a
    PIL RGB image."""
    from PIL import Image, UnidentifiedImageError

    if data is None or not len(data):
        raise InputError("the uploaded file is empty")
    if len(data) > max_bytes:
        raise InputError(
            f"the uploaded file has {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=list(UPLOAD_FORMATS))
            w, h = im.size
            if w <= 0 or h <= 0:
                raise InputError("the uploaded image has no pixels")
            if w * h > max_pixels:
                raise InputError(
                    f"the uploaded image has {w}x{h} = {w * h / 1e6:.1f} megapixels; "
                    f"the limit is {max_pixels / 1e6:.0f}"
                )
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            im.load()
            return im.convert("RGB")
    except InputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(
            f"the uploaded file is not a readable image (accepted: "
            f"{', '.join(f.lower() for f in UPLOAD_FORMATS)})"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        raise InputError(f"the uploaded image could not be decoded ({type(e).__name__})") from None


def image_to_input(im, size: int, channels: int) -> np.ndarray:
    """A PIL image -> uint8 C,H,W at the model's input size and channel count."""
    from PIL import Image

    im = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR)
    a = np.asarray(im, dtype=np.uint8)
    return (a[None] if a.ndim == 2 else a.transpose(2, 0, 1)).copy()
