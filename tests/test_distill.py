"""Distill stage: golden KD value, per-pair loss contracts, pairings, schedules, the distiller's loss."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autokd.distill import (KD_ALPHA, PAIR_LOSSES, Distiller, TeacherCache, curriculum_groups_on, kd_logits,
                            make_pairs, parse_lambda, task_loss)
from autokd.distill.losses import ATLoss, AlignedLoss, VIDLoss, align_spatial, attention_map
from autokd.distill.pairing import check_lambdas, full_matrix
from autokd.distill.schedule import SCHEDULES, Phase
from autokd.errors import UserError
from autokd.registry import UnknownName
from autokd.teacher import seeded_model
from autokd.train import TrainConfig, fit


# ---------------------------------------------------------------- logits
def test_kd_golden_value_without_t_squared():
    s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert kd_logits(s, t, 1.0).item() == pytest.approx(math.tanh(0.5), abs=1e-6)
    assert kd_logits(s, t, 1.0).item() == pytest.approx(0.462117, abs=1e-6)
    assert kd_logits(t, t, 3.0).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_is_batch_mean_and_temperature_scales_logits():
    s, t = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert kd_logits(s, t, 1.0).item() == pytest.approx(math.tanh(0.5), abs=1e-6)  # mean, not sum
    assert kd_logits(2 * s, 2 * t, 2.0).item() == pytest.approx(math.tanh(0.5), abs=1e-6)


def test_task_loss_mixes_ce_and_t_squared_kd():
    g = torch.Generator().manual_seed(0)
    s, t, y = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 3, 0, 1])
    task, ce, kd = task_loss(s, t, y, 4.0)
    assert ce.item() == pytest.approx(F.cross_entropy(s, y).item())
    assert kd.item() == pytest.approx(kd_logits(s, t, 4.0).item())
    assert task.item() == pytest.approx((1 - KD_ALPHA) * ce.item() + KD_ALPHA * 16 * kd.item(), rel=1e-6)


# ---------------------------------------------------------------- per-pair losses
SHAPES = [((2, 24, 4, 4), (2, 16, 8, 8)), ((2, 32, 2, 2), (2, 8, 8, 8)), ((2, 8, 8, 8), (2, 32, 2, 2)),
          ((2, 16), (2, 8, 4, 4))]


@pytest.mark.parametrize("name", PAIR_LOSSES.names())
@pytest.mark.parametrize("s_shape,t_shape", SHAPES)
def test_every_pair_loss_bridges_channels_and_sizes(name, s_shape, t_shape):
    torch.manual_seed(0)
    s = torch.randn(*s_shape, requires_grad=True)
    t = torch.randn(*t_shape)
    loss_mod = PAIR_LOSSES.get(name)(s_shape[1], t_shape[1], teacher_sample=t)
    loss = loss_mod(s, t)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()
    if not (name == "at" and len(s_shape) == 2):  # a 1x1 attention map is the constant 1: no signal
        assert s.grad.abs().sum() > 0
    for p in loss_mod.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: a parameter got no gradient"
    assert (len(list(loss_mod.parameters())) > 0) == (name in {"vid", "fitnet"})


def test_align_spatial_pools_to_the_smaller_size():
    s, t = align_spatial(torch.ones(2, 3, 8, 4), torch.ones(2, 5, 4, 8))
    assert s.shape == (2, 3, 4, 4) and t.shape == (2, 5, 4, 4)
    s, t = align_spatial(torch.ones(2, 3), torch.ones(2, 5, 4, 4))
    assert s.shape == (2, 3, 1, 1) and t.shape == (2, 5, 1, 1)


def _fit_vid(s: torch.Tensor, t: torch.Tensor, steps: int = 300) -> tuple[float, float]:
    torch.manual_seed(0)
    vid = VIDLoss(s.shape[1], t.shape[1])
    start = vid(s, t).item()
    opt = torch.optim.Adam(vid.parameters(), lr=3e-2)
    for _ in range(steps):
        opt.zero_grad()
        vid(s, t).backward()
        opt.step()
    return start, vid(s, t).item()


def test_vid_loss_decreases_when_student_is_linear_in_teacher():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(64, 8, 4, 4, generator=g)
    mix = torch.randn(12, 8, generator=g)
    s = torch.einsum("oc,bchw->bohw", mix, t)  # student feature: a linear function of the teacher's
    start, end = _fit_vid(s, t)
    assert end < start - 1.0, (start, end)  # regressor and variance fitted: the NLL falls (seen: 0.96 -> -2.0)
    _, unrelated = _fit_vid(torch.randn(64, 12, 4, 4, generator=g), t)
    assert end < unrelated - 1.0, (end, unrelated)  # a student that carries no information cannot (seen: 0.48)


def test_attention_map_is_unit_and_at_zero_on_the_same_map():
    f = torch.randn(3, 7, 4, 4)
    assert torch.allclose(attention_map(f).norm(dim=1), torch.ones(3))
    assert ATLoss(7, 7)(f, 2 * f).item() == pytest.approx(0.0, abs=1e-6)  # scale-free
    assert 0.0 < ATLoss(7, 5)(f, torch.randn(3, 5, 8, 8)).item() <= 4.0  # 2 - 2 cos, per image


def test_aligned_loss_keeps_the_most_energetic_teacher_channels():
    t = torch.zeros(4, 6, 2, 2)
    t[:, 1], t[:, 4], t[:, 5] = 3.0, 5.0, 1.0
    loss = AlignedLoss(3, 6, teacher_sample=t)
    assert loss.teacher_channels.tolist() == [1, 4, 5]
    s = t[:, [1, 4, 5]].clone()
    assert loss(s, t).item() == 0.0
    assert AlignedLoss(8, 6).k == 6  # a wider student matches its first 6 channels


# ---------------------------------------------------------------- pairing
def test_make_pairs_kinds():
    assert make_pairs("all", 3, 2) == {f"t{i}->s{j}": 1.0 for i in (1, 2, 3) for j in (1, 2)}
    assert make_pairs("diag", 3, 3, weight=0.5) == {"t1->s1": 0.5, "t2->s2": 0.5, "t3->s3": 0.5}
    assert make_pairs("diag", 5, 3) == {"t1->s1": 1.0, "t2->s1": 1.0, "t3->s2": 1.0, "t4->s2": 1.0, "t5->s3": 1.0}
    assert make_pairs("diag", 3, 5) == {"t1->s2": 1.0, "t2->s3": 1.0, "t3->s5": 1.0}
    assert make_pairs("none", 3, 3) == {}
    # every student point to the teacher's deepest: S pairs, whatever T
    assert make_pairs("deepest", 3, 3, weight=0.4) == {"t3->s1": 0.4, "t3->s2": 0.4, "t3->s3": 0.4}
    assert make_pairs("deepest", 4, 3) == {"t4->s1": 1.0, "t4->s2": 1.0, "t4->s3": 1.0}
    with pytest.raises(UnknownName, match="all, diag, deepest, none"):
        make_pairs("every", 3, 3)


@pytest.mark.parametrize("text,want", [("t3:s2=0.8", ("t3->s2", 0.8)), ("t3->s2=0.8", ("t3->s2", 0.8)),
                                       (" T1 : S3 = 2 ", ("t1->s3", 2.0)), ("t2:s1", ("t2->s1", 1.0))])
def test_parse_lambda(text, want):
    assert parse_lambda(text, 3, 3) == want


@pytest.mark.parametrize("text", ["t3s2=0.8", "3:2=0.8", "t3:s2=abc", "t3:s2=-1", "t3:s2=nan", "t4:s1=1",
                                  "t0:s1=1", "t1:s9=1", ""])
def test_parse_lambda_rejects_in_one_line(text):
    with pytest.raises(UserError) as err:
        parse_lambda(text, 3, 3)
    assert "\n" not in str(err.value)


def test_check_lambdas_and_full_matrix():
    assert check_lambdas({"t1:s2": 0.5}, 3, 3) == {"t1->s2": 0.5}
    with pytest.raises(UserError, match="twice"):
        check_lambdas({"t1:s2": 0.5, "t1->s2": 0.1}, 3, 3)
    full = full_matrix({"t1->s2": 0.5}, 2, 2)
    assert full == {"t1->s1": 0.0, "t1->s2": 0.5, "t2->s1": 0.0, "t2->s2": 0.0}


# ---------------------------------------------------------------- schedules
def test_schedules():
    assert SCHEDULES.get("one-stage")(10, 0.3) == [Phase("distil", 0, 10, True)]
    assert SCHEDULES.get("two-stage")(10, 0.3) == [Phase("stabilise", 0, 3, False), Phase("distil", 3, 10, True)]
    assert SCHEDULES.get("two-stage")(5, 0.5) == [Phase("stabilise", 0, 3, False), Phase("distil", 3, 5, True)]
    assert SCHEDULES.get("two-stage")(4, 0.0) == [Phase("distil", 0, 4, True)]
    assert SCHEDULES.get("two-stage")(4, 1.0) == [Phase("stabilise", 0, 4, False)]


def test_curriculum_switches_groups_on_then_hands_over_to_the_task():
    on = [curriculum_groups_on(e, 3, 2, 10) for e in range(0, 11)]
    assert on == [0, 0, 1, 1, 2, 2, 3, 3, 0, 0, 0]  # 8 epochs, 4 slots of 2: groups 1, 1-2, 1-3, none


# ---------------------------------------------------------------- distiller
@pytest.fixture(scope="module")
def pair_models(digits):
    kw = dict(num_classes=digits.num_classes, in_channels=digits.in_channels)
    teacher = seeded_model("resnet20", 7, width=0.5, **kw).eval()
    return teacher, lambda: seeded_model("convverytiny", 11, width=0.5, **kw)


def _distiller(pair_models, digits, **kw):
    teacher, student = pair_models
    kw.setdefault("probe_x", digits.train_x[:64])
    return Distiller(student(), teacher, **kw)


def test_beta_one_is_exactly_the_task_loss(pair_models, digits):
    x, y = digits.train_x[:32], digits.train_y[:32]
    d1 = _distiller(pair_models, digits, lambdas=make_pairs("all", 3, 3), beta=1.0, temperature=3.0)
    assert len(d1.pairs) == 0 and d1.weights == {}  # beta = 1: nothing built
    total, logits = d1.loss(x, y)
    task, _, _ = task_loss(logits, pair_models[0](x), y, 3.0)
    assert total.item() == task.item()
    d_none = _distiller(pair_models, digits, lambdas={}, beta=0.3, temperature=3.0)
    assert d_none.loss(x, y)[0].item() == total.item()  # no pair on: L_task whatever beta


def test_beta_mixes_task_and_features(pair_models, digits):
    x, y = digits.train_x[:32], digits.train_y[:32]
    d = _distiller(pair_models, digits, lambdas={"t3->s2": 0.7, "t1->s1": 0.2}, beta=0.25)
    total, _ = d.loss(x, y)
    parts = d.epoch_parts()
    want = 0.25 * parts["task"] + 0.75 * (0.7 * parts["t3->s2"] + 0.2 * parts["t1->s1"])
    assert total.item() == pytest.approx(want, rel=1e-5)
    d.set_active(set())
    assert d.loss(x, y)[0].item() == pytest.approx(d.epoch_parts()["task"], rel=1e-6)


def test_zero_lambdas_cost_nothing_and_train_like_no_pairs(pair_models, digits):
    teacher, student = pair_models
    zero = {k: 0.0 for k in make_pairs("all", 3, 3)}
    runs = []
    for lambdas in (zero, make_pairs("none", 3, 3)):
        d = _distiller(pair_models, digits, lambdas=lambdas, cache_x=digits.train_x)
        assert len(d.pairs) == 0 and d.teacher_points == []
        x, y = digits.train_x[:16], digits.train_y[:16]
        first = d.loss(x, y)[0].item()
        fit(d.student, digits, TrainConfig(epochs=1, seed=3), loss_fn=d.loss,
            params=[*d.student.parameters(), *d.pair_parameters()])
        runs.append((first, {k: v.clone() for k, v in d.student.state_dict().items()}))
        assert all(not m._forward_hooks for m in d.student.modules())  # no hook left behind
        assert all(not m._forward_hooks for m in teacher.modules())
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


def test_distiller_never_holds_the_teacher_as_a_parameter(pair_models, digits):
    d = _distiller(pair_models, digits, lambdas=make_pairs("diag", 3, 3))
    teacher_ids = {id(p) for p in pair_models[0].parameters()}
    assert not teacher_ids & {id(p) for p in d.parameters()}
    assert not any(k.startswith("_teacher") for k in d.state_dict())
    assert set(d.pairs) == {"t1_s1", "t2_s2", "t3_s3"}


def test_regressor_init_is_seeded_not_global(pair_models, digits):
    torch.manual_seed(123)
    a = _distiller(pair_models, digits, lambdas=make_pairs("diag", 3, 3), seed=5)
    torch.manual_seed(456)
    b = _distiller(pair_models, digits, lambdas=make_pairs("diag", 3, 3), seed=5)
    sa, sb = a.pairs.state_dict(), b.pairs.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_teacher_cache_matches_live_outputs(pair_models, digits):
    d = _distiller(pair_models, digits, lambdas=make_pairs("diag", 3, 3), cache_x=digits.train_x)
    assert isinstance(d.cache, TeacherCache)
    x = digits.train_x[[5, 900, 17, 5]]
    logits, feats = d.cache.lookup(x)
    live_logits, live_feats = d._run_teacher(x)
    assert torch.allclose(logits, live_logits, atol=1e-5)
    assert feats.keys() == live_feats.keys() and all(torch.allclose(feats[n], live_feats[n], atol=1e-5) for n in feats)
    assert d.cache.lookup(digits.val_x[:4]) is None  # an image it never saw: the teacher runs live
    assert (d.cache.hits, d.cache.misses) == (1, 1)


def test_kd_alpha_zero_with_beta_one_is_plain_cross_entropy(pair_models, digits):
    """No distillation at all: the loss of a batch is the student's cross-entropy on the labels."""
    teacher, make_student = pair_models
    student = make_student()
    x, y = digits.train_x[:32], digits.train_y[:32]
    d = Distiller(student, teacher, lambdas={"t3->s3": 1.0}, beta=1.0, alpha=0.0, probe_x=x)
    total, logits = d.loss(x, y)
    assert torch.allclose(total, F.cross_entropy(logits, y))


def test_labels_only_never_runs_the_teacher(pair_models, digits):
    teacher, make_student = pair_models
    x, y = digits.train_x[:32], digits.train_y[:32]
    d = Distiller(make_student(), teacher, lambdas={}, beta=1.0, alpha=0.0, probe_x=x)
    calls = []
    handle = teacher.register_forward_hook(lambda *_: calls.append(1))
    try:
        d.loss(x, y)
    finally:
        handle.remove()
    assert calls == []
