"""Learned channel gates for pruning during distillation (PDD: Dan, Yang, Zhang et al.,
Cognitive Computation 2024, doi 10.1007/s12559-024-10350-9).

Each prunable group (see :mod:`autokd.prune.structure`) gets one gate vector ``g = sigmoid(logit)``, one
value per output channel, shared by every layer of the group, so a residual stream is gated
consistently. A forward hook multiplies the output of the module right after each member (its
BN, or the layer itself when no BN follows) by ``g``. The gates train with the student; then
:meth:`ChannelGates.finalize` removes the lowest gates physically and folds the kept values
into the gated BN, so the pruned model computes what the thresholded gated model computed.

Sparsity pressure, per group k with c_k channels and n_k = n_pruned(c_k, r_k) to remove::

    L_k = (mean(g_k) - (c_k - n_k) / c_k)^2  +  mean(n_k smallest gates of g_k)
    sparsity_loss = mean_k L_k

The first (budget) term asks the group's mean gate to equal its kept fraction; the second
(an L1 push on the currently lowest n_k gates) drives exactly the channels that will be cut
toward 0, which together polarises the gates: the kept ones rise toward 1.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .structure import RatioSpec, groups_of, n_pruned, resolve_ratios, trace


def _fold(module: nn.Module, g: torch.Tensor) -> None:
    """Scale ``module``'s output channels by ``g`` through its parameters (exact, eval or train)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if not module.affine:
            raise ValueError(f"cannot fold a gate into a non-affine {module}")
        module.weight.mul_(g)
        module.bias.mul_(g)
    elif isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):  # weight rows and bias
        module.weight.mul_(g.view(-1, *[1] * (module.weight.dim() - 1)))
        if module.bias is not None:
            module.bias.mul_(g)
    else:
        raise TypeError(f"cannot fold a gate into {module}")


class ChannelGates(nn.Module):
    """Differentiable per-channel gates on every prunable group of ``model``.

    ``ChannelGates(model, ratios, input_shape)`` attaches forward hooks to ``model`` (which keeps
    no reference to the gates in its state dict); add ``gates.parameters()`` to the optimizer
    and ``weight * gates.sparsity_loss()`` to the loss. ``gates.hard = True`` makes the hooks
    use the thresholded gates (the n_k lowest set to 0), the model ``finalize`` reproduces.
    ``init_logit=3`` starts every gate at sigmoid(3) = 0.95, near identity.
    """

    def __init__(self, model: nn.Module, ratios: RatioSpec, input_shape: tuple[int, ...], *,
                 init_logit: float = 3.0) -> None:
        super().__init__()
        per_layer = resolve_ratios(model, ratios)
        dg = trace(model, tuple(input_shape))
        self.input_shape = tuple(input_shape)
        self.groups = groups_of(model, dg)
        channels = [dg.get_out_channels(model.get_submodule(g.members[0])) for g in self.groups]
        self.n_remove = [n_pruned(c, per_layer[g.members[0]]) for c, g in zip(channels, self.groups)]
        device = next(model.parameters()).device
        self.logits = nn.ParameterList(
            [nn.Parameter(torch.full((c,), float(init_logit), device=device)) for c in channels])
        self.hard = False
        self._model_id = id(model)
        self._handles = [model.get_submodule(name).register_forward_hook(self._hook(i))
                         for i, g in enumerate(self.groups) for name in g.gated]

    def _hook(self, i: int):
        def hook(module: nn.Module, inputs, out: torch.Tensor) -> torch.Tensor:
            g = self.gate(i)
            return out * g.view(1, -1, *[1] * (out.dim() - 2))

        return hook

    def keep_mask(self, i: int) -> torch.Tensor:
        """Boolean mask of group ``i``'s kept channels: all but its n_i lowest gates (ties: lower
        index removed first)."""
        soft = torch.sigmoid(self.logits[i].detach())
        mask = torch.ones_like(soft, dtype=torch.bool)
        mask[torch.argsort(soft.cpu(), stable=True)[: self.n_remove[i]].to(soft.device)] = False
        return mask

    def gate(self, i: int) -> torch.Tensor:
        """Gate values of group ``i``: sigmoid of its logits, times the keep mask when ``hard``."""
        g = torch.sigmoid(self.logits[i])
        return g * self.keep_mask(i) if self.hard else g

    def gate_values(self) -> dict[str, torch.Tensor]:
        """Current gate values by group root layer name (detached; for logging)."""
        return {g.members[0]: self.gate(i).detach() for i, g in enumerate(self.groups)}

    def sparsity_loss(self) -> torch.Tensor:
        """mean over groups of (mean gate - kept fraction)^2 + mean of the n_k lowest gates."""
        terms = []
        for i, n in enumerate(self.n_remove):
            g = torch.sigmoid(self.logits[i])
            term = (g.mean() - (g.numel() - n) / g.numel()) ** 2
            if n > 0:
                term = term + torch.sort(g, stable=True).values[:n].mean()
            terms.append(term)
        return torch.stack(terms).mean()

    def remove(self) -> None:
        """Detach the hooks (the model computes ungated again)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def finalize(self, model: nn.Module) -> nn.Module:
        """Cut each group's n_k lowest-gate channels physically, fold the kept gate values into
        the gated BN (or layer), remove the hooks; returns ``model`` (pruned in place, plain:
        no hooks, no grads). Its logits equal the gated model's with ``hard = True``."""
        if id(model) != self._model_id or not self._handles:
            raise RuntimeError("finalize() takes the model these gates were attached to, once")
        plans = []
        with torch.no_grad():
            for i, g in enumerate(self.groups):
                soft = torch.sigmoid(self.logits[i])
                for name in g.gated:
                    _fold(model.get_submodule(name), soft)
                plans.append((g.members[0], (~self.keep_mask(i)).nonzero().flatten().tolist()))
        self.remove()
        dg = trace(model, self.input_shape)
        for name, idxs in plans:
            if idxs:
                root = model.get_submodule(name)
                dg.get_pruning_group(root, dg.get_pruner_of_module(root).prune_out_channels, idxs).prune()
        model.zero_grad(set_to_none=True)
        return model
