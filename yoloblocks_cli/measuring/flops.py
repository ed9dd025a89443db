"""Three FLOP counters behind one interface, and an explanation when they disagree.

Why three: users compare their numbers with papers and with ultralytics' summary line,
and each source counts differently.

- ``torch``: torch's FLOP formulas (``torch.utils.flop_counter``) applied at dispatch
  (``dispatch_count.DispatchFlopCounter``, FlopCounterMode's totals) see every ATen op
  (matmul, bmm, einsum, SDPA, convolutions, custom ops with a registered formula) but has
  formulas only for products: normalisations, activations and pooling cost nothing there.
- ``ultralytics``: 2 x ``thop.profile`` MACs on a deep copy, as ultralytics computes GFLOPs.
  thop counts modules that have a rule; whether it also counts functional products
  (``torch.matmul`` in a block's forward) depends on the thop version installed.
- ``fvcore``: ``FlopCountAnalysis``'s count: a JIT trace, MACs of the ops fvcore has
  handles for, and every op it could not count by name (``jit_count`` walks the trace
  with fvcore's own handles, without its per-module bookkeeping).

Convention everywhere: FLOPs = 2 x MACs. Every counter runs in eval mode, without grad,
on a copy of the module, so that nothing (hooks, thop's ``total_ops``) leaks into the
user's module. A counter that raises yields ``None`` and a note, never a crash.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import logging
import sys
import warnings
from collections import Counter
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

COUNTERS = ("torch", "ultralytics", "fvcore")

# fvcore op keys (from ``by_operator``) that the dispatch counter has a formula for.
_TORCH_COVERED_FVCORE = frozenset({"conv", "matmul", "mm", "bmm", "einsum", "linear", "addmm"})


@dataclass
class FlopsReport:
    """FLOPs of one forward pass from each counter (None: the counter failed or was not run)."""

    torch: int | None = None
    ultralytics: int | None = None  # 2 x thop MACs
    fvcore: int | None = None  # 2 x fvcore MACs
    fvcore_macs: int | None = None
    thop_macs: int | None = None
    uncounted: list[str] = field(default_factory=list)  # one sentence per counter that missed ops
    by_op: dict[str, int] = field(default_factory=dict)  # torch counter FLOPs per ATen op
    missed: dict[str, dict[str, int]] = field(default_factory=dict)  # counter -> {op: calls}
    notes: list[str] = field(default_factory=list)  # counters that failed, and why

    def as_json(self) -> dict[str, Any]:
        """The ``flops`` object of the JSON contract (extra keys after the contract ones)."""
        return {
            "torch": self.torch,
            "ultralytics": self.ultralytics,
            "fvcore": self.fvcore,
            "uncounted": list(self.uncounted),
            "convention": "FLOPs = 2 x MACs",
            "thop_macs": self.thop_macs,
            "fvcore_macs": self.fvcore_macs,
            "by_op": dict(self.by_op),
            "missed": {k: dict(v) for k, v in self.missed.items()},
            "notes": list(self.notes),
        }


# ----------------------------------------------------------------------------- helpers


def _as_tuple(inputs: Any) -> tuple:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _copy_eval(module: Any) -> Any:
    m = copy.deepcopy(module)
    m.eval()
    return m


_REFLECTED = {"__rmatmul__": "matmul", "__rmul__": "mul", "__radd__": "add"}


def _fn_name(func: Any) -> str:
    """A readable name for a torch function: ``Tensor.__matmul__`` -> ``matmul``."""
    name = getattr(func, "__name__", None) or str(func)
    return _REFLECTED.get(name) or name.strip("_") or name


def _thop_tables() -> tuple[dict, Any, dict]:
    """(register_hooks, zero_ops, functional_hooks) of the installed thop; empty where absent."""
    import thop  # noqa: F401  (loads thop.profile into sys.modules)

    prof = sys.modules.get("thop.profile") or importlib.import_module("thop.profile")
    hooks = getattr(prof, "register_hooks", {})
    basic = sys.modules.get("thop.vision.basic_hooks")
    zero = getattr(basic, "zero_ops", None)
    functional = getattr(prof, "functional_hooks", {}) if getattr(prof, "_COUNTS_FUNCTIONS", False) else {}
    return hooks, zero, functional


def _thop_custom_ops() -> dict:
    """thop ``custom_ops`` from ``blocks.flop_formulas.MODULE_MACS`` (MACs rules)."""
    from blocks.flop_formulas import MODULE_MACS

    def wrap(fn):
        def rule(m, x, y):
            m.total_ops += int(fn(m, x, y))

        return rule

    return {cls: wrap(fn) for cls, fn in MODULE_MACS.items()}


def _has_thop_rule(cls: type, custom: dict, hooks: dict, zero: Any) -> bool:
    """Whether thop counts arithmetic for modules of ``cls`` (a rule other than zero_ops)."""
    for t in cls.__mro__:
        if t in custom:
            return True
        if t in hooks:
            return hooks[t] is not zero
    return False


def _ensure_op_formulas() -> None:
    """Install formulas for custom ops that were defined after their formula was registered."""
    from blocks.flop_formulas import OP_FORMULAS, _install_in_torch
    from torch.utils.flop_counter import flop_registry
    import torch

    for name, fn in OP_FORMULAS.items():
        ns, _, op = name.partition("::")
        try:
            packet = getattr(getattr(torch.ops, ns), op)
        except (AttributeError, RuntimeError):
            continue
        if packet not in flop_registry:
            _install_in_torch(name, fn)


# ----------------------------------------------------------------------------- torch


def torch_flops(module: Any, inputs: Any) -> int:
    """FLOPs of one eval forward from the dispatch counter only (fast; no copy, no explanation)."""
    import torch

    from yoloblocks_cli.measuring.dispatch_count import DispatchFlopCounter

    _ensure_op_formulas()
    was_training = module.training
    module.eval()
    try:
        counter = DispatchFlopCounter()
        with torch.no_grad(), counter:
            module(*_as_tuple(inputs))
        return counter.total
    finally:
        module.train(was_training)


def _recorded_torch_pass(module: Any, inputs: tuple, thop_info: tuple | None,
                         run: Callable[[], Any] | None = None) -> tuple[int, dict, dict, dict]:
    """Count at dispatch and, in the same pass, record which calls thop would not see.

    ``run`` performs the forward (default ``module(*inputs)``); thop's profiled forward can
    be that pass, so one forward feeds both counters.

    Returns (total, by_op, thop_missed {fn: calls}, torch_missed [(module path, class name)]):
    the latter are calls of modules with a thop rule inside which the dispatch counter saw
    no FLOPs (normalisations, pooling, upsampling); thop may or may not charge them.
    A call counts as seen by thop when some module around it has a thop rule, or when its
    outermost torch function is one thop counts functionally (newer thop versions).
    """
    import torch
    from torch.overrides import TorchFunctionMode

    from yoloblocks_cli.measuring.dispatch_count import DispatchFlopCounter

    custom, hooks, zero, functional = thop_info if thop_info else ({}, {}, None, {})
    fn_stack: list[tuple[int, Any]] = []  # (call id, func) of the outermost torch function running
    frames: list[list] = []  # [module, torch flops inside, thop rule?]
    thop_missed: dict[str, set] = {}
    torch_missed: list[tuple[str, str]] = []
    next_id = [0]

    class Functions(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            next_id[0] += 1
            fn_stack.append((next_id[0], func))
            try:
                return func(*args, **(kwargs or {}))
            finally:
                fn_stack.pop()

    def attribute(func: Any, flops: int) -> None:
        for frame in frames:
            frame[1] += flops
        if thop_info and not any(f[2] for f in frames):
            if fn_stack:
                call = fn_stack[-1]
            else:  # an op reached without a torch function around it (e.g. torch.ops.aten.mm)
                next_id[0] += 1
                call = (next_id[0], func)
            if call[1] not in functional:
                thop_missed.setdefault(_fn_name(call[1]), set()).add(call[0])

    counter = DispatchFlopCounter(on_flops=attribute)

    # Only modules with a thop rule need a frame: they are the ones reported in torch_missed,
    # and "some module around this op has a rule" is all thop_missed asks. Hooks on the rest
    # would only slow the pass down (nn.Module's hooked call path).
    handles = []
    for path, mod in (module.named_modules() if thop_info else ()):
        if not _has_thop_rule(type(mod), custom, hooks, zero):
            continue

        def pre(m, args, path=path):
            frames.append([path, 0, True])

        def post(m, args, out):
            if frames:
                path_, flops, _ = frames.pop()
                if flops == 0:
                    torch_missed.append((path_, type(m).__name__))

        handles.append(mod.register_forward_pre_hook(pre))
        handles.append(mod.register_forward_hook(post))
    try:
        with torch.no_grad(), counter, Functions() if thop_info else contextlib.nullcontext():
            run() if run is not None else module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return (counter.total, dict(counter.by_op),
            {k: len(v) for k, v in sorted(thop_missed.items())}, torch_missed)


# ----------------------------------------------------------------------------- thop


def thop_macs(module: Any, inputs: Any, layers: dict[str, float] | None = None, in_place: bool = False) -> int:
    """MACs as ultralytics gets them: ``thop.profile(deepcopy(model), inputs=(x,), verbose=False)``.

    ``layers``, if given, is filled with thop's MACs per module path (subtree totals;
    ``""`` is the root's own share), so an explanation can say which modules thop charged.
    ``in_place`` profiles ``module`` itself (thop removes its hooks and counters afterwards
    and restores train/eval modes): for callers that own the module, it saves a copy.
    """
    import thop

    with _quiet():
        out = thop.profile(module if in_place else copy.deepcopy(module), inputs=_as_tuple(inputs),
                           custom_ops=_thop_custom_ops(), verbose=False, ret_layer_info=layers is not None)
    macs = float(out[0])
    if layers is not None:
        tree = out[2] if len(out) > 2 else {}
        _flatten_layers(tree, "", layers)
        layers[""] = macs - sum(float(v[0]) for v in tree.values())
    return int(round(macs))


def _flatten_layers(tree: dict, prefix: str, into: dict[str, float]) -> None:
    for name, (ops, _params, sub) in tree.items():
        path = f"{prefix}.{name}" if prefix else name
        into[path] = float(ops)
        _flatten_layers(sub, path, into)


# ----------------------------------------------------------------------------- fvcore


def _fvcore_handles() -> dict:
    """fvcore handles for ``blocks.flop_formulas.OP_FORMULAS`` (formulas give FLOPs; fvcore wants MACs)."""
    from blocks.flop_formulas import OP_FORMULAS

    def make(fn):
        def handle(inputs, outputs):
            from fvcore.nn.jit_handles import get_shape

            return int(fn(*[get_shape(v) for v in inputs])) // 2

        return handle

    return {name: make(fn) for name, fn in OP_FORMULAS.items()}


def fvcore_count(module: Any, inputs: Any, in_place: bool = False) -> tuple[int, Counter, dict, list[str]]:
    """(MACs, unsupported ops Counter, by_operator, captured warning lines), as
    ``FlopCountAnalysis`` reports them for the whole model (see ``jit_count``).

    ``in_place`` traces ``module`` itself, which must then be in eval mode already.

    The JIT tracer's warnings and fvcore's logging are captured here, never printed; the
    caller turns unsupported ops into the ``uncounted`` line.
    """
    import torch

    from yoloblocks_cli.measuring.jit_count import jit_count

    captured: list[str] = []
    with _quiet(captured), torch.no_grad():  # the traced graph is the same; no autograd records kept
        result = jit_count(module if in_place else _copy_eval(module), _as_tuple(inputs), _fvcore_handles())
    by_operator = {k: int(v) for k, v in result.by_operator.items()}
    return result.total, Counter(result.unsupported), by_operator, captured


@contextmanager
def _quiet(captured: list[str] | None = None) -> Iterator[None]:
    """Capture Python warnings, fvcore/thop logging and stray stderr writes into ``captured``."""
    sink = captured if captured is not None else []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            sink.append(record.getMessage())

    handler = _Collect(level=logging.DEBUG)
    loggers = [logging.getLogger(n) for n in ("fvcore", "fvcore.nn.jit_analysis", "thop", "root")]
    saved = [(lg, lg.propagate, list(lg.handlers)) for lg in loggers]
    root = logging.getLogger()
    root_handlers = list(root.handlers)
    err = io.StringIO()
    try:
        for lg in loggers:
            lg.handlers = [handler]
            lg.propagate = False
        root.handlers = [handler]
        with warnings.catch_warnings(record=True) as caught, redirect_stderr(err):
            warnings.simplefilter("always")
            yield
        sink.extend(str(w.message) for w in caught)
    finally:
        for lg, prop, hs in saved:
            lg.handlers = hs
            lg.propagate = prop
        root.handlers = root_handlers
        sink.extend(line for line in err.getvalue().splitlines() if line.strip())


# ----------------------------------------------------------------------------- all three


def _calls(counts: dict[str, int] | Counter, limit: int = 8) -> str:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{n} {op}" for op, n in items[:limit])
    if len(items) > limit:
        text += f" and {len(items) - limit} more op types"
    return text


def _note(counter: str, exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{counter}: failed ({exc.__class__.__name__}{': ' + msg if msg else ''})"


def count_flops(module: Any, inputs: Any, counters: Iterable[str] = COUNTERS, *, in_place: bool = False,
                thop_layers: dict[str, float] | None = None, memory: Any = None) -> FlopsReport:
    """FLOPs of one forward pass from each requested counter, with what each one missed.

    The dispatch counter and thop share one forward (thop's), fvcore traces its own.
    By default ``module`` is never modified: the counters run on a deep copy in eval mode.
    ``in_place=True`` is for a caller that owns an eval-mode module (``yb profile``): no
    copies, the caller's own forward hooks fire during the shared pass, and that pass warms
    the module up for timing. ``thop_layers``, if given, receives thop's MACs per module path.
    ``memory`` (a ``bench.StorageTracker``) measures the module's forward inside the shared
    pass (``memory.passes`` is 1 when that forward ran to the end).
    """
    import torch

    counters = tuple(counters)
    unknown = set(counters) - set(COUNTERS)
    if unknown:
        raise ValueError(f"unknown FLOP counter(s) {sorted(unknown)}; choose from {COUNTERS}")
    inputs = _as_tuple(inputs)
    report = FlopsReport()
    _ensure_op_formulas()
    target = module if in_place else _copy_eval(module)

    thop_info = None
    if "ultralytics" in counters:
        try:
            hooks, zero, functional = _thop_tables()
            thop_info = (_thop_custom_ops(), hooks, zero, functional)
        except Exception as exc:  # thop missing or changed: its column says so
            report.notes.append(_note("ultralytics (thop)", exc))

    layers: dict[str, float] = thop_layers if thop_layers is not None else {}
    thop_result: dict[str, Any] = {}

    def thop_forward() -> None:
        try:
            thop_result["macs"] = thop_macs(target, inputs, layers, in_place=True)
        except Exception as exc:
            thop_result["error"] = exc

    torch_missed_calls: list[tuple[str, str]] = []
    if "torch" in counters:
        try:
            with torch.no_grad():
                shared = thop_forward if thop_info is not None else None
                with memory.armed_within(target) if memory is not None else contextlib.nullcontext():
                    total, by_op, thop_missed, torch_missed = _recorded_torch_pass(target, inputs, thop_info,
                                                                                   run=shared)
                if "error" in thop_result:  # thop stopped before or inside the forward: count alone
                    total, by_op, thop_missed, torch_missed = _recorded_torch_pass(target, inputs, thop_info)
            report.torch, report.by_op = total, by_op
            if thop_info is not None:
                report.missed["ultralytics"] = thop_missed
            torch_missed_calls = torch_missed
        except Exception as exc:
            report.notes.append(_note("torch", exc))
            thop_result.clear()  # the shared pass failed part-way: thop gets a pass of its own below
    if thop_info is not None and not thop_result:
        thop_forward()
    if "error" in thop_result:
        report.notes.append(_note("ultralytics (thop)", thop_result["error"]))
    elif "macs" in thop_result:
        report.thop_macs = thop_result["macs"]
        report.ultralytics = 2 * report.thop_macs
        if report.torch is not None:  # modules the dispatch counter saw no FLOPs in, but thop charged
            report.missed["torch"] = dict(Counter(cls for path, cls in torch_missed_calls
                                                  if layers.get(path, 0) > 0))

    fv_by_operator: dict = {}
    if "fvcore" in counters:
        try:
            macs, unsupported, fv_by_operator, _ = fvcore_count(target, inputs, in_place=True)
            report.fvcore_macs, report.fvcore = macs, 2 * macs
            report.missed["fvcore"] = dict(unsupported)
        except Exception as exc:
            report.notes.append(_note("fvcore", exc))

    report.uncounted = _explain(report, fv_by_operator)
    return report


def _explain(report: FlopsReport, fv_by_operator: dict) -> list[str]:
    """One sentence per counter naming the ops it did not count (calls per op)."""
    lines: list[str] = []
    thop_missed = report.missed.get("ultralytics") or {}
    if thop_missed and report.ultralytics is not None:
        lines.append(f"thop: {_calls(thop_missed)} not counted (functional calls outside modules thop has a rule for)")
    torch_parts = []
    if report.torch is not None:
        mods = report.missed.get("torch") or {}
        if mods and report.ultralytics is not None:
            torch_parts.append(f"{_calls(mods)} [thop counts]")
        from blocks.flop_formulas import OP_FORMULAS

        covered = set(_TORCH_COVERED_FVCORE) | {op.split(".")[-1] for op in report.by_op}
        covered |= {name.split("::")[-1] for name in OP_FORMULAS}
        fv_only = sorted(k for k, v in fv_by_operator.items() if v and k.split("::")[-1] not in covered)
        if fv_only:
            torch_parts.append(f"{', '.join(fv_only)} [fvcore counts]")
    if torch_parts:
        lines.append(f"torch: {'; '.join(torch_parts)} not counted (no dispatch formula)")
    fv_missed = report.missed.get("fvcore") or {}
    if fv_missed and report.fvcore is not None:
        lines.append(f"fvcore: {_calls(fv_missed)} not counted (no fvcore handle)")
    return lines
