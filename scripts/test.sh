#!/usr/bin/env bash
# Runs every test of the workspace against real Postgres and NATS.
# Starts (or installs) what is missing; fails loudly, never skips.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh

command -v cargo >/dev/null || fail "cargo is not installed (https://rustup.rs)"
command -v psql >/dev/null || apt_install postgresql-client
ensure_postgres
ensure_nats_server_binary

cargo test --workspace --all-targets "$@"
