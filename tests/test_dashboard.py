"""autokd.plots: one self-contained page with five views; rendered by headless Chromium if present."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from autokd.pareto import pareto_info
from autokd.plots import VIEWS, dashboard_html
from test_pareto import CONFIG, TRIALS, hand_study

CHROMIUM = Path("/usr/bin/chromium")  # Debian package `chromium`


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dash") / "hand.html"
    path.write_text(dashboard_html(pareto_info(hand_study(), CONFIG)))
    return path


def test_five_views_with_stable_ids(page):
    text = page.read_text()
    assert VIEWS == ("accuracy-vs-macs", "hypervolume", "lambda-heatmap", "importances", "parallel-coordinates")
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
