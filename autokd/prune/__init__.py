"""Prune stage: physical structured pruning of output channels with Torch-Pruning's DepGraph.

  ``structure``  the layout: coupled groups, stages, ratio specs, the channel-counting rule
  ``cost``       predict_cost: the exact plan and MACs of a pruned architecture, before training
  ``channels``   prune_model: remove channels in place, ranked by a criterion (CRITERIA)
  ``global_rank`` prune_global: Torch-Pruning's global ranking across layers, down to a MAC target
  ``gates``      ChannelGates: learned masks for pruning during distillation (PDD)
  ``projection`` project_to_budget: a pruning shape scaled by bisection to land on a MAC target
                 (the search's candidates, each on its share of the budget: autokd.search.budget)
"""
from .channels import CRITERIA, Criterion, copy_into, prune_model, prune_to_plan
from .cost import predict_cost
from .gates import ChannelGates
from .global_rank import GLOBAL, prune_global
from .structure import MAX_RATIO, RatioSpec, layout, n_pruned, prunable_groups, resolve_ratios, target_plan

__all__ = ["CRITERIA", "Criterion", "ChannelGates", "GLOBAL", "prune_global", "MAX_RATIO", "RatioSpec", "n_pruned", "prunable_groups",
           "resolve_ratios", "prune_model", "prune_to_plan", "copy_into", "predict_cost", "target_plan", "layout"]
