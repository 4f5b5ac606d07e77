"""The CLI progress bar: the lab's hand-written ``Progress`` against tqdm, fed the same updates.

A `paper` run (64,000 steps, a log row every 10 steps, ~12 steps/s) calls the bar 6,400 times
over ~1.5 hours. Both bars write to a file (stderr redirected to a log: the case where they
differ) and to a pseudo-terminal-like stream; the clock is simulated so no wall time passes.
Prints, per bar: bytes written, lines (newline-separated) and carriage returns in the file, and
the CPU cost per update (timed with real time over the same calls).

    python benchmarks/bench_progress.py            # needs tqdm (pip install tqdm)
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet_core.__main__ import Progress  # noqa: E402

TOTAL, LOG_EVERY, STEPS_PER_S, BATCH = 64_000, 10, 12.0, 128


class FileLike(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self):
        return self._tty


def updates():
    for step in range(LOG_EVERY, TOTAL + 1, LOG_EVERY):
        row = {
            "loss": 2.3 * (1 - step / TOTAL) + 0.01,
            "error": 0.9 * (1 - step / TOTAL),
            "images_per_s": STEPS_PER_S * BATCH,
        }
        yield step, row


def run_ours(tty: bool) -> tuple[str, float]:
    out = FileLike(tty)
    bar = Progress(out)
    cfg = SimpleNamespace(batch_size=BATCH)
    t0 = time.perf_counter()
    for step, row in updates():
        bar(SimpleNamespace(step=step, total_steps=TOTAL, config=cfg), row)
    return out.getvalue(), time.perf_counter() - t0


def run_tqdm(tty: bool) -> tuple[str, float]:
    from tqdm import tqdm

    out = FileLike(tty)
    clock = {"t": 0.0}
    bar = tqdm(total=TOTAL, file=out, unit="step", mininterval=0.1)
    bar._time = lambda: clock["t"]  # the simulated run's clock (tqdm reads time through this)
    bar.start_t = bar.last_print_t = 0.0
    t0 = time.perf_counter()
    for step, row in updates():
        clock["t"] = step / STEPS_PER_S
        bar.set_postfix(loss=f"{row['loss']:.3f}", err=f"{100 * row['error']:.1f}%", refresh=False)
        bar.update(step - bar.n)
    bar.close()
    return out.getvalue(), time.perf_counter() - t0


def main() -> None:
    import platform

    import tqdm

    print(f"python {platform.python_version()}, tqdm {tqdm.__version__}, {platform.processor()}")
    n = TOTAL // LOG_EVERY
    print(f"{n} updates of a {TOTAL}-step run; per bar: bytes, lines, carriage returns, us/update")
    for name, fn in (("hand-written", run_ours), ("tqdm", run_tqdm)):
        for tty in (False, True):
            text, dt = fn(tty)
            print(
                f"  {name:<13} {'terminal' if tty else 'log file':<9} {len(text):>9,} B "
                f"{text.count(chr(10)):>6} lines {text.count(chr(13)):>6} CR "
                f"{1e6 * dt / n:>7.1f} us"
            )


if __name__ == "__main__":
    main()
