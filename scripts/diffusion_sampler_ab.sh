#!/usr/bin/env bash
# Sampler, step and guidance defaults of the diffusion models (issue 11, part d): one DDPM and one score-SDE
# checkpoint at every candidate setting, the same seeds for all, N faces per mix; the report goes to
# docs/eval/diffusion-samplers (text only; grids to runs/ab/). Defaults then live in facegen/sampling.py
# (DEFAULT_STEPS order of SAMPLERS, DEFAULT_GUIDANCE) and are confirmed on other seeds by
# scripts/ship_checkpoints.sh.
#   DDPM=runs/snapshots/ddpm-002000 SDE=runs/snapshots/sde-002000 scripts/diffusion_sampler_ab.sh
# SETTINGS="ddpm=ddim:50 sde=ode:25 ..." replaces the candidates (the default set took 23 minutes at one
# thread beside two trainers on a 2-core AMD EPYC with AVX-512 bf16).
source "$(dirname "$0")/common.sh"
latest() { ls -d runs/snapshots/"$1"-[0-9]* | tail -1; }
DDPM=${DDPM:-$(latest ddpm)}
SDE=${SDE:-$(latest sde)}
N=${N:-20}
"$PY" -m facegen.evaluate --checkpoints "$DDPM" "$SDE" --classifier checkpoints/classifier --reference "$DATA" \
  --n "$N" --blends 2 --out docs/eval/diffusion-samplers --grids runs/ab/grids-diffusion-samplers --settings \
  ${SETTINGS:-ddpm=dpmpp:20 ddpm=ddim:20 ddpm=dpmpp:20:3 ddpm=dpmpp:10:3 sde=heun:10 sde=heun:18 sde=heun:10:3 sde=heun:6:3}
