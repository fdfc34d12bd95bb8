"""The SDE maths against closed forms, with an oracle: the exact score of a Gaussian."""

from __future__ import annotations

import pytest
import torch

from facegen.config import UNetConfig
from facegen.diffusion import samplers
from facegen.diffusion import sde as sde_module
from facegen.diffusion.sde import VESDE, VPSDE, dsm_loss, marginal, x0_from_score
from facegen.nets.unet import ConditionalUNet
from facegen.runtime import image_generators, randn_per_image

SDES = {"vp": VPSDE(0.1, 20.0), "ve": VESDE(0.01, 10.0)}


def integral(fn, t: float, n: int = 20_000) -> float:
    s = torch.linspace(0, t, n + 1, dtype=torch.float64)
    return torch.trapezoid(fn(s), s).item()


@pytest.mark.parametrize("t", [0.05, 0.3, 0.7, 1.0])
def test_vp_marginal_closed_form(t: float) -> None:
    sde = SDES["vp"]
    tt = torch.tensor([t], dtype=torch.float64)
    mean = torch.exp(torch.tensor(-0.5 * integral(sde.beta, t), dtype=torch.float64))
    assert torch.allclose(sde.mean_coef(tt), mean, rtol=1e-6)
    assert torch.allclose(sde.mean_coef(tt) ** 2 + sde.std(tt) ** 2, torch.ones(1, dtype=torch.float64))


@pytest.mark.parametrize("t", [0.05, 0.3, 0.7, 1.0])
def test_ve_marginal_closed_form(t: float) -> None:
    sde = SDES["ve"]
    var = sde.sigma_min**2 + integral(lambda s: sde.diffusion(s) ** 2, t)
    assert sde.std(torch.tensor([t], dtype=torch.float64)).item() ** 2 == pytest.approx(var, rel=1e-5)


@pytest.mark.parametrize("kind", ["vp", "ve"])
def test_forward_simulation_matches_marginal(kind: str) -> None:
    """Euler–Maruyama on the forward SDE from x0 = 1.5 reaches N(m(t) x0, std(t)^2)."""
    sde, n, steps, t_end = SDES[kind], 20_000, 400, 0.6
    g = torch.Generator().manual_seed(0)
    x = torch.full((n, 1, 1, 1), 1.5, dtype=torch.float64)
    dt = t_end / steps
    for i in range(steps):
        t = torch.full((n,), i * dt, dtype=torch.float64)
        x = (
            x
            + sde.drift(x, t) * dt
            + sde.diffusion(t).reshape(-1, 1, 1, 1) * dt**0.5 * torch.randn(x.shape, generator=g, dtype=torch.float64)
        )
    tt = torch.tensor([t_end], dtype=torch.float64)
    expected_std = (sde.std(tt) ** 2 - (sde.sigma_min**2 if kind == "ve" else 0)).sqrt()
    assert x.mean().item() == pytest.approx((sde.mean_coef(tt) * 1.5).item(), abs=0.03 * max(1, expected_std.item()))
    assert x.std().item() == pytest.approx(expected_std.item(), rel=0.03)


def gaussian_score(sde, mu: float, s: float):
    """Exact score of p_t when the data are N(mu, s^2 I): -(x - m mu) / (m^2 s^2 + std^2)."""

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m, sd = sde.mean_coef(t).reshape(-1, 1, 1, 1), sde.std(t).reshape(-1, 1, 1, 1)
        return -(x - m * mu) / (m**2 * s**2 + sd**2)

    return score


@pytest.mark.parametrize("kind", ["vp", "ve"])
@pytest.mark.parametrize("sampler", ["euler_maruyama", "predictor_corrector", "ode"])
def test_sampler_with_exact_score_reproduces_the_gaussian(kind: str, sampler: str) -> None:
    sde, mu, s, b, steps = SDES[kind], 0.7, 0.4, 400, 200
    gens = image_generators(range(b))
    x_T = randn_per_image(gens, (4, 4, 4), torch.device("cpu")) * sde.prior_std()
    score = gaussian_score(sde, mu, s)
    run = {
        "euler_maruyama": lambda: samplers.euler_maruyama(score, sde, x_T, gens, steps),
        "predictor_corrector": lambda: samplers.predictor_corrector(score, sde, x_T, gens, steps),
        "ode": lambda: samplers.probability_flow(score, sde, x_T, steps),
    }[sampler]
    frames = list(run())
    assert len(frames) == steps and frames[-1].index == steps
    x = frames[-1].x_t
    assert x.mean().item() == pytest.approx(mu, abs=0.03)
    assert x.std().item() == pytest.approx(s, rel=0.05)


def test_tweedie_with_exact_score_is_the_posterior_mean() -> None:
    sde, mu, s = SDES["vp"], 0.3, 0.5
    t = torch.tensor([0.5])
    x_t = torch.tensor([1.0]).reshape(1, 1, 1, 1)
    m, sd = sde.mean_coef(t), sde.std(t)
    post = mu + (m * s**2) / (m**2 * s**2 + sd**2) * (x_t.flatten() - m * mu)  # Gaussian conditioning
    got = x0_from_score(sde, x_t, t, gaussian_score(sde, mu, s)(x_t, t))
    assert got.flatten().item() == pytest.approx(post.item(), rel=1e-5)


def test_dsm_loss_is_minimised_by_the_exact_score() -> None:
    """For Gaussian data the exact score attains a lower DSM loss than a wrong one."""
    sde, mu, s = SDES["vp"], 0.2, 0.5
    x0 = mu + s * torch.randn(512, 1, 2, 2, generator=torch.Generator().manual_seed(0))

    class Exact(torch.nn.Module):
        def __init__(self, scale: float) -> None:
            super().__init__()
            self.scale = scale

        def forward(self, x, std, cond):  # VP: mean_coef = sqrt(1 - std^2)
            m = (1 - std**2).sqrt().reshape(-1, 1, 1, 1)
            return -self.scale * (x - m * mu) / (m**2 * s**2 + std.reshape(-1, 1, 1, 1) ** 2)

    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    exact = dsm_loss(Exact(1.0), sde, x0, None, gen())
    assert exact < dsm_loss(Exact(0.5), sde, x0, None, gen()) and exact < dsm_loss(Exact(1.5), sde, x0, None, gen())


def test_fourier_unet_divides_its_output_by_the_time_input() -> None:
    """Fed sigma, the Fourier U-Net returns raw / sigma: a score-scaled output (see nets/unet.py)."""
    net = ConditionalUNet(
        UNetConfig(block_out_channels=(8, 16), layers_per_block=1, attention_levels=()),
        16,
        3,
        "fourier",
        fourier_scale=16.0,
    ).eval()
    raw = {}
    net.unet.conv_out.register_forward_hook(lambda m, i, o: raw.setdefault("out", o))
    x, sigma = torch.randn(2, 3, 16, 16), torch.tensor([0.5, 4.0])
    cond = torch.zeros(2, 4)
    out = net(x, sigma, cond)
    assert torch.allclose(out, raw["out"] / sigma.reshape(-1, 1, 1, 1), atol=1e-6)
    assert "unet.time_proj.weight" in net.state_dict()  # the random Fourier weights travel in checkpoints


def test_marginal_draw() -> None:
    sde = SDES["ve"]
    x0, z = torch.ones(2, 1, 1, 1), torch.ones(2, 1, 1, 1)
    t = torch.tensor([0.0, 1.0])
    assert torch.allclose(marginal(sde, x0, t, z).flatten(), torch.tensor([1.01, 11.0]))


@pytest.mark.parametrize("kind", ["vp", "ve"])
def test_clipped_score_keeps_in_range_pixels_and_clips_the_rest(kind: str) -> None:
    sde = SDES[kind]
    g = torch.Generator().manual_seed(3)
    x_t, score = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0.01, 0.2, 0.6, 1.0])
    clipped = sde_module.clip_score(sde, x_t, t, score)
    x0 = x0_from_score(sde, x_t, t, score)
    inside = x0.abs() <= 1
    assert inside.any() and (~inside).any()
    assert torch.equal(clipped[inside], score[inside])
    x0_clipped = x0_from_score(sde, x_t, t, clipped)
    assert torch.allclose(x0_clipped[~inside], x0[~inside].clamp(-1, 1), atol=1e-3)


def test_edm_vp_levels_start_where_the_vp_sde_does() -> None:
    from facegen.diffusion import edm
    from facegen.diffusion.sde import VPSDE

    assert VPSDE.t_min == edm.VP_T_MIN
