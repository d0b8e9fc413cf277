//! Disaster recovery onto a new server (issue 15): every database and the
//! roles from backups alone, across PostgreSQL majors; restores that need no
//! roles; and a server's existing roles left exactly as they were.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use e2e::{DB, PgServer, Xtask, files_in, json_of, show};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn with(mut env: BTreeMap<String, String>, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

/// Connects as `user` with `password` over TCP (the images ask for a
/// password there) and says who the server thinks we are.
fn login(pg: &PgServer, user: &str, password: &str, db: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-X", "-A", "-t", "-c", "SELECT current_user"])
        .envs(pg.libpq_env(db))
        .env("PGUSER", user)
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(stderr(&out))
    }
}

/// The roles as the databases see them: attributes, settings, memberships.
fn roles(pg: &PgServer) -> String {
    pg.psql(
        DB,
        "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolconnlimit, rolconfig
           FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1;
         SELECT r.rolname, m.rolname, a.admin_option FROM pg_auth_members a
           JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
          WHERE r.rolname !~ '^pg_' ORDER BY 1, 2",
    )
}

/// Privileges as `grantee:privilege` (MAINTAIN, new in 17, left out: it is
/// the owner's by default there and did not exist in 15).
fn acl(column: &str) -> String {
    format!(
        "coalesce((SELECT string_agg(g, ',' ORDER BY g) FROM (
            SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END
                   || ':' || a.privilege_type || CASE WHEN a.is_grantable THEN '*' ELSE '' END AS g
              FROM aclexplode({column}) a WHERE a.privilege_type <> 'MAINTAIN') x), 'default')"
    )
}

/// The databases themselves: owner, privileges, limit, comment, settings.
fn databases(pg: &PgServer) -> String {
    pg.psql(
        DB,
        &format!(
            "SELECT d.datname, pg_get_userbyid(d.datdba), {}, d.datconnlimit, shobj_description(d.oid, 'pg_database')
               FROM pg_database d WHERE NOT d.datistemplate AND d.datname NOT LIKE '%\\_pre\\_restore\\_%' ORDER BY 1;
             SELECT d.datname, coalesce(r.rolname, '*'), s.setconfig FROM pg_db_role_setting s
               JOIN pg_database d ON d.oid = s.setdatabase LEFT JOIN pg_roles r ON r.oid = s.setrole ORDER BY 1, 2",
            acl("d.datacl")
        ),
    )
}

/// One database's objects with their owners and privileges, and its rows.
fn content(pg: &PgServer, db: &str, tables: &[&str]) -> String {
    let mut text = pg.psql(
        db,
        &format!(
            "SELECT n.nspname, pg_get_userbyid(n.nspowner), {} FROM pg_namespace n
              WHERE n.nspname !~ '^(pg_|information_schema)' ORDER BY 1;
             SELECT n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner), {}
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname !~ '^(pg_|information_schema)' ORDER BY 1, 2;
             SELECT pg_get_userbyid(d.defaclrole), d.defaclobjtype, {} FROM pg_default_acl d ORDER BY 1, 2",
            acl("n.nspacl"),
            acl("c.relacl"),
            acl("d.defaclacl")
        ),
    );
    for table in tables {
        text.push('\n');
        text.push_str(&pg.table_rows(db, table));
    }
    text
}

const UNICODE_DB: &str = "Ünïcode db";
const PASSWORD: &str = "p/w@x?y#1";

/// Two databases owned by and granted to roles that are not superusers, one
/// of which logs in with a password; database settings, comments, grants.
fn populate(pg: &PgServer) {
    pg.psql(
        DB,
        &format!(
            "CREATE ROLE app_owner NOLOGIN;
             CREATE ROLE readers NOLOGIN;
             CREATE ROLE \"Lecteur é\" LOGIN PASSWORD '{PASSWORD}' CONNECTION LIMIT 7;
             GRANT readers TO \"Lecteur é\";
             ALTER ROLE \"Lecteur é\" SET statement_timeout = '5s'"
        ),
    );
    pg.psql(
        DB,
        "CREATE DATABASE shop OWNER app_owner CONNECTION LIMIT 50",
    );
    pg.psql(
        DB,
        &format!("CREATE DATABASE \"{UNICODE_DB}\" OWNER app_owner"),
    );
    pg.psql(
        DB,
        "REVOKE CONNECT, TEMPORARY ON DATABASE shop FROM PUBLIC;
         GRANT CONNECT ON DATABASE shop TO readers;
         COMMENT ON DATABASE shop IS 'the shop';
         ALTER DATABASE shop SET default_text_search_config = 'pg_catalog.simple';
         ALTER ROLE \"Lecteur é\" IN DATABASE shop SET work_mem = '8MB'",
    );
    pg.psql(
        "shop",
        "SET ROLE app_owner;
         CREATE SCHEMA sales;
         ALTER DEFAULT PRIVILEGES IN SCHEMA sales GRANT SELECT ON TABLES TO readers;
         CREATE TABLE sales.orders (id serial PRIMARY KEY, item text NOT NULL, total numeric(10,2));
         INSERT INTO sales.orders (item, total) SELECT 'item ' || g, g * 1.5 FROM generate_series(1, 300) g;
         CREATE VIEW sales.big_orders AS SELECT * FROM sales.orders WHERE total > 100;
         GRANT USAGE ON SCHEMA sales TO readers;
         GRANT SELECT ON sales.orders TO readers;
         GRANT UPDATE (item) ON sales.orders TO readers;
         GRANT SELECT ON sales.big_orders TO \"Lecteur é\" WITH GRANT OPTION",
    );
    pg.psql(
        UNICODE_DB,
        "SET ROLE app_owner;
         CREATE SCHEMA \"Sch é\";
         CREATE TABLE \"Sch é\".\"Tbl ü\" (k text PRIMARY KEY, v jsonb);
         INSERT INTO \"Sch é\".\"Tbl ü\" VALUES ('a', '{\"x\": 1}'), ('ß', '[]');
         GRANT SELECT ON \"Sch é\".\"Tbl ü\" TO readers",
    );
}

fn state(pg: &PgServer) -> String {
    [
        roles(pg),
        databases(pg),
        content(pg, "shop", &["sales.orders"]),
        content(pg, UNICODE_DB, &["\"Sch é\".\"Tbl ü\""]),
    ]
    .join("\n---\n")
}

/// The server is gone: a PostgreSQL 15 server's `db-backup --all` rebuilds
/// it on a brand-new PostgreSQL 17 server, roles and passwords included.
#[test]
fn a_lost_server_is_rebuilt_on_a_new_major_from_backups_alone() {
    let old = PgServer::start(15);
    populate(&old);
    let x = crate::xtask();
    let env = with(old.xtask_env(DB), &[("BACKUP_GLOBALS_PASSWORDS", "true")]);
    let out = x.run(&["db-backup", "--all", "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let report = json_of(&out);
    assert_eq!(report["failed"], serde_json::json!([]), "{report}");
    let sets = report["sets"].as_array().unwrap();
    // The globals, then app, postgres, shop and the unicode one.
    assert_eq!(sets.len(), 5, "{report}");
    assert_eq!(sets[0]["meta"]["content"], "globals");
    assert_eq!(sets[0]["meta"]["sensitive"], true);
    let before = state(&old);
    drop(old);

    let new = PgServer::start(17);
    let env = new.xtask_env(DB);
    let out = x.run(
        &["db-restore", "--all", "--latest", "--with-globals", "--yes"],
        &env,
    );
    assert!(out.status.success(), "{}", show(&out));
    let text = stderr(&out);
    assert!(
        text.contains("created role Lecteur é, role app_owner, role readers"),
        "{text}"
    );
    assert!(text.contains("postgres: skipped"), "{text}");
    assert_eq!(state(&new), before);
    assert_eq!(
        login(&new, "Lecteur é", PASSWORD, "shop").unwrap(),
        "Lecteur é"
    );
    let refused = login(&new, "Lecteur é", "wrong", "shop").unwrap_err();
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );
}

/// Without `BACKUP_GLOBALS_PASSWORDS` the roles come back without their
/// passwords; a role the new server already has keeps its own password and
/// attributes; the output says what was created.
#[test]
fn existing_roles_are_never_changed_and_passwords_stay_out_by_default() {
    let old = PgServer::start(15);
    populate(&old);
    old.psql(
        DB,
        "CREATE ROLE writer LOGIN PASSWORD 'w/@?1'; GRANT readers TO writer",
    );
    let x = crate::xtask();
    let out = x.run(&["db-backup", "--all", "--json"], &old.xtask_env(DB));
    assert!(out.status.success(), "{}", show(&out));
    assert_ne!(json_of(&out)["sets"][0]["meta"]["sensitive"], true);
    let globals = json_of(&out)["sets"][0]["meta"]["file"]
        .as_str()
        .unwrap()
        .to_string();
    let mut sql = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::MultiGzDecoder::new(
            std::fs::File::open(x.backup_dir().join(&globals)).unwrap(),
        ),
        &mut sql,
    )
    .unwrap();
    assert!(!sql.contains("PASSWORD"), "{sql}");

    let new = PgServer::start(15);
    new.psql(
        DB,
        "CREATE ROLE \"Lecteur é\" LOGIN NOINHERIT PASSWORD 'target-pw' CONNECTION LIMIT 3",
    );
    let env = with(new.xtask_env("shop"), &[]);
    // A preview creates nothing, and knows the globals would provide the roles.
    let roles_before = roles(&new);
    let out = x.run(
        &["db-restore", "--latest", "--with-globals", "--dry-run"],
        &env,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stderr(&out).contains("would create role app_owner"),
        "{}",
        show(&out)
    );
    assert_eq!(roles(&new), roles_before);

    let out = x.run(&["db-restore", "--latest", "--with-globals"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let text = stderr(&out);
    assert!(text.contains("created role app_owner"), "{text}");
    assert!(
        !text.contains("Lecteur"),
        "an existing role was reported: {text}"
    );
    // (It is not a member of `readers` here, so it logs in where PUBLIC may.)
    assert_eq!(
        login(&new, "Lecteur é", "target-pw", DB).unwrap(),
        "Lecteur é"
    );
    assert!(login(&new, "Lecteur é", PASSWORD, DB).is_err());
    assert_eq!(
        new.psql(
            DB,
            "SELECT rolinherit, rolconnlimit, rolconfig IS NULL, pg_has_role('Lecteur é', 'readers', 'MEMBER')
               FROM pg_roles WHERE rolname = 'Lecteur é'"
        ),
        "f|3|t|f",
        "the existing role was altered"
    );
    // A new role is created with its attributes and memberships, not its password.
    assert_eq!(
        new.psql(
            DB,
            "SELECT rolcanlogin, pg_has_role('writer', 'readers', 'MEMBER') FROM pg_roles WHERE rolname = 'writer'"
        ),
        "t|t"
    );
    let refused = login(&new, "writer", "w/@?1", "shop").unwrap_err();
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );
    assert_eq!(
        content(&new, "shop", &["sales.orders"]),
        content(&old, "shop", &["sales.orders"])
    );
}

/// Onto a server without the dump's roles: refused up front naming them;
/// `--no-owner --no-acl` loads everything as the connecting user.
#[test]
fn a_server_without_the_roles_refuses_or_loads_without_them() {
    let old = PgServer::start(15);
    populate(&old);
    let x = crate::xtask();
    let out = x.run(&["db-backup", "-q"], &old.xtask_env("shop"));
    assert!(out.status.success(), "{}", show(&out));

    let new = PgServer::start(15);
    let env = new.xtask_env("shop");
    let before = (roles(&new), databases(&new));
    let out = x.run(&["db-restore", "--latest", "--yes"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains(&format!(
            "it needs roles 127.0.0.1:{} does not have: Lecteur é, app_owner, readers;",
            new.port
        )),
        "{}",
        show(&out)
    );
    assert_eq!(
        (roles(&new), databases(&new)),
        before,
        "a refusal changed something"
    );
    // No globals backup to take them from: said so, nothing changed.
    let out = x.run(&["db-restore", "--latest", "--with-globals", "--yes"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("there is no globals backup"),
        "{}",
        show(&out)
    );
    assert_eq!((roles(&new), databases(&new)), before);

    let out = x.run(
        &["db-restore", "--latest", "--yes", "--no-owner", "--no-acl"],
        &env,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(roles(&new), before.0, "no role was created");
    assert_eq!(
        new.psql(
            "shop",
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace = 'sales'::regnamespace"
        ),
        e2e::USER
    );
    assert_eq!(
        new.psql(
            DB,
            "SELECT pg_get_userbyid(datdba), datacl IS NULL FROM pg_database WHERE datname = 'shop'"
        ),
        format!("{}|t", e2e::USER)
    );
    assert_eq!(
        new.table_rows("shop", "sales.orders"),
        old.table_rows("shop", "sales.orders")
    );
}

/// `--all` as a user who cannot read one database: the others are
/// published, the run fails naming it; excluded, the run succeeds.
#[test]
fn one_unreadable_database_fails_the_run_not_the_others() {
    let pg = PgServer::start(15);
    pg.psql(DB, "CREATE ROLE backup_user LOGIN PASSWORD 'b@ck/up?'");
    pg.create_db("good");
    pg.create_db("secret");
    pg.psql(
        "good",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2); GRANT SELECT ON t TO backup_user",
    );
    pg.psql(
        "secret",
        "CREATE TABLE vault (id int); INSERT INTO vault VALUES (1)",
    );
    let x = crate::xtask();
    let env = with(
        pg.xtask_env(DB),
        &[("POSTGRES_USER", "backup_user"), ("PGPASSWORD", "b@ck/up?")],
    );
    let out = x.run(&["db-backup", "--all"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = stderr(&out);
    assert!(
        text.contains("1 of 5 backup sets failed: secret (the others are published)"),
        "{}",
        show(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("secret"),
        "the summary names it: {}",
        show(&out)
    );
    let files = files_in(&x.backup_dir());
    for set in ["good_", "app_", "postgres_", "_globals_"] {
        assert_eq!(
            files
                .iter()
                .filter(|f| f.contains(set) && !f.contains("secret"))
                .count(),
            3,
            "{set}: {files:?}"
        );
    }
    assert!(!files.iter().any(|f| f.starts_with("secret_")), "{files:?}");

    let out = x.run(
        &["db-backup", "--all", "--json", "--no-prune"],
        &with(env, &[("BACKUP_EXCLUDE_DATABASES", "secret")]),
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(json_of(&out)["sets"].as_array().unwrap().len(), 4);
}

/// Every `cargo xtask` line of the runbook's "server is gone" section, as
/// written, onto a new server.
#[test]
fn the_runbooks_server_is_gone_section_runs_as_written() {
    let runbook = include_str!("../../docs/operations/database-recovery.md");
    let section = runbook
        .split("\n## ")
        .find(|s| s.starts_with("6. The server is gone"))
        .expect("the runbook has the section");
    let blocks: Vec<&str> = section
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert!(blocks.len() >= 3, "{section}");

    let old = PgServer::start(15);
    populate(&old);
    let x = crate::xtask();
    run_blocks(&x, &blocks, "on the old server", &old.xtask_env(DB));
    let before = state(&old);
    drop(old);
    let new = PgServer::start(17);
    run_blocks(&x, &blocks, "on the new server", &new.xtask_env(DB));
    assert_eq!(state(&new), before);
}

/// Runs the blocks whose first line is the comment `# {when}`.
fn run_blocks(x: &Xtask, blocks: &[&str], when: &str, env: &BTreeMap<String, String>) {
    let mut ran = 0;
    for block in blocks
        .iter()
        .filter(|b| b.starts_with(&format!("# {when}")))
    {
        let out = x.shell(block, env);
        assert!(out.status.success(), "{block}\n{}", show(&out));
        ran += 1;
    }
    assert!(ran > 0, "no block is marked '# {when}'");
}

/// The GitHub Actions recipe's restore test, its command as written, onto a
/// throwaway server that has none of the source's roles.
#[test]
fn the_github_restore_test_needs_no_roles() {
    let recipe = include_str!("../../ops/github/db-backup.yml");
    let command = recipe
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("run: cargo xtask db-verify --all --restore-test"))
        .map(|rest| format!("cargo xtask db-verify --all --restore-test{rest}"))
        .expect("the recipe has a restore test");
    let old = PgServer::start(15);
    populate(&old);
    let x = crate::xtask();
    let out = x.run(&["db-backup", "-q"], &old.xtask_env("shop"));
    assert!(out.status.success(), "{}", show(&out));
    let throwaway = PgServer::start(17);
    let env = throwaway.xtask_env(DB);

    let out = x.run(&["db-verify", "--all", "--restore-test"], &env);
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));
    assert!(
        stderr(&out).contains(
            "does not have: Lecteur é, app_owner, readers; test without them (--no-owner --no-acl)"
        ),
        "{}",
        show(&out)
    );
    let out = x.shell(&command, &env);
    assert!(out.status.success(), "{command}\n{}", show(&out));
}

/// `--all` with encryption: every set (the globals with their role
/// passwords included) is an age file, no password hash is readable in any
/// of them, and only the key rebuilds the server.
#[test]
fn an_encrypted_all_run_rebuilds_the_server_with_the_key_only() {
    let old = PgServer::start(15);
    populate(&old);
    let x = crate::xtask();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("key.txt");
    let made = std::process::Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .expect("age-keygen (Debian package age)");
    assert!(made.status.success(), "{}", show(&made));
    let public = std::process::Command::new("age-keygen")
        .arg("-y")
        .arg(&key)
        .output()
        .unwrap();
    let public = String::from_utf8_lossy(&public.stdout).trim().to_string();
    let env = with(
        old.xtask_env(DB),
        &[
            ("BACKUP_GLOBALS_PASSWORDS", "true"),
            ("BACKUP_AGE_RECIPIENTS", &public),
        ],
    );
    let out = x.run(&["db-backup", "--all", "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let report = json_of(&out);
    for set in report["sets"].as_array().unwrap() {
        let file = set["meta"]["file"].as_str().unwrap();
        assert!(file.ends_with(".sql.gz.age"), "{file}");
    }
    for f in files_in(&x.backup_dir()) {
        let bytes = std::fs::read(x.backup_dir().join(&f)).unwrap();
        assert!(
            !bytes.windows(13).any(|w| w == b"SCRAM-SHA-256"),
            "{f} holds a password hash in the clear"
        );
    }
    let before = state(&old);
    drop(old);

    let new = PgServer::start(17);
    let out = x.run(
        &["db-restore", "--all", "--latest", "--with-globals", "--yes"],
        &new.xtask_env(DB),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "without the key: {}",
        show(&out)
    );
    assert!(
        stderr(&out).contains("BACKUP_AGE_IDENTITY_FILE"),
        "{}",
        stderr(&out)
    );
    let env = with(
        new.xtask_env(DB),
        &[("BACKUP_AGE_IDENTITY_FILE", &key.display().to_string())],
    );
    let out = x.run(
        &["db-restore", "--all", "--latest", "--with-globals", "--yes"],
        &env,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(state(&new), before);
    assert_eq!(
        login(&new, "Lecteur é", PASSWORD, "shop").unwrap(),
        "Lecteur é"
    );
}
