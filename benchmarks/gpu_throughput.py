"""Table 3's GPU rows: training images per second of one trial, and of the whole GPU with several.

  one trial     a distillation trial (the protocol's claims student, Hinton KD on the logits from the
                protocol's teacher, run live: Fashion-MNIST is augmented, so nothing is cached) trained
                ``gpu_probe_epochs`` epochs in a fresh process; images/s of the last epoch (the first
                warms up CUDA and cuDNN), its validation pass included; with bf16 autocast off and on,
                with the validation accuracy each reached (same seed: whether bf16 keeps accuracy).
  K at once     K such processes started together, each alone on its share of the GPU, released by
                one barrier after their set-up: the whole GPU's images/s = K x training images /
                (last process's end of its timed epoch - first one's start of it), and each one's own.
  Ray Tune      table 1's searches ran ``parallel`` trials at once through Ray Tune's fractional GPUs
                (``gpus_per_trial``); make_tables reads their images/s from the search_quality JSON.

Direct processes, not a search: the rows time training alone, without the driver and Ray (table
3's driver rows measure those). On a CPU (the gpu-dry protocol) the same code runs and its
numbers mean nothing.
"""
from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from record import envelope, say, teacher_bundle, teacher_summary


def _probe(protocol, teacher: str, amp: bool, barrier=None) -> dict:
    """One trial in this (fresh) process: set-up, wait at ``barrier``, train; timings and accuracy."""
    import torch

    from autokd.bundle import load_bundle
    from autokd.data import load_dataset
    from autokd.distill import Distiller
    from autokd.teacher import seeded_model
    from autokd.train import TrainConfig, batch_size_for, fit
    from autokd.trial import PROBE_IMAGES

    p, dev = protocol, protocol.device
    torch.set_num_threads(1)
    data = load_dataset(p.dataset, seed=0, train_subset=p.gpu_probe_subset)
    t_model = load_bundle(teacher)[0].to(dev).eval()
    student = seeded_model(p.claims_student, 1, num_classes=data.num_classes, in_channels=data.in_channels,
                           width=p.claims_width).to(dev)
    d = Distiller(student, t_model, lambdas={}, probe_x=data.train_x[:PROBE_IMAGES].to(dev))
    cfg = TrainConfig(epochs=p.gpu_probe_epochs, seed=0, amp=amp)
    marks: list[float] = []

    def mark(_epoch, _record):
        if dev == "cuda":
            torch.cuda.synchronize()
        marks.append(time.perf_counter())

    if barrier is not None:
        barrier.wait()
    marks.append(time.perf_counter())
    hist = fit(student, data, cfg, loss_fn=d.loss, params=student.parameters(), device=dev, on_epoch_end=mark)
    start, end = marks[-2], marks[-1]  # the last epoch
    n = len(data.train_x)
    return {"train_images": n, "batch": batch_size_for(cfg, n), "epochs": cfg.epochs, "amp": amp,
            "epoch_s": end - start, "images_per_s": n / (end - start), "start": start, "end": end,
            "val_accuracy": hist[-1]["val_accuracy"], "setup_and_first_epochs_s": start - marks[0],
            "gpu_max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else None}


def at_once(protocol, teacher: str, k: int, amp: bool) -> dict:
    """K probe processes started together behind one barrier (spawned: a fresh CUDA context each)."""
    ctx = get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(max_workers=k, mp_context=ctx) as pool:
        barrier = manager.Barrier(k)
        runs = list(pool.map(_probe, *zip(*[(protocol, teacher, amp, barrier)] * k)))
    span = max(r["end"] for r in runs) - min(r["start"] for r in runs)
    total = sum(r["train_images"] for r in runs)
    for r in runs:  # clocks of different processes: keep only the durations
        r.pop("start"), r.pop("end")
    return {"trials_at_once": k, "amp": amp, "whole_gpu_images_per_s": total / span, "span_s": span,
            "per_trial_images_per_s": [r["images_per_s"] for r in runs], "runs": runs}


def run(protocol, *, results_dir: Path) -> dict:
    t0 = time.perf_counter()
    teacher = str(teacher_bundle(protocol, results_dir, say=say))
    rows = []
    for amp in (False, True):
        say(f"GPU throughput: one trial, bf16 autocast {'on' if amp else 'off'}")
        rows.append({"what": "one trial", **at_once(protocol, teacher, 1, amp)})
    for k in protocol.gpu_trials_at_once:
        if k > 1:
            say(f"GPU throughput: {k} trials at once")
            rows.append({"what": f"{k} trials at once", **at_once(protocol, teacher, k, False)})
    res = {"teacher": teacher_summary(Path(teacher)), "rows": rows,
           "trial": f"{protocol.claims_student} width {protocol.claims_width:g}, Hinton KD on the logits from the "
                    f"teacher run live, batch {rows[0]['runs'][0]['batch']}, {protocol.gpu_probe_epochs} epochs (the last timed), "
                    f"{protocol.gpu_probe_subset or 'all'} training images, 1 CPU thread per process"}
    return envelope("gpu_throughput", protocol, res, time.perf_counter() - t0)
