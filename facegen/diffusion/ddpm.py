"""DDPM (Ho et al. 2020): the discrete noise schedule, the epsilon loss, and the diffusers schedulers.

The U-Net's output *is* epsilon here. `x0_from_eps` inverts eq. 4,
x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, to give the predicted clean image.
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


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t: torch.Tensor) -> torch.Tensor:
    """Predicted x0 from (B, C, H, W) x_t and eps at (B,) or scalar alpha_bar_t."""
    a = alpha_bar_t.reshape(-1, 1, 1, 1).to(x_t)
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def ddpm_loss(
    net: nn.Module, x0: torch.Tensor, cond: torch.Tensor, alpha_bar: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """L_simple (eq. 14): E_{t, eps} ||eps - eps_theta(x_t, t)||^2 for (B, 3, H, W) x0 in [-1, 1]."""
    b = x0.shape[0]
    t = torch.randint(0, alpha_bar.numel(), (b,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen).to(x0)
    a = alpha_bar[t].to(x0.device).reshape(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    pred = net(x_t, t.to(x0.device), cond)
    return torch.nn.functional.mse_loss(pred.float(), eps)
