#!/usr/bin/env bash
# Train (or resume) the shipped models and the group classifier on UTKFace, in the background,
# one thread each (two OpenMP processes on two cores stall each other otherwise). Safe to re-run: every
# run resumes from runs/<model>/state.pt; when that state is gone (a fresh machine) it starts from the shipped
# weights in checkpoints/<model> if they are the network the recipe configures (checkpoint_fits), else from
# scratch (the diffusion checkpoints shipped before issue 11's recipe are not). Then ship with
# scripts/ship_checkpoints.sh.
# MODELS="ddpm sde" trains a subset (e.g. to give the diffusion models the two cores); MODELS="vae vaegan"
# the autoencoder baselines.
source "$(dirname "$0")/common.sh"
mkdir -p runs
export OMP_NUM_THREADS=1
MODELS=${MODELS:-ddpm sde dcgan}
init_from() { if checkpoint_fits "$1" cpu; then echo "--init-from checkpoints/$1"; fi; }
for model in $MODELS; do
  case $model in
    # the shipped DCGAN's recipe since step 5,750 (README "Results"): AC-GAN discriminator
    dcgan) budget=(--max-steps 20000 --save-every 250 --sample-every 500 --d-conditioning acgan --acgan-weight 3
      --acgan-blends 0.5) ;;
    vae) budget=(--max-steps 8000) ;;       # 25 epochs at batch 64
    vaegan) budget=(--max-steps 6000) ;;
    *) budget=(--max-steps 40000) ;;
  esac
  # shellcheck disable=SC2046  # init_from prints zero or two words
  nohup nice -n 5 "$PY" train.py --model "$model" --data "$DATA" "${budget[@]}" --out "runs/$model" \
    --resume latest $(init_from "$model") --no-progress >>"runs/$model.log" 2>&1 &
done
if [ ! -f runs/classifier/model.safetensors ] && [ ! -f checkpoints/classifier/model.safetensors ]; then
  nohup nice -n 5 "$PY" -m facegen.classifier --data "$DATA" --steps 1500 --out runs/classifier >>runs/classifier.log 2>&1 &
fi
echo "training in the background; follow runs/*/log.jsonl and runs/*/samples-*.png"
