"""Mamba-YOLO blocks: official structure (parameter counts), any H x W, counted FLOPs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

import blocks  # noqa: F401  (registers everything)
from blocks.conventions import LayerContext
from blocks.flop_formulas import MODULE_MACS
from blocks.mamba import (
    SS2D, LSBlock, RGBlock, SimpleStem, VisionClueMerge, VSSBlock, XSSBlock, cross_merge, cross_scan,
)
from blocks.registry import get_block

CFG = Path(blocks.__file__).parent / "cfg" / "mamba-yolo.yaml"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids OpenMP barrier stalls on a loaded 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --- independent parameter formulas, derived from the official module definitions ---------


def ss2d_params(d: int, n: int = 16) -> int:
    e, r = 2 * d, math.ceil(d / 16)
    return (2 * e + d * 2 * e + 10 * e + 4 * (r + 2 * n) * e + e * d
            + 4 * e + 4 * e * n + 4 * e * r + 4 * e)


def ls_params(h: int) -> int:
    return 2 * h * h + 14 * h


def rg_params(h: int) -> int:
    hid = int(2 * (4 * h) / 3)
    return h * 2 * hid + 2 * hid + 10 * hid + hid * h + h


def vss_params(c1: int, h: int) -> int:
    return c1 * h + 3 * h + 2 * h + ss2d_params(h) + ls_params(h) + 2 * h + rg_params(h)


def xss_params(c1: int, h: int, n: int) -> int:
    proj = c1 * h + 2 * h if c1 != h else 0
    return proj + 2 * h + n * ss2d_params(h) + ls_params(h) + 2 * h + rg_params(h)


@pytest.mark.parametrize("d", [32, 64, 128, 192])
def test_block_parameter_counts_match_formulas(d):
    with torch.device("meta"):
        assert n_params(SS2D(d)) == ss2d_params(d)
        assert n_params(LSBlock(d, d)) == ls_params(d)
        assert n_params(RGBlock(d, 4 * d)) == rg_params(d)
        assert n_params(VSSBlock(d, d)) == vss_params(d, d)
        assert n_params(XSSBlock(3 * d, d, 2)) == xss_params(3 * d, d, 2)
        assert n_params(XSSBlock(d, d, 1)) == xss_params(d, d, 1)
        assert n_params(SimpleStem(3, d)) == 3 * (d // 2) * 9 + 2 * (d // 2) + (d // 2) * d * 9 + 2 * d
        assert n_params(VisionClueMerge(d, 2 * d)) == 4 * d * 2 * d + 2 * d + 4 * d


def test_state_dict_names_follow_the_official_module():
    keys = set(VSSBlock(32, 32).state_dict())
    for k in ("proj_conv.0.weight", "norm.norm.weight", "op.x_proj_weight", "op.A_logs", "op.Ds",
              "op.dt_projs_weight", "op.dt_projs_bias", "op.out_norm.weight", "op.in_proj.weight",
              "op.conv2d.weight", "op.out_proj.weight", "lsblock.fc1.weight", "mlp.fc1.weight", "norm2.norm.bias"):
        assert k in keys, k
    assert "ss2d.0.A_logs" in XSSBlock(64, 32, 1).state_dict()


def test_yaml_conventions_are_the_official_parse_model_rules():
    ctx = LayerContext(ch_in=[64], args=[256], n=3, width=0.25)
    assert get_block("VSSBlock").convention.resolve(ctx).args == [64, 64]
    assert get_block("VSSBlock").convention.resolve(ctx).repeats == 3
    assert get_block("VisionClueMerge").convention.resolve(ctx).args == [64, 64]
    ctx = LayerContext(ch_in=[384], args=[512], n=3, width=0.25)
    r = get_block("XSSBlock").convention.resolve(ctx)
    assert (r.args, r.repeats, r.c_out) == ([384, 128, 3], 1, 128)
    ctx = LayerContext(ch_in=[3], args=[128, 3], n=1, width=0.25)
    assert get_block("SimpleStem").convention.resolve(ctx).args == [3, 32, 3]


# --- whole-model counts on the meta device: a minimal YAML walker, independent of the builder ---


def detect_params(nc: int, ch: list[int], reg_max: int = 16) -> int:
    """ultralytics Detect: two 3x3 Conv+BN per branch, a 1x1 output conv, and the DFL conv."""
    c2, c3 = max(16, ch[0] // 4, reg_max * 4), max(ch[0], min(nc, 100))
    conv = lambda a, b: a * b * 9 + 2 * b  # noqa: E731
    per = sum(conv(x, c2) + conv(c2, c2) + c2 * 4 * reg_max + 4 * reg_max
              + conv(x, c3) + conv(c3, c3) + c3 * nc + nc for x in ch)
    return per + reg_max


def walk_yaml(scale: str) -> list[tuple[str, list, int]]:
    """(module, constructor args, params) per layer, built on the meta device."""
    d = yaml.safe_load(CFG.read_text())
    depth, width, max_ch = d["scales"][scale]
    nc, ch, rows = d["nc"], [3], []
    for f, n, m, args in d["backbone"] + d["head"]:
        args = [nc if a == "nc" else a for a in args]
        n = max(round(n * depth), 1) if n > 1 else n
        cin = [ch[x] if x < 0 else ch[x + 1] for x in ([f] if isinstance(f, int) else f)]
        if m == "Detect":
            rows.append((m, cin, detect_params(nc, cin)))
            break
        info = get_block(m)
        r = info.convention.resolve(LayerContext(ch_in=cin, args=list(args), n=n, nc=nc, width=width,
                                                 max_channels=max_ch))
        with torch.device("meta"):
            params = sum(n_params(info.cls(*r.args, **r.kwargs)) for _ in range(r.repeats))
        rows.append((m, r.args, params))
        ch.append(r.c_out if r.c_out is not None else cin[0])
    return rows


MAMBA_YOLO_T_LAYERS = [5136, 33692, 8384, 104184, 33152, 1067892, 131840, 1301496, 164608, 0, 0,
                       388604, 0, 0, 112312, 36992, 0, 364028, 147712, 0, 1334008, 897664]


def test_mamba_yolo_t_per_layer_parameters():
    assert [p for _, _, p in walk_yaml("T")] == MAMBA_YOLO_T_LAYERS


@pytest.mark.parametrize("scale,total", [("T", 6_131_704), ("B", 21_828_000), ("L", 57_631_024)])
def test_published_totals(scale, total):
    """Published: T 6.1M, B 21.8M, L 57.6M (nc=80)."""
    assert sum(p for _, _, p in walk_yaml(scale)) == total


# --- cross scan ---------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(1, 1), (4, 4), (3, 5), (6, 4), (7, 2)])
def test_cross_merge_of_cross_scan_is_four_times_identity(hw):
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    ys = cross_scan(x)
    assert ys.shape == (2, 4, 3, hw[0] * hw[1])
    assert torch.equal(cross_merge(ys, *hw), 4 * x.flatten(2))


def test_cross_scan_directions_on_non_square_input():
    x = torch.arange(2 * 3 * 5, dtype=torch.float32).view(1, 2, 3, 5)
    ys = cross_scan(x)
    assert torch.equal(ys[:, 0], x.flatten(2))
    assert torch.equal(ys[:, 1], cross_scan(x.transpose(2, 3))[:, 0])  # column-major = row-major of x^T
    assert torch.equal(ys[:, 2], ys[:, 0].flip(-1)) and torch.equal(ys[:, 3], ys[:, 1].flip(-1))
    assert ys[0, 1, 0, :4].tolist() == [0.0, 5.0, 10.0, 1.0]


def test_cross_merge_is_the_adjoint_of_cross_scan():
    x = torch.randn(1, 2, 3, 5, dtype=torch.float64)
    ys = torch.randn(1, 4, 2, 15, dtype=torch.float64)
    lhs = (cross_scan(x) * ys).sum()
    rhs = (x.flatten(2) * cross_merge(ys, 3, 5)).sum()
    assert torch.allclose(lhs, rhs)


def test_cross_merge_rejects_wrong_length():
    with pytest.raises(ValueError, match=r"cross_merge expects \(b, 4, c, 3\*4\), got \(1, 4, 2, 13\)"):
        cross_merge(torch.zeros(1, 4, 2, 13), 3, 4)


# --- shapes on any H x W ----------------------------------------------------------------


@pytest.mark.parametrize("hw,out", [((8, 8), (4, 4)), ((7, 5), (4, 3)), ((9, 6), (5, 3)), ((1, 1), (1, 1))])
def test_vision_clue_merge_pads_odd_sizes(hw, out):
    m = VisionClueMerge(4, 8).eval()
    x = torch.randn(1, 4, *hw)
    y = m(x)
    assert y.shape == (1, 8, *out)
    if hw[0] % 2 or hw[1] % 2:  # equals the block applied to the explicitly zero-padded input
        padded = torch.nn.functional.pad(x, (0, hw[1] % 2, 0, hw[0] % 2))
        assert torch.allclose(y, m(padded))


@pytest.mark.parametrize("hw", [(5, 7), (8, 3), (6, 6)])
def test_blocks_keep_shape_on_rectangular_inputs(hw):
    x = torch.randn(2, 16, *hw)
    for m, c in ((VSSBlock(16, 16), 16), (XSSBlock(16, 24, 2), 24), (SS2D(16), 16), (LSBlock(16), 16),
                 (RGBlock(16, 64), 16)):
        y = m.eval()(x)
        assert y.shape == (2, c, *hw) and torch.isfinite(y).all()


def test_ss2d_is_batch_independent_and_trainable():
    m = SS2D(8, d_state=4).train()
    x = torch.randn(3, 8, 5, 6, requires_grad=True)
    y = m(x)
    assert torch.allclose(m(x[1:2]), y[1:2], atol=1e-5)
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_ss2d_matches_a_direct_per_direction_reference():
    """SS2D's core = sum over the 4 directions of 1-D scans, each mapped back to its pixels."""
    from tests.test_selective_scan import reference_scan

    m = SS2D(8, d_state=4).eval()
    x = torch.randn(1, 16, 3, 5)
    u, delta, A, B, C, D, bias = m.scan_inputs(x)
    y_ref, _ = reference_scan(u, delta, A, B, C, D, None, bias, True)
    y_ref = y_ref.view(1, 4, 16, 3, 5).float()
    grid = y_ref[:, 0] + y_ref[:, 2].flatten(2).flip(-1).view(1, 16, 3, 5)
    grid = grid + y_ref[:, 1].flatten(2).view(1, 16, 5, 3).transpose(2, 3)
    grid = grid + y_ref[:, 3].flatten(2).flip(-1).view(1, 16, 5, 3).transpose(2, 3)
    expected = m.out_norm(grid.flatten(2).transpose(1, 2)).view(1, 3, 5, 16)
    assert torch.allclose(m.forward_core(x), expected, atol=1e-4)


# --- FLOPs ----------------------------------------------------------------------------


def scan_flops(module, x) -> int:
    with FlopCounterMode(display=False) as counter:
        module(x)
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    return counts["yoloblocks.selective_scan"]


def test_scan_flops_are_counted_and_linear_in_pixels():
    m = SS2D(16).eval()
    f1 = scan_flops(m, torch.randn(1, 16, 4, 6))
    f2 = scan_flops(m, torch.randn(1, 16, 8, 6))  # twice the pixels
    f3 = scan_flops(m, torch.randn(1, 16, 6, 8))  # same pixels, transposed aspect
    assert f1 == 9 * (4 * 32) * 24 * 16 + 4 * 32 * 24  # 9*b*D*L*N + D-skip, D = K * d_inner
    assert f2 == 2 * f1 and f3 == f2


def test_thop_rule_for_ss2d():
    m = SS2D(16)
    x = torch.randn(1, 16, 4, 6)
    macs = MODULE_MACS[SS2D](m, (x,), None)
    length, d, r, n = 24, 32, 1, 16
    proj = 4 * length * d * (r + 2 * n) + 4 * length * r * d
    assert macs == proj + (9 * 4 * d * length * n + 4 * d * length) // 2
    assert MODULE_MACS[SS2D](m, (torch.randn(1, 16, 8, 6),), None) == 2 * macs


# --- the whole model through the project's YAML builder ---------------------------------


@pytest.fixture(scope="module")
def mamba_yolo_t():
    from yoloblocks_cli.loading.yaml_model import build_model

    torch.manual_seed(0)
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # the builder runs a stride probe forward
    try:
        return build_model("mamba-yolo.yaml", scale="T")
    finally:
        torch.set_num_threads(old)


def test_builder_gives_the_pinned_counts(mamba_yolo_t):
    assert [layer.params for layer in mamba_yolo_t.layers] == MAMBA_YOLO_T_LAYERS
    assert n_params(mamba_yolo_t.model) == 6_131_704
    assert list(mamba_yolo_t.stride) == [8.0, 16.0, 32.0]


@pytest.mark.slow
@pytest.mark.parametrize("scale,total", [("B", 21_828_000), ("L", 57_631_024)])
def test_builder_totals_b_l(scale, total):
    from yoloblocks_cli.loading.yaml_model import build_model

    assert n_params(build_model("mamba-yolo.yaml", scale=scale).model) == total


@pytest.mark.parametrize("hw", [(64, 64), (96, 64)])
def test_mamba_yolo_t_runs_on_square_and_rectangular_inputs(mamba_yolo_t, hw):
    model = mamba_yolo_t.model.eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, *hw))
    anchors = sum((hw[0] // s) * (hw[1] // s) for s in (8, 16, 32))
    assert y.shape == (1, 84, anchors) and torch.isfinite(y).all()


@pytest.mark.slow
@pytest.mark.parametrize("hw", [(640, 640), (480, 640)])
def test_mamba_yolo_t_runs_at_640(mamba_yolo_t, hw):
    with torch.no_grad():
        y = mamba_yolo_t.model.eval()(torch.randn(1, 3, *hw))
    assert y.shape == (1, 84, sum((hw[0] // s) * (hw[1] // s) for s in (8, 16, 32)))


def test_fvcore_traces_the_scan_as_one_op_under_its_jit_name():
    """fvcore sees ``yoloblocks::selective_scan`` in the jit graph; a handle built from
    OP_FORMULAS (FLOPs / 2 = fvcore MACs) counts it, as yoloblocks_cli.measuring.flops does."""
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

    from blocks.flop_formulas import OP_FORMULAS

    def handle(inputs, outputs):
        shapes = [get_shape(v) if v.type().kind() == "TensorType" else None for v in inputs]
        return OP_FORMULAS["yoloblocks::selective_scan"](*shapes) // 2

    m = SS2D(16).eval()
    fa = FlopCountAnalysis(m, torch.randn(1, 16, 4, 6)).set_op_handle("yoloblocks::selective_scan", handle)
    fa.unsupported_ops_warnings(False)
    assert fa.by_operator()["selective_scan"] == (9 * 128 * 24 * 16 + 128 * 24) // 2


def test_thop_with_the_module_rule_adds_exactly_the_scan():
    """thop counts SS2D's convs, norms and einsums itself; the rule (wrapped the way
    yoloblocks_cli.measuring.flops wraps MODULE_MACS) replaces the einsums and adds the scan."""
    import thop

    def wrap(fn):
        def rule(m, x, y):
            m.total_ops += int(fn(m, x, y))
        return rule

    x = torch.randn(1, 16, 4, 6)
    plain, _ = thop.profile(SS2D(16).eval(), (x,), verbose=False)
    ruled, _ = thop.profile(SS2D(16).eval(), (x,), custom_ops={SS2D: wrap(MODULE_MACS[SS2D])}, verbose=False)
    assert ruled - plain == (9 * 128 * 24 * 16 + 128 * 24) // 2
