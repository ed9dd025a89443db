"""The per-configuration guard of `yb trace` (issue 16, bullet 2): an input that cannot be
allocated, MemoryError, sys.exit and a KeyboardInterrupt raised by the block fail that
configuration only; the sweep goes on and the report is written. The user's real Ctrl-C
(SIGINT) still stops the sweep."""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest
import torch
from torch import nn

from yoloblocks_cli.app import main
from yoloblocks_cli.loading import limits
from yoloblocks_cli.loading.spec import Shape
from yoloblocks_cli.tracing import probes
from yoloblocks_cli.tracing.probes import Target
from yoloblocks_cli.tracing.run import sweep
from yoloblocks_cli.tracing.tracer import ShapeTracer

BLOCK = '''
import os, signal, sys
import torch.nn as nn


class Moody(nn.Module):
    """Fine, except at width 30 (sys.exit), 10 (KeyboardInterrupt) and 50 (a real SIGINT)."""

    def __init__(self, c1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c1, 1)

    def forward(self, x):
        if x.shape[-1] == 30:
            sys.exit(3)
        if x.shape[-1] == 10:
            raise KeyboardInterrupt
        if x.shape[-1] == 50:
            os.kill(os.getpid(), signal.SIGINT)
        return self.conv(x)
'''


@pytest.fixture
def moody(tmp_path):
    path = tmp_path / "moody.py"
    path.write_text(BLOCK)
    return path


def _target(module: nn.Module) -> Target:
    return Target(module, ShapeTracer(module).attach(), type(module).__name__)


def test_a_configuration_whose_input_cannot_be_allocated_fails_alone(monkeypatch):
    """One input over the memory limit (refused before allocating) and one whose allocation
    raises MemoryError: both fail, the three others pass."""
    monkeypatch.setenv(limits.ENV_MAX_MEMORY, "64M")
    real_init = probes.ProbeRun.__init__

    def init(self, target, shape, *args, **kwargs):
        if shape.height == 13:
            raise MemoryError("cannot allocate 13 rows")
        real_init(self, target, shape, *args, **kwargs)

    monkeypatch.setattr(probes.ProbeRun, "__init__", init)
    shapes = [Shape(1, 4, 8, 8), Shape(1, 4, 4096, 4096), Shape(1, 4, 13, 8), Shape(1, 4, 16, 16), Shape(2, 4, 8, 8)]
    points = sweep([_target(nn.Conv2d(4, 4, 3, padding=1))], shapes, ["sweep", "finite"])
    assert [p.ok for p in points] == [True, False, False, True, True]
    big, oom = points[1].error, points[2].error
    assert (big.type, big.cause) == ("MemoryLimit", "oom")
    assert big.message == ("configuration 1x4x4096x4096 needs 256 MiB for the input tensor alone (1x4x4096x4096 x 4 "
                           "bytes), over the memory limit of 64 MiB (--max-memory)")
    assert (oom.type, oom.message, oom.cause) == ("MemoryError", "out of memory: cannot allocate 13 rows", "oom")
    assert points[1].results["finite"].status == "skip"


def test_block_exit_and_keyboardinterrupt_fail_their_configuration(moody, tmp_path, capsys):
    out = tmp_path / "r.json"
    with pytest.raises(SystemExit) as exc:
        main(["trace", f"{moody}:Moody", "--sizes", "8x20x20,8x20x30,8x20x10,8x20x40", "--probes", "sweep",
              "-o", str(out)])
    assert exc.value.code == 1
    report = json.loads(out.read_text())
    assert (report["passed"], report["failed"]) == (2, 2)
    errors = [p.get("error") for p in report["points"]]
    assert errors[0] is None and errors[3] is None
    assert (errors[1]["type"], errors[1]["message"], errors[1]["line"]) == (
        "SystemExit", "the block called sys.exit(3)", 15)
    assert (errors[2]["type"], errors[2]["message"], errors[2]["line"]) == (
        "KeyboardInterrupt", "the block raised KeyboardInterrupt (not a Ctrl-C)", 17)


def test_a_real_sigint_still_stops_the_sweep(moody):
    from yoloblocks_cli.loading.load import load_block

    # Python's own Ctrl-C handler, whatever this process inherited: a job started in the background of
    # a non-interactive shell ignores SIGINT (POSIX), and an ignored signal never reaches the guard
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        block = load_block(f"{moody}:Moody", 8).module
        with pytest.raises(KeyboardInterrupt):
            sweep([_target(block)], [Shape(1, 8, 20, 20), Shape(1, 8, 20, 50), Shape(1, 8, 20, 40)], ["sweep"])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the guard put it back
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_sigterm_mapped_to_keyboardinterrupt_stops_the_sweep_too(tmp_path):
    """A caller (CI cancel handling) that turns SIGTERM into KeyboardInterrupt is obeyed, not
    mistaken for the block's own KeyboardInterrupt."""
    def as_interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    class Cancelled(nn.Module):
        def forward(self, x):
            if x.shape[-1] == 50:
                os.kill(os.getpid(), signal.SIGTERM)
            return x

    previous = signal.signal(signal.SIGTERM, as_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt, match="signal 15"):
            sweep([_target(Cancelled())], [Shape(1, 8, 20, 20), Shape(1, 8, 20, 50), Shape(1, 8, 20, 40)], ["sweep"])
    finally:
        signal.signal(signal.SIGTERM, previous)
