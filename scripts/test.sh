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
ensure_mcp_server_time
ensure_mcp_sdk
ensure_openai_sdk
ensure_schemathesis
ensure_helm_tools
ensure_chromium_playwright

log=$(mktemp)
export SABLE_FAULT_REPORT
SABLE_FAULT_REPORT=$(mktemp)
trap 'rm -f "$log" "$SABLE_FAULT_REPORT"' EXIT
status=0
cargo test --workspace --all-targets "$@" 2>&1 | tee "$log" || status=$?
# The fault-injection scenarios' report (accepted, replies, duplicates, losses) and the
# schemathesis run's case count.
cat "$SABLE_FAULT_REPORT"
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
