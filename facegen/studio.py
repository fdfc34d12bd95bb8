"""The studio's logic without the widgets: validated requests, throttled frame streams, and results.

`facegen.ui` wires these into Gradio; everything here is plain Python and testable without a browser.
A request is validated by pydantic (`GenerateParams`), sampled by `FaceGenerator`, throttled to at most
one frame per `min_interval` seconds (the last frame always sent), and finished as lossless PNGs that
carry their settings in PNG text chunks, plus an animation of the trajectory (or, for DCGAN, a morph).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from facegen.checkpoints import CheckpointError
from facegen.classifier import GroupClassifier, is_classifier, load_classifier, predict
from facegen.conditioning import MixError
from facegen.diffusion.samplers import Step
from facegen.pipeline import MAX_SEED, FaceGenerator, RequestError
from facegen.plots import grid, to_pil
from facegen.sampling import EVERYWHERE, SAMPLER_LABELS, STEP_RANGE, Request, composition_size, request_evaluations

log = logging.getLogger(__name__)

MAX_FACES = 8
MAX_TRAJECTORY_FRAMES = 40
PREVIEW_PX = 384  # display width of one face; a batch shows each face at half that


class StudioError(ValueError):
    """A message for the person at the page: what is wrong with the request and how to fix it."""


class Limits(BaseModel):
    """Bounds that protect one host: faces per request, steps, queued and concurrent jobs."""

    model_config = ConfigDict(frozen=True)
    max_faces: int = MAX_FACES
    max_steps: int = 500
    concurrency: int = 1
    max_queue: int = 32


class GenerateParams(BaseModel):
    """What one Generate press asks for; every field is checked before any work starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    model: str = Field(min_length=1)
    sampler: str | None = None
    steps: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    faces: int = Field(1, ge=1, le=MAX_FACES)
    weights: tuple[float, ...] = Field(min_length=1)
    guidance: float | None = Field(None, ge=0.0, le=20.0)  # None: the model's default
    preview: Literal["x_t", "x0"] = "x0"

    @field_validator("weights")
    @classmethod
    def _finite(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(math.isnan(w) or math.isinf(w) for w in v):
            raise ValueError("mix weights must be finite numbers")
        if any(w < 0 for w in v):
            raise ValueError("mix weights must not be negative")
        if sum(v) <= 0:
            raise ValueError("give at least one group a positive weight")
        return v

    @property
    def seeds(self) -> list[int]:
        """Faces 2..n take the following seeds, so each face alone reproduces with its own seed."""
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.faces)]


def parse_params(limits: Limits, **raw: object) -> GenerateParams:
    """Validate raw widget values into GenerateParams, or raise StudioError with a readable message."""
    try:
        params = GenerateParams.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        raise StudioError(f"{where}: {first['msg']}") from None
    if params.faces > limits.max_faces:
        raise StudioError(f"faces: at most {limits.max_faces} per request on this host")
    if params.steps is not None and params.steps > limits.max_steps:
        raise StudioError(f"steps: at most {limits.max_steps} on this host")
    return params


@dataclass(frozen=True)
class Frame:
    """One streamed update: a preview grid, step i of n, elapsed seconds, network evaluations so far."""

    image: Image.Image
    index: int
    total: int
    elapsed: float
    nfe: int


@dataclass
class Result:
    faces: list[Image.Image]
    png_paths: list[Path]
    animation: Path
    settings: dict[str, object]
    command: str
    elapsed: float
    seen_groups: dict[str, float] | None = None  # the group classifier's distribution over these faces


def preview_grid(x: torch.Tensor, px: int = PREVIEW_PX) -> Image.Image:
    """(B, 3, H, W) in [-1, 1] -> one row-wrapped grid of the faces shown large (`face_grid`)."""
    return face_grid(to_pil(x), px)


def face_grid(faces: list[Image.Image], px: int = PREVIEW_PX) -> Image.Image:
    """Faces in rows of up to 4, each upscaled by a whole factor with nearest-neighbour sampling, so a
    64 px face fills the panel while every generated pixel stays a visible square of one colour."""
    size = display_px(faces[0].width, len(faces), px)
    big = [im.resize((size, size), Image.Resampling.NEAREST) for im in faces]
    cols = min(4, len(big))
    return grid([big[i : i + cols] for i in range(0, len(big), cols)], pad=4)


def display_px(native: int, count: int, px: int = PREVIEW_PX) -> int:
    """The display size of one of `count` faces of `native` pixels: a whole multiple of `native` near
    `px` for one face, `px / 2` for a batch (never below the native size)."""
    target = px if count == 1 else px // 2
    return native * max(1, round(target / native))


@dataclass
class Studio:
    """The loaded models and the operations the page offers on them."""

    models: dict[str, FaceGenerator]
    failures: dict[str, str] = field(default_factory=dict)
    limits: Limits = Limits()
    classifier: GroupClassifier | None = None
    out_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="facegen-")))
    min_interval: float = 0.1

    def model(self, name: str) -> FaceGenerator:
        if name not in self.models:
            known = ", ".join(self.models) or "none loaded"
            raise StudioError(f"unknown model {name!r}; loaded: {known}")
        return self.models[name]

    def check(self, params: GenerateParams) -> FaceGenerator:
        gen = self.model(params.model)
        try:
            gen.request(params.seeds, params.weights, params.sampler, params.steps, params.guidance)
        except (RequestError, MixError) as err:
            raise StudioError(str(err)) from None
        return gen

    def stream(self, params: GenerateParams) -> Iterator[Frame | Result]:
        """Throttled frames, then the Result. Closing the iterator stops the sampler before its next step."""
        gen = self.check(params)
        start = time.perf_counter()
        trajectory: list[torch.Tensor] = []
        last = yield from self.live_frames(gen, params, trajectory)
        elapsed = time.perf_counter() - start
        yield self._finish(gen, params, to_pil(last.x_t), trajectory, elapsed)

    def live_frames(
        self, gen: FaceGenerator, params: GenerateParams, trajectory: list[torch.Tensor]
    ) -> Generator[Frame, None, Step]:
        """The streaming part: a preview at most every `min_interval` s (the last step always), and a
        thinned copy of up to 4 faces' states for the trajectory GIF (rendered only at the end)."""
        start = last_sent = time.perf_counter()
        keep_every = 1
        last = None
        for last in gen.frames(params.seeds, params.weights, params.sampler, params.steps, params.guidance):
            x = last.x0 if params.preview == "x0" and last.index < last.total else last.x_t
            if last.index % keep_every == 0:
                trajectory.append(x[:4].clone())
                if len(trajectory) > MAX_TRAJECTORY_FRAMES:  # keep every other frame, then every 4th, ...
                    trajectory[:] = trajectory[::2]
                    keep_every *= 2
            now = time.perf_counter()
            if now - last_sent >= self.min_interval or last.index == last.total:
                last_sent = now
                yield Frame(preview_grid(x), last.index, last.total, now - start, last.nfe)
        assert last is not None
        return last

    def settings(self, gen: FaceGenerator, params: GenerateParams, seed: int) -> dict[str, object]:
        return face_settings(gen, gen.request([seed], params.weights, params.sampler, params.steps, params.guidance))

    @staticmethod
    def command(settings: dict[str, object]) -> str:
        return reproduce_command(settings)

    def _finish(
        self,
        gen: FaceGenerator,
        params: GenerateParams,
        faces: list[Image.Image],
        trajectory: list[torch.Tensor],
        elapsed: float,
    ) -> Result:
        folder = Path(tempfile.mkdtemp(prefix="result-", dir=self.out_dir))
        paths = []
        for seed, face in zip(params.seeds, faces, strict=True):
            settings = self.settings(gen, params, seed)
            paths.append(
                save_png(face, folder / f"facegen-{gen.name}-seed{seed}.png", settings, self.command(settings))
            )
        frames = self.morph(gen, params.seed) if gen.one_pass else [preview_grid(x, 96) for x in trajectory]
        animation = folder / ("morph.gif" if gen.one_pass else "trajectory.gif")
        frames[0].save(animation, save_all=True, append_images=frames[1:], duration=80, loop=0)
        first = self.settings(gen, params, params.seed)
        return Result(faces, paths, animation, first, self.command(first), elapsed, self.seen_groups(gen, faces))

    def seen_groups(self, gen: FaceGenerator, faces: list[Image.Image]) -> dict[str, float] | None:
        """Share of the faces the group classifier assigns to each group (None without a matching classifier)."""
        if self.classifier is None or self.classifier_groups != gen.groups:
            return None
        x = torch.stack(
            [torch.from_numpy(np.array(f.resize((64, 64), Image.Resampling.BICUBIC))).permute(2, 0, 1) for f in faces]
        )
        pred, _ = predict(self.classifier, x)
        counts = np.bincount(pred.numpy(), minlength=len(gen.groups))
        return {g: float(c) / len(faces) for g, c in zip(gen.groups, counts, strict=True)}

    @property
    def classifier_groups(self) -> tuple[str, ...] | None:
        return None if self.classifier is None else self.classifier.groups

    def morph(self, gen: FaceGenerator, seed: int, per_leg: int = 8) -> list[Image.Image]:
        """One seed walked through every pure group and back to the first: a one-pass model's mix morph."""
        k = len(gen.groups)
        frames = []
        for a in range(k):
            b = (a + 1) % k
            for i in range(per_leg):
                w = [0.0] * k
                w[a] += 1 - i / per_leg
                w[b] += i / per_leg
                frames.append(gen.generate([seed], w)[0].resize((128, 128), Image.Resampling.NEAREST))
        return frames

    def compare(self, seed: int, weights: list[float]) -> list[tuple[Image.Image, str]]:
        """One seed and mix through every loaded model (default sampler), captioned with time and NFE.

        `weights` holds at least as many values as the largest model has groups; each model takes its first K.
        """
        out = []
        for name, gen in self.models.items():
            params = parse_params(self.limits, model=name, seed=seed, weights=tuple(weights[: len(gen.groups)]))
            self.check(params)
            t0 = time.perf_counter()
            face = gen.generate([seed], params.weights)[0]
            req = gen.request([seed], params.weights)
            nfe = request_evaluations(gen.config, req)
            out.append(
                (
                    face,
                    f"{name} · {SAMPLER_LABELS[req.sampler]}, {req.steps} steps · "
                    f"{nfe} NFE · {time.perf_counter() - t0:.2f} s",
                )
            )
        return out


def face_settings(gen: FaceGenerator, req: Request) -> dict[str, object]:
    """The settings that reproduce the face of `req.seeds[0]`, as written into its PNG (the blend mode
    only when a diffusion model drew a blend some other way than the default)."""
    blended = not gen.one_pass and composition_size(req) > 1
    return {
        "model": gen.name,
        "family": gen.family,
        "checkpoint_sha256": gen.checkpoint_hash,
        "sampler": req.sampler,
        "steps": req.steps,
        "seed": req.seeds[0],
        "mix": {g: round(float(w), 6) for g, w in zip(gen.groups, req.mix.tolist(), strict=True)},
        "guidance": req.guidance,
        **({"blend": req.blend} if blended else {}),
        **({"guidance_interval": list(req.guidance_interval)} if req.guidance_interval != EVERYWHERE else {}),
        "nfe": request_evaluations(gen.config, req),
        "synthetic": "AI-generated image (facegen); not a photograph of a real person",
    }


def reproduce_command(settings: dict[str, object], checkpoint_dir: str = "checkpoints") -> str:
    mix = ",".join(f"{w:g}" for w in settings["mix"].values())  # type: ignore[union-attr]
    return (
        f"python -m facegen.generate --checkpoint {checkpoint_dir}/{settings['model']} "
        f"--seed {settings['seed']} --mix {mix} --sampler {settings['sampler']} "
        f"--steps {settings['steps']} --guidance {settings['guidance']:g}"
        + (f" --blend {settings['blend']}" if "blend" in settings else "")
        + (
            " --guidance-interval {:g} {:g}".format(*settings["guidance_interval"])
            if "guidance_interval" in settings
            else ""
        )  # type: ignore[misc]
        + " --out face.png"
    )


def save_png(face: Image.Image, path: Path, settings: dict[str, object], command: str) -> Path:
    """A lossless PNG whose text chunks carry the settings that reproduce it and a synthetic marker."""
    info = PngInfo()
    for key, value in settings.items():
        info.add_text(f"facegen:{key}", value if isinstance(value, str) else json.dumps(value))
    info.add_text("Software", "facegen")
    info.add_text("Description", "Synthetic face generated by facegen; not a real person.")
    info.add_text("facegen:command", command)
    face.save(path, pnginfo=info)
    return path


def step_range(gen: FaceGenerator, sampler: str, limits: Limits) -> tuple[int, int]:
    lo, hi = STEP_RANGE[sampler]
    if gen.family == "ddpm":
        hi = min(hi, gen.config.ddpm.num_train_timesteps)
    hi = min(hi, limits.max_steps)
    return lo, max(hi, lo + 1)  # a slider needs min < max, even where it is hidden (DCGAN)


def load_group_classifier(folder: Path) -> GroupClassifier | None:
    """The group classifier shipped beside the generators, if any (a broken one is logged and skipped)."""
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        if is_classifier(sub):
            try:
                net, _ = load_classifier(sub)
            except CheckpointError as err:
                log.warning("skipped group classifier %s: %s", sub, err)
                return None
            return net
    return None


def load_models(folder: Path, device: str = "auto") -> tuple[dict[str, FaceGenerator], dict[str, str]]:
    """Every generator checkpoint under `folder` that loads, and for each that does not, why."""
    models: dict[str, FaceGenerator] = {}
    failures: dict[str, str] = {}
    if not folder.is_dir():
        return models, {str(folder): "checkpoints folder does not exist"}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "config.json").exists()):
        if is_classifier(sub):
            continue
        try:
            models[sub.name] = FaceGenerator.from_checkpoint(sub, device=device)
            log.info("loaded %s (%s) from %s", sub.name, models[sub.name].family, sub)
        except (CheckpointError, OSError, ValueError, RuntimeError) as err:
            failures[sub.name] = str(err)
            log.warning("skipped checkpoint %s: %s", sub, err)
    return models, failures
