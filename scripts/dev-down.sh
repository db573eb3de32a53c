#!/usr/bin/env bash
# Stops what scripts/dev-up.sh started (services first, then the broker). Data stays in .stack/data;
# add --wipe to delete it.
set -euo pipefail
cd "$(dirname "$0")/.."
STACK="${CDP_DEV_STACK_DIR:-$PWD/.stack}"
for name in collector validator enricher tansu; do
  pidfile="$STACK/pids/$name"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
done
if [ "${1:-}" = "--wipe" ]; then rm -rf "$STACK/data"; echo "wiped .stack/data"; fi
