"""Latency as measured: one inference of a model in a runtime, timed so that it holds on a busy machine.

A figure here is never a bare number. :class:`Timing` carries its median, its spread (the quartiles:
IQR = q3 - q1), how many samples it rests on, and the :class:`Setting` (runtime, device, threads,
batch, input shape) and :func:`machine` it was measured with.

The protocol (:func:`time_interleaved`), for one or several models at once:
  * warm-up: ``warmup`` untimed calls of each model (thread pools, allocators, ONNX Runtime's first run);
  * a sample is ``number`` back-to-back calls, ``number`` chosen per model from the warm-up so one sample
    lasts at least ``min_sample_ms`` (a 50 us network is not timed one call at a time);
  * interleaved rounds: each round takes one sample of every model, in an order shuffled per round
    (seeded), so a burst of load elsewhere on the machine touches all models alike instead of all the
    samples of one;
  * statistic: the median of the rounds, and its quartiles for the spread.

Runtimes: ``onnxruntime`` (CPUExecutionProvider, ``intra_op_num_threads=threads``, ``inter_op_num_threads=1``,
the model exported to ONNX in memory) and ``torch`` (eager, inference mode; on ``cuda`` every call ends
with ``torch.cuda.synchronize()``, so the time is the GPU's and not the launch's).
"""
from __future__ import annotations

import io
import math
import os
import platform
import random
import statistics
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import metadata
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from .errors import UserError
from .fields import knob
from .measure import LATENCY_THREADS

RUNTIMES = ("onnxruntime", "torch")
DEVICES = ("cpu", "cuda")   # cuda: the torch runtime only
ONNX_OPSET = 17             # the opset `autokd export` writes
INPUT_SEED = 0              # the random input every model is timed on


@dataclass(frozen=True)
class Setting:
    """What a latency figure is a figure of: the runtime and how it runs one batch."""

    runtime: str = knob("onnxruntime", "the runtime timed: onnxruntime (CPU) or torch (eager PyTorch)")
    threads: int = knob(LATENCY_THREADS, "intra-op threads (batch-1 CNNs: one is fastest and steadiest)")
    batch: int = knob(1, "images per inference")
    input_shape: tuple[int, ...] = knob((1, 28, 28), "one image, C x H x W")
    device: str = knob("cpu", "cpu, or cuda (the torch runtime only)")

    def check(self) -> "Setting":
        """Itself, or a one-line :class:`UserError` naming the bad value."""
        if self.runtime not in RUNTIMES:
            raise UserError(f"--runtime {self.runtime!r}: choose one of {', '.join(RUNTIMES)}")
        if self.device not in DEVICES:
            raise UserError(f"--device {self.device!r}: choose one of {', '.join(DEVICES)}")
        if self.device == "cuda" and self.runtime != "torch":
            raise UserError("--device cuda: only the torch runtime runs on a GPU here")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is visible here; use --device cpu")
        for name in ("threads", "batch"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise UserError(f"--{name} must be a whole number >= 1, got {getattr(self, name)}")
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise UserError(f"input shape {self.input_shape}: expected C x H x W, each >= 1")
        return self

    @property
    def shape_text(self) -> str:
        return "x".join(str(v) for v in self.input_shape)

    @property
    def label(self) -> str:
        """For people: ``onnxruntime on cpu, 1 thread, batch 1, input 1x28x28``."""
        plural = "" if self.threads == 1 else "s"
        return (f"{self.runtime} on {self.device}, {self.threads} thread{plural}, batch {self.batch}, "
                f"input {self.shape_text}")

    @property
    def stem(self) -> str:
        """A file name for this setting: ``onnxruntime-cpu-t1-b1-1x28x28``."""
        return f"{self.runtime}-{self.device}-t{self.threads}-b{self.batch}-{self.shape_text}"

    def as_dict(self) -> dict:
        return {**asdict(self), "input_shape": list(self.input_shape)}

    @classmethod
    def from_dict(cls, d: dict) -> "Setting":
        return cls(runtime=str(d["runtime"]), threads=int(d["threads"]), batch=int(d["batch"]),
                   input_shape=tuple(int(v) for v in d["input_shape"]), device=str(d["device"]))


# ------------------------------------------------------------------ the machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def runtime_version(setting: Setting) -> str:
    return metadata.version("onnxruntime" if setting.runtime == "onnxruntime" else "torch")


def machine(setting: Setting) -> dict:
    """What a latency figure depends on beyond its setting: the processor, its logical CPUs, the GPU
    (a cuda setting) and the runtime's version. Equal dicts: figures that may be compared."""
    info = {"cpu": _cpu_model(), "cpus": os.cpu_count(), "arch": platform.machine(), "system": platform.system(),
            "runtime_version": f"{setting.runtime} {runtime_version(setting)}"}
    if setting.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ------------------------------------------------------------------ one inference, callable
def _input(setting: Setting) -> torch.Tensor:
    return torch.randn(setting.batch, *setting.input_shape, generator=torch.Generator().manual_seed(INPUT_SEED))


def export_onnx(model: nn.Module, example: torch.Tensor, target, *, dynamic_batch: bool = False) -> None:
    """``model`` as autokd's ONNX graph into ``target`` (a path or a binary file): opset :data:`ONNX_OPSET`,
    input "images", output "logits", by the TorchScript-based exporter (no onnxscript needed); with
    ``dynamic_batch`` the batch dimension is left free."""
    axes = {"images": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(model, (example,), target, opset_version=ONNX_OPSET, dynamo=False,
                      input_names=["images"], output_names=["logits"], dynamic_axes=axes)


def onnx_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    """``model`` as an ONNX graph (:func:`export_onnx`, batch fixed), in memory."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the tracer's notes; the graph is checked where it is exported for users
        warnings.simplefilter("ignore")
        export_onnx(model, example, buffer)
    return buffer.getvalue()


def _runs_blocked(in_channels: int) -> bool:
    """Whether ONNX Runtime, as :func:`_onnx_runner` sets it up, rewrites a 3x3 convolution with
    ``in_channels`` into its blocked (NCHWc) form on this machine: read from the graph it optimises."""
    import tempfile

    import onnx
    import onnxruntime as ort

    x = torch.zeros(1, in_channels, 8, 8)
    model = nn.Conv2d(in_channels, 16, 3, padding=1).eval()
    with tempfile.TemporaryDirectory() as tmp:
        opts = _session_options(threads=1)
        opts.optimized_model_filepath = os.path.join(tmp, "optimised.onnx")
        ort.InferenceSession(onnx_bytes(model, x), opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath).graph
    return any(node.op_type == "Conv" and node.domain.endswith("nchwc") for node in graph.node)


@lru_cache(maxsize=None)
def nchwc_block(runtime: str, device: str = "cpu") -> int:
    """The channel block of the blocked convolutions ``runtime`` runs here: ONNX Runtime on a CPU blocks by
    8 (AVX2) or 16 (AVX-512), and a convolution with fewer input channels than one block always runs
    blocked, so probes with 1 and 9 input channels tell which; 0 where nothing is blocked (eager PyTorch,
    ONNX Runtime on a CPU without the blocked kernels)."""
    if runtime != "onnxruntime" or device != "cpu" or not _runs_blocked(1):
        return 0
    return 16 if _runs_blocked(9) else 8


def _session_options(threads: int):
    """ONNX Runtime's options for one timed model: ``threads`` intra-op, one inter-op, sequential, quiet."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return opts


def _onnx_runner(model: nn.Module, setting: Setting) -> Callable[[], object]:
    import onnxruntime as ort

    x = _input(setting)
    opts = _session_options(setting.threads)
    session = ort.InferenceSession(onnx_bytes(model.eval().cpu(), x), opts, providers=["CPUExecutionProvider"])
    feed = {"images": x.numpy().astype(np.float32)}
    return lambda: session.run(None, feed)


def _torch_runner(model: nn.Module, setting: Setting) -> Callable[[], object]:
    device = torch.device(setting.device)
    model, x = model.eval().to(device), _input(setting).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run() -> object:
        with torch.inference_mode():
            y = model(x)
        sync()
        return y

    return run


def runner(model: nn.Module, setting: Setting) -> Callable[[], object]:
    """One inference of ``model`` on a fixed random batch, as ``setting`` runs it (time it inside
    :func:`threads_of`)."""
    return (_onnx_runner if setting.runtime == "onnxruntime" else _torch_runner)(model, setting)


@contextmanager
def threads_of(setting: Setting) -> Iterator[None]:
    """torch's intra-op threads at ``setting.threads`` (ONNX Runtime sets its own per session)."""
    before = torch.get_num_threads()
    torch.set_num_threads(setting.threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ the figures
@dataclass(frozen=True)
class Timing:
    """One model's measured latency: per inference (one batch), in milliseconds."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    rounds: int       # samples the median is taken over
    number: int       # back-to-back calls in each sample
    setting: Setting
    machine: dict

    @property
    def iqr_ms(self) -> float:
        return self.q3_ms - self.q1_ms

    def as_dict(self) -> dict:
        return {"median_ms": self.median_ms, "q1_ms": self.q1_ms, "q3_ms": self.q3_ms, "iqr_ms": self.iqr_ms,
                "rounds": self.rounds, "number": self.number, "setting": self.setting.as_dict(),
                "machine": dict(self.machine)}


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(q1, median, q3); one value is its own quartiles."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def _sample_ms(fn: Callable[[], object], number: int, clock: Callable[[], float]) -> float:
    t0 = clock()
    for _ in range(number):
        fn()
    return 1000.0 * (clock() - t0) / number


def time_interleaved(fns: Sequence[Callable[[], object]], *, rounds: int = 15, warmup: int = 5,
                     min_sample_ms: float = 1.0, seed: int = 0,
                     clock: Callable[[], float] = time.perf_counter) -> list[tuple[list[float], int]]:
    """Per function: (``rounds`` samples in ms per call, calls per sample). See the module's protocol."""
    numbers = []
    for fn in fns:
        numbers.append(max(1, math.ceil(min_sample_ms / max(_sample_ms(fn, warmup, clock), 1e-6))))
    samples: list[list[float]] = [[] for _ in fns]
    order, rng = list(range(len(fns))), random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(order)
        for i in order:
            samples[i].append(_sample_ms(fns[i], numbers[i], clock))
    return list(zip(samples, numbers))


def measure_latency(models: Sequence[nn.Module], setting: Setting, *, rounds: int = 15, warmup: int = 5,
                    min_sample_ms: float = 1.0, seed: int = 0) -> list[Timing]:
    """Each model's :class:`Timing` in ``setting``, all measured together, round by round."""
    setting.check()
    where = machine(setting)
    with threads_of(setting):
        fns = [runner(m, setting) for m in models]
        measured = time_interleaved(fns, rounds=rounds, warmup=warmup, min_sample_ms=min_sample_ms, seed=seed)
    timings = []
    for samples, number in measured:
        q1, q2, q3 = quartiles(samples)
        timings.append(Timing(q2, q1, q3, len(samples), number, setting, where))
    return timings
