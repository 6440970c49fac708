"""Global ranking: Torch-Pruning's own recipe, the network's layers ranked against each other.

Where :mod:`autokd.prune.channels` cuts each group by the ratio its stage asks for, here one ranking
over every group of the network decides how much each layer loses: Torch-Pruning's
``MetaPruner(global_pruning=True)``, stepped until the model's MACs are at or under a target::

    pruner = tp.pruner.MetaPruner(model, example_inputs, importance=imp, global_pruning=True,
                                  pruning_ratio=0.9, max_pruning_ratio=0.9, iterative_steps=200,
                                  ignored_layers=[classifier])
    while count_macs(model) > target_macs:
        pruner.step()

The library ranks and cuts; autokd only picks the importance, counts the MACs and stops
(``autokd.measure.mac_meter``: ``count_macs``'s count without a forward pass per step). Each step
removes about 0.45 % of the channels (0.9 / 200), so the model lands at most one step under its target.
The per-layer result depends on the weights, so it is known only after pruning; ``channel_plan(model)``
describes it, and ``predict_cost(..., plan=channel_plan(model))`` prices it exactly.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch_pruning as tp

from ..candidate import GLOBAL_MAX_LAYER
from ..errors import UserError
from ..measure import count_macs, mac_meter
from ..models import tags
from ..registry import Registry
from .channels import Criterion, _fill_grads

STEPS = 200        # pruner steps to the largest cut: ~0.45 % of the channels each, so a target is met closely
MAX_RATIO = 0.9    # of all channels after STEPS steps; no layer loses more than MAX_LAYER of its own
MAX_LAYER = GLOBAL_MAX_LAYER

# The prune methods that rank globally (candidate.GLOBAL_METHODS names them, torch-free).
GLOBAL: Registry[Criterion] = Registry("global pruning method")
# Group norm: the L2 norm of each channel over every coupled layer (Torch-Pruning's README default).
GLOBAL.add("global-l2", Criterion(lambda: tp.importance.GroupMagnitudeImportance(p=2)))
GLOBAL.add("global-l1", Criterion(lambda: tp.importance.GroupMagnitudeImportance(p=1)))
# Network slimming's |gamma|, ranked across layers (groups without a BN are left whole).
GLOBAL.add("global-bn", Criterion(lambda: tp.importance.BNScaleImportance()))
# First-order Taylor |w * dL/dw|, gradients refreshed before every step (the model changes).
GLOBAL.add("global-taylor", Criterion(lambda: tp.importance.TaylorImportance(), needs_grad=True))


def _pruner(model: nn.Module, crit: Criterion, input_shape: tuple[int, ...]) -> tp.pruner.MetaPruner:
    """The library's global pruner on ``model``; traced in eval mode on zeros, so tracing changes no
    BN statistic, and with every parameter requiring grad (tracing follows grad_fn links)."""
    params = list(model.parameters())
    flags, was_training = [p.requires_grad for p in params], model.training
    try:
        for p in params:
            p.requires_grad_(True)
        model.eval()
        example = torch.zeros(1, *input_shape, device=params[0].device)
        return tp.pruner.MetaPruner(model, example, importance=crit.make(), global_pruning=True,
                                    pruning_ratio=MAX_RATIO, max_pruning_ratio=MAX_LAYER, iterative_steps=STEPS,
                                    ignored_layers=[model.get_submodule(tags(model).classifier_name)])
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        model.train(was_training)


def prune_global(model: nn.Module, target_macs: int, *, method: str, input_shape: tuple[int, ...],
                 loss_fn: Callable[[nn.Module], torch.Tensor] | None = None) -> nn.Module:
    """Remove output channels in place by global ranking until ``count_macs(model) <= target_macs``;
    return ``model`` (same object, metadata kept, no grads).

    ``method``: a name of :data:`GLOBAL`; ``loss_fn(model) -> loss`` is required by ``global-taylor``
    (called before every step, in the caller's train/eval mode). A model already at or under the
    target is left as is. Raises :class:`UserError` (one line) when the pruner's last step stays above the target
    (a target under what cutting 90 % of the channels reaches). Parameters are replaced: build the
    optimizer after pruning.
    """
    crit = GLOBAL.get(method)
    macs = count_macs(model, input_shape)
    if macs <= target_macs:
        return model
    pruner, macs_now = _pruner(model, crit, input_shape), mac_meter(model, input_shape)
    for _ in range(STEPS):
        if crit.needs_grad:
            _fill_grads(model, loss_fn)
        pruner.step()
        if macs_now() <= target_macs:
            break
    model.zero_grad(set_to_none=True)
    macs = count_macs(model, input_shape)  # the meter's count, checked by the counter itself
    if macs > target_macs:
        raise UserError(f"global pruning stopped at {macs:,} MACs, above its target {target_macs:,} "
                         f"(at most {MAX_RATIO:.0%} of the channels go)")
    return model
