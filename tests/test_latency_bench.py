"""Table 4's predictor rows (benchmarks/latency_predictor.py): the summary on hand-made numbers, the
candidates drawn as a seeded random search draws them, and one tiny run of the part end to end.

Nothing here judges a latency: the end-to-end run times a few digits-sized networks for a handful of
rounds, and only the shape of what it writes is checked.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

from protocols import PROTOCOLS  # noqa: E402

import latency_predictor as lp  # noqa: E402

TINY = lp.Sizes(calibration_samples=2, calibration_rounds=2, calibration_archs=("resnet20",), candidates=2,
                teachers=())  # seconds: resnet20 on 1x8x8 digits


def test_summary_by_hand():
    """Predicted 1.0, 1.05, 1.3 ms against 1 ms each: errors 0, +5 % and +30 %; two of three within
    10 %, MAPE (0 + 5 + 30) / 3 = 11.67 %, median 5 %, the worst the third at +30 %: target not met."""
    s = lp.summary([1.0, 1.05, 1.3], [1.0, 1.0, 1.0])
    assert s["n"] == 3 and s["within_10pct"] == pytest.approx(2 / 3)
    assert s["mape"] == pytest.approx(0.35 / 3) and s["median_abs_error"] == pytest.approx(0.05)
    assert s["worst"] == {"index": 2, "rel_error": pytest.approx(0.30)}
    assert s["target"] == {"within": 0.10, "share": 0.95, "met": False}


def test_the_worst_case_is_the_largest_error_either_way_and_95_percent_meets_the_target():
    """Measured 2 ms, predicted 1.6 (-20 %) and 2.1 (+5 %): the worst is the one under, at -20 %."""
    s = lp.summary([1.6, 2.1], [2.0, 2.0])
    assert s["worst"]["index"] == 0 and s["worst"]["rel_error"] == pytest.approx(-0.2)
    assert s["within_10pct"] == 0.5
    assert lp.summary([1.0] * 19 + [2.0], [1.0] * 20)["target"]["met"] is True  # 19 of 20: exactly 95 %
    assert lp.summary([], [])["n"] == 0


def test_candidates_split_evenly_over_the_spaces():
    assert lp.split(200, 4) == [50, 50, 50, 50] and lp.split(200, 3) == [67, 67, 66] and lp.split(6, 1) == [6]
    assert lp.teachers_of(PROTOCOLS["cpu"], lp.sizes_of(PROTOCOLS["cpu"])) == ["resnet20", "resnet56", "convtiny", "vgg16"]
    assert lp.teachers_of(PROTOCOLS["full"], lp.sizes_of(PROTOCOLS["full"])) == ["resnet56", "convtiny", "vgg16"]  # its teacher counted once


def test_the_same_seed_draws_the_same_candidates_and_no_global_ranking_one():
    plan = lp.sampling_plan(PROTOCOLS["smoke"], "convtiny", seed=0)
    (a, counts), (b, _) = lp.draw(plan, 3, seed=0), lp.draw(plan, 3, seed=0)
    assert [d.candidate for d in a] == [d.candidate for d in b] and len(a) == 3
    assert counts["drawn"] == 3 + counts["rejected"] + counts["global"]
    assert all(not d.candidate.prune_method.startswith("global") for d in a)
    assert all(d.macs <= plan.budget.macs and d.plan for d in a)  # what a search would train, priced


def test_a_tiny_run_calibrates_into_the_results_folder_and_summarises_every_candidate(tmp_path):
    from make_tables import latency_predictor

    from autokd.latency import calibration_path

    d = lp.run(PROTOCOLS["smoke"], results_dir=tmp_path, sizes=TINY)
    r = d["results"]
    assert d["part"] == "latency_predictor" and d["protocol"] == "smoke"
    assert r["setting"] == {"runtime": "onnxruntime", "threads": 1, "batch": 1, "input_shape": [1, 8, 8], "device": "cpu"}
    assert len(r["rows"]) == r["summary"]["n"] == 2
    assert all(x["measured_ms"] > 0 and x["predicted_ms"] > 0 and x["iqr_ms"] >= 0 for x in r["rows"])
    assert r["rows"][0]["rel_error"] == pytest.approx(r["rows"][0]["predicted_ms"] / r["rows"][0]["measured_ms"] - 1)
    assert r["calibration"]["wall_s"] > 0 and r["calibration"]["effort"]["samples"] == 2
    written = tmp_path / "latency" / "smoke-onnxruntime-cpu-t1-b1-1x8x8.json"
    assert written.exists() and r["calibration"]["file"] == str(written)
    assert not calibration_path(lp.setting_of(PROTOCOLS["smoke"])).exists()  # the user's AUTOKD_HOME untouched
    text = "\n".join(latency_predictor(d))
    assert "| n | within ±10 % |" in text and "onnxruntime on cpu, 1 thread, batch 1, input 1x8x8" in text
