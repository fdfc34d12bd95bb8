#!/usr/bin/env bash
# Keep a copy of each run's current EMA checkpoint in runs/snapshots/<model>-<step>/ (ignored by git), so
# scripts/ship_checkpoints.sh can plot quality against training steps. Cheap: weights + config only.
source "$(dirname "$0")/common.sh"
for model in ddpm sde dcgan; do
  src="runs/$model/checkpoint"
  [ -f "$src/model.safetensors" ] || continue
  step=$(checkpoint_step "$src")
  dst=$(printf "runs/snapshots/%s-%06d" "$model" "$step")
  if [ ! -d "$dst" ]; then
    copy_checkpoint "$src" "$dst"
    echo "snapshot $dst"
  fi
done
