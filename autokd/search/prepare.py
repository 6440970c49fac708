"""Preparing a search: every check a user can fail, before anything is written or trained.

:func:`prepare` resolves a :class:`~autokd.search.config.SearchConfig` into a :class:`Plan`, the
one object the driver runs: the data, the teacher's architecture and MACs, the budget, the space,
the base candidate. It loads the dataset (to know the input shape) but trains nothing, writes
nothing, and touches no study but to read the config of one being resumed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import optuna

from ..candidate import Candidate
from ..data import DataSplits, load_dataset
from ..errors import UserError
from ..inherit import check_inheritable
from ..provenance import resolve_device
from ..space import SearchSpace, choices_of, fix_params, load_space, low_of
from ..teacher_space import check_lambda_points, default_space_for
from . import store
from .budget import SHARE, Budget, TeacherShape, cheapest_macs, cheapest_projected_macs, parse_budget, teacher_shape
from ..timing import Setting
from .config import DEFAULT_FLOPS_BUDGET, DEFAULT_TRIALS, SearchConfig, check_config, default_study_name
from .objective import CALIBRATION_FILE, OBJECTIVES, LatencyObjective, latency_objective
from .stopping import ParetoStopper, rung_group

RESUME_KEYS = ("teacher", "dataset", "flops_budget", "space", "epochs", "lr", "train_subset", "cost",
               "latency_budget", "latency_runtime", "latency_threads", "latency_batch")  # fixed per study


@dataclass(frozen=True)
class Plan:
    """A checked search, ready to run: what :func:`autokd.search.driver.search` opens and runs."""

    cfg: SearchConfig            # with its study name resolved
    data: DataSplits
    shape: tuple[int, int, int]  # the input (C, H, W)
    teacher: TeacherShape        # architecture, MACs and plan, known before it is trained
    budget: Budget
    space: SearchSpace
    base: Candidate              # what every sample starts from (the trial epochs, a fixed lr)
    latency: LatencyObjective | None = None   # --cost latency: the predictor (and a budget in ms)

    @property
    def study(self) -> str:
        assert self.cfg.study is not None  # resolved by prepare()
        return self.cfg.study

    @property
    def objectives(self) -> tuple[str, str]:
        """The study's values, in order: accuracy, then macs or latency_ms."""
        return OBJECTIVES["latency" if self.latency else "macs"]

    def cost_of(self, macs: int | None, latency_ms: float | None) -> float | None:
        """A trial's second objective from its MACs and predicted latency."""
        return latency_ms if self.latency else macs

    def at_budget(self, target_macs: int | None, target_ms: float | None) -> bool:
        """A candidate projected onto the budget itself (``budget/share`` 1), not below it: the
        target a trial records (``TrialRecord.target_macs`` / ``target_ms``) is the budget's."""
        if self.latency is not None and self.latency.budget is not None:
            return target_ms == self.latency.budget.ms
        return target_macs == self.budget.macs

    def rung_group(self, init: str, target_macs: int | None, target_ms: float | None) -> str:
        """The rung group a candidate of this plan is ranked in (:func:`autokd.search.stopping.rung_group`)."""
        return rung_group(init, self.at_budget(target_macs, target_ms))


@dataclass
class Session:
    """A prepared search with its study open: what every round of trials reads."""

    plan: Plan
    folder: Path                 # studies/<name>/
    study: optuna.Study
    teacher_blob: tuple          # (plan_of(teacher), CPU state dict): what a worker rebuilds it from
    stopper: ParetoStopper | None

    @property
    def cfg(self) -> SearchConfig:
        return self.plan.cfg


def prepare(cfg: SearchConfig) -> Plan:
    """Check ``cfg`` and resolve everything a search needs but the teacher's weights; see the module doc."""
    # resolved, as config.json records them: the study's name, and the trials a search without
    # --trials or --compute runs (with --compute alone there is no trial limit: None)
    trials = DEFAULT_TRIALS if cfg.trials is None and cfg.compute is None else cfg.trials
    flops = cfg.flops_budget or ("100%" if cfg.latency_budget else DEFAULT_FLOPS_BUDGET)
    study = cfg.study or default_study_name(cfg)
    cfg = replace(cfg, study=study, trials=trials, flops_budget=flops,
                  cost=cfg.objective)
    check_config(cfg)
    resolve_device(cfg.device)  # an unknown name, or cuda without a GPU: before the study's folder is made
    data = load_dataset(cfg.dataset, seed=cfg.seed, train_subset=cfg.train_subset)
    shape = (data.in_channels, *data.image_size)
    teacher = teacher_shape(cfg.teacher, shape, data.num_classes)
    budget = parse_budget(flops, teacher.macs)
    space = _space(cfg, study, teacher.arch)
    check_inheritable_space(space, teacher.arch)
    check_lambda_points(space, teacher.arch)
    base = Candidate(epochs=cfg.epochs) if cfg.lr is None else Candidate(epochs=cfg.epochs, lr=cfg.lr)
    resumed = store.exists(study)
    if resumed:
        store.check_readable(study)
        check_resume(cfg, store.read_config(study))
    latency = None
    if cfg.cost == "latency":
        saved = store.study_dir(study) / CALIBRATION_FILE if resumed else None
        latency = latency_objective(latency_setting(cfg, shape), teacher, cfg.latency_budget, saved)
    if latency is not None and latency.budget is not None:
        check_latency_reachable(space, base, teacher, latency)
    if SHARE in space.distributions or SHARE in space.fixed:  # projected: its own floor, at the largest ratios
        check_projectable(space, base, teacher, budget)
    elif (floor := cheapest_macs(space, base, teacher)) > budget.macs:
        raise UserError(f"no candidate of space {space.name!r} fits the budget: the cheapest costs "
                        f"{floor:,} MACs, the budget is {budget.macs:,} MACs ({cfg.flops_budget}); "
                        "raise --flops-budget or use a space with smaller students")
    return Plan(cfg, data, shape, teacher, budget, space, base, latency)


def latency_setting(cfg: SearchConfig, shape: tuple[int, int, int]) -> Setting:
    """The setting a latency search prices in: the --latency-* options on the data's images, on CPU."""
    return Setting(runtime=cfg.latency_runtime, threads=cfg.latency_threads, batch=cfg.latency_batch,
                   input_shape=tuple(shape)).check()


def check_latency_reachable(space: SearchSpace, base: Candidate, teacher: TeacherShape,
                            latency: LatencyObjective) -> None:
    """A latency budget under what the space's cheapest corners are predicted to take, every ratio at
    its most or none, is told once, before anything trains. (Both: latency is not monotone in channels
    where a runtime's aligned kernels are faster, so a pruned student can be predicted slower than the
    unpruned one.)"""
    from ..candidate import MAX_RATIO
    from ..space import params_to_candidate

    floor = math.inf
    for corner in space.min_cost_candidates():
        cand = params_to_candidate(corner, fixed=space.fixed, base=base)
        for prune in ({"*": MAX_RATIO}, {}):
            floor = min(floor, latency.ms(replace(cand, prune=prune, target_macs=0), teacher))
    budget = latency.budget
    assert budget is not None  # checked only under a latency budget
    if floor > budget.ms:
        raise UserError(f"no candidate of space {space.name!r} fits --latency-budget {budget.text}: "
                        f"{budget.ms:.3f} ms, the cheapest is predicted at {floor:.3f} ms "
                        f"({latency.setting.label}; teacher {teacher.arch} {latency.teacher_ms:.3f} ms); "
                        "raise --latency-budget or use a space with smaller students")


def check_projectable(space: SearchSpace, base: Candidate, teacher: TeacherShape, budget: Budget) -> None:
    """A projected space (``budget/share``) whose smallest share no candidate can reach is told so
    once, before anything trains, instead of rejecting samples one by one."""
    dist = space.distributions.get(SHARE)
    low = float(space.fixed[SHARE]) if dist is None else float(low_of(dist))
    floor = cheapest_projected_macs(space, base, teacher)
    if floor > low * budget.macs:
        raise UserError(f"space {space.name!r}: {SHARE} {low:g} of the budget is {int(low * budget.macs):,} MACs, "
                        f"below the cheapest its students reach ({floor:,} MACs, every ratio at the maximum); "
                        f"raise {SHARE}'s low end or --flops-budget")


def check_inheritable_space(space: SearchSpace, teacher_arch: str) -> None:
    """A space that may sample ``student/init: teacher`` offers only students of the teacher's family."""
    def choices(name: str, fallback: object) -> tuple:
        if name in space.fixed:
            return (space.fixed[name],)
        dist = space.distributions.get(name)
        return tuple(choices_of(dist)) if dist is not None else (fallback,)

    if "teacher" not in choices("student/init", Candidate().init):
        return
    for arch in choices("student/arch", Candidate().student):
        try:
            check_inheritable(teacher_arch, arch)
        except UserError as e:
            raise UserError(f"space {space.name!r} offers student/init teacher: {e}") from None


def _space(cfg: SearchConfig, study: str, teacher_arch: str) -> SearchSpace:
    """--space; else the space a study being resumed was created with; else the teacher's default."""
    space = load_space(cfg.space) if cfg.space else _saved_space(study) or default_space_for(teacher_arch)
    return space if cfg.lr is None else fix_params(space, {"train/lr": cfg.lr})  # --lr fixes what it would sample


def _saved_space(study: str) -> SearchSpace | None:
    """The space file a study keeps in its folder (``config.json``'s ``space.file``), if it has one."""
    name = store.read_config(study).get("space", {}).get("file") if store.exists(study) else None
    return load_space(store.study_dir(study) / name) if name else None


def check_resume(cfg: SearchConfig, saved: dict) -> None:
    """A resumed study keeps the settings it was created with (RESUME_KEYS)."""
    old = saved.get("search", {})
    for key in RESUME_KEYS:
        if key in old and old[key] != getattr(cfg, key) and not (key == "space" and cfg.space is None):
            raise UserError(f"study {cfg.study!r} was created with --{key.replace('_', '-')} {old[key]!r}, "
                            f"not {getattr(cfg, key)!r}; resume with the same settings or use another --study")
