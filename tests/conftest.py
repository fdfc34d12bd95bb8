"""Shared fixtures: tiny face folders the tests draw themselves, and tiny trained checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegen.config import resolve

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "utkface64"


def draw_face(rng: np.random.Generator, size: int, tone: int) -> np.ndarray:
    """A crude synthetic 'face': skin-toned ellipse, two eyes, a mouth, on a random background."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.empty((size, size, 3), np.float32)
    img[:] = rng.uniform(0, 255, 3)
    skin = np.array([[230, 190, 160], [120, 80, 60], [220, 180, 130], [170, 120, 90], [200, 150, 110]][tone])
    face = ((xx - 0.5) / 0.32) ** 2 + ((yy - 0.5) / 0.42) ** 2 < 1
    img[face] = skin + rng.normal(0, 8, 3)
    for ex in (0.38, 0.62):
        img[((xx - ex) ** 2 + (yy - 0.42) ** 2) < 0.003] = 30
    img[(np.abs(yy - 0.68) < 0.03) & (np.abs(xx - 0.5) < 0.12)] = (150, 40, 40)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def make_utkface_folder(root: Path, n: int = 40, size: int = 24, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        race = i % 5
        Image.fromarray(draw_face(rng, size, race)).save(root / f"{20 + i}_{i % 2}_{race}_2017{i:08d}.jpg")
    return root


@pytest.fixture
def utk_folder(tmp_path: Path) -> Path:
    return make_utkface_folder(tmp_path / "faces")


@pytest.fixture(scope="session")
def session_faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_utkface_folder(tmp_path_factory.mktemp("faces"), n=40)


def tiny_run(family: str, data: Path, out: Path, model: dict | None = None, **train: object):
    return resolve(
        "tiny",
        family,
        {
            "model": model or {},
            "data": {"path": str(data), "cache_dir": None},
            "train": {"out": str(out), "precision": "fp32", "device": "cpu", **train},
        },
    )


@pytest.fixture(scope="session")
def tiny_checkpoints(session_faces: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 4-step checkpoint of every family (random-ish weights, real format)."""
    from facegen.training import train

    root = tmp_path_factory.mktemp("ckpts")
    out = {}
    for family in ("ddpm", "sde", "dcgan", "vae", "vaegan"):
        out[family] = train(
            tiny_run(family, session_faces, root / family, max_steps=4, sample_every=1000), progress=False
        )
    return out
