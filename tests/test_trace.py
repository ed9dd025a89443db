"""The tracer (hook stack, layer log), failure localisation, hints, timeouts and JUnit XML."""

from __future__ import annotations

import sys
import threading
import time
import xml.etree.ElementTree as ET

import pytest
import torch
from torch import nn

from blocks.conv import Conv
from blocks.csp import C2f
from yoloblocks_cli.tracing import hints
from yoloblocks_cli.reporting.junit import Case, write_junit
from yoloblocks_cli.tracing.tracer import (ShapeTracer, fmt_shape, is_internal, run_with_timeout, shape_of, traced_call,
                                  user_frame)


def test_shape_of_nested_outputs():
    t = torch.zeros(2, 3, 4)
    assert shape_of(t) == [2, 3, 4]
    assert shape_of((t, [t[:1], None], 5)) == [[2, 3, 4], [[1, 3, 4]]]
    assert shape_of("x") is None
    assert fmt_shape([[1, 2], [3, 4, 5]]) == "[1x2, 3x4x5]"


def test_layer_log_records_every_call_with_shapes():
    m = C2f(8, 8, n=1, shortcut=True).eval()
    with ShapeTracer(m) as tr:
        r = traced_call(tr, lambda: m(torch.rand(1, 8, 6, 5)), record_layers=True)
    assert r.ok and list(r.output.shape) == [1, 8, 6, 5]
    got = [(rec.label, rec.module, rec.input_shape, rec.output_shape, rec.depth) for rec in r.layers]
    # Conv's SiLU is one instance shared by every Conv (ultralytics' layout): each call is
    # named by the parent that made it.
    assert got == [
        ("cv1.conv", "Conv2d", [1, 8, 6, 5], [1, 8, 6, 5], 2),
        ("cv1.bn", "BatchNorm2d", [1, 8, 6, 5], [1, 8, 6, 5], 2),
        ("cv1.act", "SiLU", [1, 8, 6, 5], [1, 8, 6, 5], 2),
        ("cv1", "Conv", [1, 8, 6, 5], [1, 8, 6, 5], 1),
        ("m.0.cv1.conv", "Conv2d", [1, 4, 6, 5], [1, 4, 6, 5], 3),
        ("m.0.cv1.bn", "BatchNorm2d", [1, 4, 6, 5], [1, 4, 6, 5], 3),
        ("m.0.cv1.act", "SiLU", [1, 4, 6, 5], [1, 4, 6, 5], 3),
        ("m.0.cv1", "Conv", [1, 4, 6, 5], [1, 4, 6, 5], 2),
        ("m.0.cv2.conv", "Conv2d", [1, 4, 6, 5], [1, 4, 6, 5], 3),
        ("m.0.cv2.bn", "BatchNorm2d", [1, 4, 6, 5], [1, 4, 6, 5], 3),
        ("m.0.cv2.act", "SiLU", [1, 4, 6, 5], [1, 4, 6, 5], 3),
        ("m.0.cv2", "Conv", [1, 4, 6, 5], [1, 4, 6, 5], 2),
        ("m.0", "Bottleneck", [1, 4, 6, 5], [1, 4, 6, 5], 1),
        ("cv2.conv", "Conv2d", [1, 12, 6, 5], [1, 8, 6, 5], 2),
        ("cv2.bn", "BatchNorm2d", [1, 8, 6, 5], [1, 8, 6, 5], 2),
        ("cv2.act", "SiLU", [1, 8, 6, 5], [1, 8, 6, 5], 2),
        ("cv2", "Conv", [1, 12, 6, 5], [1, 8, 6, 5], 1),
        ("<root>", "C2f", [1, 8, 6, 5], [1, 8, 6, 5], 0),
    ]
    assert not tr.stack  # balanced after a clean forward
    tr.detach()


def test_no_records_unless_asked_and_hooks_removed():
    m = Conv(4, 4)
    tr = ShapeTracer(m).attach()
    r = traced_call(tr, lambda: m(torch.rand(1, 4, 3, 3)))
    assert r.layers == []
    tr.detach()
    assert not m._forward_pre_hooks and not m._forward_hooks and not m.conv._forward_hooks


def test_failure_in_shared_module_is_named_by_the_running_instance():
    """ultralytics shares one SiLU between all Convs; the failure must name the instance that ran."""
    m = C2f(8, 8, n=1).eval()
    act = m.cv1.act
    assert act is m.m[0].cv2.act

    # fail inside the shared SiLU only while m.0.cv2 runs (deterministic: a failure is
    # localised by running the forward again with the hooks on)
    running = {"cv2": False}
    m.register_forward_pre_hook(lambda mod, args: running.__setitem__("cv2", False))  # a failed pass left it set
    m.m[0].cv2.register_forward_pre_hook(lambda mod, args: running.__setitem__("cv2", True))
    m.m[0].cv2.register_forward_hook(lambda mod, args, out: running.__setitem__("cv2", False))

    def explode(mod, args):
        if running["cv2"]:
            raise ValueError("boom")

    tr = ShapeTracer(m).attach()
    handle = act.register_forward_pre_hook(explode)  # the tracer prepends its pre-hook: it runs first
    try:
        r = traced_call(tr, lambda: m(torch.rand(1, 8, 4, 4)))
    finally:
        handle.remove()  # Conv.default_act is shared by every Conv of the process
        tr.detach()
    assert r.failure is not None
    f = r.failure
    assert (f.type, f.message, f.layer, f.module, f.layer_input_shape) == (
        "ValueError", "boom", "m.0.cv2.act", "SiLU", [1, 4, 4, 4])
    assert f.file.endswith("test_trace.py") and f.hint is None


def test_user_frame_skips_torch_and_stdlib():
    assert is_internal(torch.nn.functional.__file__)
    assert is_internal(threading.__file__)
    assert not is_internal(__file__)
    lin = nn.Linear(3, 4)
    try:
        lin(torch.rand(2, 5))  # raised inside torch; the user's line is this one
    except RuntimeError as exc:
        file, line = user_frame(exc)
    assert file == __file__
    assert line == sys._getframe().f_lineno - 4


def test_run_with_timeout_gives_up_waiting_and_propagates_errors():
    t0 = time.perf_counter()
    finished, value = run_with_timeout(lambda: time.sleep(2) or 1, 0.2)
    assert (finished, value) == (False, None)
    assert time.perf_counter() - t0 < 1.5
    assert run_with_timeout(lambda: 7, 5) == (True, 7)
    assert run_with_timeout(lambda: 8, None) == (True, 8)
    with pytest.raises(KeyError):
        run_with_timeout(lambda: {}["k"], 5)


def test_tracer_stack_is_per_thread():
    m = nn.Conv2d(2, 2, 1)
    tr = ShapeTracer(m)
    tr.stack.append("sentinel")
    seen = []
    t = threading.Thread(target=lambda: seen.append(list(tr.stack)))
    t.start()
    t.join()
    assert seen == [[]] and tr.stack == ["sentinel"]


# --- hints: each recogniser on the exact messages torch and einops produce ------------------------


def ctx(message: str, input_shape=None, modules=()) -> hints.HintContext:
    return hints.HintContext("RuntimeError", message, input_shape=input_shape, x_shape=None, modules=list(modules))


def test_hint_square_from_floor_sqrt_view():
    found = hints.recognise(ctx("shape '[2, 64, 17, 17]' is invalid for input of size 38400", [2, 64, 15, 20]))
    assert found[0] == "square-assumption"
    assert "reshapes 300 (15x20) tokens to 17x17" in found[1]


def test_hint_square_from_h_by_h_view_of_a_rectangle():
    # Mobile-MQA style: context.view(b, c, px, px) with px = H
    found = hints.recognise(ctx("shape '[1, 384, 20, 20]' is invalid for input of size 115200", [1, 384, 20, 15]))
    assert found == ("square-assumption",
                     "assumes a square input: reshapes a 20x15 map to 20x20; keep H and W separately")


def test_hint_square_from_token_input_and_einops_message():
    msg = ("Error while processing rearrange-reduction pattern \"b (w h) c -> b c w h\".\n Input tensor shape: "
           "torch.Size([8, 300, 8]). Additional info: {'w': 17, 'h': 17}.\n Shape mismatch, 289 != 300")
    assert hints.recognise(ctx(msg, [8, 300, 8]))[0] == "square-assumption"


def test_hint_fixed_tokens_names_the_parameter():
    m = nn.Module()
    m.positional_encoding = nn.Parameter(torch.zeros(1, 400, 32))
    msg = "The size of tensor a (1600) must match the size of tensor b (400) at non-singleton dimension 1"
    found = hints.recognise(ctx(msg, [1, 32, 40, 40], [m]))
    assert found[0] == "fixed-token-count"
    assert "parameter 'positional_encoding' holds 400 = 20x20 tokens but the input has 1600 (40x40)" in found[1]
    # the same message with no such parameter is not a token table
    assert hints.recognise(ctx(msg, [1, 32, 40, 40], [nn.Conv2d(32, 32, 1)])) is None


def test_hint_hard_coded_width_conv_linear_norm():
    conv = ("Given groups=1, weight of size [512, 512, 1, 1], expected input[1, 256, 20, 20] to have 512 "
            "channels, but got 256 channels instead")
    assert hints.recognise(ctx(conv))[1].startswith("hard-coded width: a convolution was built for 512 input "
                                                    "channels but the tensor has 256")
    lin = "mat1 and mat2 shapes cannot be multiplied (400x256 and 512x1536)"
    assert "a linear layer was built for 512 input channels but the tensor has 256" in hints.recognise(ctx(lin))[1]
    ln = "Given normalized_shape=[512], expected input with shape [*, 512], but got input of size[1, 400, 256]"
    assert hints.recognise(ctx(ln))[0] == "hard-coded-width"
    assert hints.recognise(ctx("mat1 and mat2 shapes cannot be multiplied (4x8 and 8x9)")) is None


def test_hint_odd_size_from_cat_and_add():
    cat = ("Sizes of tensors must match except in dimension 1. Expected size 21 but got size 22 for tensor "
           "number 1 in the list.")
    assert hints.recognise(ctx(cat, [1, 8, 21, 14]))[0] == "odd-size"
    add = "The size of tensor a (15) must match the size of tensor b (16) at non-singleton dimension 2"
    assert "(15 vs 16)" in hints.recognise(ctx(add, [1, 8, 30, 15]))[1]


def test_hint_non_contiguous_view_and_unknown():
    msg = ("view size is not compatible with input tensor's size and stride (at least one dimension spans "
           "across two contiguous subspaces). Use .reshape(...) instead.")
    assert hints.recognise(ctx(msg))[0] == "non-contiguous-view"
    assert hints.recognise(ctx("something else entirely")) is None
    assert hints.recognisers() == ["non-contiguous-view", "input-too-small", "input-layout", "fixed-spatial-size",
                                   "hard-coded-width", "divisibility", "square-assumption",
                                   "fixed-token-count-view", "fixed-token-count", "fixed-size-tensor",
                                   "shrinking-map", "odd-size"]


def test_hint_input_too_small():
    msg = "Given input size: (16x1x12). Calculated output size: (16x0x11). Output size is too small"
    assert hints.recognise(ctx(msg, [1, 16, 1, 12]))[0] == "input-too-small"


def test_register_hint_adds_a_recogniser():
    name = "test-only"

    @hints.register_hint(name)
    def _mine(c):
        return ("mine", "recognised") if "xyzzy" in c.message else None

    try:
        assert hints.recognise(ctx("xyzzy")) == ("mine", "recognised")
    finally:
        hints._RECOGNISERS[:] = [(n, f) for n, f in hints._RECOGNISERS if n != name]


def test_junit_xml(tmp_path):
    p = write_junit(tmp_path / "sub" / "r.xml", "suite", [
        Case("c", "a"), Case("c", "b", "fail", "bad", "details", "RuntimeError", 0.5), Case("c", "s", "skip", "n/a"),
    ])
    root = ET.parse(p).getroot()
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped"), suite.get("time")) == ("3", "1", "1",
                                                                                                    "0.5000")
    cases = suite.findall("testcase")
    assert cases[1].find("failure").attrib == {"message": "bad", "type": "RuntimeError"}
    assert cases[1].find("failure").text == "details"
    assert cases[2].find("skipped").get("message") == "n/a"


class _TinyGraph(nn.Module):
    """An ultralytics-like model: ``self.model`` is a ModuleList of layers tagged with ``.i``."""

    def __init__(self, layers):
        super().__init__()
        self.model = nn.ModuleList(layers)
        for i, m in enumerate(self.model):
            m.i = i

    def forward(self, x):
        for m in self.model:
            x = m(x)
        return x


def test_model_failure_names_the_yaml_index_and_the_inner_module():
    import importlib.util

    from conftest import FIXTURES
    from yoloblocks_cli.tracing.probes import Target, run_point
    from yoloblocks_cli.loading.spec import Shape
    from yoloblocks_cli.tracing.run import model_layer_modules

    spec = importlib.util.spec_from_file_location("bb_model_test", FIXTURES / "broken_blocks.py")
    bb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bb)
    model = _TinyGraph([nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 16, 3, 2, 1), bb.HardCodedWidth(16)])

    class Built:
        pass

    built = Built()
    built.model = model
    layers = model_layer_modules(built)
    assert [i for i, _ in layers] == [0, 1, 2]
    tr = ShapeTracer(model, layer_modules=layers, only_layers=True).attach()
    try:
        p = run_point(Target(model, tr, "tiny", None, "model"), Shape(1, 3, 32, 24), ["sweep"], record_layers=True)
    finally:
        tr.detach()
    f = p.error
    assert (f.layer, f.module, f.layer_input_shape) == (2, "HardCodedWidth", [1, 16, 8, 6])
    assert f.inner == {"path": "model.2.inner.0", "module": "Conv2d", "input_shape": [1, 16, 8, 6]}
    assert f.cause == "hard-coded-width"
    # only YAML layers are logged for a model, the one that raised last
    assert [(r.label, r.module, r.output_shape, r.failed) for r in p.layers] == [
        ("0", "Conv2d", [1, 8, 16, 12], False), ("1", "Conv2d", [1, 16, 8, 6], False),
        ("2", "HardCodedWidth", None, True)]


def _hook_count(m: nn.Module) -> int:
    return sum(len(x._forward_pre_hooks) + len(x._forward_hooks) for x in m.modules())


def test_passing_call_runs_without_hooks_and_leaves_none():
    m = C2f(8, 8, n=1).eval()
    seen = []
    m.cv1.conv.register_forward_pre_hook(lambda mod, args: seen.append(_hook_count(m)))  # counts itself: 1
    tr = ShapeTracer(m).attach()
    r = traced_call(tr, lambda: m(torch.rand(1, 8, 6, 5)))
    assert r.ok and r.output.shape == (1, 8, 6, 5) and r.layers == []
    assert seen == [1]  # no tracer hook on any module while the passing forward ran
    assert _hook_count(m) == 1


class FailsOnce(nn.Module):
    """Raises on its first call only: the hooked re-run passes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("flaky")
        return self.conv(x)


def test_failure_that_does_not_repeat_is_reported_unlocalised():
    m = FailsOnce()
    r = traced_call(ShapeTracer(m).attach(), lambda: m(torch.rand(1, 4, 3, 3)))
    assert m.calls == 2  # the bare run and the hooked re-run
    f = r.failure
    assert (f.type, f.message, f.layer) == ("RuntimeError", "flaky", None)
    assert f.file.endswith("test_trace.py") and f.line == FailsOnce.forward.__code__.co_firstlineno + 3
    assert _hook_count(m) == 0
