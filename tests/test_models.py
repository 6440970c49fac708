"""Contract tests over every registered model (timm's habit): builds, runs, trains, round-trips."""
from __future__ import annotations

import pytest
import torch

from autokd.models import MODELS, channel_plan, create_model, rebuild
from autokd.registry import UnknownName

SMALL = {"resnet18": 0.25, "vgg11": 0.25, "vgg13": 0.25, "vgg16": 0.25, "vgg19": 0.25, "resnet110": 0.5}


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("in_channels,size", [(1, 8), (3, 32)])
def test_forward_backward(name, in_channels, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=in_channels, width=SMALL.get(name, 1.0))
    x = torch.randn(2, in_channels, size, size)
    logits = model(x)
    assert logits.shape == (2, 7)
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", MODELS.names())
def test_channel_plan_round_trip(name):
    model = create_model(name, in_channels=3, width=0.5)
    again = create_model(name, in_channels=3, width=1.0, plan=channel_plan(model))
    assert [p.shape for p in model.parameters()] == [p.shape for p in again.parameters()]
    assert [p.shape for p in rebuild(model).parameters()] == [p.shape for p in model.parameters()]


@pytest.mark.parametrize("name", MODELS.names())
def test_distillation_points_present(name):
    model = create_model(name, in_channels=1, width=SMALL.get(name, 1.0))
    modules = dict(model.named_modules())
    seen = {}
    hooks = [modules[p].register_forward_hook(lambda m, i, o, p=p: seen.__setitem__(p, o)) for p in model.points]
    model(torch.randn(2, 1, 8, 8))
    for h in hooks:
        h.remove()
    assert len(model.points) >= 3
    assert list(seen) == model.points  # every point fires, shallow to deep
    assert all(o.dim() == 4 for o in seen.values())


def test_plan_overrides_width():
    model = create_model("resnet20", plan={"layer1.0.conv1": 5})
    assert model.layer1[0].conv1.out_channels == 5
    assert model.layer1[0].conv2.in_channels == 5


def test_identity_block_must_keep_residual_width():
    with pytest.raises(ValueError, match="residual width"):
        create_model("resnet20", plan={"layer1.1.conv2": 3})


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownName, match="resnet56"):
        create_model("resnet57")
