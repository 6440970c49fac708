"""The GPU code paths of fit / evaluate / batches / TeacherCache, and their CPU fallback.

On the CPU (every CI machine) the GPU options must be no-ops that call nothing of ``torch.cuda``
and leave the numbers as they were; on a machine with CUDA (benchmarks/gpu_protocol.sh runs this file
there too) the same calls must train on the GPU and hand back plain NCHW weights.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import sys

import pytest
import torch

from autokd.data import batches
from autokd.distill import Distiller, TeacherCache, make_pairs
from autokd.teacher import seeded_model
from autokd.train import TrainConfig, evaluate, fit

CUDA = torch.cuda.is_available()


@pytest.fixture()
def no_cuda(monkeypatch):
    """Every function and class of ``torch.cuda``, and ``torch.autocast``, raises when autokd's code
    calls it; torch's own internal calls (``manual_seed`` seeds CUDA lazily) pass through."""
    calls: list[str] = []

    def trap(name, original):
        @functools.wraps(original)
        def guarded(*args, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.split(".")[0] == "autokd":
                calls.append(f"{name} from {caller}")
                raise AssertionError(f"CUDA call on the CPU path: {name} from {caller}")
            return original(*args, **kwargs)
        return guarded

    for name, obj in list(vars(torch.cuda).items()):
        if not name.startswith("__") and (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
            monkeypatch.setattr(torch.cuda, name, trap(f"torch.cuda.{name}", obj))
    monkeypatch.setattr(torch, "autocast", trap("torch.autocast", torch.autocast))
    yield calls
    assert calls == []


def test_the_trap_catches_autokd_calls(no_cuda):
    with pytest.raises(AssertionError, match="torch.cuda.synchronize"):  # as if autokd.train called it
        exec("torch.cuda.synchronize()", {"__name__": "autokd.train", "torch": torch})
    with pytest.raises(AssertionError, match="torch.autocast"):
        exec("torch.autocast(device_type='cpu')", {"__name__": "autokd.train", "torch": torch})
    no_cuda.clear()


def _small(digits, n=256):
    return dataclasses.replace(digits, train_x=digits.train_x[:n], train_y=digits.train_y[:n],
                               val_x=digits.val_x[:64], val_y=digits.val_y[:64])


def _distill_fit(data, cfg: TrainConfig, device: str = "cpu") -> tuple[list[dict], Distiller]:
    kw = dict(num_classes=data.num_classes, in_channels=data.in_channels)
    teacher = seeded_model("resnet20", 7, width=0.25, **kw).to(device).eval()
    student = seeded_model("convverytiny", 11, width=0.5, **kw).to(device)
    d = Distiller(student, teacher, lambdas=make_pairs("diag", 3, 3), probe_x=data.train_x[:64].to(device),
                  cache_x=data.train_x)
    hist = fit(student, data, cfg, loss_fn=d.loss, params=[*student.parameters(), *d.pair_parameters()],
               device=device)
    return hist, d


def test_gpu_options_on_cpu_call_no_cuda_and_change_no_number(digits, no_cuda):
    data = _small(digits)
    plain, d_plain = _distill_fit(data, TrainConfig(epochs=2, seed=1, amp=False, channels_last=False))
    gpu_opts, d_gpu = _distill_fit(data, TrainConfig(epochs=2, seed=1, amp=True, channels_last=True))
    assert gpu_opts == plain  # bit for bit: amp and channels_last are CUDA-only
    assert d_gpu.cache.hits > 0 and d_gpu.cache.misses == 0  # the cached teacher outputs were used
    student = d_gpu.student
    assert all(p.is_contiguous() for p in student.parameters())
    assert 0.0 <= evaluate(student, data.val_x, data.val_y) <= 1.0
    xs = [xb for xb, _ in batches(data.train_x, data.train_y, 64, shuffle=True,
                                  generator=torch.Generator().manual_seed(0), augment="crop_flip")]
    assert sum(len(x) for x in xs) == len(data.train_x)


def test_amp_default_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("AUTOKD_AMP", raising=False)
    assert TrainConfig().amp is False
    monkeypatch.setenv("AUTOKD_AMP", "1")
    assert TrainConfig().amp is True and TrainConfig(amp=False).amp is False
    assert "amp" in TrainConfig().as_dict() and "channels_last" in TrainConfig().as_dict()


def test_teacher_cache_finds_rows_in_any_order_and_misses_others(digits):
    images = digits.train_x[:300]
    cache = TeacherCache(lambda x: (x.flatten(1)[:, :10] * 2, {"f": x[:, :, :2, :2]}), images)
    rows = torch.tensor([299, 0, 17, 17, 150])
    logits, feats = cache.lookup(images[rows])
    assert torch.equal(logits, images[rows].flatten(1)[:, :10] * 2)
    assert torch.equal(feats["f"], images[rows][:, :, :2, :2])
    changed = images[rows].clone()
    changed[2, 0, 3, 3] += 1e-3  # one value of one image differs: the whole batch runs live
    assert cache.lookup(changed) is None
    assert cache.lookup(images[:0]) is None and cache.lookup(torch.zeros(2, 1, 4, 4)) is None
    assert (cache.hits, cache.misses) == (1, 3)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device (benchmarks/gpu_protocol.sh runs it there)")
@pytest.mark.parametrize("amp", [False, True])
def test_on_cuda_training_stays_on_the_gpu_and_returns_nchw_weights(digits, amp):
    data = _small(digits)
    hist, d = _distill_fit(data, TrainConfig(epochs=2, seed=1, amp=amp), device="cuda")
    assert len(hist) == 2 and all(h["loss"] == h["loss"] for h in hist)  # finite, not NaN
    assert d.cache.hits > 0 and d.cache.logits.is_cuda and d.cache.images.is_cuda
    assert all(p.is_contiguous() and p.is_cuda for p in d.student.parameters())
