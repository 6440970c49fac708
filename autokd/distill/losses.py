"""Distillation losses: Hinton's KD on the logits and the per-pair feature losses.

Every per-pair loss is an ``nn.Module`` built as ``cls(student_channels, teacher_channels,
teacher_sample=None)`` and called as ``loss(s, t) -> scalar``, where ``s`` (B, Cs, Hs, Ws) is a
student feature and ``t`` (B, Ct, Ht, Wt) a teacher feature (detached: the teacher is frozen).
Channels and spatial sizes may differ: both maps are first average-pooled to the smaller height
and the smaller width (:func:`align_spatial`), then the loss bridges the channels (a regressor,
a channel selection, or channel-free attention maps). A (B, C) feature counts as (B, C, 1, 1).

Registry (strings become objects once, at the edge):
  ``PAIR_LOSSES``   "vid" | "fitnet" | "at" | "aligned" -> the classes below
The logit term is :func:`kd_logits` (Hinton KD), mixed with cross-entropy by :func:`task_loss`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..registry import Registry

PAIR_LOSSES: Registry[type[nn.Module]] = Registry("feature distillation loss")

KD_ALPHA = 0.5  # default share of the soft-target term (Candidate.kd_alpha): the usual Hinton / RepDistiller mix
VID_INIT_VAR = 5.0  # initial per-channel variance of q(t|s), as in Ahn et al.'s code (init_pred_var)
VID_EPS = 1e-5  # floor of the learned variance


# ---------------------------------------------------------------- logits
def kd_logits(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton's soft-target loss WITHOUT the T^2 factor (the caller multiplies by T^2).

        kd = 1/B * sum_b KL( softmax(t_b / T) || softmax(s_b / T) )

    Golden value: student [1, 0], teacher [0, 1], T = 1 -> tanh(1/2) = 0.462117.
    """
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


def task_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float,
              alpha: float = KD_ALPHA) -> tuple[Tensor, Tensor, Tensor]:
    """The task loss of a distilled student: returns (L_task, CE, KD).

        L_task = (1 - alpha) * CE(s, y) + alpha * T^2 * kd_logits(s, t, T)

    ``alpha`` is the candidate's ``kd_alpha`` (default KD_ALPHA = 0.5; 0 = labels only).

    T^2 keeps the soft-target gradients on the scale of the CE gradients for any T (Hinton 2015).
    """
    ce = F.cross_entropy(student_logits, labels)
    kd = kd_logits(student_logits, teacher_logits, temperature)
    return (1 - alpha) * ce + alpha * temperature ** 2 * kd, ce, kd


# ---------------------------------------------------------------- feature helpers
def as_map(f: Tensor) -> Tensor:
    """(B, C) -> (B, C, 1, 1); (B, C, H, W) unchanged."""
    return f[:, :, None, None] if f.dim() == 2 else f


def align_spatial(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool both maps to (min(Hs, Ht), min(Ws, Wt)); a map already that size is kept."""
    s, t = as_map(s), as_map(t)
    size = (min(s.shape[2], t.shape[2]), min(s.shape[3], t.shape[3]))
    if tuple(s.shape[2:]) != size:
        s = F.adaptive_avg_pool2d(s, size)
    if tuple(t.shape[2:]) != size:
        t = F.adaptive_avg_pool2d(t, size)
    return s, t


def channel_energy(t_sample: Tensor) -> Tensor:
    """Mean activation energy of each channel, E_{b,h,w}[f^2], over a sample batch: (C,)."""
    return as_map(t_sample).detach().float().pow(2).mean(dim=(0, 2, 3))


# ---------------------------------------------------------------- per-pair losses
@PAIR_LOSSES.register("vid")
class VIDLoss(nn.Module):
    """Variational information distillation (Ahn et al., CVPR 2019), one (teacher, student) pair.

    q(t | s) = N(mu(s), diag(sigma^2)): mu is a regressor 1x1 conv (Cs -> Ct) -> ReLU -> 1x1 conv
    (Ct -> Ct) applied to the spatially aligned student map; sigma_c^2 = softplus(a_c) + VID_EPS
    is learned per teacher channel (init VID_INIT_VAR). With N = B * Ct * H * W elements,

        L_vid = 1/N * sum_{b,c,h,w} [ log sigma_c + (t_bchw - mu_bchw(s))^2 / (2 sigma_c^2) ]

    i.e. the Gaussian negative log-likelihood per element (without the constant log sqrt(2 pi));
    minimising it maximises the bound I(t; s) >= H(t) + E[log q(t|s)]. It may be negative.
    """

    def __init__(self, student_channels: int, teacher_channels: int, teacher_sample: Tensor | None = None):
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Conv2d(student_channels, teacher_channels, 1), nn.ReLU(),
            nn.Conv2d(teacher_channels, teacher_channels, 1))
        init = math.log(math.expm1(VID_INIT_VAR - VID_EPS))  # softplus(init) + eps = VID_INIT_VAR
        self.log_scale = nn.Parameter(torch.full((teacher_channels,), init))

    def forward(self, s: Tensor, t: Tensor) -> Tensor:
        s, t = align_spatial(s, t)
        mu = self.regressor(s)
        var = (F.softplus(self.log_scale) + VID_EPS)[None, :, None, None]
        return (0.5 * torch.log(var) + (t - mu).pow(2) / (2 * var)).mean()


@PAIR_LOSSES.register("fitnet")
class FitNetLoss(nn.Module):
    """FitNets hint (Romero et al., ICLR 2015): a 1x1 conv regressor Cs -> Ct, then

        L_fit = 1/(B * Ct * H * W) * || r(s) - t ||^2     (after spatial alignment)
    """

    def __init__(self, student_channels: int, teacher_channels: int, teacher_sample: Tensor | None = None):
        super().__init__()
        self.regressor = nn.Conv2d(student_channels, teacher_channels, 1)

    def forward(self, s: Tensor, t: Tensor) -> Tensor:
        s, t = align_spatial(s, t)
        return F.mse_loss(self.regressor(s), t)


def attention_map(f: Tensor) -> Tensor:
    """Spatial attention (Zagoruyko & Komodakis 2017): mean_c f^2, flattened, L2-normalised: (B, H*W)."""
    return F.normalize(as_map(f).pow(2).mean(dim=1).flatten(1), dim=1)


@PAIR_LOSSES.register("at")
class ATLoss(nn.Module):
    """Attention transfer, no parameters: after spatial alignment,

        L_at = 1/B * sum_b || a(s_b) - a(t_b) ||_2^2,   a = attention_map (unit vectors)

    so L_at = 2 - 2 cos(a_s, a_t) per image, in [0, 4] whatever the map size (the paper uses the
    unsquared norm with a weight of 1000 / 2; squared keeps the gradient smooth at 0).
    """

    def __init__(self, student_channels: int, teacher_channels: int, teacher_sample: Tensor | None = None):
        super().__init__()

    def forward(self, s: Tensor, t: Tensor) -> Tensor:
        s, t = align_spatial(s, t)
        return (attention_map(s) - attention_map(t)).pow(2).sum(dim=1).mean()


@PAIR_LOSSES.register("aligned")
class AlignedLoss(nn.Module):
    """Teacher alignment (InDistill, seed 003): no regressor; the teacher is narrowed to the student.

    k = min(Cs, Ct). The teacher side keeps the k channels of largest mean activation energy
    E[t_c^2] over ``teacher_sample`` (a fixed batch of training images; without a sample, the
    first k), in their original order; the student side uses its first k channels (a student
    channel's identity is arbitrary at initialisation, so training makes these k match). Then

        L_aligned = 1/(B * k * H * W) * || s[:, :k] - t[:, idx] ||^2   (after spatial alignment)

    This selects teacher channels instead of pruning and fine-tuning the teacher as the paper does.
    """

    teacher_channels: Tensor  # a buffer: the kept teacher channels, ascending

    def __init__(self, student_channels: int, teacher_channels: int, teacher_sample: Tensor | None = None):
        super().__init__()
        k = min(student_channels, teacher_channels)
        if teacher_sample is None:
            idx = torch.arange(k)
        else:
            idx = channel_energy(teacher_sample).topk(k).indices.sort().values.cpu()
        self.k = k
        self.register_buffer("teacher_channels", idx, persistent=False)

    def forward(self, s: Tensor, t: Tensor) -> Tensor:
        s, t = align_spatial(s, t)
        return F.mse_loss(s[:, :self.k], t.index_select(1, self.teacher_channels))
