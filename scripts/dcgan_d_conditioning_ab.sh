#!/usr/bin/env bash
# A/B of how the DCGAN discriminator sees the mix: continue the generator shipped at START_REV (step 5,750) for
# STEPS steps with a fresh discriminator of each kind -- K constant input planes ("concat", the shipped
# recipe) or a projection of its pooled features ("projection", Miyato & Koyama 2018) -- with the same
# data order and seeds, then evaluate the start and every arm at N faces per mix (docs/eval/dcgan-d-conditioning).
# Safe to re-run: each arm resumes. About 20 CPU minutes per arm at one thread for STEPS=500.
source "$(dirname "$0")/common.sh"
STEPS=${STEPS:-500}
N=${N:-50}
START_REV=${START_REV:-3e65376}
KINDS=${KINDS:-concat projection}  # AC-GAN has its own A/B: scripts/dcgan_acgan_ab.sh
start=runs/ab/dcgan-5750
checkpoint_at "$START_REV" dcgan "$start"
end=$(($(checkpoint_step "$start") + STEPS))
mkdir -p runs/ab
arms=()
for kind in $KINDS; do
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$PY" train.py --model dcgan --data "$DATA" --max-steps "$end" --save-every 250 \
    --sample-every 500 --d-conditioning "$kind" --out "runs/dcgan-$kind" --resume latest \
    --init-from "$start" --no-progress >>"runs/dcgan-$kind.log" 2>&1 &
done
wait
for kind in $KINDS; do
  rm -rf "runs/ab/dcgan-$kind-$end" && copy_checkpoint "runs/dcgan-$kind/checkpoint" "runs/ab/dcgan-$kind-$end"
  arms+=("runs/ab/dcgan-$kind-$end")
done
"$PY" -m facegen.evaluate --checkpoints "$start" "${arms[@]}" \
  --classifier checkpoints/classifier --reference "$DATA" --n "$N" --blends 2 --settings dcgan=single:1 \
  --out docs/eval/dcgan-d-conditioning --grids runs/ab/grids-dcgan-d-conditioning
