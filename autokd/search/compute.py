"""Compute, the unit a search spends: epoch-equivalents.

One training epoch over the trial's training set is 1. An evaluation-only pass (a forward pass, no
backward, over ``n`` images) counts ``EVAL_COST * n / train_images``: a backward pass costs about
two forwards, so a training step is about three forwards and an evaluation a third of one. So a
trial that trains ``e`` epochs and scores the validation split ``v`` times (once an epoch, plus
an epoch-0 score for an inherited student, whose BN recalibration over ``RECALIBRATION_IMAGES``
is one more forward-only pass) spends ``e + v * EVAL_COST * val / train`` (+ the recalibration).

Scores before a trial's last epoch (epoch 0 and the rungs, which only decide whether it goes on)
may read the first ``rung_images`` validation images instead of all (``autokd search
--rung-val-images``): then only the last epoch's score costs the whole split, and a stopped trial,
which never reaches it, none.

What it does not count, on purpose: the teacher's forward passes while distilling (a prune-only
trial and a distilled one of the same student and epochs spend the same compute: the unit measures
how far a search trains its students, so a faster teacher never changes a budget's meaning), and
the search's own overhead (sampling, budget projection, start-up). Pure Python, no torch.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

EVAL_COST = 1.0 / 3.0  # one forward pass over n images, in training passes over n images


def trial_compute(epochs_trained: int, evaluations: int, *, train_images: int, val_images: int,
                  recalibration_images: int = 0, rung_images: int | None = None,
                  full_evaluations: int | None = None) -> float:
    """The epoch-equivalents of one trial (see the module doc): ``full_evaluations`` of its
    ``evaluations`` scored the whole validation split, the others ``rung_images`` of it (without
    ``rung_images``, or without ``full_evaluations``, every one scored the whole split)."""
    if train_images < 1:
        raise ValueError(f"train_images must be >= 1, got {train_images}")
    full = evaluations if rung_images is None or full_evaluations is None else min(full_evaluations, evaluations)
    rung = min(rung_images, val_images) if rung_images is not None else val_images
    passes = full * val_images + (evaluations - full) * rung + recalibration_images
    return float(epochs_trained) + EVAL_COST * passes / train_images


def epochs_in(epoch_scores: Mapping[str, float] | None) -> tuple[int, int]:
    """(epochs trained, evaluations) from a trial's ``epoch_val_accuracy`` record {"0": acc, "1": ...}:
    epoch 0 is a score before any training (an inherited student), not an epoch."""
    epochs = [int(e) for e in (epoch_scores or {})]
    return max(epochs, default=0), len(epochs)


def spent(computes: Iterable[float | None]) -> float:
    """Compute recorded on trials (each trial's ``TrialRecord.compute``), summed; a trial without one adds 0."""
    return float(sum(float(c or 0.0) for c in computes))


__all__ = ["EVAL_COST", "trial_compute", "epochs_in", "spent"]
