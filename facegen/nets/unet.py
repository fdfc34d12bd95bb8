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
            attention_head_dim=cfg.attention_head_dim,
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
        self.mix_embedding = MixEmbedding(num_groups, time_embed_dim, cfg.mix_embed_std)
        for module in self.unet.modules():
            if isinstance(module, nn.Conv2d):
                module.register_forward_pre_hook(_input_in_weight_layout)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, class_labels=self.mix_embedding(cond)).sample


def _input_in_weight_layout(conv: nn.Conv2d, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
    """In eval mode, give every convolution its input in its weight's memory layout, whatever the batch size.

    diffusers' attention blocks hand the next convolution a channels-last view for a batch of 2 or more
    but a contiguous tensor for a batch of 1, and oneDNN picks a different kernel for each layout: the
    same face came out a few bf16 ulps apart alone and in a batch. With one layout, a face's pixels do
    not depend on its batch, so faces can be batched (measured: batch sizes 1-8 bit-identical on CPU).
    Training (batches of 32, no such promise) skips it: the copies cost it 7-10% of its speed.
    """
    if conv.training:
        return None
    layout = torch.channels_last if conv.weight.is_contiguous(memory_format=torch.channels_last) else None
    x = args[0].contiguous(memory_format=layout) if layout else args[0].contiguous()
    return (x, *args[1:])
