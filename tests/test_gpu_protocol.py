"""The device protocol's dry run: benchmarks/device_protocol.sh --dry-run runs every step of the
script the lent H200 runs (GPU-path tests, teacher, table 3's GPU rows, table 1's five arms, table 4,
the page) on this CPU with the `device-dry` protocol, so a session lent a device spends its minutes
on numbers. Its numbers mean nothing; the shape of what it writes is checked: every JSON names its
device and its n, and nothing lands in benchmarks/results/.
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
def test_dry_run_of_the_device_protocol_writes_every_result(tmp_path):
    before = sorted(p.name for p in (ROOT / "benchmarks" / "results").iterdir())
    env = {**os.environ, "PY": sys.executable}
    env.pop("OUT", None)
    proc = subprocess.run(["bash", "benchmarks/device_protocol.sh", "--dry-run", "--results", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    for step in ("tests", "teacher", "gpu", "search", "latency"):
        assert (tmp_path / f".done-{step}").exists(), f"step {step} did not finish:\n{log[-4000:]}"
    parts = {p: json.loads((tmp_path / f"{p}-device-dry.json").read_text())
             for p in ("gpu_throughput", "search_quality", "latency")}
    for part, d in parts.items():
        assert d["protocol"] == "device-dry" and d["settings"]["name"] == "device-dry", part
        assert d["machine"]["device"] == "cpu" and d["machine"]["device_name"], part  # the device, named
    rows = parts["gpu_throughput"]["results"]["rows"]
    assert [(r["trials_at_once"], r["amp"]) for r in rows] == [(1, False), (1, True), (2, False)]
    assert all(len(r["runs"]) == r["trials_at_once"] and r["whole_gpu_images_per_s"] > 0 for r in rows)
    runs = parts["search_quality"]["results"]["runs"]
    assert sorted(r["arm"] for r in runs) == sorted(["joint", "random", "random-ladder", "prune-only", "distill-only"])
    assert all(r["trials"] >= 1 and r["epochs"] == 1 and r["counts"]["done"] >= 1 for r in runs)
    assert all(r["compute_budget"] == 2.0 and r["compute_spent"] >= 2.0 for r in runs)  # 2 trials x 1 epoch
    page = (tmp_path / "BENCHMARKS-device-dry.md").read_text()
    assert "Table 3's GPU rows: protocol `device-dry`" in page and "| n |" in page
    out = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(out) <= 8 and "log.txt" in out and "teacher-card-device-dry.json" in out  # what $OUT returns
    assert sorted(p.name for p in (ROOT / "benchmarks" / "results").iterdir()) == before
