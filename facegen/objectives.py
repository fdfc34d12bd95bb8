"""What each family adds to the one training loop (`facegen.training`): its objective.

EDM's training loop never names a model family; it calls a loss object. Here the loop keeps data, EMA,
precision, checkpoints, logging, resume and DDP, written once, and a family's objective owns the rest:
the optimisers of its networks (and of any network that is never shipped, such as a GAN's
discriminator), one optimisation step of the shipped network, and the held-out figures. A new family
is a new objective and one line in `build_objective`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from facegen.conditioning import condition_vector, drop_labels, null_condition
from facegen.config import DCGANConfig, RunConfig, VAEConfig
from facegen.diffusion.ddpm import alphas_cumprod, ddpm_loss
from facegen.diffusion.edm import edm_loss
from facegen.diffusion.sde import dsm_loss, make_sde
from facegen.runtime import autocast

NoiseSource = Callable[[], torch.Generator]


class Objective(Protocol):
    """One family's training: `step` updates the shipped network `net` (the loop then updates its EMA)."""

    optimisers: dict[str, torch.optim.Optimizer]  # by their key in state.pt: "opt" drives the shipped net

    def step(self, x: torch.Tensor, mix: torch.Tensor, gen: torch.Generator, step: int) -> dict[str, float]:
        """Optimisation step `step` on (B, 3, H, W) faces in [-1, 1] with (B, K) one-hot mixes."""
        ...

    def held_out(self, ema: nn.Module, x: torch.Tensor, mix: torch.Tensor, noise: NoiseSource) -> dict[str, float]:
        """Figures on one held-out batch; `noise()` gives the same fresh generator at every call."""
        ...

    def networks(self) -> dict[str, nn.Module]:
        """Networks besides the shipped one, by their key in state.pt (never exported)."""
        ...

    def recipe(self) -> str: ...


def bare(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net


@dataclass
class DiffusionObjective:
    """DDPM (epsilon or v, `ddpm_loss`) or the score family (VP/VE DSM, `dsm_loss`; EDM, `edm_loss`), with
    label dropout for classifier-free guidance, gradient clipping and an fp16 loss scaler."""

    run: RunConfig
    device: torch.device
    net: nn.Module
    optimisers: dict[str, torch.optim.Optimizer]
    scaler: torch.amp.GradScaler

    @classmethod
    def build(cls, run: RunConfig, net: nn.Module, device: torch.device) -> DiffusionObjective:
        named = list(net.named_parameters())
        table = [p for n, p in named if "mix_embedding." in n]
        rest = [p for n, p in named if "mix_embedding." not in n]
        groups = [{"params": rest}, {"params": table, "lr_mult": run.train.cond_lr_mult}]
        opt = torch.optim.AdamW(groups, lr=run.train.lr, weight_decay=0.0)
        scaler = torch.amp.GradScaler(device.type, enabled=run.train.precision == "fp16")
        return cls(run, device, net, {"opt": opt}, scaler)

    def __post_init__(self) -> None:
        self.alpha_bar = alphas_cumprod(self.run.model.ddpm)
        self.sde = make_sde(self.run.model.sde)

    def loss(self, net: nn.Module, x0: torch.Tensor, cond: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        m = self.run.model
        match m.family:
            case "ddpm":
                return ddpm_loss(net, m.ddpm, x0, cond, self.alpha_bar, gen)
            case "sde" if m.sde.kind == "edm":  # at half the side (train.low_res_steps), half the sigma
                return edm_loss(net, m.sde, x0, cond, gen, math.log(x0.shape[-1] / m.image_size))
            case "sde":
                return dsm_loss(net, self.sde, x0, cond, gen)
        raise ValueError(f"{m.family} is not a diffusion family")

    def step(self, x: torch.Tensor, mix: torch.Tensor, gen: torch.Generator, step: int) -> dict[str, float]:
        t, opt = self.run.train, self.optimisers["opt"]
        cond = drop_labels(condition_vector(mix), t.cond_dropout, gen)
        with autocast(self.device, t.precision):
            loss = self.loss(self.net, x, cond, gen)
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), t.grad_clip)
        self.scaler.step(opt)
        self.scaler.update()
        return {"train_loss": loss.item()}

    def held_out(self, ema: nn.Module, x: torch.Tensor, mix: torch.Tensor, noise: NoiseSource) -> dict[str, float]:
        """test_loss: the loss of the EMA net with fixed noise. cond_signal: the mean |out_cond - out_null| of
        the EMA net on the same noisy faces, i.e. how much its output depends on the mix; near 0 means the
        condition is ignored, which shows within a few hundred steps."""
        cond = condition_vector(mix)
        null = null_condition(len(x), cond.shape[1] - 1, self.device)
        with autocast(self.device, self.run.train.precision):
            loss, out_cond = self._recorded(ema, x, cond, noise)
            _, out_null = self._recorded(ema, x, null, noise)
        return {"test_loss": loss, "cond_signal": (out_cond - out_null).abs().mean().item()}

    def _recorded(
        self, ema: nn.Module, x: torch.Tensor, cond: torch.Tensor, noise: NoiseSource
    ) -> tuple[float, torch.Tensor]:
        """The loss on one batch and the network's raw output inside it."""
        seen: list[torch.Tensor] = []
        handle = ema.register_forward_hook(lambda _m, _a, out: seen.append(out.detach().float()))
        try:
            loss = self.loss(ema, x, cond, noise()).item()
        finally:
            handle.remove()
        return loss, seen[-1]

    def networks(self) -> dict[str, nn.Module]:
        return {}

    def recipe(self) -> str:
        m, t = self.run.model, self.run.train
        if m.family == "ddpm":
            loss = f"{m.ddpm.prediction}-prediction, {m.ddpm.loss_weight} weighting"
        elif m.sde.kind == "edm":
            levels = (
                f"VP-SDE levels (beta {m.sde.beta_min:g}-{m.sde.beta_max:g})"
                if m.sde.noise_levels == "vp"
                else f"ln sigma ~ N({m.sde.p_mean:g}, {m.sde.p_std:g}^2)"
            )
            weight = "EDM loss" if m.sde.loss_weight == "edm" else f"min-SNR-{m.sde.min_snr_gamma:g} loss"
            loss = f"EDM preconditioning (sigma_data {m.sde.sigma_data:g}) and {weight}, {levels}"
        else:
            loss = f"{m.sde.kind.upper()} DSM"
        return (
            f"{loss}, EMA {t.ema_decay:g}, mix table N(0, {m.unet.mix_embed_std:g}^2) at lr x{t.cond_lr_mult:g}, "
            f"{m.unet.attention_head_dim}-channel attention heads"
        )


@dataclass
class GANObjective:
    """Radford et al.: D maximises log D(x) + log(1 - D(G(z))); G maximises log D(G(z)) (BCE). With AC-GAN
    conditioning D also learns the groups of real faces, and G pays acgan_weight x the cross-entropy of
    D's group head on its fakes against the mix it was asked for."""

    run: RunConfig
    device: torch.device
    net: nn.Module
    disc: nn.Module
    optimisers: dict[str, torch.optim.Optimizer]

    @classmethod
    def build(cls, run: RunConfig, net: nn.Module, disc: nn.Module, device: torch.device) -> GANObjective:
        t = run.train
        head = [p for n, p in disc.named_parameters() if "group_head." in n]
        trunk = [p for n, p in disc.named_parameters() if "group_head." not in n]
        d_groups = [{"params": trunk}] + ([{"params": head, "lr_mult": t.cond_lr_mult}] if head else [])
        opt_d = torch.optim.Adam(d_groups, lr=t.lr, betas=(0.5, 0.999))
        opt = torch.optim.Adam(net.parameters(), lr=t.lr, betas=(0.5, 0.999))
        return cls(run, device, net, disc, {"opt": opt, "opt_d": opt_d})

    def step(self, x: torch.Tensor, mix: torch.Tensor, gen: torch.Generator, step: int) -> dict[str, float]:
        prec, b, cfg = self.run.train.precision, x.shape[0], self.run.model.dcgan
        opt, opt_d = self.optimisers["opt"], self.optimisers["opt_d"]
        z = torch.randn(b, cfg.latent_dim, generator=gen).to(self.device)
        logs: dict[str, float] = {}
        fake_mix = random_blends(mix, cfg.acgan_blends, gen) if cfg.d_conditioning == "acgan" else mix
        with autocast(self.device, prec):
            fake = self.net(z, fake_mix)
            d_real, groups_real = bare(self.disc).score(x, mix)
            d_fake = self.disc(fake.detach(), fake_mix)
            d_loss = _bce(d_real, 1.0) + _bce(d_fake, 0.0)
            if groups_real is not None:
                d_groups = soft_cross_entropy(groups_real.float(), mix)
                d_loss = d_loss + d_groups
                logs["d_group_loss"] = d_groups.item()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        with autocast(self.device, prec):
            g_logit, g_groups = bare(self.disc).score(fake, fake_mix)
            g_loss = _bce(g_logit, 1.0)
            if g_groups is not None:
                g_group_loss = soft_cross_entropy(g_groups.float(), fake_mix)
                g_loss = g_loss + cfg.acgan_weight * g_group_loss
                logs["g_group_loss"] = g_group_loss.item()
        opt.zero_grad(set_to_none=True)
        g_loss.backward()
        opt.step()
        return {"train_loss": g_loss.item(), "d_loss": d_loss.item(), "g_loss": g_loss.item()} | logs

    def held_out(self, ema: nn.Module, x: torch.Tensor, mix: torch.Tensor, noise: NoiseSource) -> dict[str, float]:
        """test_loss: the discriminator's BCE on held-out real faces (rises when D memorises)."""
        disc = bare(self.disc)  # rank 0 alone runs this: a DDP wrapper would wait for the others
        disc.eval()
        with autocast(self.device, self.run.train.precision):
            logits = disc(x, mix)
        disc.train()
        return {"test_loss": _bce(logits, 1.0).item()}

    def networks(self) -> dict[str, nn.Module]:
        return {"disc": self.disc}

    def recipe(self) -> str:
        return _d_recipe(self.run.model.dcgan, self.run.train.cond_lr_mult)


def _d_recipe(cfg: DCGANConfig, lr_mult: float) -> str:
    weight = (
        f" (weight {cfg.acgan_weight:g}, blends {cfg.acgan_blends:g}, head lr x{lr_mult:g})"
        if cfg.d_conditioning == "acgan"
        else ""
    )
    return f"D conditioning {cfg.d_conditioning}{weight}"


@dataclass
class VAEObjective:
    """The negative ELBO of the conditional VAE (Kingma & Welling 2014, eq. 10; Sohn et al. 2015):
    -log p(x | z, mix) for a Gaussian decoder of fixed std, plus beta_t KL(q(z | x, mix) || N(0, I)) in
    closed form, with z drawn by the reparameterisation trick; beta_t warms up linearly to beta.

    With a latent adversary (`VAEConfig.latent_adversary`) a critic learns the group from z and the
    encoder also pays the critic's cross-entropy against the uniform distribution, weighted. With an
    auxiliary classifier (`VAEConfig.aux_classifier`) a classifier learns the groups of real faces and
    the decoder also pays its cross-entropy on prior draws against the mix they were drawn at, weighted."""

    run: RunConfig
    device: torch.device
    net: nn.Module
    encoder: nn.Module
    critic: nn.Module | None
    optimisers: dict[str, torch.optim.Optimizer]
    aux: nn.Module | None = None

    @classmethod
    def build(
        cls,
        run: RunConfig,
        net: nn.Module,
        encoder: nn.Module,
        device: torch.device,
        critic: nn.Module | None = None,
        aux: nn.Module | None = None,
    ) -> VAEObjective:
        opt = torch.optim.Adam([*net.parameters(), *encoder.parameters()], lr=run.train.lr)
        optimisers = {"opt": opt}
        if critic is not None:
            optimisers["opt_critic"] = torch.optim.Adam(critic.parameters(), lr=run.train.lr)
        if aux is not None:
            optimisers["opt_aux"] = torch.optim.Adam(aux.parameters(), lr=run.train.lr)
        return cls(run, device, net, encoder, critic, optimisers, aux)

    def beta(self, step: int) -> float:
        return kl_weight(self.run.model.vae, step)

    def terms(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        x: torch.Tensor,
        mix: torch.Tensor,
        gen: torch.Generator,
        prior_mix: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B,) reconstruction -log p(x | z) (up to a constant), (B,) KL, in nats per face, the (B, D) z
        drawn and, given `prior_mix`, one decoded prior draw per face at it (from the same decoder pass:
        one forward per step under DDP, and the same batch-norm statistics). Training passes the
        (possibly DDP-wrapped) networks; held-out figures the bare ones, since rank 0 alone computes them."""
        std, b = self.run.model.vae.recon_std, x.shape[0]
        with autocast(self.device, self.run.train.precision):
            z, kl = encode(encoder, x, mix, gen)
            if prior_mix is None:
                recon, drawn = decoder(z, mix).float(), None
            else:
                u = torch.randn(z.shape, generator=gen).to(z)
                out = decoder(torch.cat([z, u]), torch.cat([mix, prior_mix])).float()
                recon, drawn = out[:b], out[b:]
        nll = ((recon - x.float()) ** 2).sum(dim=(1, 2, 3)) / (2 * std**2)
        return nll, kl, z, drawn

    def step(self, x: torch.Tensor, mix: torch.Tensor, gen: torch.Generator, step: int) -> dict[str, float]:
        cfg = self.run.model.vae
        prior_mix = random_blends(mix, cfg.aux_blends, gen) if self.aux is not None else None
        nll, kl, z, drawn = self.terms(self.encoder, self.net, x, mix, gen, prior_mix)
        beta = self.beta(step)
        loss = (nll + beta * kl).mean()
        logs: dict[str, float] = {}
        opt = self.optimisers["opt"]
        params = [p for g in opt.param_groups for p in g["params"]]
        if self.critic is not None:
            critic_loss = soft_cross_entropy(self.critic(z.detach()), mix)
            opt_critic = self.optimisers["opt_critic"]
            opt_critic.zero_grad(set_to_none=True)
            critic_loss.backward()
            opt_critic.step()
            confusion = soft_cross_entropy(bare(self.critic)(z), torch.full_like(mix, 1 / mix.shape[1]))
            loss = loss + cfg.latent_adversary * confusion
            logs = {"critic_loss": critic_loss.item(), "confusion": confusion.item()}
        if self.aux is not None and drawn is not None and prior_mix is not None:
            with autocast(self.device, self.run.train.precision):
                aux_real = soft_cross_entropy(self.aux(x).float(), mix)
            opt_aux = self.optimisers["opt_aux"]
            opt_aux.zero_grad(set_to_none=True)
            aux_real.backward()
            opt_aux.step()
            with autocast(self.device, self.run.train.precision):
                aux_drawn = soft_cross_entropy(_frozen_call(bare(self.aux), drawn).float(), prior_mix)
            loss = loss + cfg.aux_classifier * aux_drawn
            logs |= {"aux_real_loss": aux_real.item(), "aux_drawn_loss": aux_drawn.item()}
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=params)  # the critic's and the classifier's weights are constants here
        torch.nn.utils.clip_grad_norm_(params, self.run.train.grad_clip)
        opt.step()
        return {"train_loss": loss.item(), "recon_nll": nll.mean().item(), "kl": kl.mean().item(), "beta": beta} | logs

    def held_out(self, ema: nn.Module, x: torch.Tensor, mix: torch.Tensor, noise: NoiseSource) -> dict[str, float]:
        """test_loss: the negative ELBO at the full beta, through the EMA decoder, with fixed noise.
        cond_signal: the mean |D(u, mix) - D(u, mix')| of the EMA decoder over prior draws u, mix' the
        batch's mixes rolled by one: how much a prior sample depends on the mix it is asked for (near 0:
        the decoder ignores it). With a latent adversary, test_z_group_ce: the critic's cross-entropy on
        the held-out z (it cannot read the group off z when this stays near the entropy of the held-out
        groups, ln K when balanced)."""
        encoder = bare(self.encoder)
        encoder.eval()
        try:
            nll, kl, z, _ = self.terms(encoder, ema, x, mix, noise())
        finally:
            encoder.train()
        beta = self.run.model.vae.beta
        u = torch.randn(z.shape, generator=noise()).to(z)
        with autocast(self.device, self.run.train.precision):
            signal = (ema(u, mix).float() - ema(u, mix.roll(1, dims=0)).float()).abs().mean()
        figures = {
            "test_loss": (nll + beta * kl).mean().item(),
            "test_recon_nll": nll.mean().item(),
            "test_kl": kl.mean().item(),
            "cond_signal": signal.item(),
        }
        if self.critic is not None:
            with torch.no_grad():
                figures["test_z_group_ce"] = soft_cross_entropy(bare(self.critic)(z), mix).item()
        return figures

    def networks(self) -> dict[str, nn.Module]:
        extra = {"critic": self.critic, "aux_classifier": self.aux}
        return {"encoder": self.encoder} | {k: m for k, m in extra.items() if m is not None}

    def recipe(self) -> str:
        cfg = self.run.model.vae
        adversary = f", latent adversary {cfg.latent_adversary:g}" if cfg.latent_adversary else ""
        aux = f", auxiliary classifier {cfg.aux_classifier:g} (blends {cfg.aux_blends:g})" if cfg.aux_classifier else ""
        return (
            f"beta {cfg.beta:g} (KL warm-up {cfg.kl_warmup_steps} steps), decoder std {cfg.recon_std:g}, "
            f"latent {cfg.latent_dim}{adversary}{aux}, EMA {self.run.train.ema_decay:g}"
        )


@dataclass
class VAEGANObjective:
    """The VAE-GAN of Larsen et al. 2016 (algorithm 1): the VAE's decoder is also the GAN's generator.

    D (the DCGAN discriminator, with its conditioning) learns to tell real faces from reconstructions
    and prior samples. The pixel likelihood of the VAE is replaced by a Gaussian likelihood of D's
    features (`Discriminator.features`), so reconstructions are judged as D sees them. Each network
    minimises its own loss: the encoder beta_t KL + feature error, the decoder gamma x feature error +
    the GAN loss on reconstructions and prior samples (the encoder gets no GAN gradient), D the GAN loss.

    The encoder and decoder losses are summed into one backward pass (DDP averages gradients over one
    backward per forward): the encoder's feature error goes through a copy of the decoder whose weights
    are constants (`_frozen_call`), the decoder's through a reconstruction from the detached z.
    """

    run: RunConfig
    device: torch.device
    net: nn.Module
    encoder: nn.Module
    disc: nn.Module
    optimisers: dict[str, torch.optim.Optimizer]

    @classmethod
    def build(
        cls, run: RunConfig, net: nn.Module, encoder: nn.Module, disc: nn.Module, device: torch.device
    ) -> VAEGANObjective:
        gan = GANObjective.build(run, net, disc, device)
        opt_enc = torch.optim.Adam(encoder.parameters(), lr=run.train.lr, betas=(0.5, 0.999))
        return cls(run, device, net, encoder, disc, gan.optimisers | {"opt_enc": opt_enc})

    def step(self, x: torch.Tensor, mix: torch.Tensor, gen: torch.Generator, step: int) -> dict[str, float]:
        prec, b, m = self.run.train.precision, x.shape[0], self.run.model
        disc = bare(self.disc)
        z_prior = torch.randn(b, m.vae.latent_dim, generator=gen).to(self.device)
        prior_mix = random_blends(mix, m.dcgan.acgan_blends, gen) if m.dcgan.d_conditioning == "acgan" else mix
        fake_mix = torch.cat([mix, prior_mix])
        logs: dict[str, float] = {}
        # One pass of each wrapped network per step (DDP): the decoder draws reconstructions and prior
        # samples in one batch, and D judges both fakes in one batch.
        with autocast(self.device, prec):
            z, kl = encode(self.encoder, x, mix, gen)
            fakes = self.net(torch.cat([z.detach(), z_prior]), fake_mix)  # trains the decoder only
            d_real, groups_real = disc.score(x, mix)
            d_fake = self.disc(fakes.detach(), fake_mix).float()
            d_loss = _bce(d_real, 1.0) + 2 * _bce(d_fake, 0.0)
            if groups_real is not None:
                logs["d_group_loss"] = (d_groups := soft_cross_entropy(groups_real.float(), mix)).item()
                d_loss = d_loss + d_groups
        opt_d = self.optimisers["opt_d"]
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        with autocast(self.device, prec):
            with torch.no_grad():
                real_features = disc.features(x, mix).float()
            # The same reconstructions (same batch, so the same batch-norm statistics), differentiable in z only.
            recon_for_encoder = _frozen_call(bare(self.net), torch.cat([z, z_prior]), fake_mix)[:b]
            g_logit, g_groups, fake_features = disc.judge(fakes, fake_mix)
            feature_err = _feature_error(fake_features[:b], real_features)
            encoder_feature_err = _feature_error(disc.features(recon_for_encoder, mix), real_features)
            gan = 2 * _bce(g_logit, 1.0)
            if g_groups is not None:
                logs["g_group_loss"] = (g_group_loss := soft_cross_entropy(g_groups[b:].float(), prior_mix)).item()
                gan = gan + m.dcgan.acgan_weight * g_group_loss
        beta = kl_weight(m.vae, step)
        enc_loss = (beta * kl + encoder_feature_err).mean()
        dec_loss = m.vae.gamma * feature_err.mean() + gan
        opt, opt_enc = self.optimisers["opt"], self.optimisers["opt_enc"]
        params = [p for o in (opt, opt_enc) for g in o.param_groups for p in g["params"]]
        opt.zero_grad(set_to_none=True)
        opt_enc.zero_grad(set_to_none=True)
        (enc_loss + dec_loss).backward(inputs=params)  # D's weights are constants here
        opt.step()
        opt_enc.step()
        return {
            "train_loss": dec_loss.item(),
            "d_loss": d_loss.item(),
            "g_loss": gan.item(),
            "feature_err": feature_err.mean().item(),
            "kl": kl.mean().item(),
            "beta": beta,
        } | logs

    def held_out(self, ema: nn.Module, x: torch.Tensor, mix: torch.Tensor, noise: NoiseSource) -> dict[str, float]:
        """test_loss: the pixel MSE of held-out faces reconstructed through the EMA decoder (a figure that
        does not move with D's features, unlike the training loss); test_kl: their KL in nats."""
        encoder = bare(self.encoder)  # rank 0 alone runs this: a DDP wrapper would wait for the others
        encoder.eval()
        try:
            with autocast(self.device, self.run.train.precision):
                z, kl = encode(encoder, x, mix, noise())
                recon = ema(z, mix).float()
        finally:
            encoder.train()
        return {"test_loss": ((recon - x.float()) ** 2).mean().item(), "test_kl": kl.mean().item()}

    def networks(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "disc": self.disc}

    def recipe(self) -> str:
        cfg = self.run.model.vae
        return (
            f"beta {cfg.beta:g} (KL warm-up {cfg.kl_warmup_steps} steps), gamma {cfg.gamma:g}, "
            f"latent {cfg.latent_dim}, {_d_recipe(self.run.model.dcgan, self.run.train.cond_lr_mult)}"
        )


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy of (B,) logits against one label, mean over the batch."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _feature_error(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) -log N(target | features, I) up to a constant: half the squared distance, summed per face."""
    return 0.5 * ((features.float() - target) ** 2).flatten(1).sum(1)


def _frozen_call(module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """module(*args) with its weights as constants and its buffers copied: the output carries gradient to
    the inputs only, and batch-norm running statistics are not updated a second time."""
    params = {n: p.detach() for n, p in module.named_parameters()}
    buffers = {n: t.clone() for n, t in module.named_buffers()}
    return torch.func.functional_call(module, params | buffers, args)


def encode(
    encoder: nn.Module, x: torch.Tensor, mix: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """z ~ q(z | x, mix) by the reparameterisation trick, and the (B,) KL(q || N(0, I)) in closed form, nats."""
    mean, log_var = encoder(x, mix)
    mean, log_var = mean.float(), log_var.float()
    z = mean + (0.5 * log_var).exp() * torch.randn(mean.shape, generator=gen).to(mean)
    return z, 0.5 * (mean**2 + log_var.exp() - 1 - log_var).sum(dim=1)


def kl_weight(cfg: VAEConfig, step: int) -> float:
    """beta, warmed up linearly from 0 over kl_warmup_steps (Bowman et al. 2016)."""
    return cfg.beta * min(1.0, (step + 1) / cfg.kl_warmup_steps) if cfg.kl_warmup_steps else cfg.beta


def build_objective(run: RunConfig, net: nn.Module, device: torch.device, extra: dict[str, Any]) -> Objective:
    """The family's objective over `net`; `extra` holds the networks built beside it
    (`nets.build_training_networks`: a GAN's "disc", a VAE's "encoder", a VAE-GAN's both)."""
    match run.model.family:
        case "ddpm" | "sde":
            return DiffusionObjective.build(run, net, device)
        case "dcgan":
            return GANObjective.build(run, net, extra["disc"], device)
        case "vae":
            return VAEObjective.build(
                run, net, extra["encoder"], device, extra.get("critic"), extra.get("aux_classifier")
            )
        case "vaegan":
            return VAEGANObjective.build(run, net, extra["encoder"], extra["disc"], device)
    raise ValueError(f"unknown family {run.model.family!r}")


def random_blends(mix: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """Replace about `share` of the (one-hot) mixes by a blend of their group and a random other one,
    with the first group's weight ~ U(0, 1)."""
    b, k = mix.shape
    if k < 2:  # unlabelled data (one group): nothing to blend
        return mix
    picked = torch.rand(b, generator=gen) < share
    own = mix.argmax(1).cpu()
    other = (own + torch.randint(1, k, (b,), generator=gen)) % k
    w = torch.rand(b, 1, generator=gen)
    eye = torch.eye(k)
    blends = (w * eye[own] + (1 - w) * eye[other]).to(mix.device, mix.dtype)
    return torch.where(picked.to(mix.device)[:, None], blends, mix)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a distribution over groups (a mix), mean over the batch."""
    return -(target.to(logits.dtype) * F.log_softmax(logits, dim=1)).sum(1).mean()
