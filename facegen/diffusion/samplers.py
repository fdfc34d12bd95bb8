"""Samplers as Python generators: each yields a `Step` (i of n, x_t, predicted x0) after every update.

The app streams frames straight from them; the CLI keeps the last one. All noise comes from one
generator per image (`gens[k]` for image k), so image k is the same whatever batch it is in.
`eps_fn(x, t)` / `score_fn(x, t)` close over the network, the condition and classifier-free guidance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from facegen.diffusion.ddpm import x0_from_eps
from facegen.diffusion.sde import SDE, VPSDE, x0_from_score
from facegen.runtime import randn_per_image

NetFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Step:
    """State after step `index` of `total`: (B, 3, H, W) x_t and predicted x0; `nfe` evaluations so far."""

    index: int
    total: int
    x_t: torch.Tensor
    x0: torch.Tensor
    nfe: int


def _batch_t(t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(t, device=x.device).expand(x.shape[0])


def ddpm_sample(
    eps_fn: NetFn,
    scheduler: SchedulerMixin,
    alpha_bar: torch.Tensor,
    x_T: torch.Tensor,
    gens: Sequence[torch.Generator],
    steps: int,
) -> Iterator[Step]:
    """Any diffusers epsilon scheduler (DDPM ancestral, DDIM, DPM-Solver++) driven step by step."""
    scheduler.set_timesteps(steps)
    x = x_T * scheduler.init_noise_sigma
    timesteps = scheduler.timesteps
    for i, t in enumerate(timesteps):
        eps = eps_fn(x, _batch_t(t, x)).float()
        x0 = x0_from_eps(x, eps, alpha_bar[int(t)]).clamp(-1, 1)
        x = scheduler.step(eps, t, x, generator=list(gens)).prev_sample
        yield Step(i + 1, len(timesteps), x, x0, i + 1)


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> torch.Tensor:
    """EDM's noise levels (eq. 5): steps levels from sigma_max to sigma_min, spaced uniformly in
    sigma^(1/rho), then 0."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    inv = sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    return torch.cat([inv**rho, torch.zeros(1, dtype=torch.float64)]).float()


def vp_sigmas(beta_min: float, beta_max: float, sigma_max: float, steps: int) -> torch.Tensor:
    """The DDPM's spacing as noise levels: steps levels uniform in the VP-SDE's time t (beta linear from
    beta_min to beta_max), from the t where sigma = sigma_max down to 1/steps of it, as diffusers'
    "linspace" timesteps (999, 899, ..., 100 for 10 steps of 1000), then 0; sigma^2 = 1 / alpha_bar(t) - 1."""
    d = beta_max - beta_min
    t_max = (-beta_min + math.sqrt(beta_min**2 + 2 * d * math.log1p(sigma_max**2))) / d
    t = torch.linspace(t_max, t_max / steps, steps, dtype=torch.float64)
    sigmas = torch.expm1(0.5 * t**2 * d + t * beta_min).sqrt()
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)]).float()


def edm_heun(denoise_fn: NetFn, sigmas: torch.Tensor, x_T: torch.Tensor) -> Iterator[Step]:
    """EDM's deterministic sampler (Karras et al. 2022, alg. 1): Heun's method on the probability-flow
    ODE dx/dsigma = (x - D(x; sigma)) / sigma of a VE process, Euler on the last step to sigma = 0.
    `denoise_fn(x, sigma)` is D; x_T is the prior draw, already of std sigmas[0]. 2 n - 1 evaluations."""
    x, nfe, n = x_T, 0, len(sigmas) - 1
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = denoise_fn(x, _batch_t(s, x)).float()
        d = (x - x0) / s
        x_next = x + (s_next - s) * d
        nfe += 1
        if s_next > 0:
            d_next = (x_next - denoise_fn(x_next, _batch_t(s_next, x)).float()) / s_next
            x_next = x + (s_next - s) * 0.5 * (d + d_next)
            nfe += 1
        x = x_next
        yield Step(i + 1, n, x, x0.clamp(-1, 1), nfe)


def edm_dpmpp_2m(denoise_fn: NetFn, sigmas: torch.Tensor, x_T: torch.Tensor) -> Iterator[Step]:
    """DPM-Solver++(2M) (Lu et al. 2022) on the same probability-flow ODE as `edm_heun`: exact in the
    linear part, in lambda = -ln(sigma), with the denoiser extrapolated linearly from the last two
    evaluations. Second order at one evaluation per step, so n steps cost n evaluations where Heun's
    cost 2 n - 1: it buys finer steps at Heun's cost. The first step is first order (no history) and the
    last returns the denoiser's estimate (sigma = 0)."""
    x, previous, h_last, n = x_T, None, None, len(sigmas) - 1
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = denoise_fn(x, _batch_t(s, x)).float()
        if s_next == 0:
            x = x0
        else:
            h = torch.log(s / s_next)  # the step in lambda
            d = x0
            if previous is not None and h_last is not None:
                r = h_last / h  # ratio of the last step to this one
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous
            x = (s_next / s) * x - torch.expm1(-h) * d
            h_last = h
        previous = x0
        yield Step(i + 1, n, x, x0.clamp(-1, 1), i + 1)


def sde_times(sde: SDE, steps: int, device: torch.device) -> torch.Tensor:
    """steps + 1 times from 1 down to sde.t_min, uniformly spaced."""
    return torch.linspace(1.0, sde.t_min, steps + 1, device=device)


def euler_maruyama(
    score_fn: NetFn, sde: SDE, x_T: torch.Tensor, gens: Sequence[torch.Generator], steps: int
) -> Iterator[Step]:
    """Reverse-time SDE (eq. 6), dx = [f - g^2 score] dt + g dw_bar, with dt < 0; no noise on the last step."""
    ts = sde_times(sde, steps, x_T.device)
    x = x_T
    for i in range(steps):
        t, dt = _batch_t(ts[i], x), ts[i + 1] - ts[i]
        x, x0 = _reverse_step(score_fn, sde, x, t, dt, gens, last=i == steps - 1)
        yield Step(i + 1, steps, x, x0, i + 1)


def _reverse_step(
    score_fn: NetFn,
    sde: SDE,
    x: torch.Tensor,
    t: torch.Tensor,
    dt: torch.Tensor,
    gens: Sequence[torch.Generator],
    last: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Euler–Maruyama step of the reverse SDE; returns (x_{t+dt}, Tweedie x0 at t)."""
    score = score_fn(x, t).float()
    g = sde.diffusion(t).reshape(-1, 1, 1, 1)
    x_mean = x + (sde.drift(x, t) - g**2 * score) * dt
    x0 = x0_from_score(sde, x, t, score).clamp(-1, 1)
    if last:
        return x_mean, x0
    return x_mean + g * (-dt).sqrt() * randn_per_image(gens, x.shape[1:], x.device), x0


def _langevin(
    score_fn: NetFn,
    sde: SDE,
    x: torch.Tensor,
    t: torch.Tensor,
    dt: torch.Tensor,
    gens: Sequence[torch.Generator],
    snr: float,
) -> torch.Tensor:
    """One Langevin corrector step with the step size set by the signal-to-noise ratio (Song, alg. 4/5)."""
    score = score_fn(x, t).float()
    z = randn_per_image(gens, x.shape[1:], x.device)
    # Song et al. use alpha_i = 1 - beta_i; exp(-beta dt) is the same to first order and stays positive for coarse grids.
    alpha = torch.exp(-sde.beta(t) * (-dt)) if isinstance(sde, VPSDE) else torch.ones_like(t)
    grad_norm = score.flatten(1).norm(dim=1)
    noise_norm = z.flatten(1).norm(dim=1)
    step = (2 * alpha * (snr * noise_norm / grad_norm.clamp_min(1e-12)) ** 2).reshape(-1, 1, 1, 1)
    return x + step * score + (2 * step).sqrt() * z


def predictor_corrector(
    score_fn: NetFn,
    sde: SDE,
    x_T: torch.Tensor,
    gens: Sequence[torch.Generator],
    steps: int,
    snr: float = 0.16,
) -> Iterator[Step]:
    """PC sampling: a Langevin corrector, then an Euler–Maruyama predictor, at every time (2 NFE/step)."""
    ts = sde_times(sde, steps, x_T.device)
    x = x_T
    for i in range(steps):
        t, dt = _batch_t(ts[i], x), ts[i + 1] - ts[i]
        x = _langevin(score_fn, sde, x, t, dt, gens, snr)
        x, x0 = _reverse_step(score_fn, sde, x, t, dt, gens, last=i == steps - 1)
        yield Step(i + 1, steps, x, x0, 2 * (i + 1))


def probability_flow(score_fn: NetFn, sde: SDE, x_T: torch.Tensor, steps: int) -> Iterator[Step]:
    """The probability-flow ODE dx/dt = f - 1/2 g^2 score (eq. 13), Heun's method, Euler on the last step."""
    ts = sde_times(sde, steps, x_T.device)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        score = score_fn(x, t).float()
        g = sde.diffusion(t).reshape(-1, 1, 1, 1)
        return sde.drift(x, t) - 0.5 * g**2 * score, score

    x, nfe = x_T, 0
    for i in range(steps):
        t, t_next, dt = _batch_t(ts[i], x), _batch_t(ts[i + 1], x), ts[i + 1] - ts[i]
        d, score = velocity(x, t)
        x0 = x0_from_score(sde, x, t, score).clamp(-1, 1)
        x_euler = x + d * dt
        nfe += 1
        if i < steps - 1:
            d_next, _ = velocity(x_euler, t_next)
            nfe += 1
            x = x + 0.5 * (d + d_next) * dt
        else:
            x = x_euler
        yield Step(i + 1, steps, x, x0, nfe)
