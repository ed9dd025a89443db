"""`yb --scan`: chooses the selective-scan backend for the run and reports it."""

from __future__ import annotations

import json

from blocks.mamba import scan
from yoloblocks_cli import app


def test_cli_knows_the_same_kernel_modules_as_the_scan():
    assert app._SCAN_KERNELS == scan.KERNEL_MODULES


def test_scan_torch_is_used_and_reported(yb):
    r = yb("--scan", "torch", "inspect", "SS2D", "--size", "32x9x7", "--no-latency", "--no-memory", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["env"]["scan"] == "torch"


def test_scan_kernel_without_extension_is_a_usage_error(yb):
    r = yb("--scan", "kernel", "inspect", "SS2D", "--size", "32x9x7")
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: --scan kernel: no selective-scan CUDA extension is installed "
                                "(selective_scan_cuda_core or selective_scan_cuda); use --scan torch or --scan auto")


def test_scan_bad_value_is_a_usage_error(yb):
    r = yb("--scan", "fast", "inspect", "SS2D")
    assert r.returncode == 2
    assert "'fast' is not one of 'auto', 'torch', 'kernel'" in r.stderr
    assert "Traceback" not in r.stderr
