"""benchmarks/figures.py: table 1's hypervolume-against-compute curves by hand, the PNG, and
make_tables.py showing it in table 1's section."""
from __future__ import annotations

import json
import os
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import figures  # noqa: E402
import make_tables  # noqa: E402

# two arms: joint with seeds 0 and 1, random with one seed (a search_quality JSON cut to what figures read)
TINY = {"part": "search_quality", "protocol": "tiny",
        "results": {"arm_order": ["joint", "random", "prune-only"], "runs": [
            {"arm": "joint", "seed": 1, "hypervolume_vs_epochs": [[3, 0.5], [4, 0.7]]},
            {"arm": "random", "seed": 0, "hypervolume_vs_epochs": [[1, 0.3]]},
            {"arm": "joint", "seed": 0, "hypervolume_vs_epochs": [[2, 0.4], [5, 0.6]]},
            {"arm": "prune-only", "seed": 0, "hypervolume_vs_epochs": []}]}}  # nothing trained: no curve


def test_step_value():
    curve = [[2, 0.4], [5, 0.6]]
    assert [figures.step_value(curve, x) for x in (0, 1.9, 2, 4.99, 5, 99)] == [0.0, 0.0, 0.4, 0.4, 0.6, 0.6]
    assert figures.step_value([], 3) == 0.0


def test_arm_curves_by_hand():
    """joint: seed 0 steps to 0.4 at 2 and 0.6 at 5; seed 1 to 0.5 at 3 and 0.7 at 4. The mean runs on
    their x up to 4 (seed 1's last): at 0: 0; at 2: (0.4 + 0) / 2 = 0.2; at 3: (0.4 + 0.5) / 2 = 0.45;
    at 4: (0.4 + 0.7) / 2 = 0.55. random: one seed, its own curve."""
    curves = figures.arm_curves(TINY)
    assert list(curves) == ["joint", "random"]
    joint = curves["joint"]
    assert joint["n"] == 2 and joint["grid"] == [0.0, 2.0, 3.0, 4.0]
    assert joint["mean"] == pytest.approx([0.0, 0.2, 0.45, 0.55])
    assert joint["seeds"][0] == ([0.0, 2.0, 5.0], [0.0, 0.4, 0.6])  # every seed from (0, 0)
    assert curves["random"]["grid"] == [0.0, 1.0] and curves["random"]["mean"] == [0.0, 0.3]


def test_figure_names_protocol_and_n():
    fig = figures.search_quality_figure(TINY)
    assert "protocol tiny" in fig.layout.title.text and "n = 1-2 seeds per arm" in fig.layout.title.text
    means = [t for t in fig.data if t.showlegend is not False]
    assert [t.name for t in means] == ["joint (mean of n = 2)", "random (mean of n = 1)"]
    assert len(fig.data) == 2 + 3  # a faint line per seed
    assert fig.layout.xaxis.title.text.startswith("compute spent (epoch-equivalents")


def _kaleido_major() -> int:
    try:
        return int(version("kaleido").split(".")[0])
    except PackageNotFoundError:
        return -1


def test_writes_a_png(tmp_path):
    if _kaleido_major() < 1:
        pytest.skip("kaleido >= 1 is not installed (pip install -e '.[bench]'): plotly cannot write a PNG")
    path = tmp_path / "search_quality-tiny.json"
    path.write_text(json.dumps(TINY))
    try:
        png = figures.write_search_quality_png(path)
    except RuntimeError as e:
        if "Chrome" not in str(e):
            raise
        pytest.skip("kaleido found no Chrome/Chromium to drive (Debian package `chromium`)")
    assert png == tmp_path / "search_quality-tiny.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_make_tables_shows_the_figure_in_table_1(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(ROOT / "benchmarks" / "results" / "search_quality-cpu.json", results)
    json_path, png = results / "search_quality-cpu.json", results / "search_quality-cpu.png"
    text = make_tables.page(make_tables.load(results), results, tmp_path)
    assert "No figure of `search_quality-cpu.json` yet" in text and "![" not in text
    png.write_bytes(b"\x89PNG stand-in")
    section = make_tables.page(make_tables.load(results), results, tmp_path).split("## 2.")[0]
    assert "![hypervolume against compute spent" in section and "](results/search_quality-cpu.png)" in section  # relative
    stat = json_path.stat()
    os.utime(png, (stat.st_atime, stat.st_mtime - 60))  # a PNG older than its JSON is not shown
    assert "No figure of" in make_tables.page(make_tables.load(results), results, tmp_path)
