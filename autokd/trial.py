"""One trial: a candidate student in, a measured result out.

``Candidate`` is plain data (what the search samples or the CLI parses); ``run_trial`` does all the
work: build the student, prune it, distil from the teacher, measure. Sampling does no work and
``run_trial`` does no sampling.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch.nn as nn

from .data import DataSplits

Reporter = Callable[[int, dict], bool | None]  # (epoch, {"val_accuracy", "macs", ...}) -> stop?


@dataclass
class Candidate:
    """Everything that defines one student and how it is trained. Plain data, JSON-able."""

    student: str = "resnet20"          # zoo architecture of the student
    width: float = 1.0                 # width multiplier applied before pruning
    prune: dict[str, float] = field(default_factory=dict)  # layer/stage -> ratio; {"*": r} for all
    prune_method: str = "l1"           # l1 | bn | taylor | learned-mask (seed 002, PDD)
    prune_at: str = "start"            # start: prune, then distil; during: learn masks while distilling
    lambdas: dict[str, float] = field(default_factory=dict)  # "t3->s2" -> weight (1-based points)
    kd_loss: str = "vid"               # per-pair feature loss: vid | fitnet | at
    beta: float = 0.5                  # weight of the task loss; 1 - beta weighs the feature terms
    temperature: float = 4.0           # Hinton KD temperature on the logits
    schedule: str = "one-stage"        # one-stage | two-stage (seed 000)
    stage1_fraction: float = 0.3       # two-stage: share of epochs spent stabilising the classifier
    align_teacher: bool = False        # seed 003: narrow teacher points to the student widths
    curriculum: bool = False           # seed 003: switch feature pairs on one after another
    epochs: int = 10                   # enough to rank candidates on digits, not final accuracy
    lr: float = 0.05
    seed: int = 0                      # run seed; init/data/augmentation streams derive from it

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Candidate":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class TrialContext:
    """What a trial needs besides the candidate: the teacher, the data, where to report."""

    teacher: nn.Module
    data: DataSplits
    teacher_card: dict = field(default_factory=dict)
    device: str = "cpu"
    report: Reporter | None = None     # called after each epoch; True stops the trial early
    progress: Callable[[int, int, dict], None] | None = None
    out_dir: Path | None = None        # if set, the student bundle is written here
    evaluate_test: bool = False        # the search never looks at the test set; `distill` does


@dataclass
class TrialResult:
    val_accuracy: float
    macs: int
    params: int
    macs_before_pruning: int
    params_before_pruning: int
    test_accuracy: float | None = None
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    plan: dict[str, int] = field(default_factory=dict)
    candidate: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)
