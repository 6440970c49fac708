"""The search space a teacher gets when a search names none, and the check that a space serves a teacher.

Each model family has one shipped space, written for one teacher (its ``teacher:``): resnet56's
for the CIFAR ResNets, vgg16's for VGG-BN, resnet18's for resnet18 and the tiny nets. Any other
teacher of the family gets that space *restricted to what it can serve*, derived here rather than
written out once per teacher:

- ``student/arch``: where the space may sample ``student/init: teacher``, only the students that
  can inherit this teacher's layers (its family, no stage deeper than its own,
  :func:`autokd.inherit.check_inheritable`); the space's own teacher among the choices means "the
  teacher itself", so this teacher is offered in its place;
- ``kd/lambda/t<i>->s<j>``: only the pairs whose teacher point i and student point j exist (a
  resnet18 space's fourth teacher point is not a convtiny teacher's);
- ``warm_start``: each setting moved onto this teacher (the pruned teacher is this one), without the
  dropped λ pairs; a setting that falls outside the restricted space is left out;
- ``teacher:`` this teacher; the name ``<space>@<teacher>``.

The distributions stay Optuna's own data; the search writes the space it used into the study's
folder (:func:`autokd.space.write_space`), so a resume samples the same one. The family's own
teacher gets the shipped space unchanged.
"""
from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache

from optuna.distributions import CategoricalDistribution

from .candidate import Candidate
from .errors import UserError
from .space import SearchSpace, SpaceError, choices_of, load_space, shipped_spaces

# teacher family -> shipped space (fullmatch on the teacher's architecture name)
FAMILY_SPACES = (
    (r"resnet(20|32|44|56|110)", "resnet56_to_resnet"),   # CIFAR ResNets (6n+2 deep)
    (r"vgg\d+", "vgg16_to_vgg"),
    (r"resnet18|convtiny|convverytiny", "resnet18_to_convtiny"),
)
ARCH, INIT = "student/arch", "student/init"
LAMBDA = re.compile(r"kd/lambda/t(\d+)->s(\d+)")


def family_space(teacher_arch: str) -> str:
    """The shipped space of ``teacher_arch``'s family."""
    for pattern, space in FAMILY_SPACES:
        if re.fullmatch(pattern, teacher_arch):
            return space
    raise UserError(f"no default search space for teacher {teacher_arch!r}; pass one of "
                    f"{', '.join(shipped_spaces())} or a YAML file")


def default_space_for(teacher_arch: str) -> SearchSpace:
    """The space a search of ``teacher_arch`` uses without ``--space``: see the module doc."""
    space = load_space(family_space(teacher_arch))
    return space if space.teacher == teacher_arch else restrict_to_teacher(space, teacher_arch)


def restrict_to_teacher(space: SearchSpace, teacher_arch: str) -> SearchSpace:
    """``space`` with only the students, λ pairs and warm starts that ``teacher_arch`` can serve."""
    students = _students(space, teacher_arch)
    n_teacher, n_student = points(teacher_arch), min(points(s) for s in students)

    def keep(name: str) -> bool:
        m = LAMBDA.fullmatch(name)
        return m is None or (int(m[1]) <= n_teacher and int(m[2]) <= n_student)

    dists = {k: v for k, v in space.distributions.items() if keep(k)}
    if ARCH in dists:
        dists[ARCH] = CategoricalDistribution(students)
    warm = {}
    for name, params in space.warm_start.items():
        moved = {k: (teacher_arch if k == ARCH and v == space.teacher else v) for k, v in params.items() if keep(k)}
        if all(dists[k]._contains(dists[k].to_internal_repr(v)) for k, v in moved.items()):
            warm[name] = moved
    dropped = len(space.distributions) - len(dists)
    note = f"; restricted to teacher {teacher_arch}: students {', '.join(students)}" + (
        f", {dropped} lambda pairs dropped" if dropped else "")
    return replace(space, name=f"{space.name}@{teacher_arch}", teacher=teacher_arch, distributions=dists,
                   fixed={k: v for k, v in space.fixed.items() if keep(k)}, warm_start=warm,
                   description=space.description + note)


def _students(space: SearchSpace, teacher_arch: str) -> list[str]:
    """The ``student/arch`` choices ``teacher_arch`` can serve (the space's teacher read as this one)."""
    dist = space.distributions.get(ARCH)
    if dist is None:
        return [str(space.fixed.get(ARCH, Candidate().student))]
    choices = [str(c) for c in choices_of(dist)]
    if space.teacher in choices and teacher_arch not in choices:
        choices.append(teacher_arch)
    if may_inherit(space):
        choices = [c for c in choices if _inherits(teacher_arch, c)]
    if not choices:
        raise SpaceError(f"space {space.name!r} cannot serve teacher {teacher_arch}: none of its students "
                         f"({', '.join(map(str, choices_of(dist)))}) can inherit its layers; pass --space")
    return choices


def may_inherit(space: SearchSpace) -> bool:
    """Whether a sample of ``space`` can be ``student/init: teacher``."""
    if INIT in space.fixed:
        return space.fixed[INIT] == "teacher"
    dist = space.distributions.get(INIT)
    return "teacher" in choices_of(dist) if dist is not None else Candidate().init == "teacher"


def _inherits(teacher_arch: str, student_arch: str) -> bool:
    from .inherit import check_inheritable

    try:
        check_inheritable(teacher_arch, student_arch)
    except UserError:
        return False
    return True


@lru_cache(maxsize=64)
def points(arch: str) -> int:
    """How many distillation points ``arch`` has (built on the meta device: no storage)."""
    import torch

    from .models import create_model, tags

    with torch.device("meta"):
        return len(tags(create_model(arch)).points)


def check_lambda_points(space: SearchSpace, teacher_arch: str) -> None:
    """One line, before anything trains, if a ``kd/lambda/t<i>->s<j>`` of ``space`` names a point that
    the teacher or one of the space's students does not have (every trial would fail on it)."""
    students = _students_as_given(space)
    for name in [*space.distributions, *space.fixed]:
        m = LAMBDA.fullmatch(name)
        if m is None:
            continue
        if int(m[1]) > points(teacher_arch):
            raise UserError(f"space {space.name!r} cannot serve teacher {teacher_arch}: {name} names teacher "
                            f"point {m[1]}, and {teacher_arch} has {points(teacher_arch)}; drop the pair, or "
                            f"leave out --space for the teacher's default space")
        short = [s for s in students if int(m[2]) > points(s)]
        if short:
            raise UserError(f"space {space.name!r}: {name} names student point {m[2]}, and {short[0]} has "
                            f"{points(short[0])}; drop the pair or that student")


def _students_as_given(space: SearchSpace) -> list[str]:
    if ARCH in space.fixed:
        return [str(space.fixed[ARCH])]
    dist = space.distributions.get(ARCH)
    return [str(c) for c in choices_of(dist)] if dist is not None else [Candidate().student]


__all__ = ["family_space", "default_space_for", "restrict_to_teacher", "check_lambda_points", "may_inherit",
           "points"]
