"""Distill stage: losses, teacher/student pairings, the distiller and its schedules.

  ``losses``     kd_logits, task_loss and the per-pair feature losses (PAIR_LOSSES registry)
  ``pairing``    make_pairs / parse_lambda: which teacher point feeds which student point
  ``schedule``   one-stage / two-stage phases (SCHEDULES registry) and the layer curriculum
  ``distiller``  Distiller: student + frozen teacher + weighted pairs -> loss(x, y)
The trial that uses them (prune, distil, measure, write) is :mod:`autokd.trial`.
"""
from .distiller import Distiller, TeacherCache
from .losses import KD_ALPHA, PAIR_LOSSES, kd_logits, task_loss
from .pairing import PAIRINGS, check_lambdas, full_matrix, make_pairs, pair_key, parse_lambda, split_key
from .schedule import SCHEDULES, Phase, curriculum_groups_on, stage1_epochs

__all__ = ["Distiller", "TeacherCache", "KD_ALPHA", "PAIR_LOSSES", "kd_logits", "task_loss",
           "PAIRINGS", "check_lambdas", "full_matrix", "make_pairs", "pair_key", "parse_lambda", "split_key",
           "SCHEDULES", "Phase", "curriculum_groups_on", "stage1_epochs"]
