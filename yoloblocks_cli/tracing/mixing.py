"""Which operation mixes the samples of a batch: the ``file:line`` of the op, not of a module.

The batch probe finds that sample i of a batch differs from sample i run alone. Module
hooks can only name the first *module* whose output differs, and the culprit is usually a
functional call inside a forward (``F.softmax(t)`` without ``dim`` picks dim 0 of a 3-D
tensor: the batch). Here both runs go through a ``TorchFunctionMode`` that sees every torch
call; the run alone records each output, the batched run compares its sample-i slice op by
op, and the first op whose output differs (all before it agreed) is where samples mix. Its
site is the innermost stack frame in the user's code.

A batched output is comparable when its first axis is the batch (B vs 1) or the batch folded
into rows, sample-major (B*n vs n: ``x.reshape(-1, C)``); other outputs are skipped. Only
run after the probe failed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

_IMPLICIT_DIM = frozenset({"softmax", "log_softmax", "softmin"})
# ops that choose (indices, sorted order): near-equal scores may be chosen differently when batched
# kernels round differently, which is not a leak between samples
_SELECTION = frozenset({"topk", "sort", "argsort", "argmax", "argmin", "kthvalue", "max", "min", "mode", "median"})
# locating records every op's output of one run: a model at 640 would keep gigabytes, so recording stops
# here and ops past it get no op-level answer (the probe's verdict stands)
RECORD_BUDGET_BYTES = 1 << 30


@dataclass(frozen=True)
class MixingSite:
    """The first op whose output mixes samples, and where the user's code called it."""

    op: str
    file: str | None
    line: int | None
    implicit_dim: bool = False  # softmax & co. called without dim

    def hint(self) -> str:
        if self.implicit_dim:
            return (f"batch mixing: {self.op}() without dim= picks dim 0 for a 0-, 1- or 3-D tensor, which here is "
                    f"the batch (PyTorch warns: 'Implicit dimension choice'); pass the dim you mean, e.g. dim=-1")
        return (f"batch mixing: {self.op}() is the first operation whose output for a sample depends on the other "
                f"samples: a reshape or reduction folds the batch axis into tokens (e.g. view(-1, C) then "
                f"softmax/mean over dim 0); keep B as its own axis")


def _user_site() -> tuple[str | None, int | None]:
    from yoloblocks_cli.tracing.tracer import display_path, is_internal

    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if not is_internal(name):
            return display_path(name), frame.f_lineno
        frame = frame.f_back
    return None, None


def _op_name(func: Any) -> str:
    name = getattr(func, "__name__", None) or str(func)
    return name.strip("_") or str(func)


@dataclass(frozen=True)
class ReplayedChoice:
    """No op mixes samples once the batched run is given sample i's own choices at ``count`` selections;
    the first was ``op`` at file:line (near-equal scores, ordered differently under batched rounding)."""

    op: str
    file: str | None
    line: int | None
    count: int

    def message(self, i: int) -> str:
        return (f"samples independent: sample {i} equals its run alone once it makes the same {self.op}() choice"
                f"{self._where()} ({self.count} selection(s) over near-equal scores reorder under batched "
                "float rounding)")

    def layout_message(self) -> str:
        return (f"same output once the channels_last run makes the same {self.op}() choice{self._where()} "
                f"({self.count} selection(s) over near-equal scores reorder under the other kernels' rounding)")

    def _where(self) -> str:
        return f" at {self.file}:{self.line}" if self.file else ""


def _tensors(value: Any) -> list[Any]:
    from yoloblocks_cli.tracing.tracer import flatten_tensors

    return [t for t in flatten_tensors(value) if t.is_floating_point()]


def _choices(name: str, value: Any) -> list[Any]:
    """The integer outputs of a selection op (its indices)."""
    if name not in _SELECTION:
        return []
    from yoloblocks_cli.tracing.tracer import flatten_tensors

    return [t for t in flatten_tensors(value) if not t.is_floating_point() and t.dim() > 0]


def _entry(name: str, out: Any, floats: list[Any], choices: list[Any]) -> tuple[str, list[Any], list[Any], list[Any]]:
    """What a recording keeps of one op: its float outputs, its choices, and (for a selection) every output."""
    import torch

    parts = [t.detach().clone() for t in (out if isinstance(out, tuple) else (out,))
             if isinstance(t, torch.Tensor)] if choices else []
    return name, [t.detach().clone() for t in floats], [c.clone() for c in choices], parts


def _as_alone(out: Any, choices: list[Any], entry: tuple, i: int, b: int, replayed: list) -> Any:
    """``out`` with slice i given the recorded choice when it chose otherwise (the site is noted)."""
    name, _, recorded, parts = entry
    if any(_chose_otherwise(cb, ca, i, b) for cb, ca in zip(choices, recorded)):
        replayed.append((name, *_user_site()))
        return _with_choice(out, parts, i, b)
    return out


def _with_choice(value: Any, alone: list[Any], i: int, b: int) -> Any:
    """``value`` (a tensor or a (values, indices) tuple) with sample i's slice replaced by its run alone's."""
    import torch

    parts = list(value) if isinstance(value, tuple) else [value]
    fixed = []
    for t, a in zip(parts, alone):
        n = a.shape[0]
        if isinstance(t, torch.Tensor) and t.dim() and t.shape[0] == b * n and tuple(t.shape[1:]) == tuple(a.shape[1:]):
            t = t.clone()
            t[i * n:(i + 1) * n] = a.to(t.dtype)
        fixed.append(t)
    return type(value)(fixed) if isinstance(value, tuple) else fixed[0]


class _Stop(Exception):
    """Ends the batched run at the first differing op."""


def replay_selections(module: Any, single: Any, x: Any, i: int, b: int, rtol: float, atol_rel: float,
                      same: Any) -> ReplayedChoice | None:
    """Is the difference only selections over near-equal scores? Record the selection ops of
    ``module(single)`` (their outputs only: small), run ``module(x)`` handing slice ``i`` of each
    selection whose scores agree the recorded choice, and ask ``same(output, single_output)``.

    None when no choice differed, a selection's scores differ (a real difference before it), the runs
    take different paths, or the outputs still differ."""
    import torch
    from torch.overrides import TorchFunctionMode

    alone: list[tuple[str, list[Any], list[Any], list[Any]]] = []

    class Record(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            out = func(*args, **(kwargs or {}))
            name = _op_name(func)
            cs = _choices(name, out)
            if cs:
                alone.append(_entry(name, out, _tensors(out), cs))
            return out

    replayed: list[tuple[str, str | None, int | None]] = []
    step = [0]

    class Replay(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            out = func(*args, **(kwargs or {}))
            name = _op_name(func)
            cs = _choices(name, out)
            if not cs:
                return out
            k = step[0]
            step[0] += 1
            if k >= len(alone) or alone[k][0] != name:
                raise _Stop
            if any(_differs(tb, ta.double(), i, b, rtol, atol_rel) for tb, ta in zip(_tensors(out), alone[k][1])):
                raise _Stop
            return _as_alone(out, cs, alone[k], i, b, replayed)

    with torch.no_grad():
        try:
            with Record():
                reference = module(single)
            with Replay():
                output = module(x)
        except _Stop:
            return None
        except Exception:  # noqa: BLE001 - best effort: the probe's verdict stands
            return None
    if not replayed or not same(output, reference):
        return None
    op, file, line = replayed[0]
    return ReplayedChoice(op, file, line, len(replayed))


def first_mixing_op(module: Any, x: Any, i: int, rtol: float,
                    atol_rel: float) -> MixingSite | ReplayedChoice | None:
    """Run sample ``i`` alone, then the batch ``x``, op by op; the first op that differs.

    A selection op (topk, sort, argmax...) whose scores agree but whose choice differs is given sample
    i's own choice and the comparison goes on; when nothing else differs the answer is
    :class:`ReplayedChoice`, not a mixing site."""
    return first_divergent_op(module, x[i:i + 1], x, i, int(x.shape[0]), rtol, atol_rel)


def first_divergent_op(module: Any, single: Any, x: Any, i: int, b: int, rtol: float,
                       atol_rel: float) -> MixingSite | ReplayedChoice | None:
    """Record ``module(single)``, then run ``module(x)`` op by op comparing slice ``i`` of ``b`` with the
    record (b = 1: the whole output, e.g. the same input in another memory format)."""
    import torch
    from torch.overrides import TorchFunctionMode

    alone: list[tuple[str, list[Any], list[Any], Any]] = []
    recorded = [0]

    class Record(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            out = func(*args, **(kwargs or {}))
            name = _op_name(func)
            ts, cs = _tensors(out), _choices(name, out)
            if (ts or cs) and recorded[0] <= RECORD_BUDGET_BYTES:
                alone.append(_entry(name, out, ts, cs))
                recorded[0] += sum(t.numel() * t.element_size() for t in ts)
            return out

    found: list[MixingSite] = []
    replayed: list[tuple[str, str | None, int | None]] = []
    step = [0]

    class Compare(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            name = _op_name(func)
            ts, cs = _tensors(out), _choices(name, out)
            if not ts and not cs:
                return out
            k = step[0]
            step[0] += 1
            if k >= len(alone) or alone[k][0] != name:
                raise _Stop  # different paths, or past the recording budget: no op-level answer
            if any(_differs(tb, ta, i, b, rtol, atol_rel) for tb, ta in zip(ts, alone[k][1])):
                implicit = name in _IMPLICIT_DIM and kwargs.get("dim") is None and len(args) < 2
                file, line = _user_site()
                found.append(MixingSite(name, file, line, implicit))
                raise _Stop
            return _as_alone(out, cs, alone[k], i, b, replayed)

    with torch.no_grad():
        try:
            with Record():
                module(single)
            with Compare():
                module(x)
        except _Stop:
            pass
        except Exception:  # noqa: BLE001 - locating is best effort; the probe's verdict stands
            return None
    if found:
        return found[0]
    if replayed:
        op, file, line = replayed[0]
        return ReplayedChoice(op, file, line, len(replayed))
    return None


def _chose_otherwise(cb: Any, ca: Any, i: int, b: int) -> bool:
    n = ca.shape[0]
    if cb.dim() == 0 or cb.shape[0] != b * n or tuple(cb.shape[1:]) != tuple(ca.shape[1:]):
        return False
    return not bool((cb[i * n:(i + 1) * n] == ca).all())


def _differs(tb: Any, ta: Any, i: int, b: int, rtol: float, atol_rel: float) -> bool:
    tb = tb.detach().double()
    if tb.dim() == 0 or ta.dim() == 0 or tuple(tb.shape[1:]) != tuple(ta.shape[1:]):
        return False
    n = ta.shape[0]
    if tb.shape[0] != b * n:
        return False
    mine = tb[i * n:(i + 1) * n]
    if not ta.numel():
        return False
    scale = float(ta.abs().max())
    diff = (mine - ta).abs()
    if not bool(diff.isfinite().all()):
        return bool((mine.isfinite() != ta.isfinite()).any())
    return float(diff.max()) > atol_rel * max(1.0, scale) + rtol * scale


def explain(run: Any, i: int) -> MixingSite | ReplayedChoice | None:
    """Why sample ``i`` batched differs from sample ``i`` alone (see :func:`first_mixing_op`)."""
    rtol, atol_rel = run.tolerance()
    return first_mixing_op(run.module, run.x, i, rtol, atol_rel)


def locate_mixing(run: Any, i: int, failure: Any) -> None:
    """Point a batch-dependence ``failure`` at the op that mixes samples, when one is found."""
    site = explain(run, i)
    if isinstance(site, MixingSite):
        point_at(run, failure, site)


def point_at(run: Any, failure: Any, site: MixingSite) -> None:
    """Name the op's file:line, hint and module in ``failure``."""
    if site.file is None:
        return
    failure.file, failure.line = site.file, site.line
    failure.hint = site.hint()
    owner = _module_at(run.module, site)
    if owner is None:
        return
    path, mod = owner
    label = path or "<root>"
    if run.target.tracer is not None and run.target.tracer.layer_modules:
        failure.inner = {"path": label, "module": type(mod).__name__, "input_shape": None}
    else:
        if failure.layer != label:
            failure.layer_input_shape = list(run.x.shape) if mod is run.module else None
        failure.layer, failure.module = label, type(mod).__name__


def _module_at(root: Any, site: MixingSite) -> tuple[str, Any] | None:
    """The deepest module whose forward's source holds the op's line."""
    import inspect
    import os

    best = None
    for path, mod in root.named_modules():
        try:
            fn = type(mod).forward
            file = inspect.getsourcefile(fn)
            lines, start = inspect.getsourcelines(fn)
        except (TypeError, OSError):
            continue
        if file is None or site.file is None or site.line is None:
            continue
        if os.path.abspath(file) != os.path.abspath(site.file) or not start <= site.line < start + len(lines):
            continue
        if best is None or path.count(".") + bool(path) > best[0].count(".") + bool(best[0]):
            best = (path, mod)
    return best
