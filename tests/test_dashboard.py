"""autokd.plots: one self-contained page with seven views; rendered by headless Chromium if present."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from autokd.pareto import pareto_info
from autokd.plots import VIEWS, dashboard_html, hypervolume_by_compute
from test_pareto import CONFIG, TRIALS, hand_study, spent_study

CHROMIUM = Path("/usr/bin/chromium")  # Debian package `chromium`


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dash") / "hand.html"
    path.write_text(dashboard_html(pareto_info(hand_study(), CONFIG)))
    return path


def test_seven_views_with_stable_ids(page):
    text = page.read_text()
    assert VIEWS == ("accuracy-vs-macs", "hypervolume", "hypervolume-vs-compute", "promotions", "lambda-heatmap",
                     "importances", "parallel-coordinates")
    for view in VIEWS:
        assert f'id="{view}"' in text, view
    assert "autokd export hand --trial 7" in text                      # the export command of a front member
    assert "FLOPs = 2 x MACs" in text and "multiply-accumulates" in text  # the cost unit, said once


def test_self_contained(page):
    text = page.read_text()
    scripts = re.findall(r"<script\b[^>]*>", text)
    assert scripts and not any("src=" in s for s in scripts)  # plotly.js inline: no CDN, no network
    assert text.count("plotly.js v") == 1 and len(text) > 1_000_000  # the library once, inlined


def test_page_without_front_or_importances():
    only_rejected = pareto_info(hand_study("none", {0: TRIALS[3]}), CONFIG)
    text = dashboard_html(only_rejected)
    assert all(f'id="{view}"' in text for view in VIEWS)
    assert "at least 2 completed trials" in text


def test_renders_in_headless_chromium(page, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (Debian package `chromium`): the page was not rendered")
    shot = tmp_path / "shot.png"
    argv = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1400,2400",
            "--enable-logging=stderr", "--v=0", page.as_uri()]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
    errors = [line for line in console if "Uncaught" in line or "Error" in line]
    assert not errors, "\n".join(errors[:5])
    assert shot.exists() and shot.stat().st_size > 50_000, run.stderr[-2000:]
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_compute_and_promotions_views():
    """spent_study (test_pareto): trials finish 1, 2, 0, 4 spending 1.5, 2, 2, 0.25 epoch-equivalents;
    rung 1 promoted trials 0 and 2 and stopped trial 1."""
    info = pareto_info(spent_study("dash-spent"), CONFIG, importances=False)
    fig = hypervolume_by_compute(info)
    assert list(fig.data[0].x) == [0.0, 1.5, 3.5, 5.5, 5.75]            # from the origin, one step a trial
    assert list(fig.data[0].y)[:3] == [0.0, 0.0, 0.45] and fig.layout.xaxis.title.text == \
        "compute spent (epoch-equivalents)"
    assert fig.data[0].text[1] == "after trial 1 (stopped, 1.5 epoch-equivalents)"
    text = dashboard_html(info)
    assert 'id="hypervolume-vs-compute"' in text and 'id="promotions"' in text
    assert "<tr><td>1</td><td>2: 0, 2</td><td>1: 1</td></tr>" in text  # rung 1: went on, stopped
    assert "compute spent 5.75 epoch-equivalents" in text


def test_a_rung_that_stopped_no_trial_says_none():
    from types import SimpleNamespace

    from autokd.plots import promotions_table

    text = promotions_table(SimpleNamespace(promotions={1: {"promoted": [0, 3], "stopped": []}}))
    assert "<tr><td>1</td><td>2: 0, 3</td><td>none</td></tr>" in text  # not a "0" that reads as trial 0


def test_parallel_coordinates_keep_the_parameters_that_vary_most_important_first():
    from autokd.plots import axes

    values = {"a": [1, 2], "b": [1, 1], "c": ["x", "y"], "d": [0.1, 0.2], "e": [3, 4]}
    importances = {"d": 0.6, "a": 0.3, "b": 0.1}
    assert axes(values, importances) == ["d", "a", "c", "e"]   # b never varies; c, e unranked, by name
    assert axes(values, importances, most=2) == ["d", "a"]
    assert axes(values, {}) == ["a", "c", "d", "e"]


def test_old_study_says_it_has_no_promotions(page):
    text = page.read_text()
    assert "records no rung promotions" in text and "counted as their training epochs" in text
