"""autokd.export on a tiny finished study written by hand: digits, teacher convverytiny (2 epochs),
one completed trial with its weights on disk, one stopped, one rejected and one failed trial."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState, create_trial

from autokd import count_macs, load_student
from autokd.errors import UserError

STUDY = "tiny"
SEED, TEACHER_EPOCHS = 0, 2
CANDIDATE = {"student": "convverytiny", "width": 0.5, "prune": {"block2": 0.5}, "prune_method": "l1",
             "prune_at": "start", "lambdas": {"t3->s3": 1.0, "t2->s2": 0.5}, "kd_loss": "vid", "beta": 0.5,
             "temperature": 4.0, "schedule": "one-stage", "epochs": 1, "lr": 0.05, "seed": 7}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(studies root, AUTOKD_HOME): the study, its config.json and the cached teacher."""
    from autokd.search import store as studies
    from autokd.bundle import write_json
    from autokd.data import load_dataset
    from autokd.teacher import get_teacher
    from autokd.train import TrainConfig
    from autokd.trial import Candidate, TrialContext, run_trial

    root, home = tmp_path_factory.mktemp("studies"), tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOKD_STUDIES", str(root))
        mp.setenv("AUTOKD_HOME", str(home))
        data = load_dataset("digits", seed=SEED)
        teacher, tcard = get_teacher("convverytiny", data, TrainConfig(epochs=TEACHER_EPOCHS, seed=SEED))
        folder = studies.study_dir(STUDY)
        folder.mkdir(parents=True)
        weights = folder / "trials" / "0000"
        result = run_trial(Candidate.from_dict(CANDIDATE),
                           TrialContext(teacher=teacher, data=data, teacher_card=tcard, out_dir=weights))
        write_json(folder / "config.json", {
            "search": {"dataset": "digits", "seed": SEED, "teacher_epochs": TEACHER_EPOCHS, "teacher": "convverytiny",
                       "train_subset": None, "epochs": 1},
            "teacher": {"spec": "convverytiny", "arch": "convverytiny", "macs": tcard["macs"],
                        "val_accuracy": tcard["val_accuracy"], "test_accuracy": tcard["test_accuracy"]},
            "budget": {"macs_budget": tcard["macs"] // 2, "budget_text": "50%"}})
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        st = optuna.create_study(study_name=STUDY, storage=studies.storage_url(STUDY),
                                 directions=["maximize", "minimize"])
        st.set_user_attr("macs_budget", tcard["macs"] // 2)
        st.set_user_attr("teacher_macs", tcard["macs"])
        common = {"candidate": CANDIDATE, "macs": result.macs}
        st.add_trial(create_trial(state=TrialState.COMPLETE, values=[result.val_accuracy, result.macs],
                                  user_attrs={**common, "params_count": result.params, "weights": str(weights)}))
        st.add_trial(create_trial(state=TrialState.FAIL, user_attrs={**common, "rejected": True,
                                                                     "macs": tcard["macs"]}))
        st.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={
            **common, "candidate": {**CANDIDATE, "seed": 9}, "val_accuracy": 0.1, "stopped_at_epoch": 1}))
        st.add_trial(create_trial(state=TrialState.FAIL, user_attrs={**common, "failure": "out of memory"}))
    return root, home, result


@pytest.fixture
def env(world, monkeypatch, tmp_path):
    root, home, _ = world
    monkeypatch.setenv("AUTOKD_STUDIES", str(root))
    monkeypatch.setenv("AUTOKD_HOME", str(home))  # the teacher cached by `world` is found, not retrained
    monkeypatch.chdir(tmp_path)
    return tmp_path


def same_logits(folder: Path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates torch.jit.load
        want = load_student(folder)(x)
        scripted = torch.jit.load(str(folder / "model.ts"))(x)
    onnx = ort.InferenceSession(str(folder / "model.onnx")).run(None, {"images": x.numpy()})[0]
    assert torch.allclose(scripted, want, atol=1e-4)
    assert np.allclose(onnx, want.numpy(), atol=1e-4)
    return want


def test_export_best_reuses_the_trial_weights(env, world, digits):
    from autokd.export import export_student

    root, _, result = world
    folder = export_student(STUDY, best=True)
    assert folder == Path("students") / "tiny-t0"
    names = {p.name for p in folder.iterdir()}
    assert names == {"channel_plan.json", "model.safetensors", "model.ts", "model.onnx", "card.json", "card.md"}
    x = digits.val_x[:16]  # 16, not the 8 the export checked: the batch axis is dynamic
    logits = same_logits(folder, x)
    with torch.no_grad():
        assert torch.equal(logits, load_student(root / STUDY / "trials" / "0000")(x))
    card = json.loads((folder / "card.json").read_text())
    model = load_student(folder)
    assert card["macs"] == count_macs(model, (1, 8, 8)) == result.macs and card["flops"] == 2 * card["macs"]
    assert card["trial"] == 0 and card["weights"]["source"] == "the trial's own weights"
    assert card["val_accuracy"] == pytest.approx(result.val_accuracy)
    assert 0.0 <= card["test_accuracy"] <= 1.0 and card["normalization"]["mean"] == list(digits.mean)
    assert card["cpu_latency_ms"]["student"] > 0 and card["cpu_latency_ms"]["teacher"] > 0
    assert max(card["format_max_abs_diff"].values()) <= 1e-4
    assert card["candidate"]["prune"] == {"block2": 0.5} and "FLOPs" in (folder / "card.md").read_text()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_export_stopped_trial_trains_it_again(env, digits):
    from autokd.export import export_student

    folder = export_student(STUDY, trial=2, out=env / "t2")
    card = json.loads((folder / "card.json").read_text())
    assert card["trial"] == 2 and card["trial_state"] == "stopped"
    assert card["weights"]["source"].startswith("trained again") and card["candidate"]["seed"] == 9
    same_logits(folder, digits.val_x[:8])
    assert sorted(p.name for p in env.iterdir()) == ["t2"]  # the retraining folder is gone


@pytest.mark.parametrize("study, kwargs, words", [
    ("nosuch", {"best": True}, "no study 'nosuch'"),
    (STUDY, {"trial": 99}, "no trial 99"),
    (STUDY, {"trial": 1}, "rejected"),
    (STUDY, {"trial": 3}, "out of memory"),
    (STUDY, {"under": "1%"}, "no completed trial"),
    (STUDY, {"best": True, "trial": 0}, "choose one of"),
])
def test_export_errors_write_nothing(env, study, kwargs, words):
    from autokd.export import export_student

    with pytest.raises(UserError) as e:
        export_student(study, out=env / "out" / "x", **kwargs)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert list(env.iterdir()) == []


def test_export_refuses_to_replace_a_foreign_folder(env):
    from autokd.export import export_student

    (env / "mine").mkdir()
    (env / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not an autokd model folder"):
        export_student(STUDY, best=True, out=env / "mine")
    assert (env / "mine" / "notes.txt").read_text() == "keep me"


def test_cli_commands(env):
    import typer
    from typer.testing import CliRunner

    from autokd.cli.pareto import export, pareto

    app = typer.Typer()
    app.command()(pareto)
    app.command()(export)
    runner = CliRunner()
    r = runner.invoke(app, ["export", "nosuch"])
    assert r.exit_code == 2 and "no study" in r.output
    r = runner.invoke(app, ["export", STUDY, "--trial", "1", "--out", str(env / "x")])
    assert r.exit_code == 2 and "rejected" in r.output and not (env / "x").exists()
    r = runner.invoke(app, ["export", STUDY, "--best", "--under", "30%"])
    assert r.exit_code == 2 and "choose one of" in r.output
    r = runner.invoke(app, ["pareto", STUDY, "--json", "--no-html"])
    assert r.exit_code == 0, r.output
    assert [p["number"] for p in json.loads(r.stdout)["front"]] == [0]
    r = runner.invoke(app, ["pareto", STUDY, "--out", str(env / "d.html")])
    assert r.exit_code == 0 and "Pareto front of tiny" in r.output and (env / "d.html").exists()
    r = runner.invoke(app, ["pareto", "nosuch"])
    assert r.exit_code == 2 and not (env / "dashboards").exists()


def test_a_format_mismatch_is_loud_and_leaves_nothing(env, monkeypatch):
    import autokd.export as export_mod

    monkeypatch.setattr(export_mod, "ATOL", -1.0)  # every difference, even 0, is now "too large"
    with pytest.raises(export_mod.ExportMismatch, match="nothing was written"):
        export_mod.export_student(STUDY, best=True, out=env / "new" / "t0")
    assert list(env.iterdir()) == []  # neither the folder, nor its temp sibling, nor the parent


@pytest.mark.parametrize("args,line", [
    (dict(finetune_epochs=-1), "--finetune-epochs must be 0 (no fine-tuning) or more, got -1"),
    (dict(train_subset=0), "--train-subset must be at least 1, got 0"),
])
def test_export_names_the_option_and_value_that_are_wrong(env, args, line):
    from autokd.export import export_student

    with pytest.raises(UserError) as e:
        export_student(STUDY, best=True, out=env / "x", **args)
    assert str(e.value) == line
    assert not (env / "x").exists()


def test_finetune_recipes_say_what_trains():
    """trial: the candidate's own distillation, nothing left to prune; hinton: the logits term alone
    (no feature pair survives), alpha 0.5, T 4, the rest of the candidate unchanged."""
    from autokd.candidate import Candidate
    from dataclasses import replace

    from autokd.export import _feature_pairs_on, finetune_candidate

    c = Candidate(init="teacher", prune={"layer1": 0.5}, prune_steps=3, lambdas={"t1->s1": 0.7}, kd_alpha=0.9,
                  temperature=2.0, beta=0.3, schedule="two-stage", curriculum=True, epochs=2)
    trial = finetune_candidate(c, 8, "trial")
    assert (trial.prune, trial.prune_steps, trial.epochs) == ({}, 1, 8)
    assert (trial.lambdas, trial.kd_alpha, trial.temperature, trial.beta) == ({"t1->s1": 0.7}, 0.9, 2.0, 0.3)
    hinton = finetune_candidate(c, 8, "hinton")
    assert (hinton.pairs, hinton.lambdas, hinton.kd_alpha, hinton.temperature) == ("none", {}, 0.5, 4.0)
    assert (hinton.schedule, hinton.curriculum, hinton.init, hinton.epochs) == ("one-stage", False, "teacher", 8)
    assert _feature_pairs_on(trial) and not _feature_pairs_on(hinton)
    assert not _feature_pairs_on(replace(trial, beta=1.0))  # pairs at weight 1 - beta = 0: Hinton KD alone


def test_unknown_finetune_recipe_is_one_line_before_anything_loads():
    from autokd.errors import UserError
    from autokd.export import export_student

    with pytest.raises(UserError) as e:
        export_student("no-such-study", best=True, finetune_epochs=1, finetune_recipe="fitnet")
    assert str(e.value) == "--finetune-recipe must be one of trial, hinton, got 'fitnet'"


def test_export_fine_tunes_the_chosen_point_on_the_whole_training_split(env, world, digits):
    """--finetune-epochs N: the trial's own weights keep training N epochs on every training image
    (not the search's subset), with the trial's distillation settings; the card says before/after."""
    from autokd.export import export_student

    _, _, result = world
    folder = export_student(STUDY, best=True, out=env / "ft", finetune_epochs=1, finetune_recipe="trial")
    card = json.loads((folder / "card.json").read_text())
    ft = card["finetune"]
    assert ft["epochs"] == 1 and ft["train_images"] == len(digits.train_y)
    assert 0.0 <= ft["test_accuracy_before"] <= 1.0 and ft["test_accuracy_after"] == card["test_accuracy"]
    assert card["macs"] == result.macs  # fine-tuning prunes nothing: the point's cost
    cand = card["candidate"]  # the recipe: the trial's own distillation, at its fine-tuning rate
    assert ft["lr"] == cand["finetune_lr"] and ft["recipe"]["kd_alpha"] == cand["kd_alpha"]
    assert ft["recipe"]["temperature"] == cand["temperature"] and ft["recipe"]["beta"] == cand["beta"]
    assert "fine-tuned 1 epochs" in card["weights"]["source"]  # not "the trial's own weights" alone
    assert "Weights: the trial's own weights, then fine-tuned 1 epochs" in (folder / "card.md").read_text()
    assert ft["recipe"]["name"] == "trial"
    assert f"1 epochs on {len(digits.train_y):,} images at lr" in (folder / "card.md").read_text()
    same_logits(folder, digits.val_x[:16])
    small = export_student(STUDY, best=True, out=env / "ft200", finetune_epochs=1, train_subset=200)
    small_ft = json.loads((small / "card.json").read_text())["finetune"]
    assert small_ft["train_images"] == 200
    # the default recipe: Hinton KD on the logits (alpha 0.5, T 4) at the trial's fine-tuning rate
    assert small_ft["recipe"]["name"] == "hinton" and small_ft["recipe"]["kd_alpha"] == 0.5
    assert small_ft["recipe"]["temperature"] == 4.0 and small_ft["lr"] == cand["finetune_lr"]
