"""Mamba-YOLO's blocks: SimpleStem, VisionClueMerge, LSBlock, RGBlock, XSSBlock, VSSBlock.

Structure, parameter tensors and attribute names follow the official repository
(HZAI-ZJNU/Mamba-YOLO, ``ultralytics/nn/modules/mamba_yolo.py``) so that the shipped
``mamba-yolo.yaml`` reproduces its parameter counts and its checkpoints load. YAML rules,
as its ``parse_model`` applies them: SimpleStem, VisionClueMerge and VSSBlock take
``(c1, c2, ...)`` with width scaling and are stacked ``n`` times; XSSBlock takes
``(c1, c2, n, ...)`` (its ``n`` SS2D layers are inside the block).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from blocks.conv import autopad
from blocks.mamba.ss2d import SOURCE, SS2D
from blocks.registry import register_block


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (b, c, H, W) map (wrapped as ``.norm``, like the official)."""

    def __init__(self, normalized_shape: int, eps: float = 1e-6, elementwise_affine: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(normalized_shape, eps, elementwise_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth per sample; the identity at rate 0 or in eval mode."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


@register_block("c1_c2", family="standard", source=SOURCE, default_args=lambda c1: (64,))
class SimpleStem(nn.Module):
    """Two stride-2 3x3 convs (hidden width c2/2): a /4 stem instead of a 4x4 patchify."""

    def __init__(self, inp: int, embed_dim: int, ks: int = 3) -> None:
        super().__init__()
        self.hidden_dims = embed_dim // 2
        pad = autopad(ks, None, 1)
        self.conv = nn.Sequential(
            nn.Conv2d(inp, self.hidden_dims, ks, 2, pad, bias=False),
            nn.BatchNorm2d(self.hidden_dims),
            nn.GELU(),
            nn.Conv2d(self.hidden_dims, embed_dim, ks, 2, pad, bias=False),
            nn.BatchNorm2d(embed_dim),
            nn.SiLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@register_block("c1_c2", family="standard", source=SOURCE, default_args=lambda c1: (2 * c1,))
class VisionClueMerge(nn.Module):
    """/2 downsampling: space-to-depth (4 phases) then a 1x1 conv, keeping every pixel.

    Odd H or W is zero-padded at the bottom/right to even first (the official block fails
    with a ``torch.cat`` size error there), so the output is ceil(H/2) x ceil(W/2), like a
    stride-2 conv with padding.
    """

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.hidden = int(dim * 4)
        self.pw_linear = nn.Sequential(
            nn.Conv2d(self.hidden, out_dim, kernel_size=1, stride=1, padding=0),
            nn.BatchNorm2d(out_dim),
            nn.SiLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % 2 or width % 2:
            x = F.pad(x, (0, width % 2, 0, height % 2))
        y = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], dim=1)
        return self.pw_linear(y)


@register_block("preserve", family="standard", source=SOURCE, default_args=lambda c1: (c1,))
class LSBlock(nn.Module):
    """Local-spatial block: depthwise 3x3, BN, 1x1, GELU, 1x1, plus the input."""

    def __init__(self, in_features: int, hidden_features: int | None = None, act_layer=nn.GELU,
                 drop: float = 0.0) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Conv2d(in_features, hidden_features, kernel_size=3, padding=1, groups=hidden_features)
        self.norm = nn.BatchNorm2d(hidden_features)
        self.fc2 = nn.Conv2d(hidden_features, hidden_features, kernel_size=1)
        self.act = act_layer()
        self.fc3 = nn.Conv2d(hidden_features, in_features, kernel_size=1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc3(self.act(self.fc2(self.norm(self.fc1(x)))))
        return x + self.drop(y)


@register_block("preserve", family="mlp", source=SOURCE, default_args=lambda c1: (4 * c1,))
class RGBlock(nn.Module):
    """Residual-gated MLP: 1x1 to 2 branches, GELU(dwconv(x) + x) * v, 1x1 (no outer residual)."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer=nn.GELU, drop: float = 0.0, channels_first: bool = False) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = int(2 * (hidden_features or in_features) / 3)
        self.fc1 = nn.Conv2d(in_features, hidden_features * 2, kernel_size=1)
        self.dwconv = nn.Conv2d(hidden_features, hidden_features, kernel_size=3, padding=1, groups=hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden_features, out_features, kernel_size=1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, v = self.fc1(x).chunk(2, dim=1)
        x = self.drop(self.act(self.dwconv(x) + x) * v)
        return self.drop(self.fc2(x))


def _ss2d(hidden: int, d_state, ssm_ratio, dt_rank, d_conv, conv_bias, drop) -> SS2D:
    return SS2D(d_model=hidden, d_state=d_state, ssm_ratio=ssm_ratio, dt_rank=dt_rank, d_conv=d_conv,
                conv_bias=conv_bias, dropout=drop)


@register_block("c1_c2_n", family="ssm", source=SOURCE, default_args=lambda c1: (c1, 1))
class XSSBlock(nn.Module):
    """Mamba-YOLO neck block (ODSSBlock): 1x1 in (if widths differ), LSBlock, n SS2D, RGBlock."""

    def __init__(self, in_channels: int, hidden_dim: int, n: int = 1, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, ssm_d_state: int = 16, ssm_ratio: float = 2.0,
                 ssm_dt_rank: int | str = "auto", ssm_conv: int = 3, ssm_conv_bias: bool = True,
                 ssm_drop_rate: float = 0.0, mlp_drop_rate: float = 0.0, **_ignored) -> None:
        super().__init__()
        self.in_proj = nn.Sequential(
            nn.Conv2d(in_channels, hidden_dim, kernel_size=1, bias=False),
            nn.BatchNorm2d(hidden_dim),
            nn.SiLU(),
        ) if in_channels != hidden_dim else nn.Identity()
        self.hidden_dim = hidden_dim
        self.norm = LayerNorm2d(hidden_dim, eps=1e-6)
        self.ss2d = nn.Sequential(*(
            _ss2d(hidden_dim, ssm_d_state, ssm_ratio, ssm_dt_rank, ssm_conv, ssm_conv_bias, ssm_drop_rate)
            for _ in range(n)))
        self.drop_path = DropPath(drop_path)
        self.lsblock = LSBlock(hidden_dim, hidden_dim)
        self.mlp_branch = mlp_ratio > 0
        if self.mlp_branch:
            self.norm2 = LayerNorm2d(hidden_dim, eps=1e-6)
            self.mlp = RGBlock(hidden_dim, int(hidden_dim * mlp_ratio), drop=mlp_drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_proj(x)
        x = x + self.drop_path(self.ss2d(self.norm(self.lsblock(x))))
        if self.mlp_branch:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


@register_block("c1_c2", family="ssm", source=SOURCE, default_args=lambda c1: (c1,))
class VSSBlock(nn.Module):
    """Mamba-YOLO backbone block: 1x1 conv+BN+SiLU, LSBlock, SS2D, RGBlock (two residuals)."""

    def __init__(self, in_channels: int, hidden_dim: int, drop_path: float = 0.0, ssm_d_state: int = 16,
                 ssm_ratio: float = 2.0, ssm_dt_rank: int | str = "auto", ssm_conv: int = 3,
                 ssm_conv_bias: bool = True, ssm_drop_rate: float = 0.0, mlp_ratio: float = 4.0,
                 mlp_drop_rate: float = 0.0, **_ignored) -> None:
        super().__init__()
        self.ssm_branch = ssm_ratio > 0
        self.mlp_branch = mlp_ratio > 0
        self.proj_conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden_dim, kernel_size=1, bias=True),
            nn.BatchNorm2d(hidden_dim),
            nn.SiLU(),
        )
        if self.ssm_branch:
            self.norm = LayerNorm2d(hidden_dim, eps=1e-6)
            self.op = _ss2d(hidden_dim, ssm_d_state, ssm_ratio, ssm_dt_rank, ssm_conv, ssm_conv_bias,
                            ssm_drop_rate)
        self.drop_path = DropPath(drop_path)
        self.lsblock = LSBlock(hidden_dim, hidden_dim)
        if self.mlp_branch:
            self.norm2 = LayerNorm2d(hidden_dim, eps=1e-6)
            self.mlp = RGBlock(hidden_dim, int(hidden_dim * mlp_ratio), drop=mlp_drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj_conv(x)
        if self.ssm_branch:
            x = x + self.drop_path(self.op(self.norm(self.lsblock(x))))
        if self.mlp_branch:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x
