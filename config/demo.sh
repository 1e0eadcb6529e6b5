#!/usr/bin/env bash
# Gatehouse demo: builds everything, starts upstream-mock on 127.0.0.1:8000 and
# the gateway on 127.0.0.1:8080 (admin API on 127.0.0.1:9090) with
# config/gatehouse.toml, seeds an admin user, and prints curl lines that try
# every policy. Ctrl-C stops both.
#
#   bash config/demo.sh            # run the demo until Ctrl-C
#   bash config/demo.sh --smoke    # run every curl line, check the answers, stop
#
# Secrets and data live under target/demo/ (never in the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mode=${1:-run}
profile=${GATEHOUSE_DEMO_PROFILE:-release}

# shellcheck source=config/common.sh
. "$root/config/common.sh"
install_missing cmake:cmake curl:curl   # pingora's build needs cmake
build_binaries
require_free_ports 8000 8080 9090

state=$root/target/demo
rm -rf "$state" "$root/target/demo-data"
umask 077   # the store holds password hashes
make_secrets "$state"
admin_password=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
config=$root/config/gatehouse.toml

gatehouse() { "$bin_dir/gatehouse" --config "$config" "$@"; }
echo "$admin_password" | GATEHOUSE_LOG=warn gatehouse user add --email admin@example.com --username admin --admin >/dev/null

trap stop_all EXIT INT TERM

"$bin_dir/upstream-mock" --listen 127.0.0.1:8000 2>"$state/upstream.log" &
pids+=($!)
"$bin_dir/gatehouse" --config "$config" serve 2>"$state/gateway.log" &
pids+=($!)

wait_for_ports 8080 8000

G=http://127.0.0.1:8080
curl -s -XPOST $G/register -H 'content-type: application/json' \
  -d '{"email":"alice@example.com","username":"alice","password":"alice-password"}' >/dev/null

cat <<TXT

Gatehouse is running on $G (admin API and health on http://127.0.0.1:9090).
Seeded admin: admin@example.com / $admin_password     Registered user: alice@example.com / alice-password
Logs: $state/gateway.log   Admin token for the API: \$(cat $state/admin.token)

Try every policy (paste into another shell):

  # login gives a FRESH access token and a refresh token
  ALICE=\$(curl -s -XPOST $G/login -d '{"email":"alice@example.com","password":"alice-password"}' | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  REFRESH=\$(curl -s -XPOST $G/login -d '{"email":"alice@example.com","password":"alice-password"}' | sed -E 's/.*"refresh_token":"([^"]+)".*/\1/')
  ADMIN=\$(curl -s -XPOST $G/login -d '{"email":"admin@example.com","password":"$admin_password"}' | sed -E 's/.*"access_token":"([^"]+)".*/\1/')

  curl -s $G/products                                              # public: 200, no token needed
  curl -s $G/items                                                 # optional, anonymous: names only
  curl -s $G/items -H "Authorization: Bearer \$ALICE"               # optional, identified: full items
  curl -s $G/item/chair                                            # any: 401 missing_token
  curl -s $G/item/chair -H "Authorization: Bearer \$ALICE"          # any: 200
  curl -s -XPOST $G/item/lamp -H "Authorization: Bearer \$ALICE" -d '{"price": 12.5}'   # fresh: 201
  STALE=\$(curl -s -XPOST $G/refresh -H "Authorization: Bearer \$REFRESH" | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  curl -s -XPOST $G/item/vase -H "Authorization: Bearer \$STALE" -d '{"price": 3}'       # fresh: 401 fresh_token_required
  curl -s -XDELETE $G/item/lamp -H "Authorization: Bearer \$ALICE"  # admin: 403 admin_required
  curl -s -XDELETE $G/item/lamp -H "Authorization: Bearer \$ADMIN"  # admin: 200
  curl -s -XPOST $G/category/toys -H "Authorization: Bearer \$ALICE" # roles: 403 role_required (editors only)
  GATEHOUSE_ADMIN_TOKEN=\$(cat $state/admin.token) $bin_dir/gatehouse --config $config user roles add alice@example.com editor
  curl -s -XPOST $G/category/toys -H "Authorization: Bearer \$ALICE" # roles: 201, at once, same token
  curl -s $G/debug/echo                                            # deny: 403 access_denied
  curl -s -XPOST $G/logout -H "Authorization: Bearer \$ALICE"       # revoke; then reuse it: 401 token_revoked

Press Ctrl-C to stop.
TXT

if [ "$mode" != "--smoke" ]; then
  wait
  exit 0
fi

# --smoke: run the lines above and check each answer.
ALICE=$(curl -s -XPOST $G/login -d '{"email":"alice@example.com","password":"alice-password"}' | token access_token)
REFRESH=$(curl -s -XPOST $G/login -d '{"email":"alice@example.com","password":"alice-password"}' | token refresh_token)
ADMIN=$(curl -s -XPOST $G/login -d "{\"email\":\"admin@example.com\",\"password\":\"$admin_password\"}" | token access_token)
STALE=$(curl -s -XPOST $G/refresh -H "Authorization: Bearer $REFRESH" | token access_token)
check 200 "public /products" $G/products
check 200 "optional /items anonymous" $G/items
check 200 "optional /items identified" $G/items -H "Authorization: Bearer $ALICE"
check 401 "any without a token" $G/item/chair
check 200 "any with a token" $G/item/chair -H "Authorization: Bearer $ALICE"
check 201 "fresh POST with a fresh token" -XPOST $G/item/lamp -H "Authorization: Bearer $ALICE" -d '{"price": 12.5}'
check 401 "fresh POST with a refreshed token" -XPOST $G/item/vase -H "Authorization: Bearer $STALE" -d '{"price": 3}'
check 403 "admin DELETE as a user" -XDELETE $G/item/lamp -H "Authorization: Bearer $ALICE"
check 200 "admin DELETE as admin" -XDELETE $G/item/lamp -H "Authorization: Bearer $ADMIN"
check 403 "editor route without the role" -XPOST $G/category/toys -H "Authorization: Bearer $ALICE"
GATEHOUSE_LOG=warn gatehouse user roles add alice@example.com editor >/dev/null
check 201 "editor route once granted" -XPOST $G/category/toys -H "Authorization: Bearer $ALICE"
GATEHOUSE_LOG=warn gatehouse user roles remove alice@example.com editor >/dev/null
check 403 "editor route once withdrawn" -XDELETE $G/category/toys -H "Authorization: Bearer $ALICE"
check 403 "deny /debug/echo" $G/debug/echo
check 200 "logout" -XPOST $G/logout -H "Authorization: Bearer $ALICE"
check 401 "revoked token" $G/item/chair -H "Authorization: Bearer $ALICE"
check 200 "health" http://127.0.0.1:9090/healthz
echo "demo: $passed passed, $failed failed"
[ "$failed" = 0 ]
