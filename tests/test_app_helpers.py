"""Helpers for the app's AppTest tests (imported by tests/test_app_*.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "app" / "app_pages"
TIMEOUT = 90  # AppTest's default 3 s is far too short on 2 busy cores


def page(name: str):
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=TIMEOUT)


def figures(at) -> list[dict]:
    """The plotly figures of an AppTest run, as dicts."""
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def arr(v):
    """A plotly JSON array (a list, or plotly's base64 typed array) as a numpy array."""
    if isinstance(v, dict) and "bdata" in v:
        out = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return out.reshape(v["shape"]) if "shape" in v and isinstance(v["shape"], list) else out
    return np.asarray(v)


def traces(fig: dict, name_contains: str = "") -> list[dict]:
    return [t for t in fig["data"] if name_contains in str(t.get("name", ""))]


def texts(at, kind: str = "markdown") -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


def no_exception(at):
    assert not at.exception, [e.value for e in at.exception]
