"""Figures only: :class:`autokd.pareto.ParetoInfo` in, plotly figures and one HTML page out.

Nothing here reads a study or computes a front; :mod:`autokd.pareto` does. The page is
self-contained (plotly.js inlined once, no CDN, no network) and has seven views with stable ids:
``accuracy-vs-macs``, ``hypervolume`` (by trial number), ``hypervolume-vs-compute`` (by compute
spent), ``promotions`` (an HTML table: per rung, the trials that went on and those stopped),
``lambda-heatmap`` (with the kept-channel bars of the selected front member), ``importances`` and
``parallel-coordinates``; a front on latency (``autokd pareto --cost latency``, or a study searched on it)
puts ``accuracy-vs-latency`` (:data:`LATENCY_VIEW`) first.
"""
from __future__ import annotations

import html
from typing import TYPE_CHECKING

from .measure import COST_UNIT_TITLE, flops_from_macs
from .pareto import ParetoInfo, finish_order, kept_ratios, lambda_matrix

if TYPE_CHECKING:
    import plotly.graph_objects as go

VIEWS = ("accuracy-vs-macs", "hypervolume", "hypervolume-vs-compute", "promotions", "lambda-heatmap", "importances",
         "parallel-coordinates")
LATENCY_VIEW = "accuracy-vs-latency"
FRONT, DOMINATED, STOPPED, REJECTED, TEACHER = "#1f77b4", "#9ecae1", "#ff7f0e", "#d62728", "#2ca02c"
CONFIG = {"displaylogo": False, "responsive": True}


UNITS = ((1e9, "G", "billions"), (1e6, "M", "millions"), (1e3, "K", "thousands"), (1.0, "", "count"))


def _unit(info: ParetoInfo) -> tuple[float, str, str]:
    """The MACs scale for the axes: G, M or K, whichever keeps the largest value readable."""
    largest = max([info.budget_macs or 0, info.teacher.get("macs") or 0,
                   *(p["macs"] or 0 for p in info.completed + info.stopped + info.rejected)])
    return next(u for u in UNITS if largest >= 10 * u[0] or u[0] == 1.0)


def _settings(p: dict) -> str:
    """A trial's settings as hover lines (plotly's <br> markup; values are escaped)."""
    c = p.get("candidate") or {}
    prune = ", ".join(f"{k} {float(v):g}" for k, v in (c.get("prune") or {}).items()) or "none"
    lam = sorted((p.get("lambdas") or {}).items(), key=lambda kv: -float(kv[1]))[:4]  # as run (autokd.pareto)
    lam_s = ", ".join(f"{k.replace('->', '→')} {float(w):.2f}" for k, w in lam) or "none"
    lines = [
        f"student {c.get('student', '?')} × {c.get('width', 1):g}",
        f"prune {prune} ({c.get('prune_method', '?')}, at {c.get('prune_at', '?')})",
        f"KD {c.get('kd_loss', '?')}, β {float(c.get('beta', 0)):.2f}, T {float(c.get('temperature', 0)):.2f}, "
        f"{c.get('schedule', '?')}",
        f"top λ: {lam_s}" + (f" (pairs {c['pairs']} at {float(c.get('pair_weight', 1)):.2f})" if c.get("pairs") else ""),
        f"epochs {c.get('epochs', '?')}, lr {float(c.get('lr', 0)):.3g}",
    ]
    return "<br>".join(html.escape(s, quote=False) for s in lines)


def _hover(info: ParetoInfo, p: dict, what: str) -> str:
    acc = "—" if p["val_accuracy"] is None else f"{100 * p['val_accuracy']:.2f}%"
    share = "" if p.get("share_of_teacher") is None else f" ({100 * p['share_of_teacher']:.1f}% of teacher)"
    head = f"<b>trial {p['number']}</b> — {what}<br>val acc {acc}<br>{p['macs'] or 0:,} MACs{share}"
    if p.get("latency_ms") is not None:
        head += f"<br>{p['latency_ms']:.3f} ms predicted" + (
            f", {p['measured_latency_ms']:.3f} ms measured" if p.get("measured_latency_ms") is not None else "")
    if p.get("params"):
        head += f"<br>{p['params']:,} params"
    tail = ""
    if what in ("front", "dominated", "stopped early"):
        tail = f"<br><i>autokd export {html.escape(info.study)} --trial {p['number']}</i>"
    return f"{head}<br>{_settings(p)}{tail}"


def _scatter(points: list[dict], info: ParetoInfo, name: str, what: str, x: str = "macs", **style) -> "go.Scatter":
    import plotly.graph_objects as go

    scale = _unit(info)[0] if x == "macs" else 1.0
    return go.Scatter(x=[p[x] / scale for p in points],
                      y=[100 * (p["val_accuracy"] or 0.0) for p in points],
                      text=[_hover(info, p, what) for p in points], hoverinfo="text", name=name, **style)


# ------------------------------------------------------------------ (a) accuracy vs MACs
def accuracy_vs_macs(info: ParetoInfo) -> "go.Figure":
    import plotly.graph_objects as go

    scale, prefix, words = _unit(info)
    fig = go.Figure()
    fig.add_trace(_scatter(info.dominated, info, f"dominated ({len(info.dominated)})", "dominated",
                           mode="markers", marker=dict(color=DOMINATED, size=8, opacity=0.6)))
    stopped = [p for p in info.stopped if p["macs"] is not None]
    fig.add_trace(_scatter(stopped, info, f"stopped early ({len(info.stopped)}), last val acc", "stopped early",
                           mode="markers", marker=dict(color=STOPPED, size=9, symbol="x-thin-open",
                                                       line=dict(width=2, color=STOPPED))))
    rejected = [p for p in info.rejected if p["macs"] is not None]
    fig.add_trace(_scatter(rejected, info, f"rejected: over budget, never trained ({len(info.rejected)})",
                           "rejected (over budget, never trained)", mode="markers",
                           marker=dict(color=REJECTED, size=8, symbol="triangle-down-open")))
    on_macs = info.cost == "macs"   # a front on latency is no staircase in MACs: its members only
    fig.add_trace(_scatter(info.front, info, f"Pareto front ({len(info.front)})" if on_macs else
                           f"front on latency ({len(info.front)})", "front",
                           mode="lines+markers" if on_macs else "markers", line=dict(color=FRONT, width=2, shape="hv"),
                           marker=dict(color=FRONT, size=11, line=dict(width=1, color="white"))))
    t = info.teacher
    if t.get("macs") and t.get("val_accuracy") is not None:
        fig.add_trace(go.Scatter(
            x=[t["macs"] / scale], y=[100 * t["val_accuracy"]], mode="markers+text", name=f"teacher {t.get('arch')}",
            text=[f"teacher {t.get('arch')}"], textposition="top left",
            marker=dict(symbol="star", size=16, color=TEACHER),
            hovertext=[f"<b>teacher {t.get('arch')}</b><br>val acc {100 * t['val_accuracy']:.2f}%"
                       f"<br>{t['macs']:,} MACs"], hoverinfo="text"))
    for ref in info.references:
        fig.add_trace(go.Scatter(x=[ref["macs"] / scale], y=[100 * ref["val_accuracy"]], mode="markers",
                                 name=ref["label"], marker=dict(symbol="diamond", size=12, color="#7f7f7f"),
                                 hovertext=[ref["label"]], hoverinfo="text"))
    if info.budget_macs:
        fig.add_vline(x=info.budget_macs / scale, line=dict(color=REJECTED, dash="dash"),
                      annotation_text=f"budget {info.budget_macs / scale:.4g} {prefix + ' ' if prefix else ''}MACs"
                                      + (f" ({info.budget_text})" if info.budget_text else ""),
                      annotation_position="top right")
    fig.update_layout(title="Validation accuracy vs cost (rejected trials drawn at 0%: never trained)",
                      xaxis_title=f"{prefix + ' ' if prefix else ''}MACs ({words}; conv+linear multiply-accumulates)",
                      xaxis_rangemode="tozero",
                      yaxis_title="validation accuracy (%)", height=560, hovermode="closest",
                      legend=dict(orientation="h", y=-0.18))
    return fig


def accuracy_vs_latency(info: ParetoInfo) -> "go.Figure":
    """The front on predicted latency (ms), the budget line in ms, the teacher at its predicted ms; a
    trial's measured latency (where the search timed it) is in its hover text."""
    import plotly.graph_objects as go

    lat = info.latency or {}
    fig = go.Figure()
    fig.add_trace(_scatter(info.dominated, info, f"dominated ({len(info.dominated)})", "dominated", x="latency_ms",
                           mode="markers", marker=dict(color=DOMINATED, size=8, opacity=0.6)))
    for group, name, what, marker in (
            (info.stopped, "stopped early", "stopped early", dict(color=STOPPED, size=9, symbol="x-thin-open",
                                                                 line=dict(width=2, color=STOPPED))),
            (info.rejected, "rejected: over budget, never trained", "rejected (over budget, never trained)",
             dict(color=REJECTED, size=8, symbol="triangle-down-open"))):
        shown = [p for p in group if p.get("latency_ms") is not None]
        fig.add_trace(_scatter(shown, info, f"{name} ({len(shown)})", what, x="latency_ms", mode="markers",
                               marker=marker))
    fig.add_trace(_scatter(info.front, info, f"Pareto front ({len(info.front)})", "front", x="latency_ms",
                           mode="lines+markers", line=dict(color=FRONT, width=2, shape="hv"),
                           marker=dict(color=FRONT, size=11, line=dict(width=1, color="white"))))
    t = info.teacher
    if lat.get("teacher_ms") and t.get("val_accuracy") is not None:
        fig.add_trace(go.Scatter(x=[lat["teacher_ms"]], y=[100 * t["val_accuracy"]], mode="markers+text",
                                 name=f"teacher {t.get('arch')}", text=[f"teacher {t.get('arch')}"],
                                 textposition="top left", marker=dict(symbol="star", size=16, color=TEACHER),
                                 hovertext=[f"<b>teacher {t.get('arch')}</b><br>{lat['teacher_ms']:.3f} ms predicted"],
                                 hoverinfo="text"))
    if info.budget_ms:
        fig.add_vline(x=info.budget_ms, line=dict(color=REJECTED, dash="dash"), annotation_position="top right",
                      annotation_text=f"budget {info.budget_ms:.3f} ms ({lat.get('latency_budget_text', '')})")
    fig.update_layout(title=f"Validation accuracy vs predicted latency ({html.escape(str(lat.get('label', '')))})",
                      xaxis_title="predicted latency per inference (ms)", xaxis_rangemode="tozero",
                      yaxis_title="validation accuracy (%)", height=560, hovermode="closest",
                      legend=dict(orientation="h", y=-0.18))
    return fig


# ------------------------------------------------------------------ (b) hypervolume
def hypervolume(info: ParetoInfo) -> "go.Figure":
    import plotly.graph_objects as go

    xs = [n for n, _ in info.hypervolume_history]
    ys = [hv for _, hv in info.hypervolume_history]
    ref = info.hypervolume_reference_macs
    unit = f"{ref or 0:.3f} ms; ms" if info.cost == "latency" else f"{ref or 0:,} MACs; MACs"
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="lines+markers", line=dict(shape="hv", color=FRONT),
                               hovertemplate="after trial %{x}: hypervolume %{y:.4f}<extra></extra>"))
    fig.update_layout(
        title=(f"Hypervolume of the front after each completed trial (reference: accuracy 0, "
               f"{unit} / reference, so at most 1)"),
        xaxis_title="trial number", yaxis_title="hypervolume", yaxis_range=[0, 1], height=380,
        xaxis=dict(range=[min(xs, default=0) - 0.5, max(xs, default=0) + 0.5], tick0=0,
                   dtick=max(1, (max(xs, default=0) + 9) // 10)))  # whole trial numbers, none clipped
    return fig


def hypervolume_by_compute(info: ParetoInfo) -> "go.Figure":
    """Hypervolume of the completed trials against the compute every finished trial spent, from
    (0, 0), one step per trial in the order they finished (stopped and failed ones spend, too)."""
    import plotly.graph_objects as go

    steps = info.hypervolume_by_compute
    done = finish_order(info.completed + info.stopped + info.failed)  # the order of `steps`
    xs, ys = [0.0, *(c for c, _ in steps)], [0.0, *(hv for _, hv in steps)]
    text = ["start"] + [f"after trial {p['number']} ({p['state']}, {p['compute']:.3g} epoch-equivalents)"
                        for p in done]
    fig = go.Figure(go.Scatter(x=xs, y=ys, text=text, mode="lines+markers", line=dict(shape="hv", color=FRONT),
                               hovertemplate="%{text}<br>%{x:.3g} spent: hypervolume %{y:.4f}<extra></extra>"))
    note = (f"; {info.compute_from_epochs} trial(s) without recorded compute counted as their training epochs"
            if info.compute_from_epochs else "")
    fig.update_layout(title=f"Hypervolume against compute spent ({info.compute_spent:.4g} epoch-equivalents in all{note})",
                      xaxis_title="compute spent (epoch-equivalents)", yaxis_title="hypervolume",
                      xaxis_rangemode="tozero", yaxis_range=[0, 1], height=380)
    return fig


def _trials(numbers: list[int]) -> str:
    """``2: 0, 2`` (how many, then which trials); ``none``, not a ``0`` that reads as trial 0."""
    return f"{len(numbers)}: " + ", ".join(map(str, numbers)) if numbers else "none"


def promotions_table(info: ParetoInfo) -> str:
    """Per rung of the fidelity ladder (an epoch): the trials it let go on and those it stopped."""
    if not info.promotions:
        return ('<div id="promotions"><p class="note">This study records no rung promotions (a study from '
                "before the fidelity ladder, or no trial promoted yet).</p></div>")
    rows = "".join(f"<tr><td>{rung}</td><td>{_trials(r['promoted'])}</td><td>{_trials(r['stopped'])}</td></tr>"
                   for rung, r in info.promotions.items())
    return ('<div id="promotions"><table><thead><tr><th>rung (epoch)</th><th>went on (trials)</th>'
            f"<th>stopped there (trials)</th></tr></thead><tbody>{rows}</tbody></table></div>")


# ------------------------------------------------------------------ (c) lambda_ij and kept channels
def lambda_heatmap(info: ParetoInfo) -> "go.Figure":
    """One heatmap of lambda_ij (teacher point i x student point j) and one bar chart of kept
    channel shares, for the front member chosen in the dropdown (the first, the cheapest, shown)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    front = info.front
    n_t = max([1, *(len(lambda_matrix(p)) for p in front)])  # a point's "lambdas": every lambda_ij as run
    n_s = max([1, *(len((lambda_matrix(p) or [[]])[0]) for p in front)])
    keys = sorted({k for p in front for k in (p["candidate"].get("prune") or {})}) or ["*"]
    mats = [lambda_matrix(p, n_t, n_s) for p in front]
    kept = [kept_ratios(p["candidate"], keys) for p in front]
    rows = [f"t{i}" for i in range(1, n_t + 1)]
    cols = [f"s{j}" for j in range(1, n_s + 1)]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.12,
                        subplot_titles=("λ_ij: teacher point i → student point j",
                                        "channels kept per pruned layer/stage (1 − prune ratio)"))
    first = mats[0] if mats else [[0.0] * n_s for _ in range(n_t)]
    zmax = max([1.0, *(w for m in mats for row in m for w in row)])
    fig.add_trace(go.Heatmap(z=first, x=cols, y=rows, zmin=0, zmax=zmax, colorscale="Blues",
                             colorbar=dict(x=0.5, title="λ"),
                             texttemplate="%{z:.2f}",
                             hovertemplate="teacher %{y} → student %{x}: λ = %{z:.3f}<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Bar(x=keys, y=[kept[0][k] for k in keys] if kept else [1.0] * len(keys),
                         marker_color=FRONT, hovertemplate="%{x}: %{y:.0%} kept<extra></extra>",
                         showlegend=False), row=1, col=2)
    fig.update_yaxes(autorange="reversed", title_text="teacher point", row=1, col=1)
    fig.update_xaxes(title_text="student point", row=1, col=1)
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%", row=1, col=2)
    buttons = [dict(method="restyle", label=f"trial {p['number']}: {100 * p['val_accuracy']:.2f}%, "
                                            f"{p['macs']:,} MACs",
                    args=[{"z": [m, None], "y": [rows, [k_[k] for k in keys]]}, [0, 1]])
               for p, m, k_ in zip(front, mats, kept)]
    fig.update_layout(
        title="Distillation weights and pruning of a front member" + ("" if front else " (no front yet)"),
        height=470, updatemenus=[dict(buttons=buttons, direction="down", x=0.0, xanchor="left", y=1.22,
                                      yanchor="top", showactive=True)] if buttons else [],
        margin=dict(t=120))
    return fig


# ------------------------------------------------------------------ (d) importances, parallel coordinates
def importances(info: ParetoInfo) -> "go.Figure":
    import plotly.graph_objects as go

    items = sorted(info.importances.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h",
                           marker_color=FRONT, hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    fig.update_layout(title="Parameter importances for validation accuracy (Optuna fANOVA, normalised to 1)",
                      xaxis_title="importance", height=max(320, 24 * len(items) + 140))
    if not items:
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        fig.add_annotation(text=html.escape(info.importances_note or "no importances"), showarrow=False,
                           x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


MAX_AXES = 8  # parameter axes of the parallel coordinates: past about 8, their labels overlap


def axes(values: dict[str, list], importances: dict[str, float], most: int = MAX_AXES) -> list[str]:
    """The parameters worth an axis: those that vary across the trials, the most important first
    (then by name), at most ``most`` of them."""
    varying = [name for name, vs in values.items() if len({str(v) for v in vs}) > 1]
    return sorted(varying, key=lambda name: (-importances.get(name, 0.0), name))[:most]


def parallel_coordinates(info: ParetoInfo) -> "go.Figure":
    """Completed trials: the parameters that matter most (``axes``), MACs and val accuracy; colour = accuracy."""
    import plotly.graph_objects as go

    done = info.completed
    common = sorted(set.intersection(*(set(p["trial_params"]) for p in done))) if done else []
    values = {name: [p["trial_params"][name] for p in done] for name in common}
    names = axes(values, info.importances or {})
    dims = []
    for name in names:
        column = values[name]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in column):
            dims.append(dict(label=name, values=[float(v) for v in column]))
        else:
            labels = sorted({str(v) for v in column})
            dims.append(dict(label=name, values=[labels.index(str(v)) for v in column],
                             tickvals=list(range(len(labels))), ticktext=labels))
    acc = [100 * p["val_accuracy"] for p in done]
    scale, prefix, _ = _unit(info)
    dims.append(dict(label=f"{prefix + ' ' if prefix else ''}MACs", values=[p["macs"] / scale for p in done]))
    dims.append(dict(label="val acc (%)", values=acc))
    fig = go.Figure(go.Parcoords(dimensions=dims, line=dict(color=acc, colorscale="Viridis", showscale=True,
                                                             colorbar=dict(title="val acc %"))))
    order = ", the most important" if info.importances else ""
    fig.data[0].labelangle = -20
    fig.update_layout(title=f"Sampled parameters vs validation accuracy (completed trials; {len(names)} of "
                            f"{len(common)} parameters: those that vary{order})", height=560,
                      margin=dict(l=80, r=80, t=150))
    return fig


# ------------------------------------------------------------------ the page
def _front_table(info: ParetoInfo) -> str:
    rows = []
    for p in info.front:
        c = p["candidate"]
        share = "—" if p["share_of_teacher"] is None else f"{100 * p['share_of_teacher']:.1f}"
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            p["number"], f"{100 * p['val_accuracy']:.2f}", f"{p['macs']:,}", share,
            "—" if not p["params"] else f"{p['params']:,}", c.get("student", "?"),
            f"{c.get('width', 1):g}", c.get("prune_method", ""),
            f"autokd export {info.study} --trial {p['number']}")) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("trial", "val acc %", "MACs", "% of teacher", "params",
                                             "student", "width", "prune method", "export"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>autokd study {study}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
section {{ margin: 28px 0; }} .note {{ color: #555; }}
table {{ border-collapse: collapse; font-size: 14px; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; }}
code, td:last-child {{ font-family: ui-monospace, monospace; }}
</style></head><body>
<h1>autokd study <code>{study}</code></h1>
<p>{summary}</p>
<p class="note">Cost unit: {unit}. Validation accuracy ranks the trials; the test set is used only by
<code>autokd export</code>, once, for the chosen student.</p>
<section id="front-table"><h2>Pareto front</h2>{table}</section>
{views}
</body></html>
"""


def dashboard_html(info: ParetoInfo) -> str:
    """One self-contained HTML page (plotly.js inlined once, no CDN) with the seven views."""
    latency = [(LATENCY_VIEW, "Accuracy vs predicted latency", accuracy_vs_latency(info))] \
        if info.cost == "latency" else []
    figures = [*latency, ("accuracy-vs-macs", "Accuracy vs MACs", accuracy_vs_macs(info)),
               ("hypervolume", "Hypervolume over trials", hypervolume(info)),
               ("hypervolume-vs-compute", "Hypervolume against compute spent", hypervolume_by_compute(info)),
               ("promotions", "Rung promotions", promotions_table(info)),
               ("lambda-heatmap", "λ_ij and kept channels of a front member", lambda_heatmap(info)),
               ("importances", "Parameter importances", importances(info)),
               ("parallel-coordinates", "Parameters vs accuracy", parallel_coordinates(info))]
    views = []
    for i, (div_id, title, fig) in enumerate(figures):
        body = fig if isinstance(fig, str) else fig.to_html(full_html=False, include_plotlyjs=(i == 0),
                                                            div_id=div_id, config=CONFIG)
        views.append(f'<section id="section-{div_id}"><h2>{html.escape(title)}</h2>{body}</section>')
    c = info.counts()
    t = info.teacher
    summary = (f"dataset <b>{html.escape(str(info.dataset))}</b>, teacher <b>{html.escape(str(t.get('arch')))}</b>"
               + (f" ({t['macs']:,} MACs)" if t.get("macs") else "")
               + (f", budget <b>{info.budget_macs:,} MACs</b> ({flops_from_macs(info.budget_macs):,} FLOPs"
                  + (f", {html.escape(info.budget_text)}" if info.budget_text else "") + ")" if info.budget_macs else "")
               + f". Trials: {c['done']} done ({c['front']} on the front), {c['stopped']} stopped early, "
               f"{c['rejected']} rejected (over budget), {c['failed']} failed"
               + (f", {c['running']} running" if c["running"] else "")
               + f". Hypervolume {info.hypervolume:.4f}"
               + (f", compute spent {info.compute_spent:.4g} epoch-equivalents" if info.compute_spent else "") + ".")
    return PAGE.format(study=html.escape(info.study), summary=summary, unit=html.escape(COST_UNIT_TITLE),
                       table=_front_table(info), views="\n".join(views))
