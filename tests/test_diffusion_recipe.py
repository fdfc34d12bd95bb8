"""Issue 11's recipe, against oracles: v-prediction and min-SNR weights, EDM preconditioning and its Heun
sampler on Gaussian data whose denoiser is known in closed form, the condition's scale and signal."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from facegen.checkpoints import load_checkpoint
from facegen.config import DDPMConfig, SDEConfig, resolve
from facegen.diffusion import edm
from facegen.diffusion.ddpm import alphas_cumprod, eps_from_output, loss_weights, x0_from_eps
from facegen.diffusion.samplers import Step, edm_dpmpp_2m, edm_heun, karras_sigmas, vp_sigmas
from facegen.nets import build_sampling_net
from tests.conftest import REPO, tiny_run

S = 0.5  # data std of the Gaussian oracle: x0 ~ N(0, S^2 I)


def test_v_prediction_converts_to_the_true_epsilon() -> None:
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    a = alphas_cumprod(DDPMConfig())[torch.tensor([0, 250, 700, 999])]
    col = a.reshape(-1, 1, 1, 1)
    x_t = col.sqrt() * x0 + (1 - col).sqrt() * eps
    v = col.sqrt() * eps - (1 - col).sqrt() * x0
    assert torch.allclose(eps_from_output("v", x_t, v, a), eps, atol=1e-5)
    assert torch.allclose(x0_from_eps(x_t, eps_from_output("v", x_t, v, a), a), x0, atol=1e-3)
    assert torch.equal(eps_from_output("epsilon", x_t, eps, a), eps)


def test_min_snr_weights_follow_hang_et_al() -> None:
    a = alphas_cumprod(DDPMConfig())
    snr = a / (1 - a)
    assert torch.equal(loss_weights(DDPMConfig(), a), torch.ones_like(a))
    w_eps = loss_weights(DDPMConfig(loss_weight="min_snr", min_snr_gamma=5.0), a)
    w_v = loss_weights(DDPMConfig(loss_weight="min_snr", prediction="v", min_snr_gamma=5.0), a)
    assert torch.allclose(w_eps, snr.clamp(max=5) / snr) and torch.allclose(w_v, snr.clamp(max=5) / (snr + 1))
    noisy = snr < 5  # where the SNR is below gamma, epsilon keeps weight 1 and v gets SNR / (SNR + 1)
    assert torch.allclose(w_eps[noisy], torch.ones(int(noisy.sum()))) and (w_eps[~noisy] < 1).all()


class ExactGaussianNet(torch.nn.Module):
    """The raw network that EDM's preconditioning turns into the exact denoiser of N(0, S^2 I) data,
    D(x; sigma) = S^2 / (S^2 + sigma^2) x, times `scale` (scale 1 is the optimum). It is called as the
    score family's U-Net with that time embedding: with c_in x and sigma, dividing its output by sigma
    ("fourier"), or with c_in x and c_noise = ln(sigma) / 4 ("positional")."""

    def __init__(self, scale: float = 1.0, sigma_data: float = 0.5, embedding: str = "fourier") -> None:
        super().__init__()
        self.scale, self.sigma_data, self.embedding = scale, sigma_data, embedding

    def forward(self, x_in: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        sigma = t if self.embedding == "fourier" else (4 * t).exp()
        c_skip, c_out, c_in = (c.reshape(-1, 1, 1, 1) for c in edm.coefficients(sigma, self.sigma_data))
        s = sigma.reshape(-1, 1, 1, 1)
        x = x_in / c_in
        exact = self.scale * S**2 / (S**2 + s**2) * x
        raw = (exact - c_skip * x) / c_out
        return raw / s if self.embedding == "fourier" else raw


@pytest.mark.parametrize(
    ("embedding", "weight", "levels"),
    [("fourier", "edm", "lognormal"), ("positional", "edm", "lognormal"), ("fourier", "min_snr", "vp")],
)
def test_edm_denoiser_and_loss_are_optimal_at_the_exact_denoiser(embedding: str, weight: str, levels: str) -> None:
    cfg = SDEConfig(kind="edm", time_embedding=embedding, loss_weight=weight, noise_levels=levels)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(256, 3, 4, 4, generator=g) * S
    sigma = torch.full((256,), 0.7)
    x = x0 + 0.7 * torch.randn(x0.shape, generator=g)
    exact = ExactGaussianNet(embedding=embedding)
    assert torch.allclose(edm.denoise(exact, x, sigma, None, cfg), S**2 / (S**2 + 0.49) * x, atol=1e-5)
    losses = {
        k: edm.edm_loss(ExactGaussianNet(k, embedding=embedding), cfg, x0, None, torch.Generator().manual_seed(1))
        for k in (0.8, 1, 1.2)
    }
    assert losses[1] < losses[0.8] and losses[1] < losses[1.2]


def test_edm_at_sigma_data_1_with_min_snr_is_the_ddpm_v_min_snr_loss() -> None:
    """With sigma_data 1 the preconditioned target is minus the DDPM's v on the same noisy face (scaled to
    the VP process), and the min-SNR weights on it equal the DDPM's v-prediction weights."""
    cfg = SDEConfig(kind="edm", sigma_data=1.0, loss_weight="min_snr", min_snr_gamma=5.0)
    g = torch.Generator().manual_seed(0)
    x0, n = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    sigma = torch.tensor([0.05, 0.4, 2.0, 30.0])
    a = 1 / (1 + sigma**2)  # the VP process's alpha_bar at the same signal-to-noise ratio
    col = a.reshape(-1, 1, 1, 1)
    c_skip, c_out, _ = (c.reshape(-1, 1, 1, 1) for c in edm.coefficients(sigma, 1.0))
    x = x0 + sigma.reshape(-1, 1, 1, 1) * n
    v = col.sqrt() * n - (1 - col).sqrt() * x0
    assert torch.allclose((x0 - c_skip * x) / c_out, -v, atol=1e-5)
    ddpm = DDPMConfig(prediction="v", loss_weight="min_snr", min_snr_gamma=5.0)
    assert torch.allclose(edm.loss_weights(cfg, sigma), loss_weights(ddpm, a), atol=1e-6)
    assert torch.equal(edm.loss_weights(SDEConfig(kind="edm"), sigma), torch.ones(4))


def test_vp_noise_levels_follow_the_ddpm_linear_schedule() -> None:
    """noise_levels "vp" draws the DDPM's linear schedule in continuous time: the quantiles of ln sigma
    match those of sqrt(1 / alpha_bar_t - 1) over the 1,000 discrete steps."""
    drawn = edm.training_sigmas(SDEConfig(kind="edm", noise_levels="vp"), 200_000, torch.Generator().manual_seed(0))
    a = alphas_cumprod(DDPMConfig())
    discrete = (1 / a - 1).sqrt()
    q = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95])
    assert torch.allclose(torch.quantile(drawn.log(), q), torch.quantile(discrete.log(), q), atol=0.05)
    lognormal = edm.training_sigmas(SDEConfig(kind="edm"), 200_000, torch.Generator().manual_seed(0))
    assert abs(lognormal.log().mean().item() + 1.2) < 0.02 and abs(lognormal.log().std().item() - 1.2) < 0.02


def test_positional_time_embedding_needs_edm() -> None:
    with pytest.raises(ValueError, match="needs kind 'edm'"):
        SDEConfig(kind="ve", time_embedding="positional")


def test_positional_score_unet_is_called_with_edm_c_noise() -> None:
    """The positional U-Net is the DDPM's sinusoidal one (no division by its time input), fed EDM's
    c_noise = ln(sigma) / 4; the Fourier one gets sigma itself."""
    for embedding, expected in (("fourier", lambda s: s), ("positional", lambda s: s.log() / 4)):
        cfg = resolve("cpu", "sde", {"data": {"path": "x"}, "model": {"sde": {"time_embedding": embedding}}}).model
        net = build_sampling_net(cfg).eval()
        assert net.unet.config.time_embedding_type == embedding
        seen: list[torch.Tensor] = []
        net.unet.time_proj.register_forward_pre_hook(lambda _m, args, seen=seen: seen.append(args[0]))
        sigma = torch.tensor([0.3, 7.0])
        with torch.no_grad():
            edm.denoise(net, torch.randn(2, 3, 64, 64), sigma, torch.zeros(2, len(cfg.groups) + 1), cfg.sde)
        assert torch.allclose(seen[0].float(), expected(sigma))


def test_karras_sigmas_run_from_max_to_min_then_zero() -> None:
    s = karras_sigmas(0.002, 80.0, 18)
    assert s.shape == (19,) and s[-1] == 0 and (s[:-1].diff() < 0).all()
    assert torch.isclose(s[0], torch.tensor(80.0)) and torch.isclose(s[-2], torch.tensor(0.002))


def test_vp_sigmas_are_the_ddpm_spacing() -> None:
    """Levels uniform in the VP time t from sigma_max down, then 0: for 10 steps they are the levels of
    the DDPM's own DPM-Solver++ timesteps (999, 899, ..., 100 of the discrete linear schedule) to 2%."""
    from facegen.diffusion import ddpm

    alpha_bar = ddpm.alphas_cumprod(DDPMConfig())
    scheduler = ddpm.sampling_scheduler(DDPMConfig(), "dpmpp")
    scheduler.set_timesteps(10)
    ddpm_levels = torch.stack([(1 / alpha_bar[int(t)] - 1).sqrt() for t in scheduler.timesteps]).float()
    s = vp_sigmas(0.1, 20.0, float(ddpm_levels[0]), 10)
    assert s.shape == (11,) and s[-1] == 0 and (s[:-1].diff() < 0).all()
    assert torch.allclose(s[:-1], ddpm_levels, rtol=0.02), (s, ddpm_levels)
    t = ((0.01 + 2 * 19.9 * torch.log1p(s[:-1].double() ** 2)).sqrt() - 0.1) / 19.9  # the VP time of each
    assert torch.allclose(t.diff(), t.diff()[:1].expand(9), rtol=1e-4) and torch.isclose(t[-1], t[0] / 10)


def test_the_sigma_samplers_step_on_the_levels_the_model_trained_on() -> None:
    from facegen.sampling import sigma_levels

    vp = SDEConfig(kind="edm", noise_levels="vp")
    assert torch.equal(sigma_levels(vp, 14), vp_sigmas(vp.beta_min, vp.beta_max, vp.sigma_max, 14))
    edm_levels = SDEConfig(kind="edm", noise_levels="lognormal")
    assert torch.equal(sigma_levels(edm_levels, 14), karras_sigmas(0.002, 80.0, 14))


def _solve_exact_flow(sampler: Callable[..., Iterator[Step]], steps: int) -> tuple[list[Step], float]:
    """A sigma sampler's run on the exact denoiser of N(0, S^2) data from x_T = 80, and its relative error
    against the exact probability-flow ODE x(sigma) = x_T sqrt(S^2 + sigma^2) / sqrt(S^2 + sigma_max^2)."""
    net = ExactGaussianNet()
    exact = 80.0 * S / (S**2 + 80.0**2) ** 0.5

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return edm.denoise(net, x, sigma, None, SDEConfig(kind="edm"))

    run = list(sampler(denoise, karras_sigmas(0.002, 80.0, steps), torch.full((1, 1, 1, 1), 80.0)))
    return run, abs(float(run[-1].x_t) - exact) / exact


def test_edm_heun_with_the_exact_denoiser_follows_the_exact_flow() -> None:
    """Heun's result converges to the exact flow as the steps grow (measured: 5.5% off at 18 steps, 0.6%
    at 50), at 2 n - 1 evaluations for n steps."""
    errors = []
    for n in (18, 50, 200):
        run, error = _solve_exact_flow(edm_heun, n)
        assert len(run) == n and run[-1].nfe == 2 * n - 1
        errors.append(error)
    assert errors[0] > errors[1] > errors[2] and errors[0] < 0.06 and errors[2] < 0.001


def test_edm_dpmpp_2m_follows_the_exact_flow_at_one_evaluation_a_step() -> None:
    """DPM-Solver++(2M) converges to the same flow, second order (the error falls about 4x for 2x the
    steps), at n evaluations for n steps (measured: 6.2% off at 18 steps, 1.3% at 36, where Heun's 18
    steps take 35 evaluations and are 5.5% off)."""
    errors = []
    for n in (18, 36, 72):
        run, error = _solve_exact_flow(edm_dpmpp_2m, n)
        assert len(run) == n and [s.nfe for s in run] == list(range(1, n + 1))
        errors.append(error)
    assert errors[0] < 0.07 and errors[1] < 0.02 and errors[0] / errors[1] > 3 and errors[1] / errors[2] > 3, errors


def test_the_mix_embedding_starts_at_the_scale_of_a_class_embedding() -> None:
    net = build_sampling_net(resolve("cpu", "ddpm", {"data": {"path": "x"}}).model)
    table = net.mix_embedding.table.detach()
    assert 0.9 < float(table.std()) < 1.1 and table.shape == (6, 128)


def test_attention_heads_follow_the_config_and_the_shipped_default() -> None:
    from diffusers.models.attention_processor import Attention

    new = build_sampling_net(resolve("cpu", "ddpm", {"data": {"path": "x"}}).model)
    assert {m.heads for m in new.modules() if isinstance(m, Attention)} == {4}  # 256 channels / 64
    shipped = json.loads((REPO / "checkpoints" / "ddpm" / "config.json").read_text())["model"]
    if "attention_head_dim" not in shipped["unet"]:  # configs from before issue 11: 8-channel heads
        from facegen.config import ModelConfig

        old = build_sampling_net(ModelConfig.model_validate(shipped))
        assert {m.heads for m in old.modules() if isinstance(m, Attention)} == {32}


@pytest.mark.parametrize("family", ["ddpm", "sde"])
def test_the_condition_signal_is_zero_when_the_net_ignores_the_mix(
    family: str, utk_folder: Path, tmp_path: Path
) -> None:
    """cond_signal measures how much the output depends on the mix: 0 for equal embedding rows."""
    from facegen.training import Dist, build_trainer

    trainer = build_trainer(tiny_run(family, utk_folder, tmp_path / "run"), Dist())
    assert trainer.test_loss()["cond_signal"] > 1e-3
    with torch.no_grad():
        trainer.ema.mix_embedding.table.copy_(
            trainer.ema.mix_embedding.table[:1].expand_as(trainer.ema.mix_embedding.table)
        )
    figures = trainer.test_loss()
    assert figures["cond_signal"] == 0.0 and figures["test_loss"] > 0


def test_a_training_log_carries_the_condition_signal(utk_folder: Path, tmp_path: Path) -> None:
    from facegen.training import train

    train(tiny_run("sde", utk_folder, tmp_path / "run", max_steps=4, save_every=2), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "cond_signal" in r] == [2, 4]


def test_edm_noise_levels_shift_with_the_side() -> None:
    """At half the side the score family trains at half the sigma (simple diffusion's shift): the same
    draws, scaled by exp(shift)."""
    sigmas: list[torch.Tensor] = []

    class SigmaSpy(ExactGaussianNet):
        def forward(self, x_in: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            sigmas.append(t.clone())
            return super().forward(x_in, t, cond)

    x0 = torch.zeros(64, 3, 4, 4)
    for shift in (0.0, math.log(0.5)):
        edm.edm_loss(SigmaSpy(), SDEConfig(kind="edm"), x0, None, torch.Generator().manual_seed(3), shift)
    assert torch.allclose(sigmas[1], sigmas[0] / 2)


@pytest.mark.parametrize("family", ["ddpm", "sde"])
def test_low_res_steps_train_at_half_the_side_then_at_full(
    family: str, utk_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facegen.objectives import DiffusionObjective
    from facegen.training import train

    sides: list[int] = []
    real_step = DiffusionObjective.step

    def spy(self: DiffusionObjective, x: torch.Tensor, *rest: object) -> dict[str, float]:
        sides.append(x.shape[-1])
        return real_step(self, x, *rest)

    monkeypatch.setattr(DiffusionObjective, "step", spy)
    out = train(tiny_run(family, utk_folder, tmp_path / "run", max_steps=5, low_res_steps=3), progress=False)
    assert sides == [8, 8, 8, 16, 16]
    _, _, card = load_checkpoint(out)
    assert "to step 3 at 8 px" in card["history"][-1]["recipe"]


def test_low_res_steps_need_a_u_net(utk_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fully convolutional U-Net"):
        tiny_run("dcgan", utk_folder, tmp_path / "run", low_res_steps=2)
