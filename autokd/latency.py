"""What a candidate costs in milliseconds, before anything is built or trained: channel plan -> latency.

The method: a linear model over per-op loads, fitted per machine and setting (:mod:`autokd.calibrate`).
A network's forward pass is traced on the meta device (shapes only, no weights, no arithmetic) and
every aten op it calls is counted by *kind* (``conv3x3s1``, ``conv1x1s2``, ``linear``,
``native_batch_norm``, ``relu``, ``add``, ``max_pool2d``, ``mean``) with its load: calls, MACs,
activation elements (input + output) and weight elements (:class:`OpLoad`). The latency is::

    ms = per_inference_ms + sum over kinds k of  a_k * calls_k + b_k * MMACs_k + c_k * Melems_k + d_k * Mweights_k

with every coefficient >= 0 (:class:`Calibration`, fitted by non-negative least squares on relative
error from measured random zoo candidates).

Why this and not a lookup table of layer configurations (nn-Meter, once-for-all): the shipped spaces
give every layer any channel count from 1 up, at several depths and input shapes, so a table would need
interpolation in two channel counts per layer anyway, and its entries would be single layers timed
alone, which misses what dominates the small, deep networks searched here: the cost of each op call
inside a whole graph (narrow ResNets are launch-bound) and the runtime's fusions (ONNX Runtime folds
batch norm into the conv and fuses the ReLU; eager torch does neither). Fitting whole measured
networks prices those as they occur, per runtime, with a handful of coefficients per op kind; the
calls term carries the per-op overhead and ``per_inference_ms`` the fixed cost of one run. Coefficients
>= 0 make the prediction monotone by construction within a kind: a layer with more channels never
predicts faster unless it crosses into the aligned kind (output channels a multiple of :data:`ALIGN`),
whose faster kernel path the runtime really takes.
The calibration holds out a share of its measured networks and records how well it predicts them.

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

FORMAT = 2  # the calibration file's version (2: conv kinds split by output-channel alignment)
# ONNX Runtime's CPU convolutions take a faster path when the output channels are a multiple of 4: a
# conv kind is priced apart when aligned (``conv3x3s1a4``). On 144 measured zoo candidates (1x28x28, 1
# thread) this split raised 4-fold cross-validated predictions within 10 % from 56 % to 81 %.
ALIGN = 4
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

    def __add__(self, other: "OpLoad") -> "OpLoad":
        return OpLoad(self.calls + other.calls, self.macs + other.macs, self.elems + other.elems,
                      self.weights + other.weights)


def _first_tensor(value) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((v for v in value if isinstance(v, torch.Tensor)), None)
    return None


def _conv(args, out: torch.Tensor) -> tuple[str, OpLoad]:
    x, w, stride, groups = args[0], args[1], args[3], args[8]
    kind = (f"conv{'x'.join(str(k) for k in w.shape[2:])}s{stride[0]}" + (f"g{groups}" if groups != 1 else "")
            + ("a4" if w.shape[0] % ALIGN == 0 else ""))
    macs = out.numel() * (w.numel() // w.shape[0])  # output elements x (in-channels / groups x kernel)
    return kind, OpLoad(1, macs, x.numel() + out.numel(), w.numel())


def _linear(name: str, args, out: torch.Tensor) -> tuple[str, OpLoad]:
    x, w = (args[1], args[2]) if name == "addmm" else (args[0], args[1])
    return "linear", OpLoad(1, x.shape[0] * x.shape[1] * w.shape[1], x.numel() + out.numel(), w.numel())


def load_of(name: str, args, out) -> tuple[str, OpLoad] | None:
    """(kind, load) of one aten call, or None for an op that moves no data (a view, a transpose)."""
    name = name.removesuffix("_").removesuffix("_with_indices")
    result = _first_tensor(out)
    if name in IGNORED or result is None:
        return None
    if name == "convolution":
        return _conv(args, result)
    if name in ("addmm", "mm"):
        return _linear(name, args, result)
    x = _first_tensor(args)
    return name, OpLoad(1, 0, (x.numel() if x is not None else 0) + result.numel(), 0)


class _Loads(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.loads: dict[str, OpLoad] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        found = load_of(func.overloadpacket.__name__, args, out)
        if found is not None:
            self.loads[found[0]] = self.loads.get(found[0], OpLoad()) + found[1]
        return out


@lru_cache(maxsize=512)
def _cached_loads(arch: str, plan: tuple[tuple[str, int], ...], num_classes: int,
                  input_shape: tuple[int, int, int], batch: int) -> tuple[tuple[str, OpLoad], ...]:
    with torch.device("meta"):
        model = create_model(arch, num_classes=num_classes, in_channels=input_shape[0], plan=dict(plan)).eval()
        x = torch.empty(batch, *input_shape)
    mode = _Loads()
    with torch.no_grad(), mode:
        model(x)
    return tuple(sorted(mode.loads.items()))


def op_loads(arch: str, plan: Mapping[str, int], *, num_classes: int, input_shape: tuple[int, ...],
             batch: int = 1) -> dict[str, OpLoad]:
    """Per op kind, the load of one inference of zoo ``arch`` with channel ``plan`` on a batch of
    ``batch`` images of ``input_shape``: traced on the meta device, nothing allocated or computed."""
    return dict(_cached_loads(arch, tuple(sorted(plan.items())), int(num_classes),
                              tuple(int(v) for v in input_shape), int(batch)))


# ------------------------------------------------------------------ the calibration
@dataclass(frozen=True)
class Coefficients:
    """One op kind's price, each term >= 0, in milliseconds per unit."""

    per_call: float = 0.0
    per_mmac: float = 0.0      # per million MACs
    per_melem: float = 0.0     # per million activation elements
    per_mweight: float = 0.0   # per million weight elements

    def ms(self, load: OpLoad) -> float:
        return (self.per_call * load.calls + self.per_mmac * load.macs / MILLION
                + self.per_melem * load.elems / MILLION + self.per_mweight * load.weights / MILLION)


@dataclass(frozen=True)
class Calibration:
    """A latency predictor for one setting on one machine (see the module's docstring)."""

    setting: Setting
    machine: dict
    per_inference_ms: float
    ops: dict[str, Coefficients]
    fit: dict = field(default_factory=dict)   # evidence: samples, held-out error, seconds, created
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
        """Milliseconds of one inference with these per-kind loads."""
        missing = sorted(k for k, load in loads.items() if k not in self.ops and load.calls)
        if missing:
            raise UserError(f"the latency calibration for {self.setting.label} has no price for "
                            f"{', '.join(missing)}; run `{calibrate_command(self.setting)}` again")
        return self.per_inference_ms + sum(self.ops[k].ms(load) for k, load in loads.items() if k in self.ops)

    def as_dict(self) -> dict:
        return {"format": self.format, "setting": self.setting.as_dict(), "machine": dict(self.machine),
                "per_inference_ms": self.per_inference_ms,
                "ops": {k: asdict(c) for k, c in sorted(self.ops.items())}, "fit": self.fit}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        if d.get("format") != FORMAT:
            raise ValueError(f"format {d.get('format')!r}, this autokd reads {FORMAT}")
        return cls(setting=Setting.from_dict(d["setting"]), machine=dict(d["machine"]),
                   per_inference_ms=float(d["per_inference_ms"]),
                   ops={k: Coefficients(**{f: float(v) for f, v in c.items()}) for k, c in d["ops"].items()},
                   fit=dict(d.get("fit") or {}))


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
    return cal.predict_ms(op_loads(arch, plan, num_classes=num_classes, input_shape=s.input_shape, batch=s.batch))


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
