"""Does bf16 autocast cost quality? Train the same network from the same seed on the same batches in fp32
and in bf16, then score both EMA nets on the held-out faces in fp32 with the same fixed noise.

    python bench/bench_precision.py --data ../shared/data/utkface64 [--steps 300] [--image-size 32]

Prints, per diffusion family, the held-out loss of each precision, their ratio and the wall time. (The
DCGAN has no held-out likelihood-like loss to compare; its speed-up is in bench_train.py.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facegen.conditioning import condition_vector  # noqa: E402
from facegen.config import resolve  # noqa: E402
from facegen.runtime import cpu_has_native_bf16, generator  # noqa: E402
from facegen.training import Dist, Trainer, build_trainer  # noqa: E402


@torch.no_grad()
def held_out_loss_fp32(trainer: Trainer, seed: int = 1234) -> float:
    """Mean diffusion loss of the EMA net over every held-out face, fp32, fixed noise per batch."""
    test, b = trainer.test_set, trainer.run.train.batch_size
    losses = []
    for i in range(0, len(test), b):
        gen = generator(seed, "held-out", i)
        x, mix = trainer.batch(test, torch.arange(i, min(i + b, len(test))), gen, train=False)
        losses.append(trainer.objective.loss(trainer.ema, x, condition_vector(mix), gen).item() * len(x))
    return sum(losses) / len(test)


def run_once(family: str, precision: str, a: argparse.Namespace) -> tuple[float, float]:
    run = resolve(
        "cpu",
        family,
        {
            "data": {"path": a.data, "cache_dir": a.cache_dir},
            "model": {"image_size": a.image_size},
            "train": {"precision": precision, "device": "cpu", "seed": 0, "max_steps": a.steps},
        },
    )
    trainer = build_trainer(run, Dist())
    t0 = time.perf_counter()
    for _ in range(a.steps):
        trainer.train_step()
        trainer.step += 1
    return held_out_loss_fp32(trainer), time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/utkface64")
    p.add_argument("--cache-dir", default="runs/cache")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--families", nargs="+", default=["ddpm", "sde"], choices=["ddpm", "sde"])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if not cpu_has_native_bf16():
        print(
            "note: this CPU has no native bf16 kernels; bf16 runs tens of times slower here, and `auto` trains in fp32"
        )
    print(f"torch {torch.__version__}, {a.threads} CPU threads, {a.image_size} px, {a.steps} steps of the cpu preset")
    print(f"{'family':7} {'fp32 held-out':>14} {'bf16 held-out':>14} {'bf16/fp32':>10} {'fp32 s':>8} {'bf16 s':>8}")
    for family in a.families:
        (l32, s32), (l16, s16) = (run_once(family, prec, a) for prec in ("fp32", "bf16"))
        print(f"{family:7} {l32:>14.4f} {l16:>14.4f} {l16 / l32:>10.3f} {s32:>8.0f} {s16:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
