"""Open-vocabulary layers of YOLO-World and YOLOE: the class list is a tensor of text embeddings.

These layers take a second input beside the feature maps, the class embeddings (B, K, D) that a
CLIP text encoder produces from class names. yb never loads a text encoder: the model carries a
placeholder of the right shape (see :func:`placeholder_embeddings`), so parameters, FLOPs and
shapes are exact while the class scores mean nothing. Each such layer says how it uses the
embeddings in ``text_role`` and the model loop (:func:`run_layer`) feeds it accordingly:

- ``guided``: ``forward(x, text)`` returns features (C2fAttn's max-sigmoid attention);
- ``refines``: ``forward(x, text)`` returns new embeddings and leaves the features as they were
  (ImagePoolingAttn, YOLO-World v1);
- ``head``: ``forward(x, text)`` with the embeddings as the model received them (WorldDetect, YOLOE).

YAML rules (ultralytics ``parse_model``): C2fAttn scales its head count with the width and sets its
embedding width to its hidden width; ImagePoolingAttn gets the input widths as its second argument;
the heads follow the Detect rule (YOLOE segment heads the Segment rule).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from blocks.conv import Conv
from blocks.conventions import Convention, LayerContext, Resolved, register_convention
from blocks.csp import Bottleneck
from blocks.heads import DETECT_RULE, Detect, class_branch
from blocks.registry import register_block
from blocks.task_heads import SEGMENT_RULE, MaskParts, Proto26, with_protos

_BLOCKS = "ultralytics nn/modules/block.py"
_HEADS = "ultralytics nn/modules/head.py"

GUIDED, REFINES, HEAD = "guided", "refines", "head"


def placeholder_embeddings(layers: list[nn.Module], nc: int) -> torch.Tensor:
    """(1, nc, D) class embeddings standing in for a text encoder's: D is what the layers read;
    zeros for YOLOE (ultralytics' own placeholder), seeded N(0, 1) for YOLO-World (ultralytics uses randn)."""
    width = layers[0].text_width
    if getattr(layers[-1], "placeholder", "normal") == "zeros":
        return torch.zeros(1, nc, width)
    return torch.randn(1, nc, width, generator=torch.Generator().manual_seed(0))


def run_layer(m: nn.Module, x: Any, text: torch.Tensor | None, original: torch.Tensor | None) -> tuple[Any, Any]:
    """One step of the model loop: (features, embeddings) after layer ``m``."""
    role = getattr(m, "text_role", None)
    if role is None or text is None:
        return m(x), text
    if role == REFINES:
        return x, m(x, text)
    if role == GUIDED:
        return m(x, text), text
    return m(x, original), text


def batch_of(text: torch.Tensor, x: Any) -> torch.Tensor:
    """The embeddings repeated over the batch of the input image."""
    b = x.shape[0]
    return text if text.shape[0] == b else text.expand(b, -1, -1)


# --- YOLO-World neck ---------------------------------------------------------------------------


class MaxSigmoidAttnBlock(nn.Module):
    """Scales each head's features by sigmoid(best similarity of the pixel to any class embedding)."""

    def __init__(self, c1: int, c2: int, nh: int = 1, ec: int = 128, gc: int = 512, scale: bool = False):
        super().__init__()
        self.nh, self.hc = nh, c2 // nh
        self.ec = Conv(c1, ec, k=1, act=False) if c1 != ec else None
        self.gl = nn.Linear(gc, ec)
        self.bias = nn.Parameter(torch.zeros(nh))
        self.proj_conv = Conv(c1, c2, k=3, s=1, act=False)
        self.scale = nn.Parameter(torch.ones(1, nh, 1, 1)) if scale else 1.0

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        g = self.gl(guide).view(b, -1, self.nh, self.hc).permute(0, 2, 3, 1)  # (B, nh, hc, K)
        e = (self.ec(x) if self.ec is not None else x).view(b, self.nh, self.hc, h * w).transpose(2, 3)
        best = (e @ g).amax(-1).view(b, self.nh, h, w)  # (B, nh, H, W): best class per pixel
        gate = ((best / self.hc ** 0.5) + self.bias.view(1, -1, 1, 1)).sigmoid() * self.scale
        y = self.proj_conv(x).view(b, self.nh, -1, h, w) * gate.unsqueeze(2)
        return y.view(b, -1, h, w)


def _c2f_attn(ctx: LayerContext) -> Resolved:
    args = list(ctx.args)  # [c2, ec, nh, gc, shortcut, g, e]
    c2 = ctx.scale_width(args[0])
    nh = args[2]
    if nh > 1:  # head count follows the width, capped by max_channels // 64
        nh = int(max(round(min(nh, ctx.max_channels // 2 // 32)) * ctx.width, 1))
    hidden = int(c2 * (args[6] if len(args) > 6 else 0.5))
    if hidden % nh:
        raise ValueError(f"C2fAttn hidden width {hidden} (from c2={c2}) is not divisible by {nh} heads")
    args[1], args[2] = hidden, nh  # the embedding width is the hidden width
    return Resolved([ctx.c1, c2, ctx.n, *args[1:]], c2)


C2FATTN_RULE = register_convention(Convention(
    "c2fattn",
    "as c1_c2_n, and args [c2, ec, nh] get nh scaled with the width (max_channels // 64 at most) and "
    "ec = the hidden width c2 * e",
    _c2f_attn, lambda c1, rest: [c1, *(rest if rest is not None else [c1, 1, c1 // 2, 1])],
))


@register_block(C2FATTN_RULE, family="utility", source=_BLOCKS + " (YOLO-World)")
class C2fAttn(nn.Module):
    """C2f whose last stage output is re-weighted by max-sigmoid attention to the class embeddings.

    Two inputs, so the catalog does not measure it alone: ``yb inspect C2fAttn --size 64x32x32
    --inputs guide=Bx80x512`` does."""

    text_role = GUIDED

    def __init__(self, c1: int, c2: int, n: int = 1, ec: int = 128, nh: int = 1, gc: int = 512,
                 shortcut: bool = False, g: int = 1, e: float = 0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.text_width = gc
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv((3 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, g, k=(3, 3), e=1.0) for _ in range(n))
        self.attn = MaxSigmoidAttnBlock(self.c, self.c, gc=gc, ec=ec, nh=nh)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        y.append(self.attn(y[-1], guide))
        return self.cv2(torch.cat(y, 1))


def _widths_second(ctx: LayerContext) -> Resolved:
    return Resolved([ctx.args[0], list(ctx.ch_in), *ctx.args[1:]], ctx.ch_in[0])


WIDTHS_SECOND_RULE = register_convention(Convention(
    "widths_second", "args [a, ...] become (a, [input widths], ...); the features pass through unchanged",
    _widths_second, lambda c1, rest: [(rest or [256])[0], [c1], *(rest or [256])[1:]],
))


@register_block(WIDTHS_SECOND_RULE, family="utility", source=_BLOCKS + " (YOLO-World)")
class ImagePoolingAttn(nn.Module):
    """Refines the class embeddings by attending to k x k max-pooled patches of every input level."""

    text_role = REFINES

    def __init__(self, ec: int = 256, ch: tuple | list = (), ct: int = 512, nh: int = 8, k: int = 3,
                 scale: bool = False):
        super().__init__()
        self.ec, self.nh, self.hc, self.k, self.nf = ec, nh, ec // nh, k, len(ch)
        self.text_width = ct
        self.query = nn.Sequential(nn.LayerNorm(ct), nn.Linear(ct, ec))
        self.key = nn.Sequential(nn.LayerNorm(ec), nn.Linear(ec, ec))
        self.value = nn.Sequential(nn.LayerNorm(ec), nn.Linear(ec, ec))
        self.proj = nn.Linear(ec, ct)
        self.scale = nn.Parameter(torch.tensor([0.0])) if scale else 1.0
        self.projections = nn.ModuleList(nn.Conv2d(c, ec, kernel_size=1) for c in ch)
        self.im_pools = nn.ModuleList(nn.AdaptiveMaxPool2d((k, k)) for _ in ch)

    def forward(self, x: list[torch.Tensor], text: torch.Tensor) -> torch.Tensor:
        b = x[0].shape[0]
        if len(x) != self.nf:
            raise ValueError(f"ImagePoolingAttn was built for {self.nf} levels, got {len(x)}")
        patches = torch.cat([pool(proj(xi)).view(b, self.ec, -1)
                             for xi, proj, pool in zip(x, self.projections, self.im_pools)], -1).transpose(1, 2)

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, N, ec) -> (B, nh, N, hc)
            return t.reshape(b, -1, self.nh, self.hc).transpose(1, 2)

        q, k, v = heads(self.query(text)), heads(self.key(patches)), heads(self.value(patches))
        attn = ((q @ k.transpose(-1, -2)) / self.hc ** 0.5).softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(b, -1, self.ec)
        return self.proj(out) * self.scale + text


# --- heads -------------------------------------------------------------------------------------


class ContrastiveHead(nn.Module):
    """Region-text similarity: cosine of L2-normalised features and embeddings, scaled and shifted."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([-10.0]))
        self.logit_scale = nn.Parameter(torch.ones([]) * torch.tensor(1 / 0.07).log())

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1, p=2)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = self._features(x)
        w = F.normalize(w, dim=-1, p=2)
        y = (w @ x.flatten(2)).view(x.shape[0], w.shape[1], *x.shape[2:])
        return y * self.logit_scale.exp() + self.bias


class BNContrastiveHead(ContrastiveHead):
    """ContrastiveHead with batch norm in place of the features' L2 normalisation (YOLO-World v2, YOLOE)."""

    def __init__(self, embed_dims: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(embed_dims)
        self.logit_scale = nn.Parameter(-1.0 * torch.ones([]))

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class _TextHead(Detect):
    """Detect whose class scores compare each anchor's embedding with every class embedding (``cv4``)."""

    text_role = HEAD
    placeholder = "normal"

    def _scores(self, x: list[torch.Tensor], prefix: str, text: torch.Tensor | None) -> torch.Tensor:
        if text is None:
            raise ValueError(f"{type(self).__name__} needs class embeddings: forward(x, text) with text (B, K, "
                             f"{self.text_width})")
        cls, contrast = self._branch(prefix, "cv3"), self._branch(prefix, "cv4")
        text = batch_of(text, x[0])
        return torch.cat([contrast[i](cls[i](x[i]), text).flatten(2) for i in range(self.nl)], -1)


@register_block(DETECT_RULE, family="head", source=_HEADS + " (YOLO-World)")
class WorldDetect(_TextHead):
    """YOLO-World head: Detect's box branch, a class branch to ``embed`` channels and a contrastive head."""

    def __init__(self, nc: int = 80, embed: int = 512, with_bn: bool = False, reg_max: int = 16,
                 end2end: bool | None = False, ch: list[int] | tuple = (), legacy: bool = False):
        super().__init__(nc, reg_max, end2end, ch, legacy)
        self.has_one2one = False  # ultralytics' WorldDetect builds a one-to-one branch but never reads it
        self.text_width = embed
        c3 = max(ch[0], min(self.nc, 100))
        self.cv3 = class_branch(ch, c3, embed, legacy=True)
        self.cv4 = nn.ModuleList(BNContrastiveHead(embed) if with_bn else ContrastiveHead() for _ in ch)


class SwiGLUFFN(nn.Module):
    """SwiGLU feed-forward: SiLU(x W1) * (x W2), then W3."""

    def __init__(self, gc: int, ec: int, e: int = 4):
        super().__init__()
        self.w12 = nn.Linear(gc, e * ec)
        self.w3 = nn.Linear(e * ec // 2, ec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class Residual(nn.Module):
    """x + m(x), with m's output layer zero-initialised (starts as the identity)."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m
        nn.init.zeros_(self.m.w3.bias)
        nn.init.zeros_(self.m.w3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)


class SAVPE(nn.Module):
    """YOLOE's visual-prompt encoder: pools the features inside each prompt mask into an embedding.

    Built (its parameters are part of every YOLOE model) but only run with visual prompts, which yb
    does not feed; :meth:`forward` is here for users who call it directly."""

    def __init__(self, ch: list[int] | tuple, c3: int, embed: int):
        super().__init__()

        def up(i: int) -> nn.Module:
            return nn.Upsample(scale_factor=i * 2) if i in (1, 2) else nn.Identity()

        self.cv1 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), up(i)) for i, x in enumerate(ch))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c3, 1), up(i)) for i, x in enumerate(ch))
        self.c = 16
        self.cv3 = nn.Conv2d(3 * c3, embed, 1)
        self.cv4 = nn.Conv2d(3 * c3, self.c, 3, padding=1)
        self.cv5 = nn.Conv2d(1, self.c, 3, padding=1)
        self.cv6 = nn.Sequential(Conv(2 * self.c, self.c, 3), nn.Conv2d(self.c, self.c, 3, padding=1))

    def forward(self, x: list[torch.Tensor], prompts: torch.Tensor) -> torch.Tensor:
        """x: the head's levels; prompts: (B, Q, H, W) masks at P3's size -> (B, Q, embed), L2-normalised."""
        gate = self.cv4(torch.cat([m(xi) for m, xi in zip(self.cv2, x)], 1))
        feats = self.cv3(torch.cat([m(xi) for m, xi in zip(self.cv1, x)], 1))
        b, c, h, w = feats.shape
        q = prompts.shape[1]
        masks = prompts.reshape(b * q, 1, h, w)
        gate = gate.reshape(b, 1, self.c, h, w).expand(-1, q, -1, -1, -1).reshape(b * q, self.c, h, w)
        score = self.cv6(torch.cat((gate, self.cv5(masks)), 1)).reshape(b, q, self.c, -1)
        masks = masks.reshape(b, q, 1, -1)
        score = (score * masks + torch.logical_not(masks) * torch.finfo(score.dtype).min).softmax(-1)
        pooled = score.transpose(-2, -3) @ feats.reshape(b, self.c, c // self.c, -1).transpose(-1, -2)
        return F.normalize(pooled.transpose(-2, -3).reshape(b, q, -1), dim=-1, p=2)


@register_block(DETECT_RULE, family="head", source=_HEADS + " (YOLOE)")
class YOLOEDetect(_TextHead):
    """YOLOE head: class branch to ``embed`` channels, batch-norm contrastive head per level, plus the text
    re-projection (``reprta``) and visual-prompt encoder (``savpe``) that prompting uses."""

    placeholder = "zeros"
    outside_forward = {"reprta": "re-projects text prompts (get_tpe), not in the forward pass",
                       "savpe": "encodes visual prompts, not in the forward pass"}

    def __init__(self, nc: int = 80, embed: int = 512, with_bn: bool = True, reg_max: int = 16,
                 end2end: bool | None = False, ch: list[int] | tuple = (), legacy: bool = False):
        super().__init__(nc, reg_max, end2end, ch, legacy)
        if not with_bn:
            raise ValueError("YOLOEDetect needs with_bn=True (its contrastive head is batch-normalised)")
        c3 = max(ch[0], min(self.nc, 100))
        if c3 > embed:
            raise ValueError(f"YOLOEDetect: class-branch width {c3} exceeds the embedding width {embed}")
        self.text_width = embed
        self.cv3 = class_branch(ch, c3, embed, legacy)
        self.cv4 = nn.ModuleList(BNContrastiveHead(embed) for _ in ch)
        if end2end:
            self.one2one_cv3 = copy.deepcopy(self.cv3)
            self.one2one_cv4 = copy.deepcopy(self.cv4)
        self.reprta = Residual(SwiGLUFFN(embed, embed))
        self.savpe = SAVPE(ch, c3, embed)
        self.embed = embed


@register_block(SEGMENT_RULE, family="head", source=_HEADS + " (YOLOE)")
class YOLOESegment(MaskParts, YOLOEDetect):
    """YOLOEDetect plus nm mask coefficients per anchor (``cv5``) and prototypes from P3."""

    extra_parts = {"cv5": "mask_coefficient"}

    def __init__(self, nc: int = 80, nm: int = 32, npr: int = 256, embed: int = 512, with_bn: bool = True,
                 reg_max: int = 16, end2end: bool | None = False, ch: list[int] | tuple = (), legacy: bool = False):
        super().__init__(nc, embed, with_bn, reg_max, end2end, ch, legacy)
        self._add_masks(ch, nc, nm, npr, "cv5")

    def forward(self, x: list[torch.Tensor], text: torch.Tensor | None = None):
        return with_protos(self, super().forward(x, text), self._protos(x))


@register_block(SEGMENT_RULE, family="head", source=_HEADS + " (YOLOE, YOLO26)")
class YOLOESegment26(YOLOESegment):
    """YOLOESegment with YOLO26's prototypes (every level fused, Proto26) on detached features."""

    def _make_proto(self, ch: list[int] | tuple, nc: int) -> nn.Module:
        return Proto26(ch, self.npr, self.nm, nc)

    def _protos(self, x: list[torch.Tensor]) -> torch.Tensor:
        return self.proto([xi.detach() for xi in x], semantic=False)
