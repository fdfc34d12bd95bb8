"""EDM preconditioning and loss for the score family (Karras et al. 2022, table 1).

The process is VE, x = x0 + sigma n. The raw network F is wrapped into a denoiser
D(x; sigma) = c_skip x + c_out F(c_in x; sigma) whose input and training target both have unit variance
at every noise level, and the loss lambda(sigma) ||D - x0||^2 with lambda = 1 / c_out^2 is, written on F,
the plain ||F - (x0 - c_skip x) / c_out||^2. The score follows from D by Tweedie: (D - x) / sigma^2.

How F is read off the U-Net depends on its time embedding (`SDEConfig.time_embedding`). With Fourier
features the U-Net is called with sigma and divides its output by it, so F = sigma * net(c_in x, sigma,
cond) undoes that division; with the positional embedding it is called with EDM's c_noise = ln(sigma) / 4
and F = net(c_in x, c_noise, cond).
"""

from __future__ import annotations

import torch
from torch import nn

from facegen.config import SDEConfig

VP_T_MIN = 1e-3  # the VP-SDE's first time (`sde.VPSDE.t_min`; a sibling module, so not imported)


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, 1, 1, 1).to(like)


def coefficients(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in) at (B,) noise levels sigma."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1 / total.sqrt()


def raw_output(net: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, cfg: SDEConfig):
    """F(c_in x; sigma): the U-Net's preconditioned output, in float32."""
    _, _, c_in = coefficients(sigma, cfg.sigma_data)
    if cfg.time_embedding == "positional":
        return net(_col(c_in, x) * x, sigma.log() / 4, cond).float()
    return _col(sigma, x) * net(_col(c_in, x) * x, sigma, cond).float()


def denoise(net: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, cfg: SDEConfig) -> torch.Tensor:
    """D(x; sigma), the estimate of x0 for (B, 3, H, W) x at (B,) sigma."""
    c_skip, c_out, _ = coefficients(sigma, cfg.sigma_data)
    return _col(c_skip, x) * x.float() + _col(c_out, x) * raw_output(net, x, sigma, cond, cfg)


def training_sigmas(cfg: SDEConfig, b: int, gen: torch.Generator, log_sigma_shift: float = 0.0) -> torch.Tensor:
    """(B,) noise levels to train on (`SDEConfig.noise_levels`), ln sigma shifted by log_sigma_shift."""
    if cfg.noise_levels == "vp":  # the VP-SDE's alpha_bar(t) = exp(-t^2 (beta_max - beta_min) / 2 - t beta_min)
        t = torch.rand(b, generator=gen) * (1 - VP_T_MIN) + VP_T_MIN
        log_alpha_bar = -0.5 * t**2 * (cfg.beta_max - cfg.beta_min) - t * cfg.beta_min
        log_sigma = 0.5 * torch.log(torch.expm1(-log_alpha_bar))  # sigma^2 = 1 / alpha_bar - 1
    else:
        log_sigma = torch.randn(b, generator=gen) * cfg.p_std + cfg.p_mean
    return (log_sigma + log_sigma_shift).exp()


def loss_weights(cfg: SDEConfig, sigma: torch.Tensor) -> torch.Tensor:
    """(B,) weights of the squared error on F: 1 for EDM's lambda = 1 / c_out^2; for min-SNR-gamma the
    error on x0 weighted by min(1 / sigma^2, gamma), i.e. on F by that times c_out^2."""
    if cfg.loss_weight == "edm":
        return torch.ones_like(sigma)
    _, c_out, _ = coefficients(sigma, cfg.sigma_data)
    return (1 / sigma**2).clamp(max=cfg.min_snr_gamma) * c_out**2


def edm_loss(
    net: nn.Module,
    cfg: SDEConfig,
    x0: torch.Tensor,
    cond: torch.Tensor,
    gen: torch.Generator,
    log_sigma_shift: float = 0.0,
) -> torch.Tensor:
    """E w(sigma) ||F - (x0 - c_skip x) / c_out||^2 over the training noise levels (`training_sigmas`), for
    (B, 3, H, W) x0 in [-1, 1]; the shift is ln(side / trained side) for images at another resolution."""
    b = x0.shape[0]
    sigma = training_sigmas(cfg, b, gen, log_sigma_shift).to(x0.device)
    n = torch.randn(x0.shape, generator=gen).to(x0)
    x = x0 + _col(sigma, x0) * n
    c_skip, c_out, _ = coefficients(sigma, cfg.sigma_data)
    target = (x0.float() - _col(c_skip, x) * x.float()) / _col(c_out, x)
    per_sample = ((raw_output(net, x, sigma, cond, cfg) - target) ** 2).mean(dim=(1, 2, 3))
    return (loss_weights(cfg, sigma).to(per_sample) * per_sample).mean()
