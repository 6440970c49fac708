"""Physical pruning: remove output channels in place with Torch-Pruning, ranked by a criterion.

How many channels each group loses is :func:`autokd.prune.structure.n_pruned`'s rule; which ones
is the criterion's choice (the lowest importance goes, ties by index).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.nn as nn
import torch_pruning as tp

from ..models import channel_plan
from ..registry import Registry
from .structure import RatioSpec, groups_of, layout, resolve_ratios, target_plan, trace


# ------------------------------------------------------------------ importance criteria
@dataclass(frozen=True)
class Criterion:
    """A Torch-Pruning importance estimator; ``needs_grad``: call ``loss_fn`` + backward first."""

    make: Callable[[], tp.importance.Importance]
    needs_grad: bool = False


CRITERIA: Registry[Criterion] = Registry("pruning criterion")
# Group L1 (DepGraph's default form): |w| summed over the channel's filter, the BN scale and the
# consumers' input slices, averaged over the group's layers.
CRITERIA.add("l1", Criterion(lambda: tp.importance.MagnitudeImportance(p=1)))
# Network slimming: |gamma| of the BNs in the group (groups without a BN fall back to l1).
CRITERIA.add("bn", Criterion(lambda: tp.importance.BNScaleImportance()))
# First-order Taylor |w * dL/dw| (Molchanov et al. 2019); gradients from ``loss_fn``.
CRITERIA.add("taylor", Criterion(lambda: tp.importance.TaylorImportance(), needs_grad=True))



# ------------------------------------------------------------------ physical pruning
def _importance(crit: tp.importance.Importance, group) -> torch.Tensor | None:
    imp = crit(group)
    return None if imp is None else torch.nan_to_num(imp.detach().float().cpu(), nan=0.0)


def _fill_grads(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor] | None) -> None:
    if loss_fn is None:
        raise ValueError("this pruning criterion needs gradients: pass loss_fn")
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        loss_fn(model).backward()
    for p in model.parameters():  # layers the loss does not reach rank as unimportant
        if p.grad is None:
            p.grad = torch.zeros_like(p)


def _choose(model: nn.Module, dg: tp.DependencyGraph, target: Mapping[str, int], crit: Criterion) -> list:
    """(root layer, pruning fn, channel indices) per group, all ranked on the unpruned weights
    first (as Torch-Pruning's own pruners do): the lowest importance goes, ties by index."""
    scorer, fallback = crit.make(), tp.importance.MagnitudeImportance(p=1)
    plans = []
    for g in groups_of(model, dg):
        root = model.get_submodule(g.members[0])
        c = dg.get_out_channels(root)
        n = c - target[g.members[0]]
        if n <= 0:
            continue
        fn = dg.get_pruner_of_module(root).prune_out_channels
        full = dg.get_pruning_group(root, fn, list(range(c)))
        imp = _importance(scorer, full)
        if imp is None:  # e.g. "bn" on a group without a BN (ConvTiny's fc1)
            imp = _importance(fallback, full)
        order = torch.argsort(imp, stable=True) if imp is not None else torch.arange(c)
        plans.append((root, fn, sorted(order[:n].tolist())))
    return plans


def prune_model(model: nn.Module, ratios: RatioSpec, *, criterion: str | Criterion = "l1",
                input_shape: tuple[int, ...], loss_fn: Callable[[nn.Module], torch.Tensor] | None = None,
                round_to: int = 1) -> nn.Module:
    """Remove output channels in place and return ``model`` (same object, metadata kept).

    Each group loses :func:`n_pruned` channels, those with the lowest ``criterion`` importance
    (ties: lowest index first; deterministic for the same weights). The classifier's outputs
    and the model's input channels are never touched. ``loss_fn(model) -> loss`` is required
    by criteria with ``needs_grad`` ("taylor"): called once as is (its train/eval mode is the
    caller's), then backpropagated before ranking. The result has no masks, hooks or grads,
    and ``create_model(model.arch, **model.build_args, plan=channel_plan(model))`` rebuilds
    its exact shapes. Parameters are replaced: build the optimizer after pruning.
    """
    target = target_plan(layout(model), channel_plan(model), resolve_ratios(model, ratios), round_to)
    return prune_to_plan(model, target, criterion=criterion, input_shape=input_shape, loss_fn=loss_fn)


def prune_to_plan(model: nn.Module, target: Mapping[str, int], *, criterion: str | Criterion = "l1",
                  input_shape: tuple[int, ...], loss_fn: Callable[[nn.Module], torch.Tensor] | None = None) -> nn.Module:
    """Remove output channels in place until ``channel_plan(model) == target`` (each group's count
    from a plan that ``target_plan`` made, e.g. one step of gradual pruning); see :func:`prune_model`."""
    crit = CRITERIA.get(criterion) if isinstance(criterion, str) else criterion
    if crit.needs_grad:
        _fill_grads(model, loss_fn)
    dg = trace(model, input_shape)
    for root, fn, idxs in _choose(model, dg, target, crit):
        dg.get_pruning_group(root, fn, idxs).prune()
    model.zero_grad(set_to_none=True)
    got = channel_plan(model)
    if got != dict(target):  # the counting rule is the contract predict_cost relies on
        bad = {k: (got.get(k), v) for k, v in target.items() if got.get(k) != v}
        raise RuntimeError(f"pruning reached a different plan than predicted (got, want): {bad}")
    return model


def copy_into(src: nn.Module, dst: nn.Module) -> nn.Module:
    """Copy weights and buffers of ``src`` into ``dst`` (identical keys and shapes, e.g. the
    model rebuilt from ``channel_plan(src)``); the same as ``dst.load_state_dict(src.state_dict())``."""
    dst.load_state_dict(src.state_dict(), strict=True)
    return dst
