"""ConvTiny and ConvVeryTiny: three conv layers + two fully connected (Oleinik, Gorpinich &
Bakhteev, "Knowledge distillation in deep networks").

The students of Oleinik, Gorpinich & Bakhteev. The paper gives only "three conv layers and two
fully connected"; the widths here are ours: ConvTiny 32/64/128 + fc 256, ConvVeryTiny 16/32/64 +
fc 64. Each conv block is conv3x3-BN-ReLU-maxpool; the pool is skipped on maps under 2x2.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._zoo import MODELS, Widths, tag
from .vgg import SafePool


class ConvNet(nn.Module):
    def __init__(self, convs: list[int], hidden: int, num_classes: int, in_channels: int, w: Widths):
        super().__init__()
        c = in_channels
        for i, base in enumerate(convs, start=1):
            out = w(f"block{i}.0", base)
            setattr(self, f"block{i}", nn.Sequential(
                nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True), SafePool()))
            c = out
        self.num_blocks = len(convs)
        h = w("fc1", hidden)
        self.fc1 = nn.Linear(c, h)
        self.fc2 = nn.Linear(h, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.num_blocks + 1):
            x = getattr(self, f"block{i}")(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


def _register(arch: str, convs: list[int], hidden: int) -> None:
    def build(num_classes: int = 10, in_channels: int = 3, width: float = 1.0, plan=None):
        model = ConvNet(convs, hidden, num_classes, in_channels, Widths(width, plan))
        points = [f"block{i}" for i in range(1, len(convs) + 1)]
        return tag(model, arch, points, "fc2", num_classes=num_classes, in_channels=in_channels, width=width)

    build.__doc__ = f"{arch}: convs {convs}, hidden fc {hidden} (three conv + two fully connected)."
    MODELS.add(arch, build)


_register("convtiny", [32, 64, 128], 256)
_register("convverytiny", [16, 32, 64], 64)
