#!/usr/bin/env bash
# Scale-out demo: two gateways sharing one Redis (config/scale-out.toml).
# Starts redis-server on 127.0.0.1:6379 unless one already answers there,
# upstream-mock on :8000, gateway A on :8081 (admin :9091) and gateway B on
# :8082 (admin :9092), then shows a user registered on A logging in on B, and
# a logout on B refused on A. Ctrl-C stops everything it started.
#
#   bash config/scale-out.sh            # run until Ctrl-C
#   bash config/scale-out.sh --smoke    # check every step, then stop
#
# Secrets and Redis's data live under target/scale-out/ (never in the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mode=${1:-run}
profile=${GATEHOUSE_DEMO_PROFILE:-release}

# shellcheck source=config/common.sh
. "$root/config/common.sh"
install_missing cmake:cmake curl:curl redis-server:redis-server redis-cli:redis-tools
build_binaries
require_free_ports 8000 8081 8082 9091 9092

state=$root/target/scale-out
mkdir -p "$state"
umask 077
make_secrets "$state"
trap stop_all EXIT INT TERM

if [ "$(redis-cli -p 6379 ping 2>/dev/null)" = PONG ]; then
  echo "using the Redis already running on 127.0.0.1:6379"
else
  redis-server --port 6379 --bind 127.0.0.1 --dir "$state" --appendonly yes --save "" >"$state/redis.log" 2>&1 &
  pids+=($!)
  wait_for_ports 6379
fi

config=$root/config/scale-out.toml
gatehouse() { "$bin_dir/gatehouse" --config "$config" "$@"; }
admin_password=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
# The user commands talk to Redis directly: no gateway needs to be running.
if ! echo "$admin_password" | GATEHOUSE_LOG=warn gatehouse user add --email admin@example.com --username admin --admin >/dev/null 2>"$state/seed.err"; then
  grep -q "already exists" "$state/seed.err" || { cat "$state/seed.err" >&2; exit 1; }
  admin_password="(unchanged: admin@example.com already existed in this Redis)"
fi

"$bin_dir/upstream-mock" --listen 127.0.0.1:8000 2>"$state/upstream.log" &
pids+=($!)
"$bin_dir/gatehouse" --config "$config" serve --listen 127.0.0.1:8081 --admin-listen 127.0.0.1:9091 2>"$state/gateway-a.log" &
pids+=($!)
"$bin_dir/gatehouse" --config "$config" serve --listen 127.0.0.1:8082 --admin-listen 127.0.0.1:9092 2>"$state/gateway-b.log" &
pids+=($!)
wait_for_ports 8000 8081 8082 9091 9092

A=http://127.0.0.1:8081
B=http://127.0.0.1:8082
# A new user each run, so a Redis kept from an earlier run is no obstacle.
user="carol-$(date +%s)-$$@example.com"

cat <<TXT

Two gateways share Redis on 127.0.0.1:6379: A on $A (admin :9091), B on $B (admin :9092).
Seeded admin: admin@example.com / $admin_password
Logs: $state/gateway-a.log and $state/gateway-b.log

Try it (paste into another shell):

  curl -s -XPOST $A/register -d '{"email":"$user","username":"carol","password":"carol-password"}'
  TOKEN=\$(curl -s -XPOST $B/login -d '{"email":"$user","password":"carol-password"}' | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  curl -s $A/item/chair -H "Authorization: Bearer \$TOKEN"           # 200: B's token works on A
  curl -s -XPOST $B/logout -H "Authorization: Bearer \$TOKEN"        # logged out on B...
  curl -s $A/item/chair -H "Authorization: Bearer \$TOKEN"           # ...401 token_revoked on A
  curl -s http://127.0.0.1:9091/readyz                               # store and upstream state

Press Ctrl-C to stop.
TXT

if [ "$mode" != "--smoke" ]; then
  wait
  exit 0
fi

check 201 "register on A" -XPOST $A/register -d "{\"email\":\"$user\",\"username\":\"carol\",\"password\":\"carol-password\"}"
TOKEN=$(curl -s -XPOST $B/login -d "{\"email\":\"$user\",\"password\":\"carol-password\"}" | token access_token)
check 200 "B's token on A" $A/item/chair -H "Authorization: Bearer $TOKEN"
check 200 "B's token on B" $B/item/chair -H "Authorization: Bearer $TOKEN"
check 200 "logout on B" -XPOST $B/logout -H "Authorization: Bearer $TOKEN"
sleep 1   # the promise: refused everywhere within a second
check 401 "the token on A, a second after the logout on B" $A/item/chair -H "Authorization: Bearer $TOKEN"
check 200 "A ready" http://127.0.0.1:9091/readyz
check 200 "B ready" http://127.0.0.1:9092/readyz
echo "scale-out: $passed passed, $failed failed"
[ "$failed" = 0 ]
