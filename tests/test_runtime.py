"""The one-shot CLI process: atexit handlers and exit codes survive the fast exit; library use is untouched."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, _env


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=_env())


def test_exit_now_runs_atexit_flushes_and_keeps_the_code():
    proc = _run("import atexit, sys, torch\n"
                "from yoloblocks_cli import runtime\n"
                "atexit.register(lambda: print('atexit ran'))\n"
                "runtime.enable()\n"
                "sys.stdout.write('unflushed output')\n"
                "runtime.exit_now(3)\n")
    assert proc.returncode == 3
    assert proc.stdout == "unflushed outputatexit ran\n"


def test_exit_now_with_a_message_exits_1_and_prints_it():
    proc = _run("import torch\nfrom yoloblocks_cli import runtime\nruntime.enable()\nruntime.exit_now('gone')\n")
    assert proc.returncode == 1 and proc.stderr == "gone\n"


def test_library_callers_keep_gc_and_a_normal_exit():
    proc = _run("import gc, torch\n"
                "from yoloblocks_cli import runtime\n"
                "runtime.freeze_imported_objects()\n"
                "print(gc.get_freeze_count())\n"
                "try:\n    runtime.exit_now(4)\nexcept SystemExit as e:\n    print('SystemExit', e.code)\n")
    assert proc.stdout.split() == ["0", "SystemExit", "4"]


def test_cli_output_is_complete_through_a_pipe(yb):
    proc = yb("profile", "yolov8n", "--size", "64", "--no-latency", "--no-memory", "--json")
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("}")
