"""autokd: search knowledge distillation and structured pruning together.

The few functions a notebook user needs; everything else lives in the stage modules
(data -> models -> teacher -> prune -> distill -> train -> measure -> trial -> search -> pareto -> export).
"""
from .bundle import load_student
from .measure import count_macs, flops_from_macs, measure
from .models import MODELS, channel_plan, create_model

__all__ = ["create_model", "channel_plan", "load_student", "measure", "count_macs", "flops_from_macs", "MODELS"]
__version__ = "0.1.0"
