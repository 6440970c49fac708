"""``autokd distill``: distil one student from a teacher, print its accuracy and cost, save it.

A thin command: it turns flags into a :class:`~autokd.trial.Candidate` (strings are resolved
here, at the edge) and calls :func:`autokd.trial.run_trial` once. ``cli.py`` registers it with
``app.command()(distill)``; it builds no Typer app of its own.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_common import epoch_printer, out, user_errors
from .errors import UserError


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
        if not 0.0 <= ratio < 1.0:
            raise UserError(f"--prune {item!r}: the ratio must be in [0, 1)")
        if key in spec:
            raise UserError(f"--prune {key} is given twice")
        spec[key] = ratio
    return spec


def _check_names(student: str, kd_loss: str, schedule: str, pairs: str, prune_method: str) -> None:
    """Resolve every name before any data is loaded or a teacher trained (UnknownName -> exit 2)."""
    from .distill import PAIR_LOSSES, PAIRINGS, SCHEDULES
    from .models import MODELS

    MODELS.get(student)
    PAIR_LOSSES.get(kd_loss)
    SCHEDULES.get(schedule)
    PAIRINGS.get(pairs)
    if prune_method != "learned-mask":
        from .prune import CRITERIA

        CRITERIA.get(prune_method)


@user_errors
def distill(
    teacher: Annotated[str, typer.Option(help="zoo name (trained once, cached) or bundle folder")] = "resnet20",
    student: Annotated[str, typer.Option(help="the student's zoo architecture, see `autokd models`")] = "convverytiny",
    dataset: Annotated[str, typer.Option(help="see `autokd datasets`")] = "digits",
    width: Annotated[float, typer.Option(help="student width multiplier")] = 1.0,
    beta: Annotated[float, typer.Option(help="task-loss weight in [0, 1]; 1 - beta weighs the pairs")] = 0.5,
    temperature: Annotated[float, typer.Option(help="KD temperature T on the logits (> 0)")] = 4.0,
    kd_alpha: Annotated[float, typer.Option(help="share of soft targets in the task loss; 0 = labels only")] = 0.5,
    pairs: Annotated[str, typer.Option(help="feature pairing: all | diag | none (weight 1 per pair)")] = "diag",
    lambdas: Annotated[Optional[list[str]], typer.Option("--lambda", help="tI:sJ=W, repeatable; replaces --pairs")] = None,
    kd_loss: Annotated[str, typer.Option(help="feature loss per pair: vid | fitnet | at")] = "vid",
    schedule: Annotated[str, typer.Option(help="one-stage | two-stage (classifier first)")] = "one-stage",
    stage1_fraction: Annotated[float, typer.Option(help="two-stage: share of epochs on the task only")] = 0.3,
    epochs: Annotated[int, typer.Option(help="student training epochs")] = 10,
    teacher_epochs: Annotated[int, typer.Option(help="epochs for a named teacher trained on first use")] = 15,
    lr: Annotated[float, typer.Option(help="student peak learning rate (cosine schedule)")] = 0.05,
    seed: Annotated[int, typer.Option(help="data split, teacher recipe, init and data order")] = 0,
    align_teacher: Annotated[bool, typer.Option(help="InDistill: teacher channels, no regressor")] = False,
    curriculum: Annotated[bool, typer.Option(help="pairs on shallow to deep, then task only")] = False,
    prune: Annotated[Optional[list[str]], typer.Option(help="0.4 (every layer) or KEY=RATIO, repeatable")] = None,
    prune_method: Annotated[str, typer.Option(help="l1 | bn | taylor | learned-mask")] = "l1",
    prune_at: Annotated[str, typer.Option(help="start (then distil) | during (mid-training)")] = "start",
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="bundle folder (default runs/<student>-<time>)")] = None,
) -> None:
    """Distil one student from a teacher; print val/test accuracy, MACs and params; save a bundle."""
    from .data import load_dataset
    from .distill import make_pairs, parse_lambda
    from .models import create_model
    from .provenance import default_device
    from .teacher import get_teacher
    from .train import Diverged, TrainConfig
    from .trial import Candidate, TrialContext, check_candidate, run_trial

    candidate = Candidate(student=student, width=width, prune=parse_prune(prune or []), prune_method=prune_method,
                          prune_at=prune_at, kd_loss=kd_loss, beta=beta, temperature=temperature, kd_alpha=kd_alpha,
                          schedule=schedule, stage1_fraction=stage1_fraction, align_teacher=align_teacher,
                          curriculum=curriculum, epochs=epochs, lr=lr, seed=seed)
    check_candidate(candidate)
    if teacher_epochs < 1:
        raise UserError(f"--teacher-epochs must be >= 1, got {teacher_epochs}")
    _check_names(student, kd_loss, schedule, pairs, prune_method)
    data = load_dataset(dataset, seed=seed)
    device = default_device()
    t_model, t_card = get_teacher(teacher, data, TrainConfig(epochs=teacher_epochs, seed=seed),
                                  progress=epoch_printer("teacher"), device=device, on_train=out.print)
    n_t = len(getattr(t_model, "points", []))
    n_s = len(create_model(student, num_classes=data.num_classes, in_channels=data.in_channels, width=width).points)
    if lambdas:
        parsed = [parse_lambda(text, n_t, n_s) for text in lambdas]
        candidate.lambdas = dict(parsed)
        if len(candidate.lambdas) < len(parsed):
            raise UserError("--lambda: the same pair is given twice")
    else:
        candidate.lambdas = make_pairs(pairs, n_t, n_s)
    folder = out_dir or Path("runs") / f"{student}-{time.strftime('%Y%m%d-%H%M%S')}"
    ctx = TrialContext(teacher=t_model, data=data, teacher_card=t_card, device=device,
                       progress=epoch_printer(student), out_dir=folder, evaluate_test=True)
    try:
        result = run_trial(candidate, ctx)
    except Diverged as e:
        raise UserError(f"training diverged ({e}); try a lower --lr or --temperature") from None
    teacher_acc = t_card.get("test_accuracy")
    out.print(f"[bold]{student}[/] (width {width:g}) from {t_card.get('arch', teacher)} on {data.name}: "
              f"test accuracy {100 * result.test_accuracy:.2f}%  val {100 * result.val_accuracy:.2f}%"
              + (f"  (teacher test {100 * teacher_acc:.2f}%)" if teacher_acc is not None else ""), highlight=False)
    out.print(f"MACs {result.macs / 1e6:.4f} M (before pruning {result.macs_before_pruning / 1e6:.4f} M)  "
              f"params {result.params / 1e6:.4f} M (before {result.params_before_pruning / 1e6:.4f} M)  "
              f"[MACs = conv+linear multiply-accumulates; FLOPs = 2 x MACs]", highlight=False)
    out.print(f"saved: {folder} (result.json, channel_plan.json, model.safetensors, card.json)", highlight=False)
