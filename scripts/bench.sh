#!/usr/bin/env bash
# Collector load benchmark with wrk on loopback (docs/BENCHMARKS.md records the results):
#   1. single /v1/track calls, 2. /v1/batch of 100 events, broker acks included,
#   3. the same single call against a no-op axum server (the ceiling), all at the same connections.
# Broker: tansu with in-memory storage on this machine. Collector RSS is read from /proc (VmHWM).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
DURATION="${BENCH_DURATION:-20s}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"
KAFKA_PORT=49092 HTTP_PORT=48080 ADMIN_PORT=49101 NOOP_PORT=48081
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --release -p cdp-collector --bin cdp-collector --example noop_server
printf 'sources:\n  - id: bench\n    write_key: bench-key\n' >"$WORK/ws.yaml"

tansu broker --listener-url tcp://127.0.0.1:$KAFKA_PORT --advertised-listener-url tcp://127.0.0.1:$KAFKA_PORT \
  --storage-engine memory://tansu/ >"$WORK/tansu.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT) 2>/dev/null && break; sleep 0.1; done

RUST_LOG=warn CDP_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT CDP_WORKSPACE="$WORK/ws.yaml" \
  CDP_HTTP_ADDR=127.0.0.1:$HTTP_PORT CDP_ADMIN_ADDR=127.0.0.1:$ADMIN_PORT \
  target/release/cdp-collector >"$WORK/collector.log" 2>&1 &
COLLECTOR=$!; pids+=($COLLECTOR)
NOOP_ADDR=127.0.0.1:$NOOP_PORT target/release/examples/noop_server &
pids+=($!)
for _ in $(seq 300); do curl -sf http://127.0.0.1:$ADMIN_PORT/readyz >/dev/null && break; sleep 0.1; done

run() { # run <label> <body file> <url>
  echo "### $1"
  BODY_FILE="$2" WRITE_KEY=bench-key wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
    -s bench/post.lua "$3"
  echo
}
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo "wrk: -t$THREADS -c$CONNECTIONS -d$DURATION"
echo
run "no-op axum ceiling, single track body" bench/track.json "http://127.0.0.1:$NOOP_PORT/v1/track"
run "collector /v1/track (single event, acks=all)" bench/track.json "http://127.0.0.1:$HTTP_PORT/v1/track"
run "collector /v1/batch (100 events, acks=all)" bench/batch100.json "http://127.0.0.1:$HTTP_PORT/v1/batch"
echo "### collector memory"
grep -E 'VmHWM|VmRSS' /proc/$COLLECTOR/status
echo "### collector counters"
curl -s http://127.0.0.1:$ADMIN_PORT/metrics | grep -E '^cdp_collector_(events_total|produce_errors_total|rejected_total)'
