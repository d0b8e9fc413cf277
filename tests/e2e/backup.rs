//! `cargo xtask db-backup` against real servers.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e::{DB, PASSWORD, PgServer, files_in, host_pg_dump_major, json_of, show};
use serde_json::Value;
use xtask::testing::is_root;

per_version! {
    backup_restores_into_an_identical_database => super::round_trip,
}

/// Several tables and types, NULLs, escapes, non-ASCII text and an empty table.
fn seed(pg: &PgServer, db: &str) {
    pg.psql(
        db,
        "CREATE TABLE customers (id bigserial PRIMARY KEY, email text UNIQUE NOT NULL, name text, born date, meta jsonb);
         CREATE TABLE orders (id int PRIMARY KEY, customer_id bigint REFERENCES customers(id), total numeric(12,2),
                              placed_at timestamptz, tags text[], paid boolean, blob bytea);
         CREATE TABLE \"Audit Log\" (at timestamptz DEFAULT now(), line text);
         CREATE TABLE empty_table (x int);
         CREATE INDEX ON orders (placed_at);
         CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
         INSERT INTO customers (email, name, born, meta)
           SELECT 'user' || g || '@example.com', 'Name ' || g, DATE '1990-01-01' + g, jsonb_build_object('n', g)
           FROM generate_series(1, 300) g;
         INSERT INTO customers (email, name) VALUES ('zoë@example.com', E'tab\\tnew\\nline \\\\ back ünï €');
         INSERT INTO orders SELECT g, 1 + g % 300, g * 3.5, TIMESTAMPTZ '2026-01-01 00:00Z' + g * interval '1 minute',
           ARRAY['x', NULL, 'y' || g], g % 2 = 0, decode(md5(g::text), 'hex') FROM generate_series(1, 2000) g;
         INSERT INTO \"Audit Log\" (line) VALUES ('created'), (NULL);",
    );
}

const TABLES: &[(&str, &str)] = &[
    ("public.customers", "customers"),
    ("public.orders", "orders"),
    ("public.\"Audit Log\"", "\"Audit Log\""),
    ("public.empty_table", "empty_table"),
];

fn backup_files(dir: &Path) -> Vec<String> {
    files_in(dir)
        .into_iter()
        .filter(|f| f.contains(".sql.gz"))
        .collect()
}

fn metrics(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("metrics/backup.prom")).unwrap_or_default()
}

/// No output, file or metric of a run holds the password.
fn assert_no_secret(out: &Output, dir: &Path) {
    for text in [
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    ] {
        assert!(
            !text.contains(PASSWORD),
            "the password leaked into the output: {text}"
        );
    }
    for f in files_in(dir)
        .into_iter()
        .filter(|f| !f.ends_with(".sql.gz"))
    {
        let text = std::fs::read_to_string(dir.join(&f)).unwrap_or_default();
        assert!(!text.contains(PASSWORD), "the password leaked into {f}");
    }
    assert!(!metrics(dir).contains(PASSWORD));
}

fn round_trip(major: u32) {
    let pg = PgServer::start(major);
    seed(&pg, DB);
    let x = crate::xtask();
    let out = x.run(&["db-backup", "--verify", "--json"], &pg.xtask_env(DB));
    let dir = x.backup_dir();
    assert_no_secret(&out, &dir);

    if host_pg_dump_major() < major {
        // The host's client cannot dump a newer server: one clear line naming
        // both versions and the remedy, and nothing that looks like a backup.
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("is older than the server ({major}."))
                && err.contains(&format!("PostgreSQL {major} client tools")),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "one error line: {err}");
        assert!(backup_files(&dir).is_empty(), "{:?}", files_in(&dir));
        assert!(metrics(&dir).contains(&format!(
            "backup_last_status{{database=\"{DB}\",type=\"daily\"}} 0"
        )));
        return;
    }

    assert!(out.status.success(), "{}", show(&out));
    let result = json_of(&out);
    assert_eq!(result["status"], "ok");
    let meta = &result["meta"];
    let file = meta["file"].as_str().unwrap().to_string();
    assert!(
        file.starts_with("app_daily_") && file.ends_with("Z.sql.gz"),
        "{file}"
    );
    assert_eq!(
        backup_files(&dir),
        vec![
            file.clone(),
            format!("{file}.meta"),
            format!("{file}.sha256")
        ]
    );

    // The standard tool agrees with the checksum file.
    let check = Command::new("sha256sum")
        .args(["-c", &format!("{file}.sha256")])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(check.status.success(), "sha256sum -c: {}", show(&check));

    // .meta on disk is what --json printed, and its row counts are count(*).
    let on_disk: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{file}.meta"))).unwrap())
            .unwrap();
    assert_eq!(&on_disk, meta);
    assert_eq!(meta["database"], DB);
    assert_eq!(meta["type"], "daily");
    assert_eq!(meta["verification"]["ok"], true);
    assert_eq!(
        meta["size_bytes"].as_u64().unwrap(),
        std::fs::metadata(dir.join(&file)).unwrap().len()
    );
    assert!(
        meta["server_version"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{major}."))
    );
    for (qualified, table) in TABLES {
        let count: u64 = pg
            .psql(DB, &format!("SELECT count(*) FROM {table}"))
            .parse()
            .unwrap();
        assert_eq!(
            meta["tables"][qualified].as_u64(),
            Some(count),
            "{qualified}"
        );
    }

    // Files are private.
    use std::os::unix::fs::PermissionsExt;
    for f in [
        file.clone(),
        format!("{file}.meta"),
        format!("{file}.sha256"),
    ] {
        assert_eq!(
            std::fs::metadata(dir.join(&f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600,
            "{f}"
        );
    }
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // Plain `gunzip | psql` restores it into a fresh database that matches.
    pg.create_db("restored");
    let sql = Command::new("gunzip")
        .arg("-c")
        .arg(dir.join(&file))
        .output()
        .unwrap();
    assert!(sql.status.success());
    pg.psql_script("restored", &sql.stdout);
    for (_, table) in TABLES {
        assert_eq!(
            pg.table_rows("restored", table),
            pg.table_rows(DB, table),
            "{table}"
        );
    }
    assert_eq!(
        pg.psql("restored", "SELECT count(*) FROM big_orders"),
        pg.psql(DB, "SELECT count(*) FROM big_orders")
    );

    // Metrics: success series for this database and type.
    let m = metrics(&dir);
    for name in [
        "backup_last_success_timestamp",
        "backup_size_bytes",
        "backup_duration_seconds",
        "backup_last_status",
    ] {
        assert!(
            m.contains(&format!("{name}{{database=\"app\",type=\"daily\"}}")),
            "{name} missing:\n{m}"
        );
    }
    assert!(m.contains("backup_last_status{database=\"app\",type=\"daily\"} 1"));
}

#[test]
fn wrong_password_and_missing_database_publish_nothing() {
    let pg = PgServer::start(15);
    let x = crate::xtask();
    let dir = x.backup_dir();

    let mut env = pg.xtask_env(DB);
    env.insert("PGPASSWORD".into(), "wrong-password".into());
    let out = x.run(&["db-backup"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: password authentication failed for user 'app'"),
        "{err}"
    );
    assert!(!err.contains("wrong-password"));

    let out = x.run(&["db-backup", "--type=weekly"], &pg.xtask_env("nope"));
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: database 'nope' does not exist at 127.0.0.1:"),
        "{err}"
    );

    assert!(backup_files(&dir).is_empty(), "{:?}", files_in(&dir));
    let m = metrics(&dir);
    assert!(
        m.contains("backup_last_status{database=\"app\",type=\"daily\"} 0"),
        "{m}"
    );
    assert!(
        m.contains("backup_last_failure_timestamp{database=\"nope\",type=\"weekly\"}"),
        "{m}"
    );
    assert_no_secret(&out, &dir);
}

/// A table big enough that pg_dump is still streaming when we strike.
fn seed_big(pg: &PgServer) {
    pg.psql(
        DB,
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS payload FROM generate_series(1, 1500000) g",
    );
}

fn partials(dir: &Path) -> Vec<String> {
    files_in(dir)
        .into_iter()
        .filter(|f| f.starts_with(".xtask-partial-"))
        .collect()
}

/// Waits until the run has written some compressed bytes, then returns.
fn wait_for_partial_bytes(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let written: u64 = partials(dir)
            .iter()
            .map(|f| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0))
            .sum();
        if written > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the backup never started writing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn children_named(pid: u32, name: &str) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string(), "-x", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn killed_pg_dump_or_killed_xtask_leave_no_backup() {
    let pg = PgServer::start(15);
    seed_big(&pg);
    let x = crate::xtask();
    let dir = x.backup_dir();
    let env = pg.xtask_env(DB);

    // 1. pg_dump dies mid-stream: the run fails and publishes nothing.
    let child = x
        .command(&["db-backup"], &env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_partial_bytes(&dir);
    let dumps = children_named(child.id(), "pg_dump");
    assert_eq!(dumps.len(), 1, "one pg_dump child");
    Command::new("kill")
        .args(["-9", &dumps[0].to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pg_dump stopped before the dump was complete")
            && err.contains("nothing was published"),
        "{err}"
    );
    assert_eq!(
        files_in(&dir),
        Vec::<String>::new(),
        "no partial file, no backup"
    );
    assert!(metrics(&dir).contains("backup_last_status{database=\"app\",type=\"daily\"} 0"));

    // 2. The xtask itself is killed (kill -9: no cleanup runs): a partial file
    //    stays behind, named so nothing takes it for a backup...
    let mut child = x.command(&["db-backup"], &env).spawn().unwrap();
    wait_for_partial_bytes(&dir);
    child.kill().unwrap();
    child.wait().unwrap();
    let left = partials(&dir);
    assert_eq!(left.len(), 1, "{:?}", files_in(&dir));
    assert!(backup_files(&dir).is_empty());

    // ...and the next run removes it and succeeds.
    let out = x.run(&["db-backup", "-v"], &env);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("removed the leftover of an interrupted run")
    );
    assert!(partials(&dir).is_empty(), "{:?}", files_in(&dir));
    assert_eq!(backup_files(&dir).len(), 3);

    // 3. The directory format: pg_dump killed mid-run publishes nothing
    //    and leaves no partial directory; the xtask killed leaves one that
    //    nothing takes for a backup, and the next run removes it.
    let entries = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "metrics" && !n.starts_with(".xtask-lock-"))
            .collect();
        v.sort();
        v
    };
    let before = entries();
    let started = |child: &std::process::Child| -> Vec<u32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let dumps = children_named(child.id(), "pg_dump");
            let writing = entries().iter().any(|e| {
                e.starts_with(".xtask-partial-")
                    && std::fs::read_dir(dir.join(e).join("contents"))
                        .is_ok_and(|mut d| d.next().is_some())
            });
            if writing && !dumps.is_empty() {
                return dumps;
            }
            assert!(
                Instant::now() < deadline,
                "the directory backup never started"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let args = ["db-backup", "--format", "directory", "--jobs", "2"];
    let child = x
        .command(&args, &env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let dumps = started(&child);
    Command::new("kill")
        .args(["-9", &dumps[0].to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing was published"),
        "{}",
        show(&out)
    );
    assert_eq!(entries(), before, "no partial directory, no backup");

    let mut child = x.command(&args, &env).spawn().unwrap();
    let dumps = started(&child);
    child.kill().unwrap();
    child.wait().unwrap();
    // The orphaned pg_dump goes too (a Ctrl-C reaches the whole group).
    for pid in dumps {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let left: Vec<String> = entries()
        .into_iter()
        .filter(|e| !before.contains(e))
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with(".xtask-partial-"), "{left:?}");
    let out = x.run(&["db-backup", "-v", "--format", "directory"], &env);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("removed the leftover of an interrupted run")
    );
    let new: Vec<String> = entries()
        .into_iter()
        .filter(|e| !before.contains(e))
        .collect();
    assert_eq!(
        new.len(),
        3,
        "one directory backup and its sidecars: {new:?}"
    );
    assert!(new.iter().all(|e| e.contains(".dir")), "{new:?}");
}

fn mount_tmpfs(path: &Path, options: &str) {
    std::fs::create_dir_all(path).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs"])
        .arg(path)
        .status()
        .unwrap();
    assert!(ok.success(), "mounting a tmpfs ({options}) failed");
}

/// A directory nobody may write to, whoever runs the test: a read-only
/// mount for root (who ignores permissions), mode 0555 otherwise. Also the
/// guard that unmounts any tmpfs a test mounted.
struct ReadOnlyDir {
    path: std::path::PathBuf,
    mounted: bool,
}

impl ReadOnlyDir {
    fn new(path: &Path) -> ReadOnlyDir {
        std::fs::create_dir_all(path).unwrap();
        let root = is_root();
        if root {
            mount_tmpfs(path, "ro,size=1m");
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        ReadOnlyDir {
            path: path.to_path_buf(),
            mounted: root,
        }
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.path).status();
        }
    }
}

#[test]
fn read_only_backup_dir_is_one_clear_error() {
    let pg = PgServer::start(15);
    let x = crate::xtask();
    let ro = ReadOnlyDir::new(&x.backup_dir());
    let out = x.run(&["db-backup"], &pg.xtask_env(DB));
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "error: cannot write to the backup directory {}",
            ro.path.display()
        )),
        "{err}"
    );
    assert!(files_in(&ro.path).is_empty());
}

#[test]
fn a_full_disk_publishes_nothing() {
    // A 2 MiB file system cannot hold the compressed dump of this table.
    if !is_root() {
        panic!("this test mounts a small tmpfs and needs root: run the suite as root (as CI does)");
    }
    let pg = PgServer::start(15);
    seed_big(&pg);
    let x = crate::xtask();
    let dir = x.backup_dir();
    mount_tmpfs(&dir, "size=2m");
    let small = ReadOnlyDir {
        path: dir.clone(),
        mounted: true,
    }; // unmounts on drop
    let out = x.run(&["db-backup"], &pg.xtask_env(DB));
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: writing the backup into") && err.contains("No space left on device"),
        "{err}"
    );
    assert!(
        backup_files(&dir).is_empty() && partials(&dir).is_empty(),
        "{:?}",
        files_in(&dir)
    );
    drop(small);
}

#[test]
fn latin1_database_round_trips_byte_for_byte() {
    let pg = PgServer::start(15);
    pg.psql(
        DB,
        "CREATE DATABASE legacy ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    pg.psql("legacy", "CREATE TABLE words (w text); INSERT INTO words VALUES ('café'), ('naïve'), ('Ærø'), ('plain')");
    let x = crate::xtask();
    let out = x.run(&["db-backup", "--verify"], &pg.xtask_env("legacy"));
    assert!(out.status.success(), "{}", show(&out));
    let file = backup_files(&x.backup_dir())
        .into_iter()
        .find(|f| f.ends_with(".sql.gz"))
        .unwrap();
    let sql = Command::new("gunzip")
        .arg("-c")
        .arg(x.backup_dir().join(&file))
        .output()
        .unwrap()
        .stdout;
    assert!(
        sql.windows(4).any(|w| w == b"caf\xe9"),
        "the dump holds LATIN1 bytes, not UTF-8"
    );
    pg.psql(
        DB,
        "CREATE DATABASE legacy2 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    pg.psql_script("legacy2", &sql);
    let bytes =
        "SELECT string_agg(encode(convert_to(w, 'LATIN1'), 'hex'), ',' ORDER BY w) FROM words";
    assert_eq!(pg.psql("legacy2", bytes), pg.psql("legacy", bytes));
}

/// Overlapping runs of one database: each either completes or stops at the
/// lock (exit 4) having published nothing; back-to-back runs (often in the
/// same second) get distinct names.
#[test]
fn overlapping_and_back_to_back_backups_get_distinct_complete_sets() {
    let pg = PgServer::start(15);
    pg.psql(DB, "CREATE TABLE t AS SELECT 1 AS x");
    let x = crate::xtask();
    let env = pg.xtask_env(DB);
    let runs: Vec<_> = (0..4)
        .map(|_| {
            x.command(&["db-backup", "-q"], &env)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut done = 0;
    for r in runs {
        let out = r.wait_with_output().unwrap();
        match out.status.code() {
            Some(0) => done += 1,
            Some(4) => assert!(
                String::from_utf8_lossy(&out.stderr)
                    .contains("another backup of database 'app' is running"),
                "{}",
                show(&out)
            ),
            _ => panic!("{}", show(&out)),
        }
    }
    for _ in 0..3 {
        assert!(x.run(&["db-backup", "-q"], &env).status.success());
    }
    let dumps: Vec<_> = backup_files(&x.backup_dir())
        .into_iter()
        .filter(|f| f.ends_with(".sql.gz"))
        .collect();
    assert_eq!(dumps.len(), done + 3, "{dumps:?}");
    for d in &dumps {
        let check = Command::new("sha256sum")
            .args(["-c", &format!("{d}.sha256")])
            .current_dir(x.backup_dir())
            .output()
            .unwrap();
        assert!(check.status.success(), "{d}: {}", show(&check));
    }
}

#[test]
fn auto_type_schema_only_and_the_password_stays_out_of_argv() {
    let pg = PgServer::start(15);
    seed(&pg, DB);
    let x = crate::xtask();
    // A spy in front of the real client tools records their argv.
    let spy_dir = x.root.path().join("spy");
    std::fs::create_dir_all(&spy_dir).unwrap();
    let log = x.root.path().join("argv.log");
    for tool in ["pg_dump", "psql"] {
        let real = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
        let script = format!(
            "#!/bin/sh\necho \"{tool} $*\" >> '{}'\nexec '{real}' \"$@\"\n",
            log.display()
        );
        let path = spy_dir.join(tool);
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut env: BTreeMap<String, String> = pg.xtask_env(DB);
    env.insert(
        "PATH".into(),
        format!("{}:{}", spy_dir.display(), std::env::var("PATH").unwrap()),
    );

    let first = x.run(&["db-backup", "--type=auto", "--json"], &env);
    assert!(first.status.success(), "{}", show(&first));
    let second = x.run(
        &["db-backup", "--type=auto", "--schema-only", "--json"],
        &env,
    );
    assert!(second.status.success(), "{}", show(&second));
    let (first, second) = (json_of(&first), json_of(&second));
    assert_eq!(
        first["meta"]["type"], "monthly",
        "the first backup of a month"
    );
    assert_eq!(
        second["meta"]["type"], "daily",
        "the same week already has one"
    );
    assert_eq!(second["meta"]["schema_only"], true);
    assert_eq!(
        second["meta"]["tables"],
        serde_json::json!({}),
        "a schema-only dump has no data"
    );

    let argv = std::fs::read_to_string(&log).unwrap();
    assert!(
        argv.contains("pg_dump --no-password --format=plain"),
        "{argv}"
    );
    assert!(!argv.contains(PASSWORD), "a password in argv: {argv}");
}
