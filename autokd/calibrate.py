"""Calibrate the latency predictor on this machine: random zoo candidates -> measured -> fitted -> JSON.

``calibrate(setting)`` draws random candidates of every zoo architecture (a width and one pruning ratio
per stage, as the shipped search spaces do, exact plans from :func:`autokd.prune.predict_cost`): half at
any width and ratios, half as a search mostly proposes them (a width of the spaces' grid, each stage left
whole or not by a coin). It measures them in small interleaved groups of networks of like size
(:func:`autokd.timing.measure_latency`), fits the coefficients of
:class:`autokd.latency.Calibration` by non-negative least squares on relative error, checks the fit on
held-out candidates, refits on all, and writes ``$AUTOKD_HOME/latency/<setting>.json`` atomically.
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from .latency import Calibration, Coefficients, OpLoad, op_loads, save_calibration
from .models import MODELS, create_model
from .prune import layout, predict_cost
from .timing import Setting, machine, measure_latency, nchwc_block

TERMS = ("per_call", "per_mmac", "per_melem", "per_mweight", "per_mread")  # Coefficients' fields, in column order
NUM_CLASSES = 10  # the classifier's size barely moves the time; every zoo dataset has 10 classes or close


@dataclass(frozen=True)
class Effort:
    """How much to measure: the default takes minutes on a laptop CPU at 3x32x32."""

    samples: int = 480          # random candidates, spread evenly over the architectures (40 each in the zoo)
    rounds: int = 11            # interleaved samples per candidate: the median of 11 shrugs off 5 bad ones
    warmup: int = 3             # untimed runs per candidate before the rounds
    group: int = 8              # candidates measured together, round by round (networks of like MACs)
    min_sample_ms: float = 5.0  # a timed sample lasts at least this long (fast nets: several runs each, so the
    #                             first, colder run of a sample weighs little, as in a model serving requests)
    on_grid: float = 0.5        # share of the candidates drawn as a search proposes them (WIDTH_GRID, whole stages)
    holdout: float = 0.25       # share of the candidates kept out of the first fit, to check it
    width_low: float = 0.125    # candidates' width multiplier in [width_low, 1] ...
    max_ratio: float = 0.7      # ... and per-stage pruning ratio in [0, max_ratio], as the shipped spaces
    seed: int = 0               # draws the candidates and the order within each round
    archs: tuple[str, ...] = ()  # empty: every zoo architecture


QUICK = Effort(samples=4, rounds=3, warmup=1, group=4, min_sample_ms=0.2, holdout=0.0,
               archs=("convverytiny", "resnet20"))  # seconds: proves the pipeline, predicts little


@dataclass(frozen=True)
class Sample:
    """One measured candidate."""

    arch: str
    plan: dict[str, int]
    loads: dict[str, OpLoad]
    median_ms: float
    iqr_ms: float


# ------------------------------------------------------------------ candidates
WIDTH_GRID = tuple(k / 8 for k in range(1, 13))  # the shipped spaces' widths are steps of 1/8 from 1/8 to 3/2


def _draw(rng: random.Random, effort: Effort, stages: Sequence[str], on_grid: bool) -> tuple[float, dict[str, float]]:
    """A width and stage ratios: anywhere in range, or on the spaces' grid with each stage whole or not by a coin."""
    if not on_grid:
        return (round(rng.uniform(effort.width_low, 1.0), 3),
                {k: round(rng.uniform(0.0, effort.max_ratio), 2) for k in stages})
    widths = [w for w in WIDTH_GRID if effort.width_low <= w <= 1.0]
    return rng.choice(widths), {k: 0.0 if rng.random() < 0.5 else round(rng.uniform(0.0, effort.max_ratio), 2)
                                for k in stages}


def draw_plans(effort: Effort, in_channels: int) -> list[tuple[str, dict[str, int]]]:
    """``effort.samples`` (arch, channel plan) pairs: architectures in turn, width and stage ratios at random,
    every ``1 / effort.on_grid``-th one on the spaces' grid."""
    rng = random.Random(effort.seed)
    archs = list(effort.archs or MODELS.names())
    out = []
    for i in range(effort.samples):
        arch = archs[i % len(archs)]
        with torch.device("meta"):
            stages = layout(create_model(arch, in_channels=in_channels)).stages
        on_grid = effort.on_grid > 0 and (i // len(archs)) % round(1 / effort.on_grid) == 0
        width, ratios = _draw(rng, effort, list(stages), on_grid)
        plan, _ = predict_cost(arch, num_classes=NUM_CLASSES, in_channels=in_channels, width=width,
                               ratios_spec=ratios, input_shape=(in_channels, 8, 8))
        out.append((arch, plan))
    return out


def _macs(arch: str, plan: dict[str, int], setting: Setting) -> int:
    loads = op_loads(arch, plan, num_classes=NUM_CLASSES, input_shape=setting.input_shape, batch=setting.batch)
    return sum(load.macs for kind, load in loads.items() if load.calls)


def measure_plans(plans: Sequence[tuple[str, dict[str, int]]], setting: Setting, effort: Effort,
                  progress: Callable[[str], None] = lambda _: None, block: int = 0) -> list[Sample]:
    """Each plan built (random weights) and timed, ``effort.group`` at a time, interleaved, among networks of
    like MACs (a large network just before a small one would leave it colder caches than it meets alone);
    the samples in the order of ``plans``."""
    torch.manual_seed(effort.seed)
    order = sorted(range(len(plans)), key=lambda i: _macs(*plans[i], setting))
    found: dict[int, Sample] = {}
    for start in range(0, len(order), effort.group):
        chunk = order[start:start + effort.group]
        models = [create_model(plans[i][0], num_classes=NUM_CLASSES, in_channels=setting.input_shape[0],
                               plan=plans[i][1]) for i in chunk]
        timings = measure_latency(models, setting, rounds=effort.rounds, warmup=effort.warmup,
                                  min_sample_ms=effort.min_sample_ms, seed=effort.seed + start)
        for i, t in zip(chunk, timings):
            arch, plan = plans[i]
            loads = op_loads(arch, plan, num_classes=NUM_CLASSES, input_shape=setting.input_shape, batch=setting.batch,
                             block=block)
            found[i] = Sample(arch, plan, loads, t.median_ms, t.iqr_ms)
        progress(f"measured {len(found)}/{len(plans)} candidates")
    return [found[i] for i in range(len(plans))]


# ------------------------------------------------------------------ the fit
def _columns(samples: Sequence[Sample]) -> list[tuple[str, str]]:
    """(kind, term) of every column some sample loads; ("", "per_inference") first."""
    cols = {(kind, term) for s in samples for kind, load in s.loads.items()
            for term, v in zip(TERMS, _terms(load)) if v}
    return [("", "per_inference"), *sorted(cols)]


def _terms(load: OpLoad) -> tuple[float, float, float, float, float]:
    """An OpLoad in :data:`TERMS` order and units (calls, MMACs, Melems, Mweights, Mreads)."""
    return load.calls, load.macs / 1e6, load.elems / 1e6, load.weights / 1e6, load.reads / 1e6


def _design(samples: Sequence[Sample], cols: Sequence[tuple[str, str]]) -> np.ndarray:
    rows = []
    for s in samples:
        values = {(k, t): v for k, load in s.loads.items() for t, v in zip(TERMS, _terms(load))}
        rows.append([1.0 if t == "per_inference" else values.get((k, t), 0.0) for k, t in cols])
    return np.asarray(rows, dtype=float)


def fit(samples: Sequence[Sample]) -> tuple[float, dict[str, Coefficients]]:
    """(per_inference_ms, per-kind coefficients): non-negative least squares on relative error, i.e.
    each row divided by its measured median, so a 0.1 ms network weighs as much as a 50 ms one."""
    from sklearn.linear_model import LinearRegression

    cols = _columns(samples)
    x, y = _design(samples, cols), np.asarray([s.median_ms for s in samples])
    scale = np.maximum(np.abs(x).max(axis=0), 1e-12)  # unit columns: a well-conditioned solve
    model = LinearRegression(positive=True, fit_intercept=False).fit(x / scale / y[:, None], np.ones(len(y)))
    beta = model.coef_ / scale
    terms: dict[str, dict[str, float]] = {}
    for (kind, term), b in zip(cols[1:], beta[1:]):
        terms.setdefault(kind, {})[term] = float(b)
    return float(beta[0]), {k: Coefficients(**v) for k, v in terms.items()}


def errors(cal: Calibration, samples: Sequence[Sample]) -> dict:
    """How ``cal`` predicts ``samples``: relative errors' median and maximum, share within 10 %."""
    if not samples:
        return {"n": 0}
    rel = np.asarray([cal.predict_ms(s.loads) / s.median_ms - 1.0 for s in samples])
    return {"n": len(rel), "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
            "median_abs_error": float(np.median(np.abs(rel))), "max_abs_error": float(np.max(np.abs(rel)))}


def _calibration(samples: Sequence[Sample], setting: Setting, where: Mapping, block: int) -> Calibration:
    per_inference, ops = fit(samples)
    return Calibration(setting, dict(where), per_inference, ops, block=block)


def fitted(samples: Sequence[Sample], setting: Setting, where: Mapping, effort: Effort, block: int = 0) -> Calibration:
    """The calibration of all ``samples``, its evidence including how a fit without the held-out share
    predicted that share."""
    order = list(range(len(samples)))
    random.Random(effort.seed).shuffle(order)
    n_out = int(round(effort.holdout * len(samples)))
    held, kept = [samples[i] for i in order[:n_out]], [samples[i] for i in order[n_out:]]
    held_out = errors(_calibration(kept, setting, where, block), held) if held else {"n": 0}
    cal = _calibration(samples, setting, where, block)
    evidence = {"method": "non-negative least squares on relative error over measured random zoo candidates",
                "effort": asdict(effort), "held_out": held_out, "in_sample": errors(cal, samples),
                "samples": [{"arch": s.arch, "plan": s.plan, "median_ms": s.median_ms, "iqr_ms": s.iqr_ms}
                            for s in samples]}
    return replace(cal, fit=evidence)


# ------------------------------------------------------------------ the whole job
def calibrate(setting: Setting, effort: Effort = Effort(), *, path: Path | None = None,
              progress: Callable[[str], None] = lambda _: None) -> tuple[Calibration, Path]:
    """Measure, fit and write the calibration of ``setting`` on this machine: (calibration, file)."""
    setting.check()
    t0 = time.perf_counter()
    block = nchwc_block(setting.runtime, setting.device)
    samples = measure_plans(draw_plans(effort, setting.input_shape[0]), setting, effort, progress, block)
    cal = fitted(samples, setting, machine(setting), effort, block)
    stamp = {"seconds": round(time.perf_counter() - t0, 1),
             "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    cal = replace(cal, fit={**cal.fit, **stamp})
    return cal, save_calibration(cal, path)
