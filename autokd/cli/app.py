"""The ``autokd`` app: the commands models, datasets, train, search and studies; ``distill``,
``pareto``, ``export`` and the ``latency`` group live in their own modules and are registered here.

A user mistake (``UserError``, or a command line Click cannot parse) is printed as one line on
stderr with exit code 2, never a traceback. ``search`` has one option per ``SearchConfig`` field
(:func:`~autokd.cli.options.with_fields`); every other option a dataclass field defines takes its
default and help from that field.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..bundle import save_bundle
from ..candidate import Candidate
from ..data import dataset_status, load_dataset
from ..measure import COST_UNIT_TITLE, measure
from ..models import MODELS, create_model, tags
from ..pareto import pareto_info
from ..provenance import resolve_device
from ..search import SearchConfig
from ..search.driver import search as run_search
from ..search import store
from ..search.record import StudyRecord
from ..student import DistillJob
from ..teacher import cache_dir, get_teacher, train_model
from ..train import TrainConfig
from .common import OneLineErrors, check_positive, epoch_printer, err, out, parse_shape, user_errors, wide
from .distill import distill
from .latency import latency
from .options import Fields, default, option, with_fields
from .pareto import export, front_table, pareto

app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="autokd: search knowledge distillation and structured pruning together.")
@app.command()
@user_errors
def models(
    input: Annotated[str, typer.Option("--input", help="input shape CxHxW")] = "3x32x32",
    num_classes: Annotated[int, typer.Option(help="classifier outputs")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Every architecture in the zoo with its MACs and params."""
    c, h, w = parse_shape(input)
    rows = []
    for name in MODELS:
        model = create_model(name, num_classes=num_classes, in_channels=c)
        cost = measure(model, (c, h, w))
        rows.append({"name": name, **cost.as_dict(), "points": tags(model).points,
                     "input": f"{c}x{h}x{w}", "doc": (MODELS.get(name).__doc__ or "").strip()})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"autokd zoo on {c}x{h}x{w}, {num_classes} classes ({COST_UNIT_TITLE})")
    for col in ("model", "MACs (M)", "FLOPs (M)", "params (M)", "distillation points"):
        table.add_column(col, justify="right" if "(" in col else "left")
    for r in rows:
        table.add_row(r["name"], f"{r['macs'] / 1e6:.2f}", f"{r['flops'] / 1e6:.2f}",
                      f"{r['params'] / 1e6:.3f}", ", ".join(r["points"]))
    out.print(table)


@app.command()
@user_errors
def datasets(as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False) -> None:
    """Every dataset, and whether it is available offline here."""
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
    dataset: Annotated[str, option(DistillJob, "dataset")] = default(DistillJob, "dataset"),
    epochs: Annotated[int, option(TrainConfig, "epochs")] = default(TrainConfig, "epochs"),
    width: Annotated[float, typer.Option(help="width multiplier of every layer's channels")] = default(Candidate, "width"),
    lr: Annotated[float, option(TrainConfig, "lr")] = default(TrainConfig, "lr"),
    seed: Annotated[int, option(TrainConfig, "seed", help="also the init and the data split")] = default(TrainConfig, "seed"),
    train_subset: Annotated[Optional[int], option(DistillJob, "train_subset")] = default(DistillJob, "train_subset"),
    device: Annotated[str, option(DistillJob, "device")] = default(DistillJob, "device"),
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="write the bundle here instead of the cache")] = None,
    force: Annotated[bool, typer.Option(help="retrain even if a cached teacher exists")] = False,
) -> None:
    """Train a zoo model from scratch (a teacher) and cache it as safetensors + a JSON card."""
    MODELS.get(arch)
    check_positive(epochs=epochs, width=width, lr=lr)
    if train_subset is not None:
        check_positive(train_subset=train_subset)
    dev = resolve_device(device)
    data = load_dataset(dataset, seed=seed, train_subset=train_subset)
    cfg = TrainConfig(epochs=epochs, lr=lr, seed=seed)
    target = out_dir or cache_dir(arch, data.name, cfg, width, data.train_subset)
    if force or out_dir:
        model, card = train_model(arch, data, cfg, width=width, progress=epoch_printer(arch), device=dev)
        save_bundle(model, target, card)
    else:
        model, card = get_teacher(arch, data, cfg, width=width, progress=epoch_printer(arch), device=dev,
                                  on_train=out.print)
    out.print(f"[bold]{arch}[/] on {data.name}: test accuracy {100 * card['test_accuracy']:.2f}%  "
              f"val {100 * card['val_accuracy']:.2f}%  MACs {card['macs'] / 1e6:.3f} M  "
              f"params {card['params'] / 1e6:.3f} M", highlight=False)
    out.print(f"saved: {target}", highlight=False)


@app.command()
@user_errors
@with_fields(cfg=Fields(SearchConfig))
def search(cfg: SearchConfig) -> None:
    """Search students: distillation and pruning settings against accuracy and MACs, under a budget."""
    try:
        result = run_search(cfg, printer=lambda m: out.print(m, highlight=False))
    except KeyboardInterrupt:
        name = cfg.study or "the study"
        err.print(f"interrupted: finished trials are saved; running ones were recorded as failed. "
                  f"Resume with the same command (study {name}).")
        raise typer.Exit(130) from None
    print_front(result.study_name)


def print_front(name: str) -> None:
    """The front as a table (the one `autokd pareto` prints), and where the study lives."""
    info = pareto_info(store.load(name), store.read_config(name), importances=False)
    wide().print(front_table(info))
    out.print(f"study: {store.study_dir(name)}  (optuna-dashboard {store.storage_url(name)})", highlight=False)
    out.print(f"next: autokd pareto {name}   |   autokd export {name} --best", highlight=False)


def study_row(name: str) -> dict:
    """One study's counts and front, or, for a study whose files cannot be read, why not."""
    try:
        s = store.load(name)
    except store.DamagedStudy as e:
        return {"study": name, "damaged": str(e), "path": str(store.study_dir(name))}
    best, rec = max((t.values[0] for t in s.best_trials), default=None), StudyRecord.of(s)
    return {"study": name, **store.counts(s), "front": len(s.best_trials), "best_val_accuracy": best,
            "teacher": rec.teacher, "dataset": rec.dataset, "macs_budget": rec.macs_budget,
            "path": str(store.study_dir(name))}


STUDY_COLUMNS = ("teacher", "dataset", "done", "stopped", "rejected", "failed", "front")


@app.command()
@user_errors
def studies(as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False) -> None:
    """The studies on disk, their trial counts and fronts; a damaged one is marked, the others listed."""
    rows = [study_row(name) for name in store.list_names()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print(f"no studies under {store.studies_root()} yet: run `autokd search`")
        return
    table = Table(title=f"studies in {store.studies_root()}")
    table.add_column("study", no_wrap=True)
    for col in (*STUDY_COLUMNS, "best val acc %"):
        table.add_column(col, justify="left" if col in ("teacher", "dataset") else "right")
    for r in rows:
        if "damaged" in r:
            table.add_row(r["study"], "[red]damaged[/]", *[""] * len(STUDY_COLUMNS))
            continue
        best = "-" if r["best_val_accuracy"] is None else f"{100 * r['best_val_accuracy']:.2f}"
        table.add_row(r["study"], *(str(r[c]) for c in STUDY_COLUMNS), best)
    wide().print(table)
    for r in rows:
        if "damaged" in r:
            err.print(f"[red]damaged:[/] {escape(r['damaged'])}", highlight=False, soft_wrap=True)


app.command()(distill)
app.command()(pareto)
app.command()(export)
app.add_typer(latency, name="latency")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
