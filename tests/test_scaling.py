"""The physics and the maths of `yb scale`: exact fits on known data, measured exponents of blocks."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn as nn

from yoloblocks_cli.measuring import scaling
from yoloblocks_cli.errors import UsageError

CPU = torch.device("cpu")
TOKENS = [64, 128, 256, 512, 1024, 2048, 4096]


# ------------------------------------------------------------------ fitting maths on synthetic data


def test_power_fit_recovers_exact_exponent_and_prefactor():
    fit = scaling.fit_power(TOKENS, [3.0 * n ** 1.5 for n in TOKENS])
    assert fit.slope == pytest.approx(1.5, abs=1e-12)
    assert math.exp(fit.intercept) == pytest.approx(3.0, rel=1e-10)
    assert fit.r2 == 1.0
    assert fit.stderr == 0.0
    assert fit.n == 7


def test_power_fit_standard_error_and_r2_match_the_ols_formulas():
    np = pytest.importorskip("numpy")
    noise = [0.03, -0.05, 0.02, 0.04, -0.01, -0.03, 0.02]
    costs = [7.0 * n ** 2 * math.exp(e) for n, e in zip(TOKENS, noise)]
    fit = scaling.fit_power(TOKENS, costs)
    x, y = np.log(TOKENS), np.log(costs)
    design = np.stack([np.ones_like(x), x], axis=1)
    coef, rss, *_ = np.linalg.lstsq(design, y, rcond=None)
    cov = rss[0] / (len(x) - 2) * np.linalg.inv(design.T @ design)
    assert fit.slope == pytest.approx(coef[1], abs=1e-12)
    assert fit.intercept == pytest.approx(coef[0], abs=1e-10)
    assert fit.stderr == pytest.approx(math.sqrt(cov[1, 1]), rel=1e-9)
    assert fit.r2 == pytest.approx(1 - rss[0] / ((y - y.mean()) ** 2).sum(), rel=1e-12)
    assert abs(fit.slope - 2.0) < 3 * fit.stderr


def test_power_fit_with_two_points_has_no_standard_error():
    fit = scaling.fit_power([64, 256], [10.0, 40.0])
    assert fit.slope == pytest.approx(1.0, abs=1e-12)
    assert fit.stderr is None


@pytest.mark.parametrize("tokens, costs, message", [
    ([64, 64, 64], [1.0, 2.0, 3.0], "at least two different token counts"),
    ([64, 128], [1.0, 0.0], "positive tokens and costs"),
])
def test_power_fit_rejects_degenerate_data(tokens, costs, message):
    with pytest.raises(ValueError, match=message):
        scaling.fit_power(tokens, costs)


def test_local_slopes_between_neighbours_and_equal_token_counts_merge():
    # cost = N + N^2 / 1024: local exponent log(c1/c0)/log(2) rises from ~1 towards 2
    tokens = [256, 512, 512, 1024]
    costs = [256 + 64.0, 512 + 256.0, 512 + 256.0, 1024 + 1024.0]
    slopes = scaling.local_slopes(tokens, costs)
    assert [(s["from_tokens"], s["to_tokens"]) for s in slopes] == [(256, 512), (512, 1024)]
    assert slopes[0]["slope"] == pytest.approx(math.log2(768 / 320), abs=1e-12)
    assert slopes[1]["slope"] == pytest.approx(math.log2(2048 / 768), abs=1e-12)
    merged = scaling.merge_equal_tokens([512, 512], [2.0, 8.0])
    assert merged == [(512, pytest.approx(4.0))]


def test_poly_fit_recovers_all_three_non_negative_coefficients():
    fit = scaling.fit_poly_nonneg(TOKENS, [5.0 + 2.0 * n + 0.01 * n * n for n in TOKENS])
    assert (fit.c0, fit.c1, fit.c2) == (pytest.approx(5.0, rel=1e-8), pytest.approx(2.0, rel=1e-10),
                                        pytest.approx(0.01, rel=1e-10))
    assert fit.support == (0, 1, 2)
    assert fit.crossover_tokens() == pytest.approx(200.0, rel=1e-9)


def test_poly_fit_pins_absent_terms_to_exactly_zero():
    linear = scaling.fit_poly_nonneg(TOKENS, [2.0 * n for n in TOKENS])
    assert (linear.c0, linear.c2, linear.support) == (0.0, 0.0, (1,))
    assert linear.c1 == pytest.approx(2.0, rel=1e-12)
    assert linear.crossover_tokens() is None
    quad = scaling.fit_poly_nonneg(TOKENS, [3.0 * n + 0.5 * n * n for n in TOKENS])
    assert quad.c0 == 0.0
    assert (quad.c1, quad.c2) == (pytest.approx(3.0, rel=1e-8), pytest.approx(0.5, rel=1e-10))


def test_poly_fit_is_the_constrained_optimum_when_least_squares_goes_negative():
    # N^1.5 lies between the basis functions: unconstrained least squares gives c0 < 0.
    costs = [n ** 1.5 for n in TOKENS]
    fit = scaling.fit_poly_nonneg(TOKENS, costs)
    assert min(fit.c0, fit.c1, fit.c2) >= 0.0
    assert fit.c0 == 0.0 and fit.support == (1, 2)

    def rel_rss(c0, c1, c2):
        return sum(((c0 + c1 * n + c2 * n * n) / y - 1) ** 2 for n, y in zip(TOKENS, costs))

    best = rel_rss(fit.c0, fit.c1, fit.c2)
    # KKT: moving any coefficient into the feasible set does not improve the residual
    for dc in ([1e-3, 0, 0], [0, 1e-3 * fit.c1, 0], [0, -1e-3 * fit.c1, 0], [0, 0, 1e-3 * fit.c2],
               [0, 0, -1e-3 * fit.c2]):
        assert rel_rss(fit.c0 + dc[0], fit.c1 + dc[1], fit.c2 + dc[2]) >= best


@pytest.mark.parametrize("slope, word", [
    (1.0, "linear"), (1.07, "linear"), (1.93, "quadratic"), (2.1, "quadratic"), (1.5, "between linear and quadratic"),
    (0.5, "sub-linear"), (0.05, "roughly constant"), (-0.6, "decreasing"), (2.4, "super-quadratic"),
])
def test_exponent_words_follow_the_documented_bands(slope, word):
    assert scaling.describe_exponent(slope) == word


def test_verdict_names_the_large_n_tendency():
    tokens = TOKENS
    costs = [2048.0 * n + 8.0 * n * n for n in tokens]
    fit = scaling.fit_power(tokens, costs)
    tail = scaling.tail_slope(tokens, costs)
    # the tail is the OLS slope over 1024, 2048, 4096
    assert tail == pytest.approx(scaling.fit_power(tokens[-3:], costs[-3:]).slope, abs=1e-12)
    assert 1.85 < tail < 2.0
    text = scaling.verdict("flops", fit, tail)
    assert text == f"FLOPs grow as N^{fit.slope:.2f}: between linear and quadratic; tends to N^2 at large N"
    linear = scaling.fit_power(tokens, [float(n) for n in tokens])
    assert scaling.verdict("memory", linear, 1.0) == "peak memory grows as N^1.00: linear"
    # same band but a gap over 0.10: named with two decimals
    assert scaling.verdict("latency", linear, 1.25).endswith("; tends to N^1.25 at large N")
    # a gap under 0.10 that crosses a band edge is named too
    near = scaling.PowerFit(1.84, 0.01, 0.0, 0.999, 7)
    assert scaling.verdict("flops", near, 1.9) == \
        "FLOPs grow as N^1.84: between linear and quadratic; tends to N^2 at large N"
    assert scaling.tail_slope(tokens[:3], costs[:3]) is None


def test_verdict_names_a_drop_in_a_deterministic_metric():
    tokens = [64, 128, 256, 512]
    costs = [64.0, 128.0, 32.0, 64.0]  # a kernel switch between 128 and 256 tokens
    fit = scaling.fit_power(tokens, costs)
    local = scaling.local_slopes(tokens, costs)
    assert scaling.verdict("memory", fit, None, local).endswith("; drops from N=128 to N=256 (another code path)")
    assert "drops" not in scaling.verdict("latency", fit, None, local)  # latency noise is not a finding


@pytest.mark.parametrize("text, expected", [
    ("flops", ("flops",)), ("memory,flops", ("flops", "memory")), ("latency, flops,latency", ("flops", "latency")),
])
def test_metrics_parse_in_canonical_order(text, expected):
    assert scaling.parse_metrics(text) == expected


def test_unknown_metric_is_a_usage_error():
    with pytest.raises(UsageError, match="^unknown metric 'gflops': choose from flops, latency, memory$"):
        scaling.parse_metrics("flops,gflops")


def test_default_sweeps_span_enough_and_include_non_square_shapes():
    for sizes in (scaling.DEFAULT_BLOCK_SIZES, scaling.DEFAULT_MODEL_SIZES):
        tokens = [h * w for h, w in sizes]
        assert len(sizes) >= 6 and max(tokens) / min(tokens) >= 16
        assert any(h != w for h, w in sizes)
        assert tokens == sorted(tokens)
    assert all(h % 32 == 0 and w % 32 == 0 for h, w in scaling.DEFAULT_MODEL_SIZES)


def test_sweep_sizes_parse_square_and_rectangular():
    assert scaling.parse_sweep_sizes(["8,8x16", "16"], model=False) == [(8, 8), (8, 16), (16, 16)]
    assert scaling.parse_sweep_sizes(None, model=True) == list(scaling.DEFAULT_MODEL_SIZES)
    with pytest.raises(UsageError, match="at least two different token counts"):
        scaling.parse_sweep_sizes(["8x16,16x8"], model=False)
    with pytest.raises(UsageError, match="expected S or HxW"):
        scaling.parse_sweep_sizes(["16x8x8"], model=False)


# ------------------------------------------------------------------ measured physics


def _target(name: str, family, module, channels: int) -> scaling.ScaleTarget:
    return scaling.ScaleTarget(name, "block", f"{name}()", family, module.eval(), 1, channels, CPU, torch.float32)


def _flops_fit(spec: str, channels: int = 16, kwargs: dict | None = None, sizes=scaling.DEFAULT_BLOCK_SIZES):
    target = scaling.load_target(spec, channels, None, kwargs, CPU, torch.float32)
    result = scaling.sweep(target, sizes, ("flops",))
    assert not result.failed, [p.error for p in result.failed]
    return result, result.fits[0]


def test_plain_convolution_is_exactly_linear():
    result, fit = _flops_fit("Conv", channels=16)
    # Conv(16, 16) is a 1x1 convolution: 2 * 16 * 16 FLOPs per token
    assert [p.flops for p in result.points] == [2 * 16 * 16 * h * w for h, w in scaling.DEFAULT_BLOCK_SIZES]
    assert abs(fit.power.slope - 1.0) < 1e-9
    assert fit.power.r2 == 1.0
    assert all(abs(s["slope"] - 1.0) < 1e-9 for s in fit.local)
    assert fit.verdict == "FLOPs grow as N^1.00: linear"


class SoftmaxAttention(nn.Module):
    """Plain global self-attention on a feature map: the quadratic reference."""

    def __init__(self, c: int):
        super().__init__()
        self.qkv = nn.Conv2d(c, 3 * c, 1, bias=False)
        self.proj = nn.Conv2d(c, c, 1, bias=False)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).flatten(2).chunk(3, dim=1)
        attn = (q.transpose(1, 2) @ k).softmax(-1)
        return self.proj((v @ attn.transpose(1, 2)).view(b, c, h, w))


def test_softmax_attention_flops_are_exactly_8c2n_plus_4cn2_and_tend_to_quadratic():
    c = 16
    model = SoftmaxAttention(c).eval()
    result = scaling.sweep(_target("SoftmaxAttention", "attention", model, c), scaling.DEFAULT_BLOCK_SIZES, ("flops",))
    assert [p.flops for p in result.points] == [8 * c * c * n + 4 * c * n * n for n in TOKENS]
    fit = result.fits[0]
    assert fit.local[-1]["slope"] > 1.8
    assert (fit.poly.c0, fit.poly.c1, fit.poly.c2) == (0.0, pytest.approx(8 * c * c, rel=1e-8),
                                                      pytest.approx(4 * c, rel=1e-10))
    assert fit.poly.crossover_tokens() == pytest.approx(2 * c, rel=1e-8)
    assert fit.verdict == f"FLOPs grow as N^{fit.power.slope:.2f}: quadratic"
    assert 1.85 < fit.power.slope < 1.95


def test_memory_sweep_of_a_conv_chain_counts_activations_exactly():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)).eval()
    sizes = scaling.DEFAULT_BLOCK_SIZES[:4]
    result = scaling.sweep(_target("chain", None, model, 8), sizes, ("memory",))
    # conv1 output and relu output are alive together; the input and weights are not counted
    assert [p.memory_bytes for p in result.points] == [2 * 8 * h * w * 4 for h, w in sizes]
    assert abs(result.fits[0].power.slope - 1.0) < 1e-9


def test_a_block_failing_at_some_sizes_keeps_the_fit_of_the_others():
    class SquareOnly(nn.Module):
        def forward(self, x):
            b, c, h, w = x.shape
            n = int(math.isqrt(h * w))
            return x.flatten(2).view(b, c, n, n) * 2

    result = scaling.sweep(_target("SquareOnly", None, SquareOnly(), 4), scaling.DEFAULT_BLOCK_SIZES[:5], ("memory",))
    assert [(p.height, p.width) for p in result.failed] == [(8, 16), (16, 32)]
    assert result.failed[0].error.startswith("RuntimeError: shape '[1, 4, 11, 11]' is invalid")
    assert result.fits[0].power.n == 3 and abs(result.fits[0].power.slope - 1.0) < 1e-9


# ------------------------------------------------------------------ seed blocks (seeds / mamba branches)

LINEAR_SEEDS = ["MLLAttention", "FocusedLinearAttention", "SS2D"]
MQA_NAMES = ["MobileMQA", "MultiQueryAttentionLayerWithDownSampling", "MMQA"]


def _registered(name: str) -> bool:
    from blocks.registry import find_block

    return find_block(name) is not None


@pytest.mark.parametrize("name", LINEAR_SEEDS)
def test_seed_flops_linear(name):
    """The articles' "linear complexity" claim, measured: exponent 1.00 +/- 0.05."""
    if not _registered(name):
        pytest.skip(f"{name} is not registered in this build")
    result, fit = _flops_fit(name, channels=32)
    assert abs(fit.power.slope - 1.0) <= 0.05, fit.verdict
    assert fit.verdict.startswith("FLOPs grow as N^1.0") or fit.verdict.startswith("FLOPs grow as N^0.9")


def test_mobile_mqa_tends_to_quadratic():
    """Mobile MQA without K/V down-sampling attends every query to every key: N^2 at large N."""
    name = next((n for n in MQA_NAMES if _registered(n)), None)
    if name is None:
        pytest.skip("Mobile MQA is not registered in this build")
    from blocks.registry import get_block

    params = inspect.signature(get_block(name).cls.__init__).parameters
    kv = [p for p in params if "kv" in p.lower() and "stride" in p.lower()]
    assert kv, f"{name} has no K/V stride parameter among {list(params)}"
    # the default construction must be the one without K/V down-sampling
    target = scaling.load_target(name, 32, None, None, CPU, torch.float32)
    assert getattr(target.module, kv[0]) == 1, f"{target.call} down-samples K/V by default"
    # up to 32x64 (N = 2048) keeps the test fast: the N^2 term already dominates there
    _, fit = _flops_fit(name, channels=16, sizes=scaling.DEFAULT_BLOCK_SIZES[:-1])
    assert fit.local[-1]["slope"] > 1.8, fit.verdict
    assert fit.poly is not None and fit.poly.c2 > 0


def test_terminal_chart_places_points_and_fit_exactly():
    from yoloblocks_cli.reporting.termchart import Series, loglog_chart

    lines = loglog_chart([Series("lin", [(10, 10), (100, 100), (1000, 1000)], 1.0, 0.0)],
                         width=7, height=4, ascii=True)
    # decades: 10 at the bottom-left, 1k at the top-right, 100 in the middle (rounded half to even)
    assert lines[:4] == [
        "1k |     .o",
        "   |   o.  ",
        "   |  .    ",
        "10 |o.     ",
    ]
    assert lines[4:] == ["   +-------", "    10   1k", "    N (log)", "    o lin  slope 1.00"]
