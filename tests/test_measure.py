"""MACs: hand-derived cases and published anchors (He et al. 2016; the figures papers quote for CIFAR nets)."""
from __future__ import annotations

import pytest
import torch.nn as nn

from autokd.measure import count_macs, count_params, flops_from_macs, mac_meter, measure
from autokd.models import create_model


def test_conv_by_hand():
    # out 8 channels x 8 x 8 positions x (3 in-channels x 3 x 3 kernel) = 13,824
    assert count_macs(nn.Conv2d(3, 8, 3, padding=1), (3, 8, 8)) == 8 * 8 * 8 * 27 == 13_824


def test_linear_by_hand():
    # 20 outputs x 30 inputs; the bias add is not a multiply-accumulate
    assert count_macs(nn.Sequential(nn.Flatten(), nn.Linear(30, 20)), (30, 1, 1)) == 600


def test_bn_relu_pool_are_free():
    net = nn.Sequential(nn.Conv2d(1, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
    assert count_macs(net, (1, 4, 4)) == 4 * 4 * 4 * 1  # the 1x1 conv only


def test_the_meter_follows_channels_a_layer_loses():
    """conv 1->4 (3x3) 4*9*64 = 2,304; conv 4->6 6*4*9*64 = 13,824; linear 6->10 60: 16,188. With two of
    the first conv's channels gone: 2*9*64 + 6*2*9*64 + 60 = 8,124, and the meter runs no forward."""
    import torch_pruning as tp
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10))
    meter = mac_meter(net, (1, 8, 8))
    assert meter() == count_macs(net, (1, 8, 8)) == 16_188
    tp.prune_conv_out_channels(net[0], [0, 1])
    tp.prune_conv_in_channels(net[2], [0, 1])
    net.forward = None  # the meter reads weights only
    assert meter() == 8_124


def test_a_layer_the_meter_cannot_describe_is_counted():
    """A transposed conv's MACs are not its weight times its output pixels: the meter counts instead."""
    net = nn.Sequential(nn.ConvTranspose2d(2, 3, 2, stride=2))
    assert mac_meter(net, (2, 4, 4))() == count_macs(net, (2, 4, 4)) == 2 * 3 * 4 * 16  # each input pixel x 2x2 kernel


def test_flops_are_twice_macs():
    assert flops_from_macs(13_824) == 27_648
    assert measure(nn.Conv2d(3, 8, 3, padding=1), (3, 8, 8)).flops == 27_648


@pytest.mark.parametrize("name,macs_m", [("resnet20", 40.8), ("resnet56", 125.7), ("resnet110", 253.0),
                                         ("vgg16", 314.0), ("vgg11", 153.0), ("vgg13", 229.0), ("vgg19", 399.0)])
def test_published_anchors(name, macs_m):
    macs = count_macs(create_model(name), (3, 32, 32))
    assert macs == pytest.approx(macs_m * 1e6, rel=0.01)


def test_resnet56_params():
    assert count_params(create_model("resnet56")) == pytest.approx(0.86e6, rel=0.01)
