"""Score-based SDEs (Song et al. 2021): the VP and VE forward processes and denoising score matching.

An `SDE` is dx = f(x, t) dt + g(t) dw on t in [0, 1] with a Gaussian marginal
p_t(x | x0) = N(mean_coef(t) x0, std(t)^2 I). The score net is called with std(t) as its time input
(see `facegen.nets.unet`), so ``score(x, t) = net(x, std(t), cond)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from facegen.config import SDEConfig


def _col(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, 1, 1, 1)


class VPSDE:
    """Variance preserving (eq. 11): dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw, beta linear in t."""

    t_min = 1e-3

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        self.beta_min, self.beta_max = beta_min, beta_max

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_mean_coef(self, t: torch.Tensor) -> torch.Tensor:
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def mean_coef(self, t: torch.Tensor) -> torch.Tensor:
        return self.log_mean_coef(t).exp()

    def std(self, t: torch.Tensor) -> torch.Tensor:
        return (-torch.expm1(2 * self.log_mean_coef(t))).sqrt()

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -0.5 * _col(self.beta(t)) * x

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta(t).sqrt()

    def prior_std(self) -> float:
        return 1.0


class VESDE:
    """Variance exploding (eq. 9): dx = sigma(t) sqrt(2 log(smax/smin)) dw, sigma(t) = smin (smax/smin)^t."""

    t_min = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def mean_coef(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t)

    def std(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return self.std(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

    def prior_std(self) -> float:
        return self.sigma_max


SDE = VPSDE | VESDE


def make_sde(cfg: SDEConfig) -> SDE:
    """The forward process; "edm" is the VE process over EDM's noise range (`facegen.diffusion.edm`)."""
    match cfg.kind:
        case "vp":
            return VPSDE(cfg.beta_min, cfg.beta_max)
        case "ve" | "edm":
            return VESDE(cfg.sigma_min, cfg.sigma_max)
    raise ValueError(f"unknown SDE kind {cfg.kind!r}")


def marginal(sde: SDE, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """A draw of x_t ~ p_t(x | x0) from standard normal `noise`."""
    return _col(sde.mean_coef(t)).to(x0) * x0 + _col(sde.std(t)).to(x0) * noise


def clip_score(sde: SDE, x_t: torch.Tensor, t: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """The score whose Tweedie estimate E[x0 | x_t] is clipped to the data range [-1, 1].

    Written as a correction, score + mean_coef (clip(x0) - x0) / std^2, so pixels already in range keep
    their score bit for bit (no cancellation at small std).
    """
    x0 = x0_from_score(sde, x_t, t, score)
    return score + _col(sde.mean_coef(t)).to(x_t) * (x0.clamp(-1, 1) - x0) / _col(sde.std(t)).to(x_t) ** 2


def x0_from_score(sde: SDE, x_t: torch.Tensor, t: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """Tweedie's formula: E[x0 | x_t] = (x_t + std^2 score) / mean_coef."""
    return (x_t + _col(sde.std(t)).to(x_t) ** 2 * score) / _col(sde.mean_coef(t)).to(x_t)


def dsm_loss(net: nn.Module, sde: SDE, x0: torch.Tensor, cond: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Denoising score matching with lambda(t) = std(t)^2 (eq. 7): E ||std * s(x_t, t) + z||^2."""
    b = x0.shape[0]
    t = torch.rand(b, generator=gen) * (1 - sde.t_min) + sde.t_min
    z = torch.randn(x0.shape, generator=gen).to(x0)
    t = t.to(x0.device)
    x_t = marginal(sde, x0, t, z)
    std = sde.std(t)
    score = net(x_t, std, cond).float()
    return ((_col(std) * score + z) ** 2).mean()
