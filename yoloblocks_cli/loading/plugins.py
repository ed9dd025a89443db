"""The user's named files win: classes from ``--plugin`` files resolve before the registry.

A user pastes a blog's ``MLLAttention`` into ``my_blocks.py`` and runs
``yb trace my.yaml --plugin my_blocks.py``. If the YAML name resolved to the registered
(fixed) block, the trace would pass while the user's own code crashes at validation. So a
plugin class wins over a registered block of the same name, everywhere (trace, profile,
compare, check), and every report says which class was used, from which file, and that it
shadows a registered block (design principle 8).

A class a plugin file merely imports from the block library (``from blocks import C2f``) is
the registered block itself, not a shadow: it is not collected.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from yoloblocks_cli.errors import UsageError
from yoloblocks_cli.reporting.report import relative_path


@dataclass(frozen=True)
class PluginUse:
    """One name resolved to a plugin's class."""

    name: str  # as written in the YAML or on the command line
    cls: str  # module.qualname of the class used
    file: str  # the plugin file it was defined in
    line: int | None
    shadows: bool  # a registered block has the same name

    def note(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        shadow = f", not the registered block {self.name} it shadows" if self.shadows else ""
        return f"{self.name}: using your class from {where}{shadow}"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "class": self.cls, "file": self.file, "line": self.line,
                "shadows_registered": self.shadows}


def plugin_use(name: str, cls: type) -> PluginUse:
    """Describe ``cls`` (from a plugin file) used for ``name``."""
    from blocks.registry import UnknownBlockError, get_block

    try:
        file = inspect.getsourcefile(cls) or ""
        line = inspect.getsourcelines(cls)[1]
    except (TypeError, OSError):
        file, line = "", None
    try:
        info = get_block(name)
        shadows = info.cls is not cls and (name == info.name or name in info.aliases)
    except UnknownBlockError:
        shadows = False
    # A file imported by path gets a private module name (yb_user_<stem>_<hash>): the file says more.
    qual = cls.__qualname__ if cls.__module__.startswith("yb_user_") else f"{cls.__module__}.{cls.__qualname__}"
    return PluginUse(name, qual, relative_path(file) if file else "?", line, shadows)


def collect_plugin_classes(plugins: Iterable[str | Path], root: str | Path | None = None) -> dict[str, type]:
    """Import each plugin file; every nn.Module class it defines (or imports from outside the
    block library) becomes a name that wins over the registry. First file wins on a clash."""
    from torch import nn

    from blocks.registry import info_for_class
    from yoloblocks_cli.loading.load import import_file

    found: dict[str, type] = {}
    for p in plugins:
        mod = import_file(p, root)
        for attr, obj in vars(mod).items():
            if not (isinstance(obj, type) and issubclass(obj, nn.Module)) or attr.startswith("_"):
                continue
            if obj.__module__ != mod.__name__ and info_for_class(obj) is not None:
                continue  # the registered block itself, imported by the plugin
            found.setdefault(attr, obj)
    return found


def plugin_block_spec(target: str, plugins: Iterable[str | Path], root: str | Path | None = None) -> str:
    """``MyBlock --plugin my_blocks.py``: a bare block name a plugin file defines -> ``file:Class``
    (so it wins over a registered block of that name); anything else is returned as is."""
    if ":" in target or target.endswith(".py"):
        return target
    for p in plugins:
        if not Path(p).expanduser().is_file():
            raise UsageError(f"no such file: {p}")
        if target in collect_plugin_classes([p], root):
            return f"{p}:{target}"
    return target


def block_origin(spec: Any) -> dict[str, Any]:
    """Which class a block spec resolved to and from where (a loading.load.BlockSpec); a file's
    class that has a registered block's name is noted on stderr."""
    cls = spec.cls
    if spec.origin == "registry":
        return {"name": spec.name, "class": f"{cls.__module__}.{cls.__qualname__}", "origin": "registry",
                "file": getattr(spec.info, "source", None), "line": None, "shadows_registered": False}
    use = plugin_use(cls.__name__, cls)
    print_notes([use])
    return {**use.as_json(), "origin": spec.origin}


def print_notes(uses: Iterable[PluginUse], remarks: Iterable[str] = ()) -> None:
    """One stderr line per plugin class that shadows a registered block, then one per block remark
    (a built module's ``yb_note``: TorchVision's weights requested but not loaded); stdout stays
    clean for --json."""
    lines = [u.note() for u in uses if u.shadows] + list(remarks)
    if not lines:
        return
    from rich.markup import escape

    from yoloblocks_cli.reporting.report import console

    err = console(stderr=True)
    for line in lines:
        err.print(f"note: {escape(line)}")
