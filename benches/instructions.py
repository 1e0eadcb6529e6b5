#!/usr/bin/env python3
"""Instructions per proxied request, counted by callgrind: the load bench's quiet twin.

Run through `bash benches/load.sh --instructions` (which installs valgrind and
h2load and builds the release binaries). Wall-clock CPU per request moves by
5-10% between runs on a shared machine; callgrind counts the instructions a
process executes, which are the same for the same binary and load whatever
else the machine is doing. So this is where a lever's effect is measured
when it is smaller than the load bench's noise, and where the gap between
Gatehouse and the bare pingora floor is broken down by function.

For each target (bare pingora, Gatehouse `any` with a cached token, `public`,
and any --variant binaries): start it under callgrind with one worker thread,
send a warm-up load, zero the counters, send exactly --requests requests with
h2load over HTTP/1.1 keep-alive (8 connections), dump the counters, stop it.
The upstream is the load bench's nginx (a fixed 200). Prints instructions per
request and the ratio to the bare row, then the functions that make the
difference (self instructions per request, Gatehouse minus bare).

What it does not count: the kernel (about half the CPU of a proxied request
here, and the same syscalls for every row), and time. Under callgrind,
`rep movsb` counts one instruction per byte, so memcpy's share (moving
pingora's large futures) is shown apart: its real cost is far lower than its
count.
"""

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (the load bench's config, peers and process helpers)

MEMCPY = re.compile(r"__mem(cpy|move)")


def parse_callgrind(path):
    """Self instructions per function name in one callgrind dump."""
    names, self_cost = {}, collections.Counter()
    fn, in_call = None, False
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                fn = compressed_name(line[3:].strip(), names)
            elif line.startswith("cfn="):
                compressed_name(line[4:].strip(), names)
            elif line.startswith("calls="):
                in_call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if len(parts) >= 2 and not in_call:
                    self_cost[fn] += int(parts[1])
                in_call = False
    return self_cost


def compressed_name(token, names):
    """callgrind writes `(id) name` the first time and `(id)` after."""
    m = re.match(r"\((\d+)\)(?: (.*))?", token)
    if not m:
        return token
    if m.group(2):
        names[m.group(1)] = m.group(2)
    return names.get(m.group(1), m.group(1))


def wait_for(port, timeout=120):
    load.wait_port(port, timeout)


def h2load_fixed(url, requests, token=None, connections=8):
    cmd = ["h2load", "--h1", "-n", str(requests), "-c", str(connections), url]
    if token:
        cmd[1:1] = ["-H", f"authorization: Bearer {token}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if not m or int(m.group(3)) != requests:
        raise SystemExit(f"h2load did not get {requests} successful answers from {url}:\n{out}")


def measure(name, cmd, port, url, requests, work, env, token=None):
    """Instructions per request of `cmd` (a proxy listening on `port`) under callgrind."""
    out = os.path.join(work, f"{name.replace(' ', '-')}.callgrind")
    log = open(out + ".log", "w")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd],
                            stdout=log, stderr=log, env=env)
    try:
        wait_for(port)
        h2load_fixed(url, max(requests // 5, 100), token)  # warm-up: caches, pools, allocator
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True)
        h2load_fixed(url, requests, token)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
    finally:
        proc.send_signal(load.signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    dumps = sorted(p for p in os.listdir(work) if p.startswith(os.path.basename(out) + ".") and
                   p.rsplit(".", 1)[-1].isdigit())
    if not dumps:
        raise SystemExit(f"callgrind wrote no dump for {name}: see {out}.log")
    costs = parse_callgrind(os.path.join(work, dumps[0]))
    return {fn: c / requests for fn, c in costs.items()}


def gateway_config(work, port, admin, store):
    cfg = os.path.join(work, f"gatehouse-{port}.toml")
    with open(cfg, "w") as f:
        f.write(load.GATEWAY_CONFIG.format(port=port, admin=admin, threads=1, upstream="127.0.0.1:18081",
                                           log=load.QUIET_LOG, h2c="false", store=f'path = "{store}"'))
    return cfg


def login_token(binary, cfg, port, env, log):
    """Adds the bench user and logs in once (outside callgrind), for a token to present."""
    subprocess.run([binary, "--config", cfg, "user", "add", "--email", "bench@example.com", "--username",
                    "bench", "--admin"], input="bench-password\n", text=True, env=env, capture_output=True,
                   check=True)
    proc = subprocess.Popen([binary, "--config", cfg, "serve"], stdout=log, stderr=log, env=env)
    try:
        wait_for(port)
        out = subprocess.run(["curl", "-s", "-XPOST", f"http://127.0.0.1:{port}/login", "-d",
                              '{"email":"bench@example.com","password":"bench-password"}'],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)["access_token"]
    finally:
        proc.send_signal(load.signal.SIGINT)
        proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                    help="another gatehouse binary, measured beside the main one (`any` and `public`)")
    ap.add_argument("--top", type=int, default=25, help="functions to show in each breakdown")
    ap.add_argument("--json", default=os.path.join(load.ROOT, "target", "instructions.json"))
    args = ap.parse_args()
    release = os.path.join(load.ROOT, "target", "release")
    gatehouse = os.path.join(release, "gatehouse")
    bare = os.path.join(release, "examples", "bare_pingora")
    for tool in ("valgrind", "callgrind_control", "h2load", "nginx", "curl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: run `bash benches/load.sh --instructions` (it installs it)")

    work = tempfile.mkdtemp(prefix="gatehouse-instructions-")
    log = open(os.path.join(work, "processes.log"), "w")
    env = dict(os.environ, BENCH_JWT_SECRET=load.ANCHOR_SECRET,
               GATEHOUSE_ADMIN_TOKEN="bench-admin-token-" + "x" * 32)
    procs = load.Procs()
    rows = {}
    try:
        procs.start(["nginx", "-c", os.path.join(load.PEERS, "nginx-upstream.conf")], log)
        wait_for(18081)
        rows["bare pingora pass-through"] = measure(
            "bare", [bare, "--listen", "127.0.0.1:18087", "--upstream", "127.0.0.1:18081", "--threads", "1"],
            18087, "http://127.0.0.1:18087/any/x", args.requests, work, env)
        for i, (label, binary) in enumerate([("", gatehouse)] + [(f"[{n}]", p) for n, p in
                                                                  (v.split("=", 1) for v in args.variant)]):
            port, admin = 18110 + 2 * i, 18111 + 2 * i
            cfg = gateway_config(work, port, admin, os.path.join(work, f"store-{port}"))
            token = login_token(binary, cfg, port, env, log)
            serve = [binary, "--config", cfg, "serve"]
            rows[f"Gatehouse{label} any (cached token)"] = measure(
                f"gatehouse{i}-any", serve, port, f"http://127.0.0.1:{port}/any/x", args.requests, work, env,
                token)
            rows[f"Gatehouse{label} public"] = measure(
                f"gatehouse{i}-public", serve, port, f"http://127.0.0.1:{port}/public/x", args.requests, work,
                env)
    finally:
        procs.stop()
        log.close()

    report(rows, args.top)
    with open(args.json, "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "requests": args.requests,
                   "rows": {name: {"instructions_per_request": sum(c.values()),
                                   "memcpy_per_request": sum(v for fn, v in c.items() if MEMCPY.search(fn or ""))}
                            for name, c in rows.items()}}, f, indent=2)
    print(f"\nraw: {args.json}; callgrind dumps: {work}")


def report(rows, top):
    bare = rows["bare pingora pass-through"]
    bare_total = sum(bare.values())
    bare_memcpy = sum(v for fn, v in bare.items() if MEMCPY.search(fn or ""))
    print(f"\n{'row':<40} {'instr/req':>10} {'/ bare':>7} {'without memcpy':>15} {'/ bare':>7}")
    for name, costs in rows.items():
        total = sum(costs.values())
        memcpy = sum(v for fn, v in costs.items() if MEMCPY.search(fn or ""))
        print(f"{name:<40} {total:>10,.0f} {total / bare_total:>6.2f}x {total - memcpy:>15,.0f} "
              f"{(total - memcpy) / (bare_total - bare_memcpy):>6.2f}x")
    for name, costs in rows.items():
        if costs is bare:
            continue
        diff = {fn: costs.get(fn, 0) - bare.get(fn, 0) for fn in set(costs) | set(bare)}
        print(f"\n{name} minus bare: {sum(diff.values()):,.0f} instructions per request; largest differences "
              "(self instructions per request):")
        for fn, d in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:top]:
            print(f"  {d:>+9,.0f}  {(fn or '?')[:110]}")


if __name__ == "__main__":
    main()
