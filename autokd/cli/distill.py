"""``autokd distill``: distil one student from a teacher, print its accuracy and cost, save it.

A thin command over :func:`autokd.student.distill_student`: one option per field of
:class:`~autokd.student.DistillJob` and of its :class:`~autokd.candidate.Candidate` (built by
:func:`~autokd.cli.options.with_fields`), plus the repeatable ``--prune`` and ``--lambda``, parsed here. ``cli.app``
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
from .options import Fields, option, with_fields

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


@user_errors
@with_fields(job=Fields(JOB, skip=("candidate",)), cand=Fields(CAND, skip=("student", "prune", "lambdas"),
                                                                   more={"seed": "also the data split and the teacher recipe"}))
def distill(
    job: DistillJob,
    cand: Candidate,
    prune: Annotated[Optional[list[str]], option(Candidate, "prune")] = None,
    lambdas: Annotated[Optional[list[str]], option(Candidate, "lambdas", "--lambda",
                                                   help="replaces --pairs")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="bundle folder (default runs/<student>-<time>)")] = None,
) -> None:
    """Distil one student from a teacher; print val/test accuracy, MACs and params; save a bundle."""
    job = replace(job, candidate=replace(cand, prune=parse_prune(prune or [])))
    result, folder, t_card = distill_student(job, lambdas=lambdas, out=out_dir, progress=epoch_printer,
                                             printer=out.print)
    teacher_acc = t_card.get("test_accuracy")
    assert result.test_accuracy is not None  # distill_student evaluates the test set
    how = f"{'inherited, ' if cand.init == 'teacher' else ''}width {cand.width:g}"
    out.print(f"[bold]{result.candidate['student']}[/] ({how}) from {t_card.get('arch', job.teacher)} on {job.dataset}: "
              f"test accuracy {100 * result.test_accuracy:.2f}%  val {100 * result.val_accuracy:.2f}%"
              + (f"  (teacher test {100 * teacher_acc:.2f}%)" if teacher_acc is not None else ""), highlight=False)
    out.print(f"MACs {result.macs / 1e6:.4f} M (before pruning {result.macs_before_pruning / 1e6:.4f} M)  "
              f"params {result.params / 1e6:.4f} M (before {result.params_before_pruning / 1e6:.4f} M)  "
              f"[{COST_UNIT_TITLE}]", highlight=False)
    out.print(f"saved: {folder} (result.json, channel_plan.json, model.safetensors, card.json)", highlight=False)
