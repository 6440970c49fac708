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
  ``build_args``  the keyword arguments that rebuild it (with ``plan``);
read back, typed, by ``tags(model)``.
"""
from . import resnet, tiny, vgg  # noqa: F401  (each registers its builders)
from ._zoo import MODELS, Tags, Widths, channel_plan, create_model, rebuild, tag, tags

__all__ = ["MODELS", "create_model", "channel_plan", "rebuild", "Widths", "tag", "tags", "Tags"]
