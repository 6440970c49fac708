"""Bad input: every case is one line naming the problem, exit code 2, no traceback, and nothing
written (no study folder, no export folder, no cached teacher). tests/test_search.py holds ten
more search cases (budget 140% / -5% / abc / 1%, --parallel 0, --epochs -1, sampler, study names,
a dead --address)."""
from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import optuna
import pytest
from fault_tools import MARKER, SPACE, Tripwire
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

from autokd.search import store as studies
from autokd.bundle import write_json
from autokd.cli import app

pytestmark = pytest.mark.faults
runner = CliRunner()

@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOKD_STUDIES", str(tmp_path / "studies"))
    monkeypatch.setenv("AUTOKD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AUTOKD_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # exports and dashboards default to ./students, ./dashboards
    (tmp_path / "space.yaml").write_text(SPACE)
    return tmp_path


def _space(tmp: Path, old: str, new: str) -> str:
    path = tmp / "edited.yaml"
    assert old in SPACE
    path.write_text(SPACE.replace(old, new))
    return str(path)


def _bundle(tmp: Path, weights: bytes, name: str = "teacher") -> str:
    """A model folder whose model.safetensors holds ``weights``; the plan is a real resnet20's."""
    folder = tmp / name
    folder.mkdir()
    (folder / "channel_plan.json").write_text(json.dumps({"arch": "resnet20", "build_args": {
        "num_classes": 10, "in_channels": 1}, "plan": {}}))
    (folder / "model.safetensors").write_bytes(weights)
    return str(folder)


def _safetensors(tmp: Path) -> bytes:
    from safetensors.torch import save_file

    from autokd.models import create_model

    path = tmp / "real.safetensors"
    save_file({k: v.contiguous() for k, v in create_model("resnet20", num_classes=10, in_channels=1)
               .state_dict().items()}, str(path))
    return path.read_bytes()


def _pickle(tmp: Path) -> bytes:
    return pickle.dumps({"state_dict": Tripwire(str(tmp / MARKER))})


NOT_SAFETENSORS = "not a readable safetensors file"

# Each case: the search flags (a callable builds them from the test's folder) and a needle the
# one line must contain. The space is the fault tests' resnet20 one unless a case says otherwise.
SEARCH_CASES = {
    "unknown teacher": (lambda t: ["--teacher", "resnet1000"], "unknown teacher 'resnet1000'"),
    "unknown student": (lambda t: ["--space", _space(t, "student/arch: resnet20", "student/arch: resnet1000")],
                        "'resnet1000' is not a registered model"),
    "unknown dataset": (lambda t: ["--dataset", "imagenet-22k"], "unknown dataset 'imagenet-22k'"),
    "unknown sampler": (lambda t: ["--sampler", "cmaes"], "unknown sampler 'cmaes'"),
    "unknown prune method": (lambda t: ["--space", _space(t, "kd/loss: fitnet", "kd/loss: fitnet\n  prune/method: l3")],
                             "'l3' is not one of: l1, bn, taylor, learned-mask"),
    "budget 0": (lambda t: ["--flops-budget", "0"], "--flops-budget '0'"),
    "budget 0%": (lambda t: ["--flops-budget", "0%"], "--flops-budget '0%'"),
    "budget 140%": (lambda t: ["--flops-budget", "140%"], "must be in (0%, 100%]"),
    "budget abc": (lambda t: ["--flops-budget", "abc"], "is not a budget"),
    "budget no candidate meets": (lambda t: ["--flops-budget", "1%"], "no candidate of space"),
    "teacher file truncated": (lambda t: ["--teacher", _bundle(t, _safetensors(t)[:1000])], NOT_SAFETENSORS),
    "teacher not safetensors": (lambda t: ["--teacher", _bundle(t, b"GIF89a" + bytes(200))], NOT_SAFETENSORS),
    "teacher a pickle in a model folder": (lambda t: ["--teacher", _bundle(t, _pickle(t))], NOT_SAFETENSORS),
    "teacher a pickle file": (lambda t: ["--teacher", str(_write(t / "teacher.pt", _pickle(t)))],
                              "never unpickles"),
    "dataset missing offline": (lambda t: ["--dataset", "cifar10"], "download is off: AUTOKD_OFFLINE=1"),
    "imagefolder missing": (lambda t: ["--dataset", f"imagefolder:{t / 'nowhere'}"], "does not exist"),
    "imagefolder empty": (lambda t: ["--dataset", f"imagefolder:{_mkdir(t / 'empty')}"], "no images in"),
    "space unknown key": (lambda t: ["--space", _space(t, "kd/beta:", "kd/gamma:")], "unknown parameter 'kd/gamma'"),
    "space wrong type": (lambda t: ["--space", _space(t, "low: 1.0, high: 6.0", "low: one, high: 6.0")],
                         "low='one' is not a finite number"),
    "space low > high": (lambda t: ["--space", _space(t, "low: 1.0, high: 6.0", "low: 6.0, high: 1.0")],
                         "low 6.0 is above high 1.0"),
    "space file missing": (lambda t: ["--space", str(t / "nope.yaml")], "does not exist"),
    "study name ..": (lambda t: ["--study", ".."], "study name '..'"),
    "study name absolute": (lambda t: ["--study", str(t / "elsewhere")], "study name"),
    "study name ../x": (lambda t: ["--study", "../x"], "study name '../x'"),
    "study name a/b": (lambda t: ["--study", "a/b"], "study name 'a/b'"),
    "--parallel 0": (lambda t: ["--parallel", "0"], "--parallel must be at least 1"),
    "--epochs -1": (lambda t: ["--epochs", "-1"], "--epochs must be at least 1"),
    "--trials 0": (lambda t: ["--trials", "0"], "--trials must be at least 1"),
    "--cpus-per-trial 0": (lambda t: ["--cpus-per-trial", "0"], "--cpus-per-trial must be > 0"),
    "--address nothing listens": (lambda t: ["--address", "127.0.0.1:1"], "no Ray cluster answers"),
    "--address not host:port": (lambda t: ["--address", "my-cluster"], "no Ray cluster answers"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def one_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return lines[0]


def nothing_written(tmp: Path) -> None:
    assert not (tmp / "studies").exists() or not any((tmp / "studies").iterdir())
    assert not (tmp / "home").exists() or not any((tmp / "home").iterdir())  # no teacher, no data
    assert not (tmp / "students").exists() and not (tmp / "dashboards").exists()
    assert not (tmp / MARKER).exists(), "a pickle was unpickled"


@pytest.mark.parametrize("case", list(SEARCH_CASES))
def test_bad_search_input_is_one_line_exit_2_and_writes_nothing(env, case):
    build, needle = SEARCH_CASES[case]
    args = ["search", "--teacher", "resnet20", "--space", str(env / "space.yaml"), "--trials", "1", *build(env)]
    started = time.monotonic()
    result = runner.invoke(app, args)
    line = one_line(result)
    assert needle in line, line
    assert time.monotonic() - started < 20  # answered before anything is trained; --address within seconds
    nothing_written(env)


# ------------------------------------------------------------------ export
@pytest.fixture
def finished(env):
    """A study written by hand: trial 0 complete, 1 failed, 2 still running (no weights needed:
    every case below is refused before anything is trained or written)."""
    studies.study_dir("s").mkdir(parents=True)
    write_json(studies.study_dir("s") / "config.json", {"search": {"dataset": "digits", "teacher": "resnet20"},
                                                       "teacher": {"spec": "resnet20", "macs": 2_500_000}})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = optuna.create_study(study_name="s", storage=studies.storage_url("s"), directions=["maximize", "minimize"])
    cand = {"candidate": {"student": "resnet20", "width": 0.5, "epochs": 1}, "macs": 500_000}
    st.add_trial(create_trial(state=TrialState.COMPLETE, values=[0.9, 500_000], user_attrs=cand))
    st.add_trial(create_trial(state=TrialState.FAIL, user_attrs={**cand, "failure": "diverged: loss became nan"}))
    st.add_trial(create_trial(state=TrialState.RUNNING, user_attrs=cand))
    return env


@pytest.mark.parametrize("args,needle", [
    (["export", "nosuch"], "no study 'nosuch'"),
    (["export", "s", "--trial", "7"], "has no trial 7"),
    (["export", "s", "--trial", "1"], "trial 1 of 's' failed (diverged: loss became nan)"),
    (["export", "s", "--trial", "2"], "trial 2 of 's' has not finished yet"),
    (["export", "s", "--best", "--trial", "0"], "choose one of --best, --trial N, --under COST"),
    (["export", "s", "--epochs", "0"], "--epochs must be at least 1"),
    (["export", "../s"], "study name '../s'"),
])
def test_bad_export_input_is_one_line_exit_2_and_writes_nothing(finished, args, needle):
    before = sorted(p.name for p in (finished / "studies" / "s").iterdir())
    line = one_line(runner.invoke(app, args))
    assert needle in line, line
    assert not (finished / "students").exists()
    assert sorted(p.name for p in (finished / "studies" / "s").iterdir()) == before


# ------------------------------------------------------------------ a damaged study
@pytest.fixture
def damaged(finished):
    """Study 's' healthy; study 'cut' a copy of it whose study.db keeps only its first 100 bytes."""
    cut = studies.study_dir("cut")
    cut.mkdir()
    (cut / "study.db").write_bytes((studies.study_dir("s") / "study.db").read_bytes()[:100])
    (cut / "config.json").write_bytes((studies.study_dir("s") / "config.json").read_bytes())
    return finished


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("command", [
    ["pareto", "cut"], ["export", "cut", "--best"],
    ["search", "--study", "cut", "--teacher", "resnet20", "--space", "space.yaml", "--trials", "1"],
])
def test_a_damaged_study_db_is_one_line_naming_it_and_nothing_is_written(damaged, command):
    before = _files(damaged)
    line = one_line(runner.invoke(app, command))
    assert f"{studies.study_dir('cut') / 'study.db'} is damaged" in line, line
    assert "restore it from a copy, or move the folder" in line
    assert _files(damaged) == before  # the damaged file as it was, no dashboard, no export, no teacher


def test_a_damaged_config_json_is_one_line_naming_it(damaged):
    (studies.study_dir("s") / "config.json").write_text('{"search": {"data')
    line = one_line(runner.invoke(app, ["pareto", "s", "--no-html"]))
    assert f"{studies.study_dir('s') / 'config.json'} is damaged (not JSON" in line, line


def test_studies_lists_the_healthy_ones_and_marks_the_damaged_one(damaged):
    table = runner.invoke(app, ["studies"])
    assert table.exit_code == 0, table.output
    assert "damaged" in table.output and "Traceback" not in table.output
    rows = {r["study"]: r for r in json.loads(runner.invoke(app, ["studies", "--json"]).stdout)}
    assert rows["s"]["done"] == 1 and rows["s"]["failed"] == 1 and "damaged" not in rows["s"]
    assert "is damaged" in rows["cut"]["damaged"] and "done" not in rows["cut"]
