"""The budget's edge: width and pruning compose (a sampled shape is never scaled to nothing), a
candidate lands on its target within one channel per layer, and a stated share of a search's compute
goes to candidates at the budget itself. No Ray, nothing trained."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import optuna
import pytest

from autokd.candidate import Candidate
from autokd.measure import count_macs
from autokd.models import channel_plan, create_model
from autokd.price import TeacherShape, predict_student
from autokd.search import record
from autokd.search.budget import compose_width, project_candidate

SHAPE = (1, 8, 8)  # digits


@pytest.fixture(scope="module")
def teacher() -> TeacherShape:
    model = create_model("resnet56", num_classes=10, in_channels=1)
    return TeacherShape("resnet56", count_macs(model, SHAPE), channel_plan(model), 1.0, 10, SHAPE)


def within_one_channel(cand: Candidate, plan: dict[str, int], macs: int, target: int) -> bool:
    """At or under the target, and one more channel in every layer goes over it."""
    bumped = {k: v + 1 for k, v in plan.items()}
    over = count_macs(create_model(cand.student, num_classes=10, in_channels=1, plan=bumped), SHAPE)
    return macs <= target < over


def test_a_student_that_fits_unpruned_is_widened_and_pruned_along_its_shape_onto_the_target(teacher):
    budget = int(0.4 * teacher.macs)
    shape = {"layer1": 0.2, "layer2": 0.6, "layer3": 0.4}
    cand = Candidate(student="resnet32", init="scratch", width=0.5, prune=shape)
    assert predict_student(replace(cand, prune={}), teacher)[1].macs < budget  # the old projection zeroed it
    composed = compose_width(cand, teacher, budget, widest=1.0)
    assert cand.width < composed.width <= 1.0
    projected, proj, _ = project_candidate(composed, teacher, budget)
    assert proj.scale > 0 and all(projected.prune[k] > 0 for k in shape)  # the shape prunes, in its order
    assert projected.prune["layer2"] > projected.prune["layer3"] > projected.prune["layer1"]
    plan, cost = predict_student(projected, teacher)
    assert within_one_channel(projected, plan, cost.macs, budget)


def test_composition_leaves_alone_what_it_need_not_touch(teacher):
    budget = int(0.4 * teacher.macs)
    unpruned = Candidate(student="resnet20", width=0.25, prune={})  # sampled no pruning: none is invented,
    wide = compose_width(unpruned, teacher, budget // 4, widest=1.0)   # the width alone puts it on the target
    assert wide.prune == {} and wide.width > 0.25
    plan, cost = predict_student(wide, teacher)
    assert within_one_channel(wide, plan, cost.macs, budget // 4)
    heavy = Candidate(student="resnet56", init="teacher", width=1.0, prune={"layer2": 0.3})  # over: projection prunes
    assert compose_width(heavy, teacher, budget, widest=1.0) == heavy
    tiny = Candidate(student="resnet20", width=0.25, prune={"layer3": 0.1})  # fits even at the widest
    assert compose_width(tiny, teacher, teacher.macs, widest=0.5).width == 0.5


def _searcher(study, at_budget: float, budget: int, committed=None, live=None):
    from autokd.search.prepare import Plan
    from autokd.search.tune import OptunaSearcher

    space = SimpleNamespace(distributions={"budget/share": optuna.distributions.FloatDistribution(0.1, 1.0)})
    plan = SimpleNamespace(space=space, budget=SimpleNamespace(macs=budget), latency=None)
    plan.at_budget = lambda target_macs, target_ms: Plan.at_budget(plan, target_macs, target_ms)  # the real test
    s = OptunaSearcher.__new__(OptunaSearcher)
    s.session = SimpleNamespace(cfg=SimpleNamespace(at_budget=at_budget), plan=plan)
    s.study, s.committed, s.live = study, committed or {}, live or {}
    return s


def _finished(study, target: int, compute: float, warm_start: str | None = None) -> None:
    t = study.ask()
    record.write(t, target_macs=target, compute=compute, warm_start=warm_start)
    study.tell(t, [0.5, 1.0])


def test_the_searcher_keeps_its_stated_share_of_compute_at_the_budget():
    study = optuna.create_study(directions=["maximize", "minimize"])
    waiting = lambda: study.get_trials(states=(optuna.trial.TrialState.WAITING,))  # noqa: E731
    s = _searcher(study, 0.25, budget=1000)
    s._at_budget_next()
    assert not waiting()  # nothing spent yet: the sampler goes first
    _finished(study, 600, 3.0)  # 0 of 3 at the budget < 25 %
    s._at_budget_next()
    assert [t.system_attrs.get("fixed_params") for t in waiting()] == [{"budget/share": 1.0}]
    s._at_budget_next()
    assert len(waiting()) == 1  # one asked for at a time
    trial = study.ask(s.session.plan.space.distributions)
    assert trial.params["budget/share"] == 1.0  # the enqueued share; the sampler draws the rest
    record.write(trial, target_macs=1000, compute=1.0)
    study.tell(trial, [0.6, 1.0])
    s._at_budget_next()
    assert not waiting()  # 1 of 4 at the budget: 25 %, enough
    assert not _searcher(study, 0.0, 1000)._at_budget_next() and not waiting()  # --at-budget 0: never


def test_warm_starts_at_the_budget_leave_the_share_to_the_sampler():
    study = optuna.create_study(directions=["maximize", "minimize"])
    waiting = lambda: study.get_trials(states=(optuna.trial.TrialState.WAITING,))  # noqa: E731
    s = _searcher(study, 0.25, budget=1000)
    _finished(study, 1000, 3.0, warm_start="torch-pruning")  # Torch-Pruning's recipe, at the budget
    _finished(study, 1000, 3.0, warm_start="torch-pruning-kd")
    s._at_budget_next()
    assert not waiting()  # nothing sampled yet: the sampler goes first
    _finished(study, 600, 3.0)  # 6 of 9 at the budget, but 0 of the 3 sampled
    s._at_budget_next()
    assert [t.system_attrs.get("fixed_params") for t in waiting()] == [{"budget/share": 1.0}]


def test_a_candidate_says_what_its_pruning_really_is():
    from autokd.candidate import pruning_text

    assert pruning_text({"prune_method": "learned-mask", "prune": {"layer1": 0, "layer2": 0.0}}) == "unpruned"
    assert pruning_text({"prune_method": "l1", "prune": {"layer1": 0.0, "layer3": 0.25}}) == "l1 layer3=0.25"
    assert pruning_text({"prune_method": "global-l2", "prune": {"*": 0.3}, "target_macs": 3_137_000}) == \
        "global-l2 to 3.14 M MACs"
