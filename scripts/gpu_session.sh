#!/usr/bin/env bash
# The one command to run on the device machine (README "Training on one GPU"): unpack the payload that
# scripts/gpu_payload.sh made, install its wheels, train both diffusion families for MINUTES with
# scripts/train_gpu.sh, and pack what should come back (fp16 checkpoints, model cards, evaluation, logs,
# loss curves, last sample grids; no optimiser states) into RESULTS as a tar split in 15 MiB parts, since
# the tool returns at most 8 files of 16 MiB. Here: cat RESULTS/results.tar.part-* | tar -x -C runs/gpu.
#   scripts/gpu_session.sh MINUTES RESULTS        (PAYLOAD=.gpu, WORK=/tmp/facegen-gpu)
source "$(dirname "$0")/common.sh"
minutes=${1:?usage: scripts/gpu_session.sh MINUTES RESULTS}
results=${2:?usage: scripts/gpu_session.sh MINUTES RESULTS}
PAYLOAD=${PAYLOAD:-.gpu}
WORK=${WORK:-/tmp/facegen-gpu}
mkdir -p "$WORK/faces" "$results"
if compgen -G "$PAYLOAD/wheels/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
    "$PAYLOAD"/wheels/*.whl
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -m zipfile -e "$PAYLOAD/faces.zip" "$WORK/faces"
export DATA
DATA=$(find "$WORK/faces" -mindepth 1 -maxdepth 1 -type d | head -1)
export CLASSIFIER=${CLASSIFIER:-$PAYLOAD/classifier}
rc=0
bash scripts/train_gpu.sh "$minutes" "$WORK/out" 2>&1 | tee "$WORK/out.log" || rc=$?
keep=(out.log)
for f in "$WORK"/out/{ddpm,sde,eval} "$WORK"/out/*.log "$WORK"/out/run-*/{log.jsonl,loss.png}; do
  [ -e "$f" ] && keep+=("${f#"$WORK"/}")
done
for run in "$WORK"/out/run-*; do
  last=$(ls "$run"/samples-*.png 2>/dev/null | tail -1 || true)
  [ -n "$last" ] && keep+=("${last#"$WORK"/}")
done
tar -cf - -C "$WORK" "${keep[@]}" | split -b 15M -d - "$results/results.tar.part-"
ls -la "$results"
exit "$rc"
