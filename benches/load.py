#!/usr/bin/env python3
"""End-to-end load bench: Gatehouse beside a bare pingora pass-through and HAProxy's native JWT check.

Run through `bash benches/load.sh` (installs wrk, haproxy, nginx and
redis-server, builds release binaries). Everything listens on 127.0.0.1 only.

Order of work, so that no timed row pays for another's set-up:
  1. set-up: upstreams, peers, every gateway, 1,000,000 revocations seeded,
     every login done; then wait until the machine is idle again;
  2. warm-up: a short unrecorded load on every target;
  3. timed rows, in rounds (default 2): every row once per round, the order
     reversed on alternate rounds, so peers and Gatehouse rows interleave and
     slow drift on a shared machine hits both;
  4. the login storm and the 10,000-idle-connection memory check, last.

Each row reports the median over its rounds of requests/s, p50, p99 and the
proxy process's own CPU time per request (from /proc), the spread of its
req/s and CPU (max-min over median), and a flag when one round's p99 is more
than twice another's. Every row's CPU per request and req/s are also printed
as ratios to the bare pingora row and to the HAProxy row with the same number
of worker threads (each ratio computed per round, the median shown).

Targets (ports):
  nginx         :18081 fixed `200 ok` upstream, :18083 plain proxy hop (no auth)
  bare pingora  :18087 (1 thread), :18093 (2 threads) pass-through to :18081
  haproxy       :18082 jwt_verify, :18092 the same with a log line per request,
                :18095 the same with 2 threads, :18102 for the memory check
  gatehouse     :18084 `any`/`public`/`admin`/`optional` routes to :18081;
                :18086 the same with 1,000,000 revoked tokens; :18088 to
                upstream-mock; :18089 Redis store; :18090 JSON access log to a
                file; :18100 2 worker threads; :18110.. the --variant binaries
  upstream-mock :18085; redis-server :18099 (no persistence)
  HTTP/2 rows   (cleartext, prior knowledge, measured with h2load): bare pingora --h2c :18107, HAProxy
                `proto h2` :18106, Gatehouse `server.h2c = true` :18104
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(os.path.dirname(ROOT), "shared", "peers")
ANCHOR_SECRET = "anchor-secret-0123456789abcdef0123456789"  # the literal in haproxy-jwt.cfg
CLK_TCK = os.sysconf("SC_CLK_TCK")
IDLE_CONNECTIONS = 10_000


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_hs256(claims, secret):
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(sig)}"


def corrupt(token):
    """The same token with a wrong signature."""
    return token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")


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
    """The process and its descendants (nginx workers)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    result = [pid]
    for kid in (int(p) for p in out.split()):
        result += children(kid)
    return result


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wait_until_idle(max_wait=30):
    """Waits until the machine's CPUs are at least 90% idle over a second (set-up work has settled)."""
    def sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)
    deadline = time.time() + max_wait
    while time.time() < deadline:
        idle0, total0 = sample()
        time.sleep(1)
        idle1, total1 = sample()
        if total1 > total0 and (idle1 - idle0) / (total1 - total0) >= 0.9:
            return
    print("  (the machine did not become idle; timings may be noisy)", flush=True)


def parse_latency(value):
    m = re.match(r"([\d.]+)(us|ms|s)", value)
    if not m:
        return None
    n, unit = float(m.group(1)), m.group(2)
    return n / 1000 if unit == "us" else n if unit == "ms" else n * 1000


def wrk(url, duration, connections, wrk_threads, headers=(), script=None):
    cmd = ["wrk", "-t", str(wrk_threads), "-c", str(connections), "-d", f"{duration}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result = {}
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


def h2load(url, duration, connections, streams, headers=()):
    """Cleartext HTTP/2 with prior knowledge: `connections` clients, `streams` concurrent streams each.
    h2load prints no latency percentiles, so those stay empty for its rows."""
    cmd = ["h2load", "-c", str(connections), "-m", str(streams), "-t", "1", "-D", str(duration)]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result = {"p50_ms": None, "p99_ms": None}
    m = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    result["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    result["requests"] = int(m.group(1)) if m else 0
    result["socket_errors"] = int(m.group(3)) + int(m.group(4)) if m else 0
    m = re.search(r"status codes: (\d+) 2xx", out)
    result["non_2xx"] = result["requests"] - int(m.group(1)) if m else 0
    return result


class Row:
    """One timed target: measured once per round, by wrk (HTTP/1.1) or h2load (HTTP/2, `protocol="h2"`)."""

    def __init__(self, name, pid, url, threads=1, token=None, expect="2xx", peer=None, protocol="h1"):
        self.name, self.pid, self.url, self.threads = name, pid, url, threads
        self.headers = [f"Authorization: Bearer {token}"] if token else []
        self.expect, self.peer, self.protocol = expect, peer, protocol
        self.rounds = []

    def measure(self, args, duration=None, record=True):
        pids = children(self.pid)
        before = cpu_seconds(pids)
        if self.protocol == "h2":
            # The same number of requests in flight as wrk's connections, 4 streams per connection.
            r = h2load(self.url, duration or args.duration, max(1, args.connections // 4), 4, self.headers)
        else:
            r = wrk(self.url, duration or args.duration, args.connections, args.wrk_threads, self.headers)
        after = cpu_seconds(pids)
        r["cpu_us_per_req"] = (after - before) / r["requests"] * 1e6 if r["requests"] else None
        r["errors"] = r["socket_errors"] + (r["non_2xx"] if self.expect == "2xx" else 0)
        if record:
            self.rounds.append(r)
        return r

    def median(self, key):
        values = [r[key] for r in self.rounds if r.get(key) is not None]
        return statistics.median(values) if values else None

    def spread(self, key):
        values = [r[key] for r in self.rounds if r.get(key) is not None]
        mid = statistics.median(values) if values else None
        return (max(values) - min(values)) / mid if mid else None

    def p99_flag(self):
        p99s = [r["p99_ms"] for r in self.rounds if r.get("p99_ms")]
        return len(p99s) > 1 and max(p99s) > 2 * min(p99s)

    def ratio(self, other, key):
        """The median of per-round ratios of `key` (rounds paired: they ran close together)."""
        if other is None:
            return None
        pairs = [(a.get(key), b.get(key)) for a, b in zip(self.rounds, other.rounds)]
        ratios = [a / b for a, b in pairs if a and b]
        return statistics.median(ratios) if ratios else None

    def summary(self, floors, peers):
        floor = floors.get((self.threads, self.protocol))
        peer = peers.get((self.threads, self.peer or ("h2" if self.protocol == "h2" else "plain")))
        return {
            "name": self.name, "threads": self.threads, "expect": self.expect, "rounds": self.rounds,
            "rps": self.median("rps"), "p50_ms": self.median("p50_ms"), "p99_ms": self.median("p99_ms"),
            "cpu_us_per_req": self.median("cpu_us_per_req"), "errors": sum(r["errors"] for r in self.rounds),
            "rps_spread": self.spread("rps"), "cpu_spread": self.spread("cpu_us_per_req"),
            "p99_far_off_repeat": self.p99_flag(),
            "cpu_over_bare": self.ratio(floor, "cpu_us_per_req"), "rps_over_bare": self.ratio(floor, "rps"),
            "cpu_over_haproxy": self.ratio(peer, "cpu_us_per_req"), "rps_over_haproxy": self.ratio(peer, "rps"),
        }


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
h2c = {h2c}
grace_period = "0s"
shutdown_timeout = "1s"
[log]
{log}
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
path = "/public/**"
policy = "public"
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

QUIET_LOG = 'level = "warn"'
ACCESS_LOG = 'format = "json"\nlevel = "info"'

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


def haproxy_config(work, name, port, log=False, maxconn=None, h2=False):
    """A copy of the reference HAProxy config on another port, optionally logging every request, or
    speaking cleartext HTTP/2 with prior knowledge to clients (`proto h2`) for the HTTP/2 rows."""
    with open(os.path.join(PEERS, "haproxy-jwt.cfg")) as f:
        bind = f"bind 127.0.0.1:{port}" + (" proto h2" if h2 else "")
        text = f.read().replace("bind 127.0.0.1:18082", bind)
    if log:
        text = text.replace("global\n", "global\n  log stdout format raw local0\n", 1)
        text = text.replace("defaults\n", "defaults\n  log global\n  option httplog\n", 1)
    if maxconn:
        # HAProxy reserves two descriptors per connection (client and server
        # side) and by default refuses to start when the process's limit is
        # lower; idle keep-alive clients share a few server connections, so a
        # warning is enough here.
        text = re.sub(r"maxconn \d+", f"maxconn {maxconn}\n  no strict-limits", text)
    path = os.path.join(work, f"haproxy-{name}.cfg")
    with open(path, "w") as f:
        f.write(text)
    return path


def hold_idle_connections(port, token, count):
    """Opens `count` keep-alive connections, one answered request each, and returns them still open."""
    authorization = f"Authorization: Bearer {token}\r\n" if token else ""
    request = f"GET /any/idle HTTP/1.1\r\nHost: bench\r\n{authorization}\r\n".encode()
    held = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(request)
        answer = s.recv(65536)
        if not answer.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"idle-connection check on :{port}: {answer[:80]!r}")
        held.append(s)
    return held


def memory_with_idle_connections(targets, count):
    """Resident memory of each proxy before and while holding `count` idle keep-alive clients."""
    result = {}
    for name, pid, port, token in targets:
        before = rss_mib(pid)
        held = hold_idle_connections(port, token, count)
        time.sleep(1)
        during = rss_mib(pid)
        for s in held:
            s.close()
        result[name] = {"idle_mib": round(before, 1), f"with_{count}_idle_connections_mib": round(during, 1),
                        "kib_per_connection": round((during - before) * 1024 / count, 2)}
        print(f"  {name:<40} {before:7.1f} MiB -> {during:7.1f} MiB  "
              f"({result[name]['kib_per_connection']:.1f} KiB per connection)", flush=True)
        time.sleep(2)
    return result


def fmt(value, spec, missing="-"):
    return format(value, spec) if value is not None else missing


def print_table(summaries):
    print(f"\n{'row':<50} {'req/s':>9} {'±':>4} {'p50 ms':>7} {'p99 ms':>7} {'CPU/req':>8} {'±':>4} "
          f"{'errors':>6} {'CPU/bare':>8} {'CPU/HAP':>8} {'rps/bare':>8} {'rps/HAP':>8}")
    for s in summaries:
        flag = " !p99" if s["p99_far_off_repeat"] else ""
        print(f"{s['name']:<50} {fmt(s['rps'], '9.0f')} {fmt(s['rps_spread'] and s['rps_spread'] * 100, '3.0f')}% "
              f"{fmt(s['p50_ms'], '7.2f')} {fmt(s['p99_ms'], '7.2f')} {fmt(s['cpu_us_per_req'], '6.1f')}µs "
              f"{fmt(s['cpu_spread'] and s['cpu_spread'] * 100, '3.0f')}% {s['errors']:>6} "
              f"{fmt(s['cpu_over_bare'], '7.2f')}x {fmt(s['cpu_over_haproxy'], '7.2f')}x "
              f"{fmt(s['rps_over_bare'], '7.2f')}x {fmt(s['rps_over_haproxy'], '7.2f')}x{flag}")
    print("(± is max-min over the median across rounds; ratios are medians of per-round ratios against the row with "
          "the same worker threads; !p99: one round's p99 was over twice another's)")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per row per round (default 10)")
    ap.add_argument("--rounds", type=int, default=2, help="times each row is measured, interleaved (default 2)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--wrk-threads", type=int, default=1)
    ap.add_argument("--revoked", type=int, default=1_000_000)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                    help="another gatehouse binary to run beside the main one (`any` and `public` rows), for A/B")
    ap.add_argument("--skip-memory", action="store_true", help="skip the 10,000-idle-connection check")
    ap.add_argument("--quick", action="store_true",
                    help="only the bare pingora, HAProxy, Gatehouse any/public and --variant rows (for A/B of a "
                         "lever); no login storm or memory check")
    ap.add_argument("--http2", action="store_true",
                    help="only the HTTP/2 rows (bare pingora, HAProxy and Gatehouse with h2c clients); no login "
                         "storm or memory check")
    ap.add_argument("--json", default=os.path.join(ROOT, "target", "load-bench.json"))
    return ap.parse_args()


def main():
    args = parse_args()
    release = os.path.join(ROOT, "target", "release")
    gatehouse, mock = (os.path.join(release, n) for n in ("gatehouse", "upstream-mock"))
    bare = os.path.join(release, "examples", "bare_pingora")
    variants = [v.split("=", 1) for v in args.variant]
    for binary in [gatehouse, mock, bare] + [path for _, path in variants]:
        if not os.path.exists(binary):
            raise SystemExit(f"{binary} is missing: run `bash benches/load.sh`")
    for tool in ("wrk", "haproxy", "nginx", "redis-server", "redis-cli"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: run `bash benches/load.sh` (it installs it)")
    # Room for the idle-connection check, inherited by every proxy started below
    # (HAProxy wants two descriptors per `maxconn`). Only root may raise the hard limit.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(hard, 8 * IDLE_CONNECTIONS) if os.geteuid() == 0 else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    work = tempfile.mkdtemp(prefix="gatehouse-bench-")
    log = open(os.path.join(work, "processes.log"), "w")
    procs = Procs()
    results = {"machine": {"nproc": os.cpu_count(), "uname": " ".join(os.uname())},
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "settings": vars(args)}
    try:
        env = dict(os.environ, BENCH_JWT_SECRET=ANCHOR_SECRET, GATEHOUSE_ADMIN_TOKEN="bench-admin-token-" + "x" * 32)
        run(args, work, log, procs, env, gatehouse, mock, bare, variants, results)
    finally:
        procs.stop()
        log.close()


def run(args, work, log, procs, env, gatehouse, mock, bare, variants, results):
    print("set-up: upstreams, peers, gateways, revocations, logins", flush=True)
    nginx = procs.start(["nginx", "-c", os.path.join(PEERS, "nginx-upstream.conf")], log)
    haproxies = {}
    for name, port, threads, logged, maxconn in (("plain", 18082, 1, False, None), ("logged", 18092, 1, True, None),
                                                  ("2 threads", 18095, 2, False, None),
                                                  ("memory", 18102, 1, False, IDLE_CONNECTIONS),
                                                  ("h2", 18106, 1, False, None)):
        cfg = haproxy_config(work, name.replace(" ", "-"), port, logged, maxconn, h2=name == "h2")
        out = open(os.path.join(work, f"haproxy-{port}.log"), "w") if logged else log
        haproxies[name] = procs.start(["haproxy", "-f", cfg, "-db"], out, env=dict(env, HAPROXY_THREADS=str(threads)))
    bares = {threads: procs.start([bare, "--listen", f"127.0.0.1:{port}", "--upstream", "127.0.0.1:18081",
                                   "--threads", str(threads)], log)
             for threads, port in ((1, 18087), (2, 18093))}
    bare_h2c = procs.start([bare, "--listen", "127.0.0.1:18107", "--upstream", "127.0.0.1:18081", "--h2c"], log)
    mock_proc = procs.start([mock, "--listen", "127.0.0.1:18085"], log)
    procs.start(["redis-server", "--port", "18099", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", work], log)
    for port in (18081, 18082, 18083, 18085, 18087, 18092, 18093, 18095, 18099, 18102, 18106, 18107):
        wait_port(port)
    redis_cli("PING")

    gateway_specs = [("plain", gatehouse, 18084, 18094, "127.0.0.1:18081", 1, QUIET_LOG),
                     ("revoked", gatehouse, 18086, 18096, "127.0.0.1:18081", 1, QUIET_LOG),
                     ("mock", gatehouse, 18088, 18098, "127.0.0.1:18085", 1, QUIET_LOG),
                     ("redis", gatehouse, 18089, 18097, "127.0.0.1:18081", 1, QUIET_LOG),
                     ("logged", gatehouse, 18090, 18091, "127.0.0.1:18081", 1, ACCESS_LOG),
                     ("2 threads", gatehouse, 18100, 18101, "127.0.0.1:18081", 2, QUIET_LOG),
                     ("h2c", gatehouse, 18104, 18105, "127.0.0.1:18081", 1, QUIET_LOG)]
    for i, (name, path) in enumerate(variants):
        gateway_specs.append((f"variant {name}", path, 18110 + 2 * i, 18111 + 2 * i, "127.0.0.1:18081", 1, QUIET_LOG))
    gateways = {}
    for name, binary, port, admin, upstream, threads, log_section in gateway_specs:
        slug = name.replace(" ", "-")
        store = os.path.join(work, f"store-{slug}")
        cfg = os.path.join(work, f"{slug}.toml")
        with open(cfg, "w") as f:
            f.write(GATEWAY_CONFIG.format(port=port, admin=admin, threads=threads, upstream=upstream, log=log_section,
                                          h2c="true" if name == "h2c" else "false",
                                          store=REDIS_STORE if name == "redis" else f'path = "{store}"'))
        add = subprocess.run([binary, "--config", cfg, "user", "add", "--email", "bench@example.com",
                              "--username", "bench", "--admin"], input="bench-password\n", text=True,
                             env=env, capture_output=True)
        if add.returncode != 0:
            raise SystemExit(add.stderr)
        if name == "revoked":
            print(f"  seeding {args.revoked} revocations...", flush=True)
            subprocess.run(["cargo", "bench", "-q", "--bench", "seed_revocations", "--", store, str(args.revoked)],
                           check=True, env=env, cwd=ROOT)
        out = open(os.path.join(work, "access-log.jsonl"), "w") if name == "logged" else log
        gateways[name] = (procs.start([binary, "--config", cfg, "serve"], out, env=env), port)
        wait_port(port)
        wait_port(admin)

    tokens = {}
    for name, (_, port) in gateways.items():
        out = subprocess.run(["curl", "-s", "-XPOST", f"http://127.0.0.1:{port}/login", "-d",
                              '{"email":"bench@example.com","password":"bench-password"}'],
                             capture_output=True, text=True, check=True).stdout
        tokens[name] = json.loads(out)["access_token"]
    anchor = mint_hs256({"sub": "1", "exp": int(time.time()) + 7200}, ANCHOR_SECRET)
    results["rss_mib"] = {f"gatehouse {name} (idle)": round(rss_mib(proc.pid), 1)
                          for name, (proc, _) in gateways.items()}

    def gw(name, path, label, token_name=None, **kw):
        proc, port = gateways[name]
        token = tokens[token_name or name] if token_name is not False else None
        return Row(label, proc.pid, f"http://127.0.0.1:{port}{path}", token=token, **kw)

    hp = lambda name, label, token, port, **kw: Row(label, haproxies[name].pid, f"http://127.0.0.1:{port}/any/x",
                                                   token=token, **kw)
    bare_1 = Row("bare pingora pass-through -> nginx", bares[1].pid, "http://127.0.0.1:18087/any/x")
    haproxy_1 = hp("plain", "HAProxy jwt_verify -> nginx", anchor, 18082)
    haproxy_logged = hp("logged", "HAProxy jwt_verify, log per request", anchor, 18092, peer="logged")
    bare_2 = Row("bare pingora pass-through, 2 threads", bares[2].pid, "http://127.0.0.1:18093/any/x", threads=2)
    haproxy_2 = hp("2 threads", "HAProxy jwt_verify, 2 threads", anchor, 18095, threads=2)
    bare_h2 = Row("bare pingora pass-through, HTTP/2 (h2c) clients", bare_h2c.pid, "http://127.0.0.1:18107/any/x",
                  protocol="h2")
    haproxy_h2 = hp("h2", "HAProxy jwt_verify, HTTP/2 (proto h2) clients", anchor, 18106, protocol="h2")
    redis_row = gw("redis", "/any/x", "Gatehouse any, Redis store -> nginx")
    rows = [
        bare_1,
        haproxy_1,
        gw("plain", "/any/x", "Gatehouse any (cached token) -> nginx"),
        gw("plain", "/public/x", "Gatehouse public -> nginx", token_name=False),
        gw("plain", "/admin/x", "Gatehouse admin -> nginx"),
        gw("plain", "/optional/x", "Gatehouse optional, no token -> nginx", token_name=False),
        redis_row,
        gw("revoked", "/any/x", f"Gatehouse any, {args.revoked:,} revoked -> nginx"),
        Row("nginx proxy hop, no auth -> nginx", nginx.pid, "http://127.0.0.1:18083/any/x"),
        Row("nginx upstream alone", nginx.pid, "http://127.0.0.1:18081/any/x"),
        hp("plain", "HAProxy invalid signature (401)", corrupt(anchor), 18082, expect="401"),
        Row("Gatehouse invalid signature (401)", gateways["plain"][0].pid, "http://127.0.0.1:18084/any/x",
            token=corrupt(tokens["plain"]), expect="401"),
        gw("mock", "/debug/echo", "Gatehouse any -> upstream-mock"),
        Row("upstream-mock alone", mock_proc.pid, "http://127.0.0.1:18085/debug/echo"),
        haproxy_logged,
        gw("logged", "/any/x", "Gatehouse any, JSON access log to a file", peer="logged"),
        bare_2,
        haproxy_2,
        gw("2 threads", "/any/x", "Gatehouse any, 2 threads", threads=2),
        gw("2 threads", "/public/x", "Gatehouse public, 2 threads", token_name=False, threads=2),
        bare_h2,
        haproxy_h2,
        gw("h2c", "/any/x", "Gatehouse any, HTTP/2 (h2c) clients", protocol="h2"),
        gw("h2c", "/public/x", "Gatehouse public, HTTP/2 (h2c) clients", token_name=False, protocol="h2"),
    ]
    if args.quick:
        rows = rows[:4]
    elif args.http2:
        rows = [row for row in rows if row.protocol == "h2"]
    for name, _ in variants:
        rows.append(gw(f"variant {name}", "/any/x", f"Gatehouse[{name}] any (cached token)"))
        rows.append(gw(f"variant {name}", "/public/x", f"Gatehouse[{name}] public", token_name=False))
    floors = {(1, "h1"): bare_1, (2, "h1"): bare_2, (1, "h2"): bare_h2}
    peers = {(1, "plain"): haproxy_1, (1, "logged"): haproxy_logged, (2, "plain"): haproxy_2, (1, "h2"): haproxy_h2}

    print("  waiting for the machine to settle...", flush=True)
    wait_until_idle()
    print("warm-up: 2 s per target", flush=True)
    for row in rows:
        row.measure(args, duration=2, record=False)
    redis_row.redis_commands = 0
    print(f"\nwrk -t{args.wrk_threads} -c{args.connections} -d{args.duration}s per row, {args.rounds} rounds, "
          f"{os.cpu_count()} cores", flush=True)
    for round_number in range(args.rounds):
        order = rows if round_number % 2 == 0 else list(reversed(rows))
        print(f"round {round_number + 1}", flush=True)
        for row in order:
            before = redis_commands() if row is redis_row else None
            r = row.measure(args)
            if before is not None:
                # Less the INFO commands themselves: none goes to Redis per proxied request.
                redis_row.redis_commands += redis_commands() - before - 1
            print(f"  {row.name:<50} {r['rps']:>9.0f} req/s  p99 {fmt(r['p99_ms'], '7.2f')} ms  "
                  f"cpu {fmt(r['cpu_us_per_req'], '.1f')} µs/req  errors {r['errors']}", flush=True)

    summaries = [row.summary(floors, peers) for row in rows]
    print_table(summaries)
    results["rows"] = summaries
    if args.http2:
        write_results(args, results)
        return
    if not args.quick:
        print(f"(redis-server processed {redis_row.redis_commands} commands during the Redis-store row's "
              f"{args.rounds} rounds, against {sum(r['requests'] for r in redis_row.rounds)} proxied requests)")
        results["redis_commands_during_redis_row"] = redis_row.redis_commands

    by_name = {s["name"]: s for s in summaries}
    goals = [("Gatehouse any: CPU/request <= 1.05x bare pingora", by_name["Gatehouse any (cached token) -> nginx"],
              "cpu_over_bare", 1.05),
             ("Gatehouse public: CPU/request <= 1.02x bare pingora", by_name["Gatehouse public -> nginx"],
              "cpu_over_bare", 1.02),
             ("Gatehouse any: CPU/request <= 1.0x HAProxy", by_name["Gatehouse any (cached token) -> nginx"],
              "cpu_over_haproxy", 1.0),
             ("bare pingora: CPU/request <= 1.0x HAProxy", by_name["bare pingora pass-through -> nginx"],
              "cpu_over_haproxy", 1.0)]
    results["goals"] = []
    print("\ngoals (this run)")
    for label, summary, key, limit in goals:
        value = summary[key]
        met = value is not None and value <= limit
        results["goals"].append({"goal": label, "value": value, "met": met})
        print(f"  {label:<55} {fmt(value, '.3f')}x  {'met' if met else 'NOT met'}")
    if args.quick:
        write_results(args, results)
        return

    print("\nlogin storm")
    login_storm(args, work, gateways, tokens, results)
    if not args.skip_memory:
        print(f"\nresident memory, {IDLE_CONNECTIONS:,} idle keep-alive client connections")
        results["idle_connections"] = memory_with_idle_connections(
            [("Gatehouse (1 thread)", gateways["plain"][0].pid, 18084, tokens["plain"]),
             ("bare pingora (1 thread)", bares[1].pid, 18087, None),
             ("HAProxy (1 thread, maxconn raised)", haproxies["memory"].pid, 18102, anchor)], IDLE_CONNECTIONS)
    results["rss_mib"]["gatehouse plain (after the run)"] = round(rss_mib(gateways["plain"][0].pid), 1)
    print("\nresident memory (MiB)")
    for k, v in results["rss_mib"].items():
        print(f"  {k:<45} {v:.1f}")
    write_results(args, results)


def write_results(args, results):
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nJSON: {args.json}")


def login_storm(args, work, gateways, tokens, results):
    """Proxied latency while the same gateway hashes passwords for a flood of logins."""
    lua = os.path.join(work, "login.lua")
    with open(lua, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = \'{"email":"bench@example.com","password":"bench-password"}\'\n'
                'wrk.headers["Content-Type"] = "application/json"\n')
    proc, port = gateways["plain"]
    logins = Row("Gatehouse /login (argon2id 19 MiB, t=2), 8 connections", proc.pid, f"http://127.0.0.1:{port}/login")
    pids = children(proc.pid)
    before = cpu_seconds(pids)
    r = wrk(logins.url, args.duration, 8, 1, script=lua)
    r["cpu_us_per_req"] = (cpu_seconds(pids) - before) / r["requests"] * 1e6 if r["requests"] else None
    idle_row = Row("Gatehouse any, idle (p99 baseline)", proc.pid, f"http://127.0.0.1:{port}/any/x",
                   token=tokens["plain"])
    idle = idle_row.measure(args)
    storm = subprocess.Popen(["wrk", "-t1", "-c8", f"-d{args.duration + 2}s", "-s", lua, logins.url],
                             stdout=subprocess.DEVNULL)
    time.sleep(1)
    busy = idle_row.measure(args)
    storm.wait()
    for label, x in (("/login, 8 connections", r), ("any, idle", idle), ("any, while /login is hammered", busy)):
        print(f"  {label:<40} {x['rps']:>9.0f} req/s  p99 {fmt(x['p99_ms'], '7.2f')} ms  "
              f"cpu {fmt(x['cpu_us_per_req'], '.1f')} µs/req  errors {x.get('errors', x['socket_errors'])}")
    ratio = busy["p99_ms"] / idle["p99_ms"] if idle["p99_ms"] and busy["p99_ms"] else None
    print(f"  p99 under the storm over idle: {fmt(ratio, '.2f')}x")
    results["login_storm"] = {"login": r, "idle": idle, "busy": busy, "p99_busy_over_idle": ratio}


if __name__ == "__main__":
    sys.exit(main())
