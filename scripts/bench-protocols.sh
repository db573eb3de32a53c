#!/usr/bin/env bash
# Protocols benchmark (docs/BENCHMARKS.md): events/s on one core from an event's raw bytes to its
# verdict and output bytes, on a 50-event plan, valid and mixed files. The Rust engine (criterion)
# and the ajv baseline (Node, compiled validators, allErrors) run one after the other in this run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
F=tests/fixtures/protocols
[ -f "$F/events-mixed.jsonl" ] || python3 "$F/gen.py"
[ -d tests/clients/node_modules/ajv ] || npm ci --prefix tests/clients --no-audit --no-fund
echo "== machine: $(nproc) cores, $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== cdp-protocols (criterion, pinned to CPU 0)"
cargo bench -p cdp-protocols --bench verdicts --no-run
bin=$(ls -t target/release/deps/verdicts-* | grep -v '\.d$' | head -1)
taskset -c 0 "$bin" --bench --warm-up-time 2 --measurement-time 10 | grep -E "^protocols|thrpt"
echo "== ajv (Node $(node --version), pinned to CPU 0)"
for f in events-valid.jsonl events-mixed.jsonl; do
  taskset -c 0 node scripts/bench/ajv-protocols.mjs "$F/$f" "$F/plan-50.json"
done
