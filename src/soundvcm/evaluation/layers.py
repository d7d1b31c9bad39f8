"""Layers shared by the evaluation embedders."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ConvBlock(nn.Module):
    """Two 3x3 conv (no bias) + BN + ReLU, then optional pooling: the block of PANNs' Cnn14 and of aisfx."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor, pool: int, kind: str = "avg") -> Tensor:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        if pool <= 1:
            return x
        return F.max_pool2d(x, pool) if kind == "max" else F.avg_pool2d(x, pool)
