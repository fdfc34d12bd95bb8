#!/usr/bin/env bash
# Evaluate the current EMA weights of runs/ and ship them to checkpoints/ as fp16 with model cards; then
# evaluate the snapshots in runs/snapshots/ for the quality-vs-training trend (the DCGAN's in docs/eval/trend,
# the diffusion models' against CPU-hours in docs/eval/diffusion-trend, scripts/diffusion_trend.sh).
# MODELS="dcgan" re-ships a subset; the others are evaluated as shipped (a family not shipped yet is left
# out). The main table is each model at its default setting, N faces per mix on seeds from FIRST_SEED: 100
# faces on seeds 20000+, which no choice of sampler, guidance or checkpoint was made on (those used seeds
# 10000+), so it is also the check of issue 11's quality bars. Other settings: scripts/diffusion_sampler_ab.sh.
source "$(dirname "$0")/common.sh"
N=${N:-100}
FIRST_SEED=${FIRST_SEED:-20000}
N_TREND=${N_TREND:-10}
MODELS=${MODELS:-ddpm sde dcgan vae vaegan}
# One table of all the families, one seed range, each at its default setting. The models being shipped
# are measured now; the others keep their rows of docs/eval/report.json (the same weights, seeds and
# reference, marked †) unless CARRY=0, which measures every shipped model afresh.
CARRY=${CARRY:-1}
runs=() settings=() snapshots=() shipping=()
for model in ddpm sde dcgan vae vaegan; do
  if [[ " $MODELS " == *" $model "* ]]; then
    runs+=("runs/$model/checkpoint") && shipping+=("$model")
  elif [ -f "checkpoints/$model/model.safetensors" ] && [ "$CARRY" = 0 ]; then
    runs+=("checkpoints/$model") && shipping+=("$model")
  else
    continue
  fi
  settings+=("$model=default")
done
# Rows this run does not re-measure (snapshots lost with a machine, models not re-shipped) are kept, marked †.
keep_from() { [ -f "$1" ] && cp "$1" "$2" && echo "--keep-earlier $2"; }
main_before=()
if [ "$CARRY" = 1 ] && [ -f docs/eval/report.json ]; then
  mkdir -p runs && cp docs/eval/report.json runs/main-before.json && main_before=(--keep-earlier runs/main-before.json)
fi
mkdir -p checkpoints
if [ -f runs/classifier/model.safetensors ]; then  # else the shipped classifier stays
  "$PY" -m facegen.export runs/classifier checkpoints/classifier
fi
for model in "${shipping[@]}"; do rm -f docs/eval/samples-"$model"-*.png; done  # grids this table replaces
rm -f docs/eval/quality_vs_nfe.png
"$PY" -m facegen.evaluate --checkpoints "${runs[@]}" "${main_before[@]}" \
  --classifier checkpoints/classifier --reference "$DATA" --n "$N" --first-seed "$FIRST_SEED" --blends 2 \
  --settings "${settings[@]}" --out docs/eval --no-nfe-plot
for model in $MODELS; do
  "$PY" -m facegen.export "runs/$model/checkpoint" "checkpoints/$model" --eval docs/eval/report.json
done
bash scripts/snapshot_runs.sh
if [[ " $MODELS " == *" dcgan "* ]]; then
  for s in runs/snapshots/dcgan-*; do [ -d "$s" ] && snapshots+=("$s"); done
  # shellcheck disable=SC2046
  "$PY" -m facegen.evaluate --checkpoints "${snapshots[@]}" $(keep_from docs/eval/trend/report.json runs/trend-before.json) \
    --classifier checkpoints/classifier --reference "$DATA" --n "$N_TREND" --blends 2 --settings dcgan=single:1 \
    --out docs/eval/trend --grids runs/eval-grids/trend
fi
if [[ " $MODELS " == *" ddpm "* || " $MODELS " == *" sde "* ]]; then
  N=$N_TREND bash scripts/diffusion_trend.sh
fi
# The README's loss curves, and the DCGAN's latest training grid (the diffusion models are shown by
# their evaluation grids in docs/eval).
for model in $MODELS; do
  cp "runs/$model/loss.png" "docs/loss-$model.png"
  latest=$(ls "runs/$model"/samples-*.png 2>/dev/null | tail -1 || true)
  if [ "$model" = dcgan ] && [ -n "$latest" ]; then
    rm -f docs/train-samples-"$model"-*.png
    cp "$latest" "docs/train-samples-$model-$(basename "$latest" .png | sed 's/samples-0*//').png"
  fi
done
