"""Analysis results on disk, in the run's ``cache/`` folder, keyed by checkpoint and method.

A key names the task and checkpoint and hashes the checkpoint's identity (name, size, mtime)
with the task's parameters, so a checkpoint that is rewritten (training went on) misses the
cache instead of serving stale results:  ``umap-last-3f2a9c1b0d4e``.

A result is a dict of numpy arrays, DataFrames and JSON values, stored as one ``.npz``
(``allow_pickle=False``: loading a cache file never runs code), written atomically.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from resnet_core.store import atomic_write_bytes

from .loading import checkpoint_identity


def cache_key(run, task: str, checkpoint: str, params: dict) -> str:
    ident = checkpoint_identity(run, checkpoint) if checkpoint else {}
    blob = json.dumps({"task": task, "ckpt": ident, "params": params}, sort_keys=True, default=str)
    h = hashlib.sha1(blob.encode()).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", f"{task}-{checkpoint or 'none'}")
    return f"{safe}-{h}"


def result_path(run, key: str) -> Path:
    return Path(run.cache_dir) / f"{key}.npz"


def pack(result: dict) -> bytes:
    arrays, meta = {}, {"values": {}, "arrays": [], "frames": {}}
    for k, v in result.items():
        if isinstance(v, np.ndarray) and v.dtype != object:
            arrays[f"a_{k}"] = v
            meta["arrays"].append(k)
        elif isinstance(v, pd.DataFrame):
            meta["frames"][k] = v.to_json(orient="split", index=False, double_precision=15)
        else:
            meta["values"][k] = v.item() if isinstance(v, np.generic) else v
    arrays["__meta__"] = np.frombuffer(json.dumps(meta, default=_json_default).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def unpack(data: bytes) -> dict:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        meta = json.loads(bytes(z["__meta__"]).decode())
        out = dict(meta["values"])
        for k in meta["arrays"]:
            out[k] = z[f"a_{k}"]
    for k, s in meta["frames"].items():
        out[k] = pd.read_json(io.StringIO(s), orient="split")
    return out


def save(run, key: str, result: dict) -> Path:
    p = result_path(run, key)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(p, pack(result))
    return p


class CacheError(ValueError):
    """A cache file exists but cannot be read; the message names the file and the cause."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


# what a damaged .npz or its JSON part raises (zipfile.BadZipFile subclasses Exception
# directly, so it is named)
_UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError)


def load(run, key: str) -> dict | None:
    """The cached result, or None when there is none. A file that exists but cannot be read
    raises CacheError naming it (results are written atomically, so this is damage on disk,
    not a computation in progress); :func:`discard` removes it so it can be computed again."""
    p = result_path(run, key)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return unpack(data)
    except _UNREADABLE as e:
        raise CacheError(
            f"cached result {p} is unreadable ({type(e).__name__}: {e}); discard it to compute it again", p
        ) from e


def discard(run, key: str) -> None:
    """Remove a cached result (e.g. an unreadable one), so the next request recomputes it."""
    result_path(run, key).unlink(missing_ok=True)
