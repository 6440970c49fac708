"""Table 4, cost vs latency: MACs, params and CPU latency per image, PyTorch and ONNX Runtime.

Rows: every zoo model (``autokd.MODELS``, width 1) at the protocol's input shape, the protocol's
teacher, and the best student (best validation accuracy within the budget) of every table-1 study
of the ``joint`` arm (what ``autokd export --best`` ships) found under ``results/studies``, loaded from
its saved weights.

Latency: batch 1, one image of the dataset's shape, on the CPU with 1 thread (torch and ONNX
Runtime alike), median over ``latency_repeats`` runs after ``latency_warmup`` (the statistic of
``autokd.measure.cpu_latency_ms``), with the mean and std of the same runs. ONNX: opset 17 via
``autokd.export.write_onnx``, CPUExecutionProvider.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from record import envelope, rel, say

THREADS = 1  # one core per model: comparable across machines, and what a small edge box has


def _timed(fn: Callable[[], object], repeats: int, warmup: int) -> dict:
    from autokd.measure import timed_runs_ms

    times = timed_runs_ms(fn, repeats, warmup)
    return {"median_ms": statistics.median(times), "mean_ms": statistics.fmean(times),
            "std_ms": statistics.stdev(times) if len(times) > 1 else None, "n": len(times)}


def torch_latency(model, shape, repeats: int, warmup: int) -> dict:
    import torch

    model = model.eval().cpu()
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return _timed(lambda: model(x), repeats, warmup)


def onnx_latency(model, shape, repeats: int, warmup: int) -> dict:
    import torch

    from autokd.export import write_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        write_onnx(model.eval().cpu(), torch.zeros(1, *shape), path)
        return onnx_file_latency(path, shape, repeats, warmup)


def onnx_file_latency(path: Path, shape, repeats: int, warmup: int) -> dict:
    """The latency of an ONNX file written by ``autokd.export.write_onnx`` (input ``images``)."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, *shape), dtype=np.float32)
    return _timed(lambda: session.run(None, {"images": x}), repeats, warmup)


def row(label: str, kind: str, model, shape, protocol, extra: dict | None = None) -> dict:
    from autokd.measure import measure

    cost, timing = measure(model, shape), (protocol.latency_repeats, protocol.latency_warmup)
    return {"label": label, "kind": kind, "arch": model.arch, "macs": cost.macs, "flops": cost.flops,
            "params": cost.params, "torch": torch_latency(model, shape, *timing),
            "onnxruntime": onnx_latency(model, shape, *timing), **(extra or {})}


def table1_students(protocol, results_dir: Path) -> list[tuple[str, object, dict]]:
    """(label, model, extra) for the best student of each of this protocol's table-1 joint studies."""
    from autokd import load_student
    from autokd.search import store as studies
    from autokd.pareto import ChooseError, choose, pareto_info

    out = []
    for name in studies.list_names():
        arm, _, seed = name.removeprefix(f"{protocol.name}-").rpartition("-s")
        if not name.startswith(f"{protocol.name}-") or arm != "joint" or not seed.isdigit():
            continue
        try:
            point = choose(pareto_info(studies.load(name), importances=False), best=True)
        except ChooseError:
            continue
        if point.get("weights") and Path(point["weights"]).exists():
            out.append((f"{arm}, seed {seed}, trial {point['number']}", load_student(point["weights"]),
                        {"study": name, "trial": point["number"], "val_accuracy": point["val_accuracy"],
                         "weights": rel(point["weights"])}))
    return out


def run(protocol, *, results_dir: Path, teacher: Path | None) -> dict:
    import torch

    from autokd.bundle import load_bundle
    from autokd.data import DATASETS
    from autokd.models import MODELS, create_model

    from record import isolate

    t0 = time.perf_counter()
    isolate(results_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    info = DATASETS.get(protocol.dataset)
    shape = (info.in_channels, *info.image_size)
    warm = create_model("resnet20", num_classes=info.num_classes, in_channels=info.in_channels)
    row("warm-up", "none", warm, shape, protocol)  # thread pools and allocators: the first row pays nothing extra
    rows = []
    for name in protocol.latency_models or MODELS.names():
        say(f"table 4: {name}")
        model = create_model(name, num_classes=info.num_classes, in_channels=info.in_channels)
        rows.append(row(name, "zoo", model, shape, protocol))
    if teacher is not None and (Path(teacher) / "model.safetensors").exists():
        rows.append(row(f"the {protocol.name} protocol's teacher", "teacher", load_bundle(teacher)[0], shape, protocol,
                        {"bundle": rel(teacher)}))
    students = table1_students(protocol, results_dir)
    for label, model, extra in students:
        say(f"table 4: {label}")
        rows.append(row(label, "table-1 student", model, shape, protocol, extra))
    torch.set_num_threads(threads)
    res = {"input_shape": list(shape), "dataset": protocol.dataset, "threads": THREADS, "batch": 1,
           "statistic": f"median of {protocol.latency_repeats} runs after {protocol.latency_warmup} warm-up",
           "onnx_opset": 17, "rows": rows, "table1_students": len(students)}
    return envelope("latency", protocol, res, time.perf_counter() - t0)
