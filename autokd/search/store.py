"""Studies on disk: ``studies/<name>/`` with Optuna storage, the resolved config and provenance.

``study.db`` is plain Optuna RDB storage (SQLite): ``optuna-dashboard sqlite:///studies/NAME/study.db``
and ``optuna.load_study(study_name=NAME, storage=...)`` open it without autokd. Only the search
driver writes to it (workers report through Ray), and one driver at a time holds the study's
lock, so two searches on one study never interleave writes: the second is refused.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import sqlite3
import warnings
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Iterator, Literal

from ..errors import UserError
from . import record
from .record import TrialRecord

NAME_MAX = 100  # characters in a study name
NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{NAME_MAX - 1}}}$")
OBJECTIVES = ("val_accuracy", "macs")      # the study's values, in this order (optuna-dashboard shows these names)
DIRECTIONS: tuple[Literal["maximize"], Literal["minimize"]] = ("maximize", "minimize")


class StudyError(UserError):
    pass


def studies_root() -> Path:
    """``$AUTOKD_STUDIES``, default ``./studies``."""
    return Path(os.environ.get("AUTOKD_STUDIES", "studies")).resolve()


def check_name(name: str) -> str:
    if not NAME.match(name) or ".." in name:
        raise StudyError(f"study name {name!r}: use letters, digits, '_', '-', '.' only "
                         "(no '/', no '..'), starting with a letter or digit")
    return name


def study_dir(name: str) -> Path:
    return studies_root() / check_name(name)


def storage_url(name: str) -> str:
    return f"sqlite:///{study_dir(name) / 'study.db'}"


def exists(name: str) -> bool:
    return (study_dir(name) / "study.db").exists()


class DamagedStudy(StudyError):
    pass


def check_readable(name: str) -> None:
    """A one-line :class:`DamagedStudy` when ``study.db`` is not a whole SQLite database with Optuna's
    tables (cut short, overwritten). Read-only, before Optuna opens it: Optuna would raise a long
    traceback, or create its tables in what it took for an empty file."""
    path = study_dir(name) / "study.db"
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            db.execute("SELECT study_name FROM studies").fetchall()
    except sqlite3.DatabaseError as e:
        verdict = str(e)
    if verdict != "ok":
        raise DamagedStudy(f"{path} is damaged ({verdict}): restore it from a copy, or move the folder "
                           f"{path.parent} away to start study {name!r} afresh")


def load(name: str):
    """Open an existing study (read or write); a missing or damaged one is a one-line error."""
    import optuna

    if not exists(name):
        known = ", ".join(list_names()) or "none yet"
        raise StudyError(f"no study {name!r} under {studies_root()} (studies here: {known})")
    check_readable(name)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=storage_url(name))


def create(name: str, sampler=None, objectives: tuple[str, str] = OBJECTIVES):
    """Create the study ``name`` (or open it if it exists) with autokd's two objectives, named
    (``objectives``: accuracy, then ``macs`` or ``latency_ms``). An existing study keeps its names."""
    import optuna

    study = optuna.create_study(study_name=name, storage=storage_url(name), directions=list(DIRECTIONS),
                                sampler=sampler, load_if_exists=True)
    if not study.metric_names:
        with warnings.catch_warnings():  # experimental since Optuna 3.2 and unchanged since; the dashboard reads it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(objectives))
    return study


def list_names() -> list[str]:
    root = studies_root()
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "study.db").exists())


def read_config(name: str) -> dict:
    path = study_dir(name) / "config.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DamagedStudy(f"{path} is damaged (not JSON: {e.__class__.__name__}); restore it from a copy, "
                           f"or move the folder {path.parent} away to start study {name!r} afresh") from None


@contextmanager
def locked(name: str) -> Iterator[Path]:
    """Hold the study's lock for a whole search; a second holder is refused with one line."""
    folder = study_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StudyError(f"study {name!r} is being searched by another autokd process; "
                         "wait for it to finish or use another --study") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield folder
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def recover_interrupted(study) -> int:
    """Trials left RUNNING by a killed driver are recorded FAIL (``interrupted``); returns how many.
    WAITING trials (warm-start settings not asked for yet) stay queued for this run."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        record.write_stored(study, t, failure="interrupted: the search driver stopped")
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        n += 1
    return n


def counts(study) -> dict[str, int]:
    """done (complete), stopped (early-stopped), rejected (over budget, never trained), failed."""
    from optuna.trial import TrialState

    c = {"done": 0, "stopped": 0, "rejected": 0, "failed": 0, "running": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            c["done"] += 1
        elif t.state == TrialState.PRUNED:
            c["stopped"] += 1
        elif t.state == TrialState.FAIL:
            c["rejected" if TrialRecord.of(t).rejected else "failed"] += 1
        elif t.state == TrialState.RUNNING:  # WAITING: queued warm-start settings, not started
            c["running"] += 1
    c["trained"] = c["done"] + c["stopped"]
    return c


def compute_spent(study) -> float:
    """Epoch-equivalents the study's trials spent so far (their recorded ``compute``; autokd.search.compute)."""
    from .compute import spent

    return spent(TrialRecord.of(t).compute for t in study.get_trials(deepcopy=False))
