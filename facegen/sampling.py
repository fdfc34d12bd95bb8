"""From a network and a demographic mix to a stream of `Step`s, for every family and sampler.

This is where each family's network output is given its meaning: epsilon or v for DDPM
(`ddpm_eps_fn`), a score for the SDE family (`sde_score_fn`, through EDM's denoiser for kind "edm"),
an image for the DCGAN generator. The
training loop (sample grids) and `FaceGenerator` both sample through `stream`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from facegen.conditioning import compose, condition_vector, group_parts, guide, null_condition
from facegen.config import DIFFUSION_FAMILIES, ModelConfig, Precision, SDEConfig
from facegen.diffusion import ddpm, edm, samplers
from facegen.diffusion.samplers import NetFn, Step
from facegen.diffusion.sde import clip_score, make_sde
from facegen.runtime import autocast, image_generators, randn_per_image

SAMPLERS: dict[str, tuple[str, ...]] = {
    "ddpm": ("dpmpp", "ddim", "ancestral"),
    "sde": ("dpmpp_2m", "heun", "euler_maruyama", "predictor_corrector", "ode"),
    "dcgan": ("single",),
    "vae": ("single",),
    "vaegan": ("single",),
}
SAMPLER_LABELS = {
    "dpmpp": "DPM-Solver++",
    "ddim": "DDIM",
    "ancestral": "DDPM ancestral",
    "euler_maruyama": "Euler–Maruyama",
    "predictor_corrector": "Predictor–corrector",
    "ode": "Probability-flow ODE",
    "heun": "EDM Heun (ODE)",
    "dpmpp_2m": "DPM-Solver++(2M) (ODE)",
    "single": "Generator / decoder (one pass)",
}
# The defaults of the diffusion models (the first sampler of each family, its steps, DEFAULT_GUIDANCE) were
# chosen by scripts/diffusion_sampler_ab.sh on the step-1,250 snapshots of issue 11's runs, 20 faces per
# mix on seeds 10000+ (docs/eval/diffusion-samplers): DPM-Solver++ 10 at guidance 3 beat 20 steps at
# guidance 3 and DDIM or DPM-Solver++ 20 at guidance 1 on face detection, two-sample accuracy, Fréchet
# distance and pure-mix accuracy. The score model's: DPM-Solver++(2M) at guidance 3 on its step-3,500
# weights, 40 faces per mix on seeds 10000+ (README, "The score model's default"): at 14, 18 or 25 steps
# as good as EDM Heun 18 (70 evaluations) and better than Heun 10 (38, the default before) on face
# detection, Fréchet distance and two-sample accuracy, within the noise of each other; 14 (28
# evaluations) is the most that draws four faces in < 2 s (issue 11's speed bar; bench/bench_sampling.py).
# Guidance 2 lost pure-mix accuracy.
DEFAULT_STEPS = {
    "dpmpp": 10,
    "ddim": 50,
    "ancestral": 100,
    "euler_maruyama": 200,
    "predictor_corrector": 100,
    "ode": 50,
    "heun": 10,
    "dpmpp_2m": 14,
    "single": 1,
}
STEP_RANGE = {
    "dpmpp": (2, 200),
    "ddim": (1, 1000),
    "ancestral": (1, 1000),
    "euler_maruyama": (2, 2000),
    "predictor_corrector": (2, 1000),
    "ode": (2, 1000),
    "heun": (2, 500),
    "dpmpp_2m": (2, 500),
    "single": (1, 1),
}


# Classifier-free guidance scale a request gets when it names none, per family (see DEFAULT_STEPS for the
# measurement that chose it). The one-pass families have no guidance. The best scale falls as a model's
# conditional sharpens: the DDPM's step-6,540 weights (shipped) at guidance 2 / 2.5 / 3 gave two-sample
# accuracy 0.66 / 0.70 / 0.74 and met all ten bars at 2 and 2.5 (README, "The DDPM's guidance follows its
# weights"), where the step-3,000 weights missed pure Indian at 2. The score model trained the DDPM's way
# (step 3,750, shipped) at 2 / 2.5 / 3: 8/10 bars each, Fréchet distance 3.35 / 2.59 / 3.38, two-sample
# 0.734 / 0.721 / 0.742, pure Indian .68 / .80 / .88 (README, "The score model trained like the DDPM").
# Its 3.5 goes with DEFAULT_GUIDANCE_INTERVAL (guidance only at mid noise levels); its other samplers,
# which take no interval, get the same scale everywhere.
DEFAULT_GUIDANCE = {"ddpm": 2.0, "sde": 3.5, "dcgan": 1.0, "vae": 1.0, "vaegan": 1.0}


def default_guidance(cfg: ModelConfig) -> float:
    return DEFAULT_GUIDANCE[cfg.family]


def latent_dim(cfg: ModelConfig) -> int:
    """The size of a one-pass family's latent z ~ N(0, I)."""
    return cfg.vae.latent_dim if cfg.family in ("vae", "vaegan") else cfg.dcgan.latent_dim


# The score family's samplers that integrate EDM's ODE in sigma, on the levels `sigma_levels` gives.
SIGMA_SAMPLERS: dict[str, Callable[..., Iterator[Step]]] = {
    "heun": samplers.edm_heun,
    "dpmpp_2m": samplers.edm_dpmpp_2m,
}


def sigma_levels(cfg: SDEConfig, steps: int) -> torch.Tensor:
    """The noise levels EDM Heun and DPM-Solver++(2M) step through, then 0. A model trained on the VP-SDE's
    levels (noise_levels "vp", as the DDPM) steps on the DDPM's spacing, uniform in t (`vp_sigmas`): on the
    shipped step-3,750 score model, DPM-Solver++(2M) 14 at its default guidance, 100 faces per mix on seeds
    20000+, face detection 0.49 against 0.45 and 10/10 bars against 9/10 with Karras et al.'s spacing,
    which spends 4 of 14 steps below sigma 0.14, where 3% of its training levels lie (README, "The DDPM's
    spacing for the score model"). A model trained on EDM's log-normal levels keeps Karras et al.'s."""
    if cfg.noise_levels == "vp":
        return samplers.vp_sigmas(cfg.beta_min, cfg.beta_max, cfg.sigma_max, steps)
    return samplers.karras_sigmas(cfg.sigma_min, cfg.sigma_max, steps)


def samplers_for(cfg: ModelConfig) -> tuple[str, ...]:
    """The samplers a model offers, its default first. The sigma samplers (EDM's Heun, DPM-Solver++(2M))
    integrate in sigma, which is the time of a VE process only: a VP-SDE model does not offer them."""
    if cfg.family == "sde" and cfg.sde.kind == "vp":
        return tuple(s for s in SAMPLERS["sde"] if s not in SIGMA_SAMPLERS)
    return SAMPLERS[cfg.family]


def network_evaluations(sampler: str, steps: int, guidance: float, composed_groups: int = 1, unguided: int = 0) -> int:
    """Forward passes of the network per image, counting the unconditional half of guidance and, for a
    blend drawn by composition, one pass per group in it plus the unconditional one. `unguided`: how many
    of the sampler's evaluations fall outside a guidance interval (one pass each; `unguided_evaluations`)."""
    per_step = {"predictor_corrector": 2, "ode": 2, "heun": 2}.get(sampler, 1)
    nfe = per_step * steps - (1 if sampler in ("ode", "heun") else 0)
    if sampler == "single" or guidance == 0.0:
        return nfe
    if composed_groups > 1:
        return nfe * (composed_groups + 1)
    return (nfe - unguided) * (2 if guidance != 1.0 else 1) + unguided


# Classifier-free guidance in a limited interval of noise levels (Kynkäänniemi et al. 2024, "Applying
# guidance in a limited interval improves sample and distribution quality in diffusion models"): guidance
# applies where the noise-to-signal ratio sigma lies in (lo, hi]; elsewhere the network's conditional
# prediction is used alone, at one pass. (0, inf) is guidance everywhere. On the score model's shipped
# step-3,750 weights (README, "Guidance in a limited interval"), DPM-Solver++(2M) 14 at guidance 3.5 in the
# paper's (0.28, 5.42] (4 of its 14 steps guided: 18 network evaluations, not 28) chosen among four
# settings on seeds 10000+ and confirmed on seeds 20000+, 100 faces per mix, against guidance 2.5
# everywhere: face detection 0.45 vs 0.43, Fréchet distance 2.70 vs 2.79, two-sample 0.696 vs 0.700, the
# White+Black blend 27% vs 24% White (9/10 bars, was 8), all on Karras et al.'s levels, the score model's
# spacing then; on the DDPM's spacing (`sigma_levels`), its default since, 10/10. The DDPM, which meets
# all ten bars, was not measured with one: None, guidance everywhere.
GuidanceInterval = tuple[float, float]
EVERYWHERE: GuidanceInterval = (0.0, math.inf)
DEFAULT_GUIDANCE_INTERVAL: dict[str, GuidanceInterval | None] = {"ddpm": None, "sde": (0.28, 5.42)}


def default_guidance_interval(cfg: ModelConfig) -> GuidanceInterval:
    return DEFAULT_GUIDANCE_INTERVAL.get(cfg.family) or EVERYWHERE


def interval_text(interval: GuidanceInterval) -> str:
    return "({:g}, {:g}]".format(*interval)


def takes_guidance_interval(cfg: ModelConfig, sampler: str) -> bool:
    """Whether a sampler's noise levels are fixed in advance, so guidance can follow an interval of them:
    the DDPM's samplers and the score family's sigma samplers, not its SDE/ODE solvers in t."""
    return cfg.family == "ddpm" or (cfg.family == "sde" and sampler in SIGMA_SAMPLERS)


def evaluation_sigmas(cfg: ModelConfig, sampler: str, steps: int) -> list[float] | None:
    """The noise level sigma (noise-to-signal ratio) of each network evaluation a sampler makes, in order;
    None for the samplers that take no guidance interval (`takes_guidance_interval`)."""
    if not takes_guidance_interval(cfg, sampler):
        return None
    if cfg.family == "ddpm":
        scheduler = ddpm.sampling_scheduler(cfg.ddpm, sampler)  # type: ignore[arg-type]
        scheduler.set_timesteps(steps)
        alpha_bar = ddpm.alphas_cumprod(cfg.ddpm)  # as `ddpm_eps_fn` computes sigma, to the bit
        return [float((1 / alpha_bar[int(t)] - 1).sqrt()) for t in scheduler.timesteps]
    sigmas = sigma_levels(cfg.sde, steps).tolist()
    if sampler == "heun":  # each step at sigma_i, then at sigma_{i+1} unless that is 0
        return [v for s, s_next in itertools.pairwise(sigmas) for v in (s, s_next) if v > 0]
    return sigmas[:-1]


def in_interval(sigma: float, interval: GuidanceInterval) -> bool:
    return interval[0] < sigma <= interval[1]


def unguided_evaluations(cfg: ModelConfig, sampler: str, steps: int, interval: GuidanceInterval) -> int:
    """How many of a sampler's network evaluations fall outside the guidance interval."""
    if interval == EVERYWHERE:
        return 0
    sigmas = evaluation_sigmas(cfg, sampler, steps) or []
    return sum(not in_interval(s, interval) for s in sigmas)


# How a diffusion model draws a blend of groups: "embedding" feeds the network the blend of the group
# embeddings (a point between them that training never shows), "composition" combines the network's
# predictions for each group, out_null + w * sum_g mix_g (out_g - out_null) (composable diffusion's
# conjunction, Liu et al. 2022): one more network evaluation per step for each further group.
BlendMode = Literal["embedding", "composition"]
BLEND_MODES: tuple[BlendMode, ...] = ("embedding", "composition")
DEFAULT_BLEND: BlendMode = "embedding"


@dataclass(frozen=True)
class Request:
    """A validated sampling request: seeds (one per image), a normalised (K,) mix, sampler, steps, guidance,
    and how a blend of groups is drawn (pure mixes are the same either way)."""

    seeds: tuple[int, ...]
    mix: torch.Tensor
    sampler: str
    steps: int
    guidance: float
    blend: BlendMode = DEFAULT_BLEND
    guidance_interval: GuidanceInterval = EVERYWHERE


def request_evaluations(cfg: ModelConfig, req: Request) -> int:
    """Network passes per face for a request: sampler, guidance, its interval and a composed blend."""
    unguided = unguided_evaluations(cfg, req.sampler, req.steps, req.guidance_interval)
    return network_evaluations(req.sampler, req.steps, req.guidance, composition_size(req), unguided)


def composition_size(req: Request) -> int:
    """How many groups a request's blend is composed from (1 unless it is a composed blend)."""
    return int((req.mix > 0).sum()) if req.blend == "composition" else 1


Batching = Literal["joint", "per_face", "thread_padded"]


def batched(net: nn.Module, batching: Batching) -> nn.Module | Callable[..., torch.Tensor]:
    """How a batch of faces goes through `net`, trading throughput against batch invariance.

    CPU kernels split work differently for different batch sizes, so a face computed beside others can
    differ from the same face alone in the last bf16 bit, and after many sampler steps by a pixel level.
    * "joint": the whole batch in one call (fastest; evaluation, training grids).
    * "per_face": one face per call; identical in any batch by construction, slowest.
    * "thread_padded": one call, the batch padded to a multiple of the CPU thread count by repeating
      its last face (the copies are dropped). Measured on this U-Net in bf16 on CPU, with its
      convolutions fed one memory layout (`nets.unet`): every batch size 1-8 is then bit-identical at
      1 and 2 threads. The price is a lone face: it runs as a batch of 2 at 2 threads (measured 1.2 s vs
      0.7 s for 20 DPM-Solver++ steps), while four faces take 2.0 s instead of 2.75 s.
    """
    if batching == "joint":
        return net
    if batching == "per_face":

        def one_by_one(*args: torch.Tensor) -> torch.Tensor:
            return torch.cat([net(*(a[i : i + 1] for a in args)) for i in range(args[0].shape[0])])

        return one_by_one

    def padded(*args: torch.Tensor) -> torch.Tensor:
        n = args[0].shape[0]
        extra = -n % torch.get_num_threads()
        if extra == 0:
            return net(*args)
        return net(*(torch.cat([a, a[-1:].expand(extra, *a.shape[1:])]) for a in args))[:n]

    return padded


def _guided(
    net: nn.Module | Callable[..., torch.Tensor],
    t_map: Callable[[torch.Tensor], torch.Tensor],
    cond: torch.Tensor,
    scale: float,
    device: torch.device,
    precision: Precision,
    batching: Batching,
    blend: BlendMode = DEFAULT_BLEND,
    interval: GuidanceInterval = EVERYWHERE,
    sigma_of: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> NetFn:
    """A (x, t) -> output function with the condition bound and classifier-free guidance applied; with an
    interval, only where sigma_of(t) (the noise-to-signal ratio at t) lies in it, else at scale 1."""
    null = null_condition(cond.shape[0], cond.shape[1] - 1, device)
    call = batched(net, batching)
    parts = group_parts(cond) if blend == "composition" else []
    if interval != EVERYWHERE and sigma_of is None:
        raise ValueError("a guidance interval needs the noise level of each time (sigma_of)")

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t_map(t)
        scale_now = scale
        if interval != EVERYWHERE and not in_interval(float(sigma_of(t).reshape(-1)[0]), interval):  # type: ignore[misc]
            scale_now = 1.0
        with autocast(device, precision):
            if scale_now == 0.0:
                return call(x, tt, null).float()
            if len(parts) > 1:
                conds = [c for _, c in parts] + [null]
                n = len(conds)
                *outs, out_u = call(torch.cat([x] * n), torch.cat([tt] * n), torch.cat(conds)).float().chunk(n)
                return compose([w for w, _ in parts], outs, out_u, scale_now)
            if scale_now == 1.0:
                return call(x, tt, cond).float()
            out = call(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([cond, null])).float()
        out_c, out_u = out.chunk(2)
        return guide(out_c, out_u, scale_now)

    return fn


def ddpm_eps_fn(
    net: nn.Module,
    cfg: ModelConfig,
    alpha_bar: torch.Tensor,
    cond: torch.Tensor,
    scale: float,
    device: torch.device,
    precision: Precision,
    batching: Batching = "joint",
    blend: BlendMode = DEFAULT_BLEND,
    interval: GuidanceInterval = EVERYWHERE,
) -> NetFn:
    """DDPM: the U-Net output (epsilon or v) as epsilon; t is the integer timestep into alpha_bar."""
    alpha_bar = alpha_bar.to(device)

    def sigma_of(t: torch.Tensor) -> torch.Tensor:
        return (1 / alpha_bar[t.long()] - 1).sqrt()

    out_fn = _guided(net, lambda t: t, cond, scale, device, precision, batching, blend, interval, sigma_of)
    return lambda x, t: ddpm.eps_from_output(cfg.ddpm.prediction, x, out_fn(x, t), alpha_bar[t.long()])


def sde_denoise_fn(
    net: nn.Module,
    cfg: SDEConfig,
    cond: torch.Tensor,
    scale: float,
    device: torch.device,
    precision: Precision,
    batching: Batching = "joint",
    blend: BlendMode = DEFAULT_BLEND,
    interval: GuidanceInterval = EVERYWHERE,
) -> NetFn:
    """A VE-type score model (kind "ve" or "edm") as EDM's denoiser D(x; sigma), called with sigma.

    EDM models are preconditioned denoisers already; a plain VE score net gives D = x + sigma^2 score.
    Guidance is applied to D, which is the same as applying it to the score (they are affine in each other).
    """
    if cfg.kind == "vp":
        raise ValueError("a VP-SDE model has no sigma-parametrised denoiser; use its SDE or ODE samplers")
    if cfg.kind == "edm":

        def call(x: torch.Tensor, sigma: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return edm.denoise(net, x, sigma, c, cfg)
    else:

        def call(x: torch.Tensor, sigma: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return x.float() + sigma.reshape(-1, 1, 1, 1) ** 2 * net(x, sigma, c).float()

    return _guided(call, lambda s: s, cond, scale, device, precision, batching, blend, interval, lambda s: s)


def sde_score_fn(
    net: nn.Module,
    cfg: SDEConfig,
    cond: torch.Tensor,
    scale: float,
    device: torch.device,
    precision: Precision,
    batching: Batching = "joint",
    blend: BlendMode = DEFAULT_BLEND,
) -> NetFn:
    """Score SDE: the Fourier U-Net called with std(t) returns the score (it divides by its time input);
    an EDM model's score is (D(x; sigma) - x) / sigma^2 with sigma = std(t).

    For VP and VE the score is replaced by the one whose Tweedie estimate E[x0 | x_t] is clipped to the
    data range [-1, 1], the counterpart of the DDPM samplers' clip_sample / thresholding. It changes
    nothing where the estimate is in range; it keeps a young network's score error, amplified by
    1/mean_coef(t) ~ 150 near t = 1 on the VP-SDE, from driving every sampler to saturated noise. EDM's
    denoiser has no such amplification and is used as it is.
    """
    sde = make_sde(cfg)
    if cfg.kind == "edm":
        denoise_fn = sde_denoise_fn(net, cfg, cond, scale, device, precision, batching, blend)

        def edm_score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            sigma = sde.std(t)
            return (denoise_fn(x, sigma) - x) / sigma.reshape(-1, 1, 1, 1) ** 2

        return edm_score
    score_fn = _guided(net, sde.std, cond, scale, device, precision, batching, blend)
    return lambda x, t: clip_score(sde, x, t, score_fn(x, t))


def stream(
    cfg: ModelConfig,
    net: nn.Module,
    req: Request,
    device: torch.device,
    precision: Precision = "fp32",
    batching: Batching = "joint",
) -> Iterator[Step]:
    """Yield every step of sampling `len(req.seeds)` faces; the last Step's x_t is the result in [-1, 1].

    batching: see `batched` ("per_face" / "thread_padded" make each face independent of its batch).
    """
    gens = image_generators(req.seeds)
    b, size = len(req.seeds), cfg.image_size
    mix = req.mix.to(device).expand(b, -1)
    with torch.inference_mode():
        if cfg.family not in DIFFUSION_FAMILIES:  # a GAN generator or a VAE decoder on a prior draw
            z = randn_per_image(gens, (latent_dim(cfg),), device)
            with autocast(device, precision):
                x = batched(net, batching)(z, mix).float().clamp(-1, 1)
            yield Step(1, 1, x, x, 1)
            return
        cond = condition_vector(mix)
        if cfg.family == "ddpm":
            alpha_bar = ddpm.alphas_cumprod(cfg.ddpm)
            eps_fn = ddpm_eps_fn(
                net, cfg, alpha_bar, cond, req.guidance, device, precision, batching, req.blend, req.guidance_interval
            )
            scheduler = ddpm.sampling_scheduler(cfg.ddpm, req.sampler)  # type: ignore[arg-type]
            x_T = randn_per_image(gens, (3, size, size), device)
            yield from samplers.ddpm_sample(eps_fn, scheduler, alpha_bar, x_T, gens, req.steps)
            return
        sde = make_sde(cfg.sde)
        x_T = randn_per_image(gens, (3, size, size), device) * sde.prior_std()
        if req.sampler in SIGMA_SAMPLERS:
            denoise_fn = sde_denoise_fn(
                net, cfg.sde, cond, req.guidance, device, precision, batching, req.blend, req.guidance_interval
            )
            sigmas = sigma_levels(cfg.sde, req.steps).to(device)
            yield from SIGMA_SAMPLERS[req.sampler](denoise_fn, sigmas, x_T)
            return
        if req.guidance_interval != EVERYWHERE:  # `FaceGenerator.request` refuses these; a bare Request too
            raise ValueError(f"sde sampler {req.sampler!r} takes no guidance interval")
        score_fn = sde_score_fn(net, cfg.sde, cond, req.guidance, device, precision, batching, req.blend)
        match req.sampler:
            case "euler_maruyama":
                yield from samplers.euler_maruyama(score_fn, sde, x_T, gens, req.steps)
            case "predictor_corrector":
                yield from samplers.predictor_corrector(score_fn, sde, x_T, gens, req.steps)
            case "ode":
                yield from samplers.probability_flow(score_fn, sde, x_T, req.steps)
            case other:
                raise ValueError(f"unknown SDE sampler {other!r}")


def final(steps: Iterator[Step]) -> Step:
    """Run a stream to the end and return its last step."""
    last = None
    for step in steps:
        last = step
    if last is None:
        raise RuntimeError("the sampler yielded no step")
    return last


def sample_grid_request(
    groups: Sequence[str], per_row: int, sampler: str, steps: int, guidance: float
) -> list[Request]:
    """One request per group, the same seeds in every row, for training-time sample grids."""
    k = len(groups)
    return [
        Request(
            tuple(range(per_row)), torch.nn.functional.one_hot(torch.tensor(g), k).float(), sampler, steps, guidance
        )
        for g in range(k)
    ]
