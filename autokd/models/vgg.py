"""VGG-11/13/16/19 with batch norm, for small inputs (the common CIFAR variant).

Five conv stages, each closed by a 2x2 max-pool, then global average pooling and one linear
classifier: vgg16-bn is about 314 M MACs on 3x32x32. A pool is skipped once the feature map is
1 pixel wide, so the same network runs on 8x8 (digits) and 28x28 inputs.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._zoo import MODELS, Widths, tag

CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class SafePool(nn.Module):
    """2x2 max-pool that passes a map through unchanged once it is smaller than 2x2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < 2 or x.shape[-2] < 2:
            return x
        return F.max_pool2d(x, 2)


class VGG(nn.Module):
    def __init__(self, cfg: list, num_classes: int, in_channels: int, w: Widths):
        super().__init__()
        layers: list[nn.Module] = []
        self.pool_names: list[str] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                self.pool_names.append(f"features.{len(layers)}")
                layers.append(SafePool())
                continue
            out = w(f"features.{len(layers)}", v)
            layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            c = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(x)


def _register(arch: str) -> None:
    def build(num_classes: int = 10, in_channels: int = 3, width: float = 1.0, plan=None):
        model = VGG(CFGS[arch], num_classes, in_channels, Widths(width, plan))
        return tag(model, arch, list(model.pool_names), "classifier",
                   num_classes=num_classes, in_channels=in_channels, width=width)

    build.__doc__ = f"{arch.upper()}-BN for small inputs: five conv stages, global pool, one linear."
    MODELS.add(arch, build)


for _arch in CFGS:
    _register(_arch)
