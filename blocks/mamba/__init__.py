"""Mamba-YOLO on any machine: a pure-PyTorch selective scan and the Mamba-YOLO blocks.

- :mod:`blocks.mamba.scan`: ``selective_scan`` (torch op ``yoloblocks::selective_scan``),
  backend choice (``YB_SCAN`` / :func:`set_scan_backend`), FLOP formula;
- :mod:`blocks.mamba.cross_scan`: SS2D's four-direction scan and merge;
- :mod:`blocks.mamba.ss2d`, :mod:`blocks.mamba.blocks`: the registered blocks.
"""

from blocks.mamba.scan import get_scan_backend, selective_scan, set_scan_backend  # noqa: F401
from blocks.mamba.cross_scan import cross_merge, cross_scan  # noqa: F401
from blocks.mamba.ss2d import SS2D  # noqa: F401
from blocks.mamba.blocks import (  # noqa: F401
    LSBlock, RGBlock, SimpleStem, VisionClueMerge, VSSBlock, XSSBlock,
)
