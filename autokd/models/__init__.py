"""The model zoo: one registry of builders, each taking a channel plan.

Every builder has the signature ``build(num_classes=10, in_channels=3, width=1.0, plan=None)``.
A *channel plan* maps a layer's qualified name (``"layer2.0.conv1"``) to its output channels;
layers absent from the plan get ``round(base * width)``. A pruned model is therefore plain data:
``create_model(arch, plan=channel_plan(pruned))`` rebuilds its exact shapes (timm's habit of
storing pruned architectures as channel counts).

Every model carries:
  ``arch``        its registry name,
  ``points``      the module names whose outputs are its distillation points, shallow to deep,
  ``classifier_name`` the name of the final linear layer (never pruned),
  ``build_args``  the keyword arguments that rebuild it (with ``plan``).
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ..registry import Registry

Builder = Callable[..., nn.Module]
MODELS: Registry[Builder] = Registry("model")


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered architecture by name (timm's ``create_model`` convention)."""
    return MODELS.get(name)(**kwargs)


def channel_plan(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv and hidden linear layer: the data that rebuilds ``model``."""
    plan: dict[str, int] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            plan[name] = m.out_channels
        elif isinstance(m, nn.Linear) and name != model.classifier_name:
            plan[name] = m.out_features
    return plan


def rebuild(model: nn.Module) -> nn.Module:
    """A fresh model of ``model``'s architecture and exact channel plan (new weights)."""
    args = dict(model.build_args, plan=channel_plan(model))
    return create_model(model.arch, **args)


class Widths:
    """Resolves a layer's output channels: the plan's value, else ``round(base * width)``."""

    def __init__(self, width: float, plan: dict[str, int] | None) -> None:
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        self.width = width
        self.plan = dict(plan or {})

    def __call__(self, name: str, base: int) -> int:
        if name in self.plan:
            return int(self.plan[name])
        return max(1, int(round(base * self.width)))


def tag(model: nn.Module, arch: str, points: list[str], classifier: str, **build_args) -> nn.Module:
    """Attach the zoo's metadata to a freshly built model."""
    model.arch = arch
    model.points = points
    model.classifier_name = classifier
    model.build_args = build_args
    return model


from . import resnet, tiny, vgg  # noqa: E402,F401  (registers the builders)

__all__ = ["MODELS", "create_model", "channel_plan", "rebuild", "Widths"]
