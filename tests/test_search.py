"""The search driver end to end on digits: real Optuna storage, real Ray Tune workers."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from autokd.search import store as studies
from autokd.cli import app
from autokd.search import SearchConfig, search

runner = CliRunner()

from fault_tools import SPACE  # the small space: resnet20 students on digits, 1-2 epoch trials


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOKD_STUDIES", str(tmp_path / "studies"))
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE)
    return {"space": str(space), "tmp": tmp_path}


def config(env, **kw) -> SearchConfig:
    base = dict(teacher="resnet20", teacher_epochs=3, dataset="digits", flops_budget="40%", space=env["space"],
                trials=6, parallel=2, epochs=2, seed=0, study="s")
    base.update(kw)
    return SearchConfig(**base)


def trained(study):
    return [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


@pytest.mark.slow
def test_search_completes_within_budget(env):
    study = search(config(env))
    again = optuna.load_study(study_name="s", storage=studies.storage_url("s"))  # plain Optuna opens it
    budget = again.user_attrs["macs_budget"]
    assert again.user_attrs["flops_budget"] == 2 * budget
    assert {"teacher", "dataset", "macs_budget", "flops_budget"} <= set(again.user_attrs)
    assert len(trained(again)) == 6
    done = [t for t in again.trials if t.state == TrialState.COMPLETE]
    assert done and all(t.values[1] <= budget for t in done)
    assert again.best_trials
    rejected = [t for t in again.trials if t.user_attrs.get("rejected")]
    assert all(t.user_attrs["macs"] > budget for t in rejected)
    assert json.loads((studies.study_dir("s") / "config.json").read_text())["budget"]["macs_budget"] == budget
    assert study.study_name == "s"


@pytest.mark.slow
def test_resume_adds_exactly_the_missing_trials(env):
    search(config(env, trials=4, study="r"))
    first = {t.number: (t.params, t.values) for t in trained(studies.load("r"))}
    assert len(first) == 4
    search(config(env, trials=6, study="r"))
    after = studies.load("r")
    assert len(trained(after)) == 6
    assert {t.number: (t.params, t.values) for t in trained(after) if t.number in first} == first


@pytest.mark.slow
def test_same_seed_same_parameters(env):
    a = search(config(env, trials=3, parallel=1, study="a", epochs=1))
    b = search(config(env, trials=3, parallel=1, study="b", epochs=1))
    assert [t.params for t in a.trials] == [t.params for t in b.trials]


@pytest.mark.slow
def test_cluster_address(env):
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = "6391"
    # a short temp dir: Ray's unix sockets live under it, and a socket path is at most 107 bytes
    temp = tempfile.mkdtemp(prefix="rk", dir="/tmp")
    start = [ray_bin, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
             "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"]
    subprocess.run(start, check=True, capture_output=True, timeout=120)
    try:
        import ray

        study = search(config(env, trials=2, study="c", epochs=1, address=f"127.0.0.1:{port}"))
        nodes = {t.user_attrs.get("node_id") for t in trained(study)}
        assert len(trained(study)) == 2 and None not in nodes
        assert not ray.is_initialized()
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.parametrize("args,needle", [
    (["--flops-budget", "140%"], "--flops-budget"),
    (["--flops-budget", "-5%"], "--flops-budget"),
    (["--flops-budget", "abc"], "--flops-budget"),
    (["--parallel", "0"], "--parallel"),
    (["--epochs", "-1"], "--epochs"),
    (["--sampler", "grid"], "unknown sampler"),
    (["--study", "../x"], "study name"),
    (["--study", "a/b"], "study name"),
    (["--address", "127.0.0.1:1"], "no Ray cluster"),
    (["--flops-budget", "1%"], "no candidate"),
])
def test_bad_search_input(env, args, needle):
    result = runner.invoke(app, ["search", "--teacher", "resnet20", "--space", env["space"], "--trials", "1", *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    assert not list(Path(env["tmp"] / "studies").glob("*/study.db"))  # nothing written


def test_python_api_is_the_search_function():
    import autokd
    import autokd.cli  # noqa: F401  (importing the stage modules must not shadow the function)
    import autokd.search.driver  # noqa: F401

    assert callable(autokd.search) and autokd.search is search
    assert "search" in autokd.__all__ and "export_student" in autokd.__all__


@pytest.mark.slow
def test_compute_budget_stops_within_one_trials_cost(env):
    """--compute 5 with 2-epoch trials on digits: a trial costs 2 + 2 validation passes at a third of an
    epoch each over 10 % / 90 % of the images = 2 + 2 * (1/3) * (1/9) ~ 2.07 epoch-equivalents, so the
    search spends at least 5 and at most 5 + one trial's cost; every trained trial records its compute,
    and a resume with a larger --compute spends only the difference."""
    study = search(config(env, trials=None, compute=5.0, study="cmp"))
    costs = [t.user_attrs["compute"] for t in trained(study)]
    one = max(costs)
    assert 2.0 < one < 2.2
    assert 5.0 <= sum(costs) <= 5.0 + one + 1e-9
    assert studies.compute_spent(study) == pytest.approx(sum(costs))
    again = search(config(env, trials=None, compute=9.0, study="cmp"))
    total = studies.compute_spent(again)
    assert 9.0 <= total <= 9.0 + one + 1e-9
    assert {t.number: t.user_attrs["compute"] for t in trained(study)}.items() <= \
        {t.number: t.user_attrs["compute"] for t in trained(again)}.items()  # what was spent stays spent


@pytest.mark.slow
def test_ladder_search_records_promotions(env):
    """The ladder as the stopping rule on a real search: every trained trial passed or stopped at
    rung 1 (3-epoch trials: rungs 0 and 1), and the rungs it passed are on the trial."""
    study = search(config(env, trials=5, epochs=3, stopping="ladder", study="lad"))
    for t in trained(study):
        if t.state == TrialState.PRUNED:
            assert t.user_attrs["stopped_at_epoch"] == 1
        else:
            assert 1 in t.user_attrs["rungs_promoted"]


@pytest.mark.slow
def test_a_projected_space_rejects_nothing_and_lands_on_its_shares(env):
    """The tiny space with width up to 1 (over a 25 % budget unpruned) and a budget/share band: every
    sample is put on its share of the budget by bisection, none is rejected for cost, and each trained
    student's MACs are at most its target (and so within the budget)."""
    space = Path(env["space"]).read_text().replace("high: 0.75, step: 0.25", "high: 1.0, step: 0.25")
    space = space.replace("\nfixed:", "\n  budget/share: {name: FloatDistribution, attributes: "
                          "{low: 0.5, high: 1.0, step: null, log: false}}\nfixed:")
    assert "budget/share" in space
    path = env["tmp"] / "projected.yaml"
    path.write_text(space)
    study = search(config(env, space=str(path), trials=4, epochs=1, flops_budget="25%", study="proj"))
    assert not [t for t in study.trials if t.user_attrs.get("rejected")]
    budget = study.user_attrs["macs_budget"]
    for t in trained(study):
        assert t.user_attrs["macs"] <= t.user_attrs["target_macs"] <= budget
        assert t.user_attrs["target_macs"] == int(t.params["budget/share"] * budget)
