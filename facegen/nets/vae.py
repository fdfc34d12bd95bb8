"""The conditional VAE's networks (Sohn et al. 2015). The decoder p(x | z, mix) is the DCGAN generator
(`nets.dcgan.Generator`, the mix concatenated to z); the encoder q(z | x, mix) is the DCGAN
discriminator's convolutional body with the mix as K constant input planes, ending in the mean and log
variance of a diagonal Gaussian instead of a logit. `LatentCritic` guesses the group from z and
`AuxiliaryClassifier` from an image (training only)."""

from __future__ import annotations

import torch
from torch import nn

from facegen.config import DCGANConfig, VAEConfig
from facegen.nets.dcgan import Generator, conv_trunk, init_weights


def decoder(cfg: VAEConfig, image_size: int, num_groups: int) -> Generator:
    """(B, latent_dim) z, (B, K) mix -> (B, 3, H, W) mean image in [-1, 1]: the shipped network."""
    return Generator(DCGANConfig(latent_dim=cfg.latent_dim, g_channels=cfg.channels), image_size, num_groups)


class Encoder(nn.Module):
    """(B, 3, H, W) image, (B, K) mix -> (B, latent_dim) mean and (B, latent_dim) log variance of q(z | x, mix)."""

    def __init__(self, cfg: VAEConfig, image_size: int, num_groups: int) -> None:
        super().__init__()
        layers, width = conv_trunk(3 + num_groups, cfg.channels, image_size)
        self.net = nn.Sequential(*layers, nn.Conv2d(width, 2 * cfg.latent_dim, 4, 1, 0))  # 1x1 statistics
        self.apply(init_weights)

    def forward(self, x: torch.Tensor, mix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        planes = mix.to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
        mean, log_var = self.net(torch.cat([x, planes], dim=1)).flatten(1).chunk(2, dim=1)
        return mean, log_var.clamp(-30.0, 20.0)


class LatentCritic(nn.Module):
    """(B, latent_dim) z -> (B, K) group logits: the latent adversary of a Fader network (Lample et al.
    2017), a two-layer MLP as theirs. Never shipped."""

    def __init__(self, cfg: VAEConfig, num_groups: int, width: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(cfg.latent_dim, width),
            nn.LeakyReLU(0.2, True),
            nn.Linear(width, width),
            nn.LeakyReLU(0.2, True),
            nn.Linear(width, num_groups),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class AuxiliaryClassifier(nn.Module):
    """(B, 3, H, W) image -> (B, K) group logits: the DCGAN discriminator's body with its AC-GAN group head
    (mean-pooled last features, one linear layer) and no real/fake logit. Learns from real faces only;
    never shipped."""

    def __init__(self, cfg: VAEConfig, image_size: int, num_groups: int) -> None:
        super().__init__()
        layers, width = conv_trunk(3, cfg.channels, image_size)
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_groups))
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
