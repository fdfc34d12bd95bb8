"""`FaceGenerator`: the public sampling API, and the only thing the app calls.

    gen = FaceGenerator.from_checkpoint("checkpoints/ddpm")
    faces = gen.generate(seeds=[0, 1], mix=[1, 0, 0, 0, 0], sampler="dpmpp", steps=20)
    for frame in gen.frames([0], mix=[0.5, 0.5, 0, 0, 0]):   # every step: frame.x_t, frame.x0
        ...

One RNG per image: the face for seed s is pixel-identical whatever the batch and whether the frames
are streamed. Nothing here touches the global RNG.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from facegen.checkpoints import WEIGHTS_NAME, load_checkpoint, load_into
from facegen.conditioning import normalise_mix
from facegen.config import DIFFUSION_FAMILIES, Family, ModelConfig, Precision
from facegen.diffusion.samplers import Step
from facegen.nets import build_sampling_net
from facegen.plots import to_pil
from facegen.runtime import pick_device, resolve_precision
from facegen.sampling import (
    BLEND_MODES,
    DEFAULT_BLEND,
    DEFAULT_STEPS,
    EVERYWHERE,
    STEP_RANGE,
    Batching,
    BlendMode,
    GuidanceInterval,
    Request,
    default_guidance,
    default_guidance_interval,
    final,
    samplers_for,
    stream,
    takes_guidance_interval,
)

MAX_SEED = 2**32 - 1


class RequestError(ValueError):
    """A sampling request outside what the model supports; the message says which argument."""


@dataclass
class FaceGenerator:
    config: ModelConfig
    net: torch.nn.Module
    device: torch.device
    precision: Precision = "fp32"
    card: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    checkpoint_hash: str = ""
    batch_invariant: bool = True

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "auto", precision: Precision | None = None, family: Family | None = None
    ) -> FaceGenerator:
        """Load a checkpoint folder (config.json + model.safetensors), verified, onto `device`.

        precision: autocast for sampling; default "auto": fp16 on CUDA, bf16 on a CPU with native bf16
        kernels (1.3-1.5x faster there), else fp32 (runtime.resolve_precision).
        """
        path = Path(path)
        run, tensors, card = load_checkpoint(path, family)
        net = build_sampling_net(run.model)
        load_into(net, tensors, path / WEIGHTS_NAME)
        dev = pick_device(device)
        net = net.to(dev).eval().requires_grad_(False)
        precision = resolve_precision(precision or "auto", dev, purpose="sample")
        digest = hashlib.sha256((path / WEIGHTS_NAME).read_bytes()).hexdigest()[:16]
        return cls(run.model, net, dev, precision, card, path.name, digest)

    @property
    def family(self) -> Family:
        return self.config.family

    @property
    def groups(self) -> tuple[str, ...]:
        return self.config.groups

    @property
    def one_pass(self) -> bool:
        """A GAN generator or VAE decoder: one network pass per face, no sampler steps or guidance."""
        return self.family not in DIFFUSION_FAMILIES

    @property
    def samplers(self) -> tuple[str, ...]:
        return samplers_for(self.config)

    def request(
        self,
        seeds: Sequence[int] | int,
        mix: Sequence[float] | torch.Tensor,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        blend: BlendMode | None = None,
        guidance_interval: GuidanceInterval | None = None,
    ) -> Request:
        """Validate and fill in defaults; raises RequestError or MixError with a specific message."""
        seeds = [seeds] if isinstance(seeds, int) else list(seeds)
        if not seeds:
            raise RequestError("give at least one seed")
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED:
                raise RequestError(f"seed {s!r} must be an integer in [0, {MAX_SEED}]")
        sampler = sampler or self.samplers[0]
        if sampler not in self.samplers:
            raise RequestError(f"{self.family} has no sampler {sampler!r}; choose one of {', '.join(self.samplers)}")
        lo, hi = STEP_RANGE[sampler]
        steps = DEFAULT_STEPS[sampler] if steps is None or self.one_pass else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or not lo <= steps <= hi:
            raise RequestError(f"steps must be an integer in [{lo}, {hi}] for {sampler}, got {steps!r}")
        if self.family == "ddpm" and steps > self.config.ddpm.num_train_timesteps:
            raise RequestError(f"steps must not exceed the model's {self.config.ddpm.num_train_timesteps} timesteps")
        guidance = default_guidance(self.config) if guidance is None else float(guidance)
        if not math.isfinite(guidance) or not 0.0 <= guidance <= 20.0:
            raise RequestError(f"guidance must be a number in [0, 20], got {guidance}")
        blend = DEFAULT_BLEND if blend is None else blend
        if blend not in BLEND_MODES:
            raise RequestError(f"blend must be one of {', '.join(BLEND_MODES)}, got {blend!r}")
        interval = self._guidance_interval(guidance_interval, sampler, steps)
        return Request(tuple(seeds), normalise_mix(mix, self.groups), sampler, steps, guidance, blend, interval)

    def _guidance_interval(self, interval: GuidanceInterval | None, sampler: str, steps: int) -> GuidanceInterval:
        """The model's default interval (guidance everywhere unless measured otherwise), or a checked one."""
        if interval is None:
            takes = takes_guidance_interval(self.config, sampler)
            return default_guidance_interval(self.config) if takes else EVERYWHERE
        try:
            lo, hi = (float(v) for v in interval)
        except (TypeError, ValueError):
            raise RequestError(f"guidance_interval must be two numbers (lo, hi], got {interval!r}") from None
        if math.isnan(lo) or math.isnan(hi) or not 0.0 <= lo < hi:
            raise RequestError(f"guidance_interval (lo, hi] needs 0 <= lo < hi, got ({lo}, {hi}]")
        if (lo, hi) != EVERYWHERE and not takes_guidance_interval(self.config, sampler):
            raise RequestError(f"{self.family} sampler {sampler!r} takes no guidance interval")
        return lo, hi

    def frames(
        self,
        seeds: Sequence[int] | int,
        mix: Sequence[float] | torch.Tensor,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        blend: BlendMode | None = None,
        guidance_interval: GuidanceInterval | None = None,
    ) -> Iterator[Step]:
        """Every step's state: Step(index, total, x_t, x0, nfe), tensors (B, 3, H, W) in [-1, 1] on the CPU."""
        req = self.request(seeds, mix, sampler, steps, guidance, blend, guidance_interval)
        for step in stream(self.config, self.net, req, self.device, self.precision, self.batching):
            yield Step(step.index, step.total, step.x_t.float().cpu(), step.x0.float().cpu(), step.nfe)

    def generate(
        self,
        seeds: Sequence[int] | int,
        mix: Sequence[float] | torch.Tensor,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        blend: BlendMode | None = None,
        guidance_interval: GuidanceInterval | None = None,
    ) -> list[Image.Image]:
        """The final faces as RGB PIL images, one per seed."""
        req = self.request(seeds, mix, sampler, steps, guidance, blend, guidance_interval)
        return to_pil(final(stream(self.config, self.net, req, self.device, self.precision, self.batching)).x_t)

    @property
    def batching(self) -> Batching:
        """With batch_invariant (the default) seed s gives the same pixels in any batch: the U-Net in bf16
        on the CPU runs the batch in one call, padded to the thread count (verified bit for bit, see
        `sampling.batched`); every other case (CUDA kernels, the DCGAN, and fp32, where oneDNN's GEMM
        blocking differs between batch 1 and 3 even at one thread: measured) one face per call."""
        if not self.batch_invariant:
            return "joint"
        if self.device.type == "cpu" and self.precision == "bf16" and not self.one_pass:
            return "thread_padded"
        return "per_face"
