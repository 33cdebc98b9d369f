#!/usr/bin/env bash
# Build the container image from the Dockerfile and prove it: it serves the demo site, answers
# /readyz and records a consent (201 with a receipt).
#
# Usage: scripts/container-check.sh [IMAGE]       (default image name: consent-gateway:check)
#
# With a Docker daemon it uses `docker build` / `docker run`. Without one (a Debian machine
# with no daemon, as in CI here) it uses Debian's buildah: no base image can be pulled there, so
# it first makes a local base with debootstrap (python3 + venv, as the Dockerfile needs) and
# builds with `--build-arg BASE=<that base>`; then runs the image's command in a buildah
# container on the host network.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE="${1:-consent-gateway:check}"
PORT="${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
BASE_DIR="${BASE_DIR:-/var/tmp/consent-gateway-base}"
BASE_IMAGE=localhost/consent-gateway-base:bookworm

probe() {
  # The checks a user would make: the demo config, readiness, one recorded consent.
  python3 - "http://127.0.0.1:$PORT" <<'EOF'
import json, secrets, sys, time, urllib.error, urllib.request

base = sys.argv[1]
deadline = time.monotonic() + 60
while True:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
            if r.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("container-check: /readyz never answered 200")
    time.sleep(0.5)
req = urllib.request.Request(base + "/v1/sites/demo/config", headers={"CF-IPCountry": "DE"})
with urllib.request.urlopen(req, timeout=5) as r:
    config = json.load(r)
choices = {p["id"]: True for p in config["purposes"] if not p["essential"]}
# As an app records: its own secret for the visitor; the gateway derives the subject id.
body = {"subject_secret": secrets.token_hex(16), "banner_version": config["banner_version"],
        "action": "accept_all", "choices": choices}
req = urllib.request.Request(base + "/v1/sites/demo/consents", data=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"}, method="POST")
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        answer = json.load(r)
        assert r.status == 201 and answer.get("receipt"), answer
except urllib.error.HTTPError as e:
    sys.exit(f"container-check: consent POST answered {e.code}: {e.read()[:300]!r}")
print(f"container-check: ok: /readyz 200, config {config['banner_version']}, "
      f"consent {answer['record_id']} recorded")
EOF
}

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  docker build -t "$IMAGE" .
  cid=$(docker run -d -p "127.0.0.1:$PORT:8000" "$IMAGE")
  trap 'docker rm -f "$cid" >/dev/null' EXIT
  probe
  exit 0
fi

command -v buildah >/dev/null || { echo "container-check: needs docker or buildah (apt-get install -y buildah debootstrap)" >&2; exit 2; }
export STORAGE_DRIVER=vfs
if ! buildah images --quiet "$BASE_IMAGE" >/dev/null 2>&1; then
  if [ ! -x "$BASE_DIR/usr/bin/python3" ]; then
    rm -rf "$BASE_DIR"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$BASE_DIR"
  fi
  ctr=$(buildah from scratch)
  mnt=$(buildah mount "$ctr")
  cp -a "$BASE_DIR"/. "$mnt"/
  # The local base trusts what this host trusts (a network that intercepts TLS has its own CA),
  # and pip in the build reads the same bundle.
  cp /etc/ssl/certs/ca-certificates.crt "$mnt/etc/ssl/certs/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$mnt/etc/pip.conf"
  buildah umount "$ctr" >/dev/null
  buildah commit --quiet "$ctr" "$BASE_IMAGE" >/dev/null
  buildah rm "$ctr" >/dev/null
fi
buildah bud --isolation chroot --format docker --build-arg "BASE=$BASE_IMAGE" -t "$IMAGE" .
ctr=$(buildah from "$IMAGE")
cleanup() {
  if [ -n "${pid:-}" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  buildah rm "$ctr" >/dev/null || true
}
trap cleanup EXIT
# The image's own command, on the host network (chroot isolation shares it).
buildah run --isolation chroot --user gateway --env GATEWAY_PORT="$PORT" "$ctr" -- consent-gateway serve &
pid=$!
probe
