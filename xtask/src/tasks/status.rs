//! `cargo xtask db-status`: is the backup of a database healthy? For
//! monitors and CI: exit 0 when it is, `exit::UNHEALTHY` (5) when a backup
//! is missing, older than `--max-age`, or the last run failed. Backups are
//! looked for where they are kept: the bucket when BACKUP_LOCAL=false.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::bail;
use serde_json::json;
use time::OffsetDateTime;

use crate::core::health::{self, Facts, Health, Newest};
use crate::core::metrics::Metrics;
use crate::flags::DbStatus;
use crate::services::catalog::Backups;
use crate::tasks::Context;
use crate::{exit, ui};

pub(crate) fn run(args: DbStatus, ctx: &Context) -> anyhow::Result<ExitCode> {
    let settings = &ctx.settings;
    let now = settings.now_or(OffsetDateTime::now_utc());
    let max_age = settings.max_age;
    let remote_only = settings.s3.is_some() && !settings.local;
    let backups = Backups::open(settings, remote_only)?;
    let store = backups.store();
    let catalog = store.catalog()?;
    let metrics_text = std::fs::read_to_string(
        backups
            .local
            .metrics_dir()
            .join(crate::core::metrics::FILE_NAME),
    )
    .unwrap_or_default();
    let metrics = Metrics::parse(&metrics_text);

    let databases: Vec<String> = if args.all {
        let mut seen: BTreeSet<String> = catalog
            .iter()
            .map(|l| l.set.name.database.clone())
            .collect();
        seen.extend(metrics.databases());
        if seen.is_empty() {
            bail!(
                "there are no backups and no metrics in {}: nothing to check (is BACKUP_DIR right?)",
                store.location()
            );
        }
        seen.into_iter().collect()
    } else {
        vec![settings.connection.dbname.clone()]
    };

    let ts = |name: &str, db: &str| {
        metrics
            .max_for_database(name, db)
            .and_then(|v| OffsetDateTime::from_unix_timestamp(v as i64).ok())
    };
    let rows: Vec<Health> = databases
        .iter()
        .map(|db| {
            let newest = store.latest(db, None).ok().flatten().map(|l| Newest {
                file: l.set.name.file_name(),
                kind: l.set.name.kind.to_string(),
                finished_at: l.created_at(),
                size_bytes: l.size,
            });
            let facts = Facts {
                database: db.clone(),
                newest,
                last_success: ts("backup_last_success_timestamp", db),
                last_failure: ts("backup_last_failure_timestamp", db),
            };
            health::assess(&facts, now, max_age)
        })
        .collect();
    let healthy = rows.iter().all(Health::ok);
    if args.json {
        println!(
            "{}",
            json!({
                "status": if healthy { "ok" } else { "unhealthy" },
                "max_age_seconds": max_age.whole_seconds(),
                "backup_dir": store.location(),
                "databases": rows,
            })
        );
    } else if ui::verbosity() >= ui::Verbosity::Normal {
        print!("{}", health::render(&rows));
    }
    for problem in rows.iter().flat_map(|h| &h.problems) {
        ui::warn(problem);
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::UNHEALTHY)
    })
}
