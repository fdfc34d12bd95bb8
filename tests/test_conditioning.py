from __future__ import annotations

import math

import pytest
import torch

from facegen.conditioning import (
    MixEmbedding,
    MixError,
    condition_vector,
    drop_labels,
    guide,
    normalise_mix,
    null_condition,
)
from facegen.runtime import generator

GROUPS = ("White", "Black", "Asian", "Indian", "Others")


def test_mix_is_normalised() -> None:
    assert torch.allclose(normalise_mix([2, 2, 0, 0, 0], GROUPS), torch.tensor([0.5, 0.5, 0, 0, 0]))


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1, 0, 0], "3 weights but the model has 5 groups"),
        ([1, -0.5, 0, 0, 0], "'Black' is negative"),
        ([1, math.nan, 0, 0, 0], "'Black' is nan"),
        ([math.inf, 0, 0, 0, 0], "finite"),
        ([0, 0, 0, 0, 0], "all mix weights are zero"),
    ],
)
def test_bad_mixes_name_the_problem(weights: list[float], message: str) -> None:
    with pytest.raises(MixError, match=message):
        normalise_mix(weights, GROUPS)


def test_blend_embeds_between_groups() -> None:
    emb = MixEmbedding(5, 16)
    a, b = torch.eye(5)[0:1], torch.eye(5)[1:2]
    mid = emb(condition_vector(0.5 * a + 0.5 * b))
    assert torch.allclose(mid, 0.5 * emb(condition_vector(a)) + 0.5 * emb(condition_vector(b)), atol=1e-6)
    assert torch.allclose(emb(null_condition(1, 5)), emb.table[-1:])


def test_label_dropout_rate() -> None:
    cond = condition_vector(torch.eye(5)[torch.zeros(4000, dtype=torch.long)])
    dropped = drop_labels(cond, 0.1, generator(0, "drop"))
    rate = (dropped[:, -1] == 1).float().mean().item()
    assert 0.08 < rate < 0.12 and torch.equal(drop_labels(cond, 0.0, generator(0)), cond)


def test_guidance_combination() -> None:
    c, u = torch.tensor([2.0]), torch.tensor([1.0])
    assert guide(c, u, 1.0).item() == 2.0 and guide(c, u, 0.0).item() == 1.0 and guide(c, u, 3.0).item() == 4.0
