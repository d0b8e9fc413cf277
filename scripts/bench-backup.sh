#!/usr/bin/env bash
# Backup benchmark: `cargo xtask db-backup` against the shell pipeline of the
# design record, `pg_dump | pigz`, and `pg_dump > /dev/null` (the producer's
# limit), on one standard dataset, in paired rounds. See docs/benchmarks.md.
#
#   bash scripts/bench-backup.sh [--scale N] [--rounds N] [--restore-rounds N] [--keep] [--release]
#   bash scripts/bench-backup.sh --recovery [--scale N]
#   bash scripts/bench-backup.sh --encryption [--scale N] [--rounds N]
#   bash scripts/bench-backup.sh --subset [--rounds N]
#
# --recovery times the runbook's "the server is gone" instead: `db-backup --all`
# of the throwaway server, then `db-restore --all --latest --with-globals --yes`
# onto a new PostgreSQL 17 server (the local/postgres:17 image, in a container
# published on 127.0.0.1).
#
# --encryption times what age encryption adds: `db-backup` and
# `db-restore --target-db` of the same dataset with and without
# BACKUP_AGE_RECIPIENTS, in alternating pairs (A B A B).
#
# --subset times `db-clone --subset` (1% of the orders) against a whole
# `db-clone` of the clone dataset instead (200 000 customers, 2 000 000 orders,
# in a database of its own on the same throwaway server), in alternating pairs.
#
# After the backup rounds it times, on the xtask's backup, `db-verify` against
# `sha256sum -c && gzip -t`, and `db-restore --target-db` against
# `createdb && gunzip -c | psql` (--restore-rounds, default 2; 0 skips).
#
# Dataset: pgbench at --scale (default 20) plus a one-million-row table of
# less compressible data: about 630 MiB of plain SQL at scale 20.
# The server is a throwaway PostgreSQL 15 cluster of the host's own packages
# on 127.0.0.1 (no container: nothing but the tools under test in the path).
# Needs root (the server runs as the postgres user), pgbench, pigz, GNU time.
#
# --release times the release build instead of the debug build `cargo xtask`
# runs: the binary docs/operations/scheduling.md installs for cron and
# Kubernetes, and the build the formats issue measured its baseline with.
set -euo pipefail

scale=20
rounds=3
restore_rounds=2
keep=0
recovery=0
encryption=0
subset=0
profile=debug
while [ $# -gt 0 ]; do
    case "$1" in
        --scale) scale=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --restore-rounds) restore_rounds=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        --recovery) recovery=1; shift ;;
        --encryption) encryption=1; shift ;;
        --subset) subset=1; shift ;;
        --release) profile=release; shift ;;
        *) echo "unknown argument $1: expected --scale N, --rounds N, --restore-rounds N, --keep, --recovery, --encryption, --subset, --release" >&2; exit 2 ;;
    esac
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bindir=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -1)
port=${BENCH_PORT:-55499}
work=$(mktemp -d /tmp/xtask-bench.XXXXXX)
data="$work/pgdata"
out="$work/out"
mkdir -p "$out"

for tool in pigz /usr/bin/time; do
    command -v "$tool" >/dev/null || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pigz time >/dev/null
        break
    }
done

# The binary under test: the debug build `cargo xtask` runs, or --release.
build_xtask() {
    if [ "$profile" = release ]; then
        (cd "$here" && cargo build -q --release -p xtask)
    else
        (cd "$here" && cargo build -q -p xtask)
    fi
    xtask="$here/target/$profile/xtask"
    echo "== xtask: $profile build" >&2
}

container=""
cleanup() {
    [ -z "$container" ] || docker rm -f "$container" >/dev/null 2>&1 || true
    runuser -u postgres -- "$bindir/pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1 || true
    [ "$keep" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT

echo "== server: $("$bindir/postgres" --version), scale $scale, $rounds rounds, in $work" >&2
mkdir -p "$data" && chown postgres "$data" && chmod 1777 "$work"
runuser -u postgres -- "$bindir/initdb" -D "$data" -U bench --auth=trust >/dev/null
runuser -u postgres -- "$bindir/pg_ctl" -D "$data" -w -l "$work/server.log" \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $work -c fsync=off -c shared_buffers=512MB" start >/dev/null

export PGHOST=127.0.0.1 PGPORT=$port PGUSER=bench PGDATABASE=bench
"$bindir/createdb" bench

if [ "$subset" = 1 ]; then
    "$bindir/createdb" shop
    echo "== building the clone dataset" >&2
    "$bindir/psql" -qX -v ON_ERROR_STOP=1 -d shop -c "CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL, city text)" \
        -c "INSERT INTO customers SELECT i, 'person' || i || '@corp.example', 'Person ' || i, (ARRAY['Berlin','Köln','Lyon','Oslo'])[1 + i % 4] FROM generate_series(1, 200000) i" \
        -c "CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers, placed_at timestamptz NOT NULL, total numeric(10, 2), note text)" \
        -c "INSERT INTO orders SELECT i, 1 + (i::bigint * 7919) % 200000, now() - i * interval '13 seconds', i % 1000 * 1.25, 'order note ' || md5(i::text) FROM generate_series(1, 2000000) i" \
        -c "CREATE INDEX ON orders (customer_id)" -c "VACUUM ANALYZE"
    build_xtask
    from="postgres://bench@127.0.0.1:$port/shop"
    : >"$work/subset"
    for r in $(seq 1 "$rounds"); do
        echo "== subset round $r" >&2
        for mode in whole slice; do
            slice=()
            [ "$mode" = slice ] && slice=(--subset 'public.orders: id % 100 = 0')
            t0=$(date +%s.%N)
            /usr/bin/time -f "%M" -o "$work/rss" env XTASK_ROOT="$work" POSTGRES_HOST=127.0.0.1 POSTGRES_PORT="$port" POSTGRES_USER=bench \
                POSTGRES_DB="shop_$mode" "$xtask" db-clone --from "$from" --no-mask --yes -q "${slice[@]}"
            t1=$(date +%s.%N)
            rows=$("$bindir/psql" -AtqX -d "shop_$mode" -c "SELECT (SELECT count(*) FROM customers) || ' ' || (SELECT count(*) FROM orders) || ' ' || pg_database_size(current_database())")
            echo "$mode $t0 $t1 $(cat "$work/rss") $rows" >>"$work/subset"
        done
    done
    python3 - "$work/subset" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    mode, t0, t1, rss, customers, orders, size = line.split()
    rows.setdefault(mode, []).append((float(t1) - float(t0), int(rss), int(customers), int(orders), int(size)))
for mode in ("whole", "slice"):
    t = [x[0] for x in rows[mode]]; last = rows[mode][-1]
    print(f"{mode:<6} median {statistics.median(t):6.2f} s ({' '.join(f'{x:.2f}' for x in t)})  max RSS {max(x[1] for x in rows[mode]) / 1024:.1f} MiB  "
          f"customers {last[2]}  orders {last[3]}  database {last[4] / 2**20:.1f} MiB")
w = statistics.median(x[0] for x in rows["whole"]); s = statistics.median(x[0] for x in rows["slice"])
print(f"slice / whole: time {s / w:.3f}, database {rows['slice'][-1][4] / rows['whole'][-1][4]:.3f}")
EOF
    exit 0
fi
echo "== building the dataset" >&2
"$bindir/pgbench" -i -q -s "$scale" >/dev/null 2>&1
# Rows like an application's (the SQL is shared with scripts/bench-pitr.sh).
"$bindir/psql" -qX -f "$here/scripts/bench-noise.sql"

build_xtask

if [ "$recovery" = 1 ]; then
    "$bindir/psql" -qX -c "CREATE ROLE app_owner NOLOGIN" -c "CREATE ROLE reader LOGIN PASSWORD 'r'" \
        -c "ALTER DATABASE bench OWNER TO app_owner" -c "GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader"
    benv=(env XTASK_ROOT="$work" BACKUP_DIR="$out" POSTGRES_HOST=127.0.0.1 POSTGRES_PORT="$port" POSTGRES_USER=bench POSTGRES_DB=bench)
    start=$(date +%s.%N)
    "${benv[@]}" "$xtask" db-backup --all -q
    backed=$(date +%s.%N)
    container=$(docker run -d -e POSTGRES_USER=bench -e POSTGRES_PASSWORD=bench -e POSTGRES_DB=postgres \
        -p 127.0.0.1::5432 local/postgres:17)
    new_port=$(docker port "$container" 5432/tcp | head -1 | sed 's/.*://')
    for _ in $(seq 1 120); do
        PGPASSWORD=bench "$bindir/psql" -h 127.0.0.1 -p "$new_port" -U bench -d postgres -Atc 'SELECT 1' >/dev/null 2>&1 && break
        sleep 0.5
    done
    t0=$(date +%s.%N)
    env XTASK_ROOT="$work" BACKUP_DIR="$out" POSTGRES_HOST=127.0.0.1 POSTGRES_PORT="$new_port" POSTGRES_USER=bench \
        PGPASSWORD=bench POSTGRES_DB=bench "$xtask" db-restore --all --latest --with-globals --yes -q
    t1=$(date +%s.%N)
    rows=$(PGPASSWORD=bench "$bindir/psql" -h 127.0.0.1 -p "$new_port" -U bench -d bench -Atc \
        "SELECT (SELECT count(*) FROM pgbench_accounts) + (SELECT count(*) FROM noise)")
    du -sh "$out" >&2
    python3 -c "import sys; b, r = float(sys.argv[2]) - float(sys.argv[1]), float(sys.argv[4]) - float(sys.argv[3]); print(f'db-backup --all: {b:.1f} s; db-restore --all --latest --with-globals onto PostgreSQL 17: {r:.1f} s; rows checked: {sys.argv[5]}')" \
        "$start" "$backed" "$t0" "$t1" "$rows"
    exit 0
fi

if [ "$encryption" = 1 ]; then
    command -v age-keygen >/dev/null || { apt-get install -y -qq age >/dev/null; }
    age-keygen -o "$work/key.txt" 2>/dev/null
    recipient=$(age-keygen -y "$work/key.txt")
    eenv="XTASK_ROOT='$work' BACKUP_DIR='$out' POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=$port POSTGRES_USER=bench POSTGRES_DB=bench"
    : >"$work/enc"
    for r in $(seq 1 "$rounds"); do
        echo "== encryption round $r" >&2
        for mode in plain age; do
            extra=""
            [ "$mode" = age ] && extra="BACKUP_AGE_RECIPIENTS=$recipient BACKUP_AGE_IDENTITY_FILE='$work/key.txt'"
            rm -rf "${out:?}"/*
            t0=$(date +%s.%N)
            eval "$eenv $extra '$xtask' db-backup -q --no-prune"
            t1=$(date +%s.%N)
            file=$(find "$out" -maxdepth 1 \( -name 'bench_*.sql.gz' -o -name 'bench_*.sql.gz.age' \) | head -1)
            "$bindir/dropdb" --if-exists r_enc
            t2=$(date +%s.%N)
            eval "$eenv $extra '$xtask' db-restore -q '$file' --target-db r_enc"
            t3=$(date +%s.%N)
            echo "$mode $t0 $t1 $t2 $t3 $(stat -c %s "$file")" >>"$work/enc"
        done
    done
    python3 - "$work/enc" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    mode, t0, t1, t2, t3, size = line.split()
    rows.setdefault(mode, []).append((float(t1) - float(t0), float(t3) - float(t2), int(size)))
for mode in ("plain", "age"):
    b = [x[0] for x in rows[mode]]; r = [x[1] for x in rows[mode]]
    print(f"{mode:<6} backup median {statistics.median(b):6.2f} s ({' '.join(f'{x:.2f}' for x in b)})  "
          f"restore median {statistics.median(r):6.2f} s ({' '.join(f'{x:.2f}' for x in r)})  size {rows[mode][0][2] / 2**20:.1f} MiB")
mb = lambda m, i: statistics.median(x[i] for x in rows[m])
print(f"age / plain: backup {mb('age', 0) / mb('plain', 0):.3f}, restore {mb('age', 1) / mb('plain', 1):.3f}")
EOF
    exit 0
fi

# One measurement: wall seconds and peak RSS (KiB) of the named process.
measure() { # name, then the command (run through bash -c)
    local name=$1; shift
    # Each command starts from a checkpoint: a restore writes about 1 GB of
    # WAL, and the checkpoint it calls for would otherwise land in whichever
    # command comes next (the shell's restore always ran first, so the
    # xtask's paid for it).
    "$bindir/psql" -qX -c CHECKPOINT >/dev/null
    /usr/bin/time -f "%e %M" -o "$work/time" bash -c "$*" 2>"$work/stderr" || {
        cat "$work/stderr" >&2; exit 1
    }
    read -r secs rss <"$work/time"
    echo "$name $secs $rss" >>"$work/results"
}

: >"$work/results"
for r in $(seq 1 "$rounds"); do
    echo "== round $r" >&2
    measure devnull "'$bindir/pg_dump' > /dev/null"
    rm -rf "${out:?}"/*
    measure shell "'$bindir/pg_dump' | gzip > '$out/f.sql.gz' && sha256sum '$out/f.sql.gz' > '$out/f.sql.gz.sha256'"
    gzip_size=$(stat -c %s "$out/f.sql.gz")
    rm -rf "${out:?}"/*
    measure pigz "'$bindir/pg_dump' | pigz > '$out/f.sql.gz'"
    rm -rf "${out:?}"/*
    # RSS of the xtask alone (GNU time reports the largest process of the tree;
    # pg_dump is smaller, see the devnull row).
    measure xtask "XTASK_ROOT='$work' BACKUP_DIR='$out' POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=$port POSTGRES_USER=bench POSTGRES_DB=bench '$xtask' db-backup -q"
    xtask_size=$(stat -c %s "$out"/bench_*.sql.gz)
    sql_size=$(sed -n 's/.*"uncompressed_bytes": \([0-9]*\).*/\1/p' "$out"/bench_*.meta)
    rm -rf "${out:?}"/*
    measure xtask-1t "BACKUP_JOBS=1 XTASK_ROOT='$work' BACKUP_DIR='$out' POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=$port POSTGRES_USER=bench POSTGRES_DB=bench '$xtask' db-backup -q"
    rm -rf "${out:?}"/*
    # Formats and codecs (issue 16): zstd in-process, and pg_dump's custom archive.
    measure xtask-zstd "XTASK_ROOT='$work' BACKUP_DIR='$out' POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=$port POSTGRES_USER=bench POSTGRES_DB=bench '$xtask' db-backup -q --compress zstd"
    zstd_size=$(stat -c %s "$out"/bench_*.sql.zst)
    rm -rf "${out:?}"/*
    measure devnull-custom "'$bindir/pg_dump' -Fc > /dev/null"
    measure xtask-custom "XTASK_ROOT='$work' BACKUP_DIR='$out' POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=$port POSTGRES_USER=bench POSTGRES_DB=bench '$xtask' db-backup -q --format custom --jobs 2"
    custom_size=$(stat -c %s "$out"/bench_*.dump)
    rm -rf "${out:?}"/*
    # pg_dump's directory format with two jobs, bare and through the xtask.
    measure devnull-dir "'$bindir/pg_dump' -Fd -j 2 -f '$work/bare.dir' && rm -rf '$work/bare.dir'"
    measure xtask-dir "XTASK_ROOT='$work' BACKUP_DIR='$out' POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=$port POSTGRES_USER=bench POSTGRES_DB=bench '$xtask' db-backup -q --format directory --jobs 2"
    dir_size=$(du -sb "$out"/bench_*.dir | cut -f1)
    rm -rf "${out:?}"/*
done
db_size=$("$bindir/psql" -AtqX -c "SELECT pg_database_size('bench')")

# Verification and restore, on the xtask's last backup (kept in $out).
if [ "$restore_rounds" -gt 0 ]; then
    xenv="XTASK_ROOT='$work' BACKUP_DIR='$out' POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=$port POSTGRES_USER=bench POSTGRES_DB=bench"
    eval "$xenv '$xtask' db-backup -q --no-prune"
    eval "$xenv '$xtask' db-backup -q --no-prune --compress zstd"
    eval "$xenv '$xtask' db-backup -q --no-prune --format custom"
    eval "$xenv '$xtask' db-backup -q --no-prune --format directory --jobs 2"
    file=$(ls "$out"/bench_*.sql.gz)
    dfile=$(ls -d "$out"/bench_*.dir)
    zfile=$(ls "$out"/bench_*.sql.zst)
    cfile=$(ls "$out"/bench_*.dump)
    name=$(basename "$file")
    for r in $(seq 1 "$restore_rounds"); do
        echo "== restore round $r" >&2
        measure verify-shell "cd '$out' && sha256sum -c --quiet '$name.sha256' && gzip -t '$name'"
        measure verify-xtask "$xenv '$xtask' db-verify -q '$file'"
        "$bindir/dropdb" --if-exists r_shell; "$bindir/dropdb" --if-exists r_xtask
        measure restore-shell "'$bindir/createdb' r_shell && gunzip -c '$file' | '$bindir/psql' -qX -v ON_ERROR_STOP=1 -d r_shell >/dev/null"
        measure restore-xtask "$xenv '$xtask' db-restore -q '$file' --target-db r_xtask"
        "$bindir/dropdb" --if-exists r_table
        measure restore-table "$xenv '$xtask' db-restore -q '$file' --target-db r_table --table public.noise"
        "$bindir/dropdb" --if-exists r_custom; "$bindir/dropdb" --if-exists r_zstd
        measure restore-custom "$xenv '$xtask' db-restore -q '$cfile' --target-db r_custom --jobs 2"
        measure restore-zstd "$xenv '$xtask' db-restore -q '$zfile' --target-db r_zstd"
        measure verify-zstd "$xenv '$xtask' db-verify -q '$zfile'"
        measure verify-custom "$xenv '$xtask' db-verify -q '$cfile'"
        "$bindir/dropdb" --if-exists r_dir
        measure restore-dir "$xenv '$xtask' db-restore -q '$dfile' --target-db r_dir --jobs 2"
        measure verify-dir "$xenv '$xtask' db-verify -q '$dfile'"
        for d in r_shell r_xtask r_table r_custom r_zstd r_dir; do "$bindir/dropdb" --if-exists "$d"; done
    done
fi

python3 - "$work/results" "$gzip_size" "$xtask_size" "$sql_size" "$zstd_size" "$custom_size" "$db_size" "$dir_size" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, secs, rss = line.split()
    rows.setdefault(name, []).append((float(secs), int(rss)))
gzip_size, xtask_size, sql_size, zstd_size, custom_size, db_size, dir_size = map(int, sys.argv[2:9])
med = {k: statistics.median(s for s, _ in v) for k, v in rows.items()}
print(f"plain SQL: {sql_size / 2**20:.0f} MiB; gzip -6: {gzip_size / 2**20:.1f} MiB; xtask: {xtask_size / 2**20:.1f} MiB ({xtask_size / gzip_size:.3f} x gzip)")
print(f"{'command':<10} {'median s':>9} {'runs':>24} {'peak RSS MiB':>13} {'vs devnull':>10} {'shell/this':>10}")
print(f"zstd: {zstd_size / 2**20:.1f} MiB ({zstd_size / gzip_size:.3f} x gzip -6); custom (pg_dump -Fc): {custom_size / 2**20:.1f} MiB; directory (pg_dump -Fd): {dir_size / 2**20:.1f} MiB; database: {db_size / 2**20:.0f} MiB")
for k in ["devnull", "shell", "pigz", "xtask", "xtask-1t", "xtask-zstd", "devnull-custom", "xtask-custom", "devnull-dir", "xtask-dir"]:
    runs = " ".join(f"{s:.2f}" for s, _ in rows[k])
    rss = max(r for _, r in rows[k]) / 1024
    print(f"{k:<10} {med[k]:>9.2f} {runs:>24} {rss:>13.1f} {med[k] / med['devnull']:>10.2f} {med['shell'] / med[k]:>10.2f}")
if "restore-table" in rows:
    runs = " ".join(f"{s:.2f}" for s, _ in rows["restore-table"])
    print(f"restore-table  median {med['restore-table']:>7.2f} s  runs {runs}  (--table public.noise: 1M of the 3M rows)")
print(f"xtask-zstd / devnull = {med['xtask-zstd'] / med['devnull']:.2f}; xtask-custom / devnull-custom = {med['xtask-custom'] / med['devnull-custom']:.2f}; xtask-dir / devnull-custom = {med['xtask-dir'] / med['devnull-custom']:.2f}; xtask-dir / devnull-dir = {med['xtask-dir'] / med['devnull-dir']:.2f}")
for a, b in [("verify-shell", "verify-xtask"), ("restore-shell", "restore-xtask"), ("restore-shell", "restore-custom"),
             ("restore-shell", "restore-zstd"), ("verify-shell", "verify-zstd"), ("verify-shell", "verify-custom"),
             ("restore-shell", "restore-dir"), ("verify-shell", "verify-dir")]:
    if a in rows:
        for k in (a, b):
            runs = " ".join(f"{s:.2f}" for s, _ in rows[k])
            print(f"{k:<14} median {med[k]:>7.2f} s  runs {runs}  peak RSS {max(r for _, r in rows[k]) / 1024:.1f} MiB")
        print(f"  {a} / {b} = {med[a] / med[b]:.2f}")
if "restore-custom" in rows:
    # Linear projection to a 100 GB database on this machine class.
    f = 100e9 / db_size
    print(f"projection to 100 GB (x{f:.0f} of this {db_size / 1e9:.2f} GB database), against the one-hour recovery objective:")
    for label, b, r in [("plain gzip:6", "xtask", "restore-xtask"), ("plain zstd", "xtask-zstd", "restore-zstd"),
                        ("custom --jobs 2", "xtask-custom", "restore-custom"), ("directory --jobs 2", "xtask-dir", "restore-dir")]:
        print(f"  {label:<16} backup {med[b] * f / 60:6.1f} min   restore {med[r] * f / 60:6.1f} min")
EOF
