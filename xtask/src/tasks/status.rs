//! `cargo xtask db-status`: is the backup of a database healthy? For
//! monitors and CI: exit 0 when it is, `exit::UNHEALTHY` (5) when a backup
//! is missing, older than `--max-age`, or the last run failed.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::bail;
use serde_json::json;
use time::OffsetDateTime;

use crate::config::{DEFAULT_DB, resolve_backup_dir};
use crate::flags::DbStatus;
use crate::health::{self, Facts, Health, Newest};
use crate::metrics::Metrics;
use crate::store::{LocalStore, Store};
use crate::tasks::{Context, prune};
use crate::{exit, ui};

pub const DEFAULT_MAX_AGE: &str = "26h";

pub fn run(args: DbStatus, ctx: &Context) -> anyhow::Result<ExitCode> {
    ui::set_verbosity(args.dir.quiet, args.dir.verbose);
    let (max_age_text, from) = match (&args.max_age, ctx.sources.get("BACKUP_MAX_AGE")) {
        (Some(flag), _) => (flag.clone(), "--max-age"),
        (None, Some((v, _))) => (v, "BACKUP_MAX_AGE"),
        (None, None) => (DEFAULT_MAX_AGE.to_string(), "the default"),
    };
    let Some(max_age) = health::parse_duration(&max_age_text) else {
        bail!(
            "{from} '{max_age_text}' is not a duration: use a number with a unit, such as 26h, 90m, 2d or 1w"
        );
    };
    let now = prune::now(&ctx.sources)?;
    let (dir, _) = resolve_backup_dir(&args.dir, &ctx.sources, &ctx.root);
    let store = LocalStore::new(dir);
    let catalog = store.catalog()?;
    let metrics_text = std::fs::read_to_string(store.metrics_dir().join(crate::metrics::FILE_NAME))
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
                store.dir.display()
            );
        }
        seen.into_iter().collect()
    } else {
        vec![
            args.dbname
                .clone()
                .or_else(|| ctx.sources.get("POSTGRES_DB").map(|(v, _)| v))
                .unwrap_or_else(|| DEFAULT_DB.to_string()),
        ]
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
                "backup_dir": store.dir.display().to_string(),
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
