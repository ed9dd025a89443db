"""Shared fixtures: CPU-only, deterministic, a CLI runner that returns (code, stdout, stderr)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def run_yb(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m yoloblocks_cli ARGS` in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "yoloblocks_cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=_env())


def _env() -> dict:
    import os

    env = dict(os.environ)
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def yb():
    return run_yb


@pytest.fixture
def yb_in(capsys, monkeypatch):
    """Run the CLI in this process (fast: torch is already imported); returns (code, out, err)."""
    from yoloblocks_cli.app import main

    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str):
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        out, err = capsys.readouterr()
        return exc.value.code, out, err

    return run


@pytest.fixture
def repo_cwd_one_thread(monkeypatch):
    """From the repository root (paths in reports are relative to it), torch on one thread."""
    import torch

    monkeypatch.chdir(ROOT)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    yield


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


requires_cuda = pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _fresh_thread_choice():
    """`yb` commands run in process choose torch's thread count once per process: undo it after each test."""
    import torch

    from yoloblocks_cli.measuring import contention

    threads = torch.get_num_threads()
    yield
    contention._CHOSEN = None
    torch.set_num_threads(threads)


@pytest.fixture
def quiet_machine(monkeypatch):
    """Latency verdicts as on a quiet machine, whatever the load of this one (injected readings)."""
    from yoloblocks_cli.measuring import contention

    quiet = contention.Reading(0.0, 0.0, None, 0.0, None)
    monkeypatch.setattr(contention, "other_busy_now", lambda seconds=0.2: 0.0)
    monkeypatch.setattr("yoloblocks_cli.measuring.rounds.verdict_of",
                        lambda b, a, samples, cuda: contention.assess(quiet, quiet, threads=1, cpus=2))
