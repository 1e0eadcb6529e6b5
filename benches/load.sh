#!/usr/bin/env bash
# End-to-end load bench: Gatehouse beside a bare pingora pass-through, HAProxy's native JWT check, a plain
# nginx proxy hop and the upstreams alone, all on 127.0.0.1.
#
#   bash benches/load.sh                 # 10 s per row, 1 worker thread each
#   bash benches/load.sh --duration 30 --threads 2
#   bash benches/load.sh --instructions  # instructions per request under callgrind (benches/instructions.py)
#
# Installs wrk, haproxy, nginx, redis-server, h2load (nghttp2-client), valgrind and cmake when missing (as root,
# from Debian), builds release binaries, then runs benches/load.py (see its
# --help).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in wrk haproxy nginx redis-server cmake curl h2load valgrind; do
  # h2load (the HTTP/2 rows) comes in Debian's nghttp2-client.
  command -v "$tool" >/dev/null || missing+=("$([ "$tool" = h2load ] && echo nghttp2-client || echo "$tool")")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    # Debian starts nginx, haproxy and redis-server as services on install;
    # the bench runs its own. The HAProxy and Redis services go through their
    # init scripts (their pid files), so copies started by anything else are
    # left alone.
    command -v systemctl >/dev/null && systemctl stop nginx haproxy redis-server 2>/dev/null || true
    pkill -x nginx 2>/dev/null || true
    service haproxy stop >/dev/null 2>&1 || true
    service redis-server stop >/dev/null 2>&1 || true
  else
    echo "load bench: please install ${missing[*]}" >&2
    exit 1
  fi
fi
if [ ! -d ../shared/peers ]; then
  echo "load bench: ../shared/peers (the HAProxy and nginx reference configs) is missing" >&2
  exit 1
fi

cargo build --release --workspace --bins --example bare_pingora --quiet
cargo bench --no-run --quiet --bench seed_revocations
if [ "${1:-}" = --instructions ]; then
  shift
  exec python3 benches/instructions.py "$@"
fi
exec python3 benches/load.py "$@"
