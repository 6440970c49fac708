"""The cost budget and what a candidate costs against it, known before anything trains.

``40%`` and ``0.4`` mean 40 % of the teacher's MACs. ``100M`` (also ``2.5G``, ``1e8``) is an
absolute count of **FLOPs**, as the flag's name says: 100 M FLOPs = 50 M MACs.
A candidate's exact MACs come from :mod:`autokd.price` (its architecture and ratios alone);
:func:`cheapest_macs` is the least any candidate of a space can cost.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Callable

from ..candidate import GLOBAL_MAX_LAYER, Candidate, is_global
from ..errors import UserError
from ..measure import count_macs, flops_from_macs, macs_from_flops
from ..models import channel_plan, tags
from ..price import TeacherShape, predict_macs, unpruned_channels, unshaped
from ..space import SearchSpace, params_to_candidate
from ..teacher import untrained_teacher

SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


class BudgetError(UserError):
    pass


@dataclass(frozen=True)
class Budget:
    macs: int
    text: str
    share_of_teacher: float   # macs / teacher MACs

    @property
    def flops(self) -> int:
        return flops_from_macs(self.macs)

    def as_dict(self) -> dict:
        return {"macs_budget": self.macs, "flops_budget": self.flops, "budget_text": self.text,
                "budget_share_of_teacher": self.share_of_teacher}


def parse_budget(text: str, teacher_macs: int) -> Budget:
    t = str(text).strip().upper().replace("FLOPS", "")
    hint = "use a share of the teacher's cost (40% or 0.4) or a FLOPs count (100M, 2.5G)"
    m = re.fullmatch(r"([-+]?\d+(?:\.\d+)?(?:E[-+]?\d+)?)\s*(%|[KMGT]?)", t)
    if not m:
        raise BudgetError(f"--flops-budget {text!r} is not a budget; {hint}")
    value, unit = float(m.group(1)), m.group(2)
    if unit == "%" or (unit == "" and value <= 1.0):
        share = value / 100 if unit == "%" else value
        if not 0 < share <= 1:
            raise BudgetError(f"--flops-budget {text!r}: a share of the teacher's cost must be in (0%, 100%]")
        return Budget(max(1, int(share * teacher_macs)), text, share)
    if unit == "" and value < 1000:  # "5" is neither a share nor a plausible FLOPs count
        raise BudgetError(f"--flops-budget {text!r} is ambiguous; {hint}")
    macs = macs_from_flops(value * SUFFIX[unit])
    if macs <= 0:
        raise BudgetError(f"--flops-budget {text!r} must be positive; {hint}")
    return Budget(macs, text, macs / teacher_macs)


@dataclass(frozen=True)
class LatencyBudget:
    """A latency budget: predicted milliseconds of one inference in the calibration's setting."""

    ms: float
    text: str
    share_of_teacher: float   # ms / the teacher's predicted ms

    def as_dict(self) -> dict:
        return {"latency_budget_ms": self.ms, "latency_budget_text": self.text,
                "latency_budget_share_of_teacher": self.share_of_teacher}


def parse_latency_budget(text: str, teacher_ms: float) -> LatencyBudget:
    """``1.2ms`` (milliseconds), ``50%`` or ``0.5`` (a share of the teacher's predicted latency)."""
    t = str(text).strip().lower().replace(" ", "")
    hint = "use milliseconds (1.2ms) or a share of the teacher's predicted latency (50% or 0.5)"
    m = re.fullmatch(r"(\d+(?:\.\d*)?(?:e[-+]?\d+)?|\.\d+)(ms|%|)", t)
    if not m:
        raise BudgetError(f"--latency-budget {text!r} is not a latency budget; {hint}")
    value, unit = float(m.group(1)), m.group(2)
    if not (math.isfinite(value) and value > 0):
        raise BudgetError(f"--latency-budget {text!r} must be more than 0; {hint}")
    if unit == "ms":
        return LatencyBudget(value, text, value / teacher_ms)
    share = value / 100 if unit == "%" else value
    if unit == "" and value > 1:
        raise BudgetError(f"--latency-budget {text!r} is ambiguous; {hint}")
    if share > 1:
        raise BudgetError(f"--latency-budget {text!r}: a share of the teacher's latency must be in (0%, 100%]")
    return LatencyBudget(share * teacher_ms, text, share)


def teacher_shape(spec: str, input_shape: tuple[int, ...], num_classes: int) -> TeacherShape:
    """The teacher's architecture, MACs and channel plan, known without training it."""
    model = untrained_teacher(spec, num_classes, input_shape[0])
    t = tags(model)
    return TeacherShape(t.arch, count_macs(model, input_shape), channel_plan(model),
                        float(t.build_args.get("width", 1.0)), num_classes, tuple(input_shape))


def cheapest_macs(space: SearchSpace, base: Candidate, teacher: TeacherShape) -> int:
    """The least a candidate of ``space`` can cost (its cheapest corners, ``min_cost_candidates``)."""
    return min(predict_macs(params_to_candidate(p, fixed=space.fixed, base=base), teacher)
               for p in space.min_cost_candidates())


# ------------------------------------------------------------------ candidates put on the budget
SHARE = "budget/share"  # the space parameter that asks for projection: the target as a share of the budget


def widest(space: SearchSpace, cand: Candidate) -> float:
    """The widest width a candidate may be composed to: an inherited student's is a share of the teacher's
    channels (1 at most); a fresh one's, the space's largest ``student/width`` (or its own)."""
    if cand.init == "teacher":
        return 1.0
    dist = space.distributions.get("student/width")
    top = getattr(dist, "high", None) or max(getattr(dist, "choices", None) or [cand.width])
    return max(float(top), cand.width)


def compose_width(cand: Candidate, teacher: TeacherShape, target_macs: float, widest: float,
                  price: Callable[[Candidate], float] | None = None) -> Candidate:
    """Width and pruning compose: a candidate whose unpruned student already fits ``target_macs`` would
    have its sampled pruning scaled to nothing by the projection, and land below its target. Instead it
    is widened (up to ``widest``) to the widest width at which its sampled ratios still fit (with none
    sampled: at which it fits unpruned), so the projection then prunes along its shape onto the target.
    A candidate that needs its pruning to fit already is returned as it is; one that fits at ``widest``
    gets ``widest``. ``price``: another cost that never falls with width (a predicted latency)."""
    if widest <= cand.width:
        return cand
    ratios = dict(cand.prune) if any(v > 0 for v in cand.prune.values()) else {}

    cost_of = price or (lambda c: predict_macs(c, teacher))

    def macs(width: float, prune: dict[str, float]) -> float:
        return cost_of(replace(cand, width=width, prune=prune, target_macs=0))

    if macs(cand.width, {}) > target_macs:
        return cand
    if macs(widest, ratios) <= target_macs:
        return replace(cand, width=widest)
    lo, hi = cand.width, widest  # macs(lo, ratios) <= target < macs(hi, ratios): MACs never fall with width
    for _ in range(24):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if macs(mid, ratios) <= target_macs else (lo, mid)
    return replace(cand, width=max(cand.width, math.floor(lo * 1e4) / 1e4))


def project_candidate(cand: Candidate, teacher: TeacherShape, target_macs: float,
                      price: Callable[[Candidate], float] | None = None):
    """(candidate, Projection, shape): ``cand`` with its pruning ratios read as a *shape* and scaled,
    by bisection on the exact MAC count (``autokd.prune.projection``), to the least pruning that fits
    ``target_macs``, and the shape that was scaled. No ratio (or all 0): the shape is uniform, every layer alike. An inherited student's
    width below 1 prunes uniformly on top, as always (``autokd.price.pruning_ratios``). A global-ranking
    candidate (``prune_method`` global-*) is projected the same way and carries ``target_macs`` as its
    target, which its trial prunes to by ranking across layers; a target under the cheapest that ranking
    reaches raises :class:`UserError`. With ``price`` (a predicted latency in ms, say) the target is in its
    unit, and a global-ranking candidate gets no ``target_macs`` here (its caller sets one)."""
    from ..prune.projection import project_shape

    shape = {k: v for k, v in cand.prune.items()} if any(v > 0 for v in cand.prune.values()) else {"*": 1.0}
    keep = cand.width if cand.init == "teacher" else 1.0
    channels = unpruned_channels(cand, teacher)

    cost_of = price or (lambda c: predict_macs(c, teacher))
    unit = None if price is None else (lambda v: f"{v:.3f} ms")

    def project(shape: dict[str, float]):
        return project_shape(shape, lambda ratios: cost_of(replace(cand, prune=ratios)),
                             channels=channels, target_macs=target_macs, keep=keep, unit=unit,
                             describe=f"{cand.student} (init {cand.init}, width {cand.width:g})")

    if is_global(cand) and price is None:
        check_global_target(cand, teacher, target_macs)
    try:
        proj = project(shape)
    except UserError:
        if "*" in shape:
            raise
        # the keyed layers alone cannot get there: every other layer, and every keyed layer at 0, joins
        # far behind them (a tenth of the smallest keyed share), so the shape's order of cuts is kept
        # and the target is met (a layer at 0 would otherwise never prune, and a shape whose other
        # layers carry the MACs would be rejected far above its share)
        floor = min(v for v in shape.values() if v > 0) / 10
        shape = {**{k: v if v > 0 else floor for k, v in shape.items()}, "*": floor}
        proj = project(shape)
    cand = replace(cand, prune={k: float(f"{v:.12g}") for k, v in proj.ratios.items()})
    if is_global(cand) and price is None:  # global ranking prunes to the target itself (the ratios go unused)
        cand = replace(cand, target_macs=int(target_macs))
    return cand, proj, shape


def check_global_target(cand: Candidate, teacher: TeacherShape, target_macs: float) -> None:
    """A global-ranking target under what cutting every layer by the pruner's most reaches (one line)."""
    floor = predict_macs(replace(unshaped(cand), prune={"*": GLOBAL_MAX_LAYER}, target_macs=0), teacher)
    if target_macs < floor:
        raise UserError(f"{cand.student} (init {cand.init}): target {target_macs:,} MACs is below the cheapest "
                        f"global ranking reaches ({floor:,} MACs, every layer at {GLOBAL_MAX_LAYER:.0%})")


def cheapest_projected_macs(space: SearchSpace, base: Candidate, teacher: TeacherShape) -> int:
    """The least a projected space's candidate can cost: each cheapest corner with every shape key
    at the largest ratio projection may reach (MAX_RATIO)."""
    from ..candidate import MAX_RATIO

    costs = []
    for corner in space.min_cost_candidates():
        cand = params_to_candidate(corner, fixed=space.fixed, base=base)
        prune = {k: MAX_RATIO for k in cand.prune} or {"*": MAX_RATIO}
        costs.append(predict_macs(replace(cand, prune=prune), teacher))
    return min(costs)
