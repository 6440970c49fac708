"""Table 2, the seeds' claims: each paper's comparison rerun on the same data, n seeds, paired.

Every run is ``autokd.trial.run_trial`` with a :class:`Candidate` built from the protocol's
student (``claims_student`` at ``claims_width``, ``claims_epochs`` epochs) and one change, except
the student alone and the recovery study (``alone_and_recovery``), which use autokd's training
loop directly. Seeds: run seed s gives the init, data-order and regressor streams of
``autokd.trial.trial_seeds(s)`` and the train/val split of ``load_dataset(seed=s)``, so the runs of
one seed differ only in the method and their differences are paired.

Metric: test accuracy (the test set chooses nothing here). A claim compares run ``a`` with run
``b`` over the seeds: d_s = acc_a(s) - acc_b(s), mean and standard error se = std(d) / sqrt(n);
"better" reproduces when mean(d) > 2 se, goes the same way within noise when 0 < mean(d) <= 2 se,
and does not reproduce when mean(d) <= 0; "no worse" reproduces when mean(d) >= -2 se.
"""
from __future__ import annotations

import copy
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

from record import (command_line, envelope, mean_std, paired, read_json, same_protocol, say, teacher_bundle,
                    teacher_summary)

PAIRED_SIGMAS = 2.0  # a difference counts as reproduced beyond 2 standard errors of the paired mean

# run name -> (what it is, the Candidate changes); "pairs" and "prune" are expanded by _candidate
RUNS: dict[str, tuple[str, dict]] = {
    "kd": ("Hinton KD on the logits only", dict(pairs="none")),
    "vid-diag": ("KD + VID over matching pairs (t_i -> s_i), lambda 1", dict(pairs="diag")),
    "vid-all": ("KD + VID over all T x S pairs, lambda = 1/S (same total weight as matching)", dict(pairs="all")),
    "two-stage": ("vid-diag, two-stage: 30 % of epochs on the task loss, then features on",
                  dict(pairs="diag", schedule="two-stage", stage1_fraction=0.3)),
    "pdd": ("vid-diag, channel masks learned with the distillation loss (PDD), cut at half the epochs",
            dict(pairs="diag", prune="ratio", prune_method="learned-mask", prune_at="during")),
    "prune-l1-during": ("vid-diag, trained unpruned, L1-pruned at half the epochs, then fine-tuned with distillation",
                        dict(pairs="diag", prune="ratio", prune_method="l1", prune_at="during")),
    "prune-l1-start": ("vid-diag, L1-pruned at initialisation, then distilled",
                       dict(pairs="diag", prune="ratio", prune_method="l1", prune_at="start")),
    "aligned": ("matching pairs with the teacher narrowed to the student's widths, no regressor (InDistill)",
                dict(pairs="diag", align_teacher=True)),
    "fitnet-diag": ("KD + FitNet regressors over matching pairs, lambda 1", dict(pairs="diag", kd_loss="fitnet")),
    # ---- the same claims on the pruned *trained* teacher (init teacher: its own layers, then pruned)
    "teacher-recovery-kd": ("the trained teacher L1-pruned at recovery_ratio, fine-tuned recovery_epochs with "
                            "Hinton KD (logits only, T 4, alpha 0.5)",
                            dict(pairs="none", on="teacher", prune="recovery", epochs="recovery", beta=1.0)),
    "teacher-recovery-ce": ("teacher-recovery-kd, fine-tuned on the labels only (no teacher)",
                            dict(pairs="none", on="teacher", prune="recovery", epochs="recovery", beta=1.0,
                                 kd_alpha=0.0)),
    "teacher-arch-alone": ("the teacher's architecture at teacher-recovery-kd's channel plan, from random weights, "
                           "trained alone on the labels (claims_epochs)",
                           dict(pairs="none", on="teacher", init="scratch", prune="recovery", beta=1.0,
                                kd_alpha=0.0)),
    "teacher-pdd": ("the trained teacher, its channel masks learned with the distillation loss (PDD, matching "
                    "pairs), cut at half the epochs to prune_ratio",
                    dict(pairs="diag", on="teacher", prune="ratio", prune_method="learned-mask", prune_at="during")),
    "teacher-l1": ("the trained teacher L1-pruned to prune_ratio at the start, then distilled (matching pairs)",
                   dict(pairs="diag", on="teacher", prune="ratio", prune_method="l1", prune_at="start")),
}
RECOVERY_RUNS = {
    "alone": "the student trained alone on the labels (cross-entropy), same init and data order",
    "recovery-pruned": "alone, then L1-pruned at recovery_ratio, not trained again",
    "recovery-kd": "recovery-pruned, fine-tuned recovery_epochs with Hinton KD from the teacher",
    "recovery-ce": "recovery-pruned, fine-tuned recovery_epochs on the labels only",
}


@dataclass(frozen=True)
class Claim:
    key: str
    seed_paper: str       # which of the four method papers makes it
    statement: str
    a: str                # run compared ...
    b: str                # ... with this one: d = acc(a) - acc(b)
    kind: str             # "better" | "no worse"
    paper: str            # what the paper reports


CLAIMS = (
    Claim("distillation", "000, 001", "Distillation beats the student trained alone", "kd", "alone", "better",
          "CIFAR-10 ConvTiny -> ConvVeryTiny: 0.54 alone, 0.56 KD (001); +1.5 to +2.6 points (000)"),
    Claim("pairs-vs-logits", "001", "Matching-pair feature distillation beats logits only", "vid-diag", "kd",
          "better", "pairwise 0.58-0.59 vs KD 0.56"),
    Claim("all-vs-logits", "001", "All-pairs lambda_ij beats logits only", "vid-all", "kd", "better",
          "all-pairs 0.58-0.59 vs KD 0.56"),
    Claim("all-vs-pairs", "001", "All-pairs lambda_ij is no worse than matching pairs", "vid-all", "vid-diag",
          "no worse", "both 0.58-0.59"),
    Claim("two-stage", "000", "Two-stage distillation beats one-stage", "two-stage", "vid-diag", "better",
          "+1.5 to +2.6 points"),
    Claim("pdd", "002", "Masks learned during distillation beat prune-then-fine-tune at equal MACs", "pdd",
          "prune-l1-during", "better", "resnet56 -> resnet20, 39.5 % fewer FLOPs, +0.17 points"),
    Claim("pdd-vs-start", "002", "Masks learned during distillation beat pruning before distillation", "pdd",
          "prune-l1-start", "better", "(not reported separately)"),
    Claim("recovery", "000", "After aggressive pruning, distillation recovers more accuracy than fine-tuning "
          "on labels", "recovery-kd", "recovery-ce", "better", "pruned ResNet18 restored to 77.8 %"),
    Claim("pruned-vs-alone", "000", "The pruned, distilled student beats the unpruned student trained alone",
          "recovery-kd", "alone", "better", "77.8 %, above the unpruned student alone"),
    Claim("teacher-recovery", "000", "After aggressive pruning of the trained teacher, distillation recovers more "
          "than fine-tuning on labels", "teacher-recovery-kd", "teacher-recovery-ce", "better",
          "pruned ResNet18 restored to 77.8 % with KD"),
    Claim("teacher-pruned-vs-alone", "000", "The pruned, distilled teacher beats the same architecture trained alone",
          "teacher-recovery-kd", "teacher-arch-alone", "better", "77.8 %, above the same student trained alone"),
    Claim("teacher-pdd", "002", "On the inherited student, masks learned during distillation beat L1 "
          "prune-then-fine-tune at equal MACs", "teacher-pdd", "teacher-l1", "better",
          "resnet56 -> resnet20, 39.5 % fewer FLOPs, +0.17 points"),
    Claim("aligned-vs-fitnet", "003", "Teacher alignment (no regressor) is no worse than a FitNet regressor",
          "aligned", "fitnet-diag", "no worse", "InDistill beats regressor-based hints (CIFAR-10, Fashion-MNIST)"),
    Claim("aligned-vs-vid", "003", "Teacher alignment (no regressor) is no worse than a VID regressor",
          "aligned", "vid-diag", "no worse", "(VID not compared)"),
)


# ------------------------------------------------------------------ one worker process
@lru_cache(maxsize=4)
def _data(dataset: str, seed: int, subset: int | None):
    from autokd.data import load_dataset

    return load_dataset(dataset, seed=seed, train_subset=subset)


@lru_cache(maxsize=1)
def _teacher(path: str, device: str):
    from autokd.bundle import load_bundle

    model, card = load_bundle(path)
    return model.to(device).eval(), card


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _candidate(protocol, name: str, seed: int, n_teacher: int, n_student: int):
    from autokd.distill import make_pairs
    from autokd.trial import Candidate

    changes = dict(RUNS[name][1])
    kind = changes.pop("pairs")
    diag = make_pairs("diag", n_teacher, n_student)
    weight = len(diag) / (n_teacher * n_student) if kind == "all" else 1.0
    lambdas = make_pairs(kind, n_teacher, n_student, weight)
    prune = changes.pop("prune", None)
    if prune:
        changes["prune"] = {"*": protocol.recovery_ratio if prune == "recovery" else protocol.prune_ratio}
    epochs = protocol.recovery_epochs if changes.pop("epochs", None) == "recovery" else protocol.claims_epochs
    if changes.pop("on", None) == "teacher":  # the teacher's own architecture: its trained layers, or its shape
        init = changes.pop("init", "teacher")      # width 1 on an inherited student: no uniform pruning
        changes = {"student": protocol.teacher, "init": init,
                   "width": 1.0 if init == "teacher" else protocol.teacher_width, **changes}
    student = dict(student=protocol.claims_student, width=protocol.claims_width)
    return Candidate(**{**student, **changes}, epochs=epochs, seed=seed, lambdas=lambdas)


def _measured(model, data, seconds: float) -> dict:
    from autokd.measure import measure
    from autokd.train import evaluate

    cost = measure(model, (data.in_channels, *data.image_size))
    return {"test_accuracy": evaluate(model, data.test_x, data.test_y),
            "val_accuracy": evaluate(model, data.val_x, data.val_y), "macs": cost.macs, "params": cost.params,
            "wall_s": round(seconds, 1)}


def run_candidate(protocol, name: str, seed: int, teacher_path: str) -> dict[str, dict]:
    from autokd.models import create_model
    from autokd.trial import TrialContext, run_trial

    data = _data(protocol.dataset, seed, protocol.claims_subset)
    teacher, card = _teacher(teacher_path, protocol.device)
    n_student = len(create_model(protocol.claims_student, num_classes=data.num_classes,
                                 in_channels=data.in_channels).points)
    cand = _candidate(protocol, name, seed, len(teacher.points), n_student)
    n_student = len(create_model(cand.student, num_classes=data.num_classes, in_channels=data.in_channels).points)
    cand = _candidate(protocol, name, seed, len(teacher.points), n_student)
    t0 = time.perf_counter()
    r = run_trial(cand, TrialContext(teacher=teacher, data=data, teacher_card=card, device=protocol.device,
                                     evaluate_test=True))
    return {name: {"test_accuracy": r.test_accuracy, "val_accuracy": r.val_accuracy, "macs": r.macs,
                   "params": r.params, "wall_s": round(time.perf_counter() - t0, 1),
                   "val_history": [h["val_accuracy"] for h in r.history]}}


def alone_and_recovery(protocol, seed: int, teacher_path: str) -> dict[str, dict]:
    """The student alone (as tests/test_trial.py's ``_alone``), then pruned and fine-tuned two ways."""
    from autokd.distill import Distiller
    from autokd.prune import prune_model
    from autokd.teacher import seeded_model
    from autokd.train import TrainConfig, fit
    from autokd.trial import PROBE_IMAGES, trial_seeds

    p, dev = protocol, protocol.device
    data = _data(p.dataset, seed, p.claims_subset)
    teacher, _ = _teacher(teacher_path, dev)
    s, shape = trial_seeds(seed), (data.in_channels, *data.image_size)
    t0 = time.perf_counter()
    model = seeded_model(p.claims_student, s["init"], num_classes=data.num_classes, in_channels=data.in_channels,
                         width=p.claims_width).to(dev)
    fit(model, data, TrainConfig(epochs=p.claims_epochs, lr=0.05, seed=s["data"]), device=dev)
    out = {"alone": _measured(model.eval(), data, time.perf_counter() - t0)}
    t0 = time.perf_counter()
    pruned = prune_model(copy.deepcopy(model), p.recovery_ratio, criterion="l1", input_shape=shape)
    out["recovery-pruned"] = _measured(pruned.eval(), data, time.perf_counter() - t0)
    tune = TrainConfig(epochs=p.recovery_epochs, lr=0.01, seed=s["data"] + 7)  # a short, gentle fine-tune
    for name in ("recovery-kd", "recovery-ce"):
        t0 = time.perf_counter()
        student = copy.deepcopy(pruned).train()
        loss_fn = None
        if name == "recovery-kd":  # no feature pairs: KD on the logits (seed 000's soft targets)
            loss_fn = Distiller(student, teacher, lambdas={}, probe_x=data.train_x[:PROBE_IMAGES].to(dev)).loss
        fit(student, data, tune, loss_fn=loss_fn, params=list(student.parameters()), device=dev)
        out[name] = _measured(student.eval(), data, time.perf_counter() - t0)
    return out


def _unit(protocol, name: str, seed: int, teacher_path: str) -> tuple[int, dict[str, dict]]:
    if name == "alone+recovery":
        return seed, alone_and_recovery(protocol, seed, teacher_path)
    return seed, run_candidate(protocol, name, seed, teacher_path)


# ------------------------------------------------------------------ all runs, then the claims
def verdict(diff: dict, kind: str) -> str:
    mean, se, n = diff["mean"], diff["se"], diff["n"]
    if mean is None:
        return "not run"
    if n < 2 or se is None:
        return f"n = {n}: no verdict"
    if kind == "no worse":
        return "reproduced" if mean >= -PAIRED_SIGMAS * se else "not reproduced"
    if mean > PAIRED_SIGMAS * se:
        return "reproduced"
    return "same direction, within noise" if mean > 0 else "not reproduced"


def judge(runs: dict[str, dict]) -> list[dict]:
    rows = []
    for c in CLAIMS:
        a, b = runs.get(c.a, {}), runs.get(c.b, {})
        seeds = sorted(set(a.get("per_seed", {})) & set(b.get("per_seed", {})))
        acc = lambda r: [r["per_seed"][s]["test_accuracy"] for s in seeds]  # noqa: E731
        diff = paired(acc(a), acc(b)) if seeds else paired([], [])
        macs = lambda r: sorted({r["per_seed"][s]["macs"] for s in seeds})  # noqa: E731
        rows.append({**asdict(c), "seeds": seeds, "a_test": mean_std(acc(a)) if seeds else None,
                     "b_test": mean_std(acc(b)) if seeds else None, "difference": diff,
                     "macs_a": macs(a) if seeds else [], "macs_b": macs(b) if seeds else [],
                     "verdict": verdict(diff, c.kind)})
    return rows


def _collect(results: list[tuple[int, dict[str, dict]]]) -> dict[str, dict]:
    what = {**{k: v[0] for k, v in RUNS.items()}, **RECOVERY_RUNS}
    runs: dict[str, dict] = {}
    for seed, records in results:
        for name, rec in records.items():
            runs.setdefault(name, {"what": what[name], "per_seed": {}})["per_seed"][seed] = rec
    for r in runs.values():
        per = [r["per_seed"][s] for s in sorted(r["per_seed"])]
        keys = ("test_accuracy", "val_accuracy", "macs", "params", "wall_s")
        r.update({k: mean_std([x[k] for x in per]) for k in keys})
    return runs


UNITS = ("alone+recovery", *RUNS)  # what one worker runs; the longest first: better packing


def _kept(old: dict | None, protocol, names: list[str], seeds: int) -> list[tuple[int, dict[str, dict]]]:
    """Earlier per-seed records in the same file that this command does not rerun (same protocol only)."""
    if not same_protocol(old, protocol):
        return []
    rerun = {n for name in names for n in (("alone", *RECOVERY_RUNS) if name == "alone+recovery" else (name,))}
    return [(int(seed), {name: rec}) for name, r in old["results"]["runs"].items() if name not in rerun
            for seed, rec in r["per_seed"].items() if int(seed) < seeds]


def run(protocol, *, results_dir: Path, seeds: int, workers: int, names: list[str] | None = None,
        out: Path | None = None) -> dict:
    """Every unit of ``names`` (default all) for seeds 0..n-1; with ``names``, the other runs already in
    ``out`` (same protocol) are kept, with the commands that made them."""
    t0 = time.perf_counter()
    teacher = str(teacher_bundle(protocol, results_dir, say=say))
    names = list(names or UNITS)
    old = read_json(out) if out and names != list(UNITS) else None
    kept = _kept(old, protocol, names, seeds)
    units = [(protocol, name, seed, teacher) for name in names for seed in range(seeds)]
    threads = 1  # one core per run: n runs on n cores, and no thread fights on a busy machine
    say(f"table 2: {len(units)} runs on {workers} worker(s), {threads} torch thread(s) each")
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(threads,)) as pool:
        results = list(pool.map(_unit, *zip(*units)))
    runs = _collect(kept + results)
    commands = ([c for c in old["results"].get("commands", [old["command"]]) if c != command_line()] if kept else [])
    res = {"teacher": teacher_summary(Path(teacher)), "commands": commands + [command_line()], "workers": workers, "threads_per_worker": threads,
           "student": {"arch": protocol.claims_student, "width": protocol.claims_width,
                       "epochs": protocol.claims_epochs, "train_subset": protocol.claims_subset,
                       "prune_ratio": protocol.prune_ratio, "recovery_ratio": protocol.recovery_ratio,
                       "recovery_epochs": protocol.recovery_epochs},
           "rule": f"paired over seeds; 'better' reproduced when mean difference > {PAIRED_SIGMAS:g} standard "
                   f"errors, 'no worse' when mean difference >= -{PAIRED_SIGMAS:g} standard errors",
           "runs": runs, "claims": judge(runs)}
    return envelope("claims", protocol, res, time.perf_counter() - t0)
