"""The ``export`` probe: does the block still work after ONNX export, at every shape?

An export bakes shapes into the graph: ``int(math.sqrt(N))`` is evaluated once, a Python
loop over the batch is unrolled, a size turned into a Python number becomes a constant. The
exported graph then fails, or silently computes something else, at every shape but the one
it was exported at. The probe exports each target **once** (at the sweep's base size: the
block's ``--size``, the model's training size, as ``export(imgsz=..., dynamic=True)`` does at its
example size; the first configuration when there is no base) with dynamic
batch, height and width, runs the graph with onnxruntime (CPU) at every configuration and
compares with PyTorch's output at the same input.

Which exporter, and why: the classic TorchScript-based one (``torch.onnx.export(...,
dynamo=False)``), because that is what ultralytics' ``export(format="onnx", dynamic=True)``
calls on every torch version since 2.4, i.e. what the users of these blocks deploy. Its own
diagnostics are used too: every ``TracerWarning`` it raises in the user's code ("Converting a
tensor to a Python integer") is a place where a value may have been frozen.

The root cause of a frozen size comes from ``torch.export`` (draft mode, non-strict) run with
dynamic batch, height and width: the guards that specialise one of them carry the source
line. torch.export does not see every freeze (a ``view`` to a constant size is checked only
at run time there), so where it reports nothing the exporter's TracerWarnings name the line.

Cost: one export per target (seconds for a model), one onnxruntime run per configuration;
the guard analysis runs only when a configuration failed. ``--timeout`` does not bound the
export itself.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import logging
import math
import os
import re
import sys
import tempfile
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from yoloblocks_cli.loading.spec import Shape
from yoloblocks_cli.tracing.probes import ProbeResult, ProbeRun, register_probe
from yoloblocks_cli.tracing.tracer import Failure, display_path, flatten_tensors, is_internal, module_source, user_frame

OPSET = 17  # ONNX 1.12 (2022): read by onnxruntime >= 1.12, TensorRT >= 8.6, OpenVINO >= 2022.3
INSTALL_HINT = "needs onnx and onnxruntime: pip install 'yoloblocks[export]'"
DIM_NAMES = {0: "batch", 2: "height", 3: "width"}


# --- typed results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FrozenAt:
    """A source line where the export turned a size into a constant."""

    file: str
    line: int
    text: str  # the source line itself
    dims: tuple[str, ...] = ()  # "batch", "height", "width" when known (torch.export guards)
    how: str = ""  # "guard Eq(s0, 2)" or the TracerWarning's first sentence


@dataclass
class ExportedGraph:
    """One target exported once: the onnxruntime session, or why there is none."""

    shape: Shape  # the example input's shape: where every frozen size is frozen
    session: Any = None
    input_name: str = "x"
    failure: Failure | None = None
    tracer_lines: list[FrozenAt] = field(default_factory=list)
    nodes: int = 0
    sorts: list[str] = field(default_factory=list)  # TopK node names: their order may differ on near-ties
    wrong_at_export_shape: bool = False  # values differ where nothing can be frozen: computation, not shapes
    seconds: float = 0.0
    guards: dict[int, list[FrozenAt]] = field(default_factory=dict)  # torch.export's, per analysed module


_GRAPHS: "weakref.WeakKeyDictionary[Any, ExportedGraph]" = weakref.WeakKeyDictionary()
_HINT_SHOWN: list[bool] = []


def missing_dependencies() -> list[str]:
    """The packages of the ``[export]`` extra that are not installed."""
    return [m for m in ("onnx", "onnxruntime") if not _importable(m)]


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules (set to None)
        return False


# --- the probe ----------------------------------------------------------------------------------


@register_probe("export", "ONNX export (dynamic batch, H, W) run by onnxruntime matches PyTorch (opt-in: slow)",
                default=False)
def probe_export(run: ProbeRun) -> ProbeResult:
    missing = missing_dependencies()
    if missing:
        if not _HINT_SHOWN:
            _HINT_SHOWN.append(True)
            print(f"export probe skipped: {INSTALL_HINT}", file=sys.stderr)
        return ProbeResult("export", "skip", f"not run: {INSTALL_HINT}")
    ref = run.eval()
    if not ref.ok:
        return run.depends("sweep", ref, "export")
    graph = exported(run)
    if graph.failure is not None:
        return ProbeResult("export", "fail", _first_line(graph.failure.message), graph.failure)
    x = run.x.detach().to("cpu", run.torch.float32).numpy()
    try:
        got = graph.session.run(None, {graph.input_name: x})
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own classes per status code
        f = runtime_failure(run, graph, str(exc))
        return ProbeResult("export", "fail", f"onnxruntime failed at this shape: {_first_line(f.message)}", f)
    return compare(run, graph, flatten_tensors(ref.output), got)


def compare(run: ProbeRun, graph: ExportedGraph, ref: list[Any], got: list[Any]) -> ProbeResult:
    """ONNX outputs against PyTorch's, with the tolerance of the run's dtype (as ``batch``)."""
    torch = run.torch
    rtol, atol_rel = run.tolerance()
    worst, tol = 0.0, 0.0
    problem, reordered = None, False
    if len(ref) != len(got):
        problem = f"the graph returns {len(got)} tensors, PyTorch {len(ref)}"
    for i, (r, g) in enumerate(zip(ref, got)):
        if problem:
            break
        if tuple(r.shape) != tuple(g.shape):
            problem = (f"output {i} has shape {_fmt(g.shape)} in the graph but {_fmt(r.shape)} in PyTorch")
            break
        if not r.numel():
            continue
        a, b = r.detach().double().cpu(), torch.from_numpy(g).double()
        finite = torch.isfinite(a)
        scale = float(a[finite].abs().max()) if finite.any() else 0.0
        diff = float((a - b)[finite].abs().max()) if finite.any() else 0.0
        limit = atol_rel * max(1.0, scale) + rtol * scale
        worst, tol = max(worst, diff), max(tol, limit)
        if diff > limit and graph.sorts and a.dim() >= 2 and _same_rows(a, b, limit):
            reordered = True
            continue
        if diff > limit:
            problem = f"max abs difference {diff:.3g} > tolerance {limit:.3g} (output {i}, magnitude {scale:.3g})"
            break
    if problem is None:
        note = "; same rows in another order after TopK (near-equal scores)" if reordered else ""
        return ProbeResult("export", "pass", f"onnxruntime = PyTorch (max abs diff {worst:.2g}){note}")
    f = Failure(type="ExportMismatch", message=f"wrong values at this shape: {problem}")
    if not [d for i, d in DIM_NAMES.items() if run.shape.dims[i] != graph.shape.dims[i]]:
        graph.wrong_at_export_shape = True
    if graph.sorts and graph.wrong_at_export_shape:
        _explain_sort(run, graph, f)  # wrong at the export shape itself: no size was frozen
    else:
        _explain(run, graph, f, None)
    return ProbeResult("export", "fail", f.message, f)


def _same_rows(a: Any, b: Any, limit: float) -> bool:
    """Equal as sets of rows (last axis) per leading index: a TopK that orders near-equal
    scores differently returns the same detections in another order."""
    import torch

    rows_a, rows_b = a.reshape(-1, a.shape[-2], a.shape[-1]), b.reshape(-1, b.shape[-2], b.shape[-1])
    for ra, rb in zip(rows_a, rows_b):
        used = torch.zeros(len(rb), dtype=torch.bool)
        for row in ra:
            dist = (rb - row).abs().amax(-1).masked_fill(used, float("inf"))
            j = int(dist.argmin())
            if float(dist[j]) > limit:
                return False
            used[j] = True
    return True


def _explain_sort(run: ProbeRun, graph: ExportedGraph, f: Failure) -> None:
    """Values that differ at the export shape itself come from computation, not a frozen
    size; in a graph that sorts, name the TopK and its module."""
    module = node_module(run.module, graph.sorts[0])
    _attribute(run, f, module)
    f.cause = "export-topk-order"
    f.message += (f" | differs at the export shape {graph.shape} too; the graph sorts "
                  f"(TopK node '{graph.sorts[0]}')")
    f.hint = ("TopK keeps a different set of near-equal scores in onnxruntime than in PyTorch (a randomly "
              "initialised head scores almost every anchor alike); not a frozen size: check with trained weights")


# --- exporting once per target ----------------------------------------------------------------------


def exported(run: ProbeRun) -> ExportedGraph:
    """The target's exported graph, made at its export shape (else the first configuration that runs)."""
    key = run.module
    graph = _GRAPHS.get(key)
    if graph is None or graph.shape.channels != run.shape.channels:
        at = getattr(run.target, "export_shape", None)
        at = at if at is not None and at.channels == run.shape.channels else run.shape
        graph = export_onnx(run.module, at, "images" if run.target.kind == "model" else "x")
        _GRAPHS[key] = graph
    return graph


def export_onnx(module: Any, shape: Shape, input_name: str = "x") -> ExportedGraph:
    """Export with the TorchScript-based exporter (what ultralytics runs), then open the graph
    in onnxruntime. The module is exported as float32 on the CPU (a copy when it lives
    elsewhere), in eval mode, exactly as ``dynamic=True`` exports do."""
    import onnx
    import onnxruntime as ort
    import torch

    start = time.perf_counter()
    graph = ExportedGraph(shape=shape, input_name=input_name)
    model = _cpu_float_copy(module)
    x = torch.rand(shape.dims, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    was_training = model.training
    model.eval()
    with _captured_output() as err, warnings.catch_warnings(record=True) as seen, torch.no_grad(), \
            _dynamic_flags(model):
        warnings.simplefilter("always")
        try:
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=OPSET, input_names=[input_name],
                              dynamic_axes={input_name: DIM_NAMES}, do_constant_folding=True)
        except Exception as exc:  # noqa: BLE001 - an exporter failure is the verdict, not a crash
            graph.failure = export_failure(exc, err(), module)
    model.train(was_training)
    graph.tracer_lines = tracer_lines(seen)
    if graph.failure is None:
        proto = onnx.load_from_string(buf.getvalue())
        graph.nodes = len(proto.graph.node)
        graph.sorts = [n.name for n in proto.graph.node if n.op_type == "TopK"]
        options = ort.SessionOptions()
        options.log_severity_level = 4  # a failure is reported by the probe, not as an ORT log line
        options.intra_op_num_threads = torch.get_num_threads()  # --threads holds for onnxruntime too
        try:
            graph.session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - a graph onnxruntime refuses is an export failure too
            graph.failure = Failure(type="OnnxLoadError", message=f"onnxruntime cannot load the graph: {exc}")
    graph.seconds = time.perf_counter() - start
    return graph


@contextlib.contextmanager
def _dynamic_flags(model: Any) -> Iterator[None]:
    """``dynamic = True`` on every module that has a boolean ``dynamic`` flag, for the export
    only: ultralytics' exporter (``dynamic=True``) and YOLOv5's export.py (``--dynamic``) set
    it on the detection heads, which otherwise cache their anchor grid at the export size."""
    missing = object()
    flagged = [(m, m.__dict__.get("dynamic", missing)) for m in model.modules()
               if isinstance(getattr(m, "dynamic", None), bool)]
    for m, _ in flagged:
        m.dynamic = True
    try:
        yield
    finally:
        for m, before in flagged:
            if before is missing:
                del m.dynamic  # back to the class attribute
            else:
                m.dynamic = before


def _cpu_float_copy(module: Any) -> Any:
    import torch

    p = next(iter(module.parameters()), None)
    if p is None or (p.device.type == "cpu" and p.dtype == torch.float32):
        return module
    return copy.deepcopy(module).to("cpu", torch.float32)


@contextlib.contextmanager
def _captured_output() -> Iterator[Callable[[], str]]:
    """The TorchScript exporter prints the whole IR graph from C++ when it fails (stdout);
    that text is also the only place that says which source line an unsupported op came
    from. Both descriptors are captured at the file-descriptor level, read back on demand."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        for fd in saved:
            os.dup2(tmp.fileno(), fd)
        try:
            def read() -> str:
                tmp.flush()
                tmp.seek(0)
                return tmp.read().decode("utf-8", "replace")

            yield read
        finally:
            for fd, copy_fd in saved.items():
                os.dup2(copy_fd, fd)
                os.close(copy_fd)


_OP = re.compile(r"operator '([\w:.]+)'")
_STATIC_OP = re.compile(r"operator (\w+), input size not accessible")  # adaptive pooling and friends
_IR_LINE = r"= {op}\(.*?scope: ([^#\n]*?)\s*(?:# (.+?):(\d+):\d+)?$"


def export_failure(exc: BaseException, ir_text: str, module: Any) -> Failure:
    """The exporter's message and the block's file:line: from the traceback when the block
    raised while being traced, else from the IR graph (an op ONNX cannot express)."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    f = Failure(type=f"ExportError ({type(exc).__name__})", message=f"export failed: {message}"[:600])
    where = user_frame(exc)
    if where is not None:
        f.file, f.line = display_path(where[0]), where[1]
    m = _OP.search(message)
    if m:
        op = m.group(1)
        found = re.search(_IR_LINE.format(op=re.escape(op)), ir_text, re.MULTILINE)
        if found:
            f.layer, f.module = _scope_path(found.group(1))
            if found.group(2) and not is_internal(found.group(2)):
                f.file, f.line = display_path(found.group(2)), int(found.group(3))
        f.hint = (f"'{op}' has no ONNX equivalent in opset {OPSET} with the TorchScript exporter: replace it "
                  "(e.g. an FFT by a convolution) or register a custom symbolic")
    elif (m := _STATIC_OP.search(message)) is not None:
        op = m.group(1)
        found = re.search(_IR_LINE.format(op=re.escape(f"aten::{op}")), ir_text, re.MULTILINE)
        if found:
            f.layer, f.module = _scope_path(found.group(1))
            if found.group(2) and not is_internal(found.group(2)):
                f.file, f.line = display_path(found.group(2)), int(found.group(3))
        f.cause = "export-static-size"
        f.hint = (f"{op}() needs a static input size in ONNX and this export has dynamic H and W (dynamic=True): "
                  "export at a fixed imgsz (ultralytics' default, dynamic=False), or pool with a kernel computed "
                  "from a fixed size")
    else:
        f.hint = "the exporter could not trace the block: see the message and the line"
    return f


def _scope_path(scope: str) -> tuple[str, str | None]:
    """``__main__.Model::/blocks.Attn::attn`` -> (``attn``, ``Attn``): the innermost module's
    path (``<root>`` for the target itself) and class."""
    inner = [p for p in scope.split("/") if "::" in p][-1:] or [""]
    cls, _, name = inner[0].partition("::")
    return (name or "<root>"), (cls.rpartition(".")[2] or None)


_TRACER_WARNING = re.compile(r"^(.*?might cause the trace to be incorrect|[^.]*\.)")


def tracer_lines(seen: list[warnings.WarningMessage]) -> list[FrozenAt]:
    """The exporter's own report of frozen values: TracerWarnings raised in the user's code."""
    out: list[FrozenAt] = []
    for w in seen:
        if w.category.__name__ != "TracerWarning" or is_internal(str(w.filename)):
            continue
        text = _source(w.filename, w.lineno)
        m = _TRACER_WARNING.match(str(w.message))
        at = FrozenAt(display_path(str(w.filename)), int(w.lineno), text, (), m.group(1) if m else "")
        if at not in out:
            out.append(at)
    return out


def _source(file: str, line: int) -> str:
    """The source line without its trailing comment (the code is what froze the size)."""
    import linecache

    return _code(linecache.getline(str(file), int(line)))


def _code(text: str) -> str:
    return re.sub(r"\s+#[^'\"]*$", "", text.strip())


# --- runtime failures: node -> module -> line ------------------------------------------------------

_ORT_NODE = re.compile(r"running (\w+) node\. Name:'([^']*)' Status Message: (.*)", re.DOTALL)


def runtime_failure(run: ProbeRun, graph: ExportedGraph, message: str) -> Failure:
    """onnxruntime stopped at a node: name the node, its module (from the node's scope name)
    and, through the exporter's warnings and torch.export's guards, the line that froze it."""
    m = _ORT_NODE.search(message)
    f = Failure(type="OnnxRuntimeError", message=" ".join(message.split())[:600])
    module = None
    if m:
        op, node, status = m.group(1), m.group(2), " ".join(m.group(3).split())
        status = status.split(" was false. ", 1)[-1]
        status = re.sub(r"^\S*onnxruntime\S*:\d+ \S+\(.*?\) ", "", status)
        f.message = f"{op} node '{node}' failed: {status}"[:600]
        module = node_module(run.module, node)
    _explain(run, graph, f, module)
    return f


def node_module(root: Any, node: str) -> Any:
    """The module a TorchScript-exported node belongs to. Node names are scopes:
    ``/model.22/cv2.0/cv2.0.0/conv/Conv``, each part a path relative to some ancestor,
    so each part is resolved against the current module's ancestors, innermost first."""
    parts = [p for p in node.split("/")[:-1] if p]
    path: list[str] = []
    for part in parts:
        for cut in range(len(path), -1, -1):
            candidate = path[:cut] + part.split(".")
            try:
                root.get_submodule(".".join(candidate))
            except AttributeError:
                continue
            path = candidate
            break
    return root.get_submodule(".".join(path)) if path else root


def _explain(run: ProbeRun, graph: ExportedGraph, f: Failure, module: Any) -> None:
    """Layer, file:line, cause and hint of a configuration that fails only after export."""
    differs = [name for i, name in DIM_NAMES.items() if run.shape.dims[i] != graph.shape.dims[i]]
    if module is not None:
        _attribute(run, f, module)
    guards = _guards(run, graph, module)
    culprit = _culprit(graph, guards, differs, f.file)
    if culprit is not None:
        if module is None:  # wrong values: no node to start from; the module whose forward holds the line
            owner = _module_at(run.module, culprit.file, culprit.line)
            if owner is not None:
                _attribute(run, f, owner)
        f.file, f.line = culprit.file, culprit.line
        guarded = tuple(d for g in guards if (g.file, g.line) == (culprit.file, culprit.line)
                        for d in g.dims)
        # The line freezes what its guard names, and whatever this configuration changed.
        frozen = tuple(d for d in DIM_NAMES.values() if d in guarded or d in differs)
        f.cause = "export-frozen-batch" if frozen == ("batch",) else "export-frozen-size"
        f.hint = freeze_hint(culprit, graph.shape, frozen)
        f.message += f" | exported at {graph.shape}; {culprit.how}: {culprit.text}"
    else:
        f.cause = "export-frozen-size"
        what = ", ".join(differs) or "nothing but the values"
        f.hint = (f"the graph was exported at {graph.shape} and this configuration differs in {what}: a size "
                  "became a constant at export; compute sizes from x.shape with tensor ops inside forward")
    if f.layer is None and f.file is None:
        file, line = module_source(run.module)
        f.file, f.line = file, line


def _attribute(run: ProbeRun, f: Failure, module: Any) -> None:
    tracer = run.target.tracer
    layer = next((m for _, m in getattr(tracer, "layer_modules", []) or []
                  if m is module or any(c is module for c in m.modules())), None)
    path = tracer.paths.get(id(module)) if tracer is not None else None
    if layer is not None:
        f.layer, f.module = _int_or(tracer.label_of(layer)), type(layer).__name__
        if layer is not module:
            f.inner = {"path": path, "module": type(module).__name__, "input_shape": None}
    else:
        f.layer, f.module = path, type(module).__name__
    file, line = module_source(module)
    if file is not None and not is_internal(str(Path(file).resolve())):
        f.file, f.line = file, line


def _module_at(root: Any, file: str, line: int) -> Any:
    """The innermost module whose class's ``forward`` spans ``file:line`` (None if none)."""
    import inspect

    spans: dict[type, tuple[str, int, int] | None] = {}
    found = None
    target = Path(file).resolve()
    for mod in root.modules():
        cls = type(mod)
        if cls not in spans:
            try:
                lines, start = inspect.getsourcelines(cls.forward)
                spans[cls] = (str(Path(inspect.getsourcefile(cls.forward) or "").resolve()), start, start + len(lines))
            except (TypeError, OSError):
                spans[cls] = None
        span = spans[cls]
        if span is not None and Path(span[0]) == target and span[1] <= line < span[2]:
            found = mod
    return found


def _culprit(graph: ExportedGraph, guards: list[FrozenAt], differs: list[str],
             module_file: str | None) -> FrozenAt | None:
    """The most specific explanation: a torch.export guard on a dimension this configuration
    changes, else a TracerWarning in the failing module's file, else the first one."""
    for g in guards:
        if set(g.dims) & set(differs):
            return g
    lines = graph.tracer_lines
    if module_file is not None:
        same = [w for w in lines if Path(w.file).resolve() == Path(module_file).resolve()]
        lines = same or lines
    ranked = sorted(lines, key=lambda w: 0 if any(r.pattern.search(w.text) for r in _FREEZE_HINTS) else 1)
    return ranked[0] if ranked else None


# --- torch.export: which dimension was specialised, and where ---------------------------------------

_SOURCE_DIM = re.compile(r"size\(\)\[(\d)\]")


def _guards(run: ProbeRun, graph: ExportedGraph, module: Any) -> list[FrozenAt]:
    """torch.export's guards for the module to blame, computed once each. A block is
    analysed whole. A model only at the YAML layer that holds the failing node, on the input
    that layer gets at the export shape: draft-exporting a whole detector costs minutes."""
    import torch

    b, c, h, w = graph.shape.dims
    if run.target.kind != "model":
        if id(run.module) not in graph.guards:
            x = torch.rand(max(b, 2), c, max(h, 2), max(w, 2))
            graph.guards[id(run.module)] = guard_lines(run.module, x)
        return graph.guards[id(run.module)]
    tracer = run.target.tracer
    layer = next((m for _, m in getattr(tracer, "layer_modules", []) or []
                  if module is not None and (m is module or any(c is module for c in m.modules()))), None)
    if layer is None:
        return []
    if id(layer) not in graph.guards:
        seen: list[Any] = []
        handle = layer.register_forward_pre_hook(lambda mod, args: seen.append(args))
        try:
            with torch.no_grad():
                run.module(torch.rand(max(b, 2), c, h, w, device=run.x.device, dtype=run.x.dtype))
        except Exception:  # noqa: BLE001 - no input for the layer, no analysis
            pass
        finally:
            handle.remove()
        args = seen[0] if seen else ()
        one = len(args) == 1 and getattr(args[0], "dim", lambda: 0)() == 4
        graph.guards[id(layer)] = guard_lines(layer, args[0].detach().float().cpu()) if one else []
    return graph.guards[id(layer)]


def guard_lines(module: Any, x: Any) -> list[FrozenAt]:
    """Guards that specialise the batch, H or W of ``module``'s 4-D input under
    ``torch.export`` (draft mode reports all of them instead of stopping at the first), with
    the user's source line. The example batch is at least 2: torch.export specialises a
    size of 1 by design."""
    try:
        from torch.export import Dim, draft_export
    except ImportError:
        return []
    model = _cpu_float_copy(module).eval()
    dims = ({0: Dim("batch"), 2: Dim("height"), 3: Dim("width")},)
    try:
        with _captured_output(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logger = logging.getLogger("torch.export")
            level, logger.level = logger.level, logging.ERROR
            try:
                ep = draft_export(model, (x,), dynamic_shapes=dims)
            finally:
                logger.setLevel(level)
        report = getattr(ep, "_report", None)
    except Exception:  # noqa: BLE001 - the analysis is an explanation; without it the probe still reports
        return []
    if report is None:
        return []
    files = _interned_files()
    files.update(getattr(report, "str_to_filename", {}) or {})  # index -> file name
    found: dict[tuple[str, int], FrozenAt] = {}
    for fail in getattr(report, "failures", []):
        data = getattr(fail, "data", {}) or {}
        expr = str(data.get("expr", ""))
        sources = data.get("symbol_to_sources") or {}
        named = tuple(sorted({DIM_NAMES[int(m.group(1))] for s in sources.values()
                              for m in [_SOURCE_DIM.search(str(s))] if m and int(m.group(1)) in DIM_NAMES},
                             key=list(DIM_NAMES.values()).index))
        if not named or not expr:
            continue
        frame = _user_frame_of(data.get("user_stack") or [], files)
        if frame is None:
            continue
        key = (display_path(frame[0]), frame[1])
        before = found.get(key)
        if before is not None:  # one line, several guards: the first is the cause, the rest follow from it
            named = before.dims
            expr = before.how.removeprefix("torch.export guard ") + ", " + expr
        found[key] = FrozenAt(key[0], key[1], frame[2], named, f"torch.export guard {expr}")
    return list(found.values())


def _interned_files() -> dict[int, str]:
    """Stack frames name files by an index into torch's process-wide string table; a
    report lists only the files interned during its own export."""
    try:
        from torch._logging.structured import INTERN_TABLE
    except ImportError:
        return {}
    return {i: name for name, i in INTERN_TABLE.items()}


def _user_frame_of(stack: list[Any], files: dict[Any, str]) -> tuple[str, int, str] | None:
    found = None
    for fr in stack:
        get = fr.get if isinstance(fr, dict) else (lambda k, fr=fr: getattr(fr, k, None))
        name = get("filename")
        name = files.get(name) if not isinstance(name, str) else name
        if name and not is_internal(str(name)) and get("line"):
            found = (str(name), int(get("line")), _code(get("loc") or _source(str(name), int(get("line")))))
    return found


# --- hints: what froze the size, by the line's pattern ----------------------------------------------


@dataclass(frozen=True)
class FreezeHint:
    pattern: "re.Pattern[str]"
    text: Callable[[FrozenAt, Shape, tuple[str, ...]], str]


_FREEZE_HINTS: list[FreezeHint] = []


def register_freeze_hint(pattern: str) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """A hint for a frozen-size line matching ``pattern`` (first registered wins)."""

    def deco(fn: Callable[..., str]) -> Callable[..., str]:
        _FREEZE_HINTS.append(FreezeHint(re.compile(pattern), fn))
        return fn

    return deco


def freeze_hint(at: FrozenAt, shape: Shape, dims: tuple[str, ...]) -> str:
    for h in _FREEZE_HINTS:
        if h.pattern.search(at.text):
            return h.text(at, shape, dims)
    frozen = " and ".join(f"{d} = {_value(shape, d)}" for d in dims) or "a size"
    return (f"`{at.text}` freezes {frozen} at export; compute the size from x.shape with tensor operations "
            "instead of turning it into a Python number")


def _value(shape: Shape, dim: str) -> int:
    return {"batch": shape.batch, "height": shape.height, "width": shape.width}[dim]


@register_freeze_hint(r"^\s*(?:if|elif|while)\b.*(?:shape|size\()")
def _branch_hint(at: FrozenAt, shape: Shape, dims: tuple[str, ...]) -> str:
    return ("a Python `if` on a size is decided once, at export: the branch taken there (and whatever it "
            "cached, such as an anchor grid) is baked into the graph; compute it from x.shape on every call")


@register_freeze_hint(r"\bsqrt\b|\*\*\s*0?\.5")
def _sqrt_hint(at: FrozenAt, shape: Shape, dims: tuple[str, ...]) -> str:
    return (f"`int(math.sqrt(N))` freezes H = W = {math.isqrt(shape.height * shape.width)} at export; "
            "keep H and W from x.shape")


@register_freeze_hint(r"\bfor\b.*\brange\(|\brange\(.*shape\[0\]|\bfor\b.*\bin\b.*\b(?:unbind|split|chunk)\(")
def _loop_hint(at: FrozenAt, shape: Shape, dims: tuple[str, ...]) -> str:
    what = " and ".join(f"{d} = {_value(shape, d)}" for d in dims) or f"batch = {shape.batch}"
    return (f"a Python loop over a tensor size is unrolled at export ({what}); "
            "replace the loop by one batched operation")


@register_freeze_hint(r"\bint\(|\bfloat\(|\.item\(\)|\.tolist\(\)")
def _number_hint(at: FrozenAt, shape: Shape, dims: tuple[str, ...]) -> str:
    frozen = " and ".join(f"{d} = {_value(shape, d)}" for d in dims) or "the size"
    return (f"turning a size into a Python number (int(), float(), .item()) freezes {frozen} at export; "
            "pass x.shape values straight to view/reshape")


# --- small helpers -------------------------------------------------------------------------------------


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _fmt(shape: Any) -> str:
    return "x".join(str(int(d)) for d in shape)


def _int_or(label: str) -> Any:
    return int(label) if isinstance(label, str) and label.isdigit() else label
