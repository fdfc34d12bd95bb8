#!/usr/bin/env bash
# Train (or resume) the three shipped models and the group classifier on UTKFace, in the background,
# one thread each (two OpenMP processes on two cores stall each other otherwise). Safe to re-run: every
# run resumes from runs/<model>/state.pt. Then ship with scripts/ship_checkpoints.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/utkface64}
PY=${PY:-.venv/bin/python}
mkdir -p runs
export OMP_NUM_THREADS=1
for model in ddpm sde; do
  nohup nice -n 5 "$PY" train.py --model "$model" --data "$DATA" --max-steps 40000 --out "runs/$model" \
    --resume latest --no-progress >>"runs/$model.log" 2>&1 &
done
nohup nice -n 5 "$PY" train.py --model dcgan --data "$DATA" --max-steps 20000 --save-every 250 --sample-every 500 \
  --out runs/dcgan --resume latest --no-progress >>runs/dcgan.log 2>&1 &
if [ ! -f runs/classifier/model.safetensors ]; then
  nohup nice -n 5 "$PY" -m facegen.classifier --data "$DATA" --steps 1500 --out runs/classifier >>runs/classifier.log 2>&1 &
fi
echo "training in the background; follow runs/*/log.jsonl and runs/*/samples-*.png"
