"""Fidelity ladder: asynchronous successive halving with two-objective promotion (MO-ASHA).

Stopping form of ASHA (Li et al. 2020; Schmucker et al. 2021 for two objectives): trials run
without pause, and when one reaches a *rung* the ladder answers continue / stop at once from the
results recorded at that rung so far; no worker waits for a rung to fill.

Rungs (:func:`rungs`): rung 0 is the student right after pruning + BN recalibration (epoch 0, no
training yet), then epochs 1, eta, eta**2, ... strictly below the trial's final epoch. Only scores of
the student at its final shape reach a rung: one taken before a later pruning step (``prune/at
during``, learned masks, gradual steps) is of a wider student and is not ranked
(:class:`autokd.search.tune.ParetoScheduler`).

Rule. When trial *t* reports rung *r* with ``(acc, macs)``, its row replaces any earlier row of
*t* at *r* (a retried trial), and with ``n`` rows at *r*:

* ``n < grace`` (default ``eta``): continue; too few results to compare.
* otherwise: continue iff *t* is among the first ``max(1, n // eta)`` of :func:`rank` over the
  ``n`` rows, listed in trial-number order.

:func:`rank` orders by non-dominated front (accuracy max, MACs min), inside a front by crowding
distance (larger first; the two boundary points infinite), then by fewer MACs, then by lower
index. Why fewer MACs: MACs are exact before training, so among equally spread points the
cheaper one is promoted, since its remaining epochs cost the least compute. Rows are listed by trial
number, so the last key is the lower trial number, and a decision does not depend on the order in
which rows arrived. A decision is final: later arrivals never revoke a promotion (ASHA).

A NaN accuracy (a diverged student) is recorded as ``-inf``: it ranks below every finite one at
its cost. Pure Python, no torch / ray / optuna: tested on hand-made rung tables.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .front import Point, dominates


def rungs(final_epoch: int, eta: int = 3, rung0: bool = True) -> list[int]:
    """``[0,] 1, eta, eta**2, ...`` strictly below ``final_epoch``: ``rungs(10) == [0, 1, 3, 9]``."""
    if eta < 2 or final_epoch < 0:
        raise ValueError(f"need eta >= 2 and final_epoch >= 0, got eta={eta}, final_epoch={final_epoch}")
    out, r = ([0] if rung0 else []), 1
    while r < final_epoch:
        out.append(r)
        r *= eta
    return [r for r in out if r < final_epoch]


# ------------------------------------------------------------------ ranking (pure functions)
def _check(points: list[Point]) -> None:
    if any(math.isnan(a) for a, _ in points):
        raise ValueError("accuracy NaN cannot be ranked: record it as -inf (Ladder does)")


def nondominated_fronts(points: list[Point]) -> list[list[int]]:
    """Indices of ``points`` in non-dominated fronts, best first (front 0: dominated by none).

    ``a`` dominates ``b``: ``a`` is no less accurate, costs no more, and differs (identical points
    share a front). 2-D sweep in O(n log n): points in order of MACs up, accuracy down, index up;
    each joins the first front holding none of its dominators, found by bisection, because a point
    dominated by front k is dominated by every earlier front (dominance is transitive). Each
    front lists its indices in that sweep order (MACs ascending). A front holds a dominator of the
    point if and only if its last member does: in the sweep order a front's accuracy never falls,
    so its last member has the front's best accuracy, and every member came first, so costs no more.
    """
    _check(points)
    fronts: list[list[int]] = []
    for i in sorted(range(len(points)), key=lambda i: (points[i][1], -points[i][0], i)):
        lo, hi = 0, len(fronts)
        while lo < hi:
            mid = (lo + hi) // 2
            if dominates(points[fronts[mid][-1]], points[i]):
                lo = mid + 1
            else:
                hi = mid
        if lo == len(fronts):
            fronts.append([])
        fronts[lo].append(i)
    return fronts


def crowding_distance(points: list[Point], front: list[int]) -> dict[int, float]:
    """NSGA-II crowding distance (Deb et al. 2002) of each index of ``front``.

    Per objective: sort the front (ties by index), give the two ends ``inf``, and add to each
    inner point the gap between its two neighbours divided by the front's range in that objective
    (objectives with a zero or infinite range add nothing). Fronts of one or two points: all ``inf``.
    """
    dist = {i: 0.0 for i in front}
    for obj in (0, 1):
        ordered = sorted(front, key=lambda i: (points[i][obj], i))
        dist[ordered[0]] = dist[ordered[-1]] = math.inf
        span = points[ordered[-1]][obj] - points[ordered[0]][obj]
        if span == 0 or not math.isfinite(span):
            continue
        for a, b, c in zip(ordered, ordered[1:], ordered[2:]):
            dist[b] += (points[c][obj] - points[a][obj]) / span
    return dist


def rank(points: list[Point]) -> list[int]:
    """Indices best first: front, then crowding distance (larger first), fewer MACs, lower index."""
    out: list[int] = []
    for front in nondominated_fronts(points):
        crowd = crowding_distance(points, front)
        out += sorted(front, key=lambda i: (-crowd[i], points[i][1], i))
    return out


def promotes(rows: dict[int, Point], trial: int, eta: int, grace: int) -> bool:
    """The rule above for ``trial``'s row in ``rows`` (trial -> point, ``trial`` among them)."""
    if len(rows) < grace:
        return True
    trials = sorted(rows)
    top = rank([rows[t] for t in trials])[:max(1, len(rows) // eta)]
    return trials.index(trial) in top


# ------------------------------------------------------------------ the ladder (state)
def _acc_in(acc: float) -> float:
    return -math.inf if math.isnan(acc) else float(acc)


@dataclass
class Ladder:
    """Rung tables and decisions of one study; :meth:`as_dict` / :meth:`from_dict` resume it."""

    eta: int = 3  # keep the top 1/eta at each rung: ASHA's usual reduction factor
    grace: int | None = None  # fewer rows than this at a rung: continue; None means eta
    table: dict[int, dict[int, Point]] = field(default_factory=dict)  # rung -> trial -> point
    promoted: dict[int, list[int]] = field(default_factory=dict)  # rung -> trials let go on, in order

    def __post_init__(self) -> None:
        self.grace = self.eta if self.grace is None else self.grace
        if self.eta < 2 or self.grace < 1:
            raise ValueError(f"need eta >= 2 and grace >= 1, got eta={self.eta}, grace={self.grace}")

    def record(self, trial: int, rung: int, acc: float, macs: float) -> None:
        """Store ``trial``'s result at ``rung`` (replacing its own earlier row); decides nothing."""
        self.table.setdefault(int(rung), {})[int(trial)] = (_acc_in(acc), int(macs))

    def decide(self, trial: int, rung: int, acc: float, macs: float) -> bool:
        """Record, then True = continue (``trial`` joins ``promoted[rung]``), False = stop now.

        A re-report of the same rung (a retry) replaces the row and is decided afresh; its earlier
        entry in ``promoted[rung]`` is dropped first.
        """
        trial, rung = int(trial), int(rung)
        self.record(trial, rung, acc, macs)
        assert self.grace is not None  # set in __post_init__
        go = promotes(self.table[rung], trial, self.eta, self.grace)
        kept = [t for t in self.promoted.get(rung, []) if t != trial]
        self.promoted[rung] = kept + [trial] if go else kept
        return go

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON (no NaN / inf: an accuracy of -inf is written as null)."""
        rows = [[r, t, None if a == -math.inf else a, m]
                for r in sorted(self.table) for t, (a, m) in sorted(self.table[r].items())]
        return {"eta": self.eta, "grace": self.grace, "rows": rows,
                "promoted": {str(r): list(ts) for r, ts in sorted(self.promoted.items())}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ladder:
        ladder = cls(eta=int(d["eta"]), grace=int(d["grace"]))
        for r, t, a, m in d["rows"]:
            ladder.record(t, r, -math.inf if a is None else a, m)
        ladder.promoted = {int(r): [int(t) for t in ts] for r, ts in d["promoted"].items()}
        return ladder


__all__ = ["Ladder", "Point", "rungs", "nondominated_fronts", "crowding_distance", "rank", "promotes"]
