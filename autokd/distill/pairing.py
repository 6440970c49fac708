"""Which teacher points distil into which student points, and with what weight lambda_ij.

Keys are 1-based and read teacher first: ``"t3->s2"`` links teacher point 3 to student point 2
(points are a model's ``.points``, shallow to deep). A pairing is a plain ``{key: weight}`` dict;
pairs absent from it (or with weight 0) cost nothing.

  ``make_pairs("all", T, S)``   every i with every j ("each with each", seed 001): T * S pairs;
  ``make_pairs("diag", T, S)``  each teacher point i with the student point at the same relative
                                depth, j = clamp(floor(i * S / T + 1/2), 1, S): T pairs, and
                                the deepest with the deepest (i = T -> j = S);
  ``make_pairs("deepest", T, S)`` every student point j with the teacher's deepest point T: S pairs
                                (seed 001's best runs weight the links to the teacher's last, widest
                                layer most);
  ``make_pairs("none", T, S)``  no feature pairs: logits KD only.
"""
from __future__ import annotations

import math
import re
from typing import Callable

from ..errors import UserError
from ..registry import Registry

Pairing = Callable[[int, int, float], dict[str, float]]
PAIRINGS: Registry[Pairing] = Registry("pairing")

_KEY = re.compile(r"^\s*t(\d+)\s*(?:->|:)\s*s(\d+)\s*$", re.IGNORECASE)


def pair_key(i: int, j: int) -> str:
    return f"t{i}->s{j}"


def split_key(key: str) -> tuple[int, int]:
    """``"t3->s2"`` (or ``"t3:s2"``) -> (3, 2); anything else raises UserError."""
    m = _KEY.match(key)
    if not m:
        raise UserError(f"bad pair {key!r}: expected tI->sJ or tI:sJ with 1-based points, e.g. t3:s2=0.8")
    return int(m.group(1)), int(m.group(2))


@PAIRINGS.register("all")
def all_pairs(n_teacher: int, n_student: int, weight: float = 1.0) -> dict[str, float]:
    return {pair_key(i, j): weight for i in range(1, n_teacher + 1) for j in range(1, n_student + 1)}


@PAIRINGS.register("diag")
def diag_pairs(n_teacher: int, n_student: int, weight: float = 1.0) -> dict[str, float]:
    pairs = {}
    for i in range(1, n_teacher + 1):
        j = min(n_student, max(1, math.floor(i * n_student / n_teacher + 0.5)))
        pairs[pair_key(i, j)] = weight
    return pairs


@PAIRINGS.register("deepest")
def deepest_pairs(n_teacher: int, n_student: int, weight: float = 1.0) -> dict[str, float]:
    return {pair_key(n_teacher, j): weight for j in range(1, n_student + 1)}


@PAIRINGS.register("none")
def no_pairs(n_teacher: int, n_student: int, weight: float = 1.0) -> dict[str, float]:
    return {}


def make_pairs(kind: str, n_teacher: int, n_student: int, weight: float = 1.0) -> dict[str, float]:
    """The pairing ``kind`` ("all" | "diag" | "deepest" | "none") between T teacher and S student points."""
    if n_teacher < 1 or n_student < 1:
        raise UserError(f"need at least one point on each side, got teacher {n_teacher}, student {n_student}")
    return PAIRINGS.get(kind)(n_teacher, n_student, weight)


def parse_lambda(text: str, n_teacher: int | None = None, n_student: int | None = None) -> tuple[str, float]:
    """``"t3:s2=0.8"`` or ``"t3->s2=0.8"`` -> ``("t3->s2", 0.8)``; a missing ``=w`` means 1.0.

    A malformed string, a negative or non-finite weight, or a point index outside
    1..n_teacher / 1..n_student (when given) raises a one-line UserError.
    """
    key, sep, value = text.partition("=")
    i, j = split_key(key)
    try:
        weight = float(value) if sep else 1.0
    except ValueError:
        raise UserError(f"bad lambda {text!r}: {value.strip()!r} is not a number") from None
    if not math.isfinite(weight) or weight < 0:
        raise UserError(f"bad lambda {text!r}: the weight must be a finite number >= 0")
    _check_range(text, i, j, n_teacher, n_student)
    return pair_key(i, j), weight


def check_lambdas(lambdas: dict[str, float], n_teacher: int, n_student: int) -> dict[str, float]:
    """Validate a ``{key: weight}`` dict against the point counts; returns it with canonical keys."""
    out: dict[str, float] = {}
    for key, weight in lambdas.items():
        k, w = parse_lambda(f"{key}={weight}", n_teacher, n_student)
        if k in out:
            raise UserError(f"lambda {k} is given twice")
        out[k] = w
    return out


def full_matrix(lambdas: dict[str, float], n_teacher: int, n_student: int) -> dict[str, float]:
    """Every lambda_ij of a T x S pairing, zeros included (what a result records)."""
    return {pair_key(i, j): float(lambdas.get(pair_key(i, j), 0.0))
            for i in range(1, n_teacher + 1) for j in range(1, n_student + 1)}


def _check_range(text: str, i: int, j: int, n_teacher: int | None, n_student: int | None) -> None:
    if i < 1 or (n_teacher is not None and i > n_teacher):
        raise UserError(f"bad lambda {text!r}: teacher point t{i} is not in 1..{n_teacher or '?'}")
    if j < 1 or (n_student is not None and j > n_student):
        raise UserError(f"bad lambda {text!r}: student point s{j} is not in 1..{n_student or '?'}")
