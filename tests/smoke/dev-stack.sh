#!/usr/bin/env bash
# The README's quick start, as a new user runs it: bring the stack up, send an event with curl,
# expect 200 (only given after the broker acknowledged it), then tear down. Uses spare ports and its
# own state folder, so a running dev stack and its data are left alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CDP_DEV_KAFKA_PORT=39092 CDP_DEV_HTTP_PORT=38080 CDP_DEV_ADMIN_PORT=39101 CDP_DEV_VALIDATOR_ADMIN_PORT=39102 CDP_DEV_ENRICHER_ADMIN_PORT=39103
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
# The validator judges it by the dev plan: "Quick Start" is not planned (allowed), and an
# "Order Completed" with a string total goes on annotated, its violation recorded.
curl -sf -u dev-write-key: "http://127.0.0.1:$CDP_DEV_HTTP_PORT/v1/track" -H 'content-type: application/json' \
  -d '{"userId":"smoke","event":"Order Completed","properties":{"order_id":"O-1","total":"14500","currency":"RUB"}}' >/dev/null
validator_saw() {
  local m
  m=$(curl -sf "http://127.0.0.1:$CDP_DEV_VALIDATOR_ADMIN_PORT/metrics") || return 1
  grep -q 'cdp_validator_events_total{outcome="unplanned",source="dev"} 1' <<<"$m" &&
    grep -q 'cdp_validator_violations_total{action="allowed",event="Order Completed",kind="invalid_type",plan="shop"} 1' <<<"$m"
}
for _ in $(seq 300); do validator_saw && break; sleep 0.1; done
validator_saw || { echo "the validator did not judge both events (see its /metrics)" >&2; exit 1; }
# Both go on to the enricher and out to cdp.events.enriched.
enricher_saw() {
  curl -sf "http://127.0.0.1:$CDP_DEV_ENRICHER_ADMIN_PORT/metrics" |
    grep -q 'cdp_enricher_events_total{outcome="forwarded",source="dev"} 2'
}
for _ in $(seq 300); do enricher_saw && break; sleep 0.1; done
enricher_saw || { echo "the enricher did not forward both events (see its /metrics)" >&2; exit 1; }
echo "smoke test passed: quick start accepted, stored, validated and enriched events"
