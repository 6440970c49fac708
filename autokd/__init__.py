"""autokd: search knowledge distillation and structured pruning together.

The few functions a notebook user needs; everything else lives in the stage modules
(data -> models -> measure -> candidate -> train -> teacher -> prune -> distill -> trial -> student
-> space -> search -> pareto -> plots -> export -> cli, each importing only those before it). ``import autokd`` loads no torch: each name below is
imported from its module on first use.

    study = autokd.search(teacher="resnet56", flops_budget="40%")    # an optuna.Study, on disk
    folder = autokd.export_student(study.study_name, best=True)
    student = autokd.load_student(folder)                            # nn.Module, no pickle
"""
from importlib import import_module

from .search import search  # the function (after this line `autokd.search` is it, not the package)

_LAZY = {"create_model": "models", "channel_plan": "models", "MODELS": "models", "load_student": "bundle",
         "count_macs": "measure", "count_params": "measure", "flops_from_macs": "measure",
         "export_student": "export", "distill_student": "student"}

__all__ = ["create_model", "channel_plan", "load_student", "count_macs", "count_params", "flops_from_macs",
           "MODELS", "search", "distill_student", "export_student"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'autokd' has no attribute {name!r}")
