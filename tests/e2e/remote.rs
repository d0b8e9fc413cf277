//! The off-site copy on a real S3-compatible server (`s3s-fs` on 127.0.0.1,
//! with credentials it checks): upload after a local backup, list, verify,
//! restore and prune remotely, `--remote-only` streaming, and failures.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::{DB, PASSWORD, PgServer, S3Server, Xtask, files_in, json_of, show};

fn env_for(pg: &PgServer, s3: &S3Server) -> BTreeMap<String, String> {
    let mut env = pg.xtask_env(DB);
    env.extend(s3.env());
    env
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn dumps(names: &[String]) -> Vec<&String> {
    names.iter().filter(|f| f.ends_with(".sql.gz")).collect()
}

/// Rows of pseudo-random text: compressed, `rows / 27_000` MiB or so.
fn seed(pg: &PgServer, rows: u32) {
    pg.psql(
        DB,
        &format!(
            "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS p FROM generate_series(1, {rows}) g;
             CREATE TABLE small (id int PRIMARY KEY, note text); INSERT INTO small VALUES (1, 'one'), (2, 'two');"
        ),
    );
}

const FINGERPRINT: &str = "SELECT count(*) || ':' || md5(string_agg(p, ',' ORDER BY id)) FROM big";

#[test]
fn upload_list_verify_and_restore_from_the_remote_copy() {
    let pg = PgServer::start(15);
    seed(&pg, 20_000);
    let s3 = S3Server::start();
    let x = crate::xtask();
    let env = env_for(&pg, &s3);

    let out = x.run(&["db-backup", "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let result = json_of(&out);
    let file = result["meta"]["file"].as_str().unwrap().to_string();
    assert_eq!(result["uploaded"], format!("s3://backups/team/app/{file}"));
    assert_eq!(
        s3.objects(),
        vec![
            file.clone(),
            format!("{file}.meta"),
            format!("{file}.sha256")
        ]
    );
    // The object is the local file, byte for byte.
    assert_eq!(
        std::fs::read(s3.root.path().join("backups/team/app").join(&file)).unwrap(),
        std::fs::read(x.backup_dir().join(&file)).unwrap()
    );
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(
        !text.contains(e2e::S3_SECRET_KEY) && !text.contains(PASSWORD),
        "{text}"
    );

    let out = x.run(&["db-list", "--remote", "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        json_of(&out)["backups"][0]["file"],
        file.as_str(),
        "{}",
        show(&out)
    );

    // This machine loses its backups: the remote copy restores, checked, all-or-nothing.
    std::fs::remove_dir_all(x.backup_dir()).unwrap();
    let out = x.run(&["db-verify", "--remote", "--latest"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let out = x.run(
        &[
            "db-restore",
            "--latest",
            "--remote",
            "--target-db",
            "restored",
            "--json",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(pg.psql("restored", FINGERPRINT), pg.psql(DB, FINGERPRINT));
    assert_eq!(
        pg.psql("restored", "SELECT note FROM small WHERE id = 2"),
        "two"
    );
    assert!(
        dumps(&files_in(&x.backup_dir())).is_empty(),
        "the download was streamed, never stored"
    );
}

#[test]
fn remote_only_streams_a_dump_larger_than_a_part_with_no_local_copy() {
    let pg = PgServer::start(15);
    seed(&pg, 400_000); // about 15 MiB compressed: three 5 MiB parts
    let s3 = S3Server::start();
    let x = crate::xtask();
    let env = env_for(&pg, &s3);

    let out = x.run(&["db-backup", "--remote-only", "--verify", "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let meta = &json_of(&out)["meta"];
    assert!(
        meta["size_bytes"].as_u64().unwrap() > 10 * 1024 * 1024,
        "{meta}"
    );
    assert_eq!(meta["verification"]["ok"], true);
    assert_eq!(dumps(&s3.objects()).len(), 1);
    assert_eq!(s3.pending_parts(), 0, "the multipart upload completed");
    assert!(
        dumps(&files_in(&x.backup_dir())).is_empty(),
        "no local copy"
    );
    assert!(
        std::fs::read_to_string(x.backup_dir().join("metrics/backup.prom"))
            .unwrap()
            .contains("backup_last_upload_status{database=\"app\",type=\"daily\"} 1")
    );

    let out = x.run(
        &["db-restore", "--latest", "--remote", "--target-db", "copy"],
        &env,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(pg.psql("copy", FINGERPRINT), pg.psql(DB, FINGERPRINT));

    // BACKUP_LOCAL=false means the same.
    let mut off = env.clone();
    off.insert("BACKUP_LOCAL".into(), "false".into());
    let out = x.run(&["db-backup", "-q", "--no-prune"], &off);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(dumps(&s3.objects()).len(), 2);
    assert!(dumps(&files_in(&x.backup_dir())).is_empty());
}

#[test]
fn wrong_credentials_and_a_missing_bucket_are_one_clear_line() {
    let pg = PgServer::start(15);
    seed(&pg, 1_000);
    let s3 = S3Server::start();
    let x = crate::xtask();
    let mut bad = env_for(&pg, &s3);
    bad.insert("AWS_SECRET_ACCESS_KEY".into(), "not-the-secret".into());

    // The local backup is made and kept; the upload fails with its own exit code.
    let out = x.run(&["db-backup"], &bad);
    assert_eq!(out.status.code(), Some(6), "{}", show(&out));
    let err = stderr(&out);
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("error: the local backup is complete, but its upload failed:")
            && last.contains("refused the credentials"),
        "{err}"
    );
    assert!(!err.contains("not-the-secret"), "{err}");
    assert_eq!(dumps(&files_in(&x.backup_dir())).len(), 1);
    assert!(s3.objects().is_empty());
    let metrics = std::fs::read_to_string(x.backup_dir().join("metrics/backup.prom")).unwrap();
    assert!(
        metrics.contains("backup_last_upload_status{database=\"app\",type=\"daily\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("backup_last_status{database=\"app\",type=\"daily\"} 1"),
        "{metrics}"
    );

    // --remote-only checks the bucket first: nothing is dumped.
    let out = x.run(&["db-backup", "--remote-only"], &bad);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", show(&out));

    let mut missing = env_for(&pg, &s3);
    missing.insert("BACKUP_S3_BUCKET".into(), "no-such-bucket".into());
    let out = x.run(&["db-list", "--remote"], &missing);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "error: checking s3://no-such-bucket/team/app/: bucket 'no-such-bucket' does not exist at {}: create it, or fix BACKUP_S3_BUCKET",
            s3.endpoint()
        )
    );
    let out = x.run(&["db-list", "--remote"], &pg.xtask_env(DB));
    assert_eq!(
        stderr(&out).trim(),
        "error: --remote needs BACKUP_S3_BUCKET: set it (and BACKUP_S3_ENDPOINT for a store other than AWS) in the environment or .env"
    );
}

/// Starts `args`, kills the S3 server once the first part of the upload is
/// in, and returns the run's output.
fn kill_server_mid_upload(
    x: &Xtask,
    s3: &mut S3Server,
    args: &[&str],
    env: &BTreeMap<String, String>,
) -> std::process::Output {
    let child = x.spawn(args, env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while s3.pending_parts() == 0 {
        assert!(Instant::now() < deadline, "no upload part ever arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
    s3.kill();
    child.wait_with_output().unwrap()
}

#[test]
fn a_server_stopped_mid_upload_leaves_no_remote_backup_and_the_local_one_intact() {
    let pg = PgServer::start(15);
    seed(&pg, 1_500_000); // about 55 MiB compressed
    let mut s3 = S3Server::start();
    let x = crate::xtask();
    let env = env_for(&pg, &s3);

    // Remote only: the run fails and nothing anywhere looks like a backup.
    let out = kill_server_mid_upload(&x, &mut s3, &["db-backup", "--remote-only"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach the S3 store") && err.contains("nothing was published"),
        "{err}"
    );
    s3.restart();
    let listed = x.run(&["db-list", "--remote", "--json"], &env);
    assert_eq!(
        json_of(&listed),
        serde_json::json!({"backups": []}),
        "{}",
        show(&listed)
    );
    assert!(dumps(&s3.objects()).is_empty(), "{:?}", s3.objects());
    assert!(dumps(&files_in(&x.backup_dir())).is_empty());

    // Local and upload: the local backup stays complete; exit 6.
    let out = kill_server_mid_upload(&x, &mut s3, &["db-backup", "--no-prune"], &env);
    assert_eq!(out.status.code(), Some(6), "{}", show(&out));
    let local = files_in(&x.backup_dir());
    assert_eq!(dumps(&local).len(), 1, "{local:?}");
    let out = x.run(&["db-verify", "--latest"], &env);
    assert!(
        out.status.success(),
        "the local backup is whole: {}",
        show(&out)
    );
    s3.restart();
    assert!(dumps(&s3.objects()).is_empty(), "{:?}", s3.objects());
}

#[test]
fn remote_prune_applies_the_policy_to_the_remote_copies() {
    let pg = PgServer::start(15);
    seed(&pg, 1_000);
    let s3 = S3Server::start();
    let x = crate::xtask();
    let env = env_for(&pg, &s3);
    for _ in 0..3 {
        let out = x.run(&["db-backup", "-q", "--no-prune"], &env);
        assert!(out.status.success(), "{}", show(&out));
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert_eq!(dumps(&s3.objects()).len(), 3);
    // Ten days on, with a 7-day daily retention: only the newest stays.
    let later = e2e::days_later(&env, 10);
    let out = x.run(&["db-prune", "--remote", "--dry-run", "--json"], &later);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(json_of(&out)["deleted"], 2);
    assert_eq!(dumps(&s3.objects()).len(), 3, "a dry run deletes nothing");
    let out = x.run(&["db-prune", "--remote"], &later);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        s3.objects().len(),
        3,
        "one complete set: {:?}",
        s3.objects()
    );
    assert_eq!(
        dumps(&files_in(&x.backup_dir())).len(),
        3,
        "local copies are untouched"
    );
}

fn through(env: &BTreeMap<String, String>, proxy: &e2e::LossyProxy) -> BTreeMap<String, String> {
    let mut env = env.clone();
    env.insert("BACKUP_S3_ENDPOINT".into(), proxy.endpoint());
    env
}

/// A fault for the first request whose line has `pattern`.
fn once(pattern: &'static str) -> impl Fn(&str, &mut Vec<u8>) -> bool + Send + Sync + 'static {
    let armed = std::sync::atomic::AtomicBool::new(true);
    move |line, _| {
        line.starts_with("POST")
            && line.contains(pattern)
            && armed.swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}

/// Issue 14, item 20: answers lost on the way back are resolved (a lost
/// completion by looking at the object; a lost start by looking for the
/// upload it began), and an object that fails its check is removed.
#[test]
fn lost_or_altered_answers_leave_no_bad_object() {
    let pg = PgServer::start(15);
    seed(&pg, 1_000);
    let x = crate::xtask();

    // The answer to CreateMultipartUpload is lost: the run goes on, and looks
    // for the upload that answer belonged to, to abort it.
    let s3 = S3Server::start();
    let proxy = e2e::LossyProxy::start(s3.port, once("uploads="));
    let out = x.run(
        &["db-backup", "--remote-only", "-q"],
        &through(&env_for(&pg, &s3), &proxy),
    );
    assert!(out.status.success(), "{}", show(&out));
    let lines = proxy.lines.lock().unwrap().clone();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("POST") && l.contains("uploads="))
            .count(),
        2
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("GET") && l.contains("uploads=") && l.contains("prefix=")),
        "no ListMultipartUploads: {lines:?}"
    );
    assert_eq!(dumps(&s3.objects()).len(), 1);

    // The answer to CompleteMultipartUpload is lost: the object says it completed.
    let s3 = S3Server::start();
    let proxy = e2e::LossyProxy::start(s3.port, once("uploadId="));
    let out = x.run(
        &["db-backup", "--remote-only", "--json"],
        &through(&env_for(&pg, &s3), &proxy),
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(s3.objects().len(), 3, "{:?}", s3.objects());
    assert_eq!(s3.pending_parts(), 0);
    let out = x.run(&["db-verify", "--remote", "--all"], &env_for(&pg, &s3));
    assert!(out.status.success(), "{}", show(&out));

    // The store answers with an ETag that is not the bytes sent: nothing stays.
    let s3 = S3Server::start();
    let proxy = e2e::LossyProxy::start(s3.port, |line, response| {
        if line.starts_with("POST") && line.contains("uploadId=") {
            let text = String::from_utf8_lossy(response).into_owned();
            if let Some(at) = text.find("<ETag>") {
                let from = at + "<ETag>".len();
                let i = from + text[from..].find(|c: char| c.is_ascii_hexdigit()).unwrap();
                let flipped = if &text[i..=i] == "a" { "b" } else { "a" };
                *response = format!("{}{flipped}{}", &text[..i], &text[i + 1..]).into_bytes();
            }
        }
        false
    });
    let out = x.run(
        &["db-backup", "--remote-only"],
        &through(&env_for(&pg, &s3), &proxy),
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("differs from the bytes sent"),
        "{}",
        show(&out)
    );
    assert!(s3.objects().is_empty(), "{:?}", s3.objects());
}

/// Issue 14, item 21: two servers backing up into one bucket and prefix
/// never take each other's backups, nor prune them.
#[test]
fn two_servers_sharing_a_bucket_are_kept_apart() {
    let a = PgServer::start(15);
    let b = PgServer::start(15);
    a.psql(DB, "CREATE TABLE who AS SELECT 'a' AS server");
    b.psql(DB, "CREATE TABLE who AS SELECT 'b' AS server");
    let s3 = S3Server::start();
    let (xa, xb) = (crate::xtask(), crate::xtask());
    for (x, pg) in [(&xa, &a), (&xb, &b)] {
        let out = x.run(&["db-backup", "--remote-only", "-q"], &env_for(pg, &s3));
        assert!(out.status.success(), "{}", show(&out));
        std::thread::sleep(Duration::from_millis(1100));
    }
    let env = env_for(&a, &s3);
    let out = xa.run(
        &["db-restore", "--remote", "--latest", "--target-db", "copy"],
        &env,
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("come from 2 servers") && stderr(&out).contains("--source"),
        "{}",
        show(&out)
    );
    let id = a.psql(DB, "SELECT system_identifier FROM pg_control_system()");
    let out = xa.run(
        &[
            "db-restore",
            "--remote",
            "--latest",
            "--source",
            &id,
            "--target-db",
            "copy",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(a.psql("copy", "SELECT server FROM who"), "a");

    // Each server's newest backup is a rail of its own.
    let later = e2e::days_later(&env, 30);
    let out = xa.run(&["db-prune", "--remote", "--json"], &later);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(json_of(&out)["deleted"], 0, "{}", show(&out));
    assert_eq!(dumps(&s3.objects()).len(), 2);
}

/// Issue 14, item 15: with BACKUP_LOCAL=false the bucket is where backups
/// are: `--type=auto` and `db-status` look there.
#[test]
fn without_a_local_copy_auto_type_and_status_look_in_the_bucket() {
    let pg = PgServer::start(15);
    seed(&pg, 100);
    let s3 = S3Server::start();
    let x = crate::xtask();
    let mut env = env_for(&pg, &s3);
    env.insert("BACKUP_LOCAL".into(), "false".into());
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let out = x.run(&["db-backup", "--type=auto", "--json"], &env);
        assert!(out.status.success(), "{}", show(&out));
        kinds.push(json_of(&out)["meta"]["type"].as_str().unwrap().to_string());
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert_eq!(kinds[0], "monthly");
    assert_ne!(
        kinds[1], "monthly",
        "the second of the month is not the month's first"
    );
    let out = x.run(&["db-status", "--json"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(json_of(&out)["databases"][0]["verdict"], "ok");
}
