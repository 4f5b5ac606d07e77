"""Progress and cancellation for long analyses.

Long functions take ``progress``: a callable ``progress(fraction, message)`` (or None). To
cancel, the callable raises :class:`Cancelled`; the study stops at its next report and the
exception propagates (nothing half-written is cached).
"""

from __future__ import annotations


class Cancelled(BaseException):
    """Raised from a progress callback (or a job's SIGTERM handler) to stop a long analysis.

    A BaseException, like KeyboardInterrupt, so that code catching ``Exception`` on the way
    (a checkpoint loader re-raising its own error, a library's retry loop) lets it through."""


def report(progress, done: int, total: int, message: str = "") -> None:
    if progress is not None:
        progress(done / max(1, total), message)
