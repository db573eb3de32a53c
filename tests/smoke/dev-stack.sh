#!/usr/bin/env bash
# The README's quick start, as a new user runs it: bring the stack up, send an event with curl,
# expect 200 (only given after the broker acknowledged it), then tear down. Uses spare ports and its
# own state folder, so a running dev stack and its data are left alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CDP_DEV_KAFKA_PORT=39092 CDP_DEV_HTTP_PORT=38080 CDP_DEV_ADMIN_PORT=39101
export CDP_DEV_PROFILE="${CDP_DEV_PROFILE:-dev}"
CDP_DEV_STACK_DIR=$(mktemp -d)
export CDP_DEV_STACK_DIR
trap 'scripts/dev-down.sh >/dev/null; rm -rf "$CDP_DEV_STACK_DIR"' EXIT
out=$(scripts/dev-up.sh)
echo "$out" | tail -12
echo "$out" | grep -q "write key    dev-write-key"
status=$(curl -s -o /tmp/cdp-smoke-body -w '%{http_code}' -u dev-write-key: \
  "http://127.0.0.1:$CDP_DEV_HTTP_PORT/v1/track" -H 'content-type: application/json' \
  -d '{"userId":"smoke","event":"Quick Start"}')
body=$(cat /tmp/cdp-smoke-body)
[ "$status" = 200 ] && [ "$body" = '{"success":true}' ] || { echo "expected 200 {\"success\":true}, got $status $body" >&2; exit 1; }
metrics=$(curl -sf "http://127.0.0.1:$CDP_DEV_ADMIN_PORT/metrics")
echo "$metrics" | grep -q 'cdp_collector_events_total{source="dev",type="track"} 1' \
  || { echo "the event is not counted in /metrics" >&2; exit 1; }
echo "smoke test passed: quick start accepted and stored an event"
