"""Ship a training run's EMA weights: fp16 safetensors + config.json + a model card, nothing else.

    python -m facegen.export runs/ddpm/checkpoint checkpoints/ddpm [--eval eval/report.json]

Optimizer states and intermediate checkpoints stay in runs/ (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from facegen.checkpoints import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    atomic_write,
    load_checkpoint,
    read_weights,
    save_weights,
)
from facegen.classifier import is_classifier
from facegen.sampling import interval_text

TERMS = (
    "Trained on UTKFace (Zhang, Song & Qi, CVPR 2017), which is available for **non-commercial research "
    "only**; the images belong to their original owners. These weights inherit that restriction."
)


ACGAN_BIAS = (
    "- Trained with an AC-GAN discriminator, whose group head rewards faces it finds typical of the requested "
    "group: the group classifier assigns the requested group to more generated faces than real ones (see the "
    "evaluation against its accuracy on real faces), i.e. the faces lean towards the most recognisable look of each "
    "group and under-represent faces that do not fit it."
)


def _sample_size(r: dict) -> str:
    if r.get("n") is None:
        return ""
    seeds = f", seeds from {r['first_seed']}" if r.get("first_seed") is not None else ""
    return f" ({r['n']} faces per mix{seeds})"


def model_card(name: str, run, card: dict, evaluation: list[dict] | None) -> str:
    m, t = run.model, run.train
    hours = card.get("wall_time_s", 0) / 3600
    lines = [
        f"# facegen {name}: {m.family.upper()} at {m.image_size} px",
        "",
        f"- Family: **{m.family}**; groups: {', '.join(m.groups)}; {card.get('parameters', 0) / 1e6:.1f}M parameters (EMA weights, fp16).",
        f"- Data: `{card.get('data')}`, {card.get('train_images')} training faces (per group: "
        f"{dict(zip(m.groups, card.get('group_counts', []), strict=False))}); class-balanced sampling: {run.data.balanced}.",
        f"- Training: {card.get('step')} steps of batch {t.batch_size} ({card.get('images_seen')} images), "
        f"{hours:.1f} h on {card.get('hardware')}"
        + (f" ({card['cpu_hours']:.1f} CPU-hours)" if card.get("cpu_hours") is not None else "")
        + f", precision {t.precision}, lr {t.lr}, EMA {t.ema_decay}.",
        *(["- History:"] if card.get("history") else []),
        *(
            f"  - steps {h['steps'][0]}–{h['steps'][1]}: {h['how']}; {h['precision']} on {h['hardware']}; {h['recipe']}"
            for h in card.get("history", [])
        ),
        f"- Terms: {TERMS}",
        "",
        "## Evaluation",
        "",
    ]
    if evaluation:
        for r in evaluation:
            lines.append(
                f"- {r['sampler']} {r['steps']} steps, guidance {r.get('guidance', 1.0):g}"
                + (f" at sigma in {interval_text(r['guidance_interval'])}" if "guidance_interval" in r else "")
                + f"{_sample_size(r)}: "
                f"face detection {r['face_detection_rate']:.2f}, "
                f"diversity {r['diversity']:.2f}, Fréchet distance (classifier features) {r['fd_classifier']:.2f}, "
                + (f"two-sample accuracy {r['two_sample']:.2f}, " if r.get("two_sample") is not None else "")
                + "pure-mix accuracy "
                + ", ".join(f"{g} {v:.2f}" for g, v in r["pure_mix_accuracy"].items())
            )
    else:
        lines.append("Not evaluated yet: run `python -m facegen.evaluate` (see the project README).")
    lines += [
        "",
        "## Limitations and biases",
        "",
        "- Trained for hours, not days: faces are low-detail and some samples are not recognisable faces.",
        "- The groups are UTKFace's coarse five-way 'race' annotation, estimated by an algorithm and checked by a "
        "person; labels are noisy (e.g. some Asian-labelled faces look South Asian). The model reproduces that labelling, "
        "not anyone's identity; 'Others' had 6x fewer examples than 'White' (balanced sampling counters part of this).",
        "- UTKFace skews towards some ages (many babies, median 29) and frontal, cropped photos; watermarks appear.",
        *([ACGAN_BIAS] if any("acgan" in h.get("recipe", "") for h in card.get("history", [])) else []),
        "- Every output is synthetic and is marked so in its PNG metadata. Do not present outputs as real people.",
    ]
    return "\n".join(lines) + "\n"


def export_classifier(src: Path, dst: Path) -> Path:
    """The group classifier: fp16 weights, its config and model card."""
    tensors, card = read_weights(src)
    dst.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_NAME, "README.md"):
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)
    save_weights(dst, tensors, card, dtype=torch.float16)
    return dst


def _card_evaluation(evaluation: Path | None, family: str, step: int | None) -> list[dict] | None:
    """A report's rows of this model: same family and, where the report records it, the same step."""
    if evaluation is None:
        return None
    report = json.loads(evaluation.read_text())
    return [
        {**r, "n": report.get("n"), "first_seed": report.get("first_seed")}
        for r in report["results"]
        if r["family"] == family and r.get("training_step", step) == step
    ]


def refresh_card(folder: Path, evaluation: Path) -> Path:
    """Rewrite a shipped checkpoint's model card from a new evaluation (e.g. after its sampler defaults
    changed), leaving the weights and config untouched."""
    run, _, card = load_checkpoint(folder)
    results = _card_evaluation(evaluation, run.model.family, card.get("step"))
    atomic_write(folder / "README.md", lambda p: p.write_text(model_card(folder.name, run, card, results)))
    return folder


def export(src: Path, dst: Path, evaluation: Path | None = None) -> Path:
    if is_classifier(src):
        return export_classifier(src, dst)
    run, tensors, card = load_checkpoint(src)
    results = _card_evaluation(evaluation, run.model.family, card.get("step"))
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / CONFIG_NAME, dst / CONFIG_NAME)
    save_weights(dst, tensors, card, dtype=torch.float16)
    atomic_write(dst / "README.md", lambda p: p.write_text(model_card(dst.name, run, card, results)))
    size = (dst / WEIGHTS_NAME).stat().st_size / 2**20
    if size > 30:
        raise SystemExit(f"error: {dst / WEIGHTS_NAME} is {size:.1f} MB; shipped weights must stay under 30 MB")
    return dst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="a run's checkpoint folder, e.g. runs/ddpm/checkpoint")
    p.add_argument("dst", type=Path, help="where to ship it, e.g. checkpoints/ddpm")
    p.add_argument("--eval", type=Path, help="report.json from python -m facegen.evaluate, for the model card")
    p.add_argument(
        "--card-only", action="store_true", help="only rewrite the model card of the shipped checkpoint src (= dst)"
    )
    a = p.parse_args(argv)
    if a.card_only and (a.eval is None or a.src.resolve() != a.dst.resolve()):
        p.error("--card-only rewrites one shipped checkpoint's card: give src = dst and --eval")
    try:
        out = refresh_card(a.dst, a.eval) if a.card_only else export(a.src, a.dst, a.eval)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{out}: {(out / WEIGHTS_NAME).stat().st_size / 2**20:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
