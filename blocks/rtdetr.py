"""RT-DETR in plain PyTorch: HGNetV2 stem and blocks, ResNet layers, AIFI, RepC3 and the decoder.

The decoder's cross-attention is multi-scale deformable attention written with
``F.grid_sample`` (no CUDA extension), so RT-DETR builds, counts and traces on a CPU. Module
layout follows ultralytics' (``nn/modules/{block,transformer,head}.py``) so that parameters and
the summary line's leaf-module count are equal; each YAML rule is the block's Convention.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from blocks.conv import Conv
from blocks.conventions import Convention, LayerContext, Resolved, register_convention
from blocks.gelan import RepConvN
from blocks.ghost import DWConv
from blocks.registry import register_block

_SOURCE = "ultralytics nn/modules (RT-DETR)"


# --- YAML rules ------------------------------------------------------------------------------


def _stem(ctx: LayerContext) -> Resolved:
    cm, c2 = ctx.args[0], ctx.args[1]
    return Resolved([ctx.c1, cm, c2, *ctx.args[2:]], c2)


def _hgblock(ctx: LayerContext) -> Resolved:
    cm, c2 = ctx.args[0], ctx.args[1]
    args = [ctx.c1, cm, c2, *ctx.args[2:]]
    args.insert(4, ctx.n)
    return Resolved(args, c2)


def _resnet_layer(ctx: LayerContext) -> Resolved:
    c2 = ctx.args[1] if ctx.args[3] else ctx.args[1] * 4
    return Resolved(list(ctx.args), c2, repeats=ctx.n)


def _insert_widths(ctx: LayerContext) -> Resolved:
    return Resolved([ctx.args[0], list(ctx.ch_in), *ctx.args[1:]], None)


HGSTEM_RULE = register_convention(Convention(
    "c1_cm_c2", "args [cm, c2, ...] become (c1, cm, c2, ...), widths as written (HGNetV2)", _stem,
    lambda c1, rest: [c1, *(rest if rest is not None else [32, 48])],
))
HGBLOCK_RULE = register_convention(Convention(
    "c1_cm_c2_n", "args [cm, c2, k, ...] become (c1, cm, c2, k, n, ...), widths as written (HGNetV2)", _hgblock,
    lambda c1, rest: [c1, *(rest if rest is not None else [c1, c1, 3])],
))
RESNET_RULE = register_convention(Convention(
    "as_written_resnet", "args [c1, c2, s, is_first, n, e] as written; output width c2 if first else 4*c2",
    _resnet_layer, lambda c1, rest: list(rest if rest is not None else [c1, c1 // 4, 1, False, 1]),
))
DECODER_RULE = register_convention(Convention(
    "nc_widths", "args [nc, ...] become (nc, [input widths], ...)", _insert_widths,
    lambda c1, rest: [(rest or [80])[0], [c1], *(rest or [80])[1:]],
))


# --- backbone blocks ---------------------------------------------------------------------------


@register_block(HGSTEM_RULE, source=_SOURCE)
class HGStem(nn.Module):
    """HGNetV2 stem: stride-4 with a pooled and a convolved branch concatenated (ReLU activations)."""

    def __init__(self, c1: int, cm: int, c2: int):
        super().__init__()
        self.stem1 = Conv(c1, cm, 3, 2, act=nn.ReLU())
        self.stem2a = Conv(cm, cm // 2, 2, 1, 0, act=nn.ReLU())
        self.stem2b = Conv(cm // 2, cm, 2, 1, 0, act=nn.ReLU())
        self.stem3 = Conv(cm * 2, cm, 3, 2, act=nn.ReLU())
        self.stem4 = Conv(cm, c2, 1, 1, act=nn.ReLU())
        self.pool = nn.MaxPool2d(kernel_size=2, stride=1, padding=0, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(self.stem1(x), [0, 1, 0, 1])
        x2 = self.stem2b(F.pad(self.stem2a(x), [0, 1, 0, 1]))
        return self.stem4(self.stem3(torch.cat([self.pool(x), x2], 1)))


class LightConv(nn.Module):
    """1x1 Conv (no activation) then a k x k depth-wise Conv."""

    def __init__(self, c1: int, c2: int, k: int = 1, act: nn.Module | None = None):
        super().__init__()
        self.conv1 = Conv(c1, c2, 1, act=False)
        self.conv2 = DWConv(c2, c2, k, act=nn.ReLU() if act is None else act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


@register_block(HGBLOCK_RULE, source=_SOURCE)
class HGBlock(nn.Module):
    """n chained convolutions whose outputs are all concatenated, squeezed to c2/2 and excited to c2."""

    def __init__(self, c1: int, cm: int, c2: int, k: int = 3, n: int = 6, lightconv: bool = False,
                 shortcut: bool = False, act: nn.Module | None = None):
        super().__init__()
        act = nn.ReLU() if act is None else act  # one instance for the whole block, as ultralytics
        block = LightConv if lightconv else Conv
        self.m = nn.ModuleList(block(c1 if i == 0 else cm, cm, k=k, act=act) for i in range(n))
        self.sc = Conv(c1 + n * cm, c2 // 2, 1, 1, act=act)
        self.ec = Conv(c2 // 2, c2, 1, 1, act=act)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [x]
        y.extend(m(y[-1]) for m in self.m)
        y = self.ec(self.sc(torch.cat(y, 1)))
        return y + x if self.add else y


class ResNetBlock(nn.Module):
    """ResNet bottleneck: 1x1, 3x3 (stride s), 1x1 to e*c2, projected shortcut when shapes differ, ReLU."""

    def __init__(self, c1: int, c2: int, s: int = 1, e: int = 4):
        super().__init__()
        c3 = e * c2
        self.cv1 = Conv(c1, c2, k=1, s=1, act=True)
        self.cv2 = Conv(c2, c2, k=3, s=s, p=1, act=True)
        self.cv3 = Conv(c2, c3, k=1, act=False)
        self.shortcut = nn.Sequential(Conv(c1, c3, k=1, s=s, act=False)) if s != 1 or c1 != c3 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.cv3(self.cv2(self.cv1(x))) + self.shortcut(x))


@register_block(RESNET_RULE, source=_SOURCE)
class ResNetLayer(nn.Module):
    """A ResNet stage of n bottlenecks, or (is_first) the 7x7 stride-2 stem with a max-pool."""

    def __init__(self, c1: int, c2: int, s: int = 1, is_first: bool = False, n: int = 1, e: int = 4):
        super().__init__()
        self.is_first = is_first
        if is_first:
            self.layer = nn.Sequential(Conv(c1, c2, k=7, s=2, p=3, act=True),
                                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        else:
            blocks = [ResNetBlock(c1, c2, s, e=e)]
            blocks.extend(ResNetBlock(e * c2, c2, 1, e=e) for _ in range(n - 1))
            self.layer = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


@register_block("c1_c2_n", source=_SOURCE)
class RepC3(nn.Module):
    """Two 1x1 branches, n RepConvs on one, summed, then a 1x1 Conv when the widths differ."""

    def __init__(self, c1: int, c2: int, n: int = 3, e: float = 1.0):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.m = nn.Sequential(*(RepConvN(c_, c_) for _ in range(n)))
        self.cv3 = Conv(c_, c2, 1, 1) if c_ != c2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(self.m(self.cv1(x)) + self.cv2(x))


# --- transformer encoder (AIFI) -----------------------------------------------------------------


def sincos_2d(w: int, h: int, dim: int, like: torch.Tensor, temperature: float = 10000.0) -> torch.Tensor:
    """(1, h*w, dim) sine-cosine position table, rows first (h then w), fp32."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos position embedding needs a width divisible by 4, got {dim}")
    gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=like.device),
                            torch.arange(w, dtype=torch.float32, device=like.device), indexing="ij")
    q = dim // 4
    omega = 1.0 / temperature ** (torch.arange(q, dtype=torch.float32, device=like.device) / q)
    ow, oh = gx.flatten()[:, None] * omega[None], gy.flatten()[:, None] * omega[None]
    return torch.cat([oh.sin(), oh.cos(), ow.sin(), ow.cos()], 1)[None]


@register_block("preserve", family="attention", source=_SOURCE, default_args=lambda c1: (4 * c1, 8))
class AIFI(nn.Module):
    """Attention-based intra-scale feature interaction: one post-norm transformer encoder layer over H*W
    tokens with a 2-D sin-cos position embedding (a full attention: quadratic in H*W)."""

    def __init__(self, c1: int, cm: int = 2048, num_heads: int = 8, dropout: float = 0.0,
                 act: nn.Module | None = None, normalize_before: bool = False):
        super().__init__()
        self.ma = nn.MultiheadAttention(c1, num_heads, dropout=dropout, batch_first=True)
        self.fc1 = nn.Linear(c1, cm)
        self.fc2 = nn.Linear(cm, c1)
        self.norm1 = nn.LayerNorm(c1)
        self.norm2 = nn.LayerNorm(c1)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.act = nn.GELU() if act is None else act
        self.normalize_before = normalize_before

    def _encode(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if self.normalize_before:
            s = self.norm1(src)
            src = src + self.dropout1(self.ma(s + pos, s + pos, value=s)[0])
            return src + self.dropout2(self.fc2(self.dropout(self.act(self.fc1(self.norm2(src))))))
        src = self.norm1(src + self.dropout1(self.ma(src + pos, src + pos, value=src)[0]))
        return self.norm2(src + self.dropout2(self.fc2(self.dropout(self.act(self.fc1(src))))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w = x.shape[1:]
        pos = sincos_2d(w, h, c, x).to(x.dtype)
        y = self._encode(x.flatten(2).permute(0, 2, 1), pos)
        return y.permute(0, 2, 1).reshape(-1, c, h, w).contiguous()


# --- decoder -----------------------------------------------------------------------------------


class MLP(nn.Module):
    """num_layers Linear layers with ReLU between them."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim, *h], [*h, output_dim]))
        self.act = nn.ReLU()
        self.out_norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = self.act(layer(x)) if i < self.num_layers - 1 else layer(x)
        return self.out_norm(x)


def deformable_sample(value: torch.Tensor, shapes: list[tuple[int, int]], locations: torch.Tensor,
                      weights: torch.Tensor) -> torch.Tensor:
    """Multi-scale deformable attention with ``grid_sample``.

    value (B, S, heads, d), locations (B, Q, heads, levels*points, 2) in [0, 1], weights
    (B, Q, heads, levels*points) -> (B, Q, heads*d).
    """
    b, _, heads, d = value.shape
    _, q, _, total, _ = locations.shape
    points = total // len(shapes)
    per_level = value.permute(0, 2, 3, 1).flatten(0, 1).split([h * w for h, w in shapes], dim=-1)
    grids = (2 * locations - 1).permute(0, 2, 1, 3, 4).flatten(0, 1).split(points, dim=-2)
    sampled = [F.grid_sample(per_level[i].reshape(b * heads, d, h, w), grids[i], mode="bilinear",
                             padding_mode="zeros", align_corners=False) for i, (h, w) in enumerate(shapes)]
    w_ = weights.permute(0, 2, 1, 3).reshape(b * heads, 1, q, total)
    out = (torch.cat(sampled, -1) * w_).sum(-1).view(b, heads * d, q)
    return out.transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Each query samples n_points offsets per head and level around its reference box; weights by softmax."""

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        with torch.no_grad():  # Deformable-DETR's start: offsets on a circle, growing with the point index
            nn.init.zeros_(self.sampling_offsets.weight)
            theta = torch.arange(n_heads, dtype=torch.float32) * (2.0 * math.pi / n_heads)
            grid = torch.stack([theta.cos(), theta.sin()], -1)
            grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(n_heads, 1, 1, 2).repeat(1, n_levels, n_points, 1)
            grid *= torch.arange(1, n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
            self.sampling_offsets.bias.copy_(grid.view(-1))
            nn.init.zeros_(self.attention_weights.weight)
            nn.init.zeros_(self.attention_weights.bias)

    def forward(self, query: torch.Tensor, refer_bbox: torch.Tensor, value: torch.Tensor,
                shapes: list[tuple[int, int]]) -> torch.Tensor:
        b, q = query.shape[:2]
        total = self.n_levels * self.n_points
        v = self.value_proj(value).view(b, value.shape[1], self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(b, q, self.n_heads, total, 2)
        weights = self.attention_weights(query).view(b, q, self.n_heads, total).softmax(-1)
        locations = refer_bbox[:, :, None, :, :2] + offsets / self.n_points * refer_bbox[:, :, None, :, 2:] * 0.5
        return self.output_proj(deformable_sample(v, shapes, locations, weights))


class DeformableDecoderLayer(nn.Module):
    """Self-attention over queries, deformable cross-attention into the image features, feed-forward."""

    def __init__(self, d_model: int = 256, n_heads: int = 8, d_ffn: int = 1024, dropout: float = 0.0,
                 act: nn.Module | None = None, n_levels: int = 4, n_points: int = 4):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.act = nn.ReLU() if act is None else act
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, embed: torch.Tensor, refer_bbox: torch.Tensor, feats: torch.Tensor,
                shapes: list[tuple[int, int]], query_pos: torch.Tensor) -> torch.Tensor:
        q = (embed + query_pos).transpose(0, 1)
        tgt = self.self_attn(q, q, embed.transpose(0, 1))[0].transpose(0, 1)
        embed = self.norm1(embed + self.dropout1(tgt))
        tgt = self.cross_attn(embed + query_pos, refer_bbox.unsqueeze(2), feats, shapes)
        embed = self.norm2(embed + self.dropout2(tgt))
        return self.norm3(embed + self.dropout4(self.linear2(self.dropout3(self.act(self.linear1(embed))))))


class DeformableDecoder(nn.Module):
    """ndl decoder layers refining the reference boxes; inference reads the eval_idx layer's prediction."""

    def __init__(self, hidden_dim: int, layer: nn.Module, num_layers: int, eval_idx: int = -1):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.eval_idx = eval_idx if eval_idx >= 0 else num_layers + eval_idx

    def forward(self, embed: torch.Tensor, refer_bbox: torch.Tensor, feats: torch.Tensor,
                shapes: list[tuple[int, int]], bbox_head: nn.ModuleList, score_head: nn.ModuleList,
                pos_mlp: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, scores = [], []
        refer = refer_bbox.sigmoid()
        for i, layer in enumerate(self.layers):
            embed = layer(embed, refer, feats, shapes, pos_mlp(refer))
            refined = torch.sigmoid(bbox_head[i](embed) + _inverse_sigmoid(refer))
            if self.training or i == self.eval_idx:
                boxes.append(refined)
                scores.append(score_head[i](embed))
                if not self.training:
                    break
            refer = refined.detach() if self.training else refined
        return torch.stack(boxes), torch.stack(scores)


def _inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


@register_block(DECODER_RULE, family="head", source=_SOURCE)
class RTDETRDecoder(nn.Module):
    """RT-DETR head: project levels to hd, pick nq encoder tokens as queries, refine them through ndl
    deformable decoder layers. Eval returns (B, nq, 6): cx, cy, w, h (normalised), score, class.

    The denoising embedding (``denoising_class_embed``) is counted but only used in training with labels.
    """

    outside_forward = {"denoising_class_embed": "denoising queries built from ground-truth labels in training"}

    def __init__(self, nc: int = 80, ch: list[int] | tuple = (512, 1024, 2048), hd: int = 256, nq: int = 300,
                 ndp: int = 4, nh: int = 8, ndl: int = 6, d_ffn: int = 1024, dropout: float = 0.0,
                 act: nn.Module | None = None, eval_idx: int = -1, nd: int = 100, label_noise_ratio: float = 0.5,
                 box_noise_scale: float = 1.0, learnt_init_query: bool = False):
        super().__init__()
        self.hidden_dim, self.nhead, self.nl, self.nc = hd, nh, len(ch), nc
        self.num_queries, self.num_decoder_layers = nq, ndl
        self.input_proj = nn.ModuleList(nn.Sequential(nn.Conv2d(x, hd, 1, bias=False), nn.BatchNorm2d(hd)) for x in ch)
        layer = DeformableDecoderLayer(hd, nh, d_ffn, dropout, nn.ReLU() if act is None else act, self.nl, ndp)
        self.decoder = DeformableDecoder(hd, layer, ndl, eval_idx)
        self.denoising_class_embed = nn.Embedding(nc, hd)
        self.num_denoising, self.label_noise_ratio, self.box_noise_scale = nd, label_noise_ratio, box_noise_scale
        self.learnt_init_query = learnt_init_query
        if learnt_init_query:
            self.tgt_embed = nn.Embedding(nq, hd)
        self.query_pos_head = MLP(4, 2 * hd, hd, num_layers=2)
        self.enc_output = nn.Sequential(nn.Linear(hd, hd), nn.LayerNorm(hd))
        self.enc_score_head = nn.Linear(hd, nc)
        self.enc_bbox_head = MLP(hd, hd, 4, num_layers=3)
        self.dec_score_head = nn.ModuleList(nn.Linear(hd, nc) for _ in range(ndl))
        self.dec_bbox_head = nn.ModuleList(MLP(hd, hd, 4, num_layers=3) for _ in range(ndl))

    @staticmethod
    def _anchors(shapes: list[tuple[int, int]], like: torch.Tensor, grid_size: float = 0.05,
                 eps: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
        out = []
        for i, (h, w) in enumerate(shapes):
            gy, gx = torch.meshgrid(torch.arange(h).type_as(like), torch.arange(w).type_as(like), indexing="ij")
            xy = torch.stack([(gx + 0.5) / w, (gy + 0.5) / h], -1)[None]
            out.append(torch.cat([xy, torch.full_like(xy, grid_size * 2.0 ** i)], -1).view(-1, h * w, 4))
        anchors = torch.cat(out, 1)
        valid = ((anchors > eps) & (anchors < 1 - eps)).all(-1, keepdim=True)
        return torch.log(anchors / (1 - anchors)).masked_fill(~valid, float("inf")), valid

    def forward(self, x: list[torch.Tensor]):
        projected = [self.input_proj[i](f) for i, f in enumerate(x)]
        shapes = [tuple(f.shape[2:]) for f in projected]
        feats = torch.cat([f.flatten(2).permute(0, 2, 1) for f in projected], 1)
        b = feats.shape[0]
        anchors, valid = self._anchors(shapes, feats)
        features = self.enc_output(valid * feats)
        enc_scores_all = self.enc_score_head(features)
        k = min(self.num_queries, enc_scores_all.shape[1])
        topk = enc_scores_all.max(-1).values.topk(k, dim=1).indices.view(-1)
        batch = torch.arange(b, dtype=topk.dtype, device=topk.device).unsqueeze(-1).repeat(1, k).view(-1)
        top_features = features[batch, topk].view(b, k, -1)
        refer = self.enc_bbox_head(top_features) + anchors[:, topk].view(b, k, -1)
        enc_bboxes, enc_scores = refer.sigmoid(), enc_scores_all[batch, topk].view(b, k, -1)
        embed = self.tgt_embed.weight[:k].unsqueeze(0).repeat(b, 1, 1) if self.learnt_init_query else top_features
        if self.training:
            refer, embed = refer.detach(), (embed if self.learnt_init_query else embed.detach())
        boxes, scores = self.decoder(embed, refer, feats, shapes, self.dec_bbox_head, self.dec_score_head,
                                     self.query_pos_head)
        if self.training:
            return boxes, scores, enc_bboxes, enc_scores
        return self._postprocess(boxes[-1], scores[-1].sigmoid())

    def _postprocess(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The best num_queries (query, class) pairs: [cx, cy, w, h, score, class]."""
        k = min(self.num_queries, scores.shape[1] * self.nc)
        best, index = scores.flatten(1).topk(k, dim=1)
        query = torch.div(index, self.nc, rounding_mode="floor")
        boxes = boxes.gather(1, query.unsqueeze(-1).expand(-1, -1, 4))
        return torch.cat([boxes, best[..., None], (index - query * self.nc)[..., None].to(boxes.dtype)], -1)
