from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from facegen.config import PRESETS, ModelConfig, UNetConfig, resolve
from tests.conftest import REPO


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("family", ["ddpm", "sde", "dcgan", "vae", "vaegan"])
def test_every_preset_resolves(preset: str, family: str) -> None:
    run = resolve(preset, family, {"data": {"path": "x"}})
    assert run.model.family == family


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": {"image_size": 48}}, "image_size"),
        ({"model": {"unet": {"block_out_channels": (8, 12)}}}, "multiple"),
        ({"train": {"batch_size": 0}}, "batch_size"),
        ({"train": {"max_steps": 10, "epochs": 1.0}}, "either max_steps or epochs"),
        ({"train": {"bogus": 1}}, "Extra inputs"),
        ({"model": {"sde": {"beta_min": 30.0}}}, "beta_min"),
        ({"model": {"groups": ["a", "a"]}}, "unique"),
    ],
)
def test_invalid_configs_name_the_problem(change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        resolve("tiny", "ddpm", {"data": {"path": "x"}}, change)


def test_unknown_preset() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        resolve("huge", "ddpm", {"data": {"path": "x"}})


def test_configs_are_frozen() -> None:
    cfg = ModelConfig(family="ddpm")
    with pytest.raises(ValidationError):
        cfg.image_size = 128  # type: ignore[misc]
    assert UNetConfig().norm_groups == 32


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_dry_run_prints_resolved_config() -> None:
    res = _train(
        "--model",
        "sde",
        "--data",
        "somewhere",
        "--preset",
        "tiny",
        "--sde",
        "ve",
        "--seed",
        "7",
        "--max-steps",
        "3",
        "--dry-run",
    )
    assert res.returncode == 0, res.stderr
    cfg = json.loads(res.stdout)
    assert cfg["model"]["sde"]["kind"] == "ve"
    assert cfg["train"]["seed"] == 7 and cfg["train"]["max_steps"] == 3 and cfg["train"]["epochs"] is None


def test_help_shows_defaults() -> None:
    res = _train("--help")
    assert res.returncode == 0 and "(default: cpu)" in res.stdout.replace("\n", " ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "-3"], "batch_size"),
        (["--image-size", "100"], "image_size"),
        (["--lr", "nan"], "lr"),
    ],
)
def test_cli_rejects_out_of_range_options(args: list[str], message: str) -> None:
    res = _train("--model", "ddpm", "--data", "x", "--dry-run", *args)
    assert res.returncode != 0 and message in res.stderr


def test_cli_rejects_unknown_family() -> None:
    res = _train("--model", "gan2", "--data", "x")
    assert res.returncode == 2 and "invalid choice" in res.stderr


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_takes_bf16_only_where_the_cpu_runs_it_natively(
    native: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    from facegen import runtime

    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    assert runtime.resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert runtime.resolve_precision("fp32", cpu) == "fp32"
    with caplog.at_level("WARNING", logger="facegen.runtime"):
        assert runtime.resolve_precision("bf16", cpu) == "bf16"  # an explicit choice is kept ...
    assert ("slower than fp32" in caplog.text) is not native  # ... with a warning where it is slow
    with pytest.raises(ValueError, match="resolve"):
        runtime.autocast_dtype("auto")


def test_training_records_the_precision_it_chose(session_faces: Path, tmp_path: Path) -> None:
    from facegen.runtime import cpu_has_native_bf16
    from facegen.training import train
    from tests.conftest import tiny_run

    out = train(tiny_run("ddpm", session_faces, tmp_path / "r", max_steps=1, precision="auto"), progress=False)
    chosen = json.loads((out / "config.json").read_text())["train"]["precision"]
    assert chosen == ("bf16" if cpu_has_native_bf16() else "fp32")
