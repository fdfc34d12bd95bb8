#!/usr/bin/env bash
# AC-GAN A/B: continue the DCGAN shipped at START_REV (step 5,750, trained with the concat discriminator)
# with a fresh AC-GAN discriminator (README, "The library"), four arms, same data order and seeds:
#   acgan       weight 1, no blends, group head at the base LR (cond_lr_mult 1)   to 6,250
#   acganblend  weight 1, blends 0.5, head at 10x                                  to 6,750
#   acganw2     weight 2, blends 0.5, head at 10x                                  to 7,250
#   acganw3     acganw2's state at 6,750 continued with weight 3                   to 7,250
# snapshotting every 250 steps into runs/ab/, then evaluate every snapshot and the start at N faces per
# mix (docs/eval/dcgan-acgan). Snapshots already in runs/ab/ are not retrained, so a re-run only evaluates.
# About 3 s/step per arm at one thread with two arms on two cores.
source "$(dirname "$0")/common.sh"
START_REV=${START_REV:-3e65376}
N=${N:-100}
start=runs/ab/dcgan-5750
checkpoint_at "$START_REV" dcgan "$start"
echo '{"train": {"cond_lr_mult": 1.0}}' >runs/ab/head-lr-x1.json

# arm NAME END... -- FLAGS: train runs/dcgan-NAME to each END in turn, snapshot at each.
arm() {
  local name=$1 ends=() end
  shift
  while [ "$1" != "--" ]; do ends+=("$1") && shift; done
  shift
  for end in "${ends[@]}"; do
    [ -d "runs/ab/dcgan-$name-$end" ] && continue
    OMP_NUM_THREADS=1 "$PY" train.py --model dcgan --data "$DATA" --max-steps "$end" --save-every 250 \
      --sample-every 250 --d-conditioning acgan --out "runs/dcgan-$name" --resume latest --init-from "$start" \
      --no-progress "$@" >>"runs/dcgan-$name.log" 2>&1
    copy_checkpoint "runs/dcgan-$name/checkpoint" "runs/ab/dcgan-$name-$end"
  done
}
arm acgan 6000 6250 -- --config runs/ab/head-lr-x1.json &
arm acganblend 6250 6500 6750 -- --acgan-blends 0.5 &
wait
arm acganw2 6250 6500 6750 -- --acgan-blends 0.5 --acgan-weight 2
[ -d runs/dcgan-acganw3 ] || cp -r runs/dcgan-acganw2 runs/dcgan-acganw3  # the fork (a resume is exact)
arm acganw2 7000 7250 -- --acgan-blends 0.5 --acgan-weight 2 &
arm acganw3 7000 7250 -- --acgan-blends 0.5 --acgan-weight 3 &
wait
"$PY" -m facegen.evaluate --checkpoints "$start" runs/ab/dcgan-acgan*-[0-9]* \
  --classifier checkpoints/classifier --reference "$DATA" --n "$N" --blends 2 --settings dcgan=single:1 \
  --out docs/eval/dcgan-acgan --grids runs/ab/grids-dcgan-acgan
