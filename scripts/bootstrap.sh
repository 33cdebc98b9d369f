#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: system packages, the virtualenv, npm test tools.
# Usage: scripts/bootstrap.sh [run|test]
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
VENV="${VENV:-.venv}"

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
[ -f /usr/share/tor/geoip ] || need_apt+=(tor-geoipdb)
if [ "$mode" = test ]; then
  [ -x /usr/bin/chromium ] || need_apt+=(chromium)
  command -v node >/dev/null || need_apt+=(nodejs npm)
  command -v wrk >/dev/null || need_apt+=(wrk)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing ${need_apt[*]} with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "bootstrap: please install ${need_apt[*]} (apt-get install -y ${need_apt[*]})" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q -e '.[test]'
  rm -f "$VENV"/.installed-* && touch "$stamp"
fi

# The tests need PostgreSQL at 127.0.0.1:5432; start the local cluster if it is down.
if [ "$mode" = test ] && command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "bootstrap: starting the local PostgreSQL cluster" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi

if [ "$mode" = test ] && [ -f package.json ]; then
  lock="node_modules/.stamp-$(sha256sum package.json | cut -c1-16)"
  if [ ! -f "$lock" ]; then
    if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --silent >/dev/null
    else npm install --no-audit --no-fund --silent >/dev/null; fi
    touch "$lock"
  fi
fi
