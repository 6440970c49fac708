"""Models on disk as data, never as pickles.

A *bundle* is a folder holding
  ``channel_plan.json``  ``{"arch", "build_args", "plan"}``: what rebuilds the network;
  ``model.safetensors``  the weights (and BN buffers);
  ``card.json``          what is known about it (dataset, accuracy, MACs, seeds, ...).
Teachers, distilled students and exported students are all bundles. A bundle is written into a
temporary sibling folder and renamed into place, so a reader never sees half of one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import UserError
from .models import MODELS, channel_plan, create_model, tags

PLAN, WEIGHTS, CARD = "channel_plan.json", "model.safetensors", "card.json"


class BadBundle(UserError):
    """A model folder or weights file that autokd cannot (or will not) load."""


def plan_of(model: nn.Module) -> dict:
    t = tags(model)
    return {"arch": t.arch, "build_args": dict(t.build_args), "plan": channel_plan(model)}


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def publish_folder(stage: Path, target: Path) -> None:
    """Rename the finished folder ``stage`` into place; a folder already at ``target`` is replaced
    (moved aside first, removed after), so ``target`` is always whole: old or new."""
    if target.exists():
        old = target.with_name(f".{target.name}.old{os.getpid()}")
        os.replace(target, old)
        os.replace(stage, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(stage, target)


def save_bundle(model: nn.Module, folder: str | Path, card: dict, extra: dict[str, bytes] | None = None) -> Path:
    """Write ``model`` and ``card`` as a bundle at ``folder`` (replacing it atomically)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS))
        write_json(tmp / PLAN, plan_of(model))
        write_json(tmp / CARD, card)
        for name, data in (extra or {}).items():
            (tmp / name).write_bytes(data)
        publish_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _resolve(path: Path) -> Path:
    if path.is_dir():
        return path
    if path.suffix == ".safetensors":
        return path.parent
    raise BadBundle(f"{path}: not a model folder or a .safetensors file "
                    "(autokd loads only safetensors weights and never unpickles a file)")


def load_bundle(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild a bundle's model from its plan and weights alone; returns (model in eval mode, card)."""
    path = Path(path)
    if not path.exists():
        raise BadBundle(f"{path}: no such file or folder")
    folder = _resolve(path)
    weights = path if path.suffix == ".safetensors" else folder / WEIGHTS
    try:
        spec = json.loads((folder / PLAN).read_text())
        card = json.loads((folder / CARD).read_text()) if (folder / CARD).exists() else {}
        arch = spec["arch"]
    except (OSError, ValueError, KeyError) as e:
        raise BadBundle(f"{folder}: missing or unreadable {PLAN} ({e.__class__.__name__})") from None
    if arch not in MODELS:
        raise BadBundle(f"{folder}: unknown architecture {arch!r} in {PLAN}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise BadBundle(f"{weights}: not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None
    model = create_model(arch, **spec.get("build_args", {}), plan=spec.get("plan") or {})
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise BadBundle(f"{weights}: weights do not match the channel plan in {PLAN}") from None
    return model.eval(), card


def load_student(path: str | Path) -> nn.Module:
    """An exported or distilled student as a plain ``nn.Module`` (eval mode), no pickled classes."""
    return load_bundle(path)[0]
