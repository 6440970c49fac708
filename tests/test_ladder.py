"""MO-ASHA fidelity ladder on hand-made rung tables; every front, distance and decision below is
derived by hand in the comments, never read back from autokd.search.ladder."""
from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autokd.search.ladder import Ladder, crowding_distance, nondominated_fronts, rank, rungs

INF = math.inf

# Table 1: a dominance chain. (val accuracy, MACs), index = trial number.
CHAIN = [(0.60, 100), (0.70, 80), (0.50, 120), (0.65, 90), (0.90, 200), (0.55, 95)]
# 1 (0.70, 80) dominates 0, 2, 3 and 5 (at least as accurate, no dearer); 4 (0.90) is the most
# accurate, so nothing dominates it and it does not dominate the cheaper 1:  front 0 = {1, 4}.
# Left: 3 (0.65, 90) dominates 0 (0.60, 100), 2 and 5 (0.55, 95):          front 1 = {3}.
# Left: 0 (0.60, 100) vs 5 (0.55, 95): each better in one objective; both dominate 2 (0.50, 120):
#                                                                          front 2 = {5, 0}, front 3 = {2}.
# Fronts list MACs ascending: [1 (80), 4 (200)], [3], [5 (95), 0 (100)], [2].
CHAIN_FRONTS = [[1, 4], [3], [5, 0], [2]]
# Fronts of one or two points: every crowding distance is inf, so fewer MACs first: 1 before 4,
# 5 before 0.
CHAIN_RANK = [1, 4, 3, 5, 0, 2]

# Table 2: one wide front, where crowding decides.
#   A=0 (0.50, 10), B=1 (0.60, 20), C=2 (0.62, 60), D=3 (0.80, 100): accuracy rises with MACs,
#   no point dominates another: front 0 = [0, 1, 2, 3].
#   E=4 (0.55, 30) is dominated by B (0.60 >= 0.55, 20 <= 30); F=5 (0.61, 65) by C (0.62, 60);
#   E vs F: each better in one: front 1 = [4, 5].
SPREAD = [(0.50, 10), (0.60, 20), (0.62, 60), (0.80, 100), (0.55, 30), (0.61, 65)]
SPREAD_FRONTS = [[0, 1, 2, 3], [4, 5]]
# Crowding on front 0: ranges accuracy 0.80 - 0.50 = 0.30, MACs 100 - 10 = 90; ends A, D = inf.
#   B: neighbours A, C: (0.62 - 0.50) / 0.30 + (60 - 10) / 90  = 0.4 + 0.5556 = 0.9556
#   C: neighbours B, D: (0.80 - 0.60) / 0.30 + (100 - 20) / 90 = 0.6667 + 0.8889 = 1.5556
SPREAD_CROWD = {0: INF, 1: 0.4 + 50 / 90, 2: 0.2 / 0.3 + 80 / 90, 3: INF}
# Rank: A, D (both inf; A has fewer MACs), C (1.56), B (0.96); then front 1: E, F (inf, E cheaper).
SPREAD_RANK = [0, 3, 2, 1, 4, 5]


def test_rungs():
    assert rungs(10) == [0, 1, 3, 9]          # 27 >= 10 stops
    assert rungs(9) == [0, 1, 3]              # strictly below the final epoch
    assert rungs(28) == [0, 1, 3, 9, 27]
    assert rungs(10, rung0=False) == [1, 3, 9]
    assert rungs(30, eta=2) == [0, 1, 2, 4, 8, 16]
    assert rungs(2) == [0, 1] and rungs(1) == [0] and rungs(0) == []
    with pytest.raises(ValueError):
        rungs(10, eta=1)


def test_fronts_and_rank_by_hand():
    assert nondominated_fronts(CHAIN) == CHAIN_FRONTS
    assert rank(CHAIN) == CHAIN_RANK
    assert nondominated_fronts(SPREAD) == SPREAD_FRONTS
    assert rank(SPREAD) == SPREAD_RANK


def test_crowding_distance_by_hand():
    got = crowding_distance(SPREAD, SPREAD_FRONTS[0])
    assert got == pytest.approx(SPREAD_CROWD)
    assert crowding_distance(SPREAD, [4, 5]) == {4: INF, 5: INF}   # two points: both ends
    # three points A, B, C: ranges 0.12 and 50; B: (0.62 - 0.50) / 0.12 + (60 - 10) / 50 = 1 + 1
    assert crowding_distance(SPREAD, [0, 1, 2]) == pytest.approx({0: INF, 1: 2.0, 2: INF})


def test_duplicates_share_a_front_and_break_ties_by_index():
    pts = [(0.5, 10), (0.5, 10), (0.9, 50)]
    # identical points do not dominate each other; (0.9, 50) is dearer but more accurate: one front
    assert nondominated_fronts(pts) == [[0, 1, 2]]
    # sorted by either objective (ties by index): 0, 1, 2 -> ends 0 and 2 inf; 1: 0.4/0.4 + 40/40 = 2
    assert crowding_distance(pts, [0, 1, 2]) == pytest.approx({0: INF, 1: 2.0, 2: INF})
    assert rank(pts) == [0, 2, 1]  # 0 and 2 inf (0 cheaper), then the interior duplicate


def test_six_results_eta3_keeps_two():
    # the full SPREAD rung: 6 rows, top max(1, 6 // 3) = 2 go on: A and D by the rank above
    ladder = Ladder(eta=3)
    for t in (0, 1, 2, 4, 5):
        ladder.record(t, 3, *SPREAD[t])
    assert ladder.decide(3, 3, *SPREAD[3]) is True            # D: second of SPREAD_RANK
    assert ladder.decide(5, 3, *SPREAD[5]) is False           # F: last (retry of its row)
    assert ladder.decide(1, 3, *SPREAD[1]) is False           # B: fourth


def test_arrival_order_decisions_and_promoted():
    # SPREAD arriving E, F, B, C, A, D at rung 3 (eta 3, grace 3):
    expected = [
        (4, True),   # n=1 < grace
        (5, True),   # n=2 < grace
        (1, True),   # n=3, top 1: {B, E, F}; B dominates E; front {B, F}, both inf, B cheaper
        (2, False),  # n=4, top 1: C dominates F; front {B, C}, both inf, B (20) before C (60)
        (0, True),   # n=5, top 1: front {A, B, C}: A, C inf, B = 2; A (10 MACs) first
        (3, True),   # n=6, top 2: SPREAD_RANK starts A, D
    ]
    ladder = Ladder(eta=3)
    for trial, go in expected:
        assert ladder.decide(trial, 3, *SPREAD[trial]) is go, trial
    assert ladder.promoted == {3: [4, 5, 1, 0, 3]}
    # CHAIN arriving 0..5 at rung 1: 0, 1 by grace; then top 1 of n = 3, 4, 5 is 1 each time
    # (n=3: 1 dominates 0 and 2; n=4: 1 dominates 3; n=5: front {1, 4}, 1 cheaper), and at n=6
    # the top 2 are 1 and 4 (CHAIN_RANK), so 5 stops.
    for trial, go in enumerate([True, True, False, False, False, False]):
        assert ladder.decide(trial, 1, *CHAIN[trial]) is go, trial
    assert ladder.promoted[1] == [0, 1]


def test_below_grace_continues():
    ladder = Ladder(eta=3)                         # grace = eta = 3
    assert ladder.decide(0, 0, 0.9, 10) is True
    assert ladder.decide(1, 0, 0.1, 100) is True   # dominated by 0, but only 2 rows
    assert ladder.decide(2, 0, 0.05, 200) is False  # 3 rows, top 1 = trial 0
    wide = Ladder(eta=3, grace=5)
    for t in range(4):                             # 4 rows < 5: all continue, however bad
        assert wide.decide(t, 0, 0.9 - 0.2 * t, 10 + t) is True
    assert wide.decide(4, 0, 0.0, 999) is False    # n=5: top 1 is trial 0 (dominates the rest)


def test_retry_replaces_its_own_row():
    ladder = Ladder(eta=3)
    ladder.decide(0, 1, 0.9, 10)
    ladder.decide(1, 1, 0.8, 20)
    assert ladder.decide(2, 1, 0.1, 100) is False  # dominated by 0 and 1; top 1 is 0
    assert ladder.decide(2, 1, 0.95, 5) is True    # the retry dominates both: now first
    assert ladder.table[1] == {0: (0.9, 10), 1: (0.8, 20), 2: (0.95, 5)}
    assert ladder.promoted[1] == [0, 1, 2]
    assert ladder.decide(0, 1, 0.0, 1000) is False  # 0 retried worse: dropped from promoted
    assert len(ladder.table[1]) == 3 and ladder.promoted[1] == [1, 2]


def test_nan_accuracy_ranks_last_at_its_cost():
    ladder = Ladder(eta=3)
    ladder.decide(0, 1, 0.5, 50)
    ladder.decide(1, 1, 0.6, 60)
    assert ladder.table[1] == {0: (0.5, 50), 1: (0.6, 60)}
    assert ladder.decide(2, 1, float("nan"), 70) is False   # -inf at 70 MACs: dominated by both
    assert ladder.table[1][2] == (-INF, 70)


def _events() -> list[tuple[int, int, float, int]]:
    # two rungs, a retry (trial 2 at rung 0) and a NaN, in arrival order
    return [(0, 0, 0.30, 100), (1, 0, 0.35, 80), (2, 0, 0.20, 90), (3, 0, 0.50, 200),
            (0, 1, 0.60, 100), (2, 0, 0.40, 90), (4, 0, float("nan"), 50), (1, 1, 0.62, 80),
            (5, 0, 0.45, 60), (3, 1, 0.70, 200), (6, 0, 0.10, 300), (5, 1, 0.66, 60)]


def test_resume_through_json_gives_the_same_decisions():
    events = _events()
    straight = Ladder(eta=3)
    want = [straight.decide(*e) for e in events]
    first = Ladder(eta=3)
    got = [first.decide(*e) for e in events[:6]]
    stored = json.dumps(first.as_dict(), allow_nan=False)  # plain JSON: no NaN / Infinity
    resumed = Ladder.from_dict(json.loads(stored))
    got += [resumed.decide(*e) for e in events[6:]]
    assert got == want
    assert resumed.as_dict() == straight.as_dict()
    assert resumed.promoted == straight.promoted


def test_as_dict_form():
    ladder = Ladder(eta=2)
    ladder.decide(7, 1, 0.5, 10)
    ladder.record(8, 1, float("nan"), 20)
    assert ladder.as_dict() == {"eta": 2, "grace": 2, "rows": [[1, 7, 0.5, 10], [1, 8, None, 20]],
                                "promoted": {"1": [7]}}


# ------------------------------------------------------------------ properties against the definition
def _dominates(a, b) -> bool:
    return a[0] >= b[0] and a[1] <= b[1] and a != b


def _peel(points) -> list[set[int]]:
    """Fronts straight from the definition: repeatedly take the points nobody left dominates."""
    left, fronts = set(range(len(points))), []
    while left:
        front = {i for i in left if not any(_dominates(points[j], points[i]) for j in left)}
        fronts.append(front)
        left -= front
    return fronts


# a coarse grid, so ties and duplicates are common
POINTS = st.lists(st.tuples(st.integers(0, 5).map(lambda a: a / 5), st.integers(1, 6)), max_size=25)


@settings(max_examples=300, deadline=None)
@given(POINTS)
def test_fronts_match_the_definition_and_dominators_rank_first(points):
    assert [set(f) for f in nondominated_fronts(points)] == _peel(points)
    order = rank(points)
    assert sorted(order) == list(range(len(points)))
    pos = {i: k for k, i in enumerate(order)}
    for i, a in enumerate(points):
        for j, b in enumerate(points):
            if _dominates(a, b):
                assert pos[i] < pos[j], (a, b)
