"""Latency: the measuring protocol on a fake clock, the predictor on hand-made tables, its refusals,
the command line, and one real (quick) calibration end to end. No timing figure is asserted."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch.nn as nn
from typer.testing import CliRunner

from autokd.calibrate import Sample, fit
from autokd.cli import app
from autokd.errors import UserError
from autokd.latency import (BLOCK_ALIGN, Calibration, Coefficients, OpLoad, blocked, calibration_path,
                            load_calibration, op_loads, plan_latency_ms, predict_latency_ms, save_calibration)
from autokd.models import channel_plan, create_model
from autokd.timing import Setting, machine, measure_latency, quartiles, time_interleaved

runner = CliRunner()
SETTING = Setting(input_shape=(1, 4, 4))
# convverytiny narrowed to 2/3/4 channels and a 5-wide hidden layer, on one 1x4x4 image
TINY_PLAN = {"block1.0": 2, "block2.0": 3, "block3.0": 4, "fc1": 5}


def _one_line_exit_2(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def _table(ops: dict[str, Coefficients], per_inference_ms: float = 0.0, setting: Setting = SETTING,
           block: int = 0) -> Calibration:
    return Calibration(setting, machine(setting), per_inference_ms, ops, block=block)


# ------------------------------------------------------------------ loads, from shapes alone
def test_loads_of_a_tiny_network_by_hand():
    # conv 1->2 on 4x4: 2*16*9 = 288 MACs, 16 in + 32 out elements, 18 weights; pool to 2x2
    # conv 2->3 on 2x2: 3*4*18 = 216 MACs, 8 + 12 elements, 54 weights; pool to 1x1
    # conv 3->4 on 1x1: 4*27 = 108 MACs, 3 + 4 elements, 108 weights; no pool (the map is 1x1)
    # fc1 4->5: 20 MACs, 4 + 5 elements; fc2 5->10: 50 MACs, 5 + 10 elements
    # and each convolution's MACs once more under its output resolution: 288 at 4, 216 at 2, 108 at 1
    loads = op_loads("convverytiny", TINY_PLAN, num_classes=10, input_shape=(1, 4, 4))
    assert loads["conv3x3s1"] == OpLoad(calls=3, macs=288 + 216 + 108, elems=48 + 20 + 7, weights=18 + 54 + 108)
    assert (loads["conv@4"], loads["conv@2"], loads["conv@1"]) == (OpLoad(macs=288), OpLoad(macs=216), OpLoad(macs=108))
    assert loads["linear"] == OpLoad(calls=2, macs=70, elems=24, weights=70)
    assert loads["max_pool2d"] == OpLoad(calls=2, macs=0, elems=(16 * 2 + 4 * 2) + (4 * 3 + 1 * 3), weights=0)
    assert loads["native_batch_norm"].calls == 3 and loads["relu"].calls == 4 and loads["mean"].calls == 1


def test_blocked_loads_of_a_tiny_network_by_hand():
    # block 2: conv 1->2 (1 input channel, under one block): blocked, 2 output channels a whole block:
    # 288 MACs; reads: 16 input elements x 1 channel x 9 taps x 1 pass (2 channels <= 4 blocks of 2) = 144.
    # conv 2->3: 2 input channels, a multiple of BLOCK_ALIGN? no (4): not blocked, plain 216 MACs.
    # conv 3->4: 3 input channels, neither under a block of 2 nor a multiple of 4: plain, 108 MACs.
    # Its ReLU follows the blocked conv and batch norm: a blocked kind; the others stay plain.
    loads = op_loads("convverytiny", TINY_PLAN, num_classes=10, input_shape=(1, 4, 4), block=2)
    assert loads["conv3x3s1b"] == OpLoad(calls=1, macs=288, elems=48, weights=18, reads=144)
    assert loads["conv3x3s1"] == OpLoad(calls=2, macs=216 + 108, elems=20 + 7, weights=54 + 108)
    assert loads["relub"].calls == 1 and loads["relu"].calls == 3
    assert (loads["convb@4"], loads["conv@2"]) == (OpLoad(macs=288), OpLoad(macs=216))


def test_a_blocked_convolution_computes_whole_blocks():
    # block 8, conv 12 -> 12 on 2x2 (12 input channels: a multiple of 4, so blocked): both padded to 16,
    # 16 * 16 * 9 * 4 = 9,216 MACs (not 12 * 12 * 9 * 4 = 5,184); reads: 4 * 16 * 9 * 1 pass = 576
    plan = {"block1.0": 12, "block2.0": 12, "block3.0": 12, "fc1": 5}
    loads = op_loads("convverytiny", plan, num_classes=10, input_shape=(1, 4, 4), block=8)
    second = loads["convb@2"]  # conv 12 -> 12 on the 2x2 map, the only convolution there
    assert second == OpLoad(macs=16 * 16 * 9 * 4)
    assert blocked(12, 8) and blocked(3, 8) and not blocked(13, 8) and not blocked(12, 0)
    assert BLOCK_ALIGN == 4


def test_loads_count_the_same_macs_as_the_cost_unit():
    from autokd.measure import count_macs

    model = create_model("resnet20", in_channels=1, width=0.25)
    loads = op_loads("resnet20", channel_plan(model), num_classes=10, input_shape=(1, 8, 8))
    assert sum(v.macs for v in loads.values() if v.calls) == count_macs(model, (1, 8, 8))  # unblocked: no padding
    assert sum(v.macs for k, v in loads.items() if k.startswith("conv@")) == count_macs(model, (1, 8, 8)) - 16 * 10
    blocked_loads = op_loads("resnet20", channel_plan(model), num_classes=10, input_shape=(1, 8, 8), block=8)
    assert {"conv3x3s1b", "conv3x3s2b", "conv1x1s2b", "addb", "relub"} <= set(blocked_loads)  # 4, 8, 16 channels


# ------------------------------------------------------------------ the predictor on hand-made tables
def test_a_two_layer_sum_by_hand():
    # Conv2d(3, 8, 3, padding=1) on 8x8: 13,824 MACs; Linear 30 -> 20: 600 weights.
    # 0.05 per inference + conv (0.01 per call + 100 ms/MMAC * 0.013824) + linear (0.002 + 50 ms/Mweight * 0.0006)
    # = 0.05 + 0.01 + 1.3824 + 0.002 + 0.03 = 1.4744 ms
    table = _table({"conv3x3s1": Coefficients(per_call=0.01, per_mmac=100.0),
                    "linear": Coefficients(per_call=0.002, per_mweight=50.0)}, per_inference_ms=0.05)
    loads = {"conv3x3s1": OpLoad(1, 13_824, 3 * 64 + 8 * 64, 216), "linear": OpLoad(1, 600, 50, 600)}
    assert table.predict_ms(loads) == pytest.approx(1.4744)
    # a resolution the table has no price for adds nothing; one it prices adds its MACs' share:
    # 2 ms/MMAC * 0.013824 = 0.027648
    assert table.predict_ms({**loads, "conv@8": OpLoad(macs=13_824)}) == pytest.approx(1.4744)
    priced = _table({**table.ops, "conv@8": Coefficients(per_mmac=2.0)}, per_inference_ms=0.05)
    assert priced.predict_ms({**loads, "conv@8": OpLoad(macs=13_824)}) == pytest.approx(1.4744 + 0.027648)


def test_a_whole_plan_priced_by_hand():
    # loads of test_loads_of_a_tiny_network_by_hand, the aligned conv priced like the others:
    # 0.2 per inference + conv 3 * 0.1 + 612 MACs at 1000 ms/MMAC
    # (0.612) + linear 2 * 0.05 + pool 2 * 0.02 + 55 elements at 1000 ms/Melem (0.055) + batch norm 3 * 0.01
    # + relu 4 * 0.01 + mean 1 * 0.01 = 0.2 + 0.912 + 0.1 + 0.095 + 0.03 + 0.04 + 0.01 = 1.387 ms
    small = Coefficients(per_call=0.01)
    conv = Coefficients(per_call=0.1, per_mmac=1000.0)
    table = _table({"conv3x3s1": conv, "linear": Coefficients(per_call=0.05),
                    "max_pool2d": Coefficients(per_call=0.02, per_melem=1000.0),
                    "native_batch_norm": small, "relu": small, "mean": small}, per_inference_ms=0.2)
    assert plan_latency_ms(table, "convverytiny", TINY_PLAN, num_classes=10) == pytest.approx(1.387)


def test_an_op_the_table_does_not_price_is_refused_in_one_line():
    table = _table({"linear": Coefficients(per_call=0.05)})
    with pytest.raises(UserError, match="no price for .*conv3x3s1") as e:
        plan_latency_ms(table, "convverytiny", TINY_PLAN, num_classes=10)
    assert "\n" not in str(e.value) and "autokd latency calibrate" in str(e.value)


POSITIVE = Coefficients(per_call=0.01, per_mmac=2.0, per_melem=3.0, per_mweight=4.0)


@pytest.mark.parametrize("arch", ["convtiny", "resnet20", "vgg11"])
def test_more_channels_in_one_layer_never_predict_faster(arch):
    kinds = op_loads(arch, channel_plan(create_model(arch, in_channels=1, width=0.25)), num_classes=10,
                     input_shape=(1, 8, 8))
    table = _table({k: POSITIVE for k in kinds}, setting=Setting(input_shape=(1, 8, 8)))
    plan = channel_plan(create_model(arch, in_channels=1, width=0.25))
    free = [n for n in plan if not arch.startswith("resnet") or n.endswith(".conv1")]  # a block's inner conv: the
    # rest of a ResNet (stem, conv2, shortcut) shares its stage's residual width
    base = plan_latency_ms(table, arch, plan, num_classes=10)
    for name in free:  # BLOCK_ALIGN more channels: the next convolution stays in its layout (its kernel path)
        assert plan_latency_ms(table, arch, {**plan, name: plan[name] + BLOCK_ALIGN}, num_classes=10) > base, name


def test_the_fit_recovers_a_hand_made_table_with_no_negative_price():
    """Medians made by a known table: the fit predicts them back, and every coefficient is >= 0."""
    truth = _table({"conv3x3s1": Coefficients(per_call=0.02, per_mmac=0.3), "conv@4": Coefficients(per_mmac=0.1),
                    "conv3x3s1b": Coefficients(per_call=0.01, per_mmac=0.15, per_mread=0.2),
                    "linear": Coefficients(per_call=0.01), "relub": Coefficients(per_call=0.001),
                    "max_pool2d": Coefficients(per_melem=5.0), "native_batch_norm": Coefficients(per_call=0.005),
                    "relu": Coefficients(per_call=0.004), "mean": Coefficients(per_call=0.003)}, per_inference_ms=0.05)
    samples = []
    for width in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5):
        for arch in ("convtiny", "convverytiny"):
            plan = channel_plan(create_model(arch, in_channels=1, width=width))
            loads = op_loads(arch, plan, num_classes=10, input_shape=(1, 4, 4), block=8)
            samples.append(Sample(arch, plan, loads, truth.predict_ms(loads), 0.0))
    per_inference, ops = fit(samples)
    fitted = _table(ops, per_inference)
    assert per_inference >= 0 and all(v >= 0 for c in ops.values() for v in vars(c).values())
    for s in samples:
        assert fitted.predict_ms(s.loads) == pytest.approx(s.median_ms, rel=1e-3)


# ------------------------------------------------------------------ refusals
def _saved(tmp_path, setting: Setting = SETTING, **changes) -> tuple[Calibration, object]:
    cal = replace(_table({"conv3x3s1": POSITIVE}, setting=setting), **changes)
    return cal, save_calibration(cal, tmp_path / "cal.json")


def test_a_calibration_from_another_machine_is_refused_in_one_line(tmp_path):
    cal, path = _saved(tmp_path)
    _, other = _saved(tmp_path, machine={**cal.machine, "cpu": "Some Other CPU 9000"})
    with pytest.raises(UserError, match="another machine") as e:
        load_calibration(SETTING, other)
    assert "\n" not in str(e.value) and "Some Other CPU 9000" in str(e.value)


@pytest.mark.parametrize("other", [Setting(runtime="torch", input_shape=(1, 4, 4)), Setting(threads=2, input_shape=(1, 4, 4)),
                                   Setting(batch=8, input_shape=(1, 4, 4)), Setting(input_shape=(3, 32, 32))])
def test_a_calibration_for_another_setting_is_refused_in_one_line(tmp_path, other):
    _, path = _saved(tmp_path)
    with pytest.raises(UserError, match=f"not {other.label}") as e:
        load_calibration(other, path)
    assert "\n" not in str(e.value) and "autokd latency calibrate" in str(e.value)


def test_another_runtime_version_is_another_machine(tmp_path):
    cal, _ = _saved(tmp_path)
    _, path = _saved(tmp_path, machine={**cal.machine, "runtime_version": "onnxruntime 0.1"})
    with pytest.raises(UserError, match="runtime_version"):
        load_calibration(SETTING, path)


def test_no_calibration_yet_names_the_command_that_makes_one():
    with pytest.raises(UserError, match="autokd latency calibrate --runtime onnxruntime --threads 1 --batch 1 --input 1x4x4"):
        load_calibration(SETTING)


def test_a_damaged_or_foreign_file_is_a_user_error_not_a_traceback(tmp_path):
    path = calibration_path(SETTING)
    path.parent.mkdir(parents=True)
    for text in ("{not json", json.dumps({"format": 99}), json.dumps([1, 2])):
        path.write_text(text)
        with pytest.raises(UserError, match="cannot be read"):
            load_calibration(SETTING)


def test_a_candidate_on_other_images_is_refused():
    from autokd.candidate import Candidate
    from autokd.price import TeacherShape

    teacher = TeacherShape("resnet20", 0, {}, 1.0, 10, (3, 32, 32))
    with pytest.raises(UserError, match="input 1x4x4.*3x32x32"):
        predict_latency_ms(Candidate(student="convverytiny"), teacher, _table({}))


def test_a_candidate_is_priced_from_its_plan():
    from autokd.candidate import Candidate
    from autokd.price import TeacherShape

    teacher = TeacherShape("resnet20", 0, {}, 1.0, 10, (1, 4, 4))
    table = _table({k: POSITIVE for k in ("conv3x3s1", "linear", "max_pool2d", "native_batch_norm", "relu", "mean")})
    half, full = (predict_latency_ms(Candidate(student="convverytiny", width=w), teacher, table) for w in (0.5, 1.0))
    assert 0 < half < full
    pruned = predict_latency_ms(Candidate(student="convverytiny", prune={"*": 0.5}), teacher, table)
    assert half <= pruned < full


# ------------------------------------------------------------------ the measuring protocol, on a fake clock
class FakeClock:
    def __init__(self) -> None:
        self.now, self.log = 0.0, []

    def __call__(self) -> float:
        return self.now

    def work(self, name: str, ms: float):
        def fn() -> None:
            self.log.append(name)
            self.now += ms / 1000
        return fn


def test_rounds_alternate_between_models_and_fast_ones_are_run_several_times_a_sample():
    clock = FakeClock()
    fns = [clock.work("a", 0.25), clock.work("b", 2.0)]
    measured = time_interleaved(fns, rounds=4, warmup=2, min_sample_ms=1.0, seed=1, clock=clock)
    (a_times, a_number), (b_times, b_number) = measured
    assert (a_number, b_number) == (4, 1)  # 4 x 0.25 ms reaches 1 ms; 2 ms alone does
    assert a_times == pytest.approx([0.25] * 4) and b_times == pytest.approx([2.0] * 4)
    timed = clock.log[4:]  # after 2 warm-up calls each
    rounds = [timed[i:i + 5] for i in range(0, len(timed), 5)]  # a round: 4 calls of a, 1 of b
    assert len(rounds) == 4 and all(sorted(r) == ["a"] * 4 + ["b"] for r in rounds)


def test_quartiles_by_hand():
    assert quartiles([5.0, 1.0, 3.0, 2.0, 4.0]) == (2.0, 3.0, 4.0)
    assert quartiles([7.0]) == (7.0, 7.0, 7.0)


def test_every_figure_carries_its_setting_and_machine():
    setting = Setting(runtime="torch", input_shape=(1, 4, 4))
    (t,) = measure_latency([nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))], setting,
                           rounds=3, warmup=1, min_sample_ms=0.01)
    assert t.setting == setting and t.rounds == 3 and t.q1_ms <= t.median_ms <= t.q3_ms
    assert t.machine["cpu"] and t.machine["runtime_version"].startswith("torch ")
    assert t.as_dict()["setting"]["input_shape"] == [1, 4, 4]


# ------------------------------------------------------------------ the command line
@pytest.mark.parametrize("args,needle", [
    (["--runtime", "tflite"], "onnxruntime, torch"),
    (["--threads", "0"], "--threads"),
    (["--batch", "0"], "--batch"),
    (["--input", "1x0x28"], "CxHxW"),
    (["--input", "28x28"], "CxHxW"),
    (["--dataset", "nope"], "unknown dataset"),
    (["--runtime", "onnxruntime", "--device", "cuda"], "torch runtime"),
    (["--threads", "many"], "--threads"),
])
def test_bad_calibrate_input_is_one_line_exit_2_and_nothing_measured(tmp_path, args, needle, monkeypatch):
    import autokd.cli.latency as cli

    monkeypatch.setattr(cli, "calibrate", lambda *a, **k: pytest.fail("measured despite bad input"))
    line = _one_line_exit_2(runner.invoke(app, ["latency", "calibrate", *args]))
    assert line.startswith("error: ") and needle in line, line
    assert not calibration_path(SETTING).parent.exists()


def test_dataset_gives_the_input_shape(monkeypatch):
    import autokd.cli.latency as cli

    seen = []

    def fake(setting, effort, **_):
        seen.append(setting)
        raise UserError("stopped before measuring")

    monkeypatch.setattr(cli, "calibrate", fake)
    result = runner.invoke(app, ["latency", "calibrate", "--dataset", "cifar10", "--runtime", "torch"])
    assert result.exit_code == 2 and "stopped before measuring" in result.output
    assert seen == [Setting(runtime="torch", input_shape=(3, 32, 32))]


def test_a_quick_calibration_runs_end_to_end_and_loads_back():
    result = runner.invoke(app, ["latency", "calibrate", "--quick", "--input", "1x4x4"])
    assert result.exit_code == 0, result.output
    path = calibration_path(SETTING)
    assert str(path) in result.output.replace("\n", "") and not list(path.parent.glob(".*tmp*"))
    cal = load_calibration(SETTING)
    assert cal.setting == SETTING and cal.fit["seconds"] > 0 and len(cal.fit["samples"]) == 4
    from autokd.timing import nchwc_block

    assert cal.block == nchwc_block("onnxruntime")  # the runtime's block here, kept with the calibration
    assert (f"{cal.block}-channel blocks" if cal.block else "blocked convolutions: none") in result.output
    assert plan_latency_ms(cal, "convverytiny", TINY_PLAN, num_classes=10) > 0


# ------------------------------------------------------------------ the blocked layout, against the runtime itself
def test_the_blocked_rule_is_the_one_onnx_runtime_applies_here():
    """Which convolutions ONNX Runtime rewrites into its blocked form, read from the graphs it optimises on
    this machine, is what :func:`autokd.latency.blocked` says at the block the runtime reports."""
    from autokd.timing import _runs_blocked, nchwc_block

    block = nchwc_block("onnxruntime")
    assert block in (0, 8, 16) and nchwc_block("torch") == 0 and nchwc_block("onnxruntime", "cuda") == 0
    for in_channels in (1, 3, 4, 7, 8, 9, 12, 13, 16, 19, 24):
        assert blocked(in_channels, block) == _runs_blocked(in_channels), in_channels
