"""What every benchmark shares: the machine it ran on, the JSON envelope, mean ± std, the teacher.

Every result file is one JSON object::

    {"part", "protocol", "command", "date", "machine", "versions", "git_revision",
     "git_uncommitted", "settings", "wall_s", "results"}

``command`` is the exact command line that wrote it, ``machine`` says where (platform, CPU count
and model, torch version and threads, GPU name or null), ``settings`` the protocol as data.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"


# ------------------------------------------------------------------ where and how it ran
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(device: str = "cpu") -> dict:
    """The machine a result was recorded on; ``device`` is the protocol's, and says "cuda" only where
    a CUDA GPU is there to run it (the record describes the machine, not the intention)."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    device = "cuda" if device == "cuda" and gpu else "cpu"
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "cpu_model": cpu_model(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": device, "device_name": gpu if device == "cuda" else cpu_model(), "gpu": gpu,
            "load_average_1m": round(os.getloadavg()[0], 2)}


def command_line() -> str:
    """The command as typed from the repository root: ``.venv/bin/python benchmarks/run.py ...``."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(REPO) if script.is_relative_to(REPO) else script
    return shlex.join([".venv/bin/python", str(shown), *sys.argv[1:]])


def uncommitted() -> list[str] | None:
    """Files under autokd/ and benchmarks/ that differ from the recorded git revision (None: no git)."""
    try:  # a fixed argv, no user string
        out = subprocess.run(["git", "status", "--porcelain", "--", "autokd", "benchmarks"], cwd=REPO,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return sorted(line[3:] for line in out.stdout.splitlines() if not line[3:].startswith("benchmarks/results/"))


def envelope(part: str, protocol, results: dict, wall_s: float) -> dict:
    from autokd.provenance import git_revision, versions

    return {"part": part, "protocol": protocol.name, "command": command_line(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(protocol.device),
            "versions": versions(), "git_revision": git_revision(), "git_uncommitted": uncommitted(),
            "settings": protocol.as_dict(),
            "wall_s": round(wall_s, 1), "results": results}


def write_json(path: Path, data: dict) -> Path:
    """Atomic write (temp file + rename), sorted keys, so reruns diff cleanly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def same_protocol(old: dict | None, protocol) -> bool:
    """Was ``old`` (a result file's JSON) written under exactly ``protocol``'s settings? Only then may a
    part keep its earlier runs beside new ones (tuples read back from JSON as lists)."""
    return bool(old) and old.get("settings") == json.loads(json.dumps(protocol.as_dict()))


def rel(path) -> str:
    """A path relative to the repository when it lies inside it (JSON stays machine-neutral)."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def default_out(part: str, protocol: str, results_dir: Path = RESULTS) -> Path:
    return Path(results_dir) / f"{part}-{protocol}.json"


# ------------------------------------------------------------------ statistics
def mean_std(values: list[float]) -> dict:
    """{"mean", "std", "n", "values"}; std is the sample standard deviation (None when n < 2)."""
    vals = [float(v) for v in values if v is not None]
    return {"mean": statistics.fmean(vals) if vals else None,
            "std": statistics.stdev(vals) if len(vals) > 1 else None, "n": len(vals), "values": vals}


def paired(a: list[float], b: list[float]) -> dict:
    """Paired differences a_i - b_i (same seed, same data split): mean, std, n, standard error."""
    diffs = [x - y for x, y in zip(a, b) if x is not None and y is not None]
    d = mean_std(diffs)
    d["se"] = d["std"] / len(diffs) ** 0.5 if d["std"] is not None else None
    return d


def plateau_points(history: list[dict]) -> float | None:
    """Validation accuracy gained over the last 20 % of a training run's epochs, in points (the
    protocol's convergence rule: a converged teacher gains < 1 point there)."""
    vals = [h["val_accuracy"] for h in history or [] if h.get("val_accuracy") is not None]
    if len(vals) < 2:
        return None
    back = max(1, math.ceil(0.2 * len(vals)))
    return 100 * (vals[-1] - vals[-1 - back])


# ------------------------------------------------------------------ the protocol's teacher
@contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # a second process waits for the teacher the first trains
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def teacher_folder(p, results_dir: Path) -> Path:
    """Where protocol ``p``'s teacher bundle lives (a variant's: its base protocol's, the same weights)."""
    from protocols import teacher_protocol

    dataset = re.sub(r"[^A-Za-z0-9_.-]", "_", p.dataset)[:40]  # an image folder's path: one folder name
    name = (f"{teacher_protocol(p.name)}-{dataset}-{p.teacher}-w{p.teacher_width:g}-e{p.teacher_epochs}"
            f"-n{p.teacher_subset or 'all'}")
    return Path(results_dir) / "teachers" / name


def teacher_bundle(protocol, results_dir: Path, say=print) -> Path:
    """The protocol's one teacher as a bundle under ``results_dir/teachers``, trained on first use.

    Trained with seed 0 on the seed-0 split (``teacher_subset`` images) until it is converged by the
    protocol's rule (``Protocol.teacher_plateau_points``): one cosine schedule of ``teacher_epochs``,
    then, while the last 20 % of the epochs gained that much or more, a schedule twice as long. Each
    schedule's bundle is kept (``<folder>.e<epochs>``), so an interrupted run resumes at the schedule it
    was on; the converged one is copied to ``folder``. Every arm, seed and part distils from it.
    """
    import shutil

    p = protocol
    folder = teacher_folder(p, results_dir)
    with _lock(folder.with_suffix(".lock")):
        if (folder / "model.safetensors").exists():
            return folder
        epochs = p.teacher_epochs
        while True:
            attempt = folder.with_name(f"{folder.name}.e{epochs}") if p.teacher_plateau_points is not None else folder
            card = _train_teacher(p, epochs, attempt, say)
            gain = card.get("plateau_points")
            if p.teacher_plateau_points is None or (gain is not None and gain < p.teacher_plateau_points):
                break
            if 2 * epochs > p.teacher_max_epochs:
                raise SystemExit(f"the {p.name} protocol's teacher still gained {gain:.2f} points over its last 20 % "
                                 f"of {epochs} epochs; raise teacher_max_epochs ({p.teacher_max_epochs}) or the lr")
            say(f"not converged: +{gain:.2f} points over the last 20 % of {epochs} epochs; again with {2 * epochs}")
            epochs *= 2
        if attempt != folder:
            shutil.copytree(attempt, folder)
    return folder


def _train_teacher(p, epochs: int, folder: Path, say) -> dict:
    """One cosine schedule of ``epochs`` (or the bundle already at ``folder``); its card, with
    ``plateau_points``: validation accuracy gained over the last 20 % of the epochs, in points."""
    from autokd.bundle import load_bundle, save_bundle
    from autokd.data import load_dataset
    from autokd.teacher import train_model
    from autokd.train import TrainConfig

    if (folder / "model.safetensors").exists():
        return load_bundle(folder)[1]
    say(f"training the {p.name} protocol's teacher {p.teacher} (width {p.teacher_width:g}) on {p.dataset}, "
        f"{p.teacher_subset or 'all'} images, {epochs} epochs -> {folder}")
    data = load_dataset(p.dataset, seed=0, train_subset=p.teacher_subset)
    t0 = time.perf_counter()
    cfg = TrainConfig(epochs=epochs, seed=0, lr=p.teacher_lr, batch_size=p.teacher_batch)
    model, card = train_model(p.teacher, data, cfg, width=p.teacher_width, device=p.device)
    card["train_wall_s"] = round(time.perf_counter() - t0, 1)
    card["plateau_points"] = plateau_points(card.get("history"))
    save_bundle(model, folder, card)
    say(f"teacher trained in {card['train_wall_s']:.0f} s: test accuracy {100 * card['test_accuracy']:.2f} %, "
        f"+{card['plateau_points'] or 0:.2f} points over its last 20 % of epochs")
    return card


def teacher_summary(folder: Path) -> dict:
    card = read_json(Path(folder) / "card.json") or {}
    keys = ("arch", "width", "dataset", "epochs", "seed", "macs", "params", "val_accuracy", "test_accuracy",
            "train_wall_s", "plateau_points")
    return {"bundle": rel(folder), **{k: card.get(k) for k in keys}}


def isolate(results_dir: Path) -> None:
    """Studies under ``results_dir/studies``; nothing downloaded; a Ray of our own.

    ``RAY_ADDRESS=local``: without it, ``ray.init()`` joins any cluster a ``ray start`` left on this
    machine (Ray reads /tmp/ray/ray_current_cluster), and a benchmark would time, and die with,
    someone else's cluster. A RAY_ADDRESS set by the user is kept.
    """
    os.environ["AUTOKD_STUDIES"] = str(Path(results_dir).resolve() / "studies")
    os.environ.setdefault("AUTOKD_OFFLINE", "1")
    os.environ.setdefault("RAY_ADDRESS", "local")


def say(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)
