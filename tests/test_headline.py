"""The headline table's arithmetic and the protocol's convergence rule, on hand-made numbers."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import exported  # noqa: E402
import record  # noqa: E402
from protocols import CPU, SMOKE  # noqa: E402


def test_plateau_points_is_the_gain_over_the_last_fifth_of_the_epochs():
    # 10 epochs: the last 20 % are epochs 9 and 10, measured from the end of epoch 8 (0.88 -> 0.89)
    history = [{"val_accuracy": v} for v in (0.5, 0.6, 0.7, 0.8, 0.85, 0.86, 0.87, 0.88, 0.885, 0.89)]
    assert record.plateau_points(history) == pytest.approx(1.0)
    # 30 epochs: the last 6, from epoch 24
    flat = [{"val_accuracy": 0.9}] * 24 + [{"val_accuracy": 0.9 + 0.001 * k} for k in range(1, 7)]
    assert record.plateau_points(flat) == pytest.approx(0.6)
    assert record.plateau_points([{"val_accuracy": 0.5}]) is None


def _unit(kind: str, seed: int, acc: float, macs: int = 100) -> dict:
    return {"kind": kind, "seed": seed, "test_accuracy": acc, "macs": macs, "params": 10, "onnx_latency_ms": 0.5,
            "test_accuracy_before_finetune": acc - 0.01}


def test_summary_pairs_by_seed_and_judges_each_target():
    teacher = {"test_accuracy": 0.90, "macs": 1000}
    auto = {0: 0.905, 1: 0.900, 2: 0.910}
    tp = {0: 0.895, 1: 0.894, 2: 0.902}          # autokd - tp = +1.0, +0.6, +0.8 points
    tp_kd = {0: 0.906, 1: 0.899, 2: 0.910}       # -0.1, +0.1, 0.0 -> mean 0
    units = [_unit("autokd", s, a, macs=400) for s, a in auto.items()]
    units += [_unit("tp", s, a) for s, a in tp.items()] + [_unit("tp-kd", s, a) for s, a in tp_kd.items()]
    units += [_unit(k, s, 0.95) for k in ("tp-compute", "tp-budget", "alone") for s in range(3)]
    res = exported.summarize(teacher, units, budget_share=0.4)

    vs = res["vs_torch_pruning_equal_macs_points"]
    assert vs["values"] == pytest.approx([1.0, 0.6, 0.8]) and vs["mean"] == pytest.approx(0.8)
    assert vs["se"] == pytest.approx(0.2 / 3 ** 0.5)  # std of (1.0, 0.6, 0.8) is 0.2
    assert res["vs_torch_pruning_kd_equal_macs_points"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert res["gap_to_teacher_points"]["mean"] == pytest.approx(-0.5)  # 90 - mean(90.5, 90, 91)
    t = res["targets"]
    assert t["vs_torch_pruning_equal_macs"] is True        # 0.8 >= 0.5 and 0.8 > 2 x 0.115
    assert t["vs_torch_pruning_kd_equal_macs"] is True     # >= 0
    assert t["vs_torch_pruning_equal_compute"] is False    # tp-compute is 4.5 points better
    assert t["within_budget"] is True and t["at_least_teacher_within_budget"] is True


def test_the_equal_macs_target_needs_two_standard_errors():
    teacher = {"test_accuracy": 0.90, "macs": 1000}
    units = [_unit("autokd", s, a, macs=401) for s, a in enumerate((0.91, 0.90, 0.92))]
    units += [_unit("tp", s, a) for s, a in enumerate((0.90, 0.90, 0.90))]  # +1, 0, +2: mean 1, se 0.577
    res = exported.summarize(teacher, units, budget_share=0.4)
    assert res["vs_torch_pruning_equal_macs_points"]["mean"] == pytest.approx(1.0)
    assert res["targets"]["vs_torch_pruning_equal_macs"] is False  # 1.0 < 2 x 0.577
    assert res["targets"]["within_budget"] is False and res["targets"]["at_least_teacher_within_budget"] is False


def test_an_unconverged_teacher_is_trained_again_on_a_longer_schedule(tmp_path, monkeypatch):
    gains = {6: 3.0, 12: 1.4, 24: 0.4}
    trained = []

    def fake_train(p, epochs, folder, say):
        trained.append(epochs)
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"")
        return {"plateau_points": gains[epochs], "epochs": epochs}

    monkeypatch.setattr(record, "_train_teacher", fake_train)
    p = replace(CPU, teacher_epochs=6, teacher_max_epochs=48)
    folder = record.teacher_bundle(p, tmp_path, say=lambda m: None)
    assert trained == [6, 12, 24] and (folder / "model.safetensors").exists()
    assert record.teacher_bundle(p, tmp_path, say=lambda m: None) == folder and trained == [6, 12, 24]

    never = replace(CPU, name="never", teacher_epochs=6, teacher_max_epochs=12)
    gains.update({6: 5.0, 12: 5.0})
    with pytest.raises(SystemExit, match="still gained 5.00 points"):
        record.teacher_bundle(never, tmp_path, say=lambda m: None)


def test_protocols_state_their_convergence_rule_and_fine_tune():
    assert CPU.teacher_plateau_points == 1.0 and CPU.teacher_epochs >= 30 and CPU.finetune_epochs == 8
    assert SMOKE.teacher_plateau_points is None  # numbers that mean nothing need no converged teacher


@pytest.mark.slow
def test_torch_pruning_meets_an_exported_students_macs_within_one_percent_and_distils():
    import torch

    import torch_pruning_baseline as tpb
    from autokd.data import load_dataset
    from autokd.measure import count_macs
    from autokd.models import create_model

    torch.manual_seed(0)
    teacher = create_model("resnet20", num_classes=10, in_channels=1).eval()
    shape = (1, 8, 8)
    target = int(0.18 * count_macs(teacher, shape))  # an exported student's share, not a round one
    (model, macs), = tpb.prune_to(teacher, shape, [target], steps=tpb.FINE_STEPS)
    assert target * (1 - exported.EQUAL_MACS_TOLERANCE) <= macs <= target == int(target)
    assert count_macs(model, shape) == macs
    data = load_dataset("digits", seed=0, train_subset=64)
    before = [p.detach().clone() for p in model.parameters()]
    tpb.finetune(model, data, 1, seed=0, device="cpu", teacher=teacher, alpha=0.5, temperature=4.0)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_kendall_tau_b_by_hand():
    from ranking import kendall_tau_b

    assert kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # pairs of (1,2,3) vs (1,3,2): (1,2) concordant, (1,3) concordant, (2,3) discordant -> (2 - 1) / 3
    assert kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # a tie in b: pairs (1,2) tie, (1,3) +, (2,3) + -> 2 / sqrt(3 * 2)
    assert kendall_tau_b([1, 2, 3], [5, 5, 6]) == pytest.approx(2 / 6 ** 0.5)
    assert kendall_tau_b([1], [1]) is None and kendall_tau_b([1, 1], [2, 3]) is None


def test_the_searchs_compute_in_fine_tune_epochs(monkeypatch):
    """20 epoch-equivalents on 3,000-image trials are 5 epochs on 12,000 images; with no fine-tune
    subset (all of digits' 1,294 training images) and 200-image trials, 3.6 are 1 (ceil of 0.56)."""
    from types import SimpleNamespace

    from autokd.search import store

    monkeypatch.setattr(store, "load", lambda name: name)
    monkeypatch.setattr(exported, "_data", lambda d, s, n: SimpleNamespace(train_y=[0] * (n or 1294)))
    monkeypatch.setattr(store, "compute_spent", lambda study: 20.0)
    assert exported.search_epochs_on(CPU, 0) == 5
    monkeypatch.setattr(store, "compute_spent", lambda study: 3.6)
    assert exported.search_epochs_on(SMOKE, 0) == 1


def test_a_rows_result_is_kept_and_a_rerun_of_the_same_settings_reuses_it(tmp_path, monkeypatch):
    import json

    from autokd.bundle import BadBundle

    for name in ("AUTOKD_STUDIES", "RAY_ADDRESS"):  # run_unit isolates its process: restored after the test
        monkeypatch.delenv(name, raising=False)

    key = {"settings": json.loads(json.dumps(SMOKE.as_dict())), "target_macs": 123, "extra_epochs": 2,
           "format": exported.UNIT_FORMAT}
    unit = {"kind": "tp", "seed": 0, "test_accuracy": 0.5}
    done = tmp_path / "exported" / "units" / "smoke-tp-s0.json"
    done.parent.mkdir(parents=True)
    done.write_text(json.dumps({**key, "unit": unit}))
    done.with_suffix(".onnx").write_bytes(b"the row's model, timed by the parent")
    assert exported.run_unit(SMOKE, "tp", 0, "no-teacher-needed", str(tmp_path), 123, 2) == unit
    with pytest.raises(BadBundle):  # other settings: trained again (here: there is no teacher to prune)
        exported.run_unit(SMOKE, "tp", 0, str(tmp_path / "missing"), str(tmp_path), 124, 2)
    done.with_suffix(".onnx").unlink()
    with pytest.raises(BadBundle):  # a row without its model cannot be timed: trained again
        exported.run_unit(SMOKE, "tp", 0, str(tmp_path / "missing"), str(tmp_path), 123, 2)
    old = {k: v for k, v in key.items() if k != "format"}  # timed in its worker, beside other rows' training
    done.write_text(json.dumps({**old, "unit": unit}))
    done.with_suffix(".onnx").write_bytes(b"")
    with pytest.raises(BadBundle):
        exported.run_unit(SMOKE, "tp", 0, str(tmp_path / "missing"), str(tmp_path), 123, 2)


def test_the_rows_are_timed_from_their_onnx_one_after_another(tmp_path):
    import torch

    from autokd.export import write_onnx
    from autokd.models import create_model

    shape = (1, 8, 8)
    paths = {}
    for name, width in (("wide", 1.0), ("narrow", 0.25)):
        paths[name] = tmp_path / f"{name}.onnx"
        write_onnx(create_model("resnet20", num_classes=10, in_channels=1, width=width).eval(),
                   torch.zeros(1, *shape), paths[name])
    ms = exported.time_idle(SMOKE, paths, shape)
    assert set(ms) == {"wide", "narrow"} and all(v > 0 for v in ms.values())
