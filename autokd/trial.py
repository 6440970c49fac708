"""One trial: a candidate student in, a measured result out.

``Candidate`` is plain data (what the search samples or the CLI parses); ``run_trial`` does all the
work: build the student, prune it, distil from the teacher, measure. Sampling does no work and
``run_trial`` does no sampling.

Order of work in ``run_trial`` (epochs E, one cosine learning-rate schedule over all of them):
  1. the student ``seeded_model(student, init seed)`` at ``width``; MACs/params measured;
  2. the schedule's phases (``autokd.distill.schedule``), cut once more at the pruning epoch P:
     P = 0 for ``prune_at="start"`` (prune, then distil), P = floor(PRUNE_FRACTION * E + 1/2)
     (at least 1) for ``prune_at="during"``; each piece is one ``fit`` call;
  3. at P the student is pruned: by a criterion (l1 | bn | taylor) on its current weights, or,
     for ``prune_method="learned-mask"`` (PDD, seed 002), by the channel gates it learned with
     the distillation loss during epochs [0, P); the distiller is then rebuilt (new regressors,
     same teacher-output cache) and the remaining epochs distil into the pruned student
     ("distillation recovery", seed 000);
  4. after every epoch ``ctx.report(epoch, {"val_accuracy", "macs", "loss"})`` (plus
     ``"target_macs"`` while a pruning step is still ahead); True stops the trial, and a
     pending pruning step still runs, so the result describes the candidate's pruned student;
  5. MACs/params measured again, test accuracy only if ``ctx.evaluate_test``, the bundle and
     ``result.json`` written to ``ctx.out_dir`` if set.
Seeds, one stream per use: init = 1000 * seed + 1, data order = 1000 * seed + 2, regressors =
1000 * seed + 3 (:func:`trial_seeds`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch.nn as nn

from .data import DataSplits
from .errors import UserError

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
    kd_alpha: float = 0.5              # share of the soft-target term in L_task; 0 = labels only, no teacher
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


# ---------------------------------------------------------------- run_trial
PROBE_IMAGES = 256  # training images that fix the point shapes (and the aligned-teacher channels)
PRUNE_FRACTION = 0.5  # prune_at="during": share of the epochs before the channels are cut
GATE_WEIGHT = 1.0  # weight of ChannelGates.sparsity_loss while learned masks train (PDD)
PRUNE_AT = ("start", "during")


def trial_seeds(seed: int) -> dict[str, int]:
    """One seed per random stream of a trial, derived from the run seed."""
    return {"init": 1000 * seed + 1, "data": 1000 * seed + 2, "pairs": 1000 * seed + 3}


def check_candidate(c: Candidate) -> None:
    """Raise a one-line UserError for a value no trial can run with (names are checked by registries)."""
    checks = [
        (c.epochs >= 1, f"epochs must be >= 1, got {c.epochs}"),
        (0.0 <= c.beta <= 1.0, f"beta must be in [0, 1], got {c.beta}"),
        (c.temperature > 0, f"temperature must be > 0, got {c.temperature}"),
        (0.0 <= c.kd_alpha <= 1.0, f"kd_alpha must be in [0, 1], got {c.kd_alpha}"),
        (c.lr > 0, f"lr must be > 0, got {c.lr}"),
        (c.width > 0, f"width must be > 0, got {c.width}"),
        (0.0 <= c.stage1_fraction <= 1.0, f"stage1_fraction must be in [0, 1], got {c.stage1_fraction}"),
        (c.prune_at in PRUNE_AT, f"prune_at must be one of {', '.join(PRUNE_AT)}, got {c.prune_at!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def run_trial(candidate: Candidate, ctx: TrialContext) -> TrialResult:
    """Build, prune and distil one student from ``ctx.teacher`` on ``ctx.data``; measure it.

    See the module docstring for the order of work and the seeds; the loss is
    ``autokd.distill.Distiller``'s. Unknown names (student, kd_loss, schedule, prune_method)
    raise the registry's ``UnknownName``; impossible values a ``UserError``; a NaN loss
    ``autokd.train.Diverged``.
    """
    from .distill.engine import TrialRun  # the engine imports this module's dataclasses

    check_candidate(candidate)
    run = TrialRun(candidate, ctx)
    run.train()
    return run.finish()
