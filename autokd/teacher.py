"""Teachers: train any zoo model from scratch, save it as a bundle, and cache it.

``--teacher`` takes either a bundle (folder, or its ``model.safetensors``) or an architecture
name. For a name, the teacher trained with the same (arch, dataset, width, epochs, seed) recipe is
reused from ``$AUTOKD_HOME/teachers/``, or trained once and cached there.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .bundle import load_bundle, save_bundle
from .data import DataSplits
from .errors import UserError
from .measure import COST_UNIT, measure
from .models import MODELS, create_model
from .provenance import autokd_home, provenance
from .train import TrainConfig, evaluate, fit

Progress = Callable[[int, int, dict], None]


def seeded_model(arch: str, seed: int, **kwargs) -> nn.Module:
    """Build ``arch`` with its initial weights drawn from ``seed`` (global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(arch, **kwargs)


def input_shape(data: DataSplits) -> tuple[int, int, int]:
    return (data.in_channels, *data.image_size)


def train_model(arch: str, data: DataSplits, cfg: TrainConfig, *, width: float = 1.0,
                progress: Progress | None = None, device: str = "cpu") -> tuple[nn.Module, dict]:
    """Train ``arch`` from scratch on ``data``; returns (model, card)."""
    model = seeded_model(arch, cfg.seed, num_classes=data.num_classes, in_channels=data.in_channels,
                         width=width).to(device)
    history = fit(model, data, cfg, progress=progress, device=device)
    model = model.cpu().eval()
    cost = measure(model, input_shape(data))
    card = {
        "kind": "teacher", "arch": arch, "width": width, "dataset": data.name,
        "epochs": cfg.epochs, "seed": cfg.seed, "train_config": cfg.as_dict(),
        "val_accuracy": history[-1]["val_accuracy"] if history else None,
        "test_accuracy": evaluate(model, data.test_x, data.test_y),
        "input_shape": list(input_shape(data)), "num_classes": data.num_classes,
        **cost.as_dict(), "cost_unit": COST_UNIT,
        "history": history, "provenance": provenance(),
    }
    return model, card


def cache_dir(arch: str, dataset: str, cfg: TrainConfig, width: float, train_subset: int | None = None) -> Path:
    """The cache folder of one teacher recipe; a teacher trained on a subset has its own."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", dataset)
    if safe != dataset:  # imagefolder:/some/path -> readable prefix + a hash of the full name
        safe = safe[:40] + "-" + hashlib.sha1(dataset.encode()).hexdigest()[:8]
    subset = f"-n{train_subset}" if train_subset else ""
    return autokd_home() / "teachers" / f"{arch}-{safe}{subset}-w{width:g}-e{cfg.epochs}-lr{cfg.lr:g}-s{cfg.seed}"


def teacher_bundle(spec: str) -> Path | None:
    """The bundle ``spec`` names (a folder or its ``.safetensors`` file), or None for a zoo name;
    a one-line UserError for neither. The one place a ``--teacher`` value is told apart."""
    if Path(spec).exists():
        return Path(spec)
    if spec not in MODELS:
        raise UserError(f"unknown teacher {spec!r}: neither a model folder/.safetensors file nor one of: "
                        + ", ".join(MODELS.names()))
    return None


def untrained_teacher(spec: str, num_classes: int, in_channels: int) -> nn.Module:
    """The teacher ``spec``'s architecture (a bundle's, or a name's at random weights), without training it."""
    bundle = teacher_bundle(spec)
    if bundle is not None:
        return load_bundle(bundle)[0]
    return create_model(spec, num_classes=num_classes, in_channels=in_channels)


def get_teacher(spec: str, data: DataSplits, cfg: TrainConfig, *, width: float = 1.0,
                progress: Progress | None = None, device: str = "cpu",
                on_train: Callable[[str], None] | None = None) -> tuple[nn.Module, dict]:
    """Load the teacher ``spec`` (bundle path or architecture name), training and caching it if needed."""
    if teacher_bundle(spec) is not None:
        return load_bundle(spec)
    folder = cache_dir(spec, data.name, cfg, width, data.train_subset)
    if (folder / "model.safetensors").exists():
        model, card = load_bundle(folder)
        card["cached_at"] = str(folder)
        return model, card
    if on_train:
        on_train(f"training teacher {spec} on {data.name} for {cfg.epochs} epochs (cached at {folder})")
    model, card = train_model(spec, data, cfg, width=width, progress=progress, device=device)
    save_bundle(model, folder, card)
    card["cached_at"] = str(folder)
    return model, card
