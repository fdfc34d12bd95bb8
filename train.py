"""Train a facegen model: `python train.py --model {ddpm,sde,dcgan,vae,vaegan} --data PATH`.

Options resolve in order: preset, family defaults, `--config file.json`, then explicit flags.
`--dry-run` prints the resolved config and exits. Runs unchanged under `torchrun --nproc_per_node N`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from facegen.checkpoints import STATE_NAME, CheckpointError
from facegen.config import PRESETS, Family, RunConfig, resolve
from facegen.data import DataError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, choices=list(get_args(Family)), help="model family")
    p.add_argument("--data", required=True, help="folder of face images")
    p.add_argument(
        "--labels", choices=["utkface", "folders", "celeba", "none"], help="how groups are read (default utkface)"
    )
    p.add_argument("--celeba-attributes", nargs="+", help="CelebA attributes whose combinations are the groups")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS), help="size preset")
    p.add_argument("--config", type=Path, help="JSON file with {model, data, train} overrides")
    p.add_argument("--image-size", type=int, help="64 or 128 (16/32 for tests)")
    p.add_argument(
        "--sde", choices=["vp", "ve", "edm"], help="SDE kind for --model sde (presets: edm, EDM preconditioning)"
    )
    p.add_argument("--prediction", choices=["epsilon", "v"], help="what the DDPM U-Net predicts (presets: v)")
    p.add_argument(
        "--loss-weight", choices=["uniform", "min_snr"], help="DDPM loss weighting over timesteps (presets: min_snr)"
    )
    p.add_argument("--beta-schedule", choices=["linear", "cosine"], help="DDPM noise schedule (default linear)")
    p.add_argument(
        "--d-conditioning",
        choices=["concat", "projection", "acgan"],
        help="how the DCGAN discriminator sees the mix: input planes (default), projection, or an AC-GAN group head",
    )
    p.add_argument("--acgan-weight", type=float, help="weight of the AC-GAN group loss in G's loss (default 1)")
    p.add_argument(
        "--acgan-blends", type=float, help="share of G's AC-GAN training mixes that are two-group blends (default 0)"
    )
    p.add_argument("--timesteps", type=int, help="DDPM T (default 1000)")
    p.add_argument("--beta", type=float, help="VAE: weight of the KL term (default 1)")
    p.add_argument("--latent-dim", type=int, help="VAE: size of z (default 128)")
    p.add_argument("--kl-warmup", type=int, help="VAE: steps over which the KL weight rises to --beta (default 2000)")
    p.add_argument(
        "--recon-std", type=float, help="VAE: std of the Gaussian decoder in [-1, 1] pixel units (default 0.3)"
    )
    p.add_argument(
        "--latent-adversary",
        type=float,
        help="VAE: weight of the encoder's penalty from a critic that reads the group off z (default 0: none)",
    )
    p.add_argument(
        "--aux-classifier",
        type=float,
        help="VAE: weight of an auxiliary group classifier's cross-entropy on prior draws at a requested mix "
        "(default 10; 0: the plain ELBO)",
    )
    p.add_argument(
        "--gamma", type=float, help="VAE-GAN: weight of the feature reconstruction in the decoder's loss (default 0.01)"
    )
    p.add_argument("--seed", type=int, help="seed of every random draw (default 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast dtype (default auto: bf16 where the hardware has native kernels, else fp32 on CPU)",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--max-steps", type=int, help="optimisation steps")
    budget.add_argument("--epochs", type=float, help="passes over the training faces (default 1)")
    p.add_argument("--batch-size", type=int, help="global batch size")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], help="after warm-up (cosine: to 10%% at the end)")
    p.add_argument(
        "--low-res-steps", type=int, help="diffusion: the first N steps at half the side (progressive resolution)"
    )
    p.add_argument("--balanced", action=argparse.BooleanOptionalAction, default=None, help="class-balanced sampling")
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None, help="random horizontal flips")
    p.add_argument("--jitter", action=argparse.BooleanOptionalAction, default=None, help="small rotation/scale jitter")
    p.add_argument("--save-every", type=int, help="steps between checkpoints")
    p.add_argument("--sample-every", type=int, help="steps between sample grids")
    p.add_argument("--cache-dir", help="where decoded images are cached (default runs/cache)")
    p.add_argument("--out", help="run folder (default runs/<model>)")
    p.add_argument("--resume", help="'latest' (the --out folder) or a run folder / state.pt to continue")
    p.add_argument(
        "--init-from",
        type=Path,
        help="checkpoint folder whose weights start the run when there is no state to resume "
        "(e.g. checkpoints/ddpm after runs/ was lost); steps continue from its card",
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p.parse_args(argv)


def _set(tree: dict[str, Any], section: str, key: str, value: Any) -> None:
    if value is not None:
        tree.setdefault(section, {})[key] = value


def flag_overrides(a: argparse.Namespace) -> dict[str, Any]:
    tree: dict[str, Any] = {"model": {"family": a.model}, "data": {"path": a.data}, "train": {}}
    _set(tree, "model", "image_size", a.image_size)
    if a.sde is not None:
        tree["model"]["sde"] = {"kind": a.sde}
    dcgan = {k: getattr(a, k) for k in ("d_conditioning", "acgan_weight", "acgan_blends") if getattr(a, k) is not None}
    if dcgan:
        tree["model"]["dcgan"] = dcgan
    vae = {
        k: v
        for k, v in (
            ("beta", a.beta),
            ("latent_dim", a.latent_dim),
            ("kl_warmup_steps", a.kl_warmup),
            ("gamma", a.gamma),
            ("recon_std", a.recon_std),
            ("latent_adversary", a.latent_adversary),
            ("aux_classifier", a.aux_classifier),
        )
        if v is not None
    }
    if vae:
        tree["model"]["vae"] = vae
    ddpm = {
        k: v
        for k, v in (
            ("beta_schedule", a.beta_schedule),
            ("num_train_timesteps", a.timesteps),
            ("prediction", a.prediction),
            ("loss_weight", a.loss_weight),
        )
        if v is not None
    }
    if ddpm:
        tree["model"]["ddpm"] = ddpm
    for key in ("labels", "balanced", "hflip", "jitter", "cache_dir"):
        _set(tree, "data", key, getattr(a, key))
    _set(tree, "data", "celeba_attributes", tuple(a.celeba_attributes) if a.celeba_attributes else None)
    for key in (
        "seed",
        "device",
        "precision",
        "max_steps",
        "epochs",
        "batch_size",
        "lr",
        "lr_schedule",
        "low_res_steps",
        "save_every",
        "sample_every",
        "out",
    ):
        _set(tree, "train", key, getattr(a, key))
    if a.max_steps is not None:
        tree["train"]["epochs"] = None
    if a.epochs is not None:
        tree["train"]["max_steps"] = None
    return tree


def build_config(a: argparse.Namespace) -> RunConfig:
    layers: list[dict[str, Any]] = [{"data": {"cache_dir": "runs/cache"}, "train": {"out": f"runs/{a.model}"}}]
    if a.config is not None:
        try:
            layers.append(json.loads(a.config.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"error: cannot read --config {a.config}: {err}") from None
    layers.append(flag_overrides(a))
    try:
        return resolve(a.preset, a.model, *layers)
    except ValidationError as err:
        problems = "\n".join(f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise SystemExit(f"error: invalid configuration:\n{problems}") from None


def resume_path(resume: str | None, out: str) -> Path | None:
    if resume is None:
        return None
    folder = Path(out) if resume == "latest" else Path(resume)
    if folder.name == STATE_NAME:
        folder = folder.parent
    if not (folder / STATE_NAME).is_file():
        if resume == "latest":
            logging.getLogger("train").info("no state in %s yet: starting fresh", folder)
            return None
        raise SystemExit(f"error: --resume {resume}: no {STATE_NAME} in {folder}")
    return folder


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run = build_config(args)
    if args.dry_run:
        print(json.dumps(run.model_dump(mode="json"), indent=2))
        return 0
    from facegen.training import train  # heavy imports only when training

    try:
        folder = train(
            run, resume_path(args.resume, run.train.out), progress=not args.no_progress, init_from=args.init_from
        )
    except (DataError, CheckpointError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"checkpoint: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
