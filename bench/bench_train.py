"""Training throughput per family at 64 px: facegen's step (fp32 and bf16 autocast, its recipe) against
a plain fp32 PyTorch loop on the same network, in the same run. Prints images/s and which precision
`auto` picks on this machine. On a CPU without native bf16 kernels the bf16 column is timed with one
step only (it is tens of times slower there) unless --steps-bf16 says otherwise.

    python bench/bench_train.py [--steps 4] [--threads 2] [--attention-head-dim 8] [--low-res]

--attention-head-dim times the U-Nets with other attention heads than the preset's 64 channels (8 was
the shipped setting before issue 11). --low-res times the diffusion steps of `--low-res-steps` (the 64 px
batch pooled to 32 px; the reference trains at 32 px), to price progressive resolution.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facegen.config import resolve  # noqa: E402
from facegen.data import FaceSet  # noqa: E402
from facegen.nets import build_discriminator, build_sampling_net, count_parameters  # noqa: E402
from facegen.runtime import cpu_has_native_bf16, hardware_name, resolve_precision  # noqa: E402
from facegen.training import Dist, Trainer, build_trainer  # noqa: E402

BATCH = {"ddpm": 32, "sde": 32, "dcgan": 64}


def fake_faces(n: int = 256) -> FaceSet:
    g = torch.Generator().manual_seed(0)
    return FaceSet(
        torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=g),
        torch.arange(n) % 5,
        ("White", "Black", "Asian", "Indian", "Others"),
        tuple(f"{i}.png" for i in range(n)),
    )


def unet_layer(head_dim: int | None) -> dict:
    return {"model": {"unet": {"attention_head_dim": head_dim}}} if head_dim else {}


def facegen_trainer(family: str, precision: str, head_dim: int | None = None, low_res: bool = False) -> Trainer:
    train = {"precision": precision, "device": "cpu", "batch_size": BATCH[family]}
    run = resolve(
        "cpu",
        family,
        {
            "data": {"path": "unused", "cache_dir": None},
            "train": train | ({"low_res_steps": 10**9} if low_res else {}),
        },
        unet_layer(head_dim),
    )
    import facegen.training as training

    faces = fake_faces()
    original = training.load_faces
    training.load_faces = lambda cfg, size: faces  # benchmark on in-memory faces, no folder
    try:
        return build_trainer(run, Dist())
    finally:
        training.load_faces = original


def time_steps(step, n: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def plain_fp32_step(family: str, head_dim: int | None = None, side: int = 64):
    """The reference: the same network, fp32, a textbook loop (eps-MSE / BCE), no facegen code in the step."""
    run = resolve("cpu", family, {"data": {"path": "unused"}}, unet_layer(head_dim))
    b = BATCH[family]
    x = torch.rand(b, 3, side, side) * 2 - 1
    mix = F.one_hot(torch.arange(b) % 5, 5).float()
    net = build_sampling_net(run.model)
    if family == "dcgan":
        D = build_discriminator(run.model)
        opt_g = torch.optim.Adam(net.parameters(), 2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))

        def step() -> None:
            z = torch.randn(b, run.model.dcgan.latent_dim)
            fake = net(z, mix)
            d = F.binary_cross_entropy_with_logits(D(x, mix), torch.ones(b)) + F.binary_cross_entropy_with_logits(
                D(fake.detach(), mix), torch.zeros(b)
            )
            opt_d.zero_grad()
            d.backward()
            opt_d.step()
            g = F.binary_cross_entropy_with_logits(D(fake, mix), torch.ones(b))
            opt_g.zero_grad()
            g.backward()
            opt_g.step()

        return step, count_parameters(net) + count_parameters(D)
    opt = torch.optim.AdamW(net.parameters(), 2e-4)
    cond = torch.cat([mix, torch.zeros(b, 1)], 1)

    def step() -> None:
        t = torch.randint(0, 1000, (b,)) if family == "ddpm" else torch.rand(b) * 0.999 + 1e-3
        noise = torch.randn_like(x)
        loss = F.mse_loss(net(x + noise, t, cond), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, count_parameters(net)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--families", nargs="+", default=["ddpm", "sde", "dcgan"])
    p.add_argument("--steps-bf16", type=int, help="bf16 steps (default --steps, or 1 without native bf16)")
    p.add_argument("--attention-head-dim", type=int, help="U-Net attention head width (default: the preset's)")
    p.add_argument("--low-res", action="store_true", help="diffusion steps at half the side (--low-res-steps)")
    a = p.parse_args()
    if a.low_res and "dcgan" in a.families:
        p.error("--low-res is for the diffusion families (--families ddpm sde)")
    torch.set_num_threads(a.threads)
    native = cpu_has_native_bf16()
    steps = {"fp32": a.steps, "bf16": a.steps_bf16 or (a.steps if native else 1)}
    heads = a.attention_head_dim or "the preset's"
    print(
        f"torch {torch.__version__}, {a.threads} CPU threads, {32 if a.low_res else 64} px, median of {a.steps} steps after a warm-up, "
        f"U-Net attention heads of {heads} channels"
    )
    print(f"CPU: {hardware_name(torch.device('cpu'))}")
    print(
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16 kernels: {native}, "
        f"precision auto -> {resolve_precision('auto', torch.device('cpu'))}; bf16 timed over {steps['bf16']} step(s)"
    )
    print(
        f"{'family':7} {'batch':>5} {'params':>8} {'fp32 ref img/s':>15} {'facegen fp32':>13} {'facegen bf16':>13} {'auto/ref':>9}"
    )
    for family in a.families:
        ref_step, params = plain_fp32_step(family, a.attention_head_dim, 32 if a.low_res else 64)
        ref = BATCH[family] / time_steps(ref_step, a.steps)
        ours = {}
        for precision in ("fp32", "bf16"):
            trainer = facegen_trainer(family, precision, a.attention_head_dim, a.low_res)

            def step(tr: Trainer = trainer) -> None:
                tr.train_step()
                tr.step += 1

            ours[precision] = BATCH[family] / time_steps(step, steps[precision])
        print(
            f"{family:7} {BATCH[family]:>5} {params / 1e6:>7.1f}M {ref:>15.1f} {ours['fp32']:>13.1f} "
            f"{ours['bf16']:>13.1f} {ours['bf16' if native else 'fp32'] / ref:>8.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
