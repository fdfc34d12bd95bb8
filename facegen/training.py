"""The training loop for every family: data, EMA, precision, checkpoints, logging, resume and DDP, written
once; what a family trains and how is its objective (`facegen.objectives`).

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
from facegen.config import ModelConfig, RunConfig
from facegen.data import FaceSet, augment, batch_indices, load_faces, split, to_model_range
from facegen.nets import build_sampling_net, build_training_networks, count_parameters
from facegen.objectives import Objective, bare, build_objective
from facegen.runtime import (
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
# How a model card names the never-shipped networks.
NETWORK_NAMES = {"disc": "discriminator", "critic": "latent critic"}


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
    objective: Objective
    total: int
    step: int = 0
    wall_s: float = 0.0
    # CPU time of the training steps, all threads of this process (time.process_time): the CPU-hours a
    # model has had, whatever else shared the machine.
    cpu_s: float = 0.0
    warm_start: int = 0  # the step the optimiser (re)started from; see learning_rate
    history: list[dict[str, Any]] = field(default_factory=list)  # earlier segments of this model's training
    segment_start: int = 0
    segment_how: str = "from scratch"

    # -- one optimisation step ----------------------------------------------------------------------
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

    def train_step(self) -> dict[str, float]:
        t, step = self.run.train, self.step
        gen = generator(t.seed, "step", step, self.dist.rank)
        idx = batch_indices(
            self.train_set.labels, t.batch_size, step, t.seed, self.run.data.balanced, self.dist.rank, self.dist.world
        )
        x, mix = self.batch(self.train_set, idx, gen, train=True)
        if step < t.low_res_steps:  # progressive resolution: the same faces at half the side, area-averaged
            x = F.avg_pool2d(x, 2)
        lr = learning_rate(self.run, step, self.total, self.warm_start)
        for opt in self.objective.optimisers.values():
            for group in opt.param_groups:
                group["lr"] = lr * group.get("lr_mult", 1.0)
        metrics = self.objective.step(x, mix, gen, step)
        update_ema(self.ema, bare(self.net), t.ema_decay, step)
        return metrics | {"lr": lr}

    @torch.no_grad()
    def test_loss(self) -> dict[str, float]:
        """The objective's held-out figures (test_loss, and cond_signal for diffusion) with fixed noise,
        averaged over the held-out batches: comparable across evaluations of one run."""
        t = self.run.train
        n = len(self.test_set)
        if n == 0 or t.test_batches == 0:
            return {}
        rows = []
        for i in range(t.test_batches):
            idx = torch.arange(i * t.batch_size, (i + 1) * t.batch_size) % n
            x, mix = self.batch(self.test_set, idx, generator(t.seed, "test", i), train=False)
            rows.append(self.objective.held_out(self.ema, x, mix, lambda i=i: generator(t.seed, "test", i)))
        return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}

    # -- saving -------------------------------------------------------------------------------------
    def segment(self) -> dict[str, Any]:
        """This process's stretch of training, for the model card: how it began, on what, with what."""
        t = self.run.train
        schedule = "" if t.lr_schedule == "constant" else f" ({t.lr_schedule} decay to step {self.total})"
        low_res = ""
        if t.low_res_steps > self.segment_start:
            low_res = f", to step {t.low_res_steps} at {self.run.model.image_size // 2} px"
        recipe = f"lr {t.lr}{schedule}, batch {t.batch_size}{low_res}, " + self.objective.recipe()
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
            "net": bare(self.net).state_dict(),
            "ema": self.ema.state_dict(),
        }
        state |= {k: bare(m).state_dict() for k, m in self.objective.networks().items()}
        state |= {k: opt.state_dict() for k, opt in self.objective.optimisers.items()}
        try:
            checkpoints.save_state(out, state)
            checkpoints.save_weights(out / CHECKPOINT_DIR, self.ema.state_dict(), card)
        except OSError as err:
            log.error("could not save at step %d (%s); the previous checkpoint is intact", self.step, err)
            return
        log.info("saved step %d to %s", self.step, out)

    def load(self, state: dict[str, Any]) -> None:
        try:
            bare(self.net).load_state_dict(state["net"])
            self.ema.load_state_dict(state["ema"])
            for key, module in self.objective.networks().items():
                bare(module).load_state_dict(state[key])
        except (RuntimeError, KeyError) as err:
            raise checkpoints.CheckpointError(
                f"the saved state does not fit the networks this run configures (compare --dry-run): {err}"
            ) from None
        try:
            for key, opt in self.objective.optimisers.items():
                opt.load_state_dict(state[key])
        except (ValueError, KeyError) as err:  # e.g. a state from before the mix embedding had its own group
            raise checkpoints.CheckpointError(
                f"the optimiser state does not fit this run ({err}); start from the weights with --init-from"
            ) from None
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
        bare(self.net).load_state_dict(self.ema.state_dict())
        self.step = self.warm_start = self.segment_start = int(card.get("step", 0))
        self.wall_s = float(card.get("wall_time_s", 0.0))
        self.cpu_s = 3600 * float(card.get("cpu_hours", self.wall_s / 3600))
        earlier = {"steps": [0, self.step], "how": "from scratch", "precision": ckpt_run.train.precision}
        self.history = list(card.get("history") or [{**earlier, "hardware": card.get("hardware", "?"), "recipe": "?"}])
        fresh = ["optimiser", *(NETWORK_NAMES.get(k, k) for k in self.objective.networks())]
        self.segment_how = f"continued from the weights in {folder}, fresh " + " and ".join(fresh)
        if self.step >= self.total:
            raise ValueError(f"{folder} is already at step {self.step}; raise --max-steps above it to train on")

    def sample_grid(self, path: Path) -> None:
        """One row per group, the same seeds in each row, from the EMA weights."""
        m = self.run.model
        sampler, steps = {"ddpm": ("ddim", 25), "sde": ("ode", 25)}.get(m.family, ("single", 1))
        if m.family == "sde" and m.sde.kind == "edm":
            sampler, steps = "dpmpp_2m", 18
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
    if model.family in ("vae", "vaegan"):
        return own | {"vae": model.vae.model_dump(include={"latent_dim", "channels"})}
    unet = model.unet.model_dump(exclude={"mix_embed_std"})
    loss_only = {
        "ddpm": {"loss_weight", "min_snr_gamma"},
        "sde": {"p_mean", "p_std", "noise_levels", "loss_weight", "min_snr_gamma"},
    }[model.family]
    return own | {"unet": unet, model.family: getattr(model, model.family).model_dump(exclude=loss_only)}


def same_network(a: ModelConfig, b: ModelConfig) -> bool:
    """Whether weights trained under config `a` can continue under `b` (--init-from): the same shipped
    network with the same meaning of its output; only the DCGAN's discriminator settings may differ."""
    return _weights_config(a) == _weights_config(b)


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
        extra = {k: m.to(device).to(memory_format=memory) for k, m in build_training_networks(run.model).items()}
    ema = build_sampling_net(run.model).to(device).to(memory_format=memory)
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    if dist_info.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        extra = {k: nn.parallel.DistributedDataParallel(m, device_ids=ids) for k, m in extra.items()}
    objective = build_objective(run, net, device, extra)
    total = total_steps(run, len(train_set))
    return Trainer(run, device, dist_info, train_set, test_set, net, ema, objective, total)


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
        log.warning("no training state: %s, at step %d", trainer.segment_how, trainer.step)
    total = trainer.total
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
