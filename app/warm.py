"""Warm the heavy imports once per server process, in a background thread.

The first page a server renders pays for torch (imported by resnet_core); the pages that look
inside a net (Activations, Gradient flow's signal propagation, Studies, Embeddings) would each
pay again for their analysis modules on their first visit. Importing those here, in a daemon
thread started by app/main.py's first run, moves that cost off the first click on each page.
"""

from __future__ import annotations

import importlib
import logging
import threading

# the analysis modules the pages import on a visit (their own imports come along)
WARM_MODULES = (
    "analysis",
    "analysis.jobs",
    "analysis.loading",
    "analysis.activations",
    "analysis.attribution",
    "analysis.studies.signal",
)

_started = threading.Event()
log = logging.getLogger(__name__)


def _warm(modules) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:  # a module not landed yet: the page says so when visited
            log.info("warm import of %s skipped: %s", name, e)


def warm_imports(modules=WARM_MODULES) -> threading.Thread | None:
    """Start the warming thread (once per process); returns it, or None when already started."""
    if _started.is_set():
        return None
    _started.set()
    t = threading.Thread(target=_warm, args=(tuple(modules),), name="resnet-lab-warm", daemon=True)
    t.start()
    return t
