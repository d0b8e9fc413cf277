#!/usr/bin/env bash
# Builds local PostgreSQL images from Debian packages, with no container
# registry: debootstrap a minimal Debian with the server package and
# pgBackRest (the engine of `db-pitr` and `db-backup --physical`), add our
# entrypoint (docker/postgres/docker-entrypoint.sh, the official image's
# interface), and `docker import` the tree.
#
#   bash scripts/build-pg-image.sh [--force] [MAJOR ...]     # default: 15 17
#
# MAJOR 15 comes from Debian 12 (bookworm), 17 from Debian 13 (trixie).
# Images are tagged local/postgres:MAJOR (override the repository with
# PG_IMAGE_REPO). An image is rebuilt only when missing, when the recipe
# (this script plus the entrypoint) changed, or with --force. Several majors
# build in parallel. Needs root, debootstrap and a running Docker engine.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
repo="${PG_IMAGE_REPO:-local/postgres}"
entrypoint="$here/docker/postgres/docker-entrypoint.sh"
log() { printf '[build-pg-image] %s\n' "$*" >&2; }

force=0
majors=()
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        15 | 17) majors+=("$arg") ;;
        *) log "unknown argument '$arg': expected --force, 15 or 17"; exit 2 ;;
    esac
done
[ "${#majors[@]}" -gt 0 ] || majors=(15 17)

command -v debootstrap >/dev/null || { log "debootstrap is missing: run scripts/docker-setup.sh"; exit 1; }
docker info >/dev/null 2>&1 || { log "no Docker engine answers: run scripts/docker-setup.sh"; exit 1; }

# The recipe's fingerprint is stored in the image so an edited entrypoint
# forces a rebuild instead of silently testing an old one.
recipe=$(cat "${BASH_SOURCE[0]}" "$entrypoint" | sha256sum | cut -c1-16)

mirror() {
    local m
    m=$(sed -n 's/^URIs: //p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    printf '%s' "${m:-http://deb.debian.org/debian}"
}

build() {
    local major=$1 suite tag root
    case "$major" in
        15) suite=bookworm ;;
        17) suite=trixie ;;
    esac
    tag="$repo:$major"
    if [ "$force" = 0 ] && [ "$(docker image inspect -f '{{index .Config.Labels "xtask.recipe"}}' "$tag" 2>/dev/null)" = "$recipe" ]; then
        log "$tag is up to date"
        return 0
    fi
    root=$(mktemp -d "/tmp/pg$major-root.XXXXXX")
    log "debootstrap $suite with postgresql-$major into $root"
    # policy-rc.d keeps the package scripts from starting a server inside the chroot.
    if ! debootstrap --variant=minbase --include="postgresql-$major,pgbackrest" "$suite" "$root" "$(mirror)" \
        >"$root.log" 2>&1; then
        log "debootstrap failed for $major; last lines of $root.log:"
        tail -n 20 "$root.log" >&2
        return 1
    fi
    # The package creates a cluster "main"; the entrypoint initialises its own.
    rm -rf "$root/var/lib/postgresql/$major/main" "$root/etc/postgresql/$major/main"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    install -m 0755 "$entrypoint" "$root/usr/local/bin/docker-entrypoint.sh"
    mkdir -p "$root/docker-entrypoint-initdb.d"
    tar -C "$root" -c . | docker import \
        -c 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
        -c 'CMD ["postgres"]' \
        -c 'EXPOSE 5432' \
        -c 'ENV LANG=C.UTF-8' \
        -c "ENV PATH=/usr/lib/postgresql/$major/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        -c 'ENV PGDATA=/var/lib/postgresql/data' \
        -c 'VOLUME /var/lib/postgresql/data' \
        -c "LABEL xtask.recipe=$recipe" \
        - "$tag" >/dev/null
    rm -rf "$root" "$root.log"
    log "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | numfmt --to=iec))"
}

pids=()
for major in "${majors[@]}"; do
    build "$major" &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
    wait "$pid" || status=1
done
exit "$status"
