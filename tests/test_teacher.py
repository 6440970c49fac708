"""Teachers: `autokd train` reaches a sane accuracy on digits, caches, and reloads without pickles."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from autokd.cli import app
from autokd.teacher import cache_dir
from autokd.train import TrainConfig

runner = CliRunner()


def test_train_resnet20_digits_and_cache(_isolated_home):
    first = runner.invoke(app, ["train", "resnet20", "--dataset", "digits", "--epochs", "5"])
    assert first.exit_code == 0, first.output
    folder = cache_dir("resnet20", "digits", TrainConfig(epochs=5, lr=0.05, seed=0), 1.0)
    card = json.loads((folder / "card.json").read_text())
    assert card["test_accuracy"] >= 0.95
    assert card["macs"] > 0 and card["flops"] == 2 * card["macs"]
    assert "training teacher" in first.output
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    second = runner.invoke(app, ["train", "resnet20", "--dataset", "digits", "--epochs", "5"])
    assert second.exit_code == 0, second.output
    assert "training teacher" not in second.output  # reused, not retrained
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_train_fashion_mnist_half_width(tmp_path):
    pytest.importorskip("torchvision")
    from pathlib import Path

    if not Path("/usr/share/datasets/fashion-mnist").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    from autokd.data import load_dataset
    from autokd.teacher import train_model

    data = load_dataset("fashion-mnist", seed=0, train_subset=1500)
    model, card = train_model("resnet20", data, TrainConfig(epochs=2, seed=0), width=0.5)
    assert card["dataset"] == "fashion-mnist" and card["input_shape"] == [1, 28, 28]
    assert card["test_accuracy"] > 0.5  # 2 epochs on 1,500 images: far above the 10 % of chance


@pytest.mark.parametrize("args,needle", [
    (["train", "resnet57"], "unknown model 'resnet57'"),
    (["train", "resnet20", "--dataset", "nope"], "nope"),
    (["train", "resnet20", "--epochs", "0"], "--epochs must be > 0"),
    (["train", "resnet20", "--dataset", "cifar10"], "cifar10"),
    (["models", "--input", "3x32"], "CxHxW"),
])
def test_bad_input_is_one_line(args, needle):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2


def test_models_json():
    result = runner.invoke(app, ["models", "--input", "1x28x28", "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert {"name", "macs", "params", "flops"} <= set(rows[0])
    assert {r["name"] for r in rows} >= {"resnet20", "resnet56", "vgg16", "convtiny", "resnet18"}


def test_datasets_lists_digits_offline():
    result = runner.invoke(app, ["datasets", "--json"])
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["digits"]["available_offline"] is True
    assert "cifar10" in rows
