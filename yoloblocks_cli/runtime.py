"""Process tuning for the short-lived `yb` process (never applied when used as a library).

After ``import torch`` a process holds a few hundred thousand long-lived objects:

- every full garbage collection while a model is built or traced walks all of them again
  (about 50 ms per `yb profile yolov8n`). ``gc.freeze()`` moves them to the permanent
  generation, so collections only look at objects created afterwards;
- tearing the interpreter down at exit (module dicts, finalizers) takes about 0.25 s on a
  2-core CPU. :func:`exit_now` runs the ``atexit`` handlers and flushes the standard
  streams, then leaves without that teardown.

Library callers (tests, a user's script calling ``app.main``) keep normal behaviour: only
the console entry point (``app.cli``) opts in with :func:`enable`.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys

_STATE = {"enabled": False, "frozen": False}


def enable() -> None:
    """Called by the CLI entry point: this process is a one-shot `yb` run."""
    _STATE["enabled"] = True


def freeze_imported_objects() -> None:
    """Once heavy imports are done: exclude what exists now from later collections (CLI only)."""
    if _STATE["enabled"] and not _STATE["frozen"]:
        gc.freeze()
        _STATE["frozen"] = True


def exit_now(code: object) -> None:
    """Leave the process with ``code`` (a SystemExit code), skipping interpreter teardown
    once torch is loaded; before that, a normal exit is as fast."""
    if isinstance(code, str):  # SystemExit("message") prints the message and exits 1
        print(code, file=sys.stderr)
        code = 1
    status = 0 if code is None else int(code) if isinstance(code, int) else 1
    if not (_STATE["enabled"] and "torch" in sys.modules):
        sys.exit(status)
    atexit._run_exitfuncs()  # logging.shutdown and any handler a library registered
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed pipe (e.g. `yb ... | head`): nothing more to write
            pass
    os._exit(status)
