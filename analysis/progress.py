"""Progress and cancellation for long analyses.

Long functions take ``progress``: a callable ``progress(fraction, message)`` (or None). To
cancel, the callable raises :class:`Cancelled`; the study stops at its next report and the
exception propagates (nothing half-written is cached).
"""
from __future__ import annotations


class Cancelled(Exception):
    """Raised from a progress callback to stop a long analysis."""


def report(progress, done: int, total: int, message: str = "") -> None:
    if progress is not None:
        progress(done / max(1, total), message)
