"""The zoo's registry and the helpers every builder uses (its own module, so that the builders
and the package's ``__init__`` never import each other)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

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
    t = tags(model)
    return create_model(t.arch, **dict(t.build_args, plan=channel_plan(model)))


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
    vars(model).update(arch=arch, points=points, classifier_name=classifier, build_args=build_args)
    return model


@dataclass(frozen=True)
class Tags:
    """The metadata :func:`tag` attached to a zoo model."""

    arch: str
    points: list[str]  # distillation points, shallow to deep
    classifier_name: str
    build_args: dict[str, Any]


def tags(model: nn.Module) -> Tags:
    """``model``'s zoo metadata, typed (``nn.Module.__getattr__`` is typed ``Tensor | Module``)."""
    m: Any = model
    return Tags(m.arch, m.points, m.classifier_name, m.build_args)
