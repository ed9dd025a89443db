"""`yb --help` and `yb --version` must not import torch (start-up cost is paid only when needed)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, _env
from yoloblocks_cli import __version__

TORCH_LINE = re.compile(r"\|\s*torch(\.|\s*$)")


def _importtime(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "yoloblocks_cli", *args],
                          capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=120)


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("inspect", "--help")])
def test_no_torch_import(args):
    proc = _importtime(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert imported, "python -X importtime printed nothing"
    assert not [line for line in imported if TORCH_LINE.search(line)]
    assert "yoloblocks_cli.app" in proc.stderr  # the check really saw our imports


def test_version_text():
    proc = _importtime("--version")
    assert proc.stdout.strip() == f"yoloblocks {__version__}"


def test_help_lists_inspect():
    proc = _importtime("--help")
    assert "inspect" in proc.stdout


def test_no_pydantic_import():
    """Parsing a command's options must not pull in pydantic (typer 0.29 does: ~65 ms a run)."""
    proc = _importtime("profile", "no-such-model-anywhere", "--size", "640x480", "--runs", "3")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: no such model YAML: no-such-model-anywhere" in proc.stderr  # the command itself ran
    imported = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert not [line for line in imported if re.search(r"\|\s*pydantic(\.|\s*$)", line)]
