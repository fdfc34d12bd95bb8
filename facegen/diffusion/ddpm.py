"""DDPM (Ho et al. 2020): the discrete noise schedule, its loss, and the diffusers schedulers.

The U-Net predicts epsilon or v = sqrt(a) eps - sqrt(1 - a) x0 (`DDPMConfig.prediction`, a = alpha_bar_t).
`eps_from_output` turns either into epsilon, so the samplers and guidance only ever see epsilon;
`x0_from_eps` inverts eq. 4, x_t = sqrt(a) x0 + sqrt(1 - a) eps, to give the predicted clean image.
"""

from __future__ import annotations

from typing import Literal

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import nn

from facegen.config import DDPMConfig

DDPMSampler = Literal["ancestral", "ddim", "dpmpp"]


def train_scheduler(cfg: DDPMConfig) -> DDPMScheduler:
    schedule = {"linear": "linear", "cosine": "squaredcos_cap_v2"}[cfg.beta_schedule]
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=schedule)


def sampling_scheduler(cfg: DDPMConfig, sampler: DDPMSampler) -> SchedulerMixin:
    """A fresh scheduler per sampling run (diffusers schedulers keep per-run state).

    Every sampler keeps its denoised estimate x0 inside the data range [-1, 1]: DDPM and DDIM clip it
    (diffusers' clip_sample default), DPM-Solver++ thresholds it (the setting diffusers recommends for
    pixel-space models). Without that, the x0 = (x_t - sqrt(1 - a) eps) / sqrt(a) of a young model
    amplifies its eps error by 1/sqrt(a) ~ 150 at t = T and DPM-Solver++ diverges to saturated noise.
    """
    base = train_scheduler(cfg).config
    match sampler:
        case "ancestral":
            return DDPMScheduler.from_config(base)
        case "ddim":
            return DDIMScheduler.from_config(base)
        case "dpmpp":
            return DPMSolverMultistepScheduler.from_config(
                base, algorithm_type="dpmsolver++", solver_order=2, thresholding=True, sample_max_value=1.0
            )
    raise ValueError(f"unknown DDPM sampler {sampler!r}")


def alphas_cumprod(cfg: DDPMConfig) -> torch.Tensor:
    return train_scheduler(cfg).alphas_cumprod.float()


def _col(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return a.reshape(-1, 1, 1, 1).to(like)


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t: torch.Tensor) -> torch.Tensor:
    """Predicted x0 from (B, C, H, W) x_t and eps at (B,) or scalar alpha_bar_t."""
    a = _col(alpha_bar_t, x_t)
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def eps_from_output(
    prediction: Literal["epsilon", "v"], x_t: torch.Tensor, out: torch.Tensor, alpha_bar_t: torch.Tensor
) -> torch.Tensor:
    """The network's output as epsilon: itself, or from v as eps = sqrt(1 - a) x_t + sqrt(a) v."""
    if prediction == "epsilon":
        return out
    a = _col(alpha_bar_t, x_t)
    return (1 - a).sqrt() * x_t + a.sqrt() * out


def loss_weights(cfg: DDPMConfig, alpha_bar_t: torch.Tensor) -> torch.Tensor:
    """(B,) per-sample weights of the squared error on the prediction (see `DDPMConfig`)."""
    if cfg.loss_weight == "uniform":
        return torch.ones_like(alpha_bar_t)
    snr = alpha_bar_t / (1 - alpha_bar_t)
    clipped = snr.clamp(max=cfg.min_snr_gamma)
    return clipped / snr if cfg.prediction == "epsilon" else clipped / (snr + 1)


def ddpm_loss(
    net: nn.Module,
    cfg: DDPMConfig,
    x0: torch.Tensor,
    cond: torch.Tensor,
    alpha_bar: torch.Tensor,
    gen: torch.Generator,
) -> torch.Tensor:
    """Weighted L_simple (eq. 14) on eps or v for (B, 3, H, W) x0 in [-1, 1]; uniform eps is Ho et al.'s."""
    b = x0.shape[0]
    t = torch.randint(0, alpha_bar.numel(), (b,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen).to(x0)
    a = alpha_bar[t]
    x_t = _col(a.sqrt(), x0) * x0 + _col((1 - a).sqrt(), x0) * eps
    pred = net(x_t, t.to(x0.device), cond).float()
    target = eps if cfg.prediction == "epsilon" else _col(a.sqrt(), x0) * eps - _col((1 - a).sqrt(), x0) * x0
    per_sample = ((pred - target.float()) ** 2).mean(dim=(1, 2, 3))
    return (loss_weights(cfg, a).to(per_sample) * per_sample).mean()
