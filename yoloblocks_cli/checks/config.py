"""The `yb check` configuration: schema, discovery and validation.

The configuration lives in ``yb.toml`` (keys at the top level) or in ``pyproject.toml``
under ``[tool.yoloblocks]``. A malformed file gets ONE error that names the file, the
table and the key (with a did-you-mean for unknown keys), raised as :class:`ConfigError`
(exit 2), because a CI job that silently ignores a typo in a budget is worse than none.

Schema (yb.toml; in pyproject.toml every table is prefixed with ``tool.yoloblocks.``)::

    device = "cpu"            # cpu, cuda, cuda:N
    dtype = "fp32"            # fp32, fp16, bf16
    counter = "torch"         # FLOP counter that budgets and the baseline use
    reference = "c2f"         # default latency reference: the name of a target
    latency = false           # time targets even without a latency budget
    rounds = 15               # exactly N interleaved latency rounds (default: until every ratio is known to +-5%, 10 s at most)
    warmup = 3                # untimed runs of every target before the rounds
    plugins = ["my_blocks.py"] # files whose classes YAML names resolve to first (relative to this file)

    [budgets]                 # defaults for every target
    max_params = 5_000_000
    max_gflops = 10.0
    max_latency_ratio = 1.5

    [blocks.c2f]              # one table per block; the key names it in reports
    block = "C2f"             # registry name, pkg.module:Class or file.py:Class (default: the key)
    size = "64x40x40"         # CxHxW or BxCxHxW: where parameters, FLOPs and latency are measured
    args = [64, 1]            # constructor arguments after the input width
    kwargs = {shortcut = true}
    sweep = ["64x40x40", "64x48x32"]   # sizes that must run
    probes = ["batch"]        # robustness probes (see `yb trace`)
    max_params = 20_000       # budgets; override [budgets]
    reference = "other"       # latency reference of this target

    [models.yolov8n]
    model = "yolov8n"         # shipped short name or a .yaml path (default: the key)
    scale = "n"               # optional scale letter
    size = 640                # S, "HxW" or "BxCxHxW"
    sweep = [320, "320x256"]

    [baseline]
    file = "yb-baseline.json" # a previous `yb check --json` result
    params = 0                # tolerated increase: a number (absolute) or "N%"
    gflops = "2%"
    latency_ratio = "10%"
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yoloblocks_cli.errors import UsageError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

CONFIG_FILES = ("yb.toml", "pyproject.toml")
from yoloblocks_cli.measuring.flops import COUNTERS  # noqa: E402 (no torch at import)
DEVICES = re.compile(r"^(cpu|cuda|cuda:\d+|mps)$")
DTYPES = ("fp32", "fp16", "bf16")
BUDGET_KEYS = ("max_params", "max_gflops", "max_latency_ratio")
BASELINE_METRICS = ("params", "gflops", "latency_ratio")
ROOT_KEYS = ("device", "dtype", "counter", "reference", "latency", "rounds", "warmup",
             "budgets", "blocks", "models", "baseline", "plugins")
TARGET_COMMON = ("size", "sweep", "probes", "reference", *BUDGET_KEYS)
BLOCK_KEYS = ("block", "args", "kwargs", *TARGET_COMMON)
MODEL_KEYS = ("model", "scale", "nc", *TARGET_COMMON)
BASELINE_KEYS = ("file", *BASELINE_METRICS)
_PCT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


class ConfigError(UsageError):
    """A malformed configuration (exit 2)."""


@dataclass(frozen=True)
class Tolerance:
    """A tolerated increase of a metric: absolute (``2``) or relative (``"2%"``)."""

    value: float
    relative: bool

    def limit(self, old: float) -> float:
        """The largest acceptable new value given the baseline value ``old``."""
        return old * (1 + self.value / 100) if self.relative else old + self.value

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.relative else f"{self.value:g}"


@dataclass
class Budgets:
    max_params: int | None = None
    max_gflops: float | None = None
    max_latency_ratio: float | None = None


@dataclass
class TargetConfig:
    """One block or model to check."""

    name: str
    kind: str  # "block" or "model"
    spec: str  # block spec, model short name or yaml path
    size: str | None = None
    args: list | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    scale: str | None = None
    nc: int | None = None
    sweep: list[str] = field(default_factory=list)
    probes: list[str] = field(default_factory=list)
    reference: str | None = None
    budgets: Budgets = field(default_factory=Budgets)


@dataclass
class BaselineConfig:
    file: Path
    tolerances: dict[str, Tolerance] = field(default_factory=dict)


@dataclass
class CheckConfig:
    path: Path
    targets: list[TargetConfig]
    device: str = "cpu"
    dtype: str = "fp32"
    counter: str = "torch"
    latency: bool = False
    rounds: int | None = None  # None: adaptive (measuring/rounds.py)
    warmup: int = 3
    baseline: BaselineConfig | None = None
    plugins: list[Path] = field(default_factory=list)  # the user's files win over the registry

    @property
    def needs_latency(self) -> bool:
        """Latency is timed only when something uses it: timing is the slow, noisy part."""
        return self.latency or any(t.budgets.max_latency_ratio is not None for t in self.targets) or (
            self.baseline is not None and "latency_ratio" in self.baseline.tolerances)

    def target(self, name: str) -> TargetConfig:
        return next(t for t in self.targets if t.name == name)


# ----------------------------------------------------------------------------- discovery


def find_config(start: Path | None = None) -> Path:
    """``yb.toml`` or a ``pyproject.toml`` with ``[tool.yoloblocks]`` in ``start`` (default: cwd)."""
    folder = Path.cwd() if start is None else Path(start)
    yb = folder / "yb.toml"
    if yb.is_file():
        return yb
    py = folder / "pyproject.toml"
    if py.is_file():
        try:
            data = tomllib.loads(py.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{py.name}: invalid TOML: {exc}") from None
        if "yoloblocks" in data.get("tool", {}):
            return py
    raise ConfigError(f"no configuration in {folder}: create yb.toml or add [tool.yoloblocks] to pyproject.toml "
                      "(see docs/check.md)")


def load_config(path: str | Path) -> CheckConfig:
    """Read and validate a configuration file; raise :class:`ConfigError` on the first problem."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no such configuration file: {path}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p.name}: invalid TOML: {exc}") from None
    if p.name == "pyproject.toml":
        section = data.get("tool", {}).get("yoloblocks")
        if section is None:
            raise ConfigError(f"{p.name}: no [tool.yoloblocks] table")
        return parse_config(section, p, prefix="tool.yoloblocks")
    return parse_config(data, p)


# ----------------------------------------------------------------------------- validation


class _Table:
    """A TOML table being validated: knows its display name for error messages."""

    def __init__(self, data: Any, file: str, name: str):
        self.file, self.name = file, name
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: {self._where()}must be a table, got {data!r}")
        self.data = data

    def _where(self) -> str:
        return f"[{self.name}] " if self.name else ""

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self._where()}{key} {message}")

    def check_keys(self, allowed: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(allowed)})"
                raise ConfigError(f"{self.file}: {self._where()}unknown key '{key}'{hint}")

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def number(self, key: str, *, integer: bool = False, minimum: float = 0) -> Any:
        value = self.data.get(key)
        if value is None:
            return None
        kind = "an integer" if integer else "a number"
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if not ok or isinstance(value, bool):
            raise self.error(key, f"must be {kind}, got {value!r}")
        if value < minimum:
            raise self.error(key, f"must be >= {minimum:g}, got {value!r}")
        return value

    def string(self, key: str, choices: tuple[str, ...] | None = None) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def boolean(self, key: str) -> bool | None:
        value = self.data.get(key)
        if value is not None and not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {value!r}")
        return value

    def size(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self.error(key, f"must be a size such as \"64x40x40\" or 640, got {value!r}")
        return str(value)

    def sizes(self, key: str) -> list[str]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, (int, str)) for v in value):
            raise self.error(key, f"must be a list of sizes such as [\"64x40x40\", \"64x48x32\"], got {value!r}")
        return [str(v) for v in value]


def parse_tolerance(value: Any) -> Tolerance:
    """``0``, ``0.5`` (absolute) or ``"2%"`` (relative) -> :class:`Tolerance`; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(value)
        return Tolerance(float(value), False)
    if isinstance(value, str):
        m = _PCT.match(value)
        if m:
            return Tolerance(float(m.group(1)), True)
    raise ValueError(value)


def _budgets(table: _Table) -> Budgets:
    return Budgets(
        max_params=table.number("max_params", integer=True),
        max_gflops=table.number("max_gflops"),
        max_latency_ratio=table.number("max_latency_ratio"),
    )


def _merge(defaults: Budgets, own: Budgets) -> Budgets:
    return Budgets(*(getattr(own, k) if getattr(own, k) is not None else getattr(defaults, k) for k in BUDGET_KEYS))


def _target(kind: str, key: str, data: Any, file: str, prefix: str, defaults: Budgets) -> TargetConfig:
    group = "blocks" if kind == "block" else "models"
    t = _Table(data, file, f"{prefix}{group}.{key}")
    t.check_keys(BLOCK_KEYS if kind == "block" else MODEL_KEYS)
    spec = t.string(kind) or key
    size = t.size("size")
    if kind == "block" and size is None:
        raise t.error("size", "is required for a block, e.g. size = \"64x40x40\"")
    _valid_sizes(t, kind, size, t.sizes("sweep"))
    cfg = TargetConfig(name=key, kind=kind, spec=spec, size=size, sweep=t.sizes("sweep"),
                       reference=t.string("reference"), budgets=_merge(defaults, _budgets(t)))
    probes = t.get("probes", [])
    if not isinstance(probes, list) or not all(isinstance(p, str) for p in probes):
        raise t.error("probes", f"must be a list of probe names such as [\"batch\"], got {probes!r}")
    from yoloblocks_cli.tracing.probes import probe_names

    known = probe_names()
    for name in probes:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (choose from {', '.join(known)})"
            raise t.error("probes", f"has unknown probe '{name}'{hint}")
    cfg.probes = list(probes)
    if kind == "block":
        args = t.get("args")
        if args is not None and not isinstance(args, list):
            raise t.error("args", f"must be a list, got {args!r}")
        kwargs = t.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise t.error("kwargs", f"must be a table, got {kwargs!r}")
        cfg.args, cfg.kwargs = args, dict(kwargs)
    else:
        cfg.scale = t.string("scale")
        cfg.nc = t.number("nc", integer=True, minimum=1)
    return cfg


def _valid_sizes(table: _Table, kind: str, size: str | None, sweep: list[str]) -> None:
    """Parse every size now, so that a typo fails in a second, before any model is built."""
    from yoloblocks_cli.loading.targets import shape_for

    for key, values in (("size", [size]), ("sweep", sweep)):
        for value in values:
            try:
                shape_for(kind, value)
            except UsageError as exc:
                raise table.error(key, f"has {exc}") from None


def parse_config(data: dict, path: Path, prefix: str = "") -> CheckConfig:
    """Validate a decoded TOML mapping (the root of yb.toml or pyproject's [tool.yoloblocks])."""
    file = path.name
    dot = f"{prefix}." if prefix else ""
    root = _Table(data, file, prefix)
    root.check_keys(ROOT_KEYS)

    budgets_table = _Table(root.get("budgets", {}), file, f"{dot}budgets")
    budgets_table.check_keys(BUDGET_KEYS)
    defaults = _budgets(budgets_table)

    targets: list[TargetConfig] = []
    for kind, group in (("block", "blocks"), ("model", "models")):
        table = _Table(root.get(group, {}), file, f"{dot}{group}")
        for key, value in table.data.items():
            if not isinstance(value, dict):
                raise ConfigError(f"{file}: [{dot}{group}] {key} must be a table such as [{dot}{group}.{key}], "
                                  f"got {value!r}")
            if any(t.name == key for t in targets):
                raise ConfigError(f"{file}: target name '{key}' is used by a block and a model; names must be unique")
            targets.append(_target(kind, key, value, file, dot, defaults))
    if not targets:
        raise ConfigError(f"{file}: no targets: add a [{dot}blocks.NAME] or [{dot}models.NAME] table")

    device = root.string("device") or "cpu"
    if not DEVICES.match(device):
        raise root.error("device", f"must be cpu, cuda or cuda:N, got {device!r}")
    cfg = CheckConfig(
        path=path, targets=targets, device=device,
        dtype=root.string("dtype", DTYPES) or "fp32",
        counter=root.string("counter", COUNTERS) or "torch",
        latency=bool(root.boolean("latency")),
        rounds=root.number("rounds", integer=True, minimum=1) or None,
        warmup=root.number("warmup", integer=True) if root.get("warmup") is not None else 3,
    )

    names = [t.name for t in targets]
    default_ref = root.string("reference")
    for t in targets:
        ref = t.reference or default_ref
        where = f"[{dot}{'blocks' if t.kind == 'block' else 'models'}.{t.name}] " if t.reference else (
            f"[{prefix}] " if prefix else "")
        if ref is not None and ref not in names:
            close = difflib.get_close_matches(ref, names, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (targets: {', '.join(names)})"
            raise ConfigError(f"{file}: {where}reference '{ref}' is not a target{hint}")
        t.reference = ref
        if t.budgets.max_latency_ratio is not None and ref is None:
            raise ConfigError(f"{file}: {t.name}: max_latency_ratio needs a reference target: "
                              f"set reference = \"NAME\" at the top level or in the target's table")

    if "baseline" in root.data:
        cfg.baseline = _baseline(_Table(root.get("baseline"), file, f"{dot}baseline"), path.parent)
    cfg.plugins = _plugins(root, path.parent)
    return cfg


def _baseline(table: _Table, folder: Path) -> BaselineConfig:
    table.check_keys(BASELINE_KEYS)
    file = table.string("file")
    if file is None:
        raise table.error("file", "is required: the path of a previous `yb check --json` result")
    tolerances: dict[str, Tolerance] = {}
    for metric in BASELINE_METRICS:
        if metric in table.data:
            try:
                tolerances[metric] = parse_tolerance(table.data[metric])
            except ValueError:
                raise table.error(metric, "must be a tolerated increase: a number >= 0 or a percentage "
                                          f"such as \"2%\", got {table.data[metric]!r}") from None
    if not tolerances:
        raise table.error("params", "(or gflops, latency_ratio) is needed: the baseline compares only the "
                                    "metrics given a tolerance")
    return BaselineConfig(file=(folder / file), tolerances=tolerances)


def _plugins(root: _Table, folder: Path) -> list[Path]:
    """``plugins = ["my_blocks.py"]``: files relative to the configuration, which must exist."""
    value = root.get("plugins")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise root.error("plugins", f"must be a list of Python files, got {value!r}")
    out = []
    for v in value:
        p = Path(v) if Path(v).is_absolute() else folder / v
        if not p.is_file():
            raise root.error("plugins", f"names {v!r}, which is not a file")
        out.append(p)
    return out
