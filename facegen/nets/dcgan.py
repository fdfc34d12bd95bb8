"""DCGAN (Radford et al. 2016) conditioned on the demographic mix, at 16 to 256 px.

The 64 px networks are the paper's: G lifts a latent to 4x4x(8·ngf) and doubles the resolution four
times with stride-2 transposed convolutions, batch norm and ReLU, ending in tanh; D mirrors it with
stride-2 convolutions and LeakyReLU(0.2). Each extra doubling of the image adds one block (the 128 px
variant has five). The mix enters G concatenated to the latent; D sees it as K constant input planes,
through a projection of its last features, or not at all and predicts it instead (AC-GAN); see
DCGANConfig.d_conditioning.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from facegen.config import DCGANConfig


def _levels(image_size: int) -> int:
    """Number of stride-2 stages between 4x4 and the image: 4 at 64 px, 5 at 128 px."""
    return int(math.log2(image_size)) - 2


def init_weights(module: nn.Module) -> None:
    """The paper's init: conv weights ~ N(0, 0.02), batch-norm scale ~ N(1, 0.02), bias 0."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def conv_trunk(in_channels: int, base: int, image_size: int) -> tuple[list[nn.Module], int]:
    """The discriminator's body: (B, in_channels, H, W) -> (B, width, 4, 4) with stride-2 convolutions,
    batch norm and LeakyReLU(0.2); returns the layers and the last width (8 x base at 64 px)."""
    width = [base * 2 ** min(i, 3) for i in range(_levels(image_size))]  # e.g. 64,128,256,512
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
    for c_in, c_out in zip(width, width[1:], strict=False):
        layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, True)]
    return layers, width[-1]


class Generator(nn.Module):
    """(B, latent_dim) z, (B, K) mix -> (B, 3, H, W) image in [-1, 1]."""

    def __init__(self, cfg: DCGANConfig, image_size: int, num_groups: int) -> None:
        super().__init__()
        n = _levels(image_size)
        width = [cfg.g_channels * 2 ** min(i, 3) for i in reversed(range(n))]  # e.g. 512,256,128,64
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(cfg.latent_dim + num_groups, width[0], 4, 1, 0, bias=False),  # 4x4
            nn.BatchNorm2d(width[0]),
            nn.ReLU(True),
        ]
        for c_in, c_out in zip(width, width[1:], strict=False):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(width[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]  # H x W
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, mix.to(z.dtype)], dim=1)[:, :, None, None])


class Discriminator(nn.Module):
    """(B, 3, H, W) image, (B, K) mix -> (B,) real/fake logit; `score` also returns the AC-GAN head's
    (B, K) group logits from the same pass.

    With projection conditioning the logit is psi(h) + <E mix, mean_xy h> for the last 4x4 features h:
    linear in the mix, so a blend is scored as the same blend of the per-group projections. Mean (not
    SNGAN's sum) pooling and E ~ N(0, 0.02) keep the class term at the scale of psi without spectral
    norm: with sum pooling and PyTorch's default init the first 50 steps averaged a D loss of 22. With
    AC-GAN conditioning the trunk never sees the mix (else the head could read the answer off its input)."""

    def __init__(self, cfg: DCGANConfig, image_size: int, num_groups: int) -> None:
        super().__init__()
        self.mode = cfg.d_conditioning
        planes = num_groups if self.mode == "concat" else 0
        layers, width = conv_trunk(3 + planes, cfg.d_channels, image_size)
        self.net = nn.Sequential(*layers, nn.Conv2d(width, 1, 4, 1, 0, bias=False))  # 1x1 logit
        self.embed = nn.Linear(num_groups, width, bias=False) if self.mode == "projection" else None
        self.group_head = nn.Linear(width, num_groups) if self.mode == "acgan" else None
        self.apply(init_weights)

    def forward(self, x: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        return self.score(x, mix)[0]

    def _input(self, x: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        if self.mode != "concat":
            return x
        planes = mix.to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return torch.cat([x, planes], dim=1)

    def score(self, x: torch.Tensor, mix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Real/fake logit and, for AC-GAN, the group logits (else None)."""
        logit, groups, _ = self.judge(x, mix)
        return logit, groups

    def features(self, x: torch.Tensor, mix: torch.Tensor, depth: int = 3) -> torch.Tensor:
        """The activations after the trunk's `depth`-th stride-2 block (fewer where the trunk is shorter):
        the space in which the VAE-GAN measures reconstruction error (Larsen et al. use the third)."""
        return self.net[: self._feature_end(depth)](self._input(x, mix))

    def judge(
        self, x: torch.Tensor, mix: torch.Tensor, depth: int = 3
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """`score` and `features` from one pass through the trunk (the VAE-GAN needs both of its fakes)."""
        end = self._feature_end(depth)
        features = self.net[:end](self._input(x, mix))
        if self.mode == "concat":
            return self.net[end:](features).flatten(), None, features
        h = self.net[end:-1](features)
        logit = self.net[-1](h).flatten()
        pooled = h.mean((2, 3))
        if self.embed is not None:
            return logit + (self.embed(mix.to(h.dtype)) * pooled).sum(1), None, features
        assert self.group_head is not None
        return logit, self.group_head(pooled), features

    def _feature_end(self, depth: int) -> int:
        """Index in `net` just after the `depth`-th stride-2 block."""
        blocks = len(self.net) // 3  # [conv, lrelu] + [conv, bn, lrelu] per further block, + the logit conv
        return 2 + 3 * (min(depth, blocks) - 1)
