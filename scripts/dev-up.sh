#!/usr/bin/env bash
# Brings up the local pipeline: a durable tansu broker (SQLite under .stack/data), the topics, and
# every service with the dev workspace (config/dev-workspace.yaml). Prints the collector URL and
# the write key. Stop it with scripts/dev-down.sh. Logs are in .stack/logs/.
#
# Ports: collector 8080, broker 9092, admin ports (/metrics, /readyz) collector 9101, validator 9102,
# enricher 9103 (CDP_DEV_HTTP_PORT, CDP_DEV_KAFKA_PORT, CDP_DEV_ADMIN_PORT,
# CDP_DEV_VALIDATOR_ADMIN_PORT, CDP_DEV_ENRICHER_ADMIN_PORT).
# State (pids, logs, broker data) in .stack/ (CDP_DEV_STACK_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
export PATH="$HOME/.cargo/bin:$PATH"

KAFKA_PORT="${CDP_DEV_KAFKA_PORT:-9092}"
HTTP_PORT="${CDP_DEV_HTTP_PORT:-8080}"
ADMIN_PORT="${CDP_DEV_ADMIN_PORT:-9101}"
VALIDATOR_ADMIN_PORT="${CDP_DEV_VALIDATOR_ADMIN_PORT:-9102}"
ENRICHER_ADMIN_PORT="${CDP_DEV_ENRICHER_ADMIN_PORT:-9103}"
# Every service of the pipeline, in start order, with its admin port.
SERVICES=("collector:$ADMIN_PORT" "validator:$VALIDATOR_ADMIN_PORT" "enricher:$ENRICHER_ADMIN_PORT")
PROFILE="${CDP_DEV_PROFILE:-release}"
WRITE_KEY="${CDP_DEV_WRITE_KEY:-dev-write-key}"
STACK="${CDP_DEV_STACK_DIR:-$ROOT/.stack}"
mkdir -p "$STACK/data" "$STACK/logs" "$STACK/pids"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
running() { [ -f "$STACK/pids/$1" ] && kill -0 "$(cat "$STACK/pids/$1")" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
die() { echo "error: $*" >&2; exit 1; }
wait_until() { # wait_until <what> <seconds> <command...>
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 10))); do "$@" >/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for $what; see $STACK/logs/" >&2; return 1
}

scripts/install-deps.sh

say "building services ($PROFILE)"
cargo build --profile "$PROFILE" --bins
BIN="$ROOT/target/$PROFILE"; [ "$PROFILE" = dev ] && BIN="$ROOT/target/debug"

if running tansu; then
  say "broker already running (pid $(cat "$STACK/pids/tansu"))"
else
  port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is taken by another process; stop it or set CDP_DEV_KAFKA_PORT"
  # A service that outlived its broker keeps a producer the restarted broker cannot serve
  # (docs/adr/0002): restart every service with the broker.
  for entry in "${SERVICES[@]}"; do
    name=${entry%%:*}
    running "$name" || continue
    say "restarting $name with the broker"
    old=$(cat "$STACK/pids/$name")
    kill -TERM "$old"
    for _ in $(seq 150); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
    rm -f "$STACK/pids/$name"
  done
  say "starting tansu on 127.0.0.1:$KAFKA_PORT (data in $STACK/data)"
  # tansu resolves the SQLite path against its working directory.
  (cd "$STACK/data" && exec tansu broker \
      --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine "sqlite://tansu.db" >>"$STACK/logs/tansu.log" 2>&1) &
  echo $! >"$STACK/pids/tansu"
  wait_until "the broker" 30 port_open "$KAFKA_PORT"
  running tansu || die "tansu exited at start; see $STACK/logs/tansu.log"
fi

export CDP_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
export CDP_WORKSPACE="$ROOT/config/dev-workspace.yaml"
export CDP_DEV_WRITE_KEY="$WRITE_KEY"
# tansu 0.6 on SQLite mishandles idempotent producers (a storage panic under load, lost producer
# state after a restart: docs/adr/0002). acks=all still holds; production keeps idempotence on.
export CDP_RDKAFKA_ENABLE_IDEMPOTENCE="${CDP_RDKAFKA_ENABLE_IDEMPOTENCE:-false}"

start() { # start <name> <admin port> [VAR=value...]
  local name=$1 admin=$2; shift 2
  if running "$name"; then say "$name already running (pid $(cat "$STACK/pids/$name"))"; return; fi
  port_open "$admin" && die "admin port $admin of $name is taken by another process; stop it or change it (see the top of this script)"
  say "starting cdp-$name"
  env CDP_ADMIN_ADDR="127.0.0.1:$admin" "$@" "$BIN/cdp-$name" >>"$STACK/logs/$name.log" 2>&1 &
  echo $! >"$STACK/pids/$name"
}
ready() { # ready <name> <admin port>
  running "$1" || { tail -5 "$STACK/logs/$1.log" >&2; die "cdp-$1 exited; log above"; }
  curl -sf "http://127.0.0.1:$2/readyz"
}

if ! running collector; then
  port_open "$HTTP_PORT" && die "port $HTTP_PORT is taken by another process; stop it or set CDP_DEV_HTTP_PORT"
fi
# The collector creates the topics at start; the others wait for it to be ready.
start collector "$ADMIN_PORT" CDP_HTTP_ADDR="127.0.0.1:$HTTP_PORT"
wait_until "the collector to be ready" 90 ready collector "$ADMIN_PORT"
for entry in "${SERVICES[@]:1}"; do
  start "${entry%%:*}" "${entry#*:}"
done
for entry in "${SERVICES[@]:1}"; do
  wait_until "cdp-${entry%%:*} to be ready" 90 ready "${entry%%:*}" "${entry#*:}"
done

cat <<MSG

The pipeline is up.
  collector    http://127.0.0.1:$HTTP_PORT      (metrics: http://127.0.0.1:$ADMIN_PORT/metrics)
  write key    $WRITE_KEY                (source "dev", tracking plan config/plans/shop.json)
  broker       127.0.0.1:$KAFKA_PORT               (cdp.events.raw -> validator -> enricher -> cdp.events.enriched)
  validator    metrics: http://127.0.0.1:$VALIDATOR_ADMIN_PORT/metrics
  enricher     metrics: http://127.0.0.1:$ENRICHER_ADMIN_PORT/metrics

Send an event:
  curl -u $WRITE_KEY: http://127.0.0.1:$HTTP_PORT/v1/track \\
       -H 'content-type: application/json' -d '{"userId":"u1","event":"Hello"}'

Stop everything: scripts/dev-down.sh
MSG
