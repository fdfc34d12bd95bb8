# Sourced by the scripts in this folder: strict mode, the repository root, and the defaults they share.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA=${DATA:-../shared/data/utkface64}
PY=${PY:-.venv/bin/python}

# The training step recorded in a checkpoint folder's card.
checkpoint_step() {
  OMP_NUM_THREADS=1 "$PY" -c "import sys; from pathlib import Path; from facegen.checkpoints import read_weights; print(read_weights(Path(sys.argv[1]))[1]['step'])" "$1"
}

# Write MODEL's shipped checkpoint as of git revision REV into DEST (the A/B scripts start from a fixed one).
checkpoint_at() {
  local rev=$1 model=$2 dest=$3
  [ -f "$dest/model.safetensors" ] && return
  mkdir -p "$dest.tmp"
  for f in config.json model.safetensors; do git show "$rev:checkpoints/$model/$f" >"$dest.tmp/$f"; done
  mv "$dest.tmp" "$dest"
}

# Copy a checkpoint folder's weights and config to DEST, atomically (a partial copy never looks like one).
copy_checkpoint() {
  local src=$1 dest=$2
  mkdir -p "$dest.tmp" && cp "$src/config.json" "$src/model.safetensors" "$dest.tmp/" && mv "$dest.tmp" "$dest"
}

# Succeeds when the shipped checkpoint of MODEL is the network that PRESET configures (so a run can start
# from it with --init-from); extra train.py flags may follow.
checkpoint_fits() {
  local model=$1 preset=$2
  shift 2
  [ -f "checkpoints/$model/model.safetensors" ] || return 1
  OMP_NUM_THREADS=1 "$PY" - "$model" "$preset" "$@" <<'PY'
import sys
from pathlib import Path

import train
from facegen.checkpoints import load_checkpoint
from facegen.training import same_network

model, preset, *flags = sys.argv[1:]
run = train.build_config(train.parse_args(["--model", model, "--data", ".", "--preset", preset, *flags]))
shipped, _, _ = load_checkpoint(Path("checkpoints") / model, model)
sys.exit(0 if same_network(shipped.model, run.model) else 1)
PY
}
