//! `cargo xtask db-prune`: applies the retention decision (`retention.rs`) to
//! the backup directory. Also run after every successful `db-backup`.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{Context as _, format_err};
use serde_json::json;
use time::OffsetDateTime;

use crate::archive;
use crate::config::{Sources, number_setting, resolve_backup_dir};
use crate::flags::DbPrune;
use crate::retention::{self, Candidate, Decision, Policy, Reason};
use crate::store::{LocalStore, Store};
use crate::tasks::Context;
use crate::ui;

/// The retention settings, each checked before anything is deleted.
pub fn policy(sources: &Sources) -> anyhow::Result<Policy> {
    let d = Policy::default();
    let setting = |key: &str, default: u32, unit: &str| {
        number_setting(
            sources,
            key,
            None,
            default,
            &format!("a whole number of {unit}, 1 or more"),
            |n: &u32| *n >= 1,
        )
    };
    let min_keep = number_setting(
        sources,
        "BACKUP_RETENTION_MIN",
        None,
        d.min_keep,
        "a whole number of backups, 1 or more (0 would let every backup of a database go)",
        |n: &u32| *n >= 1,
    )?;
    Ok(Policy {
        daily_days: setting("BACKUP_RETENTION_DAILY", d.daily_days, "days")?,
        weekly_weeks: setting("BACKUP_RETENTION_WEEKLY", d.weekly_weeks, "weeks")?,
        monthly_months: setting("BACKUP_RETENTION_MONTHLY", d.monthly_months, "months")?,
        min_keep,
    })
}

/// "Now" for the decision: `XTASK_NOW` (RFC 3339) when set, to reproduce or
/// preview a decision; the clock otherwise.
pub fn now(sources: &Sources) -> anyhow::Result<OffsetDateTime> {
    match sources.get("XTASK_NOW") {
        None => Ok(OffsetDateTime::now_utc()),
        Some((v, _)) => OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc3339)
            .map_err(|_| {
                format_err!("XTASK_NOW '{v}' is not an RFC 3339 time such as 2026-11-24T02:00:00Z")
            }),
    }
}

/// One backup's line in the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub file: String,
    pub database: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    pub age_seconds: i64,
    pub size_bytes: u64,
    pub delete: bool,
    pub reason: Reason,
    pub reason_text: String,
    /// Its `.meta` records a failed verification: it never counts for the rails.
    pub verification_failed: bool,
    /// The set's files that exist (what a delete removes, all together).
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub foreign: Vec<String>,
    pub dry_run: bool,
}

/// Decides, and unless `dry_run`, deletes. Deleting removes the dump first,
/// so a set stops being a backup before its sidecars go.
pub fn prune(
    store: &dyn Store,
    policy: &Policy,
    now: OffsetDateTime,
    dry_run: bool,
) -> anyhow::Result<Report> {
    let inventory = store
        .inventory()
        .with_context(|| format!("cannot read the backups in {}", store.location()))?;
    let mut candidates = Vec::new();
    let mut sizes = Vec::new();
    for set in &inventory.sets {
        let meta = if set.has_meta {
            store.read_meta(&set.name).ok()
        } else {
            None
        };
        candidates.push(Candidate {
            name: set.name.clone(),
            finished_at: meta.as_ref().map_or(set.name.timestamp, |m| m.finished_at),
            complete: set.is_complete() && meta.is_some(),
            has_dump: set.has_dump,
            failed: meta
                .as_ref()
                .and_then(|m| m.verification.as_ref())
                .is_some_and(|v| !v.ok),
        });
        let size = set
            .files()
            .iter()
            .filter_map(|f| inventory.sizes.get(f))
            .sum::<u64>();
        sizes.push(size);
    }
    let decisions = retention::decide(&candidates, policy, now);
    let mut report = Report {
        foreign: inventory.foreign,
        dry_run,
        ..Report::default()
    };
    for ((set, decision), (candidate, size)) in inventory
        .sets
        .iter()
        .zip(&decisions)
        .zip(candidates.iter().zip(sizes))
    {
        let Decision {
            delete,
            reason,
            age,
            ..
        } = decision;
        let files = set.files();
        if *delete && !dry_run {
            for f in &files {
                // Already gone (a concurrent prune) is as good as deleted.
                store
                    .remove(f)
                    .with_context(|| format!("cannot delete {f} from {}", store.location()))?;
            }
        }
        report.rows.push(Row {
            file: set.name.file_name(),
            database: set.name.database.clone(),
            kind: set.name.kind.to_string(),
            finished_at: candidate.finished_at,
            age_seconds: age.whole_seconds(),
            size_bytes: size,
            delete: *delete,
            reason_text: if candidate.failed {
                format!("{reason} (its verification failed)")
            } else {
                reason.to_string()
            },
            verification_failed: candidate.failed,
            reason: reason.clone(),
            files,
        });
    }
    Ok(report)
}

impl Report {
    pub fn deleted(&self) -> usize {
        self.rows.iter().filter(|r| r.delete).count()
    }

    /// The table people read: every backup, newest first, its verdict and why.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let verdict = |delete: bool| match (delete, self.dry_run) {
            (true, true) => "delete",
            (true, false) => "deleted",
            (false, _) => "keep",
        };
        let width = self
            .rows
            .iter()
            .map(|r| r.file.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(
            out,
            "{:<8} {:<width$}  {:<7}  {:>8}  {:>9}  REASON",
            "VERDICT", "BACKUP", "TYPE", "AGE", "SIZE"
        );
        for r in self.rows.iter().rev() {
            let _ = writeln!(
                out,
                "{:<8} {:<width$}  {:<7}  {:>8}  {:>9}  {}",
                verdict(r.delete),
                r.file,
                r.kind,
                retention::human_age(time::Duration::seconds(r.age_seconds)),
                ui::bytes(r.size_bytes),
                r.reason_text
            );
        }
        if !self.foreign.is_empty() {
            let _ = writeln!(
                out,
                "left alone (not made by this tool): {}",
                self.foreign.join(", ")
            );
        }
        let action = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        let freed = self.freed_bytes();
        let _ = writeln!(
            out,
            "{action} {} of {} backups, {}",
            self.deleted(),
            self.rows.len(),
            ui::bytes(freed)
        );
        out
    }

    /// Bytes the deletions free (or would free, in a dry run).
    pub fn freed_bytes(&self) -> u64 {
        self.rows
            .iter()
            .filter(|r| r.delete)
            .map(|r| r.size_bytes)
            .sum()
    }

    pub fn to_json(&self, policy: &Policy, now: OffsetDateTime) -> serde_json::Value {
        let freed = self.freed_bytes();
        json!({
            "dry_run": self.dry_run,
            "now": now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "policy": {
                "daily_days": policy.daily_days,
                "weekly_weeks": policy.weekly_weeks,
                "monthly_months": policy.monthly_months,
                "min_keep": policy.min_keep,
            },
            "backups": self.rows.iter().rev().collect::<Vec<_>>(),
            "foreign": self.foreign,
            "deleted": self.deleted(),
            "freed_bytes": freed,
        })
    }
}

pub fn run(args: DbPrune, ctx: &Context) -> anyhow::Result<ExitCode> {
    ui::set_verbosity(args.dir.quiet, args.dir.verbose);
    let policy = policy(&ctx.sources)?;
    let now = now(&ctx.sources)?;
    let (dir, origin) = resolve_backup_dir(&args.dir, &ctx.sources, &ctx.root);
    ui::detail(format!("backup_dir: {} (from {origin})", dir.display()));
    let store = LocalStore::new(dir);
    if args.remote {
        let remote = crate::tasks::remote_store(ctx)?;
        ui::detail(format!(
            "pruning the off-site copies in {}",
            remote.location()
        ));
        let report = prune(remote.as_ref(), &policy, now, args.dry_run)?;
        if args.json {
            println!("{}", report.to_json(&policy, now));
        } else if ui::verbosity() >= ui::Verbosity::Normal || args.dry_run {
            print!("{}", report.render());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = prune(&store, &policy, now, args.dry_run)?;
    if !args.dry_run {
        for path in archive::remove_stale_partials(&store.dir).unwrap_or_default() {
            ui::detail(format!(
                "removed the leftover of an interrupted run: {}",
                path.display()
            ));
        }
    }
    if args.json {
        println!("{}", report.to_json(&policy, now));
    } else if ui::verbosity() >= ui::Verbosity::Normal || args.dry_run {
        print!("{}", report.render());
    }
    Ok(ExitCode::SUCCESS)
}
