"""scripts/diffusion_recipe_ab.sh end to end with the tiny preset: arms train in snapshot segments that
equal one uninterrupted run, and every snapshot is evaluated on the same seeds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facegen.checkpoints import read_weights
from facegen.classifier import train_classifier
from facegen.config import DataConfig
from tests.conftest import REPO, make_utkface_folder


@pytest.mark.slow
def test_recipe_ab_trains_each_arm_in_segments_and_evaluates_every_snapshot(tmp_path: Path) -> None:
    faces = make_utkface_folder(tmp_path / "faces", n=40, size=24)
    classifier = tmp_path / "classifier"
    train_classifier(DataConfig(path=str(faces), cache_dir=None), classifier, steps=10, batch=16, precision="fp32")
    out = tmp_path / "ab"
    env = {
        **os.environ,
        "OUT": str(out),
        "STEPS": "4",
        "SNAP": "2",
        "ARMS": "new today",
        "FAMILIES": "sde",
        "PRESET": "tiny",
        "DEVICE": "cpu",
        "N": "4",
        "REFERENCE_FRACTION": "0.2",
        "DATA": str(faces),
        "CLASSIFIER": str(classifier),
        "PY": str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").is_dir() else "python",
    }
    script = str(REPO / "scripts" / "diffusion_recipe_ab.sh")
    first = subprocess.run(
        ["bash", script], env={**env, "ARMS": "new", "EVAL": "0"}, capture_output=True, text=True, cwd=REPO
    )
    assert first.returncode == 0, first.stderr[-2000:]
    assert not (out / "eval").exists() and (out / "snapshots" / "sde-new-000004" / "model.safetensors").is_file()
    done = subprocess.run(["bash", script], env=env, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    names = sorted(p.name for p in (out / "snapshots").iterdir())
    assert names == ["sde-new-000002", "sde-new-000004", "sde-today-000002", "sde-today-000004"]
    _, card = read_weights(out / "snapshots" / "sde-today-000004")
    assert card["step"] == 4 and "VP DSM" in card["history"][-1]["recipe"]
    report = json.loads((out / "eval" / "report.json").read_text())
    rows = {r["model"]: r for r in report["results"]}
    assert set(rows) == set(names)
    assert rows["sde-new-000004"]["sampler"] == "dpmpp_2m" and rows["sde-today-000004"]["sampler"] != "dpmpp_2m"
    # A re-run finds every snapshot and trains nothing more.
    again = subprocess.run(["bash", script], env=env, capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0 and "snapshots/" not in again.stdout
    # INIT branches arms from one checkpoint: steps count on from its step, each arm with its own config.
    start = out / "snapshots" / "sde-new-000004"
    branch = out.parent / "branch"
    env |= {"OUT": str(branch), "INIT": str(start), "ARMS": "new lr-6e-4", "STEPS": "2", "SNAP": "2"}
    done = subprocess.run(["bash", script], env=env, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    names = sorted(p.name for p in (branch / "snapshots").iterdir())
    assert names == ["sde-lr-6e-4-000006", "sde-new-000006"]
    _, card = read_weights(branch / "snapshots" / "sde-lr-6e-4-000006")
    assert card["step"] == 6 and "continued from the weights" in card["history"][-1]["how"]
    config = json.loads((branch / "snapshots" / "sde-lr-6e-4-000006" / "config.json").read_text())
    assert config["train"]["lr"] == pytest.approx(6e-4)
    # An arm whose network means something else (EDM's sigma_data 0.5 on weights trained at 1) is refused.
    other = subprocess.run(
        ["bash", script], env=env | {"ARMS": "edm", "OUT": str(out.parent / "other")}, capture_output=True, text=True
    )
    assert other.returncode != 0 and "sde-edm failed" in other.stderr
    assert "holds a different sde model" in (out.parent / "other" / "sde-edm.log").read_text()
    two = subprocess.run(["bash", script], env=env | {"FAMILIES": "sde ddpm"}, capture_output=True, text=True)
    assert two.returncode == 2 and "one family" in two.stderr


def test_snapshot_runs_files_a_restarted_run_under_its_own_name(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """RUN_NAMES gives a run restarted with another recipe its own snapshot names, hence its own curve."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    for name in ("common.sh", "snapshot_runs.sh"):
        shutil.copy(REPO / "scripts" / name, root / "scripts" / name)
    for model in ("ddpm", "sde"):
        shutil.copytree(tiny_checkpoints[model], root / "runs" / model / "checkpoint")
    env = os.environ | {"PY": sys.executable, "PYTHONPATH": str(REPO), "RUN_NAMES": "sde=sde-vp"}
    script = str(root / "scripts" / "snapshot_runs.sh")
    done = subprocess.run(["bash", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (root / "runs" / "snapshots").iterdir()) == ["ddpm-000004", "sde-vp-000004"]
