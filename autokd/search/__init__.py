"""Search stage: students sampled by Optuna, trained by Ray Tune, under a cost budget.

  ``config``    SearchConfig (every setting, with its default and help), the samplers, static checks
  ``budget``    the budget a user types, and a candidate's exact MACs before training
  ``prepare``   every check a user can fail, before anything is written or trained -> a Plan
  ``driver``    runs a Plan: teacher, study, config record, reference, rounds of trials
  ``tune``      the Ray Tune side: worker trainable, Optuna-backed searcher, scheduler, progress
  ``stopping``  the early-stopping rules at rungs: dominated (stop-if-dominated) or ladder (pure Python)
  ``front``     the one Pareto dominance test, the front and the hypervolume (pure Python)
  ``ladder``    MO-ASHA promotion on rung tables: the ``--stopping ladder`` rule (pure Python)
  ``ray_start`` a loopback-only local Ray, or the cluster at --address
  ``store``     studies on disk: Optuna storage, the lock, counts
"""
from .config import SAMPLERS, SearchConfig


def search(cfg: SearchConfig | None = None, *, printer=None, **overrides):
    """Run (or resume) a study until ``cfg.trials`` trials were trained; returns the Optuna study.

    See :func:`autokd.search.driver.search`. The driver (torch, Optuna, and Ray once trials run) is
    imported here, when a search is asked for, so that ``import autokd`` stays light.
    """
    from .driver import search as run

    return run(cfg, printer=printer, **overrides)


__all__ = ["SAMPLERS", "SearchConfig", "search"]
