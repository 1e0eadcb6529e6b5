#!/usr/bin/env bash
# schemathesis against a live gateway (.ci/run): every operation in the
# OpenAPI document the gateway serves (GET /openapi.json on its admin
# listener) is called with generated requests, valid and not, with and
# without credentials, and no answer may be a server error or fall outside the
# document (status, content type, headers, body schema).
#
#   bash tests/schemathesis.sh [MAX_EXAMPLES]     # after `cargo build --workspace`
#
# The gateway runs from target/debug on free loopback ports, with sled in a
# temporary directory, cookies and the sign-in page on (so their operations
# are in the document), login limits off (else generated logins would all be
# 429s, which the document allows but which test nothing), and one user.
set -euo pipefail
cd "$(dirname "$0")/.."
max_examples=${1:-30}
bin=target/debug
command -v schemathesis >/dev/null || { echo "schemathesis: pip install schemathesis" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

read -r proxy admin upstream < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')

cat > "$work/gateway.toml" <<TOML
[server]
listen = ["127.0.0.1:$proxy"]
grace_period = "0s"
shutdown_timeout = "1s"
[admin]
listen = "127.0.0.1:$admin"
[upstream]
addresses = ["127.0.0.1:$upstream"]
health_check = "none"
[tokens]
secret_env = "SCHEMATHESIS_JWT_SECRET"
[store]
path = "$work/store"
[passwords]
memory_kib = 8192
iterations = 1
[limits]
login_per_ip_per_minute = 0
account_failures_per_minute = 0
failures_before_backoff = 0
[cookies]
enabled = true
secure = false
[signin]
enabled = true
[[routes]]
path = "/**"
policy = "public"
TOML

export SCHEMATHESIS_JWT_SECRET=$(head -c 48 /dev/urandom | base64)
export GATEHOUSE_ADMIN_TOKEN=$(head -c 48 /dev/urandom | base64)
"$bin/upstream-mock" --listen "127.0.0.1:$upstream" >"$work/upstream.log" 2>&1 &
pids+=($!)
"$bin/gatehouse" --config "$work/gateway.toml" check-config >/dev/null
printf 'schemathesis-password\n' | "$bin/gatehouse" --config "$work/gateway.toml" user add \
  --email admin@example.com --username admin --admin >/dev/null
"$bin/gatehouse" --config "$work/gateway.toml" serve >"$work/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null || { cat "$work/gateway.log"; exit 1; }
access=$(curl -sf -XPOST "http://127.0.0.1:$proxy/login" -H 'content-type: application/json' \
  -d '{"email":"admin@example.com","password":"schemathesis-password","set_cookies":false}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
run() {
  local url=$1 token=$2; shift 2
  schemathesis run "http://127.0.0.1:$admin/openapi.json" --url "$url" --checks "$checks" \
    --max-examples "$max_examples" --generation-deterministic --request-timeout 10 \
    --header "Authorization: Bearer $token" --suppress-health-check all "$@"
}
# The admin listener's operations (tagged admin), with the admin token; then
# the proxy listener's, with an administrator's access token. Deleting and
# blocking users and revoking tokens are left out: generated ids would
# delete the one account the other operations need, midway.
status=0
run "http://127.0.0.1:$admin" "$GATEHOUSE_ADMIN_TOKEN" --include-tag admin \
  --exclude-operation-id deleteUser --exclude-operation-id revokeUserTokens || status=1
run "http://127.0.0.1:$proxy" "$access" --exclude-tag admin \
  --exclude-operation-id deleteUserWithToken --exclude-operation-id revokeOwnTokens \
  --exclude-operation-id logout || status=1
if grep -E '"level":"ERROR"|panicked' "$work/gateway.log"; then
  echo "schemathesis: the gateway logged errors (above)" >&2
  status=1
fi
exit $status
