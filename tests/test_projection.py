"""Projection of a pruning shape onto a MAC budget: hand-derived vgg11 numbers, then properties
over random shapes for resnet20 / resnet56 / vgg11 and every student of the shipped spaces."""
from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from optuna.distributions import FloatDistribution

from autokd.errors import UserError
from autokd.prune.projection import MIN_REL, project_to_budget, projectable
from autokd.prune import MAX_RATIO, predict_cost
from autokd.space import load_space, shipped_spaces

# vgg11 ([64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M]) on 1x8x8, 10 classes, width 1.
# A pool halves the map until it is 1x1, then passes it through. MACs = out * in * 9 * positions:
#   conv1   1 ->  64 @ 8x8: 64 *   1 * 9 * 64 =    36,864
#   conv2  64 -> 128 @ 4x4: 128 *  64 * 9 * 16 = 1,179,648
#   conv3 128 -> 256 @ 2x2: 256 * 128 * 9 * 4  = 1,179,648
#   conv4 256 -> 256 @ 2x2: 256 * 256 * 9 * 4  = 2,359,296
#   conv5 256 -> 512 @ 1x1: 512 * 256 * 9      = 1,179,648
#   conv6..8 512 -> 512 @ 1x1: 3 * 2,359,296   = 7,077,888
#   classifier 512 -> 10                       =     5,120      total 13,018,112
VGG = dict(num_classes=10, in_channels=1, width=1.0, input_shape=(1, 8, 8))
VGG_MACS = 13_018_112
# One channel less in stage1 (conv1) saves its own 1 * 9 * 64 = 576 and conv2's input slice
# 128 * 9 * 16 = 18,432: 19,008 MACs a channel.
STAGE1_CHANNEL = 19_008


def _macs(arch: str, ratios: dict[str, float], **kw) -> tuple[dict[str, int], int]:
    spec = float(ratios["*"]) if set(ratios) == {"*"} else ratios
    plan, cost = predict_cost(arch, ratios_spec=spec, **kw)
    return plan, cost.macs


def test_unpruned_by_hand():
    assert _macs("vgg11", {}, **VGG)[1] == VGG_MACS


def test_lands_on_the_target_by_hand():
    target = VGG_MACS - 10 * STAGE1_CHANNEL  # 12,828,032: exactly 10 stage1 channels
    p = project_to_budget("vgg11", shape={"stage1": 1.0}, target_macs=target, **VGG)
    assert p.macs == target == 12_828_032
    # 10 channels of 64 go when floor(64 r + 1/2) = 10: r in [9.5 / 64, 10.5 / 64)
    assert 9.5 / 64 <= p.ratios["stage1"] < 10.5 / 64 and p.ratios == {"stage1": p.scale}
    assert p.over_macs == VGG_MACS - 9 * STAGE1_CHANNEL == 12_847_040 and p.over_scale < p.scale
    # edges (j - 1/2) / c for c in 64, 128, 256, 512 and j up to 61, 122, 243, 486: 912 distinct
    # (over a common 512 the numerators differ in parity), so 913 probes: the unpruned and the
    # all-capped ones, then at most ceil(log2 912) = 10 bisection steps
    assert p.iterations <= 12
    one_less = project_to_budget("vgg11", shape={"stage1": 1.0}, target_macs=target - 1, **VGG)
    assert one_less.macs == VGG_MACS - 11 * STAGE1_CHANNEL == 12_809_024


def test_unpruned_fits_means_scale_zero():
    p = project_to_budget("vgg11", shape={"stage1": 0.3, "stage2": 1.0}, target_macs=VGG_MACS, **VGG)
    assert (p.scale, p.ratios, p.macs, p.over_scale, p.over_macs) == \
        (0.0, {"stage1": 0.0, "stage2": 0.0}, VGG_MACS, None, None)


def test_below_the_cheapest_raises_one_line():
    # stage1 at 0.95 loses min(63, floor(60.8 + 0.5)) = 61 channels: 13,018,112 - 61 * 19,008
    cheapest = VGG_MACS - 61 * STAGE1_CHANNEL
    assert cheapest == 11_858_624
    assert project_to_budget("vgg11", shape={"stage1": 1.0}, target_macs=cheapest, **VGG).macs == cheapest
    with pytest.raises(UserError, match="11,858,624 MACs") as err:
        project_to_budget("vgg11", shape={"stage1": 1.0}, target_macs=cheapest - 1, **VGG)
    assert "\n" not in str(err.value)
    assert projectable("vgg11", keys=["stage1"], target_macs=cheapest, **VGG) is None
    assert "11,858,624" in projectable("vgg11", keys=["stage1"], target_macs=cheapest - 1, **VGG)
    assert "unknown pruning key" in projectable("vgg11", keys=["layer1"], target_macs=cheapest, **VGG)


def test_bad_shapes_raise():
    for shape in ({"stage1": 1.5}, {"stage1": -0.1}, {"stage1": True}, {"*": 0.5, "stage1": 1.0}):
        with pytest.raises(UserError):
            project_to_budget("vgg11", shape=shape, target_macs=VGG_MACS // 2, **VGG)
    star = project_to_budget("vgg11", shape={"*": 1.0}, target_macs=VGG_MACS // 2, **VGG)
    assert star.macs <= VGG_MACS // 2 and set(star.ratios) == {"*"}
    # a subnormal relative value reads as 0 (hypothesis found 2.2e-311: its channel steps would
    # lie past the largest float); the other key carries the whole budget
    tiny = project_to_budget("vgg11", shape={"stage1": 1.0, "stage2": 2.2e-311},
                             target_macs=VGG_MACS - 10 * STAGE1_CHANNEL, **VGG)
    assert tiny.ratios["stage2"] == 0.0 and tiny.macs == VGG_MACS - 10 * STAGE1_CHANNEL


# ------------------------------------------------------------------ properties
def _check(arch: str, shape: dict[str, float], u: float, kw: dict) -> None:
    """Project onto a target a share ``u`` of the way from this shape's cheapest to the unpruned
    MACs (u < 0: below reach, u >= 1: no pruning) and check the guarantee from the definition."""
    shape = {k: r if r >= MIN_REL else 0.0 for k, r in shape.items()}  # the documented reading
    base = _macs(arch, {k: 0.0 for k in shape}, **kw)[1]
    cheapest = _macs(arch, {k: MAX_RATIO if r > 0 else 0.0 for k, r in shape.items()}, **kw)[1]
    target = math.floor(cheapest + u * (base - cheapest))
    event("below reach" if target < cheapest else "no pruning" if base <= target else "bisected")
    if target < cheapest:
        with pytest.raises(UserError, match=f"{cheapest:,} MACs"):
            project_to_budget(arch, shape=shape, target_macs=target, **kw)
        return
    p = project_to_budget(arch, shape=shape, target_macs=target, **kw)
    plan, macs = _macs(arch, p.ratios, **kw)
    assert p.ratios == {k: min(MAX_RATIO, p.scale * r) for k, r in shape.items()}
    assert macs == p.macs <= target
    if base <= target:
        assert p.scale == 0.0 and p.macs == base and p.over_scale is None
        return
    over_plan, over_macs = _macs(arch, {k: min(MAX_RATIO, p.over_scale * r) for k, r in shape.items()}, **kw)
    assert 0.0 <= p.over_scale < p.scale and over_macs == p.over_macs > target
    steps = {n: over_plan[n] - plan[n] for n in plan}
    assert set(steps.values()) <= {0, 1} and 1 in steps.values()  # one channel per layer, at most
    # less pruning than at over_scale (here: half its scale) is over the target too
    below = _macs(arch, {k: min(MAX_RATIO, p.over_scale / 2 * r) for k, r in shape.items()}, **kw)[1]
    assert below > target


REL = st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0))
SHARE = st.floats(-0.1, 1.1)
CHEAP = dict(num_classes=10, in_channels=1, width=1.0, input_shape=(1, 8, 8))
ARCHS = {"resnet20": ["layer1", "layer2", "layer3"], "resnet56": ["layer1", "layer2", "layer3"],
         "vgg11": [f"stage{i}" for i in range(1, 6)]}
# sometimes a layer key as well, which beats its stage key (an inner conv: no residual coupling)
EXTRA = {"resnet20": {"layer2.0.conv1": REL}, "resnet56": {"layer3.4.conv1": REL}, "vgg11": {}}


@pytest.mark.parametrize("arch", list(ARCHS))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_shapes_land_within_one_channel(arch, data):
    shape = data.draw(st.fixed_dictionaries({k: REL for k in ARCHS[arch]}, optional=EXTRA[arch]), label="shape")
    _check(arch, shape, data.draw(SHARE, label="u"), CHEAP)


def _students() -> list:
    """(space, student arch, widths on its grid, prune keys) for every student of every shipped space."""
    out = []
    for name in shipped_spaces():
        d = load_space(name).distributions
        w = d["student/width"]
        widths = [w.low + k * w.step for k in range(int(round((w.high - w.low) / w.step)) + 1)]
        keys = [n.split("/", 1)[1] for n, dist in d.items()
                if n.startswith("prune/") and isinstance(dist, FloatDistribution)]
        out += [pytest.param(name, arch, widths, keys, id=f"{name}:{arch}") for arch in d["student/arch"].choices]
    return out


@pytest.mark.parametrize("space, arch, widths, keys", _students())
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_shipped_spaces_project(space, arch, widths, keys, data):
    assert keys, space
    width = data.draw(st.sampled_from(widths), label="width")
    shape = data.draw(st.fixed_dictionaries({k: REL for k in keys}), label="shape")
    _check(arch, shape, data.draw(SHARE, label="u"),
           dict(num_classes=10, in_channels=3, width=width, input_shape=(3, 32, 32)))


# ------------------------------------------------------------------ candidates of the shipped spaces on budget
SHIPPED = ("resnet56_to_resnet", "vgg16_to_vgg", "resnet18_to_convtiny")


@pytest.fixture(scope="module")
def teachers():
    from autokd.search.budget import teacher_shape
    from autokd.space import load_space

    return {name: teacher_shape(load_space(name).teacher, (3, 32, 32), 10) for name in SHIPPED}


def _plan_and_macs(cand, teacher):
    from autokd.price import predict_student

    plan, cost = predict_student(cand, teacher)
    return plan, cost.macs


@settings(max_examples=30, deadline=None)
@given(space_name=st.sampled_from(SHIPPED), seed=st.integers(0, 10_000), share=st.floats(0.3, 1.0))
def test_bisection_lands_within_one_channel_per_layer_in_every_shipped_space(teachers, space_name, seed, share):
    """A random sample of each shipped space, its ratios read as a shape, put on share x 40 % of the
    teacher's MACs: the projected candidate fits exactly (its predicted MACs are the projection's), and
    the next plan with less pruning is over the target and keeps at most one more channel per layer."""
    from dataclasses import replace

    import optuna

    from autokd.candidate import Candidate
    from autokd.search.budget import project_candidate
    from autokd.space import load_space, suggest

    space, teacher = load_space(space_name), teachers[space_name]
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask(space.distributions)
    cand = suggest(trial, space, Candidate(epochs=2))
    target = int(share * 0.4 * teacher.macs)
    try:
        projected, proj, shape = project_candidate(cand, teacher, target)
    except UserError as e:  # only when even every ratio at the maximum is over the target
        assert "below the cheapest" in str(e)
        return
    plan, macs = _plan_and_macs(projected, teacher)
    assert macs == proj.macs <= target
    if proj.scale == 0.0:
        return
    over = replace(projected, prune={k: min(MAX_RATIO, proj.over_scale * v) for k, v in shape.items()})
    over_plan, over_macs = _plan_and_macs(over, teacher)
    assert over_macs == proj.over_macs > target
    assert all(0 <= over_plan[k] - plan[k] <= 1 for k in plan), (plan, over_plan)


def test_a_projected_student_costs_what_was_predicted_once_built():
    """One scratch and one inherited projected candidate, built and pruned for real on digits."""
    from autokd.candidate import Candidate
    from autokd.data import load_dataset
    from autokd.measure import count_macs
    from autokd.models import channel_plan, create_model
    from autokd.price import TeacherShape
    from autokd.search.budget import project_candidate
    from autokd.trial import TrialContext, TrialRun

    data = load_dataset("digits", seed=0)
    model = create_model("resnet32", num_classes=10, in_channels=1)
    teacher = TeacherShape("resnet32", count_macs(model, (1, 8, 8)), channel_plan(model), 1.0, 10, (1, 8, 8))
    for cand in (Candidate(student="resnet20", width=0.75, prune={"layer1": 0.2, "layer3": 0.6}, epochs=1),
                 Candidate(student="resnet20", init="teacher", width=0.9, prune={"layer1": 0.3, "layer2": 0.5, "layer3": 0.4}, epochs=1,
                           kd_alpha=0.0, beta=1.0)):
        projected, proj, _ = project_candidate(cand, teacher, int(0.3 * teacher.macs))
        run = TrialRun(projected, TrialContext(teacher=model.eval(), data=data))
        assert count_macs(run.student, (1, 8, 8)) == proj.macs <= int(0.3 * teacher.macs)


@pytest.mark.parametrize("space_name", SHIPPED)
def test_every_shipped_warm_start_lands_on_its_share_of_the_budget(teachers, space_name):
    """Each warm-start entry of each shipped space, the rest sampled, is a candidate that projects onto
    its budget/share of 40 % of the teacher's MACs (never grown: an unpruned student under its target
    keeps its size), so no warm start is ever rejected for cost."""
    import optuna

    from autokd.candidate import Candidate
    from autokd.search.budget import project_candidate
    from autokd.search.driver import enqueue_warm_start
    from autokd.space import load_space, suggest

    space, teacher = load_space(space_name), teachers[space_name]
    assert len(space.warm_start) >= 5
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    enqueue_warm_start(study, space)
    for name, entry in space.warm_start.items():
        trial = study.ask(space.distributions)
        assert {k: trial.params[k] for k in entry} == entry, name
        target = int(entry["budget/share"] * 0.4 * teacher.macs)
        projected, proj, _ = project_candidate(suggest(trial, space, Candidate(epochs=2)), teacher, target)
        assert _plan_and_macs(projected, teacher)[1] == proj.macs <= target, name
        study.tell(trial, 0.0)


def test_a_zero_in_a_shape_joins_when_the_other_layers_cannot_reach_the_target():
    """The rejected prune-only trial of 2026-12-02 (Fashion-MNIST, resnet20 teacher): resnet32 at width
    0.5, shape layer1 0.4 / layer2 0.15 / layer3 0, target 31 % of 40 % of the teacher's MACs. layer1 and
    layer2 at the maximum leave it over the target (4,175,708 MACs > 3,847,758), so layer3 and the
    unkeyed layers join at a tenth of layer2's share and the candidate lands within the target."""
    from autokd.candidate import Candidate
    from autokd.search.budget import project_candidate, teacher_shape

    teacher = teacher_shape("resnet20", (1, 28, 28), 10)
    cand = Candidate(student="resnet32", width=0.5, prune={"layer1": 0.4, "layer2": 0.15, "layer3": 0.0}, epochs=2)
    target = int(0.3100835098144733 * 0.4 * teacher.macs)
    projected, proj, shape = project_candidate(cand, teacher, target)
    assert shape["layer3"] == shape["*"] == pytest.approx(0.015)
    assert _plan_and_macs(projected, teacher)[1] == proj.macs <= target
    assert projected.prune["layer3"] > 0
