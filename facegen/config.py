"""One typed configuration tree for facegen, with named presets.

`ModelConfig` is what a checkpoint needs to rebuild its network (it is written as `config.json` beside
every `model.safetensors`); `DataConfig` and `TrainConfig` describe how the weights were made. Every
model is frozen and forbids unknown keys, so a typo in a config file is an error, not a silent default.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Family = Literal["ddpm", "sde", "dcgan", "vae", "vaegan"]
DIFFUSION_FAMILIES: tuple[str, ...] = ("ddpm", "sde")  # the others draw a face in one network pass
LabelFormat = Literal["utkface", "folders", "celeba", "none"]
# "auto": bf16 where the hardware runs it natively, else fp32 on the CPU (runtime.resolve_precision).
Precision = Literal["auto", "fp32", "bf16", "fp16"]
DeviceName = Literal["auto", "cpu", "cuda"]

UTKFACE_GROUPS: tuple[str, ...] = ("White", "Black", "Asian", "Indian", "Others")
FORMAT_VERSION = 1


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UNetConfig(Frozen):
    """A `diffusers.UNet2DModel`: channels per resolution level, attention at the listed levels."""

    block_out_channels: tuple[int, ...] = (32, 64, 128, 128)
    layers_per_block: int = Field(2, ge=1, le=4)
    attention_levels: tuple[int, ...] = (2,)
    # Channels per attention head. 8 (the shipped checkpoints before issue 11) makes 32 heads of 8
    # channels at 256 channels, which spent 29% of a CPU training step in attention backward; 64 is the
    # field's usual head width and trained 39% faster (issue 11's profile). Heads do not change the
    # weights' shapes, only how they are used, so the value is part of the model, not of the training.
    attention_head_dim: int = Field(8, ge=1, le=1024)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # Std of the mix-embedding table at init, added to the time embedding. The field standard (diffusers'
    # num_class_embeds, ADM) is N(0, 1); the shipped checkpoints used 0.02, about 1/20 of the time
    # embedding, and never learned the condition (table rms 0.022 after 2,000 steps). Init only.
    mix_embed_std: float = Field(1.0, gt=0.0, le=10.0)

    @model_validator(mode="after")
    def _check(self) -> UNetConfig:
        if not 2 <= len(self.block_out_channels) <= 6:
            raise ValueError("block_out_channels needs 2 to 6 levels")
        groups = min(32, self.block_out_channels[0])
        if any(c <= 0 or c % groups for c in self.block_out_channels):
            raise ValueError(f"every channel count must be a positive multiple of {groups}")
        if any(not 0 <= i < len(self.block_out_channels) for i in self.attention_levels):
            raise ValueError("attention_levels must index block_out_channels")
        if any(self.block_out_channels[i] % self.attention_head_dim for i in self.attention_levels):
            raise ValueError("attention_head_dim must divide the channel count of every attention level")
        return self

    @property
    def norm_groups(self) -> int:
        return min(32, self.block_out_channels[0])


class DDPMConfig(Frozen):
    """The discrete DDPM schedule and what the U-Net predicts on it.

    prediction: "epsilon" (Ho et al. 2020) or "v" = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022).
    loss_weight: "uniform" is L_simple on the prediction; "min_snr" weights each timestep by
    min(SNR, gamma) / SNR for epsilon or min(SNR, gamma) / (SNR + 1) for v (Hang et al. 2023), which
    stops the low-noise steps from dominating the gradient.
    """

    num_train_timesteps: int = Field(1000, ge=10, le=10_000)
    beta_schedule: Literal["linear", "cosine"] = "linear"
    prediction: Literal["epsilon", "v"] = "epsilon"
    loss_weight: Literal["uniform", "min_snr"] = "uniform"
    min_snr_gamma: float = Field(5.0, gt=0.0)


class SDEConfig(Frozen):
    """VP-SDE (beta_min, beta_max) or VE-SDE (sigma_min, sigma_max), Song et al. 2021, eq. 9 and 11.

    "edm" is the VE process x = x0 + sigma n trained and evaluated as Karras et al. 2022 do: the network
    is wrapped in their preconditioning (sigma_data), noise levels are log-normal (p_mean, p_std) and the
    loss is weighted by 1 / c_out^2, so every level contributes alike. Its denoiser D gives the score
    (D - x) / sigma^2, so the SDE and ODE samplers of the family apply unchanged. sigma_min and
    sigma_max default to EDM's 0.002 and 80 for it (0.01 and 50 for "ve").
    """

    kind: Literal["vp", "ve", "edm"] = "vp"
    beta_min: float = Field(0.1, gt=0)
    beta_max: float = Field(20.0, gt=0)
    sigma_min: float = Field(0.01, gt=0)
    sigma_max: float = Field(50.0, gt=0)
    fourier_scale: float = Field(16.0, gt=0)
    # How the U-Net sees the noise level. "fourier": NCSN++'s Gaussian Fourier features of ln sigma (32
    # random frequencies of std fourier_scale x 2 pi per unit of ln sigma) with the output divided by sigma;
    # "positional": EDM's c_noise = ln(sigma) / 4 through the sinusoidal embedding the DDPM's U-Net uses,
    # which varies smoothly with the noise level (EDM only). Part of the network, so of every checkpoint.
    time_embedding: Literal["fourier", "positional"] = "fourier"
    sigma_data: float = Field(0.5, gt=0)
    p_mean: float = Field(-1.2, ge=-10, le=10)
    p_std: float = Field(1.2, gt=0, le=10)
    # Which noise levels an EDM model trains on and how each is weighted (training only). "lognormal":
    # EDM's ln sigma ~ N(p_mean, p_std^2). "vp": the levels of the VP-SDE (beta_min, beta_max) at t ~ U,
    # sigma = sqrt(1 / alpha_bar(t) - 1), i.e. the DDPM's linear schedule in continuous time. loss_weight
    # "edm" weights every level alike (lambda = 1 / c_out^2); "min_snr" weights the error on x0 by
    # min(SNR, min_snr_gamma) with SNR = 1 / sigma^2, Hang et al.'s min-SNR-gamma, as the DDPM does. With
    # sigma_data 1 the preconditioned output F is v-prediction, so "vp" + "min_snr" + sigma_data 1 is the
    # DDPM's recipe posed as denoising score matching. Like sigma_data and p_mean, kinds "vp" and "ve"
    # ignore them (`--sde vp` on the command line switches the recipe's EDM model to Song et al.'s DSM).
    noise_levels: Literal["lognormal", "vp"] = "lognormal"
    loss_weight: Literal["edm", "min_snr"] = "edm"
    min_snr_gamma: float = Field(5.0, gt=0.0)

    @model_validator(mode="before")
    @classmethod
    def _edm_range(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") == "edm":
            data = {"sigma_min": 0.002, "sigma_max": 80.0, **data}
        return data

    @model_validator(mode="after")
    def _check(self) -> SDEConfig:
        if self.beta_min >= self.beta_max:
            raise ValueError("beta_min must be below beta_max")
        if self.sigma_min >= self.sigma_max:
            raise ValueError("sigma_min must be below sigma_max")
        if self.time_embedding == "positional" and self.kind != "edm":
            raise ValueError("time_embedding 'positional' needs kind 'edm' (VP and VE score nets divide by sigma)")
        return self


class DCGANConfig(Frozen):
    latent_dim: int = Field(100, ge=1, le=1024)
    g_channels: int = Field(64, ge=4, le=512)
    d_channels: int = Field(64, ge=4, le=512)
    # How D sees the mix: "concat" adds K constant input planes (Mirza & Osindero's cGAN); "projection"
    # adds <E·mix, pooled features> to the logit (Miyato & Koyama 2018), a stronger class signal;
    # "acgan" (Odena et al. 2017) gives D no mix at all but a K-way group head on its last features,
    # learnt from real faces, and adds acgan_weight x the head's cross-entropy against the requested mix to
    # G's loss. D only: the generator, and so every shipped checkpoint, is the same either way.
    d_conditioning: Literal["concat", "projection", "acgan"] = "concat"
    acgan_weight: float = Field(1.0, ge=0.0, le=100.0)
    # With acgan, this share of G's training mixes are random two-group blends (weights ~ U(0, 1)) graded
    # by the head against the blend itself: no real face of a blend is needed since D never sees the mix.
    acgan_blends: float = Field(0.0, ge=0.0, le=1.0)


class VAEConfig(Frozen):
    """Conditional VAE (Kingma & Welling 2014; Sohn et al. 2015): an encoder q(z | x, mix) and a decoder
    p(x | z, mix), which is the DCGAN generator with `channels` as its width.

    The ELBO's reconstruction term is a Gaussian log-likelihood with a fixed std `recon_std` in the
    [-1, 1] pixel range (summed over pixels), its KL term to N(0, I) is in closed form and weighted by
    `beta` (beta-VAE, Higgins et al. 2017), warmed up linearly from 0 over `kl_warmup_steps` (Bowman et
    al. 2016) so the decoder learns to use z before the prior pulls the posterior in.
    """

    latent_dim: int = Field(128, ge=2, le=1024)
    channels: int = Field(64, ge=4, le=512)
    beta: float = Field(1.0, gt=0.0, le=100.0)
    kl_warmup_steps: int = Field(2000, ge=0, le=1_000_000)
    # 0.3 by measurement (runs/ab/vae: scripts/diffusion_recipe_ab.sh FAMILIES=vae, 2,000 steps each, 40
    # faces per mix): face detection 0.20 vs 0.00, diversity 5.62 vs 3.69, FD 27.7 vs 62.2 for 0.1, whose
    # sharper likelihood bought a posterior far from the prior (KL ~900 nats) and blobs from prior draws.
    recon_std: float = Field(0.3, gt=0.0, le=10.0)
    # VAE only: weight of a latent adversary (Lample et al. 2017, Fader networks). A small critic learns
    # to tell the group from z; the encoder also pays this weight x the critic's cross-entropy against
    # the uniform distribution (domain confusion, Tzeng et al. 2015), so z stops carrying the group and
    # the decoder must take it from the mix. 0 is the plain conditional VAE, whose decoder ignored the mix.
    latent_adversary: float = Field(0.0, ge=0.0, le=10_000.0)
    # VAE only: weight of an auxiliary group classifier, the AC-GAN lever (Odena et al. 2017) without the
    # GAN. A small CNN learns the groups of real faces; the decoder also pays this weight x its
    # cross-entropy on prior draws decoded at a requested mix (`aux_blends` of them blends of two groups),
    # so a draw from N(0, I) must show the mix it was asked for, which no term of the ELBO asks.
    aux_classifier: float = Field(0.0, ge=0.0, le=10_000.0)
    aux_blends: float = Field(0.5, ge=0.0, le=1.0)
    # VAE-GAN only (Larsen et al. 2016): the decoder's loss is gamma x the reconstruction error in the
    # discriminator's features plus the GAN loss; gamma trades faithful reconstructions for realism. The
    # feature error is a sum over D's 256x8x8 features at 64 px: 800-1,800 nats in the first 150 steps on
    # UTKFace against a GAN loss near 10, so at gamma 1 the GAN term, the only one that reaches prior
    # samples, was 1% of the decoder's loss; 0.01 starts the two at the same order.
    gamma: float = Field(0.01, ge=0.0, le=1000.0)


class ModelConfig(Frozen):
    """Everything needed to rebuild a network and interpret its output; saved in every checkpoint."""

    family: Family
    image_size: int = 64
    groups: tuple[str, ...] = UTKFACE_GROUPS
    unet: UNetConfig = UNetConfig()
    ddpm: DDPMConfig = DDPMConfig()
    sde: SDEConfig = SDEConfig()
    dcgan: DCGANConfig = DCGANConfig()
    vae: VAEConfig = VAEConfig()

    @field_validator("image_size")
    @classmethod
    def _size(cls, v: int) -> int:
        if v not in (16, 32, 64, 128, 256):
            raise ValueError("image_size must be 16, 32, 64, 128 or 256 (64 and 128 for real use)")
        return v

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one group is needed (a single 'all' group for unlabelled data)")
        if len(set(v)) != len(v):
            raise ValueError(f"group names must be unique, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _fits(self) -> ModelConfig:
        for name in ("latent_adversary", "aux_classifier"):
            if getattr(self.vae, name) and self.family != "vae":
                raise ValueError(f"vae.{name} is a VAE setting (the VAE-GAN's discriminator conditions it)")
        if self.family in DIFFUSION_FAMILIES:
            levels = len(self.unet.block_out_channels)
            if self.image_size % 2 ** (levels - 1):
                raise ValueError(f"image_size {self.image_size} cannot be halved {levels - 1} times")
        return self


class DataConfig(Frozen):
    path: str
    labels: LabelFormat = "utkface"
    celeba_attributes: tuple[str, ...] = ("Male", "Young")
    hflip: bool = True
    jitter: bool = False
    balanced: bool = False
    test_fraction: float = Field(0.02, ge=0.0, le=0.5)
    cache_dir: str | None = None


class TrainConfig(Frozen):
    seed: int = Field(0, ge=0, lt=2**63)
    device: DeviceName = "auto"
    precision: Precision = "auto"
    batch_size: int = Field(32, ge=1, le=4096)
    max_steps: int | None = Field(None, ge=1)
    epochs: float | None = Field(None, gt=0)
    lr: float = Field(2e-4, gt=0, le=1.0)
    warmup_steps: int = Field(200, ge=0)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)
    cond_dropout: float = Field(0.1, ge=0.0, le=1.0)
    # Learning-rate multiplier for the conditioning parameters: the diffusion U-Nets' mix-embedding table
    # and the AC-GAN discriminator's group head (x10 for the DCGAN, family_defaults: a linear probe on a
    # fresh D learnt too slowly at x1). For the diffusion table x10 did not help while it started at
    # N(0, 0.02) (rms 0.022 -> 0.026 in 250 steps); at N(0, 1) it needs no multiplier.
    cond_lr_mult: float = Field(1.0, gt=0, le=1000)
    # Progressive resolution (issue 11, part b): the first `low_res_steps` steps train the fully
    # convolutional U-Net on each batch pooled to half the side, where a step costs a fraction; the score
    # family's noise levels shift with the side there (sigma x 1/2, "simple diffusion", Hoogeboom et al.
    # 2023), the DDPM's discrete schedule does not (its network is told t, not the noise level).
    low_res_steps: int = Field(0, ge=0)
    channels_last: bool = False  # measured: 2x slower than contiguous for this U-Net on these CPUs
    save_every: int = Field(500, ge=1)
    sample_every: int = Field(1000, ge=1)
    log_every: int = Field(50, ge=1)
    test_batches: int = Field(4, ge=0)
    out: str = "runs/default"

    @model_validator(mode="after")
    def _budget(self) -> TrainConfig:
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError("give either max_steps or epochs, not both")
        return self


class RunConfig(Frozen):
    model: ModelConfig
    data: DataConfig
    train: TrainConfig

    @model_validator(mode="after")
    def _low_res_fits(self) -> RunConfig:
        if self.train.low_res_steps:
            m = self.model
            if m.family not in DIFFUSION_FAMILIES:
                raise ValueError(f"train.low_res_steps needs a fully convolutional U-Net; {m.family} draws one size")
            levels = len(m.unet.block_out_channels)
            if (m.image_size // 2) % 2 ** (levels - 1):
                raise ValueError(f"half of image_size {m.image_size} cannot be halved {levels - 1} times")
        return self


# The diffusion recipe of issue 11 (README "Diffusion recipe"): v-prediction with min-SNR-5 weighting on
# DDPM's discrete linear schedule. The score family poses the same as denoising score matching: EDM's
# preconditioning at sigma_data 1 (its output F is then v), the VP-SDE's noise levels (the linear
# schedule in continuous time) and min-SNR-5 weights, with Gaussian Fourier features of scale 0.25 (smooth
# in sigma; scale 16 measured worse at equal cost, README "Fourier time features"). From scratch at equal
# cost it beat EDM's own levels and loss (sigma_data 0.5, ln sigma ~ N(0.186, 1.2^2), the levels shifted x4)
# on every measure at 1,500 steps (README "The score model trained like the DDPM"); arm files measured
# before pin what they were measured with. Fields absent from an older checkpoint's config.json take the
# field defaults above, which reproduce that checkpoint.
DIFFUSION_RECIPE: dict[str, Any] = {
    "ddpm": {"prediction": "v", "loss_weight": "min_snr"},
    "sde": {"kind": "edm", "fourier_scale": 0.25, "sigma_data": 1.0, "noise_levels": "vp", "loss_weight": "min_snr"},
}

# 64 px on 2 CPU cores: the 10.7M-parameter U-Net of the shipped checkpoints. One ResNet block per level
# and attention only at 8x8 train 1.4x faster than two blocks + attention at 16x16.
SHIPPED_MODEL: dict[str, Any] = {
    "image_size": 64,
    "unet": {
        "block_out_channels": (32, 64, 128, 256),
        "layers_per_block": 1,
        "attention_levels": (3,),
        "attention_head_dim": 64,
    },
    **DIFFUSION_RECIPE,
}

PRESETS: dict[str, dict[str, Any]] = {
    # Tests and smoke runs: seconds on a laptop core.
    "tiny": {
        "model": {
            "image_size": 16,
            "unet": {
                "block_out_channels": (8, 16),
                "layers_per_block": 1,
                "attention_levels": (1,),
                "attention_head_dim": 8,
            },
            "dcgan": {"latent_dim": 16, "g_channels": 8, "d_channels": 8},
            "vae": {"latent_dim": 16, "channels": 8, "kl_warmup_steps": 4},
            **DIFFUSION_RECIPE,
        },
        "data": {"test_fraction": 0.2},
        "train": {
            "batch_size": 8,
            "max_steps": 20,
            "warmup_steps": 0,
            "save_every": 10,
            "sample_every": 10,
            "log_every": 5,
            "test_batches": 1,
        },
    },
    # 2 CPU cores: the shipped network at batch 32.
    "cpu": {
        "model": SHIPPED_MODEL,
        "data": {"balanced": True},
        "train": {"batch_size": 32, "lr": 3e-4, "ema_decay": 0.998, "save_every": 250},
    },
    # One GPU: the shipped network (so the result ships under 30 MB fp16 and can continue from, or be
    # continued by, the CPU runs) at a batch that keeps a GPU busy; scripts/train_gpu.sh.
    "gpu": {
        "model": SHIPPED_MODEL,
        "data": {"balanced": True},
        "train": {"batch_size": 256, "lr": 3e-4, "ema_decay": 0.999, "save_every": 1000},
    },
}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: values in `override` win, nested dicts merge key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def family_defaults(family: Family) -> dict[str, Any]:
    """Per-family training defaults from the papers (DCGAN: Adam 2e-4, beta1 0.5, batch 64)."""
    if family == "dcgan":
        # channels_last: 1.1x faster for the DCGAN's (transposed) convolutions here, unlike the U-Net.
        return {
            "train": {
                "batch_size": 64,
                "lr": 2e-4,
                "warmup_steps": 0,
                "lr_schedule": "constant",
                "grad_clip": 1e9,
                "cond_dropout": 0.0,
                "cond_lr_mult": 10.0,
                "channels_last": True,
            }
        }
    if family == "vaegan":  # trained as a GAN: the DCGAN's settings (Adam 2e-4, beta1 0.5, batch 64)
        return family_defaults("dcgan")
    if family == "vae":  # Adam as in Kingma & Welling; no guidance, so no label dropout
        return {
            # The auxiliary classifier at weight 10: at equal cost it made the VAE follow the mix, which
            # the plain ELBO and the latent adversary did not (README "VAE and VAE-GAN").
            "model": {"vae": {"aux_classifier": 10.0}},
            "train": {
                "batch_size": 64,
                "lr": 5e-4,
                "warmup_steps": 0,
                "grad_clip": 1e9,
                "cond_dropout": 0.0,
                "channels_last": True,
            },
        }
    return {}


def resolve(preset: str, family: Family, *layers: dict[str, Any]) -> RunConfig:
    """Preset, then family defaults, then each layer (config file, CLI flags) in order."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    tree: dict[str, Any] = {"model": {"family": family}, "data": {}, "train": {}}
    tree = merge(tree, PRESETS[preset])
    tree = merge(tree, family_defaults(family))
    if preset == "tiny" and family in ("dcgan", "vae", "vaegan"):
        tree = merge(tree, {"train": {"batch_size": 8}})
    for layer in layers:
        tree = merge(tree, layer)
    return RunConfig.model_validate(tree)
