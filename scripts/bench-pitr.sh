#!/usr/bin/env bash
# Point-in-time recovery, measured on the compose service (local/postgres:17
# with pgBackRest, a compose project of its own on 127.0.0.1):
#
#   RPO: a writer commits a timestamped row every 100 ms; at a random moment
#        (20 to 140 s after it starts) the container is killed (SIGKILL) and
#        its data volume removed: the server is gone. A fresh service, then
#        `db-restore --to-latest --yes`; the data lost is the kill time minus
#        the newest row that came back. Default archive_timeout (60 s).
#   RTO: the benchmark dataset (pgbench --scale plus one million
#        application-like rows, as scripts/bench-backup.sh), a full physical
#        backup, then in alternating pairs: `db-restore --to-latest --yes`
#        (PITR) and `db-restore --latest --yes` of a logical backup of the
#        same database (the compose route).
#
#   bash scripts/bench-pitr.sh [--rpo-runs N] [--rto-rounds N] [--scale N]
#
# Needs Docker with local/postgres:17 (scripts/build-pg-image.sh 17).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rpo_runs=4
rto_rounds=2
scale=20
while [ $# -gt 0 ]; do
    case "$1" in
        --rpo-runs) rpo_runs=$2; shift 2 ;;
        --rto-rounds) rto_rounds=$2; shift 2 ;;
        --scale) scale=$2; shift 2 ;;
        *) echo "unknown argument '$1': --rpo-runs N, --rto-rounds N, --scale N" >&2; exit 2 ;;
    esac
done

(cd "$here" && cargo build -q -p xtask)
xtask="$here/target/debug/xtask"
work=$(mktemp -d /tmp/bench-pitr.XXXXXX)
project="xtask-bench-pitr-$$"
cp "$here/docker-compose.yml" "$work/"
printf 'COMPOSE_PROJECT_NAME=%s\nPOSTGRES_IMAGE=local/postgres:17\nPOSTGRES_PORT=55498\nPOSTGRES_PASSWORD=bench\n' \
    "$project" >"$work/.env"
cleanup() {
    (cd "$work" && docker compose down --volumes --timeout 5 >/dev/null 2>&1) || true
    rm -rf "$work"
}
trap cleanup EXIT
x() { XTASK_ROOT="$work" "$xtask" "$@"; }
dc() { (cd "$work" && docker compose "$@"); }
sql() { dc exec -T db psql -X -q -At -U app -d app -c "$1"; }
now() { date +%s.%N; }

x db-up -q
x db-pitr enable -q >/dev/null
sql "CREATE TABLE ticks (at timestamptz PRIMARY KEY)"
x db-backup --physical -q

echo "== RPO: $rpo_runs kills at random moments (archive_timeout 60 s)" >&2
for run in $(seq 1 "$rpo_runs"); do
    sql "TRUNCATE ticks"
    # One session, one commit every 100 ms, until the server dies.
    started=$(now)
    dc exec -d -T db psql -X -q -U app -d app -c \
        "DO \$\$ BEGIN LOOP INSERT INTO ticks VALUES (clock_timestamp()); COMMIT; PERFORM pg_sleep(0.1); END LOOP; END \$\$"
    wait_s=$((20 + RANDOM % 121))
    sleep "$wait_s"
    killed=$(now)
    dc kill -s KILL db >/dev/null 2>&1
    dc rm -f db >/dev/null 2>&1
    docker volume rm "${project}_db-data" >/dev/null
    x db-up -q
    t0=$(now)
    x db-restore --to-latest --yes -q
    t1=$(now)
    # No row back: everything since the writer started was lost.
    newest=$(sql "SELECT coalesce(extract(epoch FROM max(at)), $started) FROM ticks")
    rows=$(sql "SELECT count(*) FROM ticks")
    python3 -c "print(f'rpo run $run: killed {$wait_s} s after the writer started; lost {$killed - $newest:.1f} s of commits; {$rows} rows back; restore {$t1 - $t0:.1f} s')"
    x db-backup --physical -q
done

echo "== RTO: the dataset (pgbench scale $scale plus one million rows)" >&2
dc exec -T db pgbench -U app -i -q -s "$scale" app >/dev/null 2>&1
dc exec -T db psql -X -q -U app -d app -v ON_ERROR_STOP=1 <"$here/scripts/bench-noise.sql"
echo "database: $(sql "SELECT pg_size_pretty(pg_database_size('app'))")" >&2
t0=$(now); x db-backup --physical --full -q; t1=$(now)
python3 -c "print(f'physical full backup: {$t1 - $t0:.1f} s')"
t0=$(now); x db-backup --via compose -q; t1=$(now)
python3 -c "print(f'logical backup (gzip:6): {$t1 - $t0:.1f} s')"
expected=$(sql "SELECT (SELECT count(*) FROM pgbench_accounts) + (SELECT count(*) FROM noise)")
for round in $(seq 1 "$rto_rounds"); do
    t0=$(now); x db-restore --to-latest --yes -q; t1=$(now)
    got=$(sql "SELECT (SELECT count(*) FROM pgbench_accounts) + (SELECT count(*) FROM noise)")
    [ "$got" = "$expected" ] || { echo "PITR restore: $got rows, expected $expected" >&2; exit 1; }
    python3 -c "print(f'rto round $round: PITR restore {$t1 - $t0:.1f} s')"
    # The set-aside copies would fill the disk.
    dc exec -T db sh -c 'rm -rf /var/lib/postgresql/data/.xtask-pitr/pre-restore-*'
    t0=$(now); x db-restore --latest --via compose --yes --drop-previous -q; t1=$(now)
    got=$(sql "SELECT (SELECT count(*) FROM pgbench_accounts) + (SELECT count(*) FROM noise)")
    [ "$got" = "$expected" ] || { echo "logical restore: $got rows, expected $expected" >&2; exit 1; }
    python3 -c "print(f'rto round $round: logical restore {$t1 - $t0:.1f} s')"
done
