"""Per family: the loss is finite and falls on a fixed batch; every sampler streams finite frames."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from facegen.conditioning import condition_vector
from facegen.config import resolve
from facegen.diffusion.ddpm import alphas_cumprod, ddpm_loss
from facegen.diffusion.edm import edm_loss
from facegen.diffusion.sde import dsm_loss, make_sde
from facegen.nets import build_discriminator, build_sampling_net
from facegen.objectives import random_blends, soft_cross_entropy
from facegen.pipeline import FaceGenerator
from facegen.runtime import generator
from facegen.sampling import SAMPLERS, SIGMA_SAMPLERS, network_evaluations
from tests.conftest import REPO

MIX = [0.5, 0.5, 0, 0, 0]


def fixed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(8, 3, 16, 16, generator=g) * 2 - 1
    mix = F.one_hot(torch.arange(8) % 5, 5).float()
    return x0, mix


RECIPES = [
    ("ddpm", {"ddpm": {"prediction": "epsilon", "loss_weight": "uniform"}}),
    ("ddpm", {"ddpm": {"prediction": "v", "loss_weight": "min_snr"}}),
    ("ddpm", {"ddpm": {"prediction": "epsilon", "loss_weight": "min_snr"}}),
    ("sde", {"sde": {"kind": "vp"}}),
    ("sde", {"sde": {"kind": "ve"}}),
    ("sde", {"sde": {"kind": "edm"}}),
]


@pytest.mark.parametrize(("family", "model"), RECIPES, ids=lambda v: str(v))
def test_diffusion_loss_falls_on_a_fixed_batch(family: str, model: dict) -> None:
    torch.manual_seed(0)
    run = resolve("tiny", family, {"data": {"path": "x"}, "model": model})
    net = build_sampling_net(run.model)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x0, mix = fixed_batch()
    cond = condition_vector(mix)

    def loss() -> torch.Tensor:
        gen = generator(0, "fixed")  # the same t and noise every time: a fixed objective
        if family == "ddpm":
            return ddpm_loss(net, run.model.ddpm, x0, cond, alphas_cumprod(run.model.ddpm), gen)
        if run.model.sde.kind == "edm":
            return edm_loss(net, run.model.sde, x0, cond, gen)
        return dsm_loss(net, make_sde(run.model.sde), x0, cond, gen)

    first = loss()
    assert torch.isfinite(first)
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.8 * first.item()


@pytest.mark.parametrize("d_conditioning", ["concat", "projection", "acgan"])
def test_gan_losses_finite_and_discriminator_learns(d_conditioning: str) -> None:
    torch.manual_seed(0)
    run = resolve("tiny", "dcgan", {"data": {"path": "x"}, "model": {"dcgan": {"d_conditioning": d_conditioning}}})
    G, D = build_sampling_net(run.model), build_discriminator(run.model)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    x0, mix = fixed_batch()
    z = torch.randn(8, run.model.dcgan.latent_dim, generator=torch.Generator().manual_seed(1))
    fake = G(z, mix).detach()
    assert fake.shape == x0.shape and fake.abs().max() <= 1

    def d_loss() -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(D(x0, mix), torch.ones(8)) + F.binary_cross_entropy_with_logits(
            D(fake, mix), torch.zeros(8)
        )

    first = d_loss()
    for _ in range(20):
        opt_d.zero_grad()
        d_loss().backward()
        opt_d.step()
    assert torch.isfinite(first) and d_loss().item() < 0.8 * first.item()


def test_projection_discriminator_scores_a_blend_as_the_blend_of_its_groups() -> None:
    torch.manual_seed(0)
    run = resolve("tiny", "dcgan", {"data": {"path": "x"}, "model": {"dcgan": {"d_conditioning": "projection"}}})
    D = build_discriminator(run.model).eval()
    x, _ = fixed_batch()
    white, black = torch.eye(5)[[0]].expand(8, -1), torch.eye(5)[[1]].expand(8, -1)
    with torch.no_grad():
        torch.nn.init.normal_(D.embed.weight)  # a trained embedding, not the near-zero init
        blend, a, b = D(x, 0.3 * white + 0.7 * black), D(x, white), D(x, black)
    assert not torch.allclose(a, b)  # the group moves the logit ...
    torch.testing.assert_close(blend, 0.3 * a + 0.7 * b)  # ... linearly in the mix
    assert D.net[0].in_channels == 3  # no mix planes at the input


def test_acgan_head_learns_groups_without_seeing_the_mix() -> None:
    torch.manual_seed(0)
    run = resolve("tiny", "dcgan", {"data": {"path": "x"}, "model": {"dcgan": {"d_conditioning": "acgan"}}})
    D = build_discriminator(run.model)
    x, mix = fixed_batch()
    with torch.no_grad():  # the answer is not in the input: any mix gives the same outputs
        logit, groups = D.score(x, mix)
        other_logit, other_groups = D.score(x, mix.roll(1, dims=1))
    assert D.net[0].in_channels == 3 and groups is not None and groups.shape == mix.shape
    assert torch.equal(logit, other_logit) and torch.equal(groups, other_groups)
    opt = torch.optim.Adam(D.parameters(), lr=2e-3)
    first = soft_cross_entropy(groups, mix)
    for _ in range(50):
        opt.zero_grad()
        soft_cross_entropy(D.score(x, mix)[1], mix).backward()
        opt.step()
    assert soft_cross_entropy(D.score(x, mix)[1], mix).item() < 0.5 * first.item()


def test_soft_cross_entropy_matches_hard_labels_and_is_minimal_at_the_mix() -> None:
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 3, 1, 4])
    torch.testing.assert_close(soft_cross_entropy(logits, torch.eye(5)[labels]), F.cross_entropy(logits, labels))
    blend = torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.0]])
    at_mix = soft_cross_entropy(blend.clamp_min(1e-9).log(), blend)
    assert at_mix < soft_cross_entropy(torch.tensor([[3.0, 0.0, -9.0, -9.0, -9.0]]), blend)


def test_random_blends_mix_each_face_with_one_other_group() -> None:
    mix = F.one_hot(torch.arange(400) % 5, 5).float()
    assert torch.equal(random_blends(mix, 0.0, torch.Generator().manual_seed(0)), mix)
    blends = random_blends(mix, 0.5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(blends.sum(1), torch.ones(400))
    changed = (blends != mix).any(1)
    assert 150 < changed.sum() < 250  # about half
    assert ((blends[changed] > 0).sum(1) == 2).all()  # two groups ...
    assert (blends[changed] * mix[changed]).sum(1).gt(0).all()  # ... one of them the face's own
    one_group = torch.ones(4, 1)
    assert torch.equal(random_blends(one_group, 1.0, torch.Generator().manual_seed(0)), one_group)


def test_dcgan_128_variant_shapes() -> None:
    run = resolve("tiny", "dcgan", {"data": {"path": "x"}, "model": {"image_size": 128}})
    G, D = build_sampling_net(run.model), build_discriminator(run.model)
    x = G(torch.randn(2, run.model.dcgan.latent_dim), torch.eye(5)[:2])
    assert x.shape == (2, 3, 128, 128) and D(x, torch.eye(5)[:2]).shape == (2,)
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in G.modules()) == 6  # one more than at 64 px


@pytest.mark.parametrize(("family", "sampler"), [(f, s) for f, ss in SAMPLERS.items() for s in ss])
def test_every_sampler_streams_finite_frames(tiny_checkpoints: dict[str, Path], family: str, sampler: str) -> None:
    gen = FaceGenerator.from_checkpoint(tiny_checkpoints[family], device="cpu", precision="fp32")
    steps = 1 if family in ("dcgan", "vae", "vaegan") else 6
    frames = list(gen.frames([3, 4], MIX, sampler=sampler, steps=steps, guidance=2.0))
    assert len(frames) == steps and [f.index for f in frames] == list(range(1, steps + 1))
    assert frames[-1].nfe == network_evaluations(sampler, steps, 1.0)
    for f in frames:
        assert f.x_t.shape == (2, 3, 16, 16) and torch.isfinite(f.x_t).all() and torch.isfinite(f.x0).all()


@pytest.mark.parametrize("family", ["ddpm", "sde", "dcgan", "vae", "vaegan"])
def test_seed_gives_the_same_face_in_any_batch_streamed_or_not(tiny_checkpoints: dict[str, Path], family: str) -> None:
    gen = FaceGenerator.from_checkpoint(tiny_checkpoints[family], device="cpu")
    sampler = {"ddpm": "ancestral", "sde": "euler_maruyama"}.get(family)
    kwargs = {"mix": MIX, "sampler": sampler, "steps": 10 if sampler else None, "guidance": 1.5}
    alone = gen.generate([7], **kwargs)[0]
    in_batch = gen.generate([1, 7, 9], **kwargs)[1]
    streamed = list(gen.frames([9, 7], **kwargs))[-1].x_t[1:2]
    from facegen.plots import to_pil

    assert alone.tobytes() == in_batch.tobytes() == to_pil(streamed)[0].tobytes()
    assert gen.generate([8], **kwargs)[0].tobytes() != alone.tobytes()


def test_sampling_leaves_the_global_rng_alone(tiny_checkpoints: dict[str, Path]) -> None:
    gen = FaceGenerator.from_checkpoint(tiny_checkpoints["sde"], device="cpu")
    torch.manual_seed(123)
    before = torch.get_rng_state()
    gen.generate([0], MIX, sampler="predictor_corrector", steps=5)
    assert torch.equal(before, torch.get_rng_state())


class _BiasedNet(torch.nn.Module):
    """A stand-in for a young network: it predicts 0.9x the noise that x_t ~ N(0, I) holds near t = T."""

    def __init__(self, family: str) -> None:
        super().__init__()
        self.family = family

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.family == "ddpm":
            return 0.9 * x
        return -0.9 * x / t.reshape(-1, 1, 1, 1) ** 2  # the Fourier net is called with std(t) as t


@pytest.mark.parametrize(
    ("family", "sampler"), [(f, s) for f in ("ddpm", "sde") for s in SAMPLERS[f] if s not in SIGMA_SAMPLERS]
)
def test_samplers_keep_a_biased_network_in_the_data_range(family: str, sampler: str) -> None:
    """Every diffusion sampler clips its denoised estimate to [-1, 1], so a network whose error is
    amplified by 1/mean_coef near t = T still yields images, not saturated noise. A regression test:
    DPM-Solver++ without thresholding ends at |x| = 3 here, and it and the SDE samplers diverged on
    real 1,000-step checkpoints (the SDE clipping itself is tested in test_sde_math). An epsilon DDPM
    and a VP-SDE, where the amplification is; EDM's denoiser has none."""
    from facegen.sampling import Request, final, stream

    model = {"ddpm": {"prediction": "epsilon"}, "sde": {"kind": "vp"}}
    run = resolve("tiny", family, {"data": {"path": "x"}, "model": model})
    net = _BiasedNet(family)
    req = Request((1, 2), torch.tensor([1.0, 0, 0, 0, 0]), sampler, 20, 1.0)
    x = final(stream(run.model, net, req, torch.device("cpu"))).x_t
    assert torch.isfinite(x).all() and x.abs().max() <= 1.5, float(x.abs().max())


def test_a_vp_sde_model_does_not_offer_the_sigma_sampler() -> None:
    from facegen.sampling import samplers_for

    vp = resolve("tiny", "sde", {"data": {"path": "x"}, "model": {"sde": {"kind": "vp"}}}).model
    edm = resolve("tiny", "sde", {"data": {"path": "x"}}).model
    assert not set(SIGMA_SAMPLERS) & set(samplers_for(vp)) and set(SIGMA_SAMPLERS) <= set(samplers_for(edm))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("family", "sampler"), [("ddpm", "dpmpp"), ("sde", "euler_maruyama")])
def test_shipped_unets_give_a_seed_the_same_face_in_any_batch(
    family: str, sampler: str, threads: int, precision: str
) -> None:
    """The real 64 px U-Nets, batched in one call (padded to the thread count), alone and in odd and even
    batches, with and without guidance: the kernels that differ by batch size must not show."""
    from facegen.plots import to_pil
    from facegen.runtime import cpu_has_native_bf16

    if precision == "bf16" and not cpu_has_native_bf16():
        pytest.skip("no native bf16 kernels on this CPU: the app samples in fp32 here")
    gen = FaceGenerator.from_checkpoint(REPO / "checkpoints" / family, device="cpu", precision=precision)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for guidance in (1.0, 2.0):
            kwargs = {"mix": MIX, "sampler": sampler, "steps": 3, "guidance": guidance}
            alone = gen.generate([7], **kwargs)[0].tobytes()
            assert gen.generate([1, 7, 9], **kwargs)[1].tobytes() == alone
            assert gen.generate([7, 2], **kwargs)[0].tobytes() == alone
            assert to_pil(list(gen.frames([3, 4, 5, 6, 7], **kwargs))[-1].x_t[4:5])[0].tobytes() == alone
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("family", ["ddpm", "sde"])
def test_composed_blends_show_the_network_only_its_training_conditions(
    tiny_checkpoints: dict[str, Path], family: str
) -> None:
    """Composition feeds the network one-hot groups and the null condition, never a blend of embeddings;
    a pure mix draws the same pixels either way."""
    gen = FaceGenerator.from_checkpoint(tiny_checkpoints[family], device="cpu")
    pure = [0, 1, 0, 0, 0]
    same = [gen.generate([3, 4], pure, steps=3, blend=b) for b in ("embedding", "composition")]
    assert [a.tobytes() for a in same[0]] == [b.tobytes() for b in same[1]]
    seen: list[torch.Tensor] = []
    handle = gen.net.register_forward_pre_hook(lambda _m, args: seen.append(args[2].detach().clone()))
    try:
        composed = gen.generate([3, 4], [0.5, 0, 0.5, 0, 0], steps=3, blend="composition")
    finally:
        handle.remove()
    embedded = gen.generate([3, 4], [0.5, 0, 0.5, 0, 0], steps=3, blend="embedding")
    rows = torch.cat(seen)
    assert {tuple(r.tolist()) for r in rows} == {(1, 0, 0, 0, 0, 0), (0, 0, 1, 0, 0, 0), (0, 0, 0, 0, 0, 1)}
    assert any(a.tobytes() != b.tobytes() for a, b in zip(composed, embedded, strict=True))
    with pytest.raises(ValueError, match="blend must be one of"):
        gen.request([1], pure, blend="average")  # type: ignore[arg-type]
