"""Cost, the one unit: multiply-accumulates (MACs) of conv and linear layers.

MACs are counted with ``torch.utils.flop_counter.FlopCounterMode``, which counts the
convolution and matmul aten ops only (no BN, activation, pooling or bias adds), as 2 per
multiply-accumulate. ``flops = 2 * macs`` is defined here and nowhere else: papers in this
field say "FLOPs" and mostly mean MACs; autokd always says which.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

MAC_OPS = {"convolution", "mm", "addmm", "bmm", "baddbmm"}  # the aten ops that multiply-accumulate


COST_UNIT = "macs = multiply-accumulates of conv+linear layers; flops = 2 * macs"  # what every record says
COST_UNIT_TITLE = "MACs = multiply-accumulates of conv+linear layers; FLOPs = 2 x MACs"  # the same, as tables show it


def flops_from_macs(macs: int) -> int:
    """FLOPs = 2 x MACs: one multiply and one add per multiply-accumulate."""
    return 2 * int(macs)


def macs_from_flops(flops: float) -> int:
    return int(round(flops / 2))


@dataclass(frozen=True)
class Cost:
    macs: int
    params: int

    @property
    def flops(self) -> int:
        return flops_from_macs(self.macs)

    def as_dict(self) -> dict:
        return {"macs": self.macs, "flops": self.flops, "params": self.params}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass on one input of shape (C, H, W)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(1, *input_shape, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    model.train(was_training)
    counts = counter.get_flop_counts().get("Global", {})
    flops = sum(v for op, v in counts.items() if str(op).removeprefix("aten.") in MAC_OPS)
    return macs_from_flops(flops)


def mac_meter(model: nn.Module, input_shape: tuple[int, ...]) -> Callable[[], int]:
    """A counter of ``count_macs(model, input_shape)`` for a model whose layers lose channels but keep
    their place: one counted forward records each conv and linear call's output positions, and the
    meter then multiplies each weight's size by them (a conv's MACs = its weight's elements x output
    pixels), with no forward pass. A model the rule does not describe (a transposed conv, a matmul
    outside a layer) gets ``count_macs`` itself."""
    calls: list[tuple[nn.modules.conv._ConvNd | nn.Linear, int]] = []

    def hook(module: nn.Module, _inputs, out: torch.Tensor) -> None:
        assert isinstance(module, (nn.modules.conv._ConvNd, nn.Linear))  # hooked on those layers only
        width = module.out_channels if isinstance(module, nn.modules.conv._ConvNd) else module.out_features
        calls.append((module, out.numel() // width))

    layers = [m for m in model.modules() if type(m) in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        macs = count_macs(model, input_shape)
    finally:
        for h in handles:
            h.remove()

    def meter() -> int:
        return sum(m.weight.numel() * positions for m, positions in calls)

    return meter if meter() == macs else (lambda: count_macs(model, input_shape))


def measure(model: nn.Module, input_shape: tuple[int, ...]) -> Cost:
    return Cost(macs=count_macs(model, input_shape), params=count_params(model))


LATENCY_THREADS = 1  # batch-1 latency of small CNNs: one intra-op thread is fastest and steadiest


@torch.no_grad()
def cpu_latency_ms(model: nn.Module, input_shape: tuple[int, ...], *, repeats: int = 30, warmup: int = 5,
                   threads: int = LATENCY_THREADS) -> float:
    """Median wall time of one forward pass on one image, batch 1, on the CPU, in milliseconds,
    with ``threads`` torch intra-op threads (the caller's setting is restored)."""
    model = model.eval().cpu()
    x = torch.randn(1, *input_shape)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = sorted(timed_runs_ms(lambda: model(x), repeats, warmup))
    finally:
        torch.set_num_threads(before)
    return times[len(times) // 2]


def timed_runs_ms(fn: Callable[[], object], repeats: int, warmup: int) -> list[float]:
    """Wall time of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones, in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1000.0 * (time.perf_counter() - t0))
    return times
