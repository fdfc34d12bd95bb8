"""train.py end to end: smoke runs, exact resume, a real kill, and two-process DDP on CPU."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from facegen.checkpoints import CheckpointError, load_checkpoint, load_state
from facegen.config import RunConfig
from facegen.export import model_card
from facegen.pipeline import FaceGenerator
from facegen.training import Dist, Trainer, build_trainer, learning_rate, train
from tests.conftest import REPO, SHARED_DATA, tiny_run


def run_cli(*args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env
    )


@pytest.mark.parametrize("family", ["ddpm", "sde", "dcgan", "vae", "vaegan"])
def test_cli_smoke_run_writes_a_loadable_checkpoint(session_faces: Path, tmp_path: Path, family: str) -> None:
    out = tmp_path / "run"
    res = run_cli(
        "--model",
        family,
        "--data",
        str(session_faces),
        "--preset",
        "tiny",
        "--max-steps",
        "6",
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--precision",
        "fp32",
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    assert "saved step 6" in res.stderr
    gen = FaceGenerator.from_checkpoint(out / "checkpoint", device="cpu")
    assert gen.family == family and gen.card["step"] == 6
    assert (out / "samples-0000006.png").is_file() and (out / "loss.png").is_file()
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 6 and rows[-1]["test_loss"] is not None
    assert len(gen.generate([0], [0, 0, 1, 0, 0])) == 1


def test_acgan_run_learns_real_groups_and_ships_a_plain_generator(session_faces: Path, tmp_path: Path) -> None:
    args = ["--model", "dcgan", "--data", str(session_faces), "--preset", "tiny", "--out", str(tmp_path / "run")]
    args += ["--cache-dir", str(tmp_path / "cache"), "--precision", "fp32", "--no-progress"]
    res = run_cli(
        *args, "--max-steps", "6", "--d-conditioning", "acgan", "--acgan-weight", "0.5", "--acgan-blends", "0.5"
    )
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(r["d_group_loss"] > 0 and r["g_group_loss"] > 0 for r in rows if "d_loss" in r)
    _, weights, card = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert not any("group_head" in k for k in weights)  # only the generator ships
    assert "acgan (weight 0.5, blends 0.5, head lr x10)" in card["history"][-1]["recipe"]
    run_cfg = load_checkpoint(tmp_path / "run" / "checkpoint")[0]
    assert "AC-GAN discriminator" in model_card("m", run_cfg, card, None)  # its bias is on the card
    concat = {**card, "history": [{**h, "recipe": "D conditioning concat"} for h in card["history"]]}
    assert "AC-GAN" not in model_card("m", run_cfg, concat, None)
    assert (
        len(FaceGenerator.from_checkpoint(tmp_path / "run" / "checkpoint", device="cpu").generate([0], [0, 0, 1, 0, 0]))
        == 1
    )


def test_cli_reports_a_missing_data_folder(tmp_path: Path) -> None:
    res = run_cli(
        "--model", "ddpm", "--data", str(tmp_path / "nowhere"), "--preset", "tiny", "--out", str(tmp_path / "o")
    )
    assert res.returncode == 2 and "does not exist" in res.stderr
    assert not (tmp_path / "o" / "checkpoint" / "model.safetensors").exists()


def test_cli_resume_needs_a_state(tmp_path: Path, session_faces: Path) -> None:
    res = run_cli("--model", "ddpm", "--data", str(session_faces), "--preset", "tiny", "--resume", str(tmp_path))
    assert res.returncode != 0 and "no state.pt" in res.stderr


@pytest.mark.parametrize(
    ("family", "model"),
    [
        ("ddpm", {}),
        ("sde", {}),
        ("sde", {"sde": {"time_embedding": "positional"}}),
        ("dcgan", {}),
        ("vae", {}),
        ("vae", {"vae": {"latent_adversary": 1.0}}),
        ("vae", {"vae": {"aux_classifier": 0.0}}),
        ("vaegan", {}),
    ],
)
def test_resume_matches_an_uninterrupted_run(session_faces: Path, tmp_path: Path, family: str, model: dict) -> None:
    def run(out: str, steps: int):
        return tiny_run(family, session_faces, tmp_path / out, model, max_steps=steps, save_every=4, sample_every=100)

    full = train(run("full", 8), progress=False)
    train(run("part", 4), progress=False)
    resumed = train(
        run("part", 8),
        resume=tmp_path / "part",
        progress=False,
    )
    _, a, _ = load_checkpoint(full)
    _, b, card = load_checkpoint(resumed)
    assert card["step"] == 8
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = load_state(tmp_path / "full"), load_state(tmp_path / "part")
    assert all(torch.equal(sa["net"][k], sb["net"][k]) for k in sa["net"])
    steps = [json.loads(r)["step"] for r in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # no gap, no duplicate after the resume


@pytest.mark.parametrize("family", ["ddpm", "dcgan"])
def test_init_from_shipped_weights_when_the_state_is_lost(session_faces: Path, tmp_path: Path, family: str) -> None:
    first = train(tiny_run(family, session_faces, tmp_path / "a", max_steps=4, save_every=4), progress=False)
    if family == "dcgan":  # the discriminator may change on the way: it is never shipped
        first_cfg = json.loads((first / "config.json").read_text())
        assert first_cfg["model"]["dcgan"]["d_conditioning"] == "concat"
    _, shipped, card = load_checkpoint(first)
    lost = tmp_path / "b"  # a fresh machine: no state.pt, only the exported weights
    run = tiny_run(family, session_faces, lost, max_steps=4, save_every=100, sample_every=100)
    with pytest.raises(ValueError, match="already at step 4"):
        train(run, init_from=first, progress=False)
    seen: list[dict[str, torch.Tensor]] = []
    real_step = Trainer.train_step

    def spy(self: Trainer) -> dict[str, float]:
        seen.append({k: v.clone() for k, v in self.ema.state_dict().items()})
        return real_step(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "train_step", spy)
        run = tiny_run(family, session_faces, lost, max_steps=6, save_every=100)
        if family == "dcgan":
            dcgan = run.model.dcgan.model_copy(update={"d_conditioning": "projection"})
            run = run.model_copy(update={"model": run.model.model_copy(update={"dcgan": dcgan})})
        out = train(run, init_from=first, progress=False)
    assert len(seen) == 2  # steps 5 and 6 only: the count continued from the card
    assert all(torch.equal(seen[0][k].to(shipped[k].dtype), shipped[k]) for k in shipped)
    _, after, new_card = load_checkpoint(out)
    assert new_card["step"] == 6 and new_card["wall_time_s"] >= card["wall_time_s"]
    assert any(not torch.equal(after[k], shipped[k]) for k in shipped)
    assert load_state(lost)["warm_start"] == 4  # a later --resume keeps the re-warmed schedule
    history = new_card["history"]
    assert [(h["steps"], h["how"].split()[0]) for h in history] == [([0, 4], "from"), ([4, 6], "continued")]
    assert str(first) in history[1]["how"] and history[1]["precision"] == "fp32"
    assert "  - steps 4–6: continued from the weights in" in model_card("m", load_checkpoint(out)[0], new_card, None)
    if family == "ddpm":  # same settings: the resumed stretch merges into the one it continues
        resumed = train(tiny_run(family, session_faces, lost, max_steps=8, save_every=100), resume=lost, progress=False)
        assert [h["steps"] for h in load_checkpoint(resumed)[2]["history"]] == [[0, 4], [4, 8]]
    else:  # the state holds a projection discriminator; a concat run cannot take it
        with pytest.raises(CheckpointError, match="does not fit the networks"):
            train(tiny_run(family, session_faces, lost, max_steps=8), resume=lost, progress=False)


def test_init_from_refuses_another_model(session_faces: Path, tmp_path: Path) -> None:
    ddpm = train(tiny_run("ddpm", session_faces, tmp_path / "d", max_steps=2, save_every=2), progress=False)
    with pytest.raises(CheckpointError, match="not a sde model"):
        train(tiny_run("sde", session_faces, tmp_path / "s", max_steps=4), init_from=ddpm, progress=False)
    res = run_cli(
        "--model", "ddpm", "--data", str(session_faces), "--preset", "tiny", "--image-size", "32",
        "--out", str(tmp_path / "x"), "--cache-dir", str(tmp_path / "cache"), "--init-from", str(ddpm),
    )  # fmt: skip
    assert res.returncode == 2 and "different ddpm model" in res.stderr


def test_warm_up_restarts_with_a_fresh_optimiser() -> None:
    run = RunConfig.model_validate({"model": {"family": "ddpm"}, "data": {"path": "x"}, "train": {"warmup_steps": 10}})
    assert learning_rate(run, 0, 100) == pytest.approx(run.train.lr / 10)
    assert learning_rate(run, 50, 100) == run.train.lr
    assert learning_rate(run, 50, 100, start=50) == pytest.approx(run.train.lr / 10)


@pytest.mark.slow
# Every family's networks under DDP; the one-pass families' held-out figures (rank 0 only) must not go
# through a wrapper that waits for the other ranks (their batch-norm buffers are synced in every forward).
@pytest.mark.parametrize(
    ("family", "flags"),
    [
        ("ddpm", []),
        ("dcgan", []),
        ("vae", []),
        ("vae", ["--latent-adversary", "1"]),
        ("vae", ["--aux-classifier", "0"]),
        ("vaegan", []),
    ],
)
def test_ddp_two_gloo_processes(session_faces: Path, tmp_path: Path, family: str, flags: list[str]) -> None:
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "train.py",
        "--model",
        family,
        "--data",
        str(session_faces),
        "--preset",
        "tiny",
        "--max-steps",
        "4",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
        *flags,
    ]
    res = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert FaceGenerator.from_checkpoint(out / "checkpoint").card["step"] == 4


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data/utkface64 is not on this machine")
def test_real_data_training_steps(tmp_path: Path) -> None:
    res = run_cli(
        "--model",
        "dcgan",
        "--data",
        str(SHARED_DATA),
        "--max-steps",
        "2",
        "--batch-size",
        "8",
        "--out",
        str(tmp_path / "real"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
        "--save-every",
        "2",
        "--sample-every",
        "2",
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert FaceGenerator.from_checkpoint(tmp_path / "real" / "checkpoint").card["train_images"] > 20000


def test_seed_and_group_names_are_honoured(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from tests.conftest import draw_face

    rng = np.random.default_rng(0)
    for group in ("glasses", "no glasses"):
        (tmp_path / "data" / group).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(draw_face(rng, 20, i % 5)).save(tmp_path / "data" / group / f"{i}.png")
    outs = []
    for seed in (0, 0, 1):
        run = tiny_run("dcgan", tmp_path / "data", tmp_path / f"s{len(outs)}", max_steps=2, seed=seed)
        run = run.model_copy(update={"data": run.data.model_copy(update={"labels": "folders"})})
        outs.append(load_checkpoint(train(run, progress=False)))
    assert outs[0][0].model.groups == ("glasses", "no glasses")
    same = all(torch.equal(outs[0][1][k], outs[1][1][k]) for k in outs[0][1])
    differ = any(not torch.equal(outs[0][1][k], outs[2][1][k]) for k in outs[0][1])
    assert same and differ


def test_the_mix_embedding_learns_at_its_own_rate(session_faces: Path, tmp_path: Path) -> None:
    run = tiny_run("ddpm", session_faces, tmp_path / "r", max_steps=300, warmup_steps=0, cond_lr_mult=10.0)
    trainer = build_trainer(run, Dist())
    table = trainer.ema.mix_embedding.table
    groups = trainer.objective.optimisers["opt"].param_groups
    assert [len(g["params"]) for g in groups] == [len(list(trainer.net.parameters())) - 1, 1]
    assert groups[1]["params"][0] is trainer.net.mix_embedding.table and table is not groups[1]["params"][0]
    trainer.train_step()
    assert groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"]) and groups[0]["lr"] == run.train.lr


def test_the_acgan_group_head_learns_at_its_own_rate(session_faces: Path, tmp_path: Path) -> None:
    run = tiny_run("dcgan", session_faces, tmp_path / "r", max_steps=300, cond_lr_mult=10.0)
    dcgan = run.model.dcgan.model_copy(update={"d_conditioning": "acgan"})
    trainer = build_trainer(run.model_copy(update={"model": run.model.model_copy(update={"dcgan": dcgan})}), Dist())
    disc = trainer.objective.networks()["disc"]
    groups = trainer.objective.optimisers["opt_d"].param_groups
    assert groups[1]["params"] == list(disc.group_head.parameters())
    trainer.train_step()
    assert groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"]) and groups[0]["lr"] == run.train.lr


def test_sigterm_saves_the_current_step_and_stops(session_faces: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--model", "ddpm", "--data", str(session_faces), "--preset", "tiny", "--max-steps", "100000"]
    args += ["--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--precision", "fp32", "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until the loop runs
        if "parameters" in line:
            break
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, rest
    match = re.search(r"stopped by a signal at step (\d+) of 100000, saved", rest)
    assert match, rest
    step = int(match.group(1))
    assert step > 0 and load_state(out)["step"] == step
    assert load_checkpoint(out / "checkpoint")[2]["step"] == step
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["step"] == step
