"""`yb trace`: sweep shapes, batches and layouts; pinpoint where a block or model breaks."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from yoloblocks_cli.commands.options import (ArgsOpt, DeviceOpt, DtypeOpt, InputsOpt, JsonOpt, KwargsOpt, LayoutOpt,
                                    OutputOpt, PluginOpt, RootOpt, SizeOpt, ThreadsOpt, writable_path)

SizesOpt = Annotated[Optional[List[str]], typer.Option(
    "--sizes", help="Exact sizes to run (no derived sweep); repeat or comma-separate.")]
BatchesOpt = Annotated[Optional[str], typer.Option(
    "--batch", "-b", help="Batch sizes to run every shape at, e.g. 1,4 (default: 1, plus batch 2 at the base size).")]
ScalesOpt = Annotated[Optional[str], typer.Option(
    "--scales", help="Model scales to build, e.g. n,s,m (a hard-coded width breaks only at some).")]
ProbesOpt = Annotated[str, typer.Option(
    "--probes", help="Comma list of probes: sweep,finite,batch,channels-last,train,grads (the default), "
    "export (ONNX + onnxruntime, slow); 'all' is every one.")]
NoProbeOpt = Annotated[Optional[List[str]], typer.Option(
    "--no-probe", help="Switch one probe off; repeatable.")]
LayersOpt = Annotated[bool, typer.Option(
    "--layers", help="Print the per-layer shape trace (first configuration and every failing one).")]
JunitOpt = Annotated[Optional[Path], typer.Option(
    "--junit", callback=writable_path, help="Write JUnit XML: one testcase per configuration x probe.")]
WeightsYamlOpt = Annotated[Optional[str], typer.Option(
    "--model", help="The YAML a plain state_dict (.pt/.pth/.safetensors) belongs to.")]
QuickOpt = Annotated[bool, typer.Option(
    "--quick", help="The small sweep of earlier versions (9 model / 8 block shapes), every probe at each.")]
TimeoutOpt = Annotated[Optional[float], typer.Option(
    "--timeout", help="Seconds allowed per configuration; a late one is reported as 'timeout'.")]


def register(app: typer.Typer) -> None:
    @app.command("trace")
    def trace_cmd(
        target: Annotated[str, typer.Argument(help="Block (name, module:Class, file.py:Class), model YAML or checkpoint (best.pt).")],
        size: SizeOpt = [],  # noqa: B006 - typer needs a literal default
        sizes: SizesOpt = None,
        batch: BatchesOpt = None,
        scales: ScalesOpt = None,
        probes: ProbesOpt = "default",
        no_probe: NoProbeOpt = None,
        layers: LayersOpt = False,
        args: ArgsOpt = None,
        kwargs: KwargsOpt = None,
        plugin: PluginOpt = None,
        model_yaml: WeightsYamlOpt = None,
        device: DeviceOpt = "cpu",
        dtype: DtypeOpt = "fp32",
        threads: ThreadsOpt = None,
        timeout: TimeoutOpt = None,
        json_out: JsonOpt = False,
        output: OutputOpt = None,
        junit: JunitOpt = None,
        layout: LayoutOpt = None,
        inputs: InputsOpt = None,
        root: RootOpt = None,
        quick: QuickOpt = False,
    ) -> None:
        """Sweep resolutions, batches and layouts; name the layer, line and cause of every failure.

        Shapes on meta tensors at every configuration, value probes at a few real ones.
        Exit 0 when every probe passes, 1 when any fails, 2 on bad input, 130 when interrupted.
        """
        from yoloblocks_cli.loading.limits import preflight_model
        from yoloblocks_cli.tracing.run import TraceRequest, run_trace

        if target.lower().endswith((".yaml", ".yml")):
            preflight_model(target)  # bounds of the YAML before torch is imported (docs/limits.md)

        req = TraceRequest(target=target, size=list(size or []), sizes=list(sizes or []), batch=batch,
                           scales=scales, probes=probes, no_probe=list(no_probe or []), layers=layers,
                           args=args, kwargs=list(kwargs or []), plugins=list(plugin or []), device=device,
                           dtype=dtype, threads=threads, timeout=timeout, json_out=json_out, output=output, junit=junit,
                           model_yaml=model_yaml, layout=layout, inputs=list(inputs or []), root=root,
                           quick=quick)
        code = run_trace(req)
        if code:
            raise typer.Exit(code)
