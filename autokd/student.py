"""One student distilled from a teacher, end to end: what ``autokd distill`` runs.

:func:`distill_student` checks everything a user can get wrong (values, names, pairs, λ_ij)
before the data is loaded or a teacher trained, then gets the teacher (trained once and cached
for a name), runs the candidate with :func:`autokd.trial.run_trial` on the whole pipeline
(prune, distil, measure), evaluates the test set once, and writes the student's bundle.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .candidate import Candidate, check_candidate
from .data import load_dataset
from .distill import parse_lambda
from .errors import UserError
from .inherit import check_inheritable
from .fields import knob
from .models import create_model, tags
from .provenance import resolve_device
from .teacher import get_teacher, untrained_teacher
from .train import Diverged, TrainConfig
from .trial import TrialContext, TrialResult, check_names, run_trial

Progress = Callable[[int, int, dict], None]
DEFAULT_STUDENT = "convverytiny"  # a small net distilled from the default resnet20 teacher


@dataclass
class DistillJob:
    """``autokd distill``'s settings besides the candidate's; defaults and help are the command's."""

    teacher: str = knob("resnet20", "zoo name (trained once, cached) or bundle folder")
    student: str | None = knob(None, f"the student's zoo architecture (default {DEFAULT_STUDENT}; with init teacher "
                                     "the teacher's own)")
    dataset: str = knob("digits", "see `autokd datasets`")
    teacher_epochs: int = knob(TrainConfig().epochs, "epochs for a named teacher trained on first use")
    train_subset: int | None = knob(None, "train on the first N training images only")
    device: str = knob("auto", "where to train: auto (cuda if available) | cpu | cuda")
    # a distilled student pairs matching depths unless told otherwise (a search samples its own pairing)
    candidate: Candidate = knob(help="how the student is built and trained (its student field: see `student`)",
                                factory=lambda: Candidate(pairs="diag"))


def resolve_student(job: DistillJob, teacher_arch: str) -> str:
    """``job.student``, or by default the teacher's own architecture (init teacher) or DEFAULT_STUDENT."""
    student = job.student or (teacher_arch if job.candidate.init == "teacher" else DEFAULT_STUDENT)
    if job.candidate.init == "teacher":
        check_inheritable(teacher_arch, student)
    return student


def with_lambdas(c: Candidate, texts: list[str] | None, n_teacher: int, n_student: int) -> Candidate:
    """``c`` with the ``--lambda tI:sJ=W`` texts as its lambdas, in place of its named pairing."""
    if not texts:
        return c
    parsed = [parse_lambda(text, n_teacher, n_student) for text in texts]
    lambdas = dict(parsed)
    if len(lambdas) < len(parsed):
        raise UserError("--lambda: the same pair is given twice")
    return replace(c, pairs="", lambdas=lambdas)


def check_job(job: DistillJob) -> None:
    """The checks that need no data: values, registered names, device."""
    check_candidate(job.candidate)
    check_names(replace(job.candidate, student=job.student or DEFAULT_STUDENT))
    if job.teacher_epochs < 1:
        raise UserError(f"--teacher-epochs must be >= 1, got {job.teacher_epochs}")
    if job.train_subset is not None and job.train_subset < 1:
        raise UserError(f"--train-subset must be at least 1, got {job.train_subset}")
    resolve_device(job.device)  # an unknown name, or cuda without a GPU


def distill_student(job: DistillJob, *, lambdas: list[str] | None = None, out: str | Path | None = None,
                    progress: Callable[[str], Progress] | None = None,
                    printer: Callable[[str], None] | None = None) -> tuple[TrialResult, Path, dict]:
    """Distil ``job.candidate`` from ``job.teacher``; returns (result with test accuracy, bundle folder,
    teacher card). ``progress(label)`` makes a per-epoch callback (teacher, then student)."""
    check_job(job)
    device = resolve_device(job.device)
    data = load_dataset(job.dataset, seed=job.candidate.seed, train_subset=job.train_subset)
    shell = untrained_teacher(job.teacher, data.num_classes, data.in_channels)
    c = replace(job.candidate, student=resolve_student(job, tags(shell).arch))
    n_s = len(tags(create_model(c.student, num_classes=data.num_classes, in_channels=data.in_channels, width=c.width)).points)
    c = with_lambdas(c, lambdas, len(tags(shell).points), n_s)
    teacher, card = get_teacher(job.teacher, data, TrainConfig(epochs=job.teacher_epochs, seed=c.seed),
                                progress=progress("teacher") if progress else None, device=device, on_train=printer)
    folder = Path(out) if out is not None else Path("runs") / f"{c.student}-{time.strftime('%Y%m%d-%H%M%S')}"
    ctx = TrialContext(teacher=teacher, data=data, teacher_card=card, device=device,
                       progress=progress(c.student) if progress else None, out_dir=folder, evaluate_test=True)
    try:
        result = run_trial(c, ctx)
    except Diverged as e:
        raise UserError(f"training diverged ({e}); try a lower --lr or --temperature") from None
    return result, folder, card
