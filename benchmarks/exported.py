"""The headline table, "the exported student": what a user ships at <= the budget, against what
four lines of Torch-Pruning give at the same MACs.

Rows, per seed s (n = the protocol's seeds), all scored once on the test set:

  teacher        the protocol's teacher bundle (trained to a plateau: ``teacher_plateau_points``);
  autokd         table 1's joint study of seed s, ``autokd export STUDY --best --finetune-epochs N
                 --train-subset <teacher_subset>`` (``autokd.export.export_student``, the code the CLI
                 runs): the search's best point, trained N more epochs with the default fine-tune recipe
                 (``autokd.export.FINETUNE_RECIPE``);
  autokd-R       the same point fine-tuned with each other recipe R of ``FINETUNE_RECIPES`` (the
                 measurement that chooses the default: ``export_recipe_points`` = autokd-R - autokd);
  tp             Torch-Pruning's README recipe (global group-norm, benchmarks/torch_pruning_baseline.py)
                 pruned to the autokd student's MACs of the same seed (within 1 %), fine-tuned on labels;
  tp-kd          the same model fine-tuned with Hinton KD from the teacher (alpha 0.5, T 4): what a user
                 who knows distillation adds to the four lines;
  tp-budget      Torch-Pruning at the budget itself, on labels;
  tp-compute     ``tp`` given the search's compute as extra fine-tuning epochs (equal total compute);
  alone          the exported student's architecture (its channel plan) from random weights, trained
                 alone on the labels at the scratch learning rate;

with N = ``protocol.finetune_epochs`` and E = a search trial's epochs, every fine-tune on the
teacher's training images (``teacher_subset`` of the seed-s split). The exported student saw E epochs
on the trial subset, then N on these images: every other row gets E + N epochs on the larger set, no
fewer. Differences are paired by seed, in points: ``vs_torch_pruning_equal_macs_points`` = autokd - tp,
``vs_torch_pruning_kd_equal_macs_points`` = autokd - tp-kd, ``vs_torch_pruning_equal_compute_points`` =
autokd - tp-compute; ``gap_to_teacher_points`` = teacher - autokd. Latency: batch 1, 1 thread, ONNX
Runtime on the CPU (benchmarks/latency.py's rule), timed by the parent once every row has trained, one
row after another (each row keeps its ONNX beside its JSON): a row timed in its worker would share the
CPU with another row's training. MACs: conv + linear multiply-accumulates.
"""
from __future__ import annotations

import math
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

from autokd.export import FINETUNE_RECIPE, FINETUNE_RECIPES
from record import envelope, mean_std, paired, plateau_points, say, teacher_bundle, teacher_summary

RECIPE_ROWS = {f"autokd-{r}": r for r in FINETUNE_RECIPES if r != FINETUNE_RECIPE}  # the other export recipes
EXPORTS = {"autokd": FINETUNE_RECIPE, **RECIPE_ROWS}
FIRST = (*EXPORTS, "tp-budget")                 # need nothing but the teacher and the study
AT_EXPORTED = ("tp", "tp-kd", "tp-compute", "alone")  # need the autokd student of the same seed
KINDS = FIRST + AT_EXPORTED
ROWS = {"cpu-finetune-30": ("autokd", "tp-kd")}  # a variant trains only the rows its question needs
HINTON = {"alpha": 0.5, "temperature": 4.0}     # the usual Hinton / RepDistiller mix
EQUAL_MACS_TOLERANCE = 0.01                     # the Torch-Pruning model's MACs within 1 % of autokd's
# the targets, in points of test accuracy (paired by seed)
TARGET_VS_TP_POINTS = 0.5     # and more than 2 standard errors
TARGET_VS_TP_KD_POINTS = 0.0
TARGET_VS_TP_COMPUTE_POINTS = 0.0
LATENCY_TIMED = "every model timed alone once every row had trained"
UNIT_FORMAT = 2  # 2: a row keeps its ONNX and the parent times it idle (1: timed in its worker, beside training)


def study_for(protocol, seed: int) -> str:
    from protocols import PROTOCOLS, search_protocol
    from search_quality import study_name

    name = search_protocol(protocol.name)
    return study_name(protocol if name == protocol.name else PROTOCOLS[name], "joint", seed)


def rows_of(protocol) -> tuple[str, ...]:
    return ROWS.get(protocol.name, KINDS)


@lru_cache(maxsize=2)
def _data(dataset: str, seed: int, subset: int | None):
    from autokd.data import load_dataset

    return load_dataset(dataset, seed=seed, train_subset=subset)


def _scored(label: str, model, data, extra: dict) -> dict:
    """Test accuracy and cost; the latency is timed later, idle (:func:`time_idle`)."""
    from autokd.measure import measure
    from autokd.train import evaluate

    model = model.cpu().eval()
    cost = measure(model, (data.in_channels, *data.image_size))
    return {"row": label, "test_accuracy": evaluate(model, data.test_x, data.test_y), "macs": cost.macs,
            "params": cost.params, **extra}


def time_idle(protocol, onnx: dict[str, Path], shape) -> dict[str, float]:
    """Median ONNX Runtime ms of each file, one after another (run with nothing else on the CPU)."""
    from latency import onnx_file_latency

    timing = (protocol.latency_repeats, protocol.latency_warmup)
    return {name: onnx_file_latency(path, shape, *timing)["median_ms"] for name, path in onnx.items()}


def best_weights(study: str) -> Path:
    from autokd.pareto import choose, pareto_info
    from autokd.search import store

    return Path(choose(pareto_info(store.load(study), importances=False), best=True)["weights"])


def exported_macs(protocol, seed: int) -> int:
    """The MACs of what ``autokd export --best`` ships for ``seed``: its best point's (a fine-tune keeps
    the channels), known before the export trains, so the rows at those MACs need not wait for it."""
    from autokd.bundle import load_bundle
    from autokd.measure import count_macs

    model, _ = load_bundle(best_weights(study_for(protocol, seed)))
    data = _data(protocol.dataset, seed, protocol.teacher_subset)
    return count_macs(model, (data.in_channels, *data.image_size))


def search_epochs_on(protocol, seed: int) -> int:
    """The search's compute (epoch-equivalents on a trial's training images) in whole epochs on the
    fine-tune's images: what ``tp-compute`` gets on top of E + N."""
    from autokd.search import store

    spent = store.compute_spent(store.load(study_for(protocol, seed)))
    finetune_images = len(_data(protocol.dataset, seed, protocol.teacher_subset).train_y)
    trial_images = min(protocol.train_subset or finetune_images, finetune_images)
    return max(0, math.ceil(spent * trial_images / finetune_images))


def export_once(protocol, study: str, folder: Path, recipe: str, *, trial: int | None = None) -> dict:
    """The card of ``study``'s export into ``folder`` (its best point, or ``trial``) with the protocol's
    fine-tune and ``recipe``. An export is written whole or not at all, so one already on disk with the
    same trial, fine-tune and recipe is kept (a stopped run resumes); one of other settings is replaced."""
    import json

    from autokd.export import export_student

    n = protocol.finetune_epochs
    card_path = folder / "card.json"
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    ft = card.get("finetune", {})
    same = (ft.get("epochs") == n and ft.get("recipe", {}).get("name", "trial") == recipe  # older cards: the trial's
            and (trial is None or card.get("trial") == trial))
    if same:
        say(f"[export {study}] kept {folder}")
        return card
    if folder.exists():
        shutil.rmtree(folder)
    export_student(study, best=trial is None, trial=trial, out=folder, finetune_epochs=n,
                   train_subset=protocol.teacher_subset, finetune_recipe=recipe, device=protocol.device,
                   printer=lambda m: say(f"[export {study} {'best' if trial is None else f't{trial}'} {recipe}] {m}"))
    return json.loads(card_path.read_text())


def _autokd(protocol, seed: int, results_dir: str, recipe: str) -> tuple:
    from autokd.bundle import load_bundle

    n, study = protocol.finetune_epochs, study_for(protocol, seed)
    folder = Path(results_dir) / "exported" / f"{study}-ft{n}-{recipe}"
    card = export_once(protocol, study, folder, recipe)
    model, _ = load_bundle(folder)
    ft = card["finetune"]
    return model, {"study": study, "trial": card["trial"], "init": (card.get("candidate") or {}).get("init"),
                   "finetune": ft, "recipe": recipe, "test_accuracy_before_finetune": ft.get("test_accuracy_before"),
                   "epochs": f"{protocol.epochs} (search trial) + {n} (export fine-tune)"}


def _torch_pruning(protocol, kind: str, seed: int, teacher_path: str, data, target_macs: int | None,
                   extra_epochs: int) -> tuple:
    import torch_pruning_baseline as tpb
    from autokd.bundle import load_bundle
    from autokd.measure import count_macs
    from autokd.seeds import trial_seeds

    teacher, _ = load_bundle(teacher_path)
    shape = (data.in_channels, *data.image_size)
    if kind == "tp-budget":
        target_macs = int(float(protocol.budget.rstrip("%")) / 100 * count_macs(teacher, shape))
    (model, macs), = tpb.prune_to(teacher, shape, [target_macs], steps=tpb.FINE_STEPS)
    epochs = protocol.epochs + protocol.finetune_epochs + (extra_epochs if kind == "tp-compute" else 0)
    kd = HINTON if kind == "tp-kd" else None
    model = tpb.finetune(model, data, epochs, trial_seeds(seed)["data"], protocol.device,
                         teacher=teacher if kd else None, **(kd or {}))
    how = f"with Hinton KD (alpha {HINTON['alpha']}, T {HINTON['temperature']:g})" if kd else "on labels"
    return model, {"epochs": f"{epochs} (fine-tune {how})", "target_macs": target_macs,
                   "macs_off_target": macs / target_macs - 1}


def _alone(protocol, seed: int, data) -> tuple:
    from autokd.bundle import load_bundle
    from autokd.candidate import Candidate
    from autokd.seeds import trial_seeds
    from autokd.train import TrainConfig, fit

    import torch

    model, _ = load_bundle(best_weights(study_for(protocol, seed)))
    torch.manual_seed(trial_seeds(seed)["init"])
    for m in model.modules():
        if m is not model and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    epochs = protocol.epochs + protocol.finetune_epochs
    model = model.to(protocol.device).train()
    fit(model, data, TrainConfig(epochs=epochs, lr=Candidate().lr, seed=trial_seeds(seed)["data"]),
        device=protocol.device)
    return model, {"epochs": f"{epochs} (trained alone on labels)"}


def run_unit(protocol, kind: str, seed: int, teacher_path: str, results_dir: str,
             target_macs: int | None = None, extra_epochs: int = 0) -> dict:
    """One row of one seed, scored; kept as ``<results>/exported/units/<protocol>-<kind>-s<seed>.json``
    with the model's ONNX beside it (``.onnx``, for :func:`time_idle`), so that a run that stopped resumes
    with the rows it has (a unit of other settings, or of an older format, is trained again)."""
    import json

    import torch

    from autokd.export import write_onnx

    from record import isolate, write_json

    isolate(Path(results_dir))
    done = unit_path(results_dir, protocol, kind, seed)
    key = {"settings": json.loads(json.dumps(protocol.as_dict())), "target_macs": target_macs,
           "extra_epochs": extra_epochs, "format": UNIT_FORMAT, **({"recipe": EXPORTS[kind]} if kind in EXPORTS else {})}
    if done.exists() and done.with_suffix(".onnx").exists() and \
            {k: v for k, v in json.loads(done.read_text()).items() if k in key} == key:
        return json.loads(done.read_text())["unit"]
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = _data(protocol.dataset, seed, protocol.teacher_subset)
    if kind in EXPORTS:
        model, extra = _autokd(protocol, seed, results_dir, EXPORTS[kind])
    elif kind == "alone":
        model, extra = _alone(protocol, seed, data)
    else:
        model, extra = _torch_pruning(protocol, kind, seed, teacher_path, data, target_macs, extra_epochs)
    unit = {"kind": kind, "seed": seed, "wall_s": round(time.perf_counter() - t0, 1), **_scored(kind, model, data, extra)}
    done.parent.mkdir(parents=True, exist_ok=True)
    write_onnx(model, torch.zeros(1, data.in_channels, *data.image_size), done.with_suffix(".onnx"))
    write_json(done, {**key, "unit": unit})
    return unit


def unit_path(results_dir, protocol, kind: str, seed: int) -> Path:
    return Path(results_dir) / "exported" / "units" / f"{protocol.name}-{kind}-s{seed}.json"


def _points(a: list[dict], b: list[dict]) -> dict:
    """autokd minus another row, paired by seed, in points (mean, std, se, n, per-seed values)."""
    other = {u["seed"]: u["test_accuracy"] for u in b}
    mine = [u for u in a if u["seed"] in other]
    return paired([100 * u["test_accuracy"] for u in mine], [100 * other[u["seed"]] for u in mine])


def _met(d: dict, at_least: float, *, two_se: bool = False) -> bool | None:
    if d["mean"] is None:
        return None
    if two_se and (d.get("se") is None or d["mean"] <= 2 * d["se"]):
        return False
    return d["mean"] >= at_least - 1e-9  # points from float sums: 0.0 may arrive as -1e-14


def summarize(teacher: dict, units: list[dict], budget_share: float) -> dict:
    rows = {}
    for kind in KINDS:
        mine = sorted((u for u in units if u["kind"] == kind), key=lambda u: u["seed"])
        rows[kind] = {"per_seed": mine, **{k: mean_std([u[k] for u in mine])
                                           for k in ("test_accuracy", "macs", "params", "onnx_latency_ms")}}
    auto = rows["autokd"]["per_seed"]
    rows["autokd"]["test_accuracy_before_finetune"] = mean_std([u["test_accuracy_before_finetune"] for u in auto])
    gap = mean_std([100 * (teacher["test_accuracy"] - u["test_accuracy"]) for u in auto])
    share = [u["macs"] / teacher["macs"] for u in auto]
    recipes = {EXPORTS[kind]: _points(rows[kind]["per_seed"], auto) for kind in RECIPE_ROWS}
    vs = {key: _points(auto, rows[kind]["per_seed"]) for key, kind in (
        ("vs_torch_pruning_equal_macs_points", "tp"), ("vs_torch_pruning_kd_equal_macs_points", "tp-kd"),
        ("vs_torch_pruning_equal_compute_points", "tp-compute"), ("vs_torch_pruning_at_budget_points", "tp-budget"),
        ("vs_alone_points", "alone"))}
    within = bool(share) and max(share) <= budget_share + 1e-9
    return {"rows": rows, "gap_to_teacher_points": gap, "macs_share_of_teacher": mean_std(share), **vs,
            "finetune_recipe": FINETUNE_RECIPE, "export_recipe_points": recipes,
            "targets": {
                "at_least_teacher_within_budget": None if gap["mean"] is None else gap["mean"] <= 0 and within,
                "vs_torch_pruning_equal_macs": _met(vs["vs_torch_pruning_equal_macs_points"], TARGET_VS_TP_POINTS,
                                                    two_se=True),
                "vs_torch_pruning_kd_equal_macs": _met(vs["vs_torch_pruning_kd_equal_macs_points"],
                                                       TARGET_VS_TP_KD_POINTS),
                "vs_torch_pruning_equal_compute": _met(vs["vs_torch_pruning_equal_compute_points"],
                                                       TARGET_VS_TP_COMPUTE_POINTS),
                "within_budget": within}}


def _pool(workers: int, units: list[tuple]) -> list[dict]:
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        return [f.result() for f in [pool.submit(run_unit, *u) for u in units]]


def _latencies(protocol, teacher, data, done: list[dict], results_dir) -> dict[str, float]:
    """ONNX ms of the teacher and of every row, timed once the pool has finished, nothing else running."""
    from latency import onnx_latency

    shape = (data.in_channels, *data.image_size)
    rows = {f"{u['kind']}-s{u['seed']}": unit_path(results_dir, protocol, u["kind"], u["seed"]).with_suffix(".onnx")
            for u in done}
    teacher_ms = onnx_latency(teacher, shape, protocol.latency_repeats, protocol.latency_warmup)["median_ms"]
    return {"teacher": teacher_ms, **time_idle(protocol, rows, shape)}


def run(protocol, *, results_dir: Path, seeds: int, workers: int) -> dict:
    from autokd.bundle import load_bundle

    from record import isolate

    isolate(Path(results_dir))  # the studies the search wrote, for the parent's own reads (search_epochs_on)
    t0 = time.perf_counter()
    teacher_path = teacher_bundle(protocol, results_dir, say=say)
    model, card = load_bundle(teacher_path)
    summary = teacher_summary(teacher_path)
    images = _data(protocol.dataset, 0, protocol.teacher_subset)
    teacher_row = _scored("teacher", model, images, {"epochs": card.get("epochs"), "trained": "on labels"})
    at = {s: exported_macs(protocol, s) for s in range(seeds)}
    kinds = rows_of(protocol)
    units = [(protocol, kind, s, str(teacher_path), str(results_dir))
             + ((at[s], search_epochs_on(protocol, s)) if kind in AT_EXPORTED else ())
             for kind in KINDS if kind in kinds for s in range(seeds)]
    say(f"exported-student table: {len(units)} runs ({', '.join(k for k in KINDS if k in kinds)})")
    done = _pool(workers, units)
    ms = _latencies(protocol, model, images, done, results_dir)
    teacher_row["onnx_latency_ms"] = ms["teacher"]
    done = [{**u, "onnx_latency_ms": ms[f"{u['kind']}-s{u['seed']}"]} for u in done]
    off = {u["seed"]: u["macs"] for u in done if u["kind"] == "autokd" and u["macs"] != at[u["seed"]]}
    if off:
        raise RuntimeError(f"the exported students' MACs {off} are not their best points' {at}")
    share = float(protocol.budget.rstrip("%")) / 100
    res = {"teacher": {**summary, **teacher_row}, "teacher_plateau_points": plateau_points(card.get("history")),
           "finetune_epochs": protocol.finetune_epochs, "search_epochs": protocol.epochs,
           "train_images": protocol.teacher_subset, "budget": protocol.budget, "latency_timed": LATENCY_TIMED,
           "export_command": f"autokd export {study_for(protocol, 0)} --best --finetune-epochs "
                             f"{protocol.finetune_epochs}" + (f" --train-subset {protocol.teacher_subset}"
                                                              if protocol.teacher_subset else ""),
           **summarize(summary | {"test_accuracy": teacher_row["test_accuracy"]}, done, share)}
    data = envelope("exported", protocol, res, time.perf_counter() - t0)
    data["gap_to_teacher_points"] = res["gap_to_teacher_points"]["mean"]
    return data
