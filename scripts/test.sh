#!/usr/bin/env bash
# Every check and test: formatting, lints, unit and integration tests against a real broker, the
# official Segment SDKs end to end, and a smoke test of the local stack's quick start.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

scripts/install-deps.sh --test-clients

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
say "cargo test (unit and integration tests; each test starts its own tansu broker)"
cargo test --workspace
say "SDK end-to-end tests (analytics-node, analytics-python, analytics-next in Chromium)"
cargo build -p cdp-collector
.venv/bin/python -m pytest tests/sdk
say "quick-start smoke test"
tests/smoke/dev-stack.sh
say "all checks passed"
