//! `cargo xtask db-prune` over a directory of real backups spanning 14 months.

use std::collections::BTreeMap;
use std::path::Path;

use e2e::{DB, PgServer, files_in, show};
use serde_json::Value;
use xtask::testing::months_before;
use xtask::testing::{BackupName, BackupType};

const NOW: &str = "2026-11-24T12:00:00Z";

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::parse(NOW, &time::format_description::well_known::Rfc3339).unwrap()
}

/// Copies a real backup under another name and date: same dump bytes, a
/// `.sha256` naming the new file, a `.meta` with the new dates and type.
fn plant(dir: &Path, dump: &[u8], meta: &Value, name: &BackupName, verified_ok: Option<bool>) {
    let file = name.file_name();
    std::fs::write(dir.join(&file), dump).unwrap();
    let sha = meta["sha256"].as_str().unwrap();
    std::fs::write(dir.join(name.sha256_name()), format!("{sha}  {file}\n")).unwrap();
    let mut m = meta.clone();
    let at = name
        .timestamp
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    m["file"] = file.into();
    m["type"] = name.kind.as_str().into();
    m["database"] = name.database.clone().into();
    m["started_at"] = at.clone().into();
    m["finished_at"] = at.into();
    if let Some(ok) = verified_ok {
        m["verification"] = serde_json::json!({"verified_at": m["finished_at"], "ok": ok});
    }
    std::fs::write(
        dir.join(name.meta_name()),
        serde_json::to_string_pretty(&m).unwrap(),
    )
    .unwrap();
}

#[test]
fn prune_keeps_what_the_policy_and_the_rails_say_and_nothing_foreign_goes() {
    let pg = PgServer::start(15);
    pg.psql(
        DB,
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    );
    let x = crate::xtask();
    let env: BTreeMap<String, String> = pg.xtask_env(DB);
    let out = x.run(&["db-backup", "--json", "--no-prune"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dir = x.backup_dir();
    let original = result["meta"]["file"].as_str().unwrap().to_string();
    let dump = std::fs::read(dir.join(&original)).unwrap();
    let meta = result["meta"].clone();
    for f in [
        original.clone(),
        format!("{original}.sha256"),
        format!("{original}.meta"),
    ] {
        std::fs::remove_file(dir.join(f)).unwrap();
    }

    let now = now();
    let hours = time::Duration::hours;
    let days = time::Duration::days;
    let mut expect_deleted = Vec::new();
    let mut expect_kept = Vec::new();
    for k in 0..10 {
        let n = BackupName::new(DB, BackupType::Daily, now - days(k) - hours(2));
        plant(&dir, &dump, &meta, &n, None);
        if k >= 7 {
            &mut expect_deleted
        } else {
            &mut expect_kept
        }
        .push(n.file_name());
    }
    for w in 0..8 {
        let n = BackupName::new(
            DB,
            BackupType::Weekly,
            now - time::Duration::weeks(w) - hours(3),
        );
        plant(&dir, &dump, &meta, &n, (w == 1).then_some(false));
        if w >= 4 {
            &mut expect_deleted
        } else {
            &mut expect_kept
        }
        .push(n.file_name());
    }
    for m in 0..14 {
        let n = BackupName::new(DB, BackupType::Monthly, months_before(now - hours(5), m));
        plant(&dir, &dump, &meta, &n, Some(true));
        if m >= 12 {
            &mut expect_deleted
        } else {
            &mut expect_kept
        }
        .push(n.file_name());
    }
    // Clock skew: a backup dated two days ahead is kept.
    let future = BackupName::new(DB, BackupType::Daily, now + days(2));
    plant(&dir, &dump, &meta, &future, None);
    expect_kept.push(future.file_name());
    // Another database's only backup is kept whatever its age.
    let legacy = BackupName::new("legacy_db", BackupType::Daily, now - days(60));
    plant(&dir, &dump, &meta, &legacy, None);
    expect_kept.push(legacy.file_name());
    // The leftover of a run that died before publishing: a lone .sha256, 3 days old.
    let orphan = BackupName::new(DB, BackupType::Daily, now - days(3) - hours(7));
    std::fs::write(dir.join(orphan.sha256_name()), "0".repeat(64) + "  x\n").unwrap();
    // A dump without sidecars, and files the tool did not make: never touched.
    let bare = BackupName::new(DB, BackupType::Daily, now - days(30));
    std::fs::write(dir.join(bare.file_name()), &dump).unwrap();
    let foreign = [
        "notes.txt",
        "app_hourly_20260101T000000Z.sql.gz",
        "manual-export.sql.gz",
    ];
    for f in foreign {
        std::fs::write(dir.join(f), b"not the tool's").unwrap();
    }
    std::fs::create_dir(dir.join("old")).unwrap();

    let mut env = env.clone();
    env.insert("XTASK_NOW".into(), NOW.into());
    let before = files_in(&dir);

    // Dry run: every verdict and its reason; nothing changes.
    let dry = x.run(&["db-prune", "--dry-run"], &env);
    assert!(dry.status.success(), "{}", show(&dry));
    assert_eq!(files_in(&dir), before, "--dry-run deleted something");
    insta::with_settings!({filters => vec![(r"\d+(\.\d)? (B|KiB|MiB)", "[SIZE]")]}, {
        insta::assert_snapshot!("prune-dry-run", String::from_utf8_lossy(&dry.stdout));
    });
    let json = x.run(&["db-prune", "--dry-run", "--json"], &env);
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        report["deleted"],
        expect_deleted.len() + 1,
        "expired sets plus the orphan"
    );

    // The real run deletes exactly the expired sets and the stale orphan.
    let real = x.run(&["db-prune"], &env);
    assert!(real.status.success(), "{}", show(&real));
    let after = files_in(&dir);
    for f in &expect_deleted {
        for suffix in ["", ".sha256", ".meta"] {
            assert!(
                !after.contains(&format!("{f}{suffix}")),
                "{f}{suffix} should be gone"
            );
        }
    }
    assert!(!after.contains(&orphan.sha256_name()));
    for f in &expect_kept {
        for suffix in ["", ".sha256", ".meta"] {
            assert!(
                after.contains(&format!("{f}{suffix}")),
                "{f}{suffix} should be kept"
            );
        }
    }
    assert!(after.contains(&bare.file_name()));
    for f in foreign {
        assert!(after.contains(&f.to_string()), "foreign {f} deleted");
    }
    assert!(dir.join("old").is_dir());
    assert_eq!(after.len(), before.len() - 3 * expect_deleted.len() - 1);

    // A second run deletes nothing.
    let again = x.run(&["db-prune", "--json"], &env);
    let report: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["deleted"], 0, "{report}");
    assert_eq!(files_in(&dir), after);
}

#[test]
fn invalid_retention_settings_fail_before_anything_is_deleted() {
    let x = crate::xtask();
    let dir = x.backup_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let old = BackupName::new("app", BackupType::Daily, now() - time::Duration::days(400));
    for f in [old.file_name(), old.sha256_name(), old.meta_name()] {
        std::fs::write(dir.join(f), b"x").unwrap();
    }
    for (key, value, says) in [
        (
            "BACKUP_RETENTION_DAILY",
            "-1",
            "BACKUP_RETENTION_DAILY '-1' is not valid: use a whole number of days, 1 or more",
        ),
        (
            "BACKUP_RETENTION_WEEKLY",
            "four",
            "BACKUP_RETENTION_WEEKLY 'four' is not valid: use a whole number of weeks, 1 or more",
        ),
        (
            "BACKUP_RETENTION_MONTHLY",
            "0",
            "BACKUP_RETENTION_MONTHLY '0' is not valid",
        ),
        (
            "BACKUP_RETENTION_MIN",
            "0",
            "0 would let every backup of a database go",
        ),
    ] {
        let env = [(key.to_string(), value.to_string())].into();
        for task in ["db-prune", "db-backup"] {
            let out = x.run(&[task], &env);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{task} {key}={value}: {}",
                show(&out)
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.starts_with("error: ") && err.contains(says) && err.lines().count() == 1,
                "{err}"
            );
        }
    }
    assert_eq!(files_in(&dir).len(), 3, "nothing was deleted");
}

#[test]
fn db_backup_prunes_after_success_unless_told_not_to() {
    let pg = PgServer::start(15);
    let x = crate::xtask();
    let dir = x.backup_dir();
    let env = pg.xtask_env(DB);
    let first = x.run(&["db-backup", "--json"], &env);
    assert!(first.status.success(), "{}", show(&first));
    let meta: Value = serde_json::from_slice::<Value>(&first.stdout).unwrap()["meta"].clone();
    let dump = std::fs::read(dir.join(meta["file"].as_str().unwrap())).unwrap();
    let expired = BackupName::new(
        DB,
        BackupType::Daily,
        time::OffsetDateTime::now_utc() - time::Duration::days(9),
    );
    plant(&dir, &dump, &meta, &expired, None);

    let kept = x.run(&["db-backup", "--no-prune", "--json"], &env);
    assert!(kept.status.success(), "{}", show(&kept));
    assert!(dir.join(expired.file_name()).exists(), "--no-prune pruned");

    let pruned = x.run(&["db-backup", "--json"], &env);
    assert!(pruned.status.success(), "{}", show(&pruned));
    let result: Value = serde_json::from_slice(&pruned.stdout).unwrap();
    assert_eq!(result["pruned"], serde_json::json!([expired.file_name()]));
    assert!(!dir.join(expired.file_name()).exists() && !dir.join(expired.meta_name()).exists());
}
