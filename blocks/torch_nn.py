"""torch.nn layers that YOLO YAMLs name directly (``nn.Upsample``), registered once."""

from __future__ import annotations

from torch import nn

from blocks.registry import register_external

register_external(nn.Upsample, "passthrough", family="utility", aliases=("nn.Upsample",),
                  source="torch.nn", default_args=lambda c1: (None, 2, "nearest"))
register_external(nn.Identity, "passthrough", family="utility", aliases=("nn.Identity",), source="torch.nn")
# ultralytics scales a transposed convolution's output width and prepends its input width (YOLOv6)
register_external(nn.ConvTranspose2d, "c1_c2", family="utility", aliases=("nn.ConvTranspose2d",), source="torch.nn",
                  default_args=lambda c1: (c1, 2, 2, 0))
