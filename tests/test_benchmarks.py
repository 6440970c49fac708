"""The benchmarks end to end: the smoke protocol (every part writes its JSON, make_tables writes the
page) and the gpu protocol's dry run (benchmarks/gpu_protocol.sh --dry-run on this CPU).

The smoke protocol (benchmarks/protocols.py: digits, 2 trials of 1 epoch, n = 1) proves the
pipeline behind BENCHMARKS.md runs; its numbers mean nothing and are not checked, only the shape of
what each part writes. Run as a subprocess, like a user would, so Ray and the process pools start
clean. Table 1 runs two of its five arms (joint and random: the ratio's numerator and denominator)
and Torch-Pruning's; the other arms differ only in their space file, which is loaded and checked
here, and the dry run runs all five.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
PARTS = ("search_quality", "claims", "overheads", "latency", "latency_predictor", "latency_search", "exported",
         "ranking")
ENVELOPE = {"part", "protocol", "command", "date", "machine", "versions", "git_revision", "git_uncommitted",
            "settings", "wall_s", "results"}


def _run(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


@pytest.fixture(scope="module")
def protocol_runs(tmp_path_factory) -> dict:
    """The two end-to-end runs, started side by side, each in its own folder: the smoke protocol
    (``run.py all``) and the gpu protocol's dry run. Each is a chain of small searches whose Ray and
    worker start-ups leave a CPU idle about half of the time, so together they take about 200 s on
    2 cores where one after the other they take 230-250 s. Returns once both have exited; a run
    that failed fails the test that reads it, with the end of its log."""
    smoke, dry = tmp_path_factory.mktemp("smoke"), tmp_path_factory.mktemp("gpu-dry")
    runs = {
        "smoke": (smoke, [sys.executable, str(BENCH / "run.py"), "all", "--protocol", "smoke", "--results", str(smoke),
                          "--workers", "2", "--arms", "joint", "random", "torch-pruning"], 600),
        "gpu-dry": (dry, ["bash", "benchmarks/gpu_protocol.sh", "--dry-run", "--results", str(dry)], 1200),
    }
    env = {**os.environ, "PY": sys.executable}
    before = sorted(p.name for p in (BENCH / "results").iterdir())
    with contextlib.ExitStack() as logs:
        procs = {name: subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=logs.enter_context((folder / "log.txt").open("w")),
                                        stderr=subprocess.STDOUT, start_new_session=True)
                 for name, (folder, cmd, _) in runs.items()}
        t0 = time.monotonic()
        for name, proc in procs.items():
            try:
                proc.wait(timeout=max(1.0, runs[name][2] - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the run and every process it started (pools, Ray)
                proc.wait()
    return {"results_before": before, **{name: (folder, procs[name].returncode) for name, (folder, _, _) in runs.items()}}


def _finished(runs: dict, name: str) -> Path:
    folder, rc = runs[name]
    assert rc == 0, (folder / "log.txt").read_text()[-4000:]
    return folder


def test_derived_spaces_load():
    from autokd.space import load_space

    for path in sorted((BENCH / "spaces").glob("*.yaml")):
        space = load_space(path)
        assert space.distributions, path
    prune_only = load_space(BENCH / "spaces" / "cpu_prune_only.yaml")
    assert prune_only.fixed["kd/beta"] == 1.0 and not any(k.startswith("kd/lambda") for k in prune_only.distributions)
    distill_only = load_space(BENCH / "spaces" / "cpu_distill_only.yaml")
    assert not any(k.startswith("prune/") for k in distill_only.distributions)


def test_the_variants_change_one_setting_and_keep_the_cpu_teacher(tmp_path):
    sys.path.insert(0, str(BENCH))
    import yaml
    from protocols import PROTOCOLS, parts_of
    from record import teacher_folder

    cpu, wide = PROTOCOLS["cpu"], PROTOCOLS["cpu-wide-band"]
    differ = {k for k, v in wide.as_dict().items() if cpu.as_dict()[k] != v}
    assert differ == {"name", "reduced", "spaces"} and parts_of("cpu-wide-band") == ("search",)
    assert teacher_folder(wide, tmp_path) == teacher_folder(cpu, tmp_path)  # distils from the same bundle
    a, b = (yaml.safe_load((BENCH / "spaces" / n).read_text()) for n in ("cpu_joint.yaml", "cpu_joint_wide_band.yaml"))
    assert {k for k in a["params"] if a["params"][k] != b["params"][k]} == {"budget/share"}
    assert a["warm_start"] == b["warm_start"]
    assert b["params"]["budget/share"]["attributes"] == {"low": 0.05, "high": 1.0, "step": None, "log": True}
    more = PROTOCOLS["cpu-compute-60"]
    assert {k for k, v in more.as_dict().items() if cpu.as_dict()[k] != v} == {"name", "reduced", "trials"}
    assert teacher_folder(more, tmp_path) == teacher_folder(cpu, tmp_path) and parts_of("cpu-compute-60") == ("search",)
    longer = PROTOCOLS["cpu-finetune-30"]
    assert {k for k, v in longer.as_dict().items() if cpu.as_dict()[k] != v} == {"name", "reduced", "finetune_epochs"}
    assert longer.finetune_epochs == cpu.teacher_epochs and parts_of("cpu-finetune-30") == ("exported",)


def test_a_variant_without_a_search_exports_its_base_protocols_studies_and_trains_only_its_rows():
    sys.path.insert(0, str(BENCH))
    import exported
    from protocols import PROTOCOLS

    longer, wide = PROTOCOLS["cpu-finetune-30"], PROTOCOLS["cpu-wide-band"]
    assert exported.study_for(longer, 1) == "cpu-joint-s1"      # cpu's search, fine-tuned longer
    assert exported.study_for(wide, 1) == "cpu-wide-band-joint-s1"  # a variant's own search
    assert exported.rows_of(longer) == ("autokd", "tp-kd") and exported.rows_of(PROTOCOLS["cpu"]) == exported.KINDS


def test_a_variant_runs_only_its_parts_and_the_page_lists_no_other_part_as_not_run(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "run.py"), "claims", "--protocol", "cpu-wide-band",
                           "--results", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and proc.stderr.strip().splitlines()[-1] == \
        "run.py: protocol cpu-wide-band runs only search, not claims"
    assert not any(tmp_path.iterdir())  # refused before anything was trained or written
    sys.path.insert(0, str(BENCH))
    from make_tables import page

    text = page({("search_quality", "cpu-wide-band"): []}, tmp_path, tmp_path)
    assert "Not run yet: `.venv/bin/python benchmarks/run.py search --protocol cpu-wide-band`" in text
    assert "run.py claims --protocol cpu-wide-band" not in text and "run.py claims --protocol cpu`" in text


@pytest.mark.slow
def test_smoke_protocol_writes_every_part_and_the_tables(protocol_runs):
    out = _finished(protocol_runs, "smoke")
    data = {part: json.loads((out / f"{part}-smoke.json").read_text()) for part in PARTS}
    for part, d in data.items():
        assert ENVELOPE <= set(d), part
        assert d["part"] == part and d["protocol"] == "smoke" and "run.py all" in d["command"]
        assert {"platform", "cpus", "torch", "device_name"} <= set(d["machine"])

    search = data["search_quality"]
    assert "hypervolume_ratio_vs_random" in search and "hypervolume_ratio_vs_random" in search["results"]
    runs = search["results"]["runs"]
    assert sorted(r["arm"] for r in runs) == ["joint", "random", "torch-pruning"]
    tp = next(r for r in runs if r["arm"] == "torch-pruning")  # the outside baseline: 5 pruned teachers, all in budget
    assert len(tp["models"]) == 5 and all(m["macs"] <= t * tp["budget_macs"] for m, t in
                                          zip(tp["models"], (1.0, 0.8, 0.6, 0.4, 0.2)))
    for r in runs:
        assert 0.0 <= r["hypervolume"] <= 1.0 and r["counts"]["done"] >= 1
        assert 0.0 <= r["best"]["test_accuracy"] <= 1.0 and r["best"]["macs"] <= r["budget_macs"]
        assert r["epochs_spent"] >= 1 and r["hypervolume_vs_epochs"][-1][1] == pytest.approx(r["hypervolume"])
    assert {"above_every_arm", "compute_to_match_met", "above_single_method", "met"} <= set(search["results"]["target"])

    claims = data["claims"]["results"]
    assert {"alone", "kd", "vid-all", "pdd", "recovery-kd", "aligned", "teacher-recovery-kd", "teacher-recovery-ce",
            "teacher-arch-alone", "teacher-pdd", "teacher-l1"} <= set(claims["runs"])
    teacher_pdd = {c["key"]: c for c in claims["claims"]}["teacher-pdd"]
    assert teacher_pdd["macs_a"] == teacher_pdd["macs_b"]  # on the inherited student too
    assert all(c["verdict"] and c["difference"]["n"] == 1 for c in claims["claims"])
    pdd = {c["key"]: c for c in claims["claims"]}["pdd"]
    assert pdd["macs_a"] == pdd["macs_b"]  # learned masks vs L1: equal MACs by construction

    over = data["overheads"]["results"]
    assert set(over["step"]["ratio"]) == {"kd (logits only)", "vid, matching pairs", "vid, all pairs"}
    assert over["driver"]["sizes"][0]["trained"] == 2 and over["driver"]["sizes"][0]["sum_run_s"] > 0
    assert over["parallel"]["efficiency_wall"] > 0 and over["memory"]["one_trial"]["peak_rss_mb"] > 0

    lat = data["latency"]["results"]
    kinds = [r["kind"] for r in lat["rows"]]
    assert kinds.count("zoo") == 2 and kinds.count("teacher") == 1 and lat["table1_students"] == 1  # joint's
    assert all(r["torch"]["median_ms"] > 0 and r["onnxruntime"]["median_ms"] > 0 for r in lat["rows"])

    pred = data["latency_predictor"]["results"]  # the predictor vs measured, on the smoke space's candidates
    assert pred["summary"]["n"] == len(pred["rows"]) == 6 and pred["setting"]["runtime"] == "onnxruntime"
    assert all(r["measured_ms"] > 0 and r["predicted_ms"] > 0 and r["macs"] > 0 for r in pred["rows"])
    assert pred["calibration"]["wall_s"] > 0 and (out / "latency").is_dir()  # not the user's AUTOKD_HOME
    assert {"within_10pct", "mape", "median_abs_error", "worst", "target"} <= set(pred["summary"])

    ls = data["latency_search"]["results"]  # a latency search against table 1's joint study, at equal latency
    (row,) = ls["rows"]
    assert row["latency_best"]["measured_ms"] > 0 and 0.0 <= row["latency_best"]["test_accuracy"] <= 1.0
    assert row["latency_best"]["predicted_ms"] <= row["budget_ms"] <= row["teacher_ms"]
    rival = row["macs_best_at_equal_latency"]
    assert rival is None or rival["measured_ms"] <= row["latency_best"]["measured_ms"]
    assert ls["setting"]["runtime"] == "onnxruntime" and ls["target_points"] == 1.0

    exp = data["exported"]["results"]
    assert exp["finetune_epochs"] == 1 and "--finetune-epochs 1" in exp["export_command"]
    auto = exp["rows"]["autokd"]["per_seed"][0]
    assert auto["finetune"]["epochs"] == 1 and auto["macs"] <= 0.4 * exp["teacher"]["macs"]
    gap = exp["gap_to_teacher_points"]
    assert gap["mean"] == pytest.approx(100 * (exp["teacher"]["test_accuracy"] - auto["test_accuracy"]))
    assert data["exported"]["gap_to_teacher_points"] == gap["mean"]
    tp = exp["rows"]["tp"]["per_seed"][0]  # Torch-Pruning at the exported student's MACs, within 1 %
    assert 0.99 * auto["macs"] <= tp["macs"] <= auto["macs"] and exp["rows"]["tp-kd"]["per_seed"][0]["macs"] == tp["macs"]
    assert exp["vs_torch_pruning_equal_macs_points"]["values"] == pytest.approx(
        [100 * (auto["test_accuracy"] - tp["test_accuracy"])])
    assert {"vs_torch_pruning_kd_equal_macs_points", "vs_torch_pruning_equal_compute_points"} <= set(exp)
    from autokd.export import FINETUNE_RECIPE, FINETUNE_RECIPES

    other, = set(FINETUNE_RECIPES) - {FINETUNE_RECIPE}
    alt = exp["rows"][f"autokd-{other}"]["per_seed"][0]  # the same student, the other export recipe
    assert (auto["trial"], auto["macs"], auto["recipe"], alt["recipe"]) == (alt["trial"], alt["macs"], FINETUNE_RECIPE, other)
    assert exp["export_recipe_points"][other]["values"] == pytest.approx(
        [100 * (alt["test_accuracy"] - auto["test_accuracy"])])

    page = out / "BENCHMARKS.md"
    _run([str(BENCH / "make_tables.py"), "--results", str(out), "--out", str(page)], timeout=60)
    text = page.read_text()
    for title in ("## 1. Search quality", "## 2. The seeds' claims", "## 3. Overheads", "## 4. Cost vs latency",
                  "## 5. GPU", "### Protocol `smoke`", "Joint / random hypervolume",
                  "## The exported student", "gap_to_teacher_points", "fine-tune recipe `",
                  "Latency predictor vs measured", "Latency search vs MACs search"):
        assert title in text, title
    assert -1 <= (data["ranking"]["results"]["kendall_tau_b"] or 0) <= 1
    assert text.count("run.py all --protocol smoke") == 8  # every table names its command


@pytest.mark.slow
def test_dry_run_of_the_gpu_protocol_writes_every_result(protocol_runs):
    """benchmarks/gpu_protocol.sh --dry-run runs every step of the script a CUDA machine runs (GPU-path
    tests, teacher, table 3's GPU rows, table 1's five arms, table 4, the page) on this CPU with the
    `gpu-dry` protocol. Its numbers mean nothing; the shape of what it writes is checked: every JSON
    names the machine it ran on and its n, and nothing lands in benchmarks/results/."""
    out = _finished(protocol_runs, "gpu-dry")
    log = (out / "log.txt").read_text()
    for step in ("tests", "teacher", "gpu", "search", "latency"):
        assert (out / f".done-{step}").exists(), f"step {step} did not finish:\n{log[-4000:]}"
    parts = {p: json.loads((out / f"{p}-gpu-dry.json").read_text())
             for p in ("gpu_throughput", "search_quality", "latency")}
    for part, d in parts.items():
        assert d["protocol"] == "gpu-dry" and d["settings"]["name"] == "gpu-dry", part
        assert d["machine"]["device"] == "cpu" and d["machine"]["device_name"], part  # where it ran, named
    rows = parts["gpu_throughput"]["results"]["rows"]
    assert [(r["trials_at_once"], r["amp"]) for r in rows] == [(1, False), (1, True), (2, False)]
    assert all(len(r["runs"]) == r["trials_at_once"] and r["whole_gpu_images_per_s"] > 0 for r in rows)
    runs = parts["search_quality"]["results"]["runs"]
    assert sorted(r["arm"] for r in runs) == sorted(["joint", "random", "random-ladder", "prune-only", "distill-only"])
    assert all(r["trials"] >= 1 and r["epochs"] == 1 and r["counts"]["done"] >= 1 for r in runs)
    assert all(r["compute_budget"] == 2.0 and r["compute_spent"] >= 2.0 for r in runs)  # 2 trials x 1 epoch
    page = (out / "BENCHMARKS-gpu-dry.md").read_text()
    assert "GPU rows, protocol `gpu-dry`" in page and "| n |" in page
    assert sorted(p.name for p in (BENCH / "results").iterdir()) == protocol_runs["results_before"]


def test_a_mistyped_option_of_the_gpu_protocol_is_one_line_and_exit_2():
    proc = subprocess.run(["bash", "benchmarks/gpu_protocol.sh", "--dryrun"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["usage: bash benchmarks/gpu_protocol.sh [--dry-run] [--results DIR]"]


def test_torch_pruning_baseline_lands_at_or_under_each_target():
    """The outside baseline prunes through Torch-Pruning's MetaPruner until each target is met, and
    its models still run (counted with autokd's one MAC rule)."""
    import torch

    sys.path.insert(0, str(BENCH))
    from torch_pruning_baseline import prune_to

    from autokd.measure import count_macs
    from autokd.models import create_model

    torch.manual_seed(0)
    teacher = create_model("resnet20", num_classes=10, in_channels=1)
    full = count_macs(teacher, (1, 8, 8))
    targets = [int(0.4 * full), int(0.2 * full)]
    out = prune_to(teacher, (1, 8, 8), targets)
    assert [m for _, m in out] == [count_macs(model, (1, 8, 8)) for model, _ in out]
    assert all(macs <= t for (_, macs), t in zip(out, targets))
    assert all(macs >= 0.8 * t for (_, macs), t in zip(out, targets))  # close to the target, not far under
    assert out[1][0](torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert count_macs(teacher, (1, 8, 8)) == full  # the teacher itself is untouched


def test_claims_keep_the_runs_a_partial_rerun_does_not_redo():
    sys.path.insert(0, str(BENCH))
    from claims import _kept
    from protocols import PROTOCOLS

    p = PROTOCOLS["smoke"]
    old = {"settings": json.loads(json.dumps(p.as_dict())),
           "results": {"runs": {"kd": {"per_seed": {"0": {"test_accuracy": 0.5}}},
                                "alone": {"per_seed": {"0": {"test_accuracy": 0.4}}},
                                "pdd": {"per_seed": {"0": {"test_accuracy": 0.3}, "1": {"test_accuracy": 0.3}}}}}}
    kept = _kept(old, p, ["alone+recovery", "kd"], seeds=1)
    assert kept == [(0, {"pdd": {"test_accuracy": 0.3}})]  # rerun names dropped, seeds beyond n dropped
    assert _kept({**old, "settings": {}}, p, ["kd"], seeds=1) == []  # another protocol: nothing kept


def test_hypervolume_at_the_compute_budget_counts_no_overshoot():
    """Hand-made curves, budget 20: the last point at or under 20 counts, the trial that finished at 22.4
    (started before the budget was reached) does not; the targets are judged on both numbers."""
    sys.path.insert(0, str(BENCH))
    from search_quality import hypervolume_at_budget, summarize

    def run(arm, seed, curve):
        return {"arm": arm, "seed": seed, "compute_budget": 20.0, "hypervolume_vs_compute": curve,
                "hypervolume": curve[-1][1], "best": None}

    assert hypervolume_at_budget(run("joint", 0, [[3.3, 0.2], [19.9, 0.5], [22.4, 0.7]])) == 0.5
    assert hypervolume_at_budget(run("joint", 0, [[20.0, 0.4], [21.0, 0.6]])) == 0.4
    assert hypervolume_at_budget(run("joint", 0, [[25.0, 0.4]])) == 0.0
    assert hypervolume_at_budget({"hypervolume": 0.3}) is None  # a run from before the compute budget
    s = summarize([run("joint", 0, [[10.0, 0.3], [19.0, 0.5], [22.0, 0.8]]), run("random", 0, [[12.0, 0.4], [21.0, 0.5]])])
    assert s["hypervolume_ratio_vs_random"] == pytest.approx(0.8 / 0.5)       # whole studies
    assert s["hypervolume_ratio_vs_random_at_budget"] == pytest.approx(0.5 / 0.4)  # at compute 20
    assert s["target"]["above_every_arm"] is True and s["target_at_budget"]["above_every_arm"] is True
    # joint reached random's final 0.5 at compute 19 (whole studies): random spent 21, 1.1 x: under 5 x
    assert s["compute_to_match_random"]["least_times"] == pytest.approx(21 / 19)
    assert s["target"]["compute_to_match_met"] is False and s["target"]["met"] is False
    assert s["by_arm"]["joint"]["hypervolume_at_budget"]["mean"] == 0.5


def test_union_front_is_the_ceiling_of_any_one_search():
    """Budget 100 MACs. joint's front (0.6 at 50), random's (0.5 at 20) and torch-pruning's (0.9 at 90).
    Searching arms' union front: 0.5 at 0.2, 0.6 at 0.5 of the budget: 0.3 * 0.5 + 0.5 * 0.6 = 0.45.
    With torch-pruning: 0.3 * 0.5 + 0.4 * 0.6 + 0.1 * 0.9 = 0.48. Random's mean hypervolume 0.4 (its own
    0.8 * 0.5): 0.45 / 0.4 = 1.125 and 0.48 / 0.4 = 1.2."""
    sys.path.insert(0, str(BENCH))
    from search_quality import summarize

    def run(arm, hv, front):
        return {"arm": arm, "seed": 0, "hypervolume": hv, "best": None, "budget_macs": 100, "trials": 2,
                "front": front}

    u = summarize([run("joint", 0.3, [[0.6, 50, 1]]), run("random", 0.4, [[0.5, 20, 0]]),
                   run("torch-pruning", 0.09, [[0.9, 90, 0]])])["union_front"]
    assert u["searching_arms"] == pytest.approx(0.45) and u["all_arms"] == pytest.approx(0.48)
    assert u["searching_arms_over_random"] == pytest.approx(1.125) and u["all_arms_over_random"] == pytest.approx(1.2)
    assert u["trials_of"] == {"searching_arms": 4, "all_arms": 6}


def test_compute_to_match_reads_the_compute_random_needs_for_joints_front():
    """Seed 0: random ends at 0.60 after 60 epoch-equivalents; joint's curve is 0.30 at 3, 0.64 at 6: it is
    past 0.60 first at 6, so random spent 60 / 6 = 10 x. Seed 1: random 0.64 after 50; joint 0.62 at 5,
    0.64 at 25 (equal counts as reached): 50 / 25 = 2 x. Seed 2: joint never reaches random's 0.7: None,
    and then no least ratio. A seed without random's run is left out."""
    sys.path.insert(0, str(BENCH))
    from search_quality import compute_to_match

    def run(arm, seed, hv, spent, curve):
        return {"arm": arm, "seed": seed, "hypervolume": hv, "compute_spent": spent, "hypervolume_vs_compute": curve}

    runs = [run("random", 0, 0.60, 60.0, [[20.0, 0.5], [60.0, 0.60]]), run("joint", 0, 0.7, 60.0, [[3.0, 0.3], [6.0, 0.64]]),
            run("random", 1, 0.64, 50.0, [[50.0, 0.64]]), run("joint", 1, 0.7, 60.0, [[5.0, 0.62], [25.0, 0.64]])]
    m = compute_to_match(runs)
    assert [(p["seed"], p["compute"], p["times"]) for p in m["per_seed"]] == [(0, 6.0, 10.0), (1, 25.0, 2.0)]
    assert m["least_times"] == 2.0
    m = compute_to_match(runs + [run("random", 2, 0.7, 60.0, [[60.0, 0.7]]), run("joint", 2, 0.65, 60.0, [[9.0, 0.65]]),
                                 run("joint", 3, 0.65, 60.0, [[9.0, 0.65]])])
    assert [p["seed"] for p in m["per_seed"]] == [0, 1, 2] and m["per_seed"][2]["compute"] is None
    assert m["least_times"] is None
    assert compute_to_match([run("joint", 0, 0.7, 60.0, [[6.0, 0.7]])]) is None


def test_a_record_names_the_machine_it_ran_on_not_the_protocols_intention(monkeypatch):
    """A protocol that trains on CUDA, recorded on a machine without a GPU, says "cpu" and the CPU."""
    import torch

    sys.path.insert(0, str(BENCH))
    from record import cpu_model, machine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    m = machine("cuda")
    assert (m["device"], m["device_name"], m["gpu"]) == ("cpu", cpu_model(), None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Some GPU 80GB")
    assert (machine("cuda")["device"], machine("cuda")["device_name"]) == ("cuda", "Some GPU 80GB")
    assert machine("cpu")["device"] == "cpu"  # a CPU protocol stays on the CPU, GPU or not


def _claim(statement: str, n: int, mean: float | None) -> dict:
    return {"statement": statement, "a": "x", "b": "y", "difference": {"n": n, "mean": mean}}


def test_each_claim_comes_from_the_newest_file_that_ran_it():
    sys.path.insert(0, str(BENCH))
    from make_tables import current_claims

    newest = {"results": {"claims": [_claim("A", 0, None), _claim("B", 3, 0.5), _claim("C", 0, None)]}}
    older = {"results": {"claims": [_claim("A", 3, 1.0), _claim("B", 3, 9.9)]}}
    got = [(c["statement"], c["difference"]["mean"], name)
           for c, name in current_claims([("claims-p.json", newest), ("claims-p-2026.json", older)])]
    assert got == [("A", 1.0, "claims-p-2026.json"), ("B", 0.5, "claims-p.json"), ("C", None, "claims-p.json")]


def test_the_committed_page_puts_the_headline_first_and_shows_only_current_results():
    sys.path.insert(0, str(BENCH))
    from make_tables import load, page

    results = BENCH / "results"
    text = page(load(results), results)
    lines = text.splitlines()
    assert len(lines) <= 220
    assert lines[2].startswith("**Headline**") and "n = 3" in lines[2] and " ± " in "\n".join(lines[2:6])
    assert text.count("teacher trained only") <= 1  # the caveat on a short CPU teacher: once, or none when all are rerun
    assert "Superseded" not in text and "-20261202-" not in text  # archived tables stay in the archive
    claims = text.split("## 2.")[1].split("## 3.")[0]
    assert "**not run**" not in claims  # every claim some file ran shows its numbers
    assert not any(len(line) > 130 for line in lines if not line.startswith(("|", "![")))  # prose is wrapped


def test_a_headline_with_rows_not_run_names_them_and_leaves_out_their_differences():
    sys.path.insert(0, str(BENCH))
    from make_tables import HEADLINE_ROWS, exported

    d = json.loads((BENCH / "results" / "exported-cpu.json").read_text())
    r = d["results"]
    other, = r["export_recipe_points"]  # the export recipe that is not the default
    r["rows"]["tp-budget"]["per_seed"] = []
    r["rows"][f"autokd-{other}"]["per_seed"] = []
    r["export_recipe_points"][other] = {"mean": None, "std": None, "n": 0, "values": [], "se": None}
    text = "\n".join(exported(d))
    missing = " ".join(text.split("Not run in this file: ")[1].split("\n\n")[0].split())  # the paragraph, unwrapped
    assert HEADLINE_ROWS["tp-budget"] in missing and f"the same student, fine-tune recipe `{other}`" in missing
    assert HEADLINE_ROWS["tp"] not in missing
    assert f"| {HEADLINE_ROWS['tp-budget']} |" not in text and "Export fine-tune recipes" not in text
    assert f"| {HEADLINE_ROWS['tp']} |" in text  # the rows it has
