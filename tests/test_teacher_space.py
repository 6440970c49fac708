"""Every zoo teacher searches with no --space (its family's space restricted to what it serves), a space
that cannot serve a teacher fails in one line before training, and a search whose trials keep failing
stops after --max-failures of them in a row instead of sampling forever.

What keeps a default space from failing every trial of its teacher is checked for all twelve zoo
teachers without Ray: the search's checks pass, every warm start (the trials a search runs first) is
sampled, priced within the budget and built as its trial builds it, at the MACs it was priced at. A
real search (Ray, trials trained) runs for one teacher of each family space, each a restricted one."""
from __future__ import annotations

import re

import optuna
import pytest
from fault_tools import SPACE, integrity, train_teacher
from optuna.trial import TrialState
from typer.testing import CliRunner

from autokd.candidate import is_global
from autokd.cli import app
from autokd.inherit import check_inheritable
from autokd.measure import count_macs
from autokd.models import MODELS
from autokd.search import SAMPLERS, SearchConfig, search
from autokd.search import store
from autokd.search.prepare import prepare
from autokd.search.ray_start import local_ray
from autokd.search.sampling import sample_candidate
from autokd.seeds import sampler_seed
from autokd.space import load_space, write_space
from autokd.teacher import seeded_model
from autokd.teacher_space import FAMILY_SPACES, default_space_for, family_space, may_inherit, points
from autokd.trial import TrialContext, TrialRun

ZOO = MODELS.names()
# one teacher per family space, each not the space's own teacher (so its space is restricted): the
# students (resnet20 keeps resnet20 only, vgg11 keeps vgg11) and the lambda pairs (convverytiny's 3 points)
SEARCHED = ("resnet20", "vgg11", "convverytiny")
LAMBDA = re.compile(r"kd/lambda/t(\d+)->s(\d+)")
runner = CliRunner()


def _pairs(space) -> set[tuple[int, int]]:
    return {(int(m[1]), int(m[2])) for n in space.distributions if (m := LAMBDA.fullmatch(n))}


# ------------------------------------------------------------------ the derived spaces (no training)
def test_the_family_teachers_get_their_shipped_space_unchanged():
    for teacher, name in [("resnet56", "resnet56_to_resnet"), ("vgg16", "vgg16_to_vgg"),
                          ("resnet18", "resnet18_to_convtiny")]:
        assert default_space_for(teacher) == load_space(name)  # the demo's space, exactly
    assert family_space("resnet110") == "resnet56_to_resnet" and family_space("convtiny") == "resnet18_to_convtiny"
    with pytest.raises(Exception, match="resnet56_to_resnet") as e:
        family_space("mobilenet")
    assert "\n" not in str(e.value)


def test_derived_students_are_the_ones_the_teacher_can_serve():
    """resnet56's space offers resnet20/32/44/56 (resnet56: the teacher itself): a resnet20 teacher keeps
    resnet20 only, resnet44 keeps 20/32/44, resnet110 all four and itself; vgg11 keeps vgg11."""
    arch = "student/arch"
    assert default_space_for("resnet20").distributions[arch].choices == ("resnet20",)
    assert default_space_for("resnet44").distributions[arch].choices == ("resnet20", "resnet32", "resnet44")
    assert default_space_for("resnet110").distributions[arch].choices == (
        "resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
    assert default_space_for("vgg11").distributions[arch].choices == ("vgg11",)
    # the tiny students start from scratch in resnet18's space: both serve a tiny teacher
    assert default_space_for("convverytiny").distributions[arch].choices == ("convtiny", "convverytiny")


def test_derived_lambda_pairs_are_the_points_that_exist():
    """resnet18 has 4 points, convtiny 3: its space's 4 x 3 pairs become 3 x 3 for a convtiny teacher."""
    assert len(_pairs(load_space("resnet18_to_convtiny"))) == 12
    space = default_space_for("convtiny")
    assert _pairs(space) == {(i, j) for i in (1, 2, 3) for j in (1, 2, 3)}
    assert space.teacher == "convtiny" and space.name == "resnet18_to_convtiny@convtiny"
    assert all(not LAMBDA.fullmatch(k) or int(LAMBDA.fullmatch(k)[1]) <= 3
               for entry in space.warm_start.values() for k in entry)
    assert "vid-to-third" in space.warm_start  # t3 exists in a convtiny teacher


@pytest.mark.parametrize("teacher", ZOO)
def test_every_zoo_teachers_default_space_fits_it(teacher):
    space = default_space_for(teacher)
    assert space.teacher == teacher
    students = space.distributions["student/arch"].choices
    if may_inherit(space):
        for student in students:
            check_inheritable(teacher, student)  # raises if not
    s_points = {points(s) for s in students}
    assert _pairs(space) == {(i, j) for i in range(1, points(teacher) + 1) for j in range(1, min(s_points) + 1)}
    assert space.warm_start
    for name, entry in space.warm_start.items():
        for key, value in entry.items():
            dist = space.distributions[key]
            assert dist._contains(dist.to_internal_repr(value)), (name, key, value)
        if entry.get("student/init") == "teacher" and name == "teacher-pruned":
            assert entry["student/arch"] == teacher  # the pruned teacher is this one


@pytest.mark.parametrize("teacher", ["resnet20", "resnet56", "convtiny"])
def test_a_space_written_out_loads_back_the_same(tmp_path, teacher):
    space = default_space_for(teacher)
    back = load_space(write_space(space, tmp_path / f"{space.name}.yaml"))
    assert (back.name, back.teacher, back.description) == (space.name, space.teacher, space.description)
    assert (back.distributions, back.fixed, back.warm_start) == (space.distributions, space.fixed, space.warm_start)


# ------------------------------------------------------------------ a space that cannot serve the teacher
@pytest.mark.parametrize("teacher,space,needle", [
    ("convtiny", "resnet18_to_convtiny", "kd/lambda/t4->s1 names teacher point 4, and convtiny has 3"),
    ("resnet20", "resnet56_to_resnet", "student resnet32 (blocks per stage (5, 5, 5)) is deeper than teacher resnet20"),
])
def test_a_space_that_cannot_serve_the_teacher_says_why_before_training(tmp_path, monkeypatch, teacher, space, needle):
    monkeypatch.setenv("AUTOKD_STUDIES", str(tmp_path / "studies"))
    result = runner.invoke(app, ["search", "--teacher", teacher, "--space", space, "--dataset", "digits",
                                 "--trials", "1"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert needle in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "studies").exists()  # nothing written, nothing trained


# ------------------------------------------------------------------ every teacher's warm starts, built
@pytest.mark.parametrize("teacher", ZOO)
def test_every_zoo_teachers_warm_starts_are_priced_in_budget_and_build_at_that_price(tmp_path, monkeypatch, teacher):
    """The search's own checks (``prepare``: inheritance, lambda points, the budget's floor) pass for the
    teacher's default space at the searches' settings below; each warm start, sampled and priced as
    the search does it, is accepted (within the budget, projected onto its share); a per-layer one is
    built as its trial builds it (the student inherited or fresh, every pruning step, the distiller's
    pairs against the teacher's and the student's points, an untrained teacher standing in) and
    measures the MACs it was priced at. A global-ranking one prunes by the trained weights: priced at
    its target, built in the searches below (their first trial) and in tests/test_global_prune.py."""
    import optuna

    monkeypatch.setenv("AUTOKD_STUDIES", str(tmp_path / "studies"))
    plan = prepare(SearchConfig(teacher=teacher, dataset="digits", flops_budget="40%", trials=2, epochs=1,
                                train_subset=64, study="zoo"))
    assert plan.space.warm_start
    untrained = seeded_model(teacher, 0, num_classes=plan.data.num_classes, in_channels=plan.data.in_channels).eval()
    # the search's own sampler at its seed: a warm start's free parameters (its pruning method among them)
    # are drawn as a search with this seed draws them, so which ones prune globally does not vary by run
    sampler = SAMPLERS.get(plan.cfg.sampler)(sampler_seed(plan.cfg.seed, 0), plan.cfg.target_trials)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    for params in plan.space.warm_start.values():
        study.enqueue_trial(params)
    built = 0
    for name in plan.space.warm_start:
        sample = sample_candidate(study.ask(plan.space.distributions), plan)
        assert not sample.rejected and sample.macs <= plan.budget.macs, (name, sample.why_not, sample.macs)
        if is_global(sample.candidate):
            assert sample.candidate.target_macs and sample.macs <= sample.candidate.target_macs, name
            continue
        run = TrialRun(sample.candidate, TrialContext(teacher=untrained, data=plan.data))
        while run.steps:  # the steps a trial takes later (pruned during training, learned masks)
            run._prune(run.steps.pop(0)[1])
        assert count_macs(run.student, run.shape) == sample.macs, name
        built += 1
    assert built >= 2


def test_the_searched_teachers_cover_every_family_space():
    assert {family_space(t) for t in SEARCHED} == {space for _, space in FAMILY_SPACES}
    assert all(default_space_for(t) != load_space(family_space(t)) for t in SEARCHED)  # each one restricted


# ------------------------------------------------------------------ real searches
@pytest.fixture(scope="module")
def shared_ray():
    with local_ray():  # one Ray for every search of this file, its workers started once
        yield


@pytest.fixture(scope="module")
def zoo_home(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo_home")  # the teachers, trained once each for the module


@pytest.mark.slow
@pytest.mark.parametrize("teacher", SEARCHED)
def test_a_teacher_of_each_family_searches_with_no_space(tmp_path, monkeypatch, shared_ray, zoo_home, teacher):
    """The mission's command for a teacher of `autokd models`: digits, 1 epoch, 2 trials (its space's first
    two warm starts, a global-ranking one among them); both train, the study keeps the space it used, and
    a resume without --space reads that file. Every zoo teacher's warm starts, without Ray:
    test_every_zoo_teachers_warm_starts_are_priced_in_budget_and_build_at_that_price."""
    monkeypatch.setenv("AUTOKD_HOME", str(zoo_home))
    monkeypatch.setenv("AUTOKD_STUDIES", str(tmp_path / "studies"))
    cfg = SearchConfig(teacher=teacher, teacher_epochs=1, dataset="digits", flops_budget="40%", trials=2,
                       epochs=1, parallel=2, train_subset=64, reference=False, study="zoo")
    study = search(cfg)
    trained = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    failures = [t.user_attrs.get("failure") for t in study.trials if t.user_attrs.get("failure")]
    assert len(trained) == 2 and not failures, failures
    saved, want = store.read_config("zoo")["space"], default_space_for(teacher)
    back = load_space(store.study_dir("zoo") / saved["file"])
    assert saved["name"] == back.name == want.name and back.teacher == teacher
    assert (back.distributions, back.fixed, back.warm_start) == (want.distributions, want.fixed, want.warm_start)


@pytest.fixture(scope="module")
def teacher_home(tmp_path_factory):
    return train_teacher(tmp_path_factory.mktemp("home"))  # resnet20, digits, 2 epochs, seed 0


@pytest.mark.slow
def test_a_search_whose_trials_all_fail_stops_in_one_line_and_stays_resumable(
        tmp_path, monkeypatch, shared_ray, teacher_home):
    """A learning rate of 1e6 diverges within the first steps: every trial fails. --max-failures 3 (the
    field; 5 by default) ends the search after three in a row, exit 2, one line naming the failure."""
    monkeypatch.setenv("AUTOKD_HOME", str(teacher_home))
    monkeypatch.setenv("AUTOKD_STUDIES", str(tmp_path / "studies"))
    space = tmp_path / "diverging.yaml"
    space.write_text(SPACE.replace("fixed:", "fixed:\n  train/lr: 1.0e+6"))
    cfg = SearchConfig(teacher="resnet20", teacher_epochs=2, dataset="digits", space=str(space), study="bad",
                       trials=2, epochs=1, parallel=2, reference=False, warm_start=False, max_failures=3)
    lines: list[str] = []
    with pytest.raises(Exception) as e:
        search(cfg, printer=lines.append)
    message = str(e.value)
    assert type(e.value).__name__ == "UserError" and "\n" not in message
    assert message.startswith("search bad stopped: 3 trials in a row failed, the last with: diverged:"), message
    study = optuna.load_study(study_name="bad", storage=store.storage_url("bad"))  # plain Optuna opens it
    ran = [t for t in study.trials if not t.user_attrs.get("rejected")]  # the rest: samples over the budget
    assert {t.state for t in study.trials} == {TrialState.FAIL}
    assert 3 <= len(ran) <= 4, len(ran)  # a trial already running when the third failed ends too
    assert all(t.user_attrs["failure"].startswith("diverged:") for t in ran)
    assert integrity(store.study_dir("bad") / "study.db") == "ok"
    # resumed from the CLI without --space: the space kept in the study's folder, the default limit of 5
    result = runner.invoke(app, ["search", "--teacher", "resnet20", "--teacher-epochs", "2", "--dataset", "digits",
                                 "--study", "bad", "--trials", "2", "--epochs", "1", "--no-reference"])
    last = [line for line in result.output.splitlines() if line.strip()][-1]
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert last.startswith("error: search bad stopped: 5 trials in a row failed, the last with: diverged:"), result.output
    assert {t.state for t in store.load("bad").trials} == {TrialState.FAIL}
