#!/usr/bin/env bash
# API under load (a benchmark, not a test: not in CI, not in cargo test).
#
# 1. Installs wrk (Debian, idempotent), builds the release binary, starts the
#    local broker if none listens, reuses .run/demo/model or trains a small
#    model into .run/api-load/model.
# 2. Starts `forewarn serve` on a free loopback port with a fresh topic,
#    group and store, measures the maximum ingestion rate: preloads
#    DEVICES x PRELOAD_PER_DEVICE readings (faults on FAULTS devices, so
#    alerts exist) while serve is stopped, restarts it and times
#    forewarn_readings_accepted_total from the first accepted reading to the
#    last.
# 3. Produces at HALF that rate (forewarn simulate --rate) for LOAD_SECONDS
#    while wrk hammers GET /api/v1/alerts?limit=50, /api/v1/alerts?device=…
#    and /api/v1/devices/{id} (scripts/api-load/urls.lua) on 127.0.0.1, and
#    samples /metrics every 0.5 s (accepted readings, forewarn_consumer_lag).
# 4. Prints request rate, p50/p99 latency, ingestion achieved vs offered,
#    max lag, and how long after the producer stopped the service had
#    accepted everything produced (PASS when within CATCHUP_OK seconds).
#
# Knobs (environment): DEVICES (1000), PRELOAD_PER_DEVICE (1000),
# LOAD_SECONDS (60), WRK_THREADS (2), WRK_CONNECTIONS (32),
# BASELINE_SECONDS (10; wrk without ingestion first, 0 = skip),
# CATCHUP_OK (5), FOREWARN_BROKER_PORT (9092), RATE (skip step 2 and offer
# this rate), NO_WRK=1 (control run: the same ingestion without wrk). Every step has a timeout; only 127.0.0.1 is ever targeted.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

devices=${DEVICES:-1000}
preload_per_device=${PRELOAD_PER_DEVICE:-1000}
load_seconds=${LOAD_SECONDS:-60}
wrk_threads=${WRK_THREADS:-2}
wrk_conns=${WRK_CONNECTIONS:-32}
baseline_seconds=${BASELINE_SECONDS:-10}
catchup_ok=${CATCHUP_OK:-5}
broker_port=${FOREWARN_BROKER_PORT:-9092}
brokers="127.0.0.1:$broker_port"
bin=target/release/forewarn
export NO_COLOR=1

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'api-load: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }
strip_ansi() { sed -e 's/\x1b\[[0-9;]*m//g'; }

say "machine: $(nproc) cores; $(uptime)"

# --- 1. tools, build, broker, model -----------------------------------------
if ! command -v wrk >/dev/null; then
  say "Installing wrk"
  timeout 300 apt-get install -y wrk >/dev/null 2>&1 ||
    { timeout 300 apt-get update >/dev/null && timeout 300 apt-get install -y wrk >/dev/null; }
fi
command -v wrk >/dev/null || die "wrk is not installed"
command -v python3 >/dev/null || die "python3 is needed (free port)"

say "Building the release binary"
timeout 3600 cargo build --release -p forewarn -q
FOREWARN_BROKER_PORT=$broker_port timeout 60 bash scripts/broker.sh start

work=.run/api-load
mkdir -p "$work"
if [ -f .run/demo/model/model.json ]; then
  model=.run/demo/model
  say "Reusing the model in $model"
elif [ -f "$work/model/model.json" ]; then
  model=$work/model
  say "Reusing the model in $model"
else
  model=$work/model
  say "Training a small model into $model"
  rm -rf "$work/train"
  timeout 300 "$bin" simulate --csv-dir "$work/train" --devices 8 --duration 2h --period 1s --seed 7
  timeout 900 "$bin" train --data "$work"/train/*.csv --time-column ts --out "$model" \
    --name api-load --hidden 32 --epochs 20 --device cpu
fi

# --- 2. fresh service --------------------------------------------------------
run=$(date +%s)
dir=$work/$run
mkdir -p "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
api=http://127.0.0.1:$port
topic=api-load-$run.readings
cat > "$dir/forewarn.toml" <<TOML
[kafka]
brokers = "$brokers"
group_id = "api-load-$run"
input_topic = "$topic"
alerts_topic = "api-load-$run.alerts"
dead_letter_topic = "api-load-$run.readings.dlq"
session_timeout_ms = 6000
topic_partitions = 8
[model]
path = "$model"
device = "cpu"
[store]
path = "$dir/alerts.db"
[http]
listen = "127.0.0.1:$port"
TOML

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

serve_pid=
start_serve() {
  "$bin" serve --config "$dir/forewarn.toml" >>"$dir/serve.log" 2>&1 &
  serve_pid=$!
  pids+=("$serve_pid")
  for _ in $(seq 1 240); do
    curl -fsS --max-time 2 "$api/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$serve_pid" 2>/dev/null || { tail -30 "$dir/serve.log" >&2; die "serve exited"; }
    sleep 0.5
  done
  tail -30 "$dir/serve.log" >&2
  die "serve not ready within 120 s"
}
stop_serve() {
  kill -TERM "$serve_pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "$serve_pid" 2>/dev/null || true
  wait "$serve_pid" 2>/dev/null || true
}
metrics() { curl -fsS --max-time 2 "$api/metrics" 2>/dev/null || true; }
accepted() { metrics | awk '/^forewarn_readings_accepted_total /{printf "%d", $2; f=1} END{if(!f) print 0}'; }

# Faults on every 50th device from 0003 on, early enough to alert in the preload.
faults=()
faulted=()
kinds=(flow:step:6 bearing_temp:drift:30 vibration_rms:oscillation:4:60s outlet_pressure:step:6)
i=0
for d in $(seq 3 50 $((devices - 1))); do
  id=$(printf 'plant-%04d' "$d")
  faults+=(--fault "$id:${kinds[$((i % 4))]}@$((120 + i % 5 * 30))s")
  faulted+=("$id")
  i=$((i + 1))
done
faulted_csv=$(IFS=,; echo "${faulted[*]}")

simulate() { # time bound (s), log file, then simulate args
  local bound=$1 log=$2; shift 2
  timeout "$bound" "$bin" simulate --brokers "$brokers" --topic "$topic" --devices "$devices" --period 1s \
    "${faults[@]}" "$@" >"$log" 2>&1
}
sent_of() { strip_ansi <"$1" | sed -n 's/.*simulation finished.* sent=\([0-9]*\).*/\1/p' | tail -1; }
secs_of() { strip_ansi <"$1" | sed -n 's/.*simulation finished.* seconds="\{0,1\}\([0-9.]*\).*/\1/p' | tail -1; }

say "Starting forewarn serve on $api (topic $topic, log $dir/serve.log)"
start_serve # creates the topics (8 partitions)

preload_sent=0
base=1767225600 # 2026-01-01T00:00:00Z, simulated time
if [ -z "${RATE:-}" ]; then
  stop_serve
  say "Preloading $devices devices x $preload_per_device readings (${#faulted[@]} with faults) with serve stopped"
  simulate 600 "$dir/preload.log" --rate 0 --count "$preload_per_device" --seed 1 --start 2026-01-01T00:00:00Z ||
    { tail -5 "$dir/preload.log" >&2; die "preload failed"; }
  preload_sent=$(sent_of "$dir/preload.log")
  say "preloaded $preload_sent readings in $(secs_of "$dir/preload.log") s; restarting serve and timing consumption"
  start_serve
  t_first= a_first=0 t_last= a=0
  deadline=$(( $(now_ms) + 600000 ))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    a=$(accepted); t=$(now_ms)
    if [ -z "$t_first" ] && [ "$a" -gt 0 ]; then t_first=$t; a_first=$a; fi
    if [ "$a" -ge "$preload_sent" ]; then t_last=$t; break; fi
    sleep 0.1
  done
  [ -n "$t_last" ] || die "serve accepted only $a of $preload_sent preloaded readings in 600 s"
  max_rate=$(( (a - a_first) * 1000 / (t_last - t_first) ))
  rate=$((max_rate / 2))
  say "max ingestion: $((a - a_first)) readings in $(( t_last - t_first )) ms = $max_rate readings/s; offering half: $rate/s"
else
  max_rate=n/a
  rate=$RATE
  preload_sent=0
fi
load_start=$(date -u -d "@$((base + preload_per_device + 60))" +%Y-%m-%dT%H:%M:%SZ)

alerts_now=$(curl -fsS --max-time 5 "$api/api/v1/alerts?limit=200" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["alerts"]))' 2>/dev/null || echo '?')
say "alerts in the store before the load phase: $alerts_now (first page of up to 200)"

wrk_run() { # seconds, output file
  DEVICES=$devices FAULTED=$faulted_csv timeout $(($1 + 30)) \
    wrk -t "$wrk_threads" -c "$wrk_conns" -d "${1}s" --timeout 5s --latency \
    -s scripts/api-load/urls.lua "$api" >"$2" 2>&1
}
wrk_field() { # file, field: rps | p50 | p99 | requests | errors | non2xx
  case $2 in
    rps) awk '/^Requests\/sec:/{print $2}' "$1" ;;
    p50) awk '/Latency Distribution/{f=1} f && $1=="50%"{print $2; exit}' "$1" ;;
    p99) awk '/Latency Distribution/{f=1} f && $1=="99%"{print $2; exit}' "$1" ;;
    requests) awk '/requests in/{print $1; exit}' "$1" ;;
    errors) awk '/Socket errors/{print; f=1} END{if(!f) print "none"}' "$1" ;;
    non2xx) awk '/Non-2xx/{print $NF; f=1} END{if(!f) print 0}' "$1" ;;
  esac
}

if [ "$baseline_seconds" -gt 0 ]; then
  say "Baseline: wrk for ${baseline_seconds} s with no ingestion"
  wrk_run "$baseline_seconds" "$dir/wrk-baseline.txt"
fi

# --- 3. half load + wrk ------------------------------------------------------
count=$(( rate * load_seconds / devices ))
[ "$count" -gt 0 ] || die "rate $rate too low for $devices devices"
say "Load phase: $devices devices x $count readings at $rate readings/s (~${load_seconds} s) while wrk -t$wrk_threads -c$wrk_conns runs"
a0=$(accepted)
: >"$dir/samples.txt"
(
  end=$(( $(now_ms) + (load_seconds * 3 + 120) * 1000 ))
  while [ "$(now_ms)" -lt "$end" ]; do
    m=$(metrics)
    printf '%s %s %s\n' "$(now_ms)" \
      "$(printf '%s\n' "$m" | awk '/^forewarn_readings_accepted_total /{printf "%d", $2}')" \
      "$(printf '%s\n' "$m" | awk '/^forewarn_consumer_lag\{/{s+=$2} END{printf "%d", s}')" >>"$dir/samples.txt"
    sleep 0.5
  done
) &
sampler_pid=$!
pids+=("$sampler_pid")

t_prod0=$(now_ms)
simulate $((load_seconds * 2 + 60)) "$dir/load.log" --rate "$rate" --count "$count" --seed 2 --start "$load_start" &
prod_pid=$!
pids+=("$prod_pid")
sleep 2
wrk_seconds=$((load_seconds - 4))
if [ "${NO_WRK:-0}" = 1 ]; then
  echo "control run: no wrk (NO_WRK=1)" >"$dir/wrk-load.txt"
  wrk_pid=
else
  wrk_run "$wrk_seconds" "$dir/wrk-load.txt" &
  wrk_pid=$!
  pids+=("$wrk_pid")
fi

# Bounded wait for the producer.
for _ in $(seq 1 $(( (load_seconds * 2 + 60) * 2 ))); do
  kill -0 "$prod_pid" 2>/dev/null || break
  sleep 0.5
done
if kill -0 "$prod_pid" 2>/dev/null; then kill "$prod_pid"; die "producer overran its time bound"; fi
wait "$prod_pid" || { tail -5 "$dir/load.log" >&2; die "producer failed"; }
t_prod1=$(now_ms)
load_sent=$(sent_of "$dir/load.log")
load_secs=$(secs_of "$dir/load.log")
want=$((preload_sent + load_sent))

# Catch-up: every produced reading accepted.
t_caught=
for _ in $(seq 1 600); do
  a=$(accepted)
  if [ "$a" -ge "$want" ]; then t_caught=$(now_ms); break; fi
  sleep 0.1
done
[ -z "$wrk_pid" ] || wait "$wrk_pid" || true
sleep 1
kill "$sampler_pid" 2>/dev/null || true
wait "$sampler_pid" 2>/dev/null || true

# --- 4. report ---------------------------------------------------------------
read -r max_lag lag_at_end < <(awk -v t0="$t_prod0" -v t1="$t_prod1" \
  '$1>=t0 && $1<=t1 && $3!="" {if($3>m)m=$3; last=$3} END{printf "%d %d\n", m, last}' "$dir/samples.txt")
# Accepted while the producer ran, from the first sample where the count
# moved (leaves out the producer's own start-up) to the producer's end.
achieved=$(awk -v t0="$t_prod0" -v t1="$t_prod1" -v a0="$a0" '
  $1>=t0 && $1<=t1 && $2!="" && $2>a0 { if (!s) { s=1; ta=$1; aa=$2 } tb=$1; ab=$2 }
  END { if (tb>ta) printf "%d", (ab-aa)*1000/(tb-ta); else print "n/a" }' "$dir/samples.txt")
offered=$(awk -v n="$load_sent" -v s="$load_secs" 'BEGIN{ if (s>0) printf "%d", n/s; else print "n/a" }')
# Backlog = readings the producer had delivered to the broker minus readings
# serve had accepted, at each producer progress line (every 5 s), with the
# accepted count interpolated from the samples: finer than the lag gauge.
backlog=$(python3 - "$dir/load.log" "$dir/samples.txt" "$a0" <<'PY'
import re, sys, datetime, bisect
log, samples, a0 = sys.argv[1], sys.argv[2], int(sys.argv[3])
pts = []
for line in open(samples):
    f = line.split()
    if len(f) >= 2 and f[1]:
        pts.append((int(f[0]), int(f[1])))
ts = [t for t, _ in pts]
def acc_at(t):
    i = bisect.bisect_left(ts, t)
    if i == 0 or i >= len(pts):
        return None
    (t0, a0_), (t1, a1) = pts[i - 1], pts[i]
    return a0_ + (a1 - a0_) * (t - t0) / max(1, t1 - t0)
worst = []
for line in open(log):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    m = re.match(r"(\S+)Z .*simulate progress .*delivered=(\d+)", line)
    if not m:
        continue
    t = int(datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)
    acc = acc_at(t)
    if acc is not None:
        worst.append(int(int(m.group(2)) - (acc - a0)))
print(f"max {max(worst)}, median {sorted(worst)[len(worst)//2]} over {len(worst)} points" if worst else "n/a")
PY
)
if [ -n "$t_caught" ]; then
  catchup_ms=$((t_caught - t_prod1))
  verdict=$(awk -v c="$catchup_ms" -v ok="$catchup_ok" 'BEGIN{print (c <= ok*1000) ? "PASS" : "FAIL"}')
else
  catchup_ms="never (60 s)"; verdict=FAIL
fi
rejected=$(metrics | awk '/^forewarn_messages_rejected_total/{s+=$2} END{printf "%d", s}')
alerts_after=$(curl -fsS --max-time 5 "$api/api/v1/alerts?limit=200" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["alerts"]))' 2>/dev/null || echo '?')
http_5xx=$(metrics | awk '/^forewarn_http_requests_total\{/ && /route="\/api/ && /status="5/{s+=$2} END{printf "%d", s}')
routes=$(metrics | awk '/^forewarn_http_requests_total\{/ && /route="\/api/ {print "  " $0}')

{
  echo
  echo "== api-load results ($(date -u +%FT%TZ); $(nproc) cores; $(uptime | sed 's/.*load average/load average/'))"
  echo "service: $bin serve, model $model, topic $topic (8 partitions), broker $brokers, api $api"
  echo "max ingestion (preload of $preload_sent readings, serve alone): $max_rate readings/s"
  if [ "$baseline_seconds" -gt 0 ]; then
    echo "wrk baseline, no ingestion (${baseline_seconds} s, -t$wrk_threads -c$wrk_conns): $(wrk_field "$dir/wrk-baseline.txt" rps) req/s, p50 $(wrk_field "$dir/wrk-baseline.txt" p50), p99 $(wrk_field "$dir/wrk-baseline.txt" p99), non-2xx $(wrk_field "$dir/wrk-baseline.txt" non2xx)"
  fi
  [ "${NO_WRK:-0}" = 1 ] && echo "wrk under ingestion: skipped (NO_WRK=1, control run)" ||
  echo "wrk under ingestion (${wrk_seconds} s, -t$wrk_threads -c$wrk_conns): $(wrk_field "$dir/wrk-load.txt" requests) requests, $(wrk_field "$dir/wrk-load.txt" rps) req/s, p50 $(wrk_field "$dir/wrk-load.txt" p50), p99 $(wrk_field "$dir/wrk-load.txt" p99), non-2xx $(wrk_field "$dir/wrk-load.txt" non2xx), socket errors: $(wrk_field "$dir/wrk-load.txt" errors)"
  echo "ingestion: offered $offered readings/s (target $rate; $load_sent readings in $load_secs s), accepted during the run $achieved readings/s"
  echo "consumer lag (sum over partitions, /metrics every 0.5 s, gauge refreshed every 5 s): max $max_lag, last while producing $lag_at_end"
  echo "backlog (delivered by the producer - accepted by serve, at the producer's 5 s progress lines): $backlog"
  echo "catch-up: all $want readings accepted $catchup_ms ms after the producer stopped (bound ${catchup_ok} s): $verdict"
  echo "rejected readings: $rejected; HTTP 5xx on /api counted by the service: $http_5xx; alerts (first page of 200): before $alerts_now, after $alerts_after"
  echo "requests counted by the service:"; echo "$routes"
  echo "files: $dir (serve.log, wrk-*.txt, samples.txt, preload.log, load.log)"
} | tee "$dir/summary.txt"
stop_serve
[ "$verdict" = PASS ]
