"""The real app over HTTP: gradio_client streaming, stop, bad input; app.py start-up behaviour."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from facegen.pipeline import FaceGenerator
from facegen.studio import Studio
from tests.conftest import REPO

MIX = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tiny_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    from facegen.ui import launch

    models = {f: FaceGenerator.from_checkpoint(p, device="cpu") for f, p in tiny_checkpoints.items()}
    studio = Studio(models, out_dir=tmp_path_factory.mktemp("app"), min_interval=0.0)
    port = free_port()
    demo = launch(studio, "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture
def client(app_url: str):
    from gradio_client import Client

    return Client(app_url, verbose=False, download_files=True)


def generate_args(model="ddpm", sampler="ddim", steps=6, seed=4, faces=1, guidance=1.0, preview="x0", mix=MIX):
    return [model, sampler, steps, seed, faces, guidance, preview, *mix]


def test_client_streams_frames_and_gets_the_png(client) -> None:
    job = client.submit(*generate_args(), api_name="/generate")
    outputs = list(job)
    statuses = [o[1] for o in outputs if o[1]]
    assert sum("Step **" in s for s in statuses) >= 3
    final = job.outputs()[-1]
    files = final[2]
    path = files[0] if isinstance(files[0], str) else files[0]["path"] if isinstance(files[0], dict) else files[0]
    png = Image.open(path)
    assert png.format == "PNG" and png.text["facegen:seed"] == "4" and png.text["facegen:sampler"] == "ddim"
    assert "python -m facegen.generate" in final[4]


def test_streamed_face_matches_the_api(client, tiny_checkpoints: dict[str, Path]) -> None:
    job = client.submit(*generate_args(seed=9), api_name="/generate")
    final = job.result()
    files = final[2]
    path = files[0] if isinstance(files[0], str) else files[0]["path"]
    direct = FaceGenerator.from_checkpoint(tiny_checkpoints["ddpm"], device="cpu").generate(
        [9], MIX[:5], "ddim", 6, 1.0
    )
    assert Image.open(path).convert("RGB").tobytes() == direct[0].tobytes()


def test_stop_cancels_a_stream(client) -> None:
    job = client.submit(*generate_args(sampler="ancestral", steps=1000), api_name="/generate")
    deadline = time.time() + 60
    while time.time() < deadline and not any("Step" in (o[1] or "") for o in job.outputs()):
        time.sleep(0.05)
    job.cancel()
    time.sleep(1.0)
    n = len(job.outputs())
    time.sleep(1.0)
    assert len(job.outputs()) == n and n < 1000
    # and the app still serves
    assert client.predict(*generate_args(steps=3), api_name="/generate")[1].startswith("Done")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": 0}, "less than minimum value 1"),
        ({"steps": 300, "sampler": "dpmpp"}, "steps must be an integer in \\[2, 200\\]"),
        ({"seed": -5}, "less than minimum value 0"),
        ({"seed": 1.5}, "whole number"),
        ({"faces": 20}, "greater than maximum value 8"),
        ({"mix": [0.0] * 8}, "positive weight"),
        ({"mix": [-1.0] + [1.0] * 7}, "less than minimum value 0"),  # NaN cannot even be sent as JSON
        ({"model": "nope"}, "not in the list of choices"),
        ({"sampler": "bogus"}, "no sampler 'bogus'"),
        # An API call is taken as given: another family's sampler is an error, not a silent default (a
        # page pressed mid-switch gets the new model's defaults instead: tests/test_browser.py).
        ({"sampler": "single", "steps": 1}, "ddpm has no sampler 'single'"),
    ],
)
def test_bad_input_gets_a_message_and_the_app_keeps_serving(client, change: dict, message: str) -> None:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        client.predict(*generate_args(**change), api_name="/generate")
    assert client.predict(*generate_args(steps=2), api_name="/generate")[1].startswith("Done")


def test_compare_endpoint(client, tiny_checkpoints: dict[str, Path]) -> None:
    gallery = client.predict(3, *MIX, api_name="/compare")
    assert len(gallery) == len(tiny_checkpoints) and all("NFE" in item["caption"] for item in gallery)


def start_app(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "app.py", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def test_app_refuses_an_occupied_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = start_app("--port", str(port))
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "already in use" in out


def test_app_starts_with_no_checkpoints_and_says_how_to_train(tmp_path: Path) -> None:
    import urllib.request

    port = free_port()
    proc = start_app("--checkpoints", str(tmp_path / "none"), "--port", str(port))
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("app did not start")
        assert "python train.py" in page
    finally:
        proc.terminate()
        proc.wait(timeout=30)
