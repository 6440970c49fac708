"""The gpu protocol's dry run: benchmarks/gpu_protocol.sh --dry-run runs every step of the script a
CUDA machine runs (GPU-path tests, teacher, table 3's GPU rows, table 1's five arms, table 4, the page)
on this CPU with the `gpu-dry` protocol. Its numbers mean nothing; the shape of what it writes is
checked: every JSON names the machine it ran on and its n, and nothing lands in benchmarks/results/.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_dry_run_of_the_gpu_protocol_writes_every_result(tmp_path):
    before = sorted(p.name for p in (ROOT / "benchmarks" / "results").iterdir())
    env = {**os.environ, "PY": sys.executable}
    proc = subprocess.run(["bash", "benchmarks/gpu_protocol.sh", "--dry-run", "--results", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    for step in ("tests", "teacher", "gpu", "search", "latency"):
        assert (tmp_path / f".done-{step}").exists(), f"step {step} did not finish:\n{log[-4000:]}"
    parts = {p: json.loads((tmp_path / f"{p}-gpu-dry.json").read_text())
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
    page = (tmp_path / "BENCHMARKS-gpu-dry.md").read_text()
    assert "GPU rows, protocol `gpu-dry`" in page and "| n |" in page
    assert sorted(p.name for p in (ROOT / "benchmarks" / "results").iterdir()) == before


def test_a_mistyped_option_is_one_line_and_exit_2():
    proc = subprocess.run(["bash", "benchmarks/gpu_protocol.sh", "--dryrun"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["usage: bash benchmarks/gpu_protocol.sh [--dry-run] [--results DIR]"]
