"""Export one searched student: the bundle, TorchScript, ONNX and a card, checked against each other.

``export_student(study, best=True | trial=N | under="30%")`` picks a point with
:func:`autokd.pareto.choose` and writes a folder (default ``students/<study>-t<N>``)::

    channel_plan.json  model.safetensors  card.json   the bundle: ``autokd.load_student(folder)``
    model.ts                                          TorchScript (torch.jit.trace), ``torch.jit.load``
    model.onnx                                        ONNX opset 17, input "images" (N, C, H, W), dynamic N
    card.md                                           the card for people

The student is the trial's own trained weights when the trial completed and its bundle is on disk
with the epochs asked for; otherwise (stopped early, weights gone, other ``epochs``) the candidate
is trained again with ``run_trial`` and its stored seeds. The test set is evaluated once, here.
TorchScript and ONNX Runtime must give the PyTorch logits within ``ATOL`` on 8 validation images,
or nothing is written. The folder appears whole or not at all (built in a temporary sibling,
renamed at the end).
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn as nn

from .bundle import BadBundle, load_bundle, load_student, publish_folder, save_bundle, write_json
from .candidate import Candidate, pruning_text
from .data import DataSplits, load_dataset
from .errors import UserError
from .measure import COST_UNIT, LATENCY_THREADS, cpu_latency_ms, measure
from .pareto import choose, pareto_info
from .provenance import provenance
from .search import store as studies
from .search.record import StudyRecord
from .teacher import get_teacher, input_shape
from .latency import load_calibration, plan_latency_ms, read_calibration
from .models import channel_plan, tags
from .search.objective import CALIBRATION_FILE
from .timing import ONNX_OPSET, Setting, export_onnx, machine, measure_latency
from .train import Diverged, TrainConfig, evaluate
from .trial import TrialContext, TrialRun, run_trial

ATOL = 1e-4            # max |logit difference| allowed between PyTorch, TorchScript and ONNX Runtime
CHECK_IMAGES = 8       # validation images used for the equivalence check
EXPORT_ROOT = Path("students")
# what ``--finetune-epochs`` trains with: the recipe's name -> what it is, for help texts and the card
FINETUNE_RECIPES = {
    "trial": "the trial's own distillation settings (its KD weight, temperature and feature pairs)",
    "hinton": "Hinton KD on the logits only (kd_alpha 0.5, T 4), no feature pairs",
}
# The default: on the CPU protocol's three searched students (benchmarks/BENCHMARKS.md, the headline's recipe
# rows), 8 epochs of `hinton` reached a validation accuracy at least that of `trial` on every seed (+0.07, +0.58,
# +0.00 points) and costs less per step (no feature pairs); the choice was made on validation, not test, accuracy.
FINETUNE_RECIPE = "hinton"


class ExportMismatch(RuntimeError):
    """TorchScript or ONNX Runtime disagree with PyTorch: a bug, reported loudly."""


# ------------------------------------------------------------------ the study's recipe
def _recipe(study, config: dict) -> dict:
    """Dataset, seeds and teacher recipe of the search (config.json first, then study attributes)."""
    search, teacher, rec = config.get("search") or {}, config.get("teacher") or {}, StudyRecord.of(study)
    recipe = {"dataset": search.get("dataset", rec.dataset), "seed": int(search.get("seed", 0)),
              "teacher": teacher.get("spec", rec.teacher),
              "teacher_epochs": int(search.get("teacher_epochs", 15)),
              "train_subset": search.get("train_subset")}
    missing = [k for k in ("dataset", "teacher") if not recipe[k]]
    if missing:
        raise UserError(f"study {study.study_name!r} does not record its {' and '.join(missing)} "
                        "(config.json is missing or incomplete); cannot rebuild the student")
    return recipe


def _check_target(target: Path) -> None:
    """An existing folder is replaced only if it is an autokd bundle (a previous export)."""
    if target.exists() and not (target.is_dir() and (target / "channel_plan.json").exists()):
        raise UserError(f"--out {target} exists and is not an autokd model folder; choose another --out")


def _trial_weights(point: dict, candidate, study_folder: Path) -> Path | None:
    """The completed trial's bundle if it is on disk and was trained for ``candidate.epochs``."""
    if point["state"] != "complete" or not point.get("weights"):
        return None
    path = Path(point["weights"])
    path = path if path.is_absolute() else study_folder / path
    try:
        card = json.loads((path / "card.json").read_text())
    except (OSError, ValueError):
        return None
    trained = (card.get("candidate") or {}).get("epochs")
    ok = (path / "model.safetensors").exists() and trained == candidate.epochs and card.get("arch") == candidate.student
    return path if ok else None


# ------------------------------------------------------------------ the student
def _student(point, candidate, teacher, tcard, data, device, work: Path, study_folder: Path,
             say: Callable[[str], None], progress) -> tuple[nn.Module, dict]:
    """(trained student in eval mode on the CPU, {"source", "path"})."""
    path = _trial_weights(point, candidate, study_folder)
    if path is not None:
        try:
            model, _ = load_bundle(path)
            say(f"using the weights trial {point['number']} trained ({path})")
            return model.cpu().eval(), {"source": "the trial's own weights", "path": str(path)}
        except BadBundle as e:
            say(f"the trial's weights cannot be used ({e}); training again")
    why = {"stopped": "it was stopped early", "complete": "its weights are not on disk or had other epochs"}
    say(f"training trial {point['number']} again for {candidate.epochs} epochs ({why.get(point['state'], '')})")
    ctx = TrialContext(teacher=teacher, data=data, teacher_card=tcard, device=device, progress=progress,
                       out_dir=work / "retrained", evaluate_test=False)
    try:
        run_trial(candidate, ctx)
    except Diverged as e:
        raise UserError(f"training trial {point['number']} again diverged ({e})") from None
    model = load_student(work / "retrained")
    return model.cpu().eval(), {"source": f"trained again by export for {candidate.epochs} epochs", "path": None}


# ------------------------------------------------------------------ formats and checks
@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the tracer's notes (deprecation of jit.trace, shape-constant branches): the
    equivalence check below is what tells whether the traced graph is right."""
    with warnings.catch_warnings():
        for category in (torch.jit.TracerWarning, FutureWarning, DeprecationWarning, UserWarning):
            warnings.simplefilter("ignore", category)
        yield


def write_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Traced at the dataset's input size (the shape-dependent pooling branch is fixed there)."""
    with _quiet():
        torch.jit.save(torch.jit.trace(model, example), str(path))


def write_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """autokd's ONNX graph (:func:`autokd.timing.export_onnx`) with a dynamic batch, to ``path``."""
    with _quiet():
        export_onnx(model, example, str(path), dynamic_batch=True)


@torch.no_grad()
def check_formats(model: nn.Module, folder: Path, x: torch.Tensor) -> dict[str, float]:
    """Max |logit difference| of model.ts and model.onnx against PyTorch on ``x``; raises over ATOL."""
    import onnxruntime as ort

    want = model(x).numpy()
    with _quiet():
        scripted = torch.jit.load(str(folder / "model.ts"))
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    diffs = {"torchscript": float(abs(scripted(x).numpy() - want).max()),
             "onnx": float(abs(session.run(["logits"], {"images": x.numpy()})[0] - want).max())}
    bad = {k: v for k, v in diffs.items() if not v <= ATOL}
    if bad:
        raise ExportMismatch(f"exported logits differ from PyTorch by {bad} (> {ATOL}) on {len(x)} validation "
                             "images; nothing was written")
    return diffs


# ------------------------------------------------------------------ the card
def _card(*, study_name, point, candidate, model, teacher, tcard, data, recipe, source, split) -> dict:
    shape = input_shape(data)
    cost, t_cost = measure(model, shape), measure(teacher, shape)
    return {
        "kind": "exported-student", "arch": tags(model).arch, "study": study_name, "trial": point["number"],
        "trial_state": point["state"], "dataset": data.name, "input_shape": list(shape),
        "num_classes": data.num_classes, "train_subset": recipe["train_subset"],
        "normalization": {"mean": list(data.mean), "std": list(data.std),
                          "note": "inputs are (image - mean) / std per channel, NCHW float32, pixels in "
                                  "the scale autokd.data reads them"},
        "test_accuracy": split["test"], "val_accuracy": split["val"],
        "search_val_accuracy": point["val_accuracy"], "search_macs": point["macs"],
        **cost.as_dict(), "cost_unit": COST_UNIT,
        "cpu_latency_ms": {"student": cpu_latency_ms(model, shape), "teacher": cpu_latency_ms(teacher, shape),
                           "batch": 1, "statistic": "median of 30 runs after 5 warm-up",
                           "torch_threads": LATENCY_THREADS},
        "teacher": {"arch": getattr(teacher, "arch", tcard.get("arch")), "spec": recipe["teacher"],
                    "epochs": recipe["teacher_epochs"], "test_accuracy": tcard.get("test_accuracy"),
                    "val_accuracy": tcard.get("val_accuracy"), **t_cost.as_dict(),
                    "bundle": tcard.get("cached_at")},
        "candidate": candidate.as_dict(), "epochs": candidate.epochs,
        "seeds": {"study": recipe["seed"], "trial": candidate.seed}, "weights": source,
        "onnx": {"opset": ONNX_OPSET, "input": "images", "output": "logits", "dynamic_batch": True},
        "provenance": provenance(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def latency_card(model: nn.Module, study_folder: Path, shape: tuple[int, ...], num_classes: int) -> dict | None:
    """The student's latency in the setting of the study's predictor (a study searched with ``--cost
    latency``; else this machine's predictor of the default setting, if one was calibrated): measured
    here, median and quartiles, with the predictor's estimate beside it, or None without a predictor.
    A predictor from another machine gives no estimate; the measurement says where it was made."""
    saved = study_folder / CALIBRATION_FILE
    try:
        cal = read_calibration(saved) if saved.exists() else load_calibration(Setting(input_shape=tuple(shape)))
    except UserError:
        return None
    timing = measure_latency([model.cpu().eval()], cal.setting)[0]
    try:
        cal.check(cal.setting, machine(cal.setting))
        predicted, note = plan_latency_ms(cal, tags(model).arch, channel_plan(model), num_classes=num_classes), ""
    except UserError as e:
        predicted, note = None, str(e)
    return {"setting": cal.setting.as_dict(), "label": cal.setting.label, "measured": timing.as_dict(),
            "predicted_ms": predicted, "predictor": str(saved) if saved.exists() else "this machine's calibration",
            "no_prediction_because": note or None}


def card_markdown(card: dict) -> str:
    t, lat, c = card["teacher"], card["cpu_latency_ms"], card["candidate"]
    pct = lambda v: "—" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    rows = [("test accuracy", pct(card["test_accuracy"]), pct(t.get("test_accuracy"))),
            ("validation accuracy", pct(card["val_accuracy"]), pct(t.get("val_accuracy"))),
            ("MACs", f"{card['macs']:,}", f"{t['macs']:,}"), ("FLOPs (2 x MACs)", f"{card['flops']:,}", f"{t['flops']:,}"),
            ("params", f"{card['params']:,}", f"{t['params']:,}"),
            ("CPU latency, batch 1, median (ms)", f"{lat['student']:.3f}", f"{lat['teacher']:.3f}")]
    prune = pruning_text(c)
    lam = ", ".join(f"{k}={v:.3g}" for k, v in (c.get("lambdas") or {}).items()) or (
        f"pairs {c['pairs']}, {float(c.get('pair_weight', 1)):.3g} each" if c.get("pairs") else "none")
    lines = [f"# {card['arch']} from study `{card['study']}`, trial {card['trial']}", "",
             f"Dataset `{card['dataset']}`, input {'x'.join(map(str, card['input_shape']))}, "
             f"{card['num_classes']} classes. Teacher `{t['arch']}`" + ("" if t["spec"] == t["arch"] else f" ({t['spec']})")
             + f". Weights: {card['weights']['source']}.",
             "", "| | student | teacher |", "|---|---:|---:|", *(f"| {a} | {b} | {c_} |" for a, b, c_ in rows), "",
             f"Cost unit: {card['cost_unit']}. Latency on {card['provenance']['hardware'].get('machine')} with "
             f"{lat['torch_threads']} torch thread(s). The test set was evaluated once, at export.",
             *_latency_lines(card.get("latency")), "",
             "## Settings", "",
             f"- student `{c['student']}` at width {c['width']:g}; pruning: {prune}"
             + ("" if prune == "unpruned" else f", at {c['prune_at']}"),
             f"- distillation: {c['kd_loss']}, beta {c['beta']:.3g}, temperature {c['temperature']:.3g}, "
             f"{c['schedule']}; lambda {lam}",
             f"- epochs {c['epochs']}, lr {c['lr']:.3g}, trial seed {c['seed']} (study seed {card['seeds']['study']})",
             *_finetune_lines(card.get("finetune") or {}),
             "", "## Use", "",
             f"Normalise each channel: (x - mean) / std with mean {card['normalization']['mean']} and std "
             f"{card['normalization']['std']}.", "",
             "```python", "import autokd, torch, onnxruntime",
             "model = autokd.load_student(FOLDER)            # channel_plan.json + model.safetensors",
             "scripted = torch.jit.load(f'{FOLDER}/model.ts')",
             "session = onnxruntime.InferenceSession(f'{FOLDER}/model.onnx')  # input 'images', output 'logits'",
             "```", ""]
    return "\n".join(lines)


def _latency_lines(lat: dict | None) -> list[str]:
    if not lat:
        return []
    m = lat["measured"]
    predicted = (f"; predicted {lat['predicted_ms']:.3f} ms" if lat.get("predicted_ms") is not None
                 else f"; no prediction ({lat['no_prediction_because']})")
    return ["", f"Latency, {lat['label']}, on {m['machine'].get('cpu') or m['machine'].get('machine')}: measured "
                f"{m['median_ms']:.3f} ms median (quartiles {m['q1_ms']:.3f}-{m['q3_ms']:.3f}, {m['rounds']} rounds)"
                f"{predicted}."]


def _finetune_lines(ft: dict) -> list[str]:
    if not ft.get("epochs"):
        return []
    r = ft["recipe"]
    return [f"- then fine-tuned by export: {ft['epochs']} epochs on {ft['train_images']:,} images at lr {ft['lr']:.3g}, "
            f"recipe `{r.get('name', 'trial')}` ({r.get('what') or FINETUNE_RECIPES['trial']}); "
            f"test accuracy {100 * ft['test_accuracy_before']:.2f}% -> {100 * ft['test_accuracy_after']:.2f}%"]


# ------------------------------------------------------------------ the whole export
def export_student(study_name: str, *, best: bool = False, trial: int | None = None, under: str | None = None,
                   out: str | Path | None = None, epochs: int | None = None, finetune_epochs: int = 0,
                   train_subset: int | None = None, finetune_recipe: str = FINETUNE_RECIPE, device: str = "cpu",
                   printer: Callable[[str], None] | None = None,
                   progress: Callable[[int, int, dict], None] | None = None) -> Path:
    """Export the chosen student of ``study_name`` into ``out``; returns the folder. See the module doc.

    ``finetune_epochs`` N > 0: the chosen student (its trained weights, or the candidate trained
    again) keeps training for N epochs at its trial's fine-tuning lr with ``finetune_recipe``
    (:data:`FINETUNE_RECIPES`), on the whole training split unless ``train_subset`` says otherwise: a
    search's subset ranks candidates, it is not what the shipped model should learn from. The
    default is 0, so an export never trains for minutes unasked and its numbers stay the search's.
    """
    say = printer or (lambda _m: None)
    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {epochs}")
    if finetune_epochs < 0:
        raise UserError(f"--finetune-epochs must be 0 (no fine-tuning) or more, got {finetune_epochs}")
    if train_subset is not None and train_subset < 1:
        raise UserError(f"--train-subset must be at least 1, got {train_subset}")
    if finetune_recipe not in FINETUNE_RECIPES:
        raise UserError(f"--finetune-recipe must be one of {', '.join(FINETUNE_RECIPES)}, got {finetune_recipe!r}")
    st = studies.load(study_name)
    config = studies.read_config(study_name)
    point = choose(pareto_info(st, config, importances=False), best=best, trial=trial, under=under)
    target = Path(out) if out is not None else EXPORT_ROOT / f"{study_name}-t{point['number']}"
    _check_target(target)
    recipe = _recipe(st, config)
    candidate = Candidate.from_dict(point["candidate"])
    candidate = replace(candidate, epochs=epochs) if epochs else candidate
    recipe = {**recipe, "finetune_epochs": finetune_epochs, "finetune_subset": train_subset,
              "finetune_recipe": finetune_recipe}
    return _build(study_name, point, candidate, recipe, target, studies.study_dir(study_name), device, say, progress)


def finetune_candidate(candidate: Candidate, epochs: int, recipe: str = FINETUNE_RECIPE) -> Candidate:
    """What the export fine-tune trains: ``candidate`` for ``epochs`` with nothing left to prune, its
    distillation as ``recipe`` says (:data:`FINETUNE_RECIPES`)."""
    tuned = replace(candidate, prune={}, prune_steps=1, epochs=epochs)
    if recipe == "hinton":
        tuned = replace(tuned, pairs="none", lambdas={}, kd_alpha=0.5, temperature=4.0, schedule="one-stage",
                        align_teacher=False, curriculum=False)
    return tuned


def _feature_pairs_on(c: Candidate) -> bool:
    """Whether ``c`` trains with a feature term: pairs to match and a weight 1 - beta above 0."""
    return bool(c.lambdas or c.pairs not in ("", "none")) and c.beta < 1


def _finetune(model, candidate, teacher, tcard, recipe, device, say, progress) -> tuple[nn.Module, DataSplits, dict]:
    """The chosen student trained ``recipe["finetune_epochs"]`` more epochs: (model, its data, record)."""
    n = recipe["finetune_epochs"]
    data = load_dataset(recipe["dataset"], seed=recipe["seed"], train_subset=recipe["finetune_subset"])
    before = evaluate(model, data.test_x, data.test_y)
    name = recipe["finetune_recipe"]
    say(f"fine-tuning the student for {n} epochs on {len(data.train_y):,} training images "
        f"({FINETUNE_RECIPES[name]}, lr {candidate.finetune_lr:g})")
    tuned = finetune_candidate(candidate, n, name)
    ctx = TrialContext(teacher=teacher, data=data, teacher_card=tcard, device=device, progress=progress,
                       student=model.to(device))
    try:
        run = TrialRun(tuned, ctx)
        run.train()
        result = run.finish()
    except Diverged as e:
        raise UserError(f"fine-tuning diverged ({e}); try fewer --finetune-epochs") from None
    model = run.student.cpu().eval()
    record = {"epochs": n, "train_images": len(data.train_y), "lr": candidate.finetune_lr,
              "recipe": {"name": name, "what": FINETUNE_RECIPES[name], "kd_alpha": tuned.kd_alpha,
                         "temperature": tuned.temperature, "beta": tuned.beta,
                         "kd_loss": tuned.kd_loss if _feature_pairs_on(tuned) else "none",
                         "schedule": "one cosine schedule of the fine-tune's epochs"},
              "test_accuracy_before": before, "test_accuracy_after": evaluate(model, data.test_x, data.test_y),
              "val_accuracy_after": result.val_accuracy}
    return model, data, record


def _build(study_name, point, candidate, recipe, target: Path, study_folder: Path, device, say, progress) -> Path:
    data = load_dataset(recipe["dataset"], seed=recipe["seed"], train_subset=recipe["train_subset"])
    teacher, tcard = get_teacher(recipe["teacher"], data, TrainConfig(epochs=recipe["teacher_epochs"],
                                                                      seed=recipe["seed"]), on_train=say)
    made_parent = not target.parent.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.export-", dir=target.parent))
    try:
        model, source = _student(point, candidate, teacher, tcard, data, device, work, study_folder, say, progress)
        finetune = None
        if recipe["finetune_epochs"]:
            model, data, finetune = _finetune(model, candidate, teacher, tcard, recipe, device, say, progress)
            source = {**source, "source": f"{source['source']}, then fine-tuned {finetune['epochs']} epochs by "
                                          f"export ({FINETUNE_RECIPES[finetune['recipe']['name']]})"}
        split = {"val": evaluate(model, data.val_x, data.val_y), "test": evaluate(model, data.test_x, data.test_y)}
        card = _card(study_name=study_name, point=point, candidate=candidate, model=model, teacher=teacher.cpu().eval(),
                     tcard=tcard, data=data, recipe=recipe, source=source, split=split)
        card["finetune"] = finetune or {"epochs": 0}
        card["latency"] = latency_card(model, study_folder, input_shape(data), data.num_classes)
        stage = save_bundle(model, work / "bundle", card)
        x = data.val_x[:CHECK_IMAGES].cpu()
        write_torchscript(model, x, stage / "model.ts")
        write_onnx(model, x, stage / "model.onnx")
        card["format_max_abs_diff"] = check_formats(model, stage, x)
        card["files"] = sorted([*(p.name for p in stage.iterdir()), "card.md"])
        write_json(stage / "card.json", card)
        (stage / "card.md").write_text(card_markdown(card))
        publish_folder(stage, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if made_parent and not any(target.parent.iterdir()):
            target.parent.rmdir()
        raise
    shutil.rmtree(work, ignore_errors=True)
    return target
