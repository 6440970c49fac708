"""Table 3, overheads: what distillation, the search driver and parallel workers cost beyond training.

  step ratio        time of one distillation step (student forward + teacher forward + losses +
                    backward + SGD step) / (one plain student step + one teacher forward), medians
                    of interleaved repeats on the same batch; teacher run live (as with augmentation).
                    Target <= 1.10.
  driver overhead   searches of identical near-empty trials (digits, 32 training images, 1 epoch,
                    convverytiny at width 0.5: spaces/overhead.yaml), 1 worker, early stopping off:
                    (search wall time - sum of the trials' own run times) / trials, for two search
                    sizes; the slope between them is the per-trial overhead, the rest is start-up.
                    A trial's run time is ``run_trial`` on the same candidate, in this process.
                    Target <= 0.3 s per trial.
  parallel          the same search of identical real trials (spaces/efficiency.yaml) with 1 and 2
                    workers: efficiency = T(1) / (2 T(2)), on wall time and on the span from the
                    first trial's start to the last one's end (no Ray start-up).
  peak memory       peak resident memory (VmHWM; getrusage's maxrss where there is no /proc) of a
                    fresh process running one trial (what a worker holds, less Ray's own import),
                    and of a fresh search-driver process with 2 workers.

Every search runs in a fresh spawned process (1 torch thread; ``reference=False``: the driver trains
no student-alone yardstick), so its timing and memory are its own.
"""
from __future__ import annotations

import resource
import shutil
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from record import envelope, isolate, say, teacher_bundle, teacher_summary
from protocols import SPACES

STEP_WARMUP = 3         # untimed steps before the timed ones (allocator, caches)
STEP_TARGET = 1.10
DRIVER_TARGET_S = 0.3
PROBE_SUBSET = 32       # training images of a near-empty trial
SEARCH_TRIES = 3


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _in_fresh_process(fn, *args):
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _clean_search(cfg: dict, results_dir: Path) -> dict:
    """A timed search whose every trial trained; retried (at most 3 tries) when a trial failed, e.g.
    because another process on the machine ran ``ray stop``: a timing with a failed trial means nothing."""
    for attempt in range(1, SEARCH_TRIES + 1):
        try:
            s = _in_fresh_process(_timed_search, cfg, str(results_dir))
        except Exception as e:  # noqa: BLE001 - a killed Ray can take the search down: time it again
            say(f"table 3: {cfg['study']} stopped ({e.__class__.__name__}: {str(e)[:200]}); timing it again")
            continue
        if s["failed"] == 0 and s["trained"] == cfg["trials"]:
            return {**s, "attempts": attempt}
        say(f"table 3: {cfg['study']}: {s['failed']} trial(s) failed; timing it again")
    raise RuntimeError(f"{cfg['study']}: trials failed in {SEARCH_TRIES} tries; see its study folder")


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux: VmHWM of /proc/self/status, because getrusage's
    ru_maxrss survives fork + exec, so a spawned child would report its parent's peak when larger."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


# ------------------------------------------------------------------ distillation step ratio
def _sgd_step(loss_fn, opt):
    def step():
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _step_kinds(protocol, teacher, data, x, y) -> dict:
    """name -> one call of that kind: a plain student step, a teacher forward, distillation steps."""
    import torch
    import torch.nn.functional as F

    from autokd.distill import Distiller, make_pairs
    from autokd.teacher import seeded_model
    from autokd.train import TrainConfig, make_optimizer
    from autokd.trial import PROBE_IMAGES

    p, dev = protocol, protocol.device

    def student():  # the same init for every kind
        return seeded_model(p.claims_student, 1, num_classes=data.num_classes, in_channels=data.in_channels,
                            width=p.claims_width).to(dev).train()

    def teacher_forward():
        with torch.no_grad():
            teacher(x)

    plain = student()
    kinds = {"student step": _sgd_step(lambda: F.cross_entropy(plain(x), y),
                                       make_optimizer(plain.parameters(), TrainConfig())),
             "teacher forward": teacher_forward}
    n_t, n_s = len(teacher.points), len(plain.points)
    variants = {"kd (logits only)": {}, "vid, matching pairs": make_pairs("diag", n_t, n_s),
                "vid, all pairs": make_pairs("all", n_t, n_s, n_t / (n_t * n_s))}
    for name, lambdas in variants.items():
        s = student()
        d = Distiller(s, teacher, lambdas=lambdas, probe_x=data.train_x[:PROBE_IMAGES].to(dev), seed=3)
        opt = make_optimizer([*s.parameters(), *d.pair_parameters()], TrainConfig())
        kinds[f"distillation step, {name}"] = _sgd_step(lambda d=d: d.loss(x, y)[0], opt)
    return kinds


def _interleaved_medians(kinds: dict, repeats: int, device: str) -> dict[str, float]:
    """Median ms of each kind; kinds alternate, so a change of machine load hits all of them alike."""
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(STEP_WARMUP + repeats):
        for name, fn in kinds.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if r >= STEP_WARMUP:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


def step_ratio(protocol, teacher_path: Path) -> dict:
    from autokd.bundle import load_bundle
    from autokd.data import load_dataset
    from autokd.trial import PROBE_IMAGES

    p, dev = protocol, protocol.device
    data = load_dataset(p.dataset, seed=0, train_subset=max(p.step_batch, PROBE_IMAGES))
    x, y = data.train_x[:p.step_batch].to(dev), data.train_y[:p.step_batch].to(dev)
    teacher = load_bundle(teacher_path)[0].to(dev).eval()
    med = _interleaved_medians(_step_kinds(p, teacher, data, x, y), p.step_repeats, dev)
    base = med["student step"] + med["teacher forward"]
    ratio = {k.split(", ", 1)[1]: v / base for k, v in med.items() if k.startswith("distillation")}
    return {"batch": p.step_batch, "repeats": p.step_repeats, "student": f"{p.claims_student} width {p.claims_width:g}",
            "teacher": teacher.arch, "median_ms": med, "ratio": ratio, "target": STEP_TARGET}


# ------------------------------------------------------------------ searches in fresh processes
def _timed_search(cfg_kwargs: dict, results_dir: str) -> dict:
    """One search from a fresh study; wall time, trial span, the trials' candidates, peak memory."""
    import ray.tune  # noqa: F401  imported before the clock starts: a driver pays it once per process
    import torch

    from autokd.search import store as studies
    from autokd.search.record import TrialRecord
    from autokd.search import SearchConfig, search

    isolate(Path(results_dir))
    torch.set_num_threads(1)
    shutil.rmtree(studies.study_dir(cfg_kwargs["study"]), ignore_errors=True)
    t0 = time.perf_counter()
    study = search(SearchConfig(**cfg_kwargs, reference=False))  # no student-alone yardstick: trials only
    wall = time.perf_counter() - t0
    trained = [t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")]
    starts = [t.datetime_start for t in trained]
    ends = [t.datetime_complete for t in trained]
    return {"wall_s": wall, "span_s": (max(ends) - min(starts)).total_seconds() if trained else None,
            "trained": len(trained), "failed": studies.counts(study)["failed"],
            "candidates": [TrialRecord.of(t).candidate for t in trained],
            "peak_rss_mb": peak_rss_mb()}


def _probe_teacher_and_data():
    from autokd.data import load_dataset
    from autokd.teacher import get_teacher
    from autokd.train import TrainConfig

    data = load_dataset("digits", seed=0, train_subset=PROBE_SUBSET)
    teacher, card = get_teacher("resnet20", data, TrainConfig(epochs=1, seed=0))  # cached before timing
    return teacher, card, data


def _run_times(candidates: list[dict], teacher, card, data) -> list[float]:
    """Each candidate's own run time: ``run_trial`` in this process, 1 thread like a worker."""
    from autokd.trial import Candidate, TrialContext, run_trial

    out = []
    for c in candidates:
        t0 = time.perf_counter()
        run_trial(Candidate.from_dict(c), TrialContext(teacher=teacher, data=data, teacher_card=card))
        out.append(time.perf_counter() - t0)
    return out


def driver_overhead(protocol, results_dir: Path) -> dict:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    teacher, card, data = _probe_teacher_and_data()
    sizes = []
    for n in protocol.driver_trials:
        cfg = dict(teacher="resnet20", teacher_epochs=1, dataset="digits", space=str(SPACES / "overhead.yaml"),
                   study=f"overhead-{protocol.name}-n{n}", trials=n, parallel=1, epochs=1,
                   train_subset=PROBE_SUBSET, early_stopping=False, seed=0)
        say(f"table 3: driver overhead, search of {n} near-empty trial(s)")
        s = _clean_search(cfg, results_dir)
        runs = _run_times(s.pop("candidates"), teacher, card, data)
        sizes.append({**s, "trials": n, "run_times_s": runs, "sum_run_s": sum(runs),
                      "overhead_per_trial_s": (s["wall_s"] - sum(runs)) / n})
    torch.set_num_threads(threads)
    (a, b) = sizes[0], sizes[-1]
    slope = ((b["wall_s"] - b["sum_run_s"]) - (a["wall_s"] - a["sum_run_s"])) / (b["trials"] - a["trials"]) \
        if b["trials"] != a["trials"] else None
    fixed = (a["wall_s"] - a["sum_run_s"]) - slope * a["trials"] if slope is not None else None
    return {"sizes": sizes, "per_trial_s": slope, "startup_s": fixed, "target_s": DRIVER_TARGET_S,
            "trial": "digits, 32 training images, 1 epoch, convverytiny width 0.5, 1 worker, early stopping off"}


def parallel_efficiency(protocol, teacher: Path, results_dir: Path) -> dict:
    out = {}
    for workers in (1, 2):
        cfg = dict(teacher=str(teacher), dataset=protocol.dataset, space=str(SPACES / "efficiency.yaml"),
                   study=f"efficiency-{protocol.name}-p{workers}", trials=protocol.efficiency_trials,
                   parallel=workers, epochs=protocol.efficiency_epochs, train_subset=protocol.efficiency_subset,
                   early_stopping=False, seed=0, cpus_per_trial=protocol.cpus_per_trial,
                   gpus_per_trial=protocol.gpus_per_trial)
        say(f"table 3: parallel efficiency, {protocol.efficiency_trials} trials on {workers} worker(s)")
        s = _clean_search(cfg, results_dir)
        s.pop("candidates")
        out[workers] = s
    one, two = out[1], out[2]
    eff = lambda k: one[k] / (2 * two[k]) if one[k] and two[k] else None  # noqa: E731
    return {"runs": {str(k): v for k, v in out.items()}, "efficiency_wall": eff("wall_s"),
            "efficiency_span": eff("span_s"),
            "trial": f"{protocol.dataset}, {protocol.efficiency_subset} training images, "
                     f"{protocol.efficiency_epochs} epochs, resnet20 width 0.5, logits KD"}


# ------------------------------------------------------------------ memory of one trial
def _one_trial_memory(protocol, teacher: str) -> dict:
    """Peak memory of a process that loads the data and the teacher and runs one 1-epoch trial."""
    import dataclasses

    import torch

    from claims import run_candidate

    torch.set_num_threads(1)
    protocol = dataclasses.replace(protocol, claims_epochs=1)
    if protocol.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rec = run_candidate(protocol, "vid-diag", 0, teacher)["vid-diag"]
    gpu = torch.cuda.max_memory_allocated() / 2**20 if protocol.device == "cuda" else None
    return {"peak_rss_mb": peak_rss_mb(), "gpu_max_allocated_mb": gpu, "wall_s": rec["wall_s"],
            "trial": f"{protocol.claims_student} width {protocol.claims_width:g}, vid over matching pairs, "
                     f"{protocol.claims_epochs} epochs, {protocol.claims_subset or 'all'} training images"}


def run(protocol, *, results_dir: Path) -> dict:
    t0 = time.perf_counter()
    teacher = teacher_bundle(protocol, results_dir, say=say)
    isolate(results_dir)
    say("table 3: distillation step ratio")
    res = {"teacher": teacher_summary(teacher), "step": step_ratio(protocol, teacher),
           "driver": driver_overhead(protocol, results_dir),
           "parallel": parallel_efficiency(protocol, teacher, results_dir)}
    say("table 3: peak memory of one trial")
    res["memory"] = {"one_trial": _in_fresh_process(_one_trial_memory, protocol, str(teacher)),
                     "search_driver_2_workers": res["parallel"]["runs"]["2"]["peak_rss_mb"]}
    return envelope("overheads", protocol, res, time.perf_counter() - t0)
