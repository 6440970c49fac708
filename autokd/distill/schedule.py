"""When the feature terms are on: the one- and two-stage schedules and the layer curriculum.

A schedule splits ``epochs`` into :class:`Phase` s; ``run_trial`` trains each phase with one
``fit(start_epoch=, end_epoch=)`` call, so the cosine learning rate runs on across phases (a
pruning step may sit between two phases; the optimizer, and its momentum, restart at a phase).

  "one-stage"  one phase, epochs [0, E): task and feature terms from the first step.
  "two-stage"  (seed 000) S1 = floor(stage1_fraction * E + 1/2) epochs of classifier
               stabilisation on the task loss only (CE + T^2 KD on the logits), then
               E - S1 epochs with the feature terms on. An empty phase is dropped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ..registry import Registry


@dataclass(frozen=True)
class Phase:
    name: str       # "stabilise" (task loss only) | "distil" (feature terms on)
    start: int      # first epoch, 0-based, inclusive
    end: int        # last epoch, exclusive
    features: bool  # whether the feature pairs are on in this phase


Schedule = Callable[[int, float], list[Phase]]
SCHEDULES: Registry[Schedule] = Registry("schedule")


def stage1_epochs(epochs: int, stage1_fraction: float) -> int:
    """floor(fraction * epochs + 1/2), clamped to [0, epochs] (round half up, not banker's)."""
    return min(epochs, max(0, math.floor(stage1_fraction * epochs + 0.5)))


@SCHEDULES.register("one-stage")
def one_stage(epochs: int, stage1_fraction: float = 0.0) -> list[Phase]:
    return [Phase("distil", 0, epochs, True)]


@SCHEDULES.register("two-stage")
def two_stage(epochs: int, stage1_fraction: float) -> list[Phase]:
    s1 = stage1_epochs(epochs, stage1_fraction)
    phases = [Phase("stabilise", 0, s1, False), Phase("distil", s1, epochs, True)]
    return [p for p in phases if p.end > p.start]


def curriculum_groups_on(epoch: int, n_groups: int, start: int, end: int) -> int:
    """How many curriculum groups are on at 0-based ``epoch`` of a distil phase [start, end).

    Curriculum (seed 003): the active feature pairs are grouped by teacher point, shallow to
    deep (G groups). The phase's D = end - start epochs are cut into G + 1 slots at
    start + floor(k * D / (G + 1) + 1/2), k = 0..G+1. In slot k < G, groups 1..k+1 are on
    (each new group joins the ones already on); in the last slot none is: the task loss takes
    over. With D < G + 1 some slots are empty and their groups are skipped.
    """
    if n_groups == 0 or not start <= epoch < end:
        return 0
    d = end - start
    bounds = [start + math.floor(k * d / (n_groups + 1) + 0.5) for k in range(n_groups + 2)]
    slot = max(k for k in range(n_groups + 1) if bounds[k] <= epoch)
    return slot + 1 if slot < n_groups else 0
