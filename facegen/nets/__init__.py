"""Networks: (x, t, cond) -> tensor. They know nothing about noise or losses."""

from __future__ import annotations

from torch import nn

from facegen.config import ModelConfig
from facegen.nets.dcgan import Discriminator, Generator
from facegen.nets.unet import ConditionalUNet
from facegen.nets.vae import AuxiliaryClassifier, Encoder, LatentCritic, decoder


def build_sampling_net(cfg: ModelConfig) -> nn.Module:
    """The network a checkpoint ships: the U-Net for diffusion, the generator for DCGAN, the decoder for
    the VAE and the VAE-GAN."""
    k = len(cfg.groups)
    match cfg.family:
        case "ddpm":
            return ConditionalUNet(cfg.unet, cfg.image_size, k, "positional")
        case "sde":
            return ConditionalUNet(cfg.unet, cfg.image_size, k, cfg.sde.time_embedding, cfg.sde.fourier_scale)
        case "dcgan":
            return Generator(cfg.dcgan, cfg.image_size, k)
        case "vae" | "vaegan":
            return decoder(cfg.vae, cfg.image_size, k)
    raise ValueError(f"unknown family {cfg.family!r}")


def build_training_networks(cfg: ModelConfig) -> dict[str, nn.Module]:
    """The networks a family trains beside the shipped one, never shipped: a GAN's discriminator, a VAE's
    encoder (and its latent critic and auxiliary classifier when weighted), a VAE-GAN's encoder and
    discriminator (keys as in the training state)."""
    match cfg.family:
        case "dcgan":
            return {"disc": build_discriminator(cfg)}
        case "vae":
            k = len(cfg.groups)
            nets: dict[str, nn.Module] = {"encoder": Encoder(cfg.vae, cfg.image_size, k)}
            if cfg.vae.latent_adversary:
                nets["critic"] = LatentCritic(cfg.vae, k)
            if cfg.vae.aux_classifier:
                nets["aux_classifier"] = AuxiliaryClassifier(cfg.vae, cfg.image_size, k)
            return nets
        case "vaegan":
            return {"encoder": Encoder(cfg.vae, cfg.image_size, len(cfg.groups)), "disc": build_discriminator(cfg)}
    return {}


def build_discriminator(cfg: ModelConfig) -> Discriminator:
    return Discriminator(cfg.dcgan, cfg.image_size, len(cfg.groups))


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
