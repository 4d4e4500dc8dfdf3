#!/bin/sh
# Trains the demo model for docker-compose.yml (service model-init), the way
# scripts/demo.sh does: three hours of simulated normal operation of 16 pumps
# (other devices than the ones the `simulator` service streams, same
# channels), ending now so the daily cycle lines up with the live stream,
# then a small forecaster. Runs inside the Forewarn image (POSIX sh); does
# nothing when a model already exists, unless RETRAIN=1.
#
# Environment: MODEL_DIR (default /models/current), DEMO_DEVICES (16),
# DEMO_DURATION (3h), DEMO_EPOCHS (40), FOREWARN (the binary, default forewarn).
set -eu

out=${MODEL_DIR:-/models/current}
devices=${DEMO_DEVICES:-16}
duration=${DEMO_DURATION:-3h}
epochs=${DEMO_EPOCHS:-40}
forewarn=${FOREWARN:-forewarn}

if [ -f "$out/model.json" ] && [ "${RETRAIN:-0}" != 1 ]; then
  echo "model-init: $out already holds a model (FOREWARN_DEMO_RETRAIN=1 trains a new one)"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
hours=${duration%h}
case "$hours" in *[!0-9]*|'') hours=3 ;; esac
start=$(date -u -d "@$(( $(date +%s) - hours * 3600 ))" +%Y-%m-%dT%H:%M:%SZ)

echo "model-init: simulating $duration of normal operation of $devices devices from $start"
"$forewarn" simulate --csv-dir "$work/train" --devices "$devices" --duration "$duration" \
  --period 1s --seed 7 --start "$start"
"$forewarn" train --data "$work"/train/*.csv --time-column ts --out "$work/model" \
  --name plant-demo --hidden 32 --epochs "$epochs" --device cpu

# Swap the new model in whole.
mkdir -p "$(dirname "$out")"
rm -rf "$out.new"
cp -r "$work/model" "$out.new"
rm -rf "$out"
mv "$out.new" "$out"
echo "model-init: model written to $out"
