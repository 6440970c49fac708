"""Two-objective early stopping on hand-made rung tables."""
from __future__ import annotations

from autokd.search.front import dominates
from autokd.search.stopping import ParetoStopper, make_stopper


def test_the_dominated_rule_stops_at_rungs_1_3_9_below_the_last_epoch():
    assert make_stopper("dominated", 1).rungs == []
    assert make_stopper("dominated", 2).rungs == [1]
    assert make_stopper("dominated", 10).rungs == [1, 3, 9]
    assert make_stopper("dominated", 9).rungs == [1, 3]


def test_dominance_by_hand():
    r = (0.80, 100)                           # (accuracy, MACs)
    assert dominates(r, (0.70, 100))          # as cheap, more accurate
    assert dominates(r, (0.80, 150))          # as accurate, cheaper
    assert not dominates(r, (0.80, 100))      # identical: not strictly better
    assert not dominates(r, (0.90, 150))      # less accurate
    assert not dominates(r, (0.70, 50))       # more expensive
    assert not dominates(r, (0.79, 100), margin=0.02)  # 1 point better, the margin asks for 2
    assert dominates(r, (0.77, 100), margin=0.02)


def test_hand_made_table_stops_exactly_the_expected_trials():
    stopper = ParetoStopper(rungs=[1, 3], min_dominators=2)
    # (trial, epoch, val accuracy, MACs) in arrival order, and whether it must stop
    events = [
        (0, 1, 0.60, 100, False),  # nobody before it
        (1, 1, 0.70, 80, False),   # dominates trial 0, dominated by nobody
        (2, 1, 0.50, 120, True),   # dominated by 0 and 1 (both cheaper and better)
        (3, 1, 0.65, 90, False),   # dominated by 1 only (0 costs more)
        (4, 1, 0.90, 200, False),  # most accurate: nobody dominates it
        (5, 1, 0.55, 95, True),    # dominated by 1 and 3
        (0, 2, 0.10, 100, False),  # epoch 2 is not a rung: never stops
        (0, 3, 0.75, 100, False),  # first at rung 3
        (1, 3, 0.74, 80, False),   # cheaper: not dominated by 0
        (3, 3, 0.70, 90, False),   # dominated by 1 only (0 is dearer)
        (4, 3, 0.60, 200, True),   # dominated by 0, 1 and 3 at rung 3
    ]
    for trial, epoch, acc, macs, expected in events:
        assert stopper.observe(trial, epoch, acc, macs) is expected, (trial, epoch)
    assert len(stopper.table[1]) == 6 and len(stopper.table[3]) == 4


def test_margin_protects_near_ties():
    stopper = ParetoStopper(rungs=[1], min_dominators=2, margin=0.05)
    stopper.observe(0, 1, 0.80, 100)
    stopper.observe(1, 1, 0.81, 100)
    assert stopper.observe(2, 1, 0.78, 100) is False  # within the margin of both
    assert stopper.observe(3, 1, 0.70, 100) is True


def test_trials_are_compared_within_their_group_only():
    """Two inherited trials far ahead at rung 1 do not stop a scratch trial (their head start
    says nothing about its end); two scratch trials ahead of it do."""
    from autokd.search.stopping import ParetoStopper

    stopper = ParetoStopper(rungs=[1], min_dominators=2)
    assert not stopper.observe(0, 1, 0.95, 100, "teacher")
    assert not stopper.observe(1, 1, 0.96, 100, "teacher")
    assert not stopper.observe(2, 1, 0.60, 200, "scratch")   # dominated by 0 and 1, another group
    assert not stopper.observe(3, 1, 0.70, 100, "scratch")
    assert not stopper.observe(4, 1, 0.72, 150, "scratch")   # more accurate than 2 and 3: no dominator
    assert stopper.observe(5, 1, 0.50, 300, "scratch")       # dominated by 2, 3 and 4


def test_a_candidate_at_the_budget_is_ranked_among_candidates_at_the_budget():
    """Rung 1 of a ladder (eta 3), budget 12.4 M MACs, inherited students. Two cheap warm starts (2.3 M,
    65 %; 5.6 M, 70 %) and Torch-Pruning's two at the budget (76 %, 78 %) are there when a searched
    student projected onto the budget (one channel under it) reports 85 %, the best of all. Ranked in
    one table, the front is 2.3 M, 5.6 M and it; 5 // 3 = 1 goes on, and the tie of the front's two
    ends (crowding infinite) goes to fewer MACs: it is stopped. In the budget's own table it leads."""
    from autokd.search.stopping import rung_group

    rows = [(0, 0.65, 2_280_000, False), (1, 0.70, 5_600_000, False), (2, 0.76, 12_400_000, True),
            (3, 0.78, 12_400_000, True)]
    searched = (9, 0.85, 12_390_000, True)
    one_table, by_edge = make_stopper("ladder", 2), make_stopper("ladder", 2)
    for trial, acc, macs, at_budget in rows:
        one_table.observe(trial, 1, acc, macs, "teacher")
        by_edge.observe(trial, 1, acc, macs, rung_group("teacher", at_budget))
    trial, acc, macs, at_budget = searched
    assert one_table.observe(trial, 1, acc, macs, "teacher") is True
    assert by_edge.observe(trial, 1, acc, macs, rung_group("teacher", at_budget)) is False
    assert set(by_edge.ladders) == {"teacher", "teacher@budget"}
    assert by_edge.ladders["teacher@budget"].promoted[1] == [2, 3, 9]  # 2 and 3: fewer rows than grace (3)
    assert rung_group("scratch", False) == "scratch" and rung_group("scratch", True) == "scratch@budget"
