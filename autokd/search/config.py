"""What a search is asked to do (:class:`SearchConfig`), the samplers it may use, and the checks of
a configuration that need nothing loaded (names, counts, the cluster address)."""
from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..errors import UserError
from ..fields import knob
from ..registry import Registry
from . import store

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
    """A search's settings; each field's default and help are also the ``autokd search`` option's."""

    teacher: str = knob("resnet56", "architecture name (trained once, cached) or a bundle path")
    dataset: str = knob("digits", "see `autokd datasets` (digits: the embedded default, offline)")
    flops_budget: str = knob("40%", "share of the teacher's cost (40%, 0.4) or FLOPs (100M)")
    space: str | None = knob(None, "search space YAML or shipped name (default: the teacher family's)")
    study: str | None = knob(None, "study name under studies/ (default TEACHER-DATASET)")
    trials: int = knob(12, "trained trials wanted in total (completed + stopped early; resumes count)")
    parallel: int = knob(2, "trials at once (2 fills a 2-core laptop)")
    # per trial: enough to rank candidates on digits in minutes, not a final accuracy (export retrains)
    epochs: int = knob(5, "epochs per trial")
    lr: float | None = knob(None, "fix every trial's peak learning rate (default: the space's train/lr)")
    teacher_epochs: int = knob(15, "epochs for a named teacher trained on first use")
    sampler: str = knob("tpe", "tpe | nsga2 | random")
    seed: int = knob(0, "study seed: sampler, data split, teacher recipe and trial seeds")
    address: str | None = knob(None, "join a Ray cluster (`ray start --head`), HOST:PORT")
    cpus_per_trial: float = knob(1.0, "CPUs (and torch threads) per trial")
    gpus_per_trial: float = knob(0.0, "GPUs per trial (fractions share a GPU); > 0 trains trials on CUDA")
    device: str = knob("auto", "where the teacher and the reference train: auto (cuda if available) | cpu | cuda")
    early_stopping: bool = knob(True, "stop trials dominated at a rung (two objectives)")
    reference: bool = knob(True, "train the space's first student alone once: the front's yardstick")
    min_dominators: int = knob(2, "trials that must dominate one at a rung to stop it (autokd.search.stopping)")
    stop_margin: float = knob(0.02, "accuracy margin of that dominance: epoch-1 noise stops nothing")
    train_subset: int | None = knob(None, "train on the first N training images only")
    max_retries: int = knob(1, "Ray retries of a trial whose worker died")
    max_rejections: int = knob(500, "consecutive over-budget samples before giving up")

    def as_dict(self) -> dict:
        return asdict(self)


def check_config(cfg: SearchConfig) -> None:
    """Every check that needs nothing loaded; one-line UserError (exit 2) on the first problem."""
    for name in ("trials", "parallel", "epochs", "teacher_epochs"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if cfg.cpus_per_trial <= 0 or cfg.gpus_per_trial < 0:
        raise UserError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if cfg.lr is not None and cfg.lr <= 0:
        raise UserError(f"--lr must be > 0, got {cfg.lr}")
    if cfg.train_subset is not None and cfg.train_subset < 1:
        raise UserError(f"--train-subset must be at least 1, got {cfg.train_subset}")
    if cfg.device == "cpu" and cfg.gpus_per_trial > 0:
        raise UserError("--device cpu with --gpus-per-trial > 0: trials with a GPU share train on CUDA")
    SAMPLERS.get(cfg.sampler)
    store.check_name(cfg.study or default_study_name(cfg))
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
