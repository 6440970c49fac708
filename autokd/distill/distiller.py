"""The distiller: a student, a frozen teacher, and the weighted feature pairs between them.

    L = beta * L_task + (1 - beta) * sum_{ij active} lambda_ij * L_pair(t_i, s_j)
    L_task = (1 - alpha) * CE(s, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))

(``losses.task_loss``; alpha is the candidate's ``kd_alpha``, default 0.5.) beta weighs the task against the feature terms, so while
no pair is active (pairing "none", every lambda 0, stage 1 of two-stage, the end of a
curriculum) the loss is L_task itself, not beta * L_task; beta = 1 gives exactly L_task. A pair
with lambda_ij = 0, or any pair when beta = 1, is dropped at construction: no regressor, no
hook, no feature kept. Features are captured with forward hooks on the models' ``.points``
modules that live only for the duration of one forward pass, so neither model keeps a hook.

Teacher outputs: the teacher runs in eval mode under ``no_grad``. Given ``cache_x`` (the training
images, for datasets without augmentation) its logits and the features the pairs need are
computed once for every image and looked up by the image's exact values; a batch with any image
not found (or an estimated cache above CACHE_BUDGET_BYTES) runs the teacher live. Both paths give
the same eval-mode outputs, up to float rounding of the batch size. The cache lives on the device
of its first lookup (the GPU's memory when training there) and a lookup copies nothing to the host.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..models import tags
from .losses import KD_ALPHA, VIDLoss, task_loss
from .pairing import check_lambdas, split_key

CACHE_BUDGET_BYTES = 512 * 2**20  # teacher outputs of every training image kept in memory up to this
_CHUNK = 512  # images per teacher forward when filling the cache or probing


@contextlib.contextmanager
def capture(model: nn.Module, names: list[str]) -> Iterator[dict[str, Tensor]]:
    """Outputs of the named submodules during the forward passes inside the ``with`` block."""
    feats: dict[str, Tensor] = {}
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: feats.__setitem__(n, out))
               for n in names]
    try:
        yield feats
    finally:
        for h in handles:
            h.remove()


def _module_key(pair: str) -> str:  # "t3->s2" -> "t3_s2" (ModuleDict keys may not hold '.')
    i, j = split_key(pair)
    return f"t{i}_s{j}"


def _fingerprints(x: Tensor, weights: Tensor) -> Tensor:
    """One int64 per image from its exact float32 bits: sum of bits x fixed random weights.

    Integer sums are exact in any order, so equal images give equal keys on any device; two
    different images share a key only by a rare coincidence, and every hit is checked against the
    stored images anyway. ``weights`` are small enough (see ``TeacherCache``) that nothing overflows.
    """
    return (x.detach().float().flatten(1).view(torch.int32).to(torch.int64) * weights).sum(1)


class TeacherCache:
    """Eval-mode teacher outputs of a fixed image set, looked up by each image's exact values.

    Filled at the first lookup, on that batch's device: images, outputs and a sorted table of
    per-image fingerprints all stay there, so a lookup is a search on the device plus one check
    (the one value read back: hit or miss) instead of a copy of the batch to the host.
    """

    def __init__(self, run: Callable[[Tensor], tuple[Tensor, dict[str, Tensor]]], images: Tensor) -> None:
        self._run, self.images = run, images.detach()
        self._keys: Tensor | None = None  # sorted fingerprints of self.images, and their rows
        self._rows: Tensor | None = None
        self.logits: Tensor | None = None
        self.feats: dict[str, Tensor] = {}
        self.hits = self.misses = 0
        per_image = max(1, self.images[:1].numel())
        # |bits| < 2^31, so weights below 2^(31 - log2(values per image)) keep every sum in int64
        bits = max(1, 31 - per_image.bit_length())
        self._weights = torch.randint(1, 2 ** bits, (per_image,), generator=torch.Generator().manual_seed(0))

    def _fill(self, device: torch.device) -> None:
        self.images, self._weights = self.images.to(device), self._weights.to(device)
        outs = [self._run(self.images[i:i + _CHUNK]) for i in range(0, len(self.images), _CHUNK)]
        self.logits = torch.cat([lo for lo, _ in outs])
        self.feats = {n: torch.cat([f[n] for _, f in outs]) for n in outs[0][1]}
        self._keys, self._rows = torch.sort(_fingerprints(self.images, self._weights))

    def lookup(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]] | None:
        if self._keys is None:
            self._fill(x.device)
        keys, rows, logits = self._keys, self._rows, self.logits
        assert keys is not None and rows is not None and logits is not None  # set by _fill
        if len(x) == 0 or x.shape[1:] != self.images.shape[1:]:
            self.misses += 1
            return None
        pos = torch.searchsorted(keys, _fingerprints(x, self._weights)).clamp_(max=len(keys) - 1)
        idx = rows[pos]
        if not torch.equal(self.images[idx], x.detach()):  # an image not cached, or a coincidence
            self.misses += 1
            return None
        self.hits += 1
        return logits[idx], {n: f[idx] for n, f in self.feats.items()}


class Distiller(nn.Module):
    """Student + frozen teacher + per-pair losses; ``loss(x, y) -> (total, student_logits)``.

    ``lambdas``: ``{"t3->s2": weight}`` (1-based ``.points`` of teacher and student).
    ``pair_loss``: a class from ``PAIR_LOSSES`` (resolved by the caller, not a string).
    ``probe_x``: a batch of training images, used once to learn the point shapes (both models in
    eval mode, so BN statistics are untouched) and as the teacher sample of ``AlignedLoss``.
    ``cache_x``: the training images, to cache the teacher's outputs for (no augmentation only);
    ``cache``: an existing :class:`TeacherCache` of the same teacher and pairs, reused as is.
    ``seed``: initialises the regressors (global RNG untouched). ``extra_loss``: added to the
    total at every step (the hook for a pruning phase's sparsity term).
    Only the student and the pair modules are submodules: ``parameters()`` never holds the teacher.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, *, lambdas: dict[str, float],
                 pair_loss: type[nn.Module] = VIDLoss, beta: float = 0.5, temperature: float = 4.0,
                 probe_x: Tensor, cache_x: Tensor | None = None, cache: TeacherCache | None = None, seed: int = 0,
                 alpha: float = KD_ALPHA, extra_loss: Callable[[], Tensor] | None = None) -> None:
        super().__init__()
        self.student = student
        self._teacher = (teacher.eval(),)  # a tuple: not a submodule, so never trained or saved
        self.beta, self.temperature, self.alpha, self.extra_loss = beta, temperature, alpha, extra_loss
        t_points, s_points = tags(teacher).points, tags(student).points
        lambdas = check_lambdas(lambdas, len(t_points), len(s_points))
        self.weights = {k: w for k, w in lambdas.items() if w > 0 and beta < 1}
        self.links = {k: (t_points[i - 1], s_points[j - 1]) for k in self.weights for i, j in [split_key(k)]}
        self.teacher_points = sorted({t for t, _ in self.links.values()}, key=t_points.index)
        self.pairs = nn.ModuleDict()
        if self.weights:
            self._build_pairs(pair_loss, probe_x, seed)
        self.active: set[str] = set(self.weights)
        if cache is None and cache_x is not None and self._fits(cache_x):
            cache = TeacherCache(self._run_teacher, cache_x)
        self.cache = cache
        self._sums: dict[str, Tensor] = {}
        self._count = 0
        self.to(probe_x.device)

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    # ------------------------------------------------------------ construction
    def _build_pairs(self, pair_loss: type[nn.Module], probe_x: Tensor, seed: int) -> None:
        s_feats, t_feats = self._probe(probe_x)
        self._shapes = {n: tuple(f.shape[1:]) for n, f in {**s_feats, **t_feats}.items()}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for key, (t_name, s_name) in self.links.items():
                self.pairs[_module_key(key)] = pair_loss(
                    s_feats[s_name].shape[1], t_feats[t_name].shape[1], teacher_sample=t_feats[t_name])

    @torch.no_grad()
    def _probe(self, x: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        was = self.student.training
        self.student.eval()
        try:
            with capture(self.student, sorted({s for _, s in self.links.values()})) as s_feats:
                self.student(x)
        finally:
            self.student.train(was)
        return s_feats, self._run_teacher(x)[1]

    def _fits(self, images: Tensor) -> bool:
        per_image = sum(torch.Size(self._shapes[n]).numel() for n in self.teacher_points) if self.weights else 0
        return 4 * len(images) * (per_image + 1024) <= CACHE_BUDGET_BYTES  # 1024: room for the logits

    @torch.no_grad()
    def _run_teacher(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        teacher = self.teacher.eval()
        with capture(teacher, self.teacher_points) as feats:
            logits = teacher(x)
        return logits, dict(feats)

    # ------------------------------------------------------------ training
    def pair_parameters(self) -> list[nn.Parameter]:
        return list(self.pairs.parameters())

    def set_active(self, keys: set[str] | None) -> None:
        """Switch the feature pairs on (``None`` = all of them) or off (an empty set)."""
        self.active = set(self.weights) if keys is None else set(keys) & set(self.weights)

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The total loss of one batch and the student's logits (``fit``'s ``loss_fn``)."""
        active = [k for k in self.weights if k in self.active]
        with capture(self.student, sorted({self.links[k][1] for k in active})) as s_feats:
            logits = self.student(x)
        if self.alpha == 0 and not active:  # labels only: the teacher's outputs would be multiplied by 0
            task = F.cross_entropy(logits, y)
            parts = {"task": task, "ce": task}
        else:
            cached = self.cache.lookup(x) if self.cache is not None else None
            t_logits, t_feats = cached if cached is not None else self._run_teacher(x)
            task, ce, kd = task_loss(logits, t_logits, y, self.temperature, self.alpha)
            parts = {"task": task, "ce": ce, "kd": kd}
        total = task
        if active:
            feat: Tensor | float = 0.0
            for k in active:
                t_name, s_name = self.links[k]
                parts[k] = self.pairs[_module_key(k)](s_feats[s_name], t_feats[t_name])
                feat = feat + self.weights[k] * parts[k]
            parts["features"] = cast(Tensor, feat)  # active is not empty
            total = self.beta * task + (1 - self.beta) * feat
        if self.extra_loss is not None:
            parts["extra"] = self.extra_loss()
            total = total + parts["extra"]
        self._accumulate(parts, len(y))
        return total, logits

    def _accumulate(self, parts: dict[str, Tensor], n: int) -> None:
        for k, v in parts.items():
            self._sums[k] = self._sums.get(k, 0.0) + v.detach() * n
        self._count += n

    def epoch_parts(self) -> dict[str, float]:
        """Sample-weighted means of the loss parts since the last call (then reset)."""
        out = {k: float(v) / max(1, self._count) for k, v in self._sums.items()}
        self._sums, self._count = {}, 0
        return out
