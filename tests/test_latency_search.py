"""A search on latency: the latency budget's forms, the command line's refusals (one line, exit 2,
nothing written or trained), projection onto a latency target on a hand-made predictor, the front
and ``--under`` in ms, and a latency search killed with SIGKILL that resumes with its objective and
its predictor intact, and refuses another machine's."""
from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
from fault_tools import World, integrity, poll, reap, search_args, train_teacher, trained, trial_rows
from typer.testing import CliRunner

from autokd.candidate import Candidate
from autokd.cli import app
from autokd.errors import UserError
from autokd.latency import Calibration, Coefficients, plan_latency_ms, save_calibration
from autokd.pareto import ChooseError, choose
from autokd.price import predict_macs, predict_student
from autokd.search.config import SearchConfig
from autokd.search.budget import parse_latency_budget, project_candidate, teacher_shape
from autokd.timing import Setting, machine

runner = CliRunner()
DIGITS = Setting(input_shape=(1, 8, 8))
CONV_KINDS = ("conv3x3s1", "conv3x3s2", "conv1x1s2")
OTHER_KINDS = ("add", "linear", "mean", "native_batch_norm", "relu")


def hand_made(setting: Setting = DIGITS, per_call: float = 0.002, per_mmac: float = 1.0) -> Calibration:
    """Every op kind of the CIFAR ResNets priced by hand: ``per_call`` ms a call, convolutions and the
    classifier ``per_mmac`` ms a million MACs (blocked or not alike), on this machine."""
    ops = {k: Coefficients(per_call=per_call, per_mmac=per_mmac) for c in CONV_KINDS for k in (c, c + "b")}
    ops.update({k: Coefficients(per_call=per_call, per_mmac=per_mmac if k == "linear" else 0.0) for k in OTHER_KINDS})
    return Calibration(setting, machine(setting), 0.0, ops)


def _one_line_exit_2(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


# ------------------------------------------------------------------ the budget's forms
def test_a_latency_budget_in_ms_or_as_a_share_of_the_teacher():
    assert parse_latency_budget("1.2ms", 0.8).ms == pytest.approx(1.2)
    assert parse_latency_budget("1.2ms", 0.8).share_of_teacher == pytest.approx(1.5)
    assert parse_latency_budget("50%", 0.8).ms == pytest.approx(0.4)
    assert parse_latency_budget("0.5", 0.8).ms == pytest.approx(0.4)
    assert parse_latency_budget(" 100 % ", 0.8).ms == pytest.approx(0.8)
    for bad, needle in (("0ms", "more than 0"), ("fast", "not a latency budget"), ("-1ms", "not a latency budget"),
                        ("5", "ambiguous"), ("150%", "(0%, 100%]"), ("1.2 s", "not a latency budget")):
        with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                           .replace("]", r"\]")):
            parse_latency_budget(bad, 0.8)


# ------------------------------------------------------------------ bad input: one line, nothing written
@pytest.mark.parametrize("args, needle", [
    (["--latency-budget", "0ms"], "must be more than 0"),
    (["--latency-budget", "fast"], "is not a latency budget"),
    (["--cost", "latency", "--latency-runtime", "tflite"], "--latency-runtime 'tflite'"),
    (["--cost", "speed"], "--cost 'speed'"),
    (["--cost", "latency", "--latency-threads", "0"], "--latency-threads must be at least 1"),
    (["--cost", "latency"], "run `autokd latency calibrate --runtime onnxruntime --threads 1 --batch 1 --input 1x8x8`"),
    (["--latency-budget", "50%"], "no latency calibration"),
])
def test_bad_latency_input_is_one_line_exit_2_and_nothing_is_written(tmp_path, monkeypatch, args, needle):
    monkeypatch.setenv("AUTOKD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AUTOKD_STUDIES", str(tmp_path / "studies"))
    line = _one_line_exit_2(runner.invoke(app, ["search", "--teacher", "resnet20", "--dataset", "digits", *args]))
    assert needle in line
    assert not (tmp_path / "studies").exists() and not (tmp_path / "home" / "teachers").exists()


def test_a_latency_budget_under_every_candidate_is_refused_before_anything_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOKD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AUTOKD_STUDIES", str(tmp_path / "studies"))
    save_calibration(hand_made(per_call=0.01))   # 0.01 ms per op call: a resnet20 costs well over 1 % of itself
    line = _one_line_exit_2(runner.invoke(app, ["search", "--teacher", "resnet20", "--dataset", "digits",
                                                "--latency-budget", "1%"]))
    assert "fits --latency-budget 1%" in line and "the cheapest is predicted at" in line
    assert not (tmp_path / "studies").exists() and not (tmp_path / "home" / "teachers").exists()


# ------------------------------------------------------------------ projection on the predictor
def _inherited(shape: dict[str, float]) -> tuple[Candidate, object]:
    teacher = teacher_shape("resnet20", (1, 8, 8), 10)
    return Candidate(student="resnet20", init="teacher", prune=shape), teacher


@pytest.mark.parametrize("shape", [{"layer1": 0.2, "layer2": 0.6, "layer3": 0.9}, {"*": 0.9}])
def test_a_predictor_of_macs_alone_projects_exactly_as_the_macs_budget(shape):
    """With no per-call price, predicted ms = MACs / 1e6 (1 ms per million MACs): projecting onto t ms
    must give the very ratios that projecting onto t million MACs gives."""
    cal = hand_made(per_call=0.0, per_mmac=1.0)
    cand, teacher = _inherited(shape)

    def price(c: Candidate) -> float:
        return plan_latency_ms(cal, c.student, predict_student(c, teacher)[0], num_classes=10)

    full = predict_macs(replace(cand, prune={}), teacher)
    for share in (0.3, 0.55, 0.8):
        by_macs, _, _ = project_candidate(cand, teacher, int(share * full))
        by_ms, proj, _ = project_candidate(cand, teacher, int(share * full) / 1e6, price=price)
        assert by_ms.prune == by_macs.prune
        assert price(by_ms) <= int(share * full) / 1e6 < proj.over_macs


def test_projection_onto_ms_lands_under_its_target_with_per_call_prices():
    cal = hand_made(per_call=0.002, per_mmac=1.0)
    cand, teacher = _inherited({"layer1": 0.5, "layer2": 0.5, "layer3": 0.9})

    def price(c: Candidate) -> float:
        return plan_latency_ms(cal, c.student, predict_student(c, teacher)[0], num_classes=10)

    full = price(replace(cand, prune={}))
    floor = 0.002 * 70  # at least every op call of resnet20's graph: no pruning removes a call
    target = floor + 0.5 * (full - floor)
    projected, proj, _ = project_candidate(cand, teacher, target, price=price)
    assert price(projected) <= target < proj.over_macs and proj.scale > 0
    with pytest.raises(UserError, match=r"ms is below the cheapest"):
        project_candidate(cand, teacher, 0.01, price=price)


# ------------------------------------------------------------------ choosing in ms
def test_under_in_ms_picks_the_most_accurate_point_predicted_at_or_under_it():
    pts = [{"number": n, "val_accuracy": a, "macs": m, "latency_ms": ms}
           for n, a, m, ms in ((0, 0.90, 100, 0.30), (1, 0.95, 200, 0.50), (2, 0.97, 150, 0.70))]
    info = SimpleNamespace(study="s", completed=pts, teacher={"macs": 1000}, budget_macs=None, budget_ms=None,
                           counts=lambda: {"stopped": 0}, rejected=[], failed=[])
    assert choose(info, under="0.5ms")["number"] == 1
    assert choose(info, under="0.4ms")["number"] == 0
    with pytest.raises(ChooseError, match="the fastest, trial 0, at 0.300 ms"):
        choose(info, under="0.2ms")
    no_ms = SimpleNamespace(**{**vars(info), "completed": [{**p, "latency_ms": None} for p in pts]})
    with pytest.raises(ChooseError, match="searched on MACs"):
        choose(no_ms, under="0.5ms")


# ------------------------------------------------------------------ killed, resumed, another machine
@pytest.mark.faults
@pytest.mark.slow
def test_a_latency_search_resumes_after_sigkill_with_its_objective_and_predictor(tmp_path):
    world = World(tmp_path, home=train_teacher(tmp_path / "home"))
    try:
        _kill_resume_and_refuse(world)
    finally:
        assert not world.cleanup(), "processes left behind"


def _kill_resume_and_refuse(world: World) -> None:
    save_calibration(hand_made(), world.home / "latency" / f"{DIGITS.stem}.json")
    args = search_args(world.space, "lat", trials=2, epochs=1, extra=("--cost", "latency"))
    cli = world.cli(*args)
    poll(lambda: trained(trial_rows(world.db("lat"))), 240, what="a trained trial")
    cli.kill()
    assert not reap(world.tag, timeout=20)
    assert integrity(world.db("lat")) == "ok"
    saved = world.studies / "lat" / "latency_calibration.json"
    kept = saved.read_text()
    # the machine is recalibrated meanwhile: the study keeps pricing with the predictor it started with
    save_calibration(hand_made(per_call=0.02), world.home / "latency" / f"{DIGITS.stem}.json")

    again = world.cli(*args)
    assert again.wait(300) == 0, again.output
    assert saved.read_text() == kept
    rows = trial_rows(world.db("lat"))
    done = {n: r for n, r in trained(rows).items() if r["state"] == "COMPLETE"}
    assert len(trained(rows)) == 2 and done
    cal = Calibration.from_dict(json.loads(kept))
    for r in done.values():
        attrs = r["attrs"]
        assert r["values"][1] == pytest.approx(attrs["latency_ms"])
        plan = attrs["plan"]
        assert attrs["latency_ms"] == pytest.approx(plan_latency_ms(cal, "resnet20", plan, num_classes=10))
        assert attrs["measured_latency_ms"] > 0 and attrs["measured_latency_iqr_ms"] >= 0
    import optuna

    study = optuna.load_study(study_name="lat", storage=f"sqlite:///{world.db('lat')}")
    assert study.metric_names == ["val_accuracy", "latency_ms"]
    assert study.user_attrs["cost"] == "latency" and study.user_attrs["latency"]["setting"] == DIGITS.as_dict()

    # the front on either axis and the refusal, in this process (the same code the commands run)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOKD_STUDIES", str(world.studies))
        mp.setenv("AUTOKD_HOME", str(world.home))
        mp.chdir(world.tmp)
        shown = runner.invoke(app, ["pareto", "lat", "--no-html"], env={"COLUMNS": "250"})
        assert shown.exit_code == 0 and "predicted ms" in shown.output, shown.output
        on_macs = runner.invoke(app, ["pareto", "lat", "--no-html", "--cost", "macs"], env={"COLUMNS": "250"})
        assert on_macs.exit_code == 0 and "predicted ms" not in on_macs.output, on_macs.output

        # the study's predictor measured elsewhere: refused in one line, nothing trained
        foreign = json.loads(kept)
        foreign["machine"]["cpu"] = "another processor"
        saved.write_text(json.dumps(foreign))
        refused = runner.invoke(app, search_args(world.space, "lat", trials=3, epochs=1, extra=("--cost", "latency")))
        assert "measured on another machine" in _one_line_exit_2(refused)
    assert len(trained(trial_rows(world.db("lat")))) == 2


def test_the_cost_and_the_latency_options_are_kept_per_study():
    from autokd.search.prepare import RESUME_KEYS

    assert {"cost", "latency_budget", "latency_runtime", "latency_threads", "latency_batch"} <= set(RESUME_KEYS)
    assert replace(SearchConfig(), latency_budget="1ms").objective == "latency"
    assert SearchConfig(cost="latency").objective == "latency" and SearchConfig().objective == "macs"


# ------------------------------------------------------------------ a MACs study's front on latency
class HandPricer:
    """Prices trial n at MS[n] ms (a stand-in for this machine's predictor); the teacher at 1 ms."""

    MS = {0: 0.5, 1: 0.3, 2: 0.6, 3: 1.0, 4: 0.4, 5: 0.2, 7: 0.9}

    def __call__(self, point: dict) -> float:
        return self.MS[point["number"]]

    def record(self, teacher: dict) -> dict:
        return {"label": "by hand", "teacher_ms": 1.0}


def test_a_macs_study_on_the_latency_axis_by_hand():
    from test_pareto import hand_study

    from autokd.pareto import pareto_info

    study = hand_study("priced")
    on_macs = pareto_info(study, {"budget": {"macs_budget": 100}}, importances=False)
    assert [p["number"] for p in on_macs.front] == [0, 2, 7]
    with pytest.raises(UserError, match="searched on MACs"):
        pareto_info(study, {}, importances=False, cost="latency")
    info = pareto_info(study, {"budget": {"macs_budget": 100}}, importances=False, cost="latency", price=HandPricer())
    # completed (ms, acc): 0 (0.5, .80), 1 (0.3, .70), 2 (0.6, .90), 5 (0.2, .85), 7 (0.9, .95): 5 dominates 0 and 1
    assert [p["number"] for p in info.front] == [5, 2, 7] and info.cost == "latency"
    # reference: the teacher's 1 ms; (0.6 - 0.2) .85 + (0.9 - 0.6) .90 + (1.0 - 0.9) .95 = 0.705
    assert info.hypervolume == pytest.approx(0.705)
    assert choose(info, under="0.65ms")["number"] == 2 and choose(info, under="0.25ms")["number"] == 5


GLOBAL_SPACE = """
description: Torch-Pruning's global ranking on a latency budget
teacher: resnet20
params:
  budget/share: {name: FloatDistribution, attributes: {low: 0.01, high: 1.0, step: null, log: false}}
fixed:
  student/arch: resnet20
  student/init: teacher
  prune/method: global-l2
"""


def test_a_global_ranking_target_it_cannot_reach_is_rejected_before_training(tmp_path, monkeypatch):
    """On a latency budget a global-ranking candidate is projected along its shape and prunes to the MACs
    of the plan found; a plan cheaper than that ranking can reach (every layer at most 90 % cut) is a
    sample rejected with its reason, never a trial that fails after it trained."""
    import optuna

    from autokd.candidate import GLOBAL_MAX_LAYER
    from autokd.search.prepare import prepare
    from autokd.search.sampling import sample_candidate

    monkeypatch.setenv("AUTOKD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AUTOKD_STUDIES", str(tmp_path / "studies"))
    save_calibration(hand_made(per_call=0.002, per_mmac=1.0))
    (tmp_path / "global.yaml").write_text(GLOBAL_SPACE)
    plan = prepare(SearchConfig(teacher="resnet20", dataset="digits", space=str(tmp_path / "global.yaml"),
                                latency_budget="100%", warm_start=False))
    floor = predict_macs(Candidate(student="resnet20", init="teacher", prune={"*": GLOBAL_MAX_LAYER}), plan.teacher)
    study = optuna.create_study(directions=["maximize", "minimize"])
    seen = []
    for share in [0.045 + 0.003 * i for i in range(10)] + [0.5, 1.0]:
        study.enqueue_trial({"budget/share": share})
        sample = sample_candidate(study.ask(plan.space.distributions), plan)
        seen.append(sample)
        if not sample.rejected:
            assert sample.candidate.target_macs >= floor and sample.latency_ms is not None
    why = [s.why_not for s in seen if s.why_not]
    assert any("below the cheapest global ranking reaches" in w for w in why), why
    assert not seen[-1].rejected and not seen[-2].rejected
