#!/usr/bin/env bash
# Keep a copy of each run's current EMA checkpoint in runs/snapshots/<model>-<step>/ (ignored by git), so
# scripts/ship_checkpoints.sh can plot quality against training steps. Cheap: weights + config only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for model in ddpm sde dcgan; do
  src="runs/$model/checkpoint"
  [ -f "$src/model.safetensors" ] || continue
  step=$(OMP_NUM_THREADS=1 "$PY" -c "import sys; from facegen.checkpoints import read_weights; from pathlib import Path; print(read_weights(Path(sys.argv[1]))[1]['step'])" "$src")
  dst=$(printf "runs/snapshots/%s-%06d" "$model" "$step")
  if [ ! -d "$dst" ]; then
    mkdir -p "$dst.tmp" && cp "$src/config.json" "$src/model.safetensors" "$dst.tmp/" && mv "$dst.tmp" "$dst"
    echo "snapshot $dst"
  fi
done
