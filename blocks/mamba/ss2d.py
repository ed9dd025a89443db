"""SS2D: VMamba's 2-D selective-scan layer as Mamba-YOLO builds it ("v2" forward).

Same parameter tensors and attribute names as the official ``SS2D`` (so its checkpoints
load): ``in_proj`` (1x1, no bias) -> split x / z -> depthwise ``conv2d`` -> GELU -> cross
scan in 4 directions -> per-direction ``x_proj_weight`` (dt, B, C) and ``dt_projs_weight``
-> selective scan (``yoloblocks::selective_scan``) -> cross merge -> ``out_norm`` ->
gate by GELU(z) -> ``out_proj`` (1x1, no bias).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from blocks.flop_formulas import register_module_macs
from blocks.mamba.cross_scan import DIRECTIONS, cross_merge, cross_scan
from blocks.mamba.scan import selective_scan, selective_scan_flops
from blocks.registry import register_block

SOURCE = "Mamba-YOLO (arXiv 2406.05835, github HZAI-ZJNU/Mamba-YOLO)"


@register_block("preserve", family="ssm", source=SOURCE, default_args=lambda c1: ())
class SS2D(nn.Module):
    """2-D selective scan (4 directions) with gating; output width equals input width."""

    def __init__(self, d_model: int = 96, d_state: int = 16, ssm_ratio: float = 2.0,
                 dt_rank: int | str = "auto", d_conv: int = 3, conv_bias: bool = True,
                 dropout: float = 0.0, bias: bool = False, **_ignored) -> None:
        super().__init__()
        d_expand = int(ssm_ratio * d_model)
        d_inner = d_expand  # the official low-rank variant (ssm_rank_ratio < ssm_ratio) is unused
        self.d_inner = d_inner
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.d_state = math.ceil(d_model / 6) if d_state == "auto" else int(d_state)
        self.d_conv = d_conv
        self.K = DIRECTIONS
        self.out_norm = nn.LayerNorm(d_inner)
        self.in_proj = nn.Conv2d(d_model, d_expand * 2, kernel_size=1, bias=bias)
        self.act = nn.GELU()
        if d_conv > 1:
            self.conv2d = nn.Conv2d(d_expand, d_expand, kernel_size=d_conv, padding=(d_conv - 1) // 2,
                                    groups=d_expand, bias=conv_bias)
        bound = d_inner ** -0.5  # nn.Linear's default init, as the official stacked Linears get
        width = self.dt_rank + 2 * self.d_state
        self.x_proj_weight = nn.Parameter(torch.empty(self.K, width, d_inner).uniform_(-bound, bound))
        self.out_proj = nn.Conv2d(d_expand, d_model, kernel_size=1, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # the official "simple init": D = 1, A = -exp(0) = -1, random dt projections
        self.Ds = nn.Parameter(torch.ones(self.K * d_inner))
        self.A_logs = nn.Parameter(torch.zeros(self.K * d_inner, self.d_state))
        self.dt_projs_weight = nn.Parameter(torch.randn(self.K, d_inner, self.dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.randn(self.K, d_inner))

    def scan_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(u, delta, A, B, C, D, delta_bias) of the selective scan for features x (b, d, H, W)."""
        bsz, _, height, width = x.shape
        length = height * width
        xs = cross_scan(x)  # (b, K, d, L)
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        A = -torch.exp(self.A_logs.float())
        return (xs.reshape(bsz, -1, length), dts.reshape(bsz, -1, length), A, Bs.contiguous(),
                Cs.contiguous(), self.Ds.float(), self.dt_projs_bias.reshape(-1).float())

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        """Features (b, d, H, W) -> normalised scan output (b, H, W, d)."""
        bsz, d, height, width = x.shape
        u, delta, A, B, C, D, delta_bias = self.scan_inputs(x)
        ys = selective_scan(u, delta, A, B, C, D, delta_bias=delta_bias, delta_softplus=True)
        y = cross_merge(ys.view(bsz, self.K, d, -1), height, width)  # (b, d, L)
        y = self.out_norm(y.transpose(1, 2)).view(bsz, height, width, d)
        return y.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(x).chunk(2, dim=1)
        z = self.act(z)
        if self.d_conv > 1:
            x = self.conv2d(x)
        x = self.act(x)
        y = self.forward_core(x).permute(0, 3, 1, 2) * z
        return self.dropout(self.out_proj(y))


@register_module_macs(SS2D)
def ss2d_macs(module: SS2D, inputs, output) -> int:
    """MACs of SS2D's own arithmetic: the two projections and the scan.

    Child modules (in_proj, conv2d, out_proj, out_norm) keep their own thop rules; this
    adds what thop cannot see inside ``forward_core``: the einsums that make dt, B, C
    (b*K*L*d*(R+2N) and b*K*L*R*d) and the selective scan (its FLOP formula / 2).
    """
    x = inputs[0]
    bsz, _, height, width = x.shape
    length = height * width
    d, k, r, n = module.d_inner, module.K, module.dt_rank, module.d_state
    proj = bsz * k * length * d * (r + 2 * n) + bsz * k * length * r * d
    scan = selective_scan_flops((bsz, k * d, length), None, (k * d, n), None, None, (k * d,))
    return int(proj + scan // 2)
