//! Point-in-time recovery on the compose service (PostgreSQL 17 with
//! pgBackRest, from scripts/build-pg-image.sh): `db-pitr enable`, physical
//! backups, `db-restore --to-time` / `--to-latest`, and the refusals that
//! must leave the service on its data.

use e2e::{json_of, show};

use crate::compose::Project;

fn rows(p: &Project) -> String {
    p.psql("app", "app", "SELECT string_agg(x, ',' ORDER BY x) FROM t")
}

fn ok(p: &Project, args: &[&str]) -> std::process::Output {
    let out = p.run(args, &[]);
    assert!(out.status.success(), "{args:?}: {}", show(&out));
    out
}

fn refused(p: &Project, args: &[&str], says: &str) {
    let out = p.run(args, &[]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "{args:?} should fail: {}",
        show(&out)
    );
    assert!(
        err.contains(says),
        "{args:?}: expected '{says}' in: {}",
        show(&out)
    );
    let errors: Vec<_> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one line: {err}");
}

/// A shell script in the service; its stdout.
fn service_sh(p: &Project, script: &str) -> String {
    let out = p.compose(&["exec", "-T", "db", "sh", "-c", script]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Rows A, the time T after their commit, then rows B: a restore to T
/// gives A alone. Returns T, as the server prints it.
fn rows_a_then_time_then_b(p: &Project) -> String {
    p.psql(
        "app",
        "app",
        "CREATE TABLE t (x text); INSERT INTO t VALUES ('A')",
    );
    let t = p.psql("app", "app", "SELECT now()");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    p.psql("app", "app", "INSERT INTO t VALUES ('B')");
    t
}

/// A file name in the repository's archive of this stanza, by WAL segment.
fn archived_segment(p: &Project, segment: &str) -> String {
    let list = format!("ls /var/lib/pgbackrest/archive/app/17-1/*/{segment}-*");
    // The archiver may not have pushed it yet: 20 s to do so.
    let mut tries = 40;
    loop {
        let out = p.compose(&["exec", "-T", "db", "sh", "-c", &list]);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        tries -= 1;
        assert!(tries > 0, "{segment} was not archived: {}", show(&out));
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[test]
fn pitr_restores_to_a_time_and_to_the_latest_state_and_leaves_the_data_on_failure() {
    let p = Project::new();
    p.up(&[]);

    // Nothing to back up or restore from before it is enabled.
    refused(
        &p,
        &["db-backup", "--physical"],
        "run `cargo xtask db-pitr enable` first",
    );
    refused(
        &p,
        &["db-restore", "--to-latest", "-y"],
        "point-in-time recovery is not enabled",
    );

    // The dry run shows the changes and makes none.
    let out = ok(&p, &["db-pitr", "enable", "--dry-run"]);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(plan.contains("archive_mode: off -> on"), "{plan}");
    assert!(plan.contains("archive_timeout: 0 -> 60"), "{plan}");
    assert_eq!(p.psql("app", "app", "SHOW archive_mode"), "off");

    ok(&p, &["db-pitr", "enable"]);
    assert_eq!(p.psql("app", "app", "SHOW archive_mode"), "on");
    assert_eq!(p.psql("app", "app", "SHOW archive_timeout"), "1min");
    // Idempotent: nothing to change, no restart.
    let out = ok(&p, &["db-pitr", "enable"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already as wanted"),
        "{}",
        show(&out)
    );

    let full = json_of(&ok(&p, &["db-backup", "--physical", "--json"]));
    assert_eq!(full["type"], "full", "{full}");

    let t = rows_a_then_time_then_b(&p);

    // Refusals touch nothing: before the first backup, in the future, not a time, no consent.
    refused(
        &p,
        &["db-restore", "--to-time", "2000-01-01 00:00:00+00", "-y"],
        "is before the end of the oldest physical backup",
    );
    refused(
        &p,
        &["db-restore", "--to-time", "2999-01-01 00:00:00+00", "-y"],
        "is in the future",
    );
    refused(
        &p,
        &["db-restore", "--to-time", "yesterday-ish", "-y"],
        "is not a time PostgreSQL reads",
    );
    refused(&p, &["db-restore", "--to-latest"], "add --yes");
    assert_eq!(rows(&p), "A,B");

    // The latest state: everything committed.
    ok(&p, &["db-restore", "--to-latest", "-y"]);
    assert_eq!(rows(&p), "A,B");
    // A backup on this timeline, after T: the restore to T cannot start from it.
    ok(&p, &["db-backup", "--physical", "--incr"]);

    // To the time between A and B.
    let done = json_of(&ok(&p, &["db-restore", "--to-time", &t, "-y", "--json"]));
    assert_eq!(rows(&p), "A");
    assert_eq!(done["from_backup"], full["label"], "{done}");
    assert_eq!(p.psql("app", "app", "SELECT pg_is_in_recovery()"), "f");
    // The old data is set aside, not deleted, and never part of a backup.
    let aside = done["set_aside"].as_str().unwrap().to_string();
    let out = p.compose(&[
        "exec",
        "-T",
        "db",
        "test",
        "-s",
        &format!("{aside}/PG_VERSION"),
    ]);
    assert!(out.status.success(), "{aside} is kept: {}", show(&out));

    // Writes go on from there, on a new timeline that a later recovery follows.
    p.psql(
        "app",
        "app",
        "INSERT INTO t SELECT 'C' || i FROM generate_series(1, 1000) i",
    );
    let incr = json_of(&ok(&p, &["db-backup", "--physical", "--json"]));
    assert_eq!(incr["type"], "incr", "{incr}");
    assert!(
        incr["repo_bytes"].as_u64().unwrap() < full["repo_bytes"].as_u64().unwrap(),
        "an incremental backup is smaller: {incr} vs {full}"
    );
    ok(&p, &["db-restore", "--to-latest", "-y"]);
    assert_eq!(p.psql("app", "app", "SELECT count(*) FROM t"), "1001");

    // A segment missing from the archive: the restore fails, the service keeps its data.
    p.psql("app", "app", "INSERT INTO t VALUES ('D')");
    let gone = p.psql("app", "app", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    p.psql("app", "app", "SELECT pg_switch_wal()");
    p.psql("app", "app", "INSERT INTO t VALUES ('E')");
    let status = json_of(&ok(&p, &["db-pitr", "status", "--json"]));
    assert_eq!(status["backups"].as_array().unwrap().len(), 3, "{status}");
    let file = archived_segment(&p, &gone);
    let out = p.compose(&["exec", "-T", "db", "mv", &file, "/tmp/"]);
    assert!(out.status.success(), "{}", show(&out));
    refused(
        &p,
        &["db-restore", "--to-latest", "-y"],
        "a WAL segment is missing from the archive",
    );
    assert_eq!(p.psql("app", "app", "SELECT count(*) FROM t"), "1003");
    assert_eq!(p.psql("app", "app", "SELECT pg_is_in_recovery()"), "f");
    let left = service_sh(&p, "ls /var/lib/postgresql/data/.xtask-pitr");
    assert!(
        !left.lines().any(|l| l.starts_with("restore-")),
        "no partial restore is left: {left}"
    );

    // The metrics carry the physical backups and the archive's lag.
    let prom = std::fs::read_to_string(p.x.backup_dir().join("metrics/backup.prom")).unwrap();
    assert!(
        prom.contains("backup_physical_last_success_timestamp{stanza=\"app\",type=\"full\"}"),
        "{prom}"
    );
    assert!(
        prom.contains("backup_physical_last_success_timestamp{stanza=\"app\",type=\"incr\"}"),
        "{prom}"
    );
    assert!(
        prom.contains("backup_wal_archive_lag_seconds{stanza=\"app\"}"),
        "{prom}"
    );

    // Archiving breaks: the finished segment waits, and the lag counts from when it finished.
    p.psql("app", "app", "ALTER SYSTEM SET archive_command = 'false'");
    p.psql("app", "app", "SELECT pg_reload_conf()");
    p.psql("app", "app", "INSERT INTO t VALUES ('F')");
    p.psql("app", "app", "SELECT pg_switch_wal()");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let status = json_of(&ok(&p, &["db-pitr", "status", "--json"]));
    assert!(
        status["waiting_segments"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert!(
        status["archive_lag_seconds"].as_f64().unwrap() >= 1.0,
        "{status}"
    );

    let out = ok(&p, &["db-pitr", "disable"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("backups are kept"),
        "{}",
        show(&out)
    );
    assert_eq!(p.psql("app", "app", "SHOW archive_mode"), "off");
}

/// The runbook's two PITR sections (docs/operations/database-recovery.md, 7
/// and 8) with their own commands, on an encrypted repository.
#[test]
fn runbook_pitr_before_the_bad_migration_then_the_server_is_gone() {
    let p = Project::new();
    p.up(&[]);
    let pass = "s3cr/et@pass?word";
    let env = [("BACKUP_PITR_CIPHER_PASS", pass)];
    let run = |args: &[&str]| {
        let out = p.run(args, &env);
        assert!(out.status.success(), "{args:?}: {}", show(&out));
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !all.contains(pass),
            "the cipher pass is never printed: {all}"
        );
        out
    };
    run(&["db-pitr", "enable"]);
    run(&["db-backup", "--physical"]);
    let status = json_of(&run(&["db-pitr", "status", "--json"]));
    assert_eq!(status["cipher"], "aes-256-cbc", "{status}");
    // Enabling again without the pass, or with another, is refused before
    // the configuration archive-push uses is replaced.
    for pass in ["", "not-the-pass"] {
        let out = p.run(&["db-pitr", "enable"], &[("BACKUP_PITR_CIPHER_PASS", pass)]);
        assert!(!out.status.success(), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("is BACKUP_PITR_CIPHER_PASS the stanza's pass"),
            "{}",
            show(&out)
        );
        assert!(err.contains("nothing was changed"), "{}", show(&out));
    }
    // Archiving still works with the stanza's pass.
    p.psql("app", "app", "SELECT pg_switch_wal()");
    // The repository holds no readable WAL: its files are encrypted.
    let plain = p.compose(&[
        "exec",
        "-T",
        "db",
        "sh",
        "-c",
        "grep -rl 'backup-archive-start' /var/lib/pgbackrest/backup || true",
    ]);
    assert!(
        String::from_utf8_lossy(&plain.stdout).trim().is_empty(),
        "{}",
        show(&plain)
    );

    p.psql(
        "app",
        "app",
        "CREATE TABLE public.orders (id int PRIMARY KEY, note text);
         INSERT INTO orders SELECT i, 'n' || i FROM generate_series(1, 100) i",
    );
    let before = p.psql("app", "app", "SELECT now()");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // The bad migration.
    p.psql("app", "app", "ALTER TABLE orders DROP COLUMN note");

    // 7. Restore to just before it.
    run(&["db-pitr", "status"]);
    run(&["db-restore", "--to-time", &before, "--yes"]);
    assert_eq!(
        p.psql("app", "app", "SELECT count(note) FROM public.orders"),
        "100",
        "the column is back"
    );

    // 8. The data volume is lost; the db-pitr volume survives.
    p.psql("app", "app", "INSERT INTO orders VALUES (101, 'after')");
    // (What the archive holds when the server dies: made deterministic here.)
    p.psql("app", "app", "SELECT pg_switch_wal()");
    let archived =
        || json_of(&run(&["db-pitr", "status", "--json"]))["waiting_segments"].as_u64() == Some(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !archived() {
        assert!(
            std::time::Instant::now() < deadline,
            "the segment was not archived in 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let project = std::fs::read_to_string(p.x.root.path().join(".env"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("COMPOSE_PROJECT_NAME=").map(String::from))
        .unwrap();
    let out = p.compose(&["rm", "--stop", "--force", "db"]);
    assert!(out.status.success(), "{}", show(&out));
    let out = std::process::Command::new("docker")
        .args(["volume", "rm", &format!("{project}_db-data")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));

    run(&["db-up"]);
    let out = run(&["db-restore", "--to-latest", "--yes"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not the one the physical backups are of"),
        "{}",
        show(&out)
    );
    assert_eq!(
        p.psql(
            "app",
            "app",
            "SELECT count(*) FROM public.orders WHERE note IS NOT NULL"
        ),
        "101"
    );
    let status = json_of(&run(&["db-pitr", "status", "--json"]));
    assert_eq!(status["status"], "ok", "{status}");
    let incr = json_of(&run(&["db-backup", "--physical", "--json"]));
    assert_eq!(incr["type"], "incr", "{incr}");
    // Archiving goes on from the restored server.
    assert_eq!(p.psql("app", "app", "SHOW archive_mode"), "on");
}

/// The repository in a bucket (BACKUP_PITR_REPO=s3) on the S3-compatible
/// test server, which pgBackRest reaches over TLS from the service: the
/// same cycle, then the loss of the machine (both volumes) and a restore
/// from the bucket alone.
#[test]
fn pitr_on_an_s3_repository_restores_after_both_volumes_are_lost() {
    let s3 = e2e::S3Server::start();
    let tls = e2e::TlsFront::start(s3.port);
    let p = Project::new();
    let mut settings: Vec<(String, String)> = s3.env().into_iter().collect();
    settings.push(("BACKUP_PITR_REPO".into(), "s3".into()));
    settings.push(("BACKUP_PITR_CIPHER_PASS".into(), "s3cr/et@pass?word".into()));
    let pairs: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    p.append_env(&pairs);
    p.up(&[]);
    let printed = std::cell::RefCell::new(String::new());
    let ok = |args: &[&str]| {
        let out = ok(&p, args);
        let mut all = printed.borrow_mut();
        all.push_str(&String::from_utf8_lossy(&out.stdout));
        all.push_str(&String::from_utf8_lossy(&out.stderr));
        out
    };

    // The xtask's own endpoint is plain HTTP on loopback: not for pgBackRest.
    refused(
        &p,
        &["db-pitr", "enable"],
        "pgBackRest reaches S3 only over HTTPS",
    );
    let plain = p.run(&["db-pitr", "enable"], &[]);
    printed
        .borrow_mut()
        .push_str(&String::from_utf8_lossy(&plain.stderr));
    let ca = tls.ca();
    p.append_env(&[
        ("BACKUP_PITR_S3_ENDPOINT", &tls.endpoint()),
        ("BACKUP_PITR_S3_CA_FILE", ca.to_str().unwrap()),
    ]);
    let repository = format!(
        "s3://backups/team/app/pgbackrest at host.docker.internal:{}",
        tls.port
    );
    let out = ok(&["db-pitr", "enable"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("repository {repository}")),
        "{}",
        show(&out)
    );

    let full = json_of(&ok(&["db-backup", "--physical", "--json"]));
    assert_eq!(full["type"], "full", "{full}");
    let t = rows_a_then_time_then_b(&p);
    ok(&["db-restore", "--to-latest", "-y"]);
    assert_eq!(rows(&p), "A,B");
    ok(&["db-restore", "--to-time", &t, "-y"]);
    assert_eq!(rows(&p), "A");
    p.psql(
        "app",
        "app",
        "INSERT INTO t SELECT 'C' || i FROM generate_series(1, 1000) i",
    );
    let incr = json_of(&ok(&["db-backup", "--physical", "--json"]));
    assert_eq!(incr["type"], "incr", "{incr}");
    assert!(
        incr["repo_bytes"].as_u64().unwrap() < full["repo_bytes"].as_u64().unwrap(),
        "an incremental backup is smaller: {incr} vs {full}"
    );

    // Everything is in the bucket, beside the logical backups' prefix and
    // encrypted; the volume holds only the configuration.
    let repo = s3.root.path().join("backups/team/app/pgbackrest");
    assert!(repo.join("backup/app/backup.info").is_file(), "{repo:?}");
    assert!(repo.join("archive/app/archive.info").is_file(), "{repo:?}");
    // The logical backups' listing and prune never reach into it.
    ok(&["db-backup"]);
    let prune = ok(&["db-prune", "--remote", "--json"]);
    assert!(
        !String::from_utf8_lossy(&prune.stdout).contains("pgbackrest"),
        "{}",
        show(&prune)
    );
    let listed = ok(&["db-list", "--remote", "--json"]);
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains("pgbackrest/"),
        "{}",
        show(&listed)
    );
    assert!(repo.join("backup/app/backup.info").is_file(), "{repo:?}");
    let info = std::fs::read(repo.join("backup/app/backup.info")).unwrap();
    assert!(
        !String::from_utf8_lossy(&info).contains("backup-archive-start"),
        "the repository is encrypted"
    );
    let volume = p.compose(&["exec", "-T", "db", "ls", "/var/lib/pgbackrest"]);
    assert!(volume.status.success(), "{}", show(&volume));
    let volume = String::from_utf8_lossy(&volume.stdout).to_string();
    assert!(volume.lines().any(|l| l == "pgbackrest.conf"), "{volume}");
    assert!(
        !volume.lines().any(|l| l == "archive" || l == "backup"),
        "{volume}"
    );
    let status = json_of(&ok(&["db-pitr", "status", "--json"]));
    assert_eq!(status["backups"].as_array().unwrap().len(), 2, "{status}");
    assert_eq!(status["repository"], repository.as_str());

    // Settings that would move the repository, or write keys that expire,
    // are refused with the configuration in use untouched.
    for (setting, says) in [
        (("BACKUP_S3_PREFIX", "elsewhere"), "add --move-repository"),
        (("AWS_SESSION_TOKEN", "t0ken"), "the S3 keys are temporary"),
    ] {
        let out = p.run(&["db-pitr", "enable"], &[setting]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        printed.borrow_mut().push_str(&err);
        assert!(
            !out.status.success() && err.contains(says),
            "{}",
            show(&out)
        );
    }
    let status = json_of(&ok(&["db-pitr", "status", "--json"]));
    assert_eq!(status["repository"], repository.as_str());

    // The machine is lost: the service and both its volumes. What the
    // archive holds when it dies is made deterministic here.
    p.psql("app", "app", "SELECT pg_switch_wal()");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while json_of(&ok(&["db-pitr", "status", "--json"]))["waiting_segments"] != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the segment was not archived in 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let out = p.compose(&["down", "--volumes", "--timeout", "5"]);
    assert!(out.status.success(), "{}", show(&out));
    p.up(&[]);
    let no_conf = || {
        service_sh(
            &p,
            "test -e /var/lib/pgbackrest/pgbackrest.conf && echo present || echo absent",
        )
        .trim()
            == "absent"
    };
    // Enabling the new, empty server on that stanza would archive onto
    // another server's history: refused, nothing written.
    refused(&p, &["db-pitr", "enable"], "is of another server");
    assert!(no_conf());
    // A restore refused before it starts leaves no configuration behind.
    refused(&p, &["db-restore", "--to-latest"], "add --yes");
    assert!(no_conf());
    let out = ok(&["db-restore", "--to-latest", "--yes"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no pgBackRest configuration"),
        "{}",
        show(&out)
    );
    assert_eq!(p.psql("app", "app", "SELECT count(*) FROM t"), "1001");
    let mode = p.compose(&[
        "exec",
        "-T",
        "db",
        "stat",
        "-c",
        "%a %U",
        "/var/lib/pgbackrest/pgbackrest.conf",
    ]);
    assert_eq!(String::from_utf8_lossy(&mode.stdout).trim(), "600 postgres");
    // Archiving goes on into the bucket, and the next backup builds on the old ones.
    let next = json_of(&ok(&["db-backup", "--physical", "--json"]));
    assert_eq!(next["type"], "incr", "{next}");
    let status = json_of(&ok(&["db-pitr", "status", "--json"]));
    assert_eq!(status["status_code"], 0, "{status}");
    assert_eq!(status["backups"].as_array().unwrap().len(), 3, "{status}");
    let printed = printed.into_inner();
    assert!(
        !printed.contains(e2e::S3_SECRET_KEY) && !printed.contains("s3cr/et@pass?word"),
        "no secret is printed: {printed}"
    );
}

/// Starts `args`, waits for a line of its progress containing `phase`, then
/// sends `signal`; returns the exit status and everything it printed.
fn signal_at_phase(
    p: &Project,
    args: &[&str],
    phase: &str,
    signal: &str,
) -> (std::process::ExitStatus, String) {
    use std::io::BufRead as _;
    let mut child = p.x.spawn(args, &Default::default());
    let stderr = child.stderr.take().unwrap();
    let (seen, at) = std::sync::mpsc::channel();
    let phase = phase.to_string();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            if line.contains(&phase) {
                let _ = seen.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let reached = at.recv_timeout(std::time::Duration::from_secs(120)).is_ok();
    if reached {
        std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
    }
    let status = child.wait().unwrap();
    let printed = reader.join().unwrap();
    assert!(reached, "the phase was never reached: {printed}");
    (status, printed)
}

/// Ctrl-C and SIGTERM at each phase of a restore to a time: before the
/// exchange the run stops with the service on its data and nothing left
/// behind; once the service is stopped for the exchange, it runs to its end.
#[test]
fn pitr_restore_signals_at_each_phase_leave_one_whole_data() {
    let p = Project::new();
    p.up(&[]);
    ok(&p, &["db-pitr", "enable"]);
    ok(&p, &["db-backup", "--physical"]);
    let t = rows_a_then_time_then_b(&p);
    let leftovers = || {
        service_sh(&p, "ls /var/lib/postgresql/data/.xtask-pitr")
            .lines()
            .filter(|l| l.starts_with("restore-"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let restore = ["db-restore", "--to-time", t.as_str(), "--yes"];

    for (phase, signal, code) in [
        ("restoring physical backup", "-TERM", 143),
        ("recovering to the target in a server beside", "-INT", 130),
    ] {
        let (status, printed) = signal_at_phase(&p, &restore, phase, signal);
        assert_eq!(status.code(), Some(code), "{phase}: {printed}");
        assert!(
            printed.contains("the service is on its old data"),
            "{phase}: {printed}"
        );
        assert_eq!(rows(&p), "A,B", "{phase}: the service keeps its data");
        assert_eq!(p.psql("app", "app", "SELECT pg_is_in_recovery()"), "f");
        assert!(leftovers().is_empty(), "{phase}: {:?}", leftovers());
    }

    // Once the service is stopped for the exchange, stopping half-way would
    // leave less than either data: the restore runs to its end.
    let (status, printed) = signal_at_phase(&p, &restore, "stopping the compose service", "-TERM");
    assert!(status.success(), "{printed}");
    assert_eq!(rows(&p), "A");
    assert_eq!(p.psql("app", "app", "SELECT pg_is_in_recovery()"), "f");
    assert!(leftovers().is_empty(), "{:?}", leftovers());

    // A physical backup runs in the service: a signal is acted on when it
    // has ended, and the backup is kept (not left running with its lock).
    let (status, printed) = signal_at_phase(
        &p,
        &["db-backup", "--physical", "--full"],
        "physical backup of stanza",
        "-TERM",
    );
    assert_eq!(status.code(), Some(143), "{printed}");
    assert!(
        printed.contains("the physical backup had already finished and is kept"),
        "{printed}"
    );
    let status = json_of(&ok(&p, &["db-pitr", "status", "--json"]));
    assert_eq!(status["backups"].as_array().unwrap().len(), 2, "{status}");
    ok(&p, &["db-backup", "--physical", "--incr"]);
}
