"""CIFAR ResNets (He et al. 2016, §4.2) and the CIFAR variant of ResNet-18.

Shortcut: option B — identity inside a stage, a 1x1 conv + BN projection where the shape
changes (first block of stages 2+). The 1x1 projection is what makes a residual stage's width
prunable as one group; it gives resnet56 125.75 M MACs on 3x32x32 (the parameter-free option A
gives 125.49 M, the figure papers usually quote). The network's structure (which blocks project) is
fixed by the architecture, never by the channel plan.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._zoo import MODELS, Widths, tag


class BasicBlock(nn.Module):
    def __init__(self, prefix: str, c_in: int, stride: int, project: bool, w: Widths, base: int):
        super().__init__()
        mid = w(f"{prefix}.conv1", base)
        out = w(f"{prefix}.conv2", base) if project else c_in
        if not project and w.plan.get(f"{prefix}.conv2", c_in) != c_in:
            raise ValueError(f"{prefix}.conv2 must keep the residual width {c_in} (identity shortcut)")
        self.conv1 = nn.Conv2d(c_in, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.shortcut = nn.Sequential()
        if project:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        self.out_channels = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks: list[int], bases: list[int], strides: list[int], num_classes: int,
                 in_channels: int, w: Widths):
        super().__init__()
        c = w("conv1", bases[0])
        self.conv1 = nn.Conv2d(in_channels, c, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        for s, (n, base, stride) in enumerate(zip(blocks, bases, strides), start=1):
            layer = []
            for b in range(n):
                project = b == 0 and s > 1  # stage 1 keeps the stem's width: identity shortcuts
                block = BasicBlock(f"layer{s}.{b}", c, stride if b == 0 else 1, project, w, base)
                c = block.out_channels
                layer.append(block)
            setattr(self, f"layer{s}", nn.Sequential(*layer))
        self.num_stages = len(blocks)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for s in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{s}")(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def _resnet(arch: str, blocks, bases, strides, num_classes, in_channels, width, plan):
    w = Widths(width, plan)
    model = ResNet(blocks, bases, strides, num_classes, in_channels, w)
    points = [f"layer{s}" for s in range(1, len(blocks) + 1)]
    return tag(model, arch, points, "fc", num_classes=num_classes, in_channels=in_channels, width=width)


def _register_cifar(depth: int) -> None:
    n = (depth - 2) // 6

    def build(num_classes: int = 10, in_channels: int = 3, width: float = 1.0, plan=None):
        return _resnet(f"resnet{depth}", [n] * 3, [16, 32, 64], [1, 2, 2], num_classes, in_channels, width, plan)

    build.__doc__ = f"CIFAR ResNet-{depth}: 3 stages of {n} basic blocks, widths 16/32/64."
    MODELS.add(f"resnet{depth}", build)


for _depth in (20, 32, 44, 56, 110):
    _register_cifar(_depth)


@MODELS.register("resnet18")
def resnet18(num_classes: int = 10, in_channels: int = 3, width: float = 1.0, plan=None):
    """ResNet-18, CIFAR variant: 3x3 stem, no max-pool, stages 64/128/256/512 of 2 blocks."""
    return _resnet("resnet18", [2, 2, 2, 2], [64, 128, 256, 512], [1, 2, 2, 2], num_classes, in_channels, width, plan)
