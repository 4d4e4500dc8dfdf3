#!/usr/bin/env bash
# Installs the Python peer of `forewarn bench` into .tools/peer, idempotently:
# a standard Kafka client (confluent-kafka; its wheels bundle librdkafka),
# PyTorch (the same 2.11.0 the service links) and numpy. The torch package in
# .libtorch/ cannot be imported by Python on a machine without CUDA (it is
# installed without the CUDA libraries its Python extension links), so the
# peer gets its own complete install (~3 GB, once).
# A second run checks a stamp and returns at once.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
want="torch==2.11.0 confluent-kafka==2.16.1 numpy"
stamp=.tools/peer/.forewarn-stamp
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then exit 0; fi
echo "[peer-setup] installing $want into .tools/peer (once; a few minutes)" >&2
rm -rf .tools/peer
mkdir -p .tools
# shellcheck disable=SC2086
python3 -m pip install -q --disable-pip-version-check --target .tools/peer $want
echo "$want" > "$stamp"
