#!/usr/bin/env bash
# The GPU benchmark in one go, on a machine with an NVIDIA GPU and a driver:
#   1. full CUDA libtorch (FOREWARN_TORCH_FULL=1 scripts/setup.sh: the complete
#      PyTorch 2.13.0 wheel with its CUDA libraries, ~2.7 GB, once),
#   2. a release build linked against libtorch_cuda,
#   3. the forecaster alone on CUDA at growing batch sizes: the >= 5,000,000
#      readings/s target (synthetic full batches, host buffers in and out,
#      exactly what `serve` hands the forecaster),
#   4. the same at the largest batch in bf16 (--precision bf16),
#   5. `forewarn bench --device cuda` end to end (local broker, Python peer).
# Results are appended to .run/bench/gpu-<date>.txt; the last line of each
# run is the bench's summary line.
# Usage: bash benches/gpu.sh [--quick]   (--quick: forecaster only)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
log() { printf '\033[1;34m[gpu-bench]\033[0m %s\n' "$*" >&2; }

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || log "nvidia-smi not found"
FOREWARN_TORCH_FULL=1 bash scripts/setup.sh
# The link step decides on libtorch_cuda when its build script runs; force it.
FOREWARN_LINK_CUDA=1 cargo build --release -p forewarn
bin=target/release/forewarn
mkdir -p .run/bench
out=.run/bench/gpu-$(date -u +%Y%m%dT%H%M%SZ).txt
cores=$(nproc)

for n in 1024 4096 16384 65536; do
  log "forecaster only, $n devices per call"
  "$bin" bench --device cuda --forecaster-only --forecaster-batch "$n" --max-batch "$n" \
    --forecaster-seconds 5 --threads "$cores" 2>&1 | tee -a "$out"
done
# bf16 (serve's model.precision = bf16) at the largest batch; never run on a
# GPU so far, so a failure is logged rather than fatal.
log "forecaster only, 65536 devices per call, bf16"
"$bin" bench --device cuda --forecaster-only --forecaster-batch 65536 --max-batch 65536 \
  --forecaster-seconds 5 --threads "$cores" --precision bf16 2>&1 | tee -a "$out" \
  || log "bf16 on this GPU failed (see above)"
if [ "${1:-}" != "--quick" ]; then
  log "end to end on CUDA"
  "$bin" bench --device cuda --devices 10000 --readings 5000000 --max-batch 4096 --threads "$cores" 2>&1 | tee -a "$out"
fi
log "results in $out"
