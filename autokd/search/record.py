"""The study's record: what a search writes to the Optuna study, and what a Ray worker reports back.

One module owns every key (Optuna's ``FrozenTrial`` is the model: typed fields, one constructor);
everything else reads and writes through it, never ``user_attrs["..."]``:

* :class:`StudyRecord`, the study's own attributes (budget, teacher, dataset, ...);
* :class:`TrialRecord`, one trial's: the candidate as sampled and as it replays through the public
  API (``plan``: layer -> output channels after pruning, for ``create_model(arch, plan=...)`` or
  ``prune_to_plan``; ``prune_ratios``: layer -> ratio, for ``prune_model``), its price, its scores
  by epoch, the compute it spent, why it failed or stopped;
* :class:`RayReport`, what ``autokd.search.tune.trainable`` reports after each epoch and once at
  the end (``final``).

Format versions (:data:`RECORD_VERSION`, kept in the study's ``record_version``): 1, studies written
before the version was recorded (their trials have no ``plan`` or ``prune_ratios``; a projected
candidate's ``prune`` may hold ``"*"``, every layer the shape does not name); 2, those fields added;
3, a study's ``cost`` (macs | latency) and ``latency`` (its predictor and budget), a trial's predicted
and measured latency. An older study opens as is: a field it never wrote reads as its default (a study
without ``cost`` ranks by MACs). Torch-free.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

RECORD_VERSION = 3


def _known(cls, values: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names and v is not None}


def _check(cls, values: Mapping[str, Any]) -> None:
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:  # a programming error, not a user's: every key is declared above
        raise KeyError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")


# ------------------------------------------------------------------ the study
@dataclass
class StudyRecord:
    """A study's attributes, written once when the study is created (``references`` after)."""

    macs_budget: int | None = None
    flops_budget: int | None = None
    budget_text: str | None = None
    budget_share_of_teacher: float | None = None
    teacher: str | None = None          # as given: a zoo name or a bundle's path
    teacher_arch: str | None = None
    teacher_macs: int | None = None
    dataset: str | None = None
    space: str | None = None
    objectives: list[str] = field(default_factory=list)
    cost_unit: str | None = None
    input_shape: list[int] = field(default_factory=list)
    num_classes: int | None = None
    references: list[dict] = field(default_factory=list)  # {label, arch, val_accuracy, macs, ...}
    cost: str = "macs"                  # v3: the second objective, macs | latency
    latency: dict | None = None         # v3, cost latency: setting, machine, teacher_ms, latency_budget_ms, ...
    record_version: int = 1             # absent: a study from before the record had a version

    @classmethod
    def of(cls, study) -> "StudyRecord":
        return cls(**_known(cls, study.user_attrs))


def write_study(study, **values: Any) -> None:
    """Set the study attributes ``values`` (names of :class:`StudyRecord` fields)."""
    _check(StudyRecord, values)
    for key, value in values.items():
        study.set_user_attr(key, value)


# ------------------------------------------------------------------ one trial
@dataclass
class TrialRecord:
    """One trial's attributes. Sampling writes the first block, the driver the rest as results come."""

    candidate: dict = field(default_factory=dict)      # Candidate.as_dict() as sampled (and projected)
    plan: dict[str, int] | None = None                 # v2: channels per layer after pruning (exact)
    prune_ratios: dict[str, float] | None = None       # v2: ratio per prunable layer, prune_model's form
    macs: int | None = None                            # predicted before training (exact)
    shape: dict[str, float] | None = None              # projected: the pruning shape sampled
    target_macs: int | None = None                     # projected: its share of the budget, in MACs
    warm_start: str | None = None                      # the space's warm-start setting it ran
    rejected: bool = False                             # over budget (or unprojectable): never trained
    rejected_because: str | None = None
    epoch_val_accuracy: dict[str, float] = field(default_factory=dict)  # {"0": acc, "1": acc, ...}
    unranked_epochs: list[int] = field(default_factory=list)  # scored before the last pruning step
    worker_pid: int | None = None
    node_id: str | None = None
    retries: int = 0
    compute: float | None = None                       # epoch-equivalents spent (autokd.search.compute)
    rungs_promoted: list[int] | None = None
    failure: str | None = None
    val_accuracy: float | None = None                  # an early-stopped trial's last score
    stopped_at_epoch: int | None = None
    params_count: int | None = None
    history: list[dict] = field(default_factory=list)
    weights: str | None = None                         # the trial's bundle folder
    lambdas: dict[str, float] | None = None            # every lambda_ij as run
    latency_ms: float | None = None                    # v3, cost latency: predicted (the trained plan's once done)
    target_ms: float | None = None                     # v3, projected on a latency budget: its share, in ms
    measured_latency_ms: float | None = None           # v3, cost latency: median measured after training ...
    measured_latency_iqr_ms: float | None = None       # ... and its interquartile range

    @classmethod
    def of(cls, trial) -> "TrialRecord":
        """The record of an Optuna trial (``FrozenTrial`` or a live ``Trial``)."""
        return cls(**_known(cls, trial.user_attrs))

    @property
    def init(self) -> str:
        """How the student started: the rung table's group (scratch | teacher)."""
        return self.candidate.get("init", "scratch")


def write(trial, **values: Any) -> None:
    """Set ``values`` (names of :class:`TrialRecord` fields) on a live Optuna trial."""
    _check(TrialRecord, values)
    for key, value in values.items():
        trial.set_user_attr(key, value)


def write_stored(study, trial, **values: Any) -> None:
    """:func:`write` for a finished or abandoned trial, through the study's storage."""
    _check(TrialRecord, values)
    for key, value in values.items():
        study._storage.set_trial_user_attr(trial._trial_id, key, value)


def warm_start_attrs(name: str) -> dict[str, Any]:
    """The attributes an enqueued warm-start trial carries (``study.enqueue_trial(user_attrs=...)``)."""
    return {"warm_start": name}


# ------------------------------------------------------------------ a Ray worker's report
@dataclass
class RayReport:
    """One ``tune.report`` of a trial: after an epoch (``epoch`` set), or once at the end (``final``)."""

    epoch: int | None = None
    val_accuracy: float | None = None
    macs: int | None = None
    pending: bool = False          # a pruning step is still to come: a wider student's score, never ranked
    final: bool = False
    failure: str | None = None     # final and failed: why
    node_id: str | None = None
    pid: int | None = None
    hostname: str | None = None
    params: int | None = None
    history: list[dict] | None = None
    weights: str | None = None
    lambdas: dict[str, float] | None = None
    latency_ms: float | None = None               # cost latency: the trained plan's, predicted
    measured_latency_ms: float | None = None      # cost latency: timed after training, median ...
    measured_latency_iqr_ms: float | None = None  # ... and interquartile range

    def as_dict(self) -> dict[str, Any]:
        """What ``tune.report`` sends: the fields that are set (a flag only when it is raised)."""
        return {k: v for k, v in asdict(self).items() if v is not None and v is not False}

    @classmethod
    def of(cls, result: Mapping[str, Any] | None) -> "RayReport":
        """A report from the result Tune hands back (its own keys, like ``training_iteration``, left out)."""
        return cls(**_known(cls, result or {}))

    @property
    def scored(self) -> bool:
        """An epoch's score (not the final report)."""
        return not self.final and self.epoch is not None and self.val_accuracy is not None


__all__ = ["RECORD_VERSION", "StudyRecord", "TrialRecord", "RayReport", "write", "write_stored", "write_study",
           "warm_start_attrs"]
