"""Cost before training: the exact channel plan and MACs of a pruned architecture, nothing pruned.

Counts follow :func:`autokd.prune.structure.n_pruned`, which depends on neither the weights nor
the criterion, so :func:`predict_cost` equals ``measure(prune_model(...))`` for every criterion.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Mapping

import torch
import torch.nn as nn

from ..measure import Cost, count_macs, count_params
from ..models import channel_plan, create_model
from .structure import TRACE_WIDTH, RatioSpec, resolve_spec, structure, target_plan


@lru_cache(maxsize=64)
def _positions(arch: str, num_classes: int, in_channels: int, input_shape: tuple[int, ...]) -> dict[str, int] | None:
    """Output positions of every conv/linear on one input; None if the analytic count would
    disagree with :func:`autokd.measure.count_macs` (then predict_cost counts by running)."""
    model = create_model(arch, num_classes=num_classes, in_channels=in_channels, width=TRACE_WIDTH).eval()
    positions: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: positions.__setitem__(
        n, o.numel() // (o.shape[1] if isinstance(m, nn.Conv2d) else o.shape[-1])))
        for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for h in hooks:
        h.remove()
    return positions if _analytic_macs(model, positions) == count_macs(model, input_shape) else None


@lru_cache(maxsize=256)
def _base_plan(arch: str, num_classes: int, in_channels: int, width: float) -> dict[str, int]:
    with torch.device("meta"):
        return channel_plan(create_model(arch, num_classes=num_classes, in_channels=in_channels, width=width))


def _analytic_macs(model: nn.Module, positions: Mapping[str, int]) -> int:
    macs = 0
    for name, m in model.named_modules():
        if name not in positions:
            continue
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            macs += m.out_channels * (m.in_channels // m.groups) * kh * kw * positions[name]
        elif isinstance(m, nn.Linear):
            macs += m.in_features * m.out_features * positions[name]
    return macs


def predict_cost(arch: str, *, num_classes: int, in_channels: int, width: float, ratios_spec: RatioSpec,
                 input_shape: tuple[int, ...], round_to: int = 1,
                 plan: Mapping[str, int] | None = None) -> tuple[dict[str, int], Cost]:
    """Channel plan and exact :class:`Cost` of ``arch`` at ``width`` after pruning with
    ``ratios_spec``, without pruning anything: counts follow :func:`n_pruned`, which does not
    depend on weights or criterion, so this equals ``measure(prune_model(...))`` for every
    criterion. Layout and output positions are cached per (arch, classes, in_channels, input
    shape); a warm call takes about 30 ms for resnet56 on 3x32x32 (2-core CPU). The first call
    per input shape checks the analytic MAC count against ``count_macs`` once. ``plan``: the
    channels before pruning, when they are not ``arch``'s at ``width`` (a student that inherits a
    pruned teacher's layers).
    """
    args = dict(num_classes=num_classes, in_channels=in_channels, width=width)
    st = structure(arch, num_classes, in_channels)
    base = dict(plan) if plan is not None else _base_plan(arch, num_classes, in_channels, width)
    plan = target_plan(st, base, resolve_spec(st, ratios_spec, arch), round_to)
    positions = _positions(arch, num_classes, in_channels, tuple(input_shape))
    if positions is None:
        model = create_model(arch, **args, plan=plan)
        return plan, Cost(macs=count_macs(model, tuple(input_shape)), params=count_params(model))
    with torch.device("meta"):  # shapes only: no allocation, no init
        model = create_model(arch, **args, plan=plan)
    return plan, Cost(macs=_analytic_macs(model, positions), params=count_params(model))
