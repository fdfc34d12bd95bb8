#!/usr/bin/env bash
# Quality against training CPU-hours of the diffusion runs (issue 11): every snapshot in runs/snapshots/
# (scripts/snapshot_runs.sh) not yet in docs/eval/diffusion-trend/report.json is evaluated at its family's
# default sampler, steps and guidance, and at the setting the trend of the recipe before issue 11 used
# (docs/eval/trend: DDPM DPM-Solver++ 20, score-SDE Euler-Maruyama 50, guidance 1, 10 faces per mix, seeds
# 10000+), so the two recipes compare at equal images seen; N faces per mix; earlier rows are kept, so
# snapshots can be deleted and the curve survives. Writes report.md and quality_vs_steps.png (x: CPU-hours).
# Run it after any change of the defaults on a fresh report: the rows of a snapshot are not re-measured.
# SETTINGS="ddpm=default sde=default" measures later snapshots at the defaults only (the old recipe's
# trend ends at 1,500 steps, so its settings compare nothing there); a changed default starts a new curve.
source "$(dirname "$0")/common.sh"
N=${N:-10}
out=docs/eval/diffusion-trend
mkdir -p runs
todo=()
# SNAPSHOTS="runs/snapshots/ddpm-001000 ..." evaluates only those (e.g. every other one when time is short).
for s in ${SNAPSHOTS:-runs/snapshots/ddpm-* runs/snapshots/sde-*}; do  # with runs named by RUN_NAMES
  [ -d "$s" ] || continue
  if [ -f "$out/report.json" ] && grep -q "\"model\": \"$(basename "$s")\"" "$out/report.json"; then continue; fi
  todo+=("$s")
done
[ ${#todo[@]} -gt 0 ] || { echo "every snapshot is in $out already"; exit 0; }
keep=()
if [ -f "$out/report.json" ]; then cp "$out/report.json" runs/diffusion-trend-before.json && keep=(--keep-earlier runs/diffusion-trend-before.json); fi
"$PY" -m facegen.evaluate --checkpoints "${todo[@]}" "${keep[@]}" --classifier checkpoints/classifier \
  --reference "$DATA" --n "$N" --blends 2 --no-nfe-plot --settings ${SETTINGS:-ddpm=default ddpm=dpmpp:20 sde=default sde=euler_maruyama:50} --out "$out" \
  --grids runs/eval-grids/diffusion-trend
