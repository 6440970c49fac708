"""``autokd distill``: distil one student from a teacher, print its accuracy and cost, save it.

A thin command over :func:`autokd.student.distill_student`: flags become a
:class:`~autokd.student.DistillJob` with its :class:`~autokd.candidate.Candidate` (strings are
resolved at the edge); every default and help text is the dataclass field's. ``cli.app``
registers it with ``app.command()(distill)``.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..candidate import MAX_RATIO, Candidate
from ..errors import UserError
from ..measure import COST_UNIT_TITLE
from ..student import DistillJob, distill_student
from .common import epoch_printer, out, user_errors
from .options import option

JOB = DistillJob()       # the command's defaults
CAND = JOB.candidate     # ... and its default candidate's


def parse_prune(items: list[str]) -> dict[str, float]:
    """``["0.4", "layer1=0.2"]`` -> ``{"*": 0.4, "layer1": 0.2}`` (a bare number is every layer)."""
    spec: dict[str, float] = {}
    for item in items:
        key, sep, value = item.rpartition("=") if "=" in item else ("*", "", item)
        key = key.strip() or "*"
        try:
            ratio = float(value)
        except ValueError:
            raise UserError(f"--prune {item!r}: expected a ratio (0.4) or LAYER=RATIO (layer1=0.2)") from None
        if not 0.0 <= ratio <= MAX_RATIO:
            raise UserError(f"--prune {item!r}: the ratio must be in [0, {MAX_RATIO}]")
        if key in spec:
            raise UserError(f"--prune {key} is given twice")
        spec[key] = ratio
    return spec


C, J = Candidate, DistillJob


@user_errors
def distill(
    teacher: Annotated[str, option(J, "teacher")] = JOB.teacher,
    student: Annotated[Optional[str], option(J, "student")] = JOB.student,
    init: Annotated[str, option(C, "init")] = CAND.init,
    blocks: Annotated[str, option(C, "blocks")] = CAND.blocks,
    dataset: Annotated[str, option(J, "dataset")] = JOB.dataset,
    width: Annotated[float, option(C, "width")] = CAND.width,
    beta: Annotated[float, option(C, "beta")] = CAND.beta,
    temperature: Annotated[float, option(C, "temperature")] = CAND.temperature,
    kd_alpha: Annotated[float, option(C, "kd_alpha")] = CAND.kd_alpha,
    pairs: Annotated[str, option(J, "pairs")] = JOB.pairs,
    lambdas: Annotated[Optional[list[str]], option(C, "lambdas", "--lambda")] = None,
    kd_loss: Annotated[str, option(C, "kd_loss")] = CAND.kd_loss,
    schedule: Annotated[str, option(C, "schedule")] = CAND.schedule,
    stage1_fraction: Annotated[float, option(C, "stage1_fraction")] = CAND.stage1_fraction,
    epochs: Annotated[int, option(C, "epochs")] = CAND.epochs,
    teacher_epochs: Annotated[int, option(J, "teacher_epochs")] = JOB.teacher_epochs,
    lr: Annotated[float, option(C, "lr")] = CAND.lr,
    finetune_lr: Annotated[float, option(C, "finetune_lr")] = CAND.finetune_lr,
    seed: Annotated[int, option(C, "seed", help="also the data split and the teacher recipe")] = CAND.seed,
    align_teacher: Annotated[bool, option(C, "align_teacher")] = CAND.align_teacher,
    curriculum: Annotated[bool, option(C, "curriculum")] = CAND.curriculum,
    prune: Annotated[Optional[list[str]], option(C, "prune")] = None,
    prune_method: Annotated[str, option(C, "prune_method")] = CAND.prune_method,
    prune_at: Annotated[str, option(C, "prune_at")] = CAND.prune_at,
    prune_steps: Annotated[int, option(C, "prune_steps")] = CAND.prune_steps,
    train_subset: Annotated[Optional[int], option(J, "train_subset")] = JOB.train_subset,
    device: Annotated[str, option(J, "device")] = JOB.device,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="bundle folder (default runs/<student>-<time>)")] = None,
) -> None:
    """Distil one student from a teacher; print val/test accuracy, MACs and params; save a bundle."""
    candidate = replace(CAND, init=init, blocks=blocks, prune_steps=prune_steps, width=width, prune=parse_prune(prune or []), prune_method=prune_method,
                        prune_at=prune_at, kd_loss=kd_loss, beta=beta, temperature=temperature, kd_alpha=kd_alpha,
                        schedule=schedule, stage1_fraction=stage1_fraction, align_teacher=align_teacher,
                        curriculum=curriculum, epochs=epochs, lr=lr, finetune_lr=finetune_lr, seed=seed)
    job = DistillJob(teacher=teacher, student=student, dataset=dataset, pairs=pairs, teacher_epochs=teacher_epochs,
                     train_subset=train_subset, device=device, candidate=candidate)
    result, folder, t_card = distill_student(job, lambdas=lambdas, out=out_dir, progress=epoch_printer,
                                             printer=out.print)
    teacher_acc = t_card.get("test_accuracy")
    out.print(f"[bold]{result.candidate['student']}[/] ({'inherited, ' if init == 'teacher' else ''}width {width:g}) from {t_card.get('arch', teacher)} on {dataset}: "
              f"test accuracy {100 * result.test_accuracy:.2f}%  val {100 * result.val_accuracy:.2f}%"
              + (f"  (teacher test {100 * teacher_acc:.2f}%)" if teacher_acc is not None else ""), highlight=False)
    out.print(f"MACs {result.macs / 1e6:.4f} M (before pruning {result.macs_before_pruning / 1e6:.4f} M)  "
              f"params {result.params / 1e6:.4f} M (before {result.params_before_pruning / 1e6:.4f} M)  "
              f"[{COST_UNIT_TITLE}]", highlight=False)
    out.print(f"saved: {folder} (result.json, channel_plan.json, model.safetensors, card.json)", highlight=False)
