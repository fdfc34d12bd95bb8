"""scripts/gpu_session.sh and scripts/train_gpu.sh end to end on the CPU with the tiny preset, so that time
on a GPU goes to training, not to debugging."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from facegen.classifier import train_classifier
from facegen.config import DataConfig
from tests.conftest import REPO, make_utkface_folder


@pytest.mark.slow
def test_gpu_session_trains_exports_evaluates_and_packs_both_families(tmp_path: Path) -> None:
    faces = make_utkface_folder(tmp_path / "utkface64", n=40, size=24)
    payload = tmp_path / "payload"  # what scripts/gpu_payload.sh makes: faces.zip, classifier/, wheels/
    train_classifier(
        DataConfig(path=str(faces), cache_dir=None), payload / "classifier", steps=10, batch=16, precision="fp32"
    )
    with zipfile.ZipFile(payload / "faces.zip", "w") as z:
        for f in faces.iterdir():
            z.write(f, f"utkface64/{f.name}")
    repo = tmp_path / "repo"  # as on the device machine: no checkpoints/ or docs/, so the runs start from scratch
    shutil.copytree(
        REPO, repo, ignore=shutil.ignore_patterns(".venv", ".git", "checkpoints", "docs", "runs", "*cache*")
    )
    work, results = tmp_path / "work", tmp_path / "results"
    env = {
        **os.environ,
        "PRESET": "tiny",
        "DEVICE": "cpu",
        "N": "4",
        "REFERENCE_FRACTION": "0.2",
        "MAX_STEPS": "6",
        "PAYLOAD": str(payload),
        "WORK": str(work),
        "PY": str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").is_dir() else "python",
        "OMP_NUM_THREADS": "1",
    }
    script = repo / "scripts" / "gpu_session.sh"
    done = subprocess.run(["bash", str(script), "5", str(results)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    assert "ddpm: from scratch on cpu" in done.stdout
    parts = sorted(results.glob("results.tar.part-*"))
    back = tmp_path / "back"
    back.mkdir()
    (tmp_path / "results.tar").write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(tmp_path / "results.tar") as tar:
        tar.extractall(back, filter="data")
    assert not list(back.rglob("state.pt"))  # optimiser states stay on the machine
    report = json.loads((back / "out" / "eval" / "report.json").read_text())
    assert {r["family"] for r in report["results"]} == {"ddpm", "sde"}
    for family in ("ddpm", "sde"):
        with safe_open(str(back / "out" / family / "model.safetensors"), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118 (not a dict)
        card = (back / "out" / family / "README.md").read_text()
        assert "two-sample accuracy" in card and "steps 0–6" in card
        assert (back / "out" / f"run-{family}" / "log.jsonl").is_file()
    # A second call resumes the runs it left instead of starting over.
    env |= {"MAX_STEPS": "8", "DATA": str(faces), "CLASSIFIER": str(payload / "classifier")}
    again = subprocess.run(
        ["bash", str(repo / "scripts" / "train_gpu.sh"), "5", str(work / "out")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from" in (work / "out" / "sde.log").read_text()
    assert "steps 0–8" in (work / "out" / "sde" / "README.md").read_text()
