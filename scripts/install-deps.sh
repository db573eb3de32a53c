#!/usr/bin/env bash
# Installs what building, running and testing need, skipping what is already there:
#   Debian packages (librdkafka's build deps, wrk, chromium), the tansu broker at a pinned version,
#   and with --test-clients the Python (.venv) and Node (tests/clients) test clients.
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_VERSION="0.6.0"
APT_PACKAGES=(cmake libcurl4-openssl-dev libssl-dev libsasl2-dev libzstd-dev wrk)
with_clients=false
for arg in "$@"; do
  case "$arg" in
    --test-clients) with_clients=true ;;
    *) echo "usage: $0 [--test-clients]" >&2; exit 2 ;;
  esac
done
$with_clients && APT_PACKAGES+=(chromium)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! tansu --version 2>/dev/null | grep -qx "tansu $TANSU_VERSION"; then
  say "installing tansu $TANSU_VERSION (a Kafka-protocol broker; about 11 minutes on 2 cores, once)"
  cargo install tansu --locked --version "$TANSU_VERSION" --features dynostore,libsql
fi

if $with_clients; then
  if [ ! -x .venv/bin/python ]; then
    say "creating .venv for the Python test clients"
    python3 -m venv .venv
  fi
  say "installing Python test clients"
  .venv/bin/python -m pip install -q -r tests/requirements.txt
  say "installing Node test clients"
  npm ci --prefix tests/clients --no-audit --no-fund --loglevel=error
fi
