"""One trial: a candidate student in, a measured result out.

``Candidate`` (:mod:`autokd.candidate`) is plain data, what the search samples or the CLI parses;
``run_trial`` does all the work: build the student, prune it, distil from the teacher, measure.
Sampling does no work and ``run_trial`` does no sampling.

Order of work in ``run_trial`` (epochs E, one cosine learning-rate schedule over all of them):
  1. the student ``seeded_model(student, init seed)`` at ``width``; MACs/params measured;
  2. the schedule's phases (``autokd.distill.schedule``), cut once more at the pruning epoch P:
     P = 0 for ``prune_at="start"`` (prune, then distil), P = floor(PRUNE_FRACTION * E + 1/2)
     (at least 1) for ``prune_at="during"``; each piece is one ``fit`` call;
  3. at P the student is pruned: by a criterion (l1 | bn | taylor) on its current weights, by one
     ranking across all its layers down to a MAC target (global-l2 | global-l1 | global-bn |
     global-taylor: Torch-Pruning's MetaPruner, ``autokd.prune.global_rank``), or,
     for ``prune_method="learned-mask"`` (PDD, Dan et al. 2024), by the channel gates it learned with
     the distillation loss during epochs [0, P); the distiller is then rebuilt (new regressors,
     same teacher-output cache) and the remaining epochs distil into the pruned student
     ("distillation recovery", Kozynets & Demkiv 2026);
  4. after every epoch ``ctx.report(epoch, {"val_accuracy", "macs", "loss"})`` (plus
     ``"target_macs"`` while a pruning step is still ahead); True stops the trial, and a
     pending pruning step still runs, so the result describes the candidate's pruned student;
  5. MACs/params measured again, test accuracy only if ``ctx.evaluate_test``, the bundle and
     ``result.json`` written to ``ctx.out_dir`` if set.
Seeds, one stream per use (:func:`autokd.seeds.trial_seeds`): init (the student's weights), data
(order and augmentation), pairs (the regressors' weights).
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import torch.nn as nn
import torch.nn.functional as F

from .bundle import save_bundle
from .candidate import LEARNED_MASK, Candidate, check_candidate, is_global
from .data import DataSplits
from .distill import (PAIR_LOSSES, SCHEDULES, Distiller, Phase, TeacherCache, check_lambdas, curriculum_groups_on,
                      full_matrix, make_pairs, split_key)
from .errors import UserError
from .measure import COST_UNIT, Cost, flops_from_macs, measure
from .models import MODELS, channel_plan, tags
from .provenance import provenance
from .inherit import RECALIBRATION_IMAGES, inherit_student, recalibrate_bn
from .price import pruning_ratios
from .prune import CRITERIA, GLOBAL, ChannelGates, layout, predict_cost, prune_global, prune_to_plan, target_plan
from .seeds import trial_seeds
from .teacher import input_shape, seeded_model
from .train import TrainConfig, evaluate, fit

Reporter = Callable[[int, dict], bool | None]  # (epoch, {"val_accuracy", "macs", ...}) -> stop?


@dataclass
class TrialContext:
    """What a trial needs besides the candidate: the teacher, the data, where to report."""

    teacher: nn.Module
    data: DataSplits
    teacher_card: dict = field(default_factory=dict)
    device: str = "cpu"
    report: Reporter | None = None     # called after each epoch (and at 0 for an inherited student); True stops
    student: nn.Module | None = None   # start from these weights, already pruned (export's fine-tune of a point)
    progress: Callable[[int, int, dict], None] | None = None
    out_dir: Path | None = None        # if set, the student bundle is written here
    evaluate_test: bool = False        # the search never looks at the test set; `distill` does
    rung_val_images: int | None = None  # scores before the last epoch read the first N val images (None: all)


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


# ---------------------------------------------------------------- the run
PROBE_IMAGES = 256  # training images that fix the point shapes (and the aligned-teacher channels)
PRUNE_FRACTION = 0.5  # prune_at="during": share of the epochs before the channels are cut
GATE_WEIGHT = 1.0  # weight of ChannelGates.sparsity_loss while learned masks train (PDD)
LOSS_FORMULA = ("L = beta * L_task + (1 - beta) * sum_ij lambda_ij * L_pair(t_i, s_j) while a pair is on, "
                "else L_task; L_task = (1 - a) * CE + a * T^2 * KL(softmax(t/T) || softmax(s/T)), a = kd_alpha")
TEACHER_KEYS = ("arch", "width", "dataset", "epochs", "seed", "val_accuracy", "test_accuracy",
                "macs", "flops", "params", "cached_at", "path")


def _cut_epoch(epochs: int) -> int:
    """P, the mid-training cut of ``prune_at="during"``: PRUNE_FRACTION of the epochs, at least 1."""
    return min(epochs, max(1, int(PRUNE_FRACTION * epochs + 0.5)))


def _checked_teacher(teacher: nn.Module, data: DataSplits) -> nn.Module:
    args = getattr(teacher, "build_args", {})
    for key, want in (("num_classes", data.num_classes), ("in_channels", data.in_channels)):
        if key in args and args[key] != want:
            raise UserError(f"the teacher has {key}={args[key]} but dataset {data.name!r} needs {want}")
    if not getattr(teacher, "points", None):
        raise UserError("the teacher has no distillation points (.points): build it with autokd's zoo")
    return teacher


class TrialRun:
    """One candidate's student, trained piece by piece; ``train()`` then ``finish()``."""

    def __init__(self, c: Candidate, ctx: TrialContext) -> None:
        self.c, self.ctx, self.data = c, ctx, ctx.data
        self.shape = input_shape(self.data)
        self.seeds = trial_seeds(c.seed)
        PAIR_LOSSES.get(c.kd_loss)  # an unknown name fails even when align_teacher replaces it
        self.pair_loss_name = "aligned" if c.align_teacher else c.kd_loss
        self.phases = SCHEDULES.get(c.schedule)(c.epochs, c.stage1_fraction)
        self.teacher = _checked_teacher(ctx.teacher, self.data).to(ctx.device).eval()
        self.student = self._build().to(ctx.device)
        n_t, n_s = len(tags(self.teacher).points), len(tags(self.student).points)
        self.lambdas = make_pairs(c.pairs, n_t, n_s, c.pair_weight) if c.pairs else check_lambdas(c.lambdas, n_t, n_s)
        self.before = measure(self.student, self.shape)
        self.probe_x = self.data.train_x[:PROBE_IMAGES].to(ctx.device)
        self.probe_y = self.data.train_y[:PROBE_IMAGES].to(ctx.device)
        self.cfg = TrainConfig(epochs=c.epochs, lr=c.finetune_lr if self.inherited else c.lr, seed=self.seeds["data"])
        self.gates: ChannelGates | None = None
        self._kd: Distiller | None = None  # built after the pruning steps at epoch 0
        self.history: list[dict] = []
        self.stopped = False
        self.macs = self.before.macs
        self.steps = self._prepare_pruning()   # [(epoch, plan or None for the learned gates)], in order
        self._kd = self._distiller(cache=None)
        if self.inherited:
            self._epoch_zero()

    @property
    def inherited(self) -> bool:
        return self.c.init == "teacher" or self.ctx.student is not None

    def _build(self) -> nn.Module:
        """The student before pruning: given (a chosen point fine-tuned further), inherited, or seeded."""
        c = self.c
        if self.ctx.student is not None:
            return copy.deepcopy(self.ctx.student)
        if c.init == "teacher":  # fewer blocks than the teacher: the kept ones see other inputs, re-estimate
            student = inherit_student(self.teacher, c.student, rule=c.blocks)
            if c.student != tags(self.teacher).arch:
                recalibrate_bn(student, self.data.train_x[:RECALIBRATION_IMAGES].to(self.ctx.device))
            return student
        return seeded_model(c.student, self.seeds["init"], num_classes=self.data.num_classes,
                            in_channels=self.data.in_channels, width=c.width)

    # ------------------------------------------------------------ pruning hooks
    def _prepare_pruning(self) -> list[tuple[int, dict[str, int] | int | None]]:
        """The pruning steps: (epoch, channel plan), (epoch, MAC target) for global ranking, or (P, None)
        for learned gates; steps at epoch 0 run now."""
        c = self.c
        per_layer = pruning_ratios(c, self.student) if self.ctx.student is None else {}
        if is_global(c) and self.ctx.student is None:
            return self._run_now(self._global_steps(per_layer))
        if not any(r > 0 for r in per_layer.values()):
            return []
        final, target = self._ratio_plan(per_layer)
        self.target_macs = target.macs
        during = _cut_epoch(c.epochs)
        if c.prune_method == LEARNED_MASK:
            self.gates = ChannelGates(self.student, per_layer, self.shape)
            return [(during, None)]
        CRITERIA.get(c.prune_method)
        if c.prune_at == "during":
            return [(during, final)]
        k, base = c.prune_steps, channel_plan(self.student)  # gradual: step i (epoch i) reaches (i + 1) / k of every ratio
        steps = [(i, target_plan(layout(self.student), base, {n: r * (i + 1) / k for n, r in per_layer.items()}, 1))
                 for i in range(k - 1)] + [(k - 1, final)]
        return self._run_now(steps)

    def _ratio_plan(self, per_layer: dict[str, float]) -> tuple[dict[str, int], Cost]:
        """The plan and exact cost that cutting every layer by its ratio gives (autokd.prune.predict_cost)."""
        s = tags(self.student)
        return predict_cost(s.arch, num_classes=self.data.num_classes, in_channels=self.data.in_channels,
                            width=s.build_args["width"], ratios_spec=per_layer, input_shape=self.shape,
                            plan=channel_plan(self.student))

    def _global_steps(self, per_layer: dict[str, float]) -> list[tuple[int, int]]:
        """Global ranking's steps (epoch, MAC target): one at P for ``prune_at="during"``, else
        ``prune_steps`` steps, step i (epoch i) cutting the share (i + 1) / k of the MACs to remove.
        The target is ``c.target_macs``, or with 0 the MACs its ratios would give; none if already under."""
        c, before = self.c, self.before.macs
        self.target_macs = c.target_macs or (self._ratio_plan(per_layer)[1].macs if per_layer else before)
        if before <= self.target_macs:
            return []
        if c.prune_at == "during":
            return [(_cut_epoch(c.epochs), self.target_macs)]
        cut, k = before - self.target_macs, c.prune_steps
        return [(i, before - cut * (i + 1) // k) for i in range(k)]

    def _run_now(self, steps: list) -> list:
        """Run the steps at epoch 0; the rest, in order."""
        while steps and steps[0][0] == 0:
            self._prune(steps.pop(0)[1])
        return steps

    def _prune(self, plan: dict[str, int] | int | None) -> None:
        loss_fn = lambda m: F.cross_entropy(m(self.probe_x), self.probe_y)  # noqa: E731 (taylor's gradients)
        if plan is None:
            assert self.gates is not None, "a None step is the learned gates' cut"
            self.gates.finalize(self.student)
            self.gates = None
        elif isinstance(plan, int):  # global ranking down to a MAC target
            prune_global(self.student, plan, method=self.c.prune_method, input_shape=self.shape, loss_fn=loss_fn)
        else:
            prune_to_plan(self.student, plan, criterion=self.c.prune_method, input_shape=self.shape, loss_fn=loss_fn)
        if self.inherited:  # the inherited layers' statistics no longer hold: re-estimate them
            recalibrate_bn(self.student, self.data.train_x[:RECALIBRATION_IMAGES].to(self.ctx.device))
        self.macs = measure(self.student, self.shape).macs
        if self._kd is not None:  # new student widths: new regressors, same teacher cache
            self._kd = self._distiller(cache=self._kd.cache)

    def _epoch_zero(self) -> None:
        """An inherited student is scored before any training (after pruning and BN recalibration):
        the trial's epoch-0 result, its cheapest rung."""
        k = self.ctx.rung_val_images if self.c.epochs > 0 else None
        acc = evaluate(self.student, self.data.val_x[:k], self.data.val_y[:k])
        self.history.append({"epoch": 0, "loss": None, "val_accuracy": acc, "phase": "inherited",
                             "macs": self.macs, "active_pairs": []})
        report = {"val_accuracy": acc, "macs": self.macs, "loss": float("nan")}
        if self.steps:
            report["target_macs"] = self.target_macs
        if self.ctx.report is not None and self.ctx.report(0, report):
            self.stopped = True

    # ------------------------------------------------------------ training
    @property
    def distiller(self) -> Distiller:
        assert self._kd is not None, "built at the end of __init__"
        return self._kd

    def _distiller(self, cache: TeacherCache | None) -> Distiller:
        c = self.c
        gates = self.gates
        extra = (lambda: GATE_WEIGHT * gates.sparsity_loss()) if gates is not None else None
        cache_x = self.data.train_x if self.data.augment == "none" else None
        return Distiller(self.student, self.teacher, lambdas=self.lambdas,
                         pair_loss=PAIR_LOSSES.get(self.pair_loss_name), beta=c.beta,
                         temperature=c.temperature, alpha=c.kd_alpha, probe_x=self.probe_x, cache_x=cache_x, cache=cache,
                         seed=self.seeds["pairs"], extra_loss=extra)

    def _segments(self) -> Iterator[tuple[int, int, Phase]]:
        cuts = {0, self.c.epochs, *(p.start for p in self.phases)}
        cuts.update(e for e, _ in self.steps if e < self.c.epochs)
        edges = sorted(cuts)
        for a, b in zip(edges, edges[1:]):
            yield a, b, next(p for p in self.phases if p.start <= a < p.end)

    def _set_pairs(self, epoch: int, phase: Phase) -> None:
        """Which pairs are on during 0-based ``epoch``: none outside a distil phase; with a
        curriculum, the first groups (by teacher point, shallow to deep); otherwise all."""
        if not phase.features:
            self.distiller.set_active(set())
        elif self.c.curriculum:
            groups: dict[int, set[str]] = {}
            for key in self.distiller.weights:
                groups.setdefault(split_key(key)[0], set()).add(key)
            ordered = [groups[i] for i in sorted(groups)]
            n = curriculum_groups_on(epoch, len(ordered), phase.start, phase.end)
            self.distiller.set_active(set().union(*ordered[:n]))
        else:
            self.distiller.set_active(None)

    def _epoch_end(self, phase: Phase, epoch: int, record: dict) -> bool:
        parts = {f"loss/{k}": v for k, v in self.distiller.epoch_parts().items()}
        self.history.append({**record, **parts, "phase": phase.name, "macs": self.macs,
                             "active_pairs": sorted(self.distiller.active)})
        report = {"val_accuracy": record["val_accuracy"], "macs": self.macs, "loss": record["loss"]}
        if self.steps:
            report["target_macs"] = self.target_macs
        if self.ctx.report is not None and self.ctx.report(epoch, report):
            self.stopped = True
            return True
        if epoch < phase.end:
            self._set_pairs(epoch, phase)
        return False

    def train(self) -> None:
        progress = self.ctx.progress
        for start, end, phase in self._segments():
            while self.steps and self.steps[0][0] == start:
                self._prune(self.steps.pop(0)[1])
            self._set_pairs(start, phase)
            params = [*self.student.parameters(), *self.distiller.pair_parameters(),
                      *(self.gates.parameters() if self.gates is not None else [])]
            fit(self.student, self.data, self.cfg, loss_fn=self.distiller.loss, params=params,
                start_epoch=start, end_epoch=end, device=self.ctx.device, rung_val_images=self.ctx.rung_val_images,
                on_epoch_end=partial(self._epoch_end, phase),
                progress=(lambda e, _total, r: progress(e, self.c.epochs, r)) if progress else None)
            if self.stopped:
                break
        if self.steps:  # a step at E, or stopped before the last: the result is the candidate's pruned student
            self._prune(self.steps[-1][1])
            self.steps = []

    # ------------------------------------------------------------ result
    def resolved(self) -> dict:
        """The candidate as run: every lambda_ij (zeros included), the seeds, phases and loss."""
        t_points, s_points = list(tags(self.teacher).points), list(tags(self.student).points)
        return {**self.c.as_dict(),
                "lambdas": full_matrix(self.lambdas, len(t_points), len(s_points)),
                "pair_loss": self.pair_loss_name, "seeds": dict(self.seeds),
                "phases": [asdict(p) for p in self.phases], "loss": LOSS_FORMULA,
                "teacher_points": t_points, "student_points": s_points,
                "teacher_outputs": "cached per image" if self.distiller.cache is not None else "computed per batch"}

    def finish(self) -> TrialResult:
        student = self.student.eval()
        after = measure(student, self.shape)
        data = self.data
        result = TrialResult(
            val_accuracy=evaluate(student, data.val_x, data.val_y), macs=after.macs, params=after.params,
            macs_before_pruning=self.before.macs, params_before_pruning=self.before.params,
            test_accuracy=evaluate(student, data.test_x, data.test_y) if self.ctx.evaluate_test else None,
            history=self.history, stopped_early=self.stopped, plan=channel_plan(student),
            candidate=self.resolved())
        if self.ctx.out_dir is not None:
            self._write(result, self.ctx.out_dir)
        return result

    def _write(self, result: TrialResult, out_dir: Path) -> None:
        card_teacher = {k: self.ctx.teacher_card[k] for k in TEACHER_KEYS if k in self.ctx.teacher_card}
        summary = {**result.as_dict(), "flops": flops_from_macs(result.macs), "cost_unit": COST_UNIT,
                   "dataset": self.data.name, "input_shape": list(self.shape),
                   "num_classes": self.data.num_classes, "teacher": card_teacher, "provenance": provenance()}
        card = {"kind": "student", "arch": self.c.student, **summary}
        text = json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n"
        save_bundle(self.student.cpu(), out_dir, card, extra={"result.json": text.encode()})


def check_names(c: Candidate) -> None:
    """Resolve every registered name of ``c`` (student, kd_loss, schedule, prune_method): an unknown
    one raises ``UnknownName`` (a ``UserError``, one line listing the valid names)."""
    MODELS.get(c.student)
    PAIR_LOSSES.get(c.kd_loss)
    SCHEDULES.get(c.schedule)
    if is_global(c):
        GLOBAL.get(c.prune_method)
    elif c.prune_method != LEARNED_MASK:
        CRITERIA.get(c.prune_method)


def run_trial(candidate: Candidate, ctx: TrialContext) -> TrialResult:
    """Build, prune and distil one student from ``ctx.teacher`` on ``ctx.data``; measure it.

    See the module docstring for the order of work and the seeds; the loss is
    ``autokd.distill.Distiller``'s. Unknown names (student, kd_loss, schedule, prune_method)
    raise the registry's ``UnknownName``; impossible values a ``UserError``; a NaN loss
    ``autokd.train.Diverged``.
    """
    check_candidate(candidate)
    check_names(candidate)
    run = TrialRun(candidate, ctx)
    run.train()
    return run.finish()
