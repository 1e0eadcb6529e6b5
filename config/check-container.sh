#!/usr/bin/env bash
# Checks the container files against the rest of the repository, without a
# container engine (CI has none): `bash config/check-container.sh`.
#
# - the Dockerfile builds with the README's release build command, verbatim;
# - its Rust image is at least Cargo.toml's rust-version, on the same Debian
#   release as the runtime image (the binaries link that glibc);
# - compose.yaml is valid YAML whose gateway, upstream-mock and Redis agree
#   with config/compose.toml (addresses, ports, config path, store), and whose
#   secrets come only from the environment (.env, ignored by git and docker);
# - with docker's compose plugin present, `docker compose config` accepts it.
# hadolint lints the Dockerfile itself (.ci/run runs it beside this).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 - <<'PY'
import re
import subprocess
import sys
import tomllib
from ipaddress import ip_address, ip_network

import yaml

problems = []


def check(ok, message):
    if not ok:
        problems.append(message)


dockerfile = open("Dockerfile").read()
# Continuation lines joined, comments dropped: one string per instruction.
instructions = [
    line.strip()
    for line in re.sub(r"\\\n", " ", dockerfile).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]

# The build command: the RUN with `cargo build`, less BuildKit's --mount flags.
builds = [i for i in instructions if i.startswith("RUN ") and "cargo build" in i]
check(len(builds) == 1, f"Dockerfile: expected one RUN with `cargo build`, found {builds}")
docker_build = re.sub(r"--mount=\S+\s*", "", builds[0][4:] if builds else "").strip()
docker_build = re.sub(r"\s+", " ", docker_build)

# The README's release builds: `cargo build --release...` lines in its sh blocks.
readme = open("README.md").read()
blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
readme_builds = sorted(
    {
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip().startswith("cargo build --release") and "--example" not in line
    }
)
check(readme_builds, "README.md: no `cargo build --release` line in a sh block")
check(
    readme_builds == [docker_build],
    f"the Dockerfile builds with `{docker_build}`, the README with {readme_builds}: make them one command",
)

# Toolchain and Debian release.
froms = [i.split()[1] for i in instructions if i.startswith("FROM ")]
check(len(froms) == 2, f"Dockerfile: expected a builder and a runtime stage, found {froms}")
builder = re.fullmatch(r"rust:(\d+)\.(\d+)(?:\.(\d+))?-(\w+)", froms[0]) if froms else None
runtime = re.fullmatch(r"debian:(\w+)-slim", froms[-1]) if froms else None
check(builder, f"Dockerfile: the builder should be a Debian rust image (rust:X.Y.Z-release), not {froms[:1]}")
check(runtime, f"Dockerfile: the runtime should be debian:<release>-slim, not {froms[-1:]}")
msrv = tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]["rust-version"]
if builder:
    have = tuple(int(x or 0) for x in builder.groups()[:3])
    need = tuple(int(x) for x in (msrv.split(".") + ["0"])[:3])
    check(have >= need, f"Dockerfile: rust {have} is older than Cargo.toml's rust-version {msrv}")
if builder and runtime:
    check(
        builder.group(4) == runtime.group(1),
        f"builder on {builder.group(4)}, runtime on {runtime.group(1)}: the binaries need the same glibc",
    )
check(
    any(i.startswith("USER ") and re.fullmatch(r"USER [1-9]\d*(:\d+)?", i) for i in instructions),
    "Dockerfile: run as a fixed numeric non-root USER",
)
cmd = next((i for i in instructions if i.startswith("CMD ")), "")
config_path = re.search(r'"--config", "([^"]+)"', cmd)
check(config_path, f"Dockerfile: CMD should pass --config, got {cmd!r}")
health = next((i for i in instructions if i.startswith("HEALTHCHECK ")), "")
health_port = re.search(r"/dev/tcp/127\.0\.0\.1/(\d+)", health)
check(health_port, "Dockerfile: the HEALTHCHECK should ask the admin port on 127.0.0.1")

# compose.yaml against config/compose.toml.
compose = yaml.safe_load(open("compose.yaml"))
services = compose.get("services", {})
for name in ("gatehouse", "upstream-mock", "redis"):
    check(name in services, f"compose.yaml: no {name} service")
gw = services.get("gatehouse", {})
mock = services.get("upstream-mock", {})
check(gw.get("build") in (".", {"context": "."}), "compose.yaml: the gateway should build this Dockerfile")
check(mock.get("image") == gw.get("image"), "compose.yaml: upstream-mock should run the gateway's image")

mounts = {}
for volume in gw.get("volumes", []):
    parts = volume.split(":")
    mounts[parts[1]] = parts[0]
config_file = mounts.get(config_path.group(1) if config_path else None)
check(config_file, f"compose.yaml: nothing is mounted at the CMD's config path, mounts: {mounts}")
config = tomllib.load(open(config_file or "config/compose.toml", "rb"))
check(config.get("store", {}).get("backend") == "redis", f"{config_file}: the compose gateway uses the Redis store")
redis_url = config.get("store", {}).get("redis", {}).get("url", "")
check(re.match(r"redis://redis(:\d+)?/", redis_url), f"{config_file}: store.redis.url should name the redis service, not {redis_url!r}")


def port(address):
    return int(address.rsplit(":", 1)[1])


published = {int(str(p).rsplit(":", 1)[1]) for p in gw.get("ports", [])}
listen = config.get("server", {}).get("listen", [])
admin = config.get("admin", {}).get("listen", "127.0.0.1:9090")
for address in listen + [admin]:
    check(address.startswith("0.0.0.0:"), f"{config_file}: {address} is unreachable from outside the container")
    check(port(address) in published, f"compose.yaml: the gateway's {address} is not published ({sorted(published)})")
if health_port:
    check(port(admin) == int(health_port.group(1)), f"the HEALTHCHECK asks port {health_port.group(1)}, admin.listen is {admin}")

mock_listen = re.search(r"--listen (\S+)", " ".join(mock.get("entrypoint", [])))
mock_ip = (mock.get("networks", {}).get("gatehouse") or {}).get("ipv4_address")
subnets = [c["subnet"] for c in compose.get("networks", {}).get("gatehouse", {}).get("ipam", {}).get("config", [])]
upstreams = config.get("upstream", {}).get("addresses", [])
check(
    mock_listen and mock_ip and upstreams == [f"{mock_ip}:{port(mock_listen.group(1))}"],
    f"{config_file}: upstream.addresses {upstreams} should be upstream-mock's {mock_ip} and --listen port",
)
check(mock_ip and any(ip_address(mock_ip) in ip_network(s) for s in subnets), f"compose.yaml: {mock_ip} outside {subnets}")

# Secrets: only ${VAR:?...} from the environment, never a value in the repository.
for name, service in services.items():
    check("env_file" not in service, f"compose.yaml: {name}: take secrets from ${{...}} (.env), not an env_file")
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(e.split("=", 1) for e in environment)
    for key, value in environment.items():
        if re.search(r"SECRET|TOKEN|PASSWORD|KEY", key):
            check(
                re.fullmatch(r"\$\{" + key + r":\?[^}]*\}", str(value)),
                f"compose.yaml: {name}: {key} must be ${{{key}:?...}} from the environment, not a value",
            )
for required in ("GATEHOUSE_JWT_SECRET", "GATEHOUSE_ADMIN_TOKEN"):
    check(required in gw.get("environment", {}), f"compose.yaml: the gateway needs {required}")
ignored = subprocess.run(["git", "check-ignore", "-q", ".env"]).returncode == 0
check(ignored, ".gitignore: .env (the secrets) must be ignored")
check(".env" in open(".dockerignore").read().split(), ".dockerignore: .env must stay out of the build context")
tracked = subprocess.run(["git", "ls-files", "--", "*.env", ".env"], capture_output=True, text=True).stdout.split()
check(not tracked, f"env files are committed: {tracked}")

if problems:
    print("\n".join(f"check-container: {p}" for p in problems), file=sys.stderr)
    sys.exit(1)
print(f"container files agree: `{docker_build}`, {froms[0]} -> {froms[-1]}, compose services {sorted(services)}")
PY

if docker compose version >/dev/null 2>&1; then
  GATEHOUSE_JWT_SECRET=x GATEHOUSE_ADMIN_TOKEN=x docker compose -f compose.yaml config --quiet
  echo "docker compose config: ok"
else
  echo "docker compose config: skipped (no compose plugin); the YAML checks above ran"
fi
