"""What a candidate costs in milliseconds, before anything is built or trained: channel plan -> latency.

The method: a linear model over per-op loads, fitted per machine and setting (:mod:`autokd.calibrate`).
A network's forward pass is traced on the meta device (shapes only, no weights, no arithmetic) and
every aten op it calls is counted by *kind* (``conv3x3s1``, ``conv1x1s2b``, ``linear``,
``native_batch_norm``, ``relu``, ``addb``, ``max_pool2d``, ``mean``) with its load: calls, MACs,
activation elements (input + output), weight elements and, for a blocked convolution, input reads
(:class:`OpLoad`). Each convolution also adds its MACs to the kind of its output resolution
(``conv@14``, ``convb@14``), which prices what the kind alone cannot: a small map keeps the kernel's
vector lanes idle. The latency is::

    ms = per_inference_ms + sum over kinds k of  a_k * calls_k + b_k * MMACs_k + c_k * Melems_k
                                                 + d_k * Mweights_k + e_k * Mreads_k

with every coefficient >= 0 (:class:`Calibration`, fitted by non-negative least squares on relative
error from measured random zoo candidates).

The *blocked* layout. ONNX Runtime on x86 rewrites a convolution into its NCHWc form, channels in
blocks of 8 (AVX2) or 16 (AVX-512), when its input channels are fewer than one block or a multiple of
:data:`BLOCK_ALIGN`; any other convolution runs as im2col + GEMM on the plain layout (read from the
optimised graphs of ONNX Runtime 1.32). A blocked convolution computes its output channels rounded up
to whole blocks (and its input channels too, from one block up), a pass of its kernel producing
:data:`FILTER_SET` blocks at once and reading the whole input each pass; a residual add and ReLU on
blocked tensors fuse into the convolution before them. So the kind carries the layout (the suffix
``b``), the MACs are the padded ones, and the input reads count passes. The block is read from the
runtime on the machine (:func:`autokd.timing.nchwc_block`, 0 where no convolution is blocked, as in
eager PyTorch) and kept with the calibration.

Why this and not a lookup table of layer configurations (nn-Meter, once-for-all): the shipped spaces
give every layer any channel count from 1 up, at several depths and input shapes, so a table would need
interpolation in two channel counts per layer anyway, and its entries would be single layers timed
alone, which misses what dominates the small, deep networks searched here: the cost of each op call
inside a whole graph (narrow ResNets are launch-bound) and the runtime's layouts and fusions. Fitting
whole measured networks prices those as they occur, per runtime, with a handful of coefficients per op
kind; the calls term carries the per-op overhead and ``per_inference_ms`` the fixed cost of one run.
Coefficients >= 0 make the prediction monotone within a kind: a layer with more channels never
predicts faster unless it moves the next convolution into the other layout, whose kernel path the
runtime really takes. The calibration holds out a share of its measured networks and records how
well it predicts them.

A calibration belongs to one :class:`~autokd.timing.Setting` (runtime, device, threads, batch, input
shape) and one :func:`~autokd.timing.machine`; it lives, as JSON, at
``$AUTOKD_HOME/latency/<setting>.json`` and refuses, in one line, to predict for anything else.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .bundle import write_json
from .candidate import Candidate, is_global
from .errors import UserError
from .models import create_model
from .price import TeacherShape, predict_student, unshaped
from .provenance import autokd_home
from .timing import Setting, machine

FORMAT = 3  # the calibration file's version (3: blocked kinds, input reads, resolution kinds)
BLOCK_ALIGN = 4  # input channels a multiple of this (or under one block): the convolution is blocked
FILTER_SET = 4   # blocks of output channels one pass of a blocked convolution computes
IGNORED = {"view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "flatten", "squeeze",
           "unsqueeze", "detach", "alias", "empty", "zeros", "clone", "contiguous", "lift_fresh"}  # no arithmetic
MILLION = 1e6


# ------------------------------------------------------------------ a network's loads, from shapes alone
@dataclass(frozen=True)
class OpLoad:
    """What one op kind asks of the machine in one inference."""

    calls: int = 0
    macs: int = 0
    elems: int = 0     # activation elements read and written (input + output)
    weights: int = 0   # weight elements read
    reads: int = 0     # input elements read by a blocked convolution: its padded input x kernel x passes

    def __add__(self, other: "OpLoad") -> "OpLoad":
        return OpLoad(self.calls + other.calls, self.macs + other.macs, self.elems + other.elems,
                      self.weights + other.weights, self.reads + other.reads)


def _first_tensor(value) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((v for v in value if isinstance(v, torch.Tensor)), None)
    return None


def _up(n: int, block: int) -> int:
    return -(-n // block) * block


def blocked(in_channels: int, block: int) -> bool:
    """Whether a convolution with ``in_channels`` runs blocked (module docstring); never when ``block`` is 0."""
    return block > 0 and (in_channels < block or in_channels % BLOCK_ALIGN == 0)


def _conv(args, out: torch.Tensor, block: int) -> list[tuple[str, OpLoad]]:
    x, w, stride, groups = args[0], args[1], args[3], args[8]
    out_ch, in_ch = int(w.shape[0]), int(x.shape[1])
    kernel = w.numel() // (w.shape[0] * w.shape[1])
    is_blocked = blocked(in_ch, block)
    kind = (f"conv{'x'.join(str(k) for k in w.shape[2:])}s{stride[0]}" + (f"g{groups}" if groups != 1 else "")
            + ("b" if is_blocked else ""))
    spatial_out, spatial_in = out.numel() // (out.shape[0] * out_ch), x.numel() // in_ch
    if is_blocked and groups == 1:
        padded_in = _up(in_ch, block) if in_ch >= block else in_ch
        macs = out.shape[0] * spatial_out * _up(out_ch, block) * padded_in * kernel
        reads = spatial_in * padded_in * kernel * -(-_up(out_ch, block) // (block * FILTER_SET))
    else:
        macs, reads = out.numel() * (w.numel() // w.shape[0]), 0  # output elements x (in-channels / groups x kernel)
    resolution = f"conv{'b' if is_blocked else ''}@{out.shape[-1]}"
    return [(kind, OpLoad(1, macs, x.numel() + out.numel(), w.numel(), reads)), (resolution, OpLoad(macs=macs))]


def _linear(name: str, args, out: torch.Tensor) -> tuple[str, OpLoad]:
    x, w = (args[1], args[2]) if name == "addmm" else (args[0], args[1])
    return "linear", OpLoad(1, x.shape[0] * x.shape[1] * w.shape[1], x.numel() + out.numel(), w.numel())


FUSED_WHEN_BLOCKED = ("add", "relu")  # on blocked tensors the runtime folds them into the convolution before
KEEPS_LAYOUT = ("native_batch_norm", *FUSED_WHEN_BLOCKED, "detach", "alias", "clone")  # output blocked as its input


def _op_name(name: str) -> str:
    """An aten op's name without its in-place or with-indices suffix: ``relu_`` -> ``relu``."""
    return name.removesuffix("_").removesuffix("_with_indices")


def load_of(name: str, args, out, block: int = 0, on_blocked: bool = False) -> list[tuple[str, OpLoad]]:
    """(kind, load) pairs of one aten call: none for an op that moves no data (a view, a transpose).
    ``on_blocked``: its inputs are blocked tensors (an add or a ReLU there is a kind of its own)."""
    name = _op_name(name)
    result = _first_tensor(out)
    if name in IGNORED or result is None:
        return []
    if name == "convolution":
        return _conv(args, result, block)
    if name in ("addmm", "mm"):
        return [_linear(name, args, result)]
    x = _first_tensor(args)
    kind = name + ("b" if on_blocked and name in FUSED_WHEN_BLOCKED else "")
    return [(kind, OpLoad(1, 0, (x.numel() if x is not None else 0) + result.numel(), 0))]


class _Loads(TorchDispatchMode):
    """Sums the loads of every op by kind, following which tensors are blocked: a convolution's output
    is when the convolution is; a batch norm, ReLU or add keeps its inputs' layout (an add, when both
    are); anything else returns to the plain layout."""

    def __init__(self, block: int) -> None:
        super().__init__()
        self.block = block
        self.loads: dict[str, OpLoad] = {}
        self._blocked: dict[int, bool] = {}
        self._alive: list[torch.Tensor] = []  # keeps ids unique while the trace runs

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = _op_name(func.overloadpacket.__name__)
        inputs = [a for a in args if isinstance(a, torch.Tensor)]
        operands = inputs[:2] if name == "add" else inputs[:1]  # a batch norm's weights are no operand
        on_blocked = bool(operands) and all(self._blocked.get(id(t), False) for t in operands)
        for kind, load in load_of(name, args, out, self.block, on_blocked):
            self.loads[kind] = self.loads.get(kind, OpLoad()) + load
        result = _first_tensor(out)
        if result is not None:
            if name == "convolution":
                layout = blocked(int(args[0].shape[1]), self.block)
            else:
                layout = on_blocked and name in KEEPS_LAYOUT
            self._blocked[id(result)] = layout
            self._alive.append(result)
        return out


@lru_cache(maxsize=512)
def _cached_loads(arch: str, plan: tuple[tuple[str, int], ...], num_classes: int,
                  input_shape: tuple[int, int, int], batch: int, block: int) -> tuple[tuple[str, OpLoad], ...]:
    with torch.device("meta"):
        model = create_model(arch, num_classes=num_classes, in_channels=input_shape[0], plan=dict(plan)).eval()
        x = torch.empty(batch, *input_shape)
    mode = _Loads(block)
    with torch.no_grad(), mode:
        model(x)
    return tuple(sorted(mode.loads.items()))


def op_loads(arch: str, plan: Mapping[str, int], *, num_classes: int, input_shape: tuple[int, ...],
             batch: int = 1, block: int = 0) -> dict[str, OpLoad]:
    """Per op kind, the load of one inference of zoo ``arch`` with channel ``plan`` on a batch of
    ``batch`` images of ``input_shape``, convolutions blocked by ``block`` channels where the runtime
    blocks them (0: none): traced on the meta device, nothing allocated or computed."""
    return dict(_cached_loads(arch, tuple(sorted(plan.items())), int(num_classes),
                              tuple(int(v) for v in input_shape), int(batch), int(block)))


# ------------------------------------------------------------------ the calibration
@dataclass(frozen=True)
class Coefficients:
    """One op kind's price, each term >= 0, in milliseconds per unit."""

    per_call: float = 0.0
    per_mmac: float = 0.0      # per million MACs
    per_melem: float = 0.0     # per million activation elements
    per_mweight: float = 0.0   # per million weight elements
    per_mread: float = 0.0     # per million input reads (a blocked convolution's passes)

    def ms(self, load: OpLoad) -> float:
        return (self.per_call * load.calls + self.per_mmac * load.macs / MILLION
                + self.per_melem * load.elems / MILLION + self.per_mweight * load.weights / MILLION
                + self.per_mread * load.reads / MILLION)


@dataclass(frozen=True)
class Calibration:
    """A latency predictor for one setting on one machine (see the module's docstring)."""

    setting: Setting
    machine: dict
    per_inference_ms: float
    ops: dict[str, Coefficients]
    fit: dict = field(default_factory=dict)   # evidence: samples, held-out error, seconds, created
    block: int = 0                            # the runtime's channel block here (0: no blocked layout)
    format: int = FORMAT

    def check(self, setting: Setting, here: dict, where: str = "the latency calibration") -> None:
        """Nothing, or a one-line :class:`UserError`: another setting or another machine."""
        if self.setting != setting:
            raise UserError(f"{where} is for {self.setting.label}, not {setting.label}; run "
                            f"`{calibrate_command(setting)}`")
        diff = [f"{k} {self.machine.get(k)!r} there, {here.get(k)!r} here"
                for k in sorted(set(self.machine) | set(here)) if self.machine.get(k) != here.get(k)]
        if diff:
            raise UserError(f"{where} was measured on another machine ({'; '.join(diff)}); run "
                            f"`{calibrate_command(setting)}` on this one")

    def predict_ms(self, loads: Mapping[str, OpLoad]) -> float:
        """Milliseconds of one inference with these per-kind loads. An op kind the calibration never
        measured is refused; a resolution it never measured (a load with no calls) adds nothing."""
        missing = sorted(k for k, load in loads.items() if k not in self.ops and load.calls)
        if missing:
            raise UserError(f"the latency calibration for {self.setting.label} has no price for "
                            f"{', '.join(missing)}; run `{calibrate_command(self.setting)}` again")
        return self.per_inference_ms + sum(self.ops[k].ms(load) for k, load in loads.items() if k in self.ops)

    def as_dict(self) -> dict:
        return {"format": self.format, "setting": self.setting.as_dict(), "machine": dict(self.machine),
                "per_inference_ms": self.per_inference_ms, "block": self.block,
                "ops": {k: asdict(c) for k, c in sorted(self.ops.items())}, "fit": self.fit}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        if d.get("format") != FORMAT:
            raise ValueError(f"format {d.get('format')!r}, this autokd reads {FORMAT}")
        return cls(setting=Setting.from_dict(d["setting"]), machine=dict(d["machine"]),
                   per_inference_ms=float(d["per_inference_ms"]),
                   ops={k: Coefficients(**{f: float(v) for f, v in c.items()}) for k, c in d["ops"].items()},
                   fit=dict(d.get("fit") or {}), block=int(d["block"]))


def calibrate_command(setting: Setting) -> str:
    """The command line that calibrates ``setting``."""
    device = "" if setting.device == "cpu" else f" --device {setting.device}"
    return (f"autokd latency calibrate --runtime {setting.runtime}{device} --threads {setting.threads} "
            f"--batch {setting.batch} --input {setting.shape_text}")


# ------------------------------------------------------------------ on disk
def latency_dir() -> Path:
    return autokd_home() / "latency"


def calibration_path(setting: Setting) -> Path:
    return latency_dir() / f"{setting.stem}.json"


def save_calibration(cal: Calibration, path: Path | None = None) -> Path:
    """Write ``cal`` as JSON, atomically (temp file + rename); returns where."""
    path = Path(path or calibration_path(cal.setting))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, cal.as_dict())
    return path


def read_calibration(path: Path) -> Calibration:
    """The calibration in ``path`` (JSON, never a pickle), or a one-line :class:`UserError`."""
    try:
        return Calibration.from_dict(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise UserError(f"no latency calibration at {path}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"latency calibration {path} cannot be read ({e}); calibrate again") from None


def load_calibration(setting: Setting, path: Path | None = None) -> Calibration:
    """The calibration of ``setting`` measured on this machine; a one-line :class:`UserError` when there
    is none, or it is for another setting or machine."""
    path = Path(path or calibration_path(setting))
    if not path.exists():
        raise UserError(f"no latency calibration for {setting.label} ({path}); run `{calibrate_command(setting)}`")
    cal = read_calibration(path)
    cal.check(setting, machine(setting), where=f"latency calibration {path}")
    return cal


# ------------------------------------------------------------------ pricing
def plan_latency_ms(cal: Calibration, arch: str, plan: Mapping[str, int], *, num_classes: int) -> float:
    """Predicted milliseconds of one inference of zoo ``arch`` with channel ``plan``, in ``cal``'s setting."""
    s = cal.setting
    return cal.predict_ms(op_loads(arch, plan, num_classes=num_classes, input_shape=s.input_shape, batch=s.batch,
                                   block=cal.block))


def predict_latency_ms(c: Candidate, teacher: TeacherShape, cal: Calibration) -> float:
    """Predicted latency of ``c``'s student after pruning, as :func:`autokd.price.predict_macs` prices its
    MACs: from the channel plan alone. A global-ranking candidate's plan depends on its weights; it is
    priced unpruned (an upper bound)."""
    if tuple(teacher.input_shape) != cal.setting.input_shape:
        wanted = replace(cal.setting, input_shape=tuple(teacher.input_shape))
        raise UserError(f"the latency calibration is for input {cal.setting.shape_text}, the data's images are "
                        f"{wanted.shape_text}; run `{calibrate_command(wanted)}`")
    plan, _ = predict_student(unshaped(c) if is_global(c) and c.target_macs else c, teacher)
    return plan_latency_ms(cal, c.student, plan, num_classes=teacher.num_classes)
