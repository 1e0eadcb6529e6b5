#!/usr/bin/env python3
"""End-to-end load bench: Gatehouse beside HAProxy's native JWT check.

Run through `bash benches/load.sh` (installs wrk, haproxy, nginx and
redis-server, builds release binaries). Everything listens on 127.0.0.1 only.
It starts:

  nginx       :18081 fixed `200 ok` upstream, :18083 plain proxy hop (no auth)
  haproxy     :18082 jwt_verify HS256 + exp check + X-User-Id, to :18081
  gatehouse   :18084 (admin :18094) `any`/`admin`/`optional` routes, to :18081
  gatehouse   :18086 (admin :18096) the same, with 1,000,000 revoked tokens
  gatehouse   :18088 (admin :18098) the same, to upstream-mock
  gatehouse   :18089 (admin :18097) the same as :18084, Redis store backend
  upstream-mock :18085
  redis-server  :18099 no persistence, data in the bench's temp dir

and drives each with the same keep-alive load from wrk (one wrk thread, 64
connections by default). Gatehouse and HAProxy get the same worker-thread
count. For each row it reports requests/s, p50, p99, non-2xx answers, socket
errors and the proxy process's CPU time per request (from /proc), plus the
ratio to HAProxy. Results go to stdout and to the JSON file given with --json.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(os.path.dirname(ROOT), "shared", "peers")
ANCHOR_SECRET = "anchor-secret-0123456789abcdef0123456789"  # the literal in haproxy-jwt.cfg
CLK_TCK = os.sysconf("SC_CLK_TCK")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_hs256(claims, secret):
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(sig)}"


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


def children(pid):
    """The process and its descendants (nginx workers, haproxy)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    kids = [int(p) for p in out.split()]
    result = [pid]
    for k in kids:
        result += children(k)
    return result


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def parse_latency(value):
    m = re.match(r"([\d.]+)(us|ms|s)", value)
    if not m:
        return None
    n, unit = float(m.group(1)), m.group(2)
    return n / 1000 if unit == "us" else n if unit == "ms" else n * 1000


def wrk(url, args, headers=(), script=None):
    cmd = ["wrk", "-t", str(args.wrk_threads), "-c", str(args.connections), "-d", f"{args.duration}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result = {"requests": 0, "rps": 0.0, "p50_ms": None, "p99_ms": None, "non_2xx": 0, "socket_errors": 0}
    m = re.search(r"(\d+) requests in", out)
    result["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["rps"] = float(m.group(1)) if m else 0.0
    for pct, key in (("50%", "p50_ms"), ("99%", "p99_ms")):
        m = re.search(rf"^\s+{pct}\s+(\S+)", out, re.M)
        result[key] = parse_latency(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return result


def measure(name, proxy_pids, url, args, headers=(), script=None, expect="2xx"):
    pids = [p for pid in proxy_pids for p in children(pid)]
    before = cpu_seconds(pids) if pids else 0
    r = wrk(url, args, headers, script)
    after = cpu_seconds(pids) if pids else 0
    r["name"] = name
    r["expect"] = expect
    r["cpu_us_per_req"] = ((after - before) / r["requests"] * 1e6) if pids and r["requests"] else None
    errors = r["socket_errors"] + (r["non_2xx"] if expect == "2xx" else 0)
    r["errors"] = errors
    print(f"  {name:<52} {r['rps']:>10.0f} req/s  p50 {r['p50_ms'] or 0:7.3f} ms  p99 {r['p99_ms'] or 0:7.3f} ms"
          f"  errors {errors}" + (f"  cpu {r['cpu_us_per_req']:.1f} us/req" if r["cpu_us_per_req"] else ""),
          flush=True)
    return r


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, cmd, log, env=None, **kw):
        p = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, **kw)
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


GATEWAY_CONFIG = """
[server]
listen = ["127.0.0.1:{port}"]
threads = {threads}
grace_period = "0s"
shutdown_timeout = "1s"
[log]
level = "warn"
[admin]
listen = "127.0.0.1:{admin}"
[upstream]
addresses = ["{upstream}"]
health_check = "none"
[tokens]
secret_env = "BENCH_JWT_SECRET"
access_ttl = "2h"
[store]
{store}
[limits]
login_per_ip_per_minute = 0
account_failures_per_minute = 0
[[routes]]
path = "/any/**"
policy = "any"
[[routes]]
path = "/admin/**"
policy = "admin"
[[routes]]
path = "/optional/**"
policy = "optional"
[[routes]]
path = "/debug/**"
policy = "any"
"""


REDIS_STORE = """backend = "redis"
[store.redis]
url = "redis://127.0.0.1:18099/0"
key_prefix = "gatehouse:"
"""


def redis_cli(*command):
    """One command to the bench's redis-server; its answer as text."""
    return subprocess.run(["redis-cli", "-p", "18099", *command], capture_output=True, text=True,
                          check=True).stdout


def redis_commands():
    """Commands the bench's redis-server has processed so far (each INFO read counts once, afterwards)."""
    m = re.search(r"total_commands_processed:(\d+)", redis_cli("INFO", "stats"))
    return int(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per row (default 10)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--wrk-threads", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="worker threads for Gatehouse and HAProxy")
    ap.add_argument("--revoked", type=int, default=1_000_000)
    ap.add_argument("--json", default=os.path.join(ROOT, "target", "load-bench.json"))
    args = ap.parse_args()

    release = os.path.join(ROOT, "target", "release")
    gatehouse, mock = (os.path.join(release, n) for n in ("gatehouse", "upstream-mock"))
    for binary in (gatehouse, mock):
        if not os.path.exists(binary):
            raise SystemExit(f"{binary} is missing: run `bash benches/load.sh`")
    for tool in ("wrk", "haproxy", "nginx", "redis-server", "redis-cli"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: run `bash benches/load.sh` (it installs it)")

    work = tempfile.mkdtemp(prefix="gatehouse-bench-")
    log = open(os.path.join(work, "processes.log"), "w")
    procs = Procs()
    results = {"machine": {"nproc": os.cpu_count(), "uname": " ".join(os.uname())},
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "settings": vars(args), "rows": []}
    try:
        env = dict(os.environ, BENCH_JWT_SECRET=ANCHOR_SECRET, GATEHOUSE_ADMIN_TOKEN="bench-admin-token-" + "x" * 32,
                   HAPROXY_THREADS=str(args.threads))
        # Upstreams and peers.
        nginx = procs.start(["nginx", "-c", os.path.join(PEERS, "nginx-upstream.conf")], log)
        haproxy = procs.start(["haproxy", "-f", os.path.join(PEERS, "haproxy-jwt.cfg"), "-db"], log, env=env)
        mock_proc = procs.start([mock, "--listen", "127.0.0.1:18085"], log)
        procs.start(["redis-server", "--port", "18099", "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", work], log)
        for port in (18081, 18082, 18083, 18085, 18099):
            wait_port(port)
        redis_cli("PING")

        # Gatehouse instances: plain, with a large revocation list, in front of upstream-mock, and plain
        # again on the Redis store.
        gateways = {}
        for name, port, admin, upstream in (("plain", 18084, 18094, "127.0.0.1:18081"),
                                            ("revoked", 18086, 18096, "127.0.0.1:18081"),
                                            ("mock", 18088, 18098, "127.0.0.1:18085"),
                                            ("redis", 18089, 18097, "127.0.0.1:18081")):
            store = os.path.join(work, f"store-{name}")
            cfg = os.path.join(work, f"{name}.toml")
            with open(cfg, "w") as f:
                f.write(GATEWAY_CONFIG.format(port=port, admin=admin, threads=args.threads, upstream=upstream,
                                              store=REDIS_STORE if name == "redis" else f'path = "{store}"'))
            add = subprocess.run([gatehouse, "--config", cfg, "user", "add", "--email", "bench@example.com",
                                  "--username", "bench", "--admin"], input="bench-password\n", text=True,
                                 env=env, capture_output=True)
            if add.returncode != 0:
                raise SystemExit(add.stderr)
            if name == "revoked":
                print(f"seeding {args.revoked} revocations...", flush=True)
                subprocess.run(["cargo", "bench", "-q", "--bench", "seed_revocations", "--", store,
                                str(args.revoked)], check=True, env=env, cwd=ROOT)
            gateways[name] = (procs.start([gatehouse, "--config", cfg, "serve"], log, env=env), port, admin)
        for _, port, admin in gateways.values():
            wait_port(port)
            wait_port(admin)

        def login(port):
            out = subprocess.run(["curl", "-s", "-XPOST", f"http://127.0.0.1:{port}/login", "-d",
                                  '{"email":"bench@example.com","password":"bench-password"}'],
                                 capture_output=True, text=True, check=True).stdout
            return json.loads(out)["access_token"]

        token = login(18084)
        token_revoked = login(18086)
        token_mock = login(18088)
        token_redis = login(18089)
        anchor_token = mint_hs256({"sub": "1", "exp": int(time.time()) + 7200}, ANCHOR_SECRET)
        bad_token = anchor_token[:-4] + ("AAAA" if not anchor_token.endswith("AAAA") else "BBBB")
        gw_pid, hp_pid, ng_pid = gateways["plain"][0].pid, haproxy.pid, nginx.pid
        results["rss_mib"] = {"gatehouse_idle": rss_mib(gw_pid),
                              "gatehouse_1m_revoked": rss_mib(gateways["revoked"][0].pid),
                              "gatehouse_redis_idle": rss_mib(gateways["redis"][0].pid)}

        auth = lambda t: [f"Authorization: Bearer {t}"]
        rows = results["rows"]
        print(f"\nwrk -t{args.wrk_threads} -c{args.connections} -d{args.duration}s, {args.threads} worker thread(s) "
              f"for Gatehouse and HAProxy, {os.cpu_count()} cores\n", flush=True)
        print("any policy, valid token (upstream: nginx fixed 200)")
        rows.append(measure("HAProxy jwt_verify -> nginx", [hp_pid], "http://127.0.0.1:18082/any/x", args, auth(anchor_token)))
        rows.append(measure("Gatehouse any -> nginx", [gw_pid], "http://127.0.0.1:18084/any/x", args, auth(token)))
        # The local mirror/cache hit path: Redis should see no command per request.
        redis_before = redis_commands()
        rows.append(measure("Gatehouse any (redis store) -> nginx", [gateways["redis"][0].pid],
                            "http://127.0.0.1:18089/any/x", args, auth(token_redis)))
        rows[-1]["redis_commands"] = redis_commands() - redis_before - 1  # less the first INFO
        print(f"    (redis-server processed {rows[-1]['redis_commands']} commands during that row)", flush=True)
        rows.append(measure("nginx proxy hop, no auth -> nginx", [ng_pid], "http://127.0.0.1:18083/any/x", args))
        rows.append(measure("nginx upstream alone", [ng_pid], "http://127.0.0.1:18081/any/x", args))
        print("other policies")
        rows.append(measure("Gatehouse admin -> nginx", [gw_pid], "http://127.0.0.1:18084/admin/x", args, auth(token)))
        rows.append(measure("Gatehouse optional, no token -> nginx", [gw_pid], "http://127.0.0.1:18084/optional/x", args))
        print("invalid token (rejections)")
        rows.append(measure("HAProxy invalid signature (401)", [hp_pid], "http://127.0.0.1:18082/any/x", args,
                            auth(bad_token), expect="401"))
        rows.append(measure("Gatehouse invalid signature (401)", [gw_pid], "http://127.0.0.1:18084/any/x", args,
                            auth(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")), expect="401"))
        print(f"valid token with {args.revoked} revoked tokens in the store")
        rows.append(measure(f"Gatehouse any, {args.revoked} revoked -> nginx", [gateways["revoked"][0].pid],
                            "http://127.0.0.1:18086/any/x", args, auth(token_revoked)))
        print("upstream-mock (the demo backend)")
        rows.append(measure("Gatehouse any -> upstream-mock", [gateways["mock"][0].pid],
                            "http://127.0.0.1:18088/debug/echo", args, auth(token_mock)))
        rows.append(measure("upstream-mock alone", [mock_proc.pid], "http://127.0.0.1:18085/debug/echo", args))

        print("login storm")
        lua = os.path.join(work, "login.lua")
        with open(lua, "w") as f:
            f.write('wrk.method = "POST"\nwrk.body = \'{"email":"bench@example.com","password":"bench-password"}\'\n'
                    'wrk.headers["Content-Type"] = "application/json"\n')
        login_args = argparse.Namespace(**{**vars(args), "connections": 8})
        rows.append(measure("Gatehouse /login (argon2id 19 MiB, t=2)", [gw_pid], "http://127.0.0.1:18084/login",
                            login_args, script=lua))
        idle = measure("Gatehouse any, idle (p99 baseline)", [gw_pid], "http://127.0.0.1:18084/any/x", args, auth(token))
        storm = subprocess.Popen(["wrk", "-t1", "-c8", f"-d{args.duration + 2}s", "-s", lua,
                                  "http://127.0.0.1:18084/login"], stdout=subprocess.DEVNULL)
        time.sleep(1)
        busy = measure("Gatehouse any, while /login is hammered", [gw_pid], "http://127.0.0.1:18084/any/x", args,
                       auth(token))
        storm.wait()
        rows += [idle, busy]
        results["rss_mib"]["gatehouse_after_load"] = rss_mib(gw_pid)

        by_name = {r["name"]: r for r in rows}
        hp = by_name["HAProxy jwt_verify -> nginx"]
        gh = by_name["Gatehouse any -> nginx"]
        gr = by_name["Gatehouse any (redis store) -> nginx"]
        hp_reject = by_name["HAProxy invalid signature (401)"]
        gh_reject = by_name["Gatehouse invalid signature (401)"]
        ratios = {
            "any_rps_gatehouse_over_haproxy": gh["rps"] / hp["rps"] if hp["rps"] else None,
            "any_cpu_gatehouse_over_haproxy": (gh["cpu_us_per_req"] / hp["cpu_us_per_req"])
            if gh["cpu_us_per_req"] and hp["cpu_us_per_req"] else None,
            "any_rps_redis_over_sled": gr["rps"] / gh["rps"] if gh["rps"] else None,
            "any_cpu_redis_over_sled": (gr["cpu_us_per_req"] / gh["cpu_us_per_req"])
            if gr["cpu_us_per_req"] and gh["cpu_us_per_req"] else None,
            "reject_rps_gatehouse_over_haproxy": gh_reject["rps"] / hp_reject["rps"] if hp_reject["rps"] else None,
            "p99_login_storm_over_idle": (busy["p99_ms"] / idle["p99_ms"]) if idle["p99_ms"] else None,
        }
        results["ratios"] = ratios
        print("\nratios")
        for k, v in ratios.items():
            print(f"  {k:<40} {v:.2f}" if v is not None else f"  {k:<40} n/a")
        print("\nresident memory (MiB)")
        for k, v in results["rss_mib"].items():
            print(f"  {k:<40} {v:.1f}")
        os.makedirs(os.path.dirname(args.json), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nJSON: {args.json}")
    finally:
        procs.stop()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
