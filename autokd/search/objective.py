"""The study's second objective: a student's MACs (exact), or its latency in milliseconds, predicted
before it trains by this machine's calibration (:mod:`autokd.latency`).

``--cost macs`` (the default) ranks students by MACs; ``--cost latency`` (or any ``--latency-budget``)
by predicted latency in one :class:`~autokd.timing.Setting` (runtime, threads, batch, the data's input
shape). A latency study keeps the calibration it started with in its folder
(:data:`CALIBRATION_FILE`), so a resume prices with the same predictor, and refuses it, in one line,
on another machine.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..candidate import Candidate
from ..latency import Calibration, load_calibration, plan_latency_ms, read_calibration, save_calibration
from ..price import TeacherShape, predict_student
from ..timing import Setting, machine
from .budget import LatencyBudget, parse_latency_budget

OBJECTIVES = {"macs": ("val_accuracy", "macs"), "latency": ("val_accuracy", "latency_ms")}
CALIBRATION_FILE = "latency_calibration.json"   # in the study's folder: the predictor it was created with


@dataclass(frozen=True)
class LatencyObjective:
    """Predicted latency of a candidate's student, and the budget in milliseconds if there is one."""

    calibration: Calibration
    teacher_ms: float
    budget: LatencyBudget | None

    @property
    def setting(self) -> Setting:
        return self.calibration.setting

    def plan_ms(self, arch: str, plan: dict[str, int], num_classes: int) -> float:
        return plan_latency_ms(self.calibration, arch, plan, num_classes=num_classes)

    def ms(self, c: Candidate, teacher: TeacherShape) -> float:
        """``c``'s student after pruning, from its channel plan (a global-ranking candidate's plan depends
        on its weights: its projected ratios give the estimate; its trial prices the plan it reaches)."""
        plan, _ = predict_student(c, teacher)
        return self.plan_ms(c.student, plan, teacher.num_classes)

    def record(self) -> dict:
        """What the study keeps of it (``StudyRecord.latency``)."""
        cal = self.calibration
        return {"setting": cal.setting.as_dict(), "label": cal.setting.label, "machine": dict(cal.machine),
                "calibrated": cal.fit.get("created"), "held_out": cal.fit.get("held_out"),
                "teacher_ms": self.teacher_ms, **(self.budget.as_dict() if self.budget else {})}


def latency_objective(setting: Setting, teacher: TeacherShape, budget_text: str | None,
                      saved: Path | None = None) -> LatencyObjective:
    """The predictor of ``setting`` on this machine: a resumed study's own (``saved``, checked against
    this machine), else ``$AUTOKD_HOME``'s; a one-line :class:`UserError` naming the command that makes
    one when there is none."""
    setting = setting.check()
    if saved is not None and saved.exists():
        cal = read_calibration(saved)
        cal.check(setting, machine(setting), where=f"the study's latency predictor {saved}")
    else:
        cal = load_calibration(setting)
    teacher_ms = plan_latency_ms(cal, teacher.arch, teacher.plan, num_classes=teacher.num_classes)
    budget = parse_latency_budget(budget_text, teacher_ms) if budget_text else None
    return LatencyObjective(cal, teacher_ms, budget)


def keep_calibration(objective: LatencyObjective, folder: Path) -> Path:
    """Write the study's predictor beside its ``study.db`` (once, when the study is created)."""
    return save_calibration(objective.calibration, folder / CALIBRATION_FILE)


@dataclass(frozen=True)
class PlanPricer:
    """Prices finished points of a study in ms with a predictor of this machine: from the plan the trial
    recorded, or the one its weights were saved with (a global ranking's plan is known only once pruned)."""

    calibration: Calibration
    num_classes: int

    def plan_of(self, point: dict) -> dict[str, int] | None:
        if point.get("plan"):
            return dict(point["plan"])
        saved = Path(point["weights"]) / "channel_plan.json" if point.get("weights") else None
        if saved is None or not saved.exists():
            return None
        try:
            return dict(json.loads(saved.read_text()).get("plan") or {}) or None
        except (OSError, ValueError, AttributeError):
            return None

    def __call__(self, point: dict) -> float | None:
        plan = self.plan_of(point)
        arch = (point.get("candidate") or {}).get("student")
        return None if plan is None or arch is None else plan_latency_ms(self.calibration, arch, plan,
                                                                          num_classes=self.num_classes)

    def record(self, teacher: dict) -> dict:
        """The latency record of a study priced after its search: setting, machine, the teacher's ms."""
        cal = self.calibration
        teacher_ms = plan_latency_ms(cal, teacher["arch"], {}, num_classes=self.num_classes)
        return {"setting": cal.setting.as_dict(), "label": cal.setting.label, "machine": dict(cal.machine),
                "teacher_ms": teacher_ms, "priced_after_search": True}


def study_pricer(setting: Setting, num_classes: int) -> PlanPricer:
    """This machine's predictor for ``setting`` (one line naming the command that makes one if none)."""
    return PlanPricer(load_calibration(setting.check()), num_classes)


__all__ = ["OBJECTIVES", "CALIBRATION_FILE", "LatencyObjective", "latency_objective", "keep_calibration",
           "PlanPricer", "study_pricer"]
