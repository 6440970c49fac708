"""Prune stage: physical structured pruning of output channels with Torch-Pruning's DepGraph.

A *ratio spec* is one float (every prunable layer) or a dict over the keys of
:func:`prunable_groups`; :func:`resolve_ratios` expands it to one ratio per prunable layer.
Layers that share channels (a ResNet stage's residual stream: the stem or the projection
shortcut plus every block's ``conv2``) form one *group* and are pruned as one channel set;
Torch-Pruning's ``DependencyGraph`` finds the groups, so the structure stays consistent.

The one counting rule (:func:`n_pruned`): a group of ``c`` channels at ratio ``r`` loses
``min(c - 1, floor(r * c + 0.5))`` channels (round half up, at least one channel kept).
Counts depend on ``(c, r, round_to)`` only, never on the weights or the criterion: the
criterion picks *which* channels go, not *how many*. That is why :func:`predict_cost` knows the
exact MACs before any training, and :func:`prune_model` asserts it reached the same plan.

Learned channel gates for pruning during distillation (PDD) live in :mod:`autokd.prune_masks`
and are re-exported here as :class:`ChannelGates`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from numbers import Real
from typing import Callable, Mapping

import torch
import torch.nn as nn
import torch_pruning as tp

from .errors import UserError
from .measure import Cost, count_macs, count_params
from .models import channel_plan, create_model
from .registry import Registry

MAX_RATIO = 0.95  # past this a 16-channel layer keeps 1 channel; the search never needs more
# Layout (which layers couple, stages, output positions) does not depend on the width, so it is
# traced once per (arch, classes, in_channels) on a small copy: TRACE_WIDTH of the channels on a
# TRACE_HW x TRACE_HW input (every registered model ends in a global pool).
TRACE_WIDTH, TRACE_HW = 0.25, 32
RatioSpec = float | Mapping[str, float]


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


def n_pruned(channels: int, ratio: float, round_to: int = 1) -> int:
    """Channels removed from a group of ``channels`` at ``ratio``: round half up, keep >= 1.

    With ``round_to > 1`` the kept count is rounded (half up) to a multiple of ``round_to``
    (at least ``round_to``, at most ``channels``).
    """
    n = min(channels - 1, int(math.floor(ratio * channels + 0.5)))
    if round_to > 1:
        keep = round_to * int(math.floor((channels - n) / round_to + 0.5))
        n = channels - min(channels, max(round_to, keep))
    return max(0, n)


# ------------------------------------------------------------------ structure (DepGraph)
@dataclass(frozen=True)
class Group:
    """Layers sharing one set of output channels. ``gated[i]`` is the module right after
    ``members[i]`` whose output a channel gate multiplies (its BN, else the layer itself)."""

    members: tuple[str, ...]  # conv / hidden linear names, model order; members[0] is the root
    gated: tuple[str, ...]


def _trace(model: nn.Module, input_shape: tuple[int, ...]) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model``; leaves its train/eval mode and grads flags."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    was_training = model.training
    try:
        for p in params:
            p.requires_grad_(True)  # tracing follows grad_fn links
        x = torch.zeros(1, *input_shape, device=params[0].device)
        with torch.enable_grad():
            dg = tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        model.train(was_training)
    return dg


def _groups_of(model: nn.Module, dg: tp.DependencyGraph) -> list[Group]:
    """The prunable groups of ``model`` (classifier outputs and model inputs never included)."""
    name_of = {m: n for n, m in model.named_modules()}
    order = {n: i for i, n in enumerate(name_of.values())}
    layer_types = (nn.Conv2d, nn.Linear)
    classifier = model.get_submodule(model.classifier_name)
    groups = []
    for g in dg.get_all_groups(ignored_layers=[classifier], root_module_types=layer_types):
        members = sorted({name_of[d.target.module] for d, _ in g
                          if dg.is_out_channel_pruning_fn(d.handler) and isinstance(d.target.module, layer_types)},
                         key=order.__getitem__)
        gated = []
        for name in members:
            outs = [n.module for n in dg.module2node[model.get_submodule(name)].outputs]
            bn = len(outs) == 1 and isinstance(outs[0], nn.modules.batchnorm._BatchNorm)
            gated.append(name_of[outs[0]] if bn else name)
        groups.append(Group(tuple(members), tuple(gated)))
    return sorted(groups, key=lambda g: order[g.members[0]])


def _stages(model: nn.Module, layers: list[str]) -> dict[str, tuple[str, ...]]:
    """Stage key -> its prunable layers. VGG: ``stage1..5`` (the convs before each pool);
    otherwise each distillation point that contains layers (``layer1``.., ``block1``..)."""
    stages: dict[str, list[str]] = {}
    pools = list(getattr(model, "pool_names", []))
    if pools:
        container = pools[0].rsplit(".", 1)[0]
        bounds = [int(p.rsplit(".", 1)[1]) for p in pools]
        for name in layers:
            prefix, _, idx = name.rpartition(".")
            if prefix == container and idx.isdigit():
                k = next((k for k, b in enumerate(bounds) if int(idx) < b), len(bounds) - 1)
                stages.setdefault(f"stage{k + 1}", []).append(name)
    else:
        for point in model.points:
            members = [n for n in layers if n.startswith(point + ".")]
            if members:
                stages[point] = members
    return {k: tuple(v) for k, v in stages.items()}


@dataclass(frozen=True)
class Structure:
    """What pruning needs to know about an architecture's layout (the same at every width)."""

    layers: tuple[str, ...]  # prunable layers, model order
    groups: tuple[Group, ...]
    stages: dict[str, tuple[str, ...]]


@lru_cache(maxsize=64)
def _structure(arch: str, num_classes: int, in_channels: int) -> Structure:
    model = create_model(arch, num_classes=num_classes, in_channels=in_channels, width=TRACE_WIDTH)
    groups = _groups_of(model, _trace(model, (in_channels, TRACE_HW, TRACE_HW)))
    layers = [n for n in channel_plan(model) if any(n in g.members for g in groups)]
    return Structure(tuple(layers), tuple(groups), _stages(model, layers))


def _layout(model: nn.Module) -> Structure:
    """The cached :class:`Structure` of ``model``'s architecture."""
    return _structure(model.arch, model.build_args["num_classes"], model.build_args["in_channels"])


# ------------------------------------------------------------------ ratio specs
def prunable_groups(model: nn.Module) -> list[str]:
    """Keys a ratio spec may use: stage keys first, then every prunable layer name.

    Stage keys: ResNets ``layer1``..``layerN`` (every conv in the stage: the blocks' inner
    ``conv1`` and the residual group, whose ratio also reaches the stem ``conv1`` for
    ``layer1`` and the projection shortcut for later stages); VGG ``stage1``..``stage5`` (the
    convs before each pool); ConvTiny/ConvVeryTiny ``block1``..``block3``. Layer keys: every
    conv and hidden linear (``fc1``) by module name; the classifier is never prunable.
    """
    st = _layout(model)
    return list(st.stages) + list(st.layers)


def _check_ratio(key: str, r: object) -> float:
    if isinstance(r, bool) or not isinstance(r, Real) or not 0.0 <= float(r) <= MAX_RATIO:
        raise UserError(f"pruning ratio {key}={r!r} must be a number in [0, {MAX_RATIO}]")
    return float(r)


def _key_list(st: Structure, most: int = 24) -> str:
    layers = list(st.layers)
    if len(layers) > most:  # resnet110 has 109 layers: name the pattern, keep the line short
        layers = layers[:8] + [f"... and {len(layers) - 8} more layer names (every conv / hidden linear)"]
    return ", ".join(list(st.stages) + layers)


def _resolve(st: Structure, spec: RatioSpec, arch: str) -> dict[str, float]:
    # (ratio, precedence): global 0 < stage key 1 < layer key 2; a group takes its members'
    # highest-precedence ratio, and two different ratios at that precedence are an error.
    if isinstance(spec, Mapping):
        assigned = {n: (0.0, 0) for n in st.layers}
        for key, r in spec.items():
            r = _check_ratio(str(key), r)
            if key in assigned:
                assigned[key] = (r, 2)
            elif key in st.stages:
                for n in st.stages[key]:
                    if assigned[n][1] < 1:
                        assigned[n] = (r, 1)
            else:
                raise UserError(f"unknown pruning key {key!r} for {arch}; valid keys: {_key_list(st)}")
    else:
        r = _check_ratio("ratio", spec)
        assigned = {n: (r, 0) for n in st.layers}
    out: dict[str, float] = {}
    for g in st.groups:
        top = max(assigned[n][1] for n in g.members)
        values = {assigned[n][0] for n in g.members if assigned[n][1] == top}
        if len(values) > 1:
            raise UserError(f"layers {', '.join(g.members)} share their channels (residual coupling) "
                            f"but got ratios {sorted(values)}; give one ratio or use the stage key")
        ratio = values.pop()
        out.update({n: ratio for n in g.members})
    return {n: out[n] for n in st.layers}


def resolve_ratios(model: nn.Module, spec: RatioSpec) -> dict[str, float]:
    """Expand a ratio spec to ``{prunable layer: ratio in [0, 0.95]}`` (coupled layers equal).

    ``spec`` is one float for every layer, or a dict over :func:`prunable_groups`; layers a
    dict does not reach keep ratio 0; a layer key overrides its stage key. Raises
    :class:`UserError` (one line) on an unknown key, a ratio outside [0, 0.95], or two
    different layer ratios inside one residual group. Idempotent on its own output.
    """
    return _resolve(_layout(model), spec, model.arch)


def _target_plan(st: Structure, base: Mapping[str, int], ratios: Mapping[str, float], round_to: int) -> dict[str, int]:
    plan = dict(base)
    for g in st.groups:
        c = base[g.members[0]]
        keep = c - n_pruned(c, ratios[g.members[0]], round_to)
        plan.update({n: keep for n in g.members})
    return plan


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
    for g in _groups_of(model, dg):
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
    crit = CRITERIA.get(criterion) if isinstance(criterion, str) else criterion
    target = _target_plan(_layout(model), channel_plan(model), resolve_ratios(model, ratios), round_to)
    if crit.needs_grad:
        _fill_grads(model, loss_fn)
    dg = _trace(model, input_shape)
    for root, fn, idxs in _choose(model, dg, target, crit):
        dg.get_pruning_group(root, fn, idxs).prune()
    model.zero_grad(set_to_none=True)
    got = channel_plan(model)
    if got != target:  # the counting rule is the contract predict_cost relies on
        bad = {k: (got.get(k), v) for k, v in target.items() if got.get(k) != v}
        raise RuntimeError(f"pruning reached a different plan than predicted (got, want): {bad}")
    return model


def copy_into(src: nn.Module, dst: nn.Module) -> nn.Module:
    """Copy weights and buffers of ``src`` into ``dst`` (identical keys and shapes, e.g. the
    model rebuilt from ``channel_plan(src)``); the same as ``dst.load_state_dict(src.state_dict())``."""
    dst.load_state_dict(src.state_dict(), strict=True)
    return dst


# ------------------------------------------------------------------ cost before training
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
                 input_shape: tuple[int, ...], round_to: int = 1) -> tuple[dict[str, int], Cost]:
    """Channel plan and exact :class:`Cost` of ``arch`` at ``width`` after pruning with
    ``ratios_spec``, without pruning anything: counts follow :func:`n_pruned`, which does not
    depend on weights or criterion, so this equals ``measure(prune_model(...))`` for every
    criterion. Layout and output positions are cached per (arch, classes, in_channels, input
    shape); a warm call takes about 30 ms for resnet56 on 3x32x32 (2-core CPU). The first call
    per input shape checks the analytic MAC count against ``count_macs`` once.
    """
    args = dict(num_classes=num_classes, in_channels=in_channels, width=width)
    st = _structure(arch, num_classes, in_channels)
    base = _base_plan(arch, num_classes, in_channels, width)
    plan = _target_plan(st, base, _resolve(st, ratios_spec, arch), round_to)
    positions = _positions(arch, num_classes, in_channels, tuple(input_shape))
    if positions is None:
        model = create_model(arch, **args, plan=plan)
        return plan, Cost(macs=count_macs(model, tuple(input_shape)), params=count_params(model))
    with torch.device("meta"):  # shapes only: no allocation, no init
        model = create_model(arch, **args, plan=plan)
    return plan, Cost(macs=_analytic_macs(model, positions), params=count_params(model))


from .prune_masks import ChannelGates  # noqa: E402  (PDD gates; needs the helpers above)

__all__ = ["CRITERIA", "Criterion", "ChannelGates", "n_pruned", "prunable_groups", "resolve_ratios",
           "prune_model", "copy_into", "predict_cost"]
