"""Early stopping with two objectives: accuracy (max) and MACs (min).

Neither Optuna (no intermediate reports in multi-objective studies, optuna#3450) nor Ray Tune's
schedulers (one metric, ray#8018) can stop a trial on a Pareto criterion, so autokd has its own.

Rule. Trials report their validation accuracy after each epoch; some epochs are *rungs*
(1, 3, 9, ... below the final epoch). When trial *t* reaches rung *r* with accuracy ``a`` and
cost ``m`` MACs, it is stopped if at least ``min_dominators`` trials that reached rung *r*
before it *dominate* it there: cost ``<= m`` and accuracy ``>= a + margin``, strictly better in
one of the two. Why: a trial dominated at the same training stage by several others that are
no more expensive can only join the final front by overtaking every one of them in accuracy
over its remaining epochs; requiring two dominators (not one) keeps a single lucky early trial
from killing the rest, as the median rule needs a population. MACs do not change during
training, so the test is exactly Pareto dominance at equal training effort. Trials are compared
within their *group* only (:func:`rung_group`): a student that inherits the teacher starts near
its final accuracy, one from scratch does not, so an epoch of the one says nothing about the
other's end, and inherited trials at a rung would stop scratch trials that end on the front.
Candidates projected onto the budget itself have groups of their own for the same kind of reason
(see :func:`rung_group`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .front import dominates
from .ladder import Ladder, rungs as ladder_rungs


@dataclass(frozen=True)
class RungResult:
    trial: int
    rung: int
    val_accuracy: float
    macs: float  # the trial's cost: MACs, or ms in a latency search
    group: str = ""  # results are compared within one group (rung_group)


def rung_group(init: str, at_budget: bool) -> str:
    """The group a trial is ranked in: how its student started (``scratch`` | ``teacher``), and
    ``@budget`` where it was projected onto the budget itself (``budget/share`` 1).

    Why the budget's edge is a group: ``--at-budget`` spends a stated share of the compute on
    candidates at the budget, the ones that contend for "the best student at or under it". Ranked
    beside cheaper students, a rung's non-dominated front is often one student at the budget and
    one far below it; the ladder keeps ``max(1, n // eta)`` and gives the tie of a front's two ends
    to fewer MACs, so a student at 20 % of the budget stopped the most accurate one at the budget
    after one epoch, and that share went on first epochs instead of finished candidates."""
    return init + ("@budget" if at_budget else "")


def should_stop(earlier: list[RungResult], acc: float, macs: float, *, min_dominators: int = 2,
                margin: float = 0.0) -> bool:
    """At least ``min_dominators`` of the ``earlier`` results dominate (acc, macs) by ``margin``."""
    return sum(dominates((r.val_accuracy, r.macs), (acc, macs), margin) for r in earlier) >= min_dominators


@dataclass
class ParetoStopper:
    """The rung table and the decision; pure Python, no Ray, so it is tested with hand-made tables."""

    rungs: list[int]
    min_dominators: int = 2
    margin: float = 0.0
    table: dict[int, list[RungResult]] = field(default_factory=dict)

    def record(self, result: RungResult) -> None:
        """One result per trial and rung: a trial retried after a lost worker replaces its own."""
        rows = self.table.setdefault(result.rung, [])
        rows[:] = [r for r in rows if r.trial != result.trial]
        rows.append(result)

    def observe(self, trial: int, epoch: int, acc: float, macs: float, group: str = "") -> bool:
        """Record a trial's result at ``epoch``; True means: stop this trial now."""
        if epoch not in self.rungs:
            return False
        earlier = [r for r in self.table.get(epoch, []) if r.trial != trial and r.group == group]
        stop = should_stop(earlier, acc, macs, min_dominators=self.min_dominators, margin=self.margin)
        self.record(RungResult(trial, epoch, acc, macs, group))
        return stop


@dataclass
class LadderStopper:
    """The fidelity ladder (:mod:`autokd.search.ladder`, MO-ASHA) behind ParetoStopper's interface.

    Rungs 0, 1, eta, eta**2, ... below the trials' final epoch; one :class:`Ladder` per group
    (:func:`rung_group`), so an inherited student's epoch-0 score is ranked against other
    inherited students only, and a scratch student (which reports no epoch 0) starts at rung 1."""

    rungs: list[int]
    eta: int = 3
    ladders: dict[str, Ladder] = field(default_factory=dict)

    @classmethod
    def for_epochs(cls, epochs: int, eta: int = 3) -> "LadderStopper":
        return cls(ladder_rungs(epochs, eta, rung0=True), eta)

    def _ladder(self, group: str) -> Ladder:
        return self.ladders.setdefault(group, Ladder(eta=self.eta))

    def record(self, result: RungResult) -> None:
        if result.rung in self.rungs:
            self._ladder(result.group).record(result.trial, result.rung, result.val_accuracy, result.macs)

    def observe(self, trial: int, epoch: int, acc: float, macs: float, group: str = "") -> bool:
        """True means: stop this trial now (it is not among the top 1/eta at this rung)."""
        if epoch not in self.rungs:
            return False
        return not self._ladder(group).decide(trial, epoch, acc, macs)


STOPPING_RULES = ("dominated", "ladder")


def make_stopper(rule: str, epochs: int, *, eta: int = 3, min_dominators: int = 2, margin: float = 0.0):
    """The early-stopping rule of a search: ``dominated`` (ParetoStopper) or ``ladder`` (LadderStopper)."""
    if rule == "ladder":
        return LadderStopper.for_epochs(epochs, eta)
    if rule == "dominated":
        return ParetoStopper(ladder_rungs(epochs, 3, rung0=False), min_dominators, margin)
    raise ValueError(f"unknown stopping rule {rule!r}; choose from {', '.join(STOPPING_RULES)}")
