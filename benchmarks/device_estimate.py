"""An ESTIMATE, not a measurement, of the device protocol's run time on one H200, from numbers
measured on this CPU and the H200's datasheet rates. It sized benchmarks/protocols.py's ``device``.

    .venv/bin/python benchmarks/device_estimate.py     # -> benchmarks/results/device_estimate.json

Model: these CIFAR-style nets (16-64 channels at 28x28) are too small to fill an H200, so a training
step costs the larger of
  host time   aten ops of the step (counted here with a dispatch hook) x (this CPU's host cost of one
              op, measured on a step too small to compute anything: batch 1 at 8x8) + a CUDA launch
              each (LAUNCH_US, a typical figure, not measured here); one Python process drives one
              GPU queue, so K trials at once have K hosts;
  GPU time    the step's FLOPs (2 x MACs x 3: forward + the two backward products) over an achieved
              rate: ACHIEVED_FRACTION of the datasheet's dense TF32 rate (495 TFLOP/s; bf16 doubles
              it). Narrow convolutions run far from peak; the fraction is a guess to be replaced by
              table 3's GPU rows once measured.
Fixed costs (process start and imports, Ray start, dataset load) are this CPU's, measured or read
from table 3, and counted once per process. The first device session replaces all of it with its
numbers; this file stays as the record of how the protocol was sized.
"""
from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from protocols import PROTOCOLS  # noqa: E402
from record import envelope, say, write_json  # noqa: E402

TF32_DENSE = 495e12      # H200 SXM datasheet, dense TF32 tensor-core FLOP/s (bf16: 2x)
ACHIEVED_FRACTION = 0.05  # of that rate, for 16-64-channel convs at batch 128-256: an assumption
LAUNCH_US = 5.0          # host cost of one CUDA kernel launch, microseconds: an assumption
FIXED_S = {  # one-off costs on the device, seconds (this machine's measured figures, rounded up)
    "process_start_and_imports": 10.0,   # python + torch + autokd (10-15 s here under load)
    "ray_start_per_search": 11.0,        # table 3's intercept on the 2-core machine: 11.1 s
    "fashion_mnist_load": 3.0,
    "kit_install": 15.0,                 # stage + join + pip install --target of the lean kit (py3.12, here)
    "latency_table": 20.0,               # table 4 with 3 zoo models + 6 students, 1 thread
}


def _ops_and_flops(student: str, width: float, teacher: str | None, batch: int, shape=(1, 28, 28)):
    """(aten ops of one training step, FLOPs of it) with ``teacher`` run forward (KD) if given."""
    import torch
    import torch.nn.functional as F
    from torch.utils._python_dispatch import TorchDispatchMode

    from autokd.measure import measure
    from autokd.models import create_model
    from autokd.train import TrainConfig, make_optimizer

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    s = create_model(student, num_classes=10, in_channels=shape[0], width=width)
    t = create_model(teacher, num_classes=10, in_channels=shape[0]).eval() if teacher else None
    opt = make_optimizer(s.parameters(), TrainConfig())
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))

    def step():
        logits = s(x)
        loss = F.cross_entropy(logits, y)
        if t is not None:
            with torch.no_grad():
                tl = t(x)
            loss = loss + F.kl_div(F.log_softmax(logits / 4, 1), F.softmax(tl / 4, 1), reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    Count.n = 0
    with Count():
        step()
    macs = measure(s, shape).macs * 3 + (measure(t, shape).macs if t is not None else 0)
    return Count.n, 2 * macs * batch


def host_us_per_op() -> float:
    """Median host time of one op on this CPU: resnet20 at width 0.25, batch 1, 8x8 (no compute to speak of)."""
    import torch

    torch.set_num_threads(1)
    n_ops, _ = _ops_and_flops("resnet20", 0.25, None, 1, (1, 8, 8))
    import torch.nn.functional as F

    from autokd.models import create_model
    from autokd.train import TrainConfig, make_optimizer

    m = create_model("resnet20", num_classes=10, in_channels=1, width=0.25)
    opt = make_optimizer(m.parameters(), TrainConfig())
    x, y = torch.randn(1, 1, 8, 8), torch.tensor([3])
    times = []
    for i in range(40):
        t0 = time.perf_counter()
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 10:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) / n_ops * 1e6


def step_s(ops: int, flops: float, us_per_op: float, k: int = 1, bf16: bool = False) -> dict:
    host = ops * (us_per_op + LAUNCH_US) * 1e-6
    gpu = flops / (ACHIEVED_FRACTION * TF32_DENSE * (2 if bf16 else 1))
    return {"host_s": host, "gpu_s": gpu, "step_s": max(host, k * gpu), "bound": "host" if host >= k * gpu else "gpu"}


def estimate(protocol) -> dict:
    p, f = protocol, FIXED_S
    us = host_us_per_op()
    n_train = 54_000
    t_ops, t_flops = _ops_and_flops(p.teacher, 1.0, None, p.teacher_batch or 128)
    kd_ops, kd_flops = _ops_and_flops(p.claims_student, p.claims_width, p.teacher, 128)
    # a typical table-1 trial: resnet32 at width 0.75 (the middle of the shipped space), KD from resnet56
    tr_ops, tr_flops = _ops_and_flops("resnet32", 0.75, p.teacher, 128)
    parts = {}
    st = step_s(t_ops, t_flops, us)
    parts["teacher"] = {"step": st, "steps": p.teacher_epochs * math.ceil(n_train / (p.teacher_batch or 128)),
                        "s": f["process_start_and_imports"] + f["fashion_mnist_load"]
                        + p.teacher_epochs * math.ceil(n_train / (p.teacher_batch or 128)) * st["step_s"] * 1.1}
    gpu_rows, gpu_s = [], 0.0
    probe_steps = p.gpu_probe_epochs * math.ceil((p.gpu_probe_subset or n_train) / 128)
    for k, bf16 in [(1, False), (1, True), *((k, False) for k in p.gpu_trials_at_once if k > 1)]:
        s = step_s(kd_ops, kd_flops, us, k, bf16)
        run_s = f["process_start_and_imports"] + f["fashion_mnist_load"] + probe_steps * s["step_s"] * 1.1
        gpu_rows.append({"trials_at_once": k, "bf16": bf16, **s, "images_per_s_one": 128 / s["step_s"],
                         "images_per_s_whole_gpu": k * 128 / s["step_s"], "s": run_s})
        gpu_s += run_s
    parts["gpu"] = {"rows": gpu_rows, "s": gpu_s}
    arms = 5
    s = step_s(tr_ops, tr_flops, us, min(p.parallel, p.trials))
    waves = math.ceil(p.trials / p.parallel)
    per_arm = (f["ray_start_per_search"] + f["process_start_and_imports"] + f["fashion_mnist_load"]
               + waves * p.epochs * math.ceil(p.train_subset / 128) * s["step_s"] * 1.1)
    parts["search"] = {"step": s, "arms": arms, "waves_per_arm": waves, "s_per_arm": per_arm, "s": arms * per_arm}
    parts["latency"] = {"s": f["latency_table"]}
    parts["tests"] = {"s": f["process_start_and_imports"] + 5}
    parts["install"] = {"s": f["kit_install"]}
    total = sum(v["s"] for v in parts.values())
    return {"ESTIMATE": "not a measurement: see the model in benchmarks/device_estimate.py",
            "host_us_per_op_here": us, "launch_us": LAUNCH_US, "tf32_dense_flops": TF32_DENSE,
            "achieved_fraction": ACHIEVED_FRACTION, "fixed_s": f,
            "ops_per_step": {"teacher": t_ops, "kd_trial": kd_ops, "table1_trial": tr_ops},
            "flops_per_step": {"teacher": t_flops, "kd_trial": kd_flops, "table1_trial": tr_flops},
            "parts": parts, "total_s": total, "budget_s": 480}


def main() -> None:
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    p = PROTOCOLS["device"]
    res = estimate(p)
    out = HERE / "results" / "device_estimate-device.json"
    write_json(out, envelope("device_estimate", p, res, time.perf_counter() - t0))
    for name, v in res["parts"].items():
        say(f"{name:8s} {v['s']:6.0f} s")
    say(f"total    {res['total_s']:6.0f} s of the 480 s budget (an estimate) -> {out}")


if __name__ == "__main__":
    main()
