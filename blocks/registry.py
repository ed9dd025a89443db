"""The block registry: one decorator per block, carrying its YAML argument convention.

A model builder never asks "which class is this?"; it asks the block's
:class:`~blocks.conventions.Convention` how to turn a YAML ``args`` list into
constructor arguments and what width comes out. Adding a block is one decorator.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from blocks.conventions import Convention, get_convention

FAMILIES = ("standard", "attention", "ssm", "mlp", "head", "utility")


class UnknownBlockError(KeyError):
    """Raised for a name that is not registered; carries close matches."""

    def __init__(self, name: str, suggestions: list[str]):
        self.name = name
        self.suggestions = suggestions
        hint = f" (did you mean: {', '.join(suggestions)}?)" if suggestions else ""
        super().__init__(f"unknown block '{name}'{hint}")

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return self.args[0]


@dataclass(frozen=True)
class BlockInfo:
    """What the tool knows about a registered block."""

    name: str
    cls: type
    convention: Convention
    family: str = "standard"
    source: str = ""
    summary: str = ""
    # Constructor arguments after the input width that `yb inspect` uses when the user
    # gives none, as a function of the input width c1 (e.g. ``lambda c1: (c1,)``).
    default_args: Callable[[int], tuple] | None = None
    default_kwargs: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    def inspect_args(self, c1: int, user_args: list | None) -> list:
        """Constructor positional arguments for a standalone block with input width c1."""
        rest = list(user_args) if user_args is not None else (
            list(self.default_args(c1)) if self.default_args else None
        )
        return self.convention.standalone_args(c1, rest)


_REGISTRY: dict[str, BlockInfo] = {}
_ALIASES: dict[str, str] = {}


def register_block(
    convention: str | Convention,
    *,
    family: str = "standard",
    source: str = "",
    default_args: Callable[[int], tuple] | None = None,
    default_kwargs: dict[str, Any] | None = None,
    aliases: Iterable[str] = (),
    name: str | None = None,
) -> Callable[[type], type]:
    """Class decorator: register a block under its class name (or ``name``)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    conv = get_convention(convention) if isinstance(convention, str) else convention

    def decorator(cls: type) -> type:
        key = name or cls.__name__
        if key in _REGISTRY and _REGISTRY[key].cls is not cls:
            raise ValueError(f"block name {key!r} is already registered by {_REGISTRY[key].cls}")
        doc = (cls.__doc__ or "").strip().splitlines()
        info = BlockInfo(
            name=key,
            cls=cls,
            convention=conv,
            family=family,
            source=source,
            summary=doc[0] if doc else "",
            default_args=default_args,
            default_kwargs=dict(default_kwargs or {}),
            aliases=tuple(aliases),
        )
        _REGISTRY[key] = info
        for alias in info.aliases:
            _ALIASES[alias] = key
        cls.__yb_block__ = info  # lets a builder find the info from the class itself
        return cls

    return decorator


def register_external(cls: type, convention: str | Convention, **kwargs: Any) -> BlockInfo:
    """Register a class defined elsewhere (e.g. ``torch.nn.Upsample``) without decorating it."""
    conv = get_convention(convention) if isinstance(convention, str) else convention
    key = kwargs.pop("name", None) or cls.__name__
    doc = (cls.__doc__ or "").strip().splitlines()
    info = BlockInfo(name=key, cls=cls, convention=conv, summary=doc[0] if doc else "", **kwargs)
    _REGISTRY[key] = info
    for alias in info.aliases:
        _ALIASES[alias] = key
    return info


def _ensure_loaded() -> None:
    import blocks  # noqa: F401  (importing the package registers the library)


def get_block(name: str) -> BlockInfo:
    """Look a block up by name or alias; raise :class:`UnknownBlockError` with suggestions."""
    _ensure_loaded()
    key = _ALIASES.get(name, name)
    if key in _REGISTRY:
        return _REGISTRY[key]
    lowered = {k.lower(): k for k in list(_REGISTRY) + list(_ALIASES)}
    if name.lower() in lowered:
        return get_block(lowered[name.lower()])
    close = difflib.get_close_matches(name.lower(), list(lowered), n=5, cutoff=0.5)
    raise UnknownBlockError(name, [lowered[c] for c in close])


def find_block(name: str) -> BlockInfo | None:
    """Like :func:`get_block` but returns None for an unknown name."""
    try:
        return get_block(name)
    except UnknownBlockError:
        return None


def info_for_class(cls: type) -> BlockInfo | None:
    """The registry entry of a class, if it was registered."""
    _ensure_loaded()
    info = getattr(cls, "__yb_block__", None)
    if info is not None and info.cls is cls:
        return info
    for entry in _REGISTRY.values():
        if entry.cls is cls:
            return entry
    return None


def all_blocks() -> list[BlockInfo]:
    """Every registered block, sorted by family then name."""
    _ensure_loaded()
    return sorted(_REGISTRY.values(), key=lambda b: (FAMILIES.index(b.family), b.name.lower()))
