# Sourced by scripts/test.sh and scripts/quickstart.sh: makes sure Postgres (trust auth on
# 127.0.0.1:5432) and nats-server are available, starting or installing them when
# missing, and fails loudly when that is impossible.

SABLE_PG_URL="${SABLE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

fail() { echo "error: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else fail "need root to run: $*"; fi
}

apt_install() {
  command -v apt-get >/dev/null || fail "cannot install $* (no apt-get); install it by hand"
  echo "installing $* ..." >&2
  as_root apt-get update -qq >&2 || true
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >&2 || fail "apt-get install $* failed"
}

postgres_answers() { psql "$SABLE_PG_URL" -tAc 'SELECT 1' >/dev/null 2>&1; }

ensure_postgres() {
  postgres_answers && return 0
  command -v pg_ctlcluster >/dev/null || apt_install postgresql postgresql-client
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  [ -n "$version" ] || fail "PostgreSQL is installed but has no cluster in /etc/postgresql"
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba" 2>/dev/null; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 2>/dev/null \
    || as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload >&2 || true
  for _ in $(seq 1 50); do postgres_answers && return 0; sleep 0.2; done
  fail "PostgreSQL does not answer at $SABLE_PG_URL"
}

ensure_nats_server_binary() {
  command -v nats-server >/dev/null || apt_install nats-server
  command -v nats-server >/dev/null || fail "nats-server is not on PATH"
}

# A NATS server with JetStream on 127.0.0.1:4222, for running Sable (tests start their own).
ensure_nats_running() {
  ensure_nats_server_binary
  (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && return 0
  local dir="${SABLE_NATS_STORE_DIR:-/var/lib/nats-server}"
  mkdir -p "$dir" 2>/dev/null || dir="${TMPDIR:-/tmp}/sable-nats"
  mkdir -p "$dir"
  nohup nats-server -a 127.0.0.1 -p 4222 -js -sd "$dir" >"$dir/nats.log" 2>&1 &
  for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && return 0; sleep 0.2; done
  fail "nats-server did not start on 127.0.0.1:4222 (see $dir/nats.log)"
}

# The third-party MCP server the tests call through the sidecar: mcp-server-time from
# PyPI (`python3 -m mcp_server_time`), installed with pip when missing.
ensure_mcp_server_time() {
  command -v python3 >/dev/null || apt_install python3 python3-pip
  python3 -c 'import mcp_server_time' 2>/dev/null && return 0
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  echo "installing mcp-server-time (PyPI) ..." >&2
  python3 -m pip install --quiet mcp-server-time >&2 \
    || python3 -m pip install --quiet --break-system-packages mcp-server-time >&2 \
    || fail "pip install mcp-server-time failed (the MCP tests call it)"
  python3 -c 'import mcp_server_time' 2>/dev/null \
    || fail "python3 cannot import mcp_server_time after installing it"
}

# The official MCP Python SDK, pinned, for tests/e2e/mcp_server.rs (tests/e2e/mcp_client.py
# drives the gateway's /mcp with it; mcp-server-time accepts this version too).
SABLE_MCP_SDK="mcp==2.3.0"
ensure_mcp_sdk() {
  command -v python3 >/dev/null || apt_install python3 python3-pip
  python3 -c 'import importlib.metadata as m, sys; sys.exit(m.version("mcp") != "2.3.0")' 2>/dev/null && return 0
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  echo "installing $SABLE_MCP_SDK (PyPI) ..." >&2
  python3 -m pip install --quiet "$SABLE_MCP_SDK" >&2 \
    || python3 -m pip install --quiet --break-system-packages "$SABLE_MCP_SDK" >&2 \
    || fail "pip install $SABLE_MCP_SDK failed (the MCP server tests drive it)"
  python3 -c 'import mcp.client.streamable_http' 2>/dev/null \
    || fail "python3 cannot import the mcp SDK after installing it"
}

# The official OpenAI Python SDK, pinned, for tests/e2e/openai.rs (tests/e2e/openai_client.py
# drives the gateway's OpenAI-compatible routes with it).
SABLE_OPENAI_SDK="openai==3.57.0"
ensure_openai_sdk() {
  command -v python3 >/dev/null || apt_install python3 python3-pip
  python3 -c 'import importlib.metadata as m, sys; sys.exit(m.version("openai") != "3.57.0")' 2>/dev/null && return 0
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  echo "installing $SABLE_OPENAI_SDK (PyPI) ..." >&2
  python3 -m pip install --quiet "$SABLE_OPENAI_SDK" >&2 \
    || python3 -m pip install --quiet --break-system-packages "$SABLE_OPENAI_SDK" >&2 \
    || fail "pip install $SABLE_OPENAI_SDK failed (the OpenAI-compatible API tests drive it)"
  python3 -c 'import openai, httpx2' 2>/dev/null \
    || fail "python3 cannot import the openai SDK after installing it"
}

# schemathesis (PyPI, pinned), for tests/e2e/schemathesis.rs: fuzzes the gateway from its
# own GET /v1/openapi.json. In a virtualenv of its own (its dependencies stay out of the
# system Python the other tools share), at $SABLE_TOOLS_DIR/schemathesis-<version>, where
# the test looks for it.
SABLE_SCHEMATHESIS_VERSION="4.32.5"
ensure_schemathesis() {
  local dir="${SABLE_TOOLS_DIR:-$HOME/.cache/sable}/schemathesis-$SABLE_SCHEMATHESIS_VERSION"
  "$dir/bin/schemathesis" --version 2>/dev/null | grep -q "$SABLE_SCHEMATHESIS_VERSION" && return 0
  command -v python3 >/dev/null || apt_install python3 python3-pip
  python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv
  echo "installing schemathesis==$SABLE_SCHEMATHESIS_VERSION (PyPI) into $dir ..." >&2
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  python3 -m venv "$dir" >&2 || fail "python3 -m venv $dir failed (the schemathesis test needs it)"
  "$dir/bin/python" -m pip install --quiet "schemathesis==$SABLE_SCHEMATHESIS_VERSION" >&2 \
    || fail "pip install schemathesis==$SABLE_SCHEMATHESIS_VERSION failed (tests/e2e/schemathesis.rs runs it)"
  "$dir/bin/schemathesis" --version 2>/dev/null | grep -q "$SABLE_SCHEMATHESIS_VERSION" \
    || fail "schemathesis $SABLE_SCHEMATHESIS_VERSION does not run from $dir after installing it"
}

# The chart and Compose checks of tests/e2e/deploy.rs (helm/tests/chart.py): Helm v4's
# engine as a library (helm-python-sdk), the Kubernetes schemas (kubernetes-validate)
# and the Compose specification's schema (vendored by check-jsonschema), from PyPI at
# pinned versions (PyYAML and jsonschema come with them); and the CRD schemas of KEDA
# and the Prometheus Operator (kubernetes-models, npm, pinned by
# helm/tests/crds/package-lock.json).
SABLE_HELM_TOOLS="helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 check-jsonschema==0.39.0"
helm_tools_present() {
  python3 - <<'PY' 2>/dev/null
import importlib.metadata as m, sys
wanted = {"helm-python-sdk": "0.2.2", "kubernetes-validate": "1.37.0", "check-jsonschema": "0.39.0"}
sys.exit(any(m.version(name) != version for name, version in wanted.items()))
PY
}
ensure_helm_tools() {
  command -v python3 >/dev/null || apt_install python3 python3-pip
  ensure_crd_schemas
  helm_tools_present && return 0
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  echo "installing $SABLE_HELM_TOOLS (PyPI) ..." >&2
  # shellcheck disable=SC2086
  python3 -m pip install --quiet $SABLE_HELM_TOOLS >&2 \
    || python3 -m pip install --quiet --break-system-packages $SABLE_HELM_TOOLS >&2 \
    || fail "pip install $SABLE_HELM_TOOLS failed (the chart tests need them)"
  helm_tools_present || fail "python3 lacks $SABLE_HELM_TOOLS after installing them"
  python3 -c 'import helm_python, kubernetes_validate, check_jsonschema, yaml, jsonschema' \
    || fail "python3 cannot import the chart tools after installing them"
}

ensure_crd_schemas() {
  local dir="helm/tests/crds"
  command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    echo "installing the CRD schemas of $dir (npm ci) ..." >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2) \
      || fail "npm ci in $dir failed (the chart tests validate KEDA and ServiceMonitor objects)"
    touch "$dir/node_modules"
  fi
  (cd "$dir" && node -e 'import("@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject")' ) \
    || fail "node cannot load the CRD schemas of $dir"
}

# The web console's browser test (tests/e2e/console.rs): Debian's Chromium at
# /usr/bin/chromium, driven by playwright-core from npm (pinned by
# tests/e2e/console/package-lock.json; it downloads no browser of its own).
ensure_chromium_playwright() {
  local dir="tests/e2e/console"
  [ -x /usr/bin/chromium ] || apt_install chromium
  [ -x /usr/bin/chromium ] || fail "/usr/bin/chromium is missing after installing Debian's chromium package"
  command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    echo "installing playwright-core for $dir (npm ci) ..." >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2) \
      || fail "npm ci in $dir failed (the console's browser test drives Chromium with playwright-core)"
    touch "$dir/node_modules"
  fi
  (cd "$dir" && node -e 'import("playwright-core").then((p) => { if (!p.chromium) process.exit(1); })') \
    || fail "node cannot load playwright-core from $dir"
}
