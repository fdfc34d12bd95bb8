"""Evaluate checkpoints the way the field does, on faces the generators never trained on.

    python -m facegen.evaluate --checkpoints checkpoints/ddpm checkpoints/sde checkpoints/dcgan \\
        --classifier checkpoints/classifier --reference ../shared/data/utkface64 --n 50 --out eval

For every checkpoint and sampler/steps setting it generates `n` faces per mix (each pure group and
50/50 blends), and reports face-detection rate, diversity, demographic fidelity per mix, the Fréchet
distance in the classifier's feature space, FID/KID/IS when `--inception-weights` is given, and the
same figures for the real reference faces as the ceiling. Writes report.json, report.md, sample grids
and a quality-vs-NFE plot; given several checkpoints of one family at different training steps (e.g.
snapshots of a run), also a quality-vs-training-steps plot: the trend that says what more steps buy.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from facegen import metrics
from facegen.classifier import load_classifier, per_group_accuracy, predict
from facegen.config import DataConfig
from facegen.data import FaceSet, load_faces, split
from facegen.pipeline import FaceGenerator
from facegen.plots import grid, to_pil
from facegen.sampling import (
    BLEND_MODES,
    DEFAULT_BLEND,
    DEFAULT_STEPS,
    EVERYWHERE,
    BlendMode,
    GuidanceInterval,
    interval_text,
    network_evaluations,
    unguided_evaluations,
)

log = logging.getLogger(__name__)
REFERENCE_PX = 64


def mixes(groups: tuple[str, ...], blends: int) -> list[tuple[str, list[float]]]:
    """Each pure group, then up to `blends` 50/50 pairs of neighbouring groups."""
    k = len(groups)
    out = [(g, [float(i == j) for j in range(k)]) for i, g in enumerate(groups)]
    for a, b in list(itertools.combinations(range(k), 2))[: blends if k > 1 else 0]:
        w = [0.0] * k
        w[a] = w[b] = 0.5
        out.append((f"{groups[a]}+{groups[b]}", w))
    return out


def reference_faces(
    path: str, test_fraction: float, cache_dir: str | None
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], FaceSet]:
    """The training runs' held-out split of the folder (never trained on by the generators), its labels,
    the group names, and the training split (for the real faces' own two-sample figure)."""
    faces = load_faces(DataConfig(path=path, cache_dir=cache_dir), REFERENCE_PX)
    train, test = split(faces, test_fraction)
    if len(test.images) < 2:
        raise ValueError(
            f"the held-out {test_fraction:g} of {path} holds {len(test.images)} faces; give a larger folder "
            "or --reference-fraction"
        )
    return test.images, test.labels, faces.groups, train


def real_two_sample(clf, train: FaceSet, ref_feats: torch.Tensor, ref_labels: torch.Tensor, seed: int = 0) -> float:
    """The two-sample figure of real training faces against the held-out ones: what a perfect generator scores
    (above 0.5 where the classifier's features remember its own training faces)."""
    g = torch.Generator().manual_seed(seed)
    pick = torch.cat(
        [
            torch.nonzero(train.labels == k).flatten()[torch.randperm(int((train.labels == k).sum()), generator=g)][
                : 2 * int((ref_labels == k).sum())
            ]
            for k in torch.unique(ref_labels)
        ]
    )
    _, feats = predict(clf, train.images[pick])
    return metrics.two_sample_accuracy(feats, train.labels[pick], ref_feats, ref_labels)


DEFAULT_FIRST_SEED = 10_000  # apart from the app's default seeds


def evaluate_setting(
    gen: FaceGenerator,
    sampler: str,
    steps: int,
    guidance: float,
    n: int,
    blends: int,
    clf,
    ref_feats: torch.Tensor,
    ref_labels: torch.Tensor,
    ref_images: torch.Tensor,
    feature_net,
    inception_weights: Path | None,
    out: Path,
    first_seed: int = DEFAULT_FIRST_SEED,
    grids: Path | None = None,
    blend: BlendMode = DEFAULT_BLEND,
    interval: GuidanceInterval = EVERYWHERE,
) -> dict:
    """One model at one setting; its sample grid goes to `grids` (default `out`), linked from the report."""
    rows, all_images, all_feats, per_mix = [], [], [], {}
    pure_feats, pure_groups = [], []
    t0 = time.perf_counter()
    for mix_name, w in tqdm(mixes(gen.groups, blends), desc=f"{gen.name} {sampler} {steps}", leave=False):
        seeds = list(range(first_seed, first_seed + n))
        x = _generate_uint8(gen, seeds, w, sampler, steps, guidance, blend, interval)
        pred, feats = predict(clf, x)
        per_mix[mix_name] = metrics.mix_fidelity(pred, w, gen.groups)
        if max(w) == 1.0:
            pure_feats.append(feats)
            pure_groups.append(torch.full((len(feats),), w.index(1.0)))
        all_images.append(x)
        all_feats.append(feats)
        rows.append(to_pil(x[:8].float() / 127.5 - 1))
    seconds = time.perf_counter() - t0
    images, feats = torch.cat(all_images), torch.cat(all_feats)
    tag = f"{gen.name}-{sampler}-{steps}" + (f"-cfg{guidance:g}" if guidance != 1.0 else "")
    tag += "-composed" if blend == "composition" and blends and not gen.one_pass else ""
    tag += "-gi{:g}-{:g}".format(*interval) if interval != EVERYWHERE else ""
    grids = grids or out
    grid(rows, [m for m, _ in mixes(gen.groups, blends)]).save(grids / f"samples-{tag}.png")
    pure = {g: per_mix[g]["achieved"][g] for g in gen.groups}
    result = {
        "model": gen.name,
        "family": gen.family,
        "training_step": gen.card.get("step"),
        "training_cpu_hours": gen.card.get("cpu_hours"),
        "parameters": gen.card.get("parameters"),
        "sampler": sampler,
        "steps": steps,
        "guidance": guidance,
        "blend": blend,
        **({"guidance_interval": list(interval)} if interval != EVERYWHERE else {}),
        "nfe": network_evaluations(
            sampler, steps, guidance, unguided=unguided_evaluations(gen.config, sampler, steps, interval)
        ),
        "faces": int(images.shape[0]),
        "seconds_per_face": round(seconds / images.shape[0], 4),
        "face_detection_rate": metrics.face_detection_rate(images),
        "diversity": metrics.mean_pairwise_distance(feats),
        "fd_classifier": metrics.frechet_distance(feats, ref_feats),
        "two_sample": metrics.two_sample_accuracy(torch.cat(pure_feats), torch.cat(pure_groups), ref_feats, ref_labels),
        "pure_mix_accuracy": pure,
        "mixes": per_mix,
        "blend_shares": {m: {g: r["achieved"][g] for g in m.split("+")} for m, r in per_mix.items() if "+" in m},
        "sample_grid": os.path.relpath(grids / f"samples-{tag}.png", out),
    }
    if feature_net is not None:
        result |= metrics.fid_kid(ref_images, images, feature_net)
        result["inception_score"] = metrics.inception_score(images, inception_weights) if inception_weights else None
    return result


def _generate_uint8(
    gen: FaceGenerator,
    seeds: list[int],
    mix: list[float],
    sampler: str,
    steps: int,
    guidance: float,
    blend: BlendMode = DEFAULT_BLEND,
    interval: GuidanceInterval = EVERYWHERE,
) -> torch.Tensor:
    """(N, 3, H, W) uint8 faces, sampled 16 at a time."""
    out = []
    for i in range(0, len(seeds), 16):
        out += [
            torch.from_numpy(np.array(im)).permute(2, 0, 1)
            for im in gen.generate(seeds[i : i + 16], mix, sampler, steps, guidance, blend, interval)
        ]
    x = torch.stack(out)
    if x.shape[-1] != REFERENCE_PX:  # compare at the reference resolution
        x = torch.nn.functional.interpolate(x.float(), size=(REFERENCE_PX,) * 2, mode="bilinear", antialias=True)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x


Setting = tuple[str, int, float, GuidanceInterval]


def parse_settings(text: list[str] | None, gen: FaceGenerator) -> list[Setting]:
    """'[family=]sampler[:steps[:guidance[:lo,hi]]]' items for this family (guidance 1 unless given, applied
    at noise levels sigma in (lo, hi] when an interval is given, else everywhere), or '[family=]default' for
    the model's default sampler, steps, guidance and interval (what the app does when asked nothing);
    without items, each sampler at its default steps and guidance 1.

    Raises ValueError naming the item when steps, guidance or the interval is not valid.
    """
    d = gen.request([0], [1.0] + [0.0] * (len(gen.groups) - 1))  # what the app asks for
    default = (d.sampler, d.steps, d.guidance, d.guidance_interval)
    if not text:
        return [(s, DEFAULT_STEPS[s], 1.0, EVERYWHERE) for s in gen.samplers]
    out = []
    for item in text:
        family, _, rest = item.partition("=")
        if rest and family != gen.family:
            continue
        sampler, steps, guidance, interval = [*(rest or item).split(":"), "", "", ""][:4]
        if sampler == "default":
            out.append(default)
            continue
        if sampler not in gen.samplers:
            continue
        try:
            n = int(steps) if steps else DEFAULT_STEPS[sampler]
            lo_hi = tuple(float(v) for v in interval.split(",")) if interval else EVERYWHERE
            req = gen.request([0], d.mix, sampler, n, float(guidance) if guidance else 1.0, None, lo_hi)
        except ValueError as err:  # RequestError is one
            raise ValueError(
                f"setting {item!r}: write sampler[:steps[:guidance[:lo,hi]]], e.g. dpmpp:20:2.0 or "
                f"dpmpp_2m:14:3:0.28,5.42 ({err})"
            ) from None
        out.append((sampler, req.steps, req.guidance, req.guidance_interval))
    return list(dict.fromkeys(out)) or [default]


def _has_nfe_curve(results: list[dict]) -> bool:
    models = [r["model"] for r in results]
    return len(set(models)) < len(models)


def nfe_plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), dpi=100)
    keys = sorted({(r["model"], _sampler_label(r)) for r in results})
    for model, sampler in keys:
        pts = sorted(
            (r["nfe"], r["fd_classifier"], r["face_detection_rate"])
            for r in results
            if r["model"] == model and _sampler_label(r) == sampler
        )
        nfe, fd, det = zip(*pts, strict=True)
        axes[0].plot(nfe, fd, marker="o", label=f"{model} {sampler}")
        axes[1].plot(nfe, det, marker="o", label=f"{model} {sampler}")
    axes[0].set(xscale="log", xlabel="network evaluations per face", ylabel="Fréchet distance (classifier features)")
    axes[1].set(xscale="log", xlabel="network evaluations per face", ylabel="face-detection rate")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_name(model: str) -> str:
    """The run a snapshot belongs to: its name less a trailing step ("ddpm-002000" -> "ddpm")."""
    return re.sub(r"-\d+$", "", model)


def training_curves(results: list[dict]) -> dict[tuple[str, str, int], list[dict]]:
    """Results of one run, sampler and step count at two or more training steps, in step order."""
    series: dict[tuple[str, str, int], list[dict]] = {}
    for r in results:
        if r.get("training_step") is not None:
            series.setdefault((run_name(r["model"]), _sampler_label(r), r["steps"]), []).append(r)
    return {
        k: sorted(v, key=lambda r: r["training_step"])
        for k, v in series.items()
        if len({r["training_step"] for r in v}) >= 2
    }


def _cpu_hours(rows: list[dict]) -> list[float] | None:
    hours = [r.get("training_cpu_hours") for r in rows]
    return None if any(h is None for h in hours) else hours


def steps_plot(curves: dict[tuple[str, str, int], list[dict]], real: dict, path: Path) -> None:
    """Quality against training: CPU-hours on the x axis where every row of a curve records them, else steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_hours = all(_cpu_hours(rows) is not None for rows in curves.values())
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.5), dpi=100)
    panels = [
        (lambda r: r["face_detection_rate"], "face-detection rate", real["face_detection_rate"]),
        (
            _mean_pure_accuracy,
            "pure-mix accuracy (mean over groups)",
            float(np.mean(real["classifier_accuracy_per_group"])),
        ),
        (lambda r: r["diversity"], "diversity (classifier features)", real["diversity"]),
        (lambda r: r.get("two_sample", float("nan")), "two-sample accuracy (0.5 = real)", real.get("two_sample")),
    ]
    for ax, (value, label, ceiling) in zip(axes, panels, strict=True):
        for (run, sampler, steps), rows in curves.items():
            x = _cpu_hours(rows) if by_hours else [r["training_step"] for r in rows]
            ax.plot(x, [value(r) for r in rows], marker="o", label=f"{run} {sampler} {steps}")
        if ceiling is not None:
            ax.axhline(ceiling, color="gray", linestyle="--", linewidth=1, label="real faces")
        ax.set(xlabel="training CPU-hours" if by_hours else "training steps", ylabel=label)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _setting_key(r: dict) -> tuple:
    """A row is re-measured when this run evaluates the same model name (a folder: `dcgan` for the shipped
    one, `dcgan-007250` for a snapshot) with the same setting; a re-shipped model replaces its old row."""
    return r["model"], r["sampler"], r["steps"], r.get("guidance", 1.0), tuple(r.get("guidance_interval", EVERYWHERE))


def carry_over(
    results: list[dict], earlier: dict, reference_faces: int, n: int, first_seed: int = DEFAULT_FIRST_SEED
) -> list[dict]:
    """Rows of an earlier report that this run did not re-measure (snapshots since deleted, or models
    not re-evaluated), so a quality-vs-steps curve survives the loss of its early checkpoints and one
    model can be re-shipped without re-sampling the others. Only from the same reference split and faces
    per mix; each carried row names the command that measured it. A model measured now at another
    training step (re-shipped weights) has none of its old rows carried, whatever their setting."""
    before = (
        earlier.get("reference", {}).get("faces"),
        earlier.get("n"),
        earlier.get("first_seed", DEFAULT_FIRST_SEED),
    )
    if before != (reference_faces, n, first_seed):
        raise ValueError(
            f"the earlier report used {before[0]} reference faces, n = {before[1]} and first seed {before[2]}; "
            f"this run uses {reference_faces}, n = {n} and first seed {first_seed}: not comparable"
        )
    have = {_setting_key(r) for r in results}
    steps_now = {r["model"]: r.get("training_step") for r in results}
    return [
        {**r, "carried_from": r.get("carried_from", earlier.get("command", "an earlier run"))}
        for r in earlier.get("results", [])
        if _setting_key(r) not in have and steps_now.get(r["model"], r.get("training_step")) == r.get("training_step")
    ]


def _mean_pure_accuracy(r: dict) -> float:
    return float(np.mean(list(r["pure_mix_accuracy"].values())))


def _millions(count: int | None) -> str:
    return "–" if count is None else f"{count / 1e6:.1f}M"


def _carried_mark(r: dict) -> str:
    return " †" if "carried_from" in r else ""


def _sampler_label(r: dict) -> str:
    g = r.get("guidance", 1.0)
    notes = ([f"CFG {g:g}"] if g != 1.0 else []) + (["blends composed"] if r.get("blend") == "composition" else [])
    if "guidance_interval" in r:
        notes.append(f"guided at σ in {interval_text(r['guidance_interval'])}")
    return r["sampler"] + (f" ({', '.join(notes)})" if notes else "")


def quality_bars(r: dict, real: dict) -> dict[str, tuple[str, bool]]:
    """Issue 11's bars for one row, each as (the measured figure, met?): face detection >= 85% of the real
    faces' rate, diversity >= 80% of theirs, two-sample accuracy <= 0.75, pure-mix accuracy >= 0.70 per
    group (>= 0.50 for "Others"), and each group of a 50/50 blend between 25% and 75% of the faces."""
    bars = {
        "face det.": (
            f"{r['face_detection_rate']:.2f}",
            r["face_detection_rate"] >= 0.85 * real["face_detection_rate"],
        ),
        "diversity": (f"{r['diversity']:.2f}", r["diversity"] >= 0.80 * real["diversity"]),
    }
    if r.get("two_sample") is not None:
        bars["two-sample"] = (f"{r['two_sample']:.2f}", r["two_sample"] <= 0.75)
    for g, acc in r["pure_mix_accuracy"].items():
        bars[g] = (f"{acc:.2f}", acc >= (0.50 if g == "Others" else 0.70))
    for m, shares in r["blend_shares"].items():
        bars[m] = ("/".join(f"{v:.0%}" for v in shares.values()), all(0.25 <= v <= 0.75 for v in shares.values()))
    return bars


def _bars_table(report: dict) -> list[str]:
    rows = [(r, quality_bars(r, report["real"])) for r in report["results"]]
    if not rows:
        return []
    names = list(rows[0][1])
    lines = [
        "",
        "Quality bars of issue 11 (✓ met, ✗ missed; face detection ≥ 85% and diversity ≥ 80% of the real faces', "
        "two-sample ≤ 0.75, pure mixes ≥ 0.70 (Others ≥ 0.50), 50/50 blends 25–75% each):",
        "",
        "| model | setting | " + " | ".join(names) + " | met |",
        "|" + "---|" * (len(names) + 3),
    ]
    for r, bars in rows:
        cells = [f"{'✓' if ok else '✗'} {v}" for v, ok in (bars.get(n, ("–", False)) for n in names)]
        met = sum(ok for _, ok in bars.values())
        setting = f"{_sampler_label(r)} {r['steps']}"
        lines.append(f"| {r['model']}{_carried_mark(r)} | {setting} | " + " | ".join(cells) + f" | {met}/{len(bars)} |")
    return lines


def markdown(report: dict, nfe_plot: bool = True) -> str:
    real = report["real"]
    lines = [
        "# facegen evaluation",
        "",
        f"Reference: {report['reference']['faces']} held-out real faces. "
        f"Faces per mix: {report['n']} (seeds from {report.get('first_seed', DEFAULT_FIRST_SEED)}). "
        "Classifier features for diversity and Fréchet distance.",
        "",
        "| model | sampler | steps | NFE | s/face | face det. | diversity | FD (clf) | two-sample | FID | KID | "
        + " | ".join(f"pure {g}" for g in report["groups"])
        + " | parameters | training CPU-h |",
        "|" + "---|" * (13 + len(report["groups"])),
    ]
    fmt = lambda v: "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    for r in report["results"]:
        lines.append(
            f"| {r['model']}{_carried_mark(r)} | {_sampler_label(r)} | {r['steps']} | {r['nfe']} | {r['seconds_per_face']:.2f} | "
            f"{r['face_detection_rate']:.2f} | {r['diversity']:.2f} | {r['fd_classifier']:.2f} | "
            f"{fmt(r.get('two_sample'))} | {fmt(r.get('fid'))} | {fmt(r.get('kid'))} | "
            + " | ".join(f"{r['pure_mix_accuracy'][g]:.2f}" for g in report["groups"])
            + f" | {_millions(r.get('parameters'))} | {fmt(r.get('training_cpu_hours'))} |"
        )
    lines.append(
        f"| real (ceiling) | – | – | – | – | {real['face_detection_rate']:.2f} | {real['diversity']:.2f} | "
        f"0 | {fmt(real.get('two_sample'))} | – | – | "
        + " | ".join(f"{a:.2f}" for a in real["classifier_accuracy_per_group"])
        + " | – | – |"
    )
    lines += _bars_table(report)
    lines += ["", "Blends (share of each requested group among the faces):", ""]
    for r in report["results"]:
        for m, shares in r["blend_shares"].items():
            lines.append(
                f"- {r['model']}{_carried_mark(r)} {_sampler_label(r)} {r['steps']}: {m}: "
                + ", ".join(f"{g} {v:.0%}" for g, v in shares.items())
            )
    curves = training_curves(report["results"])
    if curves:
        lines += ["", "Quality against training steps:", ""]
        lines += [
            "| run | sampler | steps | training steps | CPU-hours | face det. | mean pure-mix acc. | diversity | two-sample |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for (run, sampler, steps), rows in curves.items():
            for r in rows:
                lines.append(
                    f"| {run} | {sampler} | {steps} | {r['training_step']}{_carried_mark(r)} | "
                    f"{fmt(r.get('training_cpu_hours'))} | {r['face_detection_rate']:.2f} | "
                    f"{_mean_pure_accuracy(r):.2f} | {r['diversity']:.2f} | {fmt(r.get('two_sample'))} |"
                )
        lines += ["", "![quality vs training steps](quality_vs_steps.png)"]
    carried = sorted({r["carried_from"] for r in report["results"] if "carried_from" in r})
    if carried:
        lines += ["", "† not re-measured by this run: carried from " + "; ".join(f"`{c}`" for c in carried)]
    if nfe_plot and _has_nfe_curve(report["results"]):
        lines += ["", "![quality vs NFE](quality_vs_nfe.png)"]
    lines.append("")
    lines += [f"![{r['model']} {r['sampler']}]({r['sample_grid']})" for r in report["results"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", nargs="+", type=Path, required=True)
    p.add_argument("--classifier", type=Path, default=Path("checkpoints/classifier"))
    p.add_argument("--reference", required=True, help="folder of real faces; its held-out split is the reference")
    p.add_argument("--reference-fraction", type=float, default=0.02, help="the training runs' test_fraction")
    p.add_argument("--settings", nargs="*", help="e.g. ddpm=dpmpp:20 ddpm=ddim:50 sde=ode:20 (default: each sampler)")
    p.add_argument("--n", type=int, default=50, help="faces per mix")
    p.add_argument("--blends", type=int, default=3, help="how many 50/50 blends")
    p.add_argument(
        "--blend-modes",
        nargs="+",
        choices=BLEND_MODES,
        default=[DEFAULT_BLEND],
        help="how diffusion models draw the blends: each setting is measured under each mode given",
    )
    p.add_argument(
        "--first-seed",
        type=int,
        default=DEFAULT_FIRST_SEED,
        help="faces use seeds first..first+n-1; re-check a model chosen on one seed range on another",
    )
    p.add_argument("--inception-weights", type=Path, help="local pt_inception-2015-12-05 weights for FID/KID/IS")
    p.add_argument("--cache-dir", default="runs/cache")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("eval"))
    p.add_argument(
        "--nfe-plot",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="quality against network evaluations, when a model is measured at several settings",
    )
    p.add_argument(
        "--grids", type=Path, help="where the sample grids go (default --out; e.g. runs/ for grids no page shows)"
    )
    p.add_argument(
        "--keep-earlier",
        type=Path,
        help="an earlier report.json whose rows this run does not re-measure are kept (trend of lost snapshots)",
    )
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    a.out.mkdir(parents=True, exist_ok=True)
    if a.grids is not None:
        a.grids.mkdir(parents=True, exist_ok=True)
    clf, clf_cfg = load_classifier(a.classifier)
    try:
        ref_images, ref_labels, groups, train_faces = reference_faces(a.reference, a.reference_fraction, a.cache_dir)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    ref_pred, ref_feats = predict(clf, ref_images)
    feature_net = metrics.inception(a.inception_weights) if a.inception_weights else None
    real = {
        "faces": int(ref_images.shape[0]),
        "face_detection_rate": metrics.face_detection_rate(ref_images),
        "diversity": metrics.mean_pairwise_distance(ref_feats),
        "classifier_accuracy_per_group": per_group_accuracy(ref_pred, ref_labels, len(groups)),
        "two_sample": real_two_sample(clf, train_faces, ref_feats, ref_labels),
    }
    del train_faces
    results = []
    for folder in a.checkpoints:
        gen = FaceGenerator.from_checkpoint(folder, device=a.device)
        gen.name = folder.parent.name if folder.name == "checkpoint" else folder.name  # runs/<name>/checkpoint
        gen.batch_invariant = False  # batched sampling: evaluation needs throughput, not per-seed identity
        if gen.groups != clf_cfg.groups:
            raise SystemExit(f"error: {folder} groups {gen.groups} differ from the classifier's {clf_cfg.groups}")
        try:
            settings = parse_settings(a.settings, gen)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        for (sampler, steps, guidance, interval), blend in itertools.product(
            settings, [DEFAULT_BLEND] if gen.one_pass else a.blend_modes
        ):
            results.append(
                evaluate_setting(
                    gen,
                    sampler,
                    steps,
                    guidance,
                    a.n,
                    a.blends,
                    clf,
                    ref_feats,
                    ref_labels,
                    ref_images,
                    feature_net,
                    a.inception_weights,
                    a.out,
                    a.first_seed,
                    a.grids,
                    blend,
                    interval,
                )
            )
            log.info("%s", json.dumps({k: v for k, v in results[-1].items() if k != "mixes"}))
    if a.keep_earlier is not None:
        try:
            earlier = json.loads(a.keep_earlier.read_text())
            results += carry_over(results, earlier, real["faces"], a.n, a.first_seed)
        except (OSError, json.JSONDecodeError, ValueError, KeyError) as err:
            raise SystemExit(f"error: --keep-earlier {a.keep_earlier}: {err}") from None
    report = {
        "reference": {"path": a.reference, "faces": real["faces"]},
        "n": a.n,
        "first_seed": a.first_seed,
        "groups": list(groups),
        "real": real,
        "results": results,
        "command": " ".join(["python -m facegen.evaluate", *(argv or sys.argv[1:])]),
    }
    (a.out / "report.json").write_text(json.dumps(report, indent=2))
    if a.nfe_plot and _has_nfe_curve(results):  # a model at two or more settings
        nfe_plot(results, a.out / "quality_vs_nfe.png")
    if curves := training_curves(results):
        steps_plot(curves, real, a.out / "quality_vs_steps.png")
    text = markdown(report, a.nfe_plot)
    (a.out / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
