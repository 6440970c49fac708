"""Prune stage: physical pruning of every registered model, exact cost before training,
hand-derived channel counts and MACs, one-line spec errors, and PDD channel gates."""
from __future__ import annotations


import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from autokd.errors import UserError
from autokd.measure import count_macs, count_params, measure
from autokd.models import MODELS, channel_plan, create_model
from autokd.prune import (ChannelGates, copy_into, n_pruned, predict_cost, prunable_groups, prune_model,
                          resolve_ratios)

SHAPE = (3, 8, 8)  # tiny CPU input; every registered model ends in a global pool
BIG = {"resnet18", "resnet110", "vgg11", "vgg13", "vgg16", "vgg19"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny inputs: one intra-op thread is fastest, and two threads on a 2-core machine that is
    busy with anything else spin-wait (measured: resnet56 forward 2.2 s vs 0.02 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _width(arch: str) -> float:
    return 0.25 if arch in BIG else 1.0


def _build(arch: str, seed: int = 0, width: float | None = None) -> nn.Module:
    """A model with random weights *and* random BN statistics, so eval logits depend on every
    channel and criteria disagree (BN scale vs filter L1)."""
    torch.manual_seed(seed)
    model = create_model(arch, width=_width(arch) if width is None else width)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _predict(model: nn.Module, spec, **kw):
    return predict_cost(model.arch, num_classes=model.build_args["num_classes"],
                        in_channels=model.build_args["in_channels"], width=model.build_args["width"],
                        ratios_spec=spec, input_shape=SHAPE, **kw)


# ---------------------------------------------------------------- counting rule
@pytest.mark.parametrize("channels,ratio,expected", [
    (16, 0.2, 3),    # 3.2 -> 3
    (64, 0.6, 38),   # 38.4 -> 38
    (5, 0.5, 3),     # 2.5 -> 3: round half up, not Python's half-to-even
    (16, 0.5, 8),
    (16, 0.95, 15),  # 15.2 -> 15, keeps 1
    (10, 0.95, 9),   # 9.5 -> 10, clamped: keeps 1
    (1, 0.95, 0),    # a 1-channel layer is never emptied
    (7, 0.0, 0),
])
def test_n_pruned_rule(channels, ratio, expected):
    assert n_pruned(channels, ratio) == expected


# ---------------------------------------------------------------- contract over every model
@pytest.mark.parametrize("arch", MODELS.names())
def test_every_model_prunes_rebuilds_and_reloads(arch):
    model = _build(arch)
    before = measure(model, SHAPE)
    pruned = prune_model(model, 0.5, criterion="l1", input_shape=SHAPE)
    assert pruned is model and pruned.arch == arch and pruned.classifier_name and pruned.points
    assert _no_hooks(pruned) and all(p.grad is None for p in pruned.parameters())
    after = measure(pruned, SHAPE)
    assert after.macs < before.macs and after.params < before.params
    assert _predict(create_model(arch, width=_width(arch)), 0.5) == (channel_plan(pruned), after)

    rebuilt = create_model(arch, **pruned.build_args, plan=channel_plan(pruned))
    assert _shapes(rebuilt) == _shapes(pruned)
    copy_into(pruned, rebuilt.eval())
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), pruned(x), atol=1e-6)


@pytest.mark.parametrize("arch", ["resnet20", "convtiny"])
def test_pruning_is_deterministic_for_the_same_weights(arch):
    a, b = _build(arch, seed=3), _build(arch, seed=3)
    prune_model(a, 0.4, input_shape=SHAPE)
    prune_model(b, 0.4, input_shape=SHAPE)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------- exact cost before training
def _spec_keys(arch: str) -> list[str]:
    """Stage keys plus layer keys that never name two members of one residual group."""
    keys = prunable_groups(create_model(arch, width=_width(arch)))
    return [k for k in keys if "shortcut" not in k and not (k.endswith("conv2") and ".0." not in k)]


def _ratio_specs(arch: str):
    ratio = st.floats(0.0, 0.95, allow_nan=False)
    return st.one_of(ratio, st.dictionaries(st.sampled_from(_spec_keys(arch)), ratio, max_size=6))


@pytest.mark.parametrize("arch", ["resnet20", "vgg11"])
def test_predicted_cost_equals_pruned_cost(arch):
    @settings(max_examples=10, deadline=None, derandomize=True)
    @given(spec=_ratio_specs(arch), seed=st.integers(0, 2**16))
    def check(spec, seed):
        plan, cost = _predict(create_model(arch, width=_width(arch)), spec)
        for criterion in ("bn", "l1"):
            model = _build(arch, seed=seed)
            with torch.no_grad():  # random weights: the counts must not depend on them
                for p in model.parameters():
                    p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
            prune_model(model, spec, criterion=criterion, input_shape=SHAPE)
            assert channel_plan(model) == plan
            assert count_macs(model, SHAPE) == cost.macs and count_params(model) == cost.params

    check()


def test_predicted_cost_of_unpruned_resnet56_is_the_published_figure():
    _, cost = predict_cost("resnet56", num_classes=10, in_channels=3, width=1.0, ratios_spec=0.0,
                           input_shape=(3, 32, 32))
    assert cost.macs == 125_747_840  # 125.75 M with 1x1 projection shortcuts (METHODS.md)


# ---------------------------------------------------------------- hand-derived counts
def test_per_stage_spec_on_resnet20_gives_hand_derived_channels():
    model = _build("resnet20")
    spec = {"layer1": 0.2, "layer3": 0.6}
    ratios = resolve_ratios(model, spec)
    assert ratios["conv1"] == 0.2  # the stem shares layer1's residual channels
    assert ratios["layer2.0.shortcut.0"] == 0.0 and ratios["layer3.0.shortcut.0"] == 0.6
    # Rule: removed = floor(r * c + 0.5).
    # layer1: c = 16, 0.2 * 16 = 3.2 -> 3 removed -> 13 (stem, every conv1 and conv2).
    # layer2: untouched, 32.   layer3: c = 64, 0.6 * 64 = 38.4 -> 38 removed -> 26.
    expected = {"conv1": 13}
    for s, c in ((1, 13), (2, 32), (3, 26)):
        for b in range(3):
            expected[f"layer{s}.{b}.conv1"] = expected[f"layer{s}.{b}.conv2"] = c
    expected["layer2.0.shortcut.0"], expected["layer3.0.shortcut.0"] = 32, 26
    prune_model(model, spec, input_shape=SHAPE)
    assert channel_plan(model) == expected
    assert _predict(create_model("resnet20"), spec)[0] == expected


def test_round_to_rounds_kept_channels():
    model = _build("resnet20")
    # ratio 0.3, round_to 8: 16 -> keep 11 -> 8; 32 -> keep 22 -> 24; 64 -> keep 45 -> 48.
    prune_model(model, 0.3, input_shape=SHAPE, round_to=8)
    plan = channel_plan(model)
    assert {plan["conv1"], plan["layer2.1.conv1"], plan["layer3.2.conv2"]} == {8, 24, 48}
    assert plan == _predict(create_model("resnet20"), 0.3, round_to=8)[0]


def test_convtiny_half_macs_by_hand():
    model = _build("convtiny")
    prune_model(model, 0.5, input_shape=SHAPE)
    # convtiny 32/64/128 + fc 256 -> 16/32/64 + fc 128; conv3x3 pad 1, 2x2 pool after each conv.
    # block1  3->16  on 8x8: 16 * 3  * 9 * 64 = 27,648
    # block2 16->32  on 4x4: 32 * 16 * 9 * 16 = 73,728
    # block3 32->64  on 2x2: 64 * 32 * 9 * 4  = 73,728
    # fc1    64->128:        64 * 128         =  8,192
    # fc2   128->10:         128 * 10         =  1,280      total 184,576
    assert count_macs(model, SHAPE) == 27_648 + 73_728 + 73_728 + 8_192 + 1_280
    # params: convs 432 + 4,608 + 18,432; BN 2 * (16 + 32 + 64); fc1 8,192 + 128; fc2 1,280 + 10
    assert count_params(model) == 23_472 + 224 + 8_320 + 1_290


# ---------------------------------------------------------------- spec keys and errors
def test_prunable_group_keys_per_family():
    r = prunable_groups(create_model("resnet20"))
    assert r[:3] == ["layer1", "layer2", "layer3"] and {"conv1", "layer2.0.shortcut.0", "layer3.2.conv1"} <= set(r)
    v = prunable_groups(create_model("vgg11", width=0.25))
    assert v[:5] == [f"stage{i}" for i in range(1, 6)] and "features.0" in v
    c = prunable_groups(create_model("convtiny"))
    assert c == ["block1", "block2", "block3", "block1.0", "block2.0", "block3.0", "fc1"]  # fc2: classifier


@pytest.mark.parametrize("spec,needle", [
    ({"layer9": 0.5}, "valid keys: layer1, layer2, layer3, conv1"),
    ({"layer1": 1.2}, "[0, 0.95]"),
    (1.2, "[0, 0.95]"),
    (-0.1, "[0, 0.95]"),
    ({"layer1": True}, "[0, 0.95]"),
    ({"layer2.1.conv2": 0.3, "layer2.2.conv2": 0.5}, "share their channels"),
])
def test_bad_spec_is_one_line_user_error(spec, needle):
    with pytest.raises(UserError) as err:
        resolve_ratios(create_model("resnet20"), spec)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_layer_key_overrides_stage_key_and_is_idempotent():
    model = create_model("resnet20")
    ratios = resolve_ratios(model, {"layer2": 0.5, "layer2.1.conv1": 0.1})
    assert ratios["layer2.0.conv1"] == 0.5 and ratios["layer2.1.conv1"] == 0.1 and ratios["conv1"] == 0.0
    assert resolve_ratios(model, ratios) == ratios


# ---------------------------------------------------------------- criteria
def test_taylor_criterion_uses_loss_fn():
    model = _build("resnet20", seed=5)
    x = torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 10
    calls = []

    def loss_fn(m: nn.Module) -> torch.Tensor:
        calls.append(1)
        return F.cross_entropy(m(x), y)

    prune_model(model, 0.5, criterion="taylor", input_shape=SHAPE, loss_fn=loss_fn)
    assert calls == [1] and channel_plan(model) == _predict(create_model("resnet20"), 0.5)[0]
    assert all(p.grad is None for p in model.parameters()) and _no_hooks(model)
    with pytest.raises(ValueError, match="loss_fn"):
        prune_model(_build("resnet20"), 0.5, criterion="taylor", input_shape=SHAPE)


def test_criteria_pick_different_channels():
    kept = {}
    for criterion in ("l1", "bn"):
        model = _build("convtiny", seed=2)
        prune_model(model, 0.5, criterion=criterion, input_shape=SHAPE)
        kept[criterion] = model.block1[1].weight.detach().clone()  # surviving BN scales
    assert kept["l1"].shape == kept["bn"].shape and not torch.equal(kept["l1"], kept["bn"])


# ---------------------------------------------------------------- PDD channel gates
def test_gates_train_toward_ratio_and_finalize_matches_thresholded_model():
    model = _build("resnet20", seed=7)
    gates = ChannelGates(model, 0.5, SHAPE)
    assert not any("logit" in k for k in model.state_dict())
    x = torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(0))
    target = torch.randn(16, 10, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(gates.parameters(), lr=0.2)
    start = gates.sparsity_loss().item()
    model.train()
    for _ in range(60):
        loss = gates.sparsity_loss() + 0.01 * F.mse_loss(model(x), target)  # dummy task loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert gates.sparsity_loss().item() < 0.1 * start
    for i, g in enumerate(gates.gate_values().values()):  # polarised: cut gates low, kept high
        low = torch.sort(g).values
        n = gates.n_remove[i]
        assert low[:n].max() < 0.1 < 0.5 < low[n:].min()

    before = channel_plan(model)
    model.eval()
    gates.hard = True
    with torch.no_grad():
        expected = model(x)
    gates.finalize(model)
    assert _no_hooks(model)
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-5)
    after = channel_plan(model)
    for name, c in before.items():  # exactly round-half-up(0.5 * c) removed per group
        assert after[name] == c - n_pruned(c, 0.5)


@pytest.mark.parametrize("arch", MODELS.names())
def test_gates_finalize_on_every_model(arch):
    model = _build(arch, seed=11)
    gates = ChannelGates(model, 0.5, SHAPE)
    with torch.no_grad():  # stand-in for trained gates: spread-out values
        for p in gates.logits:
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 3)
    gates.hard = True
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
    gates.finalize(model)
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-5)
    assert channel_plan(model) == _predict(create_model(arch, width=_width(arch)), 0.5)[0]
    rebuilt = create_model(arch, **model.build_args, plan=channel_plan(model))
    assert _shapes(rebuilt) == _shapes(model) and _no_hooks(model)


def test_gates_share_one_vector_per_residual_group():
    model = _build("resnet20")
    gates = ChannelGates(model, {"layer2": 0.5}, SHAPE)
    stream = next(g for g in gates.groups if "layer2.0.shortcut.0" in g.members)
    assert set(stream.members) == {"layer2.0.conv2", "layer2.0.shortcut.0", "layer2.1.conv2", "layer2.2.conv2"}
    assert stream.gated == ("layer2.0.bn2", "layer2.0.shortcut.1", "layer2.1.bn2", "layer2.2.bn2")
    assert [gates.n_remove[i] for i, g in enumerate(gates.groups) if g.members[0] == "conv1"] == [0]
    gates.remove()
    assert _no_hooks(model)
