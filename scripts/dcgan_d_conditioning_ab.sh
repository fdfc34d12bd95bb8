#!/usr/bin/env bash
# A/B of how the DCGAN discriminator sees the mix: continue the shipped generator (checkpoints/dcgan) for
# STEPS steps with a fresh discriminator of each kind -- K constant input planes ("concat", the shipped
# recipe), a projection of its pooled features ("projection", Miyato & Koyama 2018) or no mix at its input
# and a group head instead ("acgan", Odena et al. 2017) -- with the same data order and seeds, then evaluate
# the start and every arm at N faces per mix (docs/eval/dcgan-d-conditioning).
# Safe to re-run: each arm resumes. About 20 CPU minutes per arm at one thread for STEPS=500.
source "$(dirname "$0")/common.sh"
STEPS=${STEPS:-500}
N=${N:-50}
KINDS=${KINDS:-concat projection acgan}
start=$(checkpoint_step checkpoints/dcgan)
end=$((start + STEPS))
mkdir -p runs/ab
arms=()
for kind in $KINDS; do
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$PY" train.py --model dcgan --data "$DATA" --max-steps "$end" --save-every 250 \
    --sample-every 500 --d-conditioning "$kind" --out "runs/dcgan-$kind" --resume latest \
    --init-from checkpoints/dcgan --no-progress >>"runs/dcgan-$kind.log" 2>&1 &
done
wait
for kind in $KINDS; do
  rm -rf "runs/ab/dcgan-$kind-$end" && cp -r "runs/dcgan-$kind/checkpoint" "runs/ab/dcgan-$kind-$end"
  arms+=("runs/ab/dcgan-$kind-$end")
done
"$PY" -m facegen.evaluate --checkpoints checkpoints/dcgan "${arms[@]}" \
  --classifier checkpoints/classifier --reference "$DATA" --n "$N" --blends 2 --settings dcgan=single:1 \
  --out docs/eval/dcgan-d-conditioning
