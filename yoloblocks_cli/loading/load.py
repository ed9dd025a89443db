"""Block specs -> constructed ``nn.Module``.

A spec is a registered name (``C2f``), ``package.module:Class`` or ``path/to/file.py:Class``.
Only a file or module the user names is imported. An unregistered class gets a
convention inferred from its signature: if its first parameter looks like an input
width, the channels of ``--size`` are passed there.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yoloblocks_cli.errors import CheckFailed, UsageError

# First-parameter names that mean "input channels" in code found in the wild.
WIDTH_PARAM_NAMES = frozenset({
    "c1", "c", "ch", "c_in", "cin", "inc", "in_c", "in_ch", "in_chs", "in_channels", "in_channel",
    "inp", "in_planes", "inplanes", "in_dim", "dim", "dim_in", "channels", "channel", "num_channels",
    "in_features", "d_model", "embed_dim", "hidden_dim", "planes", "n_feats", "nf",
})


@dataclass
class BlockSpec:
    """A resolved spec: the class, how to call it, and where it came from."""

    text: str
    cls: type
    origin: str  # "registry", "module" or "file"
    info: Any | None = None  # blocks.registry.BlockInfo when registered

    @property
    def name(self) -> str:
        return self.info.name if self.info is not None else self.cls.__name__


@dataclass
class LoadedBlock:
    """A constructed block and the exact call that made it."""

    spec: BlockSpec
    module: Any  # torch.nn.Module
    args: list
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def call(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.spec.name}({', '.join(parts)})"


def import_file(path: str | Path, root: str | Path | None = None) -> Any:
    """Import a user's Python file as a module. Modules in its folder and in its repository
    root (``root``, else found from its imports: :mod:`roots`) can be imported by name
    (``from my_common import X``, ``from model.x import Y``) but never shadow an installed
    one or the tool's own (see :mod:`isolation`)."""
    from yoloblocks_cli.loading.isolation import allow_siblings
    from yoloblocks_cli.loading.roots import find_root

    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"no such file: {path}")
    if root is not None and not Path(root).expanduser().is_dir():
        raise UsageError(f"--root {root}: not a folder")
    p = p.resolve()
    allow_siblings(p.parent)
    repo_root = Path(root).expanduser().resolve() if root is not None else find_root(p)
    if repo_root is not None:
        allow_siblings(repo_root)
    digest = hashlib.sha1(str(p).encode()).hexdigest()[:8]
    mod_name = f"yb_user_{p.stem}_{digest}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, p)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[mod_name]
        line = _user_line(exc, str(p))
        raise UsageError(f"cannot import {path}{line}: {exc.__class__.__name__}: {exc}") from exc
    return module


def _user_line(exc: BaseException, filename: str) -> str:
    tb = exc.__traceback__
    found = ""
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            found = f" (line {tb.tb_lineno})"
        tb = tb.tb_next
    if not found and isinstance(exc, SyntaxError) and exc.lineno:
        found = f" (line {exc.lineno})"
    return found


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise UsageError(f"cannot import module '{name}': {exc}") from exc
    except Exception as exc:
        raise UsageError(f"cannot import module '{name}': {exc.__class__.__name__}: {exc}") from exc


def resolve_spec(text: str, root: str | Path | None = None) -> BlockSpec:
    """Turn a spec string into a class, without constructing it."""
    from blocks.registry import UnknownBlockError, get_block, info_for_class

    text = text.strip()
    if ":" in text:
        where, _, attr = text.rpartition(":")
        if not where or not attr:
            raise UsageError(f"malformed block spec '{text}': expected module:Class or file.py:Class")
        if where.endswith(".py") or "/" in where or "\\" in where:
            module, origin = import_file(where, root), "file"
        else:
            module, origin = _import_module(where), "module"
        cls = getattr(module, attr, None)
        if cls is None:
            names = [n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_")]
            import difflib
            close = difflib.get_close_matches(attr, names, n=5, cutoff=0.5)
            hint = f" (did you mean: {', '.join(close)}?)" if close else ""
            raise UsageError(f"'{where}' has no class '{attr}'{hint}")
        if not isinstance(cls, type):
            raise UsageError(f"'{text}' is not a class")
        import torch.nn as nn

        if not issubclass(cls, nn.Module):  # checked before any call: subprocess:Popen never runs
            raise UsageError(f"'{text}' is not a torch.nn.Module subclass ({cls.__module__}.{cls.__qualname__}); "
                             "a block spec must name one")
        return BlockSpec(text, cls, origin, info_for_class(cls))
    try:
        info = get_block(text)
    except UnknownBlockError as exc:
        raise UsageError(str(exc)) from None
    return BlockSpec(text, info.cls, "registry", info)


def first_param_is_width(cls: type) -> bool:
    """Whether a constructor's first parameter looks like the input width."""
    try:
        params = [p for p in inspect.signature(cls.__init__).parameters.values()
                  if p.name != "self" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0].name.lower() in WIDTH_PARAM_NAMES


def first_param_name(cls: type) -> str | None:
    try:
        params = [p for p in inspect.signature(cls.__init__).parameters.values()
                  if p.name != "self" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return None
    return params[0].name if params else None


def standalone_args(spec: BlockSpec, c1: int, user_args: list | None,
                    user_kwargs: dict[str, Any] | None = None) -> list:
    """Positional constructor args for a block fed ``c1`` channels; a width the user gives by
    keyword (``--kwargs channel=64``, how blog examples build blocks) is not prepended again."""
    by_keyword = first_param_name(spec.cls) in (user_kwargs or {})
    if spec.info is not None:
        args = spec.info.inspect_args(c1, user_args)
        return args[1:] if by_keyword and args[:1] == [c1] else args
    if first_param_is_width(spec.cls) and not by_keyword:
        return [c1, *(user_args or [])]
    return list(user_args or [])


def build_block(spec: BlockSpec, c1: int, user_args: list | None = None,
                user_kwargs: dict[str, Any] | None = None) -> LoadedBlock:
    """Construct the block; a constructor that raises is the block failing (exit 1)."""
    args = standalone_args(spec, c1, user_args, user_kwargs)
    kwargs = dict(spec.info.default_kwargs) if spec.info is not None and user_args is None else {}
    kwargs.update(user_kwargs or {})
    from yoloblocks_cli.loading.limits import guard_allocations, reset_allocations

    reset_allocations()
    try:
        with guard_allocations(f"{spec.name}({_fmt(args, kwargs)})"), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = spec.cls(*args, **kwargs)
    except UsageError:
        raise
    except TypeError as exc:
        raise UsageError(f"cannot construct {spec.name}({_fmt(args, kwargs)}): {exc}") from exc
    except Exception as exc:
        raise CheckFailed(f"{spec.name}({_fmt(args, kwargs)}) raised {exc.__class__.__name__}: {exc}") from exc
    import torch.nn as nn

    if not isinstance(module, nn.Module):
        raise UsageError(f"{spec.text} is not a torch.nn.Module")
    empty = next(((n, p) for n, p in module.named_parameters() if p.numel() == 0), None)
    if empty is not None:  # Conv(3, 0): a width of 0 is bad input, not a block failure
        raise UsageError(f"{spec.name}({_fmt(args, kwargs)}) has an empty parameter {empty[0]} of shape "
                         f"{'x'.join(map(str, empty[1].shape))}: a width or size argument is 0")
    for w in caught:  # held back until the block is known to be valid input
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return LoadedBlock(spec, module, args, kwargs)


def _fmt(args: list, kwargs: dict) -> str:
    return ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])


def load_block(text: str, c1: int, user_args: list | None = None,
               user_kwargs: dict[str, Any] | None = None, root: str | Path | None = None) -> LoadedBlock:
    """Spec string + input width -> constructed block."""
    return build_block(resolve_spec(text, root), c1, user_args, user_kwargs)
