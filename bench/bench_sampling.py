"""Sampling speed per family and sampler at 64 px, against diffusers' own scheduler loop in fp32.

Prints time to first frame, time for 1 and 4 faces, and the overhead of streaming every frame
(FaceGenerator.frames + preview rendering, as the app does) over plain generation.

    python bench/bench_sampling.py [--threads 2] [--checkpoints checkpoints]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facegen.checkpoints import save_config, save_weights  # noqa: E402
from facegen.conditioning import condition_vector  # noqa: E402
from facegen.config import resolve  # noqa: E402
from facegen.diffusion.ddpm import sampling_scheduler  # noqa: E402
from facegen.nets import build_sampling_net  # noqa: E402
from facegen.pipeline import FaceGenerator  # noqa: E402
from facegen.runtime import hardware_name  # noqa: E402
from facegen.sampling import (  # noqa: E402
    DEFAULT_STEPS,
    EVERYWHERE,
    default_guidance,
    interval_text,
    request_evaluations,
)
from facegen.studio import Studio, parse_params  # noqa: E402


def settings(gen: FaceGenerator, defaults_only: bool = False) -> list[tuple[str, int]]:
    """Every sampler the model offers at its default steps (the default sampler first), or only the default."""
    return [(s, DEFAULT_STEPS[s]) for s in gen.samplers[: 1 if defaults_only else None]]


MIX = [1.0, 0.0, 0.0, 0.0, 0.0]


def checkpoint(family: str, folder: Path, shipped: Path | None) -> Path:
    """The shipped checkpoint when present, else the same architecture with random weights."""
    if shipped is not None and (shipped / family / "config.json").is_file():
        return shipped / family
    run = resolve("cpu", family, {"data": {"path": "bench"}})
    save_config(folder / family, run)
    save_weights(folder / family, build_sampling_net(run.model).state_dict(), {"step": 0})
    return folder / family


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def first_frame(gen: FaceGenerator, sampler: str, steps: int) -> float:
    t0 = time.perf_counter()
    next(iter(gen.frames([0], MIX, sampler, steps)))
    return time.perf_counter() - t0


def streamed(studio: Studio, gen: FaceGenerator, sampler: str, steps: int, faces: int) -> None:
    """The app's streaming path (Studio.live_frames: previews every 100 ms, trajectory copies), no result files."""
    params = parse_params(
        studio.limits,
        model=gen.name,
        sampler=None if gen.one_pass else sampler,
        steps=None if gen.one_pass else steps,
        seed=0,
        faces=faces,
        weights=tuple(MIX),
    )
    for _ in studio.live_frames(gen, params, []):
        pass


def diffusers_reference(gen: FaceGenerator, steps: int, faces: int) -> float:
    """diffusers' DPM-Solver++ loop driving the same UNet2DModel in fp32, batched, as its pipelines do
    (told the model's prediction type, so it does the epsilon/v conversion itself)."""
    unet, embed = gen.net.unet, gen.net.mix_embedding
    prediction = {"epsilon": "epsilon", "v": "v_prediction"}[gen.config.ddpm.prediction]
    scheduler = sampling_scheduler(gen.config.ddpm, "dpmpp")
    scheduler = type(scheduler).from_config(scheduler.config, prediction_type=prediction)
    cond = condition_vector(torch.tensor([MIX] * faces))

    def run() -> None:
        with torch.inference_mode():
            scheduler.set_timesteps(steps)
            x = torch.randn(faces, 3, 64, 64, generator=torch.Generator().manual_seed(0))
            labels = embed(cond)
            for t in scheduler.timesteps:
                eps = unet(x, t, class_labels=labels).sample
                x = scheduler.step(eps, t, x).prev_sample

    run()
    return timed(run, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    p.add_argument("--families", nargs="+", default=["ddpm", "sde", "dcgan", "vae", "vaegan"])
    p.add_argument("--defaults-only", action="store_true", help="only each model's default sampler and steps")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp())
    print(f"torch {torch.__version__}, {a.threads} CPU threads, 64 px; CPU: {hardware_name(torch.device('cpu'))}")
    print(
        f"{'family':6} {'sampler':20} {'steps':>5} {'NFE':>4} {'first frame':>11} {'1 face':>8} {'4 faces':>8} "
        f"{'streamed 4':>10} {'overhead':>8}"
    )
    for family in a.families:
        gen = FaceGenerator.from_checkpoint(checkpoint(family, tmp, a.checkpoints), device="cpu")
        gen.name = family
        print(
            f"{family}: precision {gen.precision} (auto), batching {gen.batching}, guidance {default_guidance(gen.config):g}"
        )
        studio = Studio({family: gen}, out_dir=tmp, min_interval=0.1)
        for sampler, steps in settings(gen, a.defaults_only):
            ff = min(first_frame(gen, sampler, steps) for _ in range(2))
            one = timed(lambda s=sampler, n=steps, g=gen: g.generate([0], MIX, s, n), 2)
            four = timed(lambda s=sampler, n=steps, g=gen: g.generate([0, 1, 2, 3], MIX, s, n), 2)
            stream4 = timed(lambda s=sampler, n=steps, g=gen, st=studio: streamed(st, g, s, n, 4), 2)
            req = gen.request([0], MIX, sampler, steps)  # the app's request: default guidance and its interval
            where = (
                ""
                if req.guidance_interval == EVERYWHERE
                else f" guided at sigma in {interval_text(req.guidance_interval)}"
            )
            nfe = request_evaluations(gen.config, req)
            print(
                f"{family:6} {sampler:20} {steps:>5} {nfe:>4} {ff:>10.3f}s {one:>7.2f}s {four:>7.2f}s {stream4:>9.2f}s "
                f"{100 * (stream4 / four - 1):>7.1f}%{where}",
                flush=True,
            )
        if family == "ddpm":
            n = DEFAULT_STEPS["dpmpp"]
            for faces in (1, 4):  # no guidance on either side: diffusers' loop here has none
                ref = diffusers_reference(gen, n, faces)
                ours = timed(lambda f=faces, g=gen, n=n: g.generate(list(range(f)), MIX, "dpmpp", n, 1.0), 2)
                print(
                    f"{'':6} diffusers fp32 dpmpp {n} steps, {faces} face(s), guidance 1: {ref:.2f}s  "
                    f"(facegen {ours:.2f}s, {ref / ours:.2f}x)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
