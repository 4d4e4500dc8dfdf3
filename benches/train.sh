#!/usr/bin/env bash
# Training speed (issue 3: 100k rows x 8 channels in under 2 minutes on the
# 2-core CI machine). A benchmark, not a test: not in CI.
#
# Builds the release binary, writes 100,000 rows of one simulated pump (8
# channels, 1 s period) with `forewarn simulate --csv-dir`, and times
# `forewarn train` on it with the defaults (the dynamic threshold over the
# Gaussian error score, its calibration included), then with the Gaussian
# (F-beta) and the fixed threshold. Prints wall and CPU seconds of each run.
#
# Knobs (environment): ROWS (100000), EPOCHS (the train default), OUT
# (.run/train-bench).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
rows=${ROWS:-100000}
out=${OUT:-.run/train-bench}
bin=target/release/forewarn
export NO_COLOR=1

bash scripts/setup.sh >/dev/null
[[ -x /usr/bin/time ]] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
cargo build --release -p forewarn --quiet
rm -rf "$out" && mkdir -p "$out"
"$bin" simulate --csv-dir "$out/data" --devices 1 --count "$rows" --period 1s --seed 7 \
    --start 2026-01-01T00:00:00Z 2>/dev/null
data="$out/data/plant-0000.csv"
echo "data: $(($(wc -l <"$data") - 1)) rows x 8 channels ($data)"
epochs=()
[[ -n "${EPOCHS:-}" ]] && epochs=(--epochs "$EPOCHS")

run() {
    local name=$1
    shift
    local t0 t1
    t0=$(date +%s.%N)
    /usr/bin/time -f "%U %S" -o "$out/$name.time" \
        "$bin" train --data "$data" --time-column ts --out "$out/$name" --device cpu "${epochs[@]}" "$@" \
        >"$out/$name.log" 2>&1
    t1=$(date +%s.%N)
    read -r user sys <"$out/$name.time"
    awk -v n="$name" -v w="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" -v u="$user" -v s="$sys" \
        -v e="$(grep -c '^epoch' "$out/$name.log")" \
        'BEGIN{printf "%-9s %6.1f s wall, %6.1f s CPU; %d epochs\n", n, w, u+s, e}'
    grep -E '^  (detector|gaussian)' "$out/$name.log" | sed 's/^/          /'
}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
run default
run gaussian --threshold-kind gaussian
run fixed --threshold-kind fixed
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
