"""Mamba-YOLO on any machine: a pure-PyTorch selective scan and the Mamba-YOLO blocks."""

from blocks.mamba.scan import selective_scan, set_scan_backend, get_scan_backend  # noqa: F401
