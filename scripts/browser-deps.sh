#!/usr/bin/env bash
# Debian packages the operator-surface tests need, installed idempotently:
#   chromium   — tests/operator_browser.rs drives the alert console headless
#   prometheus — tests/operator_prometheus.rs has a real Prometheus scrape Forewarn
# Returns in a second when both are present. The tests skip (with a note)
# when a binary is missing, so `cargo test` alone still works offline.
set -euo pipefail
log() { printf '\033[1;34m[browser-deps]\033[0m %s\n' "$*" >&2; }
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  log "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The Debian prometheus package starts a system service on :9090; the
  # tests run their own instance, so stop it when we were the ones to install it.
  if [[ " ${need[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl stop prometheus >/dev/null 2>&1 || true
  fi
fi
log "ready: $(chromium --version 2>/dev/null | head -1), $(prometheus --version 2>&1 | head -1)"
