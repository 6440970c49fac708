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
