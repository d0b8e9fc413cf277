//! What a hostile user and bad luck found (issue 14), each against real
//! servers: nothing unmasked leaks, nothing is lost, no command hidden in a
//! dump runs, and only evidence about a file marks it failed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e::{DB, PgServer, Xtask, json_of, show};
use serde_json::Value;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn databases(pg: &PgServer) -> String {
    pg.psql(
        DB,
        "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database",
    )
}

fn backup(x: &Xtask, env: &BTreeMap<String, String>) -> String {
    let out = x.run(&["db-backup", "--json", "--no-prune"], env);
    assert!(out.status.success(), "{}", show(&out));
    json_of(&out)["meta"]["file"].as_str().unwrap().to_string()
}

fn with(mut env: BTreeMap<String, String>, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

/// Rewrites a backup's SQL and makes its sidecars agree again, as someone
/// with write access to the store could.
fn tamper(dir: &Path, file: &str, change: impl Fn(String) -> String) {
    use sha2::Digest;
    let path = dir.join(file);
    let mut sql = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(&path).unwrap()),
        &mut sql,
    )
    .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, change(sql).as_bytes()).unwrap();
    let bytes = gz.finish().unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let sha = format!("{:x}", sha2::Sha256::digest(&bytes));
    std::fs::write(
        dir.join(format!("{file}.sha256")),
        format!("{sha}  {file}\n"),
    )
    .unwrap();
    let meta_path = dir.join(format!("{file}.meta"));
    let mut meta: Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["sha256"] = sha.into();
    meta["size_bytes"] = bytes.len().into();
    std::fs::write(&meta_path, serde_json::to_string(&meta).unwrap()).unwrap();
}

/// Item 1: No masking rules, from anything but a database on this machine: refused.
#[test]
fn clone_without_masking_rules_is_refused_unless_no_mask() {
    let source = PgServer::start(15);
    source.psql(DB, "CREATE TABLE customers (id int PRIMARY KEY, email text); INSERT INTO customers VALUES (1, 'real@corp.example')");
    let target = PgServer::start(15);
    let x = crate::xtask();
    backup(&x, &source.xtask_env(DB));
    let env = with(target.xtask_env(DB), &[("BACKUP_VIA", "host")]);
    let before = databases(&target);

    let out = x.run(&["db-clone", "--from", "latest", "--yes"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("needs masking rules, and there is no xtask/masking.toml")
            && stderr(&out).contains("--no-mask"),
        "{}",
        show(&out)
    );
    assert_eq!(databases(&target), before, "nothing was written");

    // A named environment is never "this machine", wherever it points.
    let dir = x.root.path().join("xtask");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("environments.toml"),
        format!("[prod]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"app\"\nuser = \"app\"\npassword_env = \"PROD_PW\"\n", source.port),
    )
    .unwrap();
    let prod = with(env.clone(), &[("PROD_PW", e2e::PASSWORD)]);
    let out = x.run(&["db-clone", "--from", "prod", "--yes"], &prod);
    assert!(
        stderr(&out).contains("needs masking rules"),
        "{}",
        show(&out)
    );

    // A rules file that does not parse is an error, never "no rules".
    std::fs::write(
        dir.join("masking.toml"),
        "[mask\n\"customers.email\" = \"email\"\n",
    )
    .unwrap();
    let out = x.run(&["db-clone", "--from", "latest", "--yes"], &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("masking.toml"), "{}", show(&out));
    assert_eq!(databases(&target), before);

    // An explicit --no-mask copies every column as it is.
    let out = x.run(
        &["db-clone", "--from", "latest", "--yes", "--no-mask"],
        &env,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        target.psql(DB, "SELECT email FROM customers"),
        "real@corp.example"
    );
}

const PARTITIONED: &str = "
CREATE TABLE customers (id int, email text NOT NULL, region text NOT NULL, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE customers_eu PARTITION OF customers FOR VALUES IN ('eu');
CREATE TABLE customers_us PARTITION OF customers FOR VALUES IN ('us') PARTITION BY RANGE (id);
CREATE TABLE customers_us_low PARTITION OF customers_us FOR VALUES FROM (0) TO (1000);
CREATE TABLE customers_us_high PARTITION OF customers_us FOR VALUES FROM (1000) TO (MAXVALUE);
INSERT INTO customers SELECT i, 'person' || i || '@corp.example', CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END FROM generate_series(1, 1500) i;
CREATE TABLE people (id int PRIMARY KEY, name text);
CREATE TABLE staff (badge int) INHERITS (people);
INSERT INTO people VALUES (1, 'Ann Lee');
INSERT INTO staff VALUES (2, 'Bob Stone', 7);
CREATE TABLE audit (id int, what text) PARTITION BY RANGE (id);
CREATE TABLE audit_1 PARTITION OF audit FOR VALUES FROM (0) TO (100);
INSERT INTO audit SELECT i, 'login ' || i FROM generate_series(1, 50) i;
";

/// Item 2 and 3: A rule on a parent reaches every partition and inheritance
/// child, from a live source and from a backup; excluding a parent's data
/// excludes its partitions'; the key comes from a file outside the repository.
#[test]
fn masking_reaches_partitions_and_children_live_and_from_a_backup() {
    let source = PgServer::start(15);
    source.psql(DB, PARTITIONED);
    let target = PgServer::start(15);
    let x = crate::xtask();
    backup(&x, &source.xtask_env(DB));
    let dir = x.root.path().join("xtask");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("masking.toml"),
        "[mask]\n\"customers.email\" = \"email\"\n\"people.name\" = \"name\"\n",
    )
    .unwrap();
    let salt_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(salt_file.path(), "a-key/with@odd?chars\n").unwrap();
    let env = with(
        target.xtask_env(DB),
        &[
            ("BACKUP_VIA", "host"),
            ("BACKUP_MASK_SALT_FILE", salt_file.path().to_str().unwrap()),
        ],
    );
    let live = format!(
        "postgres://app:{}@127.0.0.1:{}/app",
        e2e::PASSWORD,
        source.port
    );
    for from in [live.as_str(), "latest"] {
        let out = x.run(
            &[
                "db-clone",
                "--from",
                from,
                "--yes",
                "--exclude-table-data",
                "audit",
                "--json",
            ],
            &env,
        );
        assert!(out.status.success(), "{from}: {}", show(&out));
        assert_eq!(
            target.psql(
                DB,
                "SELECT count(*) FROM customers WHERE email LIKE '%@corp.example'"
            ),
            "0",
            "{from}: a real email arrived through a partition"
        );
        assert_eq!(
            target.psql(
                DB,
                "SELECT count(*) FROM customers WHERE email LIKE '%@example.invalid'"
            ),
            "1500",
            "{from}"
        );
        assert_eq!(
            target.psql(
                DB,
                "SELECT count(*) FROM people WHERE name IN ('Ann Lee', 'Bob Stone')"
            ),
            "0",
            "{from}: the inheritance child kept its real name"
        );
        assert_eq!(target.psql(DB, "SELECT count(*) FROM audit"), "0", "{from}");
        assert_eq!(
            target.psql(DB, "SELECT count(DISTINCT email) FROM customers"),
            "1500"
        );
    }
}

/// Item 4: Copies of production data do not pile up on a laptop.
#[test]
fn each_clone_keeps_only_the_newest_copy_of_the_replaced_database() {
    let source = PgServer::start(15);
    source.psql(DB, "CREATE TABLE t AS SELECT 1 AS x");
    let target = PgServer::start(15);
    let x = crate::xtask();
    backup(&x, &source.xtask_env(DB));
    let env = with(target.xtask_env(DB), &[("BACKUP_VIA", "host")]);
    let copies = || {
        target.psql(
            DB,
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'app\\_pre\\_clone\\_%'",
        )
    };
    target.psql(DB, "CREATE DATABASE app_pre_clone_notes");
    for round in 1..=3 {
        let out = x.run(
            &["db-clone", "--from", "latest", "--yes", "--no-mask"],
            &env,
        );
        assert!(out.status.success(), "{}", show(&out));
        if round > 1 {
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("older copies dropped"),
                "{}",
                show(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert_eq!(
        copies(),
        "2",
        "the newest copy, and a database the tool did not name"
    );
}

const PROPS: &str = "SELECT pg_get_userbyid(datdba) || '|' || datconnlimit || '|' || coalesce(datacl::text, '-') || '|' ||
    coalesce(shobj_description(oid, 'pg_database'), '-') || '|' ||
    coalesce((SELECT string_agg(coalesce(r.rolname, '*') || '=' || array_to_string(s.setconfig, ';'), ',' ORDER BY r.rolname NULLS FIRST)
              FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE s.setdatabase = d.oid), '-')
    FROM pg_database d WHERE datname = 'shop'";

/// Item 5 and 6: A database's owner, privileges, limit, comment and settings
/// come back with a restore and a clone; a swap that cannot give them back
/// changes nothing, and the target takes connections again.
#[test]
fn database_properties_survive_restore_and_clone_or_nothing_changes() {
    let pg = PgServer::start(15);
    pg.psql(
        DB,
        "CREATE ROLE shop_owner; CREATE ROLE reader LOGIN PASSWORD 'r'",
    );
    pg.psql(
        DB,
        "CREATE DATABASE shop OWNER shop_owner CONNECTION LIMIT 5",
    );
    for sql in [
        "REVOKE CONNECT, TEMPORARY ON DATABASE shop FROM PUBLIC",
        "GRANT CONNECT ON DATABASE shop TO reader",
        "COMMENT ON DATABASE shop IS 'it''s the shop'",
        "ALTER DATABASE shop SET work_mem = '64MB'",
        "ALTER DATABASE shop SET search_path = \"$user\", public, \"Odd Schema\"",
        "ALTER ROLE reader IN DATABASE shop SET statement_timeout = '5s'",
    ] {
        pg.psql(DB, sql);
    }
    pg.psql("shop", "CREATE TABLE t AS SELECT 1 AS x");
    let original = pg.psql(DB, PROPS);
    let x = crate::xtask();
    let env = pg.xtask_env("shop");
    backup(&x, &env);
    // Someone opens it up and changes it.
    pg.psql(DB, "ALTER DATABASE shop OWNER TO app; GRANT ALL ON DATABASE shop TO PUBLIC; COMMENT ON DATABASE shop IS NULL; ALTER DATABASE shop RESET ALL");
    assert_ne!(pg.psql(DB, PROPS), original);

    let out = x.run(&["db-restore", "--latest", "--yes"], &env);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        pg.psql(DB, PROPS),
        original,
        "the restored database is the one backed up"
    );

    // Into a database of another name, and through a clone from the backup.
    let out = x.run(
        &[
            "db-clone",
            "--from",
            "latest",
            "--to",
            "shop_copy",
            "--no-mask",
        ],
        &with(env.clone(), &[("BACKUP_VIA", "host")]),
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        pg.psql(DB, &PROPS.replace("'shop'", "'shop_copy'")),
        original,
        "a clone from a backup carries them too"
    );

    // The role they name is gone: refused before anything, naming it.
    pg.psql(DB, "DROP OWNED BY reader; DROP ROLE reader");
    pg.psql("shop", "INSERT INTO t VALUES (2)");
    let before = (databases(&pg), pg.psql(DB, PROPS));
    let out = x.run(&["db-restore", "--latest", "--yes"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("does not have: reader; create them from the globals backup first"),
        "{}",
        show(&out)
    );
    assert_eq!((databases(&pg), pg.psql(DB, PROPS)), before);
    assert_eq!(
        pg.psql("shop", "SELECT count(*) FROM t"),
        "2",
        "shop takes connections"
    );
}

/// Item 6: The server's own databases are never swapped out.
#[test]
fn the_servers_own_databases_are_never_targets() {
    let pg = PgServer::start(15);
    let x = crate::xtask();
    backup(&x, &pg.xtask_env(DB));
    for target in ["postgres", "template1", "template0"] {
        let before = databases(&pg);
        let out = x.run(
            &["db-restore", "--latest", "--yes", "--target-db", target],
            &pg.xtask_env(DB),
        );
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "one line: {}", show(&out));
        assert!(stderr(&out).contains("never replaces it"), "{}", show(&out));
        assert_eq!(databases(&pg), before);
    }
    let out = x.run(
        &["db-restore", "--latest", "--yes"],
        &pg.xtask_env("postgres"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("'postgres' is a database the server itself needs"));
    assert_eq!(
        pg.psql(
            DB,
            "SELECT datallowconn FROM pg_database WHERE datname = 'postgres'"
        ),
        "t"
    );
}

fn seed_big(pg: &PgServer) {
    pg.psql(DB, "CREATE TABLE t (id int PRIMARY KEY, s text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20) g");
    pg.psql(DB, "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 3)::text) AS p FROM generate_series(1, 1500000) g");
}

/// Starts `args`, waits until `started` (a count) is not 0 on the server,
/// lets it run `settle` more, then sends `signal` to the xtask alone (not
/// its process group, as `kill PID` or a supervisor does); returns the
/// run's output.
fn signal_when(
    x: &Xtask,
    pg: &PgServer,
    args: &[&str],
    env: &BTreeMap<String, String>,
    started: &str,
    settle: Duration,
    signal: &str,
) -> Output {
    let child = x.spawn(args, env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while pg.psql(DB, started) == "0" {
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", &child.id().to_string()])
                .status();
            panic!(
                "{started} stayed 0: {}",
                show(&child.wait_with_output().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(settle);
    Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    child.wait_with_output().unwrap()
}

/// [`signal_when`] a database named like `pattern` is being loaded.
fn signal_during_load(
    x: &Xtask,
    pg: &PgServer,
    args: &[&str],
    env: &BTreeMap<String, String>,
    pattern: &str,
    signal: &str,
) -> Output {
    let started = format!("SELECT count(*) FROM pg_stat_activity WHERE datname LIKE '{pattern}'");
    signal_when(
        x,
        pg,
        args,
        env,
        &started,
        Duration::from_millis(300),
        signal,
    )
}

/// Item 7: SIGINT and SIGTERM during restore, clone and restore test: the scratch
/// database goes, the exit says which signal; a SIGKILL's leftover is shown
/// by db-status and dropped by the next run.
#[test]
fn signals_drop_the_scratch_database_and_a_killed_runs_leftover_goes_next_time() {
    let pg = PgServer::start(15);
    seed_big(&pg);
    let x = crate::xtask();
    let env = pg.xtask_env(DB);
    backup(&x, &env);
    pg.psql(DB, "DROP TABLE big; DELETE FROM t WHERE id > 5");
    let before = (databases(&pg), pg.table_rows(DB, "t"));

    let out = signal_during_load(
        &x,
        &pg,
        &["db-restore", "--latest", "--yes"],
        &env,
        "app_restore_%",
        "-TERM",
    );
    assert_eq!(out.status.code(), Some(143), "{}", show(&out));
    assert!(stderr(&out).contains("terminated"), "{}", show(&out));
    assert_eq!((databases(&pg), pg.table_rows(DB, "t")), before);

    let out = signal_during_load(
        &x,
        &pg,
        &["db-verify", "--latest", "--restore-test"],
        &env,
        "app_verify_%",
        "-TERM",
    );
    assert_eq!(out.status.code(), Some(143), "{}", show(&out));
    assert_eq!(databases(&pg), before.0);

    let clone_env = with(env.clone(), &[("BACKUP_VIA", "host")]);
    let out = signal_during_load(
        &x,
        &pg,
        &[
            "db-clone",
            "--from",
            "latest",
            "--to",
            "scratchpad",
            "--no-mask",
        ],
        &clone_env,
        "scratchpad_clone_%",
        "-INT",
    );
    assert_eq!(out.status.code(), Some(130), "{}", show(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", show(&out));
    assert_eq!(databases(&pg), before.0);

    // Killed hard: the scratch database stays, marked; db-status shows it; the next run drops it.
    let out = signal_during_load(
        &x,
        &pg,
        &["db-restore", "--latest", "--yes"],
        &env,
        "app_restore_%",
        "-KILL",
    );
    assert_eq!(out.status.code(), None);
    let left: Vec<String> = databases(&pg)
        .split(',')
        .filter(|d| d.starts_with("app_restore_"))
        .map(String::from)
        .collect();
    assert_eq!(left.len(), 1, "{}", databases(&pg));
    let status = x.run(&["db-status", "--json"], &env);
    assert_eq!(
        json_of(&status)["leftover_scratch_databases"][0],
        left[0].as_str()
    );
    let out = x.run(&["db-restore", "--latest", "--yes", "--dry-run"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let out = x.run(&["db-restore", "--latest", "--yes"], &env);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stderr(&out).contains(&format!("dropped {}", left[0])),
        "{}",
        show(&out)
    );
    assert!(!databases(&pg).contains("app_restore_"));
}

/// SIGTERM to the xtask alone while `pg_restore --jobs 2` loads a custom
/// archive: pg_restore is stopped (SIGTERM, on which its leader cancels its
/// workers), the exit says which signal, the scratch database goes and no
/// session of pg_restore is left on the server.
#[test]
fn a_signal_during_a_parallel_restore_stops_pg_restore() {
    let pg = PgServer::start(15);
    seed_big(&pg);
    let x = crate::xtask();
    let env = with(pg.xtask_env(DB), &[("BACKUP_FORMAT", "custom")]);
    let file = backup(&x, &env);
    assert!(file.ends_with(".dump"), "{file}");
    pg.psql(DB, "DROP TABLE big");
    let before = databases(&pg);
    let out = signal_during_load(
        &x,
        &pg,
        &["db-restore", "--latest", "--yes", "--jobs", "2"],
        &env,
        "app_restore_%",
        "-TERM",
    );
    assert_eq!(out.status.code(), Some(143), "{}", show(&out));
    assert!(stderr(&out).contains("terminated"), "{}", show(&out));
    assert_eq!(databases(&pg), before);
    assert_eq!(
        pg.psql(
            DB,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_restore'"
        ),
        "0"
    );
}

/// [`signal_when`] pg_dump is copying the rows of `big`.
fn signal_during_dump(
    x: &Xtask,
    pg: &PgServer,
    args: &[&str],
    env: &BTreeMap<String, String>,
    signal: &str,
) -> Output {
    let started = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cargo-xtask' AND query LIKE 'COPY %big%'";
    signal_when(x, pg, args, env, started, Duration::ZERO, signal)
}

/// SIGTERM or Ctrl-C during a logical backup, sent to the xtask alone:
/// pg_dump is stopped (no session left on the server), nothing is published
/// or left in the backup directory, the failure hook is told, the exit says
/// which signal; the next backup runs as usual.
#[test]
fn signals_during_a_backup_stop_pg_dump_and_publish_nothing() {
    let pg = PgServer::start(15);
    seed_big(&pg);
    let x = crate::xtask();
    let told = x.root.path().join("hook.json");
    let env = with(
        pg.xtask_env(DB),
        &[(
            "BACKUP_HOOK_FAILURE",
            &format!("cat > '{}'", told.display()),
        )],
    );
    // Gone within two seconds of the run's end: stopped, not left to finish.
    let pg_dump_sessions = || {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let n = pg.psql(
                DB,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cargo-xtask' AND pid <> pg_backend_pid()",
            );
            if n == "0" || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    for (args, signal, code, word) in [
        (&["db-backup"][..], "-TERM", 143, "terminated"),
        (
            &["db-backup", "--format", "directory", "--jobs", "2"][..],
            "-INT",
            130,
            "interrupted",
        ),
        (
            &["db-backup", "--format", "custom"][..],
            "-TERM",
            143,
            "terminated",
        ),
    ] {
        let out = signal_during_dump(&x, &pg, args, &env, signal);
        let what = format!("{args:?} {signal}: {}", show(&out));
        assert_eq!(out.status.code(), Some(code), "{what}");
        assert!(
            stderr(&out).contains(&format!("{word}: nothing was published")),
            "{what}"
        );
        assert_eq!(pg_dump_sessions(), "0", "{what}");
        let left: Vec<String> = std::fs::read_dir(x.backup_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            left.iter()
                .all(|n| !n.starts_with(".xtask-partial-") && !n.starts_with("app_")),
            "{what}: {left:?}"
        );
        let hook = std::fs::read_to_string(&told).unwrap();
        assert!(
            hook.contains("\"failure\"") && hook.contains(word),
            "{hook}"
        );
        std::fs::remove_file(&told).unwrap();
    }
    let list = x.run(&["db-list", "--json"], &env);
    assert_eq!(
        json_of(&list)["backups"],
        serde_json::json!([]),
        "{}",
        show(&list)
    );

    // --all: the set being dumped publishes nothing, none after it starts.
    pg.psql(DB, "CREATE DATABASE zz_after");
    let out = signal_during_dump(&x, &pg, &["db-backup", "--all"], &env, "-TERM");
    assert_eq!(out.status.code(), Some(143), "{}", show(&out));
    assert!(
        stderr(&out).contains(
            "terminated: published: (globals); not published: app; not started: postgres, zz_after"
        ),
        "{}",
        show(&out)
    );
    assert_eq!(pg_dump_sessions(), "0");
    backup(&x, &env);
}

/// Item 8: A preview needs no consent.
#[test]
fn a_dry_run_needs_no_consent() {
    let pg = PgServer::start(15);
    pg.psql(DB, "CREATE TABLE t AS SELECT 1 AS x");
    let x = crate::xtask();
    let file = backup(&x, &pg.xtask_env(DB));
    let out = x.run(&["db-restore", &file, "--dry-run"], &pg.xtask_env(DB));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("replaces  the existing app"));
    assert!(
        stderr(&out).contains("the real run needs consent"),
        "{}",
        show(&out)
    );
}

/// Item 9: psql commands in a dump whose sidecars were made to agree never run,
/// and nothing of the dump is loaded.
#[test]
fn psql_commands_in_a_tampered_dump_never_run() {
    let pg = PgServer::start(15);
    pg.psql(DB, "CREATE TABLE t AS SELECT 1 AS x");
    let x = crate::xtask();
    let file = backup(&x, &pg.xtask_env(DB));
    let dir = x.backup_dir();
    let pristine = std::fs::read(dir.join(&file)).unwrap();
    let marker = x.root.path().join("pwned");
    let m = marker.display().to_string();
    for injected in [
        format!("\\! touch {m}"),
        format!("SELECT 1; \\! touch {m}"),
        format!("SELECT 'a''' \\! touch {m}"),
        "\\connect postgres".to_string(),
        "COPY t FROM stdin; \n1\n\\.".to_string(),
    ] {
        std::fs::write(dir.join(&file), &pristine).unwrap();
        tamper(&dir, &file, |sql| {
            sql.replacen(
                "SET statement_timeout = 0;",
                &format!("SET statement_timeout = 0;\n{injected}"),
                1,
            )
        });
        let before = databases(&pg);
        for args in [
            vec!["db-restore", file.as_str(), "--yes"],
            vec!["db-verify", file.as_str(), "--restore-test"],
        ] {
            let out = x.run(&args, &pg.xtask_env(DB));
            assert!(!out.status.success(), "{injected}: {}", show(&out));
            assert!(
                stderr(&out).contains("pg_dump never writes"),
                "{injected}: {}",
                show(&out)
            );
            assert!(!marker.exists(), "{injected} ran");
            assert_eq!(databases(&pg), before, "{injected}");
        }
    }
}

/// Item 10: A comment holding the trailer's text does not make backups fail.
#[test]
fn a_trailer_inside_a_comment_does_not_break_backups() {
    let pg = PgServer::start(15);
    pg.psql(DB, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    pg.psql(
        DB,
        "COMMENT ON TABLE t IS E'x\\n-- PostgreSQL database dump complete\\ny'",
    );
    let x = crate::xtask();
    let file = backup(&x, &pg.xtask_env(DB));
    let out = x.run(
        &["db-restore", &file, "--target-db", "copy"],
        &pg.xtask_env(DB),
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        pg.psql("copy", "SELECT obj_description('t'::regclass)"),
        "x\n-- PostgreSQL database dump complete\ny"
    );
}

/// Item 11: A server that is down proves nothing about a backup: not FAILED,
/// exit 7; --latest says what it skips.
#[test]
fn an_unreachable_server_is_not_a_failed_backup() {
    let pg = PgServer::start(15);
    pg.psql(DB, "CREATE TABLE t AS SELECT 1 AS x");
    let x = crate::xtask();
    let env = pg.xtask_env(DB);
    let older = backup(&x, &env);
    std::thread::sleep(Duration::from_millis(1100));
    let newest = backup(&x, &env);
    let meta = |f: &str| std::fs::read_to_string(x.backup_dir().join(format!("{f}.meta"))).unwrap();
    let before = meta(&newest);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = with(env.clone(), &[("POSTGRES_PORT", &closed.to_string())]);
    let out = x.run(&["db-verify", "--latest", "--restore-test"], &down);
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));
    assert!(
        stderr(&out).contains("NOT VERIFIED") && stderr(&out).contains("cannot reach PostgreSQL"),
        "{}",
        show(&out)
    );
    assert_eq!(meta(&newest), before, ".meta was left as it was");
    let out = x.run(&["db-restore", "--latest", "--yes", "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    assert!(json_of(&out)["source"].as_str().unwrap().ends_with(&newest));

    // A newest set whose sidecars disagree is passed over, and said so.
    std::fs::write(
        x.backup_dir().join(format!("{newest}.sha256")),
        format!("{}  {newest}\n", "0".repeat(64)),
    )
    .unwrap();
    let out = x.run(&["db-restore", "--latest", "--dry-run"], &env);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stderr(&out).contains(&format!("skipping {newest}")),
        "{}",
        show(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&older));
}

/// Item 13: The metrics textfile is readable by another user's exporter.
#[test]
fn metrics_are_readable_by_the_exporter() {
    use std::os::unix::fs::PermissionsExt;
    let pg = PgServer::start(15);
    pg.psql(DB, "CREATE TABLE t AS SELECT 1 AS x");
    let x = crate::xtask();
    let textfiles = x.root.path().join("textfiles");
    let env = with(
        pg.xtask_env(DB),
        &[("BACKUP_METRICS_DIR", textfiles.to_str().unwrap())],
    );
    backup(&x, &env);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&textfiles), 0o755);
    assert_eq!(mode(&textfiles.join("backup.prom")), 0o644);
    assert_eq!(mode(&x.backup_dir()), 0o700, "the backups stay private");
    assert!(
        std::fs::read_to_string(textfiles.join("backup.prom"))
            .unwrap()
            .contains("backup_last_status{database=\"app\"")
    );
}

/// Item 17: A password with `/`, `@`, `?` in a URL, raw or encoded, works and
/// never reaches output.
#[test]
fn passwords_with_url_characters_work_and_never_leak() {
    let pg = PgServer::start(15);
    let password = "aB3/xY+z@q?#1";
    pg.psql(DB, "CREATE TABLE t AS SELECT 1 AS x");
    pg.psql(DB, &format!("ALTER ROLE app PASSWORD '{password}'"));
    let x = crate::xtask();
    let url = |p: &str| format!("postgres://app:{p}@127.0.0.1:{}/app", pg.port);
    let encoded = "aB3%2FxY%2Bz%40q%3F%231";
    for p in [password, encoded] {
        let env: BTreeMap<String, String> = [("DATABASE_URL".to_string(), url(p))].into();
        let out = x.run(&["db-backup", "--no-prune"], &env);
        assert!(out.status.success(), "{}", show(&out));
        assert!(
            !show(&out).contains("aB3") && !show(&out).contains("xY"),
            "{}",
            show(&out)
        );
    }
    for bad in [
        "postgres://app:aB3/xY+z".to_string(),
        format!("postgres://app:{password}@127.0.0.1:99999/app"),
    ] {
        let env: BTreeMap<String, String> = [("DATABASE_URL".to_string(), bad)].into();
        let out = x.run(&["db-backup", "--no-prune"], &env);
        assert!(!out.status.success());
        assert!(
            !show(&out).contains("aB3") && !show(&out).contains("xY"),
            "{}",
            show(&out)
        );
    }
    let out = x.run(
        &[
            "db-clone",
            "--from",
            "Postgres://u:hunter2@h/db",
            "--no-mask",
        ],
        &pg.xtask_env(DB),
    );
    assert!(!show(&out).contains("hunter2"), "{}", show(&out));
    for f in e2e::files_in(&x.backup_dir())
        .iter()
        .chain(e2e::files_in(&x.backup_dir().join("metrics")).iter())
    {
        assert!(!f.contains("aB3"));
    }
    let metrics = std::fs::read_to_string(x.backup_dir().join("metrics/backup.prom")).unwrap();
    assert!(!metrics.contains("aB3") && !metrics.contains("xY"));
}

/// A backup whose `.sha256` is gone is still held to the checksum its
/// `.meta` records: a changed byte of the same size is refused, not loaded.
#[test]
fn without_its_sha256_a_backup_is_held_to_the_checksum_in_its_meta() {
    let pg = PgServer::start(15);
    pg.psql(
        DB,
        "CREATE TABLE t (v text); INSERT INTO t VALUES ('pristine')",
    );
    let x = crate::xtask();
    let env = with(pg.xtask_env(DB), &[("BACKUP_COMPRESSION", "none")]);
    let file = backup(&x, &env);
    assert!(file.ends_with(".sql"), "{file}");
    let dir = x.backup_dir();
    std::fs::remove_file(dir.join(format!("{file}.sha256"))).unwrap();
    let sql = std::fs::read_to_string(dir.join(&file)).unwrap();
    std::fs::write(dir.join(&file), sql.replacen("pristine", "tampered", 1)).unwrap();
    let before = databases(&pg);
    for args in [
        vec!["db-restore", file.as_str(), "--target-db", "copy"],
        vec!["db-verify", file.as_str()],
    ] {
        let out = x.run(&args, &env);
        assert!(!out.status.success(), "{args:?}: {}", show(&out));
        let err = stderr(&out);
        assert!(
            err.contains("checksum mismatch"),
            "{args:?}: {}",
            show(&out)
        );
        assert!(
            err.contains("checked against the one its .meta records"),
            "{args:?}: {}",
            show(&out)
        );
    }
    assert_eq!(databases(&pg), before, "nothing was loaded");
}
