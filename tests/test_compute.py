"""Compute in epoch-equivalents, the --compute stopping rule, samplers for small budgets, warm start.

Every expected number is derived by hand in the comments."""
from __future__ import annotations

import textwrap
from types import SimpleNamespace

import optuna
import pytest

from autokd.errors import UserError
from autokd.search.compute import EVAL_COST, epochs_in, spent, trial_compute
from autokd.search.config import SAMPLERS, SearchConfig, check_config, startup_trials
from autokd.search.stopping import LadderStopper, RungResult, make_stopper
from autokd.space import SpaceError, load_space


def test_trial_compute_by_hand():
    # 3 epochs on 3,000 images, 3 validation passes over 600: 3 + 3 * (1/3) * 600 / 3000 = 3.2
    assert trial_compute(3, 3, train_images=3000, val_images=600) == pytest.approx(3.2)
    # an inherited student scored at epoch 0 too (4 passes) after recalibrating on 512 images:
    # 3 + (1/3) * (4 * 600 + 512) / 3000 = 3 + 2912 / 9000 = 3.32356
    assert trial_compute(3, 4, train_images=3000, val_images=600, recalibration_images=512) == \
        pytest.approx(3 + 2912 / 9000)
    assert EVAL_COST == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        trial_compute(1, 1, train_images=0, val_images=10)


def test_epochs_and_evaluations_from_the_rung_record():
    assert epochs_in({"0": 0.5, "1": 0.6, "2": 0.7}) == (2, 3)  # epoch 0 is a score, not an epoch
    assert epochs_in({"1": 0.6}) == (1, 1)
    assert epochs_in(None) == (0, 0) and epochs_in({}) == (0, 0)
    assert spent([1.5, None, None, 2]) == 3.5


def test_compute_and_trials_targets():
    assert SearchConfig().target_trials == 12                     # neither given: 12 trials
    assert SearchConfig(compute=30).target_trials == float("inf")  # --compute alone: compute decides
    assert SearchConfig(compute=30, trials=5).target_trials == 5   # both: whichever comes first
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(UserError, match="--compute"):
            check_config(SearchConfig(compute=bad))
    with pytest.raises(UserError, match="--stopping"):
        check_config(SearchConfig(stopping="median"))
    with pytest.raises(UserError, match="--eta"):
        check_config(SearchConfig(eta=1))


def _searcher(compute: float | None, trials: int | None = None, spent_before: float = 0.0):
    from autokd.search.tune import OptunaSearcher, Tally

    data = SimpleNamespace(train_y=[0] * 3000, val_y=[0] * 600)
    session = SimpleNamespace(plan=SimpleNamespace(data=data), cfg=SearchConfig(compute=compute, trials=trials),
                              study=optuna.create_study(directions=["maximize", "minimize"]))
    return OptunaSearcher(session, Tally(compute=spent_before))


def test_compute_rule_counts_what_runs_as_committed():
    """With --compute 10 and 3.2 spent: a running 3-epoch trial commits 3.2 more (6.4 < 10, go on);
    a second makes 9.6 (< 10, one more may start); a third 12.8 >= 10: no new trial. So the search
    ends within one trial's cost of 10 (at most 9.6 + 3.2 = 12.8 if all run to the end)."""
    s = _searcher(compute=10, spent_before=3.2)
    one = s.compute_of(3, 3, False)
    assert one == pytest.approx(3.2)
    assert not s.full()
    s.committed["a"] = one
    assert not s.full()
    s.committed["b"] = one
    assert not s.full()
    s.committed["c"] = one
    assert s.full()
    assert _searcher(compute=None, trials=2).full() is False


def test_spent_compute_is_recorded_on_the_trial():
    s = _searcher(compute=10)
    trial = s.study.ask()
    trial.set_user_attr("epoch_val_accuracy", {"0": 0.4, "1": 0.5})  # inherited, stopped after epoch 1
    s.committed["t"], s.promoted["t"] = 99.0, [0]
    s._spend("t", trial)
    # 1 + (1/3) * (2 * 600 + 512) / 3000 = 1 + 1712 / 9000
    assert trial.user_attrs["compute"] == pytest.approx(1 + 1712 / 9000)
    assert trial.user_attrs["rungs_promoted"] == [0]
    assert s.tally.compute == pytest.approx(1 + 1712 / 9000) and s.committed == {}


def test_ladder_stopper_promotes_the_top_third_per_group():
    """eta 3, grace 3: the first three at a rung go on. Rung 1 (acc, MACs) in order:
    t0 (0.50, 100), t1 (0.60, 100), t2 (0.70, 100), then t3 (0.40, 100): 4 rows, top max(1, 4 // 3) = 1
    by Pareto rank is t2 (it dominates every other at equal MACs): t3 stops. t4 (0.90, 50) dominates
    all: 5 rows, top 1 = t4, it goes on. A trial of another group (init teacher) at rung 1 with
    (0.10, 100) is the first of its group: it goes on."""
    stop = make_stopper("ladder", epochs=5)
    assert isinstance(stop, LadderStopper) and stop.rungs == [0, 1, 3]
    decisions = [stop.observe(t, 1, a, m, "scratch") for t, (a, m) in
                 enumerate([(0.5, 100), (0.6, 100), (0.7, 100), (0.4, 100), (0.9, 50)])]
    assert decisions == [False, False, False, True, False]  # True = stop
    assert stop.observe(9, 1, 0.1, 100, "teacher") is False
    assert stop.observe(0, 2, 0.1, 100, "scratch") is False  # not a rung: never stops
    assert stop.ladders["scratch"].promoted[1] == [0, 1, 2, 4]


def test_ladder_stopper_rebuilds_its_table_on_resume():
    stop = make_stopper("ladder", epochs=5)
    for t, acc in enumerate([0.5, 0.6, 0.7]):
        stop.record(RungResult(t, 1, acc, 100, "scratch"))
    stop.record(RungResult(7, 2, 0.9, 100, "scratch"))  # not a rung: ignored
    # a fourth result at rung 1 now meets the three preloaded rows: (0.4, 100) is not the top 1 of 4
    assert stop.observe(3, 1, 0.4, 100, "scratch") is True
    assert 2 not in stop.ladders["scratch"].table


def test_samplers_for_small_budgets():
    # 10 trials: 2 random start-up trials (Optuna's default is 10: the whole search)
    assert startup_trials(10) == 2 and startup_trials(12) == 2 and startup_trials(25) == 5
    assert startup_trials(float("inf")) == 5
    tpe = SAMPLERS.get("tpe")(0, 10)
    assert tpe._n_startup_trials == 2 and tpe._multivariate and tpe._group and tpe._constant_liar
    assert SAMPLERS.get("nsga2")(0, 12)._population_size == 4
    assert isinstance(SAMPLERS.get("gp")(0, 10), optuna.samplers.GPSampler)


def _first_candidates(sampler: str, n: int, seed: int = 7) -> list[dict]:
    from autokd.search.driver import enqueue_warm_start

    space = load_space("resnet56_to_resnet")
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=SAMPLERS.get(sampler)(seed, 12))
    enqueue_warm_start(study, space)
    out = []
    for i in range(n):
        trial = study.ask(space.distributions)
        out.append(dict(trial.params))
        study.tell(trial, [0.1 * (i % 5), 1000.0 * (i + 1)])
    return out


@pytest.mark.parametrize("sampler", [pytest.param(s, marks=pytest.mark.slow) if s == "gp" else s for s in sorted(SAMPLERS)])
def test_same_seed_same_sampler_same_first_candidates(sampler):
    """The eight warm-start settings come first, in the file's order, then the sampler's own."""
    space = load_space("resnet56_to_resnet")
    first = _first_candidates(sampler, 10)
    assert first == _first_candidates(sampler, 10)
    for got, (name, params) in zip(first, space.warm_start.items()):
        assert {k: got[k] for k in params} == params, name
    assert len({str(sorted(c.items())) for c in first[8:]}) == 2  # then sampled, not repeats
    assert _first_candidates(sampler, 10, seed=8)[8:] != first[8:]  # another seed, other samples


def test_shipped_warm_starts_are_the_papers_settings():
    warm = load_space("resnet56_to_resnet").warm_start
    assert list(warm) == ["torch-pruning", "torch-pruning-kd", "teacher-pruned", "hinton-kd", "vid-matching", "two-stage",
                          "pdd-masks", "indistill"]
    assert warm["hinton-kd"]["kd/temperature"] == 4.0 and warm["pdd-masks"]["budget/share"] == 0.5 and warm["pdd-masks"]["prune/method"] == "learned-mask"
    assert warm["teacher-pruned"]["student/init"] == "teacher" and warm["teacher-pruned"]["kd/alpha"] == 0.0


@pytest.mark.parametrize("entry,needle", [
    ("x: {student/depth: 3}", "student/depth is not a sampled parameter"),
    ("x: {student/width: 7.0}", "student/width=7.0 is outside its distribution"),
    ("x: 3", "expected a mapping"),
])
def test_bad_warm_start_is_one_line(tmp_path, entry, needle):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent("""\
        params:
          student/width: {name: FloatDistribution, attributes: {low: 0.25, high: 1.0, step: 0.25, log: false}}
        warm_start:
        """) + "  " + entry + "\n")
    with pytest.raises(SpaceError, match=needle) as err:
        load_space(path)
    assert "\n" not in str(err.value)


def test_rung_scores_on_a_validation_subset_by_hand():
    """--rung-val-images 1000 on a 6,000-image split and 3,000 training images (the CPU protocol)."""
    # inherited, 2 epochs, run to the end: epoch 0 and 1 on 1,000 images, epoch 2 on all 6,000, + 512 recalibration
    # 2 + (1/3) * (6000 + 2 * 1000 + 512) / 3000 = 2 + 8512 / 9000
    assert trial_compute(2, 3, train_images=3000, val_images=6000, recalibration_images=512, rung_images=1000,
                         full_evaluations=1) == pytest.approx(2 + 8512 / 9000)
    # stopped after epoch 1 (never scored on all): 1 + (1/3) * 1000 / 3000 = 1 + 1/9
    assert trial_compute(1, 1, train_images=3000, val_images=6000, rung_images=1000,
                         full_evaluations=0) == pytest.approx(1 + 1 / 9)
    # a subset larger than the split is the split; no rung_images: every score on all, as before
    assert trial_compute(2, 2, train_images=3000, val_images=600, rung_images=1000, full_evaluations=1) == \
        trial_compute(2, 2, train_images=3000, val_images=600) == pytest.approx(2 + 2 * 600 / 9000)
    with pytest.raises(UserError, match="--rung-val-images"):
        check_config(SearchConfig(rung_val_images=-1))


def test_spent_compute_prices_rung_scores_on_the_subset():
    from autokd.search.tune import OptunaSearcher, Tally

    data = SimpleNamespace(train_y=[0] * 3000, val_y=[0] * 6000)
    session = SimpleNamespace(plan=SimpleNamespace(data=data), cfg=SearchConfig(compute=20, rung_val_images=1000),
                              study=optuna.create_study(directions=["maximize", "minimize"]))
    s = OptunaSearcher(session, Tally())
    stopped, done = s.study.ask(), s.study.ask()
    for trial, scores in ((stopped, {"0": 0.4, "1": 0.5}), (done, {"1": 0.5, "2": 0.6})):
        trial.set_user_attr("candidate", {"epochs": 2})
        trial.set_user_attr("epoch_val_accuracy", scores)
        s._spend(str(trial.number), trial)
    # stopped at its rung 1 (inherited): 1 + (1/3) * (2 * 1000 + 512) / 3000 = 1 + 2512 / 9000
    assert stopped.user_attrs["compute"] == pytest.approx(1 + 2512 / 9000)
    # scratch, both epochs: 2 + (1/3) * (1000 + 6000) / 3000 = 2 + 7000 / 9000
    assert done.user_attrs["compute"] == pytest.approx(2 + 7000 / 9000)


def test_fit_scores_epochs_before_the_last_on_the_subset(monkeypatch):
    import torch

    from autokd import train
    from autokd.data import DataSplits

    seen = []
    monkeypatch.setattr(train, "evaluate", lambda model, x, y: seen.append(len(y)) or 0.5)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8, generator=g), torch.randint(0, 3, (40,), generator=g)
    data = DataSplits(name="toy", num_classes=3, in_channels=1, image_size=(8, 8), train_x=x[:20], train_y=y[:20],
                      val_x=x[20:], val_y=y[20:], test_x=x[20:], test_y=y[20:], augment="none", source="test")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    train.fit(model, data, train.TrainConfig(epochs=3, seed=0), rung_val_images=7)
    assert seen == [7, 7, 20]  # epochs 1 and 2 on the first 7 validation images, the last on all 20
    seen.clear()
    train.fit(model, data, train.TrainConfig(epochs=2, seed=0))
    assert seen == [20, 20]


def test_warm_starts_fit_in_half_the_compute():
    """cpu_joint.yaml at --compute 20, 2 epochs, 3,000 / 6,000 images, rungs on 1,000: each inherited
    warm start costs 2 + 8512 / 9000 = 2.946, so three (8.84) fit in 10 (Torch-Pruning's recipe on labels
    and with KD, then the teacher pruned with KD) and a fourth would make 11.8 > 10; without --compute
    all ten are enqueued."""
    from pathlib import Path

    from autokd.search.driver import warm_starts_within

    space = load_space(str(Path(__file__).resolve().parents[1] / "benchmarks" / "spaces" / "cpu_joint.yaml"))
    data = SimpleNamespace(train_y=[0] * 3000, val_y=[0] * 6000)
    plan = SimpleNamespace(space=space, data=data, cfg=SearchConfig(compute=20, epochs=2))
    assert warm_starts_within(plan) == ["torch-pruning", "torch-pruning-kd", "teacher-pruned-kd"]
    plan.cfg = SearchConfig(compute=1, epochs=2)
    assert warm_starts_within(plan) == ["torch-pruning"]  # always the first
    plan.cfg = SearchConfig(epochs=2)
    assert warm_starts_within(plan) == list(space.warm_start) and len(space.warm_start) == 10


def test_a_trial_stopped_at_rung_one_after_its_epoch_zero_keeps_both_scores():
    """Tune calls the searcher's on_trial_result for every result but a scheduler STOP, which goes to
    on_trial_complete only (ray.tune.execution.tune_controller). An inherited student scored at epoch 0
    (0.80) and stopped at rung 1 (0.82) spent one epoch and two rung scores: its record says so, not
    epoch 0's. 1 + (1/3) * (2 * 600 + 512) / 3000 = 1 + 1712 / 9000, as in the test above."""
    s = _searcher(compute=10)
    trial = s.study.ask()
    s.live["t"], s.committed["t"] = trial, 3.0
    s.on_trial_result("t", {"epoch": 0, "val_accuracy": 0.80, "macs": 100})
    s.stopped.add("t")
    s.on_trial_complete("t", {"epoch": 1, "val_accuracy": 0.82, "macs": 100})
    assert trial.user_attrs["epoch_val_accuracy"] == {"0": 0.80, "1": 0.82}
    assert trial.user_attrs["stopped_at_epoch"] == 1 and trial.user_attrs["val_accuracy"] == 0.82
    assert trial.user_attrs["compute"] == pytest.approx(1 + 1712 / 9000)
    assert s.tally.stopped == 1


def test_scores_before_the_last_pruning_step_are_not_ranked():
    """A student pruned during training reports its unpruned self at epochs 0 and 1 (``pending``):
    no rung ranks those scores (continue, no row), the Optuna trial lists them in unranked_epochs,
    and a resumed search's rung table leaves them out. The first score at its final shape is ranked."""
    from ray.tune.schedulers import TrialScheduler

    from autokd.search.driver import _preload_rungs
    from autokd.search.tune import ParetoScheduler

    s = _searcher(compute=10)
    trial = s.study.ask()
    s.live["t"] = trial
    stopper = make_stopper("ladder", epochs=4)  # rungs 0, 1, 3
    scheduler = ParetoScheduler(stopper, s)
    tune_trial = SimpleNamespace(trial_id="t", config={"trial_number": trial.number, "candidate": {"init": "teacher"},
                                                       "rung_group": "teacher"})
    for epoch in (0, 1):
        result = {"epoch": epoch, "val_accuracy": 0.88, "macs": 300, "pending": True}
        assert scheduler.on_trial_result(None, tune_trial, result) == TrialScheduler.CONTINUE
        s.on_trial_result("t", result)
    assert stopper.ladders == {} and "t" not in s.promoted
    result = {"epoch": 3, "val_accuracy": 0.70, "macs": 100, "pending": False}
    assert scheduler.on_trial_result(None, tune_trial, result) == TrialScheduler.CONTINUE
    assert stopper.ladders["teacher"].table == {3: {trial.number: (0.70, 100)}}
    s.on_trial_result("t", result)
    assert trial.user_attrs["unranked_epochs"] == [0, 1]
    trial.set_user_attr("macs", 100)
    trial.set_user_attr("candidate", {"init": "teacher"})
    trial.set_user_attr("target_macs", 100)
    s.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    resumed = make_stopper("ladder", epochs=4)
    def budget(macs: int) -> SimpleNamespace:  # a plan with only a MAC budget of `macs`, and the real group rule
        from autokd.search.prepare import Plan

        plan = SimpleNamespace(budget=SimpleNamespace(macs=macs), latency=None)
        plan.at_budget = lambda target_macs, target_ms: Plan.at_budget(plan, target_macs, target_ms)
        plan.rung_group = lambda init, target_macs, target_ms: Plan.rung_group(plan, init, target_macs, target_ms)
        return plan

    _preload_rungs(s.study, resumed, budget(200))
    assert resumed.ladders["teacher"].table == {3: {trial.number: (0.70, 100)}}
    at_budget = make_stopper("ladder", epochs=4)  # projected onto a budget of 100: the group the live search used
    _preload_rungs(s.study, at_budget, budget(100))
    assert set(at_budget.ladders) == {"teacher@budget"}
