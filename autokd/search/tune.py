"""The Ray Tune side of the search: what runs in the workers, and the driver's Tune plug-ins.

``trainable`` runs one candidate in a Ray worker and reports every epoch; :class:`OptunaSearcher`
(a Tune ``Searcher``) asks the study on disk for candidates (:mod:`autokd.search.sampling`), rejects
over-budget ones before any training and tells every result back (:mod:`autokd.search.record`); :class:`ParetoScheduler` applies the two-objective early
stopping of :mod:`autokd.search.stopping`; :class:`Progress` prints a line per finished trial;
:class:`Interrupt` owns Ctrl-C; :func:`init_ray` starts a loopback-only local Ray or joins
``--address``; :func:`run_round` puts them together for one Tune run. The driver
(:mod:`autokd.search.driver`) imports this module once, when a search runs, so importing autokd
never imports Ray.
"""
from __future__ import annotations

import math
import os
import signal
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Callable

import ray
import torch
from optuna.trial import Trial, TrialState
from ray import tune
from ray.tune import Callback, Stopper
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from ..candidate import Candidate
from ..errors import UserError
from ..inherit import RECALIBRATION_IMAGES
from ..models import create_model
from ..train import Diverged
from ..trial import TrialContext, run_trial
from . import record
from .compute import epochs_in, trial_compute
from .front import pareto_front_points
from .prepare import Session
from .ray_start import init_ray, pending_trials
from .record import RayReport, TrialRecord
from .budget import SHARE
from .sampling import sample_candidate



# ------------------------------------------------------------------ the worker side
def trainable(config: dict, data=None, teacher_blob=None) -> None:
    """One Ray Tune trial: rebuild the teacher, run the candidate, report every epoch."""
    torch.set_num_threads(max(1, int(config["threads"])))
    node = ray.get_runtime_context().get_node_id()
    spec, state = teacher_blob
    teacher = create_model(spec["arch"], **spec["build_args"], plan=spec["plan"])
    teacher.load_state_dict(state)
    teacher.eval()
    device = "cuda" if config.get("gpus", 0) > 0 and torch.cuda.is_available() else "cpu"

    def report(epoch: int, metrics: dict) -> None:
        tune.report(RayReport(epoch=epoch, val_accuracy=float(metrics["val_accuracy"]), macs=int(metrics["macs"]),
                              node_id=node, pid=os.getpid(),
                              # pruning steps still to come (prune/at during, learned masks, gradual steps):
                              # this score is of a wider student than the trial's, so no rung ranks it
                              pending="target_macs" in metrics).as_dict())

    ctx = TrialContext(teacher=teacher.to(device), data=data, device=device, report=report,
                       rung_val_images=config.get("rung_val_images") or None,
                       out_dir=Path(config["out_dir"]) if config.get("out_dir") else None)
    try:
        result = run_trial(Candidate.from_dict(config["candidate"]), ctx)
    except Diverged as e:
        tune.report(RayReport(final=True, failure=f"diverged: {e}", node_id=node).as_dict())
        return
    except (torch.OutOfMemoryError, MemoryError):
        tune.report(RayReport(final=True, failure="out of memory", node_id=node).as_dict())
        return
    except Exception as e:  # noqa: BLE001 - a candidate that cannot run is recorded, not retried
        first = (str(e).splitlines() or [""])[0][:300]
        oom = "allocate memory" in first or "out of memory" in first.lower()  # CPU allocator: a RuntimeError
        why = ("out of memory: " if oom else "") + f"{e.__class__.__name__}: {first}"
        tune.report(RayReport(final=True, failure=why, node_id=node).as_dict())
        return
    tune.report(RayReport(final=True, val_accuracy=result.val_accuracy, macs=result.macs, params=result.params,
                          node_id=node, hostname=socket.gethostname(), history=result.history,
                          weights=config.get("out_dir"),
                          # every lambda_ij as run (a named kd/pairs resolved)
                          lambdas=result.candidate.get("lambdas", {}),
                          **trained_latency(config.get("latency"), result, data)).as_dict())


def trained_latency(latency: dict | None, result, data) -> dict:
    """--cost latency: the trained student's plan priced by the study's predictor, and timed here in the
    predictor's setting (a few rounds: beside other trials it is a rough figure, its spread recorded)."""
    if not latency or not result.plan:
        return {}
    from ..latency import Calibration, plan_latency_ms
    from ..timing import measure_latency

    cal = Calibration.from_dict(latency["calibration"])
    arch = result.candidate["student"]
    predicted = plan_latency_ms(cal, arch, result.plan, num_classes=data.num_classes)
    model = create_model(arch, num_classes=data.num_classes, in_channels=cal.setting.input_shape[0], plan=result.plan)
    timing = measure_latency([model.eval()], cal.setting, rounds=LATENCY_ROUNDS, warmup=3)[0]
    return {"latency_ms": predicted, "measured_latency_ms": timing.median_ms, "measured_latency_iqr_ms": timing.iqr_ms}


LATENCY_ROUNDS = 7  # a trained trial's latency: enough for a median and a spread, seconds for a small CNN


# ------------------------------------------------------------------ the driver side
def _latency(session):
    """The session's latency objective, None for a MACs search (or a session without a plan)."""
    return getattr(getattr(session, "plan", None), "latency", None)

@dataclass
class Tally:
    """What this run has seen so far: the searcher counts, the progress lines read."""

    trained: int = 0
    done: int = 0
    stopped: int = 0
    rejected: int = 0
    failed: int = 0
    compute: float = 0.0  # epoch-equivalents spent by every trial of the study, earlier runs included
    points: list[dict] = field(default_factory=list)  # completed trials of this run: the front so far

    @classmethod
    def of(cls, counts: dict[str, int], compute: float = 0.0) -> "Tally":
        return cls(trained=counts["trained"], done=counts["done"], stopped=counts["stopped"], rejected=counts["rejected"],
                   failed=counts["failed"], compute=compute)

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k not in ("points", "compute")}


def _record_epoch(trial: Trial, report: RayReport) -> None:
    """Keep ``report``'s validation accuracy on the Optuna trial, by epoch (the rung table on resume);
    an epoch scored before the student reached its final shape is also listed in ``unranked_epochs``."""
    assert report.epoch is not None  # a scored report
    rec = TrialRecord.of(trial)
    record.write(trial, epoch_val_accuracy={**rec.epoch_val_accuracy, str(report.epoch): report.val_accuracy})
    if report.pending:
        record.write(trial, unranked_epochs=sorted({*rec.unranked_epochs, report.epoch}))


class OptunaSearcher(Searcher):
    """A Ray Tune Searcher backed by the persistent multi-objective Optuna study of ``session``."""

    FINISHED = Searcher.FINISHED

    def __init__(self, session: Session, tally: Tally, interrupt: "Interrupt | None" = None) -> None:
        # no metric for Tune: it would then refuse (and end the whole search on) a result
        # without it, like the final report of a diverged or out-of-memory trial
        super().__init__(metric=None, mode=None)
        self.session, self.tally, self.interrupt = session, tally, interrupt
        self.study = session.study
        self.live: dict[str, Trial] = {}      # Tune trial id -> Optuna trial
        self.last: dict[str, RayReport] = {}   # Tune trial id -> last per-epoch report
        self.stopped: set[str] = set()         # early-stopped by the scheduler
        self.committed: dict[str, float] = {}  # Tune trial id -> the compute it will spend if it runs to the end
        self.promoted: dict[str, list[int]] = {}  # Tune trial id -> rungs the scheduler let it pass
        self.failed_in_a_row = 0               # failed trials since the last trained one
        self.gave_up: str | None = None        # why no trial is started any more (cfg.max_failures reached)
        data = getattr(session.plan, "data", None)  # the split sizes price an evaluation pass
        self.sizes = {"train_images": len(data.train_y), "val_images": len(data.val_y)} if data is not None else None

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def compute_of(self, epochs_trained: int, evaluations: int, scored_at_zero: bool,
                   scored_last: bool = True) -> float:
        """A trial's epoch-equivalents; ``scored_last``: it reached its last epoch, the one score that
        reads the whole validation split (the others read --rung-val-images of it)."""
        if self.sizes is None:  # no data split known: training epochs only
            return float(epochs_trained)
        return trial_compute(epochs_trained, evaluations, **self.sizes,
                             recalibration_images=RECALIBRATION_IMAGES if scored_at_zero else 0,
                             rung_images=self.session.cfg.rung_val_images or None, full_evaluations=int(scored_last))

    def full(self) -> bool:
        """No new trial: the trial target is reached, or --compute is spent or committed."""
        cfg = self.session.cfg
        if self.tally.trained + len(self.live) >= cfg.target_trials:
            return True
        return cfg.compute is not None and self.tally.compute + sum(self.committed.values()) >= cfg.compute

    def _spend(self, trial_id: str, trial) -> None:
        """Record on the Optuna trial the compute it spent (autokd.search.compute), and count it."""
        self.committed.pop(trial_id, None)
        rec = TrialRecord.of(trial)
        scores = rec.epoch_val_accuracy
        epochs, evaluations = epochs_in(scores)
        last = rec.candidate.get("epochs")
        spent = self.compute_of(epochs, evaluations, "0" in scores, scored_last=last is None or epochs >= int(last))
        record.write(trial, compute=spent)
        if self.promoted.get(trial_id):
            record.write(trial, rungs_promoted=self.promoted[trial_id])
        self.promoted.pop(trial_id, None)
        self.tally.compute += spent

    def suggest(self, trial_id: str):
        plan, cfg = self.session.plan, self.session.cfg
        if self.full() or self.gave_up:
            return self.FINISHED if not self.live else None
        for _ in range(cfg.max_rejections):
            self._at_budget_next()
            trial = self.study.ask(plan.space.distributions)
            sample = sample_candidate(trial, plan)
            record.write(trial, **sample.record())
            if sample.rejected:
                self.study.tell(trial, state=TrialState.FAIL)
                self.tally.rejected += 1
                continue
            cand, macs = sample.candidate, sample.macs
            self.live[trial_id] = trial
            self.committed[trial_id] = self.compute_of(cand.epochs, cand.epochs + (cand.init == "teacher"),
                                                       cand.init == "teacher")
            out_dir = self.session.folder / "trials" / f"{trial.number:04d}"
            config = {"candidate": cand.as_dict(), "trial_number": trial.number, "predicted_macs": macs,
                      "rung_group": plan.rung_group(cand.init, sample.target_macs, sample.target_ms),
                      "predicted_cost": plan.cost_of(macs, sample.latency_ms),
                      "out_dir": str(out_dir), "threads": cfg.cpus_per_trial, "gpus": cfg.gpus_per_trial,
                      "rung_val_images": cfg.rung_val_images}
            if plan.latency is not None:
                config["latency"] = {"calibration": plan.latency.calibration.as_dict()}
            return config
        over = (f"{plan.budget.macs:,} MACs" + (f" or {plan.latency.budget.ms:.3f} ms predicted"
                                                if plan.latency and plan.latency.budget else ""))
        raise UserError(f"{cfg.max_rejections} samples in a row were over the budget ({over}); widen the space "
                        f"or raise --flops-budget{' or --latency-budget' if plan.latency else ''}")

    def _at_budget_next(self) -> None:
        """Keep ``cfg.at_budget`` of the sampled compute on candidates at the budget itself: while those
        have had less, the next trial is asked with ``budget/share`` 1 (Optuna's ``enqueue_trial``: the
        sampler draws every other parameter). Warm starts still waiting go first, and count on neither
        side: they are fixed recipes, and the share is the sampler's search at the budget, which a warm
        start at the budget would otherwise use up before anything is sampled."""
        share, space = self.session.cfg.at_budget, self.session.plan.space
        if not share or SHARE not in space.distributions or self.study.get_trials(
                deepcopy=False, states=(TrialState.WAITING,)):
            return
        committed = {t.number: self.committed.get(tid, 0.0) for tid, t in self.live.items()}
        plan, edge, total = self.session.plan, 0.0, 0.0
        for t in self.study.get_trials(deepcopy=False):
            rec = TrialRecord.of(t)
            if rec.warm_start:
                continue
            spent = rec.compute if rec.compute is not None else committed.get(t.number, 0.0)
            total += spent
            edge += spent if plan.at_budget(rec.target_macs, rec.target_ms) else 0.0
        if total > 0 and edge < share * total:
            self.study.enqueue_trial({SHARE: 1.0})

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        report = RayReport.of(result)
        if report.final or trial_id not in self.live:
            return
        self.last[trial_id] = report
        trial = self.live[trial_id]
        if report.pid and TrialRecord.of(trial).worker_pid != report.pid:
            # where it runs, known while it runs (a retry after a lost worker runs elsewhere)
            record.write(trial, worker_pid=report.pid, node_id=report.node_id)
        _record_epoch(trial, report)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        report = RayReport.of(result)
        if report.node_id:
            record.write(trial, node_id=report.node_id)
        interrupted = self.interrupt is not None and self.interrupt.hit and not report.final
        failed = error or report.failure or interrupted
        stopped = not failed and (trial_id in self.stopped or not report.final)
        # a scheduler STOP reaches here with the stopping result itself (Tune skips on_trial_result for
        # it), newer than self.last: an inherited student stopped at rung 1 scored epochs 0 and 1
        last = report if report.epoch is not None and not report.final else self.last.get(trial_id, report)
        if stopped and last.scored:
            _record_epoch(trial, last)
        self._spend(trial_id, trial)
        if failed:
            reason = report.failure or ("interrupted (Ctrl-C)" if interrupted and not error else
                                        "the trial's worker failed (crashed or was killed)")
            record.write(trial, failure=reason)
            self.study.tell(trial, state=TrialState.FAIL)
            self.tally.failed += 1
            self._count_failure(reason)
        elif stopped:
            record.write(trial, val_accuracy=last.val_accuracy, stopped_at_epoch=last.epoch)
            self.study.tell(trial, state=TrialState.PRUNED)
            self.tally.stopped += 1
            self.tally.trained += 1
        else:
            assert report.val_accuracy is not None and report.macs is not None  # a finished trial's final report
            record.write(trial, params_count=report.params, history=report.history or [], weights=report.weights,
                         lambdas=report.lambdas)
            latency = {k: v for k, v in (("latency_ms", report.latency_ms), ("measured_latency_ms",
                       report.measured_latency_ms), ("measured_latency_iqr_ms", report.measured_latency_iqr_ms))
                       if v is not None}
            if _latency(self.session):  # the plan it trained to (a global ranking's is known only now), and
                # its MACs: the study's second value is its latency
                record.write(trial, macs=int(report.macs), **latency)
            ms = latency.get("latency_ms", TrialRecord.of(trial).latency_ms)
            cost = ms if _latency(self.session) else report.macs
            assert cost is not None  # a latency search's trial has its latency
            self.study.tell(trial, [float(report.val_accuracy), float(cost)])
            self.tally.points.append({"number": trial.number, "val_accuracy": float(report.val_accuracy),
                                      "macs": int(report.macs), "cost": float(cost)})
            self.tally.done += 1
            self.tally.trained += 1
        if not failed:
            self.failed_in_a_row = 0
        self.last.pop(trial_id, None)

    def _count_failure(self, reason: str) -> None:
        """After ``cfg.max_failures`` failed trials in a row no new trial starts, and ``gave_up`` says why."""
        self.failed_in_a_row += 1
        limit = self.session.cfg.max_failures
        if self.failed_in_a_row >= limit and not self.gave_up:
            self.gave_up = (f"{self.failed_in_a_row} trials in a row failed, the last with: {reason}; "
                            f"the study is kept (`autokd studies`), fix the cause and resume with the same command")

    def note_retry(self, trial_id: str) -> None:
        """Ray restarts a trial whose worker died (``max_retries``): counted on the Optuna trial."""
        trial = self.live.get(trial_id)
        if trial is not None:
            record.write(trial, retries=TrialRecord.of(trial).retries + 1)
            self.last.pop(trial_id, None)

    def abandon_live(self, reason: str) -> None:
        """Record trials still running when the driver stops as failed (never left RUNNING).

        Runs while the driver is stopping, maybe inside a second Ctrl-C: a trial that cannot be
        written now stays RUNNING and the next run records it (``study.recover_interrupted``)."""
        for trial_id, trial in list(self.live.items()):
            self.live.pop(trial_id)
            try:
                self._spend(trial_id, trial)
                record.write(trial, failure=reason)
                self.study.tell(trial, state=TrialState.FAIL)
                self.tally.failed += 1
            except Exception:  # noqa: BLE001 - already told, or the storage is going away
                pass


class ParetoScheduler(FIFOScheduler):
    """A Ray Tune scheduler that asks the two-objective rule (``ParetoStopper`` or ``LadderStopper``,
    :mod:`autokd.search.stopping`) at each rung, and notes the rungs each trial passed."""

    def __init__(self, stopper, searcher: OptunaSearcher) -> None:
        super().__init__()
        self.stopper, self.searcher = stopper, searcher

    def on_trial_result(self, controller, trial, result):
        report = RayReport.of(result)
        if report.final or report.epoch is None or report.pending:
            return TrialScheduler.CONTINUE  # a score of the student before its last pruning step is not ranked
        number, group = trial.config["trial_number"], trial.config["rung_group"]
        epoch = int(report.epoch)
        cost = trial.config.get("predicted_cost") if _latency(self.searcher.session) else report.macs
        if self.stopper.observe(number, epoch, float(report.val_accuracy), cost, group):
            self.searcher.stopped.add(trial.trial_id)
            return TrialScheduler.STOP
        if epoch in self.stopper.rungs:  # passed this rung: the dashboard shows who each rung promoted
            passed = self.searcher.promoted.setdefault(trial.trial_id, [])
            if epoch not in passed:
                passed.append(epoch)
        return TrialScheduler.CONTINUE


class Progress(Callback):
    """Tells the user what happens: one line per finished trial, with the front so far.

    Tune pickles its run config (callbacks included) into the experiment folder; the printer (a
    rich Console holds a lock) and the searcher (it holds the study) are left out of that copy,
    which only Tune's own restore would read.
    """

    def __init__(self, searcher: OptunaSearcher, target: float, started: float, printer: Callable[[str], None] | None,
                 compute: float | None = None):
        self.searcher, self.target, self.started, self.printer = searcher, target, started, printer
        self.compute, self.compute_at_start = compute, searcher.tally.compute

    def __getstate__(self) -> dict:
        return {**self.__dict__, "printer": None, "searcher": None}

    def _line(self, what: str, trial, result: dict | None = None, trials=None) -> None:
        if not self.printer:
            return
        n, tally = trial.config.get("trial_number"), self.searcher.tally
        running = sum(t.status == "RUNNING" for t in (trials or [])) if trials is not None else 0
        acc = RayReport.of(result).val_accuracy
        acc_s = f" val acc {100 * acc:.2f}%" if acc is not None else ""
        macs = trial.config.get("predicted_macs", 0)
        ms = f", {trial.config['predicted_cost']:.3f} ms" if "latency" in trial.config else ""
        elapsed = time.time() - self.started
        work = f"{tally.compute:.1f}" + ("" if self.compute is None else f"/{self.compute:g}")
        self.printer(f"trial {n}: {what}{acc_s}, {macs / 1e6:.3f} M MACs{ms} | done {tally.done} "
                     f"running {running} stopped {tally.stopped} rejected {tally.rejected} "
                     f"failed {tally.failed} | compute {work} epoch-eq | {elapsed:.0f}s elapsed"
                     + self._left(elapsed) + self._front())

    def _left(self, elapsed: float) -> str:
        """Time left, from the pace of this run: by compute with --compute, else by trials."""
        tally = self.searcher.tally
        if self.compute is not None:
            done, left = tally.compute - self.compute_at_start, self.compute - tally.compute
        else:
            done, left = tally.trained, self.target - tally.trained
        if done <= 0 or not math.isfinite(left):
            return ""
        return f", ~{max(0.0, elapsed / done * left):.0f}s left"

    def _front(self) -> str:
        """The front of this run's completed trials so far: accuracy @ MACs, cheapest first."""
        if _latency(getattr(self.searcher, "session", None)) is None:
            front = pareto_front_points(self.searcher.tally.points)
            cells = [f"{100 * p['val_accuracy']:.1f}%@{p['macs'] / 1e6:.3g}M" for p in front]
        else:
            front = pareto_front_points(self.searcher.tally.points, cost="cost")
            cells = [f"{100 * p['val_accuracy']:.1f}%@{p['cost']:.3g}ms" for p in front]
        cells = list(dict.fromkeys(cells))  # ties once
        return f"\n  front so far: {', '.join(cells[:4])}{' ...' if len(cells) > 4 else ''}" if cells else ""

    def on_trial_complete(self, iteration, trials, trial, **info):
        report = RayReport.of(trial.last_result)
        self._line("stopped early" if not report.final else ("failed: " + report.failure) if report.failure else "done",
                   trial, trial.last_result, trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line("worker failed", trial, trials=trials)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.searcher.note_retry(trial.trial_id)
        self._line("worker lost, retrying", trial, trials=trials)


class Interrupt:
    """Ctrl-C during the trials: the first one ends the search within seconds (running trials
    are stopped and recorded failed, ``interrupted``; the driver then raises KeyboardInterrupt),
    a second one stops at once. Ray Tune's own handler is switched off (TUNE_DISABLE_SIGINT_HANDLER):
    it ends only the current Tune run, after which the driver would start the next round."""

    def __init__(self) -> None:
        self.hit = False
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None  # the handler to restore

    def __enter__(self) -> "Interrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def __getstate__(self) -> dict:  # Tune pickles its config; a signal handler is not data
        return {"hit": self.hit, "_previous": None}


class InterruptStopper(Stopper):
    """A Tune stopper that ends the whole run once Ctrl-C was pressed (checked every ~0.1 s)."""

    def __init__(self, interrupt: Interrupt) -> None:
        self.interrupt = interrupt

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.interrupt.hit


def run_round(session: Session, tally: Tally, started: float, say: Callable[[str], None] | None,
              interrupt: Interrupt | None = None) -> str | None:
    """One Ray Tune run that trains trials until the target is reached; returns why it stopped
    before, when ``cfg.max_failures`` trials failed in a row (None otherwise)."""
    cfg = session.cfg
    init_ray(cfg)
    searcher = OptunaSearcher(session, tally, interrupt)
    fn = tune.with_resources(tune.with_parameters(trainable, data=session.plan.data, teacher_blob=session.teacher_blob),
                             {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial})
    scheduler = ParetoScheduler(session.stopper, searcher) if session.stopper else None
    tuner = tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=cfg.parallel,
                                    # a finished trial's worker runs the next one: no new process, no
                                    # re-import of torch (driver time a trial: 4.2 s -> 0.1 s, benchmarks table 3)
                                    reuse_actors=True, scheduler=scheduler),
        run_config=tune.RunConfig(name=f"round-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
                                  storage_path=str(session.folder / "ray"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=cfg.max_retries),
                                  stop=InterruptStopper(interrupt) if interrupt else None,
                                  callbacks=[Progress(searcher, cfg.target_trials, started, say, cfg.compute)]),
    )
    try:
        with pending_trials(cfg.parallel):
            tuner.fit()
    finally:
        searcher.abandon_live("interrupted (Ctrl-C)" if interrupt and interrupt.hit else
                              "interrupted: the search driver stopped while it ran")
    return searcher.gave_up
