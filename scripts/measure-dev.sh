#!/usr/bin/env bash
# Measures `sable dev`: time from process start to a ready /readyz, and resident memory
# once idle. Uses the release build and the bundled fake provider; NATS and Postgres are
# not needed. Usage: scripts/measure-dev.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
cargo build --release -q -p sable-cli -p sable-testkit
bin=target/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

"$bin/sable-fake-provider" 127.0.0.1:19090 >/dev/null &
export OPENAI_BASE_URL=http://127.0.0.1:19090/v1 OPENAI_API_KEY=fake SABLE_MODEL=fake
export SABLE_GATEWAY_ADDR=127.0.0.1:18080 RUST_LOG=warn

for run in $(seq 1 "$runs"); do
  export SABLE_DATABASE_URL="sqlite://$work/run$run/sable.db"
  start=$(date +%s%N)
  "$bin/sable" dev >"$work/out$run" 2>&1 &
  pid=$!
  until curl -sf http://127.0.0.1:18080/readyz >/dev/null; do sleep 0.002; done
  ready_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  sleep 2
  rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  echo "run $run: ready in ${ready_ms} ms (first start, fresh database), idle RSS $((rss_kb / 1024)) MiB"
  kill -TERM "$pid"; wait "$pid" || true
done
