"""The studio's handlers without a browser: validation, throttled streams, PNG metadata, stop, compare."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from facegen.pipeline import FaceGenerator
from facegen.studio import (
    Frame,
    Limits,
    Result,
    Studio,
    StudioError,
    display_px,
    face_grid,
    load_models,
    parse_params,
)

MIX = (1.0, 0.0, 0.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def studio(tiny_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Studio:
    models = {f: FaceGenerator.from_checkpoint(p, device="cpu") for f, p in tiny_checkpoints.items()}
    return Studio(models, out_dir=tmp_path_factory.mktemp("studio"), min_interval=0.0)


def run(studio: Studio, **raw) -> tuple[list[Frame], Result]:
    items = list(studio.stream(parse_params(studio.limits, **raw)))
    return [i for i in items if isinstance(i, Frame)], items[-1]


def test_stream_frames_then_result_with_png_metadata(studio: Studio) -> None:
    frames, result = run(studio, model="ddpm", sampler="ddim", steps=5, seed=11, faces=2, weights=(1, 1, 0, 0, 0))
    assert [f.index for f in frames] == [1, 2, 3, 4, 5] and all(f.total == 5 for f in frames)
    assert isinstance(result, Result) and len(result.faces) == 2 and len(result.png_paths) == 2
    png = Image.open(result.png_paths[1])
    meta = png.text
    assert meta["facegen:seed"] == "12" and meta["facegen:sampler"] == "ddim" and meta["facegen:steps"] == "5"
    assert json.loads(meta["facegen:mix"]) == {"White": 0.5, "Black": 0.5, "Asian": 0, "Indian": 0, "Others": 0}
    assert "AI-generated" in meta["facegen:synthetic"] and len(meta["facegen:checkpoint_sha256"]) == 16
    assert "--seed 12" in meta["facegen:command"]
    assert png.tobytes() == result.faces[1].tobytes()  # lossless
    anim = Image.open(result.animation)
    assert anim.format == "GIF" and anim.n_frames >= 2
    # Reproducible: face 2 (seed 12) alone equals face 2 of the batch
    _, alone = run(studio, model="ddpm", sampler="ddim", steps=5, seed=12, faces=1, weights=(1, 1, 0, 0, 0))
    assert alone.faces[0].tobytes() == result.faces[1].tobytes()


def test_throttle_keeps_the_last_frame(studio: Studio) -> None:
    slow = Studio(studio.models, out_dir=studio.out_dir, min_interval=3600)
    frames, _ = run(slow, model="sde", sampler="ode", steps=8, seed=0, weights=MIX)
    assert [f.index for f in frames] == [8]  # the first and only frame sent is the last one


def test_dcgan_gets_a_morph(studio: Studio) -> None:
    frames, result = run(studio, model="dcgan", seed=3, weights=MIX)
    assert len(frames) == 1 and Image.open(result.animation).n_frames == 5 * 8


def test_stop_stops_the_sampler(studio: Studio, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = studio.models["ddpm"]
    calls = {"n": 0}
    forward = gen.net.forward

    def counting(*a, **k):
        calls["n"] += 1
        return forward(*a, **k)

    monkeypatch.setattr(gen.net, "forward", counting)
    stream = studio.stream(parse_params(studio.limits, model="ddpm", sampler="ddim", steps=50, seed=0, weights=MIX))
    at_frame = {}
    for item in stream:
        if isinstance(item, Frame):
            at_frame[item.index] = calls["n"]
            if item.index == 3:
                break
    stream.close()  # what Gradio does when Stop cancels the event
    # One step is one network call per face and guidance branch: one call where the batch goes through
    # at once (bf16 on the CPU), two with guidance where each face runs alone (fp32: `Pipeline.batching`).
    per_step = at_frame[1]
    assert per_step in (1, 2) and calls["n"] == 3 * per_step


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 10_000}, "at most 500"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**40}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"faces": 9}, "faces"),
        ({"weights": (math.nan, 1, 0, 0, 0)}, "finite"),
        ({"weights": (-1, 1, 0, 0, 0)}, "negative"),
        ({"weights": (0, 0, 0, 0, 0)}, "positive weight"),
        ({"guidance": math.inf}, "guidance"),
        ({"preview": "x1"}, "preview"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_requests_are_refused_clearly(studio: Studio, raw: dict, message: str) -> None:
    base = {"model": "ddpm", "sampler": "ddim", "steps": 5, "seed": 0, "weights": MIX}
    with pytest.raises(StudioError, match=message):
        studio.check(parse_params(studio.limits, **(base | raw)))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"model": "nonexistent"}, "unknown model 'nonexistent'"),
        ({"sampler": "euler_maruyama"}, "no sampler 'euler_maruyama'"),
        ({"weights": (1, 0, 0)}, "3 weights but the model has 5 groups"),
    ],
)
def test_requests_the_model_cannot_serve(studio: Studio, raw: dict, message: str) -> None:
    base = {"model": "ddpm", "sampler": "ddim", "steps": 5, "seed": 0, "weights": MIX}
    with pytest.raises(StudioError, match=message):
        studio.check(parse_params(studio.limits, **(base | raw)))


def test_limits_are_enforced(studio: Studio) -> None:
    with pytest.raises(StudioError, match="at most 2"):
        parse_params(Limits(max_faces=2), model="ddpm", faces=3, weights=MIX)


def test_compare_runs_every_model(studio: Studio) -> None:
    out = studio.compare(5, list(MIX))
    assert [caption.split(" ·")[0] for _, caption in out] == list(studio.models)
    assert all("NFE" in caption for _, caption in out)


def test_load_models_reports_broken_checkpoints(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    shutil.copytree(tiny_checkpoints["ddpm"], tmp_path / "good")
    shutil.copytree(tiny_checkpoints["sde"], tmp_path / "bad")
    raw = (tmp_path / "bad" / "model.safetensors").read_bytes()
    (tmp_path / "bad" / "model.safetensors").write_bytes(raw[:100])
    models, failures = load_models(tmp_path)
    assert list(models) == ["good"] and "bad" in failures and "safetensors" in failures["bad"]
    assert load_models(tmp_path / "missing")[1]


def test_the_printed_command_reproduces_the_face(
    studio: Studio, tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    from facegen.generate import main

    _, result = run(studio, model="sde", sampler="euler_maruyama", steps=6, seed=21, weights=(0, 1, 0, 0, 1))
    args = result.command.split()[3:]  # after "python -m facegen.generate"
    ckpt = tiny_checkpoints["sde"]
    args[args.index("--checkpoint") + 1] = str(ckpt)
    args[args.index("--out") + 1] = str(tmp_path / "again.png")
    assert main(args) == 0
    assert Image.open(tmp_path / "again.png").convert("RGB").tobytes() == result.faces[0].tobytes()


@pytest.mark.parametrize(
    ("native", "count", "shown"), [(64, 1, 384), (64, 4, 192), (128, 1, 384), (16, 1, 384), (256, 4, 256)]
)
def test_faces_are_shown_large_by_a_whole_factor(native: int, count: int, shown: int) -> None:
    assert display_px(native, count) == shown and shown % native == 0
    face = Image.new("RGB", (native, native))
    face.putpixel((0, 0), (255, 0, 0))
    grid, pad, factor = face_grid([face] * count), 4, shown // native
    corner = (pad + factor - 1, pad + factor - 1)
    assert grid.getpixel(corner) == (255, 0, 0)  # one pixel became a factor x factor square
    assert grid.getpixel((corner[0] + 1, corner[1] + 1)) == (0, 0, 0)


def test_a_composed_blend_is_written_into_its_png_and_reproduced(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    from facegen.generate import main

    ckpt, first = tiny_checkpoints["ddpm"], tmp_path / "first.png"
    base = ["--checkpoint", str(ckpt), "--seed", "5", "--mix", "1,0,1,0,0", "--steps", "3"]
    assert main([*base, "--blend", "composition", "--out", str(first)]) == 0
    text = Image.open(first).text
    assert text["facegen:blend"] == "composition" and "--blend composition" in text["facegen:command"]
    assert json.loads(text["facegen:nfe"]) == 3 * 3  # DPM-Solver++ 3 steps, two groups and the null one
    args = text["facegen:command"].split()[3:]
    args[args.index("--checkpoint") + 1] = str(ckpt)
    args[args.index("--out") + 1] = str(tmp_path / "again.png")
    assert main(args) == 0
    again = Image.open(tmp_path / "again.png").convert("RGB").tobytes()
    assert again == Image.open(first).convert("RGB").tobytes()
    assert main([*base, "--out", str(tmp_path / "embedded.png")]) == 0  # the default mode, not recorded
    embedded = Image.open(tmp_path / "embedded.png")
    assert "facegen:blend" not in embedded.text and embedded.convert("RGB").tobytes() != again
    assert json.loads(embedded.text["facegen:nfe"]) == 3 * 2  # guided: conditional and unconditional
