"""scripts/train_gpu.sh end to end on the CPU with the tiny preset, so GPU time goes to training."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from facegen.classifier import train_classifier
from facegen.config import DataConfig
from tests.conftest import REPO, make_utkface_folder


@pytest.mark.slow
def test_train_gpu_script_trains_exports_and_evaluates_both_families(tmp_path: Path) -> None:
    faces = make_utkface_folder(tmp_path / "faces", n=40, size=24)
    classifier = tmp_path / "classifier"
    train_classifier(DataConfig(path=str(faces), cache_dir=None), classifier, steps=10, batch=16, precision="fp32")
    repo = tmp_path / "repo"  # a copy without checkpoints/: the runs start from scratch
    shutil.copytree(
        REPO, repo, ignore=shutil.ignore_patterns(".venv", ".git", "checkpoints", "docs", "runs", "*cache*")
    )
    out = tmp_path / "gpu"
    env = {
        **os.environ,
        "PRESET": "tiny",
        "DEVICE": "cpu",
        "N": "4",
        "REFERENCE_FRACTION": "0.2",
        "MAX_STEPS": "6",
        "DATA": str(faces),
        "CLASSIFIER": str(classifier),
        "PY": str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").is_dir() else "python",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        ["bash", str(repo / "scripts" / "train_gpu.sh"), "5", str(out)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    assert "ddpm: from scratch on cpu" in done.stdout
    report = json.loads((out / "eval" / "report.json").read_text())
    assert {r["family"] for r in report["results"]} == {"ddpm", "sde"}
    for family in ("ddpm", "sde"):
        with safe_open(str(out / family / "model.safetensors"), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118 (not a dict)
        card = (out / family / "README.md").read_text()
        assert "two-sample accuracy" in card and "steps 0–6" in card
        assert (out / f"run-{family}" / "state.pt").is_file()
    # A second call resumes the runs instead of starting over.
    env["MAX_STEPS"] = "8"
    again = subprocess.run(
        ["bash", str(repo / "scripts" / "train_gpu.sh"), "5", str(out)], env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from" in (out / "sde.log").read_text()
    assert "steps 0–8" in (out / "sde" / "README.md").read_text()
