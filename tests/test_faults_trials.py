"""Trials that fail on their own: a diverging trial (NaN loss from an absurd learning rate) in a
real search, and a trial out of memory (CPU allocator error, torch.OutOfMemoryError, MemoryError)
through the worker function and the driver's bookkeeping. Each is recorded FAIL with its reason
and the search goes on to --trials trained trials."""
from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
import torch
from fault_tools import SPACE, World, train_teacher
from optuna.trial import TrialState

from autokd.search import SearchConfig, search
from autokd.search import tune as tune_side  # `autokd.search` the attribute is the function
from autokd.search.tune import OptunaSearcher, Tally, trainable

pytestmark = pytest.mark.faults

@pytest.fixture(scope="module")
def teacher_home(tmp_path_factory):
    return train_teacher(tmp_path_factory.mktemp("home"))


@pytest.mark.slow
def test_a_diverging_trial_is_recorded_failed_with_its_reason_and_the_search_goes_on(
        tmp_path, monkeypatch, teacher_home):
    world = World(tmp_path, home=teacher_home)
    space = tmp_path / "diverging.yaml"
    # one more choice in the space: a learning rate of 1e6 diverges within the first steps
    space.write_text(SPACE.replace("fixed:", "  train/lr: {name: CategoricalDistribution, attributes: "
                                             "{choices: [0.05, 1.0e+6]}}\nfixed:"))
    for key, value in world.env().items():
        monkeypatch.setenv(key, value)
    lines: list[str] = []
    try:
        study = search(SearchConfig(teacher="resnet20", teacher_epochs=2, dataset="digits", space=str(space),
                                    study="nan", trials=2, parallel=2, epochs=1, sampler="random", seed=6,
                                    reference=False),
                       printer=lines.append)
    finally:
        left = world.cleanup()
    assert not left
    diverged = [t for t in study.trials if str(t.user_attrs.get("failure", "")).startswith("diverged:")]
    assert diverged, [(t.state, t.params) for t in study.trials]
    assert all(t.state == TrialState.FAIL and t.params["train/lr"] == 1e6 for t in diverged)
    assert all("nan" in t.user_attrs["failure"] or "inf" in t.user_attrs["failure"] for t in diverged)
    assert any(f"trial {t.number}: failed: diverged" in line for t in diverged for line in lines), lines
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 2 and all(t.params["train/lr"] == 0.05 for t in done)


# ------------------------------------------------------------------ out of memory
class _Reports(list):
    def __call__(self, metrics: dict) -> None:
        self.append(metrics)


class _Context:
    def get_node_id(self) -> str:
        return "node-a"


@pytest.mark.parametrize("error,reason", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), "out of memory"),
    (MemoryError(), "out of memory"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                  "you tried to allocate 10000000000000 bytes."), "out of memory: RuntimeError: [enforce fail"),
])
def test_a_trial_out_of_memory_is_recorded_failed_with_the_reason(monkeypatch, error, reason):
    """The worker function turns the error into a final report, and the driver records it FAIL."""
    import ray
    from ray import tune

    from autokd.bundle import plan_of
    from autokd.models import create_model

    reports = _Reports()
    monkeypatch.setattr(tune, "report", reports)
    monkeypatch.setattr(ray, "get_runtime_context", _Context)

    def out_of_memory(candidate, ctx):
        raise error

    monkeypatch.setattr(tune_side, "run_trial", out_of_memory)  # what the worker function calls
    teacher = create_model("resnet20", num_classes=10, in_channels=1)
    blob = (plan_of(teacher), teacher.state_dict())
    trainable({"candidate": {"student": "resnet20"}, "threads": 1}, data=None, teacher_blob=blob)
    assert reports == [{"final": True, "failure": reports[0]["failure"], "node_id": "node-a"}]
    assert reports[0]["failure"].startswith(reason)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    session = SimpleNamespace(study=study, cfg=SearchConfig(), plan=None, folder=None)
    logic = OptunaSearcher(session, Tally())
    logic.live["t1"] = study.ask()
    logic.on_trial_complete("t1", reports[0])
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL and trial.user_attrs["failure"] == reports[0]["failure"]
    assert logic.tally.counts() == {"trained": 0, "done": 0, "stopped": 0, "rejected": 0, "failed": 1}
    assert not logic.live  # the next suggest() asks for a new trial: the search goes on


def test_a_retried_trial_counts_once_at_a_rung():
    """A worker lost after epoch 1 reports epoch 1 again on its retry: one dominator, not two."""
    from autokd.search.stopping import ParetoStopper

    stopper = ParetoStopper(rungs=[1], min_dominators=2)
    assert not stopper.observe(0, 1, 0.90, 100)
    assert not stopper.observe(0, 1, 0.91, 100)   # the retry of trial 0
    assert len(stopper.table[1]) == 1 and stopper.table[1][0].val_accuracy == 0.91
    assert not stopper.observe(1, 1, 0.50, 200)   # dominated by trial 0 only
