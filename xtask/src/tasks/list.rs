//! `cargo xtask db-list` (and `db-restore --list`): the backups in
//! `BACKUP_DIR`, newest first, with what their sidecars say.

use std::fmt::Write as _;
use std::process::ExitCode;

use serde_json::json;
use time::OffsetDateTime;

use crate::config::resolve_backup_dir;
use crate::flags::DirArgs;
use crate::retention::human_age;
use crate::store::{ChecksumState, Listed, LocalStore, Store};
use crate::tasks::Context;
use crate::ui;

pub fn run(dir: &DirArgs, json: bool, remote: bool, ctx: &Context) -> anyhow::Result<ExitCode> {
    ui::set_verbosity(dir.quiet, dir.verbose);
    let (path, _) = resolve_backup_dir(dir, &ctx.sources, &ctx.root);
    let local = LocalStore::new(path);
    let remote_store = if remote {
        Some(crate::tasks::remote_store(ctx)?)
    } else {
        None
    };
    let store: &dyn Store = match &remote_store {
        Some(r) => r.as_ref(),
        None => &local,
    };
    let mut listed = store.catalog()?;
    listed.sort_by(|a, b| (b.created_at(), &b.set.name).cmp(&(a.created_at(), &a.set.name)));
    let now = OffsetDateTime::now_utc();
    if json {
        println!("{}", to_json(&listed, now));
    } else if listed.is_empty() {
        ui::info(format!("no backups in {}", store.location()));
    } else {
        print!("{}", render(&listed, now));
    }
    Ok(ExitCode::SUCCESS)
}

fn verified_text(l: &Listed) -> String {
    match l.meta.as_ref().and_then(|m| m.verification.as_ref()) {
        Some(v) if v.ok => format!("yes {}", v.verified_at.date()),
        Some(_) => "FAILED".to_string(),
        None => "no".to_string(),
    }
}

fn checksum_text(l: &Listed) -> &'static str {
    match l.checksum_state() {
        ChecksumState::Recorded => "recorded",
        ChecksumState::Missing => "MISSING",
        ChecksumState::Disagrees => "DISAGREES",
    }
}

/// The table, newest first as given.
pub fn render(listed: &[Listed], now: OffsetDateTime) -> String {
    let width = listed
        .iter()
        .map(|l| l.set.name.file_name().len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:<7}  {:<20}  {:>8}  {:>9}  {:<14}  CHECKSUM",
        "BACKUP", "TYPE", "CREATED (UTC)", "AGE", "SIZE", "VERIFIED"
    );
    for l in listed {
        let created = l.created_at();
        let _ = writeln!(
            out,
            "{:<width$}  {:<7}  {:<20}  {:>8}  {:>9}  {:<14}  {}",
            l.set.name.file_name(),
            l.set.name.kind,
            format!(
                "{} {:02}:{:02}:{:02}",
                created.date(),
                created.hour(),
                created.minute(),
                created.second()
            ),
            human_age(now - created),
            ui::bytes(l.size),
            verified_text(l),
            checksum_text(l),
        );
    }
    out
}

pub fn to_json(listed: &[Listed], now: OffsetDateTime) -> serde_json::Value {
    let rows: Vec<_> = listed
        .iter()
        .map(|l| {
            json!({
                "file": l.set.name.file_name(),
                "database": l.set.name.database,
                "type": l.set.name.kind,
                "created_at": l.created_at().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                "age_seconds": (now - l.created_at()).whole_seconds(),
                "size_bytes": l.size,
                "complete": l.set.is_complete(),
                "checksum": l.checksum_state(),
                "verified": l.verified(),
                "usable": l.usable(),
                "sha256": l.meta.as_ref().map(|m| &m.sha256),
                "tables": l.meta.as_ref().map(|m| m.tables.len()),
            })
        })
        .collect();
    json!({ "backups": rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{Verification, example};
    use crate::naming::{BackupName, BackupType};
    use crate::store::BackupSet;
    use time::macros::datetime;

    fn listed(
        db: &str,
        kind: BackupType,
        at: OffsetDateTime,
        verified: Option<bool>,
        sha_ok: bool,
    ) -> Listed {
        let name = BackupName::new(db, kind, at);
        let mut meta = example();
        meta.file = name.file_name();
        meta.finished_at = at;
        meta.verification = verified.map(|ok| Verification {
            verified_at: at,
            ok,
            restore_tested: false,
            error: None,
        });
        Listed {
            set: BackupSet {
                name,
                has_dump: true,
                has_sha256: true,
                has_meta: true,
            },
            sha256_file: Some(if sha_ok {
                meta.sha256.clone()
            } else {
                "0".repeat(64)
            }),
            size: meta.size_bytes,
            meta: Some(meta),
        }
    }

    #[test]
    fn list_table_and_json() {
        let now = datetime!(2026-11-24 12:00 UTC);
        let rows = vec![
            listed(
                "app",
                BackupType::Daily,
                datetime!(2026-11-24 02:00 UTC),
                Some(true),
                true,
            ),
            listed(
                "app",
                BackupType::Weekly,
                datetime!(2026-11-23 02:00 UTC),
                None,
                false,
            ),
            listed(
                "my_app",
                BackupType::Monthly,
                datetime!(2026-11-01 02:00 UTC),
                Some(false),
                true,
            ),
        ];
        insta::assert_snapshot!(render(&rows, now));
        insta::assert_json_snapshot!(to_json(&rows, now));
    }
}
