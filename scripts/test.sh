#!/usr/bin/env bash
# The test command: installs what is missing (idempotent), builds, runs every test.
# Whole-system tests start their own brokers on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/browser-deps.sh  # chromium and prometheus for tests/operator_*.rs
cargo build --workspace --bins
cargo test --workspace "$@"
