"""Projection: a candidate's pruning put exactly on a MAC budget by bisection over one scale.

The sampler proposes a *shape*, relative pruning ratios ``{key: rel in [0, 1]}`` over the keys
of :func:`autokd.prune.prunable_groups` (or ``{"*": rel}`` alone for every layer), and a target.
The ratios at scale ``s`` are ``{k: min(MAX_RATIO, s * rel_k)}``; :func:`project_to_budget`
finds the least pruning along that ray whose exact MACs (:func:`autokd.prune.predict_cost`) fit.

Why bisection over breakpoints, not over a float tolerance: a layer of ``c`` channels governed by
key ``k`` loses its j-th channel exactly where ``s * rel_k * c + 1/2`` reaches ``j``
(:func:`autokd.prune.n_pruned`), so the plan is constant between the scales
``(j - 1/2) / (c * rel_k)``. Those scales (for every key and every channel count of the
unpruned plan, a superset of the real ones) cut ``s >= 0`` into intervals; bisection runs over
the intervals, probing each at its midpoint (far from any rounding edge), and stops when the
plan that fits and the plan that does not are neighbours. MACs never rise with ``s`` (every
ratio, hence every pruned count, is non-decreasing in ``s``), which is what bisection needs.
About ``2 + log2(#intervals)`` predict_cost calls: 10 for resnet56's three stages, 14 for vgg11's
five (0.1 to 0.5 s on a 2-core CPU).
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import Callable, Collection, Mapping

from ..candidate import MAX_RATIO
from ..errors import UserError
from .cost import predict_cost
from .structure import n_pruned

# Past MAX_RATIO / min(rel) by this factor, every keyed ratio is exactly MAX_RATIO (the product
# s * rel may land one ulp below MAX_RATIO at the bare quotient, which can keep one more channel).
_TOP = 1.0 + 1e-9
# A relative value below this counts as 0: its key would lose a first channel only past a scale
# of ~1e11, and a subnormal one (~1e-310, which hypothesis finds) would put its channel steps
# beyond the largest float, so the ray could not resolve them.
MIN_REL = 1e-12


@dataclass(frozen=True)
class Projection:
    """A shape put on a budget. ``ratios`` is a ratio spec for :mod:`autokd.prune`."""

    ratios: dict[str, float]      # key -> min(MAX_RATIO, scale * shape[key]), exactly
    macs: float                   # predict_cost(ratios).macs (or the cost macs_of counts) <= target_macs
    scale: float                  # 0.0: the unpruned student fits, no pruning
    iterations: int               # predict_cost calls made
    over_scale: float | None      # the neighbour plan with less pruning (None when scale == 0) ...
    over_macs: float | None       # ... and its MACs, > target_macs


@dataclass(frozen=True)
class _Student:
    """The arguments of predict_cost but the ratios."""

    arch: str
    num_classes: int
    in_channels: int
    width: float
    input_shape: tuple[int, ...]

    def macs(self, ratios: Mapping[str, float]) -> int:
        return self.cost(ratios)[1]

    def cost(self, ratios: Mapping[str, float]) -> tuple[dict[str, int], int]:
        plan, cost = predict_cost(self.arch, num_classes=self.num_classes, in_channels=self.in_channels,
                                  width=self.width, ratios_spec=_spec(ratios), input_shape=self.input_shape)
        return plan, cost.macs


def _spec(ratios: Mapping[str, float]) -> float | dict[str, float]:
    """``{"*": r}`` alone is the float r (every layer); otherwise the dict, which must not hold "*"."""
    if set(ratios) == {"*"}:
        return float(ratios["*"])
    if "*" in ratios:
        raise UserError("a pruning shape takes either '*' alone or stage / layer keys, not both")
    return dict(ratios)


def _check_shape(shape: Mapping[str, float]) -> dict[str, float]:
    for key, rel in shape.items():
        if isinstance(rel, bool) or not isinstance(rel, Real) or not 0.0 <= float(rel) <= 1.0:
            raise UserError(f"relative pruning ratio {key}={rel!r} must be a number in [0, 1]")
    return {str(k): float(v) if float(v) >= MIN_REL else 0.0 for k, v in shape.items()}


def _at(shape: Mapping[str, float], s: float) -> dict[str, float]:
    return {k: min(MAX_RATIO, s * rel) for k, rel in shape.items()}


def _probes(shape: Mapping[str, float], channels: Collection[int], keep: float = 1.0) -> list[float]:
    """One scale inside each interval of constant plan: 0, the midpoints, then all-capped.

    With ``keep`` w < 1 (an inherited student whose width prunes uniformly on top: its ratio is
    1 - w (1 - r), autokd.price.pruning_ratios) a layer of ``c`` channels loses its j-th channel
    where 1 - w + w s rel = (j - 1/2) / c; w = 1 gives the edges above."""
    rels = {r for r in shape.values() if r > 0}
    edges = _distinct(sorted({e for rel in rels for c in set(channels) for j in range(1, n_pruned(c, MAX_RATIO) + 1)
                              if (e := ((j - 0.5) / c - (1.0 - keep)) / (keep * rel)) > 0}))
    top = _TOP * MAX_RATIO / min(rels) if rels else 0.0  # above every edge: each edge <= MAX_RATIO / rel
    if not edges:
        return [0.0] if not rels else [0.0, top]
    return [0.0] + [(a + b) / 2 for a, b in zip(edges, edges[1:])] + [top]


def _distinct(edges: list[float]) -> list[float]:
    """Sorted edges with the ones a few ulps apart merged: one edge computed two ways (17.5 / (56 * 0.35)
    and the same scale from another layer) can differ in its last bit, and the midpoint of that
    sliver would sit on the edge, where rounding the ratio flips a channel (hypothesis found it)."""
    out: list[float] = []
    for e in edges:
        if not out or e - out[-1] > 1e-9 * max(1.0, e):
            out.append(e)
    return out


def project_shape(shape: Mapping[str, float], macs_of: Callable[[dict[str, float]], float], *,
                  channels: Collection[int], target_macs: float, keep: float = 1.0,
                  describe: str = "the student", unit: Callable[[float], str] | None = None) -> Projection:
    """:func:`project_to_budget` for any exact, non-increasing MAC count ``macs_of(ratios)`` (an
    inherited student's, say), with ``channels`` the unpruned plan's channel counts and ``keep`` its
    uniform width share (see :func:`_probes`). Same guarantee; ``describe`` names it in errors.

    Any other cost that falls as channels go works too (a predicted latency, ``unit`` writing its
    figures in errors): bisection keeps ``cost(lo) > target >= cost(hi)``, so the answer always fits;
    where the cost is not monotone in the scale it may be one of several plans that do."""
    unit = unit or (lambda v: f"{int(v):,} MACs")
    shape = _check_shape(shape)
    base = macs_of(_at(shape, 0.0))
    if base <= target_macs:
        return Projection(_at(shape, 0.0), base, 0.0, 1, None, None)
    probes = _probes(shape, channels, keep)
    seen = {0: base}

    def macs(i: int) -> float:
        if i not in seen:
            seen[i] = macs_of(_at(shape, probes[i]))
        return seen[i]

    lo, hi = 0, len(probes) - 1  # macs(lo) > target throughout; macs(hi) <= target once checked
    if hi == 0 or macs(hi) > target_macs:
        raise UserError(f"target {unit(target_macs)} is below the cheapest {describe} reaches with this shape: "
                        f"{unit(macs(hi))} (every keyed ratio at {MAX_RATIO})")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if macs(mid) <= target_macs else (mid, hi)
    return Projection(_at(shape, probes[hi]), macs(hi), probes[hi], len(seen), probes[lo], macs(lo))


def _no_fit(student: _Student, target: int, cheapest: int) -> UserError:
    return UserError(f"target {target:,} MACs is below the cheapest {student.arch} (width {student.width:g}) "
                     f"reaches with this shape: {cheapest:,} MACs (every keyed ratio at {MAX_RATIO})")


def project_to_budget(arch: str, *, num_classes: int, in_channels: int, width: float,
                      shape: Mapping[str, float], target_macs: int,
                      input_shape: tuple[int, ...]) -> Projection:
    """The least pruning along ``shape`` whose exact MACs fit ``target_macs``.

    Guarantee, with ``ratios(s) = {k: min(MAX_RATIO, s * shape[k])}`` (values of ``shape`` below
    ``MIN_REL`` read as 0) and ``macs(s)`` its :func:`~autokd.prune.predict_cost` MACs:

    * ``macs == macs(scale) <= target_macs`` and ``ratios == ratios(scale)``, exactly;
    * ``scale == 0`` (every ratio 0) iff the unpruned student fits;
    * otherwise ``over_scale < scale``, ``over_macs == macs(over_scale) > target_macs``, and the
      plan at ``over_scale`` keeps, in every layer, the returned plan's channels or exactly one
      more: one channel step (in every group that steps at that scale) separates the answer from
      a plan over the target, and every ``s <= over_scale`` is over the target too.

    Raises :class:`UserError` (one line, naming the cheapest reachable MACs) when even every
    keyed ratio at ``MAX_RATIO`` does not fit, and for a bad shape (a value outside [0, 1], an
    unknown key, coupled layers given different ratios).
    """
    student = _Student(arch, num_classes, in_channels, width, tuple(input_shape))
    base_plan, _ = student.cost(_at(_check_shape(shape), 0.0))
    return project_shape(shape, student.macs, channels=base_plan.values(), target_macs=target_macs,
                         describe=f"{arch} (width {width:g})")


def projectable(arch: str, *, num_classes: int, in_channels: int, width: float, keys: Collection[str],
                target_macs: int, input_shape: tuple[int, ...]) -> str | None:
    """Before a search: None if some shape over ``keys`` can reach ``target_macs``, else why (one line).

    The cheapest shape over ``keys`` is every key at 1 (all at ``MAX_RATIO``): MACs never rise
    with a ratio, so if that misses the target every shape does. A shape with some keys at 0 may
    still miss it; :func:`project_to_budget` then raises.
    """
    student = _Student(arch, num_classes, in_channels, width, tuple(input_shape))
    try:
        cheapest = student.macs({str(k): MAX_RATIO for k in keys})
    except UserError as err:
        return str(err)
    return None if cheapest <= target_macs else str(_no_fit(student, target_macs, cheapest))


__all__ = ["Projection", "project_shape", "project_to_budget", "projectable"]
