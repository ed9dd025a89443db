"""The seed attention blocks (articles 000, 001, 002, 004), rebuilt to run at every resolution.

Each module documents what the article's copy got wrong and how it is fixed; all keep the
published parameter names and shapes.
"""

from blocks.attention.focused_linear import FocusedLinearAttention  # noqa: F401
from blocks.attention.mlla import MLLAttention  # noqa: F401
from blocks.attention.mobile_mqa import MMQARepNCSPELAN4, MultiQueryAttentionLayerWithDownSampling  # noqa: F401
from blocks.attention.s2attention import S2Attention, SplitAttention  # noqa: F401
