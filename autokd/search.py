"""The search driver: Optuna is the brain, Ray Tune the muscle.

The driver owns the Optuna study (``studies/<name>/study.db``): a custom Ray Tune ``Searcher``
asks Optuna for a candidate, computes its MACs before any training (``prune.predict_cost``) and
records an over-budget candidate as a *rejected* trial instead of training it. Ray Tune runs the
accepted candidates in worker processes (local Ray by default, an existing cluster with
``address``), a Tune scheduler applies the two-objective early stopping of
:mod:`autokd.stopping`, and every result is told back to Optuna by the driver alone.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from .budget import Budget, parse_budget
from .errors import UserError
from .registry import Registry
from .search_ray import (OptunaSearcher, _init_ray, _Interrupt, _shutdown_ray, make_interrupt_stopper,
                         make_progress, make_scheduler, trainable)
from .trial import Candidate

SAMPLERS: Registry[Callable] = Registry("sampler")


@SAMPLERS.register("tpe")
def _tpe(seed: int, trials: int):
    import optuna  # multivariate TPE, constant liar: parallel workers do not all ask for one point

    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                      n_startup_trials=max(4, min(10, trials // 3)))


@SAMPLERS.register("nsga2")
def _nsga2(seed: int, trials: int):
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, trials // 3)))


@SAMPLERS.register("random")
def _random(seed: int, trials: int):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@dataclass
class SearchConfig:
    teacher: str = "resnet56"      # architecture name (trained once and cached) or a bundle path
    dataset: str = "digits"        # the embedded default: offline, seconds per epoch on a CPU
    flops_budget: str = "40%"      # share of the teacher's cost, or absolute FLOPs ("100M")
    space: str | None = None       # a YAML path or shipped name; default: the teacher family's
    study: str | None = None       # default "<teacher>-<dataset>"
    trials: int = 12               # trained trials wanted in total (completed + stopped early)
    parallel: int = 2              # trials at once; 2 fills the 2-core laptop case
    epochs: int = 5                # per trial: enough to rank candidates on digits
    teacher_epochs: int = 15       # for a named teacher trained on first use
    sampler: str = "tpe"
    seed: int = 0
    address: str | None = None     # an existing Ray cluster (`ray start --head`), else local Ray
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    early_stopping: bool = True
    reference: bool = True         # train the space's first student alone once: the front's yardstick
    min_dominators: int = 2        # see autokd.stopping
    stop_margin: float = 0.02      # dominated by at least 2 accuracy points: epoch-1 noise stops nothing
    train_subset: int | None = None
    max_retries: int = 1           # Ray retries of a trial whose worker died
    max_rejections: int = 500      # consecutive over-budget samples before giving up

    def as_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------ checks before anything runs
def check_config(cfg: SearchConfig) -> None:
    from .study import check_name

    for name in ("trials", "parallel", "epochs", "teacher_epochs"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if cfg.cpus_per_trial <= 0 or cfg.gpus_per_trial < 0:
        raise UserError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    SAMPLERS.get(cfg.sampler)
    check_name(cfg.study or default_study_name(cfg))
    if cfg.address:
        check_cluster(cfg.address)


def default_study_name(cfg: SearchConfig) -> str:
    stem = Path(cfg.teacher).name.removesuffix(".safetensors") if os.sep in cfg.teacher else cfg.teacher
    return f"{stem}-{cfg.dataset}".replace(":", "_").replace("/", "_")


def check_cluster(address: str, timeout: float = 3.0) -> None:
    """Fail in seconds, with one line, when nothing listens at ``host:port``."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return
    except (ValueError, OSError) as e:
        raise UserError(f"--address {address}: no Ray cluster answers there ({e.__class__.__name__}); "
                        "start one with `ray start --head --port PORT` or drop --address to run locally") from None


def teacher_arch_and_macs(spec: str, input_shape: tuple[int, ...], num_classes: int) -> tuple[str, int]:
    """The teacher's architecture and MACs, known without training it."""
    from .bundle import load_bundle
    from .measure import count_macs
    from .models import MODELS, create_model

    if spec in MODELS and not Path(spec).exists():
        model = create_model(spec, num_classes=num_classes, in_channels=input_shape[0])
        return spec, count_macs(model, input_shape)
    if not Path(spec).exists():
        raise UserError(f"unknown teacher {spec!r}: neither a model folder/.safetensors file nor one of: "
                        + ", ".join(MODELS.names()))
    model, _ = load_bundle(spec)
    return model.arch, count_macs(model, input_shape)


def predict_macs(cand: Candidate, num_classes: int, input_shape: tuple[int, ...]) -> int:
    from .prune import predict_cost

    _, cost = predict_cost(cand.student, num_classes=num_classes, in_channels=input_shape[0],
                           width=cand.width, ratios_spec=cand.prune or 0.0, input_shape=input_shape)
    return cost.macs


def cheapest_macs(space, base: Candidate, num_classes: int, input_shape) -> int:
    from .space import params_to_candidate

    return min(predict_macs(params_to_candidate(p, fixed=space.fixed, base=base), num_classes, input_shape)
               for p in space.min_cost_candidates())


def _preload_rungs(study, stopper) -> None:
    from optuna.trial import TrialState

    from .stopping import RungResult

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        for epoch, acc in t.user_attrs.get("epoch_val_accuracy", {}).items():
            if int(epoch) in stopper.rungs:
                stopper.record(RungResult(t.number, int(epoch), float(acc), int(t.user_attrs.get("macs", 0))))


def _resolve_space(cfg: SearchConfig, teacher_arch: str):
    from .space import default_space_for, load_space

    return load_space(cfg.space or default_space_for(teacher_arch))


def _config_record(cfg: SearchConfig, space, budget: Budget, teacher_arch: str, teacher_macs: int,
                   teacher_card: dict, sampler_seed: int) -> dict:
    from .measure import COST_UNIT
    from .provenance import provenance

    return {"search": cfg.as_dict(), "space": {"name": space.name, "path": str(space.path)},
            "teacher": {"spec": cfg.teacher, "arch": teacher_arch, "macs": teacher_macs,
                        "test_accuracy": teacher_card.get("test_accuracy"),
                        "val_accuracy": teacher_card.get("val_accuracy"),
                        "bundle": teacher_card.get("cached_at", cfg.teacher)},
            "budget": budget.as_dict(), "sampler": {"name": cfg.sampler, "seed": sampler_seed},
            "objectives": {"values": ["val_accuracy", "macs"], "directions": ["maximize", "minimize"]},
            "cost_unit": COST_UNIT,
            "provenance": provenance(), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _reference_student(space, data, cfg: SearchConfig, say: Callable[[str], None]) -> dict:
    """The space's first student, unpruned at width 1, trained alone (cross-entropy, no teacher)
    for the trials' epochs and seed: the reference point of ``autokd pareto``'s scatter. Its
    validation accuracy only; the test set stays unread."""
    from .provenance import default_device
    from .teacher import train_model
    from .train import TrainConfig

    dists = space.distributions
    arch = space.fixed.get("student/arch") or (dists["student/arch"].choices[0] if "student/arch" in dists
                                               else Candidate().student)
    say(f"training the reference: {arch} alone (unpruned, width 1, no teacher), {cfg.epochs} epochs")
    _, card = train_model(arch, data, TrainConfig(epochs=cfg.epochs, seed=cfg.seed),
                          device=default_device() if cfg.gpus_per_trial > 0 else "cpu")
    return {"label": f"{arch} trained alone (unpruned, width 1)", "arch": arch, "width": 1.0,
            "epochs": cfg.epochs, "val_accuracy": card["val_accuracy"], "macs": card["macs"],
            "params": card["params"]}


def _check_resume(cfg: SearchConfig, saved: dict) -> None:
    old = saved.get("search", {})
    for key in ("teacher", "dataset", "flops_budget", "space", "epochs", "train_subset"):
        if key in old and old[key] != getattr(cfg, key) and not (key == "space" and cfg.space is None):
            raise UserError(f"study {cfg.study!r} was created with --{key.replace('_', '-')} {old[key]!r}, "
                            f"not {getattr(cfg, key)!r}; resume with the same settings or use another --study")


def search(cfg: SearchConfig | None = None, *, printer: Callable[[str], None] | None = None, **overrides):
    """Run (or resume) a study until ``cfg.trials`` trials were trained; returns the Optuna study.

    Everything a user can get wrong is checked before anything is written or trained.
    """
    import optuna

    from . import study as studies
    from .bundle import plan_of
    from .data import load_dataset
    from .stopping import ParetoStopper, default_rungs
    from .teacher import get_teacher
    from .train import TrainConfig

    cfg = replace(cfg or SearchConfig(), **overrides)
    cfg.study = cfg.study or default_study_name(cfg)
    check_config(cfg)
    say = printer or (lambda _msg: None)
    data = load_dataset(cfg.dataset, seed=cfg.seed, train_subset=cfg.train_subset)
    shape = (data.in_channels, *data.image_size)
    teacher_arch, teacher_macs = teacher_arch_and_macs(cfg.teacher, shape, data.num_classes)
    budget = parse_budget(cfg.flops_budget, teacher_macs)
    space = _resolve_space(cfg, teacher_arch)
    base = Candidate(epochs=cfg.epochs)
    floor = cheapest_macs(space, base, data.num_classes, shape)
    if floor > budget.macs:
        raise UserError(f"no candidate of space {space.name!r} fits the budget: the cheapest costs "
                        f"{floor:,} MACs, the budget is {budget.macs:,} MACs ({cfg.flops_budget}); "
                        "raise --flops-budget or use a space with smaller students")
    if studies.exists(cfg.study):
        _check_resume(cfg, studies.read_config(cfg.study))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with studies.locked(cfg.study) as folder:
        saved = studies.read_config(cfg.study)
        tcfg = TrainConfig(epochs=cfg.teacher_epochs, seed=cfg.seed)
        teacher, tcard = get_teacher(cfg.teacher, data, tcfg, on_train=say)
        sampler_seed = saved.get("sampler", {}).get("seed", cfg.seed)
        study = optuna.create_study(study_name=cfg.study, storage=studies.storage_url(cfg.study),
                                    directions=list(studies.DIRECTIONS), load_if_exists=True)
        # the stored sampler and seed; offset by the trials so far so a resumed run draws new points
        sampler_name = saved.get("sampler", {}).get("name", cfg.sampler)
        study.sampler = SAMPLERS.get(sampler_name)(sampler_seed + len(study.trials), cfg.trials)
        if not saved:
            from .bundle import write_json

            record = _config_record(cfg, space, budget, teacher_arch, teacher_macs, tcard, sampler_seed)
            for key, value in {**budget.as_dict(), "teacher": cfg.teacher, "teacher_arch": teacher_arch,
                               "teacher_macs": teacher_macs, "dataset": cfg.dataset, "space": space.name,
                               "objectives": ["val_accuracy", "macs"], "cost_unit": record["cost_unit"],
                               "input_shape": list(shape), "num_classes": data.num_classes}.items():
                study.set_user_attr(key, value)
            write_json(folder / "config.json", record)
        lost = studies.recover_interrupted(study)
        if lost:
            say(f"resuming: {lost} trial(s) left running by an earlier driver recorded as failed")
        stats = studies.counts(study)
        say(f"study {cfg.study}: {stats['trained']} of {cfg.trials} trials trained so far; budget "
            f"{budget.macs / 1e6:.3f} M MACs ({budget.flops / 1e6:.3f} M FLOPs, "
            f"{100 * budget.share_of_teacher:.0f}% of teacher {teacher_arch})")
        if cfg.reference and not study.user_attrs.get("references"):
            study.set_user_attr("references", [_reference_student(space, data, cfg, say)])
        stopper = (ParetoStopper(default_rungs(cfg.epochs), cfg.min_dominators, cfg.stop_margin)
                   if cfg.early_stopping else None)
        if stopper:
            _preload_rungs(study, stopper)
        blob = (plan_of(teacher), {k: v.detach().cpu() for k, v in teacher.state_dict().items()})
        started, failures_at_start = time.time(), stats["failed"]
        try:
            with _Interrupt() as interrupt:
                while stats["trained"] < cfg.trials:
                    if stats["failed"] - failures_at_start >= max(3, cfg.trials):
                        raise UserError(f"{stats['failed'] - failures_at_start} trials failed in this run; see "
                                        f"`autokd studies` and the trials' 'failure' attribute in {folder}")
                    before = (stats["trained"], stats["failed"])
                    _run_round(cfg, study, space, base, budget, data, shape, folder, blob, stats, stopper, started,
                               say, interrupt)
                    if interrupt.hit:
                        raise KeyboardInterrupt
                    stats = studies.counts(study)
                    if (stats["trained"], stats["failed"]) == before:
                        break  # nothing ran and nothing failed: do not spin
        finally:
            _shutdown_ray()
        say(f"study {cfg.study}: {stats['done']} done, {stats['stopped']} stopped early, "
            f"{stats['rejected']} rejected (over budget), {stats['failed']} failed — {folder}")
    return study


def _run_round(cfg, study, space, base, budget, data, shape, folder, blob, stats, stopper, started, say,
               interrupt: _Interrupt | None = None) -> None:
    """One Ray Tune run that trains trials until the target is reached (or trials fail)."""
    from ray import tune

    _init_ray(cfg)
    run_stats = {"trained": stats["trained"], "done": stats["done"], "stopped": stats["stopped"],
                 "rejected": stats["rejected"], "failed": stats["failed"]}
    searcher = OptunaSearcher.build(study=study, space=space, base=base, budget=budget, target=cfg.trials,
                                    num_classes=data.num_classes, input_shape=shape, folder=folder, cfg=cfg,
                                    stats=run_stats, interrupt=interrupt)
    fn = tune.with_resources(tune.with_parameters(trainable, data=data, teacher_blob=blob),
                             {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial})
    tuner = tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=cfg.parallel,
                                    # a finished trial's worker runs the next one: no new process, no
                                    # re-import of torch (driver time a trial: 4.2 s -> 0.1 s, benchmarks table 3)
                                    reuse_actors=True,
                                    scheduler=make_scheduler(stopper, searcher) if stopper else None),
        run_config=tune.RunConfig(name=f"round-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
                                  storage_path=str(folder / "ray"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=cfg.max_retries),
                                  stop=make_interrupt_stopper(interrupt) if interrupt else None,
                                  callbacks=[make_progress(run_stats, cfg.trials, started, say,
                                                           on_retry=searcher.note_retry)]),
    )
    try:
        tuner.fit()
    finally:
        searcher.abandon_live("interrupted (Ctrl-C)" if interrupt and interrupt.hit else
                              "interrupted: the search driver stopped while it ran")
