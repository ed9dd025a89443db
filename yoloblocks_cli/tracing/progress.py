"""CI-friendly progress: one line per finished configuration, and SIGTERM as Ctrl-C.

Why lines and not a bar: a CI log is not a terminal, a progress bar there is either
invisible or a wall of carriage returns, and a job killed by its timeout should still show
how far it got. So with stdout not a terminal every configuration prints one line as it
finishes, flushed at once.

Why SIGTERM: CI runners cancel a job with SIGTERM, then SIGKILL after a grace period.
Turning SIGTERM into the KeyboardInterrupt that Ctrl-C raises lets `yb trace` print and
write what it finished (marked partial) and exit 130 in both cases.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any, Iterator, TextIO

from yoloblocks_cli.tracing.tracer import fmt_shape


class CiLines:
    """``[ 3/88] 1x3x640x480  shape    pass  1x84x6300  0.012 s``, one per configuration."""

    def __init__(self, total: int, stream: TextIO | None = None):
        self.total = total
        self.done = 0
        self.stream = stream

    def __call__(self, point: Any, seconds: float) -> None:
        self.done += 1
        width = len(str(self.total))
        failed = [(n, r) for n, r in point.results.items() if r.failed]
        if failed:
            name, r = failed[0]
            f = r.failure
            where = f" at layer {f.layer} ({f.module})" if f is not None and f.layer is not None else ""
            verdict = f"FAIL {name}: {f.type if f is not None else r.detail}{where}"
        else:
            verdict = "pass  " + fmt_shape(point.output_shape)
        scale = f"{point.scale}:" if point.scale else ""
        stream = self.stream or sys.stdout
        stream.write(f"[{self.done:>{width}}/{self.total}] {scale}{point.shape!s:<15} {point.phase:<7} "
                     f"{verdict}  {seconds:.3f} s\n")
        stream.flush()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises KeyboardInterrupt in the main thread (as Ctrl-C does)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # not allowed here (embedded interpreter): run without it
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
