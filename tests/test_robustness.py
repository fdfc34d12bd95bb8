"""Fuzzed inputs, tampered checkpoints, and training faults: clear errors, nothing lost, nothing executed."""

from __future__ import annotations

import errno
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facegen import checkpoints
from facegen.checkpoints import CheckpointError, load_checkpoint, read_weights
from facegen.pipeline import FaceGenerator
from facegen.studio import Studio, StudioError, parse_params
from facegen.training import train
from tests.conftest import REPO, tiny_run

WILD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.floats(allow_nan=True), max_size=12),
    st.binary(max_size=8),
)


@pytest.fixture(scope="module")
def studio(tiny_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Studio:
    models = {f: FaceGenerator.from_checkpoint(p, device="cpu") for f, p in tiny_checkpoints.items()}
    return Studio(models, out_dir=tmp_path_factory.mktemp("fuzz"), min_interval=0.0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    model=st.one_of(st.sampled_from(["ddpm", "sde", "dcgan"]), WILD),
    sampler=WILD,
    steps=WILD,
    seed=WILD,
    faces=WILD,
    weights=WILD,
    guidance=WILD,
    preview=WILD,
)
def test_fuzzed_requests_are_accepted_or_refused_clearly(studio: Studio, **raw) -> None:
    try:
        params = parse_params(studio.limits, **raw)
        studio.check(params)
    except StudioError as err:
        assert str(err) and "Traceback" not in str(err)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1), faces=st.integers(1, 3), weights=st.lists(st.floats(0, 5), min_size=5, max_size=5)
)
def test_valid_fuzzed_requests_generate_finite_faces(
    studio: Studio, seed: int, faces: int, weights: list[float]
) -> None:
    try:
        params = parse_params(
            studio.limits, model="sde", sampler="ode", steps=3, seed=seed, faces=faces, weights=tuple(weights)
        )
    except StudioError:
        assert sum(weights) == 0
        return
    result = list(studio.stream(params))[-1]
    assert len(result.faces) == faces


OPTION = st.sampled_from(
    [
        "--batch-size",
        "--max-steps",
        "--epochs",
        "--lr",
        "--image-size",
        "--seed",
        "--precision",
        "--device",
        "--labels",
        "--preset",
        "--sde",
        "--timesteps",
        "--beta-schedule",
        "--save-every",
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(
            OPTION,
            st.one_of(
                st.text(max_size=12), st.integers(-(10**12), 10**12).map(str), st.floats(allow_nan=True).map(str)
            ),
        ),
        max_size=4,
    )
)
def test_fuzzed_train_options_give_a_clear_error(pairs: list[tuple[str, str]]) -> None:
    import contextlib
    import io

    import train as train_cli

    argv = ["--model", "ddpm", "--data", "x", "--dry-run"]
    for flag, value in pairs:
        argv += [flag, value]
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = train_cli.main(argv)
    except SystemExit as exit_:
        assert exit_.code not in (0, None)
        message = err.getvalue() + (exit_.code if isinstance(exit_.code, str) else "")
        assert "error" in message and "Traceback" not in message
    else:
        assert code == 0 and out.getvalue().startswith("{")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset_frac=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_any_bit_flip_is_refused(
    tiny_checkpoints: dict[str, Path], tmp_path_factory, offset_frac: float, bit: int
) -> None:
    folder = Path(shutil.copytree(tiny_checkpoints["dcgan"], tmp_path_factory.mktemp("flip") / "c"))
    raw = bytearray((folder / "model.safetensors").read_bytes())
    raw[int(offset_frac * len(raw))] ^= 1 << bit
    (folder / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        load_checkpoint(folder)


def test_every_bit_of_the_header_is_covered(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """The header (card, format, tensor table) is where a flip parses cleanly; each of its bits is tried."""
    raw = (tiny_checkpoints["dcgan"] / "model.safetensors").read_bytes()
    header_end = 8 + int.from_bytes(raw[:8], "little")
    folder = tmp_path / "c"
    folder.mkdir()
    accepted = []
    for offset in range(header_end):
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[offset] ^= 1 << bit
            (folder / "model.safetensors").write_bytes(bytes(flipped))
            try:
                read_weights(folder)
            except CheckpointError:
                continue
            accepted.append((offset, bit))
    assert not accepted, f"bit flips at (offset, bit) {accepted[:5]} were accepted"


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(
    session_faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    train(tiny_run("ddpm", session_faces, out, max_steps=4, save_every=4, sample_every=100), progress=False)
    before = (out / "checkpoint" / "model.safetensors").read_bytes()
    real_save = checkpoints.save_file

    def full_disk(tensors, path, metadata=None):
        Path(path).write_bytes(b"partial")  # a write that got part-way
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints, "save_file", full_disk)
    with caplog.at_level(logging.ERROR):
        train(
            tiny_run("ddpm", session_faces, out, max_steps=8, save_every=4, sample_every=100),
            resume=out,
            progress=False,
        )
    assert "No space left on device" in caplog.text and "previous checkpoint is intact" in caplog.text
    assert (out / "checkpoint" / "model.safetensors").read_bytes() == before
    assert not list((out / "checkpoint").glob(".*tmp*"))
    monkeypatch.setattr(checkpoints, "save_file", real_save)
    assert load_checkpoint(out / "checkpoint")[2]["step"] == 4


def test_corrupt_images_that_appear_between_runs_are_skipped(
    session_faces: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = Path(shutil.copytree(session_faces, tmp_path / "data"))
    out = tmp_path / "run"
    train(tiny_run("dcgan", data, out, max_steps=2, save_every=2, sample_every=100), progress=False)
    (data / "33_1_2_2020.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with caplog.at_level(logging.WARNING):
        train(tiny_run("dcgan", data, out, max_steps=4, save_every=2, sample_every=100), resume=out, progress=False)
    assert "skipped 1 unreadable images" in caplog.text and "33_1_2_2020.jpg" in caplog.text
    assert load_checkpoint(out / "checkpoint")[2]["step"] == 4


@pytest.mark.slow
def test_ten_random_kills_lose_nothing(session_faces: Path, tmp_path: Path) -> None:
    """SIGKILL train.py at random moments (checkpointing every step, so many kills land inside a write),
    resume each time, and end with exactly the weights of an uninterrupted run."""
    common = [
        "train.py",
        "--model",
        "sde",
        "--data",
        str(session_faces),
        "--preset",
        "tiny",
        "--max-steps",
        "40",
        "--precision",
        "fp32",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
        "--save-every",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert (
        subprocess.run(
            [sys.executable, *common, "--out", str(tmp_path / "full")], cwd=REPO, env=env, capture_output=True
        ).returncode
        == 0
    )
    out = tmp_path / "killed"
    rng = random.Random(0)
    kills = during_write = 0
    while kills < 10:
        proc = subprocess.Popen(
            [sys.executable, *common, "--out", str(out), "--resume", "latest"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(3.0, 6.0))
        if proc.poll() is not None:
            break  # finished before the kill
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        during_write += bool(list(out.glob(".*tmp*")) + list((out / "checkpoint").glob(".*tmp*")))
        if (out / "checkpoint" / "model.safetensors").exists():
            load_checkpoint(out / "checkpoint")  # never half-written
    final = subprocess.run(
        [sys.executable, *common, "--out", str(out), "--resume", "latest"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert final.returncode == 0, final.stderr
    _, a, _ = load_checkpoint(tmp_path / "full" / "checkpoint")
    _, b, card = load_checkpoint(out / "checkpoint")
    assert card["step"] == 40 and all(torch.equal(a[k], b[k]) for k in a)
    print(f"kills: {kills}, of which during a checkpoint write: {during_write}")
    assert kills >= 5
