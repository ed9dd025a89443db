"""pytest helpers: the checks of `yb check`, as assertions in a user's own test suite.

    from yoloblocks_cli.checks.testing import assert_budget, assert_traces

    def test_my_block_survives_rectangular_batches():
        assert_traces("my_blocks.py:MyAttention", sizes=["64x40x40", "64x48x32", "64x20x15"])

    def test_my_block_stays_small():
        assert_budget("my_blocks.py:MyAttention", size="64x40x40", max_params=50_000, max_gflops=0.2)

A target is what `yb` accepts (registry name, ``pkg.module:Class``, ``file.py:Class``, a
model short name or ``.yaml`` path) or an ``nn.Module`` you built yourself. A failure
raises :class:`AssertionError` naming every failed verdict precisely (input shape, layer,
file:line, hint), so the pytest report alone says what to fix.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from yoloblocks_cli.checks.budget import Finding, evaluate_budgets
from yoloblocks_cli.checks.config import Budgets
from yoloblocks_cli.measuring.measure import Measurement

Size = str | int | Sequence[int]


def _text(size: Size) -> str:
    return "x".join(str(d) for d in size) if isinstance(size, (tuple, list)) else str(size)


def _shape(size: Size, kind: str | None) -> Any:
    from yoloblocks_cli.loading.targets import block_shape, model_shape

    text = _text(size)
    if kind == "block" or (kind is None and text.count("x") >= 2):
        return block_shape(text)
    return model_shape(text)


def _target(target: Any, size: Size | None, args: list | None, kwargs: dict | None) -> Any:
    """A :class:`~yoloblocks_cli.loading.targets.Target` for a spec string or a ready module."""
    from yoloblocks_cli.loading.targets import Target, resolve_target

    if isinstance(target, str):
        return resolve_target(target, None if size is None else _text(size), args=args, kwargs=kwargs)
    if size is None:
        raise ValueError("a module needs a size, e.g. size=\"64x40x40\" (CxHxW) or size=640 (a model)")
    shape = _shape(size, None)
    kind = "block" if _text(size).count("x") >= 2 else "model"
    return Target(type(target).__name__, kind, target, shape, type(target).__name__)


def _raise(what: str, findings: Iterable[Finding]) -> None:
    failed = [f for f in findings if not f.ok]
    if failed:
        lines = "\n".join(f"  {f.check}: {f.message}" for f in failed)
        raise AssertionError(f"{what}: {len(failed)} check(s) failed\n{lines}")


def assert_traces(target: Any, sizes: Sequence[Size], *, probes: Sequence[str] = (), args: list | None = None,
                  kwargs: dict | None = None, device: str = "cpu", dtype: str = "fp32") -> None:
    """Every size must run (and pass every probe named, e.g. ``probes=["batch", "finite"]``)."""
    from yoloblocks_cli.checks.run import run_probes
    from yoloblocks_cli.device import resolve_device, resolve_dtype
    from yoloblocks_cli.tracing.probes import probe_names

    if not sizes:
        raise ValueError("assert_traces needs at least one size")
    unknown = [p for p in probes if p not in probe_names()]
    if unknown:
        raise ValueError(f"unknown probe(s) {unknown}: choose from {', '.join(probe_names())}")
    t = _target(target, sizes[0], args, kwargs)
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    t.module.to(device=dev, dtype=dt)
    shapes = [_shape(s, t.kind) for s in sizes]
    findings, _ = run_probes(t, shapes, list(probes), dev, dt)
    _raise(t.call, findings)


def assert_budget(target: Any, *, size: Size | None = None, max_params: int | None = None,
                  max_gflops: float | None = None, counter: str = "torch", args: list | None = None,
                  kwargs: dict | None = None) -> Measurement:
    """Parameters and FLOPs (exact, one counter) within limits; returns the measurement."""
    from yoloblocks_cli.measuring.measure import measure

    if max_params is None and max_gflops is None:
        raise ValueError("assert_budget needs max_params and/or max_gflops")
    t = _target(target, size, args, kwargs)
    (m,) = measure([t], counters=(counter,), latency=False, memory=False)
    _raise(t.call, evaluate_budgets(m, Budgets(max_params=max_params, max_gflops=max_gflops), counter))
    return m
