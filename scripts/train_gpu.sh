#!/usr/bin/env bash
# Train both diffusion families on one CUDA GPU for MINUTES (side by side: one 10.7M-parameter U-Net does not
# fill an H200), then ship-ready fp16 checkpoints, model cards and their evaluation into OUT:
#   OUT/{ddpm,sde}/        fp16 safetensors + config.json + README.md (facegen.export)
#   OUT/eval/              report.md/json and sample grids (facegen.evaluate, N faces per mix)
#   OUT/run-{ddpm,sde}/    the training runs (state.pt resumes them; log.jsonl, loss.png, sample grids)
# Each run starts from the shipped weights in checkpoints/ when they are the network the preset builds
# (checkpoint_fits), else from scratch; a run folder left by an earlier call is resumed.
#
#   scripts/train_gpu.sh MINUTES [OUT]
#
# Environment: DATA (face folder), PRESET (gpu), DEVICE (cuda), N (100), MODELS ("ddpm sde"),
# MAX_STEPS (a cap besides the time), CLASSIFIER (checkpoints/classifier), REFERENCE_FRACTION (0.02, the
# presets' held-out share). tests/test_gpu_script.py runs it
# on the CPU with PRESET=tiny DEVICE=cpu. On the device machine, see README "Training on one GPU".
source "$(dirname "$0")/common.sh"
minutes=${1:?usage: scripts/train_gpu.sh MINUTES [OUT]}
out=${2:-runs/gpu}
PRESET=${PRESET:-gpu}
DEVICE=${DEVICE:-cuda}
N=${N:-100}
MODELS=${MODELS:-ddpm sde}
MAX_STEPS=${MAX_STEPS:-10000000}
CLASSIFIER=${CLASSIFIER:-checkpoints/classifier}
mkdir -p "$out"
declare -A pids
for model in $MODELS; do
  init=()
  if checkpoint_fits "$model" "$PRESET"; then init=(--init-from "checkpoints/$model"); fi
  echo "$model: ${init[*]:-from scratch} on $DEVICE for $minutes min (log $out/$model.log)"
  # SIGTERM at the deadline: the trainer saves the step it is on and exits 0 (timeout then says 124).
  timeout -s TERM -k 300 "${minutes}m" "$PY" train.py --model "$model" --preset "$PRESET" --device "$DEVICE" \
    --data "$DATA" --max-steps "$MAX_STEPS" --save-every 1000 --sample-every 2000 --cache-dir "$out/cache" \
    --out "$out/run-$model" --resume latest "${init[@]}" --no-progress >>"$out/$model.log" 2>&1 &
  pids[$model]=$!
done
status=0
for model in $MODELS; do
  rc=0
  wait "${pids[$model]}" || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]; then
    echo "$model: training failed (exit $rc); the end of $out/$model.log:" >&2
    tail -5 "$out/$model.log" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] || exit "$status"
checkpoints=()
for model in $MODELS; do
  "$PY" -m facegen.export "$out/run-$model/checkpoint" "$out/$model"
  checkpoints+=("$out/$model")
done
"$PY" -m facegen.evaluate --checkpoints "${checkpoints[@]}" --classifier "$CLASSIFIER" --reference "$DATA" \
  --reference-fraction "${REFERENCE_FRACTION:-0.02}" --n "$N" --blends 2 --device "$DEVICE" --cache-dir "$out/cache" \
  --out "$out/eval"
for model in $MODELS; do
  "$PY" -m facegen.export "$out/run-$model/checkpoint" "$out/$model" --eval "$out/eval/report.json"
done
echo "done: $out/{$(echo "$MODELS" | tr ' ' ,)} and $out/eval/report.md"
