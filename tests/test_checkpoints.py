"""Checkpoints round-trip exactly; tampered, truncated, foreign and pickle files are refused."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from facegen.checkpoints import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    load_checkpoint,
    load_state,
    save_weights,
)
from facegen.pipeline import FaceGenerator


@pytest.fixture
def ckpt(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_checkpoints["ddpm"], tmp_path / "ckpt"))


def test_round_trip_is_exact(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    for family, folder in tiny_checkpoints.items():
        gen = FaceGenerator.from_checkpoint(folder, device="cpu")
        assert gen.family == family and gen.groups == ("White", "Black", "Asian", "Indian", "Others")
        state = {k: v.clone() for k, v in gen.net.state_dict().items()}
        out = tmp_path / family
        out.mkdir()
        shutil.copy(folder / CONFIG_NAME, out / CONFIG_NAME)
        save_weights(out, state, gen.card)
        again = FaceGenerator.from_checkpoint(out, device="cpu").net.state_dict()
        assert all(torch.equal(state[k], again[k]) for k in state)


def test_fp16_export_loads(ckpt: Path, tmp_path: Path) -> None:
    _, tensors, card = load_checkpoint(ckpt)
    save_weights(ckpt, tensors, card, dtype=torch.float16)
    gen = FaceGenerator.from_checkpoint(ckpt, device="cpu")
    assert gen.generate([0], [1, 0, 0, 0, 0], steps=5)[0].size == (16, 16)


def test_model_card_takes_the_evaluation_of_its_own_step(ckpt: Path, tmp_path: Path) -> None:
    from facegen.export import export

    _, _, card = load_checkpoint(ckpt)
    row = {"family": card_family(ckpt), "sampler": "ddim", "steps": 5, "face_detection_rate": 0.5}
    row |= {"diversity": 1.0, "fd_classifier": 2.0, "pure_mix_accuracy": {"White": 0.25}}
    report = {"results": [{**row, "training_step": card["step"]}, {**row, "training_step": card["step"] + 1}]}
    report |= {"n": 20, "first_seed": 10_000}
    report["results"][1]["face_detection_rate"] = 0.75
    (tmp_path / "report.json").write_text(json.dumps(report))
    text = (export(ckpt, tmp_path / "shipped", tmp_path / "report.json") / "README.md").read_text()
    assert "face detection 0.50" in text and "face detection 0.75" not in text
    assert "guidance 1 (20 faces per mix, seeds from 10000): face detection 0.50" in text


def test_a_card_is_refreshed_from_a_new_evaluation_without_touching_the_weights(ckpt: Path, tmp_path: Path) -> None:
    from facegen.export import export, main

    _, _, card = load_checkpoint(ckpt)
    row = {"family": card_family(ckpt), "sampler": "dpmpp", "steps": 5, "face_detection_rate": 0.5}
    row |= {"diversity": 1.0, "fd_classifier": 2.0, "pure_mix_accuracy": {"White": 0.25}, "training_step": card["step"]}
    report = {"results": [row], "n": 20, "first_seed": 20_000}
    (tmp_path / "report.json").write_text(json.dumps(report))
    shipped = export(ckpt, tmp_path / "shipped")
    weights = (shipped / WEIGHTS_NAME).read_bytes()
    assert "Not evaluated yet" in (shipped / "README.md").read_text()
    report["results"][0] |= {"guidance": 3.5, "guidance_interval": [0.28, 5.42]}
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert main([str(shipped), str(shipped), "--eval", str(tmp_path / "report.json"), "--card-only"]) == 0
    text = (shipped / "README.md").read_text()
    assert "dpmpp 5 steps, guidance 3.5 at sigma in (0.28, 5.42] (20 faces per mix, seeds from 20000)" in text
    assert (shipped / WEIGHTS_NAME).read_bytes() == weights
    with pytest.raises(SystemExit):  # a card is rewritten in place only
        main([str(ckpt), str(shipped), "--eval", str(tmp_path / "report.json"), "--card-only"])


def card_family(folder: Path) -> str:
    return json.loads((folder / CONFIG_NAME).read_text())["model"]["family"]


def test_bit_flip_is_caught(ckpt: Path) -> None:
    raw = bytearray((ckpt / WEIGHTS_NAME).read_bytes())
    raw[-10] ^= 0x01
    (ckpt / WEIGHTS_NAME).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="SHA-256"):
        FaceGenerator.from_checkpoint(ckpt)


def test_truncated_weights(ckpt: Path) -> None:
    raw = (ckpt / WEIGHTS_NAME).read_bytes()
    (ckpt / WEIGHTS_NAME).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        FaceGenerator.from_checkpoint(ckpt)


def test_missing_files(ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        FaceGenerator.from_checkpoint(tmp_path / "absent")
    (ckpt / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        FaceGenerator.from_checkpoint(ckpt)


def test_wrong_family_demanded(ckpt: Path) -> None:
    with pytest.raises(CheckpointError, match="holds a ddpm model, not a dcgan"):
        FaceGenerator.from_checkpoint(ckpt, family="dcgan")


def test_config_of_another_shape(ckpt: Path) -> None:
    cfg = json.loads((ckpt / CONFIG_NAME).read_text())
    cfg["model"]["unet"]["block_out_channels"] = [16, 32]
    (ckpt / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not fit the network"):
        FaceGenerator.from_checkpoint(ckpt)


def test_config_of_another_family(ckpt: Path) -> None:
    cfg = json.loads((ckpt / CONFIG_NAME).read_text())
    cfg["model"]["family"] = "dcgan"
    (ckpt / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not fit"):
        FaceGenerator.from_checkpoint(ckpt)


def test_garbage_config(ckpt: Path) -> None:
    (ckpt / CONFIG_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        FaceGenerator.from_checkpoint(ckpt)


class Boom:
    def __reduce__(self):
        return (Path("/tmp/facegen-pwned").touch, ())


def test_pickle_is_never_executed(ckpt: Path, tmp_path: Path) -> None:
    marker = Path("/tmp/facegen-pwned")
    marker.unlink(missing_ok=True)
    (ckpt / WEIGHTS_NAME).write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(CheckpointError):
        FaceGenerator.from_checkpoint(ckpt)
    torch.save({"w": Boom()}, tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_state(tmp_path)
    assert not marker.exists()
