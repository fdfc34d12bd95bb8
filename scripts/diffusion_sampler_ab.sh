#!/usr/bin/env bash
# Sampler, step and guidance defaults of the diffusion models (issue 11, part d): one DDPM and one score-SDE
# checkpoint at every candidate setting, the same seeds for all, N faces per mix; the report goes to
# docs/eval/diffusion-samplers (text only; grids to runs/ab/). Defaults then live in facegen/sampling.py
# (DEFAULT_STEPS order of SAMPLERS, DEFAULT_GUIDANCE) and are confirmed on other seeds by
# scripts/ship_checkpoints.sh.
#   DDPM=runs/snapshots/ddpm-002000 SDE=runs/snapshots/sde-002000 scripts/diffusion_sampler_ab.sh
source "$(dirname "$0")/common.sh"
latest() { ls -d runs/snapshots/"$1"-[0-9]* | tail -1; }
DDPM=${DDPM:-$(latest ddpm)}
SDE=${SDE:-$(latest sde)}
N=${N:-20}
"$PY" -m facegen.evaluate --checkpoints "$DDPM" "$SDE" --classifier checkpoints/classifier --reference "$DATA" \
  --n "$N" --blends 2 --out docs/eval/diffusion-samplers --grids runs/ab/grids-diffusion-samplers --settings \
  ddpm=dpmpp:10 ddpm=dpmpp:20 ddpm=ddim:20 ddpm=ddim:50 ddpm=dpmpp:20:2 ddpm=dpmpp:20:3 ddpm=ddim:20:3 \
  sde=heun:10 sde=heun:18 sde=ode:25 sde=euler_maruyama:100 sde=heun:10:3 sde=heun:18:2 sde=heun:18:3
