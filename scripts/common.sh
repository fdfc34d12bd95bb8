# Sourced by the scripts in this folder: strict mode, the repository root, and the defaults they share.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA=${DATA:-../shared/data/utkface64}
PY=${PY:-.venv/bin/python}

# The training step recorded in a checkpoint folder's card.
checkpoint_step() {
  OMP_NUM_THREADS=1 "$PY" -c "import sys; from pathlib import Path; from facegen.checkpoints import read_weights; print(read_weights(Path(sys.argv[1]))[1]['step'])" "$1"
}
