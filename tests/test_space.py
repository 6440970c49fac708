"""Search spaces: shipped files load and fit the models, sampling is seeded, bad files fail in one line."""
from __future__ import annotations

from dataclasses import replace

import re
import textwrap

import optuna
import pytest

from autokd.models import MODELS, create_model
from autokd.space import (SearchSpace, SpaceError, load_space, params_to_candidate,
                          shipped_spaces, suggest)
from autokd.teacher_space import family_space
from autokd.trial import Candidate

SHIPPED = ("resnet18_to_convtiny", "resnet56_to_resnet", "vgg16_to_vgg")
LAMBDA = re.compile(r"kd/lambda/t(\d+)->s(\d+)")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _points(arch: str) -> int:
    return len(create_model(arch, width=0.25).points)


def _field(c: Candidate, name: str) -> object:
    """The Candidate value a parameter name set (the inverse of params_to_candidate)."""
    if name.startswith("prune/") and name not in ("prune/method", "prune/at", "prune/steps"):
        return c.prune[name.removeprefix("prune/")]
    if name.startswith("kd/lambda/"):
        return c.lambdas[name.removeprefix("kd/lambda/")]
    fields = {"student/arch": "student", "student/width": "width", "prune/method": "prune_method",
              "prune/at": "prune_at", "kd/loss": "kd_loss", "kd/beta": "beta", "kd/temperature": "temperature",
              "kd/schedule": "schedule", "kd/stage1_fraction": "stage1_fraction",
              "kd/align_teacher": "align_teacher", "kd/curriculum": "curriculum", "train/lr": "lr",
              "student/init": "init", "student/blocks": "blocks", "prune/steps": "prune_steps",
              "kd/alpha": "kd_alpha", "train/finetune_lr": "finetune_lr"}
    return getattr(c, fields[name])


def _within(value: object, dist: optuna.distributions.BaseDistribution) -> bool:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return value in dist.choices
    if not dist.low <= value <= dist.high:
        return False
    return dist.step is None or abs((value - dist.low) / dist.step - round((value - dist.low) / dist.step)) < 1e-9


# ------------------------------------------------------------------ shipped spaces
def test_shipped_spaces_are_listed():
    assert set(SHIPPED) <= set(shipped_spaces())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_space_loads_and_fits_its_models(name):
    space = load_space(name)
    assert space.name == name and space.teacher in MODELS and space.description
    students = space.distributions["student/arch"].choices
    teacher_points = _points(space.teacher)
    student_points = {_points(s) for s in students}
    assert len(student_points) == 1  # one λ grid serves every student
    (s_points,) = student_points
    pairs = {(int(i), int(j)) for n in space.distributions if (m := LAMBDA.fullmatch(n)) for i, j in [m.groups()]}
    # every pair exists in the models, and every pair of the models is searched
    assert pairs == {(i, j) for i in range(1, teacher_points + 1) for j in range(1, s_points + 1)}
    assert family_space(space.teacher) == name


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_prune_keys_exist_in_every_student(name):
    pytest.importorskip("torch_pruning")
    from autokd.prune import prunable_groups

    space = load_space(name)
    keys = {n.removeprefix("prune/") for n in space.distributions} - {"method", "at", "steps"}
    keys = {k for k in keys if not k.startswith(("student/", "kd/", "train/", "budget/"))}
    assert keys
    for arch in space.distributions["student/arch"].choices:
        assert keys <= set(prunable_groups(create_model(arch, width=0.25))), arch


def test_value_sets_match_the_registries():
    from autokd import candidate, prune, space
    from autokd.distill.losses import PAIR_LOSSES
    from autokd.distill.schedule import SCHEDULES

    assert set(space.PRUNE_METHODS) == set(prune.CRITERIA.names()) | {"learned-mask"} | set(prune.GLOBAL.names())
    assert set(space.KD_LOSSES) <= set(PAIR_LOSSES.names())
    assert set(space.SCHEDULES) == set(SCHEDULES.names())
    from autokd.distill.pairing import PAIRINGS

    assert set(candidate.PAIRING_NAMES) == set(PAIRINGS.names())
    # one definition each (autokd.candidate), shared by the space, the trial and the pruner
    assert space.PRUNE_AT is candidate.PRUNE_AT and space.MAX_RATIO == prune.MAX_RATIO == candidate.MAX_RATIO


def test_each_family_has_a_shipped_space():
    """Which space each family derives its teachers' defaults from (tests/test_teacher_space.py)."""
    assert family_space("resnet110") == "resnet56_to_resnet"
    assert family_space("vgg19") == "vgg16_to_vgg"
    assert family_space("convtiny") == "resnet18_to_convtiny"


# ------------------------------------------------------------------ sampling
def _asks(space: SearchSpace, seed: int, n: int = 5) -> list[Candidate]:
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.TPESampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask(space.distributions)
        out.append(suggest(trial, space, Candidate(epochs=3)))
        study.tell(trial, (0.5, 1.0))
    return out


@pytest.mark.parametrize("name", SHIPPED)
def test_suggest_stays_within_the_distributions(name):
    space = load_space(name)
    for cand in _asks(space, seed=3):
        assert cand.epochs == 3  # names outside the space keep the base's value
        for pname, dist in space.distributions.items():
            if pname.startswith("budget/"):  # a search parameter: not on the candidate
                continue
            assert _within(_field(cand, pname), dist), (pname, _field(cand, pname), dist)


def test_same_seed_same_candidates():
    space = load_space("resnet56_to_resnet")
    first, again = _asks(space, seed=3), _asks(space, seed=3)
    assert first == again
    assert first != _asks(space, seed=4)
    assert len({c.student for c in first} | {c.width for c in first}) > 2  # it does vary


def test_suggest_on_a_plain_trial_and_a_fixed_trial():
    space = load_space("resnet18_to_convtiny")
    seen: list[Candidate] = []
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: seen.append(suggest(t, space, Candidate())) or 0.0, n_trials=2)
    assert set(study.trials[0].params) == set(space.distributions)
    assert seen[0] == params_to_candidate(study.trials[0].params, fixed=space.fixed, base=Candidate())
    fixed = optuna.trial.FixedTrial(study.trials[1].params)
    assert suggest(fixed, space, Candidate()) == seen[1]


def test_min_cost_candidates_are_the_cheap_corners():
    space = load_space("resnet56_to_resnet")
    corners = space.min_cost_candidates()
    # every architecture, inherited and from scratch (the shipped space offers both)
    assert [(c["student/arch"], c["student/init"]) for c in corners] == [
        (a, i) for a in ("resnet20", "resnet32", "resnet44", "resnet56") for i in ("teacher", "scratch")]
    for c in corners:
        assert c["student/width"] == 0.25
        assert {k: v for k, v in c.items() if k.startswith("prune/")} == \
            {"prune/layer1": 0.7, "prune/layer2": 0.7, "prune/layer3": 0.7}
        cand = params_to_candidate(c, fixed=space.fixed, base=Candidate())
        assert cand.prune == {"layer1": 0.7, "layer2": 0.7, "layer3": 0.7} and cand.width == 0.25


# ------------------------------------------------------------------ params -> Candidate
def test_params_to_candidate_maps_every_name():
    params = {
        "student/arch": "resnet32", "student/width": 0.625,
        "prune/layer1": 0.15000000000000002, "prune/*": 0.1, "prune/method": "taylor", "prune/at": "during",
        "kd/lambda/t3->s2": 0.7, "kd/lambda/t1->s1": 0.0, "kd/lambda/t9->s9": 0.3,  # t9: kept, ignored later
        "kd/loss": "fitnet", "kd/beta": 0.25, "kd/temperature": 2, "kd/schedule": "two-stage",
        "kd/stage1_fraction": 0.4, "kd/align_teacher": True, "kd/curriculum": True, "train/lr": 0.02,
    }
    base = Candidate(prune={"layer9": 0.5}, lambdas={"t1->s2": 1.0}, epochs=7, seed=11)
    got = params_to_candidate(params, fixed={"kd/loss": "at"}, base=base)
    assert got == Candidate(
        student="resnet32", width=0.625, prune={"layer1": 0.15, "*": 0.1}, prune_method="taylor",
        prune_at="during", lambdas={"t3->s2": 0.7, "t1->s1": 0.0, "t9->s9": 0.3}, kd_loss="at", beta=0.25,
        temperature=2.0, schedule="two-stage", stage1_fraction=0.4, align_teacher=True, curriculum=True,
        epochs=7, lr=0.02, seed=11)
    assert isinstance(got.temperature, float)
    assert base.prune == {"layer9": 0.5}  # base untouched
    # names that set no dict key keep base's dicts
    assert params_to_candidate({"kd/beta": 0.5}, fixed={}, base=base).lambdas == {"t1->s2": 1.0}


@pytest.mark.parametrize("params, key", [({"kd/temp": 2.0}, "kd/temp"), ({"prune/method": "random"}, "prune/method")])
def test_params_to_candidate_rejects_bad_names_and_values(params, key):
    with pytest.raises(SpaceError, match=re.escape(key)):
        params_to_candidate(params, fixed={}, base=Candidate())


# ------------------------------------------------------------------ loading files
GOOD = """\
description: tiny test space
teacher: resnet56
params:
  student/arch: {name: CategoricalDistribution, attributes: {choices: [resnet20]}}
  kd/beta: {name: FloatDistribution, attributes: {low: 0.1, high: 0.9, step: null, log: false}}
"""


def _write(tmp_path, text: str, name: str = "space.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_fixed_wins_and_other_optuna_forms_load(tmp_path):
    path = _write(tmp_path, GOOD + """\
  kd/loss: {name: CategoricalDistribution, attributes: {choices: [vid, fitnet]}}
  prune/*: {name: IntDistribution, attributes: {low: 0, high: 0, step: 1, log: false}}
  kd/temperature: {type: float, low: 1.0, high: 4.0}
fixed:
  kd/loss: at
""")
    space = load_space(path)
    assert space.name == "space" and space.teacher == "resnet56" and space.description == "tiny test space"
    assert set(space.distributions) == {"student/arch", "kd/beta", "prune/*", "kd/temperature"}
    assert isinstance(space.distributions["prune/*"], optuna.distributions.IntDistribution)
    cand = suggest(optuna.create_study().ask(space.distributions), space, Candidate())
    assert cand.kd_loss == "at" and cand.prune == {"*": 0.0} and 1.0 <= cand.temperature <= 4.0


def test_spaces_env_folder_is_searched_by_name(tmp_path, monkeypatch):
    _write(tmp_path, GOOD, "mine.yaml")
    monkeypatch.setenv("AUTOKD_SPACES", str(tmp_path))
    assert "mine" in shipped_spaces() and set(SHIPPED) <= set(shipped_spaces())
    assert load_space("mine").path == str(tmp_path / "mine.yaml")


P = "params:\n"


def _f(name: str, low: object, high: object) -> str:
    return f"  {name}: {{name: FloatDistribution, attributes: {{low: {low}, high: {high}}}}}\n"


def _c(name: str, *choices: str) -> str:
    return f"  {name}: {{name: CategoricalDistribution, attributes: {{choices: [{', '.join(choices)}]}}}}\n"


BAD = {  # case -> (file text, a word the one-line message must contain besides the file)
    "unknown parameter": (GOOD + "  kd/temp: {type: float, low: 1.0, high: 2.0}\n", "kd/temp"),
    "unknown top-level key": (GOOD + "parms: {}\n", "parms"),
    "wrong type": (P + _f("kd/beta", "abc", 1.0), "kd/beta"),
    "exponent read as text": (P + _f("train/lr", "1e-3", 0.1), "1.0e-2"),
    "low > high": (P + _f("kd/beta", 0.9, 0.1), "kd/beta"),
    "missing attribute": (P + "  kd/beta: {name: FloatDistribution, attributes: {low: 0.1}}\n", "kd/beta"),
    "unknown distribution": (P + "  kd/beta: {name: NormalDistribution, attributes: {}}\n", "NormalDistribution"),
    "not a mapping": (P + "  kd/beta: 0.5\n", "kd/beta"),
    "bad categorical value": (P + _c("prune/method", "l1", "random"), "random"),
    "choices not a list": (P + "  kd/loss: {name: CategoricalDistribution, attributes: {choices: vid}}\n", "kd/loss"),
    "unregistered student": (P + _c("student/arch", "resnet21"), "resnet21"),
    "numbers for a name": (P + _f("kd/loss", 0.0, 1.0), "kd/loss"),
    "bool as text": (P + _c("kd/align_teacher", "'true'"), "kd/align_teacher"),
    "beta above 1": (P + _f("kd/beta", 0.5, 1.5), "kd/beta"),
    "ratio above 0.95": (P + _f("prune/layer1", 0.0, 0.99), "prune/layer1"),
    "temperature 0": (P + _f("kd/temperature", 0.0, 4.0), "kd/temperature"),
    "lambda t0": (P + _f("kd/lambda/t0->s1", 0.0, 1.0), "t0->s1"),
    "lambda malformed": (P + _f("kd/lambda/3-2", 0.0, 1.0), "kd/lambda/3-2"),
    "bad fixed value": (GOOD + "fixed:\n  kd/schedule: three-stage\n", "kd/schedule"),
    "duplicate key": (GOOD + "  kd/beta: {type: float, low: 0.2, high: 0.3}\n", "kd/beta"),
    "unknown teacher": (P + "  kd/beta: {type: float, low: 0.2, high: 0.3}\nteacher: resnet57\n", "resnet57"),
    "no params": ("description: nothing\n", "params"),
    "not YAML": ("params: {kd/beta: [unclosed\n", "YAML"),
    "a list": ("- kd/beta\n", "mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_space_is_one_line_naming_file_and_key(tmp_path, case):
    text, word = BAD[case]
    path = _write(tmp_path, text)
    with pytest.raises(SpaceError) as e:
        load_space(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and word in msg, msg


@pytest.mark.parametrize("arg", ["missing.yaml", "no_such_space", "dir/"])
def test_missing_file_or_name(tmp_path, monkeypatch, arg):
    (tmp_path / "dir").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpaceError) as e:
        load_space(arg)
    msg = str(e.value)
    assert "\n" not in msg and arg.rstrip("/") in msg and "resnet56_to_resnet" in msg, msg


def test_yaml_that_builds_objects_is_refused(tmp_path):
    path = _write(tmp_path, "params: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space(path)


def test_kd_alpha_is_a_space_parameter():
    from autokd.space import params_to_candidate
    from autokd.trial import Candidate

    c = params_to_candidate({"kd/alpha": 0.0, "kd/beta": 1.0}, fixed={}, base=Candidate())
    assert (c.kd_alpha, c.beta) == (0.0, 1.0)


def test_an_inherited_student_is_pruned_before_it_is_fine_tuned():
    base = Candidate()
    inherited = params_to_candidate({"student/init": "teacher", "prune/at": "during", "prune/method": "l1"},
                                    fixed={}, base=base)
    assert inherited.prune_at == "start"
    masks = params_to_candidate({"student/init": "teacher", "prune/at": "start", "prune/method": "learned-mask",
                                 "prune/steps": 2}, fixed={}, base=base)
    assert (masks.prune_at, masks.prune_steps) == ("during", 1)  # PDD's masks are learned while distilling
    scratch = params_to_candidate({"student/init": "scratch", "prune/at": "during"}, fixed={}, base=base)
    assert scratch.prune_at == "during"


def test_gradual_steps_are_capped_at_the_candidates_epochs():
    """One pruning step an epoch: a 1-epoch search of a space offering 2 steps prunes in one (it failed
    with 'prune_steps must be in [1, epochs=1]' in the smoke benchmark's inherit arm)."""
    params = {"student/init": "teacher", "prune/method": "l1", "prune/steps": 2}
    assert params_to_candidate(params, fixed={}, base=replace(Candidate(), epochs=1)).prune_steps == 1
    assert params_to_candidate(params, fixed={}, base=replace(Candidate(), epochs=3)).prune_steps == 2


def test_a_named_pairing_is_two_dimensions_instead_of_t_by_s(tmp_path):
    """kd/pairs + kd/pair_weight: the reduced form of the lambdas (issue #15); the trial resolves the
    name on its own points (3 x 3 for resnet20 -> resnet20), and a space cannot give both forms."""
    from autokd.candidate import check_candidate
    from autokd.data import load_dataset
    from autokd.errors import UserError
    from autokd.trial import TrialContext, TrialRun

    path = tmp_path / "pairs.yaml"
    path.write_text(textwrap.dedent("""\
        params:
          kd/pairs: {name: CategoricalDistribution, attributes: {choices: [diag, deepest, all]}}
          kd/pair_weight: {name: FloatDistribution, attributes: {low: 0.0, high: 1.0, step: null, log: false}}
        warm_start:
          to-deepest: {kd/pairs: deepest, kd/pair_weight: 0.5}
        """))
    space = load_space(path)
    assert len(space.distributions) == 2
    cand = params_to_candidate(space.warm_start["to-deepest"], fixed={}, base=Candidate(epochs=1, student="resnet20"))
    assert (cand.pairs, cand.pair_weight, cand.lambdas) == ("deepest", 0.5, {})
    data = load_dataset("digits", seed=0)
    teacher = create_model("resnet20", num_classes=10, in_channels=1).eval()
    run = TrialRun(cand, TrialContext(teacher=teacher, data=data))
    assert run.lambdas == {"t3->s1": 0.5, "t3->s2": 0.5, "t3->s3": 0.5}
    assert run.resolved()["lambdas"] == {f"t{i}->s{j}": 0.5 if i == 3 else 0.0 for i in (1, 2, 3) for j in (1, 2, 3)}

    both = path.read_text().replace("warm_start:", "  kd/lambda/t1->s1: {name: FloatDistribution, attributes: "
                                    "{low: 0.0, high: 1.0, step: null, log: false}}\nwarm_start:")
    path.write_text(both)
    with pytest.raises(SpaceError, match="kd/pairs replaces the kd/lambda") as err:
        load_space(path)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="not both"):
        check_candidate(replace(cand, lambdas={"t1->s1": 1.0}))
    with pytest.raises(UserError, match="pairs must be one of"):
        check_candidate(replace(cand, pairs="every"))
