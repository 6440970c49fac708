"""The ``autokd`` command line: thin typer commands, each calling one library function.

A user mistake (``UserError``) is printed as one line on stderr with exit code 2, never a
traceback. Heavy imports (ray, plotly, optuna) happen inside the commands that need them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .cli_common import check_positive, epoch_printer, err, out, parse_shape, user_errors

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="autokd: search knowledge distillation and structured pruning together.")
@app.command()
@user_errors
def models(
    input: Annotated[str, typer.Option("--input", help="input shape CxHxW")] = "3x32x32",
    num_classes: Annotated[int, typer.Option(help="classifier outputs")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Every architecture in the zoo with its MACs and params."""
    from .models import MODELS, create_model
    from .measure import measure

    c, h, w = parse_shape(input)
    rows = []
    for name in MODELS:
        model = create_model(name, num_classes=num_classes, in_channels=c)
        cost = measure(model, (c, h, w))
        rows.append({"name": name, **cost.as_dict(), "points": model.points,
                     "input": f"{c}x{h}x{w}", "doc": (MODELS.get(name).__doc__ or "").strip()})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"autokd zoo on {c}x{h}x{w}, {num_classes} classes (MACs = conv+linear multiply-accumulates; FLOPs = 2 x MACs)")
    for col in ("model", "MACs (M)", "FLOPs (M)", "params (M)", "distillation points"):
        table.add_column(col, justify="right" if "(" in col else "left")
    for r in rows:
        table.add_row(r["name"], f"{r['macs'] / 1e6:.2f}", f"{r['flops'] / 1e6:.2f}",
                      f"{r['params'] / 1e6:.3f}", ", ".join(r["points"]))
    out.print(table)


@app.command()
@user_errors
def datasets(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every dataset, and whether it is available offline here."""
    from .data import dataset_status

    rows = dataset_status()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="autokd datasets")
    for col in rows[0]:
        table.add_column(str(col))
    for r in rows:
        table.add_row(*[("yes" if v is True else "no" if v is False else str(v)) for v in r.values()])
    out.print(table)
    out.print("Also: imagefolder:PATH for your own images (one sub-folder per class; optional train/ and test/).")


@app.command()
@user_errors
def train(
    arch: Annotated[str, typer.Argument(help="a zoo architecture, see `autokd models`")],
    dataset: Annotated[str, typer.Option(help="see `autokd datasets`")] = "digits",
    epochs: Annotated[int, typer.Option(help="training epochs")] = 15,
    width: Annotated[float, typer.Option(help="width multiplier")] = 1.0,
    lr: Annotated[float, typer.Option(help="peak learning rate (cosine schedule)")] = 0.05,
    seed: Annotated[int, typer.Option(help="init, data order and split seed")] = 0,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="write the bundle here instead of the cache")] = None,
    force: Annotated[bool, typer.Option(help="retrain even if a cached teacher exists")] = False,
) -> None:
    """Train a zoo model from scratch (a teacher) and cache it as safetensors + a JSON card."""
    from .data import load_dataset
    from .models import MODELS
    from .provenance import default_device
    from .teacher import cache_dir, get_teacher, train_model
    from .bundle import save_bundle
    from .train import TrainConfig

    MODELS.get(arch)
    check_positive(epochs=epochs, width=width, lr=lr)
    data = load_dataset(dataset, seed=seed)
    cfg = TrainConfig(epochs=epochs, lr=lr, seed=seed)
    target = out_dir or cache_dir(arch, data.name, cfg, width)
    if force or out_dir:
        model, card = train_model(arch, data, cfg, width=width, progress=epoch_printer(arch), device=default_device())
        save_bundle(model, target, card)
    else:
        model, card = get_teacher(arch, data, cfg, width=width, progress=epoch_printer(arch),
                                  device=default_device(), on_train=out.print)
    out.print(f"[bold]{arch}[/] on {data.name}: test accuracy {100 * card['test_accuracy']:.2f}%  "
              f"val {100 * card['val_accuracy']:.2f}%  MACs {card['macs'] / 1e6:.3f} M  "
              f"params {card['params'] / 1e6:.3f} M", highlight=False)
    out.print(f"saved: {target}", highlight=False)


@app.command()
@user_errors
def search(
    teacher: Annotated[str, typer.Option(help="architecture name (trained once, cached) or a bundle path")] = "resnet56",
    flops_budget: Annotated[str, typer.Option(help="share of the teacher's cost (40%, 0.4) or FLOPs (100M)")] = "40%",
    dataset: Annotated[str, typer.Option(help="see `autokd datasets`")] = "digits",
    space: Annotated[Optional[str], typer.Option(help="search space YAML (default: the teacher family's)")] = None,
    study: Annotated[Optional[str], typer.Option(help="study name under studies/ (default TEACHER-DATASET)")] = None,
    trials: Annotated[int, typer.Option(help="trained trials wanted in total (resumes count)")] = 12,
    parallel: Annotated[int, typer.Option(help="trials at once")] = 2,
    epochs: Annotated[int, typer.Option(help="epochs per trial")] = 5,
    teacher_epochs: Annotated[int, typer.Option(help="epochs for a named teacher trained on first use")] = 15,
    sampler: Annotated[str, typer.Option(help="tpe | nsga2 | random")] = "tpe",
    seed: Annotated[int, typer.Option(help="study seed (sampler, splits, trial seeds)")] = 0,
    address: Annotated[Optional[str], typer.Option(help="join a Ray cluster (`ray start --head`), HOST:PORT")] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs (and torch threads) per trial")] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option(help="GPUs per trial (fractions share a GPU)")] = 0.0,
    early_stopping: Annotated[bool, typer.Option(help="stop trials dominated at a rung (two objectives)")] = True,
    train_subset: Annotated[Optional[int], typer.Option(help="train on the first N training images only")] = None,
) -> None:
    """Search students: distillation and pruning settings against accuracy and MACs, under a budget."""
    from .search import SearchConfig, search as run_search

    cfg = SearchConfig(teacher=teacher, dataset=dataset, flops_budget=flops_budget, space=space, study=study,
                       trials=trials, parallel=parallel, epochs=epochs, teacher_epochs=teacher_epochs,
                       sampler=sampler, seed=seed, address=address, cpus_per_trial=cpus_per_trial,
                       gpus_per_trial=gpus_per_trial, early_stopping=early_stopping, train_subset=train_subset)
    try:
        result = run_search(cfg, printer=lambda m: out.print(m, highlight=False))
    except KeyboardInterrupt:
        name = cfg.study or "the study"
        err.print(f"interrupted: finished trials are saved; running ones were recorded as failed. "
                  f"Resume with the same command (study {name}).")
        raise typer.Exit(130)
    print_front(result.study_name)


def print_front(name: str) -> None:
    """The front as a table (the one `autokd pareto` prints), and where the study lives."""
    from . import study as studies
    from .cli_pareto import front_table
    from .pareto import pareto_info

    info = pareto_info(studies.load(name), studies.read_config(name), importances=False)
    (out if out.is_terminal else Console(width=160)).print(front_table(info))  # piped: 160 columns
    out.print(f"study: {studies.study_dir(name)}  (optuna-dashboard {studies.storage_url(name)})", highlight=False)
    out.print(f"next: autokd pareto {name}   |   autokd export {name} --best", highlight=False)


@app.command()
@user_errors
def studies(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The studies on disk, their trial counts and fronts."""
    from . import study as st

    rows = []
    for name in st.list_names():
        s = st.load(name)
        c = st.counts(s)
        best = max((t.values[0] for t in s.best_trials), default=None)
        rows.append({"study": name, **c, "front": len(s.best_trials), "best_val_accuracy": best,
                     "teacher": s.user_attrs.get("teacher"), "dataset": s.user_attrs.get("dataset"),
                     "macs_budget": s.user_attrs.get("macs_budget"), "path": str(st.study_dir(name))})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print(f"no studies under {st.studies_root()} yet: run `autokd search`")
        return
    table = Table(title=f"studies in {st.studies_root()}")
    for col in ("study", "teacher", "dataset", "done", "stopped", "rejected", "failed", "front", "best val acc %"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["study"], str(r["teacher"]), str(r["dataset"]), str(r["done"]), str(r["stopped"]),
                      str(r["rejected"]), str(r["failed"]), str(r["front"]),
                      "-" if r["best_val_accuracy"] is None else f"{100 * r['best_val_accuracy']:.2f}")
    out.print(table)


def _register() -> None:
    """The commands that live in their own modules (they import this one for its helpers)."""
    from .cli_distill import distill
    from .cli_pareto import export, pareto

    app.command()(distill)
    app.command()(pareto)
    app.command()(export)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
