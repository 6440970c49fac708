"""The figures of BENCHMARKS.md, drawn from the JSON files in benchmarks/results/; nothing measured here.

    .venv/bin/python benchmarks/figures.py [--results DIR]

For every ``search_quality-<protocol>.json`` (table 1) it writes ``search_quality-<protocol>.png``
next to it: hypervolume against compute, x = compute spent (each run's ``hypervolume_vs_compute``,
epoch-equivalents in the order trials finished; older runs without it: ``hypervolume_vs_epochs``,
cumulative training epochs by trial number), per arm the mean over seeds as a
line and every seed faint. make_tables.py calls :func:`write_figures` before it renders the page
(``--no-figures`` to skip), and shows a PNG in table 1's section when one exists.

Data apart from drawing: :func:`arm_curves` gives the step curves and their mean as plain lists;
:func:`search_quality_figure` only draws them. PNGs come from plotly's ``write_image``, which needs
kaleido >= 1 (plotly 7 refuses kaleido 0.2.1) and a Chrome or Chromium for kaleido to drive
(Debian's ``chromium``): ``pip install -e ".[bench]"``. The PNGs are generated, never committed.
"""
from __future__ import annotations

import argparse
import bisect
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WIDTH, HEIGHT = 960, 540  # px: readable on the rendered Markdown page, one column wide
SEED_OPACITY = 0.3        # each seed's own curve, behind its arm's mean
DASHES = ("solid", "dash", "dot", "dashdot", "longdash")  # arms that share seeds' first trials overlap


# ------------------------------------------------------------------ data
def step_value(curve: list[list[float]], x: float) -> float:
    """The step curve through [[x, y], ...] (x ascending) at ``x``: the y of the last point at or
    before ``x``; 0 before the first (no trial done, nothing dominated)."""
    i = bisect.bisect_right([p[0] for p in curve], x)
    return float(curve[i - 1][1]) if i else 0.0


def arm_curves(data: dict) -> dict[str, dict]:
    """Table 1's runs as curves, arms in the file's ``arm_order``::

        {arm: {"seeds": {seed: (xs, ys)}, "grid": [x, ...], "mean": [y, ...], "n": seeds}}

    Every curve starts at (0, 0). The mean is over all n seeds at each x of the union of their x,
    each seed read as a step curve (:func:`step_value`), up to the smallest last x of the arm's
    seeds: past it some seed spent no more epochs, and its mean would be over fewer seeds."""
    r = data["results"]
    by_arm: dict[str, dict[int, list[list[float]]]] = {}
    for run in sorted(r["runs"], key=lambda run: (run["arm"], run["seed"])):
        curve = run.get("hypervolume_vs_compute") or run.get("hypervolume_vs_epochs")  # compute where recorded
        if curve:
            by_arm.setdefault(run["arm"], {})[run["seed"]] = sorted(curve)
    order = [a for a in r.get("arm_order", []) if a in by_arm] + sorted(set(by_arm) - set(r.get("arm_order", [])))
    out = {}
    for arm in order:
        seeds = by_arm[arm]
        end = min(curve[-1][0] for curve in seeds.values())
        grid = sorted({0.0} | {float(x) for curve in seeds.values() for x, _ in curve if x <= end})
        mean = [sum(step_value(c, x) for c in seeds.values()) / len(seeds) for x in grid]
        out[arm] = {"seeds": {s: ([0.0, *(float(x) for x, _ in c)], [0.0, *(float(y) for _, y in c)])
                              for s, c in seeds.items()},
                    "grid": grid, "mean": mean, "n": len(seeds)}
    return out


# ------------------------------------------------------------------ drawing
def search_quality_figure(data: dict):
    """Hypervolume against compute spent: a line per arm (the mean), each seed faint, the budget dotted."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    curves = arm_curves(data)
    fig = go.Figure()
    for i, (arm, c) in enumerate(curves.items()):
        color = qualitative.Plotly[i % len(qualitative.Plotly)]
        for seed, (xs, ys) in c["seeds"].items():
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=color, width=1, shape="hv"),
                                     opacity=SEED_OPACITY, legendgroup=arm, showlegend=False,
                                     name=f"{arm}, seed {seed}"))
        fig.add_trace(go.Scatter(x=c["grid"], y=c["mean"], mode="lines", line=dict(color=color, width=3, shape="hv", dash=DASHES[i % len(DASHES)]),
                                 legendgroup=arm, name=f"{arm} (mean of n = {c['n']})"))
    budget = data["results"].get("compute_budget")
    if budget:  # every arm's --compute: the curves past it are the trials still running when it was reached
        fig.add_vline(x=budget, line=dict(color="grey", dash="dot", width=1), annotation_text="compute budget",
                      annotation_position="top left")
    ns = sorted({c["n"] for c in curves.values()})
    n = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}-{ns[-1]}" if ns else "n = 0"
    fig.update_layout(
        title=f"Table 1, protocol {data['protocol']}: hypervolume against compute ({n} seeds per arm; "
              "mean as a line, each seed faint)",
        xaxis_title="compute spent (epoch-equivalents; older runs: cumulative training epochs)",
        yaxis_title="hypervolume of (val. accuracy, MACs / budget)", xaxis_rangemode="tozero", yaxis_rangemode="tozero",
        width=WIDTH, height=HEIGHT, template="plotly_white", legend=dict(x=1.0, xanchor="right", y=0.02,
                                                                         yanchor="bottom"))
    return fig


def png_path(json_path: Path) -> Path:
    return Path(json_path).with_suffix(".png")


def write_search_quality_png(json_path: Path) -> Path:
    """``search_quality-<protocol>.json`` -> ``search_quality-<protocol>.png`` next to it; raises
    what plotly raises when it cannot write an image (kaleido missing, no Chrome)."""
    import json

    out = png_path(json_path)
    search_quality_figure(json.loads(Path(json_path).read_text())).write_image(out, width=WIDTH, height=HEIGHT)
    return out


def write_figures(results: Path) -> tuple[list[Path], list[str]]:
    """Every figure of ``results``: (PNGs written, one line per figure that could not be written)."""
    written, problems = [], []
    for path in sorted(Path(results).glob("search_quality-*.json")):
        try:
            written.append(write_search_quality_png(path))
        except (RuntimeError, ValueError, ImportError, OSError) as e:  # no kaleido / Chrome: say so, go on
            first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
            problems.append(f"{path.name}: no figure ({e.__class__.__name__}: {first})")
    return written, problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    written, problems = write_figures(args.results)
    for path in written:
        print(f"wrote {path}")
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
