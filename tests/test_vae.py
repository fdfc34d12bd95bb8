"""The conditional VAE and the VAE-GAN: the KL term against torch.distributions, the ELBO falling on a
fixed batch, the reparameterisation carrying gradient into the encoder, the KL warm-up, each VAE-GAN
network stepping on its own loss, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from facegen.checkpoints import CheckpointError
from facegen.config import resolve
from facegen.nets import build_sampling_net, build_training_networks
from facegen.objectives import VAEGANObjective, VAEObjective, _frozen_call, encode, soft_cross_entropy
from facegen.pipeline import FaceGenerator


def objective(**vae: object) -> VAEObjective:
    torch.manual_seed(0)
    run = resolve("tiny", "vae", {"data": {"path": "x"}, "train": {"precision": "fp32"}, "model": {"vae": vae}})
    extra = build_training_networks(run.model)
    return VAEObjective.build(
        run,
        build_sampling_net(run.model),
        extra["encoder"],
        torch.device("cpu"),
        extra.get("critic"),
        extra.get("aux_classifier"),
    )


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(8, 3, 16, 16, generator=g) * 2 - 1, F.one_hot(torch.arange(8) % 5, 5).float()


def test_the_kl_term_is_the_closed_form_of_torch_distributions() -> None:
    obj = objective()
    x, mix = batch()
    mean, log_var = obj.encoder(x, mix)
    _, kl, _, _ = obj.terms(obj.encoder, obj.net, x, mix, torch.Generator().manual_seed(1))
    q = torch.distributions.Normal(mean, (0.5 * log_var).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, p).sum(1), rtol=1e-4, atol=1e-4)


def test_the_elbo_falls_on_a_fixed_batch_and_trains_the_encoder_through_z() -> None:
    obj = objective(kl_warmup_steps=0)
    x, mix = batch()
    before = [p.detach().clone() for p in obj.encoder.parameters()]
    first = obj.step(x, mix, torch.Generator().manual_seed(1), 0)["train_loss"]
    for step in range(1, 40):
        last = obj.step(x, mix, torch.Generator().manual_seed(1), step)["train_loss"]
    assert last < 0.9 * first
    assert any(not torch.equal(a, b) for a, b in zip(before, obj.encoder.parameters(), strict=True))


def test_the_kl_weight_warms_up_to_beta() -> None:
    obj = objective(beta=2.0, kl_warmup_steps=10)
    assert [obj.beta(s) for s in (0, 4, 9, 50)] == pytest.approx([0.2, 1.0, 2.0, 2.0])
    assert objective(beta=2.0, kl_warmup_steps=0).beta(0) == 2.0


@pytest.mark.parametrize(("field", "value"), [("beta", 0.0), ("beta", 101.0), ("latent_dim", 1), ("latent_dim", 4096)])
def test_out_of_range_vae_settings_are_named(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"vae.{field}"):
        resolve("tiny", "vae", {"data": {"path": "x"}, "model": {"vae": {field: value}}})


def test_a_vae_checkpoint_is_not_taken_for_a_gan_and_a_mismatched_one_is_refused(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(CheckpointError, match="vae"):
        FaceGenerator.from_checkpoint(tiny_checkpoints["vae"], family="dcgan")
    folder = Path(shutil.copytree(tiny_checkpoints["vae"], tmp_path / "vae"))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model"]["vae"]["latent_dim"] = 32
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError):
        FaceGenerator.from_checkpoint(folder)


def test_prior_samples_follow_the_seed_and_the_mix(tiny_checkpoints: dict[str, Path]) -> None:
    gen = FaceGenerator.from_checkpoint(tiny_checkpoints["vae"], device="cpu")
    assert gen.one_pass and gen.samplers == ("single",)
    a, b = gen.generate([3, 4], [1, 0, 0, 0, 0])
    assert a.tobytes() == gen.generate([3], [1, 0, 0, 0, 0])[0].tobytes() and a.tobytes() != b.tobytes()
    assert a.tobytes() != gen.generate([3], [0, 1, 0, 0, 0])[0].tobytes()


def test_the_latent_adversary_pushes_the_encoder_only_and_its_critic_learns() -> None:
    """The confusion term reaches the encoder, not the decoder: the decoder's gradient is the same at
    adversary weights 1 and 5 and the encoder's is not. The critic steps on its own loss."""
    grads, critics = {}, {}
    for weight in (1.0, 5.0):
        obj = objective(kl_warmup_steps=0, latent_adversary=weight, aux_classifier=0.0)
        assert set(obj.networks()) == {"encoder", "critic"} and "latent adversary" in obj.recipe()
        before = [p.detach().clone() for p in obj.critic.parameters()]
        logs = obj.step(*batch(), torch.Generator().manual_seed(1), 0)
        assert {"critic_loss", "confusion"} <= set(logs)
        assert all(not torch.equal(a, b) for a, b in zip(before, obj.critic.parameters(), strict=True))
        grads[weight] = {
            k: [p.grad.clone() for p in m.parameters()] for k, m in (("enc", obj.encoder), ("dec", obj.net))
        }
        critics[weight] = [p.grad for p in obj.critic.parameters()]
    for a, b in zip(grads[1.0]["dec"], grads[5.0]["dec"], strict=True):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(grads[1.0]["enc"], grads[5.0]["enc"], strict=True))
    assert objective().critic is None and set(objective(aux_classifier=0.0).networks()) == {"encoder"}


def test_against_a_fixed_critic_the_encoder_hides_the_group() -> None:
    """A critic that has learnt the groups of a batch from z is confident (confusion, its cross-entropy
    against uniform, far above ln 5); with the critic held fixed, encoder steps drive it towards ln 5."""
    x, mix = batch()
    obj = objective(kl_warmup_steps=0, latent_adversary=100.0, aux_classifier=0.0)
    opt_critic = obj.optimisers["opt_critic"]
    for _ in range(60):
        z, _ = encode(obj.encoder, x, mix, torch.Generator().manual_seed(1))
        loss = soft_cross_entropy(obj.critic(z.detach()), mix)
        opt_critic.zero_grad()
        loss.backward()
        opt_critic.step()
    assert loss.item() < 0.1
    for group in opt_critic.param_groups:
        group["lr"] = 0.0
    confusion = [obj.step(x, mix, torch.Generator().manual_seed(1), s)["confusion"] for s in range(20)]
    assert confusion[0] > 4.0 and confusion[-1] < 2.0, confusion


@pytest.mark.parametrize("field", ["latent_adversary", "aux_classifier"])
def test_the_latent_adversary_and_the_aux_classifier_are_vae_settings(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        resolve("tiny", "vaegan", {"data": {"path": "x"}, "model": {"vae": {field: 1.0}}})


def test_the_aux_classifier_learns_real_faces_and_grades_the_decoders_prior_draws() -> None:
    """The classifier steps on real faces; its cross-entropy on prior draws reaches the decoder (whose
    gradient changes with the weight) and never the classifier's own weights."""
    grads = {}
    for weight in (1.0, 5.0):
        obj = objective(kl_warmup_steps=0, aux_classifier=weight)
        assert obj.aux is not None and set(obj.networks()) == {"encoder", "aux_classifier"}
        assert "auxiliary classifier" in obj.recipe()
        before = [p.detach().clone() for p in obj.aux.parameters()]
        logs = obj.step(*batch(), torch.Generator().manual_seed(1), 0)
        assert {"aux_real_loss", "aux_drawn_loss"} <= set(logs)
        assert all(not torch.equal(a, b) for a, b in zip(before, obj.aux.parameters(), strict=True))
        grads[weight] = [p.grad.clone() for p in obj.net.parameters()]
        aux_grads = [p.grad.clone() for p in obj.aux.parameters()]
        real_only = objective(kl_warmup_steps=0, aux_classifier=weight)  # same init: its real-face gradient
        x, mix = batch()
        soft_cross_entropy(real_only.aux(x), mix).backward()
        for a, b in zip(aux_grads, real_only.aux.parameters(), strict=True):
            torch.testing.assert_close(a, b.grad)
    assert any(not torch.allclose(a, b) for a, b in zip(grads[1.0], grads[5.0], strict=True))
    assert objective(aux_classifier=0.0).aux is None and objective().aux is not None


def test_against_a_fixed_classifier_the_decoder_draws_the_requested_groups() -> None:
    """A classifier that has learnt the groups of a batch judges the decoder's prior draws at chance or
    worse at first; with the classifier held fixed, decoder steps drive its cross-entropy on them down."""
    x, mix = batch()
    obj = objective(kl_warmup_steps=0, aux_classifier=100.0, aux_blends=0.0)
    assert obj.aux is not None
    opt = torch.optim.Adam(obj.aux.parameters(), lr=1e-2)
    for _ in range(100):
        loss = soft_cross_entropy(obj.aux(x), mix)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
    for group in obj.optimisers["opt_aux"].param_groups:
        group["lr"] = 0.0
    drawn = [obj.step(x, mix, torch.Generator().manual_seed(1), s)["aux_drawn_loss"] for s in range(20)]
    assert drawn[0] > 1.0 and drawn[-1] < 0.1 * drawn[0], drawn


def test_cond_signal_measures_how_much_prior_draws_depend_on_the_mix() -> None:
    obj = objective()
    x, mix = batch()
    held_out = lambda: obj.held_out(obj.net.eval(), x, mix, lambda: torch.Generator().manual_seed(2))  # noqa: E731
    assert held_out()["cond_signal"] > 0.0
    first = obj.net.net[0]  # the ConvTranspose over [z, mix]: zero the mix's input rows
    with torch.no_grad():
        first.weight[-mix.shape[1] :] = 0.0
    assert held_out()["cond_signal"] == 0.0


def vaegan(**model: object) -> VAEGANObjective:
    torch.manual_seed(0)
    run = resolve("tiny", "vaegan", {"data": {"path": "x"}, "train": {"precision": "fp32"}, "model": model})
    extra = build_training_networks(run.model)
    return VAEGANObjective.build(
        run, build_sampling_net(run.model), extra["encoder"], extra["disc"], torch.device("cpu")
    )


def test_each_vaegan_network_steps_on_its_own_loss() -> None:
    """The encoder's gradient does not change with gamma or the GAN loss (they are the decoder's), and
    the decoder's does."""
    grads = {}
    for gamma in (0.01, 10.0):
        obj = vaegan(vae={"gamma": gamma, "kl_warmup_steps": 0})
        obj.step(*batch(), torch.Generator().manual_seed(1), 0)
        grads[gamma] = {
            k: [p.grad.clone() for p in m.parameters()] for k, m in (("enc", obj.encoder), ("dec", obj.net))
        }
    for a, b in zip(grads[0.01]["enc"], grads[10.0]["enc"], strict=True):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(grads[0.01]["dec"], grads[10.0]["dec"], strict=True))


def test_a_frozen_call_passes_gradient_to_its_input_only_and_keeps_the_statistics() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)).train()
    x = torch.randn(8, 4, requires_grad=True)
    stats = net[1].running_mean.clone()
    out = _frozen_call(net, x)
    torch.testing.assert_close(out, net[1](net[0](x)))  # same output (batch statistics in training mode)
    net.zero_grad(set_to_none=True)
    x.grad = None
    _frozen_call(net, x).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in net.parameters())
    net[1].running_mean.copy_(stats)  # undo the reference call above
    _frozen_call(net, x)
    assert torch.equal(net[1].running_mean, stats)


def test_the_vaegan_reconstructs_in_the_discriminators_features_and_its_d_learns() -> None:
    obj = vaegan(vae={"kl_warmup_steps": 0})
    x, mix = batch()
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in obj.networks().items()}
    first = obj.step(x, mix, torch.Generator().manual_seed(1), 0)
    for step in range(1, 40):
        last = obj.step(x, mix, torch.Generator().manual_seed(1), step)
    assert last["d_loss"] < 0.7 * first["d_loss"]
    assert {"feature_err", "kl", "g_loss", "d_loss"} <= set(last) and last["feature_err"] > 0
    for key, module in obj.networks().items():
        assert any(not torch.equal(p, q) for p, q in zip(before[key], module.parameters(), strict=True)), key
    features = obj.disc.features(x, mix)
    assert features.shape[0] == 8 and features.ndim == 4


@pytest.mark.parametrize("conditioning", ["concat", "projection", "acgan"])
def test_the_discriminators_one_pass_judge_is_its_score_and_its_features(conditioning: str) -> None:
    disc = vaegan(dcgan={"d_conditioning": conditioning}).disc.eval()
    x, mix = batch()
    logit, groups, features = disc.judge(x, mix)
    score_logit, score_groups = disc.score(x, mix)
    assert torch.equal(logit, score_logit) and torch.equal(features, disc.features(x, mix))
    assert (groups is None) == (conditioning != "acgan") and (groups is None or torch.equal(groups, score_groups))


def test_a_vaegan_trains_with_an_acgan_discriminator_and_names_its_recipe() -> None:
    obj = vaegan(dcgan={"d_conditioning": "acgan", "acgan_blends": 0.5}, vae={"gamma": 0.5})
    logs = obj.step(*batch(), torch.Generator().manual_seed(1), 0)
    assert "d_group_loss" in logs and "g_group_loss" in logs
    assert "gamma 0.5" in obj.recipe() and "acgan" in obj.recipe()


def test_a_vaegan_checkpoint_is_refused_as_a_vae_and_gamma_out_of_range_is_named(
    tiny_checkpoints: dict[str, Path],
) -> None:
    with pytest.raises(CheckpointError, match="vaegan"):
        FaceGenerator.from_checkpoint(tiny_checkpoints["vaegan"], family="vae")
    with pytest.raises(ValueError, match="vae.gamma"):
        resolve("tiny", "vaegan", {"data": {"path": "x"}, "model": {"vae": {"gamma": -1.0}}})
    gen = FaceGenerator.from_checkpoint(tiny_checkpoints["vaegan"], device="cpu")
    assert gen.one_pass and gen.generate([1], [0, 0, 1, 0, 0])[0].size == (16, 16)
