"""The Pareto front of a study as plain data: compute here, draw in :mod:`autokd.plots`.

A study has two objectives, ``values = [val_accuracy, macs]`` (maximize, minimize). Every trial
becomes one *point*, a plain dict::

    {"number", "state", "val_accuracy", "macs", "flops", "params", "share_of_teacher",
     "candidate", "trial_params", "plan", "prune_ratios", "stopped_at_epoch", "failure", "weights",
     "compute", "compute_recorded", "finished", "rungs_promoted"}

``macs`` are conv+linear multiply-accumulates, ``flops = 2 * macs`` (:mod:`autokd.measure`),
``params`` the student's parameter count, ``trial_params`` the Optuna parameters as sampled
(``student/width``, ``kd/lambda/t3->s2``, ...). The **front** is the completed points that no
other completed point dominates, sorted by MACs; stopped (early-stopped) points carry their last
validation accuracy and never enter the front.

Hypervolume, in [0, 1]: the area that the front dominates between itself and the reference point
(accuracy 0, MACs = budget), with MACs divided by the budget: each point (a, m) dominates the box
[m / budget, 1] x [0, a]. ``hypervolume_history`` is that area over the completed trials with a
number up to n, for each completed trial n.

Compute, in epoch-equivalents (one training epoch over the trial's training set = 1; an
evaluation-only pass counts a fraction): a trial's recorded ``compute`` where the search recorded
it, else the training epochs it ran (:func:`compute_of`). Completed, stopped and failed trials all
spend it; rejected ones (over budget, never trained) spend none. ``hypervolume_by_compute`` is
(compute spent so far, hypervolume of the completed trials so far) after each trial that spent
compute, in the order they finished, with the same reference as ``hypervolume_history``.
``promotions`` is, per rung of the fidelity ladder (an epoch), the trials it let go on and those it
stopped there; empty for a study that records no ``rungs_promoted`` (one from before the ladder).
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Iterable

from .errors import UserError
from .measure import COST_UNIT_TITLE, flops_from_macs
from .search import store
from .search.record import StudyRecord, TrialRecord
from .search.budget import BudgetError, parse_budget
from .search.front import hypervolume_2d, pareto_front_points

IMPORTANCE_SEED = 0  # fANOVA's random forest
STATES = ("complete", "stopped", "rejected", "failed", "running")
_PAIR = re.compile(r"^t(\d+)->s(\d+)$")


COSTS = {"macs": "macs", "latency": "latency_ms"}   # --cost -> the point's key the front is drawn on


class ChooseError(UserError):
    """No point matches what the user asked for (one line)."""


@dataclass
class ParetoInfo:
    study: str
    front: list[dict]                  # completed, non-dominated, sorted by MACs
    dominated: list[dict]              # the other completed points, by trial number
    stopped: list[dict]                # early-stopped: last val accuracy, never on the front
    rejected: list[dict]               # over budget before training (MACs predicted)
    failed: list[dict]                 # with their "failure" reason
    running: list[int]                 # trial numbers not finished yet
    budget_macs: int | None
    teacher: dict                      # {arch, macs, flops, val_accuracy, test_accuracy}
    hypervolume_history: list[tuple[int, float]]
    hypervolume_reference_macs: int | None  # the MACs that normalise the hypervolume
    dataset: str | None = None
    budget_text: str | None = None
    cost_unit: str = COST_UNIT_TITLE
    importances: dict[str, float] = field(default_factory=dict)  # param -> share of accuracy variance
    importances_note: str = ""         # why importances are empty, if they are
    references: list[dict] = field(default_factory=list)  # extra reference points {label, val_accuracy, macs}
    hypervolume_by_compute: list[tuple[float, float]] = field(default_factory=list)  # (epoch-equivalents, hv)
    compute_from_epochs: int = 0       # trials that recorded no `compute`, counted as their training epochs
    promotions: dict[int, dict[str, list[int]]] = field(default_factory=dict)  # rung epoch -> promoted/stopped
    cost: str = "macs"                 # the front's cost axis: macs | latency (predicted ms, "latency_ms")
    latency: dict | None = None        # the predictor's setting, teacher_ms, latency_budget_ms (cost latency)

    @property
    def cost_key(self) -> str:
        return COSTS[self.cost]

    @property
    def budget_ms(self) -> float | None:
        return (self.latency or {}).get("latency_budget_ms")

    @property
    def completed(self) -> list[dict]:
        return sorted(self.front + self.dominated, key=lambda p: p["number"])

    @property
    def hypervolume(self) -> float:
        return self.hypervolume_history[-1][1] if self.hypervolume_history else 0.0

    @property
    def compute_spent(self) -> float:
        """Epoch-equivalents spent by every finished trial (0 when none spent any)."""
        return self.hypervolume_by_compute[-1][0] if self.hypervolume_by_compute else 0.0

    def counts(self) -> dict[str, int]:
        return {"done": len(self.front) + len(self.dominated), "front": len(self.front),
                "stopped": len(self.stopped), "rejected": len(self.rejected), "failed": len(self.failed),
                "running": len(self.running)}

    def as_dict(self) -> dict:
        d = asdict(self)
        d["hypervolume_history"] = [[n, hv] for n, hv in self.hypervolume_history]
        d["hypervolume"] = self.hypervolume
        d["hypervolume_by_compute"] = [[c, hv] for c, hv in self.hypervolume_by_compute]
        d["compute_spent"] = self.compute_spent
        d["counts"] = self.counts()
        return d


# ------------------------------------------------------------------ pure functions
def hypervolume_history(completed: list[dict], reference_macs: float | None,
                        cost: str = "macs") -> list[tuple[int, float]]:
    """(trial number, hypervolume of the completed trials up to it), in trial-number order; ``cost`` is
    the points' key of the cost axis (``macs``, or ``latency_ms`` with a reference in ms)."""
    out, seen = [], []
    for p in sorted(completed, key=lambda p: p["number"]):
        seen.append((p["val_accuracy"], p[cost]))
        out.append((p["number"], hypervolume_2d(seen, reference_macs or 0)))
    return out


SPENDING = ("complete", "stopped", "failed")  # the states whose trials spent compute (not "rejected")


def compute_of(rec: TrialRecord) -> float:
    """A trial's compute in epoch-equivalents: its recorded ``compute``, or else the training epochs
    it ran: the largest epoch of ``epoch_val_accuracy`` ({"0": acc, "1": acc, ...}; "0" is a score
    before any training, so no epoch) or the length of ``history``, whichever is larger; 0 if none."""
    if rec.compute is not None:
        return float(rec.compute)
    epochs = [int(k) for k in rec.epoch_val_accuracy if str(k).isdigit()]
    return float(max(max(epochs, default=0), len(rec.history)))


def finish_order(points: list[dict]) -> list[dict]:
    """The points that spent compute (completed, stopped, failed), in the order they finished:
    ``finished`` (ISO time, fixed width, so it sorts as text), then trial number."""
    spent = [p for p in points if p["state"] in SPENDING]
    return sorted(spent, key=lambda p: (p.get("finished") is None, p.get("finished") or "", p["number"]))


def hypervolume_vs_compute(points: list[dict], reference_macs: float | None,
                           cost: str = "macs") -> list[tuple[float, float]]:
    """(compute spent so far, hypervolume of the completed trials so far) after each trial that
    spent compute, in the order they finished (:func:`finish_order`); rejected points are skipped."""
    out, seen, spent = [], [], 0.0
    for p in finish_order(points):
        spent += p.get("compute") or 0.0
        if p["state"] == "complete":
            seen.append((p["val_accuracy"], p[cost]))
        out.append((spent, hypervolume_2d(seen, reference_macs or 0)))
    return out


def promotions(points: list[dict]) -> dict[int, dict[str, list[int]]]:
    """{rung epoch: {"promoted": [trial numbers], "stopped": [trial numbers]}}, rungs ascending:
    a trial is promoted at every rung of its ``rungs_promoted`` and stopped at its
    ``stopped_at_epoch`` (stopped points only). {} when no point records ``rungs_promoted``."""
    if not any(p.get("rungs_promoted") is not None for p in points):
        return {}
    rungs: dict[int, dict[str, list[int]]] = {}
    for p in sorted(points, key=lambda p: p["number"]):
        for rung in p.get("rungs_promoted") or []:
            rungs.setdefault(int(rung), {"promoted": [], "stopped": []})["promoted"].append(p["number"])
        if p["state"] == "stopped" and p.get("stopped_at_epoch") is not None:
            rungs.setdefault(int(p["stopped_at_epoch"]), {"promoted": [], "stopped": []})["stopped"].append(p["number"])
    return dict(sorted(rungs.items()))


def lambda_matrix(candidate: dict, n_teacher: int = 0, n_student: int = 0) -> list[list[float]]:
    """``candidate["lambdas"]`` ({"t3->s2": w}) as rows = teacher points, columns = student points
    (1-based keys -> 0-based cells), at least ``n_teacher`` x ``n_student``; absent pairs are 0."""
    pairs = {}
    for key, w in (candidate.get("lambdas") or {}).items():
        m = _PAIR.match(str(key).replace(" ", ""))
        if m:
            pairs[int(m.group(1)), int(m.group(2))] = float(w)
    rows = max([n_teacher, *(i for i, _ in pairs)])
    cols = max([n_student, *(j for _, j in pairs)])
    return [[pairs.get((i, j), 0.0) for j in range(1, cols + 1)] for i in range(1, rows + 1)]


def kept_ratios(candidate: dict, keys: Iterable[str] | None = None) -> dict[str, float]:
    """Share of channels kept per pruned layer/stage: 1 - prune ratio. ``"*"`` (every layer) is the
    default for keys the candidate does not name; with ``keys``, exactly those keys are returned."""
    prune = {str(k): float(v) for k, v in (candidate.get("prune") or {}).items()}
    default = prune.get("*", 0.0)
    names = list(keys) if keys is not None else list(prune)
    return {k: 1.0 - prune.get(k, default) for k in names}


# ------------------------------------------------------------------ from a study
def _point(t, state: str, teacher_macs: int | None, cost: str = "macs") -> dict:
    rec = TrialRecord.of(t)
    acc: float | None
    macs: int | None
    if state == "complete":  # a latency study's second value is ms; its trials record their MACs
        acc, macs = float(t.values[0]), int(t.values[1]) if cost == "macs" else int(rec.macs or 0)
    else:
        acc = None if rec.val_accuracy is None else float(rec.val_accuracy)
        macs = None if rec.macs is None else int(rec.macs)
    return {
        "number": t.number, "state": state, "val_accuracy": acc, "macs": macs,
        "flops": None if macs is None else flops_from_macs(macs),
        "params": rec.params_count,
        "share_of_teacher": (macs / teacher_macs) if (macs is not None and teacher_macs) else None,
        "candidate": dict(rec.candidate), "trial_params": dict(t.params),
        # as the public API takes them (None in a study from before record version 2)
        "plan": rec.plan, "prune_ratios": rec.prune_ratios,
        # every lambda_ij as the trial ran it (a named kd/pairs resolved on its points); older studies: the candidate's
        "lambdas": dict(rec.lambdas or rec.candidate.get("lambdas") or {}),
        "stopped_at_epoch": rec.stopped_at_epoch, "failure": rec.failure,
        "weights": rec.weights,
        "compute": 0.0 if state == "rejected" else compute_of(rec), "compute_recorded": rec.compute is not None,
        "finished": t.datetime_complete.isoformat(timespec="microseconds") if t.datetime_complete else None,
        "rungs_promoted": None if rec.rungs_promoted is None else [int(r) for r in rec.rungs_promoted],
        # predicted for the plan trained (a latency study), or priced after (``autokd pareto --cost latency``)
        "latency_ms": float(t.values[1]) if state == "complete" and cost == "latency" else rec.latency_ms,
        "measured_latency_ms": rec.measured_latency_ms, "measured_latency_iqr_ms": rec.measured_latency_iqr_ms,
    }


def _state(t) -> str:
    from optuna.trial import TrialState

    if t.state == TrialState.COMPLETE:
        return "complete"
    if t.state == TrialState.PRUNED:
        return "stopped"
    if t.state == TrialState.FAIL:
        return "rejected" if TrialRecord.of(t).rejected else "failed"
    return "running"


def _teacher(study, config: dict) -> dict:
    cfg, rec = config.get("teacher") or {}, StudyRecord.of(study)
    macs = cfg.get("macs", rec.teacher_macs)
    return {"arch": cfg.get("arch", rec.teacher_arch), "spec": cfg.get("spec", rec.teacher),
            "macs": macs, "flops": None if macs is None else flops_from_macs(macs),
            "val_accuracy": cfg.get("val_accuracy"), "test_accuracy": cfg.get("test_accuracy")}


def param_importances(study, n_completed: int) -> tuple[dict[str, float], str]:
    """fANOVA importances of the sampled parameters for validation accuracy, or ({}, why not)."""
    if n_completed < 2:
        return {}, f"parameter importances need at least 2 completed trials (this study has {n_completed})"
    try:
        from optuna.importance import FanovaImportanceEvaluator, get_param_importances

        # fANOVA (variance explained) rather than optuna 5's default PED-ANOVA, which ranks
        # parameters for *low* targets; a fixed seed so the page is the same every time
        imp = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=IMPORTANCE_SEED),
                                    target=lambda t: t.values[0])
    except Exception as e:  # noqa: BLE001 - a plot is optional; say why it is missing instead
        first = (str(e).splitlines() or [""])[0][:160]
        return {}, f"parameter importances unavailable: {e.__class__.__name__}: {first}"
    imp = {k: float(v) for k, v in imp.items() if math.isfinite(float(v))}
    return imp, "" if imp else "parameter importances unavailable: no parameter varies across completed trials"


def pareto_info(study, config: dict | None = None, *, importances: bool = True, cost: str | None = None,
                price=None) -> ParetoInfo:
    """Everything the ``pareto`` table, the dashboard and ``export`` need, as plain data.

    ``config`` is the study's ``config.json`` (read from the study folder when None); the
    budget and teacher fall back to the study's user attributes. ``cost``: the front's axis, macs or
    latency (default: the study's own objective). A study searched on MACs has no latency: ``price``
    (``point -> ms or None``, a predictor of this machine) gives its points one first.
    """
    if config is None:
        try:
            config = store.read_config(study.study_name)
        except UserError:
            config = {}
    rec = StudyRecord.of(study)
    own = rec.cost or "macs"
    cost = cost or own
    if cost not in COSTS:
        raise UserError(f"--cost {cost!r}: choose one of {', '.join(COSTS)}")
    budget = (config.get("budget") or {})
    budget_macs = budget.get("macs_budget", rec.macs_budget)
    teacher = _teacher(study, config)
    groups: dict[str, list] = {s: [] for s in STATES}
    for t in study.get_trials(deepcopy=False):
        state = _state(t)
        groups[state].append(t.number if state == "running" else _point(t, state, teacher["macs"], own))
    latency = dict(rec.latency) if rec.latency else None
    if cost == "latency" and own != "latency":
        latency = _priced(groups, teacher, price, study.study_name)
    key = COSTS[cost]
    completed = [p for p in groups["complete"] if p[key] is not None]
    front = pareto_front_points(completed, cost=key)
    on_front = {p["number"] for p in front}
    if cost == "latency":
        assert latency is not None  # a latency study records it; another study is priced above
        reference = latency.get("latency_budget_ms") or latency.get("teacher_ms") or max(
            (p[key] for p in completed), default=None)
    else:
        reference = budget_macs or teacher["macs"] or max((p["macs"] for p in completed), default=None)
    imp, note = param_importances(study, len(completed)) if importances else ({}, "not computed")
    spent = finish_order(completed + groups["stopped"] + groups["failed"])
    return ParetoInfo(
        study=study.study_name, front=front,
        dominated=[p for p in completed if p["number"] not in on_front],
        stopped=groups["stopped"], rejected=groups["rejected"], failed=groups["failed"],
        running=groups["running"], budget_macs=budget_macs, teacher=teacher,
        hypervolume_history=hypervolume_history(completed, reference, key),
        hypervolume_reference_macs=reference,
        dataset=(config.get("search") or {}).get("dataset", rec.dataset),
        budget_text=budget.get("budget_text", rec.budget_text),
        importances=imp, importances_note=note,
        hypervolume_by_compute=hypervolume_vs_compute(spent, reference, key),
        compute_from_epochs=sum(not p["compute_recorded"] for p in spent),
        promotions=promotions(spent),
        references=[dict(r) for r in rec.references if r.get("macs") and r.get("val_accuracy") is not None],
        cost=cost, latency=latency)


def _priced(groups: dict[str, list], teacher: dict, price, name: str) -> dict:
    """A MACs study's points priced in ms by ``price`` (this machine's predictor), in place; the latency
    record it then has: the teacher's predicted ms and the predictor's own fields."""
    if price is None:
        raise UserError(f"study {name!r} was searched on MACs; its latency needs this machine's predictor")
    for state in ("complete", "stopped", "rejected"):
        for p in groups[state]:
            p["latency_ms"] = price(p)
    return price.record(teacher)


# ------------------------------------------------------------------ choosing one point
def _best(points: list[dict]) -> dict:
    return max(points, key=lambda p: (p["val_accuracy"], -p["macs"], -p["number"]))


def choose(info: ParetoInfo, *, best: bool = False, trial: int | None = None, under: str | None = None) -> dict:
    """One trained point: the most accurate within the budget (``best``, the default), trial
    number ``trial`` (completed or stopped), or the most accurate with MACs within ``under``
    (``30%`` / ``0.3`` of the teacher's MACs, or a FLOPs count ``10M``). A one-line
    :class:`ChooseError` when nothing matches."""
    if sum([bool(best), trial is not None, under is not None]) > 1:
        raise ChooseError("choose one of --best, --trial N, --under COST")
    completed = info.completed
    if trial is not None:
        return _by_number(info, trial)
    if not completed:
        raise ChooseError(f"study {info.study!r} has no completed trial yet "
                          f"({info.counts()['stopped']} stopped, {len(info.rejected)} rejected, "
                          f"{len(info.failed)} failed): run `autokd search` longer")
    if under is not None and under.strip().lower().endswith("ms"):
        return _under_ms(info, completed, under)
    if under is not None:
        if not info.teacher.get("macs"):
            raise ChooseError(f"--under needs the teacher's MACs, which study {info.study!r} does not record")
        try:
            limit = parse_budget(under, int(info.teacher["macs"]))
        except BudgetError as e:
            raise ChooseError(str(e).replace("--flops-budget", "--under")) from None
        fits = [p for p in completed if p["macs"] <= limit.macs]
        if not fits:
            cheapest = min(completed, key=lambda p: p["macs"])
            raise ChooseError(f"no completed trial of {info.study!r} costs at most {limit.macs:,} MACs "
                              f"(--under {under}); the cheapest, trial {cheapest['number']}, "
                              f"costs {cheapest['macs']:,} MACs")
        return _best(fits)
    within = [p for p in completed if (info.budget_macs is None or p["macs"] <= info.budget_macs)
              and (info.budget_ms is None or (p["latency_ms"] or 0.0) <= info.budget_ms)]
    return _best(within or completed)


def _under_ms(info: ParetoInfo, completed: list[dict], under: str) -> dict:
    """The most accurate completed point whose predicted latency is at most ``under`` (``1.0ms``)."""
    from .search.budget import parse_latency_budget

    try:
        limit = parse_latency_budget(under, 1.0).ms
    except BudgetError as e:
        raise ChooseError(str(e).replace("--latency-budget", "--under")) from None
    priced = [p for p in completed if p.get("latency_ms") is not None]
    if not priced:
        raise ChooseError(f"study {info.study!r} has no latency figures: it was searched on MACs; "
                          "search with --cost latency, or choose --under by MACs (30%, 10M)")
    fits = [p for p in priced if p["latency_ms"] <= limit]
    if not fits:
        cheapest = min(priced, key=lambda p: p["latency_ms"])
        raise ChooseError(f"no completed trial of {info.study!r} is predicted at {limit:g} ms or less "
                          f"(--under {under}); the fastest, trial {cheapest['number']}, at {cheapest['latency_ms']:.3f} ms")
    return _best(fits)


def _by_number(info: ParetoInfo, number: int) -> dict:
    for p in info.completed + info.stopped:
        if p["number"] == number:
            return p
    for p in info.rejected:
        if p["number"] == number:
            raise ChooseError(f"trial {number} of {info.study!r} was rejected before training: its "
                          f"{p['macs'] or 0:,} MACs are over the budget of {info.budget_macs or 0:,} MACs")
    for p in info.failed:
        if p["number"] == number:
            raise ChooseError(f"trial {number} of {info.study!r} failed ({p.get('failure') or 'no reason recorded'}); "
                          "choose a completed or stopped trial")
    if number in info.running:
        raise ChooseError(f"trial {number} of {info.study!r} has not finished yet")
    numbers = [p["number"] for p in info.completed + info.stopped]
    hint = f"trained trials: {_ranges(numbers)}" if numbers else "no trial was trained yet"
    raise ChooseError(f"study {info.study!r} has no trial {number} ({hint})")


def _ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    numbers, parts = sorted(set(numbers)), list[list[int]]()
    for n in numbers:
        if parts and n == parts[-1][1] + 1:
            parts[-1][1] = n
        else:
            parts.append([n, n])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in parts)
