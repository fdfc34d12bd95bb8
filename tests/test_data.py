from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facegen.config import DataConfig
from facegen.data import (
    DataError,
    augment,
    batch_indices,
    load_faces,
    parse_utkface_name,
    split,
    to_model_range,
)
from facegen.runtime import generator
from tests.conftest import SHARED_DATA, draw_face


def test_utkface_names() -> None:
    assert parse_utkface_name("25_0_2_20170116174525125.jpg") == 2
    for bad in ("39_1_20170116174525125.jpg", "x_0_1_2.jpg", "25_3_1_2.jpg", "25_0_7_2.jpg", "face.jpg"):
        with pytest.raises(ValueError):
            parse_utkface_name(bad)


def test_loads_and_skips_bad_files_with_a_warning(utk_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    (utk_folder / "no_labels_here.jpg").write_bytes(b"\xff\xd8junk")
    (utk_folder / "30_1_3_2017.jpg").write_bytes(b"this is not an image")
    Image.new("RGB", (40, 30), "red").save(utk_folder / "31_0_4_2018.png")  # non-square: centre-cropped
    with caplog.at_level(logging.WARNING):
        faces = load_faces(DataConfig(path=str(utk_folder), cache_dir=None), 16)
    assert len(faces) == 41 and faces.images.shape == (41, 3, 16, 16) and faces.images.dtype == torch.uint8
    assert faces.groups == ("White", "Black", "Asian", "Indian", "Others")
    text = caplog.text
    assert "skipped 1 files whose names" in text and "no_labels_here.jpg" in text
    assert "skipped 1 unreadable images" in text and "30_1_3_2017.jpg" in text
    assert faces.counts() == [8, 8, 8, 8, 9]


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_faces(DataConfig(path=str(tmp_path / "nope")), 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_faces(DataConfig(path=str(tmp_path / "empty")), 16)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "1_0_0_1.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match="could be read"):
        load_faces(DataConfig(path=str(bad), cache_dir=None), 16)


def test_folder_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for group in ("smiling", "neutral"):
        (tmp_path / group).mkdir()
        for i in range(3):
            Image.fromarray(draw_face(rng, 20, i)).save(tmp_path / group / f"{i}.png")
    Image.fromarray(draw_face(rng, 20, 0)).save(tmp_path / "loose.png")
    faces = load_faces(DataConfig(path=str(tmp_path), labels="folders", cache_dir=None), 16)
    assert faces.groups == ("neutral", "smiling") and len(faces) == 6


def test_celeba_labels(tmp_path: Path) -> None:
    img_dir = tmp_path / "img_align_celeba"
    img_dir.mkdir()
    rng = np.random.default_rng(2)
    lines = ["3", "Male Smiling Young"]
    for i, flags in enumerate(["1 -1 1", "-1 1 1", "-1 -1 -1"]):
        Image.fromarray(draw_face(rng, 20, i)).save(img_dir / f"{i:06d}.jpg")
        lines.append(f"{i:06d}.jpg {flags}")
    (tmp_path / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    faces = load_faces(
        DataConfig(path=str(img_dir), labels="celeba", celeba_attributes=("Male", "Young"), cache_dir=None), 16
    )
    assert faces.groups == ("Male, Young", "Male, not Young", "not Male, Young", "not Male, not Young")
    assert faces.labels.tolist() == [0, 2, 3]
    with pytest.raises(DataError, match="Bald"):
        load_faces(DataConfig(path=str(img_dir), labels="celeba", celeba_attributes=("Bald",), cache_dir=None), 16)


def test_unlabelled(utk_folder: Path) -> None:
    faces = load_faces(DataConfig(path=str(utk_folder), labels="none", cache_dir=None), 16)
    assert faces.groups == ("all",) and faces.counts() == [40]


def test_cache_is_reused_and_invalidated(utk_folder: Path, tmp_path: Path) -> None:
    cfg = DataConfig(path=str(utk_folder), cache_dir=str(tmp_path / "cache"))
    first = load_faces(cfg, 16)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    assert torch.equal(load_faces(cfg, 16).images, first.images)
    Image.fromarray(draw_face(np.random.default_rng(3), 24, 1)).save(utk_folder / "50_1_1_2019.jpg")
    assert len(load_faces(cfg, 16)) == len(first) + 1


def test_split_is_deterministic(utk_folder: Path) -> None:
    faces = load_faces(DataConfig(path=str(utk_folder), cache_dir=None), 16)
    a_train, a_test = split(faces, 0.25)
    b_train, b_test = split(faces, 0.25)
    assert a_test.names == b_test.names and len(a_train) + len(a_test) == len(faces)
    assert not set(a_train.names) & set(a_test.names) and 0 < len(a_test) < len(faces)


def test_batches_are_stateless_and_balanced() -> None:
    labels = torch.tensor([0] * 90 + [1] * 10)
    a = batch_indices(labels, 16, step=5, seed=1, balanced=False)
    assert torch.equal(a, batch_indices(labels, 16, step=5, seed=1, balanced=False))
    epoch = torch.cat([batch_indices(labels, 10, step=s, seed=1, balanced=False) for s in range(10)])
    assert sorted(epoch.tolist()) == list(range(100))  # one epoch visits every face once
    drawn = torch.cat([batch_indices(labels, 64, step=s, seed=1, balanced=True) for s in range(50)])
    share = (labels[drawn] == 1).float().mean().item()
    assert 0.4 < share < 0.6  # 10% of the data, half of the balanced draws
    halves = [batch_indices(labels, 16, step=3, seed=1, balanced=False, rank=r, world=2) for r in (0, 1)]
    assert torch.equal(torch.cat(halves), batch_indices(labels, 16, step=3, seed=1, balanced=False))


def test_augment_flips_and_jitters() -> None:
    x = to_model_range(torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8))
    assert x.min() >= -1 and x.max() <= 1
    flipped = augment(x, generator(0, "aug"), hflip=True, jitter=False)
    same = [(torch.equal(f, o) or torch.equal(f, o.flip(-1))) for f, o in zip(flipped, x, strict=True)]
    assert all(same) and not torch.equal(flipped, x)
    jittered = augment(x, generator(0, "aug"), hflip=False, jitter=True)
    assert jittered.shape == x.shape and not torch.equal(jittered, x)


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data/utkface64 is not on this machine")
def test_real_utkface_loads(tmp_path: Path) -> None:
    faces = load_faces(DataConfig(path=str(SHARED_DATA), cache_dir=str(tmp_path)), 64)
    assert len(faces) == 20726 and faces.counts() == [8867, 3984, 3021, 3459, 1395]
