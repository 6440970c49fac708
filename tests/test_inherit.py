"""Students that inherit the teacher: exact copies at full depth, hand-derived block maps,
plans that rebuild the same network (also after pruning), exact MACs before training, and BN
recalibration that moves running statistics only."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from autokd.errors import UserError
from autokd.inherit import (BLOCK_RULES, FAMILIES, block_map, check_inheritable, inherit_student,
                            inherited_plan, recalibrate_bn)
from autokd.measure import count_macs, count_params
from autokd.models import MODELS, channel_plan, create_model
from autokd.prune import predict_cost, prune_model
from autokd.teacher import train_model
from autokd.train import TrainConfig, evaluate

SHAPE = (1, 8, 8)  # tiny CPU input; every registered model ends in a global pool
SMALL = {"resnet18": 0.25, "resnet110": 0.25, "vgg11": 0.25, "vgg13": 0.25, "vgg16": 0.25, "vgg19": 0.25}
SHALLOWER = [("resnet56", "resnet20"), ("resnet32", "resnet20"), ("vgg16", "vgg11"), ("vgg19", "vgg13")]


def _teacher(arch: str, seed: int = 0, width: float | None = None) -> nn.Module:
    """A model with random weights *and* random BN affine/running statistics, in eval mode, so
    eval logits depend on every tensor that has to be copied."""
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=7, in_channels=1, width=SMALL.get(arch, 1.0) if width is None else width)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.num_batches_tracked.fill_(seed + 3)
    return model.eval()


def _x(seed: int = 1) -> torch.Tensor:
    return torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(seed))


def _rebuilt(model: nn.Module) -> nn.Module:
    """``model`` rebuilt from its plan alone (fresh weights), then loaded with its state."""
    again = create_model(model.arch, **model.build_args, plan=channel_plan(model))
    again.load_state_dict(model.state_dict(), strict=True)
    return again.eval()


def _assert_copies(student: nn.Module, teacher: nn.Module, mapping: dict[str, str]) -> None:
    """Every student tensor equals the teacher tensor under its mapped prefix."""
    t = teacher.state_dict()
    for key, value in student.state_dict().items():
        head = max((p for p in mapping if key == p or key.startswith(p + ".")), key=len)
        assert torch.equal(value, t[mapping[head] + key[len(head):]]), key


# ------------------------------------------------------------------ full depth
@pytest.mark.parametrize("name", MODELS.names())
def test_full_depth_student_is_the_teacher(name):
    teacher = _teacher(name)
    student = inherit_student(teacher)
    assert student.arch == name and student.build_args == teacher.build_args
    assert not student.training  # the teacher's mode
    t, s = teacher.state_dict(), student.state_dict()
    assert list(s) == list(t) and all(torch.equal(s[k], t[k]) for k in t)
    x = _x()
    with torch.no_grad():
        assert torch.equal(student(x), teacher(x))


def test_student_shares_no_storage_and_leaves_global_rng_alone():
    teacher = _teacher("resnet20")
    before = torch.random.get_rng_state()
    student = inherit_student(teacher)
    assert torch.equal(torch.random.get_rng_state(), before)
    with torch.no_grad():
        student.conv1.weight.add_(1.0)
        student.bn1.running_mean.add_(1.0)
    assert not torch.equal(student.conv1.weight, teacher.conv1.weight)
    assert not torch.equal(student.bn1.running_mean, teacher.bn1.running_mean)


# ------------------------------------------------------------------ block maps, by hand
def _resnet_map(blocks: list[int], stages: int = 3) -> dict[str, str]:
    """Stem, then layerS.j <- layerS.blocks[j] in every stage, then fc."""
    mapping = {"conv1": "conv1", "bn1": "bn1"}
    for s in range(1, stages + 1):
        mapping.update({f"layer{s}.{j}": f"layer{s}.{b}" for j, b in enumerate(blocks)})
    return {**mapping, "fc": "fc"}


@pytest.mark.parametrize("rule,blocks", [
    # resnet56: 9 blocks a stage, resnet20: 3. Block 0 kept; 2 of the remaining 1..8 (m=8, k=2):
    ("even", [0, 4, 8]),    # round(1*8/2)=4, round(2*8/2)=8
    ("first", [0, 1, 2]),
    ("last", [0, 7, 8]),
])
def test_block_map_resnet56_to_resnet20(rule, blocks):
    assert block_map("resnet56", "resnet20", rule) == _resnet_map(blocks)


def test_even_rounds_half_up():
    # resnet110 -> resnet56: m=17, k=8; j*17/8 = 2.125 4.25 6.375 8.5 10.625 12.75 14.875 17
    assert block_map("resnet110", "resnet56") == _resnet_map([0, 2, 4, 6, 9, 11, 13, 15, 17])


def test_block_map_vgg16_to_vgg11():
    # vgg16 features: convs 0 3 | pool 6 | 7 10 | 13 | 14 17 20 | 23 | 24 27 30 | 33 | 34 37 40 | 43
    # vgg11 features: conv  0   | pool 3 | 4    | 7  | 8 11     | 14 | 15 18    | 21 | 22 25    | 28
    # even: stages of 1 keep the first conv; stages 3..5 keep the first and the last (m=2, k=1).
    convs = {0: 0, 4: 7, 8: 14, 11: 20, 15: 24, 18: 30, 22: 34, 25: 40}
    expected = {}
    for s, t in convs.items():  # each conv moves with its BN, the next module
        expected.update({f"features.{s}": f"features.{t}", f"features.{s + 1}": f"features.{t + 1}"})
    assert block_map("vgg16", "vgg11") == {**expected, "classifier": "classifier"}


@pytest.mark.parametrize("arch", ["resnet18", "convtiny", "convverytiny", "resnet20"])
def test_block_map_at_full_depth_is_identity(arch):
    mapping = block_map(arch, arch)
    assert mapping and all(k == v for k, v in mapping.items())


# ------------------------------------------------------------------ shallower students
@pytest.mark.parametrize("teacher_arch,student_arch", SHALLOWER)
@pytest.mark.parametrize("rule", BLOCK_RULES)
def test_shallower_student_holds_the_chosen_blocks(teacher_arch, student_arch, rule):
    teacher = _teacher(teacher_arch)
    student = inherit_student(teacher, student_arch, rule=rule)
    assert student.arch == student_arch and student.build_args == teacher.build_args
    _assert_copies(student, teacher, block_map(teacher_arch, student_arch, rule))
    again = _rebuilt(student)
    assert [p.shape for p in again.parameters()] == [p.shape for p in student.parameters()]
    with torch.no_grad():
        assert torch.equal(again(_x()), student(_x()))


def test_resnet56_to_resnet20_tensors_by_name():
    teacher = _teacher("resnet56")
    student = inherit_student(teacher, "resnet20")  # even: blocks 0, 4, 8 of each stage
    assert torch.equal(student.layer2[1].conv1.weight, teacher.layer2[4].conv1.weight)
    assert torch.equal(student.layer3[2].bn2.running_var, teacher.layer3[8].bn2.running_var)
    assert torch.equal(student.layer2[0].shortcut[0].weight, teacher.layer2[0].shortcut[0].weight)
    assert torch.equal(student.fc.bias, teacher.fc.bias)


@pytest.mark.parametrize("teacher_arch,student_arch", [("resnet56", "resnet20"), ("vgg16", "vgg11")])
def test_pruned_student_and_student_of_pruned_teacher_rebuild(teacher_arch, student_arch):
    teacher = _teacher(teacher_arch)
    student = prune_model(inherit_student(teacher, student_arch), 0.5, criterion="l1", input_shape=SHAPE)
    with torch.no_grad():
        assert torch.equal(_rebuilt(student)(_x()), student(_x()))
    pruned_teacher = prune_model(_teacher(teacher_arch), 0.5, criterion="l1", input_shape=SHAPE)
    inherited = inherit_student(pruned_teacher, student_arch)
    _assert_copies(inherited, pruned_teacher, block_map(teacher_arch, student_arch))
    with torch.no_grad():
        assert torch.equal(_rebuilt(inherited)(_x()), inherited(_x()))


def test_vgg_teacher_pruned_unevenly_cannot_drop_convs():
    # vgg16 stage 3 = features.14, 17, 20 (64 channels each at width 0.25). Only 14 pruned to 32:
    # the even vgg11 keeps 14 and 20, but 20 reads the 64 channels of 17.
    plan = {**channel_plan(create_model("vgg16", width=0.25)), "features.14": 32}
    with pytest.raises(UserError, match="different widths") as err:
        inherited_plan("vgg16", plan, "vgg11")
    assert "\n" not in str(err.value)
    assert inherited_plan("vgg16", plan, "vgg16") == plan  # full depth always fits


# ------------------------------------------------------------------ cost before training
def _pairs() -> list[tuple[str, str]]:
    pairs = []
    for family in FAMILIES.values():
        for i, teacher in enumerate(family.members):
            pairs += [(teacher, student) for student in family.members[:i + 1]]
    return pairs


@pytest.mark.parametrize("teacher_arch,student_arch", _pairs())
def test_inherited_plan_of_unpruned_teacher_is_the_default_plan(teacher_arch, student_arch):
    width = 0.3  # round(16*0.3)=5, round(32*0.3)=10: widths that are not a power of two
    with torch.device("meta"):
        teacher_plan = channel_plan(create_model(teacher_arch, width=width))
        student_plan = channel_plan(create_model(student_arch, width=width))
    assert inherited_plan(teacher_arch, teacher_plan, student_arch) == student_plan


_RESNETS = FAMILIES["cifar-resnet"].members[:4]  # resnet20..56: resnet110 is slow to trace


@settings(max_examples=5, deadline=None)
@given(student_arch=st.sampled_from(_RESNETS), rule=st.sampled_from(BLOCK_RULES),
       width=st.sampled_from([0.25, 0.5]),
       ratios=st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75]), min_size=3, max_size=3))
def test_predict_cost_is_exact_for_inherited_students(student_arch, rule, width, ratios):
    teacher = _teacher("resnet56", width=width)
    spec = {f"layer{s}": r for s, r in enumerate(ratios, start=1)}
    student = prune_model(inherit_student(teacher, student_arch, rule=rule), spec, criterion="l1",
                          input_shape=SHAPE)
    plan, cost = predict_cost(student_arch, num_classes=7, in_channels=1, width=width, ratios_spec=spec,
                              input_shape=SHAPE)
    assert plan == channel_plan(student)
    assert (cost.macs, cost.params) == (count_macs(student, SHAPE), count_params(student))


# ------------------------------------------------------------------ BN recalibration
def test_recalibration_is_the_average_of_batch_statistics():
    # 4 images of one constant each, 0 2 4 6, 2x2 pixels; batches [0, 2] and [4, 6].
    # Batch means 1 and 5 -> running_mean 3. Each batch: 4 pixels at +-1 around its mean, 8
    # values, unbiased variance 8/7 -> running_var 8/7 (all 16 values at once would give 84/15).
    bn = nn.BatchNorm2d(1, momentum=0.3)
    images = torch.tensor([0.0, 2.0, 4.0, 6.0]).view(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()
    recalibrate_bn(bn.eval(), images, batch_size=2)
    assert bn.running_mean.item() == pytest.approx(3.0)
    assert bn.running_var.item() == pytest.approx(8 / 7)
    assert bn.num_batches_tracked.item() == 2 and bn.momentum == 0.3 and not bn.training


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_recalibration_changes_running_statistics_only(mode):
    model = _teacher("resnet20")
    model.bn1.momentum = 0.3
    model.train(mode == "train")
    model.bn1.train(mode != "train")  # a module in the other mode keeps it
    modes = [m.training for m in model.modules()]
    params = {k: v.clone() for k, v in model.named_parameters()}
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    images = torch.randn(300, *SHAPE, generator=torch.Generator().manual_seed(2))
    assert recalibrate_bn(model, images) is model
    assert all(torch.equal(v, params[k]) for k, v in model.named_parameters())
    assert all(not torch.equal(v, stats[k]) for k, v in model.state_dict().items() if "running" in k)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.num_batches_tracked.item() == 3 for m in bns)  # 300 images: batches of 100, 100, 100
    assert model.bn1.momentum == 0.3 and all(m.momentum == 0.1 for m in bns[1:])
    assert [m.training for m in model.modules()] == modes


def test_recalibration_batches_never_hold_one_image():
    # vgg11 on 8x8 reaches 1x1 maps, where a train-mode BN needs 2 images. 5 images at
    # batch_size 2 split into 2 batches (3 + 2), not 3 (2 + 2 + 1).
    model = _teacher("vgg11")
    recalibrate_bn(model, torch.randn(5, *SHAPE), batch_size=2)
    assert model.features[1].num_batches_tracked.item() == 2


def test_recalibration_repairs_corrupted_statistics(digits):
    """convverytiny trained 2 epochs on digits (seed 0: val 0.972), every BN's running mean
    shifted by N(0, 1) and its variance x4: val accuracy falls to 0.076; recalibrate_bn on 512
    training images brings it back to 0.979. Asserted: >= 0.3 below, then within 0.05 of it."""
    model, _ = train_model("convverytiny", digits, TrainConfig(epochs=2, seed=0))
    trained = evaluate(model, digits.val_x, digits.val_y)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.add_(torch.randn(bn.running_mean.shape, generator=g))
            bn.running_var.mul_(4.0)
    corrupted = evaluate(model, digits.val_x, digits.val_y)
    recalibrate_bn(model, digits.train_x[:512])
    repaired = evaluate(model, digits.val_x, digits.val_y)
    assert corrupted < trained - 0.3
    assert repaired >= trained - 0.05


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("teacher_arch,student_arch,words", [
    ("resnet56", "vgg11", "not of teacher resnet56's family"),
    ("resnet20", "resnet56", "deeper than teacher resnet20"),
    ("vgg11", "vgg13", "deeper than teacher vgg11"),
    ("convtiny", "convverytiny", "not of teacher convtiny's family (convtiny)"),
    ("resnet56", "resnet57", "unknown student architecture"),
])
def test_refusals_are_one_line(teacher_arch, student_arch, words):
    with pytest.raises(UserError, match=r"^--init teacher: .*" + words.replace("(", r"\(").replace(")", r"\)")) as err:
        check_inheritable(teacher_arch, student_arch)
    assert "\n" not in str(err.value)


def test_unknown_rule_lists_the_rules():
    assert BLOCK_RULES == ("even", "first", "last")
    with pytest.raises(UserError, match="choose one of: even, first, last$"):
        block_map("resnet56", "resnet20", rule="random")


def test_recalibration_recovers_a_pruned_model(digits):
    """convtiny trained 2 epochs on digits (seed 0: val 0.965), pruned 50 % l1: every conv
    after a pruned one lost half its inputs, so its BN's statistics are stale, val 0.556;
    recalibrate_bn on 512 training images: 0.868. Asserted: a gain of at least 0.2."""
    model, _ = train_model("convtiny", digits, TrainConfig(epochs=2, seed=0))
    prune_model(model, 0.5, criterion="l1", input_shape=SHAPE)
    stale = evaluate(model, digits.val_x, digits.val_y)
    recalibrate_bn(model, digits.train_x[:512])
    assert evaluate(model, digits.val_x, digits.val_y) >= stale + 0.2
