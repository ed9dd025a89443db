"""The yoloblocks block library: every block registers itself on import.

Add a module here when you add a file of blocks; the registry (``blocks.registry``) is
the only index the tool reads.
"""

from blocks.registry import all_blocks, get_block, register_block  # noqa: F401

# Library modules, imported for their registrations. Keep one line per module.
from blocks import conv  # noqa: F401,E402
from blocks import csp  # noqa: F401,E402
from blocks import gelan  # noqa: F401,E402
from blocks import torch_nn  # noqa: F401,E402
from blocks import yolov5_repo  # noqa: F401,E402
from blocks import yolov9_repo  # noqa: F401,E402
from blocks import yolov7_repo  # noqa: F401,E402
from blocks import attention  # noqa: F401,E402
from blocks import mamba  # noqa: F401,E402
from blocks import ghost  # noqa: F401,E402
from blocks import psa  # noqa: F401,E402
from blocks import c3k2  # noqa: F401,E402
from blocks import v10  # noqa: F401,E402
from blocks import heads  # noqa: F401,E402
from blocks import c2  # noqa: F401,E402
from blocks import task_heads  # noqa: F401,E402
from blocks import area_attention  # noqa: F401,E402
from blocks import rtdetr  # noqa: F401,E402
from blocks import open_vocabulary  # noqa: F401,E402
from blocks import torchvision_models  # noqa: F401,E402
