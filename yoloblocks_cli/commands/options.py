"""Options shared by several commands, declared once (Typer ``Annotated`` aliases)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

SizeOpt = Annotated[List[str], typer.Option("--size", "-s", help="Input size: CxHxW or BxCxHxW for a block; S, HxW or BxCxHxW for a model. Repeat or comma-separate for several.")]
BlockSizeOpt = Annotated[List[str], typer.Option("--size", "-s", help="Input size of the block: CxHxW or BxCxHxW. Repeat or comma-separate for several.")]
ArgsOpt = Annotated[Optional[str], typer.Option("--args", help="Constructor arguments after the input width, as a Python literal list, e.g. '[8, 48, 48]'.")]
KwargsOpt = Annotated[Optional[List[str]], typer.Option("--kwargs", help="Constructor keyword argument name=value (literal); repeatable.")]
DeviceOpt = Annotated[str, typer.Option("--device", "-d", help="cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="fp32, fp16 or bf16.")]
def _bounded_threads(value: Optional[int]) -> Optional[int]:
    """``--threads`` within 1..CPU count x 4, refused at parse time (libgomp aborts on 100,000)."""
    from yoloblocks_cli.loading.limits import check_threads

    return check_threads(value)  # UsageError: exit 2, one line


ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, callback=_bounded_threads,
                                                   help="CPU threads for torch (default: torch's choice; at most CPUs x 4).")]
ChannelsLastOpt = Annotated[bool, typer.Option("--channels-last", help="Feed channels_last (NHWC) memory format.")]
TrainOpt = Annotated[bool, typer.Option("--train", help="Also time forward+backward in train mode.")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch", "-b", help="Batch size (overrides the B in --size).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object (schema yoloblocks.report/1) instead of tables.")]
def writable_path(ctx: typer.Context, param: typer.CallbackParam, value: Optional[Path]) -> Optional[Path]:
    """An output path checked before the command's work starts (reporting.atomic.check_output_path)."""
    if value is not None:
        from yoloblocks_cli.reporting.atomic import check_output_path

        check_output_path(value, param.opts[0] if param.opts else "--output")  # UsageError: exit 2, one line
    return value


OutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o", callback=writable_path,
                                                   help="Write the JSON report to this file.")]
PluginOpt = Annotated[Optional[List[Path]], typer.Option("--plugin", help="A Python file whose blocks a YAML may use; repeatable. It is executed.")]
LayoutOpt = Annotated[Optional[str], typer.Option("--layout", help="How the block's forward takes its input: nchw (default), nhwc, or bnc (tokens B x N x C); H and W are passed where forward asks for them (forward(x, H, W)).")]
InputsOpt = Annotated[Optional[List[str]], typer.Option("--inputs", help="Extra forward inputs by name with their dims (numbers or B, C, H, W, N = H*W), e.g. k=BxNxC,v=BxNxC for forward(q, k, v); repeatable.")]
RootOpt = Annotated[Optional[Path], typer.Option("--root", help="Repository root of a file.py:Class block whose imports are absolute (from model.x import y); default: found from its imports.")]
CountersOpt = Annotated[Optional[List[str]], typer.Option(
    "--counter", help="FLOP counters to run: torch, ultralytics, fvcore (repeatable or comma-separated; default all three).")]


def parse_counters(values: list[str] | None) -> tuple[str, ...]:
    """``--counter`` values -> counter names (``thop`` = ultralytics, ``dispatch`` = torch); all three by default."""
    from yoloblocks_cli.errors import UsageError
    from yoloblocks_cli.measuring.flops import COUNTERS as counters  # no torch import at module level

    if not values:
        return counters
    names = [v.strip().lower() for item in values for v in item.split(",") if v.strip()]
    aliases = {"thop": "ultralytics", "dispatch": "torch"}
    names = [aliases.get(n, n) for n in names]
    bad = [n for n in names if n not in counters]
    if bad:
        raise UsageError(f"unknown FLOP counter '{bad[0]}': expected torch, ultralytics (thop) or fvcore")
    return tuple(dict.fromkeys(names))
