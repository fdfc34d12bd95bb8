"""The training loop for all three families: one loop, a family-specific loss step.

Every random draw is a function of (seed, purpose, step, rank) (see `facegen.runtime`), so resuming
from `state.pt` replays exactly the batches, noise and timesteps an uninterrupted run would have seen.
Rank 0 writes everything; under `torchrun` the model is wrapped in DistributedDataParallel.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from facegen import checkpoints, plots
from facegen.conditioning import condition_vector, drop_labels, null_condition
from facegen.config import DCGANConfig, ModelConfig, RunConfig
from facegen.data import FaceSet, augment, batch_indices, load_faces, split, to_model_range
from facegen.diffusion.ddpm import alphas_cumprod, ddpm_loss
from facegen.diffusion.edm import edm_loss
from facegen.diffusion.sde import dsm_loss, make_sde
from facegen.nets import build_discriminator, build_sampling_net, count_parameters
from facegen.runtime import (
    autocast,
    derive_seed,
    generator,
    hardware_name,
    pick_device,
    resolve_precision,
    set_cpu_threads,
)
from facegen.sampling import final, sample_grid_request, stream

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoint"


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, NCCL on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Dist(dist.get_rank(), dist.get_world_size())


def total_steps(run: RunConfig, n_train: int) -> int:
    t = run.train
    if t.max_steps is not None:
        return t.max_steps
    epochs = t.epochs if t.epochs is not None else 1.0
    return max(1, math.ceil(epochs * n_train / t.batch_size))


def learning_rate(run: RunConfig, step: int, total: int, start: int = 0) -> float:
    """Linear warm-up from `start` (0, or the step a run was restarted from saved weights with a fresh
    optimiser, whose Adam moments need the warm-up again), then constant or cosine decay to 10% of the peak."""
    t = run.train
    if step - start < t.warmup_steps:
        return t.lr * (step - start + 1) / t.warmup_steps
    if t.lr_schedule == "cosine":
        progress = (step - start - t.warmup_steps) / max(1, total - start - t.warmup_steps)
        return t.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress))))
    return t.lr


@torch.no_grad()
def update_ema(ema: nn.Module, net: nn.Module, decay: float, step: int) -> None:
    """EMA of parameters with a warm-up of the decay (min(decay, (1 + n) / (10 + n))); buffers copied."""
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), net.parameters(), strict=True):
        e.lerp_(p.detach(), 1 - d)
    for e, b in zip(ema.buffers(), net.buffers(), strict=True):
        e.copy_(b)


@dataclass
class Trainer:
    run: RunConfig
    device: torch.device
    dist: Dist
    train_set: FaceSet
    test_set: FaceSet
    net: nn.Module
    ema: nn.Module
    opt: torch.optim.Optimizer
    disc: nn.Module | None = None
    opt_d: torch.optim.Optimizer | None = None
    step: int = 0
    wall_s: float = 0.0
    # CPU time of the training steps, all threads of this process (time.process_time): the CPU-hours a
    # model has had, whatever else shared the machine.
    cpu_s: float = 0.0
    warm_start: int = 0  # the step the optimiser (re)started from; see learning_rate
    history: list[dict[str, Any]] = field(default_factory=list)  # earlier segments of this model's training
    segment_start: int = 0
    segment_how: str = "from scratch"
    extra: dict[str, Any] = field(default_factory=dict)

    # -- one optimisation step per family ---------------------------------------------------------
    def batch(
        self, faces: FaceSet, idx: torch.Tensor, gen: torch.Generator, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_model_range(faces.images[idx]).to(self.device)
        if train:
            x = augment(x, gen, self.run.data.hflip, self.run.data.jitter)
        if self.run.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        mix = F.one_hot(faces.labels[idx], len(faces.groups)).float().to(self.device)
        return x, mix

    def diffusion_loss(
        self, net: nn.Module, x0: torch.Tensor, cond: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        m = self.run.model
        match m.family:
            case "ddpm":
                return ddpm_loss(net, m.ddpm, x0, cond, self.extra["alpha_bar"], gen)
            case "sde" if m.sde.kind == "edm":
                return edm_loss(net, m.sde, x0, cond, gen)
            case "sde":
                return dsm_loss(net, self.extra["sde"], x0, cond, gen)
        raise ValueError(m.family)

    def train_step(self) -> dict[str, float]:
        t, step = self.run.train, self.step
        gen = generator(t.seed, "step", step, self.dist.rank)
        idx = batch_indices(
            self.train_set.labels, t.batch_size, step, t.seed, self.run.data.balanced, self.dist.rank, self.dist.world
        )
        x, mix = self.batch(self.train_set, idx, gen, train=True)
        lr = learning_rate(self.run, step, self.extra["total"], self.warm_start)
        for opt in (self.opt, self.opt_d):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = lr * group.get("lr_mult", 1.0)
        if self.run.model.family == "dcgan":
            return self.gan_step(x, mix, gen) | {"lr": lr}
        cond = drop_labels(condition_vector(mix), t.cond_dropout, gen)
        with autocast(self.device, t.precision):
            loss = self.diffusion_loss(self.net, x, cond, gen)
        self.opt.zero_grad(set_to_none=True)
        self.extra["scaler"].scale(loss).backward()
        self.extra["scaler"].unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), t.grad_clip)
        self.extra["scaler"].step(self.opt)
        self.extra["scaler"].update()
        update_ema(self.ema, self._bare(self.net), t.ema_decay, step)
        return {"train_loss": loss.item(), "lr": lr}

    def gan_step(self, real: torch.Tensor, mix: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
        """Radford et al.: D maximises log D(x) + log(1 - D(G(z))); G maximises log D(G(z)) (BCE). With
        AC-GAN conditioning D also learns the groups of real faces, and G pays acgan_weight x the
        cross-entropy of D's group head on its fakes against the mix it was asked for."""
        assert self.disc is not None and self.opt_d is not None
        prec, b = self.run.train.precision, real.shape[0]
        cfg = self.run.model.dcgan
        z = torch.randn(b, cfg.latent_dim, generator=gen).to(self.device)
        ones, zeros = torch.ones(b, device=self.device), torch.zeros(b, device=self.device)
        logs: dict[str, float] = {}
        fake_mix = random_blends(mix, cfg.acgan_blends, gen) if cfg.d_conditioning == "acgan" else mix
        with autocast(self.device, prec):
            fake = self.net(z, fake_mix)
            d_real, groups_real = self.disc.score(real, mix)
            d_fake = self.disc(fake.detach(), fake_mix).float()
            d_loss = F.binary_cross_entropy_with_logits(d_real.float(), ones) + F.binary_cross_entropy_with_logits(
                d_fake, zeros
            )
            if groups_real is not None:
                d_groups = soft_cross_entropy(groups_real.float(), mix)
                d_loss = d_loss + d_groups
                logs["d_group_loss"] = d_groups.item()
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        with autocast(self.device, prec):
            g_logit, g_groups = self.disc.score(fake, fake_mix)
            g_loss = F.binary_cross_entropy_with_logits(g_logit.float(), ones)
            if g_groups is not None:
                g_group_loss = soft_cross_entropy(g_groups.float(), fake_mix)
                g_loss = g_loss + cfg.acgan_weight * g_group_loss
                logs["g_group_loss"] = g_group_loss.item()
        self.opt.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt.step()
        update_ema(self.ema, self._bare(self.net), self.run.train.ema_decay, self.step)
        return {"train_loss": g_loss.item(), "d_loss": d_loss.item(), "g_loss": g_loss.item()} | logs

    @torch.no_grad()
    def test_loss(self) -> dict[str, float]:
        """Held-out figures with fixed noise (comparable across evaluations of one run).

        test_loss: the diffusion loss of the EMA net, or for the DCGAN the discriminator's BCE on
        held-out real faces (rises when D memorises). cond_signal (diffusion): the mean |out_cond -
        out_null| of the EMA net on the same noisy faces, i.e. how much the network's output depends on
        the mix; near 0 means the condition is ignored, which shows within a few hundred steps.
        """
        t = self.run.train
        n = len(self.test_set)
        if n == 0 or t.test_batches == 0:
            return {}
        losses, signals = [], []
        for i in range(t.test_batches):
            idx = torch.arange(i * t.batch_size, (i + 1) * t.batch_size) % n
            x, mix = self.batch(self.test_set, idx, generator(t.seed, "test", i), train=False)
            with autocast(self.device, t.precision):
                if self.run.model.family == "dcgan":
                    assert self.disc is not None
                    self.disc.eval()
                    logits = self.disc(x, mix).float()
                    self.disc.train()
                    losses.append(F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).item())
                    continue
                cond = condition_vector(mix)
                null = null_condition(len(idx), cond.shape[1] - 1, self.device)
                loss, out_cond = self._held_out_output(x, cond, i)
                _, out_null = self._held_out_output(x, null, i)
                losses.append(loss)
                signals.append((out_cond - out_null).abs().mean().item())
        out = {"test_loss": sum(losses) / len(losses)}
        if signals:
            out["cond_signal"] = sum(signals) / len(signals)
        return out

    def _held_out_output(self, x: torch.Tensor, cond: torch.Tensor, batch: int) -> tuple[float, torch.Tensor]:
        """The EMA net's held-out loss on batch `batch` (fixed noise) and its raw output inside that loss."""
        seen: list[torch.Tensor] = []
        handle = self.ema.register_forward_hook(lambda _m, _a, out: seen.append(out.detach().float()))
        try:
            loss = self.diffusion_loss(self.ema, x, cond, generator(self.run.train.seed, "test", batch)).item()
        finally:
            handle.remove()
        return loss, seen[-1]

    # -- saving -------------------------------------------------------------------------------------
    @staticmethod
    def _bare(net: nn.Module) -> nn.Module:
        return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net

    def segment(self) -> dict[str, Any]:
        """This process's stretch of training, for the model card: how it began, on what, with what."""
        t = self.run.train
        recipe = f"lr {t.lr}, batch {t.batch_size}, " + (
            _d_recipe(self.run.model.dcgan, t.cond_lr_mult)
            if self.run.model.family == "dcgan"
            else _diffusion_recipe(self.run)
        )
        return {
            "steps": [self.segment_start, self.step],
            "how": self.segment_how,
            "precision": t.precision,
            "hardware": hardware_name(self.device),
            "recipe": recipe,
        }

    def full_history(self) -> list[dict[str, Any]]:
        """Every segment so far, consecutive resumes with the same settings merged into one."""
        merged: list[dict[str, Any]] = []
        current = [self.segment()] if self.step > self.segment_start else []
        for seg in [*self.history, *current]:
            last = merged[-1] if merged else None
            same = last is not None and all(last[k] == seg[k] for k in ("precision", "hardware", "recipe"))
            if same and seg["how"] == "resumed" and last["steps"][1] == seg["steps"][0]:
                merged[-1] = {**last, "steps": [last["steps"][0], seg["steps"][1]]}
            else:
                merged.append(dict(seg))
        return merged

    def card(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "images_seen": self.step * self.run.train.batch_size,
            "wall_time_s": round(self.wall_s, 1),
            "cpu_hours": round(self.cpu_s / 3600, 3),
            "device": str(self.device),
            "hardware": hardware_name(self.device),
            "history": self.full_history(),
            "torch": torch.__version__,
            "data": Path(self.run.data.path).name,
            "train_images": len(self.train_set),
            "group_counts": self.train_set.counts(),
            "parameters": count_parameters(self.ema),
        }

    def save(self, out: Path) -> None:
        """state.pt (resume) then checkpoint/ (EMA weights for sampling), each atomically."""
        card = self.card()
        state = {
            "step": self.step,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "warm_start": self.warm_start,
            "history": card["history"],
            "net": self._bare(self.net).state_dict(),
            "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(),
        }
        if self.disc is not None and self.opt_d is not None:
            state |= {"disc": self._bare(self.disc).state_dict(), "opt_d": self.opt_d.state_dict()}
        try:
            checkpoints.save_state(out, state)
            checkpoints.save_weights(out / CHECKPOINT_DIR, self.ema.state_dict(), card)
        except OSError as err:
            log.error("could not save at step %d (%s); the previous checkpoint is intact", self.step, err)
            return
        log.info("saved step %d to %s", self.step, out)

    def load(self, state: dict[str, Any]) -> None:
        try:
            self._bare(self.net).load_state_dict(state["net"])
            self.ema.load_state_dict(state["ema"])
            if self.disc is not None:
                self._bare(self.disc).load_state_dict(state["disc"])
        except (RuntimeError, KeyError) as err:
            raise checkpoints.CheckpointError(
                f"the saved state does not fit the networks this run configures (compare --dry-run): {err}"
            ) from None
        try:
            self.opt.load_state_dict(state["opt"])
        except ValueError as err:  # e.g. a state from before the mix embedding had its own group
            raise checkpoints.CheckpointError(
                f"the optimiser state does not fit this run ({err}); start from the weights with --init-from"
            ) from None
        if self.opt_d is not None:
            self.opt_d.load_state_dict(state["opt_d"])
        self.step, self.wall_s = int(state["step"]), float(state.get("wall_s", 0.0))
        # States from before CPU time was kept: their runs used one thread (scripts/train_checkpoints.sh).
        self.cpu_s = float(state.get("cpu_s", self.wall_s))
        self.warm_start = int(state.get("warm_start", 0))
        self.history, self.segment_start, self.segment_how = list(state.get("history", [])), self.step, "resumed"

    def init_from(self, folder: Path) -> None:
        """Start from a checkpoint's (EMA) weights when the training state is gone: the step count and
        wall time continue from its card, the optimiser starts fresh and the learning rate warms up
        again; a DCGAN's discriminator (never shipped) starts from scratch."""
        ckpt_run, tensors, card = checkpoints.load_checkpoint(folder, self.run.model.family)
        if not same_network(ckpt_run.model, self.run.model):
            raise checkpoints.CheckpointError(
                f"{folder} holds a different {self.run.model.family} model than this run configures "
                "(compare its config.json with --dry-run)"
            )
        checkpoints.load_into(self.ema, tensors, folder)
        self._bare(self.net).load_state_dict(self.ema.state_dict())
        self.step = self.warm_start = self.segment_start = int(card.get("step", 0))
        self.wall_s = float(card.get("wall_time_s", 0.0))
        self.cpu_s = 3600 * float(card.get("cpu_hours", self.wall_s / 3600))
        earlier = {"steps": [0, self.step], "how": "from scratch", "precision": ckpt_run.train.precision}
        self.history = list(card.get("history") or [{**earlier, "hardware": card.get("hardware", "?"), "recipe": "?"}])
        self.segment_how = f"continued from the weights in {folder}, fresh optimiser" + (
            " and discriminator" if self.disc is not None else ""
        )
        if self.step >= self.extra["total"]:
            raise ValueError(f"{folder} is already at step {self.step}; raise --max-steps above it to train on")

    def sample_grid(self, path: Path) -> None:
        """One row per group, the same seeds in each row, from the EMA weights."""
        m = self.run.model
        sampler, steps = {"ddpm": ("ddim", 25), "sde": ("ode", 25), "dcgan": ("single", 1)}[m.family]
        if m.family == "sde" and m.sde.kind == "edm":
            sampler, steps = "heun", 18
        self.ema.eval()
        rows = [
            plots.to_pil(final(stream(m, self.ema, req, self.device, self.run.train.precision)).x_t)
            for req in sample_grid_request(m.groups, 8, sampler, steps, guidance=1.0)
        ]
        tmp = path.with_name(f".{path.name}.tmp.png")
        plots.grid(rows, list(m.groups)).save(tmp)
        tmp.replace(path)


def _weights_config(model: ModelConfig) -> dict[str, Any]:
    """What a family's shipped network and the meaning of its output depend on: the family's own
    sub-configs, less init-only fields and what only shapes the (never shipped) discriminator."""
    own: dict[str, Any] = {"family": model.family, "image_size": model.image_size, "groups": model.groups}
    if model.family == "dcgan":
        d_only = {"d_conditioning", "acgan_weight", "acgan_blends"}
        return own | {"dcgan": model.dcgan.model_dump(exclude=d_only)}
    unet = model.unet.model_dump(exclude={"mix_embed_std"})
    loss_only = {"ddpm": {"loss_weight", "min_snr_gamma"}, "sde": {"p_mean", "p_std"}}[model.family]
    return own | {"unet": unet, model.family: getattr(model, model.family).model_dump(exclude=loss_only)}


def same_network(a: ModelConfig, b: ModelConfig) -> bool:
    """Whether weights trained under config `a` can continue under `b` (--init-from): the same shipped
    network with the same meaning of its output; only the DCGAN's discriminator settings may differ."""
    return _weights_config(a) == _weights_config(b)


def _diffusion_recipe(run: RunConfig) -> str:
    m, t = run.model, run.train
    loss = (
        f"{m.ddpm.prediction}-prediction, {m.ddpm.loss_weight} weighting"
        if m.family == "ddpm"
        else ("EDM preconditioning and loss" if m.sde.kind == "edm" else f"{m.sde.kind.upper()} DSM")
    )
    return (
        f"{loss}, EMA {t.ema_decay:g}, mix table N(0, {m.unet.mix_embed_std:g}^2) at lr x{t.cond_lr_mult:g}, "
        f"{m.unet.attention_head_dim}-channel attention heads"
    )


def _d_recipe(cfg: DCGANConfig, lr_mult: float) -> str:
    weight = (
        f" (weight {cfg.acgan_weight:g}, blends {cfg.acgan_blends:g}, head lr x{lr_mult:g})"
        if cfg.d_conditioning == "acgan"
        else ""
    )
    return f"D conditioning {cfg.d_conditioning}{weight}"


def random_blends(mix: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """Replace about `share` of the (one-hot) mixes by a blend of their group and a random other one,
    with the first group's weight ~ U(0, 1)."""
    b, k = mix.shape
    if k < 2:  # unlabelled data (one group): nothing to blend
        return mix
    picked = torch.rand(b, generator=gen) < share
    own = mix.argmax(1).cpu()
    other = (own + torch.randint(1, k, (b,), generator=gen)) % k
    w = torch.rand(b, 1, generator=gen)
    eye = torch.eye(k)
    blends = (w * eye[own] + (1 - w) * eye[other]).to(mix.device, mix.dtype)
    return torch.where(picked.to(mix.device)[:, None], blends, mix)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a distribution over groups (a mix), mean over the batch."""
    return -(target.to(logits.dtype) * F.log_softmax(logits, dim=1)).sum(1).mean()


def _truncate_log(path: Path, step: int) -> None:
    """After a resume, drop log lines from beyond the resumed step (written before the kill)."""
    if path.is_file():
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        checkpoints.atomic_write(path, lambda p: p.write_text("".join(f"{ln}\n" for ln in keep)))


def build_trainer(run: RunConfig, dist_info: Dist) -> Trainer:
    device = pick_device(run.train.device)
    if dist_info.world > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    faces = load_faces(run.data, run.model.image_size)
    if faces.groups != run.model.groups:  # group names travel from the data into the checkpoint
        run = run.model_copy(update={"model": run.model.model_copy(update={"groups": faces.groups})})
    precision = resolve_precision(run.train.precision, device)  # recorded as chosen, e.g. in the card
    run = run.model_copy(update={"train": run.train.model_copy(update={"precision": precision})})
    train_set, test_set = split(faces, run.data.test_fraction)
    if len(train_set) < run.train.batch_size:
        log.warning(
            "only %d training faces for batch size %d: batches repeat faces", len(train_set), run.train.batch_size
        )
    t = run.train
    memory = torch.channels_last if t.channels_last else torch.contiguous_format
    with torch.random.fork_rng(devices=[]):  # the initial weights are a function of the seed alone
        torch.manual_seed(derive_seed(t.seed, "init"))
        net = build_sampling_net(run.model).to(device).to(memory_format=memory)
        disc = (
            build_discriminator(run.model).to(device).to(memory_format=memory) if run.model.family == "dcgan" else None
        )
    ema = build_sampling_net(run.model).to(device).to(memory_format=memory)
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    opt_d = None
    extra: dict[str, Any] = {
        "total": total_steps(run, len(train_set)),
        "scaler": torch.amp.GradScaler(device.type, enabled=t.precision == "fp16"),
    }
    if run.model.family == "dcgan":
        assert disc is not None
        head = [p for n, p in disc.named_parameters() if n.startswith("group_head.")]
        trunk = [p for n, p in disc.named_parameters() if not n.startswith("group_head.")]
        d_groups = [{"params": trunk}] + ([{"params": head, "lr_mult": t.cond_lr_mult}] if head else [])
        opt_d = torch.optim.Adam(d_groups, lr=t.lr, betas=(0.5, 0.999))
        opt = torch.optim.Adam(net.parameters(), lr=t.lr, betas=(0.5, 0.999))
    else:
        named = list(net.named_parameters())
        table = [p for n, p in named if n.startswith("mix_embedding.")]
        rest = [p for n, p in named if not n.startswith("mix_embedding.")]
        groups = [{"params": rest}, {"params": table, "lr_mult": t.cond_lr_mult}]
        opt = torch.optim.AdamW(groups, lr=t.lr, weight_decay=0.0)
        extra["alpha_bar"] = alphas_cumprod(run.model.ddpm)
        extra["sde"] = make_sde(run.model.sde)
    if dist_info.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        if disc is not None:
            disc = nn.parallel.DistributedDataParallel(disc, device_ids=ids)
    return Trainer(run, device, dist_info, train_set, test_set, net, ema, opt, disc, opt_d, extra=extra)


@contextlib.contextmanager
def stop_requests() -> Iterator[threading.Event]:
    """An event set by SIGTERM or Ctrl-C, so the loop can save the step it is on and stop cleanly
    (`kill` or the end of a session then costs nothing; SIGKILL still leaves the last periodic save)."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, lambda *_: event.set())
    try:
        yield event
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def train(run: RunConfig, resume: Path | None = None, progress: bool = True, init_from: Path | None = None) -> Path:
    """Train to the configured budget; returns the exported checkpoint folder (out/checkpoint).

    `resume` continues a run exactly from its state.pt; `init_from` (used only when there is no state to
    resume) starts from a checkpoint's weights, for when the state was lost but the weights were shipped."""
    set_cpu_threads()
    dist_info = init_distributed(run.train.device)
    trainer = build_trainer(run, dist_info)
    run = trainer.run
    out = Path(run.train.out)
    if resume is not None:
        trainer.load(checkpoints.load_state(resume))
        log.info("resumed from %s at step %d", resume, trainer.step)
    elif init_from is not None:
        trainer.init_from(init_from)
        log.warning(
            "no training state: started from the weights in %s at step %d with a fresh optimiser%s",
            init_from,
            trainer.step,
            " and a fresh discriminator" if trainer.disc is not None else "",
        )
    total = trainer.extra["total"]
    log_path = out / "log.jsonl"
    if dist_info.main:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(".*.tmp*"):
            stale.unlink(missing_ok=True)
        checkpoints.save_config(out / CHECKPOINT_DIR, run)
        _truncate_log(log_path, trainer.step)
        log.info(
            "%s: %d parameters, %d train / %d test faces, %d steps on %s (%s)",
            run.model.family,
            count_parameters(trainer.ema),
            len(trainer.train_set),
            len(trainer.test_set),
            total,
            trainer.device,
            run.train.precision,
        )
    bar = tqdm(
        total=total,
        initial=trainer.step,
        disable=not (progress and dist_info.main),
        desc=run.model.family,
        unit="step",
        dynamic_ncols=True,
    )
    with stop_requests() as stop:
        _loop(trainer, total, bar, log_path, out, stop)
    bar.close()
    if dist_info.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return out / CHECKPOINT_DIR


def _loop(trainer: Trainer, total: int, bar: tqdm, log_path: Path, out: Path, stop: threading.Event) -> None:
    run, dist_info = trainer.run, trainer.dist
    window: list[dict[str, float]] = []
    t0, c0 = time.perf_counter(), time.process_time()
    while trainer.step < total:
        metrics = trainer.train_step()
        trainer.step += 1
        now = time.perf_counter()
        trainer.wall_s += now - t0
        trainer.cpu_s += time.process_time() - c0
        t0, c0 = now, time.process_time()
        window.append(metrics)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['train_loss']:.4f}")
        t, step = run.train, trainer.step
        stopping = stop.is_set()
        if not dist_info.main:
            if stopping:
                break
            continue
        boundary = step % t.save_every == 0 or step == total or stopping
        if step % t.log_every == 0 or boundary:
            row: dict[str, Any] = {"step": step, "epoch": round(step * t.batch_size / len(trainer.train_set), 3)}
            for key in window[0]:
                row[key] = sum(m[key] for m in window) / len(window)
            if boundary:
                row |= trainer.test_loss()
            row["wall_s"] = round(trainer.wall_s, 1)
            row["cpu_s"] = round(trainer.cpu_s, 1)
            with log_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            window = []
        if boundary:
            trainer.save(out)
            plots.loss_curves(log_path, out / "loss.png")
        if stopping:
            log.warning("stopped by a signal at step %d of %d, saved; continue with --resume latest", step, total)
            break
        if step % t.sample_every == 0 or step == total:
            trainer.sample_grid(out / f"samples-{step:07d}.png")
        t0, c0 = time.perf_counter(), time.process_time()
