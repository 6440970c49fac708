"""Sampling one candidate: sample, project onto its share of the budget, or reject. No work is done.

:func:`sample_candidate` asks an Optuna trial for the space's parameters (``autokd.space.suggest``),
gives the candidate its seed (``autokd.seeds.trial_seed``), puts a projected space's candidate on its
share of the budget (``budget/share``, :func:`autokd.search.budget.project_candidate`) and prices it
exactly (:mod:`autokd.price`): no tensor is built, nothing trains and nothing is written.
``autokd.search.tune.OptunaSearcher.suggest`` is a thin adapter over it that records the
:class:`Sample` on the study and hands an accepted one to Ray.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..candidate import Candidate, is_global
from ..errors import UserError
from ..price import predict_macs, predict_student, student_ratios
from ..seeds import trial_seed
from ..space import suggest
from .budget import SHARE, check_global_target, compose_width, project_candidate, widest

if TYPE_CHECKING:
    from .prepare import Plan


@dataclass(frozen=True)
class Sample:
    """One sampled candidate, priced: trained if ``rejected_because`` is None and it fits the budget."""

    candidate: Candidate
    macs: int                          # exact, after pruning
    plan: dict[str, int] | None        # channels per layer after pruning (None: global ranking, weight-dependent)
    prune_ratios: dict[str, float] | None  # ratio per prunable layer (prune_model's form; None: global)
    budget_macs: int
    shape: dict[str, float] | None = None   # projected: the pruning shape sampled
    target_macs: int | None = None          # projected: its share of the budget
    why_not: str | None = None              # projection could not reach the target
    latency_ms: float | None = None         # --cost latency: predicted, after pruning
    budget_ms: float | None = None          # --latency-budget, in ms
    target_ms: float | None = None          # projected onto latency: its share of the latency budget

    @property
    def rejected(self) -> bool:
        over_ms = self.budget_ms is not None and self.latency_ms is not None and self.latency_ms > self.budget_ms
        return self.why_not is not None or self.macs > self.budget_macs or over_ms

    def record(self) -> dict[str, Any]:
        """The :class:`autokd.search.record.TrialRecord` fields this sample sets."""
        fields: dict[str, Any] = {} if self.target_macs is None else {"shape": self.shape, "target_macs": self.target_macs}
        fields.update(candidate=self.candidate.as_dict(), macs=self.macs, plan=self.plan,
                      prune_ratios=self.prune_ratios)
        if self.latency_ms is not None:
            fields["latency_ms"] = self.latency_ms
        if self.target_ms is not None:
            fields["target_ms"] = self.target_ms
        if self.rejected:
            fields["rejected"] = True
        if self.why_not:
            fields["rejected_because"] = self.why_not
        return fields


def _project(trial, cand: Candidate, plan: "Plan") -> tuple[Candidate, dict | None, int | None, str | None]:
    """(candidate, shape, target MACs, why not): a projected space's candidate put on its share of the
    budget; ``why not`` for a shape that cannot get there. Not projected: (cand, None, None, None)."""
    share = trial.params.get(SHARE, plan.space.fixed.get(SHARE))
    if share is None:
        return cand, None, None, None
    target = max(1, int(float(share) * plan.budget.macs))
    shape = dict(cand.prune)
    try:
        cand = compose_width(cand, plan.teacher, target, widest(plan.space, cand))
        projected, _, _ = project_candidate(cand, plan.teacher, target)
    except UserError as e:
        return cand, shape, target, str(e)
    return projected, shape, target, None


def _project_latency(trial, cand: Candidate, plan: "Plan") -> tuple[Candidate, dict | None, float | None, str | None]:
    """:func:`_project` onto a latency budget: the share of ``--latency-budget`` in predicted ms, by
    bisection on the predictor. A global-ranking candidate is projected along its shape the same way
    and prunes, by its own ranking, to the MACs of the plan found."""
    latency = plan.latency
    assert latency is not None and latency.budget is not None  # called under a latency budget only
    share = trial.params.get(SHARE, plan.space.fixed.get(SHARE))
    if share is None:
        return cand, None, None, None
    target = float(share) * latency.budget.ms
    shape = dict(cand.prune)

    def price(c: Candidate) -> float:
        return latency.ms(replace(c, target_macs=0), plan.teacher)

    try:
        cand = compose_width(cand, plan.teacher, target, widest(plan.space, cand), price=price)
        projected, _, _ = project_candidate(replace(cand, target_macs=0), plan.teacher, target, price=price)
        if is_global(projected):  # a MACs target its ranking can reach, or rejected before it trains
            macs = predict_student(projected, plan.teacher)[1].macs
            check_global_target(projected, plan.teacher, macs)
            projected = replace(projected, target_macs=macs)
    except UserError as e:
        return cand, shape, target, str(e)
    return projected, shape, target, None


def sample_candidate(trial, plan: "Plan") -> Sample:
    """Sample ``plan.space`` on ``trial`` (from ``study.ask``), project and price it; see the module doc."""
    cand = replace(suggest(trial, plan.space, plan.base), seed=trial_seed(plan.cfg.seed, trial.number))
    latency = plan.latency
    budget = latency.budget if latency is not None else None
    target_macs: int | None = None
    target_ms: float | None = None
    if budget is not None:
        cand, shape, target_ms, why = _project_latency(trial, cand, plan)
    else:
        cand, shape, target_macs, why = _project(trial, cand, plan)
    ms = {} if latency is None else {
        "latency_ms": latency.ms(cand, plan.teacher), "target_ms": target_ms,
        "budget_ms": budget.ms if budget is not None else None}
    if is_global(cand):  # ranked on the trained weights: priced at its target, its plan known once pruned
        return Sample(candidate=cand, macs=predict_macs(cand, plan.teacher), plan=None, prune_ratios=None,
                      budget_macs=plan.budget.macs, shape=shape, target_macs=target_macs, why_not=why, **ms)
    channels, cost = predict_student(cand, plan.teacher)
    return Sample(candidate=cand, macs=cost.macs, plan=channels, prune_ratios=student_ratios(cand, plan.teacher),
                  budget_macs=plan.budget.macs, shape=shape, target_macs=target_macs, why_not=why, **ms)


__all__ = ["Sample", "sample_candidate"]
