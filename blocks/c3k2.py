"""YOLO11's C3k2 and C3k, with C3k2's YAML rule as its own Convention.

ultralytics' ``parse_model`` special-cases C3k2: it switches the model's Detect head to the
non-legacy (depth-wise classification branch) layout, and on scales m/l/x forces ``c3k=True``.
Both facts live here, in the block's Convention, not in the builder.
"""

from __future__ import annotations

from torch import nn

from blocks.conventions import C1_C2_N, Convention, LayerContext, Resolved, register_convention
from blocks.csp import C2f, C3, Bottleneck
from blocks.psa import PSABlock
from blocks.registry import register_block

_SOURCE = "ultralytics nn/modules/block.py (YOLO11)"


def modern_head(ctx: LayerContext) -> None:
    """Record that this model uses the post-v8 Detect layout (ultralytics' ``legacy = False``)."""
    ctx.extra.setdefault("state", {})["legacy_head"] = False


def _c3k2(ctx: LayerContext) -> Resolved:
    res = C1_C2_N.resolve(ctx)
    modern_head(ctx)
    if ctx.scale in {"m", "l", "x"}:
        res.args[3:4] = [True]  # c3k, also when the YAML omits it
    return res


def _c2_n_modern(ctx: LayerContext) -> Resolved:
    res = C1_C2_N.resolve(ctx)
    modern_head(ctx)
    return res


C3K2_RULE = register_convention(Convention(
    "c3k2",
    "as c1_c2_n; on scales m/l/x c3k is forced True, and the model's Detect head is the non-legacy layout",
    _c3k2, C1_C2_N.standalone,
))
C1_C2_N_MODERN = register_convention(Convention(
    "c1_c2_n_modern_head",
    "as c1_c2_n, and the model's Detect head is the non-legacy layout (YOLOv10's C2fCIB)",
    _c2_n_modern, C1_C2_N.standalone,
))


@register_block("c1_c2_n", source=_SOURCE)
class C3k(C3):
    """C3 with a configurable bottleneck kernel."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5, k: int = 3):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, k=(k, k), e=1.0) for _ in range(n)))


@register_block(C3K2_RULE, source=_SOURCE)
class C3k2(C2f):
    """C2f whose inner blocks are Bottlenecks (e=0.5), C3k blocks (c3k=True) or Bottleneck+PSABlock (attn)."""

    def __init__(self, c1: int, c2: int, n: int = 1, c3k: bool = False, e: float = 0.5, attn: bool = False,
                 g: int = 1, shortcut: bool = True):
        super().__init__(c1, c2, n, shortcut, g, e)
        self.m = nn.ModuleList(
            nn.Sequential(Bottleneck(self.c, self.c, shortcut, g),
                          PSABlock(self.c, attn_ratio=0.5, num_heads=max(self.c // 64, 1))) if attn
            else C3k(self.c, self.c, 2, shortcut, g) if c3k
            else Bottleneck(self.c, self.c, shortcut, g)
            for _ in range(n)
        )
