# Shared by config/demo.sh and config/scale-out.sh (sourced, not run).
# Expects $root (the repository) and $profile (a cargo profile) to be set.

# Installs the Debian packages named when their command is missing (as root),
# or says what to install. Arguments: command:package pairs.
install_missing() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "please install ${need[*]} first (e.g. sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
}

# Builds every binary; sets $bin_dir.
build_binaries() {
  echo "building (cargo build --profile $profile --workspace)..."
  cargo build --profile "$profile" --workspace --quiet
  bin_dir=$root/target/$([ "$profile" = dev ] && echo debug || echo "$profile")
}

# Refuses to start when one of the ports is taken.
require_free_ports() {
  local port
  for port in "$@"; do
    if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
      echo "port $port is already in use; stop whatever listens there first" >&2
      exit 1
    fi
  done
}

# Waits (up to 10 s) until every port accepts connections.
wait_for_ports() {
  local port
  for _ in $(seq 1 100); do
    for port in "$@"; do
      (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null || { sleep 0.1; continue 2; }
    done
    return 0
  done
  echo "not listening after 10 s: one of ports $*" >&2
  return 1
}

# Fresh secrets in $1 (never in the repository), exported for the gateways.
make_secrets() {
  mkdir -p "$1"
  (umask 077
   head -c 48 /dev/urandom | base64 > "$1/jwt.secret"
   head -c 48 /dev/urandom | base64 > "$1/admin.token")
  GATEHOUSE_JWT_SECRET=$(cat "$1/jwt.secret")
  GATEHOUSE_ADMIN_TOKEN=$(cat "$1/admin.token")
  export GATEHOUSE_JWT_SECRET GATEHOUSE_ADMIN_TOKEN
}

# Background processes to stop on exit.
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }

# `token NAME` reads a JSON answer on stdin and prints its NAME field.
token() { sed -E 's/.*"'"$1"'":"([^"]+)".*/\1/'; }

# check WANTED-STATUS DESCRIPTION CURL-ARGS...: one smoke-test line.
passed=0 failed=0
check() {
  local want=$1 what=$2 got
  shift 2
  got=$(curl -s -o "$state/body" -w '%{http_code}' "$@")
  if [ "$got" = "$want" ]; then
    echo "ok   $got $what"; passed=$((passed + 1))
  else
    echo "FAIL $got (wanted $want) $what: $(cat "$state/body")"; failed=$((failed + 1))
  fi
}
