"""Device, precision and randomness: the few decisions every other module defers to.

Randomness in facegen is *stateless*: every random draw comes from a `torch.Generator` seeded by a
hash of (seed, purpose, step, ...). Training resumes exactly without saving RNG states, and a face
depends only on its own seed, never on the batch it lands in or on the global RNG.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import platform
from collections.abc import Sequence
from typing import Literal

import torch

from facegen.config import DeviceName, Precision


def pick_device(name: DeviceName | str = "auto") -> torch.device:
    """`auto` takes CUDA when present, else the CPU; `cuda` without a GPU is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but no CUDA device is visible")
    if name not in ("cpu", "cuda") and not str(name).startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


log = logging.getLogger(__name__)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (AVX512-BF16, AMX, or AVX512 emulation). Without
    them bf16 autocast falls back to reference loops: a 64 px U-Net training step measured 27x slower
    than fp32 on an AVX2-only AMD EPYC (90 s vs 3.4 s at 2 threads)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private API: assume the worst when it is gone
        return False


def resolve_precision(
    precision: Precision, device: torch.device, purpose: Literal["train", "sample"] = "train"
) -> Precision:
    """Turn "auto" into what pays on this hardware: on CUDA fp16 for sampling and bf16 for training
    (fp16 with a grad scaler where bf16 is missing); on the CPU bf16 only with native kernels, else fp32.
    An explicit choice is kept, with a warning when it is the slow bf16 fallback."""
    if precision == "auto":
        if device.type == "cuda":
            return "fp16" if purpose == "sample" or not torch.cuda.is_bf16_supported() else "bf16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("this CPU has no native bf16 kernels: bf16 runs many times slower than fp32 here (use auto)")
    return precision


@functools.cache
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):  # noqa: SIM115
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def hardware_name(device: torch.device) -> str:
    """What a model card should say the run used, e.g. "AMD EPYC (AVX2) x1 threads"."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_model()} ({torch.backends.cpu.get_cpu_capability()}) x{torch.get_num_threads()} threads"


def autocast_dtype(precision: Precision) -> torch.dtype | None:
    if precision == "auto":
        raise ValueError("resolve 'auto' precision with resolve_precision() first")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    """Mixed precision where it pays: bf16 on CPU and GPU, fp16 on GPU only (no CPU fp16 kernels)."""
    dtype = autocast_dtype(resolve_precision(precision, device) if precision == "auto" else precision)
    if dtype is None:
        return contextlib.nullcontext()
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("fp16 autocast is GPU-only; use bf16 on the CPU")
    return torch.autocast(device_type=device.type, dtype=dtype)


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed that depends on `seed` and every key, via SHA-256 (no collisions between purposes)."""
    text = ":".join(str(k) for k in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def generator(seed: int, *keys: int | str) -> torch.Generator:
    """A CPU generator for one purpose; draws happen on the CPU so every device sees the same numbers."""
    return torch.Generator("cpu").manual_seed(derive_seed(seed, *keys))


def image_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One generator per image, seeded by the image's own seed (EDM's stacked generators)."""
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def randn_per_image(gens: Sequence[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """(len(gens), *shape) standard normal noise, image k drawn from gens[k] alone."""
    noise = torch.stack([torch.randn(shape, generator=g) for g in gens])
    return noise.to(device)


def set_cpu_threads(threads: int | None = None) -> None:
    """Honour OMP_NUM_THREADS when it is set: two spinning torch processes on 2 cores stall each other."""
    if threads is None and "OMP_NUM_THREADS" in os.environ:
        threads = int(os.environ["OMP_NUM_THREADS"])
    if threads:
        torch.set_num_threads(threads)
