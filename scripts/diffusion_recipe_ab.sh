#!/usr/bin/env bash
# Which parts of the diffusion recipe matter (issue 11, part 3): each arm in scripts/recipe_arms/ (a config
# layer over the preset; new.json is the shipped recipe, today.json the one before issue 11, the others
# take one part back) trains each family from scratch for the same STEPS at the same batch, data order
# and seeds, with a snapshot every SNAP steps; then every snapshot is evaluated at its family's default
# sampler, steps and guidance, N faces per mix, the same seeds for all. Equal steps at equal batch is equal
# cost here: the arms share one network (CPU-hours are in each row to check it).
#   OUT=runs/ab/recipe STEPS=3000 SNAP=1000 ARMS="new today" scripts/diffusion_recipe_ab.sh
# Any family can be compared the same way (e.g. FAMILIES=vae ARMS="recon-std-0.1 recon-std-0.3").
# INIT=FOLDER branches every arm from one checkpoint (--init-from: its weights, a fresh optimiser) instead
# of from scratch, for what can change on trained weights (e.g. the noise levels the score model trains
# on); STEPS is then counted from that checkpoint's step.
# Arms of equal CPU time but different step counts (e.g. low-res-first, whose steps at half the side cost
# about a quarter) train in separate calls with the same OUT and EVAL=0, then one call evaluates them all.
# Environment: PRESET (cpu), DEVICE (auto), PARALLEL (2: arms trained at once; each gets
# OMP_NUM_THREADS=1 on a CPU), FAMILIES ("ddpm sde"), N (50), CLASSIFIER, REFERENCE_FRACTION (0.02), INIT,
# EVAL (1; 0 trains only).
# A re-run skips what exists, so it resumes after a kill and only evaluates when training is done.
source "$(dirname "$0")/common.sh"
OUT=${OUT:-runs/ab/recipe}
STEPS=${STEPS:-3000}
SNAP=${SNAP:-1000}
ARMS=${ARMS:-new today small-embed old-loss old-optim}
FAMILIES=${FAMILIES:-ddpm sde}
PRESET=${PRESET:-cpu}
DEVICE=${DEVICE:-auto}
PARALLEL=${PARALLEL:-2}
N=${N:-50}
CLASSIFIER=${CLASSIFIER:-checkpoints/classifier}
INIT=${INIT:-}
START=0
if [ -n "$INIT" ]; then
  START=$(checkpoint_step "$INIT")
  [ "$(wc -w <<<"$FAMILIES")" = 1 ] || { echo "INIT branches one family's arms: give FAMILIES one family" >&2; exit 2; }
fi
mkdir -p "$OUT/snapshots"
export PY DATA OUT STEPS SNAP PRESET DEVICE INIT START

train_arm() {  # FAMILY ARM: train in SNAP-step segments (resume is exact), copying each end to a snapshot
  local family=$1 arm=$2 run="$OUT/$1-$2"
  for ((end = START + SNAP; end <= START + STEPS; end += SNAP)); do
    local snap
    snap=$(printf "%s/snapshots/%s-%s-%06d" "$OUT" "$family" "$arm" "$end")
    [ -f "$snap/model.safetensors" ] && continue
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$PY" train.py --model "$family" --preset "$PRESET" --device "$DEVICE" \
      --data "$DATA" --config "scripts/recipe_arms/$arm.json" --max-steps "$end" --save-every "$SNAP" \
      --sample-every "$SNAP" --out "$run" --resume latest ${INIT:+--init-from "$INIT"} --no-progress >>"$run.log" 2>&1 ||
      { echo "$family-$arm failed; see $run.log" >&2; return 1; }
    source scripts/common.sh
    # A run stopped by a signal saves and exits 0 short of its end: never file that as the end's snapshot.
    [ "$(checkpoint_step "$run/checkpoint")" = "$end" ] || { echo "$family-$arm stopped before step $end" >&2; return 1; }
    copy_checkpoint "$run/checkpoint" "$snap"
    echo "$snap"
  done
}
export -f train_arm
for family in $FAMILIES; do
  for arm in $ARMS; do
    [ -f "scripts/recipe_arms/$arm.json" ] || { echo "no arm scripts/recipe_arms/$arm.json" >&2; exit 2; }
    echo "$family $arm"
  done
done | xargs -P "$PARALLEL" -L 1 bash -c 'train_arm "$0" "$1"'
[ "${EVAL:-1}" = 0 ] && exit 0
snapshots=() defaults=()
for family in $FAMILIES; do
  defaults+=("$family=default")
  for arm in $ARMS; do
    for s in "$OUT"/snapshots/"$family-$arm"-[0-9]*; do [ -d "$s" ] && snapshots+=("$s"); done
  done
done
"$PY" -m facegen.evaluate --checkpoints "${snapshots[@]}" --classifier "$CLASSIFIER" --reference "$DATA" \
  --reference-fraction "${REFERENCE_FRACTION:-0.02}" --n "$N" --blends 2 --settings "${defaults[@]}" \
  --device "$DEVICE" --out "$OUT/eval"
echo "report: $OUT/eval/report.md"
