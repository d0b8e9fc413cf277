//! The compose route: the workspace's own `docker-compose.yml` (a copy of the
//! repository's, in the test's workspace root, with its own project name and
//! port in `.env`), started and stopped by `cargo xtask db-up`/`db-down`,
//! and the client tools run inside the service with `exec -T`.
//!
//! The service runs PostgreSQL 17; the host's client tools are 15, so only
//! the compose route can dump it.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use e2e::{PASSWORD, PgServer, Xtask, files_in, host_pg_dump_major, image_repo, show};

/// A compose project in a workspace root of its own; `down --volumes` on drop.
pub(crate) struct Project {
    pub(crate) x: Xtask,
    port: u16,
}

impl Project {
    pub(crate) fn new() -> Project {
        static N: AtomicU32 = AtomicU32::new(0);
        let x = crate::xtask();
        let root = x.root.path();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        std::fs::copy(
            repo.join("docker-compose.yml"),
            root.join("docker-compose.yml"),
        )
        .unwrap();
        let port = free_port();
        // As a developer's `.env`: compose reads it for the project, the xtask for itself.
        std::fs::write(
            root.join(".env"),
            format!(
                "COMPOSE_PROJECT_NAME=xtask-e2e-{}-{}\nPOSTGRES_IMAGE={}:17\nPOSTGRES_PORT={port}\nPOSTGRES_PASSWORD={PASSWORD}\n",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst),
                image_repo()
            ),
        )
        .unwrap();
        Project { x, port }
    }

    /// More settings in the project's `.env`, read by every later run.
    pub(crate) fn append_env(&self, pairs: &[(&str, &str)]) {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.root().join(".env"))
            .unwrap();
        for (k, v) in pairs {
            writeln!(f, "{k}={v}").unwrap();
        }
    }

    fn root(&self) -> &Path {
        self.x.root.path()
    }

    /// A `docker compose` command in the project, as the developer would type it.
    pub(crate) fn compose(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("compose")
            .args(args)
            .current_dir(self.root())
            .output()
            .expect("docker compose runs")
    }

    pub(crate) fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.x.run(args, &env)
    }

    /// `cargo xtask db-up`, which must succeed.
    pub(crate) fn up(&self, env: &[(&str, &str)]) {
        let out = self.run(&["db-up"], env);
        assert!(
            out.status.success(),
            "db-up failed (is the image {}:17 built? `bash scripts/build-pg-image.sh 17`): {}",
            image_repo(),
            show(&out)
        );
    }

    /// psql inside the service, as the superuser the image created.
    pub(crate) fn psql(&self, user: &str, db: &str, sql: &str) -> String {
        let out = self.compose(&[
            "exec",
            "-T",
            "db",
            "psql",
            "-X",
            "-U",
            user,
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        ]);
        assert!(out.status.success(), "psql {sql}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Project {
    /// A whole script into psql inside the service, stopping at the first error.
    pub(crate) fn psql_script(&self, user: &str, db: &str, script: &[u8]) {
        let mut child = Command::new("docker")
            .args([
                "compose",
                "exec",
                "-T",
                "db",
                "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-U", user, "-d", db])
            .current_dir(self.root())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("docker compose runs");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), script).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "psql script: {}", show(&out));
    }

    /// What a restored database must equal, as restore::fingerprint reads
    /// it: its schema (pg_dump in the service) and every table's rows.
    pub(crate) fn fingerprint(&self, user: &str, db: &str) -> (String, BTreeMap<String, String>) {
        let out = self.compose(&[
            "exec",
            "-T",
            "db",
            "pg_dump",
            "-U",
            user,
            "--schema-only",
            db,
        ]);
        assert!(out.status.success(), "{}", show(&out));
        let schema: String = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n");
        let tables = self.psql(
            user,
            db,
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        );
        let mut hashes = BTreeMap::new();
        for t in tables.lines() {
            let h = self.psql(user, db, &format!("SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x::text)), '') FROM ONLY {t} x"));
            hashes.insert(t.to_string(), h);
        }
        (schema, hashes)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "--volumes", "--timeout", "5"]);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every byte value, and a 3.2 MB pseudo-random value, as bytea; plus text.
const SEED: &str = "
CREATE TABLE blobs (id int PRIMARY KEY, data bytea NOT NULL);
INSERT INTO blobs SELECT 1, decode(string_agg(lpad(to_hex(i), 2, '0'), '' ORDER BY i), 'hex') FROM generate_series(0, 255) i;
INSERT INTO blobs SELECT 2, string_agg(decode(md5(i::text), 'hex'), ''::bytea ORDER BY i) FROM generate_series(1, 200000) i;
CREATE TABLE notes (id int PRIMARY KEY, body text);
INSERT INTO notes SELECT i, 'note ' || i || E' tab\\there, ünïcode ✓' FROM generate_series(1, 5000) i;
";

/// What the data looks like: lengths and digests of every value.
const FINGERPRINT: &str =
    "SELECT string_agg(id || ':' || length(data) || ':' || md5(data), ' ' ORDER BY id) FROM blobs
  UNION ALL SELECT count(*) || ':' || md5(string_agg(body, ',' ORDER BY id)) FROM notes";

#[test]
fn compose_route_dumps_and_restores_a_newer_server_bit_exact() {
    let p = Project::new();
    // The service's own settings, which the xtask is never told: it must take them from the service.
    p.up(&[("POSTGRES_USER", "owner"), ("POSTGRES_DB", "inventory")]);
    let published = p.compose(&["port", "db", "5432"]);
    assert_eq!(
        String::from_utf8_lossy(&published.stdout).trim(),
        format!("127.0.0.1:{}", p.port),
        "published on loopback only"
    );
    p.psql("owner", "inventory", SEED);
    let before = p.psql("owner", "inventory", FINGERPRINT);
    assert!(
        before.contains("1:256:e2c865db4162bed963bfaa9ef6ac18f0"),
        "{before}"
    );

    // auto: the service runs, so the tools run inside it.
    let out = p.run(&["db-backup", "--json", "-v"], &[]);
    assert!(out.status.success(), "{}", show(&out));
    let result = e2e::json_of(&out);
    let meta = &result["meta"];
    assert_eq!(meta["via"], "compose", "{meta}");
    assert_eq!(meta["database"], "inventory", "{meta}");
    assert!(
        meta["server_version"].as_str().unwrap().starts_with("17."),
        "{meta}"
    );
    assert!(
        meta["pg_dump_version"].as_str().unwrap().starts_with("17."),
        "{meta}"
    );
    assert_eq!(meta["tables"]["public.blobs"], 2, "{meta}");
    assert!(
        stderr(&out).contains("route: compose"),
        "-v shows the route: {}",
        stderr(&out)
    );
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(!text.contains(PASSWORD), "the password leaked: {text}");
    let dir = p.x.backup_dir();
    let before_files = files_in(&dir);

    // The host's pg_dump (15) cannot dump 17: one clear line, nothing written.
    if host_pg_dump_major() < 17 {
        let out = p.run(
            &["db-backup", "--via", "host"],
            &[("POSTGRES_USER", "owner"), ("POSTGRES_DB", "inventory")],
        );
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let err = stderr(&out);
        assert!(
            err.contains("is older than the server (17.") && err.contains("--via compose"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(
            files_in(&dir),
            before_files,
            "nothing new in the backup directory"
        );
    }

    // Lose the data, then restore the latest through the service.
    p.psql(
        "owner",
        "inventory",
        "DROP TABLE blobs; UPDATE notes SET body = 'x'",
    );
    let out = p.run(&["db-restore", "--latest", "--yes", "--drop-previous"], &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        p.psql("owner", "inventory", FINGERPRINT),
        before,
        "bit-exact round trip"
    );

    // db-psql reaches the same database by the same route, without a TTY.
    let out = p.run(
        &[
            "db-psql",
            "--",
            "-Atc",
            "SELECT current_user || '@' || current_database()",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "owner@inventory"
    );
    let out = p.run(&["db-psql", "--", "-c", "SELECT nonsense"], &[]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "psql's failure is the exit code"
    );
}

/// Ctrl-C or SIGTERM while pg_dump runs in the service. `docker compose
/// exec` passes no signal on (moby issue 9098): ending it alone left
/// pg_dump waiting there, its lock requests queueing every writer behind
/// them, until the dump was done. The dump's sessions are ended on the
/// server instead: nothing of the run is left in the service, nothing is
/// published, and the next backup runs as usual.
#[test]
fn a_signal_ends_the_dump_running_in_the_service() {
    let p = Project::new();
    p.up(&[]);
    p.psql(
        "app",
        "app",
        "CREATE TABLE big AS SELECT g AS id FROM generate_series(1, 1000) g",
    );
    // A migration holds the table: pg_dump waits for it in the service.
    let mut holder = Command::new("docker")
        .args([
            "compose", "exec", "-T", "db", "psql", "-U", "app", "-d", "app",
        ])
        .args([
            "-c",
            "BEGIN; LOCK TABLE big IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(300);",
        ])
        .current_dir(p.root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = |sql: &str, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n = p.psql("app", "app", sql);
            if n == want || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let held = "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 'big'::regclass";
    assert_eq!(until(held, "1"), "1");
    let waiting = "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name LIKE 'cargo-xtask dump %' AND wait_event_type = 'Lock'";
    let sessions =
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'cargo-xtask%'";
    // The signal to the xtask alone (a supervisor's `kill PID`), or to its
    // whole process group as a terminal's Ctrl-C is (`docker compose exec`
    // then dies of it too, before the xtask has looked).
    for (args, signal, group, code, word) in [
        (&["db-backup"][..], "-TERM", false, 143, "terminated"),
        (
            &["db-backup", "--format", "directory", "--jobs", "2"][..],
            "-INT",
            false,
            130,
            "interrupted",
        ),
        (&["db-backup"][..], "-INT", true, 130, "interrupted"),
    ] {
        let child = {
            use std::os::unix::process::CommandExt as _;
            p.x.command(args, &BTreeMap::new())
                .process_group(0)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let what = format!("{args:?} {signal} group={group}");
        assert_eq!(until(waiting, "t"), "t", "{what}: pg_dump never waited");
        let pid = child.id().to_string();
        let target = if group { format!("-{pid}") } else { pid };
        Command::new("kill")
            .args([signal, "--", &target])
            .status()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let what = format!("{what}: {}", show(&out));
        assert_eq!(out.status.code(), Some(code), "{what}");
        assert!(
            stderr(&out).contains(&format!("{word}: nothing was published")),
            "{what}"
        );
        // Gone within two seconds: ended, not left waiting for the lock.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut left = p.psql("app", "app", sessions);
        while left != "0" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            left = p.psql("app", "app", sessions);
        }
        assert_eq!(left, "0", "{what}");
        let ps = p.compose(&["exec", "-T", "db", "ps", "ax"]);
        assert!(
            !String::from_utf8_lossy(&ps.stdout).contains("pg_dump"),
            "{what}: {}",
            show(&ps)
        );
        assert!(
            files_in(&p.x.backup_dir())
                .iter()
                .all(|n| !n.starts_with("app_")),
            "{what}"
        );
    }
    p.psql(
        "app",
        "app",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(300)%' AND pid <> pg_backend_pid()",
    );
    let _ = holder.wait();
    let out = p.run(&["db-backup"], &[]);
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn stopped_service_falls_back_to_the_host_and_says_so() {
    let p = Project::new();
    p.up(&[]);
    let out = p.run(&["db-down"], &[]);
    assert!(out.status.success(), "{}", show(&out));
    let state = p.compose(&["ps", "-q", "db"]);
    assert!(
        String::from_utf8_lossy(&state.stdout).trim().is_empty(),
        "db-down stopped it"
    );

    // --via compose refuses with one line.
    let out = p.run(&["db-backup", "--via", "compose"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        stderr(&out).trim(),
        "error: the compose service 'db' is not running: start it with `cargo xtask db-up`, or use --via host"
    );
    // An unknown service name, too.
    let out = p.run(
        &["db-backup", "--via", "compose"],
        &[("BACKUP_COMPOSE_SERVICE", "postgres")],
    );
    assert_eq!(
        stderr(&out).trim(),
        "error: the compose project has no service 'postgres' (it has: db): set BACKUP_COMPOSE_SERVICE to the database's service"
    );

    // auto: the host's tools, against a server on the host's side, and it says so.
    let pg = PgServer::start(15);
    pg.psql(e2e::DB, "CREATE TABLE t AS SELECT 1 AS x");
    let env = pg.xtask_env(e2e::DB);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = p.run(&["db-backup", "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stderr(&out)
            .contains("the compose service 'db' is not running: using the host's client tools"),
        "{}",
        stderr(&out)
    );
    assert_eq!(e2e::json_of(&out)["meta"]["via"], "host");
}

#[test]
fn without_a_compose_file_compose_is_refused_and_auto_uses_the_host() {
    let x = crate::xtask();
    let env: BTreeMap<String, String> = [("BACKUP_VIA".to_string(), "compose".to_string())].into();
    let out = x.run(&["db-backup"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: no compose file in ")
            && err.trim().ends_with("add one, or use --via host"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = x.run(&["db-up"], &BTreeMap::new());
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("no compose file"), "{}", show(&out));
    let bad: BTreeMap<String, String> = [("BACKUP_VIA".to_string(), "docker".to_string())].into();
    let out = x.run(&["db-backup"], &bad);
    assert_eq!(
        stderr(&out).trim(),
        "error: BACKUP_VIA 'docker' is not valid: use auto, host or compose"
    );
}

/// Issue 14, item 14: `auto` takes the service only at the port it publishes;
/// a tunnel to another server on a local port is backed up through the host.
#[test]
fn auto_takes_the_service_only_at_the_port_it_publishes() {
    let p = Project::new();
    p.up(&[]);
    let staging = PgServer::start(15);
    staging.psql(e2e::DB, "CREATE TABLE staging_only AS SELECT 1 AS x");
    let env = staging.xtask_env(e2e::DB);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = p.run(&["db-backup", "-v", "--json", "--no-prune"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let meta = &e2e::json_of(&out)["meta"];
    assert_eq!(meta["via"], "host", "{}", show(&out));
    assert!(
        meta["tables"].get("public.staging_only").is_some(),
        "{meta}"
    );
    assert!(
        stderr(&out).contains("is not the one the compose service 'db' publishes"),
        "{}",
        show(&out)
    );
    // At the published port (the .env's), the service it is.
    let port = p.port.to_string();
    let out = p.run(
        &["db-backup", "--json", "--no-prune"],
        &[("POSTGRES_PORT", port.as_str())],
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(e2e::json_of(&out)["meta"]["via"], "compose");
}
