"""Helpers of the fault-injection tests (tests/test_faults_*.py): the real `autokd` CLI as a
process group we can kill, the study read back with plain sqlite3/Optuna, and the processes a
test left behind, found by a tag in their environment (Ray workers run in their own process
groups, so a process group alone does not find them)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

BIN = Path(sys.executable).with_name("autokd")
RAY = Path(sys.executable).with_name("ray")
TAG = "AUTOKD_FAULTS_TAG"   # every process a test starts carries it, Ray's children inherit it

# The small space of tests/test_search.py: resnet20 students on digits, 1-2 epoch trials on 2 cores.
SPACE = textwrap.dedent("""
    description: fault tests, resnet20 students
    teacher: resnet20
    params:
      student/width: {name: FloatDistribution, attributes: {low: 0.25, high: 0.75, step: 0.25, log: false}}
      prune/layer2: {name: FloatDistribution, attributes: {low: 0.0, high: 0.5, step: 0.25, log: false}}
      kd/beta: {name: FloatDistribution, attributes: {low: 0.3, high: 1.0, step: null, log: false}}
      kd/temperature: {name: FloatDistribution, attributes: {low: 1.0, high: 6.0, step: null, log: false}}
      kd/lambda/t3->s3: {name: FloatDistribution, attributes: {low: 0.0, high: 1.0, step: null, log: false}}
    fixed:
      student/arch: resnet20
      kd/loss: fitnet
""")

# Unpickling a Tripwire creates the file it names: proof that something unpickled it.
MARKER = "UNPICKLED"


class Tripwire:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def search_args(space: str | Path, study: str, *, trials: int = 4, epochs: int = 1, parallel: int = 2,
                teacher_epochs: int = 2, extra: tuple[str, ...] = ()) -> list[str]:
    """`autokd search` on the tiny space; without the reference student, which these tests do not read
    (tests/test_search.py checks it)."""
    return ["search", "--teacher", "resnet20", "--teacher-epochs", str(teacher_epochs), "--dataset", "digits",
            "--space", str(space), "--study", study, "--trials", str(trials), "--epochs", str(epochs),
            "--parallel", str(parallel), "--flops-budget", "40%", "--no-reference", *extra]


class World:
    """One test's folders and environment: studies/, AUTOKD_HOME, a short RAY_TMPDIR (Ray's unix
    socket paths must stay under 107 bytes, so not under pytest's long tmp_path) and a tag."""

    def __init__(self, tmp_path: Path, home: Path | None = None) -> None:
        self.tmp = tmp_path
        self.studies = tmp_path / "studies"
        self.home = home or tmp_path / "home"
        self.space = tmp_path / "space.yaml"
        self.space.write_text(SPACE)
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="akf", dir="/tmp"))
        self.tag = uuid.uuid4().hex[:12]
        self.procs: list[Cli] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTEST_CURRENT_TEST")}
        env.update(AUTOKD_STUDIES=str(self.studies), AUTOKD_HOME=str(self.home), AUTOKD_OFFLINE="1",
                   RAY_TMPDIR=str(self.ray_tmp), COLUMNS="250", PYTHONUNBUFFERED="1", **{TAG: self.tag})
        env.update(extra)
        return env

    def cli(self, *args: str, **extra_env: str) -> "Cli":
        proc = Cli([str(BIN), *args], self.env(**extra_env), cwd=self.tmp)
        self.procs.append(proc)
        return proc

    def db(self, study: str) -> Path:
        return self.studies / study / "study.db"

    def cleanup(self) -> list[str]:
        """Kill what is left (by process group, then by tag); returns what had to be killed."""
        for proc in self.procs:
            proc.kill()
        left = reap(self.tag, timeout=15)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
        return left


class Cli:
    """The real CLI in its own session (process group), its output collected line by line."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for(self, pattern: str, timeout: float = 120) -> str:
        """The first output line matching ``pattern`` (a regex); fails if the output ends first."""
        rx, deadline, i = re.compile(pattern), time.monotonic() + timeout, 0
        while True:
            while i < len(self.lines):
                if rx.search(self.lines[i][1]):
                    return self.lines[i][1]
                i += 1
            if not self._reader.is_alive() and i == len(self.lines):
                raise AssertionError(f"exited {self.proc.poll()} before /{pattern}/:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no /{pattern}/ within {timeout}s:\n{self.output}")
            time.sleep(0.05)

    def wait(self, timeout: float = 180) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running after {timeout}s:\n{self.output}") from None
        self._reader.join(5)
        return rc

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL to the driver's whole session: its process group (the driver, Ray's GCS,
        raylet and agents) and Ray's workers, which run in process groups of their own and,
        orphaned, take ~30 s to notice that their raylet is gone."""
        if self.proc.poll() is None:
            self.signal_group(signal.SIGKILL)
        for pid in in_session(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)
        self._reader.join(5)


# ------------------------------------------------------------------ processes by tag
def tagged(tag: str) -> list[int]:
    """Live processes whose environment carries ``TAG=tag`` (zombies excluded)."""
    needle, found = f"{TAG}={tag}".encode(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry))
        except OSError:
            continue
    return found


def in_session(sid: int) -> list[int]:
    """Live processes of session ``sid`` (a process started with start_new_session=True leads one)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append(int(entry))
    return found


def describe(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"


def reap(tag: str, timeout: float) -> list[str]:
    """Wait up to ``timeout`` s for the tagged processes to exit on their own; SIGKILL (by pid)
    and return the ones that did not."""
    deadline = time.monotonic() + timeout
    while tagged(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = tagged(tag)
    names = [f"{pid} {describe(pid)}" for pid in left]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return names


# ------------------------------------------------------------------ the study, read back
def trial_rows(db: Path) -> dict[int, dict]:
    """number -> {"state", "values", "attrs"} straight from Optuna's SQLite tables (only read;
    opened read-write so that a hot journal left by a killed driver is rolled back, see integrity)."""
    import json

    if not db.exists():
        return {}
    con = sqlite3.connect(str(db), timeout=30)
    try:
        rows = {n: {"state": s, "values": [], "attrs": {}} for n, s in
                con.execute("SELECT number, state FROM trials")}
        ids = dict(con.execute("SELECT trial_id, number FROM trials"))
        for tid, _obj, value in con.execute("SELECT trial_id, objective, value FROM trial_values ORDER BY objective"):
            rows[ids[tid]]["values"].append(value)
        for tid, key, value in con.execute("SELECT trial_id, key, value_json FROM trial_user_attributes"):
            rows[ids[tid]]["attrs"][key] = json.loads(value)
    except sqlite3.OperationalError:  # tables not created yet
        return {}
    finally:
        con.close()
    return rows


def integrity(db: Path) -> str:
    """SQLite's own check. Opened read-write, as the next autokd run opens it: a driver killed
    mid-write leaves a hot journal that the next connection must roll back, which a read-only
    connection cannot do ("attempt to write a readonly database")."""
    con = sqlite3.connect(str(db), timeout=30)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def trained(rows: dict[int, dict]) -> dict[int, dict]:
    return {n: r for n, r in rows.items() if r["state"] in ("COMPLETE", "PRUNED")}


def poll(predicate, timeout: float, every: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what} not reached within {timeout}s")


def train_teacher(home: Path) -> Path:
    """Cache the tests' teacher (resnet20, digits, 2 epochs, seed 0) in ``home`` as `autokd search
    --teacher resnet20 --teacher-epochs 2` would, so a test's CLI runs do not train it again."""
    import pytest

    from autokd.data import load_dataset
    from autokd.teacher import get_teacher
    from autokd.train import TrainConfig

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOKD_HOME", str(home))
        mp.setenv("AUTOKD_OFFLINE", "1")
        get_teacher("resnet20", load_dataset("digits", seed=0), TrainConfig(epochs=2, seed=0))
    return home


# ------------------------------------------------------------------ a Ray node started with `ray start`
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayNode:
    """`ray start --block` in a session of its own: its raylet's node id, and a kill that takes
    the whole node down at once (as if its machine died)."""

    def __init__(self, world: World, name: str, args: list[str], env: dict[str, str]) -> None:
        self.temp = world.ray_tmp / name  # short: Ray's socket paths must stay under 107 bytes
        ports = [f"--{flag}={free_port()}" for flag in ("dashboard-agent-listen-port", "metrics-export-port")]
        argv = [str(RAY), "start", "--block", "--num-cpus=1", f"--temp-dir={self.temp}", "--disable-usage-stats",
                "--min-worker-port=0", "--max-worker-port=0", *ports, *args]
        self.log = world.tmp / f"ray-{name}.log"
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def node_id(self, timeout: float = 60) -> str:
        """The node id its raylet was started with (what trials record as node_id)."""
        def find():
            if self.proc.poll() is not None:
                raise AssertionError(f"ray start exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            for pid in in_session(self.proc.pid):
                argv = describe_full(pid)
                if argv and argv[0].endswith("/raylet/raylet"):
                    return next(a.split("=", 1)[1] for a in argv if a.startswith("--node_id="))
            return None
        return poll(find, timeout, every=0.2, what=f"the raylet of {self.temp.name}")

    def kill(self) -> None:
        for pid in [self.proc.pid, *in_session(self.proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)


def describe_full(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []
