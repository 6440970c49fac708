"""Every random stream autokd uses, derived from one user seed in one place.

A study seed gives each trial its run seed; a run seed gives one stream per use inside the
trial (weights init, data order, regressors); a data-order seed gives one generator per epoch.
Library code never relies on the global RNG state.
"""
from __future__ import annotations

STREAMS = {"init": 1, "data": 2, "pairs": 3}  # per-run streams: init = 1000 * seed + 1, ...
_STRIDE = 100_003  # a prime larger than any trial count or epoch count, so derived seeds never collide


def trial_seeds(seed: int) -> dict[str, int]:
    """One seed per random stream of a run: init (weights), data (order, augmentation), pairs (regressors)."""
    return {name: 1000 * seed + k for name, k in STREAMS.items()}


def trial_seed(study_seed: int, trial_number: int) -> int:
    """The run seed of trial ``trial_number`` of a study seeded ``study_seed``."""
    return study_seed * _STRIDE + trial_number


def epoch_seed(data_seed: int, epoch: int) -> int:
    """The shuffling/augmentation generator seed of 0-based ``epoch`` of a run."""
    return data_seed * _STRIDE + epoch


def sampler_seed(study_seed: int, trials_so_far: int) -> int:
    """The sampler's seed when a run starts: offset by the trials so far, so a resumed run draws new points."""
    return study_seed + trials_so_far
