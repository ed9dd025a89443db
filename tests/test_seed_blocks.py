"""The seed attention blocks: every resolution, layout, dtype and mode, and agreement with
straightforward reference formulas (tests/seed_reference.py)."""

from __future__ import annotations

import pytest
import torch

from blocks.attention import (FocusedLinearAttention, MLLAttention, MMQARepNCSPELAN4,
                              MultiQueryAttentionLayerWithDownSampling, S2Attention)
from blocks.attention import mobile_mqa
from blocks.attention.focused_linear import resize_positional_table
from blocks.attention.s2attention import SHIFT1, SHIFT2, spatial_shift
from blocks.conventions import LayerContext
from blocks.registry import get_block

try:  # tests/ is on sys.path under pytest's default import mode
    import seed_reference as ref
except ImportError:  # pragma: no cover
    from tests import seed_reference as ref

C = 32  # small widths keep the suite fast

# name -> factory of a small instance; MQA in both its plain and fully down-sampling forms
FACTORIES = {
    "mlla": lambda: MLLAttention(C),
    "fla": lambda: FocusedLinearAttention(C, num_heads=4),
    "mqa": lambda: MultiQueryAttentionLayerWithDownSampling(C, 4, 16, 16, 1, 1, 1),
    "mqa_strided": lambda: MultiQueryAttentionLayerWithDownSampling(C, 4, 16, 8, 2, 3, 2),
    "s2": lambda: S2Attention(C),
}
SIZES = [(7, 5), (1, 9), (9, 1), (3, 3), (6, 11)]


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _randomise_(m: torch.nn.Module) -> torch.nn.Module:
    """Non-zero positional tables / scales and non-trivial BN statistics, so tests see them."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("positional_encoding") or name.endswith("scale"):
                p.normal_(0, 0.5)
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.1)
    return m


def _block(name: str) -> torch.nn.Module:
    return _randomise_(FACTORIES[name]()).eval()


# --- registration and parameter counts ---------------------------------------------------


@pytest.mark.parametrize("name,convention,family,arxiv", [
    ("MLLAttention", "preserve", "attention", "2405.16605"),
    ("FocusedLinearAttention", "preserve_nominal", "attention", "2308.00442"),
    ("MultiQueryAttentionLayerWithDownSampling", "preserve", "attention", "2404.10518"),
    ("MMQARepNCSPELAN4", "c1_c2", "attention", "2404.10518"),
    ("S2Attention", "preserve_nominal", "mlp", "2108.01072"),
])
def test_registered_with_convention_family_and_source(name, convention, family, arxiv):
    info = get_block(name)
    assert (info.convention.name, info.family) == (convention, family)
    assert arxiv in info.source


def test_mobile_mqa_alias():
    assert get_block("MobileMQA").cls is MultiQueryAttentionLayerWithDownSampling


def test_nominal_width_convention_builds_on_the_real_input_width():
    # yolov8n: SPPF gives 256 channels; the article's YAML says FocusedLinearAttention [256].
    conv = get_block("FocusedLinearAttention").convention
    r = conv.resolve(LayerContext(ch_in=[64], args=[256], width=0.25))
    assert r.args == [64] and r.c_out == 64
    # yolov5s: C3 [1024] at width 0.5 gives 512; the article wrote S2Attention [1024].
    r = get_block("S2Attention").convention.resolve(LayerContext(ch_in=[512], args=[1024], width=0.5))
    assert r.args == [512] and r.c_out == 512
    assert get_block("S2Attention").inspect_args(96, None) == [96]


@pytest.mark.parametrize("args,params", [
    ((128, 256, 128, 64, 1), 249_472),  # yolov9-c-MMQARepNCSPELAN4 layer 3, as the article prints
    ((256, 512, 256, 128, 1), 773_376),  # layer 5
    ((512, 512, 512, 256, 1), 2_119_168),  # layers 7 and 9
])
def test_mmqa_repncspelan4_parameter_counts_match_the_article(args, params):
    assert _n_params(MMQARepNCSPELAN4(*args)) == params


def test_published_parameter_shapes():
    # Published modules: MLLA qk Linear(C, 2C) + depth-wise 3x3 LePE; FLA qkv, proj, a 20x20
    # table, a depth-wise 5x5 on one head, a scale; S2 two MLPs + split attention (8C^2 + 4C).
    assert _n_params(MLLAttention(256)) == 256 * 512 + 512 + 256 * 9 + 256
    assert _n_params(FocusedLinearAttention(256)) == (3 * 256 * 256 + 768) + (256 * 256 + 256) + 400 * 256 \
        + (32 * 25 + 32) + 256
    assert _n_params(S2Attention(512)) == 8 * 512 * 512 + 4 * 512
    mqa = MultiQueryAttentionLayerWithDownSampling(64, 8, 48, 48, 1, 1, 1)
    assert {k: tuple(v.shape) for k, v in mqa.state_dict().items()} == {
        "_query_proj.0.weight": (384, 64, 1, 1), "_key_proj.0.weight": (48, 64, 1, 1),
        "_value_proj.0.weight": (48, 64, 1, 1), "_output_proj.0.weight": (64, 384, 1, 1)}
    fla = FocusedLinearAttention(64)
    assert tuple(fla.positional_encoding.shape) == (1, 400, 64) and tuple(fla.scale.shape) == (1, 1, 64)


def test_width_checks_are_clear():
    with pytest.raises(ValueError, match=r"MLLAttention: dim \(30\) must be divisible by num_heads \(4\)"):
        MLLAttention(30)
    with pytest.raises(ValueError, match=r"FocusedLinearAttention: dim \(36\) must be divisible by num_heads \(8\)"):
        FocusedLinearAttention(36)


# --- any H x W, batches, layouts ---------------------------------------------------------


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("hw", SIZES)
def test_any_resolution_keeps_shape_and_is_finite(name, hw):
    m = _block(name)
    x = torch.randn(2, C, *hw)
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_fla_beyond_its_20x20_table():
    m = _block("fla")
    for hw in [(40, 40), (23, 31)]:
        y = m(torch.randn(1, C, *hw))
        assert y.shape == (1, C, *hw) and torch.isfinite(y).all()


def test_s2attention_at_several_widths():
    # the published block hard-wired SplitAttention(512); every other width failed
    for c in (8, 24, 96):
        assert S2Attention(c)(torch.randn(1, c, 3, 4)).shape == (1, c, 3, 4)


@pytest.mark.parametrize("name", FACTORIES)
def test_batch_independence_non_square(name):
    m = _block(name)
    x = torch.randn(3, C, 5, 7)
    with torch.no_grad():
        full = m(x)
        single = torch.cat([m(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(full, single, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", FACTORIES)
def test_channels_last_input_gives_the_same_output(name):
    m = _block(name)
    x = torch.randn(2, C, 6, 5)
    with torch.no_grad():
        y = m(x)
        y_cl = m(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y_cl, y, rtol=1e-4, atol=1e-5)


def _half_supported(dtype: torch.dtype) -> bool:
    try:
        x = torch.randn(1, 4, 3, 3, dtype=dtype)
        torch.nn.functional.conv2d(x, torch.randn(4, 1, 3, 3, dtype=dtype), groups=4)
        torch.nn.functional.scaled_dot_product_attention(*(torch.randn(1, 1, 4, 8, dtype=dtype),) * 3)
        return True
    except (RuntimeError, NotImplementedError):
        return False


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", FACTORIES)
def test_low_precision_on_cpu(name, dtype):
    if not _half_supported(dtype):
        pytest.skip(f"{dtype} convolutions/attention not supported on this CPU build")
    m = _block(name)
    x = torch.randn(2, C, 5, 6)
    with torch.no_grad():
        y32 = m(x)
        y = m.to(dtype)(x.to(dtype))
    assert y.dtype == dtype and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), y32, rtol=0.1, atol=0.1 * y32.abs().max().item())


# --- training ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", FACTORIES)
def test_backward_reaches_every_parameter(name):
    m = _randomise_(FACTORIES[name]()).train()
    y = m(torch.randn(2, C, 5, 7))
    (y * torch.randn_like(y)).sum().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None, pname
        assert p.grad.abs().sum() > 0, pname


def test_mmqa_repncspelan4_trains_on_a_non_square_map():
    m = MMQARepNCSPELAN4(32, 64, 32, 16, 1).train()
    y = m(torch.randn(2, 32, 5, 9))
    assert y.shape == (2, 64, 5, 9)
    y.square().mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


# --- numerical agreement with reference formulas ----------------------------------------


@pytest.mark.parametrize("hw", [(4, 6), (5, 3), (1, 7)])
def test_mlla_matches_quadratic_form_with_2d_rope(hw):
    m = _block("mlla").double()
    x = torch.randn(2, C, *hw, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref.mlla_reference(m, x), rtol=1e-6, atol=1e-6)


def test_mlla_is_not_the_reshape_without_permute_version():
    # The article's x.reshape(B, N, C) on a (B, C, H, W) tensor reads C-major memory as
    # tokens: even on a square map it computes something else than the paper's block.
    m = _block("mlla").double()
    x = torch.randn(1, C, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        torch.testing.assert_close(y, ref.mlla_reference(m, x), rtol=1e-6, atol=1e-6)
        scrambled = ref.mlla_reference(m, x, scrambled=True)
    assert (y - scrambled).abs().max() > 0.1 * y.abs().max()


@pytest.mark.parametrize("hw", [(20, 20), (4, 7), (1, 5), (2, 2)])
def test_fla_matches_quadratic_form(hw):
    # (2, 2) has N=4 <= head_dim=8 and exercises the block's N x N branch
    m = _block("fla").double()
    x = torch.randn(2, C, *hw, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref.fla_reference(m, x), rtol=1e-6, atol=1e-6)


def test_fla_large_focusing_factor_branch():
    m = _randomise_(FocusedLinearAttention(C, num_heads=4, focusing_factor=8)).double().eval()
    x = torch.randn(1, C, 3, 5, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
    assert torch.isfinite(y).all() and y.shape == x.shape


def test_fla_table_is_used_unresized_on_its_own_grid():
    table = torch.randn(1, 400, 8)
    pe = resize_positional_table(table, (20, 20), (20, 20), torch.float32)
    torch.testing.assert_close(pe, table.transpose(1, 2), rtol=0, atol=0)
    assert resize_positional_table(table, (20, 20), (7, 33), torch.float32).shape == (1, 8, 7 * 33)


@pytest.mark.parametrize("name,hw", [("mqa", (4, 6)), ("mqa", (1, 5)), ("mqa_strided", (7, 5)),
                                     ("mqa_strided", (8, 9)), ("mqa_strided", (1, 4))])
@pytest.mark.parametrize("fused", [False, True])
def test_mqa_matches_explicit_softmax_attention(name, hw, fused, monkeypatch):
    # both CPU paths: explicit matmul + softmax (small maps) and fused attention (large maps)
    monkeypatch.setattr(mobile_mqa, "EXPLICIT_MAX_SCORES", 0 if fused else 1 << 24)
    m = _block(name).double()
    x = torch.randn(2, C, *hw, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref.mqa_reference(m, x), rtol=1e-6, atol=1e-6)


def test_mqa_query_downsampling_returns_to_input_resolution():
    m = _block("mqa_strided")
    x = torch.randn(1, C, 9, 13)
    with torch.no_grad():
        q = m._query_proj(m._query_downsampling_norm(torch.nn.functional.avg_pool2d(x, (2, 3), ceil_mode=True)))
        assert q.shape[-2:] == (5, 5)
        assert m(x).shape == x.shape


@pytest.mark.parametrize("hw", [(4, 6), (1, 5), (3, 1)])
def test_s2attention_matches_stacked_reference(hw):
    m = _block("s2").double()
    x = torch.randn(2, C, *hw, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref.s2_reference(m, x), rtol=1e-6, atol=1e-6)


def test_spatial_shift_moves_content_by_one_pixel_without_smearing():
    # Rows numbered 0..4 in every channel; the first quarter of SHIFT1 moves rows down by one.
    t = torch.arange(5.0).view(1, 5, 1, 1).expand(1, 5, 3, 8).contiguous()
    out = spatial_shift(t, SHIFT1)
    assert out[0, :, 0, 0].tolist() == [0.0, 0.0, 1.0, 2.0, 3.0]  # in-place published code: all 0
    assert out[0, :, 0, 2].tolist() == [1.0, 2.0, 3.0, 4.0, 4.0]
    assert torch.equal(out[..., 4:], t[..., 4:])  # the column shifts leave constant rows alone
    for pattern in (SHIFT1, SHIFT2):
        x = torch.randn(2, 4, 5, 12)
        torch.testing.assert_close(spatial_shift(x, pattern), ref.shift_reference(x, pattern), rtol=0, atol=0)
    assert torch.equal(t, torch.arange(5.0).view(1, 5, 1, 1).expand(1, 5, 3, 8))  # input untouched


def test_mlla_cached_rope_tables_work_after_inference_mode():
    m = _block("mlla")
    x = torch.randn(1, C, 3, 7)
    with torch.inference_mode():
        m(x)  # fills the cache for this grid inside inference mode
    m.train()(x).sum().backward()  # the same cached tables must be usable by autograd
    assert m.qk.weight.grad is not None


def test_fla_inference_cache_follows_parameter_updates():
    m = _block("fla")
    x = torch.randn(1, C, 6, 9)
    with torch.no_grad():
        before = m(x)
        assert torch.equal(m(x), before)  # served from the cache
        m.positional_encoding.add_(1.0)  # an optimizer step or load_state_dict
        after = m(x)
        torch.testing.assert_close(after, ref.fla_reference(m, x), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(after, before)
    m.train()(x).sum().backward()  # with autograd the table is resized afresh and gets gradients
    assert m.positional_encoding.grad.abs().sum() > 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", FACTORIES)
def test_cuda_fp16_matches_cpu_fp32(name):
    m = _block(name)
    x = torch.randn(2, C, 7, 10)
    with torch.no_grad():
        y32 = m(x)
        y = m.cuda().half()(x.cuda().half()).float().cpu()
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, y32, rtol=0.05, atol=0.05 * y32.abs().max().item())


# --- FLOP counting: thop (ultralytics' counter) must see what the dispatch counter sees ----


@pytest.mark.parametrize("name,hw,fused", [("mlla", (5, 7), False), ("fla", (5, 7), False),
                                           ("fla", (2, 3), False), ("mqa", (5, 7), False),
                                           ("mqa", (5, 7), True)])
def test_thop_counts_every_product(name, hw, fused, monkeypatch):
    # The projections run as 1x1 convolutions on the Linear weights and MQA may use fused
    # attention: neither is visible to thop hooks, so the blocks declare MAC rules. With
    # them thop's MACs equal the dispatch counter's FLOPs / 2 (matmuls and convs only here).
    flops = pytest.importorskip("yoloblocks_cli.measuring.flops")
    monkeypatch.setattr(mobile_mqa, "EXPLICIT_MAX_SCORES", 0 if fused else 1 << 24)
    m = _block(name)
    x = torch.randn(2, C, *hw)
    assert flops.thop_macs(m, x) == flops.torch_flops(m, x) // 2


def test_mlla_macs_rule_equals_the_published_modules_thop_count():
    # published MLLA at C=64, 20x20, batch 1, as thop counts it: qk Linear 400*64*128,
    # LePE 400*64*9, and the three attention products 400*64*(1 + 2*16)
    flops = pytest.importorskip("yoloblocks_cli.measuring.flops")
    assert flops.thop_macs(MLLAttention(64), torch.randn(1, 64, 20, 20)) == 3_276_800 + 230_400 + 844_800
