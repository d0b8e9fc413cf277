//! `db-clone`: a production-like source server and a developer's target
//! server (two containers), masking rules and environments in the
//! workspace's `xtask/` files, as a project would commit them.

use std::collections::BTreeMap;

use e2e::{DB, PASSWORD, PgServer, Xtask, json_of, show};

const SOURCE: &str = "
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL UNIQUE, phone text, notes text, plan text);
INSERT INTO customers SELECT i, 'Person ' || i, 'person' || i || '@corp.example', '555-' || lpad(i::text, 4, '0'), 'secret note ' || i, CASE WHEN i % 3 = 0 THEN 'gold' ELSE 'basic' END FROM generate_series(1, 500) i;
UPDATE customers SET phone = NULL WHERE id % 10 = 0;
CREATE TABLE orders (id int PRIMARY KEY, customer_email text NOT NULL REFERENCES customers (email), total numeric(10, 2));
INSERT INTO orders SELECT i, 'person' || (1 + i % 500) || '@corp.example', i * 1.25 FROM generate_series(1, 2000) i;
CREATE TABLE audit_log (id int, what text);
INSERT INTO audit_log SELECT i, 'login ' || i FROM generate_series(1, 100) i;
";

const MASKING: &str = r#"
[mask]
"customers.name" = "name"
"customers.email" = "email"
"customers.phone" = "phone"
"customers.notes" = "null"
"public.orders.customer_email" = "email"
"#;

/// The workspace: masking rules and the `prod` environment, committed files.
fn workspace(source: &PgServer) -> Xtask {
    workspace_with(source, MASKING)
}

/// The same workspace with other masking rules.
pub(crate) fn workspace_with(source: &PgServer, masking: &str) -> Xtask {
    let x = crate::xtask();
    let dir = x.root.path().join("xtask");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("masking.toml"), masking).unwrap();
    std::fs::write(
        dir.join("environments.toml"),
        format!(
            "[prod]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"app\"\nuser = \"app\"\npassword_env = \"PROD_DB_PASSWORD\"\n",
            source.port
        ),
    )
    .unwrap();
    x
}

/// The developer's environment: the target, the `prod` password, the salt.
pub(crate) fn env(target: &PgServer) -> BTreeMap<String, String> {
    let mut env = target.xtask_env(DB);
    env.insert("PROD_DB_PASSWORD".into(), PASSWORD.into());
    env.insert("BACKUP_VIA".into(), "host".into());
    // The key of the fakes comes from the environment, never from a committed file.
    env.insert("BACKUP_MASK_SALT".into(), "e2e-salt/with@odd?chars".into());
    env
}

const UNMASKED: &str =
    "SELECT md5(string_agg(id || ':' || coalesce(plan, '-'), ',' ORDER BY id)) FROM customers
  UNION ALL SELECT md5(string_agg(id || ':' || total, ',' ORDER BY id)) FROM orders";
const MASKED: &str =
    "SELECT md5(string_agg(name || email || coalesce(phone, '-'), ',' ORDER BY id)) FROM customers";

fn check_masked_clone(source: &PgServer, target: &PgServer) {
    // Every masked value differs from the source's, row by row.
    assert_eq!(
        target.psql(DB, "SELECT count(*) FROM customers WHERE email LIKE '%@corp.example' OR name LIKE 'Person %' OR notes IS NOT NULL OR phone LIKE '555-%'"),
        "0"
    );
    assert_eq!(
        target.psql(DB, "SELECT count(*) FROM customers WHERE email LIKE '%@example.invalid' AND phone LIKE '+1-555-%'"),
        "450",
        "NULL phones stay NULL"
    );
    // Unique constraint and foreign key on masked columns still hold, and joins match.
    assert_eq!(
        target.psql(DB, "SELECT count(DISTINCT email) FROM customers"),
        "500"
    );
    assert_eq!(
        target.psql(
            DB,
            "SELECT count(*) FROM orders o JOIN customers c ON c.email = o.customer_email"
        ),
        "2000"
    );
    assert_eq!(
        target.psql(DB, "SELECT count(*) FROM pg_constraint WHERE contype IN ('f', 'u') AND conrelid::regclass::text IN ('customers', 'orders')"),
        "2"
    );
    // Everything else is the source's.
    assert_eq!(target.psql(DB, UNMASKED), source.psql(DB, UNMASKED));
}

#[test]
fn clone_from_an_environment_masks_excludes_and_is_repeatable() {
    let source = PgServer::start(15);
    source.psql(DB, SOURCE);
    let target = PgServer::start(15);
    target.psql(DB, "CREATE TABLE old_work (x int)");
    let x = workspace(&source);
    let env = env(&target);

    let out = x.run(
        &[
            "db-clone",
            "--from",
            "prod",
            "--exclude-table-data",
            "audit_*",
            "--yes",
            "--json",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", show(&out));
    let summary = json_of(&out);
    assert_eq!(summary["status"], "ok");
    assert_eq!(
        summary["masked_columns"].as_array().unwrap().len(),
        5,
        "{summary}"
    );
    assert_eq!(
        summary["excluded_tables"],
        serde_json::json!(["public.audit_log"])
    );
    assert_eq!(summary["rows"], 2500);
    check_masked_clone(&source, &target);
    assert_eq!(
        target.psql(DB, "SELECT count(*) FROM audit_log"),
        "0",
        "exists, empty"
    );
    // The replaced database is kept, as in db-restore.
    assert!(
        target
            .psql(
                "postgres",
                "SELECT datname FROM pg_database WHERE datname LIKE 'app_pre_clone_%'"
            )
            .starts_with("app_pre_clone_")
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(PASSWORD), "{text}");

    // A second clone gives the same fakes.
    let first = target.psql(DB, MASKED);
    let out = x.run(&["db-clone", "--from", "prod", "--yes", "-q"], &env);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(target.psql(DB, MASKED), first);
    assert_eq!(target.psql(DB, "SELECT count(*) FROM audit_log"), "100");
}

#[test]
fn clone_from_the_latest_backup_goes_through_its_checks() {
    let source = PgServer::start(15);
    source.psql(DB, SOURCE);
    let target = PgServer::start(15);
    let x = workspace(&source);
    let out = x.run(&["db-backup", "-q"], &source.xtask_env(DB));
    assert!(out.status.success(), "{}", show(&out));

    let out = x.run(
        &["db-clone", "--from", "latest", "--to", "app_copy"],
        &env(&target),
    );
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("cloned app_daily_") && stdout.contains("5 masked columns"),
        "{stdout}"
    );
    assert_eq!(
        target.psql(
            "app_copy",
            "SELECT count(*) FROM customers WHERE email LIKE '%@example.invalid'"
        ),
        "500"
    );
    assert_eq!(target.psql("app_copy", UNMASKED), source.psql(DB, UNMASKED));
}

#[test]
fn unsafe_clones_are_refused_with_nothing_written() {
    let source = PgServer::start(15);
    source.psql(DB, SOURCE);
    let target = PgServer::start(15);
    target.psql(
        DB,
        "CREATE TABLE mine (x int); INSERT INTO mine VALUES (42)",
    );
    let x = workspace(&source);
    let databases = "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database";
    let before = (
        target.psql("postgres", databases),
        source.psql("postgres", databases),
    );
    let stderr =
        |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).trim().to_string();

    let mut remote = env(&target);
    remote.insert("POSTGRES_HOST".into(), "db.example.invalid".into());
    let out = x.run(&["db-clone", "--from", "prod", "--yes"], &remote);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).starts_with("error: the target db.example.invalid:")
            && stderr(&out).ends_with("pass --allow-remote-target if you mean it"),
        "{}",
        show(&out)
    );

    let same = format!("postgres://app:{PASSWORD}@localhost:{}/app", target.port);
    let out = x.run(&["db-clone", "--from", &same, "--yes"], &env(&target));
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("the source and the target are the same database"),
        "{}",
        show(&out)
    );
    assert!(!stderr(&out).contains(PASSWORD));

    let bad = x.root.path().join("bad-mask.toml");
    std::fs::write(
        &bad,
        "[mask]\n\"customers.nope\" = \"null\"\n\"invoices.total\" = \"keep\"\n",
    )
    .unwrap();
    let out = x.run(
        &[
            "db-clone",
            "--from",
            "prod",
            "--yes",
            "--mask",
            bad.to_str().unwrap(),
        ],
        &env(&target),
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains(
            "name column public.customers.nope, table public.invoices the source does not have"
        ) && stderr(&out).ends_with("nothing was written"),
        "{}",
        show(&out)
    );
    let out = x.run(&["db-clone", "--from", "staging", "--yes"], &env(&target));
    assert_eq!(
        stderr(&out),
        "error: no environment 'staging' in xtask/environments.toml (it has: prod)"
    );

    assert_eq!(
        (
            target.psql("postgres", databases),
            source.psql("postgres", databases)
        ),
        before
    );
    assert_eq!(target.psql(DB, "SELECT x FROM mine"), "42");
}

/// Issue 13: a clone goes through restore's checks: a dump newer than the
/// target server, or --schema-only from a backup, is refused before anything
/// is created.
#[test]
fn clone_refuses_what_restore_refuses_before_anything_exists() {
    let newer = PgServer::start(17);
    newer.psql(DB, "CREATE TABLE t AS SELECT 1 AS x");
    let target = PgServer::start(15);
    let x = crate::xtask();
    let dump = newer.exec(&["pg_dump", "-U", e2e::USER, "--format=plain", DB]);
    let path = x.root.path().join("from-17.sql.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    std::io::Write::write_all(&mut gz, &dump).unwrap();
    gz.finish().unwrap();
    let env = env(&target);
    let before = target.psql(
        DB,
        "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database",
    );
    for (args, says) in [
        (
            vec![
                "db-clone",
                "--from",
                path.to_str().unwrap(),
                "--yes",
                "--no-mask",
            ],
            "cannot load into PostgreSQL 15",
        ),
        (
            vec![
                "db-clone",
                "--from",
                path.to_str().unwrap(),
                "--yes",
                "--no-mask",
                "--schema-only",
            ],
            "--schema-only applies to a live source",
        ),
    ] {
        let out = x.run(&args, &env);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{}",
            show(&out)
        );
        assert_eq!(
            target.psql(
                DB,
                "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database"
            ),
            before
        );
    }
}
