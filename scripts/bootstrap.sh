#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine: the PostgreSQL server and
# Mosquitto from Debian's packages (when run as root and they are missing), then the
# locked Python environment in .venv through uv.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$pg_bin" ] && [ -x "$pg_bin/postgres" ] || need+=(postgresql)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
# `bootstrap.sh test` also brings what the test suite drives: promtool for the alert
# rule tests, Debian's Chromium for the screen's browser tests and a CJK font so that
# its screenshots show the Chinese names.
extra=${CITYVITALS_EXTRA_PACKAGES:-}
[ "${1:-}" = "test" ] && extra="$extra prometheus chromium fonts-noto-cjk"
# `bootstrap.sh bench` brings wrk, the HTTP load generator of the API benchmark.
[ "${1:-}" = "bench" ] && extra="$extra wrk"
for pkg in $extra; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${need[*]}" >&2
    echo "install them with: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Package scripts must not start system-wide services: we run our own on free ports.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

if [ ! -x .tools/bin/uv ]; then
  python3 -m venv .tools
  .tools/bin/pip install --quiet uv==0.13.8
fi
.tools/bin/uv sync --locked --quiet
