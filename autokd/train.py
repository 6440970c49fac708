"""The training loop shared by teachers, students and distillation.

SGD with Nesterov momentum and a cosine learning-rate schedule, over in-memory tensors. The loss
is pluggable: ``loss_fn(x, y) -> (loss, logits)``; plain cross-entropy by default. Training may
be split into pieces (a pruning step between them changes the model's channels in place, and the
optimizer is built anew for each piece): ``fit(..., start_epoch, end_epoch)`` trains one piece of
the ``cfg.epochs`` schedule, so the pieces together follow one cosine schedule.

On a CUDA device (and only there) ``fit`` keeps the GPU busy: the train and val tensors are moved
to it once per call, shuffled and augmented there by a generator on the device (no per-batch host
copy), the model's weights are channels_last during the call (``cfg.channels_last``), the forward
pass and loss may run under bf16 autocast (``cfg.amp``), and the loss is summed on the device and
checked once per epoch instead of read back every step. On the CPU every line of this is a no-op:
the same generator, the same tensors, the same sums, so the numbers are those of before.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import DataSplits, batches
from .fields import knob
from .seeds import epoch_seed

LossFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
EpochHook = Callable[[int, dict], bool | None]  # return True to stop training


class Diverged(RuntimeError):
    """The loss became NaN or infinite; the run cannot continue."""


@dataclass
class TrainConfig:
    """How a model trains from scratch (a teacher, a reference); defaults and help are ``autokd train``'s."""

    # a teacher, trained once and cached: long enough to converge on digits, the embedded default
    epochs: int = knob(15, "training epochs")
    lr: float = knob(0.05, "peak learning rate of the cosine schedule (batch 128, SGD + Nesterov)")
    momentum: float = knob(0.9, "SGD momentum (Nesterov)")
    weight_decay: float = knob(5e-4, "L2 weight decay: the usual CIFAR value for ResNets and VGG")
    batch_size: int | None = knob(None, "None: 128, halved (down to 16) until an epoch has MIN_STEPS steps")
    warmup_epochs: float = knob(0.0, "linear warm-up in epochs (fractions allowed)")
    seed: int = knob(0, "data-order and augmentation stream; init is seeded by the caller")
    # bf16 autocast of the forward pass and loss, CUDA only (never on the CPU). Off unless the
    # environment says AUTOKD_AMP=1: whether bf16 keeps accuracy is for the gpu protocol to show,
    # and the variable reaches trials in Ray workers without a new option through every layer.
    amp: bool = knob(help="bf16 autocast on CUDA (default: AUTOKD_AMP=1 in the environment)",
                     factory=lambda: os.environ.get("AUTOKD_AMP", "0") == "1")
    channels_last: bool = knob(True, "NHWC weights while training on CUDA (tensor-core convs); ignored on CPU")

    def as_dict(self) -> dict:
        return asdict(self)


MIN_STEPS = 40  # steps per epoch: below this one epoch barely moves a fresh model (digits at 128: 10)


def batch_size_for(cfg: TrainConfig, n_train: int) -> int:
    """``cfg.batch_size``, or 128 halved down to 16 while an epoch would have fewer than
    MIN_STEPS steps: digits (1,294 training images) trains at 32, Fashion-MNIST at 128."""
    if cfg.batch_size:
        return cfg.batch_size
    size = 128
    while size > 16 and n_train / size < MIN_STEPS:
        size //= 2
    return size


def lr_at(cfg: TrainConfig, progress: float) -> float:
    """Cosine schedule from ``cfg.lr`` to 0 over ``progress`` in [0, 1], after optional warm-up."""
    warm = cfg.warmup_epochs / max(cfg.epochs, 1)
    if progress < warm:
        return cfg.lr * progress / warm
    p = (progress - warm) / max(1e-12, 1 - warm)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, p)))


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(list(params), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                           weight_decay=cfg.weight_decay)


def cross_entropy(model: nn.Module) -> LossFn:
    def loss_fn(x: torch.Tensor, y: torch.Tensor):
        logits = model(x)
        return F.cross_entropy(logits, y), logits

    return loss_fn


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy in [0, 1] in eval mode (full precision), counted on the model's device."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = torch.zeros((), dtype=torch.int64, device=device)  # one read at the end, not one per batch
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size].to(device))
        correct += (logits.argmax(1) == y[i:i + batch_size].to(device)).sum()
    model.train(was)
    return correct.item() / max(1, len(x))


def _amp(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``cfg.amp``; on CPU a null context (no autocast object, no CUDA call)."""
    if device.type == "cuda" and cfg.amp:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fit(model: nn.Module, data: DataSplits, cfg: TrainConfig, *, loss_fn: LossFn | None = None,
        params: Iterable[nn.Parameter] | None = None, start_epoch: int = 0, end_epoch: int | None = None,
        on_epoch_end: EpochHook | None = None, progress: Callable[[int, int, dict], None] | None = None,
        device: str | torch.device = "cpu", rung_val_images: int | None = None) -> list[dict]:
    """Train epochs [start_epoch, end_epoch) of a ``cfg.epochs`` schedule; returns per-epoch records.

    Each record holds ``epoch`` (1-based), ``loss`` and ``val_accuracy``: on the whole validation
    split, or, with ``rung_val_images``, for every epoch before the schedule's last on its first
    ``rung_val_images`` images only (a search's cheap rung scores). ``on_epoch_end`` may return True
    to stop early. Raises :class:`Diverged` on a NaN/inf loss.
    """
    end_epoch = cfg.epochs if end_epoch is None else end_epoch
    device = torch.device(device)
    cuda = device.type == "cuda"
    loss_fn = loss_fn or cross_entropy(model)
    opt = make_optimizer(params if params is not None else model.parameters(), cfg)
    batch_size = batch_size_for(cfg, len(data.train_x))
    steps_per_epoch = max(1, math.ceil(len(data.train_x) / batch_size))
    total_steps = steps_per_epoch * max(cfg.epochs, 1)
    # moved once per call (on CPU ``.to`` returns the same tensors); batches are then views and
    # gathers on the device
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    val_x, val_y = data.val_x.to(device), data.val_y.to(device)
    channels_last = cuda and cfg.channels_last
    if channels_last:  # in place: the optimizer's parameters stay the same objects
        model.to(memory_format=torch.channels_last)
    history: list[dict] = []
    for epoch in range(start_epoch, end_epoch):
        # on CUDA a generator there: shuffling and augmentation draw on the GPU (another stream
        # of numbers than the CPU's, equally seeded); on CPU exactly the generator of before
        gen = torch.Generator(device=device).manual_seed(epoch_seed(cfg.seed, epoch))
        model.train()
        total = torch.zeros((), dtype=torch.float64, device=device)  # float64: the sum .item() gave
        n = 0
        for step, (x, y) in enumerate(batches(train_x, train_y, batch_size, shuffle=True,
                                              generator=gen, augment=data.augment)):
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, (epoch * steps_per_epoch + step) / total_steps)
            with _amp(cfg, device):
                loss, _ = loss_fn(x, y)
            # CPU: stop at the first bad step; CUDA: at the epoch's end (a per-step check is a
            # host sync that stalls the queue of kernels; a NaN makes the epoch's sum NaN)
            if not cuda and not torch.isfinite(loss):
                raise Diverged(f"loss became {loss.item()} at epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach().double() * len(y)
            n += len(y)
        if not torch.isfinite(total):
            raise Diverged(f"loss became {total.item()} in epoch {epoch + 1}")
        k = len(val_y) if rung_val_images is None or epoch + 1 >= cfg.epochs else rung_val_images
        record = {"epoch": epoch + 1, "loss": total.item() / max(1, n),
                  "val_accuracy": evaluate(model, val_x[:k], val_y[:k])}
        history.append(record)
        if progress:
            progress(epoch + 1, end_epoch, record)
        if on_epoch_end and on_epoch_end(epoch + 1, record):
            break
    if channels_last:  # callers prune, save and export plain NCHW weights (after an exception the
        model.to(memory_format=torch.contiguous_format)  # weights stay NHWC: every save copies them contiguous)
    return history
