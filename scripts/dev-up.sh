#!/usr/bin/env bash
# Brings up the local pipeline: a durable tansu broker (SQLite under .stack/data), the topics, and
# every service with the dev workspace (config/dev-workspace.yaml). Prints the collector URL and
# the write key. Stop it with scripts/dev-down.sh. Logs are in .stack/logs/.
#
# Ports (override with the same variables): collector 8080, its admin port 9101, broker 9092.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
export PATH="$HOME/.cargo/bin:$PATH"

KAFKA_PORT="${CDP_DEV_KAFKA_PORT:-9092}"
HTTP_PORT="${CDP_DEV_HTTP_PORT:-8080}"
ADMIN_PORT="${CDP_DEV_ADMIN_PORT:-9101}"
PROFILE="${CDP_DEV_PROFILE:-release}"
WRITE_KEY="${CDP_DEV_WRITE_KEY:-dev-write-key}"
STACK="$ROOT/.stack"
mkdir -p "$STACK/data" "$STACK/logs" "$STACK/pids"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
running() { [ -f "$STACK/pids/$1" ] && kill -0 "$(cat "$STACK/pids/$1")" 2>/dev/null; }
wait_until() { # wait_until <what> <seconds> <command...>
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $what; see $STACK/logs/" >&2; return 1
}

scripts/install-deps.sh

say "building services ($PROFILE)"
cargo build --profile "$PROFILE" --bins
BIN="$ROOT/target/$PROFILE"; [ "$PROFILE" = dev ] && BIN="$ROOT/target/debug"

if running tansu; then
  say "broker already running (pid $(cat "$STACK/pids/tansu"))"
else
  say "starting tansu on 127.0.0.1:$KAFKA_PORT (data in .stack/data)"
  # tansu resolves the SQLite path against its working directory.
  (cd "$STACK/data" && exec tansu broker \
      --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine "sqlite://tansu.db" >>"$STACK/logs/tansu.log" 2>&1) &
  echo $! >"$STACK/pids/tansu"
  wait_until "the broker" 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT"
fi

export CDP_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
export CDP_WORKSPACE="$ROOT/config/dev-workspace.yaml"
export CDP_DEV_WRITE_KEY="$WRITE_KEY"

if running collector; then
  say "collector already running (pid $(cat "$STACK/pids/collector"))"
else
  say "starting cdp-collector (topics are created at start)"
  CDP_HTTP_ADDR="127.0.0.1:$HTTP_PORT" CDP_ADMIN_ADDR="127.0.0.1:$ADMIN_PORT" \
    "$BIN/cdp-collector" >>"$STACK/logs/collector.log" 2>&1 &
  echo $! >"$STACK/pids/collector"
fi
wait_until "the collector to be ready" 90 curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz"

cat <<MSG

The pipeline is up.
  collector    http://127.0.0.1:$HTTP_PORT      (metrics: http://127.0.0.1:$ADMIN_PORT/metrics)
  write key    $WRITE_KEY                (source "dev")
  broker       127.0.0.1:$KAFKA_PORT               (events land in cdp.events.raw)

Send an event:
  curl -u $WRITE_KEY: http://127.0.0.1:$HTTP_PORT/v1/track \\
       -H 'content-type: application/json' -d '{"userId":"u1","event":"Hello"}'

Stop everything: scripts/dev-down.sh
MSG
