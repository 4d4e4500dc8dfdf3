#!/usr/bin/env bash
# Fuzzes the reading decoder, the engine and the window (fuzz/, its own
# cargo workspace; not built by CI). Not a test: run by hand, record results
# in docs/reliability/fuzzing.md.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 600); targets default to decode, decode_fast,
# engine and window, run one after the other, one job each. Stable Rust: cargo-fuzz
# needs `-Z` sanitizer flags, so RUSTC_BOOTSTRAP=1 is set. The corpus grows
# in fuzz/corpus/<target> (ignored by git) from the committed seeds in
# fuzz/seeds/<target>; crashes land in fuzz/artifacts/<target>. Exits
# non-zero on the first target that finds a crash.
set -euo pipefail

cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-600}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(decode decode_fast engine window)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
for t in "${TARGETS[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
    echo "== $t: ${SECONDS_EACH}s" >&2
    cargo fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1
done
