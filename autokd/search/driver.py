"""The search driver: Optuna is the brain, Ray Tune the muscle.

``search(cfg)`` prepares the search (:mod:`autokd.search.prepare`: every check, nothing written),
then, holding the study's lock: gets the teacher (trained once and cached for a name), opens the
Optuna study on disk (``studies/<name>/study.db``) with its sampler, writes ``config.json`` before
trial 0, trains the reference student once, and runs rounds of Ray Tune
(:mod:`autokd.search.tune`, imported here once, lazily: Ray loads only when a search runs) until
``cfg.trials`` trials were trained or ``cfg.compute`` epoch-equivalents spent. Only the driver writes to the study; workers report through Ray.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import optuna

from ..bundle import plan_of, write_json
from ..candidate import Candidate
from ..errors import UserError
from ..inherit import RECALIBRATION_IMAGES
from ..measure import COST_UNIT
from ..provenance import provenance, resolve_device
from ..seeds import sampler_seed
from ..space import choices_of, write_space
from ..teacher import get_teacher, train_model
from ..train import TrainConfig
from . import store
from .compute import trial_compute
from .config import DEFAULT_TRIALS, SAMPLERS, SearchConfig
from .prepare import Plan, Session, prepare
from .objective import keep_calibration
from .record import RECORD_VERSION, StudyRecord, TrialRecord, warm_start_attrs, write_study
from .stopping import RungResult, make_stopper

Say = Callable[[str], None]


def search(cfg: SearchConfig | None = None, *, printer: Say | None = None, **overrides) -> optuna.Study:
    """Run (or resume) a study until ``cfg.trials`` trials were trained; returns the Optuna study.

    Everything a user can get wrong is checked before anything is written or trained.
    """
    plan = prepare(replace(cfg or SearchConfig(), **overrides))
    say = printer or (lambda _msg: None)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with store.locked(plan.study) as folder:
        session = open_session(plan, folder, say)
        run_trials(session, say)
    return session.study


def open_session(plan: Plan, folder: Path, say: Say) -> Session:
    """The teacher, the study and its sampler, the config record (new study) and the reference point."""
    cfg = plan.cfg
    saved = store.read_config(plan.study)
    teacher, tcard = get_teacher(cfg.teacher, plan.data, TrainConfig(epochs=cfg.teacher_epochs, seed=cfg.seed),
                                 device=resolve_device(cfg.device), on_train=say, progress=_epochs_said("teacher", say))
    stored = saved.get("sampler", {})  # a resumed study keeps the sampler and seed it was created with
    seed0, name = stored.get("seed", cfg.seed), stored.get("name", cfg.sampler)
    study = store.create(plan.study, objectives=plan.objectives)
    study.sampler = SAMPLERS.get(name)(sampler_seed(seed0, len(study.trials)), cfg.target_trials)
    if not saved:
        _record_new_study(plan, study, folder, tcard, seed0)
        if cfg.warm_start:
            names = warm_starts_within(plan)
            enqueue_warm_start(study, plan.space, names)
            if len(names) < len(plan.space.warm_start):
                say(f"warm start: the first {len(names)} of the space's {len(plan.space.warm_start)} settings "
                    f"(at most {WARM_START_SHARE:.0%} of --compute {cfg.compute:g}; the rest is sampled)")
    lost = store.recover_interrupted(study)
    if lost:
        say(f"resuming: {lost} trial(s) left running by an earlier driver recorded as failed")
    c, b = store.counts(study), plan.budget
    spent = store.compute_spent(study)
    wanted = f" of {cfg.trials or DEFAULT_TRIALS}" if cfg.compute is None or cfg.trials else ""
    work = f"{spent:.1f}" + (f" of {cfg.compute:g}" if cfg.compute is not None else "")
    say(f"study {cfg.study}: {c['trained']}{wanted} trials trained so far, compute {work} epoch-equivalents; budget "
        f"{b.macs / 1e6:.3f} M MACs ({b.flops / 1e6:.3f} M FLOPs, "
        f"{100 * b.share_of_teacher:.0f}% of teacher {plan.teacher.arch})")
    if plan.latency is not None:
        lat = plan.latency
        limit = (f"budget {lat.budget.ms:.3f} ms ({100 * lat.budget.share_of_teacher:.0f}% of the teacher's); "
                 if lat.budget else "")
        say(f"cost: predicted latency, {lat.setting.label}; {limit}teacher {lat.teacher_ms:.3f} ms")
    if cfg.reference and not StudyRecord.of(study).references:
        write_study(study, references=[reference_student(plan, say)])
    stopper = make_stopper(cfg.stopping, cfg.epochs, eta=cfg.eta, min_dominators=cfg.min_dominators,
                           margin=cfg.stop_margin) if cfg.early_stopping else None
    if stopper:
        _preload_rungs(study, stopper, plan, cfg.cost)
    blob = (plan_of(teacher), {k: v.detach().cpu() for k, v in teacher.state_dict().items()})
    return Session(plan, folder, study, blob, stopper)


def _record_new_study(plan: Plan, study: optuna.Study, folder: Path, tcard: dict, seed: int) -> None:
    cfg, budget = plan.cfg, plan.budget
    space_file = write_space(plan.space, folder / f"{plan.space.name}.yaml").name  # a resume samples this one
    record = {"search": cfg.as_dict(),
              "space": {"name": plan.space.name, "path": str(plan.space.path), "file": space_file},
              "teacher": {"spec": cfg.teacher, "arch": plan.teacher.arch, "macs": plan.teacher.macs,
                          "test_accuracy": tcard.get("test_accuracy"), "val_accuracy": tcard.get("val_accuracy"),
                          "bundle": tcard.get("cached_at", cfg.teacher)},
              "budget": budget.as_dict(), "sampler": {"name": cfg.sampler, "seed": seed},
              "objectives": {"values": list(plan.objectives), "directions": list(store.DIRECTIONS)},
              "cost_unit": cost_unit(plan), "provenance": provenance(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    attrs = {**budget.as_dict(), "teacher": cfg.teacher, "teacher_arch": plan.teacher.arch,
             "teacher_macs": plan.teacher.macs, "dataset": cfg.dataset, "space": plan.space.name,
             "objectives": list(plan.objectives), "cost_unit": cost_unit(plan), "input_shape": list(plan.shape),
             "num_classes": plan.data.num_classes, "record_version": RECORD_VERSION, "cost": cfg.cost}
    if plan.latency is not None:
        keep_calibration(plan.latency, folder)   # a resume prices with this predictor, not a later one
        record["latency"] = attrs["latency"] = plan.latency.record()
    write_study(study, **attrs)
    write_json(folder / "config.json", record)


def cost_unit(plan: Plan) -> str:
    """What the second objective counts: MACs, or predicted ms in one setting."""
    if plan.latency is None:
        return COST_UNIT
    return f"latency_ms: predicted milliseconds per inference, {plan.latency.setting.label}"


WARM_START_SHARE = 0.5  # of --compute: the warm starts' most, so the sampler always has the rest


def warm_starts_within(plan: Plan) -> list[str]:
    """The space's warm-start names a new study enqueues: all of them, or with ``--compute`` the first
    ones, in the file's order, whose full cost (autokd.search.compute) fits in ``WARM_START_SHARE`` of
    it (always the first): otherwise a small ``--compute`` is spent on warm starts alone."""
    cfg, space = plan.cfg, plan.space
    names = list(space.warm_start)
    if cfg.compute is None or not names:
        return names
    sizes = {"train_images": len(plan.data.train_y), "val_images": len(plan.data.val_y)}
    taken: list[str] = []
    total = 0.0
    for name in names:
        inherited = space.warm_start[name].get("student/init", space.fixed.get("student/init")) == "teacher"
        cost = trial_compute(cfg.epochs, cfg.epochs + inherited, **sizes,
                             recalibration_images=RECALIBRATION_IMAGES if inherited else 0,
                             rung_images=cfg.rung_val_images or None, full_evaluations=1)
        if taken and total + cost > WARM_START_SHARE * cfg.compute:
            break
        taken.append(name)
        total += cost
    return taken


def enqueue_warm_start(study: optuna.Study, space, names: list[str] | None = None) -> int:
    """The space's ``warm_start`` settings (or those ``names``) as the study's first trials, in the
    file's order (Optuna hands enqueued trials out before it samples; what an entry leaves out is still
    sampled)."""
    chosen = list(space.warm_start) if names is None else names
    for name in chosen:
        study.enqueue_trial(space.warm_start[name], user_attrs=warm_start_attrs(name), skip_if_exists=True)
    return len(chosen)


def _epochs_said(label: str, say: Say) -> Callable[[int, int, dict], None]:
    """A training's progress as one line an epoch (a teacher trains for minutes before trial 0)."""
    return lambda epoch, total, record: say(f"{label} epoch {epoch}/{total}: val accuracy "
                                            f"{100 * record['val_accuracy']:.2f}%")


def reference_student(plan: Plan, say: Say) -> dict:
    """The space's first student, unpruned at width 1, trained alone (cross-entropy, no teacher)
    for the trials' epochs and seed: the reference point of ``autokd pareto``'s scatter. Its
    validation accuracy only; the test set stays unread."""
    cfg, space = plan.cfg, plan.space
    dists = space.distributions
    arch = space.fixed.get("student/arch") or (choices_of(dists["student/arch"])[0] if "student/arch" in dists
                                               else Candidate().student)
    say(f"training the reference: {arch} alone (unpruned, width 1, no teacher), {cfg.epochs} epochs")
    device = resolve_device(cfg.device) if cfg.gpus_per_trial > 0 else "cpu"
    _, card = train_model(arch, plan.data, TrainConfig(epochs=cfg.epochs, seed=cfg.seed), device=device)
    say(f"reference: {arch} alone reached {100 * card['val_accuracy']:.2f}% val accuracy at "
        f"{card['macs'] / 1e6:.3g} M MACs")
    return {"label": f"{arch} trained alone (unpruned, width 1)", "arch": arch, "width": 1.0,
            "epochs": cfg.epochs, "val_accuracy": card["val_accuracy"], "macs": card["macs"],
            "params": card["params"]}


def trial_cost(rec: TrialRecord, cost: str) -> float:
    """A trial's second objective as sampled: its MACs, or its predicted latency in ms."""
    return float(rec.latency_ms or 0.0) if cost == "latency" else int(rec.macs or 0)


def _preload_rungs(study: optuna.Study, stopper, plan: Plan, cost: str = "macs") -> None:
    """A resumed study's rung table: every trained trial's accuracy at each rung it reached, but the
    ones scored before its last pruning step (``unranked_epochs``: the live search ranks none of them)."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for t in study.get_trials(deepcopy=False, states=states):
        rec = TrialRecord.of(t)
        for epoch, acc in rec.epoch_val_accuracy.items():
            if int(epoch) in stopper.rungs and int(epoch) not in rec.unranked_epochs:
                group = plan.rung_group(rec.init, rec.target_macs, rec.target_ms)
                stopper.record(RungResult(t.number, int(epoch), float(acc), trial_cost(rec, cost), group))


def run_trials(session: Session, say: Say) -> None:
    """Rounds of Ray Tune until the target is trained; Ctrl-C ends the search (KeyboardInterrupt)."""
    from . import ray_start, tune  # Ray: imported when a search runs, not when autokd is

    cfg, study = session.cfg, session.study
    counts, spent = store.counts(study), store.compute_spent(study)
    started, failures_at_start = time.time(), counts["failed"]

    def more() -> bool:
        return counts["trained"] < cfg.target_trials and (cfg.compute is None or spent < cfg.compute)

    try:
        with tune.Interrupt() as interrupt:
            while more():
                if counts["failed"] - failures_at_start >= max(3, cfg.trials or DEFAULT_TRIALS):
                    raise UserError(f"{counts['failed'] - failures_at_start} trials failed in this run; see "
                                    f"`autokd studies` and the trials' 'failure' attribute in {session.folder}")
                before = (counts["trained"], counts["failed"])
                gave_up = tune.run_round(session, tune.Tally.of(counts, spent), started, say, interrupt)
                if interrupt.hit:
                    raise KeyboardInterrupt
                if gave_up:
                    raise UserError(f"search {cfg.study} stopped: {gave_up}")
                counts, spent = store.counts(study), store.compute_spent(study)
                if (counts["trained"], counts["failed"]) == before:
                    break  # nothing ran and nothing failed: do not spin
    finally:
        ray_start.shutdown_ray()
    say(f"study {cfg.study}: {counts['done']} done, {counts['stopped']} stopped early, "
        f"{counts['rejected']} rejected (over budget), {counts['failed']} failed; compute {spent:.1f} "
        f"epoch-equivalents — {session.folder}")
