"""Where a diffusion training step's CPU time goes: torch.profiler over one bf16 step of the preset's
U-Net (batch 32, 64 px), the top operators by self time, and the step timed with channels_last against
contiguous memory in the same run.

    python bench/profile_train_step.py [--family sde] [--threads 1] [--rows 12]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facegen.config import resolve  # noqa: E402
from facegen.nets import build_sampling_net  # noqa: E402
from facegen.objectives import DiffusionObjective  # noqa: E402
from facegen.runtime import hardware_name  # noqa: E402


def step_fn(family: str, channels_last: bool):
    run = resolve("cpu", family, {"data": {"path": "unused"}, "train": {"precision": "bf16", "cond_dropout": 0.0}})
    torch.manual_seed(0)
    net = build_sampling_net(run.model)
    x = torch.rand(32, 3, 64, 64) * 2 - 1
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    objective = DiffusionObjective.build(run, net, torch.device("cpu"))
    mix = torch.eye(5)[torch.arange(32) % 5]
    return lambda: objective.step(x, mix, torch.Generator().manual_seed(0), 0)


def timed(fn, n: int = 3) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="sde", choices=["ddpm", "sde"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", type=int, default=12)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"CPU: {hardware_name(torch.device('cpu'))}; {a.family}, batch 32, 64 px, bf16 autocast")
    step = step_fn(a.family, channels_last=False)
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows))
    for cl in (False, True):
        print(f"step with channels_last={cl}: {timed(step_fn(a.family, cl)):.2f} s")


if __name__ == "__main__":
    main()
