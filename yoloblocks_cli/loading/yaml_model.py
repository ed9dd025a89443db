"""YOLO YAML -> ``nn.Module``, without ultralytics, exact to the parameter.

The builder follows ultralytics' ``parse_model`` row by row, but every per-module rule
comes from the block's registered :class:`~blocks.conventions.Convention` (or the dialect's
override of it), never from an ``if m in {...}`` chain. It is safe: the YAML is read with
``yaml.safe_load``, arguments are literals or the names the dialect allows (``nc``,
``kpt_shape``), and an ``activation:`` string is parsed against an allow-list.

While building, every layer is run once on a 256x256 zero image (as ultralytics does to
learn the strides). That run gives unregistered plugin blocks their output width and finds
a channel mismatch at the layer that has it, with the YAML line.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from yoloblocks_cli.errors import CheckFailed, UsageError

SCALES_RE = re.compile(r"yolo(e-)?[v]?\d+([nslmx])")
ACTIVATIONS = frozenset({
    "SiLU", "ReLU", "ReLU6", "LeakyReLU", "Hardswish", "Hardsigmoid", "GELU", "Mish", "Sigmoid", "Tanh",
    "ELU", "PReLU", "SELU", "CELU", "Softplus", "Identity",
})


# --- where a model comes from ----------------------------------------------------------------


def cfg_dir() -> Path:
    """``blocks/cfg``, found without importing the block library (that would import torch)."""
    import importlib.util

    spec = importlib.util.find_spec("blocks")
    assert spec is not None and spec.origin is not None, "the blocks package is not installed"
    return Path(spec.origin).parent / "cfg"


def _shipped_folders() -> list[Path]:
    """Folders of shipped YAMLs, the default dialect's (``ultralytics``) first: a bare name such as
    ``yolov5n`` means ultralytics' model of that name (``yolov5_repo/yolov5n`` names the other)."""
    root = cfg_dir()
    folders = sorted({p.parent for p in root.rglob("*.yaml")}, key=lambda f: (f.name != "ultralytics", f != root, str(f)))
    return folders


def shipped_models() -> dict[str, Path]:
    """Short name -> YAML for every model the tool ships (``blocks/cfg/**.yaml``); both the bare stem
    (first folder wins, ultralytics first) and ``folder/stem`` are keys."""
    root = cfg_dir()
    found: dict[str, Path] = {}
    for folder in _shipped_folders():
        for p in sorted(folder.glob("*.yaml")):
            found.setdefault(p.stem, p)
            found.setdefault(p.relative_to(root).with_suffix("").as_posix(), p)
    return found


def _candidate_stems(stem: str) -> list[str]:
    """``yolov8n6`` -> ``yolov8n-p6``; ``yolov8n-p2`` -> ``yolov8-p2`` (ultralytics' unified names)."""
    if stem in {f"yolov{d}{x}6" for x in "nsmlx" for d in (5, 8)}:
        stem = re.sub(r"(\d+)([nslmx])6(.+)?$", r"\1\2-p6\3", stem)
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", stem)
    return [stem] if unified == stem else [stem, unified]


def _requested_stem(stem: str) -> str:
    return _candidate_stems(stem)[0]


def guess_model_scale(path: str | Path) -> str:
    """The scale letter in a model file name (``yolov8n`` -> ``n``), as ultralytics guesses it."""
    m = SCALES_RE.search(Path(str(path)).stem)
    return m.group(2) if m else ""


def resolve_model_path(name: str | Path) -> Path:
    """A YAML path, or a shipped model's short name (``yolo11s``, ``yolov8n-p2.yaml``), -> its file."""
    text = str(name)
    p = Path(text).expanduser()
    if p.is_file():
        return p
    stem = p.name[:-5] if p.name.endswith(".yaml") else p.name[:-4] if p.name.endswith(".yml") else p.name
    if p.parent != Path(".") or text.endswith((".yaml", ".yml")):
        for cand in _candidate_stems(stem):
            q = p.with_name(cand + (p.suffix or ".yaml"))
            if q.is_file():
                return q
    root = cfg_dir()
    sub = p.parent if p.parent != Path(".") else None
    folders = [root / sub] if sub is not None else _shipped_folders()
    for folder in folders:
        for cand in dict.fromkeys([stem, *_candidate_stems(stem)]):  # the literal name first: hub/yolov5n6
            q = folder / f"{cand}.yaml"
            if q.is_file():
                return q
    shipped = shipped_models()
    import difflib

    close = difflib.get_close_matches(stem, list(shipped), n=5, cutoff=0.6)
    hint = f" (did you mean: {', '.join(close)}?)" if close else ""
    raise UsageError(f"no such model YAML: {text}{hint}")


# --- reading the YAML ------------------------------------------------------------------------


@dataclass
class YamlDoc:
    """A parsed model YAML with the source line of every layer row."""

    path: Path
    data: dict
    rows: list[tuple[Any, int]]  # (row, 1-based line) for backbone + head, in order
    key_lines: dict[str, int]


def _where(path: Path | str, line: int | None) -> str:
    return f"{path}:{line}" if line else f"{path}"


def read_yaml(path: Path, text: str | None = None) -> YamlDoc:
    """safe_load the document and read each layer row's line from the composed node tree."""
    import yaml

    from yoloblocks_cli.loading import limits

    text = limits.read_model_text(path) if text is None else text
    limits.check_yaml_bytes(len(text), str(path))
    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when the wheel has it: ~10x faster
    try:
        root = yaml.compose(text, Loader=loader_cls)  # one parse: nodes carry line marks, then data from them
        limits.check_yaml_nodes(root, str(path))  # before construction: a billion laughs stops here
        data = loader_cls("").construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        context = getattr(exc, "context_mark", None)
        if context is not None and mark is not None and mark.index >= len(text.rstrip()):
            mark = context  # the file ended inside an open bracket or quote: point at where it opened
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{_where(path, line)}: malformed YAML: {problem}") from None
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        raise UsageError(f"{path}: not a model YAML: expected a mapping with 'backbone' and 'head'")
    key_lines: dict[str, int] = {}
    row_lines: dict[str, list[int]] = {}
    for key_node, value_node in root.value:
        key_lines[str(key_node.value)] = key_node.start_mark.line + 1
        if isinstance(value_node, yaml.SequenceNode):
            row_lines[str(key_node.value)] = [item.start_mark.line + 1 for item in value_node.value]
    rows: list[tuple[Any, int]] = []
    for section in ("backbone", "head"):
        block = data.get(section)
        if block is None:
            if section == "backbone":
                raise UsageError(f"{path}: not a model YAML: no 'backbone' list")
            continue
        if not isinstance(block, list):
            raise UsageError(f"{_where(path, key_lines.get(section))}: '{section}' must be a list of "
                             "[from, repeats, module, args] rows")
        lines = row_lines.get(section, [])
        rows.extend((row, lines[k] if k < len(lines) else key_lines.get(section, 0)) for k, row in enumerate(block))
    return YamlDoc(path, data, rows, key_lines)


def parse_activation(text: str) -> Any:
    """``nn.LeakyReLU(0.1)`` -> the module, from an allow-list, by parsing (never ``eval``)."""
    from torch import nn

    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(f"not an activation expression: {text!r}") from None
    if isinstance(node, (ast.Attribute, ast.Name)):  # `nn.SiLU` without parentheses
        node = ast.Call(func=node, args=[], keywords=[])
    if not isinstance(node, ast.Call):
        raise ValueError(f"not an activation expression: {text!r}")
    func = node.func
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.insert(0, func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.insert(0, func.id)
    name = parts[-1] if parts else ""
    prefix = parts[:-1]
    if prefix not in ([], ["nn"], ["torch", "nn"]) or name not in ACTIVATIONS:
        raise ValueError(f"activation {text!r} is not allowed; use one of: "
                         f"{', '.join('nn.' + a + '()' for a in sorted(ACTIVATIONS))}")
    try:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
    except ValueError:
        raise ValueError(f"activation {text!r}: arguments must be literals") from None
    return getattr(nn, name)(*args, **kwargs)


@contextlib.contextmanager
def default_activation(act: Any, others: Sequence[str] = ()) -> Iterator[None]:
    """Conv.default_act is class state (ultralytics mutates it); set it for one build only.

    ``others``: registry names of further classes whose ``default_act`` the dialect also sets, each
    to its own copy (the YOLOv9 repository sets RepConvN's too).
    """
    import copy

    from blocks.conv import Conv
    from blocks.registry import get_block

    classes = [Conv, *(get_block(name).cls for name in others)]
    saved = [c.default_act for c in classes]
    if act is not None:
        for k, c in enumerate(classes):
            c.default_act = act if k == 0 else copy.deepcopy(act)
    try:
        yield
    finally:
        for c, a in zip(classes, saved):
            c.default_act = a


# --- the model -------------------------------------------------------------------------------


def _model_class() -> type:
    if "YoloModel" in globals():
        return globals()["YoloModel"]
    from torch import nn

    from blocks.open_vocabulary import batch_of, run_layer  # imported once, not on every forward

    class YoloModel(nn.Module):
        """The built graph: ``model`` is an nn.Sequential of layers that carry ``i``, ``f``,
        ``type`` and ``np`` exactly as ultralytics' layers do, run by the same loop."""

        def __init__(self, layers: list, save: list[int], stride: Any, yaml: dict, class_embeddings: Any = None):
            super().__init__()
            self.model = nn.Sequential(*layers)
            self.save = save
            self.stride = stride
            self.yaml = yaml
            self.names = {i: f"{i}" for i in range(int(yaml.get("nc", 80) or 0))}
            # open-vocabulary models (YOLO-World, YOLOE): placeholder class embeddings, not a parameter
            self.register_buffer("class_embeddings", class_embeddings, persistent=False)

        def forward(self, x: Any) -> Any:
            text = None if self.class_embeddings is None else batch_of(self.class_embeddings.to(x.dtype), x)
            original = text
            y: list = []
            for m in self.model:
                if m.f != -1:
                    x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
                x, text = run_layer(m, x, text, original)
                y.append(x if m.i in self.save else None)
            return x

    YoloModel.__qualname__ = "YoloModel"
    YoloModel.__module__ = __name__
    globals()["YoloModel"] = YoloModel
    return YoloModel


def __getattr__(name: str) -> Any:  # YoloModel is defined lazily: this module must not import torch
    if name == "YoloModel":
        return _model_class()
    raise AttributeError(name)


@dataclass
class LayerInfo:
    """One YAML row as built."""

    index: int
    from_: int | list[int]
    n: int  # repeats after depth scaling (ultralytics' n_)
    module: str  # the name written in the YAML
    type: str  # dotted class path, as ultralytics' ``m.type``
    args: list  # the constructor's positional arguments
    kwargs: dict[str, Any]
    params: int
    line: int
    c_out: Any
    registered: bool = True

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "from": self.from_, "n": self.n, "module": self.module, "type": self.type,
                "args": _jsonable(self.args), "params": self.params, "line": self.line}


def _jsonable(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


@dataclass
class BuiltModel:
    """What :func:`build_model` returns (``model`` is in eval mode)."""

    model: Any
    layers: list[LayerInfo]
    stride: tuple[float, ...]
    yaml_path: Path
    scale: str | None
    dialect: str
    name: str
    yaml: dict = field(default_factory=dict)
    channels: int = 3
    checkpoint: Any = None  # CheckpointInfo when the weights came from a trained checkpoint
    plugins: list = field(default_factory=list)  # loading.plugins.PluginUse of each plugin class used
    fused: bool = False  # folded for deployment (yoloblocks_cli.loading.fuse)

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def gradients(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    @property
    def n_modules(self) -> int:
        """``len(list(model.modules()))``: the "layers" of older ultralytics and of the repositories."""
        return len(list(self.model.modules()))

    @property
    def n_leaf_modules(self) -> int:
        """Modules without children (shared ones once): ultralytics 8.4's "layers"."""
        return sum(1 for _, m in self.model.named_modules() if len(m._modules) == 0)

    @property
    def n_layers(self) -> int:
        """The "layers" of the summary line, counted the way this model's dialect counts them."""
        from yoloblocks_cli.loading.dialects import get_dialect

        how = get_dialect(self.dialect).fact("summary_layers")
        return self.n_leaf_modules if how == "leaves" else self.n_modules

    def layer_modules(self) -> list[Any]:
        return list(self.model.model)


# --- building ----------------------------------------------------------------------------------


_WIDTH_CACHE: dict[tuple, Any] = {}


@dataclass
class _Resolver:
    """Finds the class for a YAML module name: plugins (the user's file wins), dialect rename, registry, torch.nn."""

    dialect: Any
    plugins: dict[str, type]
    used: dict[str, type] = field(default_factory=dict)  # YAML names resolved to a plugin's class

    def find(self, name: str) -> tuple[type, Any, str]:
        """(class, convention or None, display name); the user's plugin class wins (loading/plugins.py)."""
        from blocks.registry import UnknownBlockError, get_block

        key = self.dialect.rename.get(name, name)
        for k in dict.fromkeys((name, key)):
            if k in self.plugins:
                from blocks.registry import info_for_class

                cls = self.used[name] = self.plugins[k]
                own = info_for_class(cls)  # a plugin may register its block (with its convention)
                return cls, (self.dialect.conventions.get(own.name, own.convention) if own else None), k
        try:
            info = get_block(key)
            if key != info.name and key not in info.aliases:  # YAML names are case-sensitive, as in ultralytics
                raise UnknownBlockError(key, [info.name])
        except UnknownBlockError as exc:
            if key.startswith(("nn.", "torch.nn.")):
                import torch.nn as nn

                cls = getattr(nn, key.rsplit(".", 1)[1], None)
                if isinstance(cls, type) and issubclass(cls, nn.Module):
                    return cls, None, key
            import difflib

            pool = set(exc.suggestions) | set(difflib.get_close_matches(key, list(self.plugins), n=3, cutoff=0.5))
            hint = f" (did you mean: {', '.join(sorted(pool))}?)" if pool else ""
            raise LookupError(f"unknown module '{name}'{hint}") from None
        conv = self.dialect.conventions.get(info.name, info.convention)
        return info.cls, conv, info.name


def load_plugins(plugins: Iterable[str | Path]) -> dict[str, type]:
    """Import each plugin file; every nn.Module class it defines becomes a YAML module name."""
    from yoloblocks_cli.loading.plugins import collect_plugin_classes

    return collect_plugin_classes(plugins)


def _resolve_arg(a: Any, names: dict[str, Any]) -> Any:
    """A YAML argument: a literal, a name the dialect allows (``nc``), or an activation module written as
    ``nn.LeakyReLU(0.1)`` (YOLOv7-tiny), parsed by :func:`parse_activation` (ValueError if not allowed)."""
    if not isinstance(a, str):
        return a
    if a in names:
        return names[a]
    if a.strip().startswith(("nn.", "torch.nn.")):
        return parse_activation(a)  # a new module per row, as the repositories' eval makes one
    try:
        return ast.literal_eval(a)
    except (ValueError, SyntaxError):
        return a


def _check_from(f: Any, i: int) -> list[int]:
    items = f if isinstance(f, list) else [f]
    if not items or not all(isinstance(x, int) and not isinstance(x, bool) for x in items):
        raise ValueError(f"'from' must be an integer or a list of integers, got {f!r}")
    for x in items:
        if i == 0 and x != -1:
            raise ValueError(f"'from' {x} out of range: the first layer can only take the input (-1)")
        if x >= i:
            raise ValueError(f"'from' {x} points forward: layer {i} can only use layers 0..{i - 1} or -1")
        if i > 0 and x < -i:
            raise ValueError(f"'from' {x} out of range: layer {i} has only {i} earlier layers")
    return items


def _shapes(x: Any) -> str:
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_shapes(v) for v in x) + "]"
    shape = getattr(x, "shape", None)
    return "x".join(str(d) for d in shape) if shape is not None else type(x).__name__


def check_module_names(doc: YamlDoc, resolver: Any) -> None:
    """Every unknown module name of the file at once (a user fixing a YAML needs the whole list).

    One unknown module: the usual one line. Several: a header line, then one line per row
    (file:line, layer, name, did-you-mean); both end by pointing at ``--plugin`` for a block of
    the user's own. Malformed rows are left to the build loop, which names them.
    """
    unknown: list[str] = []
    for i, (row, line) in enumerate(doc.rows):
        if not (isinstance(row, list) and len(row) == 4 and isinstance(row[2], str)):
            continue
        try:
            resolver.find(row[2])
        except LookupError as exc:
            unknown.append(f"{_where(doc.path, line)}: layer {i} ({row[2]}): {exc}")
    plugin = "a block of your own: pass its file with --plugin FILE.py"
    if len(unknown) == 1:
        raise UsageError(f"{unknown[0]}; {plugin}")
    if unknown:
        raise UsageError(f"{doc.path}: {len(unknown)} unknown modules ({plugin}):\n" + "\n".join(f"  {u}" for u in unknown))


def _call_text(name: str, args: list, kwargs: dict) -> str:
    return f"{name}({', '.join([repr(a) for a in args] + [f'{k}={v!r}' for k, v in kwargs.items()])})"


def build_model(path_or_name: str | Path, scale: str | None = None, plugins: Sequence[str | Path] = (),
                nc: int | None = None, dialect: str | None = None, channels: int | None = None,
                source: YamlDoc | None = None, weights_yaml: str | None = None) -> BuiltModel:
    """Build a YOLO YAML (a path or a shipped short name) into a model, exactly as ultralytics would.

    A checkpoint path (``best.pt``) is rebuilt from its stored YAML (or ``weights_yaml`` for a plain
    state_dict) with its trained weights: see :mod:`yoloblocks_cli.loading.checkpoint`.
    ``source``: an already-parsed document (a checkpoint's stored YAML); ``path_or_name`` then only names it."""
    if source is None and str(path_or_name).lower().endswith((".pt", ".pth", ".safetensors", ".ckpt")):
        from yoloblocks_cli.loading.checkpoint import build_from_checkpoint

        return build_from_checkpoint(path_or_name, weights_yaml, scale=scale, plugins=plugins, nc=nc,
                                     dialect=dialect)
    import torch

    import blocks  # noqa: F401  (registers the library)
    from blocks.conventions import LayerContext
    from blocks.open_vocabulary import placeholder_embeddings, run_layer
    from yoloblocks_cli.loading import limits
    from yoloblocks_cli.loading.dialects import detect_dialect, get_dialect

    path = resolve_model_path(path_or_name) if source is None else source.path
    requested = Path(str(path_or_name))
    req_name = requested.name
    req_stem = _requested_stem(req_name.rsplit(".", 1)[0] if req_name.endswith((".yaml", ".yml")) else req_name)
    doc = read_yaml(path) if source is None else source
    d = dict(doc.data)
    if nc is not None:
        d["nc"] = nc
    try:
        dia = get_dialect(dialect) if dialect else detect_dialect(d)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    plugin_classes = load_plugins(plugins)
    resolver = _Resolver(dia, plugin_classes)
    check_module_names(doc, resolver)

    # scale: --scale, else the file name the user typed (yolov8n -> n), else the first in `scales`
    scales = d.get("scales")
    depth, width = d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0)
    max_channels: float = float("inf")
    used_scale = scale or (guess_model_scale(req_stem) if dia.fact("scale_from_file_name") else "") or None
    if scales:
        if not isinstance(scales, dict):
            raise UsageError(f"{_where(path, doc.key_lines.get('scales'))}: 'scales' must map a letter to "
                             "[depth, width, max_channels]")
        if used_scale is None or (used_scale not in scales and scale is None):
            used_scale = next(iter(scales))
        if used_scale not in scales:  # `--scale t` for a YAML that spells it `T` (Mamba-YOLO)
            same = [k for k in scales if str(k).lower() == str(used_scale).lower()]
            used_scale = same[0] if len(same) == 1 else used_scale
        if used_scale not in scales:
            raise UsageError(f"{_where(path, doc.key_lines.get('scales'))}: scale '{used_scale}' is not defined; "
                             f"this YAML has: {', '.join(map(str, scales))}")
        try:
            depth, width, max_channels = scales[used_scale]
        except (TypeError, ValueError):
            raise UsageError(f"{_where(path, doc.key_lines.get('scales'))}: scale '{used_scale}' must be "
                             "[depth, width, max_channels]") from None
    elif scale is not None:
        raise UsageError(f"{path}: --scale {scale} given but this YAML has no 'scales'")
    else:
        used_scale = None

    act = d.get("activation")
    act_module = None
    if act:
        try:
            act_module = parse_activation(str(act))
        except ValueError as exc:
            raise UsageError(f"{_where(path, doc.key_lines.get('activation'))}: {exc}") from None

    limits.check_multipliers(depth, width, max_channels, _where(path, doc.key_lines.get("scales")))
    ch0 = limits.check_count(channels or d.get("channels", 3) or 3, "channels", str(path))
    names = {k: d.get(k) for k in dia.fact("arg_names")}
    nc_val = limits.check_count(d.get("nc", 80), "nc", _where(path, doc.key_lines.get("nc")))
    limits.reset_allocations()
    state = dict(dia.fact("initial_state"))
    probe = int(dia.fact("stride_probe"))
    keep_nc = dia.fact("keep_nc_width")

    layers: list[Any] = []
    infos: list[LayerInfo] = []
    save: list[int] = []
    ch: list[Any] = [ch0]
    outs: list[Any] = []
    x = torch.zeros(1, ch0, probe, probe)
    stride = None
    text = original = None  # class embeddings of an open-vocabulary model, once its first text layer is built
    smallest = probe  # the smallest map height any layer outputs: the deepest stride is probe / smallest
    text_layers: list[Any] = []

    with default_activation(act_module, dia.fact("activation_also")), torch.no_grad():
        for i, (row, line) in enumerate(doc.rows):
            loc = f"{_where(path, line)}: layer {i}"
            if not isinstance(row, list) or len(row) != 4:
                raise UsageError(f"{loc}: a layer row must be [from, repeats, module, args], got {row!r}")
            f, n, mname, args = row
            loc = f"{loc} ({mname})"
            if not isinstance(mname, str):
                raise UsageError(f"{_where(path, line)}: layer {i}: module must be a name, got {mname!r}")
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise UsageError(f"{loc}: repeats must be a positive integer, got {n!r}")
            if not isinstance(args, list):
                raise UsageError(f"{loc}: args must be a list, got {args!r}")
            try:
                f_list = _check_from(f, i)
            except ValueError as exc:
                raise UsageError(f"{loc}: {exc}") from None
            try:
                cls, convention, display = resolver.find(mname)
            except LookupError as exc:
                raise UsageError(f"{loc}: {exc}") from None
            try:
                args = [_resolve_arg(a, names) for a in args]
            except ValueError as exc:
                raise UsageError(f"{loc}: {exc}") from None
            n_ = max(round(n * depth), 1) if n > 1 else n
            limits.check_repeats(n, n_, loc)
            ch_in = [ch[j] for j in f_list]
            if convention is not None:
                ctx = LayerContext(ch_in=ch_in, args=list(args), n=n_, nc=(nc_val if keep_nc else -1), width=width,
                                   max_channels=max_channels, scale=used_scale,
                                   extra={"state": state, "yaml": d, "dialect": dia, "index": i})
                try:
                    res = convention.resolve(ctx)
                except (IndexError, TypeError, ValueError) as exc:
                    raise UsageError(f"{loc}: arguments {args!r} do not fit the '{convention.name}' rule: "
                                     f"{exc.__class__.__name__}: {exc}") from None
                call_args, kwargs, c_out, repeats = res.args, dict(res.kwargs), res.c_out, res.repeats
                limits.check_channels(c_out, loc)
            else:  # unregistered: width from the signature, output width from the dry run
                from yoloblocks_cli.loading.load import first_param_is_width

                lead = [ch_in[0]] if (first_param_is_width(cls) and not display.startswith(("nn.", "torch.nn."))
                                       and len(ch_in) == 1) else []
                call_args, kwargs, c_out, repeats = [*lead, *args], {}, None, n_
            m_ = _construct(cls, call_args, kwargs, repeats, loc, display)
            m_.np = sum(p.numel() for p in m_.parameters())
            m_.i, m_.f, m_.type = i, f, f"{cls.__module__}.{cls.__qualname__}"
            # dry run (ultralytics' stride pass, layer by layer)
            inp = x if f == -1 else outs[f] if isinstance(f, int) else [x if j == -1 else outs[j] for j in f]
            m_.eval()
            is_head = isinstance(getattr(m_, "stride", None), torch.Tensor)
            if is_head:
                m_.training = True  # the head alone: raw per-level maps, as ultralytics' stride pass
            if getattr(m_, "text_role", None):
                text_layers.append(m_)
                if text is None:
                    text = original = placeholder_embeddings(text_layers, nc_val)
            try:
                x, text = run_layer(m_, inp, text, original)
            except Exception as exc:  # noqa: BLE001 - a layer that cannot run on its inputs is a YAML error
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise UsageError(f"{loc}: fails on its input {_shapes(inp)}: {exc.__class__.__name__}: {msg}"
                                 f" (built as {_call_text(display, call_args, kwargs)})") from None
            finally:
                m_.training = False
            if is_head:
                feats = inp if isinstance(inp, list) else [inp]
                # one stride per level; a dual head (YOLOv9 PGI) reads each level twice: the first branch's
                feats = feats[:int(getattr(m_, "nl", len(feats)))]
                stride = torch.tensor([probe / t.shape[-2] for t in feats])
                m_.stride = stride
            if isinstance(x, torch.Tensor) and x.dim() == 4:
                smallest = min(smallest, x.shape[-2])
            if c_out is None:
                c_out = x.shape[1] if isinstance(x, torch.Tensor) and x.dim() >= 2 else ch_in[0]
            outs.append(x)
            save.extend(j % i for j in f_list if j != -1)
            layers.append(m_)
            infos.append(LayerInfo(i, f, n_, mname, m_.type, call_args, kwargs, m_.np, line, c_out,
                                   registered=convention is not None))
            if i == 0:
                ch = []
            ch.append(c_out)
    if not layers:
        raise UsageError(f"{path}: the model has no layers")
    del outs
    prompts = placeholder_embeddings(text_layers, nc_val) if text_layers else None
    rule = getattr(layers[-1], "model_stride", None)  # a head that sets the model's stride its own way
    if rule == "deepest":
        stride = torch.tensor([probe / smallest])
    elif isinstance(rule, (int, float)):
        stride = torch.tensor([float(rule)])
    model = _model_class()(layers, sorted(save), stride if stride is not None else torch.tensor([32.0]), d, prompts)
    _initialize(model)
    model.eval()
    name = req_stem.replace("yolo", "YOLO") if req_stem else "Model"
    from yoloblocks_cli.loading.plugins import plugin_use, print_notes

    uses = [plugin_use(n, c) for n, c in resolver.used.items()]
    print_notes(uses, [m.yb_note for m in model.modules() if getattr(m, "yb_note", None)])
    if prompts is not None:
        _note_placeholder(name, text_layers, prompts)
    return BuiltModel(model, infos, tuple(float(s) for s in model.stride), path, used_scale, dia.name, name, d, ch0,
                      plugins=uses)


def _construct(cls: type, args: list, kwargs: dict, repeats: int, loc: str, display: str) -> Any:
    from torch import nn

    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise UsageError(f"{loc}: wrong arguments for {_call_text(display, args, kwargs)}: {exc}") from None
    from yoloblocks_cli.loading.limits import guard_allocations

    try:
        with guard_allocations(f"{loc}: {_call_text(display, args, kwargs)} x {repeats}"):
            mods = [cls(*args, **kwargs) for _ in range(repeats)]
    except UsageError:
        raise
    except (TypeError, ValueError, AssertionError) as exc:
        raise UsageError(f"{loc}: {_call_text(display, args, kwargs)} raised {exc.__class__.__name__}: "
                         f"{exc}") from None
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"{loc}: {_call_text(display, args, kwargs)} raised {exc.__class__.__name__}: "
                          f"{exc}") from None
    if not isinstance(mods[0], nn.Module):
        raise UsageError(f"{loc}: {display} is not a torch.nn.Module")
    return nn.Sequential(*mods) if repeats > 1 else mods[0]


def _note_placeholder(name: str, text_layers: list, prompts: Any) -> None:
    """Say once that the class scores of an open-vocabulary model come from stand-in embeddings."""
    from yoloblocks_cli.reporting.report import console

    _, k, d = prompts.shape
    fill = "zeros" if not bool(prompts.any()) else "seeded random"
    console(stderr=True).print(
        f"note: {name}: {len(text_layers)} layer{'s' if len(text_layers) != 1 else ''} read class embeddings: "
        f"placeholder {k} x {d} ({fill}), no CLIP model; counts exact, class scores not")


def _initialize(model: Any) -> None:
    """ultralytics' initialize_weights: BN eps/momentum and in-place activations (numerics, not counts)."""
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
        elif isinstance(m, (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU)):
            m.inplace = True


def ultralytics_gflops(built: BuiltModel | Any, imgsz: int | Sequence[int] = 640) -> float:
    """GFLOPs exactly as ultralytics' ``get_flops``: thop, stride-aware, 2 x MACs / 1e9."""
    import thop

    model = built.model if isinstance(built, BuiltModel) else built
    p = next(model.parameters())
    hw = [imgsz, imgsz] if isinstance(imgsz, int) else list(imgsz)
    stride = max(int(model.stride.max()), 32) if hasattr(model, "stride") else 32
    import torch

    if isinstance(built, BuiltModel) and _scaled_from_stride_image(built):
        # the repositories' model_info: one stride x stride image, scaled by area (attention included)
        im = torch.zeros((1, p.shape[1], stride, stride), device=p.device, dtype=p.dtype)
        with _quiet():
            macs = thop.profile(model, inputs=[im], verbose=False)[0]
        return macs / 1e9 * 2 * (hw[0] / stride) * (hw[1] / stride)
    im = torch.empty((1, p.shape[1], *hw), device=p.device, dtype=p.dtype)
    # a query-selecting head (RT-DETR) keeps num_queries anchors; a stride cell holds (4**nl - 1) / 3 of them
    min_cells = max((-(-m.num_queries * 3 // (4 ** m.nl - 1)) for m in model.modules()
                     if isinstance(getattr(m, "num_queries", None), int) and isinstance(getattr(m, "nl", None), int)),
                    default=1)
    with _quiet():
        macs = thop.profile(model, inputs=[im], stride=stride, min_cells=min_cells, verbose=False)[0]
    return macs / 1e9 * 2


def _scaled_from_stride_image(built: BuiltModel) -> bool:
    from yoloblocks_cli.loading.dialects import get_dialect

    return bool(get_dialect(built.dialect).fact("gflops_from_stride_image"))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    import io
    import sys

    saved = sys.stdout
    sys.stdout = io.StringIO()
    try:
        yield
    finally:
        sys.stdout = saved


def summary_line(built: BuiltModel, gflops: float | None) -> str:
    """ultralytics' words: ``YOLOv8n summary: 129 layers, 3,157,200 parameters, 3,157,184 gradients, 8.9 GFLOPs``."""
    fs = f", {gflops:.1f} GFLOPs" if gflops else ""
    fused = " (fused)" if getattr(built, "fused", False) else ""
    return (f"{built.name} summary{fused}: {built.n_layers:,} layers, {built.params:,} parameters, "
            f"{built.gradients:,} gradients{fs}")
