//! `db-restore`, `db-list` and `db-verify` against real servers: round trips
//! of the pagila database, and every refusal leaving the target untouched.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{DB, PgServer, files_in, host_pg_dump_major, json_of, show};
use serde_json::Value;

const PAGILA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/pagila");

per_version! {
    pagila_round_trips_identically => super::pagila_round_trip,
}

/// Loads the public pagila database (schema and data) into `db`.
pub(crate) fn load_pagila(pg: &PgServer, db: &str) {
    // Its objects belong to a role `postgres`, which these servers do not have.
    let _ = pg.try_psql(DB, "CREATE ROLE postgres");
    for file in ["pagila-schema.sql.gz", "pagila-data.sql.gz"] {
        let gz = std::fs::File::open(Path::new(PAGILA).join(file))
            .expect("the pagila fixture in tests/fixtures/pagila");
        let mut sql = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut sql).unwrap();
        pg.psql_script(db, &sql);
    }
}

/// A fingerprint of a database: its schema (as the server's own pg_dump
/// prints it) and a content hash of every table.
pub(crate) fn fingerprint(pg: &PgServer, db: &str) -> (String, BTreeMap<String, String>) {
    let schema = pg.exec(&["pg_dump", "-U", e2e::USER, "--schema-only", db]);
    let schema: String = String::from_utf8_lossy(&schema)
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n");
    let tables = pg.psql(
        db,
        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables
         WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
    );
    let mut hashes = BTreeMap::new();
    for t in tables.lines() {
        let h = pg.psql(db, &format!("SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x::text)), '') FROM ONLY {t} x"));
        hashes.insert(t.to_string(), h);
    }
    (schema, hashes)
}

/// A backup of `db`: by the xtask where the host's pg_dump can dump the
/// server; otherwise by the server's own pg_dump, gzipped, as a file "made
/// elsewhere" (no .sha256), which restore accepts after its structural checks.
fn backup_of(pg: &PgServer, x: &e2e::Xtask, db: &str) -> String {
    if host_pg_dump_major() >= pg.major {
        let out = x.run(&["db-backup", "--json", "--no-prune"], &pg.xtask_env(db));
        assert!(out.status.success(), "{}", show(&out));
        json_of(&out)["path"].as_str().unwrap().to_string()
    } else {
        let dump = pg.exec(&["pg_dump", "-U", e2e::USER, "--format=plain", db]);
        let path = x.root.path().join(format!("{db}-made-elsewhere.sql.gz"));
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        std::io::Write::write_all(&mut gz, &dump).unwrap();
        gz.finish().unwrap();
        path.display().to_string()
    }
}

fn pagila_round_trip(major: u32) {
    let pg = PgServer::start(major);
    pg.create_db("pagila");
    load_pagila(&pg, "pagila");
    // Large objects travel in their own section of the dump.
    pg.psql("pagila", "SELECT lo_from_bytea(0, convert_to(repeat('large object ', 5000), 'UTF8')); SELECT lo_from_bytea(0, '\\x00ff00ff'::bytea)");
    let x = crate::xtask();
    let file = backup_of(&pg, &x, "pagila");

    let out = x.run(
        &["db-restore", &file, "--target-db", "pagila_copy", "--json"],
        &pg.xtask_env("pagila"),
    );
    assert!(out.status.success(), "{}", show(&out));
    let result = json_of(&out);
    assert_eq!(result["status"], "ok");
    assert_eq!(
        result["previous"],
        Value::Null,
        "a new database replaces nothing"
    );
    assert!(result["rows"].as_u64().unwrap() > 40_000, "{result}");

    let (schema_a, tables_a) = fingerprint(&pg, "pagila");
    let (schema_b, tables_b) = fingerprint(&pg, "pagila_copy");
    assert!(
        tables_a.len() > 20,
        "pagila has its tables and partitions: {tables_a:?}"
    );
    assert_eq!(tables_a, tables_b, "table contents differ");
    assert_eq!(schema_a, schema_b, "schemas differ");
    // Functions, triggers, views and sequences came along and work.
    assert_eq!(
        pg.psql(
            "pagila_copy",
            "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal"
        ),
        pg.psql(
            "pagila",
            "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal"
        )
    );
    assert_eq!(
        pg.psql(
            "pagila_copy",
            "SELECT last_value FROM public.actor_actor_id_seq"
        ),
        pg.psql("pagila", "SELECT last_value FROM public.actor_actor_id_seq")
    );
    assert_eq!(
        pg.psql("pagila_copy", "SELECT count(*) FROM public.film_list"),
        pg.psql("pagila", "SELECT count(*) FROM public.film_list")
    );
    assert_eq!(
        pg.psql("pagila_copy", "SELECT public.inventory_in_stock(1)"),
        "t"
    );
    let blobs = "SELECT count(*) || ':' || md5(string_agg(encode(lo_get(oid), 'hex'), ',' ORDER BY md5(lo_get(oid)))) FROM pg_largeobject_metadata";
    assert_eq!(pg.psql("pagila_copy", blobs), pg.psql("pagila", blobs));
    assert!(pg.psql("pagila", blobs).starts_with("2:"));
}

/// The target's content before and after must be the same.
fn snapshot(pg: &PgServer) -> String {
    pg.table_rows(DB, "t")
}

fn seeded(major: u32) -> (PgServer, e2e::Xtask, String) {
    let pg = PgServer::start(major);
    pg.psql(DB, "CREATE TABLE t (id int PRIMARY KEY, s text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 2000) g");
    let x = crate::xtask();
    let out = x.run(&["db-backup", "--json", "--no-prune"], &pg.xtask_env(DB));
    assert!(out.status.success(), "{}", show(&out));
    let file = json_of(&out)["meta"]["file"].as_str().unwrap().to_string();
    (pg, x, file)
}

fn databases(pg: &PgServer) -> String {
    pg.psql(
        DB,
        "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database",
    )
}

#[test]
fn restore_latest_replaces_all_or_nothing_and_keeps_the_previous() {
    let (pg, x, file) = seeded(15);
    let env = pg.xtask_env(DB);
    pg.psql(
        DB,
        "DELETE FROM t WHERE id > 10; INSERT INTO t VALUES (99999, 'after the backup')",
    );
    let changed = snapshot(&pg);

    // Without a terminal, replacing needs --yes: refused, nothing changed.
    let out = x.run(&["db-restore", "--latest"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pass --yes to confirm"),
        "{}",
        show(&out)
    );
    // --dry-run prints the plan, changes nothing, and says the same.
    let before = databases(&pg);
    let dry = x.run(&["db-restore", "--latest", "--dry-run", "--yes"], &env);
    assert!(dry.status.success(), "{}", show(&dry));
    let plan = String::from_utf8_lossy(&dry.stdout);
    assert!(
        plan.contains(&file)
            && plan.contains("public.t: 2000")
            && plan.contains("replaces  the existing app"),
        "{plan}"
    );
    assert_eq!(databases(&pg), before);
    assert_eq!(snapshot(&pg), changed);

    // A session on the target does not stop the swap; it is closed for it.
    let mut holder = Command::new("psql")
        .args(["-X", "-q", "-c", "SELECT pg_sleep(60)"])
        .envs(pg.libpq_env(DB))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = x.run(&["db-restore", "--latest", "--yes", "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let _ = holder.kill();
    let _ = holder.wait();
    let result = json_of(&out);
    let previous = result["previous"].as_str().unwrap().to_string();
    assert!(previous.starts_with("app_pre_restore_"), "{previous}");
    assert_eq!(pg.psql(DB, "SELECT count(*) FROM t"), "2000");
    assert_eq!(
        pg.table_rows(&previous, "t"),
        changed,
        "the replaced database is kept intact"
    );
    assert!(
        !databases(&pg)
            .split(',')
            .any(|d| d.starts_with("app_restore_")),
        "a scratch database is left: {}",
        databases(&pg)
    );

    // db-list and db-verify see the backup; verify records itself.
    let list = x.run(&["db-list", "--json"], &env);
    assert_eq!(json_of(&list)["backups"][0]["file"], file.as_str());
    let verify = x.run(&["db-verify", "--all"], &env);
    assert!(verify.status.success(), "{}", show(&verify));
    let list = x.run(&["db-list"], &env);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("yes 20"),
        "{}",
        show(&list)
    );
}

/// Damages one file of the set and checks the restore refuses, with `says`,
/// before touching anything.
fn refused(pg: &PgServer, x: &e2e::Xtask, args: &[&str], says: &str) {
    let before = (databases(pg), snapshot(pg));
    let out = x.run(args, &pg.xtask_env(DB));
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(says), "expected '{says}' in: {err}");
    assert_eq!(
        (databases(pg), snapshot(pg)),
        before,
        "a refused restore changed something"
    );
}

#[test]
fn damaged_backups_are_refused_before_anything_is_touched() {
    let (pg, x, file) = seeded(15);
    let dir = x.backup_dir();
    let path = dir.join(&file);
    let pristine = std::fs::read(&path).unwrap();
    let sha = std::fs::read_to_string(dir.join(format!("{file}.sha256"))).unwrap();
    let meta = std::fs::read_to_string(dir.join(format!("{file}.meta"))).unwrap();
    let args = ["db-restore", file.as_str(), "--yes"];

    let mut flipped = pristine.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    std::fs::write(&path, &flipped).unwrap();
    refused(&pg, &x, &args, "checksum mismatch");

    std::fs::write(&path, &pristine[..pristine.len() * 2 / 3]).unwrap();
    refused(&pg, &x, &args, "checksum mismatch");
    std::fs::write(&path, &pristine).unwrap();

    std::fs::write(
        dir.join(format!("{file}.sha256")),
        sha.replace(&file, "other.sql.gz"),
    )
    .unwrap();
    refused(&pg, &x, &args, "belongs to another backup");
    std::fs::write(
        dir.join(format!("{file}.sha256")),
        format!("{}  {file}\n", "ab".repeat(32)),
    )
    .unwrap();
    refused(&pg, &x, &args, "record different checksums");
    std::fs::write(dir.join(format!("{file}.sha256")), &sha).unwrap();

    let mut m: Value = serde_json::from_str(&meta).unwrap();
    m["tables"]["public.t"] = 5.into();
    std::fs::write(
        dir.join(format!("{file}.meta")),
        serde_json::to_string(&m).unwrap(),
    )
    .unwrap();
    refused(&pg, &x, &args, "row counts in .meta disagree");
    std::fs::write(dir.join(format!("{file}.meta")), &meta).unwrap();

    // A truncated dump without sidecars (made elsewhere): the structure check refuses it.
    let sql = Command::new("gunzip")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap()
        .stdout;
    let elsewhere = x.root.path().join("elsewhere.sql.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&elsewhere).unwrap(),
        flate2::Compression::fast(),
    );
    std::io::Write::write_all(&mut gz, &sql[..sql.len() / 2]).unwrap();
    gz.finish().unwrap();
    refused(
        &pg,
        &x,
        &["db-restore", elsewhere.to_str().unwrap(), "--yes"],
        "the dump is truncated",
    );

    // --latest with nothing usable says so plainly.
    let empty = crate::xtask();
    let out = empty.run(&["db-restore", "--latest", "--yes"], &pg.xtask_env(DB));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("there is no usable backup of database 'app'"),
        "{}",
        show(&out)
    );

    // And the pristine set still restores.
    let ok = x.run(&args, &pg.xtask_env(DB));
    assert!(ok.status.success(), "{}", show(&ok));
}

#[test]
fn a_dump_that_fails_half_way_leaves_the_target_as_it_was() {
    let (pg, x, _) = seeded(15);
    // A table owned by a role that exists now and not at restore time: the
    // load stops at `ALTER TABLE ... OWNER TO`.
    pg.psql(
        DB,
        "CREATE ROLE ghost; CREATE TABLE haunted (x int); ALTER TABLE haunted OWNER TO ghost",
    );
    let out = x.run(&["db-backup", "--json", "--no-prune"], &pg.xtask_env(DB));
    assert!(out.status.success(), "{}", show(&out));
    let file = json_of(&out)["meta"]["file"].as_str().unwrap().to_string();
    pg.psql(DB, "DROP TABLE haunted; DROP ROLE ghost");
    // The .meta lists the roles: refused up front, naming them.
    refused(
        &pg,
        &x,
        &["db-restore", &file, "--yes"],
        "does not have: ghost; create them from the globals backup first (--with-globals)",
    );
    // Without it (a dump made elsewhere) the load itself stops half-way.
    std::fs::remove_file(x.backup_dir().join(format!("{file}.meta"))).unwrap();
    refused(
        &pg,
        &x,
        &["db-restore", &file, "--yes"],
        "role \"ghost\" does not exist",
    );
}

#[test]
fn ctrl_c_during_the_load_leaves_the_target_as_it_was() {
    let pg = PgServer::start(15);
    pg.psql(DB, "CREATE TABLE t (id int PRIMARY KEY, s text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20) g");
    pg.psql(DB, "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 3)::text) AS p FROM generate_series(1, 2000000) g");
    let x = crate::xtask();
    let env = pg.xtask_env(DB);
    assert!(
        x.run(&["db-backup", "-q", "--no-prune"], &env)
            .status
            .success()
    );
    pg.psql(DB, "DROP TABLE big; DELETE FROM t WHERE id > 5");
    let before = (databases(&pg), snapshot(&pg));

    let child = x.spawn(&["db-restore", "--latest", "--yes"], &env);
    // Wait until the scratch database is being loaded, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pg
        .psql(
            DB,
            "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'app_restore_%'",
        )
        .starts_with('1')
    {
        assert!(Instant::now() < deadline, "the load never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("interrupted"),
        "{}",
        show(&out)
    );
    assert_eq!(
        (databases(&pg), snapshot(&pg)),
        before,
        "Ctrl-C left something behind"
    );
    assert_eq!(files_in(&x.backup_dir()).len(), 3);
}

#[test]
fn table_restores_only_the_selected_tables_with_their_indexes() {
    let pg = PgServer::start(15);
    pg.create_db("pagila");
    load_pagila(&pg, "pagila");
    let x = crate::xtask();
    let file = backup_of(&pg, &x, "pagila");
    let env = pg.xtask_env("pagila");
    let out = x.run(
        &[
            "db-restore",
            &file,
            "--target-db",
            "recovered",
            "--table",
            "public.film",
            "--table",
            "actor",
            "--json",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", show(&out));
    let result = json_of(&out);
    assert_eq!(
        result["tables"],
        serde_json::json!({"public.actor": 200, "public.film": 1000}),
        "{result}"
    );
    for t in ["public.film", "public.actor"] {
        assert_eq!(
            pg.table_rows("recovered", t),
            pg.table_rows("pagila", t),
            "{t}"
        );
    }
    let tables = pg.psql("recovered", "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'");
    assert_eq!(tables, "actor,film");
    let indexes = pg.psql("recovered", "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'public'");
    assert_eq!(indexes, pg.psql("pagila", "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE tablename IN ('film', 'actor')"));
    assert_eq!(pg.psql("recovered", "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgrelid = 'public.film'::regclass"), pg.psql("pagila", "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgrelid = 'public.film'::regclass"));
    // The sequence behind actor_id continues where it was.
    assert_eq!(
        pg.psql("recovered", "SELECT nextval('public.actor_actor_id_seq')"),
        pg.psql(
            "pagila",
            "SELECT last_value + 1 FROM public.actor_actor_id_seq"
        )
    );

    let missing = x.run(
        &[
            "db-restore",
            &file,
            "--target-db",
            "recovered2",
            "--table",
            "public.nope",
        ],
        &env,
    );
    assert_eq!(missing.status.code(), Some(1), "{}", show(&missing));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("this backup has no table public.nope"),
        "{}",
        show(&missing)
    );
    assert!(
        !pg.psql("pagila", "SELECT string_agg(datname, ',') FROM pg_database")
            .contains("recovered2")
    );
}

/// Issue 13: a quoted table name keeps its indexes, constraints and
/// triggers in a selective restore.
#[test]
fn table_restore_of_a_quoted_name_keeps_its_parts() {
    let pg = PgServer::start(15);
    pg.psql(
        DB,
        "CREATE TABLE \"Order\" (id int PRIMARY KEY, \"Note\" text CHECK (\"Note\" <> 'x'));
         CREATE INDEX \"Order note\" ON \"Order\" (\"Note\");
         CREATE TABLE \"Sales Items\" (id int PRIMARY KEY, order_id int REFERENCES \"Order\");
         CREATE INDEX items_by_order ON \"Sales Items\" (order_id);
         INSERT INTO \"Order\" VALUES (1, 'a'), (2, 'b');",
    );
    let x = crate::xtask();
    let file = backup_of(&pg, &x, DB);
    let out = x.run(
        &[
            "db-restore",
            &file,
            "--target-db",
            "orders",
            "--table",
            "public.\"Order\"",
            "--json",
        ],
        &pg.xtask_env(DB),
    );
    assert!(out.status.success(), "{}", show(&out));
    let indexes = "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'public'";
    assert_eq!(pg.psql("orders", indexes), "Order note,Order_pkey");
    assert_eq!(
        pg.psql(
            "orders",
            "SELECT count(*) FROM pg_constraint WHERE conrelid = '\"Order\"'::regclass"
        ),
        "2"
    );
    assert_eq!(
        pg.table_rows("orders", "\"Order\""),
        pg.table_rows(DB, "\"Order\"")
    );
}
