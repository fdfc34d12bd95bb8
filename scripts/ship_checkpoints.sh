#!/usr/bin/env bash
# Evaluate the current EMA weights of runs/ and ship them to checkpoints/ as fp16 with model cards; then
# evaluate every snapshot in runs/snapshots/ for the quality-vs-training-steps trend (docs/eval/trend).
source "$(dirname "$0")/common.sh"
N=${N:-20}
N_TREND=${N_TREND:-10}
mkdir -p checkpoints
if [ -f runs/classifier/model.safetensors ]; then  # else the shipped classifier stays
  "$PY" -m facegen.export runs/classifier checkpoints/classifier
fi
"$PY" -m facegen.evaluate --checkpoints runs/ddpm/checkpoint runs/sde/checkpoint runs/dcgan/checkpoint \
  --classifier checkpoints/classifier --reference "$DATA" --n "$N" --blends 2 \
  --settings ddpm=dpmpp:10 ddpm=dpmpp:20 ddpm=dpmpp:20:3 ddpm=ddim:25 sde=ode:25 sde=euler_maruyama:100 dcgan=single:1 \
  --out docs/eval
for model in ddpm sde dcgan; do
  "$PY" -m facegen.export "runs/$model/checkpoint" "checkpoints/$model" --eval docs/eval/report.json
done
bash scripts/snapshot_runs.sh
# Rows of the previous trend whose snapshots are gone (runs/ lost with a machine) are kept, marked †.
keep=()
[ -f docs/eval/trend/report.json ] && cp docs/eval/trend/report.json runs/trend-before.json && keep=(--keep-earlier runs/trend-before.json)
"$PY" -m facegen.evaluate --checkpoints runs/snapshots/* "${keep[@]}" \
  --classifier checkpoints/classifier --reference "$DATA" --n "$N_TREND" --blends 2 \
  --settings ddpm=dpmpp:20 sde=euler_maruyama:50 dcgan=single:1 --out docs/eval/trend
# The README's loss curves and the latest training sample grid of each run.
for model in ddpm sde dcgan; do
  cp "runs/$model/loss.png" "docs/loss-$model.png"
  latest=$(ls "runs/$model"/samples-*.png 2>/dev/null | tail -1 || true)
  if [ -n "$latest" ]; then
    rm -f docs/train-samples-"$model"-*.png
    cp "$latest" "docs/train-samples-$model-$(basename "$latest" .png | sed 's/samples-0*//').png"
  fi
done
