"""The demographic mix: how a face is conditioned on a blend of the dataset's groups.

Semantics, in one place:

* A **mix** over K groups is a non-negative weight vector, normalised to sum 1. `[1, 0, 0, 0, 0]` asks
  for group 0; `[0.5, 0.5, 0, 0, 0]` for a face halfway between groups 0 and 1.
* Networks see a **condition vector** of length K + 1: the mix followed by a "null" slot. Training
  shows one-hot labels and, with probability `cond_dropout`, the null one-hot instead (label dropout,
  Ho & Salimans 2022), so the same network also learns the unconditional model.
* Diffusion nets embed the condition vector linearly, ``e = c @ E`` with a learned table E of K + 1
  rows: a blend embeds to the same blend of the group embeddings, a point between groups. E starts at
  N(0, 1) like a class embedding in the field, so the condition is as loud as the time embedding it
  is added to from the first step (at N(0, 0.02) the networks learned to ignore it).
* Classifier-free guidance with scale w combines the two predictions as
  ``out = out_uncond + w * (out_cond - out_uncond)``: w = 1 is the plain conditional model, w = 0 the
  unconditional one, w > 1 pushes harder towards the mix.
* A diffusion model can also draw a blend by **composition** (`sampling.Request.blend`): the network
  sees only one-hot groups, as in training, and the predictions combine as
  ``out = out_uncond + w * sum_g mix_g * (out_g - out_uncond)`` (composable diffusion, Liu et al. 2022),
  one network evaluation per group in the blend, plus the unconditional one.
* The DCGAN takes the K-vector mix itself (no null slot: a GAN has no guidance): in G concatenated to
  the latent, in D as K constant feature planes beside the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class MixError(ValueError):
    """A demographic mix that cannot be used; the message says what is wrong with it."""


def normalise_mix(weights: Sequence[float] | torch.Tensor, groups: Sequence[str]) -> torch.Tensor:
    """Validate a mix against the group names and return it as a float32 (K,) tensor that sums to 1."""
    values = [float(w) for w in (weights.tolist() if isinstance(weights, torch.Tensor) else weights)]
    if len(values) != len(groups):
        raise MixError(f"mix has {len(values)} weights but the model has {len(groups)} groups ({', '.join(groups)})")
    for name, w in zip(groups, values, strict=True):
        if math.isnan(w) or math.isinf(w):
            raise MixError(f"mix weight for {name!r} is {w}; weights must be finite numbers")
        if w < 0:
            raise MixError(f"mix weight for {name!r} is negative ({w}); weights must be >= 0")
    total = sum(values)
    if total <= 0:
        raise MixError("all mix weights are zero; give at least one group a positive weight")
    return torch.tensor(values, dtype=torch.float32) / total


def condition_vector(mix: torch.Tensor) -> torch.Tensor:
    """(B, K) mixes -> (B, K + 1) condition vectors with an empty null slot."""
    return torch.cat([mix, mix.new_zeros(mix.shape[0], 1)], dim=1)


def null_condition(batch: int, num_groups: int, device: torch.device | None = None) -> torch.Tensor:
    """(B, K + 1) condition vectors that select the learned null embedding (unconditional model)."""
    cond = torch.zeros(batch, num_groups + 1, device=device)
    cond[:, -1] = 1.0
    return cond


def drop_labels(cond: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Replace each row by the null condition with probability p (classifier-free guidance training)."""
    if p <= 0:
        return cond
    drop = (torch.rand(cond.shape[0], generator=gen) < p).to(cond.device)
    null = null_condition(cond.shape[0], cond.shape[1] - 1, cond.device)
    return torch.where(drop[:, None], null, cond)


class MixEmbedding(nn.Module):
    """(B, K + 1) condition vector -> (B, dim) embedding, linear in the weights (see module docstring)."""

    def __init__(self, num_groups: int, dim: int, init_std: float = 1.0) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(num_groups + 1, dim) * init_std)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return cond.to(self.table.dtype) @ self.table


def guide(out_cond: torch.Tensor, out_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: out_u + w (out_c - out_u)."""
    return out_uncond + scale * (out_cond - out_uncond)


def group_parts(cond: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(B, K + 1) condition vectors -> [((B,) weights of group g, (B, K + 1) one-hot conditions of g)] for
    every group some row asks for: the terms of a composed blend."""
    k = cond.shape[1] - 1
    one_hot = torch.eye(k + 1, dtype=cond.dtype, device=cond.device)
    return [(cond[:, g], one_hot[g].expand_as(cond)) for g in range(k) if bool((cond[:, g] > 0).any())]


def compose(
    weights: Sequence[torch.Tensor], outs_group: Sequence[torch.Tensor], out_uncond: torch.Tensor, scale: float
) -> torch.Tensor:
    """A blend drawn by composition: out_u + w sum_g mix_g (out_g - out_u), the conjunction of composable
    diffusion (Liu et al. 2022) with guidance w; for one group it is `guide`."""
    shape = (-1,) + (1,) * (out_uncond.dim() - 1)
    delta = sum(m.to(o).reshape(shape) * (o - out_uncond) for m, o in zip(weights, outs_group, strict=True))
    return out_uncond + scale * delta
