"""Pareto dominance on (accuracy max, MACs min) points and the 2-D hypervolume: pure functions,
used by the search while it runs and by :mod:`autokd.pareto` after it."""
from __future__ import annotations

from typing import Iterable


Point = tuple[float, float]  # (validation accuracy: higher is better, MACs (or ms): lower is better)


def dominates(a: Point, b: Point, margin: float = 0.0) -> bool:
    """``a`` costs no more than ``b``, is no less accurate than ``b``'s accuracy plus ``margin``, and is
    better in one of the two; identical points do not dominate each other.
    The one dominance test of the search: the front, the stopping rule (with its margin), the ladder."""
    no_worse = a[1] <= b[1] and a[0] >= b[0] + margin
    return no_worse and (a[1] < b[1] or a[0] > b[0] + margin)


def pareto_front_points(points: Iterable[dict], cost: str = "macs") -> list[dict]:
    """The points no other point dominates (ties both kept), sorted by cost then accuracy (desc);
    ``cost`` names the key of the cost (MACs, or a latency in ms)."""
    points = list(points)
    xy = [(p["val_accuracy"], p[cost]) for p in points]
    front = [p for p, b in zip(points, xy) if not any(dominates(a, b) for a in xy)]
    return sorted(front, key=lambda p: (p[cost], -p["val_accuracy"], p.get("number", 0)))


def hypervolume_2d(points: Iterable[tuple[float, float]], reference_macs: float) -> float:
    """Area dominated by (accuracy, macs) points w.r.t. (0, reference_macs), MACs / reference.

    Sort by cost, sweep: between one cost and the next, the best accuracy so far is the height.
    Points at or beyond the reference (macs >= reference, accuracy <= 0) add nothing.
    """
    if not reference_macs or reference_macs <= 0:
        return 0.0
    pts = sorted((m / reference_macs, a) for a, m in points if a > 0 and m < reference_macs)
    area, best = 0.0, 0.0
    for (cost, acc), nxt in zip(pts, [c for c, _ in pts[1:]] + [1.0]):
        best = max(best, acc)
        area += (nxt - cost) * best
    return area
