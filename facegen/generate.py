"""Generate faces from a checkpoint on the command line; the app prints this command for every face.

python -m facegen.generate --checkpoint checkpoints/ddpm --seed 7 --mix 1,0,0,0,0 --out face.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from facegen.checkpoints import CheckpointError
from facegen.conditioning import MixError
from facegen.pipeline import FaceGenerator, RequestError
from facegen.sampling import BLEND_MODES, DEFAULT_BLEND
from facegen.studio import face_settings, reproduce_command, save_png


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint folder")
    p.add_argument("--seed", type=int, default=0, help="first seed; face i uses seed + i")
    p.add_argument("--faces", type=int, default=1, help="how many faces")
    p.add_argument("--mix", required=True, help="comma-separated group weights, e.g. 1,0,0,0,0")
    p.add_argument("--sampler", help="sampler (default: the family's first)")
    p.add_argument("--steps", type=int, help="sampler steps")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's)")
    p.add_argument(
        "--blend", choices=BLEND_MODES, help=f"how a diffusion model draws a blend of groups (default {DEFAULT_BLEND})"
    )
    p.add_argument(
        "--guidance-interval",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        help="apply guidance only at noise levels sigma in (LO, HI] (default: the model's; 0 inf = everywhere)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", type=Path, default=Path("face.png"), help="PNG path; several faces get -seedN suffixes")
    a = p.parse_args(argv)
    try:
        gen = FaceGenerator.from_checkpoint(a.checkpoint, device=a.device)
        mix = [float(w) for w in a.mix.split(",")]
        seeds = [a.seed + i for i in range(a.faces)]
        interval = tuple(a.guidance_interval) if a.guidance_interval else None
        req = gen.request(seeds, mix, a.sampler, a.steps, a.guidance, a.blend, interval)
        last = None
        for step in tqdm(
            gen.frames(seeds, mix, a.sampler, a.steps, a.guidance, a.blend, interval), total=req.steps, desc=req.sampler
        ):
            last = step
    except (CheckpointError, MixError, RequestError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from facegen.plots import to_pil

    for seed, face in zip(seeds, to_pil(last.x_t), strict=True):
        out = a.out if len(seeds) == 1 else a.out.with_name(f"{a.out.stem}-seed{seed}{a.out.suffix}")
        settings = face_settings(gen, gen.request([seed], mix, a.sampler, a.steps, a.guidance, a.blend, interval))
        save_png(face, out, settings, reproduce_command(settings, str(a.checkpoint.parent)))
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
