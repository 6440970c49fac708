"""The search driver: Optuna is the brain, Ray Tune the muscle.

The driver owns the Optuna study (``studies/<name>/study.db``): a custom Ray Tune ``Searcher``
asks Optuna for a candidate, computes its MACs before any training (``prune.predict_cost``) and
records an over-budget candidate as a *rejected* trial instead of training it. Ray Tune runs the
accepted candidates in worker processes (local Ray by default, an existing cluster with
``address``), a Tune scheduler applies the two-objective early stopping of
:mod:`autokd.stopping`, and every result is told back to Optuna by the driver alone.
"""
from __future__ import annotations

import math
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from .budget import Budget, parse_budget
from .errors import UserError
from .registry import Registry
from .trial import Candidate

SAMPLERS: Registry[Callable] = Registry("sampler")


@SAMPLERS.register("tpe")
def _tpe(seed: int, trials: int):
    import optuna  # multivariate TPE, constant liar: parallel workers do not all ask for one point

    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                      n_startup_trials=max(4, min(10, trials // 3)))


@SAMPLERS.register("nsga2")
def _nsga2(seed: int, trials: int):
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, trials // 3)))


@SAMPLERS.register("random")
def _random(seed: int, trials: int):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@dataclass
class SearchConfig:
    teacher: str = "resnet56"      # architecture name (trained once and cached) or a bundle path
    dataset: str = "digits"        # the embedded default: offline, seconds per epoch on a CPU
    flops_budget: str = "40%"      # share of the teacher's cost, or absolute FLOPs ("100M")
    space: str | None = None       # a YAML path or shipped name; default: the teacher family's
    study: str | None = None       # default "<teacher>-<dataset>"
    trials: int = 12               # trained trials wanted in total (completed + stopped early)
    parallel: int = 2              # trials at once; 2 fills the 2-core laptop case
    epochs: int = 5                # per trial: enough to rank candidates on digits
    teacher_epochs: int = 15       # for a named teacher trained on first use
    sampler: str = "tpe"
    seed: int = 0
    address: str | None = None     # an existing Ray cluster (`ray start --head`), else local Ray
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    early_stopping: bool = True
    reference: bool = True         # train the space's first student alone once: the front's yardstick
    min_dominators: int = 2        # see autokd.stopping
    stop_margin: float = 0.02      # dominated by at least 2 accuracy points: epoch-1 noise stops nothing
    train_subset: int | None = None
    max_retries: int = 1           # Ray retries of a trial whose worker died
    max_rejections: int = 500      # consecutive over-budget samples before giving up

    def as_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------ checks before anything runs
def check_config(cfg: SearchConfig) -> None:
    from .study import check_name

    for name in ("trials", "parallel", "epochs", "teacher_epochs"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if cfg.cpus_per_trial <= 0 or cfg.gpus_per_trial < 0:
        raise UserError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    SAMPLERS.get(cfg.sampler)
    check_name(cfg.study or default_study_name(cfg))
    if cfg.address:
        check_cluster(cfg.address)


def default_study_name(cfg: SearchConfig) -> str:
    stem = Path(cfg.teacher).name.removesuffix(".safetensors") if os.sep in cfg.teacher else cfg.teacher
    return f"{stem}-{cfg.dataset}".replace(":", "_").replace("/", "_")


def check_cluster(address: str, timeout: float = 3.0) -> None:
    """Fail in seconds, with one line, when nothing listens at ``host:port``."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return
    except (ValueError, OSError) as e:
        raise UserError(f"--address {address}: no Ray cluster answers there ({e.__class__.__name__}); "
                        "start one with `ray start --head --port PORT` or drop --address to run locally") from None


def teacher_arch_and_macs(spec: str, input_shape: tuple[int, ...], num_classes: int) -> tuple[str, int]:
    """The teacher's architecture and MACs, known without training it."""
    from .bundle import load_bundle
    from .measure import count_macs
    from .models import MODELS, create_model

    if spec in MODELS and not Path(spec).exists():
        model = create_model(spec, num_classes=num_classes, in_channels=input_shape[0])
        return spec, count_macs(model, input_shape)
    if not Path(spec).exists():
        raise UserError(f"unknown teacher {spec!r}: neither a model folder/.safetensors file nor one of: "
                        + ", ".join(MODELS.names()))
    model, _ = load_bundle(spec)
    return model.arch, count_macs(model, input_shape)


def predict_macs(cand: Candidate, num_classes: int, input_shape: tuple[int, ...]) -> int:
    from .prune import predict_cost

    _, cost = predict_cost(cand.student, num_classes=num_classes, in_channels=input_shape[0],
                           width=cand.width, ratios_spec=cand.prune or 0.0, input_shape=input_shape)
    return cost.macs


def cheapest_macs(space, base: Candidate, num_classes: int, input_shape) -> int:
    from .space import params_to_candidate

    return min(predict_macs(params_to_candidate(p, fixed=space.fixed, base=base), num_classes, input_shape)
               for p in space.min_cost_candidates())


# ------------------------------------------------------------------ the worker side
def trainable(config: dict, data=None, teacher_blob=None) -> None:
    """One Ray Tune trial: rebuild the teacher, run the candidate, report every epoch."""
    import ray
    import torch
    from ray import tune

    from .models import create_model
    from .train import Diverged
    from .trial import TrialContext, run_trial

    torch.set_num_threads(max(1, int(config["threads"])))
    node = ray.get_runtime_context().get_node_id()
    spec, state = teacher_blob
    teacher = create_model(spec["arch"], **spec["build_args"], plan=spec["plan"])
    teacher.load_state_dict(state)
    teacher.eval()
    device = "cuda" if config.get("gpus", 0) > 0 and torch.cuda.is_available() else "cpu"

    def report(epoch: int, metrics: dict) -> None:
        tune.report({"epoch": epoch, "val_accuracy": float(metrics["val_accuracy"]),
                     "macs": int(metrics["macs"]), "node_id": node, "pid": os.getpid()})

    ctx = TrialContext(teacher=teacher.to(device), data=data, device=device, report=report,
                       out_dir=Path(config["out_dir"]) if config.get("out_dir") else None)
    try:
        result = run_trial(Candidate.from_dict(config["candidate"]), ctx)
    except Diverged as e:
        tune.report({"final": True, "failure": f"diverged: {e}", "node_id": node})
        return
    except (torch.OutOfMemoryError, MemoryError):
        tune.report({"final": True, "failure": "out of memory", "node_id": node})
        return
    except Exception as e:  # noqa: BLE001 - a candidate that cannot run is recorded, not retried
        first = (str(e).splitlines() or [""])[0][:300]
        oom = "allocate memory" in first or "out of memory" in first.lower()  # CPU allocator: a RuntimeError
        tune.report({"final": True, "failure": ("out of memory: " if oom else "") + f"{e.__class__.__name__}: {first}",
                     "node_id": node})
        return
    tune.report({"final": True, "val_accuracy": result.val_accuracy, "macs": result.macs,
                 "params": result.params, "node_id": node, "hostname": socket.gethostname(),
                 "history": result.history, "weights": config.get("out_dir")})


# ------------------------------------------------------------------ the driver side
class OptunaSearcher:
    """A Ray Tune Searcher backed by a persistent multi-objective Optuna study (built lazily so
    that importing autokd never imports Ray)."""

    @staticmethod
    def build(**kwargs):
        from ray.tune.search import Searcher

        class _Searcher(_SearcherLogic, Searcher):
            def __init__(self, **kw):
                # no metric for Tune: it would then refuse (and end the whole search on) a result
                # without it, like the final report of a diverged or out-of-memory trial
                Searcher.__init__(self, metric=None, mode=None)
                _SearcherLogic.__init__(self, **kw)

        return _Searcher(**kwargs)


class _SearcherLogic:
    FINISHED = "FINISHED"

    def __init__(self, study, space, base: Candidate, budget: Budget, target: int, num_classes: int,
                 input_shape, folder: Path, cfg: SearchConfig, stats: dict, interrupt: _Interrupt | None = None):
        self.study, self.space, self.base, self.budget = study, space, base, budget
        self.interrupt = interrupt
        self.target, self.num_classes, self.input_shape = target, num_classes, input_shape
        self.folder, self.cfg, self.stats = folder, cfg, stats
        self.live: dict[str, object] = {}      # Tune trial id -> Optuna trial
        self.last: dict[str, dict] = {}        # Tune trial id -> last per-epoch result
        self.stopped: set[str] = set()         # early-stopped by the scheduler

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str):
        from optuna.trial import TrialState

        from .space import suggest

        if self.stats["trained"] + len(self.live) >= self.target:
            return self.FINISHED if not self.live else None
        for _ in range(self.cfg.max_rejections):
            trial = self.study.ask(self.space.distributions)
            seed = self.cfg.seed * 100_003 + trial.number
            cand = replace(suggest(trial, self.space, self.base), seed=seed)
            macs = predict_macs(cand, self.num_classes, self.input_shape)
            trial.set_user_attr("candidate", cand.as_dict())
            trial.set_user_attr("macs", macs)
            if macs > self.budget.macs:
                trial.set_user_attr("rejected", True)
                self.study.tell(trial, state=TrialState.FAIL)
                self.stats["rejected"] += 1
                continue
            self.live[trial_id] = trial
            out_dir = self.folder / "trials" / f"{trial.number:04d}"
            return {"candidate": cand.as_dict(), "trial_number": trial.number, "predicted_macs": macs,
                    "out_dir": str(out_dir), "threads": self.cfg.cpus_per_trial, "gpus": self.cfg.gpus_per_trial}
        raise UserError(f"{self.cfg.max_rejections} samples in a row were over the budget "
                        f"({self.budget.macs:,} MACs); widen the space or raise --flops-budget")

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if result.get("final") or trial_id not in self.live:
            return
        self.last[trial_id] = result
        trial = self.live[trial_id]
        if result.get("pid") and trial.user_attrs.get("worker_pid") != result["pid"]:
            # where it runs, known while it runs (a retry after a lost worker runs elsewhere)
            trial.set_user_attr("worker_pid", result["pid"])
            trial.set_user_attr("node_id", result.get("node_id"))
        rungs = dict(trial.user_attrs.get("epoch_val_accuracy", {}))
        rungs[str(result["epoch"])] = result["val_accuracy"]
        trial.set_user_attr("epoch_val_accuracy", rungs)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        result = result or {}
        if result.get("node_id"):
            trial.set_user_attr("node_id", result["node_id"])
        interrupted = self.interrupt is not None and self.interrupt.hit and not result.get("final")
        if error or result.get("failure") or interrupted:
            reason = result.get("failure") or ("interrupted (Ctrl-C)" if interrupted and not error else
                                               "the trial's worker failed (crashed or was killed)")
            trial.set_user_attr("failure", reason)
            self.study.tell(trial, state=TrialState.FAIL)
            self.stats["failed"] += 1
        elif trial_id in self.stopped or not result.get("final"):
            last = self.last.get(trial_id, result)
            if "epoch" in last and "val_accuracy" in last:  # the stopping result itself, if not seen yet
                rungs = dict(trial.user_attrs.get("epoch_val_accuracy", {}))
                rungs[str(last["epoch"])] = last["val_accuracy"]
                trial.set_user_attr("epoch_val_accuracy", rungs)
            trial.set_user_attr("val_accuracy", last.get("val_accuracy"))
            trial.set_user_attr("stopped_at_epoch", last.get("epoch"))
            self.study.tell(trial, state=TrialState.PRUNED)
            self.stats["stopped"] += 1
            self.stats["trained"] += 1
        else:
            trial.set_user_attr("params_count", result["params"])
            trial.set_user_attr("history", result.get("history", []))
            trial.set_user_attr("weights", result.get("weights"))
            self.study.tell(trial, [float(result["val_accuracy"]), float(result["macs"])])
            self.stats.setdefault("points", []).append(
                {"number": trial.number, "val_accuracy": float(result["val_accuracy"]), "macs": int(result["macs"])})
            self.stats["done"] += 1
            self.stats["trained"] += 1
        self.last.pop(trial_id, None)

    def note_retry(self, trial_id: str) -> None:
        """Ray restarts a trial whose worker died (``max_retries``): counted on the Optuna trial."""
        trial = self.live.get(trial_id)
        if trial is not None:
            trial.set_user_attr("retries", int(trial.user_attrs.get("retries", 0)) + 1)
            self.last.pop(trial_id, None)

    def abandon_live(self, reason: str) -> None:
        """Record trials still running when the driver stops as failed (never left RUNNING).

        Runs while the driver is stopping, maybe inside a second Ctrl-C: a trial that cannot be
        written now stays RUNNING and the next run records it (``study.recover_interrupted``)."""
        from optuna.trial import TrialState

        for trial_id, trial in list(self.live.items()):
            self.live.pop(trial_id)
            try:
                trial.set_user_attr("failure", reason)
                self.study.tell(trial, state=TrialState.FAIL)
                self.stats["failed"] += 1
            except Exception:  # noqa: BLE001 - already told, or the storage is going away
                pass


def make_scheduler(stopper, searcher):
    """A Ray Tune scheduler that asks the two-objective rule at each rung."""
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    class ParetoScheduler(FIFOScheduler):
        def on_trial_result(self, controller, trial, result):
            if result.get("final") or "epoch" not in result:
                return TrialScheduler.CONTINUE
            number = trial.config["trial_number"]
            if stopper.observe(number, int(result["epoch"]), float(result["val_accuracy"]), int(result["macs"])):
                searcher.stopped.add(trial.trial_id)
                return TrialScheduler.STOP
            return TrialScheduler.CONTINUE

    return ParetoScheduler()


def make_progress(stats: dict, target: int, started: float, printer: Callable[[str], None] | None,
                  on_retry: Callable[[str], None] | None = None):
    """A Ray Tune callback that tells the user what happens (one line per finished trial).

    Tune pickles its run config (callbacks included) into the experiment folder; the printer (a
    rich Console holds a lock) is left out of that copy, which only Tune's own restore would read.
    """
    from ray.tune import Callback

    class Progress(Callback):
        # arguments, not a closure: cloudpickle copies a dynamic class's closure along with it
        def __init__(self, printer, stats, target, started, on_retry) -> None:
            self.printer, self.stats, self.target, self.started = printer, stats, target, started
            self.on_retry = on_retry

        def __getstate__(self) -> dict:
            return {**self.__dict__, "printer": None}

        def _line(self, what: str, trial, result: dict | None = None, trials=None) -> None:
            if not self.printer:
                return
            n, stats = trial.config.get("trial_number"), self.stats
            running = sum(t.status == "RUNNING" for t in (trials or [])) if trials is not None else 0
            acc = (result or {}).get("val_accuracy")
            acc_s = f" val acc {100 * acc:.2f}%" if acc is not None else ""
            macs = trial.config.get("predicted_macs", 0)
            elapsed = time.time() - self.started
            left = self.target - stats["trained"]
            eta = elapsed / max(1, stats["trained"]) * left if stats["trained"] else float("nan")
            self.printer(f"trial {n}: {what}{acc_s}, {macs / 1e6:.3f} M MACs | done {stats['done']} "
                         f"running {running} stopped {stats['stopped']} rejected {stats['rejected']} "
                         f"failed {stats['failed']} | {elapsed:.0f}s elapsed"
                         + ("" if math.isnan(eta) else f", ~{eta:.0f}s left") + self._front())

        def _front(self) -> str:
            """The front of this run's completed trials so far: accuracy @ MACs, cheapest first."""
            from .pareto import pareto_front_points

            front = pareto_front_points(self.stats.get("points", []))
            cells = [f"{100 * p['val_accuracy']:.1f}%@{p['macs'] / 1e6:.3g}M" for p in front[:4]]
            return f"\n  front so far: {', '.join(cells)}{' ...' if len(front) > 4 else ''}" if cells else ""

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._line("stopped early" if trial.last_result.get("final") is None else
                       ("failed: " + trial.last_result["failure"]) if trial.last_result.get("failure") else "done",
                       trial, trial.last_result, trials)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._line("worker failed", trial, trials=trials)

        def on_trial_recover(self, iteration, trials, trial, **info):
            if self.on_retry:
                self.on_retry(trial.trial_id)
            self._line("worker lost, retrying", trial, trials=trials)

    return Progress(printer, stats, target, started, on_retry)


class _Interrupt:
    """Ctrl-C during the trials: the first one ends the search within seconds (running trials
    are stopped and recorded failed, ``interrupted``; the driver then raises KeyboardInterrupt),
    a second one stops at once. Ray Tune's own handler is switched off (TUNE_DISABLE_SIGINT_HANDLER):
    it ends only the current Tune run, after which the driver would start the next round."""

    def __init__(self) -> None:
        self.hit = False
        self._previous = None

    def __enter__(self) -> "_Interrupt":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def __getstate__(self) -> dict:  # Tune pickles its config; a signal handler is not data
        return {"hit": self.hit, "_previous": None}


def make_interrupt_stopper(interrupt: _Interrupt):
    """A Tune stopper that ends the whole run once Ctrl-C was pressed (checked every ~0.1 s)."""
    from ray.tune import Stopper

    class InterruptStopper(Stopper):
        def __init__(self, interrupt: _Interrupt) -> None:
            self.interrupt = interrupt

        def __call__(self, trial_id, result) -> bool:
            return False

        def stop_all(self) -> bool:
            return self.interrupt.hit

    return InterruptStopper(interrupt)


def _preload_rungs(study, stopper) -> None:
    from optuna.trial import TrialState

    from .stopping import RungResult

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        for epoch, acc in t.user_attrs.get("epoch_val_accuracy", {}).items():
            if int(epoch) in stopper.rungs:
                stopper.record(RungResult(t.number, int(epoch), float(acc), int(t.user_attrs.get("macs", 0))))


def _init_ray(cfg: SearchConfig) -> None:
    import logging

    import ray

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max(1, cfg.parallel)))
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Ctrl-C is the driver's: see _Interrupt
    if ray.is_initialized():
        ray.shutdown()  # a fresh connection per search: the address may differ from the last one
    kwargs = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                  configure_logging=True)
    if cfg.address:
        _use_ray_token()
        try:
            ray.init(address=cfg.address, **kwargs)
        except ConnectionError as e:
            raise UserError(f"--address {cfg.address}: Ray did not accept the connection ({str(e)[:120]}); if the "
                            "cluster uses token authentication, set RAY_AUTH_TOKEN (see `ray get-auth-token`)") from None
    else:  # a new local Ray bound to loopback; the dashboard stays off. address="local": never
        # join a cluster that `ray start` left on this machine (address=None would, silently)
        with _loopback_only():
            ray.init(address="local", _node_ip_address="127.0.0.1", num_gpus=None, **kwargs)


@contextmanager
def _loopback_only() -> Iterator[None]:
    """Have a local Ray listen on 127.0.0.1 only.

    Ray turns ``_node_ip_address="127.0.0.1"`` into the machine's outward address and then its
    GCS, raylet and workers listen on every interface; it keeps the node on loopback (and its
    servers bound there) only where it believes multi-node clusters are off. That switch is
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when ray is imported, so the constant is set too
    while the local node starts, and both are put back afterwards (a later ``--address`` run in
    this process must see its real address). tests/test_faults_security.py checks the sockets."""
    from ray._private import ray_constants

    env, constant = os.environ.get(_CLUSTER_SWITCH), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_CLUSTER_SWITCH], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = constant
        if env is None:
            os.environ.pop(_CLUSTER_SWITCH, None)
        else:
            os.environ[_CLUSTER_SWITCH] = env


_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _use_ray_token() -> None:
    """Ray >= 2.5x clusters started with `ray start --head` require a token by default, but
    ``ray.init(address=...)`` sends one only when RAY_AUTH_MODE=token. Where the user has a token
    (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, which `ray start` writes) and did
    not choose a mode, send it; a cluster without authentication accepts it too."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or path.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        try:  # Ray read its config when it was imported: have it read the mode again
            from ray._raylet import Config

            Config.initialize("")
        except (ImportError, AttributeError):
            pass


def _shutdown_ray() -> None:
    import sys

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def _resolve_space(cfg: SearchConfig, teacher_arch: str):
    from .space import default_space_for, load_space

    return load_space(cfg.space or default_space_for(teacher_arch))


def _config_record(cfg: SearchConfig, space, budget: Budget, teacher_arch: str, teacher_macs: int,
                   teacher_card: dict, sampler_seed: int) -> dict:
    from .provenance import provenance

    return {"search": cfg.as_dict(), "space": {"name": space.name, "path": str(space.path)},
            "teacher": {"spec": cfg.teacher, "arch": teacher_arch, "macs": teacher_macs,
                        "test_accuracy": teacher_card.get("test_accuracy"),
                        "val_accuracy": teacher_card.get("val_accuracy"),
                        "bundle": teacher_card.get("cached_at", cfg.teacher)},
            "budget": budget.as_dict(), "sampler": {"name": cfg.sampler, "seed": sampler_seed},
            "objectives": {"values": ["val_accuracy", "macs"], "directions": ["maximize", "minimize"]},
            "cost_unit": "macs = multiply-accumulates of conv+linear layers; flops = 2 * macs",
            "provenance": provenance(), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _reference_student(space, data, cfg: SearchConfig, say: Callable[[str], None]) -> dict:
    """The space's first student, unpruned at width 1, trained alone (cross-entropy, no teacher)
    for the trials' epochs and seed: the reference point of ``autokd pareto``'s scatter. Its
    validation accuracy only; the test set stays unread."""
    from .provenance import default_device
    from .teacher import train_model
    from .train import TrainConfig

    dists = space.distributions
    arch = space.fixed.get("student/arch") or (dists["student/arch"].choices[0] if "student/arch" in dists
                                               else Candidate().student)
    say(f"training the reference: {arch} alone (unpruned, width 1, no teacher), {cfg.epochs} epochs")
    _, card = train_model(arch, data, TrainConfig(epochs=cfg.epochs, seed=cfg.seed),
                          device=default_device() if cfg.gpus_per_trial > 0 else "cpu")
    return {"label": f"{arch} trained alone (unpruned, width 1)", "arch": arch, "width": 1.0,
            "epochs": cfg.epochs, "val_accuracy": card["val_accuracy"], "macs": card["macs"],
            "params": card["params"]}


def _check_resume(cfg: SearchConfig, saved: dict) -> None:
    old = saved.get("search", {})
    for key in ("teacher", "dataset", "flops_budget", "space", "epochs", "train_subset"):
        if key in old and old[key] != getattr(cfg, key) and not (key == "space" and cfg.space is None):
            raise UserError(f"study {cfg.study!r} was created with --{key.replace('_', '-')} {old[key]!r}, "
                            f"not {getattr(cfg, key)!r}; resume with the same settings or use another --study")


def search(cfg: SearchConfig | None = None, *, printer: Callable[[str], None] | None = None, **overrides):
    """Run (or resume) a study until ``cfg.trials`` trials were trained; returns the Optuna study.

    Everything a user can get wrong is checked before anything is written or trained.
    """
    import optuna

    from . import study as studies
    from .bundle import plan_of
    from .data import load_dataset
    from .stopping import ParetoStopper, default_rungs
    from .teacher import get_teacher
    from .train import TrainConfig

    cfg = replace(cfg or SearchConfig(), **overrides)
    cfg.study = cfg.study or default_study_name(cfg)
    check_config(cfg)
    say = printer or (lambda _msg: None)
    data = load_dataset(cfg.dataset, seed=cfg.seed, train_subset=cfg.train_subset)
    shape = (data.in_channels, *data.image_size)
    teacher_arch, teacher_macs = teacher_arch_and_macs(cfg.teacher, shape, data.num_classes)
    budget = parse_budget(cfg.flops_budget, teacher_macs)
    space = _resolve_space(cfg, teacher_arch)
    base = Candidate(epochs=cfg.epochs)
    floor = cheapest_macs(space, base, data.num_classes, shape)
    if floor > budget.macs:
        raise UserError(f"no candidate of space {space.name!r} fits the budget: the cheapest costs "
                        f"{floor:,} MACs, the budget is {budget.macs:,} MACs ({cfg.flops_budget}); "
                        "raise --flops-budget or use a space with smaller students")
    if studies.exists(cfg.study):
        _check_resume(cfg, studies.read_config(cfg.study))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with studies.locked(cfg.study) as folder:
        saved = studies.read_config(cfg.study)
        tcfg = TrainConfig(epochs=cfg.teacher_epochs, seed=cfg.seed)
        teacher, tcard = get_teacher(cfg.teacher, data, tcfg, on_train=say)
        sampler_seed = saved.get("sampler", {}).get("seed", cfg.seed)
        study = optuna.create_study(study_name=cfg.study, storage=studies.storage_url(cfg.study),
                                    directions=list(studies.DIRECTIONS), load_if_exists=True)
        # the stored sampler and seed; offset by the trials so far so a resumed run draws new points
        sampler_name = saved.get("sampler", {}).get("name", cfg.sampler)
        study.sampler = SAMPLERS.get(sampler_name)(sampler_seed + len(study.trials), cfg.trials)
        if not saved:
            from .bundle import write_json

            record = _config_record(cfg, space, budget, teacher_arch, teacher_macs, tcard, sampler_seed)
            for key, value in {**budget.as_dict(), "teacher": cfg.teacher, "teacher_arch": teacher_arch,
                               "teacher_macs": teacher_macs, "dataset": cfg.dataset, "space": space.name,
                               "objectives": ["val_accuracy", "macs"], "cost_unit": record["cost_unit"],
                               "input_shape": list(shape), "num_classes": data.num_classes}.items():
                study.set_user_attr(key, value)
            write_json(folder / "config.json", record)
        lost = studies.recover_interrupted(study)
        if lost:
            say(f"resuming: {lost} trial(s) left running by an earlier driver recorded as failed")
        stats = studies.counts(study)
        say(f"study {cfg.study}: {stats['trained']} of {cfg.trials} trials trained so far; budget "
            f"{budget.macs / 1e6:.3f} M MACs ({budget.flops / 1e6:.3f} M FLOPs, "
            f"{100 * budget.share_of_teacher:.0f}% of teacher {teacher_arch})")
        if cfg.reference and not study.user_attrs.get("references"):
            study.set_user_attr("references", [_reference_student(space, data, cfg, say)])
        stopper = (ParetoStopper(default_rungs(cfg.epochs), cfg.min_dominators, cfg.stop_margin)
                   if cfg.early_stopping else None)
        if stopper:
            _preload_rungs(study, stopper)
        blob = (plan_of(teacher), {k: v.detach().cpu() for k, v in teacher.state_dict().items()})
        started, failures_at_start = time.time(), stats["failed"]
        try:
            with _Interrupt() as interrupt:
                while stats["trained"] < cfg.trials:
                    if stats["failed"] - failures_at_start >= max(3, cfg.trials):
                        raise UserError(f"{stats['failed'] - failures_at_start} trials failed in this run; see "
                                        f"`autokd studies` and the trials' 'failure' attribute in {folder}")
                    before = (stats["trained"], stats["failed"])
                    _run_round(cfg, study, space, base, budget, data, shape, folder, blob, stats, stopper, started,
                               say, interrupt)
                    if interrupt.hit:
                        raise KeyboardInterrupt
                    stats = studies.counts(study)
                    if (stats["trained"], stats["failed"]) == before:
                        break  # nothing ran and nothing failed: do not spin
        finally:
            _shutdown_ray()
        say(f"study {cfg.study}: {stats['done']} done, {stats['stopped']} stopped early, "
            f"{stats['rejected']} rejected (over budget), {stats['failed']} failed — {folder}")
    return study


def _run_round(cfg, study, space, base, budget, data, shape, folder, blob, stats, stopper, started, say,
               interrupt: _Interrupt | None = None) -> None:
    """One Ray Tune run that trains trials until the target is reached (or trials fail)."""
    from ray import tune

    _init_ray(cfg)
    run_stats = {"trained": stats["trained"], "done": stats["done"], "stopped": stats["stopped"],
                 "rejected": stats["rejected"], "failed": stats["failed"]}
    searcher = OptunaSearcher.build(study=study, space=space, base=base, budget=budget, target=cfg.trials,
                                    num_classes=data.num_classes, input_shape=shape, folder=folder, cfg=cfg,
                                    stats=run_stats, interrupt=interrupt)
    fn = tune.with_resources(tune.with_parameters(trainable, data=data, teacher_blob=blob),
                             {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial})
    tuner = tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=cfg.parallel,
                                    scheduler=make_scheduler(stopper, searcher) if stopper else None),
        run_config=tune.RunConfig(name=f"round-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
                                  storage_path=str(folder / "ray"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=cfg.max_retries),
                                  stop=make_interrupt_stopper(interrupt) if interrupt else None,
                                  callbacks=[make_progress(run_stats, cfg.trials, started, say,
                                                           on_retry=searcher.note_retry)]),
    )
    try:
        tuner.fit()
    finally:
        searcher.abandon_live("interrupted (Ctrl-C)" if interrupt and interrupt.hit else
                              "interrupted: the search driver stopped while it ran")
