"""The diffusion U-Net: a `diffusers.UNet2DModel` that also takes a demographic condition vector.

The net maps ``(x, t, cond) -> tensor`` and knows nothing about noise: `facegen.diffusion` decides what
`t` is and what the output means. With ``time_embedding="fourier"`` (the score family) diffusers feeds
``log(t)`` to a Gaussian Fourier projection and *divides the output by t*; called with the marginal
std sigma(t) as `t`, the output is therefore a score estimate that scales like 1/sigma (NCSN++).
"""

from __future__ import annotations

from typing import Literal

import torch
from diffusers import UNet2DModel
from torch import nn

from facegen.conditioning import MixEmbedding
from facegen.config import UNetConfig


class ConditionalUNet(nn.Module):
    """(B, 3, H, W) x, (B,) t, (B, K + 1) cond -> (B, 3, H, W)."""

    def __init__(
        self,
        cfg: UNetConfig,
        image_size: int,
        num_groups: int,
        time_embedding: Literal["positional", "fourier"] = "positional",
        fourier_scale: float = 16.0,
    ) -> None:
        super().__init__()
        levels = range(len(cfg.block_out_channels))
        down = tuple("AttnDownBlock2D" if i in cfg.attention_levels else "DownBlock2D" for i in levels)
        up = tuple("AttnUpBlock2D" if i in cfg.attention_levels else "UpBlock2D" for i in reversed(levels))
        self.unet = UNet2DModel(
            sample_size=image_size,
            in_channels=3,
            out_channels=3,
            block_out_channels=cfg.block_out_channels,
            layers_per_block=cfg.layers_per_block,
            down_block_types=down,
            up_block_types=up,
            norm_num_groups=cfg.norm_groups,
            attention_head_dim=8,
            dropout=cfg.dropout,
            time_embedding_type=time_embedding,
            flip_sin_to_cos=time_embedding == "positional",
            class_embed_type="identity",
        )
        if time_embedding == "fourier":
            # diffusers hard-codes scale 16 for its Gaussian Fourier features; honour the config.
            proj = self.unet.time_proj
            with torch.no_grad():
                proj.weight.mul_(fourier_scale / 16.0)
        time_embed_dim = cfg.block_out_channels[0] * 4
        self.mix_embedding = MixEmbedding(num_groups, time_embed_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, class_labels=self.mix_embedding(cond)).sample
