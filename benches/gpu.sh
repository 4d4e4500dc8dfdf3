#!/usr/bin/env bash
# The GPU run, from the bundle scripts/gpu-bundle.sh builds, on a lent GPU
# machine (no Rust, no registry there) in one call of the device tool's `run`
# (docs/BENCHMARKS.md, "GPU"; build the bundle first, in the checkout that
# `run` sends):
#     command: bash benches/gpu.sh
#     carry: ["gpu-bundle"]
#     timeout_s: 540
# Stages, each with a line in $OUT/summary.txt ([PASS] [FAIL] [INFO] [SKIP]):
#   bundle      unpack Tansu and the TEP files; find the image's torch/lib;
#               every library the binary needs resolves (ldd)
#   devices     nvidia-smi; `forewarn version --devices`: the libtorch, CUDA
#               and cuDNN the binary itself sees
#   forecaster  `forewarn bench --forecaster-only` on CUDA at 1k..64k devices
#               per call, f32 then bf16 (8 channels, hidden 64, 2 layers,
#               horizon 10): the curve into $OUT/forecaster.csv, the best f32
#               rate against the bar of 5,000,000 readings/s
#   evaluate    TEP, docs/accuracy/default.toml: a CPU run, then the same
#               CPU-trained model scored on CUDA (--score-device cuda), every
#               decision compared (benches/gpu_compare.py: equal flags, scores
#               within 1e-2); then, for information, trained on CUDA too, and
#               scored in bf16
#   serve       Tansu from the bundle; `forewarn serve` with model.device =
#               cuda on a CPU-trained TEP model; every TEP test run replayed by
#               `forewarn simulate`; the alerts read from the API and compared
#               with the CPU evaluate run's decisions
#   convlstm    simulated 8x8 plates (`forewarn simulate --grid`): a convlstm
#               trained on CPU per plate, scored on CPU and on CUDA
#               (--score-device), every decision compared as for TEP; then
#               `forewarn bench --kind convlstm --forecaster-only` on CUDA
#   e2e         `forewarn bench --device cuda` end to end (no Python peer),
#               when time is left
# All output goes to $OUT/run.log, the per-stage logs, reports and decision
# files into $OUT/details.tar.gz (the tool returns at most 8 files).
#
# Usage: bash benches/gpu.sh [--cpu-dry-run] [--stages a,b,...] [--budget SECONDS]
#   --cpu-dry-run  the same stages on this machine's CPU with small sizes and
#                  no nvidia-smi, with FOREWARN_BIN or target/debug/forewarn
#                  (the bundle's binary needs the GPU image's CUDA libraries)
#                  but the bundle's Tansu and TEP files; OUT defaults to
#                  .run/gpu-dry-run. CI runs it (scripts/test.sh).
#   --budget       seconds for the whole run (default 420; the dry run 900):
#                  a stage that would not fit in what is left is skipped,
#                  and says so.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

IMAGE_TORCH_LIB=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib
dry=0
stages=bundle,devices,forecaster,evaluate,serve,convlstm,e2e
budget=
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-dry-run) dry=1 ;;
    --stages) stages=$2; shift ;;
    --budget) budget=$2; shift ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

if [ "$dry" = 1 ]; then
  DEV=cpu
  budget=${budget:-900}  # no device time at stake: run every stage, even on a slow box
  BIN=${FOREWARN_BIN:-target/debug/forewarn}
  OUT=${OUT:-.run/gpu-dry-run}
  SIZES=(64)
  SECS=1
  # A debug binary scores TEP ~50x slower than release: two test runs and
  # a short training keep the dry run's stages to about a minute.
  TEST_RUNS=(01 00)
  DRY_CONFIG='[model]\nepochs = 2\n[threshold]\nkind = "fixed"\n'
  TRAIN_ARGS=(--epochs 2 --threshold-kind fixed)
  PLATE_ROWS=300 CONV_EPOCHS='epochs = 2' CONV_SIZES=(16)
else
  DEV=cuda
  budget=${budget:-420}
  BIN=${FOREWARN_BIN:-gpu-bundle/forewarn}
  OUT=${OUT:-.run/gpu-$(date -u +%Y%m%dT%H%M%SZ)}
  SIZES=(1024 2048 4096 8192 16384 32768 65536)
  SECS=3
  TEST_RUNS=($(seq -w 1 21) 00)
  DRY_CONFIG=''
  TRAIN_ARGS=()
  PLATE_ROWS=1440 CONV_EPOCHS='' CONV_SIZES=(256 1024 4096)
fi
BAR=5000000
THREADS=$(nproc)
BUNDLE=gpu-bundle
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/forewarn-gpu.XXXXXX")
mkdir -p "$WORK/logs" "$WORK/reports" "$WORK/decisions"
: > "$OUT/summary.txt"
exec > >(tee -a "$OUT/run.log") 2>&1
START=$SECONDS
failed=0
pids=()

cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  pack
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '[gpu %3ds] %s\n' "$((SECONDS - START))" "$*"; }
# A stage's result: one line in summary.txt (and in the log).
summary() {
  local status=$1; shift
  [ "$status" = FAIL ] && failed=1
  printf '[%s] %s\n' "$status" "$*" | tee -a "$OUT/summary.txt"
}
left() { echo $((budget - (SECONDS - START))); }
# Whether stage $1 is selected and at least $2 seconds are left for it.
want() {
  [[ ",$stages," == *",$1,"* ]] || return 1
  if [ "$(left)" -lt "$2" ]; then
    summary SKIP "$1: $(left) s of the ${budget} s budget left, it needs about $2"
    return 1
  fi
  log "stage $1 ($(left) s left)"
}
# The details that do not fit in summary.txt, packed after every stage so a
# run cut short still returns them.
pack() { tar -czf "$OUT/details.tar.gz" -C "$WORK" logs reports decisions 2>/dev/null; }
# run LOG SECONDS CMD...: the command's output into logs/LOG and run.log.
run() {
  local name=$1 secs=$2; shift 2
  log "\$ $*"
  timeout --kill-after=5 "$secs" "$@" 2>&1 | tee "$WORK/logs/$name.log"
}
http_get() {
  python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"
}

log "OUT=$OUT WORK=$WORK BIN=$BIN device=$DEV budget=${budget}s stages=$stages"

# ---------------------------------------------------------------------------
bundle_ok=0
if want bundle 10; then
  missing=""
  for f in tansu.xz tep.tar.xz; do [ -s "$BUNDLE/$f" ] || missing+=" $BUNDLE/$f"; done
  [ -x "$BIN" ] || missing+=" $BIN"
  if [ -n "$missing" ]; then
    summary FAIL "bundle: missing$missing (scripts/gpu-bundle.sh builds it; the run call must carry gpu-bundle)"
  else
    python3 - "$BUNDLE" "$WORK" <<'PY'
import lzma, os, sys, tarfile
bundle, work = sys.argv[1], sys.argv[2]
with open(f"{work}/tansu", "wb") as f:
    f.write(lzma.open(f"{bundle}/tansu.xz").read())
os.chmod(f"{work}/tansu", 0o755)
with tarfile.open(f"{bundle}/tep.tar.xz") as tar:
    try:
        tar.extractall(work, filter="data")
    except TypeError:  # a Python without extraction filters (before 3.11.4)
        tar.extractall(work)
PY
    [ -f "$BUNDLE/MANIFEST" ] && sed -n '1,3p' "$BUNDLE/MANIFEST"
    if [ "$dry" = 0 ] && [ ! -d "$IMAGE_TORCH_LIB" ]; then
      # The binary's RUNPATH names the image's usual place; find torch
      # where this image has it (without importing it) and point the loader there.
      tl=$(python3 -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("torch").origin), "lib"))' 2>/dev/null)
      log "no $IMAGE_TORCH_LIB; python3's torch is in ${tl:-(none)}"
      [ -n "$tl" ] && export LD_LIBRARY_PATH="$tl${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
    ldd "$BIN" > "$WORK/logs/ldd.log" 2>&1
    unresolved=$(awk '/not found/ { print $1 }' "$WORK/logs/ldd.log" | tr '\n' ' ')
    torch_lib=$(awk '/libtorch_cpu.so/ { print $3 }' "$WORK/logs/ldd.log")
    tep_files=$(ls "$WORK"/tep/*.dat 2>/dev/null | wc -l)
    if [ -n "$unresolved" ]; then
      cat "$WORK/logs/ldd.log"
      summary FAIL "bundle: unresolved libraries: $unresolved(LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-})"
    elif [ ! -x "$WORK/tansu" ] || [ "$tep_files" != 23 ]; then
      summary FAIL "bundle: unpacking gave tansu $([ -x "$WORK/tansu" ] && echo ok || echo missing) and $tep_files TEP files (want 23)"
    else
      bundle_ok=1
      summary PASS "bundle: $BIN resolves every library (libtorch_cpu from $torch_lib); Tansu and $tep_files TEP files unpacked"
    fi
  fi
  pack
fi
if [ "$bundle_ok" = 0 ]; then
  summary FAIL "stopping: nothing else can run without the bundle"
  exit 1
fi
TEP=$WORK/tep

# ---------------------------------------------------------------------------
cuda_ok=1
if want devices 20; then
  gpu="no GPU (dry run)"
  if [ "$dry" = 0 ]; then
    run nvidia-smi 20 nvidia-smi
    gpu=$(timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>&1 | head -1)
    # For reference: what the image's own PyTorch sees.
    run python-torch 60 python3 -c 'import torch; print("python torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "available", torch.cuda.is_available())'
  fi
  run version 60 "$BIN" version --devices
  v=$(grep -E '^(libtorch |cuda:|cudart|cudnn)' "$WORK/logs/version.log" | tr '\n' ';' | sed 's/;$//; s/;/; /g')
  if [ "$dry" = 0 ] && ! grep -q '^cuda: available true' "$WORK/logs/version.log"; then
    cuda_ok=0
    summary FAIL "devices: $gpu; the binary sees no CUDA: $v"
  elif [ "$dry" = 0 ] && ! grep -q '^libtorch_cuda: loaded' "$WORK/logs/version.log"; then
    cuda_ok=0
    summary FAIL "devices: $gpu; libtorch_cuda is not loaded: $v"
  else
    summary PASS "devices: $gpu; $v"
  fi
  pack
fi
if [ "$cuda_ok" = 0 ]; then
  summary FAIL "stopping: the CUDA stages cannot run"
  exit 1
fi

# ---------------------------------------------------------------------------
if want forecaster $((${#SIZES[@]} * 2 * (SECS + 6))); then
  echo "precision,devices_per_call,ms_per_call,readings_per_s,roofline_share" > "$OUT/forecaster.csv"
  for precision in f32 bf16; do
    curve="" best=0 best_n=0 failures=""
    for n in "${SIZES[@]}"; do
      name="forecaster-$precision-$n"
      run "$name" $((SECS + 60)) "$BIN" bench --device "$DEV" --forecaster-only \
        --forecaster-batch "$n" --max-batch "$n" --forecaster-seconds "$SECS" \
        --threads "$THREADS" --precision "$precision"
      line=$(grep '^readings_per_s=' "$WORK/logs/$name.log" | tail -1)
      ms=$(sed -n 's/.*forecaster only: [0-9]* devices per call, \([0-9.]*\) ms per call.*/\1/p' "$WORK/logs/$name.log" | tail -1)
      if [ -z "$line" ]; then
        failures+=" $n ($(grep -m1 -i 'error' "$WORK/logs/$name.log" | cut -c1-100))"
        continue
      fi
      rate=$(sed 's/^readings_per_s=\([0-9]*\).*/\1/' <<< "$line")
      share=$(sed 's/.*roofline_share=\([0-9.]*\).*/\1/' <<< "$line")
      echo "$precision,$n,$ms,$rate,$share" >> "$OUT/forecaster.csv"
      curve+=" $n:$rate"
      if [ "$rate" -gt "$best" ]; then best=$rate best_n=$n; fi
    done
    text="forecaster $precision on $DEV: best $best readings/s at $best_n devices/call; curve (devices:readings/s)$curve"
    [ -n "$failures" ] && text+="; failed at$failures"
    if [ "$precision" = f32 ] && [ "$dry" = 0 ]; then
      if [ "$best" -ge "$BAR" ]; then summary PASS "$text (bar $BAR)"; else summary FAIL "$text (bar $BAR)"; fi
    elif [ -z "$curve" ]; then
      # bf16 is a setting serve may refuse on a device without native bf16.
      [ "$precision" = bf16 ] && summary INFO "$text" || summary FAIL "$text"
    else
      summary INFO "$text"
    fi
    pack
  done
fi

# ---------------------------------------------------------------------------
tests=()
for n in "${TEST_RUNS[@]}"; do tests+=("$TEP/d${n}_te.dat"); done
# The default row of docs/ACCURACY.md (the dry run: fewer epochs, fixed threshold).
config=docs/accuracy/default.toml
if [ -n "$DRY_CONFIG" ]; then config=$WORK/dry.toml; printf "$DRY_CONFIG" > "$config"; fi
evaluate() { # NAME CONFIG EXTRA-ARGS...: decisions into decisions/NAME
  local name=$1 cfg=$2 secs; shift 2
  secs=$(left); [ "$secs" -gt 240 ] && secs=240
  run "evaluate-$name" "$secs" "$BIN" evaluate --train "$TEP/d00.dat" --data "${tests[@]}" \
    --config "$cfg" --report "$WORK/reports/$name.json" \
    --decisions "$WORK/decisions/$name" "$@"
}
cpu_eval=0
if want evaluate 60; then
  evaluate cpu "$config" && cpu_eval=1
  if [ "$cpu_eval" = 1 ] && evaluate cuda-scored "$config" --score-device "$DEV"; then
    python3 benches/gpu_compare.py decisions "$WORK/decisions/cpu" "$WORK/decisions/cuda-scored" \
      --reports "$WORK/reports/cpu.json" "$WORK/reports/cuda-scored.json" > "$WORK/logs/compare-cuda-scored.txt"
    status=$?
    cat "$WORK/logs/compare-cuda-scored.txt"
    cp "$WORK/logs/compare-cuda-scored.txt" "$OUT/compare.txt"
    result=$(tail -1 "$WORK/logs/compare-cuda-scored.txt")
    summary "$([ "$status" = 0 ] && echo PASS || echo FAIL)" "evaluate, CPU-trained, scored on $DEV vs on cpu: ${result#* }"
  else
    summary FAIL "evaluate: the $([ "$cpu_eval" = 1 ] && echo "$DEV-scored" || echo cpu) run failed (logs/evaluate-*.log)"
  fi
  pack
  # For information: trained on the device too (another random init
  # there, so another network), and scored in bf16.
  if [ "$cpu_eval" = 1 ] && [ "$(left)" -gt 60 ]; then
    # (a second [model] table would not parse: put device into the one there is)
    python3 - "$config" "$DEV" "$WORK/on-device.toml" <<'PY'
import sys
text, dev = open(sys.argv[1]).read(), sys.argv[2]
line = f'device = "{dev}"\n'
text = text.replace("[model]\n", "[model]\n" + line, 1) if "[model]\n" in text else text + "[model]\n" + line
open(sys.argv[3], "w").write(text)
PY
    if evaluate trained-on-device "$WORK/on-device.toml"; then
      r=$(python3 benches/gpu_compare.py decisions "$WORK/decisions/cpu" "$WORK/decisions/trained-on-device" \
        --informational --reports "$WORK/reports/cpu.json" "$WORK/reports/trained-on-device.json" | tee "$WORK/logs/compare-trained-on-device.txt" | tail -1)
      f1=$(grep '^metric f1:' "$WORK/logs/compare-trained-on-device.txt")
      summary INFO "evaluate, trained and scored on $DEV vs cpu: ${r#INFO }; ${f1#metric }"
    else
      summary INFO "evaluate, trained on $DEV: failed (logs/evaluate-trained-on-device.log)"
    fi
  fi
  if [ "$cpu_eval" = 1 ] && [ "$(left)" -gt 60 ]; then
    if evaluate bf16-scored "$config" --score-device "$DEV" --precision bf16; then
      r=$(python3 benches/gpu_compare.py decisions "$WORK/decisions/cpu" "$WORK/decisions/bf16-scored" \
        --informational --reports "$WORK/reports/cpu.json" "$WORK/reports/bf16-scored.json" | tee "$WORK/logs/compare-bf16-scored.txt" | tail -1)
      f1=$(grep '^metric f1:' "$WORK/logs/compare-bf16-scored.txt")
      summary INFO "evaluate, scored in bf16 on $DEV vs f32 on cpu: ${r#INFO }; ${f1#metric }"
    else
      summary INFO "evaluate, scored in bf16 on $DEV: $(grep -m1 -i error "$WORK/logs/evaluate-bf16-scored.log" | cut -c1-120)"
    fi
  fi
  pack
fi

# ---------------------------------------------------------------------------
KPORT=19092
HPORT=18080
broker_up=0
start_broker() {
  [ "$broker_up" = 1 ] && return 0
  FOREWARN_TANSU="$WORK/tansu" FOREWARN_BROKER_PORT=$KPORT bash scripts/broker.sh start \
    && broker_up=1 && pids+=("$(cat ".run/broker-$KPORT.pid")")
}
if want serve 90; then
  T0_MS=1767225600000   # 2026-01-01T00:00:00Z; TEP samples every 3 minutes
  PERIOD=180000
  if [ "$cpu_eval" = 0 ]; then
    summary SKIP "serve: needs the CPU evaluate run's decisions to compare with"
  elif ! start_broker; then
    summary FAIL "serve: the bundle's Tansu did not start (.run/broker-$KPORT.log)"
  elif ! run train 120 "$BIN" train --data "$TEP/d00.dat" --out "$WORK/model" --name tep --device cpu "${TRAIN_ARGS[@]}"; then
    summary FAIL "serve: forewarn train failed (logs/train.log)"
  else
    cat > "$WORK/serve.toml" <<EOF
[kafka]
brokers = "127.0.0.1:$KPORT"
group_id = "gpu-check"
topic_partitions = 2
[model]
path = "$WORK/model"
device = "$DEV"
[store]
path = "$WORK/alerts.db"
[http]
listen = "127.0.0.1:$HPORT"
EOF
    log "\$ $BIN serve --config $WORK/serve.toml"
    RUST_LOG=info "$BIN" serve --config "$WORK/serve.toml" > "$WORK/logs/serve.log" 2>&1 &
    pids+=($!)
    ready=0
    for _ in $(seq 1 120); do
      http_get "http://127.0.0.1:$HPORT/readyz" >/dev/null 2>&1 && { ready=1; break; }
      sleep 0.5
    done
    devices=()
    if [ "$ready" = 1 ]; then
      for f in "${tests[@]}"; do
        n=$(basename "$f" .dat); n=${n#d}; n=${n%_te}
        d=$([ "$n" = 00 ] && echo tep-normal || echo "tep-fault-$n")
        devices+=("$d")
        timeout 60 "$BIN" simulate --brokers "127.0.0.1:$KPORT" --devices 0 --replay "$f" \
          --replay-device "$d" --rate 0 --period 3m --start 2026-01-01T00:00:00Z \
          >> "$WORK/logs/simulate.log" 2>&1 || log "simulate $d failed"
      done
      want_total=$(( ${#tests[@]} * 960 ))
      accepted=0
      for _ in $(seq 1 180); do
        accepted=$(http_get "http://127.0.0.1:$HPORT/metrics" 2>/dev/null \
          | awk '/^forewarn_readings_accepted_total/ { print int($2) }')
        [ "${accepted:-0}" -ge "$want_total" ] && break
        sleep 0.5
      done
      python3 - "http://127.0.0.1:$HPORT" "$WORK/reports/alerts.json" <<'PY'
import json, sys, urllib.request
api, out, alerts, cursor = sys.argv[1], sys.argv[2], [], None
while True:
    url = f"{api}/api/v1/alerts?limit=500" + (f"&cursor={cursor}" if cursor else "")
    page = json.load(urllib.request.urlopen(url, timeout=10))
    alerts += page["alerts"]
    cursor = page.get("next_cursor")
    if not cursor:
        break
json.dump(alerts, open(out, "w"), indent=1)
PY
      python3 benches/gpu_compare.py alerts "$WORK/reports/alerts.json" "$WORK/decisions/cpu" \
        --start-ms "$T0_MS" --period-ms "$PERIOD" --devices "${devices[@]}" > "$WORK/logs/compare-alerts.txt"
      status=$?
      cat "$WORK/logs/compare-alerts.txt"
      result=$(tail -1 "$WORK/logs/compare-alerts.txt")
      summary "$([ "$status" = 0 ] && echo PASS || echo FAIL)" \
        "serve on $DEV ($(grep -o 'device=.*precision=[a-z0-9]*' "$WORK/logs/serve.log" | head -1)): ${accepted:-0}/$want_total readings accepted; ${result#* }"
    else
      tail -20 "$WORK/logs/serve.log"
      summary FAIL "serve: /readyz never answered 200 (logs/serve.log)"
    fi
    kill "${pids[-1]}" 2>/dev/null
  fi
  pack
fi

# ---------------------------------------------------------------------------
if want convlstm 120; then
  plates=$WORK/plates
  printf '[model]\nkind = "convlstm"\ngrid = [8, 8]\n%s\n' "$CONV_EPOCHS" > "$WORK/convlstm.toml"
  plate_eval() { # NAME EXTRA-ARGS...: decisions into decisions/NAME
    local name=$1 secs; shift
    secs=$(left); [ "$secs" -gt 200 ] && secs=200
    run "evaluate-$name" "$secs" "$BIN" evaluate --train-dir "$plates/train" --data "$plates/test" \
      --time-column ts --label-column anomaly --fault-cell-columns fault_row,fault_col \
      --context-columns 'heater_*' --config "$WORK/convlstm.toml" --jobs "$THREADS" \
      --report "$WORK/reports/$name.json" --decisions "$WORK/decisions/$name" "$@"
  }
  if ! run simulate-plates 60 "$BIN" simulate --grid 8x8 --devices 2 --period 10s \
      --count "$PLATE_ROWS" --seed 23 --grid-faults-random 4 --csv-dir "$plates"; then
    summary FAIL "convlstm: simulating the plates failed (logs/simulate-plates.log)"
  elif plate_eval convlstm-cpu && plate_eval convlstm-scored --score-device "$DEV"; then
    python3 benches/gpu_compare.py decisions "$WORK/decisions/convlstm-cpu" "$WORK/decisions/convlstm-scored" \
      --reports "$WORK/reports/convlstm-cpu.json" "$WORK/reports/convlstm-scored.json" \
      > "$WORK/logs/compare-convlstm.txt"
    status=$?
    cat "$WORK/logs/compare-convlstm.txt"
    result=$(tail -1 "$WORK/logs/compare-convlstm.txt")
    summary "$([ "$status" = 0 ] && echo PASS || echo FAIL)" "convlstm, CPU-trained, scored on $DEV vs on cpu: ${result#* }"
  else
    summary FAIL "convlstm: an evaluate run failed (logs/evaluate-convlstm-*.log)"
  fi
  pack
  curve="" failures=""
  for n in "${CONV_SIZES[@]}"; do
    [ "$(left)" -gt $((SECS + 30)) ] || break
    name="convlstm-bench-$n"
    run "$name" $((SECS + 60)) "$BIN" bench --device "$DEV" --kind convlstm --grid 8x8 --forecaster-only \
      --forecaster-batch "$n" --max-batch "$n" --forecaster-seconds "$SECS" --threads "$THREADS"
    line=$(grep '^readings_per_s=' "$WORK/logs/$name.log" | tail -1)
    if [ -n "$line" ]; then
      curve+=" $n:$(sed 's/^readings_per_s=\([0-9]*\).*roofline_share=\([0-9.]*\).*/\1 (roofline \2)/' <<< "$line")"
    else
      failures+=" $n ($(grep -m1 -i 'error' "$WORK/logs/$name.log" | cut -c1-100))"
    fi
  done
  text="convlstm 8x8 bench on $DEV (devices:readings/s):${curve:- none}"
  [ -n "$failures" ] && text+="; failed at$failures"
  summary "$([ -n "$curve" ] && echo INFO || echo FAIL)" "$text"
  pack
fi

# ---------------------------------------------------------------------------
if want e2e 75; then
  if [ "$dry" = 1 ]; then
    e2e=(--devices 200 --readings 20000 --max-batch 64 --skip-latency)
  else
    e2e=(--devices 10000 --readings 3000000 --max-batch 4096 --latency-seconds 10)
  fi
  if start_broker && run e2e $(( $(left) - 5 )) "$BIN" bench --device "$DEV" --brokers "127.0.0.1:$KPORT" \
      --threads "$THREADS" --skip-peer --work-dir "$WORK/bench" "${e2e[@]}"; then
    summary INFO "e2e on $DEV: $(grep '^readings_per_s=' "$WORK/logs/e2e.log" | tail -1)"
  else
    summary INFO "e2e on $DEV: did not finish (logs/e2e.log)"
  fi
  pack
fi

log "done in $((SECONDS - START)) s; summary:"
cat "$OUT/summary.txt"
exit "$failed"
