"""What a search is asked to do (:class:`SearchConfig`), the samplers it may use, and the checks of
a configuration that need nothing loaded (names, counts, the cluster address)."""
from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..errors import UserError
from ..fields import knob
from ..registry import Registry
from . import store

SAMPLERS: Registry[Callable] = Registry("sampler")
DEFAULT_FLOPS_BUDGET = "40%"  # without --flops-budget; with --latency-budget alone, the teacher's MACs
COSTS = ("macs", "latency")  # the study's second objective: MACs, or predicted latency (autokd.search.objective)
DEFAULT_TRIALS = 12  # without --trials or --compute: a first search of the embedded default in minutes


def startup_trials(trials: float) -> int:
    """Random trials before a model-based sampler fits: few, since a search may train only 10.

    Optuna's default (10) would make a 10-trial TPE search random search by construction.
    Warm-start trials (the space's ``warm_start``) count among them."""
    return max(2, min(5, int(min(trials, 1e6) // 5)))


@SAMPLERS.register("tpe")
def _tpe(seed: int, trials: float):
    """Multivariate TPE with grouped (conditional) parameters and the constant liar, so parallel
    workers do not all ask for one point; few start-up trials."""
    import warnings

    import optuna

    with warnings.catch_warnings():  # `group` is marked experimental since Optuna 2.8; it is what we want
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=startup_trials(trials))


@SAMPLERS.register("nsga2")
def _nsga2(seed: int, trials: float):
    """NSGA-II with a small population (its first generation is random: a large one is random search)."""
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(10, int(min(trials, 1e6) // 4))))


@SAMPLERS.register("gp")
def _gp(seed: int, trials: float):
    """Optuna's Gaussian-process sampler (multi-objective: log expected hypervolume improvement)."""
    import optuna

    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup_trials(trials))


@SAMPLERS.register("random")
def _random(seed: int, trials: float):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@dataclass
class SearchConfig:
    """A search's settings; each field's default and help are also the ``autokd search`` option's."""

    teacher: str = knob("resnet56", "architecture name (trained once, cached) or a bundle path")
    dataset: str = knob("digits", "see `autokd datasets` (digits: the embedded default, offline)")
    flops_budget: str | None = knob(None, "share of the teacher's cost (40%, 0.4) or FLOPs (100M); default "
                                    f"{DEFAULT_FLOPS_BUDGET}, or no MACs limit with --latency-budget")
    cost: str = knob("macs", "the second objective: macs (exact) | latency (ms predicted by `autokd latency "
                     "calibrate` for --latency-runtime/-threads/-batch and the data's input)")
    latency_budget: str | None = knob(None, "a latency budget, 1.2ms or 50% of the teacher's predicted latency; "
                                      "candidates are projected onto it (implies --cost latency)")
    latency_runtime: str = knob("onnxruntime", "the runtime latency is predicted for: onnxruntime | torch")
    latency_threads: int = knob(1, "intra-op threads of that runtime")
    latency_batch: int = knob(1, "images per inference of that runtime")
    space: str | None = knob(None, "search space YAML or shipped name (default: the teacher family's)")
    study: str | None = knob(None, "study name under studies/ (default TEACHER-DATASET)")
    trials: int | None = knob(None, f"trained trials wanted in total (completed + stopped early; resumes count); "
                              f"default {DEFAULT_TRIALS}, or no limit with --compute")
    compute: float | None = knob(None, "stop starting trials once this much work is spent, in epoch-equivalents "
                                 "(one training epoch on the trial's training set = 1; resumes count)")
    parallel: int = knob(2, "trials at once (2 fills a 2-core laptop)")
    # per trial: enough to rank candidates on digits in minutes, not a final accuracy (export retrains)
    epochs: int = knob(5, "epochs per trial")
    lr: float | None = knob(None, "fix every trial's peak learning rate (default: the space's train/lr)")
    teacher_epochs: int = knob(15, "epochs for a named teacher trained on first use")
    sampler: str = knob("tpe", "tpe | nsga2 | gp | random")
    seed: int = knob(0, "study seed: sampler, data split, teacher recipe and trial seeds")
    address: str | None = knob(None, "join a Ray cluster (`ray start --head`), HOST:PORT")
    cpus_per_trial: float = knob(1.0, "CPUs (and torch threads) per trial")
    gpus_per_trial: float = knob(0.0, "GPUs per trial (fractions share a GPU); > 0 trains trials on CUDA")
    device: str = knob("auto", "where the teacher and the reference train: auto (cuda if available) | cpu | cuda")
    early_stopping: bool = knob(True, "stop trials early at rungs, by the --stopping rule")
    stopping: str = knob("dominated", "dominated (stop a trial --min-dominators others dominate at a rung) | "
                         "ladder (MO-ASHA: at rungs 0, 1, eta, ... epochs only the top 1/eta by Pareto rank go on)")
    eta: int = knob(3, "ladder: keep the top 1/eta of the trials at each rung")
    warm_start: bool = knob(True, "enqueue the space's warm_start settings (the papers' canonical methods) "
                            "as a new study's first trials")
    reference: bool = knob(True, "train the space's first student alone once: the front's yardstick")
    min_dominators: int = knob(2, "trials that must dominate one at a rung to stop it (autokd.search.stopping)")
    stop_margin: float = knob(0.02, "accuracy margin of that dominance: epoch-1 noise stops nothing")
    train_subset: int | None = knob(None, "train on the first N training images only")
    rung_val_images: int = knob(1000, "score epoch 0 and the rungs (every epoch before a trial's last) on the first N "
                                "validation images; the last epoch, and so the front, on all of them (0: all, always)")
    max_retries: int = knob(1, "Ray retries of a trial whose worker died")
    max_rejections: int = knob(500, "consecutive over-budget samples before giving up")
    # "the best student at or under the budget": the budget's edge gets a stated part of the sampled
    # work, the rest explores below it (projected spaces only, budget/share; warm starts aside)
    at_budget: float = knob(0.25, "share of the sampled compute (warm starts aside) spent on candidates at the budget itself "
                                  "(budget/share 1)")
    # a candidate that cannot run is recorded and the search goes on; five in a row is a space or a
    # setup that fails every trial, not bad luck
    max_failures: int = knob(5, "consecutive failed trials (errors, not early stops) before the search stops")

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def objective(self) -> str:
        """macs | latency: what the study's second objective is (a latency budget implies latency)."""
        return "latency" if self.latency_budget else self.cost

    @property
    def target_trials(self) -> float:
        """The trained-trial target: --trials, else DEFAULT_TRIALS, else (with --compute) no limit."""
        if self.trials is not None:
            return self.trials
        return DEFAULT_TRIALS if self.compute is None else math.inf


def check_config(cfg: SearchConfig) -> None:
    """Every check that needs nothing loaded; one-line UserError (exit 2) on the first problem."""
    for name in ("trials", "parallel", "epochs", "teacher_epochs"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if cfg.compute is not None and not (math.isfinite(cfg.compute) and cfg.compute > 0):
        raise UserError(f"--compute must be a positive number of epoch-equivalents, got {cfg.compute}")
    if cfg.cpus_per_trial <= 0 or cfg.gpus_per_trial < 0:
        raise UserError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if cfg.lr is not None and cfg.lr <= 0:
        raise UserError(f"--lr must be > 0, got {cfg.lr}")
    if cfg.rung_val_images < 0:
        raise UserError(f"--rung-val-images must be 0 (all) or more, got {cfg.rung_val_images}")
    if cfg.train_subset is not None and cfg.train_subset < 1:
        raise UserError(f"--train-subset must be at least 1, got {cfg.train_subset}")
    if cfg.device == "cpu" and cfg.gpus_per_trial > 0:
        raise UserError("--device cpu with --gpus-per-trial > 0: trials with a GPU share train on CUDA")
    SAMPLERS.get(cfg.sampler)
    if cfg.stopping not in ("dominated", "ladder"):
        raise UserError(f"--stopping {cfg.stopping!r}: choose dominated or ladder")
    if cfg.eta < 2:
        raise UserError(f"--eta must be at least 2, got {cfg.eta}")
    check_latency_options(cfg)
    if not 0 <= cfg.at_budget <= 1:
        raise UserError(f"--at-budget must be a share in [0, 1], got {cfg.at_budget}")
    store.check_name(cfg.study or default_study_name(cfg))
    if cfg.address:
        check_cluster(cfg.address)


def check_latency_options(cfg: SearchConfig) -> None:
    """--cost, --latency-budget's form and the latency setting, before any data loads."""
    from ..timing import RUNTIMES
    from .budget import parse_latency_budget

    if cfg.cost not in COSTS:
        raise UserError(f"--cost {cfg.cost!r}: choose {' or '.join(COSTS)}")
    if cfg.latency_budget is not None:
        parse_latency_budget(cfg.latency_budget, 1.0)   # its form; its size once the teacher is priced
    if cfg.latency_runtime not in RUNTIMES:
        raise UserError(f"--latency-runtime {cfg.latency_runtime!r}: choose one of {', '.join(RUNTIMES)}")
    for name in ("latency_threads", "latency_batch"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")


def default_study_name(cfg: SearchConfig) -> str:
    """``<teacher>-<dataset>``: a teacher file by its name, an image folder by its last folder
    (``imagefolder-<folder>``); any other character becomes ``_`` and the name stays a valid study name."""
    stem = Path(cfg.teacher).name.removesuffix(".safetensors") if os.sep in cfg.teacher else cfg.teacher
    kind, _, folder = cfg.dataset.partition(":")
    data = f"{kind}-{Path(folder).name}" if folder else kind
    return (re.sub(r"[^A-Za-z0-9_.-]", "_", f"{stem}-{data}").lstrip("_.-") or "study")[:store.NAME_MAX]


def check_cluster(address: str, timeout: float = 3.0) -> None:
    """Fail in seconds, with one line, when nothing listens at ``host:port``."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return
    except (ValueError, OSError) as e:
        raise UserError(f"--address {address}: no Ray cluster answers there ({e.__class__.__name__}); "
                        "start one with `ray start --head --port PORT` or drop --address to run locally") from None
