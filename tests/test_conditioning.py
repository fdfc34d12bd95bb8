from __future__ import annotations

import math

import pytest
import torch

from facegen.conditioning import (
    MixEmbedding,
    MixError,
    compose,
    condition_vector,
    drop_labels,
    group_parts,
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


def test_composition_of_one_group_is_guidance_and_of_a_blend_its_weighted_sum() -> None:
    g = torch.Generator().manual_seed(0)
    out_a, out_b, out_u = (torch.randn(3, 2, 4, 4, generator=g) for _ in range(3))
    ones = torch.ones(3)
    assert torch.allclose(compose([ones], [out_a], out_u, 3.0), guide(out_a, out_u, 3.0))
    w = torch.tensor([0.5, 0.25, 1.0])
    mixed = compose([w, 1 - w], [out_a, out_b], out_u, 1.0)
    assert torch.allclose(mixed, w.reshape(-1, 1, 1, 1) * out_a + (1 - w).reshape(-1, 1, 1, 1) * out_b, atol=1e-6)


def test_group_parts_name_each_asked_group_once_with_its_weights() -> None:
    cond = condition_vector(torch.tensor([[0.5, 0.0, 0.5], [1.0, 0.0, 0.0]]))
    parts = group_parts(cond)
    assert [p[0].tolist() for p in parts] == [[0.5, 1.0], [0.5, 0.0]]
    assert [p[1].tolist() for p in parts] == [[[1, 0, 0, 0]] * 2, [[0, 0, 1, 0]] * 2]
