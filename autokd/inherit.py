"""Students that inherit the teacher: a zoo model built from the trained teacher's own weights.

A *family* is a set of architectures with one layout, so a shallower member can take its layers
from a deeper one: the CIFAR ResNets (resnet20/32/44/56/110: three stages of n basic blocks) and
VGG-BN (vgg11/13/16/19: five conv stages). resnet18, convtiny and convverytiny are each a family
of their own: only the same architecture inherits from them.

A *block map* says which teacher module every student module copies: the stem and the
classifier always map to themselves, and so does each stage's first block (a ResNet stage's
``layerS.0``, which downsamples and projects; a VGG stage's first conv + BN, which changes the
channel count). The stage's other student blocks take teacher blocks chosen by a rule
(:data:`BLOCK_RULES`). With m remaining teacher blocks (1..m) and k remaining student blocks:

    "even"   round(j * m / k) for j = 1..k (half up): evenly spaced, always ending at block m
    "first"  1..k
    "last"   m-k+1..m

The default is "even", chosen by a measurement on digits (scripts outside the repo): teacher
trained 8 epochs (``train_model``, ``TrainConfig(epochs=8, seed)``), resnet20 inherited with
each rule, BN recalibrated on 512 training images; val accuracy, mean +- sd over seeds 0-4:

    teacher (blocks/stage)  rule   no training    1 epoch, lr 0.01   pruned 50 % l1, then 1 epoch
    resnet32 (5)            even   0.949+-0.016   0.972+-0.010       0.954+-0.006
                            first  0.971+-0.019   0.978+-0.008       0.946+-0.018
                            last   0.932+-0.022   0.968+-0.015       0.950+-0.019
    resnet56 (9)            even   0.406+-0.142   0.863+-0.066       0.785+-0.058
                            first  0.371+-0.031   0.842+-0.066       0.685+-0.070
                            last   0.399+-0.130   0.881+-0.040       0.783+-0.040

"first" is best for a small depth gap and worst for a large one (10 points behind once
pruned); "last" trails by 4 points untrained for the small gap; "even" is never more than 2.2
points behind the best rule in any cell, so it is the default. The differences are of the
order of the seed spread (digits val has 144 images): the rule matters less than the gap.

The student's channel counts come from the teacher's plan (:func:`autokd.models.channel_plan`),
so a pruned teacher gives a pruned student; every parameter and buffer (BN running statistics
included) is copied. :func:`recalibrate_bn` re-estimates BN statistics after the student's
layers no longer see the inputs they were trained on (blocks dropped, channels pruned).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch
import torch.nn as nn

from .errors import UserError
from .models import MODELS, channel_plan, create_model, tags
from .models.vgg import SafePool

# Images recalibrate_bn needs. Measured on digits (resnet20 inherited from resnet32, pruned
# 50 %, rules even and first, 5 random subsets against all 1,294 training images): from 512
# images every BN's mean is within 0.04 std and its variance within 8 % of the full-set value,
# test accuracy within 0.3 points of it (sd <= 0.9); from 128: 0.08 std, 20 %, up to 1.2
# points lower (sd up to 1.6).
RECALIBRATION_IMAGES = 512

Block = tuple[str, ...]  # the module names that move together (a ResNet block; a VGG conv + BN)


# ------------------------------------------------------------------ families and layouts
@dataclass(frozen=True)
class Layout:
    """An architecture's modules as inheritance sees them (the same at every width)."""

    fixed: tuple[str, ...]             # kept by every member, mapped to themselves (stem, classifier)
    stages: tuple[tuple[Block, ...], ...]  # stage -> its blocks, in order; block 0 is always kept

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.stages)


def _resnet_layout(model: nn.Module) -> Layout:
    """Stages are the distillation points ``layer1..``; every other child is fixed."""
    points = tags(model).points
    stages = tuple(tuple((f"{p}.{i}",) for i in range(len(list(model.get_submodule(p).children())))) for p in points)
    fixed = tuple(n for n, _ in model.named_children() if n not in points)
    return Layout(fixed, stages)


def _vgg_layout(model: nn.Module) -> Layout:
    """Stages are the convs before each pool; a block is a conv and the modules holding state
    after it (its BN); the classifier is fixed."""
    stages: list[tuple[Block, ...]] = []
    blocks: list[list[str]] = []
    for i, m in enumerate(model.get_submodule("features").children()):
        if isinstance(m, nn.Conv2d):
            blocks.append([f"features.{i}"])
        elif isinstance(m, SafePool):
            stages.append(tuple(tuple(b) for b in blocks))
            blocks = []
        elif blocks and m.state_dict():
            blocks[-1].append(f"features.{i}")
    return Layout((tags(model).classifier_name,), tuple(stages))


def _flat_layout(model: nn.Module) -> Layout:
    """No depth to vary: every child is fixed (the architecture inherits only from itself)."""
    return Layout(tuple(n for n, _ in model.named_children()), ())


@dataclass(frozen=True)
class Family:
    """Architectures that inherit from each other, and how to read their :class:`Layout`."""

    members: tuple[str, ...]  # shallow to deep
    layout: Callable[[nn.Module], Layout]


FAMILIES: dict[str, Family] = {
    "cifar-resnet": Family(("resnet20", "resnet32", "resnet44", "resnet56", "resnet110"), _resnet_layout),
    "vgg-bn": Family(("vgg11", "vgg13", "vgg16", "vgg19"), _vgg_layout),
    "resnet18": Family(("resnet18",), _resnet_layout),
    "convtiny": Family(("convtiny",), _flat_layout),
    "convverytiny": Family(("convverytiny",), _flat_layout),
}


def _family(arch: str) -> Family:
    """The family holding ``arch``; a model registered later is a family of its own."""
    return next((f for f in FAMILIES.values() if arch in f.members), Family((arch,), _flat_layout))


def _known(arch: str, role: str) -> None:
    if arch not in MODELS:
        raise UserError(f"--init teacher: unknown {role} architecture {arch!r}; choose one of: "
                        + ", ".join(MODELS.names()))


@lru_cache(maxsize=64)
def _meta_model(arch: str) -> nn.Module:
    """``arch`` at its default width on the meta device: names and structure, no storage."""
    with torch.device("meta"):
        return create_model(arch)


@lru_cache(maxsize=64)
def _layout(arch: str) -> Layout:
    return _family(arch).layout(_meta_model(arch))


# ------------------------------------------------------------------ block maps
def _even(m: int, k: int) -> list[int]:
    return [(2 * j * m + k) // (2 * k) for j in range(1, k + 1)]  # round(j*m/k), half up


_RULES: dict[str, Callable[[int, int], list[int]]] = {
    "even": _even,
    "first": lambda m, k: list(range(1, k + 1)),
    "last": lambda m, k: list(range(m - k + 1, m + 1)),
}
BLOCK_RULES: tuple[str, ...] = tuple(_RULES)


def check_inheritable(teacher_arch: str, student_arch: str) -> None:
    """Raise :class:`UserError` (one line) unless ``student_arch`` can inherit from
    ``teacher_arch``: both registered, one family, and no student stage deeper than the teacher's."""
    _known(teacher_arch, "teacher")
    _known(student_arch, "student")
    members = _family(teacher_arch).members
    if student_arch not in members:
        raise UserError(f"--init teacher: student {student_arch} is not of teacher {teacher_arch}'s family "
                        f"({', '.join(members)}); choose a student from it or initialise at random")
    t, s = _layout(teacher_arch).depths, _layout(student_arch).depths
    if any(b > a for a, b in zip(t, s)):
        fits = [m for m in members if all(b <= a for a, b in zip(t, _layout(m).depths))]
        raise UserError(f"--init teacher: student {student_arch} (blocks per stage {s}) is deeper than "
                        f"teacher {teacher_arch} {t}; choose one of: {', '.join(fits)}")


def _pick(rule: str, n_teacher: int, n_student: int) -> list[int]:
    """Teacher block indices a stage of ``n_student`` blocks takes: 0, then ``rule``'s choice."""
    k = n_student - 1
    return [0] + (_RULES[rule](n_teacher - 1, k) if k else [])


def block_map(teacher_arch: str, student_arch: str, rule: str = "even") -> dict[str, str]:
    """Student module name prefix -> the teacher module prefix it copies, in student module order.

    Covers every student module that holds state. Raises :class:`UserError` (one line) for an
    unknown rule or a pair :func:`check_inheritable` refuses.
    """
    if rule not in _RULES:
        raise UserError(f"--init teacher: unknown block rule {rule!r}; choose one of: {', '.join(BLOCK_RULES)}")
    check_inheritable(teacher_arch, student_arch)
    t, s = _layout(teacher_arch), _layout(student_arch)
    mapping = {name: name for name in s.fixed}
    for t_blocks, s_blocks in zip(t.stages, s.stages):
        for s_block, i in zip(s_blocks, _pick(rule, len(t_blocks), len(s_blocks))):
            mapping.update(zip(s_block, t_blocks[i]))
    order = {n: i for i, (n, _) in enumerate(_meta_model(student_arch).named_modules())}
    return dict(sorted(mapping.items(), key=lambda kv: order[kv[0]]))


def _teacher_name(name: str, mapping: dict[str, str]) -> str:
    """``name`` with its longest mapped dotted prefix replaced by the teacher's."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        head = ".".join(parts[:i])
        if head in mapping:
            return ".".join([mapping[head], *parts[i:]])
    raise KeyError(f"{name!r} is under no block of the map")  # a layout bug, never the user's


# ------------------------------------------------------------------ plans and students
def _check_shapes(teacher_arch: str, teacher_plan: dict[str, int], student_arch: str,
                  plan: dict[str, int], mapping: dict[str, str]) -> None:
    """UserError if a student tensor would not have its teacher tensor's shape. Happens when
    dropped VGG convs were pruned to other widths than the kept ones, so a kept conv's inputs
    no longer match the conv before it."""
    with torch.device("meta"):
        t = create_model(teacher_arch, plan=teacher_plan).state_dict()
        s = create_model(student_arch, plan=plan).state_dict()
    for key, tensor in s.items():
        source = _teacher_name(key, mapping)
        if tensor.shape != t[source].shape:
            raise UserError(f"--init teacher: student {student_arch}'s {key} needs shape {tuple(tensor.shape)} "
                            f"but teacher {teacher_arch}'s {source} is {tuple(t[source].shape)} (the teacher's "
                            f"convs of one stage were pruned to different widths); use a full-depth student")


def inherited_plan(teacher_arch: str, teacher_plan: dict[str, int], student_arch: str,
                   rule: str = "even") -> dict[str, int]:
    """The channel plan of the student :func:`inherit_student` builds, without any weights.

    ``teacher_plan`` is the teacher's full plan (``channel_plan(teacher)``); each student layer
    takes its teacher layer's channels through :func:`block_map`. For an unpruned teacher of
    width w this equals ``channel_plan(create_model(student_arch, width=w))``, so
    :func:`autokd.prune.predict_cost` at width w is exact for inherited students. Raises
    :class:`UserError` (one line) if the pair cannot inherit or the shapes would not fit.
    """
    return dict(_inherited_plan(teacher_arch, tuple(teacher_plan.items()), student_arch, rule))


@lru_cache(maxsize=256)
def _inherited_plan(teacher_arch: str, teacher_items: tuple[tuple[str, int], ...], student_arch: str,
                    rule: str) -> tuple[tuple[str, int], ...]:
    """:func:`inherited_plan` on a hashable plan, remembered: pricing a candidate asks it again for every
    step of a projection's bisection, and each answer builds two models (shapes only)."""
    teacher_plan = dict(teacher_items)
    mapping = block_map(teacher_arch, student_arch, rule)
    missing = [n for n in channel_plan(_meta_model(teacher_arch)) if n not in teacher_plan]
    if missing:
        raise ValueError(f"teacher_plan is not a full {teacher_arch} plan: no {', '.join(missing[:3])}")
    plan = {name: int(teacher_plan[_teacher_name(name, mapping)]) for name in channel_plan(_meta_model(student_arch))}
    _check_shapes(teacher_arch, teacher_plan, student_arch, plan, mapping)
    return tuple(plan.items())


def inherit_student(teacher: nn.Module, student_arch: str | None = None, *, rule: str = "even") -> nn.Module:
    """A zoo model of ``student_arch`` (default: the teacher's) holding copies of the teacher's tensors.

    ``num_classes``, ``in_channels`` and ``width`` come from ``teacher.build_args``, channel
    counts from :func:`inherited_plan`; every parameter and buffer is copied from the teacher
    module :func:`block_map` names. The student is a plain zoo model on the teacher's device, in
    the teacher's train/eval mode, sharing no storage with it, and
    ``create_model(s.arch, **s.build_args, plan=channel_plan(s))`` rebuilds its exact shapes.
    At full depth it computes the teacher's function exactly. Global RNG state is not touched.
    """
    t = tags(teacher)
    arch = student_arch or t.arch
    plan = inherited_plan(t.arch, channel_plan(teacher), arch, rule)
    mapping = block_map(t.arch, arch, rule)
    with torch.device("meta"):  # no init: every tensor is overwritten below
        student = create_model(arch, **t.build_args, plan=plan)
    source = teacher.state_dict()
    student.to_empty(device=next(teacher.parameters()).device)
    student.load_state_dict({k: source[_teacher_name(k, mapping)] for k in student.state_dict()}, strict=True)
    return student.train(teacher.training)


# ------------------------------------------------------------------ BN recalibration
@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: torch.Tensor, *, batch_size: int = 128) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on ``images``; returns ``model``.

    Each BN's running mean/var are reset and re-estimated with train-mode forward passes over
    ``images`` in near-equal batches of at most ``batch_size`` images (the cumulative average,
    ``momentum=None``); then each BN's momentum and every module's train/eval mode are
    restored. Only running statistics and ``num_batches_tracked`` change. Needs >= 2 images;
    :data:`RECALIBRATION_IMAGES` is enough (see its comment).
    """
    if len(images) < 2 or batch_size < 2:
        raise ValueError(f"recalibrate_bn needs >= 2 images and batch_size >= 2, got {len(images)}, {batch_size}")
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [bn.momentum for bn in bns]
    modes = [(m, m.training) for m in model.modules()]
    device = next(model.parameters()).device
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        # near-equal batches weigh alike in the average; >= 2 images each (BN on a 1x1 map needs 2)
        for x in torch.tensor_split(images, min(-(-len(images) // batch_size), len(images) // 2)):
            model(x.to(device))
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        for m, training in modes:
            m.training = training
    return model


__all__ = ["BLOCK_RULES", "FAMILIES", "RECALIBRATION_IMAGES", "check_inheritable", "block_map",
           "inherited_plan", "inherit_student", "recalibrate_bn"]
