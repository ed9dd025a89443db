"""The block catalog: what the registry knows about each block, plus measured facts.

`yb blocks` and the generated `docs/blocks.md` both read this module, so the page and
the command can never disagree.
"""

from __future__ import annotations

import inspect as pyinspect
from dataclasses import dataclass
from typing import Any

REFERENCE_CHANNELS = 64
REFERENCE_HW = (32, 32)
# Heads and glue layers take several inputs or a list; they are not measured standalone.
UNMEASURED_FAMILIES = frozenset({"head", "utility"})


@dataclass
class Entry:
    """One catalog row: registry facts, and measurements when asked for."""

    name: str
    family: str
    convention: str
    convention_help: str
    source: str
    summary: str
    doc: str
    signature: str
    default_args: list
    yaml_snippet: str
    measured: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        if d["measured"] is None:
            d.pop("measured")
        return d


def _signature(cls: type) -> str:
    try:
        sig = pyinspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return "(...)"
    params = [p for p in sig.parameters.values() if p.name != "self"]
    return "(" + ", ".join(str(p) for p in params) + ")"


def yaml_args(info: Any, c1: int = REFERENCE_CHANNELS) -> list:
    """The ``args`` a YAML layer writes for this block's default call (input width dropped)."""
    args = info.inspect_args(c1, None)
    conv = info.convention.name
    if conv in ("c1_c2", "preserve", "sppf"):
        args = args[1:]
    elif conv == "c1_c2_n":
        args = args[1:]
    elif conv == "torchvision":
        args = [512, *args]  # the output width leads, as written: resnet18 truncated by 2 gives 512
    return args


def yaml_snippet(info: Any) -> str:
    args = yaml_args(info)
    repeats = 3 if info.convention.name == "c1_c2_n" else 1
    return f"- [-1, {repeats}, {info.name}, {list(args)!r}]"


def entry_for(info: Any) -> Entry:
    doc = pyinspect.cleandoc(info.cls.__doc__ or "")
    return Entry(
        name=info.name,
        family=info.family,
        convention=info.convention.name,
        convention_help=info.convention.description,
        source=info.source,
        summary=info.summary,
        doc=doc,
        signature=_signature(info.cls),
        default_args=info.inspect_args(REFERENCE_CHANNELS, None),
        yaml_snippet=yaml_snippet(info),
    )


def entries(family: str | None = None, pattern: str | None = None) -> list[Entry]:
    """Registry entries, filtered by family and by a case-insensitive name substring."""
    from blocks.registry import all_blocks

    out = []
    for info in all_blocks():
        if family and info.family != family:
            continue
        if pattern and pattern.lower() not in info.name.lower():
            continue
        out.append(entry_for(info))
    return out


def measure(info: Any, channels: int = REFERENCE_CHANNELS, hw: tuple[int, int] = REFERENCE_HW,
            sweeps: bool = True) -> dict[str, Any] | None:
    """Parameters and dispatch FLOPs at the reference size and, with ``sweeps``, the FLOPs
    scaling exponent and whether the block survives the rectangular trace sweep (those two
    cost a sweep of sizes each). Heads and glue are not measured."""
    if info.family in UNMEASURED_FAMILIES:
        return None
    from yoloblocks_cli.loading.load import BlockSpec, build_block
    from yoloblocks_cli.loading.spec import Shape
    from yoloblocks_cli.loading.targets import Target
    from yoloblocks_cli.measuring.engine import Plan
    from yoloblocks_cli.measuring.engine import measure as engine_measure

    spec = BlockSpec(info.name, info.cls, "registry", info)
    loaded = build_block(spec, channels)
    shape = Shape(1, channels, *hw)
    m = engine_measure(Target(info.name, "block", loaded.module, shape, loaded.call), shape,
                       Plan(counters=("torch",), latency=False, memory=False))
    out: dict[str, Any] = {
        "reference_input": f"1x{channels}x{hw[0]}x{hw[1]}",
        "params": m.params,
        "flops": m.flops["torch"],
    }
    if sweeps:
        out.update(_scaling(spec, channels))
        out.update(_trace_status(info.name, channels))
    return out


def _scaling(spec: Any, channels: int) -> dict[str, Any]:
    """Slope of log FLOPs against log(H*W) over `yb scale`'s default block sweep."""
    import torch

    from yoloblocks_cli.measuring.scaling import DEFAULT_BLOCK_SIZES, load_target, sweep

    cpu = torch.device("cpu")
    t = load_target(spec.text, channels, None, None, cpu, torch.float32)
    result = sweep(t, DEFAULT_BLOCK_SIZES, ("flops",))
    fit = result.fits[0]
    if fit.power is None:
        return {}
    return {"flops_exponent": round(fit.power.slope, 3)}


def _trace_status(name: str, channels: int, hw: tuple[int, int] = (20, 20)) -> dict[str, Any]:
    """Whether every configuration of `yb trace`'s default block sweep passes the shape probe."""
    from yoloblocks_cli.tracing.probes import block_sweep
    from yoloblocks_cli.loading.spec import Shape
    from yoloblocks_cli.tracing.run import TraceRequest, block_targets, sweep

    req = TraceRequest(target=name, size=[f"{channels}x{hw[0]}x{hw[1]}"])
    targets = block_targets(req, channels)
    points = sweep(targets, block_sweep(Shape(1, channels, *hw)), ["sweep"])
    return {"passes_rectangular_sweep": all(p.ok for p in points)}


PAGE_HEADER = """# Block catalog

Generated by `yb blocks --write-docs docs/blocks.md` from the registry and real
measurements; `tests/test_catalog.py` fails when this page is out of date.

Measured at a reference input of 1x{c}x{h}x{w} on CPU in fp32. FLOPs are from the
dispatch counter (`torch.utils.flop_counter`, FLOPs = 2 x MACs). The exponent is the
slope of log FLOPs against log(H*W) over a geometric sweep of input sizes. "Rectangular"
says whether the block passes `yb trace`'s default block sweep (square, swapped, odd,
non-divisible, 1xN, twice the size, batch 2). Heads and glue layers (several inputs)
are listed without measurements.
"""


def _fmt_int(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "–"


def render_markdown(rows: list[Entry]) -> str:
    """The whole `docs/blocks.md` page for these entries (with their measurements)."""
    lines = [PAGE_HEADER.format(c=REFERENCE_CHANNELS, h=REFERENCE_HW[0], w=REFERENCE_HW[1]), ""]
    lines += ["| block | family | YAML convention | params | GFLOPs | FLOPs exponent | rectangular | source |",
              "| --- | --- | --- | ---: | ---: | ---: | :---: | --- |"]
    for e in rows:
        m = e.measured or {}
        gflops = f"{m['flops'] / 1e9:.4f}" if "flops" in m else "–"
        exp = f"{m['flops_exponent']:.2f}" if "flops_exponent" in m else "–"
        rect = {True: "yes", False: "**no**"}.get(m.get("passes_rectangular_sweep"), "–")
        lines.append(f"| `{e.name}` | {e.family} | `{e.convention}` | {_fmt_int(m.get('params'))} | {gflops} | "
                     f"{exp} | {rect} | {e.source} |")
    lines += ["", "## Blocks", ""]
    for e in rows:
        lines += [f"### {e.name}", "", e.doc or e.summary or "", "",
                  f"Constructor: `{e.name}{e.signature}`", "",
                  f"YAML convention `{e.convention}`: {e.convention_help}.", "",
                  "```yaml", e.yaml_snippet, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def build_page(sweeps: bool = True, progress: Any = None) -> str:
    """Measure every block and render the catalog page."""
    from blocks.registry import get_block

    rows = entries()
    for e in rows:
        if progress is not None:
            progress(e.name)
        e.measured = measure(get_block(e.name), sweeps=sweeps)
    return render_markdown(rows)


def without_sweep_columns(page: str) -> str:
    """The page with the two swept columns (exponent, rectangular) blanked: what a fast
    freshness check can compare without running the sweeps."""
    out = []
    for line in page.splitlines():
        cells = line.split(" | ")
        if line.startswith("| `") and len(cells) == 8:
            cells[5] = cells[6] = "?"
            line = " | ".join(cells)
        out.append(line)
    return "\n".join(out)
