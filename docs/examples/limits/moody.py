"""A block that ends the process at some sizes: `yb trace` must survive it."""

import sys

import torch.nn as nn


class Moody(nn.Module):
    def __init__(self, c1: int):
        super().__init__()
        self.conv = nn.Conv2d(c1, c1, 1)

    def forward(self, x):
        if x.shape[-1] % 2:
            sys.exit(3)  # a leftover debugging exit
        if x.shape[-2] != x.shape[-1]:
            raise KeyboardInterrupt  # not a Ctrl-C: raised by the code
        return self.conv(x)
