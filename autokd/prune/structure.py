"""Which channels can be pruned together, and how many go: the layout of an architecture.

A *ratio spec* is one float (every prunable layer) or a dict over the keys of
:func:`prunable_groups`; :func:`resolve_ratios` expands it to one ratio per prunable layer.
Layers that share channels (a ResNet stage's residual stream: the stem or the projection
shortcut plus every block's ``conv2``) form one *group* and are pruned as one channel set;
Torch-Pruning's ``DependencyGraph`` finds the groups (:func:`trace`, :func:`groups_of`), so the
structure stays consistent.

The one counting rule (:func:`n_pruned`): a group of ``c`` channels at ratio ``r`` loses
``min(c - 1, floor(r * c + 0.5))`` channels (round half up, at least one channel kept).
Counts depend on ``(c, r, round_to)`` only, never on the weights or the criterion: the
criterion picks *which* channels go, not *how many*. That is why ``autokd.prune.cost`` knows the
exact MACs before any training, and ``prune_model`` asserts it reached the same plan.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from numbers import Real
from typing import Mapping

import torch
import torch.nn as nn
import torch_pruning as tp

from ..candidate import MAX_RATIO
from ..errors import UserError
from ..models import channel_plan, create_model, tags

# Layout (which layers couple, stages, output positions) does not depend on the width, so it is
# traced once per (arch, classes, in_channels) on a small copy: TRACE_WIDTH of the channels on a
# TRACE_HW x TRACE_HW input (every registered model ends in a global pool).
TRACE_WIDTH, TRACE_HW = 0.25, 32
RatioSpec = float | Mapping[str, float]


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


def trace(model: nn.Module, input_shape: tuple[int, ...]) -> tp.DependencyGraph:
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


def groups_of(model: nn.Module, dg: tp.DependencyGraph) -> list[Group]:
    """The prunable groups of ``model`` (classifier outputs and model inputs never included)."""
    name_of = {m: n for n, m in model.named_modules()}
    order = {n: i for i, n in enumerate(name_of.values())}
    layer_types = (nn.Conv2d, nn.Linear)
    classifier = model.get_submodule(tags(model).classifier_name)
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
        for point in tags(model).points:
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
def structure(arch: str, num_classes: int, in_channels: int) -> Structure:
    model = create_model(arch, num_classes=num_classes, in_channels=in_channels, width=TRACE_WIDTH)
    groups = groups_of(model, trace(model, (in_channels, TRACE_HW, TRACE_HW)))
    layers = [n for n in channel_plan(model) if any(n in g.members for g in groups)]
    return Structure(tuple(layers), tuple(groups), _stages(model, layers))


def layout(model: nn.Module) -> Structure:
    """The cached :class:`Structure` of ``model``'s architecture."""
    t = tags(model)
    return structure(t.arch, t.build_args["num_classes"], t.build_args["in_channels"])


# ------------------------------------------------------------------ ratio specs
def prunable_groups(model: nn.Module) -> list[str]:
    """Keys a ratio spec may use: stage keys first, then every prunable layer name.

    Stage keys: ResNets ``layer1``..``layerN`` (every conv in the stage: the blocks' inner
    ``conv1`` and the residual group, whose ratio also reaches the stem ``conv1`` for
    ``layer1`` and the projection shortcut for later stages); VGG ``stage1``..``stage5`` (the
    convs before each pool); ConvTiny/ConvVeryTiny ``block1``..``block3``. Layer keys: every
    conv and hidden linear (``fc1``) by module name; the classifier is never prunable.
    """
    st = layout(model)
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


def resolve_spec(st: Structure, spec: RatioSpec, arch: str) -> dict[str, float]:
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
    return resolve_spec(layout(model), spec, tags(model).arch)


def target_plan(st: Structure, base: Mapping[str, int], ratios: Mapping[str, float], round_to: int) -> dict[str, int]:
    plan = dict(base)
    for g in st.groups:
        c = base[g.members[0]]
        keep = c - n_pruned(c, ratios[g.members[0]], round_to)
        plan.update({n: keep for n in g.members})
    return plan
