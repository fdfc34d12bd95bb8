#!/usr/bin/env bash
# Keep a copy of each run's current EMA checkpoint in runs/snapshots/<model>-<step>/ (ignored by git), so
# scripts/ship_checkpoints.sh can plot quality against training steps. Cheap: weights + config only.
# RUN_NAMES="sde=sde-vp" files a run's snapshots under another name than its model's, so a run restarted
# with another recipe draws its own curve (the evaluation's curves are the names less the step).
source "$(dirname "$0")/common.sh"
for model in ddpm sde dcgan; do
  src="runs/$model/checkpoint"
  [ -f "$src/model.safetensors" ] || continue
  step=$(checkpoint_step "$src")
  name=$model
  for pair in ${RUN_NAMES:-}; do [ "${pair%%=*}" = "$model" ] && name=${pair#*=}; done
  dst=$(printf "runs/snapshots/%s-%06d" "$name" "$step")
  if [ ! -d "$dst" ]; then
    copy_checkpoint "$src" "$dst"
    echo "snapshot $dst"
  fi
done
