"""Guidance in a limited interval of noise levels: outside it the sampler gets the conditional prediction
alone, at one network pass, and the counts the app and the evaluation report match the passes made."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from facegen.pipeline import FaceGenerator, RequestError
from facegen.sampling import DEFAULT_GUIDANCE_INTERVAL, EVERYWHERE, evaluation_sigmas, request_evaluations
from facegen.studio import face_settings, reproduce_command

MIX = [0.5, 0.5, 0, 0, 0]
SIGMA_SAMPLERS = [("ddpm", "dpmpp"), ("ddpm", "ddim"), ("ddpm", "ancestral"), ("sde", "dpmpp_2m"), ("sde", "heun")]


@pytest.mark.parametrize(("family", "sampler"), SIGMA_SAMPLERS)
def test_guidance_applies_only_inside_the_interval(
    tiny_checkpoints: dict[str, Path], family: str, sampler: str
) -> None:
    gen = FaceGenerator.from_checkpoint(tiny_checkpoints[family], device="cpu", precision="fp32")

    def faces(guidance: float, interval: tuple[float, float] | None = None) -> list[bytes]:
        return [im.tobytes() for im in gen.generate([3, 4], MIX, sampler, 6, guidance, guidance_interval=interval)]

    plain, guided = faces(1.0), faces(3.0, EVERYWHERE)
    assert plain != guided
    assert faces(3.0, (1e6, 1e7)) == plain  # no level of the sampler lies in it
    sigmas = sorted(evaluation_sigmas(gen.config, sampler, 6) or [])
    part = faces(3.0, (sigmas[len(sigmas) // 2], math.inf))
    assert part not in (plain, guided)


@pytest.mark.parametrize(("family", "sampler"), SIGMA_SAMPLERS)
def test_reported_evaluations_are_the_passes_made(tiny_checkpoints: dict[str, Path], family: str, sampler: str) -> None:
    gen = FaceGenerator.from_checkpoint(tiny_checkpoints[family], device="cpu", precision="fp32")
    sigmas = sorted(evaluation_sigmas(gen.config, sampler, 6) or [])
    assert len(sigmas) == {"heun": 11}.get(sampler, 6)
    rows: list[int] = []
    handle = gen.net.register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[0]))
    try:
        between = [math.sqrt(a * b) for a, b in zip(sigmas, sigmas[1:], strict=False)]  # no level on a bound
        for interval in (EVERYWHERE, (between[1], between[-2]), (1e6, 1e7)):
            rows.clear()
            gen.generate([3], MIX, sampler, 6, 3.0, guidance_interval=interval)
            req = gen.request([3], MIX, sampler, 6, 3.0, guidance_interval=interval)
            assert sum(rows) == request_evaluations(gen.config, req), interval
    finally:
        handle.remove()
    assert request_evaluations(gen.config, gen.request([3], MIX, sampler, 6, 3.0, guidance_interval=(1e6, 1e7))) == (
        len(sigmas)
    )


def test_bad_intervals_are_refused_with_the_reason(tiny_checkpoints: dict[str, Path]) -> None:
    gen = FaceGenerator.from_checkpoint(tiny_checkpoints["sde"], device="cpu")
    for bad, reason in [
        ((5.0, 1.0), "0 <= lo < hi"),
        ((-1.0, 1.0), "0 <= lo < hi"),
        ((math.nan, 1.0), "0 <= lo < hi"),
        ((1.0,), "two numbers"),
        ("ab", "two numbers"),
    ]:
        with pytest.raises(RequestError, match=reason):
            gen.request([0], MIX, "dpmpp_2m", 6, 3.0, guidance_interval=bad)  # type: ignore[arg-type]
    with pytest.raises(RequestError, match="takes no guidance interval"):
        gen.request([0], MIX, "euler_maruyama", 6, 3.0, guidance_interval=(0.3, 5.0))
    assert gen.request([0], MIX, "euler_maruyama", 6, 3.0).guidance_interval == EVERYWHERE
    dcgan = FaceGenerator.from_checkpoint(tiny_checkpoints["dcgan"], device="cpu")
    with pytest.raises(RequestError, match="takes no guidance interval"):
        dcgan.request([0], MIX, guidance_interval=(0.3, 5.0))


def test_a_face_drawn_with_an_interval_carries_it_in_its_command(tiny_checkpoints: dict[str, Path]) -> None:
    gen = FaceGenerator.from_checkpoint(tiny_checkpoints["sde"], device="cpu")
    settings = face_settings(gen, gen.request([5], MIX, "dpmpp_2m", 6, 3.0, guidance_interval=(0.28, 5.42)))
    assert settings["guidance_interval"] == [0.28, 5.42]
    assert "--guidance-interval 0.28 5.42 " in reproduce_command(settings)
    assert "guidance_interval" not in face_settings(gen, gen.request([5], MIX, "dpmpp_2m", 6, 3.0, None, EVERYWHERE))


def test_each_family_gets_its_measured_default_interval(tiny_checkpoints: dict[str, Path]) -> None:
    """The score model guides in its measured interval unless told otherwise, with the sigma samplers only;
    the DDPM guides everywhere; an explicit (0, inf) turns the interval off."""
    sde = FaceGenerator.from_checkpoint(tiny_checkpoints["sde"], device="cpu")
    assert DEFAULT_GUIDANCE_INTERVAL["sde"] is not None
    for sampler in ("dpmpp_2m", "heun"):
        assert sde.request([0], MIX, sampler).guidance_interval == DEFAULT_GUIDANCE_INTERVAL["sde"]
    assert sde.request([0], MIX, "ode").guidance_interval == EVERYWHERE
    assert sde.request([0], MIX, "dpmpp_2m", guidance_interval=EVERYWHERE).guidance_interval == EVERYWHERE
    settings = face_settings(sde, sde.request([0], MIX))
    assert settings["guidance_interval"] == list(DEFAULT_GUIDANCE_INTERVAL["sde"])
    ddpm = FaceGenerator.from_checkpoint(tiny_checkpoints["ddpm"], device="cpu")
    assert ddpm.request([0], MIX).guidance_interval == EVERYWHERE
