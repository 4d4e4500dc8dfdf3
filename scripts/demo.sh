#!/usr/bin/env bash
# The demo: installs what it needs, starts a local broker, trains a model on
# simulated normal plant data (once), serves, streams a simulated plant with
# injected faults, and shows the alerts Forewarn raises.
#   FOREWARN_DEMO_PORT  HTTP port (default 8080)
#   KEEP=1              leave the service running afterwards
#   DEMO_TRAIN_FLAGS    extra `forewarn train` flags for a fresh model, e.g.
#                       "--threshold-kind fixed" or "--kind autoencoder"
set -euo pipefail
cd "$(dirname "$0")/.."
port=${FOREWARN_DEMO_PORT:-8080}
say() { printf '\n\033[1;32m==> %s\033[0m\n' "$*"; }

say "Installing (idempotent) and building"
bash scripts/setup.sh
cargo build --workspace --bins -q
bin=target/debug/forewarn
bash scripts/broker.sh start

demo=.run/demo
mkdir -p "$demo"
if [ ! -f "$demo/model/model.json" ]; then
  say "Training a model on 3 hours of normal data from 16 simulated pumps"
  rm -rf "$demo/train"
  "$bin" simulate --csv-dir "$demo/train" --devices 16 --duration 3h --period 1s --seed 7
  # train's defaults: evaluate's default model and detector (docs/ACCURACY.md)
  "$bin" train --data "$demo"/train/*.csv --time-column ts --out "$demo/model" \
    --name plant-demo --device cpu ${DEMO_TRAIN_FLAGS:-}
else
  say "Reusing the model in $demo/model (delete it to retrain)"
fi

# Tansu keeps topics in memory across demo runs: a fresh set per run keeps
# earlier runs' readings out of this one.
run=$(date +%s)
cat > "$demo/forewarn.toml" <<TOML
[kafka]
brokers = "127.0.0.1:${FOREWARN_BROKER_PORT:-9092}"
group_id = "demo-$run"
input_topic = "demo-$run.readings"
alerts_topic = "demo-$run.alerts"
dead_letter_topic = "demo-$run.readings.dlq"
session_timeout_ms = 6000
[model]
path = "$demo/model"
[store]
path = "$demo/alerts-$run.db"
[http]
listen = "127.0.0.1:$port"
TOML

say "Starting forewarn serve on http://127.0.0.1:$port (log: $demo/serve.log)"
# FOREWARN_* variables override serve's configuration; the demo's own are not.
env -u FOREWARN_DEMO_PORT -u FOREWARN_BROKER_PORT "$bin" serve --config "$demo/forewarn.toml" >"$demo/serve.log" 2>&1 &
serve_pid=$!
trap '[ "${KEEP:-0}" = 1 ] || kill $serve_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 $serve_pid 2>/dev/null || { cat "$demo/serve.log"; exit 1; }
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$port/readyz"; echo

say "Streaming 40 simulated minutes of 12 pumps (faults: 0003 bearing-temperature drift @10m, 0005 one 3-second pressure spike @12m, 0007 flow step @15m, 0010 vibration oscillation @20m)"
"$bin" simulate --brokers "127.0.0.1:${FOREWARN_BROKER_PORT:-9092}" --topic "demo-$run.readings" \
  --devices 12 --period 1s --duration 40m --rate 6000 --seed 1 --start 2026-01-01T00:00:00Z \
  --fault plant-0003:bearing_temp:drift:30@10m \
  --fault plant-0007:flow:step:6@15m \
  --fault plant-0010:vibration_rms:oscillation:4:60s@20m \
  --fault plant-0005:outlet_pressure:spike:12@12m

say "Waiting for Forewarn to catch up"
want=$((12 * 2400))
for _ in $(seq 1 120); do
  got=$(curl -fsS "http://127.0.0.1:$port/metrics" | awk '/^forewarn_readings_accepted_total /{print $2}')
  [ "${got%.*}" -ge "$want" ] 2>/dev/null && break
  sleep 0.5
done

say "Alerts (GET /api/v1/alerts)"
curl -fsS "http://127.0.0.1:$port/api/v1/alerts?limit=100" | python3 scripts/show_alerts.py
echo "(the simulated plant starts at 00:00:00; times are simulated time)"
say "Metrics excerpt (GET /metrics)"
curl -fsS "http://127.0.0.1:$port/metrics" | grep -E '^forewarn_(readings_accepted_total|alerts_opened_total|alerts_open |inference_batch_size_(sum|count)|devices_tracked)' || true
if [ "${KEEP:-0}" = 1 ]; then
  say "Service left running: http://127.0.0.1:$port/api/v1/alerts  (stop: kill $serve_pid; broker: scripts/broker.sh stop)"
fi
