"""Face folders -> a uint8 tensor of images with group labels, decoded once and cached.

Label formats: UTKFace file names (`age_gender_race_*.jpg`), one sub-folder per group, CelebA's
`list_attr_celeba.txt` (each combination of the chosen attributes is a group), or none (one group).
Images are centre-cropped to a square and resized; unreadable files and unparseable names are skipped
with a count and examples. Batches are drawn statelessly from (seed, step), so a resumed run sees
exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from facegen.config import UTKFACE_GROUPS, DataConfig
from facegen.runtime import generator

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
CACHE_VERSION = 1


class DataError(ValueError):
    """The data folder cannot be used as asked; the message says why."""


@dataclass(frozen=True)
class FaceSet:
    """(N, 3, H, W) uint8 images, (N,) int64 labels into `groups`, and the source file names."""

    images: torch.Tensor
    labels: torch.Tensor
    groups: tuple[str, ...]
    names: tuple[str, ...]

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, idx: torch.Tensor) -> FaceSet:
        return FaceSet(self.images[idx], self.labels[idx], self.groups, tuple(self.names[i] for i in idx.tolist()))

    def counts(self) -> list[int]:
        return np.bincount(self.labels.numpy(), minlength=len(self.groups)).tolist()


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def parse_utkface_name(name: str) -> int:
    """Race label (0-4) from `age_gender_race_stamp.jpg`; ValueError if the name does not parse."""
    parts = name.split("_")
    if len(parts) < 4:
        raise ValueError("expected age_gender_race_stamp")
    age, gender, race = (int(p) for p in parts[:3])
    if not (0 <= age <= 150 and gender in (0, 1) and 0 <= race < len(UTKFACE_GROUPS)):
        raise ValueError("age, gender or race out of range")
    return race


def _celeba_attributes(root: Path, wanted: tuple[str, ...]) -> tuple[dict[str, int], tuple[str, ...]]:
    """Map file name -> group index, groups being every combination of the wanted attributes."""
    attr_file = next(
        (p for p in (root / "list_attr_celeba.txt", root.parent / "list_attr_celeba.txt") if p.is_file()), None
    )
    if attr_file is None:
        raise DataError(f"--labels celeba needs list_attr_celeba.txt in {root} or its parent")
    lines = attr_file.read_text().splitlines()
    if len(lines) < 2:
        raise DataError(f"{attr_file} is too short to be a CelebA attribute file")
    columns = lines[1].split()
    missing = [a for a in wanted if a not in columns]
    if missing or not wanted:
        raise DataError(
            f"CelebA attributes {missing or '(none given)'} not in {attr_file}; available: {', '.join(columns)}"
        )
    cols = [columns.index(a) for a in wanted]
    combos = list(itertools.product((True, False), repeat=len(wanted)))
    groups = tuple(", ".join(a if on else f"not {a}" for a, on in zip(wanted, c, strict=True)) for c in combos)
    table: dict[str, int] = {}
    for line in lines[2:]:
        fields = line.split()
        if len(fields) != len(columns) + 1:
            continue
        flags = tuple(fields[1 + c] == "1" for c in cols)
        table[fields[0]] = combos.index(flags)
    return table, groups


def label_files(root: Path, cfg: DataConfig) -> tuple[list[tuple[Path, int]], tuple[str, ...], list[str]]:
    """(file, label) pairs, the group names, and the names that could not be labelled."""
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist or is not a folder")
    files = _image_files(root)
    if not files:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {root}")
    bad: list[str] = []
    pairs: list[tuple[Path, int]] = []
    match cfg.labels:
        case "utkface":
            groups = UTKFACE_GROUPS
            for f in files:
                try:
                    pairs.append((f, parse_utkface_name(f.name)))
                except ValueError:
                    bad.append(f.name)
        case "folders":
            groups = tuple(sorted({f.relative_to(root).parts[0] for f in files if f.parent != root}))
            if not groups:
                raise DataError(f"--labels folders needs one sub-folder per group under {root}")
            for f in files:
                rel = f.relative_to(root).parts
                (pairs.append((f, groups.index(rel[0]))) if len(rel) > 1 else bad.append(f.name))
        case "celeba":
            table, groups = _celeba_attributes(root, cfg.celeba_attributes)
            for f in files:
                (pairs.append((f, table[f.name])) if f.name in table else bad.append(f.name))
        case "none":
            groups = ("all",)
            pairs = [(f, 0) for f in files]
    return pairs, groups, bad


def load_image(path: Path, size: int) -> np.ndarray:
    """(size, size, 3) uint8: centre crop to a square, then an antialiased resize."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        if s != size:
            im = im.resize((size, size), Image.Resampling.LANCZOS)
        return np.asarray(im, dtype=np.uint8)


def _warn_skipped(what: str, names: list[str]) -> None:
    if names:
        log.warning("skipped %d %s, e.g. %s", len(names), what, ", ".join(names[:5]))


def _cache_path(root: Path, cfg: DataConfig, size: int, pairs: list[tuple[Path, int]]) -> Path | None:
    if cfg.cache_dir is None:
        return None
    h = hashlib.sha256(f"{CACHE_VERSION}|{root.resolve()}|{cfg.labels}|{cfg.celeba_attributes}|{size}".encode())
    for f, label in pairs:
        st = f.stat()
        h.update(f"{f.name}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return Path(cfg.cache_dir) / f"faces-{size}px-{h.hexdigest()[:16]}.pt"


def load_faces(cfg: DataConfig, image_size: int) -> FaceSet:
    """Decode (or read from the cache) every labelled image under cfg.path."""
    root = Path(cfg.path)
    pairs, groups, unlabelled = label_files(root, cfg)
    _warn_skipped("files whose names or labels could not be parsed", unlabelled)
    cache = _cache_path(root, cfg, image_size, pairs)
    if cache is not None and cache.is_file():
        blob = torch.load(cache, weights_only=True)
        log.info("loaded %d decoded faces from cache %s", len(blob["names"]), cache)
        return FaceSet(blob["images"], blob["labels"], tuple(blob["groups"]), tuple(blob["names"]))
    images, labels, names, unreadable = [], [], [], []
    for f, label in pairs:
        try:
            images.append(load_image(f, image_size))
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            unreadable.append(f.name)
            continue
        labels.append(label)
        names.append(f.name)
    _warn_skipped("unreadable images", unreadable)
    if not images:
        raise DataError(f"none of the {len(pairs)} labelled images under {root} could be read")
    faces = FaceSet(
        torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        torch.tensor(labels, dtype=torch.int64),
        groups,
        tuple(names),
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save({"images": faces.images, "labels": faces.labels, "groups": list(groups), "names": list(names)}, tmp)
        os.replace(tmp, cache)
    log.info(
        "decoded %d faces at %d px, groups %s", len(faces), image_size, dict(zip(groups, faces.counts(), strict=True))
    )
    return faces


def split(faces: FaceSet, test_fraction: float) -> tuple[FaceSet, FaceSet]:
    """Deterministic train/test split by a hash of the file name (stable when files are added)."""
    bucket = torch.tensor([int(hashlib.sha256(n.encode()).hexdigest()[:8], 16) % 10_000 for n in faces.names])
    is_test = bucket < round(test_fraction * 10_000)
    if test_fraction > 0 and is_test.all():
        is_test[0] = False
    return faces.subset(torch.nonzero(~is_test).flatten()), faces.subset(torch.nonzero(is_test).flatten())


def batch_indices(
    labels: torch.Tensor,
    batch_size: int,
    step: int,
    seed: int,
    balanced: bool,
    rank: int = 0,
    world: int = 1,
) -> torch.Tensor:
    """The indices rank `rank` trains on at `step`: a function of (seed, step) alone.

    Unbalanced: epochs of a fixed random permutation. Balanced: each group equally likely, then a
    uniform face within the group (with replacement).
    """
    n = labels.numel()
    if balanced:
        gen = generator(seed, "batch", step)
        counts = torch.bincount(labels).double()
        present = (counts > 0).double()
        weights = present[labels] / counts[labels].clamp_min(1)
        idx = torch.multinomial(weights, batch_size, replacement=True, generator=gen)
    else:
        per_epoch = max(1, n // batch_size)
        epoch, pos = divmod(step, per_epoch)
        perm = torch.randperm(n, generator=generator(seed, "epoch", epoch))
        idx = perm[(pos * batch_size) % n :][:batch_size]
        if idx.numel() < batch_size:
            idx = torch.cat([idx, perm[: batch_size - idx.numel()]])
    return idx.chunk(world)[rank] if world > 1 else idx


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float() / 127.5 - 1.0


def augment(x: torch.Tensor, gen: torch.Generator, hflip: bool, jitter: bool) -> torch.Tensor:
    """Random horizontal flips and, opt-in, rotation within +-5 degrees and scale within +-5%."""
    b = x.shape[0]
    if hflip:
        flip = torch.rand(b, generator=gen) < 0.5
        x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
    if jitter:
        angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(5)
        scale = 1 + (torch.rand(b, generator=gen) * 2 - 1) * 0.05
        cos, sin = angle.cos() / scale, angle.sin() / scale
        theta = torch.stack(
            [torch.stack([cos, -sin, torch.zeros(b)], 1), torch.stack([sin, cos, torch.zeros(b)], 1)], 1
        ).to(x)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
    return x
