"""The search driver end to end on digits: real Optuna storage, real Ray Tune workers."""
from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pytest
import ray
from optuna.trial import TrialState
from typer.testing import CliRunner

from autokd.measure import count_macs
from autokd.models import create_model
from autokd.search import store as studies
from autokd.cli import app
from autokd.search import SearchConfig, search
from autokd.search.ray_start import local_ray, pending_trials

runner = CliRunner()

from fault_tools import SPACE, RayNode, World, free_port  # SPACE: resnet20 students on digits, 1-2 epoch trials


@pytest.fixture(scope="module")
def teacher_home(tmp_path_factory):
    """The searches' teacher (resnet20 on digits, 3 epochs, seed 0: ``config``'s), trained once for the module."""
    from autokd.data import load_dataset
    from autokd.teacher import get_teacher
    from autokd.train import TrainConfig

    home = tmp_path_factory.mktemp("teacher_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOKD_HOME", str(home))
        get_teacher("resnet20", load_dataset("digits", seed=0), TrainConfig(epochs=3, seed=0))
    return home


@pytest.fixture
def env(tmp_path, monkeypatch, teacher_home):
    monkeypatch.setenv("AUTOKD_STUDIES", str(tmp_path / "studies"))
    monkeypatch.setenv("AUTOKD_HOME", str(teacher_home))  # each search loads the cached teacher
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE)
    return {"space": str(space), "tmp": tmp_path}


def config(env, **kw) -> SearchConfig:
    """A search of the tiny space; no reference student (one test trains and checks it)."""
    base = dict(teacher="resnet20", teacher_epochs=3, dataset="digits", flops_budget="40%", space=env["space"],
                trials=6, parallel=2, epochs=2, seed=0, study="s", reference=False)
    base.update(kw)
    return SearchConfig(**base)


def trained(study):
    return [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


@pytest.mark.slow
def test_search_completes_within_budget_and_resume_adds_exactly_the_missing_trials(env):
    """4 trials, then the same command with --trials 6: the 4 are kept as they were, 2 are added, and
    the study is one plain Optuna can open, every completed trial within the budget. The reference
    student (the space's first, alone) is trained once, by the first run: the resume keeps it."""
    with local_ray():  # one Ray for both drivers (the CLI's resume, a new process, is tests/test_faults_kill.py's)
        said: list[str] = []
        search(config(env, trials=4, study="s", reference=True), printer=said.append)
        first = {t.number: (t.params, t.values) for t in trained(studies.load("s"))}
        assert len(first) == 4
        (ref,) = studies.load("s").user_attrs["references"]
        study = search(config(env, trials=6, study="s", reference=True), printer=said.append)
    assert sum(line.startswith("training the reference: resnet20 alone") for line in said) == 1, said
    assert ref["arch"] == "resnet20" and ref["width"] == 1.0 and ref["epochs"] == 2 and 0 < ref["val_accuracy"] <= 1
    assert ref["macs"] == count_macs(create_model("resnet20", num_classes=10, in_channels=1), (1, 8, 8))
    again = optuna.load_study(study_name="s", storage=studies.storage_url("s"))  # plain Optuna opens it
    assert len(trained(again)) == 6 and again.user_attrs["references"] == [ref]
    assert {t.number: (t.params, t.values) for t in trained(again) if t.number in first} == first
    budget = again.user_attrs["macs_budget"]
    assert again.user_attrs["flops_budget"] == 2 * budget
    assert {"teacher", "dataset", "macs_budget", "flops_budget"} <= set(again.user_attrs)
    done = [t for t in again.trials if t.state == TrialState.COMPLETE]
    assert done and all(t.values[1] <= budget for t in done)
    assert again.best_trials
    rejected = [t for t in again.trials if t.user_attrs.get("rejected")]
    assert all(t.user_attrs["macs"] > budget for t in rejected)
    assert json.loads((studies.study_dir("s") / "config.json").read_text())["budget"]["macs_budget"] == budget
    assert study.study_name == "s"


@pytest.mark.slow
def test_same_seed_same_parameters(env):
    """The second search runs on the first one's Ray (``local_ray``: a search shuts down only the Ray
    it started), its workers warm: same candidates, same scores."""
    with local_ray():
        a = search(config(env, trials=2, parallel=1, study="a", epochs=1))
        assert ray.is_initialized()  # the caller's Ray outlives the search
        b = search(config(env, trials=2, parallel=1, study="b", epochs=1))
        with pytest.raises(RuntimeError, match="already running"), local_ray():
            pass
    assert not ray.is_initialized() and "TUNE_MAX_PENDING_TRIALS_PG" not in os.environ  # nothing left for the next
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.values for t in a.trials] == [t.values for t in b.trials]


def test_tune_queues_as_many_trials_as_this_search_runs_at_once(monkeypatch):
    """Ray Tune reads TUNE_MAX_PENDING_TRIALS_PG when a run starts (before Ray 2.5x it queued one
    trial at a time for an outside searcher): each search sets its own --parallel for its run only,
    so a --parallel 1 search does not hold back a later --parallel 2 one, and a user's value stands."""
    from ray.tune.execution.tune_controller import _get_max_pending_trials
    from ray.tune.search import ConcurrencyLimiter, SearchGenerator
    from ray.tune.search.optuna import OptunaSearch

    limited = SearchGenerator(ConcurrencyLimiter(OptunaSearch(), max_concurrent=2))
    monkeypatch.delenv("TUNE_MAX_PENDING_TRIALS_PG", raising=False)
    for parallel in (1, 2, 1):
        with pending_trials(parallel):
            assert _get_max_pending_trials(limited) == parallel
    assert "TUNE_MAX_PENDING_TRIALS_PG" not in os.environ
    monkeypatch.setenv("TUNE_MAX_PENDING_TRIALS_PG", "5")
    with pending_trials(2):
        assert _get_max_pending_trials(limited) == 5
    assert os.environ["TUNE_MAX_PENDING_TRIALS_PG"] == "5"


@pytest.mark.slow
def test_cluster_address(env):
    """A cluster from `ray start --head` (its own process group, port and temp dir, so nothing else's
    Ray is touched): the search's trials run on its node, and the driver leaves it running."""
    world, port = World(env["tmp"]), free_port()
    head = RayNode(world, "h", ["--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                                "--include-dashboard=false"], world.env())
    try:
        head_id = head.node_id()
        study = search(config(env, trials=2, study="c", epochs=1, address=f"127.0.0.1:{port}"))
        nodes = {t.user_attrs.get("node_id") for t in trained(study)}
        assert len(trained(study)) == 2 and nodes == {head_id}
        assert not ray.is_initialized() and head.proc.poll() is None
    finally:
        head.kill()
        assert not world.cleanup()


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


def test_the_resolved_config_records_the_trials_a_search_runs(env):
    """config.json records the prepared config: 12 trials by default, no limit with --compute alone."""
    from autokd.search.prepare import prepare

    assert prepare(config(env, trials=None)).cfg.trials == 12
    assert prepare(config(env, trials=None, compute=5.0)).cfg.trials is None
    assert prepare(config(env, trials=3, compute=5.0)).cfg.trials == 3


def test_the_default_study_name_is_valid_for_any_teacher_file_and_image_folder():
    """Seen: an image folder deep in a long path made a default name over the 100 characters a study
    name may have, so `autokd search` refused a valid folder with a message about the name."""
    from autokd.search.config import default_study_name

    deep = "/data/" + "a-long-folder-name/" * 10 + "flowers"
    name = default_study_name(SearchConfig(teacher="/models/my teacher.safetensors", dataset=f"imagefolder:{deep}"))
    assert name == "my_teacher-imagefolder-flowers" and studies.check_name(name)
    assert default_study_name(SearchConfig(teacher="resnet20", dataset="digits")) == "resnet20-digits"
    assert studies.check_name(default_study_name(SearchConfig(teacher="r" * 120, dataset="digits")))


def test_a_teacher_trained_by_a_search_says_each_epoch():
    from autokd.search.driver import _epochs_said

    said = []
    _epochs_said("teacher", said.append)(3, 15, {"loss": 0.2, "val_accuracy": 0.912})
    assert said == ["teacher epoch 3/15: val accuracy 91.20%"]


def test_the_progress_lists_a_front_point_once():
    """Two trials at the same (accuracy, MACs) are both on the front; the progress line says it once."""
    from types import SimpleNamespace

    from autokd.search.tune import Progress

    points = [{"number": 1, "val_accuracy": 0.965, "macs": 2_530_000},
              {"number": 2, "val_accuracy": 0.965, "macs": 2_530_000},
              {"number": 3, "val_accuracy": 0.90, "macs": 1_000_000}]
    progress = Progress(SimpleNamespace(tally=SimpleNamespace(points=points, compute=0.0)), 12, 0.0, None)
    assert progress._front() == "\n  front so far: 90.0%@1M, 96.5%@2.53M"


def test_the_python_api_hands_its_settings_to_the_driver(monkeypatch):
    import autokd
    import autokd.cli  # noqa: F401  (importing the stage modules must not shadow the function)
    from importlib import import_module

    driver = import_module("autokd.search.driver")  # `autokd.search` is the function, not the package

    seen = {}
    monkeypatch.setattr(driver, "search", lambda cfg, printer=None, **kw: seen.update(cfg=cfg, printer=printer, **kw)
                        or "the study")
    assert autokd.search(trials=3, study="x") == "the study"
    assert seen == {"cfg": None, "printer": None, "trials": 3, "study": "x"}
    assert autokd.search is search and {"search", "export_student"} <= set(autokd.__all__)


@pytest.mark.slow
def test_compute_budget_stops_within_one_trials_cost(env):
    """--compute 2.5 with 1-epoch trials on digits: a trial costs 1 epoch + 1 validation pass at a third
    of an epoch over 10 % / 90 % of the images = 1 + (1/3) * (1/9) ~ 1.037 epoch-equivalents, so the
    search spends at least 2.5 and at most 2.5 + one trial's cost; every trained trial records its
    compute, and a resume with a larger --compute spends only the difference."""
    with local_ray():
        study = search(config(env, trials=None, compute=2.5, epochs=1, study="cmp"))
        costs = [t.user_attrs["compute"] for t in trained(study)]
        one = max(costs)
        assert 1.0 < one < 1.1
        assert 2.5 <= sum(costs) <= 2.5 + one + 1e-9
        assert studies.compute_spent(study) == pytest.approx(sum(costs))
        again = search(config(env, trials=None, compute=4.5, epochs=1, study="cmp"))
    total = studies.compute_spent(again)
    assert 4.5 <= total <= 4.5 + one + 1e-9
    assert {t.number: t.user_attrs["compute"] for t in trained(study)}.items() <= \
        {t.number: t.user_attrs["compute"] for t in trained(again)}.items()  # what was spent stays spent


@pytest.mark.slow
def test_a_projected_ladder_search_rejects_nothing_lands_on_its_shares_and_records_promotions(env):
    """The tiny space with width up to 1 (over a 25 % budget unpruned) and a budget/share band, searched
    with the ladder (3-epoch trials: rungs 0 and 1): every sample is put on its share of the budget by
    bisection, none is rejected for cost, each trained student's MACs are at most its target (and so
    within the budget), and every trained trial passed or stopped at rung 1, its rungs on the trial."""
    space = Path(env["space"]).read_text().replace("high: 0.75, step: 0.25", "high: 1.0, step: 0.25")
    space = space.replace("\nfixed:", "\n  budget/share: {name: FloatDistribution, attributes: "
                          "{low: 0.5, high: 1.0, step: null, log: false}}\nfixed:")
    assert "budget/share" in space
    path = env["tmp"] / "projected.yaml"
    path.write_text(space)
    study = search(config(env, space=str(path), trials=4, epochs=3, flops_budget="25%", stopping="ladder",
                          study="proj"))
    assert not ray.is_initialized()  # on its own, a search shuts down the Ray it started
    assert not [t for t in study.trials if t.user_attrs.get("rejected")]
    budget = study.user_attrs["macs_budget"]
    assert len(trained(study)) == 4
    for t in trained(study):
        assert t.user_attrs["macs"] <= t.user_attrs["target_macs"] <= budget
        assert t.user_attrs["target_macs"] == int(t.params["budget/share"] * budget)
    # --at-budget (0.25): a share of the compute went to candidates at the budget itself, each within one
    # channel per layer of it (one more channel in every layer goes over)
    edge = [t for t in trained(study) if t.user_attrs["target_macs"] == budget]
    assert edge and all(t.params["budget/share"] == 1.0 for t in edge)
    for t in edge:
        c, plan = t.user_attrs["candidate"], t.user_attrs["plan"]
        bumped = create_model(c["student"], num_classes=10, in_channels=1, plan={k: v + 1 for k, v in plan.items()})
        assert count_macs(bumped, (1, 8, 8)) > budget >= t.user_attrs["macs"]
        if t.state == TrialState.PRUNED:
            assert t.user_attrs["stopped_at_epoch"] == 1
        else:
            assert 1 in t.user_attrs["rungs_promoted"]
