"""autokd.pareto: the front, the hypervolume and ``choose`` on a study written out by hand."""
from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from autokd.errors import UserError
from autokd.pareto import (ChooseError, choose, compute_of, hypervolume_2d, hypervolume_vs_compute, kept_ratios,
                           lambda_matrix, pareto_front_points, pareto_info, promotions)
from autokd.search.record import TrialRecord

BUDGET, TEACHER_MACS = 100, 250  # MACs; hypervolume divides MACs by the budget
DISTS = {"student/arch": CategoricalDistribution(["convtiny", "convverytiny"]),
         "student/width": FloatDistribution(0.5, 1.5, step=0.25),
         "kd/beta": FloatDistribution(0.1, 1.0),
         "kd/lambda/t1->s1": FloatDistribution(0.0, 1.0)}
# number: (state, val_accuracy, macs). Front = 0, 2, 7; 1 is dominated by 0, 5 by 2.
TRIALS = {
    0: ("complete", 0.80, 20),
    1: ("complete", 0.70, 40),
    2: ("complete", 0.90, 50),
    3: ("rejected", None, 150),
    4: ("stopped", 0.50, 30),
    5: ("complete", 0.85, 60),
    6: ("failed", None, 35),
    7: ("complete", 0.95, 90),
}


def candidate(n: int) -> dict:
    return {"student": "convtiny" if n % 2 else "convverytiny", "width": 0.5 + 0.25 * (n % 3),
            "prune": {"block1": 0.1 * (n % 4), "block2": 0.5}, "prune_method": "l1", "prune_at": "start",
            "lambdas": {"t1->s1": 0.1 * n, "t3->s2": 0.8}, "kd_loss": "vid", "beta": 0.5, "temperature": 4.0,
            "schedule": "one-stage", "epochs": 1, "lr": 0.05, "seed": n}


def trial_for(n: int, state: str, acc: float | None, macs: int):
    c = candidate(n)
    params = {"student/arch": c["student"], "student/width": c["width"], "kd/beta": 0.1 + 0.1 * n,
              "kd/lambda/t1->s1": 0.1 * n}
    attrs = {"candidate": c, "macs": macs}
    kwargs = {}
    if state == "complete":
        attrs.update(params_count=1000 + n, weights=None, history=[])
        kwargs["values"] = [acc, macs]
    elif state == "stopped":
        attrs.update(val_accuracy=acc, stopped_at_epoch=2)
    elif state == "rejected":
        attrs["rejected"] = True
    else:
        attrs["failure"] = "diverged: loss is nan"
    st = {"complete": TrialState.COMPLETE, "stopped": TrialState.PRUNED}.get(state, TrialState.FAIL)
    return create_trial(state=st, params=params, distributions=DISTS, user_attrs=attrs, **kwargs)


def hand_study(name: str = "hand", trials: dict = TRIALS, storage=None) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"])
    for key, value in {"macs_budget": BUDGET, "teacher_macs": TEACHER_MACS, "teacher_arch": "resnet18",
                       "dataset": "digits", "budget_text": "40%"}.items():
        study.set_user_attr(key, value)
    for n in sorted(trials):
        study.add_trial(trial_for(n, *trials[n]))
    return study


CONFIG = {"teacher": {"arch": "resnet18", "macs": TEACHER_MACS, "val_accuracy": 0.97, "test_accuracy": 0.96},
          "budget": {"macs_budget": BUDGET, "budget_text": "40%"}, "search": {"dataset": "digits"}}


@pytest.fixture(scope="module")
def info():
    return pareto_info(hand_study(), CONFIG)


def test_front_dominated_stopped_rejected_failed(info):
    assert [p["number"] for p in info.front] == [0, 2, 7]          # sorted by MACs: 20, 50, 90
    assert [p["number"] for p in info.dominated] == [1, 5]
    assert [(p["number"], p["val_accuracy"], p["macs"]) for p in info.stopped] == [(4, 0.5, 30)]
    assert [(p["number"], p["macs"]) for p in info.rejected] == [(3, 150)]
    assert [(p["number"], p["failure"]) for p in info.failed] == [(6, "diverged: loss is nan")]
    assert info.counts() == {"done": 5, "front": 3, "stopped": 1, "rejected": 1, "failed": 1, "running": 0}
    assert info.budget_macs == BUDGET
    assert info.teacher == {"arch": "resnet18", "spec": None, "macs": 250, "flops": 500,
                            "val_accuracy": 0.97, "test_accuracy": 0.96}


def test_point_fields(info):
    p = info.front[1]
    assert p["number"] == 2 and p["val_accuracy"] == 0.9 and p["macs"] == 50
    assert p["flops"] == 100 and p["params"] == 1002
    assert p["share_of_teacher"] == pytest.approx(50 / 250)
    assert p["candidate"]["lambdas"] == {"t1->s1": pytest.approx(0.2), "t3->s2": 0.8}
    assert p["trial_params"]["student/arch"] == "convverytiny"


def test_hypervolume_by_hand(info):
    # normalised (macs / 100, accuracy) after each completed trial:
    #   0: (0.2, 0.80)                         -> 0.8 * (1 - 0.2)                      = 0.64
    #   1: (0.4, 0.70) dominated by 0          -> 0.64
    #   2: + (0.5, 0.90) -> 0.8 * 0.3 + 0.9 * 0.5                                       = 0.69
    #   5: (0.6, 0.85) dominated by 2          -> 0.69
    #   7: + (0.9, 0.95) -> 0.8 * 0.3 + 0.9 * 0.4 + 0.95 * 0.1 = 0.24 + 0.36 + 0.095     = 0.695
    numbers = [n for n, _ in info.hypervolume_history]
    assert numbers == [0, 1, 2, 5, 7]
    assert [hv for _, hv in info.hypervolume_history] == pytest.approx([0.64, 0.64, 0.69, 0.69, 0.695])
    assert info.hypervolume == pytest.approx(0.695)
    assert info.hypervolume_reference_macs == BUDGET


def test_hypervolume_matches_optuna():
    from optuna._hypervolume import compute_hypervolume

    rng = np.random.default_rng(0)
    for _ in range(20):
        acc, macs = rng.uniform(0.01, 1, 12), rng.uniform(1, 99, 12)
        ours = hypervolume_2d(list(zip(acc, macs)), 100)
        theirs = compute_hypervolume(np.stack([-acc, macs / 100], axis=1), np.array([0.0, 1.0]))
        assert ours == pytest.approx(theirs, abs=1e-12)


def test_hypervolume_edges():
    assert hypervolume_2d([], 100) == 0.0
    assert hypervolume_2d([(0.9, 100), (0.9, 150), (0.0, 10)], 100) == 0.0  # at/over the reference, or acc 0
    assert hypervolume_2d([(1.0, 0)], 100) == 1.0


def test_front_of_points_keeps_ties_and_drops_dominated():
    pts = [{"number": 0, "val_accuracy": 0.9, "macs": 50}, {"number": 1, "val_accuracy": 0.9, "macs": 50},
           {"number": 2, "val_accuracy": 0.9, "macs": 60}, {"number": 3, "val_accuracy": 0.95, "macs": 60}]
    assert [p["number"] for p in pareto_front_points(pts)] == [0, 1, 3]
    assert pareto_front_points([]) == []


def test_lambda_matrix_and_kept_ratios():
    assert lambda_matrix({"lambdas": {"t3->s2": 0.8, "t1->s1": 0.5}}) == [[0.5, 0.0], [0.0, 0.0], [0.0, 0.8]]
    assert lambda_matrix({"lambdas": {}}, 2, 1) == [[0.0], [0.0]]
    assert kept_ratios({"prune": {"block1": 0.25}}, ["block1", "block2"]) == {"block1": 0.75, "block2": 1.0}
    assert kept_ratios({"prune": {"*": 0.5, "fc1": 0.0}}, ["block1", "fc1"]) == {"block1": 0.5, "fc1": 1.0}


def test_choose_best_trial_under(info):
    assert choose(info)["number"] == 7
    assert choose(info, best=True)["number"] == 7
    assert choose(info, trial=5)["number"] == 5
    stopped = choose(info, trial=4)
    assert stopped["state"] == "stopped" and stopped["val_accuracy"] == 0.5
    assert choose(info, under="30%")["number"] == 2    # 30% of 250 = 75 MACs: 0, 1, 2, 5 fit; 2 is best
    assert choose(info, under="0.2")["number"] == 2    # 50 MACs, inclusive
    assert choose(info, under="0.1")["number"] == 0    # 25 MACs
    assert choose(info, under="0.1K")["number"] == 2   # 100 FLOPs = 50 MACs


@pytest.mark.parametrize("kwargs, words", [
    ({"trial": 3}, "rejected"), ({"trial": 6}, "diverged"), ({"trial": 99}, "no trial 99"),
    ({"under": "5%"}, "no completed trial"), ({"under": "lots"}, "--under"),
    ({"best": True, "trial": 0}, "choose one of"),
])
def test_choose_errors_are_one_line(info, kwargs, words):
    with pytest.raises(UserError) as e:
        choose(info, **kwargs)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_empty_study():
    info = pareto_info(hand_study("empty", {3: TRIALS[3]}), CONFIG)
    assert info.front == [] and info.hypervolume_history == [] and info.hypervolume == 0.0
    assert "at least 2 completed" in info.importances_note
    with pytest.raises(ChooseError, match="no completed trial"):
        choose(info, best=True)
    with pytest.raises(ChooseError, match="rejected"):
        choose(info, trial=0)  # the one trial, numbered 0 in this study


def test_importances_are_data(info):
    # 5 completed trials whose parameters vary: fANOVA gives a share per parameter, summing to 1
    assert set(info.importances) == set(DISTS) and info.importances_note == ""
    assert sum(info.importances.values()) == pytest.approx(1.0)
    assert pareto_info(hand_study(), CONFIG).importances == info.importances  # seeded


def test_as_dict_is_json(info):
    import json

    d = json.loads(json.dumps(info.as_dict()))
    assert d["hypervolume"] == pytest.approx(0.695) and [p["number"] for p in d["front"]] == [0, 2, 7]


def test_reads_config_and_attrs_from_study_folder(tmp_path, monkeypatch):
    from autokd.search import store as studies
    from autokd.bundle import write_json

    monkeypatch.setenv("AUTOKD_STUDIES", str(tmp_path))
    studies.study_dir("disk").mkdir(parents=True)
    hand_study("disk", storage=studies.storage_url("disk"))
    write_json(studies.study_dir("disk") / "config.json", CONFIG)
    info = pareto_info(studies.load("disk"), importances=False)
    assert info.teacher["val_accuracy"] == 0.97 and info.dataset == "digits"
    assert [p["number"] for p in info.front] == [0, 2, 7] and info.importances_note == "not computed"


def test_cli_pareto_needs_a_completed_trial(tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from autokd.search import store as studies
    from autokd.cli.pareto import export, pareto

    monkeypatch.setenv("AUTOKD_STUDIES", str(tmp_path / "studies"))
    monkeypatch.chdir(tmp_path)
    studies.study_dir("bare").mkdir(parents=True)
    hand_study("bare", {0: TRIALS[3], 1: TRIALS[4]}, storage=studies.storage_url("bare"))
    app = typer.Typer()
    app.command()(pareto)
    app.command()(export)
    r = CliRunner().invoke(app, ["pareto", "bare"])
    assert r.exit_code == 2 and "no completed trial" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "dashboards").exists()


def test_reference_points_come_from_the_study_attributes():
    study = hand_study("refs")
    ref = {"label": "resnet20 trained alone (unpruned, width 1)", "val_accuracy": 0.93, "macs": 120}
    study.set_user_attr("references", [ref, {"label": "no accuracy yet", "val_accuracy": None, "macs": 5}])
    assert pareto_info(study, CONFIG, importances=False).references == [ref]
    assert pareto_info(hand_study("norefs"), CONFIG, importances=False).references == []


# ------------------------------------------------------------------ compute spent and rung promotions
T0 = __import__("datetime").datetime(2026, 1, 1, 12, 0, 0)
# number: (state, val_accuracy, macs, compute, seconds after T0 it finished, user attrs beyond trial_for's)
SPENT = {
    0: ("complete", 0.80, 20, 2.0, 30, {"rungs_promoted": [1]}),
    1: ("stopped", 0.50, 30, 1.5, 10, {"stopped_at_epoch": 1}),   # stopped at the first rung: no rungs_promoted
    2: ("complete", 0.90, 50, 2.0, 20, {"rungs_promoted": [1]}),
    3: ("rejected", None, 150, None, 5, {}),                       # never trained: spends nothing
    4: ("failed", None, 35, 0.25, 40, {}),
}


def flat(pairs) -> list[float]:
    return [x for pair in pairs for x in pair]


def spent_study(name: str = "spent", storage=None) -> optuna.Study:
    from datetime import timedelta

    study = hand_study(name, {}, storage=storage)
    for n, (state, acc, macs, compute, seconds, extra) in SPENT.items():
        t = trial_for(n, state, acc, macs)
        t.user_attrs.update(extra, **({} if compute is None else {"compute": compute}))
        t.datetime_start, t.datetime_complete = T0, T0 + timedelta(seconds=seconds)
        study.add_trial(t)
    return study


def test_hypervolume_by_compute_by_hand():
    """Finished in the order 1 (t+10 s), 2 (t+20 s), 0 (t+30 s), 4 (t+40 s); 3 is rejected (no compute).
    With MACs / 100 as in test_hypervolume_by_hand:
      1 stopped,  spent 1.5:             no completed trial                     -> 0
      2 complete, spent 1.5 + 2 = 3.5:   (0.5, 0.90) -> 0.9 * 0.5                = 0.45
      0 complete, spent 3.5 + 2 = 5.5:   + (0.2, 0.80) -> 0.8 * 0.3 + 0.9 * 0.5  = 0.69
      4 failed,   spent 5.5 + 0.25 = 5.75: no new point                          -> 0.69
    """
    info = pareto_info(spent_study(), CONFIG, importances=False)
    assert flat(info.hypervolume_by_compute) == pytest.approx([1.5, 0.0, 3.5, 0.45, 5.5, 0.69, 5.75, 0.69])
    assert info.compute_spent == pytest.approx(5.75) and info.compute_from_epochs == 0
    assert info.hypervolume_by_compute[-1][1] == pytest.approx(info.hypervolume)  # the same reference
    assert [(p["number"], p["compute"]) for p in info.completed] == [(0, 2.0), (2, 2.0)]
    assert info.rejected[0]["compute"] == 0.0 and info.failed[0]["compute"] == 0.25
    assert info.as_dict()["compute_spent"] == pytest.approx(5.75)


def test_finish_ties_go_by_trial_number():
    points = [{"number": n, "state": "complete", "val_accuracy": a, "macs": m, "compute": 1.0, "finished": f}
              for n, a, m, f in [(2, 0.9, 50, "2026-01-01T12:00:00.000000"), (0, 0.8, 20, None),
                                 (1, 0.7, 40, "2026-01-01T12:00:00.000000")]]
    # order 1, 2 (same time: by number), then 0 (no finish time: last). MACs / 100:
    #   1: (0.4, 0.7) -> 0.7 * 0.6 = 0.42;  2: + (0.5, 0.9) -> 0.7 * 0.1 + 0.9 * 0.5 = 0.52
    #   0: + (0.2, 0.8) -> 0.8 * 0.3 + 0.9 * 0.5 = 0.69
    assert flat(hypervolume_vs_compute(points, 100)) == pytest.approx([1.0, 0.42, 2.0, 0.52, 3.0, 0.69])
    assert hypervolume_vs_compute(points, None) == [(1.0, 0.0), (2.0, 0.0), (3.0, 0.0)]


def test_compute_of_old_trials_counts_training_epochs():
    assert compute_of(TrialRecord(compute=0.7, history=[{}, {}, {}])) == 0.7           # recorded wins
    assert compute_of(TrialRecord(epoch_val_accuracy={"0": 0.1, "1": 0.2, "2": 0.3})) == 2.0  # epoch 0 trains nothing
    assert compute_of(TrialRecord(epoch_val_accuracy={"1": 0.2}, history=[{}, {}, {}])) == 3.0
    assert compute_of(TrialRecord(history=[])) == 0.0 and compute_of(TrialRecord()) == 0.0
    info = pareto_info(hand_study(), CONFIG, importances=False)  # no `compute`, empty histories
    assert info.compute_spent == 0.0 and info.compute_from_epochs == 7  # every trial but the rejected one


def test_promotions_by_rung():
    info = pareto_info(spent_study("rungs"), CONFIG, importances=False)
    assert info.promotions == {1: {"promoted": [0, 2], "stopped": [1]}}
    points = [{"number": 0, "state": "complete", "rungs_promoted": [1, 2]},
              {"number": 1, "state": "stopped", "stopped_at_epoch": 1},
              {"number": 2, "state": "stopped", "stopped_at_epoch": 2, "rungs_promoted": [1]},
              {"number": 3, "state": "complete", "rungs_promoted": [2, 1]},
              {"number": 4, "state": "failed", "stopped_at_epoch": None, "rungs_promoted": None}]
    assert promotions(points) == {1: {"promoted": [0, 2, 3], "stopped": [1]},
                                  2: {"promoted": [0, 3], "stopped": [2]}}
    # an old study: trial 4 stopped at epoch 2, but no trial records rungs_promoted -> nothing to show
    assert pareto_info(hand_study(), CONFIG, importances=False).promotions == {}
    assert promotions([{"number": 1, "state": "stopped", "stopped_at_epoch": 2}]) == {}


def test_cli_pareto_prints_compute_spent(tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from autokd.bundle import write_json
    from autokd.cli.pareto import pareto
    from autokd.search import store as studies

    monkeypatch.setenv("AUTOKD_STUDIES", str(tmp_path / "studies"))
    monkeypatch.chdir(tmp_path)
    for name, make in (("spent", spent_study), ("old", hand_study)):
        studies.study_dir(name).mkdir(parents=True)
        make(name, storage=studies.storage_url(name))
        write_json(studies.study_dir(name) / "config.json", CONFIG)
    app = typer.Typer()
    app.command()(pareto)
    app.command()(lambda: None)  # a second command, so `pareto` is a subcommand
    r = CliRunner().invoke(app, ["pareto", "spent", "--no-html"])
    assert r.exit_code == 0, r.output
    assert "compute spent: 5.75 epoch-equivalents\n" in r.output  # 1.5 + 2 + 2 + 0.25, all recorded
    r = CliRunner().invoke(app, ["pareto", "old", "--no-html"])
    assert r.exit_code == 0 and "compute spent" not in r.output  # no compute and no epochs recorded: not known
