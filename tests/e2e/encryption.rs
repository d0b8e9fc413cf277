//! Encryption at rest with age, against real servers, the real `age` CLI
//! and the S3-compatible test server: nothing unencrypted is written
//! anywhere (files, partial files, the bucket), restores need the key and
//! refuse without it before touching anything, recipients fail closed, and
//! files interoperate with `age` both ways.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{DB, PgServer, S3Server, files_in, json_of, show};

/// A string no compressor or cipher produces by chance: if it is in a
/// file, the rows are in it in plain text.
const MARKER: &str = "plaintext-marker-4f1c9e";

fn seed(pg: &PgServer, rows: u32) {
    pg.psql(
        DB,
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY, s text);
             INSERT INTO t SELECT g, '{MARKER}-' || g || '-' || md5(g::text) FROM generate_series(1, {rows}) g"
        ),
    );
}

/// An age key pair made by the real `age-keygen`: (identity file, public key).
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(name);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&file)
        .output()
        .expect("age-keygen (Debian package age)");
    assert!(out.status.success(), "{}", show(&out));
    let public = Command::new("age-keygen")
        .arg("-y")
        .arg(&file)
        .output()
        .unwrap();
    (
        file,
        String::from_utf8_lossy(&public.stdout).trim().to_string(),
    )
}

/// Whether any file under `dir` (recursively) holds `needle`.
fn holds(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            found.extend(holds(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path);
        }
    }
    found
}

fn env_with(pg: &PgServer, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env = pg.xtask_env(DB);
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

fn state(pg: &PgServer) -> String {
    format!(
        "{}|{}",
        pg.psql(
            DB,
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database"
        ),
        pg.psql(
            DB,
            "SELECT count(*) || ':' || md5(string_agg(s, ',' ORDER BY id)) FROM t"
        )
    )
}

#[test]
fn encrypted_backups_leak_nothing_and_restore_only_with_the_key() {
    let pg = PgServer::start(15);
    seed(&pg, 5_000);
    let s3 = S3Server::start();
    let x = crate::xtask();
    let keys = tempfile::tempdir().unwrap();
    let (identity, public) = keygen(keys.path(), "key.txt");
    let (other, other_public) = keygen(keys.path(), "other.txt");
    let mut env = env_with(&pg, &[("BACKUP_AGE_RECIPIENTS", &public)]);
    env.extend(s3.env());
    let before = state(&pg);

    // Uncompressed, so a plain copy would hold the marker verbatim; and each
    // other layout, all encrypted, all uploaded.
    let mut files = Vec::new();
    for flags in [
        &["--compress", "none"][..],
        &["--compress", "gzip"],
        &["--compress", "zstd"],
        &["--format", "custom"],
    ] {
        let mut args = vec!["db-backup", "--json", "--no-prune", "--verify"];
        args.extend_from_slice(flags);
        let out = x.run(&args, &env);
        assert!(out.status.success(), "{flags:?}: {}", show(&out));
        let result = json_of(&out);
        let meta = &result["meta"];
        let file = meta["file"].as_str().unwrap().to_string();
        assert!(file.ends_with(".age"), "{file}");
        assert_eq!(meta["encryption"]["scheme"], "age", "{meta}");
        assert!(
            meta["encryption"]["recipients"][0]["fingerprint"]
                .as_str()
                .unwrap()
                .starts_with("SHA256:"),
            "{meta}"
        );
        assert_eq!(
            meta["tables"]["public.t"], 5000,
            "row counts are kept: {meta}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("contents were not checked"), "{stderr}");
        files.push(file);
    }
    assert!(holds(&x.backup_dir(), MARKER.as_bytes()).is_empty());
    assert!(holds(s3.root.path(), MARKER.as_bytes()).is_empty());
    for f in &files {
        let bytes = std::fs::read(x.backup_dir().join(f)).unwrap();
        assert!(bytes.starts_with(b"age-encryption.org/v1\n"), "{f}");
        assert!(
            !String::from_utf8_lossy(
                &std::fs::read(x.backup_dir().join(format!("{f}.meta"))).unwrap()
            )
            .contains("AGE-SECRET-KEY"),
        );
    }
    // sha256sum -c works without the key.
    e2e::assert_sha256sum_passes(&x.backup_dir());

    // db-verify without the key: checksum and header, and it says so.
    let out = x.run(&["db-verify", "--all", "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let v = json_of(&out);
    assert_eq!(v["verified"][0]["contents_checked"], false, "{v}");
    // With it: everything, row counts included.
    let keyed = {
        let mut e = env.clone();
        e.insert(
            "BACKUP_AGE_IDENTITY_FILE".into(),
            identity.display().to_string(),
        );
        e
    };
    let out = x.run(&["db-verify", "--all", "--json"], &keyed);
    assert!(out.status.success(), "{}", show(&out));
    let v = json_of(&out);
    for i in 0..files.len() {
        assert_eq!(v["verified"][i]["tables"]["public.t"], 5000, "{v}");
    }

    // Restores: the key loads every layout; no key, a wrong key, refuse
    // with nothing touched (not even a scratch database).
    pg.psql(DB, "DELETE FROM t WHERE id > 100");
    let damaged = state(&pg);
    for (extra, says) in [
        (None, "set BACKUP_AGE_IDENTITY_FILE"),
        (Some(other.display().to_string()), "can decrypt it"),
    ] {
        let mut e = env.clone();
        if let Some(file) = extra {
            e.insert("BACKUP_AGE_IDENTITY_FILE".into(), file);
        }
        let out = x.run(&["db-restore", &files[0], "--yes"], &e);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
        assert_eq!(state(&pg), damaged, "a refused restore touched something");
    }
    let _ = other_public;
    for f in &files {
        pg.psql(DB, "DELETE FROM t WHERE id > 100");
        let out = x.run(&["db-restore", f, "--yes", "--drop-previous"], &keyed);
        assert!(out.status.success(), "{f}: {}", show(&out));
        assert_eq!(state(&pg), before, "{f}");
    }
    // --table and a clone read through the key as well.
    let out = x.run(
        &[
            "db-restore",
            &files[1],
            "--target-db",
            "only_t",
            "--table",
            "public.t",
        ],
        &keyed,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(pg.psql("only_t", "SELECT count(*) FROM t"), "5000");
    // No temporary plaintext was left anywhere the tool writes.
    assert!(holds(&x.backup_dir(), MARKER.as_bytes()).is_empty());
}

#[test]
fn the_age_cli_reads_our_files_and_we_read_its() {
    let pg = PgServer::start(15);
    seed(&pg, 2_000);
    let x = crate::xtask();
    let keys = tempfile::tempdir().unwrap();
    let (identity, public) = keygen(keys.path(), "key.txt");
    let env = env_with(&pg, &[("BACKUP_AGE_RECIPIENTS", &public)]);
    let out = x.run(&["db-backup", "--json", "--no-prune"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let file = json_of(&out)["meta"]["file"].as_str().unwrap().to_string();
    assert!(file.ends_with(".sql.gz.age"));

    // Ours, by hand: age -d | gunzip | psql.
    pg.create_db("by_hand");
    let host = pg.xtask_env(DB);
    let script = format!(
        "age -d -i '{}' '{}' | gunzip | PGPASSWORD='{}' psql -X -q -v ON_ERROR_STOP=1 -h '{}' -p '{}' -U '{}' -d by_hand >/dev/null",
        identity.display(),
        x.backup_dir().join(&file).display(),
        host["PGPASSWORD"],
        host["POSTGRES_HOST"],
        host["POSTGRES_PORT"],
        host["POSTGRES_USER"],
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(pg.psql("by_hand", "SELECT count(*) FROM t"), "2000");

    // Theirs: pg_dump | gzip | age -r, a file made elsewhere, restores with db-restore.
    let theirs = x.root.path().join("made-by-age.sql.gz.age");
    let dump = pg.exec(&["pg_dump", "-U", e2e::USER, "--format=plain", DB]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &dump).unwrap();
    let gz = gz.finish().unwrap();
    let mut age = Command::new("age")
        .arg("-r")
        .arg(&public)
        .arg("-o")
        .arg(&theirs)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(age.stdin.as_mut().unwrap(), &gz).unwrap();
    drop(age.stdin.take());
    assert!(age.wait().unwrap().success());
    let keyed = env_with(
        &pg,
        &[("BACKUP_AGE_IDENTITY_FILE", &identity.display().to_string())],
    );
    let out = x.run(
        &[
            "db-restore",
            theirs.to_str().unwrap(),
            "--target-db",
            "theirs",
        ],
        &keyed,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(pg.psql("theirs", "SELECT count(*) FROM t"), "2000");
    // The same file under a name without `.age`, and no key: refused from
    // its bytes, before anything is created.
    let renamed = x.root.path().join("renamed.sql.gz");
    std::fs::copy(&theirs, &renamed).unwrap();
    let before = pg.psql(
        DB,
        "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database",
    );
    let out = x.run(
        &[
            "db-restore",
            renamed.to_str().unwrap(),
            "--target-db",
            "nothing",
        ],
        &pg.xtask_env(DB),
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("set BACKUP_AGE_IDENTITY_FILE"),
        "{}",
        show(&out)
    );
    assert_eq!(
        pg.psql(
            DB,
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database"
        ),
        before
    );
    // A restore test without the key is "not verified", never a pass or a failure.
    let out = x.run(
        &["db-verify", "--restore-test", renamed.to_str().unwrap()],
        &pg.xtask_env(DB),
    );
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));

    // An SSH key works as a recipient and as the identity.
    let ssh = keys.path().join("id_ed25519");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&ssh)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let ssh_public = std::fs::read_to_string(ssh.with_extension("pub")).unwrap();
    let recipients = keys.path().join("recipients.txt");
    std::fs::write(
        &recipients,
        format!("# the team's keys\n{public}\n\n{}", ssh_public.trim()),
    )
    .unwrap();
    let env = env_with(
        &pg,
        &[(
            "BACKUP_AGE_RECIPIENTS_FILE",
            &recipients.display().to_string(),
        )],
    );
    let out = x.run(&["db-backup", "--json", "--no-prune"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let meta = &json_of(&out)["meta"];
    assert_eq!(
        meta["encryption"]["recipients"][1]["type"], "ssh-ed25519",
        "{meta}"
    );
    // ssh-keygen's own fingerprint of the key is the one recorded.
    let fp = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(ssh.with_extension("pub"))
        .output()
        .unwrap();
    let fp = String::from_utf8_lossy(&fp.stdout);
    assert!(
        fp.contains(
            meta["encryption"]["recipients"][1]["fingerprint"]
                .as_str()
                .unwrap()
        ),
        "{fp} / {meta}"
    );
    let file = meta["file"].as_str().unwrap().to_string();
    let by_ssh = env_with(
        &pg,
        &[("BACKUP_AGE_IDENTITY_FILE", &ssh.display().to_string())],
    );
    let out = x.run(&["db-restore", &file, "--target-db", "by_ssh"], &by_ssh);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(pg.psql("by_ssh", "SELECT count(*) FROM t"), "2000");
}

#[test]
fn bad_recipients_stop_the_backup_before_pg_dump_starts() {
    let pg = PgServer::start(15);
    seed(&pg, 10);
    let x = crate::xtask();
    let keys = tempfile::tempdir().unwrap();
    let (identity, public) = keygen(keys.path(), "key.txt");
    let secret = std::fs::read_to_string(&identity)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_string();
    let missing = keys.path().join("nope.txt");
    for (key, value, says) in [
        (
            "BACKUP_AGE_RECIPIENTS",
            format!("{public},{secret}"),
            "entry 2 of BACKUP_AGE_RECIPIENTS: it is an age secret key",
        ),
        (
            "BACKUP_AGE_RECIPIENTS",
            String::new(),
            "BACKUP_AGE_RECIPIENTS is set but empty",
        ),
        (
            "BACKUP_AGE_RECIPIENTS",
            "age1notakey".into(),
            "not a valid age public key",
        ),
        (
            "BACKUP_AGE_RECIPIENTS_FILE",
            missing.display().to_string(),
            "cannot read",
        ),
    ] {
        let env = env_with(&pg, &[(key, &value)]);
        let out = x.run(&["db-backup", "--all"], &env);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
        assert!(!err.contains(&secret), "the secret key was echoed: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            files_in(&x.backup_dir()).is_empty(),
            "nothing was written: {:?}",
            files_in(&x.backup_dir())
        );
    }
    // Encryption asked for with the directory format (whose files pg_restore
    // reads one by one): refused in one line before anything is written.
    let env = env_with(&pg, &[("BACKUP_AGE_RECIPIENTS", &public)]);
    let out = x.run(&["db-backup", "--format", "directory"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be encrypted"), "{err}");
    assert!(err.contains("--format custom"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let written: Vec<String> = std::fs::read_dir(x.backup_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "metrics")
                .collect()
        })
        .unwrap_or_default();
    assert!(written.is_empty(), "nothing was written: {written:?}");
    // An identity file that is set but cannot be read stops a restore at once.
    let env = env_with(
        &pg,
        &[("BACKUP_AGE_IDENTITY_FILE", &missing.display().to_string())],
    );
    let out = x.run(&["db-restore", "--latest", "--yes"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BACKUP_AGE_IDENTITY_FILE"));
}

#[test]
fn remote_only_encrypted_backups_restore_from_the_bucket_and_a_killed_run_leaves_no_plaintext() {
    let pg = PgServer::start(15);
    seed(&pg, 200_000);
    let s3 = S3Server::start();
    let x = crate::xtask();
    let keys = tempfile::tempdir().unwrap();
    let (identity, public) = keygen(keys.path(), "key.txt");
    let mut env = env_with(&pg, &[("BACKUP_AGE_RECIPIENTS", &public)]);
    env.extend(s3.env());

    // A local run killed mid-dump: its partial file holds no plaintext.
    let mut child = x.spawn(&["db-backup", "--no-upload", "--compress", "none"], &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    let partial = loop {
        let found = files_in(&x.backup_dir())
            .into_iter()
            .find(|f| f.starts_with(".xtask-partial-"))
            .filter(|f| std::fs::metadata(x.backup_dir().join(f)).is_ok_and(|m| m.len() > 200_000));
        if let Some(f) = found {
            break Some(f);
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if let Some(partial) = partial {
        let bytes = std::fs::read(x.backup_dir().join(&partial)).unwrap_or_default();
        let _ = child.kill();
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "the partial file held plaintext"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(holds(&x.backup_dir(), MARKER.as_bytes()).is_empty());

    let out = x.run(&["db-backup", "--remote-only", "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let file = json_of(&out)["meta"]["file"].as_str().unwrap().to_string();
    assert!(s3.objects().contains(&file), "{:?}", s3.objects());
    assert!(holds(s3.root.path(), MARKER.as_bytes()).is_empty());
    let before = state(&pg);
    pg.psql(DB, "DELETE FROM t");
    env.insert(
        "BACKUP_AGE_IDENTITY_FILE".into(),
        identity.display().to_string(),
    );
    let out = x.run(
        &[
            "db-restore",
            "--remote",
            "--latest",
            "--yes",
            "--drop-previous",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(state(&pg), before);
}
