#!/usr/bin/env bash
# Runs a local Sable stack: Postgres + NATS (started if needed), one worker, one gateway.
# Without OPENAI_API_KEY it answers with the built-in fake provider, which echoes.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh

command -v psql >/dev/null || apt_install postgresql-client
ensure_postgres
ensure_nats_running

cargo build --release -q -p sable-cli -p sable-testkit
bin=target/release
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT INT TERM

if [ -z "${OPENAI_API_KEY:-}" ]; then
  "$bin/sable-fake-provider" 127.0.0.1:9090 >/dev/null &
  pids+=($!)
  export OPENAI_BASE_URL=http://127.0.0.1:9090/v1 OPENAI_API_KEY=fake SABLE_MODEL=fake
  echo "No OPENAI_API_KEY set: using the fake provider (it echoes your message)." >&2
fi

"$bin/sable" migrate
org=$("$bin/sable" admin org create quickstart)
key=$("$bin/sable" admin key create --org "$org")
SABLE_METRICS_ADDR="${SABLE_METRICS_ADDR:-127.0.0.1:9464}" "$bin/sable" worker >/dev/null &
pids+=($!)
"$bin/sable" gateway > >(sed -u 's/^/[gateway] /' >&2) &
pids+=($!)
addr="${SABLE_GATEWAY_ADDR:-127.0.0.1:8080}"
for _ in $(seq 1 100); do curl -sf "http://$addr/readyz" >/dev/null && break; sleep 0.1; done

cat <<MSG

Sable is running on http://$addr  (Ctrl-C stops it)
Your API key: $key

  curl -s http://$addr/v1/messages -H "Authorization: Bearer $key" \\
       -H 'content-type: application/json' -d '{"text":"hello","wait":true}'

MSG
wait
