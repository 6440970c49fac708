"""autokd: search knowledge distillation and structured pruning together.

The few functions a notebook user needs; everything else lives in the stage modules
(data -> models -> teacher -> prune -> distill -> train -> measure -> trial -> search -> pareto -> export).

    study = autokd.search(teacher="resnet56", flops_budget="40%")    # an optuna.Study, on disk
    folder = autokd.export_student(study.study_name, best=True)
    student = autokd.load_student(folder)                            # nn.Module, no pickle
"""
from .bundle import load_student
from .export import export_student
from .measure import count_macs, flops_from_macs, measure
from .models import MODELS, channel_plan, create_model
from .search import search  # the function (after this line `autokd.search` is it, not the module)


__all__ = ["create_model", "channel_plan", "load_student", "measure", "count_macs", "flops_from_macs", "MODELS",
           "search", "export_student"]
__version__ = "0.1.0"
