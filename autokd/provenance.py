"""Where autokd keeps things, and the evidence attached to every number it writes."""
from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from .errors import UserError
from .fields import DEVICES


def autokd_home() -> Path:
    """``$AUTOKD_HOME``, default ``~/.cache/autokd`` (also when set but empty): cached teachers and datasets."""
    return Path(os.environ.get("AUTOKD_HOME") or Path.home() / ".cache" / "autokd").expanduser()


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(name: str) -> str:
    """``auto`` -> cuda if available, else cpu; ``cuda`` without a GPU is a one-line UserError."""
    if name not in DEVICES:
        raise UserError(f"--device {name!r}: choose one of {', '.join(DEVICES)}")
    if name == "auto":
        return default_device()
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible here; use --device cpu or auto")
    return name


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("autokd", "torch", "torchvision", "optuna", "ray", "torch-pruning", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_revision() -> str:
    here = Path(__file__).resolve().parent
    try:  # a fixed argv, no user string: safe
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware() -> dict:
    info = {"machine": platform.machine(), "cpus": os.cpu_count(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def provenance() -> dict:
    return {"versions": versions(), "git_revision": git_revision(), "hardware": hardware()}
