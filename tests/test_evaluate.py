"""Metrics with known answers, the group classifier, and `python -m facegen.evaluate` end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from facegen import metrics
from facegen.classifier import is_classifier, load_classifier, predict, train_classifier
from facegen.config import DataConfig
from tests.conftest import SHARED_DATA, make_utkface_folder


def test_mix_fidelity_counts_groups_that_got_no_face() -> None:
    groups = ("A", "B", "C")
    r = metrics.mix_fidelity(torch.tensor([0, 0, 0, 2]), [0.5, 0.5, 0.0], groups)
    assert r["counts"] == {"A": 3, "B": 0, "C": 1}
    assert r["requested_groups_with_zero_faces"] == ["B"]
    assert r["l1"] == pytest.approx(abs(0.75 - 0.5) + 0.5 + 0.25)
    perfect = metrics.mix_fidelity(torch.tensor([0, 1, 0, 1]), [0.5, 0.5, 0.0], groups)
    assert perfect["l1"] == 0 and perfect["kl"] < r["kl"]


def test_frechet_distance_closed_form() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 8, generator=g)
    b = torch.randn(4000, 8, generator=g) + torch.tensor([2.0] + [0.0] * 7)
    assert metrics.frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert metrics.frechet_distance(a, b) == pytest.approx(4.0, rel=0.1)  # ||mu_a - mu_b||^2, equal covariances


def test_diversity_drops_under_mode_collapse() -> None:
    g = torch.Generator().manual_seed(0)
    varied = torch.randn(100, 16, generator=g)
    collapsed = varied[:1].repeat(100, 1) + 0.01 * torch.randn(100, 16, generator=g)
    assert metrics.mean_pairwise_distance(collapsed) < 0.1 * metrics.mean_pairwise_distance(varied)


def test_diversity_subsample_keeps_every_block() -> None:
    # 3 blocks (e.g. mixes) stacked in order; a prefix of 1000 would see only the first two.
    blocks = torch.cat([torch.zeros(600, 4), torch.ones(600, 4), torch.full((600, 4), 10.0)])
    full = metrics.mean_pairwise_distance(blocks, max_items=1800)
    assert metrics.mean_pairwise_distance(blocks, max_items=1000) == pytest.approx(full, rel=0.01)


def test_a_reshipped_model_replaces_its_row_and_the_others_are_carried() -> None:
    from facegen.evaluate import carry_over

    row = {"sampler": "single", "steps": 1, "guidance": 1.0, "family": "dcgan"}
    earlier = {"reference": {"faces": 408}, "n": 20, "command": "python -m facegen.evaluate ..."}
    earlier["results"] = [{**row, "model": "dcgan", "training_step": 5750}, {**row, "model": "ddpm", "family": "ddpm"}]
    carried = carry_over([{**row, "model": "dcgan", "training_step": 7250}], earlier, 408, 20)
    assert [r["model"] for r in carried] == ["ddpm"] and carried[0]["carried_from"] == earlier["command"]


def test_face_detection_on_blank_images_is_zero() -> None:
    assert metrics.face_detection_rate(torch.full((4, 3, 64, 64), 128, dtype=torch.uint8)) == 0.0


def test_inception_weights_must_be_a_local_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a file"):
        metrics.inception(tmp_path / "pt_inception.pth")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    faces = make_utkface_folder(tmp_path_factory.mktemp("clf-faces"), n=60, size=64)
    out = tmp_path_factory.mktemp("clf")
    report = train_classifier(DataConfig(path=str(faces), cache_dir=None), out, steps=30, batch=16, precision="fp32")
    assert set(report["val_accuracy_per_group"]) == {"White", "Black", "Asian", "Indian", "Others"}
    return out


def test_classifier_checkpoint_round_trip(classifier: Path) -> None:
    assert is_classifier(classifier)
    net, cfg = load_classifier(classifier)
    pred, feats = predict(net, torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8))
    assert pred.shape == (5,) and feats.shape == (5, cfg.channels[-1])


def test_fid_kid_with_a_tiny_feature_net(classifier: Path) -> None:
    net, _ = load_classifier(classifier)
    feature = metrics.ClassifierFeatures(net)
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (40, 3, 64, 64), dtype=torch.uint8, generator=g)
    fake = torch.randint(0, 100, (40, 3, 64, 64), dtype=torch.uint8, generator=g)
    same = metrics.fid_kid(real, real, feature)
    other = metrics.fid_kid(real, fake, feature)
    assert same["fid"] == pytest.approx(0, abs=1e-3) and other["fid"] > same["fid"] and other["kid"] > same["kid"]


def test_evaluate_end_to_end(tiny_checkpoints: dict[str, Path], classifier: Path, tmp_path: Path) -> None:
    from facegen.evaluate import main

    ref = make_utkface_folder(tmp_path / "ref", n=60, size=64, seed=5)
    out = tmp_path / "eval"
    code = main(
        [
            "--checkpoints",
            str(tiny_checkpoints["ddpm"]),
            str(tiny_checkpoints["dcgan"]),
            "--classifier",
            str(classifier),
            "--reference",
            str(ref),
            "--reference-fraction",
            "0.3",
            "--settings",
            "ddpm=ddim:3",
            "ddpm=ddim:6:2.5",
            "--n",
            "4",
            "--blends",
            "1",
            "--blend-modes",
            "embedding",
            "composition",
            "--cache-dir",
            str(tmp_path / "c"),
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert [(r["model"], r["sampler"], r["steps"], r["blend"]) for r in report["results"]] == [
        ("ddpm", "ddim", 3, "embedding"),
        ("ddpm", "ddim", 3, "composition"),
        ("ddpm", "ddim", 6, "embedding"),
        ("ddpm", "ddim", 6, "composition"),
        ("dcgan", "single", 1, "embedding"),  # a one-pass family has no blend modes
    ]
    embedded, composed = report["results"][2:4]
    assert embedded["pure_mix_accuracy"] == composed["pure_mix_accuracy"]  # the same pure faces
    assert embedded["two_sample"] == composed["two_sample"] and "composed" in composed["sample_grid"]
    assert "blends composed" in (out / "report.md").read_text()
    report["results"] = [r for r in report["results"] if r["blend"] == "embedding"]
    assert [r["guidance"] for r in report["results"]] == [1.0, 2.5, 1.0]
    assert report["results"][1]["nfe"] == 12  # guidance doubles the network calls
    r = report["results"][0]
    assert r["faces"] == 4 * 6 and set(r["pure_mix_accuracy"]) == set(report["groups"])
    assert list(r["blend_shares"]) == ["White+Black"] and 0 <= r["face_detection_rate"] <= 1
    assert (out / "quality_vs_nfe.png").stat().st_size > 1000 and (out / r["sample_grid"]).is_file()
    assert "real (ceiling)" in (out / "report.md").read_text() and "Quality bars" in (out / "report.md").read_text()
    assert 0 <= r["two_sample"] <= 1 and 0 <= report["real"]["two_sample"] <= 1

    # Another seed range draws other faces from the same model (to re-check a model chosen on the first).
    dcgan = ["--checkpoints", str(tiny_checkpoints["dcgan"]), "--classifier", str(classifier), "--reference", str(ref)]
    dcgan += ["--reference-fraction", "0.3", "--n", "4", "--blends", "1", "--cache-dir", str(tmp_path / "c")]
    assert main([*dcgan, "--first-seed", "3", "--out", str(tmp_path / "other"), "--device", "cpu"]) == 0
    other = json.loads((tmp_path / "other" / "report.json").read_text())["results"][0]
    assert other["fd_classifier"] != report["results"][2]["fd_classifier"]


def test_a_malformed_setting_is_a_clear_error(
    tiny_checkpoints: dict[str, Path], classifier: Path, tmp_path: Path
) -> None:
    from facegen.evaluate import main

    ref = make_utkface_folder(tmp_path / "ref", n=20, size=64, seed=7)
    argv = ["--checkpoints", str(tiny_checkpoints["ddpm"]), "--classifier", str(classifier), "--reference", str(ref)]
    argv += ["--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "e")]
    with pytest.raises(SystemExit, match="holds 0 faces"):
        main(argv)
    with pytest.raises(SystemExit, match="ddpm=ddim:many"):
        main([*argv, "--reference-fraction", "0.5", "--settings", "ddpm=ddim:many"])


def test_snapshots_of_one_run_give_a_quality_vs_training_steps_curve(
    tiny_checkpoints: dict[str, Path], classifier: Path, tmp_path: Path
) -> None:
    from facegen.checkpoints import read_weights, save_weights
    from facegen.evaluate import main, training_curves

    snapshots = []
    for step in (4, 40):  # the same weights relabelled: the curve is about bookkeeping, not quality
        folder = Path(shutil.copytree(tiny_checkpoints["ddpm"], tmp_path / f"ddpm-{step:06d}"))
        tensors, card = read_weights(folder)
        save_weights(folder, tensors, {**card, "step": step})
        snapshots.append(str(folder))
    ref = make_utkface_folder(tmp_path / "ref", n=40, size=64, seed=6)
    out = tmp_path / "eval"
    argv = ["--checkpoints", *snapshots, "--classifier", str(classifier), "--reference", str(ref)]
    argv += ["--reference-fraction", "0.3", "--settings", "ddpm=ddim:3", "--n", "2", "--blends", "0"]
    assert main([*argv, "--cache-dir", str(tmp_path / "c"), "--out", str(out), "--device", "cpu"]) == 0
    report = json.loads((out / "report.json").read_text())
    curves = training_curves(report["results"])
    assert list(curves) == [("ddpm", "ddim", 3)]
    assert [r["training_step"] for r in curves[("ddpm", "ddim", 3)]] == [4, 40]
    assert (out / "quality_vs_steps.png").stat().st_size > 1000
    assert "| ddpm | ddim | 3 | 40 |" in (out / "report.md").read_text()

    # The step-4 snapshot is lost; a later run over the step-40 one keeps the step-4 row from the report.
    again = tmp_path / "again"
    shutil.copytree(out, again)
    base = ["--checkpoints", snapshots[1], *argv[3:], "--cache-dir", str(tmp_path / "c"), "--device", "cpu"]
    assert main([*base, "--out", str(again), "--keep-earlier", str(out / "report.json")]) == 0
    kept = json.loads((again / "report.json").read_text())["results"]
    assert [(r["training_step"], "carried_from" in r) for r in kept] == [(40, False), (4, True)]
    md = (again / "report.md").read_text()
    assert "| ddpm | ddim | 3 | 4 † |" in md and "| ddpm-000040 | ddim |" in md  # re-measured: no mark
    assert "| ddpm-000004 † | ddim |" in md and "† not re-measured by this run: carried from `python -m" in md
    arms = [{**r, "model": f"{arm}-000040"} for r in kept[:1] for arm in ("dcgan-concat", "dcgan-projection")]
    assert training_curves(arms) == {}  # two runs at one step each are not a curve
    with pytest.raises(SystemExit, match="not comparable"):
        main([*base, "--n", "3", "--out", str(again), "--keep-earlier", str(out / "report.json")])
    with pytest.raises(SystemExit, match="first seed 10000; this run uses 12, n = 2 and first seed 7"):
        main([*base, "--first-seed", "7", "--out", str(again), "--keep-earlier", str(out / "report.json")])
    assert report["first_seed"] == 10_000 and "(seeds from 10000)" in (out / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data/utkface64 is not on this machine")
def test_real_faces_are_detected(tmp_path: Path) -> None:
    from facegen.data import load_faces

    faces = load_faces(DataConfig(path=str(SHARED_DATA), cache_dir=str(tmp_path)), 64)
    assert metrics.face_detection_rate(faces.images[:200]) > 0.5


def test_the_studio_reports_what_the_classifier_sees(
    tiny_checkpoints: dict[str, Path], classifier: Path, tmp_path: Path
) -> None:
    import shutil

    from facegen.studio import Studio, load_group_classifier, load_models, parse_params

    shutil.copytree(tiny_checkpoints["dcgan"], tmp_path / "dcgan")
    shutil.copytree(classifier, tmp_path / "classifier")
    models, failures = load_models(tmp_path)
    assert list(models) == ["dcgan"] and not failures  # the classifier is not mistaken for a generator
    studio = Studio(models, failures, classifier=load_group_classifier(tmp_path), out_dir=tmp_path / "o")
    (tmp_path / "o").mkdir()
    result = list(studio.stream(parse_params(studio.limits, model="dcgan", seed=0, faces=4, weights=(1, 0, 0, 0, 0))))[
        -1
    ]
    assert result.seen_groups is not None and sum(result.seen_groups.values()) == pytest.approx(1.0)


def test_classifier_ships_as_fp16(classifier: Path, tmp_path: Path) -> None:
    from facegen.export import export

    out = export(classifier, tmp_path / "shipped")
    from facegen.checkpoints import read_weights

    load_classifier(out)  # loads (cast back to fp32) and verifies

    tensors, _ = read_weights(out)
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    assert (out / "README.md").read_text().startswith("# facegen group classifier")


def test_two_sample_test_tells_apart_only_what_differs() -> None:
    from facegen.metrics import two_sample_accuracy

    g = torch.Generator().manual_seed(0)
    groups = torch.arange(400) % 4
    real, same = torch.randn(400, 32, generator=g), torch.randn(400, 32, generator=g)
    assert 0.4 < two_sample_accuracy(same, groups, real, groups) < 0.6
    assert two_sample_accuracy(same + 0.5, groups, real, groups) > 0.9
    # Generated faces of one group only are compared with the real faces of that group alone.
    shifted_real = real + (groups[:, None] != 0) * 3.0
    assert 0.35 < two_sample_accuracy(same[groups == 0], groups[groups == 0], shifted_real, groups) < 0.65
    with pytest.raises(ValueError, match="no group"):
        two_sample_accuracy(same[groups == 0], groups[groups == 0], real[groups == 1], groups[groups == 1])


def test_the_default_setting_is_what_the_app_samples_when_asked_nothing(tiny_checkpoints: dict[str, Path]) -> None:
    from facegen.evaluate import parse_settings
    from facegen.pipeline import FaceGenerator
    from facegen.sampling import EVERYWHERE

    gen = FaceGenerator.from_checkpoint(tiny_checkpoints["sde"], device="cpu")
    req = gen.request([0], [1, 0, 0, 0, 0])
    default = (req.sampler, req.steps, req.guidance, req.guidance_interval)
    assert parse_settings(["sde=default", "ddpm=dpmpp:5"], gen) == [default]
    assert parse_settings(["sde=heun:7"], gen) == [("heun", 7, 1.0, EVERYWHERE)]
    lo, hi = req.guidance_interval
    spelled_out = f"sde={req.sampler}:{req.steps}:{req.guidance}:{lo:g},{hi:g}"
    assert parse_settings(["sde=default", spelled_out], gen) == [default]
    # Without an interval a setting guides everywhere, as the commands written before intervals did.
    assert parse_settings([f"sde={req.sampler}:{req.steps}:{req.guidance}"], gen)[0][3] == EVERYWHERE
    assert parse_settings(["sde=heun:7:3:0.28,5.42"], gen) == [("heun", 7, 3.0, (0.28, 5.42))]
    for bad in ("sde=heun:7:3:5,1", "sde=heun:7:3:x", "sde=euler_maruyama:20:3:0.3,5", "sde=heun:0"):
        with pytest.raises(ValueError, match="write sampler"):
            parse_settings([bad], gen)


def test_rows_of_replaced_weights_are_not_carried_whatever_their_setting() -> None:
    from facegen.evaluate import carry_over

    earlier = {"reference": {"faces": 408}, "n": 20, "command": "python -m facegen.evaluate ..."}
    earlier["results"] = [
        {"model": "ddpm", "family": "ddpm", "sampler": "dpmpp", "steps": 10, "training_step": 2000},
        {"model": "dcgan", "family": "dcgan", "sampler": "single", "steps": 1, "training_step": 7250},
    ]
    now = [
        {"model": "ddpm", "family": "ddpm", "sampler": "ddim", "steps": 20, "training_step": 3000},
        {"model": "dcgan", "family": "dcgan", "sampler": "other", "steps": 1, "training_step": 7250},
    ]
    assert [r["model"] for r in carry_over(now, earlier, 408, 20)] == ["dcgan"]


def test_quality_bars_mark_each_bar_met_or_missed() -> None:
    from facegen.evaluate import quality_bars

    real = {"face_detection_rate": 0.56, "diversity": 10.0}
    row = {
        "face_detection_rate": 0.48,  # 0.476 needed
        "diversity": 7.9,  # 8.0 needed
        "two_sample": 0.75,
        "pure_mix_accuracy": {"White": 0.70, "Others": 0.50, "Indian": 0.69},
        "blend_shares": {"White+Black": {"White": 0.25, "Black": 0.76}},
    }
    bars = quality_bars(row, real)
    assert {k: ok for k, (_, ok) in bars.items()} == {
        "face det.": True,
        "diversity": False,
        "two-sample": True,
        "White": True,
        "Others": True,
        "Indian": False,
        "White+Black": False,
    }
