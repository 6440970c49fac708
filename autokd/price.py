"""What a candidate costs, before anything is built or trained: candidate -> channel plan -> MACs.

The one place that knows how a candidate's student starts (:func:`start_of`: a scratch student from
its architecture and width, an inherited one from the teacher's plan at the teacher's width), which
ratio every prunable layer gets (:func:`pruning_ratios`, ``"*"`` and a width below 1 on an inherited
student resolved) and what the pruned student's plan and exact cost are (:func:`predict_student`).
The trial (:mod:`autokd.trial`) prunes with these ratios; the budget (:mod:`autokd.search.budget`)
prices and projects candidates with them. Torch-light: shapes only, on the meta device; no weights,
no data.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import torch
import torch.nn as nn

from .candidate import MAX_RATIO, Candidate, is_global
from .inherit import check_inheritable, inherited_plan
from .measure import Cost
from .models import create_model
from .prune import predict_cost, resolve_ratios


@dataclass(frozen=True)
class TeacherShape:
    """What the budget and inherited students need to know of the teacher, without training it."""

    arch: str
    macs: int
    plan: dict[str, int]   # its channel plan (a bundle's may be pruned)
    width: float
    num_classes: int
    input_shape: tuple[int, ...]


def start_of(c: Candidate, teacher: TeacherShape) -> tuple[float, dict[str, int] | None]:
    """(width, channel plan or None) of ``c``'s student before pruning: an inherited student
    (``init="teacher"``) has the teacher's width and the teacher blocks it keeps; a scratch one is
    its architecture at ``c.width`` (plan None)."""
    if c.init == "teacher":
        check_inheritable(teacher.arch, c.student)
        return teacher.width, inherited_plan(teacher.arch, teacher.plan, c.student, c.blocks)
    return c.width, None


def ratio_spec(model: nn.Module, prune: dict[str, float]) -> float | dict[str, float]:
    """Candidate.prune -> a ratio spec for ``autokd.prune``. ``{"*": r}`` alone is the float r;
    without "*" the dict is passed as is; "*" with other keys gives a per-layer dict: every
    layer at r, then each key's layers (as ``resolve_ratios`` expands that key, residual partners
    included) at its ratio, keys covering more layers first, so a layer key beats its stage key."""
    if set(prune) == {"*"}:
        return float(prune["*"])
    if "*" not in prune:
        return dict(prune)
    per_layer = resolve_ratios(model, float(prune["*"]))
    probe = 0.5  # any nonzero ratio marks the layers a key reaches
    reach = {k: [n for n, r in resolve_ratios(model, {k: probe}).items() if r == probe]
             for k in prune if k != "*"}
    for key in sorted(reach, key=lambda k: -len(reach[k])):
        per_layer.update({n: float(prune[key]) for n in reach[key]})
    return per_layer


def pruning_ratios(c: Candidate, student: nn.Module) -> dict[str, float]:
    """The ratio ``c`` asks for at every prunable layer of ``student`` (built, not yet pruned).

    With ``init="teacher"`` the student has the teacher's widths, and a ``width`` w below 1 means
    uniform pruning by importance on top of the candidate's ratios: each layer keeps the share
    w * (1 - r) of its channels, i.e. its ratio becomes 1 - w * (1 - r) (at most MAX_RATIO).
    """
    per_layer = resolve_ratios(student, ratio_spec(student, c.prune) if c.prune else 0.0)
    if c.init != "teacher" or c.width == 1.0:
        return per_layer
    return {n: min(MAX_RATIO, float(f"{1 - c.width * (1 - r):.12g}")) for n, r in per_layer.items()}


def _shape_of(c: Candidate, teacher: TeacherShape) -> tuple[nn.Module, float, dict[str, int] | None]:
    """(``c``'s student before pruning, on the meta device: shapes only; its width; its plan or None).
    The student is shared between calls (read, never changed): a projection prices one candidate's
    student at many ratios, and the student before pruning does not depend on them."""
    width, base = start_of(c, teacher)
    student = _meta_student(c.student, teacher.num_classes, teacher.input_shape[0], width,
                            None if base is None else tuple(base.items()))
    return student, width, base


@lru_cache(maxsize=64)
def _meta_student(arch: str, num_classes: int, in_channels: int, width: float,
                  plan: tuple[tuple[str, int], ...] | None) -> nn.Module:
    with torch.device("meta"):
        return create_model(arch, num_classes=num_classes, in_channels=in_channels, width=width,
                            plan=None if plan is None else dict(plan))


def student_ratios(c: Candidate, teacher: TeacherShape) -> dict[str, float]:
    """:func:`pruning_ratios` of ``c``'s student, built from shapes alone: per prunable layer, the
    form ``autokd.prune.prune_model`` takes (every key a layer name, no ``"*"``)."""
    student, _, _ = _shape_of(c, teacher)
    return pruning_ratios(c, student)


def predict_student(c: Candidate, teacher: TeacherShape) -> tuple[dict[str, int], Cost]:
    """(channel plan, exact cost) of ``c``'s student after pruning, before anything is built or trained."""
    student, width, base = _shape_of(c, teacher)
    return predict_cost(c.student, num_classes=teacher.num_classes, in_channels=teacher.input_shape[0], width=width,
                        ratios_spec=pruning_ratios(c, student), input_shape=teacher.input_shape, plan=base)


def unshaped(c: Candidate) -> Candidate:
    """``c`` with no pruning: no ratios, and an inherited student at the teacher's width (there a width
    under 1 prunes every layer uniformly, :func:`pruning_ratios`)."""
    return replace(c, prune={}, width=1.0 if c.init == "teacher" else c.width)


def predict_macs(c: Candidate, teacher: TeacherShape) -> int:
    """The exact MACs of ``c``'s student after pruning (:func:`predict_student`). A global-ranking
    candidate with a ``target_macs`` is priced at its target (its plan depends on the weights; it lands
    at or under the target), or at its unpruned MACs where those are less."""
    if is_global(c) and c.target_macs:
        return min(c.target_macs, predict_student(unshaped(c), teacher)[1].macs)
    return predict_student(c, teacher)[1].macs


def unpruned_channels(c: Candidate, teacher: TeacherShape) -> list[int]:
    """Channel counts of ``c``'s student before pruning (an inherited one: the teacher's blocks)."""
    width, base = start_of(c, teacher)
    plan, _ = predict_cost(c.student, num_classes=teacher.num_classes, in_channels=teacher.input_shape[0],
                           width=width, ratios_spec=0.0, input_shape=teacher.input_shape, plan=base)
    return list(plan.values())
