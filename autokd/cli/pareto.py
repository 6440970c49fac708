"""``autokd pareto`` and ``autokd export``: thin commands over :mod:`autokd.pareto`,
:mod:`autokd.plots` and :mod:`autokd.export`.

``cli.app`` registers them with ``app.command()(pareto)`` and ``app.command()(export)``; no Typer
app lives here. A study that does not exist, has no completed trial, or a point that cannot be
chosen is one line on stderr, exit 2, and nothing written.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..candidate import pruning_text
from ..errors import UserError
from ..export import FINETUNE_RECIPE, FINETUNE_RECIPES, export_student
from ..measure import COST_UNIT_TITLE
from ..pareto import pareto_info
from ..plots import dashboard_html
from ..provenance import resolve_device
from ..search import SearchConfig, store
from ..search.objective import study_pricer
from ..search.record import StudyRecord
from ..timing import Setting
from ..student import DistillJob
from .common import epoch_printer, err, out, user_errors, wide
from .options import default, option

DASHBOARDS = Path("dashboards")


def _write_text(path: Path, text: str) -> None:
    """Atomically (temp file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


NUMBERS = ("trial", "val acc %", "MACs (M)", "% of teacher", "params (M)")


def settings_text(c: dict) -> str:
    """A front point's candidate in one line: student, pruning, distillation."""
    return (f"{c.get('student', '?')} {c.get('init', 'scratch')} width {c.get('width', 1):g}; "
            f"{pruning_text(c)}; β {float(c.get('beta', 0)):.2f}, "
            f"T {float(c.get('temperature', 0)):.2f}, {c.get('schedule', '')}")


LATENCY_COLUMNS = ("predicted ms", "measured ms")


def _ms(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def front_table(info) -> Table:
    """The numbers never wrap or shrink; the settings column takes what width is left, and wraps.
    A front on latency adds the predicted and (where the search timed it) measured milliseconds."""
    on_ms = info.cost == "latency"
    unit = f"front on predicted latency: {info.latency['label']}; " if on_ms else ""
    table = Table(title=f"Pareto front of {info.study} ({unit}{COST_UNIT_TITLE})")
    for col in NUMBERS + (LATENCY_COLUMNS if on_ms else ()):
        table.add_column(col, justify="right", no_wrap=True, min_width=max(len(w) for w in col.split()))
    table.add_column("student, pruning, distillation", overflow="fold")
    for p in info.front:
        ms = (_ms(p["latency_ms"]), _ms(p.get("measured_latency_ms"))) if on_ms else ()
        table.add_row(str(p["number"]), f"{100 * p['val_accuracy']:.2f}", f"{p['macs'] / 1e6:.4f}",
                      "-" if p["share_of_teacher"] is None else f"{100 * p['share_of_teacher']:.1f}",
                      "-" if not p["params"] else f"{p['params'] / 1e6:.4f}", *ms, settings_text(p["candidate"]))
    return table


def study_info(study: str, cost: str | None = None, runtime: str = "onnxruntime", threads: int = 1, batch: int = 1):
    """:func:`pareto_info` of ``study`` on the ``cost`` axis; a study searched on MACs is priced in ms by
    this machine's predictor of (``runtime``, ``threads``, ``batch``) on the study's input."""
    st = store.load(study)
    rec = StudyRecord.of(st)
    price = None
    if cost == "latency" and rec.cost != "latency":
        if not rec.input_shape or not rec.num_classes:
            raise UserError(f"study {study!r} does not record its input shape; it cannot be priced in ms")
        setting = Setting(runtime=runtime, threads=threads, batch=batch, input_shape=tuple(rec.input_shape))
        price = study_pricer(setting, int(rec.num_classes))
    return pareto_info(st, store.read_config(study), cost=cost, price=price)


@user_errors
def pareto(
    study: Annotated[str, typer.Argument(help="study name under studies/ (see `autokd studies`)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the front and all points as JSON, nothing else")] = False,
    out_path: Annotated[Optional[Path], typer.Option("--out", help="dashboard HTML (default dashboards/STUDY.html)")] = None,
    no_html: Annotated[bool, typer.Option("--no-html", help="do not write the dashboard")] = False,
    cost: Annotated[Optional[str], typer.Option(
        help="the front's cost axis: macs | latency (predicted ms; a study searched on MACs is priced by this "
             "machine's `autokd latency calibrate`); default: the study's own")] = None,
    latency_runtime: Annotated[str, option(SearchConfig, "latency_runtime", help="with --cost latency")] = default(
        SearchConfig, "latency_runtime"),
    latency_threads: Annotated[int, option(SearchConfig, "latency_threads")] = default(SearchConfig, "latency_threads"),
    latency_batch: Annotated[int, option(SearchConfig, "latency_batch")] = default(SearchConfig, "latency_batch"),
) -> None:
    """The Pareto front of a study (accuracy vs MACs, or vs latency) as a table, and a self-contained HTML dashboard."""
    info = study_info(study, cost, latency_runtime, latency_threads, latency_batch)
    if not info.front:
        c = info.counts()
        raise UserError(f"study {study!r} has no completed trial yet ({c['stopped']} stopped, "
                        f"{c['rejected']} rejected, {c['failed']} failed, {c['running']} running)")
    target = out_path or DASHBOARDS / f"{study}.html"
    if not no_html:
        _write_text(target, dashboard_html(info))
    if as_json:
        print(json.dumps(info.as_dict(), indent=2, default=str))
        if not no_html:
            err.print(f"dashboard: {target}", highlight=False)
        return
    c = info.counts()
    wide().print(front_table(info))
    ref = (f"{info.budget_ms:.3f} ms" if info.budget_ms else f"teacher {info.latency['teacher_ms']:.3f} ms") \
        if info.cost == "latency" else f"budget {info.budget_macs or 0:,} MACs"
    out.print(f"{c['done']} done ({c['front']} on the front), {c['stopped']} stopped early, {c['rejected']} rejected "
              f"(over budget), {c['failed']} failed; hypervolume {info.hypervolume:.4f} ({ref})", highlight=False)
    if info.compute_spent:
        counted = (f" ({info.compute_from_epochs} trial(s) with no recorded compute counted as training epochs)"
                   if info.compute_from_epochs else "")
        out.print(f"compute spent: {info.compute_spent:.4g} epoch-equivalents{counted}", highlight=False)
    if not no_html:
        out.print(f"dashboard: {target}", highlight=False)
    under = "0.05ms" if info.cost == "latency" else "30%"
    out.print(f"export one: autokd export {study} --best | --trial N | --under {under}", highlight=False)


@user_errors
def export(
    study: Annotated[str, typer.Argument(help="study name under studies/")],
    best: Annotated[bool, typer.Option(
        "--best", help="the most accurate student within the budget (also what export picks without --trial or --under)")] = False,
    trial: Annotated[Optional[int], typer.Option("--trial", help="this trial number (completed or stopped)")] = None,
    under: Annotated[Optional[str], typer.Option(
        "--under", help="most accurate with MACs <= 30% / 0.3 of the teacher's, with FLOPs <= 10M, or with a "
                        "predicted latency <= 1.0ms (a study searched on latency)")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="folder (default students/STUDY-tN)")] = None,
    epochs: Annotated[Optional[int], typer.Option(
        "--epochs", help="train the chosen candidate again from its start for this many epochs, instead of "
                         "using the weights its trial trained")] = None,
    finetune_epochs: Annotated[int, typer.Option(
        help="then keep training the chosen student this many more epochs (0: none), with --finetune-recipe")] = 0,
    finetune_recipe: Annotated[str, typer.Option(
        help="what --finetune-epochs trains with: " + "; ".join(f"{k}: {v}" for k, v in FINETUNE_RECIPES.items()))
    ] = FINETUNE_RECIPE,
    train_subset: Annotated[Optional[int], option(
        DistillJob, "train_subset", help="for --finetune-epochs; default: the whole training split")] = None,
    device: Annotated[str, option(DistillJob, "device", help="with --epochs or --finetune-epochs")] = default(
        DistillJob, "device"),
) -> None:
    """Export one student: safetensors bundle, TorchScript, ONNX (checked against PyTorch) and a card."""
    if sum([best, trial is not None, under is not None]) > 1:
        raise UserError("choose one of --best, --trial N, --under COST")
    folder = export_student(study, best=best, trial=trial, under=under, out=out_dir, epochs=epochs,
                            finetune_epochs=finetune_epochs, train_subset=train_subset,
                            finetune_recipe=finetune_recipe, device=resolve_device(device), printer=lambda m: out.print(m, highlight=False),
                            progress=epoch_printer("student"))
    card = json.loads((folder / "card.json").read_text())
    lat = card["cpu_latency_ms"]
    out.print(f"trial {card['trial']} ({card['arch']}): test accuracy {100 * card['test_accuracy']:.2f}%  "
              f"val {100 * card['val_accuracy']:.2f}%  MACs {card['macs']:,} ({card['flops']:,} FLOPs)  "
              f"params {card['params']:,}  CPU latency {lat['student']:.3f} ms (teacher {lat['teacher']:.3f} ms)",
              highlight=False)
    if card.get("latency"):
        lat_ms, m = card["latency"], card["latency"]["measured"]
        guess = "" if lat_ms.get("predicted_ms") is None else f", predicted {lat_ms['predicted_ms']:.3f} ms"
        out.print(f"latency ({lat_ms['label']}): measured {m['median_ms']:.3f} ms (quartiles {m['q1_ms']:.3f}-"
                  f"{m['q3_ms']:.3f}){guess}", highlight=False)
    ft = card.get("finetune") or {}
    if ft.get("epochs"):
        out.print(f"fine-tuned {ft['epochs']} epochs on {ft['train_images']:,} images ({ft['recipe']['name']}): "
                  f"test accuracy "
                  f"{100 * ft['test_accuracy_before']:.2f}% -> {100 * ft['test_accuracy_after']:.2f}%", highlight=False)
    out.print(f"wrote {folder}: {', '.join(card['files'])}", highlight=False)
