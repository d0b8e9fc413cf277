#!/usr/bin/env bash
# Makes a Docker engine and Compose v2 available on a Debian machine with no
# container registry. Idempotent: every step is skipped when its result is
# already there. Needs root (apt-get, dockerd).
#
#   bash scripts/docker-setup.sh
#
# What it does, in order:
#   1. installs docker.io (the engine) and debootstrap when missing;
#   2. installs the Compose v2 CLI plugin (`docker compose`) from Debian 13's
#      docker-compose package, fetched through the machine's own Debian mirror
#      with a private apt state so the system's sources stay untouched;
#   3. starts dockerd in the background when no engine answers.
set -euo pipefail

log() { printf '[docker-setup] %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (apt-get, dockerd); run it with sudo"
    exit 1
fi

apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
# iptables is what dockerd needs for its default bridge; docker.io pulls it in.
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

mirror() {
    local m
    m=$(sed -n 's/^URIs: //p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    if [ -z "$m" ]; then
        m=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    fi
    printf '%s' "${m:-http://deb.debian.org/debian}"
}

if ! docker compose version >/dev/null 2>&1; then
    log "installing the Compose v2 plugin from Debian 13's docker-compose package"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/lists/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-trixie-stable.gpg] $(mirror) trixie main" >"$work/sources.list"
    o=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$work/lists")
    apt-get "${o[@]}" update -qq
    (cd "$work" && apt-get "${o[@]}" download docker-compose >/dev/null)
    dpkg -x "$work"/docker-compose_*.deb "$work/x"
    install -D "$work/x/usr/libexec/docker/cli-plugins/docker-compose" \
        /usr/local/lib/docker/cli-plugins/docker-compose
    docker compose version >&2
fi

if ! docker info >/dev/null 2>&1; then
    log "starting dockerd"
    nohup dockerd >/var/log/dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        log "dockerd did not answer within 60 s; see /var/log/dockerd.log"
        tail -n 20 /var/log/dockerd.log >&2 || true
        exit 1
    fi
fi
log "engine $(docker version --format '{{.Server.Version}}'), $(docker compose version --short 2>/dev/null || echo 'no compose')"
