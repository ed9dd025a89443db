"""yoloblocks: load, trace and profile YOLO blocks and models (the `yb` command).

Importing this package must stay cheap: nothing here imports torch.
"""

__version__ = "0.1.0"
