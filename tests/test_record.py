"""The study's record: one module owns the keys, old studies open, and a trial replays through the API."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import optuna
import pytest

from autokd.candidate import Candidate
from autokd.measure import count_macs
from autokd.models import channel_plan, create_model
from autokd.pareto import pareto_info
from autokd.price import TeacherShape, student_ratios
from autokd.prune import prune_model
from autokd.search import store
from autokd.search.record import RayReport, StudyRecord, TrialRecord

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "studies" / "record-v1"
SHAPE = (1, 8, 8)  # digits


@pytest.fixture
def old_study(tmp_path, monkeypatch):
    """The version-1 study, copied where autokd looks for studies."""
    monkeypatch.setenv("AUTOKD_STUDIES", str(tmp_path / "studies"))
    shutil.copytree(FIXTURE, tmp_path / "studies" / "old-v0")
    return store.load("old-v0")


def test_every_user_attrs_key_is_declared_in_the_record_module_only():
    pattern = re.compile(r"\.user_attrs\b|set_user_attr")
    found = [f"{p.relative_to(ROOT)}:{i}" for folder in ("autokd", "benchmarks") for p in (ROOT / folder).rglob("*.py")
             if p.name != "record.py" or p.parent.name != "search"
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_a_version_1_study_opens_through_the_record(old_study):
    rec = StudyRecord.of(old_study)
    assert (rec.record_version, rec.teacher, rec.dataset, rec.macs_budget) == (1, "resnet20", "digits", 1013196)
    info = pareto_info(old_study, importances=False)
    # trial 1 (84.03 %, 635,712 MACs) has more accuracy at fewer MACs than trial 0 (68.75 %, 658,310)
    assert [p["number"] for p in info.front] == [1] and [p["number"] for p in info.dominated] == [0]
    assert info.front[0]["macs"] == 635712 and info.dominated[0]["val_accuracy"] == 0.6875
    assert info.front[0]["plan"] is None  # version 1 recorded no plan
    trials = {t.number: TrialRecord.of(t) for t in old_study.trials}
    assert trials[0].candidate["prune"].keys() == {"layer2", "*"} and trials[0].target_macs == 672220
    assert trials[0].epoch_val_accuracy == {"1": 0.6875} and trials[0].compute > 1.0


def test_a_version_1_candidate_with_a_star_replays_through_prune_model(old_study):
    """prune_model rejects "*"; the per-layer ratios the price module resolves from the candidate it
    takes, and the student pruned with them costs what the study recorded."""
    t0 = next(t for t in old_study.trials if t.number == 0)
    rec, study = TrialRecord.of(t0), StudyRecord.of(old_study)
    cand = Candidate(**rec.candidate)
    teacher = TeacherShape(study.teacher_arch, study.teacher_macs, {}, 1.0, study.num_classes, tuple(study.input_shape))
    ratios = student_ratios(cand, teacher)
    assert "*" not in ratios and ratios["layer2.0.conv1"] == 0.95 and ratios["layer1.0.conv1"] == 0.140625
    model = create_model(cand.student, num_classes=10, in_channels=1, width=cand.width)
    prune_model(model, ratios, input_shape=SHAPE)
    assert count_macs(model, SHAPE) == rec.macs == 658310


def test_a_report_keeps_the_fields_that_are_set_and_reads_back_from_a_tune_result():
    epoch = RayReport(epoch=2, val_accuracy=0.5, macs=100, pending=True)
    assert epoch.as_dict() == {"epoch": 2, "val_accuracy": 0.5, "macs": 100, "pending": True}  # flags only when raised
    result = {**epoch.as_dict(), "training_iteration": 3, "trial_id": "abc"}  # Tune's own keys are left out
    assert RayReport.of(result) == epoch and RayReport.of(result).scored
    failed = RayReport.of({"final": True, "failure": "out of memory"})
    assert failed.failure == "out of memory" and not failed.scored and RayReport.of(None) == RayReport()


def test_writing_an_undeclared_key_is_refused():
    from autokd.search import record

    study = optuna.create_study()
    trial = study.ask()
    with pytest.raises(KeyError, match="colour"):
        record.write(trial, colour="red")
    record.write(trial, failure="x", retries=2)
    assert TrialRecord.of(trial).failure == "x" and TrialRecord.of(trial).retries == 2


# ------------------------------------------------------------------ sampling, without Ray
def _plan(tmp_path, monkeypatch):
    from autokd.search import SearchConfig
    from autokd.search.prepare import prepare

    monkeypatch.setenv("AUTOKD_STUDIES", str(tmp_path / "studies"))
    return prepare(SearchConfig(teacher="resnet20", dataset="digits", flops_budget="40%", epochs=1, seed=0,
                                space=str(FIXTURE / "space.yaml"), study="sampling", reference=False))


def _samples(plan, n: int):
    from autokd.search.sampling import sample_candidate

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.TPESampler(seed=3))
    out = []
    for _ in range(n):
        trial = study.ask(plan.space.distributions)
        out.append(sample_candidate(trial, plan))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return out


def test_sampling_is_pure_seeded_and_its_plan_and_ratios_replay_through_the_public_api(tmp_path, monkeypatch):
    plan = _plan(tmp_path, monkeypatch)
    first, again = _samples(plan, 4), _samples(plan, 4)
    assert [s.record() for s in first] == [s.record() for s in again]  # same seed, same samples
    for s in first:
        c = s.candidate
        assert s.target_macs is not None and s.shape is not None  # the space projects (budget/share)
        assert s.rejected == (s.why_not is not None or s.macs > plan.budget.macs)
        if s.why_not:
            continue
        assert s.macs <= s.target_macs and "*" not in s.prune_ratios
        rebuilt = create_model(c.student, num_classes=10, in_channels=1, plan=s.plan)  # the plan, as data
        assert count_macs(rebuilt, SHAPE) == s.macs
        model = create_model(c.student, num_classes=10, in_channels=1, width=c.width)
        prune_model(model, s.prune_ratios, input_shape=SHAPE)  # the ratios, through prune_model
        assert channel_plan(model) == s.plan and count_macs(model, SHAPE) == s.macs
    assert any(not s.rejected for s in first)
