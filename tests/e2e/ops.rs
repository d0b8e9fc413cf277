//! Operations: `db-status` for monitors, the per-database run lock, and the
//! success/failure hooks and webhook, against a real server.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e::{DB, PASSWORD, PgServer, json_of, show};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn db_status_reports_missing_fresh_stale_and_failing() {
    let pg = PgServer::start(15);
    pg.psql(DB, "CREATE TABLE t AS SELECT generate_series(1, 100) AS x");
    let x = crate::xtask();
    let mut env = pg.xtask_env(DB);

    let out = x.run(&["db-status"], &env);
    assert_eq!(out.status.code(), Some(5), "{}", show(&out));
    assert!(
        stderr(&out).contains("there is no usable backup of 'app'"),
        "{}",
        show(&out)
    );

    let out = x.run(&["db-backup", "-q"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let out = x.run(&["db-status", "--json"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let status = json_of(&out);
    assert_eq!(status["status"], "ok");
    assert_eq!(status["max_age_seconds"], 26 * 3600);
    assert_eq!(status["databases"][0]["verdict"], "ok");
    assert!(
        status["databases"][0]["newest"]["file"]
            .as_str()
            .unwrap()
            .starts_with("app_daily_")
    );

    // Two days later the same backup is stale; a larger --max-age accepts it.
    let later = (time::OffsetDateTime::now_utc() + time::Duration::days(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    env.insert("XTASK_NOW".into(), later);
    let out = x.run(&["db-status"], &env);
    assert_eq!(out.status.code(), Some(5), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("DATABASE  STATUS"), "{text}");
    assert!(text.contains("STALE"), "{text}");
    assert!(
        stderr(&out).contains("more than the allowed 1d 2h"),
        "{}",
        show(&out)
    );
    let out = x.run(&["db-status", "--max-age", "3d"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = x.run(&["db-status", "--max-age", "soon"], &env);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: --max-age 'soon' is not a duration: use a number with a unit, such as 26h, 90m, 2d or 1w"
    );
    env.remove("XTASK_NOW");

    // A failed run makes it unhealthy although a fresh backup exists
    // (metrics have whole seconds: let the failure come a second later).
    std::thread::sleep(Duration::from_millis(1100));
    let mut broken = env.clone();
    broken.insert("POSTGRES_PORT".into(), "1".into());
    let out = x.run(&["db-backup", "-q"], &broken);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let out = x.run(&["db-status", "--all", "--json"], &env);
    assert_eq!(out.status.code(), Some(5), "{}", show(&out));
    assert_eq!(json_of(&out)["databases"][0]["verdict"], "failing");
    // ... until the next success.
    std::thread::sleep(Duration::from_millis(1100));
    let out = x.run(&["db-backup", "-q"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let out = x.run(&["db-status"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

/// Holds `path` locked from another process (util-linux `flock`, which keeps
/// the lock itself and not in its child) until killed.
/// The caller kills and waits for the returned child.
#[allow(clippy::zombie_processes)]
fn hold_lock(path: &std::path::Path) -> std::process::Child {
    let mut child = Command::new("flock")
        .arg("--exclusive")
        .arg("--no-fork")
        .arg(path)
        .args(["sleep", "300"])
        .spawn()
        .expect("util-linux flock runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let probe = std::fs::OpenOptions::new().read(true).open(path);
        if let Ok(f) = probe
            && f.try_lock().is_err()
        {
            return child;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("flock did not take the lock");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn overlapping_backups_are_refused_and_a_killed_holder_blocks_nothing() {
    let pg = PgServer::start(15);
    pg.psql(DB, "CREATE TABLE t AS SELECT 1 AS x");
    let x = crate::xtask();
    let env = pg.xtask_env(DB);
    let dir = x.backup_dir();
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&dir)
        .unwrap();
    let lock = dir.join(".xtask-lock-app");
    std::fs::write(&lock, "pid 4242 since 2026-11-24T02:00:00Z").unwrap();

    let mut holder = hold_lock(&lock);
    let out = x.run(&["db-backup"], &env);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    assert_eq!(
        stderr(&out).trim(),
        "error: another backup of database 'app' is running (pid 4242 since 2026-11-24T02:00:00Z): this run stops; the lock goes when that run ends or dies"
    );
    assert!(e2e::files_in(&dir).iter().all(|f| !f.ends_with(".sql.gz")));

    // Killed hard: the kernel releases the lock, and the next run proceeds.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = x.run(&["db-backup", "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    // The lock file is not a backup nor a foreign file in the listing.
    let out = x.run(&["db-prune", "--dry-run", "--json"], &env);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(".xtask-lock"),
        "{}",
        show(&out)
    );
}

/// A one-request HTTP server on loopback: returns its URL and the body it got.
fn webhook_receiver(status: u16) -> (String, mpsc::Receiver<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/hooks/T0KEN-secret",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = tx.send((head, String::from_utf8_lossy(&body).into_owned()));
        }
    });
    (url, rx)
}

#[test]
fn hooks_and_webhook_get_the_payload_and_never_change_the_result() {
    let pg = PgServer::start(15);
    pg.psql(DB, "CREATE TABLE t AS SELECT 1 AS x");
    let x = crate::xtask();
    let out_dir = tempfile::tempdir().unwrap();
    let payload_file = out_dir.path().join("payload.json");
    let (url, received) = webhook_receiver(200);
    let mut env: BTreeMap<String, String> = pg.xtask_env(DB);
    env.insert(
        "BACKUP_HOOK_SUCCESS".into(),
        format!("cat > '{}'", payload_file.display()),
    );
    env.insert("BACKUP_WEBHOOK_URL".into(), url.clone());

    let out = x.run(&["db-backup", "-v"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let payload: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&payload_file).unwrap()).unwrap();
    assert_eq!(payload["status"], "success");
    assert_eq!(payload["database"], "app");
    assert_eq!(payload["type"], "daily");
    assert!(payload["size_bytes"].as_u64().unwrap() > 0);
    assert!(payload["file"].as_str().unwrap().starts_with("app_daily_"));
    let (head, body) = received.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        head.starts_with("POST /hooks/T0KEN-secret HTTP/1.1"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let posted: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(posted, payload);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(!text.contains("T0KEN"), "the webhook URL leaked: {text}");

    // A failed backup: the failure hook gets the error; failing hooks only warn.
    let (bad_url, bad_received) = webhook_receiver(500);
    let mut failing = env.clone();
    failing.insert("POSTGRES_PORT".into(), "1".into());
    failing.insert(
        "BACKUP_HOOK_FAILURE".into(),
        format!("cat > '{}'; exit 9", payload_file.display()),
    );
    failing.insert("BACKUP_WEBHOOK_URL".into(), bad_url);
    let out = x.run(&["db-backup"], &failing);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the backup's own failure: {}",
        show(&out)
    );
    let payload: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&payload_file).unwrap()).unwrap();
    assert_eq!(payload["status"], "failure");
    assert!(
        payload["error"]
            .as_str()
            .unwrap()
            .contains("cannot reach PostgreSQL"),
        "{payload}"
    );
    bad_received.recv_timeout(Duration::from_secs(10)).unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("the BACKUP_HOOK_FAILURE hook failed (exit status: 9)"),
        "{err}"
    );
    assert!(
        err.contains("the webhook (BACKUP_WEBHOOK_URL) failed"),
        "{err}"
    );
    assert!(!err.contains("T0KEN") && !err.contains(PASSWORD), "{err}");

    // A hook that fails after a good backup leaves the exit code at 0.
    let mut noisy = env.clone();
    noisy.insert("BACKUP_HOOK_SUCCESS".into(), "exit 3".into());
    let out = x
        .command(&["db-backup"], &noisy)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stderr(&out).contains("the BACKUP_HOOK_SUCCESS hook failed (exit status: 3)"),
        "{}",
        show(&out)
    );
}

/// Issue 13: db-status checks the database DATABASE_URL names.
#[test]
fn db_status_reads_the_database_from_database_url() {
    let pg = PgServer::start(15);
    pg.create_db("shop");
    pg.psql("shop", "CREATE TABLE t AS SELECT 1 AS x");
    let x = crate::xtask();
    let out = x.run(&["db-backup", "-q"], &pg.xtask_env("shop"));
    assert!(out.status.success(), "{}", show(&out));
    let url: std::collections::BTreeMap<String, String> = [(
        "DATABASE_URL".to_string(),
        format!(
            "postgres://app:{}@127.0.0.1:{}/shop",
            e2e::PASSWORD,
            pg.port
        ),
    )]
    .into();
    let out = x.run(&["db-status", "--json"], &url);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(e2e::json_of(&out)["databases"][0]["database"], "shop");
}
