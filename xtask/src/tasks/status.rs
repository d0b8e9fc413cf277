//! `cargo xtask db-status`: is the backup of a database healthy? For
//! monitors and CI: exit 0 when it is, `exit::UNHEALTHY` (5) when a backup
//! is missing, older than `--max-age`, or the last run failed. Backups are
//! looked for where they are kept: the bucket when BACKUP_LOCAL=false.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::bail;
use serde_json::json;
use time::OffsetDateTime;

use crate::core::config::Via;
use crate::core::health::{self, Facts, Health, Newest};
use crate::core::metrics::Metrics;
use crate::core::pitr;
use crate::flags::DbStatus;
use crate::services::catalog::{Backups, LocalStore};
use crate::services::pitr::Pitr;
use crate::services::{load, pg};
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
    let physical = physical(ctx, max_age.as_seconds_f64());
    let healthy =
        rows.iter().all(Health::ok) && physical.as_ref().is_none_or(|p| p.problems.is_empty());
    let leftovers = leftovers(settings);
    if args.json {
        println!(
            "{}",
            json!({
                "status": if healthy { "ok" } else { "unhealthy" },
                "max_age_seconds": max_age.whole_seconds(),
                "backup_dir": store.location(),
                "databases": rows,
                "leftover_scratch_databases": leftovers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                "physical": physical.as_ref().map(|p| json!({
                    "stanza": p.stanza, "archive_lag_seconds": p.lag,
                    "newest": p.newest, "problems": p.problems})),
            })
        );
    } else if ui::verbosity() >= ui::Verbosity::Normal {
        print!("{}", health::render(&rows));
        if let Some(p) = &physical {
            println!(
                "physical (pgBackRest stanza '{}'): newest backup {}, archive lag {:.0} s",
                p.stanza,
                p.newest.as_deref().unwrap_or("none"),
                p.lag
            );
        }
    }
    for problem in rows
        .iter()
        .flat_map(|h| &h.problems)
        .chain(physical.iter().flat_map(|p| &p.problems))
    {
        ui::warn(problem);
    }
    for (name, mark) in &leftovers {
        ui::warn(format!(
            "{name} is a scratch database a run left when it died ({mark}); the next restore, clone or restore test drops it"
        ));
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::UNHEALTHY)
    })
}

/// Point-in-time recovery's health, when the compose service runs with it.
struct PhysicalHealth {
    stanza: String,
    lag: f64,
    newest: Option<String>,
    problems: Vec<String>,
}

/// Best effort, as for the leftovers: no compose service, or one without
/// PITR enabled, is not this check's business. The lag goes to the metrics.
fn physical(ctx: &Context, max_age: f64) -> Option<PhysicalHealth> {
    let settings = &ctx.settings;
    if settings.via == Via::Host {
        return None;
    }
    let found = (|| -> anyhow::Result<Option<PhysicalHealth>> {
        let engine = Pitr::connect(settings)?;
        let Some(info) = engine.info()? else {
            return Ok(None);
        };
        let (archiver, lag) = engine.measure_lag(&LocalStore::of(settings))?;
        let stanza = engine.settings.stanza.clone();
        Ok(Some(PhysicalHealth {
            problems: pitr::problems(
                &stanza,
                &info,
                lag,
                archiver.now,
                max_age,
                pitr::max_lag(&engine.settings),
            ),
            newest: info.backups.last().map(|b| {
                format!(
                    "{} ({}, {})",
                    b.label,
                    b.kind.as_str(),
                    pitr::utc(b.stopped)
                )
            }),
            stanza,
            lag,
        }))
    })();
    found.unwrap_or_else(|e| {
        ui::detail(format!("point-in-time recovery not checked: {e:#}"));
        None
    })
}

/// Scratch databases left on the server by runs that died; best effort: a
/// server that does not answer within seconds is not this check's business.
fn leftovers(settings: &crate::core::config::Settings) -> Vec<(String, String)> {
    let found = pg::route(settings).and_then(|mut route| {
        route.conn.connect_timeout = 3;
        let session = route.maintenance().connect(pg::Purpose::Load)?;
        Ok(load::leftovers(&session.client, &session.conn)?)
    });
    found.unwrap_or_else(|e| {
        ui::detail(format!("not checked for leftover scratch databases: {e:#}"));
        Vec::new()
    })
}
