"""torch.nn layers that YOLO YAMLs name directly (``nn.Upsample``), registered once."""

from __future__ import annotations

from torch import nn

from blocks.registry import register_external

register_external(nn.Upsample, "passthrough", family="utility", aliases=("nn.Upsample",),
                  source="torch.nn", default_args=lambda c1: (None, 2, "nearest"))
register_external(nn.Identity, "passthrough", family="utility", aliases=("nn.Identity",), source="torch.nn")
