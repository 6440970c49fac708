"""Global ranking (Torch-Pruning's recipe inside the space, issue 25): the channels it removes are
the library's own ``MetaPruner(global_pruning=True)``'s, the pruned student meets its projected target
in every shipped space, its plan prices exactly what it measures, and it rebuilds from plan + weights."""
from __future__ import annotations

import copy
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autokd.candidate import GLOBAL_METHODS, Candidate, check_candidate
from autokd.errors import UserError
from autokd.measure import count_macs
from autokd.models import channel_plan, create_model
from autokd.prune import GLOBAL, copy_into, predict_cost, prune_global

SHAPE = (3, 8, 8)  # tiny CPU input; every registered model ends in a global pool
SHIPPED = ("resnet56_to_resnet", "vgg16_to_vgg", "resnet18_to_convtiny")


def _random_bn(model: nn.Module, seed: int) -> nn.Module:
    """Random BN scales and statistics, so BN-scale and filter-norm rankings disagree."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _model(arch: str, seed: int = 0, width: float = 1.0) -> nn.Module:
    torch.manual_seed(seed)
    return _random_bn(create_model(arch, width=width), seed)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, *SHAPE, generator=g), torch.randint(0, 10, (16,), generator=g)


def _library(model: nn.Module, target: int, importance, taylor: bool = False) -> nn.Module:
    """Torch-Pruning's README recipe, written with the library alone (none of autokd's prune code):
    the outside baseline's settings, stepped until the MACs are at or under ``target``."""
    x, y = _batch()
    pruner = tp.pruner.MetaPruner(model, torch.zeros(1, *SHAPE), importance=importance, global_pruning=True,
                                  pruning_ratio=0.9, max_pruning_ratio=0.9, iterative_steps=200,
                                  ignored_layers=[model.get_submodule(model.classifier_name)])
    while count_macs(model, SHAPE) > target:
        if taylor:
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
        pruner.step()
    return model


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------ names
def test_the_global_methods_are_one_list():
    from autokd.space import PRUNE_METHODS

    assert list(GLOBAL) == list(GLOBAL_METHODS) and set(GLOBAL_METHODS) <= set(PRUNE_METHODS)


def test_target_macs_belongs_to_global_methods():
    check_candidate(Candidate(prune_method="global-bn", init="teacher", target_macs=1000))
    with pytest.raises(UserError, match="target_macs applies to the global"):
        check_candidate(Candidate(prune_method="l1", target_macs=1000))
    with pytest.raises(UserError, match="target_macs must be an integer >= 0"):
        check_candidate(Candidate(prune_method="global-l2", target_macs=-1))


# ------------------------------------------------------------------ against the library
IMPORTANCE = {"global-l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
              "global-l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
              "global-bn": lambda: tp.importance.BNScaleImportance(),
              "global-taylor": lambda: tp.importance.TaylorImportance()}


@pytest.mark.parametrize("arch, width", [("resnet20", 1.0), ("vgg11", 0.25), ("convtiny", 1.0)])
@pytest.mark.parametrize("method", GLOBAL_METHODS)
def test_removes_the_channels_torch_pruning_removes(arch, width, method):
    """Same weights, same target: the model autokd prunes is, tensor for tensor, the one Torch-Pruning's
    own MetaPruner(global_pruning=True) leaves (so the same channels went, in the same layers)."""
    model = _model(arch, seed=1, width=width)
    target = int(0.45 * count_macs(model, SHAPE))
    x, y = _batch()
    ours = prune_global(copy.deepcopy(model), target, method=method, input_shape=SHAPE,
                        loss_fn=lambda m: F.cross_entropy(m(x), y))
    theirs = _library(copy.deepcopy(model), target, IMPORTANCE[method](), taylor=method == "global-taylor")
    assert channel_plan(ours) == channel_plan(theirs) != channel_plan(model)
    assert _same_weights(ours, theirs)
    assert count_macs(ours, SHAPE) <= target


def test_is_the_outside_baselines_recipe():
    """The warm start ``torch-pruning`` prunes what benchmarks/torch_pruning_baseline.py prunes."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from torch_pruning_baseline import prune_to

    teacher = _model("resnet20", seed=2)
    target = int(0.4 * count_macs(teacher, SHAPE))
    ((baseline, macs),) = prune_to(teacher, SHAPE, [target])
    ours = prune_global(copy.deepcopy(teacher), target, method="global-l2", input_shape=SHAPE)
    assert _same_weights(ours, baseline) and count_macs(ours, SHAPE) == macs <= target


def test_global_ranking_differs_from_per_stage_ratios():
    """The point of the method: resnet20's three stages do not all lose the same share (per-stage L1
    at one ratio would keep the same fraction of every group)."""
    model = prune_global(_model("resnet20", seed=3), int(0.5 * count_macs(_model("resnet20"), SHAPE)),
                         method="global-l2", input_shape=SHAPE)
    plan = channel_plan(model)
    kept = {plan["layer1.0.conv2"] / 16, plan["layer2.0.conv2"] / 32, plan["layer3.0.conv2"] / 64}
    assert len(kept) > 1


def test_an_unreachable_target_is_one_line():
    model = _model("resnet20")
    with pytest.raises(UserError, match="above its target"):
        prune_global(model, 1000, method="global-l2", input_shape=SHAPE)


def test_a_model_under_its_target_is_left_whole():
    model = _model("resnet20")
    before = copy.deepcopy(model)
    assert prune_global(model, count_macs(model, SHAPE), method="global-l2", input_shape=SHAPE) is model
    assert _same_weights(model, before)


# ------------------------------------------------------------------ shipped spaces, projected
@pytest.fixture(scope="module")
def teachers():
    from autokd.search.budget import teacher_shape
    from autokd.space import load_space

    return {name: teacher_shape(load_space(name).teacher, SHAPE, 10) for name in SHIPPED}


def _student(cand: Candidate, teacher_arch: str) -> nn.Module:
    """The student as a trial builds it before pruning (an untrained teacher stands in)."""
    from autokd.inherit import inherit_student
    from autokd.teacher import seeded_model

    if cand.init == "teacher":
        return inherit_student(_model(teacher_arch, seed=cand.seed), cand.student, rule=cand.blocks).eval()
    return _random_bn(seeded_model(cand.student, cand.seed, num_classes=10, in_channels=3, width=cand.width), cand.seed)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(space_name=st.sampled_from(SHIPPED), seed=st.integers(0, 10_000), share=st.floats(0.3, 1.0),
       method=st.sampled_from(["global-l2", "global-bn"]))
def test_every_shipped_space_meets_its_projected_target(teachers, space_name, seed, share, method):
    """A random sample of each shipped space with a global method, put on share x 40 % of the teacher's
    MACs: the search prices it at its target (or at its unpruned MACs, when under), and once pruned
    its measured MACs are at or under that; the plan it records prices exactly what it measures."""
    import optuna

    from autokd.search.budget import predict_macs, project_candidate
    from autokd.space import load_space, suggest

    space, teacher = load_space(space_name), teachers[space_name]
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask(space.distributions)
    cand = replace(suggest(trial, space, Candidate(epochs=2)), prune_method=method, seed=seed)
    target = int(share * 0.4 * teacher.macs)
    projected, _, _ = project_candidate(cand, teacher, target)
    assert projected.target_macs == target
    student = _student(projected, teacher.arch)
    unpruned = count_macs(student, SHAPE)
    assert predict_macs(projected, teacher) == min(target, unpruned)
    prune_global(student, projected.target_macs, method=method, input_shape=SHAPE)
    measured = count_macs(student, SHAPE)
    assert measured <= predict_macs(projected, teacher)
    plan = channel_plan(student)
    _, cost = predict_cost(student.arch, num_classes=10, in_channels=3, width=student.build_args["width"],
                           ratios_spec=0.0, input_shape=SHAPE, plan=plan)
    assert cost.macs == measured


def test_a_target_below_what_ranking_reaches_is_rejected(teachers):
    from autokd.search.budget import project_candidate

    cand = Candidate(student="resnet20", init="teacher", prune_method="global-l2", epochs=1)
    with pytest.raises(UserError, match="below the cheapest global ranking reaches"):
        project_candidate(cand, teachers["resnet56_to_resnet"], 10)


def test_the_warm_starts_are_the_baselines_recipe():
    from autokd.space import load_space, params_to_candidate

    for name in ("resnet56_to_resnet", "vgg16_to_vgg"):
        space = load_space(name)
        assert list(space.warm_start)[:2] == ["torch-pruning", "torch-pruning-kd"], name
        labels, kd = (params_to_candidate(space.warm_start[k], fixed={}, base=Candidate())
                      for k in ("torch-pruning", "torch-pruning-kd"))
        for c in (labels, kd):
            assert (c.student, c.init, c.prune_method, c.prune_at, c.prune_steps, c.beta) == \
                (space.teacher, "teacher", "global-l2", "start", 1, 1.0), name
            assert space.warm_start["torch-pruning"]["budget/share"] == 1.0
        assert labels.kd_alpha == 0.0 and (kd.kd_alpha, kd.temperature) == (0.5, 4.0)


# ------------------------------------------------------------------ in a trial, and exported
def test_a_trial_prunes_globally_to_its_target_and_rebuilds_from_its_plan(digits):
    """An inherited resnet20 from a resnet32 teacher on digits (1x8x8), the baseline's recipe at 30 % of
    the teacher's MACs, in two gradual steps: epoch 0 cuts half the MACs to remove, the last step the
    rest; the result rebuilds from its plan and weights to the same logits."""
    from autokd.trial import TrialContext, TrialRun

    teacher = create_model("resnet32", num_classes=10, in_channels=1).eval()
    target = int(0.3 * count_macs(teacher, (1, 8, 8)))
    cand = Candidate(student="resnet20", init="teacher", prune_method="global-l2", target_macs=target,
                     prune_steps=2, epochs=2, kd_alpha=0.0, beta=1.0)
    run = TrialRun(cand, TrialContext(teacher=teacher, data=digits))
    before = run.before.macs
    assert run.macs <= before - (before - target) // 2 and run.steps == [(1, target)]
    run._prune(run.steps.pop()[1])
    student = run.student.eval()
    assert count_macs(student, (1, 8, 8)) == run.macs <= target
    rebuilt = copy_into(student, create_model("resnet20", num_classes=10, in_channels=1, plan=channel_plan(student)))
    x = digits.val_x[:8]
    assert torch.equal(rebuilt.eval()(x), student(x))


def test_without_a_target_the_ratios_set_the_macs(digits):
    """`autokd distill --prune-method global-l2 --prune 0.5` (no search, no target_macs): global ranking
    down to the MACs per-layer ratio 0.5 would cost, spread over the layers by the ranking."""
    from autokd.price import TeacherShape, predict_macs
    from autokd.trial import TrialContext, TrialRun

    teacher = create_model("resnet20", num_classes=10, in_channels=1).eval()
    cand = Candidate(student="resnet20", init="teacher", prune_method="global-l2", prune={"*": 0.5}, epochs=1)
    shape = TeacherShape("resnet20", count_macs(teacher, (1, 8, 8)), channel_plan(teacher), 1.0, 10, (1, 8, 8))
    want = predict_macs(replace(cand, prune_method="l1"), shape)
    run = TrialRun(cand, TrialContext(teacher=teacher, data=digits))
    assert run.target_macs == want and run.steps == [] and count_macs(run.student, (1, 8, 8)) == run.macs <= want


def test_global_bn_waits_for_a_fresh_student_to_train():
    """A fresh student's BN scales are all 1 (nothing to rank): from scratch, global-bn prunes during."""
    from autokd.space import params_to_candidate

    scratch = params_to_candidate({"prune/method": "global-bn", "prune/at": "start"}, fixed={}, base=Candidate())
    inherited = params_to_candidate({"prune/method": "global-bn", "prune/at": "start", "student/init": "teacher"},
                                    fixed={}, base=Candidate())
    assert (scratch.prune_at, inherited.prune_at) == ("during", "start")
    with pytest.raises(UserError, match="global-bn ranks BN scales"):
        check_candidate(Candidate(prune_method="global-bn", prune={"*": 0.3}))
