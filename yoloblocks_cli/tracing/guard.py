"""The per-configuration guard of `yb trace`: whatever one configuration does stays its own.

A sweep is only useful if it finishes: one configuration that cannot allocate its input,
or a block that calls ``sys.exit(3)`` or raises ``KeyboardInterrupt`` in ``forward``, used
to end the sweep with no table and no report. :func:`guarded_point` runs *everything* of a
configuration (the input's size check and allocation included) and turns these into that
configuration's failure:

- an input over the memory limit (:mod:`yoloblocks_cli.loading.limits`): refused before
  allocating it, type ``MemoryLimit``;
- ``MemoryError`` (the allocation itself failed) and any other exception a probe let out;
- ``SystemExit`` and ``KeyboardInterrupt`` *raised by the block*.

The user's own Ctrl-C is told apart from a ``KeyboardInterrupt`` the block raises by
wrapping the SIGINT (and SIGTERM, when a caller maps it to KeyboardInterrupt) handler while
the configuration runs: only a real signal sets the flag, and then the interrupt goes on up
(the sweep stops, and the caller writes what it has) as it should.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator, Sequence

from yoloblocks_cli.loading.limits import LimitExceeded, check_input
from yoloblocks_cli.loading.spec import Shape
from yoloblocks_cli.tracing.probes import Point, ProbeResult, Target, run_point
from yoloblocks_cli.tracing.tracer import Failure


class _SignalWatch:
    """Remembers whether a real signal arrived, then hands it to the handler it replaced."""

    def __init__(self) -> None:
        self.fired = False
        self.previous: dict[int, Any] = {}

    def __call__(self, signum: int, frame: Any) -> None:
        self.fired = True
        self.previous[signum](signum, frame)  # Python's own raises KeyboardInterrupt, as would a caller's


# SIGINT (Ctrl-C), and SIGTERM where a caller turned it into KeyboardInterrupt (a CI runner's cancel)
_WATCHED = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)


@contextlib.contextmanager
def watch_sigint() -> Iterator[_SignalWatch]:
    """Wrap the Python-level handlers of SIGINT and SIGTERM so that a real signal is told apart
    from a KeyboardInterrupt the block raises itself (main thread only; a signal left to the
    operating system's default is not wrapped: it ends the process anyway)."""
    watch = _SignalWatch()
    if threading.current_thread() is not threading.main_thread():
        yield watch
        return
    for sig in _WATCHED:
        previous = signal.getsignal(sig)
        if callable(previous):
            try:
                signal.signal(sig, watch)
            except (ValueError, OSError):
                continue
            watch.previous[sig] = previous
    try:
        yield watch
    finally:
        for sig, previous in watch.previous.items():
            signal.signal(sig, previous)


def guarded_point(target: Target, shape: Shape, probes: Sequence[str], **kwargs: Any) -> Point:
    """:func:`run_point` for one configuration, inside its guard (see the module docstring)."""
    try:
        check_input(shape.dims, what="configuration")
    except LimitExceeded as exc:
        return failed_point(target, shape, probes, Failure(
            type="MemoryLimit", message=str(exc), cause="oom",
            hint="the input alone is over the memory limit; pass a larger yb --max-memory or a smaller size"))
    with watch_sigint() as watch:
        try:
            return run_point(target, shape, probes, **kwargs)
        except KeyboardInterrupt as exc:
            if watch.fired:
                raise  # the user's Ctrl-C: stop the sweep
            return failed_point(target, shape, probes, _located(exc, target, shape,
                                "the block raised KeyboardInterrupt (not a Ctrl-C)"))
        except SystemExit as exc:
            return failed_point(target, shape, probes, _located(exc, target, shape,
                                f"the block called sys.exit({exc.code!r})"))
        except MemoryError as exc:
            return failed_point(target, shape, probes, _located(exc, target, shape,
                                f"out of memory: {exc}" if str(exc) else "out of memory"))
        except Exception as exc:  # noqa: BLE001 - one configuration never ends the sweep
            return failed_point(target, shape, probes, _located(exc, target, shape, str(exc)))


def _located(exc: BaseException, target: Target, shape: Shape, message: str) -> Failure:
    """The failure with the block's file:line (the tracer's rule), or bare when it cannot say."""
    try:
        from yoloblocks_cli.tracing.tracer import locate

        failure = locate(exc, target.tracer, [], shape.dims) if target.tracer is not None else None
    except Exception:  # noqa: BLE001 - locating must never be what fails
        failure = None
    if failure is None:
        failure = Failure(type=exc.__class__.__name__, message=message)
    failure.type, failure.message = exc.__class__.__name__, message
    if isinstance(exc, MemoryError):
        failure.cause = "oom"
        failure.hint = "out of memory: the configuration needs more memory than the machine has"
    return failure


def failed_point(target: Target, shape: Shape, probes: Sequence[str], failure: Failure) -> Point:
    """A configuration that failed as a whole: the first probe carries the failure, the others are not run."""
    names = [p for p in probes] or ["sweep"]
    point = Point(shape, target.scale)
    point.results[names[0]] = ProbeResult(names[0], "fail", f"{failure.type}: {failure.message}", failure)
    for name in names[1:]:
        point.results[name] = ProbeResult(name, "skip", f"not run: {names[0]} failed")
    return point
